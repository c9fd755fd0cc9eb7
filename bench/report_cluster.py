"""Renders the cluster parts (bench/cluster.py: ``cluster-precision``, ``cluster-burst``,
``cluster-api``, ``cluster-failover``) into RESULTS.md: ``section`` is called by
bench/report_workers_alerts.py's ``render``, which puts it before the *Conditions* table."""

from __future__ import annotations

from typing import Any

import report
from report import _errors, _met, _num, _pair

PARTS = ("cluster-precision", "cluster-burst", "cluster-api", "cluster-failover")
SETUPS = ("sqlite", "pg1", "pg2", "pg3")
NAMES = {
    "sqlite": "SQLite, 1 node",
    "pg1": "PostgreSQL, 1 node",
    "pg2": "PostgreSQL, 2 nodes",
    "pg3": "PostgreSQL, 3 nodes",
}
TARGETS = {"lag_p99_ms": 10.0, "failover_s": 5.0}


def _name(setup: str) -> str:
    """A setup's name; the failover's are the setup and its number of cues (``pg3/300``)."""
    kind, _, cues = setup.partition("/")
    return NAMES[kind] + (f", {cues} cues" if cues else "")


def _setups(results: dict[str, Any], part: str) -> dict[str, Any]:
    """The setups a part measured, failed ones included (their row cells say so)."""
    r = results["parts"].get(part, {}).get("cueapi") or {}
    return r.get("setups") or {}


def _ok(r: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if not r or "error" in r else r


def _row(label: str, by: dict[str, Any], cell: Any, target: str = "", met: bool | None = None) -> list[str]:
    """One figure across the setups; a setup whose error left the figure unmeasured says so (one
    with an error but the figure, e.g. duplicates found, shows it: the error is listed below)."""
    cells = []
    for s in SETUPS:
        r = by.get(s)
        if r is None:
            cells.append("")
            continue
        try:
            cells.append(cell(r))
        except (KeyError, TypeError, ValueError):
            cells.append("failed")
    return [label, *cells, target, _met(met)]


def _lag(r: dict[str, Any] | None) -> str:
    return "—" if not r or r.get("p50_ms") is None else _pair(r["p50_ms"], r["p99_ms"], 2)


def _precision_rows(by: dict[str, Any], a: dict[str, Any]) -> list[list[str]]:
    goal = TARGETS["lag_p99_ms"]
    p99s = [x["p99_ms"] for r in by.values() if _ok(r) for x in [r, *r["per_node"]] if x.get("p99_ms")]
    met = None if not p99s else max(p99s) <= goal and all(_ok(r) for r in by.values())
    return [
        _row(
            f"fire lag p50 / p99 (ms), {a.get('server_precision_cues')} webhook cues due each second, "
            f"{a.get('server_precision_seconds')} s",
            by,
            _lag,
            f"p99 ≤ {goal:.0f} on every node",
            met,
        ),
        _row(
            "… p99 per node (ms)",
            by,
            lambda r: " / ".join(_num(x.get("p99_ms"), 2) for x in r["per_node"]),
        ),
        _row("… lag max (ms)", by, lambda r: _num(r.get("max_ms"), 1)),
        _row(
            "… deliveries missing / duplicated",
            by,
            lambda r: f"{r['missing']} / {r['duplicates']} of {r['expected']:,}",
            "0 / 0",
            all(_ok(r) and r["missing"] == r["duplicates"] == 0 for r in by.values()),
        ),
        _row(
            "… partitions (cues) per node; assignment stable; each node's fired count = its cues' ticks",
            by,
            lambda r: (
                " / ".join(f"{x['partitions']} ({x['cues']})" for x in r["per_node"])
                + f"; {'stable' if r['assignment_stable'] else '**moved**'}"
                + ("" if r.get("attribution_checked") is None else "; " + _met(r["attribution_checked"]))
            ),
        ),
    ]


def _burst_rows(by: dict[str, Any], a: dict[str, Any]) -> list[list[str]]:
    n = a.get("server_burst_n")
    return [
        _row(
            f"burst: {n:,} one-shots due the same second: due → all delivered and recorded (s) = rate (/s)",
            by,
            lambda r: f"{_num(r['done_s'], 2)} s = {_num(r['per_s'], 0)}/s",
        ),
        _row("… lag p50 / p99 (ms)", by, lambda r: _pair(r["lag"].get("p50_ms"), r["lag"].get("p99_ms"), 0)),
        _row(
            "… complete: lost / duplicated; every execution `success`, one attempt",
            by,
            lambda r: f"{r['lost']} / {r['duplicated']}; {_met(r.get('complete'))}",
            "0 / 0; yes",
            all(_ok(r) and r.get("complete") for r in by.values()),
        ),
        _row("… delivered per node", by, lambda r: " / ".join(f"{x['deliveries']:,}" for x in r["per_node"])),
        _row(
            "… creating the cues, through each node in turn (/s)",
            by,
            lambda r: _num(r["create"]["per_s"], 0),
        ),
    ]


def _api_rows(by: dict[str, Any], a: dict[str, Any]) -> list[list[str]]:
    conns = a.get("connections", 64)
    return [
        _row(
            f"cue creations (/s), {conns} connections split over the nodes",
            by,
            lambda r: _num(r["create"]["per_s"], 0),
        ),
        _row(
            "… latency p50 / p99 (ms), the worst node's",
            by,
            lambda r: _pair(r["create"]["p50_ms"], r["create"]["p99_ms"], 1),
        ),
        _row("outcome reports (/s)", by, lambda r: _num(r["outcome"]["per_s"], 0)),
        _row(
            "… latency p50 / p99 (ms), the worst node's",
            by,
            lambda r: _pair(r["outcome"]["p50_ms"], r["outcome"]["p99_ms"], 1),
        ),
        _row(
            f"… requests answered of {a.get('cluster_api_n', 0):,} (creations / outcomes)",
            by,
            lambda r: f"{r['create']['requests']:,} / {r['outcome']['requests']:,}",
        ),
    ]


def _failover(results: dict[str, Any]) -> list[str]:
    """Its own table: one column per number of cues (each a cluster of its own)."""
    by = _setups(results, "cluster-failover")
    if not by:
        return []
    goal = TARGETS["failover_s"]
    runs = list(by.items())
    rows: list[str] = []

    def row(label: str, cell: Any, target: str = "", met: bool | None = None) -> None:
        cells = []
        for _, r in runs:
            try:
                cells.append(cell(r))
            except (KeyError, TypeError, ValueError):
                cells.append("failed")
        rows.append("| " + " | ".join([label, *cells, target, _met(met)]) + " |")

    def each(r: dict[str, Any], fmt: Any) -> str:
        return " / ".join(fmt(k) for k in r["kills"]) or "—"

    worst = [r.get("failover_max_s") for _, r in runs]
    row(
        "SIGKILL → the survivors' first tick of the dead node's cues at the receiver (s), each kill; max",
        lambda r: (
            each(r, lambda k: _num(k["failover_s"], 2)) + f"; **max {_num(r.get('failover_max_s'), 2)}**"
        ),
        f"≤ {goal:.0f}",
        None if None in worst else all(w <= goal for w in worst),
    )
    row(
        "… the survivors seen holding every partition (s after the kill)",
        lambda r: each(r, lambda k: _num(k["takeover_seen_s"], 2)),
    )
    row("… kill at this fraction of a second", lambda r: each(r, lambda k: f"{k['kill_fraction']:.2f}"))
    row(
        "… the dead node's ticks after the kill: late by > 100 ms / delivered",
        lambda r: each(r, lambda k: f"{k['late_100ms']:,} / {k['ticks']:,}"),
    )
    row(
        "… how late those were: p50 / max (s)",
        lambda r: each(
            r,
            lambda k: _pair(k["late_lag"].get("p50_ms", 0) / 1000, k["late_lag"].get("max_ms", 0) / 1000, 2),
        ),
    )
    row(
        "… not run by the cue's policies (`skipped`: overlap, `missed`: catch-up)",
        lambda r: each(
            r, lambda k: ", ".join(f"{v} {s}" for s, v in k["ticks_not_run_by_policy"].items()) or "0"
        ),
    )
    kills = [k for _, r in runs for k in r.get("kills") or []]
    row(
        "… lost (neither delivered nor recorded as not run) / delivered twice; attempts retried",
        lambda r: each(r, lambda k: f"{k['ticks_lost']} / {k['ticks_duplicated']}; {k['retried_attempts']}"),
        "0 / 0",
        all(k["ticks_lost"] == k["ticks_duplicated"] == 0 for k in kills) if kills else None,
    )
    row(
        "… the other cues' lag p50 / p99 meanwhile (ms)",
        lambda r: each(
            r, lambda k: _pair(k["survivors_lag"].get("p50_ms"), k["survivors_lag"].get("p99_ms"), 0)
        ),
    )
    row(
        "… shares even again after the node is restarted (s)",
        lambda r: each(r, lambda k: _num(k.get("even_again_s"), 1)),
    )
    head = [
        "failover, 3 nodes on PostgreSQL",
        *(f"{r.get('cues', k.split('/')[-1])} every-second cues" for k, r in runs),
        "target",
        "met",
    ]
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *rows,
        "",
    ]


# -- what limits each figure ------------------------------------------------------------------------


def _cpu_cell(cpu: dict[str, Any]) -> str:
    parts = [f"nodes {cpu['nodes']['pct']:.0f}%"]
    if len(cpu["nodes"]["each"]) > 1:
        parts[0] += " (" + " + ".join(f"{x['pct']:.0f}" for x in cpu["nodes"]["each"]) + ")"
    for key, label in (("postgres", "PostgreSQL"), ("receiver", "receiver"), ("generator", "wrk")):
        if key in cpu:
            parts.append(f"{label} {cpu[key]['pct']:.0f}%")
    parts.append(f"machine {cpu['machine_busy_pct']:.0f}% (else {cpu['everything_else_pct']:.0f}%)")
    return "; ".join(parts)


BACKEND_LABELS = (
    ("on_cpu", "on CPU"),
    ("in_transaction_waiting_for_node", "in a transaction, waiting for the node"),
    ("lock", "lock"),
    ("lwlock", "LWLock"),
    ("io", "I/O"),
)


def _db_cell(db: dict[str, Any] | None, done: float | None) -> str:
    """The backends' states, then the statements: per second, per request done (``done``: the
    requests or executions of the span), and the server's mean time on one."""
    if not db:
        return "—"
    b = db["backends"]
    busy = "; ".join(f"{label} {b[k]:.1f}" for k, label in BACKEND_LABELS if b.get(k, 0) >= 0.05)
    waits = ", ".join(f"`{k}` {v:.1f}" for k, v in db["waits"].items() if v >= 0.1)
    span, n = db["span_s"], max(db["statements"], 1.0)
    each = f" = {db['statements'] / done:.1f} per request" if done else ""
    stmts = (
        f"{_num(db['statements'] / span, 0)} statements/s{each}, {_num(db['exec_ms'] / n, 2)} ms each in the "
        f"server; {_num(db['commits'] / span, 0)} commits/s, {_num(db['rollbacks'] / span, 0)} rollbacks/s"
    )
    gaps = [b["max_gap_s"] for b in (db.get("beats") or {}).values() if b["beats"] > 1]
    if gaps:
        moves = sum((db.get("partition_moves") or {}).values())
        stmts += f"; a node's beats at most {max(gaps):.1f} s apart"
        if moves:
            stmts += f", **{moves} partitions changed holder** (first {_num(db.get('first_move_s'), 1)} s in)"
    return f"{busy or 'idle'}{' (' + waits + ')' if waits else ''}; {stmts}"


def _limit(cpu: dict[str, Any], kind: str) -> str:
    """What the figures say limits a measurement."""
    machine, db = cpu["machine_busy_pct"], cpu.get("db")
    pg = cpu.get("postgres", {}).get("pct", 0.0)
    threads = [t for x in cpu["nodes"]["each"] for t in x.get("threads", [])]
    writer = max((t["pct"] for t in threads if t["name"] == "cueapi-writer"), default=0.0)
    out = []
    if machine >= 175:
        other = cpu["everything_else_pct"]
        out.append(
            f"CPU: both cores busy ({machine:.0f}% of 200%: PostgreSQL {pg:.0f}%, nodes "
            f"{cpu['nodes']['pct']:.0f}%{f', other work {other:.0f}%' if other >= 25 else ''})"
        )
    if kind == "sqlite" and writer >= 85:
        out.append(f"the SQLite writer thread ({writer:.0f}% of a core)")
    busiest = max(cpu["nodes"]["each"], key=lambda x: x["pct"])
    if busiest["pct"] >= 85 and machine < 175:
        inner = ", ".join(f"{t['name']} {t['pct']:.0f}%" for t in busiest.get("threads", [])[:2])
        out.append(f"the node's CPU ({busiest['pct']:.0f}% of a core: {inner})")
    if db:
        b = db["backends"]
        waiting = b.get("in_transaction_waiting_for_node", 0.0)
        locks = b.get("lock", 0.0) + b.get("lwlock", 0.0)
        oncpu = b.get("on_cpu", 0.0)
        commits = max(db["commits"], 1.0)
        if db["rollbacks"] >= 0.2 * commits:
            out.append(
                f"serialization failures: {db['rollbacks'] / commits:.2f} rollbacks per commit, each "
                "unit of work retried"
            )
        if locks >= 0.5 and locks >= oncpu:
            top = next((k for k in db["waits"] if k.startswith(("Lock:", "LWLock:"))), "?")
            # A transaction that has sent NOTIFY takes this lock before it commits and keeps it
            # until the commit is flushed (async.c, PreCommit_Notify): they commit one at a time.
            why = ": NOTIFY's commit lock, one notifying commit at a time" if top == "Lock:object" else ""
            out.append(f"locks: {locks:.1f} backends waiting on average (most: `{top}`{why})")
        if waiting >= max(oncpu, 0.5):
            out.append(
                f"round trips: {waiting:.1f} backends on average hold a transaction open waiting for "
                f"the node's next statement, {oncpu:.1f} on CPU"
            )
        if pg >= 85 and not out:
            out.append(f"PostgreSQL's CPU ({pg:.0f}% of a core)")
    if not out:
        out.append(f"not CPU ({machine:.0f}% of 200%): the wait for each answer")
    return "; ".join(out)


def _limits(results: dict[str, Any]) -> list[str]:
    rows = []

    def add(what: str, setup: str, rate: Any, cpu: dict[str, Any] | None, done: float | None = None) -> None:
        if not cpu:
            return
        kind = "sqlite" if setup == "sqlite" else "pg"
        rate_s = _num(rate, 0) if isinstance(rate, (int, float)) else "—"
        rows.append(
            f"| {what} | {NAMES[setup]} | {rate_s} | {_cpu_cell(cpu)} | {_db_cell(cpu.get('db'), done)} | "
            f"{_limit(cpu, kind)} |"
        )

    for s, r in _setups(results, "cluster-precision").items():
        if "cpu" in r:
            add("precision", s, None, r.get("cpu"), r.get("deliveries"))
    for s, r in _setups(results, "cluster-burst").items():
        if "cpu" in r:
            add("burst: due → done", s, r.get("per_s"), r.get("cpu"), r["n"])
    for s, r in _setups(results, "cluster-api").items():
        for key, what in (("create", "cue creation"), ("outcome", "outcome reports")):
            if key in r:
                add(what, s, r[key]["per_s"], r[key].get("cpu"), r[key]["ok"])
    for r in _setups(results, "cluster-failover").values():
        for i, k in enumerate(r.get("kills") or []):
            add(
                f"failover, {r.get('cues')} cues, kill {i + 1}: kill → end of window",
                "pg3",
                None,
                k.get("cpu"),
            )
    if not rows:
        return []
    return [
        "What each figure used and what that says limits it. CPU: % of one core over the figure's span "
        "(2 cores: 200%), the nodes (each), PostgreSQL's processes (the postmaster and every backend), "
        "the receiver, wrk, and the whole machine (*else*: what none of these used: the harness's "
        "polling and any other work). PostgreSQL: the database's client backends sampled every 50 ms "
        "(`pg_stat_activity`; mean number in each state: *waiting for the node* is idle inside an open "
        "transaction, i.e. a round trip to the node and the node's own work, the wait events beside), and "
        "its statements (`pg_stat_statements`: each is a round trip between a node and the server; per "
        "request = per request answered, or per execution delivered), the server's mean time executing "
        "one, and the `COMMIT`s and `ROLLBACK`s among them.",
        "",
        "| measurement | setup | rate (/s) | CPU | PostgreSQL backends (mean); transactions | limit |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _method(results: dict[str, Any]) -> list[str]:
    pg = next(
        (
            r["postgres"]
            for part in PARTS
            if (r := results["parts"].get(part, {}).get("cueapi") or {}).get("postgres")
        ),
        None,
    )
    settings = ", ".join(f"{k} {v}" for k, v in sorted((pg or {}).get("settings", {}).items()))
    return [
        "Setups: one `cueapi serve` node on SQLite (as in the parts above), and 1, 2 or 3 nodes on one "
        f"PostgreSQL {pg['version'] if pg else '?'} server ({settings}) started by `tools/pg` for the part, "
        "a fresh database per setup; each node is a process of its own "
        "(`cueapi.App(url).serve(...)`, rate limiting off, the default 3 s node lease and pool), "
        "all on the same 2 cores with PostgreSQL, the receiver and wrk. Each measurement starts once the "
        "nodes hold fair shares of the 60 partitions (each node's `/health` and `cueapi_partitions` "
        "agree). **Precision**: cues created through the nodes in turn; each delivery is put down to the "
        "node holding its cue's partition (FNV-1a of the cue id mod 60, computed as "
        "`src/store/cluster.rs` does, holders read from `cueapi_partitions`), checked by the holders "
        "being the same after the window and by each node's own count of released ticks (`/health`) "
        "growing by exactly its cues' ticks over the window. **Burst**: cues created with wrk through "
        "each node in turn (node i creates its n/k), due a few seconds after the last; done = the later "
        "of the receiver's last arrival and the first `GET /v1/executions?status=success` that counts "
        "all of them; the store is read afterwards (every execution `success`, one attempt). **API**: "
        "as server-api (the same wrk script and bodies; outcomes on worker executions fired by hand "
        "through the first node), with one wrk per node at once and the 64 connections split between "
        "them; the rate is every 2xx answer over the first request → the last answer of them all. "
        "**Failover**: 3 nodes, every-second cues created through the nodes in turn; a node is SIGKILLed "
        "at a different fraction of a second each time; failover = the kill → the first arrival at the "
        "receiver of a tick scheduled after the kill of a cue whose partition the dead node held (read "
        "from `cueapi_partitions` just before); the ticks of those cues are then followed until a few "
        "seconds after the survivors hold every partition; then the node is started again and the next "
        "kill waits until the shares are even.",
        "",
    ]


def _logged(results: dict[str, Any]) -> list[str]:
    """What the nodes' engines and PostgreSQL logged as errors, per setup (numbers elided)."""
    lines = []
    for key in PARTS:
        for s, r in _setups(results, key).items():
            said = [f"{n:,} times: {msg}" for msg, n in (r.get("node_problems") or {}).items()]
            said += [f"{n:,} times, PostgreSQL: {msg}" for msg, n in (r.get("pg_errors") or {}).items()]
            if said:
                lines.append(f"- {key} / {_name(s)}: " + "; ".join(f"`{x}`" for x in said))
    if not lines:
        return []
    return [
        "Errors logged meanwhile (the nodes' engines, and PostgreSQL's log for the setup's database):",
        "",
        *lines,
        "",
    ]


def section(results: dict[str, Any]) -> list[str]:
    parts = results["parts"]
    if not any(k in parts for k in PARTS):
        return []
    rows: list[list[str]] = []
    if "cluster-precision" in parts:
        rows += _precision_rows(
            _setups(results, "cluster-precision"), report._args(results, "cluster-precision")
        )
    if "cluster-burst" in parts:
        rows += _burst_rows(_setups(results, "cluster-burst"), report._args(results, "cluster-burst"))
    if "cluster-api" in parts:
        rows += _api_rows(_setups(results, "cluster-api"), report._args(results, "cluster-api"))
    head = ["figure", *(NAMES[s] for s in SETUPS), "target", "met"]
    out = [
        "### cueapi serve: several nodes on PostgreSQL beside SQLite (issue 12)",
        "",
        *_method(results),
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        *_failover(results),
        *_limits(results),
    ]
    out += _logged(results)
    for key in PARTS:
        if key not in parts:
            continue
        setups = _setups(results, key)
        if not setups:  # the part failed before any setup ran
            out += _errors(key, parts[key])
        for s, r in setups.items():
            if "error" in r:
                error = " ".join(str(r["error"]).split())  # one line: a list item of Markdown
                out.append(f"- **{key} / {_name(s)}: {error}** {r.get('stderr', '')[-300:]!r}")
    return [*out, ""]
