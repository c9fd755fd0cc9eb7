"""The HTTP API's contract: the error envelope, authentication, tenant isolation, limits and
malformed input (never a 500, and a refused write changes nothing), the SSRF guard, and the
semantics of cues and executions a CueAPI client relies on."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cueapi
import httpx
import pytest

from tests.conftest import NO_THROTTLE, Receiver, Server, location, wait_for

# Every test here runs on SQLite and on PostgreSQL.
STORES = ("sqlite", "postgres")

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
API_KEY = re.compile(r"^cue_sk_[0-9a-f]{32}$")
WEBHOOK_SECRET = re.compile(r"^whsec_[0-9a-f]{64}$")

# Schedules that do not fire while a test runs: Feb 29 (next in 2028), or a one-shot in 2099.
RARE_CRON = {"type": "recurring", "cron": "0 0 29 2 *"}
FAR_ONCE = {"type": "once", "at": "2099-01-01T00:00:00Z"}
WORKER: dict[str, Any] = {"transport": "worker", "schedule": RARE_CRON}
PUBLIC_URL = "https://93.184.216.34/hook"  # a public address: no DNS needed, never called here


# -- helpers ---------------------------------------------------------------------------------------


def assert_error(
    r: httpx.Response, status: int, code: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The reference's error envelope, with the exact status (and code, and field for a 422), and
    the same error mirrored under ``detail.error`` (where the official CLI reads it)."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text}"
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert body["detail"] == {"error": body["error"]}, body
    err = body["error"]
    assert isinstance(err.get("message"), str) and err["message"], err
    assert isinstance(err.get("code"), str) and err["code"], err
    assert err.get("status") == status, err
    if code is not None:
        assert err["code"] == code, err
    if status == 422:
        details = err.get("details")
        assert isinstance(details, list) and details, err
        assert all(isinstance(d.get("field"), str) and isinstance(d.get("message"), str) for d in details)
        if field is not None:
            assert field in [d["field"] for d in details], err
    return dict(err)


def assert_4xx(r: httpx.Response) -> dict[str, Any]:
    """Refused as the client's fault, in the envelope: never a 500."""
    assert 400 <= r.status_code < 500, f"expected a 4xx, got {r.status_code}: {r.text}"
    return assert_error(r, r.status_code)


def snapshot(server: Server, key: str | bool = True) -> dict[str, Any]:
    """Everything a user can see: their cues and executions (and how many users exist)."""
    cues = server.call("GET", "/v1/cues", params={"limit": 1000}, key=key)
    execs = server.call("GET", "/v1/executions", params={"limit": 1000}, key=key)
    assert cues.status_code == 200, cues.text
    assert execs.status_code == 200, execs.text
    return {
        "cues": cues.json()["cues"],
        "executions": execs.json()["executions"],
        "users": server.app.user_count(),
    }


def fire(server: Server, cue_id: str, key: str | bool = True, **body: Any) -> dict[str, Any]:
    r = server.call("POST", f"/v1/cues/{cue_id}/fire", body, key=key)
    assert r.status_code == 200, r.text
    return dict(r.json())


def outcome(server: Server, execution_id: str, **body: Any) -> dict[str, Any]:
    r = server.call("POST", f"/v1/executions/{execution_id}/outcome", body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def worker_cue(server: Server, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return server.cue(name=name or f"w-{uuid.uuid4().hex[:8]}", **{**WORKER, **extra})


def parse_iso(text: str) -> datetime:
    assert ISO_Z.match(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def cue(server: Server) -> dict[str, Any]:
    """A worker cue of the server's user (it never delivers)."""
    return worker_cue(server, "existing", payload={"keep": True})


@pytest.fixture
def pending(server: Server, cue: dict[str, Any]) -> dict[str, Any]:
    """A fired execution of ``cue``, still pending (no worker claims it), without an outcome."""
    return server.execution(fire(server, cue["id"])["id"])


@pytest.fixture
def reported(server: Server, cue: dict[str, Any]) -> dict[str, Any]:
    """A fired execution of ``cue`` with an outcome (success, a summary) recorded."""
    ex = fire(server, cue["id"])
    outcome(server, ex["id"], success=True, result="done", summary="did it")
    return server.execution(ex["id"])


@pytest.fixture
def finished(server: Server, receiver: Receiver) -> dict[str, Any]:
    """An execution of a webhook cue delivered to a real receiver: status success."""
    c = server.cue(name="hooked", callback={"url": receiver.url + "/hook"}, schedule=FAR_ONCE)
    ex = fire(server, c["id"])
    return dict(wait_for(lambda: (e := server.execution(ex["id"]))["status"] == "success" and e))


# -- the error envelope and routing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/nope", "/v1", "/v1/nope", "/v1/cues/x/nope", "/v1/executions/x/y/z", "/v1/cues/", "/v1/executions/"],
)
def test_unknown_route_is_a_json_404(server: Server, path: str) -> None:
    r = server.call("GET", path)
    assert not r.is_redirect
    assert_error(r, 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/cues"),
        ("DELETE", "/v1/cues"),
        ("POST", "/v1/cues/{cue}"),
        ("PUT", "/v1/cues/{cue}"),
        ("GET", "/v1/cues/{cue}/fire"),
        ("POST", "/v1/executions"),
        ("DELETE", "/v1/executions/{exec}"),
        ("GET", "/v1/executions/{exec}/outcome"),
        ("POST", "/v1/executions/{exec}/evidence"),
        ("GET", "/v1/auth/register"),
        ("POST", "/v1/auth/me"),
        ("GET", "/v1/auth/key/regenerate"),
    ],
)
def test_wrong_method_is_a_json_405_and_changes_nothing(
    server: Server, pending: dict[str, Any], method: str, path: str
) -> None:
    before = snapshot(server)
    r = server.call(method, path.format(cue=pending["cue_id"], exec=pending["id"]), content=b"{}")
    assert_error(r, 405)
    assert snapshot(server) == before


def test_trailing_slash_is_answered_not_redirected(server: Server, cue: dict[str, Any]) -> None:
    for path in ["/v1/cues/", f"/v1/cues/{cue['id']}/", "/v1/executions/", "/v1/auth/me/"]:
        r = server.call("GET", path)
        assert not 300 <= r.status_code < 400, (path, r.status_code, r.headers)
        assert_4xx(r)


# -- authentication --------------------------------------------------------------------------------

ALL_ROUTES = [
    ("GET", "/v1/auth/me"),
    ("POST", "/v1/auth/key/regenerate"),
    ("GET", "/v1/auth/webhook-secret"),
    ("POST", "/v1/auth/webhook-secret/regenerate"),
    ("POST", "/v1/cues"),
    ("GET", "/v1/cues"),
    ("GET", "/v1/cues/{cue}"),
    ("PATCH", "/v1/cues/{cue}"),
    ("DELETE", "/v1/cues/{cue}"),
    ("POST", "/v1/cues/{cue}/fire"),
    ("GET", "/v1/cues/{cue}/executions"),
    ("GET", "/v1/executions"),
    ("GET", "/v1/executions/{exec}"),
    ("POST", "/v1/executions/{exec}/outcome"),
    ("PATCH", "/v1/executions/{exec}/evidence"),
    ("POST", "/v1/executions/{exec}/verify"),
    ("POST", "/v1/executions/{exec}/verification-pending"),
    ("POST", "/v1/executions/{exec}/replay"),
]

BAD_AUTHORIZATION = [
    None,
    "",
    "Bearer",
    "Basic b3duZXI6cGFzcw==",
    "Token {key}",
    "{key}",
    "Bearer cue_sk_" + "0" * 32,
    "Bearer cue_sk_nothex",
    "Bearer whsec_" + "0" * 64,
    "Bearer {key}x",
    "Bearer " + "k" * 5000,
]


@pytest.mark.parametrize(
    ("method", "path", "authorization"),
    [(m, p, None) for m, p in ALL_ROUTES]
    + [
        (m, p, a)
        for m, p in [("GET", "/v1/cues"), ("POST", "/v1/cues"), ALL_ROUTES[-1]]
        for a in BAD_AUTHORIZATION[1:]
    ],
)
def test_missing_malformed_or_unknown_key_is_401(
    server: Server, pending: dict[str, Any], method: str, path: str, authorization: str | None
) -> None:
    before = snapshot(server)
    headers = (
        {"X-Confirm-Destructive": "true"}
        if authorization is None
        else {"Authorization": authorization.format(key=server.key), "X-Confirm-Destructive": "true"}
    )
    body = {"name": "sneaky", **WORKER} if path == "/v1/cues" else {"success": True}
    r = server.call(
        method, path.format(cue=pending["cue_id"], exec=pending["id"]), body, key=None, headers=headers
    )
    assert_error(r, 401, "invalid_api_key")
    assert snapshot(server) == before
    assert server.call("GET", "/v1/auth/webhook-secret").json()["webhook_secret"] == server.secret


def test_register_gives_a_key_and_a_secret_of_the_reference_form(server: Server) -> None:
    r = server.call("POST", "/v1/auth/register", {"email": "new@example.com"}, key=None)
    assert r.status_code == 201, r.text
    body = r.json()
    assert API_KEY.match(body["api_key"]), body
    assert WEBHOOK_SECRET.match(body["webhook_secret"]), body
    assert body["email"] == "new@example.com"
    assert body["api_key"] != server.key and body["webhook_secret"] != server.secret
    assert server.call("GET", "/v1/auth/me", key=body["api_key"]).json()["email"] == "new@example.com"
    assert server.app.user_count() == 2


def test_register_with_a_taken_email_is_409_and_creates_no_one(server: Server) -> None:
    before = snapshot(server)
    for email in ["owner@example.com", "owner@EXAMPLE.com", " owner@example.com "]:
        r = server.call("POST", "/v1/auth/register", {"email": email}, key=None)
        assert_error(r, 409, "duplicate_email")
    assert snapshot(server) == before
    assert server.call("GET", "/v1/auth/me").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"email": "nope"},
        {"email": ""},
        {"email": "a@b"},
        {"email": "a b@example.com"},
        {"email": "@example.com"},
        {"email": "ann@"},
        {"email": "x" * 300 + "@example.com"},
        {"email": 5},
        {"email": None},
        {"email": ["a@example.com"]},
        {},
    ],
)
def test_register_with_a_bad_email_is_422(server: Server, body: dict[str, Any]) -> None:
    r = server.call("POST", "/v1/auth/register", body, key=None)
    assert_error(r, 422, "validation_error", "body.email")
    assert server.app.user_count() == 1


def test_me_describes_the_caller(server: Server, other: str) -> None:
    a = worker_cue(server, "a")
    worker_cue(server, "b")
    assert server.call("PATCH", f"/v1/cues/{a['id']}", {"status": "paused"}).status_code == 200
    me = server.call("GET", "/v1/auth/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["email"] == "owner@example.com"
    assert body["api_key_prefix"] == server.key[:12]
    assert body["active_cues"] == 1
    assert body["has_webhook_secret"] is True
    # Nothing is capped: said in words (the official CLI prints "1 / unlimited"), never null.
    assert body["active_cue_limit"] == body["monthly_execution_limit"] == "unlimited"
    theirs = server.call("GET", "/v1/auth/me", key=other).json()
    assert theirs["email"] == "other@example.com" and theirs["active_cues"] == 0


@pytest.mark.parametrize("confirm", [None, "", "false", "yes", "1", "true-ish"])
@pytest.mark.parametrize("path", ["/v1/auth/key/regenerate", "/v1/auth/webhook-secret/regenerate"])
def test_credential_rotation_needs_confirmation(server: Server, path: str, confirm: str | None) -> None:
    headers = {} if confirm is None else {"X-Confirm-Destructive": confirm}
    r = server.call("POST", path, headers=headers)
    assert_error(r, 400, "confirmation_required")
    assert server.call("GET", "/v1/auth/me").status_code == 200
    assert server.call("GET", "/v1/auth/webhook-secret").json() == {"webhook_secret": server.secret}


def test_key_regeneration_replaces_the_key_at_once(server: Server, cue: dict[str, Any]) -> None:
    r = server.call("POST", "/v1/auth/key/regenerate", headers={"X-Confirm-Destructive": "true"})
    assert r.status_code == 200, r.text
    new = r.json()["api_key"]
    assert API_KEY.match(new) and new != server.key
    assert r.json()["previous_key_revoked"] is True
    assert_error(server.call("GET", "/v1/auth/me"), 401, "invalid_api_key")
    assert_error(server.call("GET", "/v1/cues"), 401, "invalid_api_key")
    me = server.call("GET", "/v1/auth/me", key=new)
    assert me.status_code == 200 and me.json()["api_key_prefix"] == new[:12]
    assert [c["id"] for c in server.call("GET", "/v1/cues", key=new).json()["cues"]] == [cue["id"]]


def test_webhook_secret_read_and_rotation(server: Server) -> None:
    r = server.call("GET", "/v1/auth/webhook-secret")
    assert r.status_code == 200 and r.json() == {"webhook_secret": server.secret}
    r = server.call("POST", "/v1/auth/webhook-secret/regenerate", headers={"X-Confirm-Destructive": "true"})
    assert r.status_code == 200, r.text
    new = r.json()["webhook_secret"]
    assert WEBHOOK_SECRET.match(new) and new != server.secret
    assert r.json()["previous_secret_revoked"] is True
    assert server.call("GET", "/v1/auth/webhook-secret").json() == {"webhook_secret": new}
    assert server.call("GET", "/v1/auth/me").status_code == 200  # the API key is untouched


# -- tenant isolation ------------------------------------------------------------------------------

FOREIGN_ROUTES = [
    ("GET", "/v1/cues/{cue}", None, "cue_not_found"),
    ("PATCH", "/v1/cues/{cue}", {"name": "stolen"}, "cue_not_found"),
    ("PATCH", "/v1/cues/{cue}", {"status": "paused"}, "cue_not_found"),
    ("DELETE", "/v1/cues/{cue}", None, "cue_not_found"),
    ("POST", "/v1/cues/{cue}/fire", None, "cue_not_found"),
    ("POST", "/v1/cues/{cue}/fire", {"payload_override": {"x": 1}}, "cue_not_found"),
    ("GET", "/v1/cues/{cue}/executions", None, "cue_not_found"),
    ("GET", "/v1/executions/{exec}", None, "execution_not_found"),
    ("POST", "/v1/executions/{exec}/outcome", {"success": False, "error": "forged"}, "execution_not_found"),
    ("PATCH", "/v1/executions/{exec}/evidence", {"external_id": "forged"}, "execution_not_found"),
    ("POST", "/v1/executions/{exec}/verify", {"valid": False, "reason": "x"}, "execution_not_found"),
    ("POST", "/v1/executions/{exec}/verification-pending", None, "execution_not_found"),
    ("POST", "/v1/executions/{exec}/replay", None, "execution_not_found"),
]


@pytest.mark.parametrize(("method", "path", "body", "code"), FOREIGN_ROUTES)
@pytest.mark.parametrize("which", ["pending", "reported", "finished"])
def test_another_users_cue_or_execution_is_404_and_untouched(
    request: pytest.FixtureRequest,
    server: Server,
    other: str,
    which: str,
    method: str,
    path: str,
    body: Any,
    code: str,
) -> None:
    ex: dict[str, Any] = request.getfixturevalue(which)
    before = snapshot(server)
    theirs = snapshot(server, key=other)
    r = server.call(method, path.format(cue=ex["cue_id"], exec=ex["id"]), body, key=other)
    assert_error(r, 404, code)
    assert "forged" not in r.text and "keep" not in r.text and "stolen" not in r.text
    assert snapshot(server) == before
    assert snapshot(server, key=other) == theirs


def test_lists_show_only_ones_own(server: Server, other: str, reported: dict[str, Any]) -> None:
    made = server.call("POST", "/v1/cues", {"name": "existing", **WORKER}, key=other)
    assert made.status_code == 201, made.text
    theirs = made.json()
    their_ex = fire(server, theirs["id"], key=other)
    mine = snapshot(server)
    assert [c["id"] for c in mine["cues"]] == [reported["cue_id"]]
    assert [e["id"] for e in mine["executions"]] == [reported["id"]]
    seen = snapshot(server, key=other)
    assert [c["id"] for c in seen["cues"]] == [theirs["id"]]
    assert [e["id"] for e in seen["executions"]] == [their_ex["id"]]
    # Filters naming the other user's objects find nothing; they never widen the scope.
    for params in [
        {"cue_id": reported["cue_id"]},
        {"cue_id": reported["cue_id"], "status": "all"},
        {"outcome_state": "reported_success"},
        {"has_evidence": "false", "cue_id": reported["cue_id"]},
    ]:
        r = server.call("GET", "/v1/executions", params=params, key=other)
        assert r.status_code == 200, r.text
        assert r.json()["total"] == 0 and r.json()["executions"] == [], params
    r = server.call("GET", "/v1/cues", params={"status": "active"}, key=other)
    assert [c["id"] for c in r.json()["cues"]] == [theirs["id"]]
    me = server.call("GET", "/v1/auth/me", key=other).json()
    assert me["active_cues"] == 1


def test_cue_names_are_unique_per_user_not_per_server(
    server: Server, other: str, cue: dict[str, Any]
) -> None:
    r = server.call("POST", "/v1/cues", {"name": cue["name"], **WORKER}, key=other)
    assert r.status_code == 201, r.text
    assert r.json()["id"] != cue["id"]
    assert server.call("GET", f"/v1/cues/{cue['id']}").json()["name"] == cue["name"]


# -- malformed bodies ------------------------------------------------------------------------------

WRITE_ROUTES = [
    ("POST", "/v1/cues"),
    ("PATCH", "/v1/cues/{cue}"),
    ("POST", "/v1/cues/{cue}/fire"),
    ("POST", "/v1/executions/{exec}/outcome"),
    ("PATCH", "/v1/executions/{exec}/evidence"),
    ("POST", "/v1/executions/{exec}/verify"),
    ("POST", "/v1/auth/register"),
]

NOT_JSON = [
    b"{not json",
    b"{'name': 'single quotes'}",
    b'{"name": "unterminated',
    b'{"a": 1} trailing',
    b'{"a": NaN}',
    b"\xef\xbb\xbf{}",
    b'{"name": "\\ud800"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
]


NOT_UTF8 = [b"\xff\xfe\xfd", b'{"name": "caf\xe9"}', b'{"name": "\xc0\xaf"}']
NOT_AN_OBJECT: list[Any] = [[], [{"name": "x"}], "a string", 42, True, None]

# (raw body, status, code): not JSON and not UTF-8 are 400 invalid_json; JSON that is not an
# object is a 422 naming `body`.
BAD_BODIES: list[tuple[bytes, int, str]] = [
    *((raw, 400, "invalid_json") for raw in NOT_JSON + NOT_UTF8),
    *((json.dumps(v).encode(), 422, "validation_error") for v in NOT_AN_OBJECT),
]


def collect(failures: list[str], what: str, check: Any) -> None:
    """Runs one check of a table, keeping its failure to report the whole table at once."""
    try:
        check()
    except AssertionError as e:
        failures.append(f"{what}: {e}".splitlines()[0][:400])


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_malformed_body_is_refused_and_changes_nothing(
    server: Server, reported: dict[str, Any], method: str, path: str
) -> None:
    before = snapshot(server)
    key = None if path == "/v1/auth/register" else True
    failures: list[str] = []
    for raw, status, code in BAD_BODIES:
        r = server.call(
            method,
            path.format(cue=reported["cue_id"], exec=reported["id"]),
            content=raw,
            key=key,
            headers={"Content-Type": "application/json"},
        )
        field = "body" if status == 422 else None
        collect(failures, repr(raw[:30]), lambda: assert_error(r, status, code, field))  # noqa: B023
    assert not failures, "\n".join(failures)
    assert snapshot(server) == before
    assert server.execution(reported["id"]) == reported


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_body_over_one_mebibyte_is_413(
    server: Server, reported: dict[str, Any], method: str, path: str
) -> None:
    before = snapshot(server)
    big = b'{"name": "' + b"x" * (1 << 20) + b'"}'
    key = None if path == "/v1/auth/register" else True
    r = server.call(method, path.format(cue=reported["cue_id"], exec=reported["id"]), content=big, key=key)
    assert_error(r, 413, "request_too_large")
    assert snapshot(server) == before


def test_body_over_one_mebibyte_without_a_length_is_413(server: Server) -> None:
    before = snapshot(server)

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "big", "transport": "worker", "payload": {"x": "'
        for _ in range(16):  # the payload alone is the whole limit: the body is just over it
            yield b"y" * 65_536
        yield b'"}, "schedule": {"type": "recurring", "cron": "0 0 29 2 *"}}'

    r = httpx.post(
        server.url + "/v1/cues",
        content=chunks(),
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert_error(r, 413, "request_too_large")
    assert snapshot(server) == before


def test_body_just_under_one_mebibyte_is_read(server: Server) -> None:
    """Just under the limit is not refused for its size (the payload itself is checked after)."""
    body = {"name": "near-limit", **WORKER, "payload": {"x": ""}}
    room = (1 << 20) - len(httpx.Request("POST", "http://x", json=body).content) - 64
    body["payload"] = {"x": "y" * room}
    r = server.call("POST", "/v1/cues", body)
    assert r.status_code == 201, r.text[:300]
    assert len(r.json()["payload"]["x"]) == room


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response (head, body) from a raw socket; (b"", b"") when it was closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        if not chunk:
            return b"", b""
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    declared = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    assert declared, head
    length = int(declared.group(1))
    while len(body) < length:
        chunk = sock.recv(65_536)
        assert chunk, "closed in the middle of a response"
        body += chunk
    return head, body


@pytest.mark.parametrize(
    ("method", "path", "authorization"),
    [
        ("POST", "/v1/cues", "Bearer cue_sk_" + "0" * 32),
        ("GET", "/v1/nope", "{key}"),
        ("PUT", "/v1/cues", "{key}"),
    ],
)
def test_an_early_refusal_keeps_the_connection_usable_or_says_it_closes(
    server: Server, method: str, path: str, authorization: str
) -> None:
    """A request refused without its body being needed (bad key, unknown route, wrong method)
    must not silently drop the keep-alive connection: a pooled client (an SDK's ``httpx.Client``)
    sends its next request on it and would get "Server disconnected" instead of an answer. Either
    the refusal says ``Connection: close``, or the connection goes on serving. (The server reads
    every body before routing, so the whole request is sent, as clients do.)"""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = b'{"success": true}'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {authorization.format(key='Bearer ' + server.key)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head, error = read_response(sock)
        assert head.split(b" ")[1] in (b"401", b"404", b"405"), head
        assert json.loads(error)["error"]["code"]
        if re.search(rb"(?i)\r\nconnection: *close", head):
            return
        follow_up = f"GET /v1/cues HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {server.key}\r\n\r\n"
        try:
            sock.sendall(follow_up.encode())
            head, listed = read_response(sock)
        except (BrokenPipeError, ConnectionResetError):
            head = b""
        assert head.startswith(b"HTTP/1.1 200"), (
            "the connection was closed after the refusal without `Connection: close`; "
            f"the next request on it got {head!r}"
        )
        assert json.loads(listed)["total"] == 0


# -- malformed cue fields --------------------------------------------------------------------------

# (what is sent on top of a valid worker cue, the field a 422 must name)
CUE_TYPE_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"name": 5}, "body.name"),
    ({"name": None}, "body.name"),
    ({"name": ["a"]}, "body.name"),
    ({"name": ""}, "body.name"),
    ({"name": "   "}, "body.name"),
    ({"name": "n" * 256}, "body.name"),
    ({"description": 5}, "body.description"),
    ({"payload": "x"}, "body.payload"),
    ({"payload": [1, 2]}, "body.payload"),
    ({"payload": 5}, "body.payload"),
    ({"retry": {"max_attempts": "3"}}, "body.retry.max_attempts"),
    ({"retry": {"max_attempts": 3.5}}, "body.retry.max_attempts"),
    ({"retry": {"max_attempts": -1}}, "body.retry.max_attempts"),
    ({"retry": {"max_attempts": 11}}, "body.retry.max_attempts"),
    ({"retry": {"max_attempts": True}}, "body.retry.max_attempts"),
    ({"retry": {"backoff_minutes": "x"}}, "body.retry.backoff_minutes"),
    ({"retry": {"backoff_minutes": ["1"]}}, "body.retry.backoff_minutes"),
    ({"retry": {"backoff_minutes": [-1]}}, "body.retry.backoff_minutes"),
    ({"retry": {"backoff_minutes": [1e300]}}, "body.retry.backoff_minutes"),
    ({"retry": {"tries": 3}}, "body.retry.tries"),
    ({"retry": "3"}, "body.retry"),
    ({"schedule": []}, "body.schedule"),
    ({"schedule": "0 9 * * *"}, "body.schedule"),
    ({"schedule": {"type": "recurring", "cron": 5}}, "body.schedule.cron"),
    ({"schedule": {"type": "recurring", "cron": "0 9 * * *", "timezone": 5}}, "body.schedule.timezone"),
    ({"schedule": {"type": 5, "cron": "0 9 * * *"}}, "body.schedule.type"),
    ({"schedule": {"type": "recurring", "cron": "0 9 * * *", "bogus": 1}}, "body.schedule.bogus"),
    ({"schedule": {}}, "body.schedule.type"),
    ({"transport": "carrier-pigeon"}, "body.transport"),
    ({"transport": 5}, "body.transport"),
    ({"callback": "https://example.com/"}, "body.callback"),
    ({"callback": {"url": 5}}, "body.callback.url"),
    ({"callback": {"headers": {"X-A": 1}}}, "body.callback.headers"),
    ({"callback": {"headers": ["X-A"]}}, "body.callback.headers"),
    ({"callback": {"transport": "worker"}}, "body.callback.transport"),
    ({"on_failure": {"email": "yes"}}, "body.on_failure.email"),
    ({"on_failure": {"pause": 1}}, "body.on_failure.pause"),
    ({"on_failure": {"webhook": 5}}, "body.on_failure.webhook"),
    ({"on_failure": {"sms": True}}, "body.on_failure.sms"),
    ({"verification": {"mode": 5}}, "body.verification.mode"),
    ({"verification": {"mode": "bogus"}}, "body.verification.mode"),
    ({"verification": "manual"}, "body.verification"),
    ({"delivery": {"timeout_seconds": "30"}}, "body.delivery.timeout_seconds"),
    ({"delivery": {"timeout_seconds": 0}}, "body.delivery.timeout_seconds"),
    ({"delivery": {"timeout_seconds": 3601}}, "body.delivery.timeout_seconds"),
    ({"delivery": {"outcome_deadline_seconds": 0}}, "body.delivery.outcome_deadline_seconds"),
    ({"delivery": {"signature_scheme": "md5"}}, "body.delivery.signature_scheme"),
    ({"status": "paused"}, "body.status"),
    ({"bogus": 1}, "body.bogus"),
    ({"webhook_secret": "whsec_x"}, "body.webhook_secret"),
]

WEBHOOK_TYPE_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"callback": {"url": PUBLIC_URL, "method": "DELETE"}}, "body.callback.method"),
    ({"callback": {"url": PUBLIC_URL, "method": "TRACE"}}, "body.callback.method"),
    ({"callback": {"url": PUBLIC_URL, "method": 5}}, "body.callback.method"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"X-CueAPI-Signature": "v1=0"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"x-cueapi-timestamp": "1"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"Content-Type": "text/plain"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"webhook-signature": "v1,x"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"Host": "evil.example"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"X-Ok": "a\r\nX-Injected: 1"}}}, "body.callback.headers"),
    ({"callback": {"url": PUBLIC_URL, "headers": {"Bad Name": "x"}}}, "body.callback.headers"),
    ({"callback": {"method": "POST"}}, "body.callback.url"),
    ({}, "body.callback.url"),
]


@pytest.mark.parametrize(("fields", "field"), CUE_TYPE_ERRORS, ids=lambda v: str(v)[:60])
def test_create_with_a_bad_field_is_422_naming_it(server: Server, fields: dict[str, Any], field: str) -> None:
    before = snapshot(server)
    r = server.call("POST", "/v1/cues", {"name": "bad", **WORKER, **fields})
    assert_error(r, 422, "validation_error", field)
    assert snapshot(server) == before


@pytest.mark.parametrize(("fields", "field"), WEBHOOK_TYPE_ERRORS, ids=lambda v: str(v)[:60])
def test_create_webhook_cue_with_a_bad_callback_is_422_naming_it(
    server: Server, fields: dict[str, Any], field: str
) -> None:
    before = snapshot(server)
    r = server.call(
        "POST", "/v1/cues", {"name": "bad", "transport": "webhook", "schedule": FAR_ONCE, **fields}
    )
    assert_error(r, 422, "validation_error", field)
    assert snapshot(server) == before


@pytest.mark.parametrize(
    ("fields", "field"),
    [(f, p) for f, p in CUE_TYPE_ERRORS if p not in ("body.status", "body.name")]
    + [
        ({"name": 5}, "body.name"),
        ({"name": ""}, "body.name"),
        ({"name": "n" * 256}, "body.name"),
        ({"status": "completed"}, "body.status"),
        ({"status": "deleted"}, "body.status"),
        ({"status": 1}, "body.status"),
        ({"transport": "webhook"}, "body.transport"),
        ({"id": "cue_other"}, "body.id"),
    ],
    ids=lambda v: str(v)[:60],
)
def test_update_with_a_bad_field_is_422_and_changes_nothing(
    server: Server, cue: dict[str, Any], fields: dict[str, Any], field: str
) -> None:
    before = snapshot(server)
    r = server.call("PATCH", f"/v1/cues/{cue['id']}", fields)
    assert_error(r, 422, "validation_error", field)
    assert snapshot(server) == before


@pytest.mark.parametrize(
    "raw",
    [
        b'"retry": {"max_attempts": 1e400}',
        b'"delivery": {"timeout_seconds": 1e400}',
        b'"retry": {"max_attempts": 1180591620717411303424}',
        b'"retry": {"max_attempts": -1180591620717411303424}',
        b'"retry": {"max_attempts": 9223372036854775808}',
        b'"delivery": {"timeout_seconds": 1180591620717411303424}',
        b'"delivery": {"outcome_deadline_seconds": 1180591620717411303424}',
        b'"retry": {"backoff_minutes": [1180591620717411303424]}',
        b'"retry": {"max_attempts": -1e400}',
        b'"delivery": {"timeout_seconds": 99999999999999999999999999999999999999}',
        b'"schedule": {"type": "interval", "every_seconds": 1e400}',
        b'"payload": {"n": 1e400}',
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_huge_numbers_are_refused_with_a_4xx(
    server: Server, cue: dict[str, Any], method: str, raw: bytes
) -> None:
    before = snapshot(server)
    if method == "POST":
        schedule = (
            b"" if b'"schedule"' in raw else b'"schedule": {"type": "recurring", "cron": "0 0 29 2 *"}, '
        )
        content = b'{"name": "huge", "transport": "worker", ' + schedule + raw + b"}"
        r = server.call("POST", "/v1/cues", content=content, headers={"Content-Type": "application/json"})
    else:
        r = server.call(
            "PATCH",
            f"/v1/cues/{cue['id']}",
            content=b"{" + raw + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert_4xx(r)
    assert snapshot(server) == before


@pytest.mark.parametrize("big", [2**70, -(2**70), 2**64, 12345678901234567890123, 2**53 + 1])
def test_payload_numbers_are_kept_exactly_or_refused(server: Server, big: int) -> None:
    """A payload is the user's data: a number is stored as sent, or refused — never rounded."""
    before = snapshot(server)
    r = server.call("POST", "/v1/cues", {"name": "numbers", **WORKER, "payload": {"n": big}})
    if r.status_code == 201:
        assert r.json()["payload"] == {"n": big}, r.text
        stored = server.call("GET", f"/v1/cues/{r.json()['id']}").json()
        assert stored["payload"] == {"n": big}
        ex = fire(server, stored["id"])
        assert server.execution(ex["id"])["payload"] == {"n": big}
    else:
        assert_4xx(r)
        assert snapshot(server) == before


@pytest.mark.parametrize(
    "payload",
    [{"a": "x\u0000y"}, {"a\u0000": 1}, {"a": ["ok", {"b": "\u0000"}]}, {"a": {"b": {"c": "\u0000"}}}],
)
def test_payload_with_a_nul_character_is_refused(
    server: Server, cue: dict[str, Any], payload: dict[str, Any]
) -> None:
    before = snapshot(server)
    failures: list[str] = []
    for method, path, body in [
        ("POST", "/v1/cues", {"name": "nul", **WORKER, "payload": payload}),
        ("PATCH", f"/v1/cues/{cue['id']}", {"payload": payload}),
        ("POST", f"/v1/cues/{cue['id']}/fire", {"payload_override": payload}),
        ("POST", f"/v1/cues/{cue['id']}/fire", {"payload_override": payload, "merge_strategy": "replace"}),
    ]:
        r = server.call(method, path, body)
        collect(failures, f"{method} {path} {body}", lambda: assert_4xx(r))  # noqa: B023
    assert not failures, "\n".join(failures)
    assert snapshot(server) == before


# -- schedules -------------------------------------------------------------------------------------

BAD_SCHEDULES: list[tuple[dict[str, Any], int, str]] = [
    ({"type": "recurring", "cron": "0 0 31 2 *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "0 0 30 2 *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "bogus"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "61 * * * *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "* * *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "* * * * * * * * *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": ""}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "0 9 * * MON-XYZ"}, 400, "invalid_schedule"),
    ({"type": "recurring"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": None}, 400, "invalid_schedule"),
    ({"type": "once"}, 400, "invalid_schedule"),
    ({"type": "once", "at": "2001-01-01T00:00:00Z"}, 400, "invalid_schedule"),
    ({"type": "once", "at": "2020-06-01T09:00:00"}, 400, "invalid_schedule"),
    ({"type": "weekly", "cron": "0 9 * * *"}, 400, "invalid_schedule"),
    ({"type": "recurring", "cron": "0 9 * * *", "timezone": "Mars/Base"}, 422, "invalid_timezone"),
    ({"type": "recurring", "cron": "0 9 * * *", "timezone": ""}, 422, "invalid_timezone"),
    ({"type": "recurring", "cron": "0 9 * * *", "timezone": "UTC+25"}, 422, "invalid_timezone"),
    ({"type": "recurring", "cron": "0 9 * * *", "timezone": "../../etc/passwd"}, 422, "invalid_timezone"),
]


@pytest.mark.parametrize(("schedule", "status", "code"), BAD_SCHEDULES, ids=lambda v: str(v)[:50])
def test_bad_schedule_on_create_is_refused(
    server: Server, schedule: dict[str, Any], status: int, code: str
) -> None:
    before = snapshot(server)
    r = server.call("POST", "/v1/cues", {"name": "sched", "transport": "worker", "schedule": schedule})
    assert_error(r, status, code)
    assert snapshot(server) == before


@pytest.mark.parametrize(("schedule", "status", "code"), BAD_SCHEDULES, ids=lambda v: str(v)[:50])
def test_bad_schedule_on_update_is_refused(
    server: Server, cue: dict[str, Any], schedule: dict[str, Any], status: int, code: str
) -> None:
    before = snapshot(server)
    r = server.call("PATCH", f"/v1/cues/{cue['id']}", {"schedule": schedule})
    assert_error(r, status, code)
    assert snapshot(server) == before


# -- bad ids in paths ------------------------------------------------------------------------------

BAD_IDS = [
    "%00",
    "%ff",
    "%C0%AF",
    "';%20drop%20table%20cues;%20--",
    "' OR '1'='1",
    "..%2F..%2Fetc%2Fpasswd",
    "a%2Fb",
    "cue_%C3%BC",
    "%F0%9F%92%A3",
    "%25",
    "%20",
    "*",
    "null",
    "x" * 4000,
]

ID_ROUTES = [
    ("GET", "/v1/cues/{id}", None, "cue_not_found"),
    ("PATCH", "/v1/cues/{id}", {"description": "x"}, "cue_not_found"),
    ("DELETE", "/v1/cues/{id}", None, "cue_not_found"),
    ("POST", "/v1/cues/{id}/fire", None, "cue_not_found"),
    ("GET", "/v1/cues/{id}/executions", None, "cue_not_found"),
    ("GET", "/v1/executions/{id}", None, "execution_not_found"),
    ("POST", "/v1/executions/{id}/outcome", {"success": True}, "execution_not_found"),
    ("PATCH", "/v1/executions/{id}/evidence", {"summary": "x"}, "execution_not_found"),
    ("POST", "/v1/executions/{id}/verify", {"valid": True}, "execution_not_found"),
    ("POST", "/v1/executions/{id}/verification-pending", None, "execution_not_found"),
    ("POST", "/v1/executions/{id}/replay", None, "execution_not_found"),
]


@pytest.mark.parametrize(("method", "path", "body", "code"), ID_ROUTES)
def test_bad_id_in_path_is_a_json_404(
    server: Server, reported: dict[str, Any], method: str, path: str, body: Any, code: str
) -> None:
    before = snapshot(server)
    failures: list[str] = []
    for bad_id in BAD_IDS:
        r = server.call(method, path.format(id=bad_id), body)
        collect(failures, bad_id[:30], lambda: assert_error(r, 404, code))  # noqa: B023
    assert not failures, "\n".join(failures)
    assert snapshot(server) == before


def test_ids_of_the_other_kind_are_not_found(server: Server, reported: dict[str, Any]) -> None:
    assert_error(server.call("GET", f"/v1/cues/{reported['id']}"), 404, "cue_not_found")
    assert_error(server.call("GET", f"/v1/executions/{reported['cue_id']}"), 404, "execution_not_found")
    # A cue is addressed by its id, not its name.
    assert_error(server.call("GET", "/v1/cues/existing"), 404, "cue_not_found")


# -- bad query values ------------------------------------------------------------------------------

BAD_QUERIES: list[tuple[str, dict[str, str], int, str, str | None]] = [
    ("/v1/cues", {"limit": "abc"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"limit": "0"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"limit": "-5"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"limit": "100000"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"limit": "1e3"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"limit": "99999999999999999999999"}, 422, "validation_error", "query.limit"),
    ("/v1/cues", {"offset": "-1"}, 422, "validation_error", "query.offset"),
    ("/v1/cues", {"offset": "x"}, 422, "validation_error", "query.offset"),
    ("/v1/cues", {"status": "bogus"}, 422, "validation_error", "query.status"),
    ("/v1/cues/{cue}", {"execution_limit": "0"}, 422, "validation_error", "query.execution_limit"),
    ("/v1/cues/{cue}", {"execution_limit": "x"}, 422, "validation_error", "query.execution_limit"),
    ("/v1/cues/{cue}", {"execution_offset": "-1"}, 422, "validation_error", "query.execution_offset"),
    ("/v1/executions", {"limit": "abc"}, 422, "validation_error", "query.limit"),
    ("/v1/executions", {"limit": "0"}, 422, "validation_error", "query.limit"),
    ("/v1/executions", {"limit": "100000"}, 422, "validation_error", "query.limit"),
    ("/v1/executions", {"offset": "-1"}, 422, "validation_error", "query.offset"),
    ("/v1/executions", {"days": "x"}, 422, "validation_error", "query.days"),
    ("/v1/executions", {"days": "0"}, 422, "validation_error", "query.days"),
    ("/v1/executions", {"days": "-3"}, 422, "validation_error", "query.days"),
    ("/v1/executions", {"days": "99999999999"}, 422, "validation_error", "query.days"),
    ("/v1/executions", {"since": "yesterday"}, 422, "validation_error", "query.since"),
    ("/v1/executions", {"has_evidence": "maybe"}, 422, "validation_error", "query.has_evidence"),
    ("/v1/executions", {"status": "bogus"}, 422, "validation_error", "query.status"),
    ("/v1/executions", {"status__in": "pending,bogus"}, 422, "validation_error", "query.status"),
    ("/v1/executions", {"outcome_state": "great"}, 422, "validation_error", "query.outcome_state"),
    ("/v1/executions", {"triggered_by": "cron"}, 422, "validation_error", "query.triggered_by"),
    ("/v1/executions", {"status": "pending", "status__in": "failed"}, 400, "conflicting_filters", None),
    ("/v1/executions", {"status__in": ","}, 400, "invalid_status_in", None),
    ("/v1/cues/{cue}/executions", {"limit": "abc"}, 422, "validation_error", "query.limit"),
    ("/v1/cues/{cue}/executions", {"days": "x"}, 422, "validation_error", "query.days"),
    ("/v1/cues/{cue}/executions", {"has_evidence": "maybe"}, 422, "validation_error", "query.has_evidence"),
    ("/v1/cues/{cue}/executions", {"triggered_by": "chained"}, 422, "validation_error", "query.triggered_by"),
    ("/v1/cues/{cue}/executions", {"status": "a", "status__in": "b"}, 400, "conflicting_filters", None),
]


@pytest.mark.parametrize(
    ("path", "params", "status", "code", "field"), BAD_QUERIES, ids=lambda v: str(v)[:40]
)
def test_bad_query_value_is_refused_naming_it(
    server: Server,
    reported: dict[str, Any],
    path: str,
    params: dict[str, str],
    status: int,
    code: str,
    field: str | None,
) -> None:
    r = server.call("GET", path.format(cue=reported["cue_id"]), params=params)
    assert_error(r, status, code, field)


@pytest.mark.parametrize(
    "path", ["/v1/cues", "/v1/executions", "/v1/cues/{cue}/executions", "/v1/cues/{cue}"]
)
@pytest.mark.parametrize("offset", [str(2**63 - 1), str(2**63 - 2), str(2**62)])
def test_huge_offsets_answer_an_empty_page(
    server: Server, reported: dict[str, Any], path: str, offset: str
) -> None:
    name = "execution_offset" if path == "/v1/cues/{cue}" else "offset"
    r = server.call("GET", path.format(cue=reported["cue_id"]), params={name: offset})
    assert r.status_code in (200, 422), r.text
    if r.status_code == 422:
        assert_error(r, 422, "validation_error", f"query.{name}")
        return
    body = r.json()
    items = body.get("executions", body.get("cues"))
    assert items == []
    assert body.get("has_more", False) is False


# -- the SSRF guard --------------------------------------------------------------------------------


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[Server]:
    """A server started without ``allow_private_targets``: the production policy (one per test:
    a module's server would outlive the store each test runs on)."""
    db = tmp_path / "strict.db"
    app = cueapi.App(location(db))
    try:
        url = app.serve("127.0.0.1", 0, rate_limit_per_minute=NO_THROTTLE)
        r = httpx.post(url + "/v1/auth/register", json={"email": "strict@example.com"}, timeout=30)
        assert r.status_code == 201, r.text
        yield Server(app, url, r.json()["api_key"], r.json()["webhook_secret"], db)
    finally:
        app.close()


PRIVATE_TARGETS = [
    "http://127.0.0.1/hook",
    "http://127.0.0.1:8080/hook",
    "http://localhost/hook",
    "http://LOCALHOST:3000/",
    "http://localhost./",
    "http://api.localhost/",
    "http://[::1]/hook",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://100.64.0.1/",
    "http://0.0.0.0/",
    "http://0.0.0.0:8000/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://017700000001/",
    "https://u:p@example.com/",
    "https://user@example.com/",
    "ftp://example.com/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "javascript:alert(1)",
    "not a url",
    "https://",
    "https://example.com:99999/",
]


def _strict_cue(strict: Server, url: str | None = PUBLIC_URL, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"name": f"ssrf-{uuid.uuid4().hex[:8]}", "schedule": FAR_ONCE, **extra}
    if url is not None:
        body["callback"] = {"url": url}
    return strict.call("POST", "/v1/cues", body)


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_private_callback_refused_on_create(strict: Server, url: str) -> None:
    before = snapshot(strict)
    assert_error(_strict_cue(strict, url), 400, "invalid_callback_url")
    assert snapshot(strict) == before


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_private_callback_refused_on_update(strict: Server, url: str) -> None:
    created = _strict_cue(strict)
    assert created.status_code == 201, created.text
    before = snapshot(strict)
    r = strict.call("PATCH", f"/v1/cues/{created.json()['id']}", {"callback": {"url": url}})
    assert_error(r, 400, "invalid_callback_url")
    assert snapshot(strict) == before


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/", "http://169.254.169.254/", "http://localhost/", "ftp://x.org/"]
)
@pytest.mark.parametrize("form", ["string", "object"])
def test_private_failure_webhook_refused(strict: Server, url: str, form: str) -> None:
    webhook: Any = url if form == "string" else {"url": url}
    before = snapshot(strict)
    err = assert_error(_strict_cue(strict, on_failure={"webhook": webhook}), 400, "invalid_callback_url")
    assert err["message"].startswith("on_failure.webhook"), err
    worker = strict.call("POST", "/v1/cues", {"name": "w-fail", **WORKER, "on_failure": {"webhook": webhook}})
    assert_error(worker, 400, "invalid_callback_url")
    assert snapshot(strict) == before
    created = _strict_cue(strict)
    assert created.status_code == 201, created.text
    before = snapshot(strict)
    r = strict.call("PATCH", f"/v1/cues/{created.json()['id']}", {"on_failure": {"webhook": webhook}})
    assert_error(r, 400, "invalid_callback_url")
    assert snapshot(strict) == before


def test_public_callback_accepted(strict: Server) -> None:
    r = _strict_cue(strict, PUBLIC_URL, on_failure={"webhook": "https://93.184.216.34/failed"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["callback"]["url"] == PUBLIC_URL
    assert body["on_failure"]["webhook"] == "https://93.184.216.34/failed"
    assert body["warning"] is None


def test_unresolvable_callback_accepted_with_a_warning(strict: Server) -> None:
    r = _strict_cue(strict, "https://nothing.invalid/hook")
    assert r.status_code == 201, r.text
    warning = r.json()["warning"]
    assert isinstance(warning, str) and "nothing.invalid" in warning
    assert strict.call("GET", f"/v1/cues/{r.json()['id']}").status_code == 200


def test_worker_cue_url_is_not_a_delivery_target(strict: Server) -> None:
    """A worker cue never calls its callback URL, so the guard has nothing to refuse."""
    r = strict.call("POST", "/v1/cues", {"name": "w-url", **WORKER, "callback": {"url": "http://10.0.0.1/"}})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/",
        "http://metadata.internal/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
    ],
)
def test_metadata_targets_refused_even_when_private_targets_are_allowed(
    server: Server, cue: dict[str, Any], url: str
) -> None:
    before = snapshot(server)
    r = server.call("POST", "/v1/cues", {"name": "meta", "callback": {"url": url}, "schedule": FAR_ONCE})
    assert_error(r, 400, "invalid_callback_url")
    assert snapshot(server) == before
    hook = server.cue(name="hook", callback={"url": PUBLIC_URL}, schedule=FAR_ONCE)
    before = snapshot(server)
    r = server.call("PATCH", f"/v1/cues/{hook['id']}", {"callback": {"url": url}})
    assert_error(r, 400, "invalid_callback_url")
    assert snapshot(server) == before


# -- cues: shape and semantics ---------------------------------------------------------------------


def test_cue_response_shape(server: Server) -> None:
    c = server.cue(
        name="morning-brief",
        description="the daily brief",
        callback={"url": PUBLIC_URL, "method": "put", "headers": {"X-Team": "ops"}},
        schedule={"type": "recurring", "cron": "0 9 29 2 *", "timezone": "Europe/Paris"},
        payload={"task": "brief", "n": [1, 2.5, None, True]},
        retry={"max_attempts": 4, "backoff_minutes": [2, 10]},
        on_failure={"email": False, "webhook": "https://93.184.216.34/failed", "pause": True},
        verification={"mode": "require_external_id"},
    )
    assert re.match(r"^cue_[0-9a-z]+$", c["id"]), c["id"]
    assert c["name"] == "morning-brief" and c["description"] == "the daily brief"
    assert c["status"] == "active" and c["transport"] == "webhook"
    assert c["schedule"] == {"type": "recurring", "cron": "0 9 29 2 *", "timezone": "Europe/Paris"}
    assert c["callback"] == {"url": PUBLIC_URL, "method": "PUT", "headers": {"X-Team": "ops"}}
    assert c["payload"] == {"task": "brief", "n": [1, 2.5, None, True]}
    assert c["retry"] == {"max_attempts": 4, "backoff_minutes": [2, 10], "retry_reported_failures": False}
    assert all(type(m) is int for m in c["retry"]["backoff_minutes"])
    assert (c["catch_up"], c["catch_up_max"]) == ("run_once_if_missed", 100)
    assert c["on_success_fire"] is None and c["required_payload_keys"] is None
    assert c["require_payload_override"] is False
    assert isinstance(c["delivery"], dict)
    assert c["on_failure"] == {"email": False, "webhook": "https://93.184.216.34/failed", "pause": True}
    assert c["verification"] == {"mode": "require_external_id"}
    assert c["run_count"] == 0 and c["fired_count"] == 0
    assert c["last_run"] is None and c["warning"] is None
    created = parse_iso(c["created_at"])
    parse_iso(c["updated_at"])
    nxt = parse_iso(c["next_run"])
    assert nxt > created
    local = nxt.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.month, local.day, local.hour, local.minute) == (2, 29, 9, 0)
    assert "owner" not in c and "user_id" not in c
    # The same cue through every read.
    detail = server.call("GET", f"/v1/cues/{c['id']}").json()
    assert {k: detail[k] for k in c} == c
    listed = server.call("GET", "/v1/cues").json()["cues"]
    assert listed == [c]


def test_cue_defaults(server: Server) -> None:
    c = server.cue(name="defaults", callback={"url": PUBLIC_URL}, schedule=FAR_ONCE)
    assert c["transport"] == "webhook"
    assert c["schedule"]["type"] == "once" and c["schedule"]["timezone"] == "UTC"
    assert (
        parse_iso(c["schedule"]["at"])
        == parse_iso(c["next_run"])
        == datetime(2099, 1, 1, tzinfo=timezone.utc)
    )
    assert c["callback"] == {"url": PUBLIC_URL, "method": "POST", "headers": {}}
    assert c["payload"] == {}
    assert c["retry"] == {"max_attempts": 3, "backoff_minutes": [1, 5, 15], "retry_reported_failures": False}
    assert c["on_failure"] == {"email": True, "webhook": None, "pause": False}
    assert c["verification"] is None
    w = worker_cue(server, "w-defaults")
    assert w["transport"] == "worker" and w["schedule"]["timezone"] == "UTC"


def test_duplicate_cue_name_is_409_and_changes_nothing(server: Server, cue: dict[str, Any]) -> None:
    before = snapshot(server)
    r = server.call("POST", "/v1/cues", {"name": cue["name"], **WORKER, "payload": {"other": 1}})
    assert_error(r, 409, "duplicate_cue_name")
    r = server.call(
        "POST", "/v1/cues", {"name": cue["name"], "callback": {"url": PUBLIC_URL}, "schedule": FAR_ONCE}
    )
    assert_error(r, 409, "duplicate_cue_name")
    assert snapshot(server) == before


def test_cue_list_pages_newest_first(server: Server) -> None:
    made = [worker_cue(server, f"c{i}") for i in range(5)]
    seen: list[dict[str, Any]] = []
    for offset in (0, 2, 4):
        r = server.call("GET", "/v1/cues", params={"limit": 2, "offset": offset})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["cues"] == body["data"]
        assert (body["total"], body["limit"], body["offset"]) == (5, 2, offset)
        assert len(body["cues"]) == (1 if offset == 4 else 2)
        seen += body["cues"]
    assert sorted(c["id"] for c in seen) == sorted(c["id"] for c in made)
    stamps = [parse_iso(c["created_at"]) for c in seen]
    assert stamps == sorted(stamps, reverse=True)
    r = server.call("GET", "/v1/cues", params={"offset": 5})
    assert r.json()["cues"] == [] and r.json()["total"] == 5
    assert server.call("GET", "/v1/cues").json()["limit"] == 50


def test_cue_list_status_filter(server: Server) -> None:
    worker_cue(server, "a")
    b = worker_cue(server, "b")
    worker_cue(server, "c")
    assert server.call("PATCH", f"/v1/cues/{b['id']}", {"status": "paused"}).status_code == 200

    def names(params: dict[str, str]) -> list[str]:
        r = server.call("GET", "/v1/cues", params=params)
        assert r.status_code == 200, r.text
        return sorted(x["name"] for x in r.json()["cues"])

    assert names({"status": "paused"}) == ["b"]
    assert names({"status": "active"}) == ["a", "c"]
    assert names({"status": "all"}) == ["a", "b", "c"]
    assert names({}) == ["a", "b", "c"]
    assert names({"status": "completed"}) == []
    assert server.call("GET", "/v1/cues", params={"status": "paused"}).json()["total"] == 1


def test_cue_detail_has_recent_executions(server: Server, cue: dict[str, Any]) -> None:
    fired = [fire(server, cue["id"])["id"] for _ in range(3)]
    d = server.call("GET", f"/v1/cues/{cue['id']}").json()
    assert d["execution_total"] == 3
    assert sorted(e["id"] for e in d["executions"]) == sorted(fired)
    assert all(e["cue_id"] == cue["id"] for e in d["executions"])
    d = server.call(
        "GET", f"/v1/cues/{cue['id']}", params={"execution_limit": 2, "execution_offset": 1}
    ).json()
    assert len(d["executions"]) == 2 and d["execution_total"] == 3
    assert (d["execution_limit"], d["execution_offset"]) == (2, 1)


def test_patch_keeps_what_is_not_sent(server: Server) -> None:
    c = server.cue(
        name="keep",
        description="desc",
        callback={"url": PUBLIC_URL, "method": "PUT", "headers": {"X-Token": "t"}},
        schedule={"type": "recurring", "cron": "0 9 29 2 *", "timezone": "Europe/Paris"},
        payload={"a": 1},
        retry={"max_attempts": 5, "backoff_minutes": [2, 4]},
        on_failure={"email": False, "webhook": None, "pause": True},
        verification={"mode": "manual"},
    )
    stable = ["id", "status", "transport", "created_at", "next_run", "run_count", "fired_count", "delivery"]

    def patch(body: dict[str, Any]) -> dict[str, Any]:
        r = server.call("PATCH", f"/v1/cues/{c['id']}", body)
        assert r.status_code == 200, r.text
        assert r.json() == {
            k: v for k, v in server.call("GET", f"/v1/cues/{c['id']}").json().items() if k in r.json()
        }
        return dict(r.json())

    p = patch({"name": "kept"})
    assert p["name"] == "kept"
    assert {k: p[k] for k in c if k not in ("name", "updated_at")} == {
        k: c[k] for k in c if k not in ("name", "updated_at")
    }
    p = patch({"callback": {"url": "https://93.184.216.35/new"}})
    assert p["callback"] == {"url": "https://93.184.216.35/new", "method": "PUT", "headers": {"X-Token": "t"}}
    p = patch({"payload": {"b": 2}})
    assert p["payload"] == {"b": 2}
    assert p["schedule"]["timezone"] == "Europe/Paris"
    p = patch({"schedule": {"type": "recurring", "cron": "30 9 29 2 *"}})
    assert p["schedule"] == {"type": "recurring", "cron": "30 9 29 2 *", "timezone": "Europe/Paris"}
    local = parse_iso(p["next_run"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 30)
    p = patch({"description": "new"})
    assert p["description"] == "new"
    assert p["callback"]["method"] == "PUT" and p["callback"]["headers"] == {"X-Token": "t"}
    assert p["payload"] == {"b": 2}
    assert p["retry"] == {"max_attempts": 5, "backoff_minutes": [2, 4], "retry_reported_failures": False}
    assert p["on_failure"] == {"email": False, "webhook": None, "pause": True}
    assert p["verification"] == {"mode": "manual"}
    assert {k: p[k] for k in stable if k != "next_run"} == {k: c[k] for k in stable if k != "next_run"}
    p = patch({})
    assert p["description"] == "new"


def test_pause_and_resume(server: Server, cue: dict[str, Any]) -> None:
    r = server.call("PATCH", f"/v1/cues/{cue['id']}", {"status": "paused"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "paused"
    assert r.json()["next_run"] is None
    got = server.call("GET", f"/v1/cues/{cue['id']}").json()
    assert got["status"] == "paused" and got["next_run"] is None
    r = server.call("PATCH", f"/v1/cues/{cue['id']}", {"status": "paused"})
    assert r.status_code == 200 and r.json()["status"] == "paused"
    r = server.call("PATCH", f"/v1/cues/{cue['id']}", {"status": "active"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    assert parse_iso(r.json()["next_run"]) > datetime.now(timezone.utc)


def test_transport_cannot_change(server: Server, cue: dict[str, Any]) -> None:
    before = snapshot(server)
    r = server.call(
        "PATCH", f"/v1/cues/{cue['id']}", {"transport": "webhook", "callback": {"url": PUBLIC_URL}}
    )
    assert_error(r, 422, "validation_error", "body.transport")
    assert snapshot(server) == before
    hook = server.cue(name="hook", callback={"url": PUBLIC_URL}, schedule=FAR_ONCE)
    before = snapshot(server)
    r = server.call("PATCH", f"/v1/cues/{hook['id']}", {"transport": "worker"})
    assert_error(r, 422, "validation_error", "body.transport")
    assert snapshot(server) == before
    r = server.call("PATCH", f"/v1/cues/{hook['id']}", {"transport": "webhook"})
    assert r.status_code == 200, r.text


def test_rename_to_an_existing_name_is_409(server: Server) -> None:
    a, b = worker_cue(server, "a"), worker_cue(server, "b")
    before = snapshot(server)
    r = server.call("PATCH", f"/v1/cues/{b['id']}", {"name": "a", "payload": {"lost": True}})
    assert_error(r, 409, "duplicate_cue_name")
    assert snapshot(server) == before
    r = server.call("PATCH", f"/v1/cues/{a['id']}", {"name": "a"})
    assert r.status_code == 200 and r.json()["name"] == "a"


def test_delete(server: Server, cue: dict[str, Any]) -> None:
    ex = fire(server, cue["id"])
    keep = worker_cue(server, "keep")
    r = server.call("DELETE", f"/v1/cues/{cue['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(server.call("GET", f"/v1/cues/{cue['id']}"), 404, "cue_not_found")
    assert_error(server.call("DELETE", f"/v1/cues/{cue['id']}"), 404, "cue_not_found")
    assert_error(server.call("POST", f"/v1/cues/{cue['id']}/fire"), 404, "cue_not_found")
    assert_error(server.call("GET", f"/v1/executions/{ex['id']}"), 404, "execution_not_found")
    assert_error(server.call("POST", f"/v1/executions/{ex['id']}/outcome", {"success": True}), 404)
    assert [c["id"] for c in snapshot(server)["cues"]] == [keep["id"]]
    assert snapshot(server)["executions"] == []
    # The name is free again.
    assert server.call("POST", "/v1/cues", {"name": cue["name"], **WORKER}).status_code == 201


CONFIRM = {"X-Confirm-Destructive": "true"}


def bulk_delete(
    server: Server, body: Any = None, *, headers: dict[str, str] = CONFIRM, **kw: Any
) -> httpx.Response:
    return server.call("POST", "/v1/cues/bulk-delete", body, headers=headers, **kw)


def test_bulk_delete(server: Server, other: str) -> None:
    a, b, c = worker_cue(server, "a"), worker_cue(server, "b"), worker_cue(server, "c")
    ex = fire(server, a["id"])
    r = server.call("POST", "/v1/cues", {"name": "theirs", **WORKER}, key=other)
    assert r.status_code == 201, r.text
    theirs = r.json()
    r = bulk_delete(server, {"ids": [c["id"], "cue_nope", a["id"], theirs["id"], c["id"]]})
    assert r.status_code == 200, r.text
    # Each list in the order of the request; unknown, another user's and repeated ids are skipped.
    assert r.json() == {"deleted": [c["id"], a["id"]], "skipped": ["cue_nope", theirs["id"], c["id"]]}
    assert [x["id"] for x in snapshot(server)["cues"]] == [b["id"]]
    # As the single DELETE: the history goes, and the names are free again.
    assert_error(server.call("GET", f"/v1/executions/{ex['id']}"), 404, "execution_not_found")
    assert snapshot(server)["executions"] == []
    assert server.call("POST", "/v1/cues", {"name": "a", **WORKER}).status_code == 201
    assert [x["id"] for x in snapshot(server, key=other)["cues"]] == [theirs["id"]]
    # The other user cannot delete ours either.
    r = bulk_delete(server, {"ids": [b["id"]]}, key=other)
    assert r.status_code == 200 and r.json() == {"deleted": [], "skipped": [b["id"]]}
    assert server.call("GET", f"/v1/cues/{b['id']}").status_code == 200
    # 100 ids is the most.
    r = bulk_delete(server, {"ids": [b["id"]] + [f"cue_{n}" for n in range(99)]})
    assert r.status_code == 200 and r.json()["deleted"] == [b["id"]] and len(r.json()["skipped"]) == 99


@pytest.mark.parametrize("confirm", [None, "", "false", "yes", "1"])
def test_bulk_delete_needs_confirmation(server: Server, cue: dict[str, Any], confirm: str | None) -> None:
    before = snapshot(server)
    headers = {} if confirm is None else {"X-Confirm-Destructive": confirm}
    r = bulk_delete(server, {"ids": [cue["id"]]}, headers=headers)
    err = assert_error(r, 400, "confirmation_required")
    assert "X-Confirm-Destructive: true" in err["message"]
    assert snapshot(server) == before


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (None, 422, "validation_error", "body"),
        ({}, 422, "validation_error", "body.ids"),
        ({"ids": None}, 422, "validation_error", "body.ids"),
        ({"ids": []}, 422, "validation_error", "body.ids"),
        ({"ids": [f"cue_{n}" for n in range(101)]}, 422, "validation_error", "body.ids"),
        ({"ids": "CUE"}, 422, "validation_error", "body.ids"),
        ({"ids": ["CUE", 5]}, 422, "validation_error", "body.ids.1"),
        ({"ids": ["CUE"], "force": True}, 422, "validation_error", "body.force"),
        (["CUE"], 422, "validation_error", "body"),
        (b"{not json", 400, "invalid_json", None),
    ],
)
def test_bad_bulk_delete_is_refused_and_deletes_nothing(
    server: Server, cue: dict[str, Any], body: Any, status: int, code: str, field: str | None
) -> None:
    before = snapshot(server)

    def named(v: Any) -> Any:  # the existing cue's id where the case says CUE
        if isinstance(v, dict):
            return {k: named(x) for k, x in v.items()}
        if isinstance(v, list):
            return [named(x) for x in v]
        return cue["id"] if v == "CUE" else v

    if isinstance(body, bytes):
        r = server.call(
            "POST",
            "/v1/cues/bulk-delete",
            content=body,
            headers={**CONFIRM, "Content-Type": "application/json"},
        )
    else:
        r = bulk_delete(server, named(body))
    assert_error(r, status, code, field)
    assert snapshot(server) == before


def test_fire_response_and_payload_override(server: Server) -> None:
    c = worker_cue(server, "f", payload={"a": 1, "b": {"x": 1}})
    ex = fire(server, c["id"])
    assert ex["cue_id"] == c["id"] and ex["status"] == "pending" and ex["triggered_by"] == "manual_fire"
    assert ex["execution_id"] == ex["id"]
    assert ex["payload"] == {"a": 1, "b": {"x": 1}}
    parse_iso(ex["scheduled_for"])
    merged = fire(server, c["id"], payload_override={"b": 2, "c": 3})
    assert server.execution(merged["id"])["payload"] == {"a": 1, "b": 2, "c": 3}
    replaced = fire(server, c["id"], payload_override={"b": 2, "c": 3}, merge_strategy="replace")
    assert server.execution(replaced["id"])["payload"] == {"b": 2, "c": 3}
    assert server.call("GET", f"/v1/cues/{c['id']}").json()["payload"] == {"a": 1, "b": {"x": 1}}
    assert server.call("GET", f"/v1/cues/{c['id']}").json()["fired_count"] == 0


def test_fire_send_at(server: Server, cue: dict[str, Any]) -> None:
    later = (datetime.now(timezone.utc) + timedelta(days=2)).replace(microsecond=0)
    ex = fire(server, cue["id"], send_at=iso(later))
    assert parse_iso(ex["scheduled_for"]) == later
    got = server.execution(ex["id"])
    assert got["status"] == "pending" and parse_iso(got["scheduled_for"]) == later
    # An offset is honoured; a time in the past means now.
    paris = later.astimezone(ZoneInfo("Europe/Paris")).isoformat()
    assert parse_iso(fire(server, cue["id"], send_at=paris)["scheduled_for"]) == later
    t0 = datetime.now(timezone.utc) - timedelta(seconds=1)
    past = fire(server, cue["id"], send_at="2001-01-01T00:00:00Z")
    assert parse_iso(past["scheduled_for"]) >= t0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"send_at": "tomorrow"}, "body.send_at"),
        ({"send_at": 5}, "body.send_at"),
        ({"send_at": "2026-13-01T00:00:00Z"}, "body.send_at"),
        ({"payload_override": "x"}, "body.payload_override"),
        ({"payload_override": [1]}, "body.payload_override"),
        ({"merge_strategy": "deep"}, "body.merge_strategy"),
        ({"idempotency_key": ""}, "body.idempotency_key"),
        ({"idempotency_key": 5}, "body.idempotency_key"),
        ({"idempotency_key": "k" * 256}, "body.idempotency_key"),
        ({"bogus": 1}, "body.bogus"),
    ],
)
def test_fire_with_bad_fields_is_422_and_creates_nothing(
    server: Server, cue: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    before = snapshot(server)
    r = server.call("POST", f"/v1/cues/{cue['id']}/fire", body)
    assert_error(r, 422, "validation_error", field)
    assert snapshot(server) == before


def test_fire_idempotency_key(server: Server, cue: dict[str, Any]) -> None:
    first = fire(server, cue["id"], idempotency_key="order-42")
    again = fire(server, cue["id"], idempotency_key="order-42")
    assert again["id"] == first["id"] and again["created"] is False
    # The same key with another request is refused, naming the first execution.
    conflict = server.call(
        "POST", f"/v1/cues/{cue['id']}/fire", {"idempotency_key": "order-42", "payload_override": {"x": 1}}
    )
    assert conflict.status_code == 409 and conflict.json()["error"]["execution_id"] == first["id"]
    other = fire(server, cue["id"], idempotency_key="order-43")
    assert other["id"] != first["id"]
    assert len(snapshot(server)["executions"]) == 2
    # Keys are per cue.
    second_cue = worker_cue(server, "second")
    assert fire(server, second_cue["id"], idempotency_key="order-42")["id"] != first["id"]


def test_fire_works_on_a_paused_cue(server: Server, cue: dict[str, Any]) -> None:
    assert server.call("PATCH", f"/v1/cues/{cue['id']}", {"status": "paused"}).status_code == 200
    ex = fire(server, cue["id"])
    assert ex["status"] == "pending"
    assert server.call("GET", f"/v1/cues/{cue['id']}").json()["status"] == "paused"


# -- executions: outcomes, evidence, verification, replay ------------------------------------------


def test_execution_shape(server: Server, pending: dict[str, Any]) -> None:
    e = pending
    assert re.match(r"^exec_[0-9a-z]+$", e["id"]), e["id"]
    assert e["status"] == "pending" and e["attempts"] == 0
    for k in ("scheduled_for", "created_at", "updated_at"):
        parse_iso(e[k])
    assert e.get("outcome") is None
    assert e["error_message"] is None


def test_outcome_is_write_once(server: Server, pending: dict[str, Any]) -> None:
    r = server.call("POST", f"/v1/executions/{pending['id']}/outcome", {"success": True, "result": "first"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "execution_id": pending["id"],
        "outcome_recorded": True,
        "outcome_state": "reported_success",
        "status": "success",
        "reason": None,
    }
    recorded = server.execution(pending["id"])
    for second in [{"success": False, "error": "second"}, {"success": True, "result": "second"}]:
        r = server.call("POST", f"/v1/executions/{pending['id']}/outcome", second)
        assert_error(r, 409, "outcome_already_recorded")
    assert server.execution(pending["id"]) == recorded
    assert recorded["outcome"]["result"] == "first"


def test_outcome_stores_every_evidence_field(server: Server, pending: dict[str, Any]) -> None:
    report = {
        "success": True,
        "result": "Synced 847 records",
        "error": None,
        "metadata": {"records": 847, "nested": {"ok": True}},
        "external_id": "batch_20260324_002",
        "result_url": "https://example.com/batches/002",
        "result_ref": "s3://bucket/batch-002.json",
        "result_type": "data_sync",
        "summary": "847 records synced",
        "artifacts": [{"type": "file", "name": "batch.json"}, "log.txt"],
    }
    outcome(server, pending["id"], **report)
    o = server.execution(pending["id"])["outcome"]
    for k, v in report.items():
        assert o[k] == v, (k, o)
    parse_iso(o["recorded_at"])


@pytest.mark.parametrize(
    ("mode", "report", "state"),
    [
        (None, {"success": True}, "reported_success"),
        ("none", {"success": True}, "reported_success"),
        (None, {"success": False, "error": "boom"}, "reported_failure"),
        ("require_external_id", {"success": True, "external_id": "x1"}, "verified_success"),
        ("require_external_id", {"success": True}, "verification_failed"),
        ("require_external_id", {"success": True, "external_id": ""}, "verification_failed"),
        ("require_external_id", {"success": False, "external_id": "x1"}, "reported_failure"),
        ("require_result_url", {"success": True, "result_url": "https://example.com/r"}, "verified_success"),
        ("require_result_url", {"success": True, "external_id": "x1"}, "verification_failed"),
        ("require_artifacts", {"success": True, "artifacts": [{"a": 1}]}, "verified_success"),
        ("require_artifacts", {"success": True, "artifacts": []}, "verification_failed"),
        ("require_artifacts", {"success": True}, "verification_failed"),
        ("manual", {"success": True, "external_id": "x1"}, "verification_pending"),
        ("manual", {"success": False}, "reported_failure"),
    ],
)
def test_verification_modes(server: Server, mode: str | None, report: dict[str, Any], state: str) -> None:
    # No retries: a reported failure is final, so it is the execution's outcome.
    c = worker_cue(
        server, "v", verification=None if mode is None else {"mode": mode}, retry={"max_attempts": 0}
    )
    ex = fire(server, c["id"])
    assert outcome(server, ex["id"], **report)["outcome_state"] == state
    assert server.execution(ex["id"])["outcome_state"] == state
    listed = server.call("GET", "/v1/executions", params={"outcome_state": state}).json()["executions"]
    assert [e["id"] for e in listed] == [ex["id"]]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 422, "validation_error", "body.success"),
        ({"result": "ok"}, 422, "validation_error", "body.success"),
        ({"success": "yes"}, 422, "validation_error", "body.success"),
        ({"success": 1}, 422, "validation_error", "body.success"),
        ({"success": None}, 422, "validation_error", "body.success"),
        ({"success": True, "result": 5}, 422, "validation_error", "body.result"),
        ({"success": True, "metadata": [1]}, 422, "validation_error", "body.metadata"),
        ({"success": True, "metadata": "x"}, 422, "validation_error", "body.metadata"),
        ({"success": True, "metadata": {"blob": "m" * 10_300}}, 400, "metadata_too_large", None),
        ({"success": True, "metadata": {f"k{i}": i for i in range(2000)}}, 400, "metadata_too_large", None),
        ({"success": True, "result_url": "ftp://example.com/x"}, 422, "validation_error", "body.result_url"),
        ({"success": True, "result_url": "javascript:alert(1)"}, 422, "validation_error", "body.result_url"),
        ({"success": True, "result_url": "not a url"}, 422, "validation_error", "body.result_url"),
        ({"success": True, "result_url": 5}, 422, "validation_error", "body.result_url"),
        ({"success": True, "external_id": "x" * 501}, 422, "validation_error", "body.external_id"),
        ({"success": True, "result_ref": "x" * 501}, 422, "validation_error", "body.result_ref"),
        ({"success": True, "result_type": "x" * 101}, 422, "validation_error", "body.result_type"),
        ({"success": True, "artifacts": "x"}, 422, "validation_error", "body.artifacts"),
        ({"success": True, "artifacts": {"a": 1}}, 422, "validation_error", "body.artifacts"),
        ({"success": True, "bogus": 1}, 422, "validation_error", "body.bogus"),
        ({"success": True, "started_at": 0}, 422, "validation_error", "body.started_at"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_outcome_is_refused_and_records_nothing(
    server: Server, pending: dict[str, Any], body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    before = snapshot(server)
    r = server.call("POST", f"/v1/executions/{pending['id']}/outcome", body)
    assert_error(r, status, code, field)
    assert snapshot(server) == before
    assert server.execution(pending["id"]) == pending
    # Nothing was half-recorded: a good report still goes through.
    assert outcome(server, pending["id"], success=True)["outcome_state"] == "reported_success"


def test_over_long_free_text_is_cut_and_said_so(server: Server, cue: dict[str, Any]) -> None:
    """An outcome is evidence of work done: over-long ``result``, ``error`` and ``summary`` are cut
    to their limits (2000, 2000, 500 characters) and the answer names them, rather than the report
    being lost; every other field is kept whole."""
    final = worker_cue(server, "no-retries", retry={"max_attempts": 0})
    ex = fire(server, final["id"])
    r = server.call(
        "POST",
        f"/v1/executions/{ex['id']}/outcome",
        {
            "success": False,
            "result": "r" * 2001,
            "error": "e" * 5000,
            "summary": "s" * 501,
            "external_id": "x",
        },
    )
    assert r.status_code == 200, r.text
    assert sorted(r.json()["truncated"]) == ["error", "result", "summary"]
    o = server.execution(ex["id"])["outcome"]
    for name, limit in [("result", 2000), ("error", 2000), ("summary", 500)]:
        assert len(o[name]) == limit and o[name].endswith("…"), name
        assert o[name][:-1] == o[name][0] * (limit - 1)
    assert o["external_id"] == "x" and o["success"] is False
    r = server.call("PATCH", f"/v1/executions/{ex['id']}/evidence", {"summary": "t" * 600})
    assert r.status_code == 200 and r.json()["truncated"] == ["summary"], r.text
    assert server.execution(ex["id"])["outcome"]["summary"] == "t" * 499 + "…"
    # At the limit nothing is cut, and the answer does not mention it.
    ok = fire(server, cue["id"])
    r = server.call("POST", f"/v1/executions/{ok['id']}/outcome", {"success": True, "summary": "s" * 500})
    assert r.status_code == 200 and "truncated" not in r.json(), r.text
    assert server.execution(ok["id"])["outcome"]["summary"] == "s" * 500


def test_evidence_needs_an_outcome(server: Server, pending: dict[str, Any]) -> None:
    r = server.call("PATCH", f"/v1/executions/{pending['id']}/evidence", {"external_id": "early"})
    assert_error(r, 409, "no_outcome")
    assert server.execution(pending["id"]) == pending


def test_evidence_after_the_outcome(server: Server, pending: dict[str, Any]) -> None:
    outcome(
        server,
        pending["id"],
        success=True,
        result="ok",
        metadata={"from": "outcome"},
        external_id="e1",
        summary="s1",
        result_type="t1",
        artifacts=[{"n": 1}],
    )
    r = server.call(
        "PATCH",
        f"/v1/executions/{pending['id']}/evidence",
        {
            "external_id": "e2",
            "result_url": "https://example.com/r",
            "artifacts": [{"n": 2}],
            "metadata": {"k1": 1},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["outcome_state"] == "reported_success"
    o = server.execution(pending["id"])["outcome"]
    assert (o["external_id"], o["result_url"], o["summary"], o["result_type"]) == (
        "e2",
        "https://example.com/r",
        "s1",
        "t1",
    )
    assert o["artifacts"] == [{"n": 1}, {"n": 2}]
    r = server.call(
        "PATCH",
        f"/v1/executions/{pending['id']}/evidence",
        {"metadata": {"k2": 2}, "summary": "s2", "result_ref": "ref-1"},
    )
    assert r.status_code == 200, r.text
    ex = server.execution(pending["id"])
    o = ex["outcome"]
    assert (o["external_id"], o["summary"], o["result_ref"], o["result_type"]) == ("e2", "s2", "ref-1", "t1")
    assert o["artifacts"] == [{"n": 1}, {"n": 2}]
    assert ex["evidence"]["metadata"] == {"k1": 1, "k2": 2}
    assert (o["result"], o["metadata"], o["success"]) == ("ok", {"from": "outcome"}, True)
    assert ex["outcome_state"] == "reported_success"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"result_url": "ftp://x.org/"}, "body.result_url"),
        ({"external_id": 5}, "body.external_id"),
        ({"artifacts": "x"}, "body.artifacts"),
        ({"metadata": [1]}, "body.metadata"),
        ({"success": False}, "body.success"),
        ({"bogus": 1}, "body.bogus"),
    ],
)
def test_bad_evidence_is_422_and_changes_nothing(
    server: Server, reported: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    r = server.call("PATCH", f"/v1/executions/{reported['id']}/evidence", body)
    assert_error(r, 422, "validation_error", field)
    assert server.execution(reported["id"]) == reported


def test_verify(server: Server, cue: dict[str, Any], pending: dict[str, Any]) -> None:
    assert_error(server.call("POST", f"/v1/executions/{pending['id']}/verify", {}), 409, "invalid_state")
    assert server.execution(pending["id"]) == pending

    yes = fire(server, cue["id"])
    outcome(server, yes["id"], success=True, summary="did it")
    r = server.call("POST", f"/v1/executions/{yes['id']}/verify")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "execution_id": yes["id"],
        "outcome_state": "verified_success",
        "valid": True,
        "reason": None,
    }
    assert server.execution(yes["id"])["outcome_state"] == "verified_success"
    verified = server.execution(yes["id"])
    assert_error(
        server.call("POST", f"/v1/executions/{yes['id']}/verify", {"valid": False}), 409, "invalid_state"
    )
    assert server.execution(yes["id"]) == verified

    no = fire(server, cue["id"])
    outcome(server, no["id"], success=True, summary="did it")
    r = server.call("POST", f"/v1/executions/{no['id']}/verify", {"valid": False, "reason": "not in the CRM"})
    assert r.status_code == 200, r.text
    # The answer says the reason back, as the hosted service's does.
    assert r.json() == {
        "execution_id": no["id"],
        "outcome_state": "verification_failed",
        "valid": False,
        "reason": "not in the CRM",
    }
    ex = server.execution(no["id"])
    assert ex["outcome_state"] == "verification_failed"
    assert ex["outcome"]["summary"] == "did it | verification rejected: not in the CRM"

    bare = fire(server, cue["id"])
    outcome(server, bare["id"], success=True)
    server.call("POST", f"/v1/executions/{bare['id']}/verify", {"valid": False, "reason": "nope"})
    assert "nope" in server.execution(bare["id"])["outcome"]["summary"]


def test_verify_does_not_turn_a_reported_failure_into_a_verified_success(
    server: Server, cue: dict[str, Any]
) -> None:
    """§14.23 of the reference: a failure is not made a success by verifying it."""
    ex = fire(server, cue["id"])
    outcome(server, ex["id"], success=False, error="boom")
    before = server.execution(ex["id"])
    r = server.call("POST", f"/v1/executions/{ex['id']}/verify", {"valid": True})
    assert_error(r, 409, "invalid_state")
    assert server.execution(ex["id"]) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"valid": "yes"}, "body.valid"),
        ({"valid": 1}, "body.valid"),
        ({"reason": 5}, "body.reason"),
        ({"valid": False, "reason": "r" * 501}, "body.reason"),
        ({"bogus": 1}, "body.bogus"),
    ],
)
def test_bad_verify_is_422_and_changes_nothing(
    server: Server, reported: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    r = server.call("POST", f"/v1/executions/{reported['id']}/verify", body)
    assert_error(r, 422, "validation_error", field)
    assert server.execution(reported["id"]) == reported


def test_verification_pending(server: Server, pending: dict[str, Any], reported: dict[str, Any]) -> None:
    assert_error(
        server.call("POST", f"/v1/executions/{pending['id']}/verification-pending"), 409, "no_outcome"
    )
    assert server.execution(pending["id"]) == pending
    r = server.call("POST", f"/v1/executions/{reported['id']}/verification-pending")
    assert r.status_code == 200, r.text
    assert r.json()["outcome_state"] == "verification_pending"
    assert server.execution(reported["id"])["outcome_state"] == "verification_pending"
    r = server.call("POST", f"/v1/executions/{reported['id']}/verify", {"valid": True})
    assert r.json()["outcome_state"] == "verified_success"
    # A verdict is not reopened.
    verified = server.execution(reported["id"])
    r = server.call("POST", f"/v1/executions/{reported['id']}/verification-pending")
    assert_error(r, 409, "invalid_state")
    assert server.execution(reported["id"]) == verified


def test_replay_of_an_execution_in_flight_is_409(server: Server, pending: dict[str, Any]) -> None:
    before = snapshot(server)
    assert_error(server.call("POST", f"/v1/executions/{pending['id']}/replay"), 409, "execution_in_flight")
    assert snapshot(server) == before


def test_replay_of_a_finished_execution(server: Server, finished: dict[str, Any]) -> None:
    before = snapshot(server)
    r = server.call("POST", f"/v1/executions/{finished['id']}/replay")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == body["execution_id"] != finished["id"]
    assert body["replayed_from"] == finished["id"]
    assert body["cue_id"] == finished["cue_id"] and body["triggered_by"] == "replay"
    assert body["payload"] == finished["payload"]
    after = snapshot(server)
    assert len(after["executions"]) == len(before["executions"]) + 1
    original = server.execution(finished["id"])
    assert original["status"] == "success" and original["replay_of"] is None


def test_execution_list_filters(server: Server, receiver: Receiver) -> None:
    a = worker_cue(server, "a", retry={"max_attempts": 0})
    a1, a2, a3 = (fire(server, a["id"])["id"] for _ in range(3))
    outcome(server, a1, success=True, external_id="ext-1", result_type="report")
    outcome(server, a2, success=False, error="boom")
    b = server.cue(name="b", callback={"url": receiver.url + "/hook"}, schedule=FAR_ONCE)
    b1 = fire(server, b["id"])["id"]
    wait_for(lambda: server.execution(b1)["status"] == "success")

    def ids(path: str = "/v1/executions", **params: Any) -> list[str]:
        r = server.call("GET", path, params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(body["executions"])
        return sorted(e["id"] for e in body["executions"])

    everything = sorted([a1, a2, a3, b1])
    assert ids() == everything
    assert ids(status="all") == everything
    assert ids(cue_id=a["id"]) == sorted([a1, a2, a3])
    assert ids(cue_id="cue_nope") == []
    assert ids(status="pending") == [a3]
    assert ids(status="success") == sorted([a1, b1])
    assert ids(status="failed") == [a2]
    assert ids(status__in="pending,success") == sorted([a1, a3, b1])
    assert ids(status__in="success, failed") == sorted([a1, a2, b1])
    assert ids(outcome_state="reported_failure") == [a2]
    assert ids(outcome_state="reported_success") == [a1]
    assert ids(has_evidence="true") == [a1]
    assert ids(has_evidence="false") == sorted([a2, a3, b1])
    assert ids(result_type="report") == [a1]
    assert ids(result_type="other") == []
    assert ids(days=1) == everything
    now = datetime.now(timezone.utc)
    assert ids(since=iso(now - timedelta(hours=1))) == everything
    assert ids(since=iso(now + timedelta(hours=1))) == []
    assert ids(cue_id=a["id"], outcome_state="reported_success", has_evidence="true") == [a1]
    page = server.call("GET", "/v1/executions", params={"limit": 3}).json()
    assert page["executions"] == page["data"]
    assert (len(page["executions"]), page["total"], page["limit"], page["has_more"]) == (3, 4, 3, True)
    rest = server.call("GET", "/v1/executions", params={"limit": 3, "offset": 3}).json()
    assert (len(rest["executions"]), rest["total"], rest["has_more"]) == (1, 4, False)
    assert sorted(e["id"] for e in page["executions"] + rest["executions"]) == everything
    scheduled = [parse_iso(e["scheduled_for"]) for e in page["executions"] + rest["executions"]]
    assert scheduled == sorted(scheduled, reverse=True)

    per_cue = server.call("GET", f"/v1/cues/{a['id']}/executions").json()
    assert sorted(e["id"] for e in per_cue["data"]) == sorted([a1, a2, a3])
    assert per_cue["total"] == 3
    assert ids(f"/v1/cues/{a['id']}/executions", outcome_state="reported_failure") == [a2]
    assert ids(f"/v1/cues/{a['id']}/executions", status="success") == [a1]
    assert ids(f"/v1/cues/{b['id']}/executions", status="success") == [b1]
    # The path's cue wins over a cue_id in the query: it never shows another cue's executions.
    assert ids(f"/v1/cues/{a['id']}/executions", cue_id=b["id"]) == sorted([a1, a2, a3])
    limited = server.call("GET", f"/v1/cues/{a['id']}/executions", params={"limit": 1}).json()
    assert len(limited["data"]) == 1 and limited["total"] == 3

    r1 = server.call("POST", f"/v1/executions/{b1}/replay").json()["id"]
    assert ids(triggered_by="manual_fire") == everything
    assert ids(triggered_by="replay") == [r1]
    assert ids(triggered_by="scheduled") == []
    # `chain` (a step of a chain of cues) is a value the filter knows, with or without such steps.
    assert ids(triggered_by="chain") == []
    assert ids(f"/v1/cues/{a['id']}/executions", triggered_by="chain") == []
    assert ids(f"/v1/cues/{b['id']}/executions", triggered_by="replay") == [r1]
    assert ids(f"/v1/cues/{a['id']}/executions", triggered_by="replay") == []
