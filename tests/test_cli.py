"""The ``cueapi`` command's remote commands (the official CLI's, taken over) against a live server:
each command line runs as ``python -m cueapi`` in a subprocess with a throw-away config directory,
and each test checks the exit code, what is printed (``--json`` parsed and compared with the
server's own answer) and the server's state.

The last tests run the official CLI's command lines (0.2.0, in .venv-cli) with both CLIs against
one server, each as its own user, and check that both exit the same way and leave the same state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import cueapi
import pytest

from tests.conftest import Receiver, Server, start_server, wait_for

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_BIN = ROOT / ".venv-cli" / "bin" / "cueapi"
OURS = [sys.executable, "-m", "cueapi"]
MISSING_CUE, MISSING_EXEC = "cue_" + "0" * 26, "exec_" + "0" * 26
ANSI = re.compile(r"\x1b\[[0-9;]*m")

Proc = subprocess.CompletedProcess[str]


# -- running a CLI -------------------------------------------------------------------------------


def cli_env(server: Server, home: Path) -> dict[str, str]:
    """A clean environment: the server's base URL the official CLI's way, the user's key, a
    throw-away config directory."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONUTF8": "1",
        "CUEAPI_API_BASE": server.url + "/v1",
        "CUEAPI_API_KEY": server.key,
    }


@dataclasses.dataclass
class CLI:
    """Runs one ``cueapi`` command line (ours or the official one) as a subprocess. ``env``
    replaces or (with None) removes variables; ``input`` feeds prompts. No run may print a
    traceback, nor the key (unless ``key_shown``)."""

    command: list[str]
    env: dict[str, str]
    key: str

    def __call__(
        self, *args: str, env: dict[str, str | None] | None = None, input: str = "", key_shown: bool = False
    ) -> Proc:
        e = dict(self.env)
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        proc = subprocess.run(
            [*self.command, *args], env=e, input=input, capture_output=True, text=True, timeout=120
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if not key_shown:
            assert self.key not in proc.stdout + proc.stderr
        return proc

    def sh(self, command: str, **kwargs: Any) -> Proc:
        """A command line as typed after ``cueapi`` (split as a shell would)."""
        return self(*shlex.split(command), **kwargs)

    @property
    def credentials(self) -> Path:
        return Path(self.env["XDG_CONFIG_HOME"]) / "cueapi" / "credentials.json"


def parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Runs independent command lines at once (each costs a Python start-up)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda call: call(), calls))


def ok(proc: Proc) -> str:
    """Exit 0 with nothing on stderr; returns stdout."""
    assert proc.returncode == 0 and not proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def doc(proc: Proc) -> Any:
    """The one JSON document a ``--json`` run printed."""
    return json.loads(ok(proc))


def failed(proc: Proc, message: str) -> None:
    """Exit 1, nothing on stdout, ``Error: <message>`` on stderr."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and proc.stderr.startswith(f"Error: {message}"), proc.stderr


def usage_error(proc: Proc, message: str) -> None:
    """Exit 2, the usage and the message on stderr, nothing on stdout."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and "usage: cueapi" in proc.stderr and message in proc.stderr, proc.stderr


def fields(stdout: str) -> dict[str, str]:
    """The ``Label:   value`` lines, as a dict (first occurrence wins)."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        m = re.match(r"^([A-Z][A-Za-z ]*):\s+(.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2).rstrip())
    return out


def utc_text(iso: str) -> str:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S UTC")


def cues_of(server: Server) -> list[dict[str, Any]]:
    return list(server.call("GET", "/v1/cues", params={"limit": 100}).json()["cues"])


def cue_named(server: Server, name: str) -> dict[str, Any]:
    found = [c for c in cues_of(server) if c["name"] == name]
    assert len(found) == 1, [c["name"] for c in cues_of(server)]
    return found[0]


def executions_of(server: Server, **params: Any) -> list[dict[str, Any]]:
    return list(server.call("GET", "/v1/executions", params={"limit": 100, **params}).json()["executions"])


def fire_raw(server: Server, cue_id: str) -> str:
    r = server.call("POST", f"/v1/cues/{cue_id}/fire")
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def delivered(server: Server, execution_id: str) -> None:
    wait_for(lambda: server.execution(execution_id)["status"] == "success", what=f"{execution_id} delivered")


def worker_cue(server: Server, name: str, **extra: Any) -> dict[str, Any]:
    return server.cue(
        name=name, transport="worker", schedule={"type": "recurring", "cron": "0 3 * * *"}, **extra
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- fixtures: one server for the module, a fresh user per test ----------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cli") / "cli.db")
    yield s
    s.app.close()


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def new_user(live: Server) -> Server:
    key, secret = live.register(f"u{uuid.uuid4().hex[:12]}@example.com")
    return dataclasses.replace(live, key=key, secret=secret)


@pytest.fixture
def user(live: Server) -> Server:
    """A user of its own on the module's server: a test sees only what it made."""
    return new_user(live)


@pytest.fixture
def cli(user: Server, tmp_path: Path) -> CLI:
    return CLI(OURS, cli_env(user, tmp_path / "home"), user.key)


def email_of(server: Server) -> str:
    return str(server.call("GET", "/v1/auth/me").json()["email"])


# -- the command line itself ---------------------------------------------------------------------

COMMANDS = shlex.split(
    "serve keys history login logout whoami usage key create list get update pause resume fire delete "
    "bulk-delete executions workers quickstart"
)
EXECUTION_COMMANDS = shlex.split(
    "list list-claimable get claim claim-next heartbeat report-outcome replay verification-pending verify"
)


def test_version_help_and_global_options_before_or_after_the_command(cli: CLI, user: Server) -> None:
    worker_cue(user, "alpha")
    version, helptext, exec_help, before, after = parallel(
        [
            lambda: cli("--version"),
            lambda: cli("--help"),
            lambda: cli("executions", "--help"),
            lambda: cli("--json", "list"),
            lambda: cli("list", "--json", "--limit", "5"),
        ]
    )
    assert ok(version) == f"cueapi, version {cueapi.__version__}\n"
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s", ok(helptext), re.M), name
    assert "--api-key" in helptext.stdout and "--base-url" in helptext.stdout and "--json" in helptext.stdout
    for name in EXECUTION_COMMANDS:
        assert re.search(rf"^\s+{name}(\s|$)", ok(exec_help), re.M), name
    assert doc(before) == user.call("GET", "/v1/cues", params={"limit": 20, "offset": 0}).json()
    assert doc(after) == user.call("GET", "/v1/cues", params={"limit": 5, "offset": 0}).json()
    assert [c["name"] for c in doc(after)["cues"]] == ["alpha"]


def test_usage_errors_exit_2_and_send_nothing(cli: CLI, user: Server) -> None:
    cue = worker_cue(user, "keep")
    c, url = cue["id"], "https://example.com/hook"
    cron = ("--cron", "0 2 * * *")
    cases: list[tuple[tuple[str, ...], str]] = [
        ((), "required: COMMAND"),
        (("nope",), "invalid choice: 'nope'"),
        (("create", "--name", "x", *cron), "--url is required unless --worker is set."),
        (("create", "--name", "x", *cron, "--at", "2030-01-01T00:00:00Z", "--url", url), "Cannot use both"),
        (("create", "--name", "x", "--url", url), "Must specify either --cron or --at."),
        (("create", *cron, "--url", url), "--name"),
        (
            ("create", "--name", "x", *cron, "--worker", "--payload", "{not json"),
            "--payload must be valid JSON",
        ),
        (("create", "--name", "x", *cron, "--worker", "--catch-up", "garbage"), "invalid choice: 'garbage'"),
        (("update", c), "Must specify at least one field to update."),
        (("update", c, "--on-success-fire", "cue_x", "--clear-on-success-fire"), "mutually exclusive"),
        (("fire", c, "--payload-override", "{not json"), "--payload-override must be valid JSON"),
        (("fire", c, "--payload-override", "[1, 2]"), "--payload-override must be a JSON object"),
        (("fire", c, "--merge-strategy", "zz"), "invalid choice: 'zz'"),
        (("executions", "claim", "exec_x"), "--worker-id"),
        (("executions", "report-outcome", "exec_x"), "one of the arguments --success --failure is required"),
        (("executions", "verify", "exec_x", "--reason", "x" * 501), "--reason must be ≤500 characters"),
        (("bulk-delete", *[f"cue_{i}" for i in range(101)], "-y"), "at most 100 ids per call; got 101"),
        (("--base-url", "ftp://example.com", "list"), "is not an http(s) URL"),
        (("get", " "), "an id must not be empty"),
    ]
    procs = parallel([lambda args=args: cli(*args) for args, _ in cases])
    for (_, message), proc in zip(cases, procs, strict=True):
        usage_error(proc, message)
    # Nothing was sent that changed anything.
    assert [x["id"] for x in cues_of(user)] == [c]
    assert executions_of(user) == []
    assert cue_named(user, "keep")["updated_at"] == cue["updated_at"]


def test_no_key_a_wrong_key_and_no_server_exit_1_with_how_to(cli: CLI, user: Server) -> None:
    official = CLI([str(OFFICIAL_BIN)], cli.env, cli.key)
    no_key: dict[str, str | None] = {"CUEAPI_API_KEY": None}
    wrong = "cue_sk_" + "0" * 32
    port = closed_port()
    ours_list, ours_whoami, theirs, refused, unreachable, bad_env = parallel(
        [
            lambda: cli("list", env=no_key),
            lambda: cli("whoami", env=no_key),
            lambda: official("list", env=no_key),
            lambda: cli("whoami", env={"CUEAPI_API_KEY": wrong}),
            lambda: cli("--base-url", f"http://127.0.0.1:{port}", "list"),
            lambda: cli("list", env={"CUEAPI_API_BASE": "not a url"}),
        ]
    )
    for proc in (ours_list, ours_whoami):
        failed(proc, "no API key. Give --api-key KEY, set CUEAPI_API_KEY, or save one with `cueapi login")
        assert str(cli.credentials) in proc.stderr
    # The deviation: the official CLI says so on stdout and exits 0.
    assert theirs.returncode == 0 and "Not logged in. Run `cueapi login` to authenticate." in theirs.stdout
    failed(refused, "Invalid API key (HTTP 401, invalid_api_key)")
    assert "the API key came from CUEAPI_API_KEY" in refused.stderr and wrong not in refused.stderr
    failed(unreachable, f"cannot reach the server at http://127.0.0.1:{port}: ")
    failed(bad_env, "CUEAPI_API_BASE: base_url 'not a url' is not an http(s) URL")
    assert cues_of(user) == []


# -- cues ----------------------------------------------------------------------------------------


def test_cue_lifecycle_with_json_output_matching_the_server(cli: CLI, user: Server, hooks: Receiver) -> None:
    created = doc(
        cli.sh(
            f"--json create --name data-sync-agent --cron '0 2 * * *' --timezone America/New_York "
            f'--url {hooks.url}/sync --payload \'{{"task": "sync_customer_data", "batch_size": 1000}}\' '
            "--description 'nightly sync'"
        )
    )
    cue_id = created["id"]
    stored = user.call("GET", f"/v1/cues/{cue_id}").json()
    assert {k: stored[k] for k in created} == created
    assert created["schedule"] == {"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"}
    assert created["callback"] == {"url": hooks.url + "/sync", "method": "POST", "headers": {}}

    listed, got = parallel([lambda: cli("list", "--json"), lambda: cli("get", cue_id, "--json")])
    assert doc(listed) == user.call("GET", "/v1/cues", params={"limit": 20, "offset": 0}).json()
    assert doc(got) == user.call("GET", f"/v1/cues/{cue_id}").json()

    updated = doc(cli("--json", "update", cue_id, "--name", "renamed", "--cron", "30 4 * * *"))
    stored = user.call("GET", f"/v1/cues/{cue_id}").json()
    assert updated["name"] == "renamed" == stored["name"]
    # --cron sends no time zone: the cue keeps its own.
    assert stored["schedule"] == {"type": "recurring", "cron": "30 4 * * *", "timezone": "America/New_York"}

    paused = doc(cli("--json", "pause", cue_id))
    assert paused["status"] == "paused" and paused["next_run"] is None
    assert user.call("GET", f"/v1/cues/{cue_id}").json()["status"] == "paused"
    resumed = doc(cli("--json", "resume", cue_id))
    assert resumed["status"] == "active" and resumed["next_run"] == stored["next_run"]

    fired = doc(cli("--json", "fire", cue_id, "--payload-override", '{"batch_size": 5}'))
    assert fired["cue_id"] == cue_id and fired["triggered_by"] == "manual_fire"
    delivered(user, fired["id"])
    got_payload = {r.headers["x-cueapi-execution-id"]: r.json()["payload"] for r in hooks.requests}
    assert got_payload[fired["id"]] == {"task": "sync_customer_data", "batch_size": 5}
    history = doc(cli("--json", "executions", "list", "--cue-id", cue_id))
    assert (
        history
        == user.call("GET", "/v1/executions", params={"limit": 20, "offset": 0, "cue_id": cue_id}).json()
    )
    assert [e["id"] for e in history["executions"]] == [fired["id"]]

    assert doc(cli("--json", "delete", cue_id, "-y")) == {"id": cue_id, "deleted": True}
    assert user.call("GET", f"/v1/cues/{cue_id}").status_code == 404


def test_create_and_update_options_reach_the_server(cli: CLI, user: Server) -> None:
    created = doc(
        cli.sh(
            """--json create --name report --at 2030-01-01T10:00:00Z --timezone Europe/Paris --worker """
            """--payload '{"task": "t"}' --description d --on-failure '{"email": false, "pause": true}' """
            """--delivery '{"timeout_seconds": 60}' --alerts '{"consecutive_failures": 5}' --catch-up skip """
            """--verification '{"mode": "require_external_id"}'"""
        )
    )
    c = user.call("GET", f"/v1/cues/{created['id']}").json()
    assert c["schedule"] == {"type": "once", "at": "2030-01-01T10:00:00Z", "timezone": "Europe/Paris"}
    assert c["transport"] == "worker" and c["payload"] == {"task": "t"} and c["description"] == "d"
    assert c["on_failure"]["email"] is False and c["on_failure"]["pause"] is True
    assert c["delivery"]["timeout_seconds"] == 60 and c["alerts"]["consecutive_failures"] == 5
    assert c["catch_up"] == "skip_missed" and c["verification"] == {"mode": "require_external_id"}

    out = ok(
        cli.sh(
            f"""update {c["id"]} --status paused --catch-up all --delivery '{{"timeout_seconds": 90}}' """
            """--verification '{"mode": "require_result_url"}' --description changed"""
        )
    )
    assert out.strip() == f"Updated: {c['id']} (report)"
    c = user.call("GET", f"/v1/cues/{c['id']}").json()
    assert c["status"] == "paused" and c["catch_up"] == "replay_all" and c["description"] == "changed"
    assert c["delivery"]["timeout_seconds"] == 90 and c["verification"] == {"mode": "require_result_url"}
    assert c["schedule"]["at"] == "2030-01-01T10:00:00Z"  # untouched

    out = ok(cli.sh("create --name web --cron '0 9 * * 1' --url https://example.com/x --method PUT"))
    web = cue_named(user, "web")
    assert fields(out) == {
        "Created": web["id"],
        "Name": "web",
        "Status": "active",
        "Next run": utc_text(web["next_run"]),
    }
    assert web["callback"] == {"url": "https://example.com/x", "method": "PUT", "headers": {}}


def test_head_only_flags_send_the_official_clis_requests(cli: CLI, receiver: Receiver) -> None:
    """Flags of the official CLI's HEAD that 0.2.0 lacks (on_success_fire, required payload keys,
    the hosted catch-up names): the requests, as a recording server sees them."""
    runs = [
        """create --name x --cron '0 9 * * *' --worker --delivery '{"timeout_seconds": 60}' """
        """--alerts '{"consecutive_failures": 3}' --catch-up skip_missed """
        """--verification '{"mode": "manual"}' --on-success-fire cue_chained --require-payload-override """
        """--required-keys ' task ,message,  token'""",
        "update cue_a --clear-on-success-fire --no-require-payload-override --required-keys ''",
        "fire cue_a --send-at 2026-05-04T20:00:00Z --exit-criteria a --exit-criteria b --idempotency-key k1",
        "fire cue_a --exit-criteria a --exit-criteria ''",
        "executions list --cue-id cue_a --status success --limit 50 --outcome-state verified_success "
        "--result-type pr --has-evidence --triggered-by manual_fire",
        "executions verify exec_a --invalid --reason 'evidence missing'",
        "key webhook-secret regenerate --yes",
        "bulk-delete cue_a cue_b -y",
    ]
    procs = parallel([lambda run=run: cli.sh(f"--base-url {receiver.url} {run}") for run in runs])
    assert all(p.returncode == 0 for p in procs), [p.stderr for p in procs]
    requests = receiver.wait(len(runs))
    got = sorted(((r.method, r.path, r.json() if r.body else None) for r in requests), key=repr)
    expected = [
        (
            "POST",
            "/v1/cues",
            {
                "name": "x",
                "schedule": {"timezone": "UTC", "type": "recurring", "cron": "0 9 * * *"},
                "transport": "worker",
                "delivery": {"timeout_seconds": 60},
                "alerts": {"consecutive_failures": 3},
                "catch_up": "skip_missed",
                "verification": {"mode": "manual"},
                "on_success_fire": "cue_chained",
                "require_payload_override": True,
                "required_payload_keys": ["task", "message", "token"],
            },
        ),
        (
            "PATCH",
            "/v1/cues/cue_a",
            {"on_success_fire": None, "require_payload_override": False, "required_payload_keys": []},
        ),
        (
            "POST",
            "/v1/cues/cue_a/fire",
            {"send_at": "2026-05-04T20:00:00Z", "exit_criteria": ["a", "b"], "idempotency_key": "k1"},
        ),
        ("POST", "/v1/cues/cue_a/fire", {"exit_criteria": []}),
        (
            "GET",
            "/v1/executions?limit=50&offset=0&cue_id=cue_a&status=success&outcome_state=verified_success"
            "&triggered_by=manual_fire&has_evidence=true&result_type=pr",
            None,
        ),
        ("POST", "/v1/executions/exec_a/verify", {"valid": False, "reason": "evidence missing"}),
        ("POST", "/v1/auth/webhook-secret/regenerate", {}),
        ("POST", "/v1/cues/bulk-delete", {"ids": ["cue_a", "cue_b"]}),
    ]
    assert got == sorted(expected, key=repr)
    destructive = {r.path for r in requests if r.headers.get("x-confirm-destructive") == "true"}
    assert destructive == {"/v1/auth/webhook-secret/regenerate", "/v1/cues/bulk-delete"}
    assert all(r.headers["authorization"] == f"Bearer {cli.key}" for r in requests)


def test_bulk_delete_falls_back_to_one_at_a_time_on_a_server_without_the_route(
    cli: CLI, receiver: Receiver
) -> None:
    """`cueapi serve` has `POST /v1/cues/bulk-delete`; an older server answers 405, and the
    command then deletes the cues one by one with the same outcome per id."""

    def answer(r: Any) -> tuple[int, dict[str, str], bytes, float]:
        def error(status: int, code: str) -> tuple[int, dict[str, str], bytes, float]:
            body = {"error": {"code": code, "message": code, "status": status}}
            return status, {"Content-Type": "application/json"}, json.dumps(body).encode(), 0.0

        if r.path == "/v1/cues/bulk-delete":
            return error(405, "method_not_allowed")
        if (r.method, r.path) == ("DELETE", "/v1/cues/cue_a"):
            return 204, {}, b"", 0.0
        return error(404, "cue_not_found")

    receiver.answer = answer
    proc = cli("--json", "--base-url", receiver.url, "bulk-delete", "cue_a", "cue_b", "cue_a", "-y")
    assert proc.returncode == 1, proc.stderr
    assert json.loads(proc.stdout) == {"deleted": ["cue_a"], "skipped": ["cue_b"]}
    assert proc.stderr.strip() == "Error: 1 not found: cue_b"
    sent = [(r.method, r.path) for r in receiver.wait(3)]
    assert sent == [
        ("POST", "/v1/cues/bulk-delete"),
        ("DELETE", "/v1/cues/cue_a"),
        ("DELETE", "/v1/cues/cue_b"),
    ]


def test_tables_align_by_visible_width_and_colour_only_on_a_terminal(cli: CLI, user: Server) -> None:
    short = user.cue(
        name="a",
        schedule={"type": "recurring", "cron": "0 2 * * *"},
        callback={"url": "https://example.com/a"},
    )
    wide = worker_cue(user, "日本語-report")
    user.call("PATCH", f"/v1/cues/{wide['id']}", {"status": "paused"})
    piped = ok(cli("list"))
    assert "\x1b" not in piped
    on_tty, code = run_on_a_terminal(cli, "list")
    assert code == 0 and "\x1b[32mactive\x1b[0m" in on_tty and "\x1b[33mpaused\x1b[0m" in on_tty
    assert "\x1b[1mID\x1b[0m" in on_tty
    # With the colour taken out, the terminal shows exactly what a pipe gets.
    assert ANSI.sub("", on_tty) == piped
    no_colour, code = run_on_a_terminal(cli, "list", env={"NO_COLOR": "1"})
    assert code == 0 and no_colour == piped

    lines = piped.splitlines()
    header = next(line for line in lines if line.startswith("ID"))
    rows = {c["id"]: next(line for line in lines if line.startswith(c["id"])) for c in (short, wide)}
    for column, values in (("NAME", ("a", "日本語-report")), ("STATUS", ("active", "paused"))):
        for row, value in zip(rows.values(), values, strict=True):
            # Every cell starts at its header's column, counted in screen columns.
            assert display_width(row[: row.index(value, len(short["id"]))]) == header.index(column), (
                row,
                column,
            )
    assert rows[short["id"]].endswith(
        datetime.fromisoformat(short["next_run"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    )
    assert rows[wide["id"]].endswith("—")
    assert "2 cues (1 active, 1 paused)" in lines
    assert not any(line != line.rstrip() for line in lines)


def display_width(text: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def run_on_a_terminal(cli: CLI, *args: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Runs our CLI with its stdout on a pseudo-terminal; returns what it wrote and its exit code."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [*cli.command, *args],
        env={**cli.env, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child has exited and closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=60)
    assert proc.stderr is not None
    assert proc.stderr.read() == ""
    proc.stderr.close()
    return b"".join(chunks).decode().replace("\r\n", "\n"), code


def test_get_shows_the_cue_and_its_recent_executions_in_utc(cli: CLI, user: Server, hooks: Receiver) -> None:
    cue = user.cue(
        name="nightly",
        description="the nightly sync",
        schedule={"type": "recurring", "cron": "0 2 * * *", "timezone": "America/New_York"},
        callback={"url": hooks.url + "/nightly"},
        payload={"n": 1},
    )
    execution_id = fire_raw(user, cue["id"])
    delivered(user, execution_id)
    c = user.call("GET", f"/v1/cues/{cue['id']}").json()
    e = user.execution(execution_id)
    out = ok(cli("get", cue["id"]))
    assert fields(out) == {
        "ID": cue["id"],
        "Name": "nightly",
        "Status": "active",
        "Schedule": "0 2 * * * (America/New_York)",
        "Callback": f"POST {hooks.url}/nightly",
        "Next run": utc_text(c["next_run"]),
        "Last run": utc_text(c["last_run"]),
        "Run count": "1",
        "Created": utc_text(c["created_at"]),
        "Description": "the nightly sync",
        "Payload": '{"n": 1}',
    }
    assert f"  {utc_text(e['scheduled_for'])}  success  (200, 1 attempt)" in out.splitlines()
    out = ok(cli("executions", "get", execution_id))
    assert fields(out) == {
        "ID": execution_id,
        "Cue": f"{cue['id']} (nightly)",
        "Status": "success",
        "Triggered by": "manual_fire",
        "Scheduled": utc_text(e["scheduled_for"]),
        "Started": utc_text(e["started_at"]),
        "Attempts": "1",
        "HTTP status": "200",
        "Payload": "{",
    }
    assert '{\n  "n": 1\n}' in out  # the payload, as indented JSON


def test_api_errors_exit_1_naming_the_servers_code_and_nothing_changes(cli: CLI, user: Server) -> None:
    keep = worker_cue(user, "keep")
    cron = ("--cron", "0 2 * * *", "--worker")
    procs = parallel(
        [
            lambda: cli("get", MISSING_CUE),
            lambda: cli("pause", MISSING_CUE),
            lambda: cli("fire", MISSING_CUE),
            lambda: cli("delete", MISSING_CUE, "-y"),
            lambda: cli("delete", MISSING_CUE),  # the prompt's GET finds nothing: no question
            lambda: cli("executions", "get", MISSING_EXEC),
            lambda: cli("executions", "report-outcome", MISSING_EXEC, "--success"),
            lambda: cli("workers", "delete", "nobody", "-y"),
            lambda: cli("create", "--name", "keep", *cron),
            lambda: cli("create", "--name", "x", *cron, "--payload", "[1]"),
            lambda: cli("create", "--name", "x", "--cron", "not a cron", "--worker"),
            lambda: cli("create", "--name", "x", *cron, "--on-success-fire", "cue_not_a_cue_of_yours"),
        ]
    )
    expected = [
        f"Cue not found: {MISSING_CUE} (HTTP 404, cue_not_found)",
        f"Cue not found: {MISSING_CUE} (HTTP 404, cue_not_found)",
        f"Cue not found: {MISSING_CUE} (HTTP 404, cue_not_found)",
        f"Cue not found: {MISSING_CUE} (HTTP 404, cue_not_found)",
        f"Cue not found: {MISSING_CUE} (HTTP 404, cue_not_found)",
        f"Execution not found: {MISSING_EXEC} (HTTP 404, execution_not_found)",
        f"Execution not found: {MISSING_EXEC} (HTTP 404, execution_not_found)",
        "Worker not found: nobody (HTTP 404, worker_not_found)",
        'a cue named "keep" already exists (HTTP 409, duplicate_cue_name)',
        "body.payload: must be an object (HTTP 422, validation_error)",
        'cron expression "not a cron"',
        # A chain target that is not one of the caller's cues.
        'body.on_success_fire: there is no cue "cue_not_a_cue_of_yours"',
    ]
    for proc, message in zip(procs, expected, strict=True):
        failed(proc, message)
    assert "(HTTP 400, invalid_schedule)" in procs[10].stderr
    assert "(HTTP 422, validation_error)" in procs[11].stderr
    assert [c["name"] for c in cues_of(user)] == ["keep"]
    assert cue_named(user, "keep")["updated_at"] == keep["updated_at"]


# -- executions and workers ----------------------------------------------------------------------


def test_the_worker_claim_cycle_outcome_verification_and_replay(cli: CLI, user: Server) -> None:
    cue = worker_cue(user, "nightly-report", retry={"max_attempts": 0})
    execution_id = fire_raw(user, cue["id"])

    as_json, table = parallel(
        [lambda: cli("--json", "executions", "list-claimable"), lambda: cli("executions", "list-claimable")]
    )
    claimable = doc(as_json)
    assert claimable == user.call("GET", "/v1/executions/claimable").json()
    assert [e["execution_id"] for e in claimable["executions"]] == [execution_id]
    assert re.search(rf"^{execution_id}\s+nightly-report\s+\d{{4}}-", ok(table), re.M)

    claimed = doc(cli("--json", "executions", "claim", execution_id, "--worker-id", "w1"))
    assert claimed["claimed"] is True and claimed["execution_id"] == execution_id
    assert user.execution(execution_id)["status"] == "delivering"
    out, wrong_worker, again, nothing = parallel(
        [
            lambda: cli("executions", "heartbeat", execution_id, "--worker-id", "w1"),
            lambda: cli("executions", "heartbeat", execution_id, "--worker-id", "w2"),
            lambda: cli("executions", "claim", execution_id, "--worker-id", "w2"),
            lambda: cli("executions", "claim-next", "--worker-id", "w2"),
        ]
    )
    assert ok(out).startswith(f"Heartbeat acknowledged: {execution_id}\nLease until:     ")
    failed(
        wrong_worker,
        f'execution {execution_id} is claimed by another worker, not "w2" (HTTP 403, not_execution_owner)',
    )
    failed(again, f"execution {execution_id} is delivering, not waiting for a claim (HTTP 409, claim_failed)")
    assert "No executions available for claiming." in ok(nothing)  # not an error

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
    assert out.splitlines()[0] == f"Outcome recorded: {execution_id}"
    e = user.execution(execution_id)
    assert e["status"] == "success" and e["outcome_state"] == "reported_success"
    assert e["outcome"]["external_id"] == "batch_20260324_002" and e["outcome"]["summary"] == "Report sent"
    failed(
        cli("executions", "report-outcome", execution_id, "--failure"),
        "an outcome was already recorded for this execution (HTTP 409, outcome_already_recorded)",
    )
    assert user.execution(execution_id)["outcome"] == e["outcome"]

    pending = doc(cli("--json", "executions", "verification-pending", execution_id))
    assert pending["outcome_state"] == "verification_pending"
    out = ok(cli("executions", "verify", execution_id, "--invalid", "--reason", "no such report"))
    assert f"Marked verification-failed: {execution_id}" in out
    assert user.execution(execution_id)["outcome_state"] == "verification_failed"

    replayed = doc(cli("--json", "executions", "replay", execution_id))
    assert replayed["replay_of"] == execution_id and replayed["triggered_by"] == "replay"
    assert doc(cli("--json", "executions", "get", replayed["id"])) == user.execution(replayed["id"])
    failed(
        cli("executions", "replay", replayed["id"]),
        f"execution {replayed['id']} is still pending; replay it once it has finished "
        "(HTTP 409, execution_in_flight)",
    )

    # claim-next takes the replay; with a task that has nothing, it says so and exits 0.
    out = ok(cli("executions", "claim-next", "--worker-id", "w1"))
    assert out.splitlines()[0] == f"Claimed: {replayed['id']}" and fields(out)["Lease"] == "300s"
    out = doc(cli("--json", "executions", "claim-next", "--worker-id", "w1", "--task", "absent"))
    assert out == {"claimed": False, "reason": "no_executions_for_task", "task": "absent"}
    listed = doc(cli("--json", "executions", "list", "--status", "success"))
    assert [x["id"] for x in listed["executions"]] == [execution_id]


def test_workers_list_and_delete_with_and_without_asking(cli: CLI, user: Server) -> None:
    assert "No workers registered yet." in ok(cli("workers", "list"))
    for worker in ("w-1", "w-2"):
        r = user.call("POST", "/v1/worker/heartbeat", {"worker_id": worker, "handlers": ["report"]})
        assert r.status_code == 200, r.text
    listed, table = parallel([lambda: cli("--json", "workers", "list"), lambda: cli("workers", "list")])
    assert doc(listed) == user.call("GET", "/v1/workers").json()
    assert {w["worker_id"] for w in doc(listed)["workers"]} == {"w-1", "w-2"}
    assert re.search(r"^WORKER ID\s+STATUS\s+LAST HEARTBEAT\s+SECONDS AGO\s+CLAIMS$", ok(table), re.M)
    assert "2 workers" in table.stdout

    no, eof = parallel(
        [lambda: cli("workers", "delete", "w-1", input="n\n"), lambda: cli("workers", "delete", "w-1")]
    )
    assert no.returncode == 0 and no.stdout.strip() == "Aborted." and "Delete worker w-1? [y/N]" in no.stderr
    assert eof.returncode == 1 and "Aborted!" in eof.stderr
    assert len(user.call("GET", "/v1/workers").json()["workers"]) == 2
    yes = cli("workers", "delete", "w-1", input="y\n")
    assert yes.returncode == 0 and yes.stdout.strip() == "Deleted worker: w-1"
    assert doc(cli("--json", "workers", "delete", "w-2", "--yes")) == {"worker_id": "w-2", "deleted": True}
    assert user.call("GET", "/v1/workers").json()["workers"] == []


def test_delete_asks_first_and_bulk_delete(cli: CLI, user: Server) -> None:
    ids = [worker_cue(user, name)["id"] for name in ("a", "b", "c", "d")]
    no, eof = parallel([lambda: cli("delete", ids[0], input="n\n"), lambda: cli("delete", ids[0])])
    assert no.returncode == 0 and no.stdout.strip() == "Cancelled."
    assert f"Delete {ids[0]} (a)? [y/N]" in no.stderr
    assert eof.returncode == 1 and eof.stderr.endswith("Aborted!\n")
    assert len(cues_of(user)) == 4
    yes = cli("delete", ids[0], input="y\n")
    assert yes.returncode == 0 and yes.stdout.strip() == f"Deleted: {ids[0]}"

    no = cli("bulk-delete", ids[1], ids[2], input="no\n")
    assert no.returncode == 0 and "Delete 2 cues? [y/N]" in no.stderr and len(cues_of(user)) == 3
    done = doc(cli("--json", "bulk-delete", ids[1], ids[2], "-y"))
    assert done == {"deleted": [ids[1], ids[2]], "skipped": []}
    # An unknown id is skipped and named; the others are deleted; the exit code says not all were.
    proc = cli("bulk-delete", MISSING_CUE, ids[3], "--yes")
    assert proc.returncode == 1 and proc.stdout.strip() == f"Deleted 1 cue: {ids[3]}"
    assert proc.stderr.strip() == f"Error: 1 not found: {MISSING_CUE}"
    assert cues_of(user) == []


# -- account -------------------------------------------------------------------------------------


def test_whoami_and_usage(cli: CLI, user: Server) -> None:
    worker_cue(user, "one")
    me, whoami, usage_json, usage = parallel(
        [
            lambda: cli("--json", "whoami"),
            lambda: cli("whoami"),
            lambda: cli("usage", "--json"),
            lambda: cli("usage"),
        ]
    )
    assert doc(me) == user.call("GET", "/v1/auth/me").json()
    f = fields(ok(whoami))
    assert f == {
        "Email": email_of(user),
        "Plan": "Self-hosted",
        "Active cues": "1 / unlimited",
        "Executions": "0 / unlimited this month",
        "API key": f"cue_sk_…{user.key[-4:]} (from CUEAPI_API_KEY)",
        "Profile": "default (not saved)",
        "Server": f"{user.url} (from CUEAPI_API_BASE)",
    }
    u = doc(usage_json)
    assert u["plan"] == "self-hosted" and u["cues"]["active"] == 1
    assert fields(ok(usage)) == {
        "Plan": "Self-hosted",
        "Active cues": "1 / unlimited",
        "Executions": "0 / unlimited this month",
        "Rate limit": f"{u['rate_limit']['limit']} req/min",
    }


def test_login_saves_a_private_profile_that_commands_then_use_and_logout_removes(
    cli: CLI, user: Server
) -> None:
    env_free: dict[str, str | None] = {"CUEAPI_API_KEY": None, "CUEAPI_API_BASE": None}
    other = new_user(user)
    mine, theirs = email_of(user), email_of(other)
    wrong, keyless = parallel(
        [
            lambda: cli("login", "--api-key", "cue_sk_" + "1" * 32, "--base-url", user.url, env=env_free),
            lambda: cli("login", "--base-url", user.url, env=env_free),
        ]
    )
    # A wrong key is refused by the server and nothing is saved; without a key (and no terminal
    # to ask on) login says how to give one.
    failed(wrong, "Invalid API key (HTTP 401, invalid_api_key)")
    usage_error(keyless, "give the key with --api-key KEY")
    assert not cli.credentials.exists()

    out = ok(cli("login", "--api-key", user.key, "--base-url", user.url + "/v1/", env=env_free))
    assert out.splitlines()[0] == f"Authenticated as {mine}"
    assert stat.S_IMODE(cli.credentials.stat().st_mode) == 0o600
    saved = json.loads(cli.credentials.read_text())
    assert saved == {"default": {"api_key": user.key, "email": mine, "api_base": user.url + "/v1"}}

    # Commands find the key and the server in the profile; so does the official CLI.
    worker_cue(user, "from-profile")
    official = CLI([str(OFFICIAL_BIN)], cli.env, cli.key)
    listed, whoami, official_whoami = parallel(
        [
            lambda: cli("--json", "list", env=env_free),
            lambda: cli("whoami", env=env_free),
            lambda: official("whoami", env=env_free),
        ]
    )
    assert [c["name"] for c in doc(listed)["cues"]] == ["from-profile"]
    f = fields(ok(whoami))
    assert f["Email"] == mine and f["Profile"] == "default"
    assert f["API key"] == f"cue_sk_…{user.key[-4:]} (from profile 'default')"
    assert f["Server"] == f"{user.url} (from profile 'default')"
    assert fields(ok(official_whoami))["Email"] == mine

    # A second profile, chosen with --profile or CUEAPI_PROFILE; a key given otherwise wins.
    ops = ("--profile", "ops", "login", "--api-key", other.key, "--base-url", user.url, "--email", "ops@x")
    ok(cli(*ops, env=env_free))
    assert set(json.loads(cli.credentials.read_text())) == {"default", "ops"}
    runs = parallel(
        [
            lambda: cli("whoami", env={**env_free, "CUEAPI_PROFILE": "ops"}),
            lambda: cli("whoami", "--profile", "ops", env=env_free),
            lambda: cli("whoami", "--api-key", user.key, "--profile", "ops", env=env_free),
            lambda: cli("whoami", env={**env_free, "CUEAPI_API_KEY": other.key}),
        ]
    )
    assert [fields(ok(r))["Email"] for r in runs] == [theirs, theirs, mine, theirs]

    # The server: --base-url, CUEAPI_API_BASE, CUEAPI_BASE_URL, then the profile's (a dead one).
    dead = f"http://127.0.0.1:{closed_port()}"
    profiles = json.loads(cli.credentials.read_text())
    profiles["default"]["api_base"] = dead + "/v1"
    cli.credentials.write_text(json.dumps(profiles))
    from_profile, *runs = parallel(
        [
            lambda: cli("whoami", env=env_free),
            lambda: cli("whoami", env={**env_free, "CUEAPI_BASE_URL": user.url}),
            lambda: cli("whoami", env={**env_free, "CUEAPI_BASE_URL": dead, "CUEAPI_API_BASE": user.url}),
            lambda: cli("whoami", "--base-url", user.url, env={**env_free, "CUEAPI_API_BASE": dead}),
        ]
    )
    failed(from_profile, f"cannot reach the server at {dead}")
    assert [fields(ok(r))["Email"] for r in runs] == [mine, mine, mine]

    out = ok(cli("logout", "--profile", "ops", env=env_free))
    assert out.strip() == "Removed credentials for ops@x (ops profile)."
    assert set(json.loads(cli.credentials.read_text())) == {"default"}
    out = ok(cli("logout", env=env_free))
    assert out.strip() == f"Removed credentials for {mine} (default profile)."
    assert json.loads(cli.credentials.read_text()) == {}
    again, whoami = parallel([lambda: cli("logout", env=env_free), lambda: cli("whoami", env=env_free)])
    assert ok(again).strip() == "No credentials found for profile 'default'."
    failed(whoami, "no API key.")
    assert ok(cli("logout", "--all", env=env_free)).strip() == "Removed all credentials."
    assert not cli.credentials.exists()


def test_a_broken_credentials_file_is_an_error_not_a_traceback(cli: CLI) -> None:
    cli.credentials.parent.mkdir(parents=True)
    cli.credentials.write_text("{not json")
    failed(cli("list", env={"CUEAPI_API_KEY": None}), f"{cli.credentials} is not valid JSON")


def test_key_regenerate_prints_the_new_key_once_and_updates_the_profile(cli: CLI, user: Server) -> None:
    env_free: dict[str, str | None] = {"CUEAPI_API_KEY": None, "CUEAPI_API_BASE": None}
    email = email_of(user)
    ok(cli("login", "--api-key", user.key, "--base-url", user.url, env=env_free))
    no = cli("key", "regenerate", input="n\n", env=env_free)
    assert no.returncode == 0 and no.stdout.strip() == "Cancelled." and "Proceed? [y/N]" in no.stderr
    assert user.call("GET", "/v1/auth/me").status_code == 200

    out = ok(cli("key", "regenerate", "--yes", env=env_free))
    new_key = re.search(r"^New API key: (cue_sk_\w+)$", out, re.M)
    assert new_key and out.count(new_key.group(1)) == 1
    assert "Local credentials updated (profile 'default')." in out
    assert user.call("GET", "/v1/auth/me").status_code == 401
    assert json.loads(cli.credentials.read_text())["default"]["api_key"] == new_key.group(1)
    fresh = CLI(cli.command, cli.env, new_key.group(1))
    assert email in ok(fresh("whoami", env=env_free))

    # The webhook secret: shown on request, rotated with confirmation.
    shown = doc(fresh("--json", "key", "webhook-secret", "get", env=env_free))
    assert shown == {"webhook_secret": user.secret}
    assert fields(ok(fresh("key", "webhook-secret", "get", env=env_free)))["Webhook secret"] == user.secret
    no = fresh("key", "webhook-secret", "regenerate", input="\n", env=env_free)
    assert no.returncode == 0 and no.stdout.strip() == "Aborted."
    rotated = doc(fresh("--json", "key", "webhook-secret", "regenerate", "-y", env=env_free))
    assert rotated["webhook_secret"] != user.secret and rotated["previous_secret_revoked"] is True
    replaced = dataclasses.replace(user, key=new_key.group(1))
    assert (
        replaced.call("GET", "/v1/auth/webhook-secret").json()["webhook_secret"] == rotated["webhook_secret"]
    )


# -- quickstart ----------------------------------------------------------------------------------


def test_quickstart_delivers_to_the_echo_endpoint_and_cleans_up(tmp_path: Path) -> None:
    """The server runs on a manual clock at the real time, moved to the cue's instant once the cue
    exists: the test waits for one poll, not 15 s."""
    clock = cueapi.ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
    server = start_server(tmp_path / "quickstart.db", clock)
    cli = CLI(OURS, cli_env(server, tmp_path / "home"), server.key)
    proc = subprocess.Popen(
        [*cli.command, "quickstart"], env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        cues = wait_for(lambda: cues_of(server), what="the quickstart cue")
        assert [c["name"] for c in cues] == ["quickstart-test"]
        token = cues[0]["callback"]["url"].rsplit("/", 1)[1]
        assert cues[0]["callback"]["url"] == f"{server.url}/v1/echo/{token}"
        assert cues[0]["schedule"]["type"] == "once"
        clock.set(datetime.fromisoformat(cues[0]["next_run"].replace("Z", "+00:00")))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and not err, (out, err)
        assert "Callback delivered!" in out and "CueAPI is working!" in out and "Deleted." in out
        assert '"message": "Your first cue! CueAPI is working."' in out
        assert cues_of(server) == []
        got = server.call("GET", f"/v1/echo/{token}").json()
        assert got["status"] == "delivered" and got["payload"]["payload"] == {
            "message": "Your first cue! CueAPI is working."
        }
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.app.close()


def test_quickstart_against_a_loopback_server_without_private_targets_says_what_to_do(tmp_path: Path) -> None:
    app = cueapi.App(tmp_path / "closed.db")
    try:
        url = app.serve("127.0.0.1", 0)
        server = Server(app, url, "", "", tmp_path / "closed.db")
        key, secret = server.register("qs@example.com")
        server = dataclasses.replace(server, key=key, secret=secret)
        proc = CLI(OURS, cli_env(server, tmp_path / "home"), key)("quickstart")
        assert proc.returncode == 1 and "Step 1: Creating a test cue" in proc.stdout
        assert "Error: the server refused to call its own echo endpoint" in proc.stderr
        assert "`cueapi serve --allow-private-targets`" in proc.stderr
        assert "(HTTP 400, invalid_callback_url)" in proc.stderr
        assert cues_of(server) == []
    finally:
        app.close()


# -- the official CLI's command lines, run by both CLIs -----------------------------------------

# A step: a command line (with {receiver}, {cue:NAME}, {exec:NAME} filled in per user), the exit
# code both CLIs must give, and the input for a prompt; or a server call made for both users.
# Steps of one phase do not depend on each other and run at the same time.
Step = tuple[tuple[str, ...], int, str] | Callable[[Server], object]


def line(command: str, exits: int = 0, input: str = "") -> Step:
    """A command line as typed after ``cueapi``."""
    return (tuple(shlex.split(command)), exits, input)


SYNC = (
    "create --name data-sync-agent --cron '0 2 * * *' --timezone America/New_York --url {receiver}/sync "
    """--method PUT --payload '{"task": "sync_customer_data", "batch_size": 1000}' """
    """--description 'nightly sync' --on-failure '{"email": false, "pause": true}'"""
)

CUE_PHASES: list[list[Step]] = [
    [
        line(SYNC),
        line("create --name nightly-report --cron '0 3 * * *' --worker"),
        line("create --name once --at 2030-01-01T00:00:00Z --url {receiver}/once"),
        line("create --name bad --cron 'not a cron' --url {receiver}", exits=1),
        line("create --name x --cron '0 2 * * *'", exits=2),
        line("create --name x --cron '0 2 * * *' --url {receiver} --payload '{not json}'", exits=2),
    ],
    [
        line("create --name data-sync-agent --cron '0 2 * * *' --url {receiver}", exits=1),
        line("list"),
        line("list --limit 1 --offset 1"),
        line("get {cue:data-sync-agent}"),
        line("update {cue:data-sync-agent}", exits=2),
        line("fire {cue:data-sync-agent} --merge-strategy garbage", exits=2),
        line(f"get {MISSING_CUE}", exits=1),
        line(f"update {MISSING_CUE} --name x", exits=1),
        line(f"delete {MISSING_CUE}", input="y\n", exits=1),
        line(f"executions report-outcome {MISSING_EXEC} --success", exits=1),
    ],
    [line("pause {cue:nightly-report}"), line("pause {cue:data-sync-agent}")],
    [
        line("resume {cue:data-sync-agent}"),
        line("delete {cue:once}", input="n\n"),
        line("list --status paused"),
    ],
    [
        line(
            "update {cue:data-sync-agent} --name renamed --cron '30 4 * * *' --url {receiver}/other "
            """--payload '{"task": "other"}' --description changed"""
        )
    ],
    [
        line("""fire {cue:renamed} --payload-override '{"batch_size": 5, "dry_run": true}'"""),
        line("""fire {cue:renamed} --payload-override '{"only": 1}' --merge-strategy replace"""),
        line("delete {cue:once} --yes"),
    ],
    [line("fire {cue:renamed}"), line("whoami")],
]

REPORT = (
    "executions report-outcome {exec:nightly-report} --success --external-id batch_20260324_002 "
    "--result-url https://example.com/reports/2 --summary 'Report sent'"
)

EXECUTION_PHASES: list[list[Step]] = [
    [line("create --name nightly-report --cron '0 3 * * *' --worker")],
    [lambda s: fire_raw(s, cue_named(s, "nightly-report")["id"])],
    [
        line("executions list"),
        line("executions list --cue-id {cue:nightly-report}"),
        line("executions list --status failed"),
        line("executions list-claimable"),
        line("executions get {exec:nightly-report}"),
        line("executions claim exec_x", exits=2),
        line("executions report-outcome {exec:nightly-report}", exits=2),
    ],
    [line("executions claim {exec:nightly-report} --worker-id w1")],
    [
        line("executions heartbeat {exec:nightly-report} --worker-id w1"),
        line("executions heartbeat {exec:nightly-report} --worker-id w2", exits=1),
        line("executions claim {exec:nightly-report} --worker-id w2", exits=1),
        line("executions claim-next --worker-id w2"),
    ],
    [line(REPORT)],
    [line("executions report-outcome {exec:nightly-report} --failure", exits=1)],
    [lambda s: fire_raw(s, worker_cue(s, "no-retry", retry={"max_attempts": 0})["id"])],
    [line("executions claim-next --worker-id w1")],
    [line("executions report-outcome {exec:no-retry} --failure --summary 'upstream down'")],
]


def fill(args: Sequence[str], server: Server, receiver: Receiver) -> list[str]:
    def one(arg: str) -> str:
        arg = arg.replace("{receiver}", receiver.url)
        m = re.fullmatch(r"\{(cue|exec):([\w-]+)\}", arg)
        if not m:
            return arg
        cue = cue_named(server, m.group(2))
        if m.group(1) == "cue":
            return str(cue["id"])
        return str(executions_of(server, cue_id=cue["id"])[0]["id"])

    return [one(a) for a in args]


IDS = re.compile(r"\b(?:cue|exec)_[0-9a-z]{26}\b")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def state(server: Server) -> dict[str, Any]:
    """What a user has on the server, without what differs between two users doing the same
    things: ids (cues by name), instants (only whether there is one), durations."""
    cues = cues_of(server)
    names = {c["id"]: c["name"] for c in cues}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: clean(v) for k, v in value.items() if k not in ("duration_ms", "seconds_since_heartbeat")
            }
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, str):
            if TIME.match(value):
                return "<time>"
            return IDS.sub(lambda m: names.get(m.group(0), m.group(0)[:4]), value)
        return value

    executions = [clean(server.execution(e["id"])) for e in executions_of(server)]
    return {
        "cues": sorted((clean(c) for c in cues), key=lambda c: c["name"]),
        "executions": sorted(executions, key=lambda e: json.dumps(e, sort_keys=True)),
    }


def settled(server: Server) -> bool:
    """No webhook delivery still under way."""
    return all(
        e["status"] in ("success", "failed") for e in executions_of(server) if e.get("transport") == "webhook"
    )


def run_both(
    live: Server, hooks: Receiver, tmp_path: Path, phases: list[list[Step]]
) -> tuple[Server, Server]:
    theirs, ours = new_user(live), new_user(live)
    clis = [
        (theirs, CLI([str(OFFICIAL_BIN)], cli_env(theirs, tmp_path / "theirs"), theirs.key)),
        (ours, CLI(OURS, cli_env(ours, tmp_path / "ours"), ours.key)),
    ]
    for phase in phases:
        calls: list[Callable[[], object]] = []
        for step in phase:
            for server, cli in clis:
                if callable(step):
                    calls.append(lambda step=step, server=server: step(server))
                else:
                    args, exits, text = step

                    def run(
                        args: Sequence[str] = args,
                        exits: int = exits,
                        text: str = text,
                        server: Server = server,
                        cli: CLI = cli,
                    ) -> None:
                        proc = cli(*fill(args, server, hooks), input=text)
                        assert proc.returncode == exits, (cli.command[0], args, proc.stdout, proc.stderr)

                    calls.append(run)
        parallel(calls)
    return theirs, ours


def test_the_official_clis_cue_command_lines_leave_the_same_state(
    live: Server, hooks: Receiver, tmp_path: Path
) -> None:
    theirs, ours = run_both(live, hooks, tmp_path, CUE_PHASES)
    wait_for(lambda: settled(theirs) and settled(ours), what="the deliveries")
    mine = state(ours)
    assert state(theirs) == mine
    assert [c["name"] for c in mine["cues"]] == ["nightly-report", "renamed"]
    assert sorted(e["status"] for e in mine["executions"]) == ["success", "success", "success"]


def test_the_official_clis_execution_command_lines_leave_the_same_state(
    live: Server, hooks: Receiver, tmp_path: Path
) -> None:
    theirs, ours = run_both(live, hooks, tmp_path, EXECUTION_PHASES)
    mine = state(ours)
    assert state(theirs) == mine
    assert sorted((e["status"], e["outcome_state"]) for e in mine["executions"]) == [
        ("failed", "reported_failure"),
        ("success", "reported_success"),
    ]
    # Last, both replace their key the same way.
    old = [theirs.key, ours.key]
    procs = parallel(
        [
            lambda: CLI([str(OFFICIAL_BIN)], cli_env(theirs, tmp_path / "theirs"), theirs.key)(
                "key", "regenerate", "--yes"
            ),
            lambda: CLI(OURS, cli_env(ours, tmp_path / "ours"), ours.key)("key", "regenerate", "--yes"),
        ]
    )
    for proc, key in zip(procs, old, strict=True):
        new_key = re.search(r"^New API key: (cue_sk_\w+)$", proc.stdout, re.M)
        assert proc.returncode == 0 and new_key, proc.stdout
        assert live.call("GET", "/v1/auth/me", key=key).status_code == 401
        assert live.call("GET", "/v1/auth/me", key=new_key.group(1)).status_code == 200
