"""`cueapi serve` against the official CueAPI command line as `pip install cueapi` gives it today
(0.2.0, in .venv-cli because its import name `cueapi` clashes with ours): the real `cueapi`
binary, run in a subprocess with only its base URL pointed at our server
(`CUEAPI_API_BASE=<url>/v1`, `CUEAPI_API_KEY=<key>`, a throw-away config directory), drives every
scheduler command it has; each test checks the exit code, what it prints and the server's state.

The CLI looks for an error's message under `detail.error.message` (FastAPI's raw shape), where the
reference server has none: ours mirrors its `{"error": {...}}` there, so a refused request prints
the server's message, not just `Failed (HTTP n)`. What it cannot show us, whichever server it talks
to: its tables are too narrow for our ids (30 characters for a cue, 31 for an execution; the
reference's cue ids are 16 but its execution ids are 36-character UUIDs), so an id runs into the
next column."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cueapi
import pytest

from tests.conftest import Receiver, Server, start_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
CLI_BIN = ROOT / ".venv-cli" / "bin" / "cueapi"

Run = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(server: Server, tmp_path: Path) -> dict[str, str]:
    """The official CLI's environment: ``server``'s base URL and key, a throw-away config directory."""
    assert CLI_BIN.exists(), "run `make develop`: it installs the official CLI into .venv-cli"
    home = tmp_path / "cli-home"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONUTF8": "1",
        "CUEAPI_API_KEY": server.key,
        "CUEAPI_API_BASE": server.url + "/v1",
    }


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Run:
    """``cli("get", cue_id)`` runs the official CLI against ``server`` and returns the finished
    process. ``env`` replaces or (with None) removes variables; ``input`` feeds prompts."""
    base_env = cli_env(server, tmp_path)

    def run(
        *args: str, env: dict[str, str | None] | None = None, input: str = ""
    ) -> subprocess.CompletedProcess[str]:
        e = dict(base_env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        proc = subprocess.run(
            [str(CLI_BIN), *args], env=e, input=input, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    """Expects exit code 0 and nothing on stderr; returns stdout."""
    assert proc.returncode == 0 and not proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def fails(proc: subprocess.CompletedProcess[str], message: str) -> None:
    """Expects exit code 1 with ``Error: <message>`` on stderr."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip() == f"Error: {message}", proc.stderr


def fields(stdout: str) -> dict[str, str]:
    """The ``Label:   value`` lines the CLI prints, as a dict (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        m = re.match(r"^([A-Z][A-Za-z ]*):\s+(.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).rstrip())
    return out


def cue_state(server: Server, cue_id: str) -> dict[str, Any]:
    r = server.call("GET", f"/v1/cues/{cue_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def worker_cue(server: Server, name: str = "nightly-report", **extra: Any) -> dict[str, Any]:
    return server.cue(
        name=name, transport="worker", schedule={"type": "recurring", "cron": "0 3 * * *"}, **extra
    )


def fire_raw(server: Server, cue_id: str) -> str:
    r = server.call("POST", f"/v1/cues/{cue_id}/fire")
    assert r.status_code in (200, 201, 202), r.text
    return str(r.json()["id"])


def delivered(server: Server, execution_id: str) -> None:
    wait_for(lambda: server.execution(execution_id)["status"] == "success", what=f"{execution_id} delivered")


def created(stdout: str) -> str:
    """The id in the ``Created: cue_…`` line `create` prints."""
    m = re.search(r"^Created: (cue_\w+)$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def webhook_cue(cli: Run, server: Server, receiver: Receiver, name: str = "data-sync-agent") -> str:
    """Creates a recurring webhook cue through the CLI; returns its id."""
    out = ok(
        cli(
            "create",
            "--name",
            name,
            "--cron",
            "0 2 * * *",
            "--timezone",
            "America/New_York",
            "--url",
            receiver.url + "/sync",
            "--payload",
            '{"task": "sync_customer_data", "batch_size": 1000}',
            "--description",
            "nightly sync",
        )
    )
    return created(out)


# -- account -------------------------------------------------------------------------------------


def test_whoami_shows_the_account(cli: Run, server: Server, receiver: Receiver) -> None:
    webhook_cue(cli, server, receiver)
    f = fields(ok(cli("whoami")))
    assert f["Email"] == "owner@example.com"
    assert f["Plan"] == "Self-hosted"
    # No limits on a self-hosted server: /auth/me says "unlimited", which this CLI prints as it is
    # (null printed as "1 / None").
    assert f["Active cues"] == "1 / unlimited"
    assert f["Executions"] == "0 / unlimited this month"
    assert f["API base"] == server.url + "/v1"


def test_a_profile_file_instead_of_the_environment_then_logout(
    cli: Run, server: Server, tmp_path: Path
) -> None:
    """What `cueapi login` would have saved: the key and base URL come from the profile."""
    creds = tmp_path / "cli-home" / ".config" / "cueapi" / "credentials.json"
    creds.parent.mkdir(parents=True)
    profile = {"api_key": server.key, "email": "owner@example.com", "api_base": server.url + "/v1"}
    creds.write_text(json.dumps({"default": profile}))
    no_env: dict[str, str | None] = {"CUEAPI_API_KEY": None, "CUEAPI_API_BASE": None}
    f = fields(ok(cli("whoami", env=no_env)))
    assert f["Email"] == "owner@example.com" and f["API base"] == server.url + "/v1"
    assert f["API key"] == server.key[:7] + "..." + server.key[-4:]
    out = ok(cli("logout", env=no_env))
    assert "Removed credentials for owner@example.com (default profile)." in out
    assert "Not logged in" in ok(cli("whoami", env=no_env))


def test_a_wrong_key_is_refused(cli: Run, server: Server) -> None:
    bad: dict[str, str | None] = {"CUEAPI_API_KEY": "cue_sk_" + "0" * 32}
    fails(cli("whoami", env=bad), "Failed to get user info (HTTP 401)")
    fails(cli("list", env=bad), "Failed to list cues (HTTP 401)")
    assert server.call("GET", "/v1/cues").json()["cues"] == []


def test_key_regenerate_replaces_the_key(cli: Run, server: Server) -> None:
    out = ok(cli("key", "regenerate", "--yes"))
    m = re.search(r"^New API key: (cue_sk_\w+)$", out, re.M)
    assert m, out
    new_key = m.group(1)
    assert new_key != server.key
    assert server.call("GET", "/v1/auth/me").status_code == 401
    assert server.call("GET", "/v1/auth/me", key=new_key).status_code == 200
    assert fields(ok(cli("whoami", env={"CUEAPI_API_KEY": new_key})))["Email"] == "owner@example.com"


# -- cues ----------------------------------------------------------------------------------------


def test_create_a_recurring_webhook_cue(cli: Run, server: Server, receiver: Receiver) -> None:
    out = ok(
        cli(
            "create",
            "--name",
            "data-sync-agent",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "America/New_York",
            "--url",
            receiver.url + "/sync",
            "--method",
            "PUT",
            "--payload",
            '{"task": "sync_customer_data", "batch_size": 1000}',
            "--description",
            "nightly sync",
            "--on-failure",
            '{"email": false, "pause": true}',
        )
    )
    cue_id = created(out)
    c = cue_state(server, cue_id)
    assert fields(out) == {"Created": cue_id, "Status": "active", "Next run": c["next_run"]}
    assert c["name"] == "data-sync-agent" and c["status"] == "active" and c["transport"] == "webhook"
    assert c["schedule"] == {"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"}
    assert c["callback"] == {"url": receiver.url + "/sync", "method": "PUT", "headers": {}}
    assert c["payload"] == {"task": "sync_customer_data", "batch_size": 1000}
    assert c["description"] == "nightly sync"
    assert c["on_failure"]["email"] is False and c["on_failure"]["pause"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT0[67]:00:00Z", c["next_run"]), c["next_run"]  # 2 AM in New York


def test_create_a_worker_cue(cli: Run, server: Server) -> None:
    out = ok(cli("create", "--name", "nightly-report", "--cron", "0 3 * * *", "--worker"))
    cue_id = created(out)
    c = cue_state(server, cue_id)
    assert c["transport"] == "worker" and c["schedule"]["timezone"] == "UTC"
    assert c["next_run"].endswith("T03:00:00Z")


def test_create_refused_prints_the_servers_message(cli: Run, server: Server, receiver: Receiver) -> None:
    """The CLI reads an error's message from `detail.error.message`, where ours mirrors the
    envelope: it prints the server's own words. Nothing is created."""

    def message(body: dict[str, Any]) -> str:
        """What the server answers the same create with, in the error envelope."""
        r = server.call("POST", "/v1/cues", body)
        assert r.status_code >= 400 and r.json()["detail"] == {"error": r.json()["error"]}, r.text
        return str(r.json()["error"]["message"])

    def body(name: str, cron: str) -> dict[str, Any]:
        schedule = {"type": "recurring", "cron": cron}
        return {"name": name, "schedule": schedule, "callback": {"url": receiver.url, "method": "POST"}}

    proc = cli("create", "--name", "bad", "--cron", "not a cron", "--url", receiver.url)
    bad = message(body("bad", "not a cron"))
    assert "not a cron" in bad
    fails(proc, bad)
    webhook_cue(cli, server, receiver, name="taken")
    taken = message(body("taken", "0 2 * * *"))
    assert "taken" in taken
    fails(cli("create", "--name", "taken", "--cron", "0 2 * * *", "--url", receiver.url), taken)
    assert [c["name"] for c in server.call("GET", "/v1/cues").json()["cues"]] == ["taken"]
    # The CLI's own checks come before any request.
    proc = cli("create", "--name", "x", "--cron", "0 2 * * *")
    assert proc.returncode == 2 and "--url is required unless --worker is set" in proc.stderr


def test_list_with_status_filter(cli: Run, server: Server, receiver: Receiver) -> None:
    a = webhook_cue(cli, server, receiver, name="alpha")
    b = worker_cue(server, name="bravo")["id"]
    assert server.call("PATCH", f"/v1/cues/{b}", {"status": "paused"}).status_code == 200

    out = ok(cli("list"))
    rows = {line[:30]: line for line in out.splitlines() if line.startswith("cue_")}
    assert set(rows) == {a, b}
    next_run = cue_state(server, a)["next_run"]
    # Our 30-character ids overflow the 22-wide ID column: the name follows the id directly.
    assert rows[a].startswith(a + "alpha") and "active" in rows[a]
    assert rows[a].rstrip().endswith(next_run[:16].replace("T", " ") + " UTC")
    assert rows[b].startswith(b + "bravo") and "paused" in rows[b] and "—" in rows[b]
    assert "2 cues (1 active, 1 paused)" in out

    out = ok(cli("list", "--status", "paused"))
    assert [line[:30] for line in out.splitlines() if line.startswith("cue_")] == [b]
    assert "1 cues (1 paused)" in out
    out = ok(cli("list", "--limit", "1", "--offset", "1"))
    assert len([line for line in out.splitlines() if line.startswith("cue_")]) == 1
    assert "2 cues" in out  # the total, not the page


def test_list_when_empty(cli: Run) -> None:
    assert "No cues yet." in ok(cli("list"))


def test_get_shows_the_cue_and_its_executions(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    execution_id = fire_raw(server, cue_id)
    delivered(server, execution_id)
    c = cue_state(server, cue_id)

    out = ok(cli("get", cue_id))
    assert fields(out) == {
        "Name": "data-sync-agent",
        "Status": "active",
        "Schedule": "0 2 * * * (America/New_York)",
        "Callback": f"POST {receiver.url}/sync",
        "Next run": c["next_run"],
        "Last run": c["last_run"],
        "Run count": str(c["run_count"]),
        "Created": c["created_at"],
        "Description": "nightly sync",
    }
    scheduled = server.execution(execution_id)["scheduled_for"][:16].replace("T", " ")
    assert "Recent executions:" in out
    assert f"  {scheduled}  success  (200, 1 attempt)" in out.splitlines()


def test_pause_and_resume(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    next_run = cue_state(server, cue_id)["next_run"]

    assert ok(cli("pause", cue_id)).strip() == f"Paused: {cue_id} (data-sync-agent)"
    c = cue_state(server, cue_id)
    assert c["status"] == "paused" and c["next_run"] is None
    assert fields(ok(cli("get", cue_id)))["Status"] == "paused"

    out = ok(cli("resume", cue_id))
    assert out.splitlines()[0] == f"Resumed: {cue_id} (data-sync-agent)"
    assert fields(out)["Next run"] == next_run
    c = cue_state(server, cue_id)
    assert c["status"] == "active" and c["next_run"] == next_run


def test_update(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    out = ok(
        cli(
            "update",
            cue_id,
            "--name",
            "renamed",
            "--cron",
            "30 4 * * *",
            "--url",
            receiver.url + "/other",
            "--payload",
            '{"task": "other"}',
            "--description",
            "changed",
        )
    )
    assert out.strip() == f"Updated: {cue_id} (renamed)"
    c = cue_state(server, cue_id)
    assert c["name"] == "renamed" and c["description"] == "changed" and c["payload"] == {"task": "other"}
    # `--cron` sends {"type": "recurring", "cron": ...} without a timezone: the cue keeps its own.
    assert c["schedule"] == {"type": "recurring", "cron": "30 4 * * *", "timezone": "America/New_York"}
    assert c["callback"]["url"] == receiver.url + "/other"
    proc = cli("update", cue_id)
    assert proc.returncode == 2 and "Must specify at least one field" in proc.stderr


def test_fire_with_a_payload_override(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)

    out = ok(cli("fire", cue_id, "--payload-override", '{"batch_size": 5, "dry_run": true}'))
    assert out.splitlines()[0] == f"Fired: {cue_id}"
    first = fields(out)["Execution"]
    e = server.execution(first)
    assert e["cue_id"] == cue_id and e["triggered_by"] == "manual_fire"
    assert fields(out)["Scheduled"] == e["scheduled_for"]

    out = ok(cli("fire", cue_id, "--payload-override", '{"only": 1}', "--merge-strategy", "replace"))
    second = fields(out)["Execution"]

    got = {r.headers["x-cueapi-execution-id"]: r.json() for r in receiver.wait(2)}
    assert got[first]["payload"] == {"task": "sync_customer_data", "batch_size": 5, "dry_run": True}
    assert got[second]["payload"] == {"only": 1}
    delivered(server, first)
    delivered(server, second)

    out = ok(cli("fire", cue_id))  # no override: the cue's own payload
    third = fields(out)["Execution"]
    got = {r.headers["x-cueapi-execution-id"]: r.json() for r in receiver.wait(3)}
    assert got[third]["payload"] == {"task": "sync_customer_data", "batch_size": 1000}

    proc = cli("fire", cue_id, "--payload-override", "{not json")
    assert proc.returncode == 2 and "--payload-override must be valid JSON" in proc.stderr


# -- executions ----------------------------------------------------------------------------------


def test_executions_list_and_get(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    other = worker_cue(server)["id"]
    delivered_id = fire_raw(server, cue_id)
    pending_id = fire_raw(server, other)
    delivered(server, delivered_id)

    out = ok(cli("executions", "list"))
    rows = {line[:31]: line for line in out.splitlines() if line.startswith("exec_")}
    assert set(rows) == {delivered_id, pending_id}
    # 31-character execution ids overflow the 26-wide column (so would the reference's UUIDs).
    assert rows[delivered_id].startswith(delivered_id + cue_id + "success")
    assert rows[pending_id].startswith(pending_id + other + "pending")
    scheduled = server.execution(delivered_id)["scheduled_for"][:16].replace("T", " ")
    assert rows[delivered_id].rstrip().endswith(scheduled)

    out = ok(cli("executions", "list", "--cue-id", other))
    assert [line[:31] for line in out.splitlines() if line.startswith("exec_")] == [pending_id]
    out = ok(cli("executions", "list", "--status", "success"))
    assert [line[:31] for line in out.splitlines() if line.startswith("exec_")] == [delivered_id]
    assert "No executions found." in ok(cli("executions", "list", "--status", "failed"))

    e = server.execution(delivered_id)
    f = fields(ok(cli("executions", "get", delivered_id)))
    assert f == {
        "ID": delivered_id,
        "Cue": cue_id,
        "Status": "success",
        "Scheduled": e["scheduled_for"],
        "Started": e["started_at"],
        "Attempts": "1",
        "HTTP status": "200",
    }
    f = fields(ok(cli("executions", "get", pending_id)))
    assert f["ID"] == pending_id and f["Status"] == "pending" and f["Attempts"] == "0"


def test_executions_report_outcome(cli: Run, server: Server) -> None:
    execution_id = fire_raw(server, worker_cue(server)["id"])
    out = ok(
        cli(
            "executions",
            "report-outcome",
            execution_id,
            "--success",
            "--external-id",
            "batch_20260324_002",
            "--result-url",
            "https://example.com/reports/2",
            "--summary",
            "Report sent",
        )
    )
    assert out.strip() == f"Outcome recorded: {execution_id}"
    e = server.execution(execution_id)
    assert e["outcome_state"] == "reported_success"
    o = e["outcome"]
    assert o["success"] is True and o["external_id"] == "batch_20260324_002"
    assert o["result_url"] == "https://example.com/reports/2" and o["summary"] == "Report sent"

    # Write-once: a second report is a 409, which the CLI names; the first outcome stays.
    proc = cli("executions", "report-outcome", execution_id, "--failure")
    fails(proc, "Outcome already recorded (write-once)")
    assert server.execution(execution_id)["outcome"] == o


def test_executions_report_a_failure(cli: Run, server: Server) -> None:
    # Without retries the reported failure is final (with them, the execution would be retried).
    execution_id = fire_raw(server, worker_cue(server, retry={"max_attempts": 0})["id"])
    out = ok(cli("executions", "report-outcome", execution_id, "--failure", "--summary", "upstream down"))
    assert out.splitlines()[0] == f"Outcome recorded: {execution_id}"
    assert fields(out)["Marked"] == "failure"
    e = server.execution(execution_id)
    assert e["outcome_state"] == "reported_failure" and e["outcome"]["success"] is False
    assert e["outcome"]["summary"] == "upstream down"


# -- delete and unknown ids ----------------------------------------------------------------------


def test_delete(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    keep = webhook_cue(cli, server, receiver, name="keep")

    # Without --yes the CLI asks (after a GET for the name); "n" leaves the cue alone.
    proc = cli("delete", cue_id, input="n\n")
    assert proc.returncode == 0 and f"Delete {cue_id} (data-sync-agent)?" in proc.stdout
    assert "Cancelled." in proc.stdout
    assert cue_state(server, cue_id)["status"] == "active"

    assert ok(cli("delete", cue_id, "--yes")).strip() == "Deleted."
    assert server.call("GET", f"/v1/cues/{cue_id}").status_code == 404
    assert cue_state(server, keep)["name"] == "keep"
    fails(cli("delete", cue_id, "-y"), f"Cue not found: {cue_id}")
    fails(cli("get", cue_id), f"Cue not found: {cue_id}")


def test_unknown_ids_are_named(cli: Run, server: Server, receiver: Receiver) -> None:
    cue_id = webhook_cue(cli, server, receiver)
    missing_cue, missing_exec = "cue_" + "0" * 26, "exec_" + "0" * 26
    fails(cli("get", missing_cue), f"Cue not found: {missing_cue}")
    fails(cli("pause", missing_cue), f"Cue not found: {missing_cue}")
    fails(cli("resume", missing_cue), f"Cue not found: {missing_cue}")
    fails(cli("update", missing_cue, "--name", "x"), f"Cue not found: {missing_cue}")
    fails(cli("fire", missing_cue), f"Cue not found: {missing_cue}")
    fails(cli("delete", missing_cue, "-y"), f"Cue not found: {missing_cue}")
    fails(cli("delete", missing_cue, input="y\n"), f"Cue not found: {missing_cue}")
    fails(cli("executions", "get", missing_exec), f"Execution not found: {missing_exec}")
    fails(
        cli("executions", "report-outcome", missing_exec, "--success"),
        f"Execution not found: {missing_exec}",
    )
    # Another user's cue is just as unknown, and stays as it was.
    other_key, _ = server.register("other@example.com")
    fails(cli("pause", cue_id, env={"CUEAPI_API_KEY": other_key}), f"Cue not found: {cue_id}")
    fails(cli("delete", cue_id, "-y", env={"CUEAPI_API_KEY": other_key}), f"Cue not found: {cue_id}")
    assert cue_state(server, cue_id)["status"] == "active"
    assert server.call("GET", "/v1/executions").json()["executions"] == []


def test_usage(cli: Run, server: Server, receiver: Receiver) -> None:
    webhook_cue(cli, server, receiver)
    f = fields(ok(cli("usage")))
    assert f["Plan"] == "Self-hosted"
    assert f["Active cues"].startswith("1 / ")
    assert f["Executions"].startswith("0 / ")
    # Nothing is capped on a self-hosted server; the CLI prints what the server says.
    assert f == {
        "Plan": "Self-hosted",
        "Active cues": "1 / unlimited",
        # It computes a percentage from this limit, so it is a number: the largest 32-bit one.
        "Executions": "0 / 2,147,483,647 (0.0%)",
        "Rate limit": "1000000 req/min",
    }


def test_quickstart_delivers_to_the_servers_echo_endpoint(tmp_path: Path) -> None:
    """`cueapi quickstart` creates a one-shot cue 15 s ahead whose callback is the server's own
    `POST /v1/echo/{token}`, polls `GET /v1/echo/{token}` every 2 s until the delivery shows, then
    deletes the cue. The server runs on a manual clock at the real time, moved to the cue's
    instant once the cue exists: the test takes one poll, not 15 s."""
    clock = cueapi.ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
    server = start_server(tmp_path / "quickstart.db", clock)
    proc = subprocess.Popen(
        [str(CLI_BIN), "quickstart"],
        env=cli_env(server, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cues = wait_for(lambda: server.call("GET", "/v1/cues").json()["cues"], what="the quickstart cue")
        assert [c["name"] for c in cues] == ["quickstart-test"]
        token = cues[0]["callback"]["url"].rsplit("/", 1)[1]
        assert cues[0]["callback"]["url"] == f"{server.url}/v1/echo/{token}"
        clock.set(datetime.fromisoformat(cues[0]["next_run"].replace("Z", "+00:00")))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and not err, (out, err)
        assert "Callback delivered!" in out, out
        assert '"message": "Your first cue! CueAPI is working."' in out
        assert "Deleted." in out and "CueAPI is working!" in out
        assert server.call("GET", "/v1/cues").json()["cues"] == []
        got = server.call("GET", f"/v1/echo/{token}").json()
        assert got["status"] == "delivered" and got["payload"]["name"] == "quickstart-test"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.app.close()


# -- what the server does not serve yet ----------------------------------------------------------


def test_worker_claim_cycle(cli: Run, server: Server) -> None:
    execution_id = fire_raw(server, worker_cue(server)["id"])
    assert execution_id in ok(cli("executions", "list-claimable"))
    out = ok(cli("executions", "claim", execution_id, "--worker-id", "w1"))
    assert out.startswith(f"Claimed: {execution_id}")
    out = ok(cli("executions", "heartbeat", execution_id, "--worker-id", "w1"))
    assert out.startswith(f"Heartbeat acknowledged: {execution_id}")
    assert server.execution(execution_id)["status"] == "delivering"
    # Who holds the claim: it shows `claimed_by_worker`, kept once the outcome is in.
    assert fields(ok(cli("executions", "get", execution_id)))["Claimed by"] == "w1"
    out = ok(cli("executions", "report-outcome", execution_id, "--success"))
    assert out.strip() == f"Outcome recorded: {execution_id}"
    f = fields(ok(cli("executions", "get", execution_id)))
    assert (f["Status"], f["Claimed by"]) == ("success", "w1")
