"""Renders the pull-worker and alert parts (``server-workers``, ``server-alerts``) into RESULTS.md.

``write`` is ``report.write`` with these parts added: ``report.render`` makes the block for every
other part (its *Conditions* table covers these too), and the section below goes in before that
table, followed by the cluster parts' (bench/report_cluster.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import report
import report_cluster
from report import _cpu_note, _errors, _met, _num, _ok, _pair

PARTS = ("server-workers", "server-alerts")
TARGETS = {"worker_cycles_per_s": 2_000.0, "alert_p99_ms": 1_000.0}


def _ms3(r: dict[str, Any] | None, digits: int = 1) -> str:
    """p50 / p99 / max in ms."""
    if not r or r.get("p50_ms") is None:
        return "—"
    return f"{_num(r['p50_ms'], digits)} / {_num(r['p99_ms'], digits)} / {_num(r['max_ms'], digits)}"


def _ms2(r: dict[str, Any] | None, digits: int = 2) -> str:
    return "—" if not r or r.get("p50_ms") is None else _pair(r["p50_ms"], r["p99_ms"], digits)


def _threads(cpu: dict[str, Any] | None) -> dict[str, float]:
    return {t["name"]: t["pct"] for t in (cpu or {}).get("server_threads", [])}


def _bound(cpu: dict[str, Any] | None) -> str:
    """What the CPU figures say limits a measurement."""
    if not cpu:
        return "—"
    writer = _threads(cpu).get("cueapi-writer", 0.0)
    machine = cpu.get("machine_busy_pct", 0.0)
    if writer >= 85:
        return f"the store's single writer (`cueapi-writer` {writer:.0f}% of a core)"
    if machine >= 175:
        ours = sum(cpu[k]["pct"] for k in ("server", "receiver", "generator") if k in cpu)
        other = max(0.0, machine - ours)
        if other >= 25:
            return (
                f"CPU: both cores busy ({machine:.0f}% of 200%), {other:.0f}% of it other work on the "
                "machine: a noisy figure"
            )
        return f"CPU: both cores busy ({machine:.0f}% of 200%)"
    return (
        f"not CPU ({machine:.0f}% of 200%) nor the writer ({writer:.0f}% of a core): the wait for each answer"
    )


def _drained(r: dict[str, Any]) -> str:
    st = r["store"]
    if r.get("drained"):
        return f"all {r['seeded']:,}"
    return (
        f"**{st['done']:,} of {r['seeded']:,}** in the {_num(r.get('drain_bound_s'), 0)} s bound "
        f"({st['waiting']:,} still waiting)"
    )


def _workers_rows(w: dict[str, Any], a: dict[str, Any], row: Any) -> None:
    nxt, lst = w.get("next"), w.get("list")
    workers = a.get("server_workers", w.get("workers"))
    if nxt:
        rate = nxt["per_s"]
        goal = TARGETS["worker_cycles_per_s"]
        row(
            f"pull workers: claim → outcome cycles/s, {workers} workers claiming the next "
            "(`POST /v1/executions/claim`)",
            rate,
            f"≥ {goal:,.0f}",
            rate >= goal,
            0,
        )
        row("… queue drained", _drained(nxt), "all", bool(nxt.get("drained")))
        row("… claim latency p50 / p99 (ms)", _ms2(nxt["claim"]), "", None)
        row("… outcome latency p50 / p99 (ms)", _ms2(nxt["outcome"]), "", None)
        row(
            "… claims lost / duplicated (store afterwards: every claim won is `success` with one attempt)",
            f"{nxt['lost']} / {nxt['duplicated']} of {nxt['store']['done'] + nxt['store']['in_flight']:,}",
            "0 / 0",
            nxt["lost"] == nxt["duplicated"] == 0,
        )
        cpu = nxt.get("cpu") or {}
        row(
            "… server CPU (% of a core) / peak RSS (MB)",
            _pair(cpu.get("server", {}).get("pct"), nxt.get("server_peak_rss_mb"), 0),
            "",
            None,
        )
        row("… the workers' CPU (wrk, % of a core)", cpu.get("generator", {}).get("pct"), "", None, 0)
    if lst:
        row(
            f"pull workers the official worker's way (list claimable, claim by id): cycles/s, {workers} "
            "workers",
            lst["per_s"],
            "",
            None,
            0,
        )
        row("… queue drained", _drained(lst), "all", bool(lst.get("drained")))
        row(
            "… list / claim / outcome latency p50 (ms)",
            " / ".join(_num(lst[k].get("p50_ms"), 2) for k in ("list", "claim", "outcome")),
            "",
            None,
        )
        row(
            "… list / claim / outcome latency p99 (ms)",
            " / ".join(_num(lst[k].get("p99_ms"), 2) for k in ("list", "claim", "outcome")),
            "",
            None,
        )
        row(
            "… claims lost to another worker (409) per cycle; lists per cycle",
            _pair(lst.get("conflicts_per_cycle"), lst.get("lists_per_cycle"), 2),
            "",
            None,
        )
        row(
            "… claims lost / duplicated",
            f"{lst['lost']} / {lst['duplicated']} of {lst['store']['done'] + lst['store']['in_flight']:,}",
            "0 / 0",
            lst["lost"] == lst["duplicated"] == 0,
        )


def _alerts_rows(al: dict[str, Any], row: Any) -> None:
    goal = TARGETS["alert_p99_ms"]
    for key, label in (("burst", "failing together"), ("steady", "failing")):
        r = al.get(key)
        if not r:
            continue
        what = (
            f"{r['cues']:,} cues {label}"
            if key == "burst"
            else f"{r['cues']:,} cues failing at {al.get('steady_rate')}/s"
        )
        p99 = r.get("p99_ms")
        row(
            f"failure → alert webhook p50 / p99 / max (ms), {what}",
            _ms3(r),
            f"p99 ≤ {goal:,.0f}",
            None if p99 is None else p99 <= goal,
        )
        row(
            "… alerts missing / extra / bad signatures",
            f"{r['alerts_missing']} / {r['alerts_extra']} / {r['alert_bad_signatures']} of {r['cues']:,}",
            "0 / 0 / 0",
            r["alerts_missing"] == r["alerts_extra"] == r["alert_bad_signatures"] == 0,
        )


def _details(w: dict[str, Any] | None, al: dict[str, Any] | None, a: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if w:
        nxt, lst = w.get("next"), w.get("list")
        seed = (nxt or lst or {}).get("seeding", {})
        fire = seed.get("fire", {})
        bound = _num((nxt or lst or {}).get("drain_bound_s"), 0)
        out += [
            f"**Pull workers.** {w['workers']} workers, each a wrk thread with one keep-alive connection "
            "(`bench/wrk_worker.lua`) that waits for each answer before its next request, all registered "
            'by a heartbeat with `"handlers": ["t"]`. The queue: worker cues (`"transport": "worker"`, '
            'payload `{"task": "t"}`) fired by hand (`POST /v1/cues/{id}/fire`, '
            f"{w['worker_cues']} cues in turn; {_num(fire.get('per_s'), 0)}/s with wrk) until it holds "
            "every execution of the run, all due. Then each worker loops "
            '`POST /v1/executions/claim {"worker_id"}` → `POST /v1/executions/{id}/outcome '
            '{"success": true}` until a claim answers 409 (nothing left), or the drain reaches its bound '
            f"({bound} s); the rate is completed cycles / (last answer - first request). Latency is from "
            "just before a request is written to its whole answer, per request. The official worker's way "
            "(list, then claim down the list by id; the other workers' claims on the same list are 409s) is "
            "measured the same way on a second queue, of a second user (each way's claims search only its "
            "own user's executions).",
            "",
        ]
        for r, what in ((nxt, "claiming the next"), (lst, "the official worker's way")):
            if not r:
                continue
            st = r["store"]
            shares = ", ".join(f"{k} {v:,}" for k, v in r["won_by_worker"].items())
            out += [
                f"*{what.capitalize()}:* {r['cycles']:,} cycles in {_num(r['seconds'], 2)} s, "
                f"{r['requests']:,} requests ({_num(r['requests'] / max(r['cycles'], 1), 2)} per cycle), "
                f"{r['errors']} errors, socket errors {r['socket_errors'] or 'none'}. Claims won per worker: "
                f"{shares}. Store after the server closed (`sqlite3`, read-only): {st['statuses']}; "
                f"{st['done']:,} done (`success`, one attempt, one attempt row, itself `success`), "
                f"{st['waiting']:,} still waiting (never attempted), {st['in_flight']} claimed with the "
                f"outcome in flight when the drain stopped, {st['wrong']} in any other state.",
                "",
            ]
    if al:
        parts = []
        for key in ("burst", "steady"):
            r = al.get(key)
            if not r:
                continue
            st = r["store"]
            notif = "; ".join(f"{ch}: {by}" for ch, by in st["notifications"].items())
            when = (
                "all due the same second"
                if key == "burst"
                else f"due {1000 / al['steady_rate']:.0f} ms apart ({al['steady_rate']}/s)"
            )
            dl = r["deliveries"]
            parts.append(
                f"*{key.capitalize()}* ({r['cues']:,} cues {when}): failing deliveries arrived "
                f"{_ms3(r.get('delivery_lag'))} ms after their due instant (p50 / p99 / max). Of the "
                "failure → alert time, the failing answer back at the server took "
                f"{_ms3(r.get('stage_answer_back'), 2)} ms (the alert's `created_at` is the instant the "
                "server had the 500, in whole ms), and from there to the alert's arrival "
                f"{_ms3(r.get('stage_to_alert'))} ms (recorder → writer commit → notifier woken → due "
                f"notifications read → signed POST). The receiver saw {dl['received']:,} failing "
                f"deliveries ({dl.get('bad_signatures')} bad signatures) and {r['alerts_received']:,} alerts "
                f"({r['alert_types']}). Store: executions {st['statuses']}, alerts {st['types']}, "
                f"notifications {notif}."
            )
        out += [
            "**Alerts.** The user's alert webhook is the receiver's `/alerts` (`PATCH /v1/auth/me`); cues "
            '`{"schedule": {"type": "once", "at": …}, "callback": {"url": <receiver>/fail}, "retry": '
            '{"max_attempts": 0}}` (distinct cues, so that de-duplication folds none) created first, '
            "the receiver answering 500 on `/fail`: each execution fails at its only attempt and raises one "
            "`retries_exhausted` alert. Latency = the alert's arrival at the receiver - the failing "
            "delivery's arrival there, matched by the body's `execution_id`; every alert's "
            "`X-CueAPI-Signature` checked against the secret of `GET /v1/auth/alert-webhook-secret` over "
            '`"<X-CueAPI-Timestamp>." + body`. Email alerts are on (the default) with no SMTP configured, '
            "so each alert also queues an email notification that is recorded as skipped.",
            "",
            *[f"{x}\n" for x in parts],
        ]
    lim = []

    def add(label: str, rate: Any, cpu: dict[str, Any] | None, extra: str = "") -> None:
        rate_s = _num(rate, 0) if isinstance(rate, (int, float)) else "—"
        lim.append(f"| {label} | {rate_s} | {_cpu_note(cpu)} | {_bound(cpu)}{extra} |")

    if w:
        for key, label in (
            ("next", "workers: claim next → outcome"),
            ("list", "workers: list → claim → outcome"),
        ):
            r = w.get(key)
            if not r:
                continue
            mean = (r["claim"].get("mean_ms") or 0) + (r["outcome"].get("mean_ms") or 0)
            if key == "list":
                per = r.get("lists_per_cycle") or 0
                mean += per * (r["list"].get("mean_ms") or 0)
                mean += (r.get("conflicts_per_cycle") or 0) * (r["claim_409"].get("mean_ms") or 0)
            note = (
                f"; {r['workers']} workers / {_num(mean, 2)} ms of requests per cycle = "
                f"{_num(1000 * r['workers'] / mean, 0)}/s"
                if mean
                else ""
            )
            add(label, r["per_s"], r.get("cpu"), note)
            seed = r.get("seeding", {})
            add(
                f"{label}: seeding (manual fire)",
                seed.get("fire", {}).get("per_s"),
                seed.get("fire", {}).get("cpu"),
            )
    if al:
        for key in ("burst", "steady"):
            r = al.get(key)
            if r:
                add(f"alerts, {key}: first due → last alert", None, r.get("cpu"))
    if lim:
        out += [
            "What each figure used (as above: % of one core over the figure's span; 2 cores = 200%) and what "
            "that says limits it:",
            "",
            "| measurement | rate (/s) | CPU | limit |",
            "|---|---|---|---|",
            *lim,
            "",
        ]
    return out


def section(results: dict[str, Any]) -> list[str]:
    parts = results["parts"]
    if not any(k in parts for k in PARTS):
        return []
    w = _ok(parts.get("server-workers", {}).get("cueapi"))
    al = _ok(parts.get("server-alerts", {}).get("cueapi"))
    a = report._args(results, "server-workers") if "server-workers" in parts else {}
    rows: list[list[str]] = []

    def row(label: str, ours: Any, target: str, met: bool | None, digits: int = 1) -> None:
        rows.append([label, ours if isinstance(ours, str) else _num(ours, digits), target, _met(met)])

    if w:
        _workers_rows(w, a, row)
    if al:
        _alerts_rows(al, row)
    out = [
        "### cueapi serve: pull workers and alerts",
        "",
        "Measured in this run over HTTP on loopback, each part with its own server process (as above: "
        "rate limiting off) and database; the load comes from wrk (workers) or the server's own timer "
        "(alerts), the receiver is the one above. No quoted reference figures: the targets are issue 4's.",
        "",
        "| figure | ours | target | met |",
        "|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        *_details(w, al, a),
    ]
    for key in PARTS:
        if key in parts:
            out += _errors(key, parts[key])
    return [*out, ""]


def render(results: dict[str, Any]) -> str:
    text = report.render(results)
    # report's own list of server parts knows neither these two nor the cluster parts: where only
    # they (or they and the other server parts) were measured, it would take one for an APScheduler
    # part in its versions line.
    ours = PARTS + report_cluster.PARTS
    others = {k: v for k, v in results["parts"].items() if k not in ours}
    wrong = " ".join(report._versions(results))
    right = " ".join(report._versions({**results, "parts": others}))
    if any(k in results["parts"] for k in ours) and not any(k in others for k in report.SERVER_PARTS):
        key = next(k for k in ours if k in results["parts"])
        right = (
            right + " " if right else ""
        ) + f"Load generator: {report._machine(results, key).get('wrk', '?')}."
    if wrong != right:
        text = text.replace(wrong, right, 1)
    extra = section(results) + report_cluster.section(results)
    if extra:
        head, sep, tail = text.partition("### Conditions")
        text = head + "\n".join(extra) + "\n" + sep + tail
    return text


def write(path: Path, results: dict[str, Any]) -> None:
    """``report.write`` with these parts rendered too."""
    block = render(results)
    old = path.read_text() if path.exists() else ""
    if report.BEGIN in old and report.END in old:
        head, rest = old.split(report.BEGIN, 1)
        text = head + block + rest.split(report.END, 1)[1]
    else:
        text = (
            (old.rstrip() + "\n\n" if old else "# Benchmarks: cueapi vs APScheduler 3.x\n\n") + block + "\n"
        )
    path.write_text(text)
