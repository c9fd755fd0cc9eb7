"""Receiving webhooks: ``cueapi.webhooks.parse`` and its ``Delivery``, the replay stores, and the
Flask and FastAPI integrations, served for real on loopback (werkzeug; uvicorn on a pre-bound
socket) and fed REAL deliveries from an in-process ``cueapi serve``. Requests the server really
sent are captured by a plain receiver and sent again to the receivers under test — as is, with the
body changed, re-signed at other times, with other secrets — to see each refusal and its reason.

(No ``from __future__ import annotations`` here: FastAPI reads the route annotations, which name
dependencies made inside the test functions.)"""

import asyncio
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any

import cueapi
import cueapi.fastapi
import cueapi.flask
import httpx
import pytest
import uvicorn
from cueapi import _cueapi as native
from cueapi.exceptions import ValidationError, WebhookVerificationError
from cueapi.webhooks import REASONS, Delivery, MemorySeen, SeenStore, SqliteSeen, parse
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from flask import Flask
from flask import Response as FlaskResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.serving import make_server

from tests.conftest import Received, Receiver, Server, start_server, wait_for

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = ["flask", "fastapi-sync", "fastapi-async"]
OTHER_SECRET = "whsec_" + "cd" * 32
# Headers an HTTP client sets itself; a captured request is sent again without them.
HOP = {"host", "content-length", "connection", "accept-encoding", "accept"}


# -- receivers under test, served for real ---------------------------------------------------------


@dataclasses.dataclass
class Hook:
    """A receiver app on loopback. Its view records each Delivery (and the URL variable it was
    called with) and answers: 500 for an attempt up to ``payload["fail_attempts"]``, the inline
    outcome ``delivery.outcome(**payload["outcome"])`` when asked, else ``{"status": "received"}``."""

    url: str
    got: list[Delivery] = dataclasses.field(default_factory=list)
    tenants: list[str] = dataclasses.field(default_factory=list)

    def answer(self, delivery: Delivery, tenant: str) -> tuple[int, dict[str, Any]]:
        self.got.append(delivery)
        self.tenants.append(tenant)
        if delivery.attempt <= delivery.payload.get("fail_attempts", 0):
            return 500, {"error": "failing on purpose"}
        if "outcome" in delivery.payload:
            return 200, delivery.outcome(**delivery.payload["outcome"])
        return 200, {"status": "received"}

    def post(self, body: bytes, headers: dict[str, str], tenant: str = "acme") -> httpx.Response:
        """Sends a request as captured (minus the hop headers) to this receiver."""
        sent = {k: v for k, v in headers.items() if k.lower() not in HOP}
        return httpx.post(f"{self.url}/hook/{tenant}", content=body, headers=sent, timeout=30)

    def wait(self, n: int) -> list[Delivery]:
        return wait_for(lambda: len(self.got) >= n and list(self.got), what=f"{n} deliveries at {self.url}")


@contextmanager
def serve_flask(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def serve_asgi(app: FastAPI) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="uvicorn to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def receiver_for(kind: str, secret: Any, **options: Any) -> Iterator[Hook]:
    """A Hook served by Flask, or by FastAPI with a sync or an async route."""
    if kind == "flask":
        app = Flask(f"receiver-{id(options)}")
        hook_box: list[Hook] = []

        @app.post("/hook/<tenant>")
        @cueapi.flask.webhook(secret, **options)
        def receive(delivery: Delivery, tenant: str) -> Any:
            status, body = hook_box[0].answer(delivery, tenant)
            return body, status

        assert app.view_functions["receive"] is receive  # functools.wraps: the endpoint keeps its name
        with serve_flask(app) as url:
            hook_box.append(Hook(url))
            yield hook_box[0]
        return

    api = cueapi.fastapi.install(FastAPI())
    verified = cueapi.fastapi.webhook(secret, **options)
    box: list[Hook] = []
    if kind == "fastapi-async":

        @api.post("/hook/{tenant}")
        async def receive_async(tenant: str, delivery: Annotated[Delivery, Depends(verified)]) -> Any:
            status, body = box[0].answer(delivery, tenant)
            return body if status == 200 else JSONResponse(body, status_code=status)

    else:

        @api.post("/hook/{tenant}")
        def receive_sync(tenant: str, delivery: Annotated[Delivery, Depends(verified)]) -> Any:
            status, body = box[0].answer(delivery, tenant)
            return body if status == 200 else JSONResponse(body, status_code=status)

    with serve_asgi(api) as url:
        box.append(Hook(url))
        yield box[0]


@pytest.fixture(params=FRAMEWORKS)
def hooks(request: pytest.FixtureRequest) -> Iterator[Callable[..., Hook]]:
    """Makes receivers of one framework: ``hooks(secret, seen=..., tolerance=...)``."""
    with ExitStack() as stack:
        yield lambda secret, **options: stack.enter_context(receiver_for(request.param, secret, **options))


# -- a live server and the requests it really sends -------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("receivers") / "server.db")
    yield s
    s.app.close()


@pytest.fixture(scope="module")
def catcher() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def cue(server: Server, url: str, **fields: Any) -> dict[str, Any]:
    body = {
        "name": fields.pop("name", f"sync-{time.monotonic_ns()}"),
        "schedule": {"type": "recurring", "cron": "0 2 * * *"},
        "callback": {"url": url},
        "payload": fields.pop("payload", {"task": "sync", "note": "naïve ☃"}),
        **fields,
    }
    return server.cue(**body)


def fire(server: Server, cue_id: str) -> str:
    r = server.call("POST", f"/v1/cues/{cue_id}/fire")
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def capture(server: Server, catcher: Receiver, **fields: Any) -> Received:
    """A delivery as the server really sent it, caught by a plain receiver."""
    execution_id = fire(server, cue(server, catcher.url + "/capture", **fields)["id"])
    return wait_for(
        lambda: next(
            (r for r in catcher.requests if r.headers["x-cueapi-execution-id"] == execution_id), None
        ),
        what=f"the delivery of {execution_id}",
    )


def settled(server: Server, execution_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: (
            (e := server.execution(execution_id))["status"] not in ("pending", "delivering", "retrying") and e
        ),
        what=f"execution {execution_id} to settle",
    )


def without_standard(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if not k.startswith("webhook-")}


@pytest.fixture(scope="module")
def captured(srv: Server, catcher: Receiver) -> dict[str, tuple[bytes, dict[str, str]]]:
    """For each scheme, a real delivery's body and headers carrying that scheme: all headers
    (Standard Webhooks wins), the v1 cue's without webhook-*, the sha256 cue's without webhook-*."""
    v1 = capture(srv, catcher)
    sha = capture(srv, catcher, delivery={"signature_scheme": "sha256"})
    assert v1.headers["x-cueapi-signature"].startswith("v1=")
    assert sha.headers["x-cueapi-signature"].startswith("sha256=")
    return {
        "standard": (v1.body, v1.headers),
        "v1": (v1.body, without_standard(v1.headers)),
        "sha256": (sha.body, without_standard(sha.headers)),
    }


def signed(scheme: str, secret: str, body: bytes, ts: int, msg_id: str = "msg_1") -> dict[str, str]:
    """Headers signing ``body`` in ``scheme`` at ``ts``, made with the server's own signers."""
    h = {"Content-Type": "application/json"}
    if scheme == "v1":
        return {**h, "X-CueAPI-Signature": native.sign_v1(secret, ts, body), "X-CueAPI-Timestamp": str(ts)}
    if scheme == "sha256":
        return {**h, "X-CueAPI-Signature": native.sign_sha256(secret, body), "X-CueAPI-Timestamp": str(ts)}
    return {
        **h,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": native.sign_standard(secret, msg_id, ts, body),
    }


def refused(response: httpx.Response, reason: str) -> dict[str, Any]:
    """A 401 with exactly the documented body."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == "invalid_signature" and body["error"]["reason"] == reason, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return dict(body)


# -- every scheme, every refusal, every framework -------------------------------------------------


@pytest.mark.parametrize("scheme", ["standard", "v1", "sha256"])
def test_each_scheme_accepted_and_refused_for_its_reason(
    hooks: Callable[..., Hook], srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]], scheme: str
) -> None:
    body, headers = captured[scheme]
    # sha256 signs no time: a receiver takes it only when it asks for it.
    options = {"allow_sha256": True} if scheme == "sha256" else {}
    hook = hooks(srv.secret, **options)
    sent = json.loads(body)
    if scheme == "sha256":
        refused(hooks(srv.secret).post(body, headers), "scheme_not_allowed")

    # As the server sent it: the view gets the Delivery, read from the signed body.
    r = hook.post(body, headers, tenant="acme")
    assert r.status_code == 200 and r.json() == {"status": "received"}, r.text
    (d,) = hook.got
    assert hook.tenants == ["acme"]  # URL variables still reach the view
    assert d.scheme == scheme and d.replayed is False
    assert (d.execution_id, d.cue_id, d.name, d.attempt, d.payload) == (
        sent["execution_id"],
        sent["cue_id"],
        sent["name"],
        1,
        {"task": "sync", "note": "naïve ☃"},
    )
    assert d.scheduled_for == datetime.fromisoformat(sent["scheduled_for"])
    assert d.scheduled_for.tzinfo is timezone.utc
    assert d.idempotency_key == headers.get("webhook-id", headers["x-cueapi-idempotency-key"])
    assert d.raw_body == body and d.headers["x-cueapi-execution-id"] == sent["execution_id"]
    if scheme == "sha256":
        assert d.timestamp is None  # sha256 signs no time
    else:
        stamp = headers["webhook-timestamp" if scheme == "standard" else "x-cueapi-timestamp"]
        assert d.timestamp == int(stamp) and abs(d.timestamp - time.time()) < 300

    # The body changed by one byte, the signature kept: refused, and the view never runs.
    tampered = body.replace(b'"attempt": 1', b'"attempt": 2')
    assert tampered != body
    refused(hook.post(tampered, headers), "bad_signature")
    # Signed with another secret.
    wrong = hooks(OTHER_SECRET, **options)
    refused(wrong.post(body, headers), "bad_signature")
    # No signature at all.
    bare = {k: v for k, v in headers.items() if k not in ("x-cueapi-signature", "webhook-signature")}
    refused(hook.post(body, bare), "missing_signature")

    # Re-signed by us: now accepted; 1000 s ago stale; 1000 s ahead future (sha256: no time).
    now = int(time.time())
    assert hook.post(body, signed(scheme, srv.secret, body, now)).status_code == 200
    for ts, reason in ((now - 1000, "stale"), (now + 1000, "future")):
        r = hook.post(body, signed(scheme, srv.secret, body, ts))
        if scheme == "sha256":
            assert r.status_code == 200, r.text
        else:
            refused(r, reason)
    assert not wrong.got
    if scheme == "sha256":  # the X-CueAPI-Timestamp beside it is not signed, so not checked
        assert len(hook.got) == 4 and all(d.timestamp is None for d in hook.got)
    else:
        assert len(hook.got) == 2


def test_real_deliveries_reach_the_view(hooks: Callable[..., Hook], srv: Server) -> None:
    hook = hooks(srv.secret)
    ids = [
        fire(srv, cue(srv, hook.url + "/hook/acme")["id"]),
        fire(srv, cue(srv, hook.url + "/hook/beta", delivery={"signature_scheme": "sha256"})["id"]),
    ]
    got = {d.execution_id: d for d in hook.wait(2)}
    assert set(got) == set(ids) and sorted(hook.tenants) == ["acme", "beta"]
    for execution_id in ids:
        e = settled(srv, execution_id)
        assert e["status"] == "success" and e["http_status"] == 200, e
        d = got[execution_id]
        # Standard Webhooks headers come with every delivery (sha256 cues too), and win.
        assert d.scheme == "standard" and d.attempt == 1 and d.cue_id == e["cue_id"]
        assert d.idempotency_key == e["idempotency_key"] and d.name == e["cue_name"]
        assert d.scheduled_for == datetime.fromisoformat(e["scheduled_for"].replace("Z", "+00:00"))
        assert d.payload == e["payload"]


def test_inline_outcome_is_recorded(hooks: Callable[..., Hook], srv: Server) -> None:
    hook = hooks(srv.secret)
    good = {
        "success": True,
        "result": "Synced 847 records",
        "external_id": "batch_20260324_002",
        "result_type": "data_sync",
        "summary": "847 rows",
        "metadata": {"records_synced": 847},
        "artifacts": [{"name": "report.csv"}],
        "result_url": "https://example.com/batches/2",
    }
    ok_id = fire(srv, cue(srv, hook.url + "/hook/acme", payload={"outcome": good})["id"])
    long_id = fire(srv, cue(srv, hook.url + "/hook/acme", payload={"outcome": {"result": "x" * 5000}})["id"])
    bad_id = fire(
        srv, cue(srv, hook.url + "/hook/acme", payload={"outcome": {"success": False, "error": "boom"}})["id"]
    )

    ok = wait_for(lambda: (e := srv.execution(ok_id))["outcome_state"] and e, what="the inline outcome")
    assert ok["outcome_state"] == "reported_success" and ok["status"] == "success"
    outcome = ok["outcome"]
    assert {k: outcome[k] for k in good} == good
    long = wait_for(lambda: (e := srv.execution(long_id))["outcome_state"] and e, what="the long outcome")
    # Cut to what the server keeps rather than dropped by it.
    assert long["outcome"]["result"] == "x" * 1999 + "…"
    bad = wait_for(lambda: (e := srv.execution(bad_id))["outcome_state"] and e, what="the failure")
    assert bad["outcome_state"] == "reported_failure"
    assert bad["outcome"]["success"] is False and bad["outcome"]["error"] == "boom"


def test_rotated_secret(
    hooks: Callable[..., Hook], srv: Server, catcher: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, old = srv.register(f"rotate-{time.monotonic_ns()}@example.com")
    user = Server(srv.app, srv.url, key, old, srv.db)
    before = capture(user, catcher)
    r = user.call("POST", "/v1/auth/webhook-secret/regenerate", headers={"X-Confirm-Destructive": "true"})
    assert r.status_code == 200, r.text
    new = r.json()["webhook_secret"]
    assert new != old
    after = capture(user, catcher)

    both = hooks([new, old])
    for req in (before, after):
        for headers in (req.headers, without_standard(req.headers)):
            assert both.post(req.body, headers).status_code == 200
    assert len(both.got) == 4
    # A real delivery after the rotation, straight to the receiver that knows both.
    fired = fire(user, cue(user, both.url + "/hook/acme")["id"])
    assert settled(user, fired)["status"] == "success"
    assert both.wait(5)[-1].execution_id == fired

    only_new, only_old = hooks(new), hooks(old)
    refused(only_new.post(before.body, before.headers), "bad_signature")
    assert only_new.post(after.body, after.headers).status_code == 200
    refused(only_old.post(after.body, after.headers), "bad_signature")

    # The environment variable may hold both, separated by a comma.
    monkeypatch.setenv("CUEAPI_WEBHOOK_SECRET", f"{new}, {old}")
    from_env = hooks(None)
    assert from_env.post(before.body, before.headers).status_code == 200
    assert from_env.post(after.body, after.headers).status_code == 200


def test_secret_from_the_environment(
    hooks: Callable[..., Hook],
    srv: Server,
    captured: dict[str, tuple[bytes, dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body, headers = captured["standard"]
    monkeypatch.delenv("CUEAPI_WEBHOOK_SECRET", raising=False)
    hook = hooks(None)
    # Unset: nothing is accepted; a clear configuration error, not a crash (the server retries).
    r = hook.post(body, headers)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "webhook_secret_missing"
    assert "CUEAPI_WEBHOOK_SECRET" in r.json()["error"]["message"]
    monkeypatch.setenv("CUEAPI_WEBHOOK_SECRET", OTHER_SECRET)
    refused(hook.post(body, headers), "bad_signature")
    monkeypatch.setenv("CUEAPI_WEBHOOK_SECRET", srv.secret)  # read at each request
    assert hook.post(body, headers).status_code == 200
    assert len(hook.got) == 1


@pytest.mark.parametrize("bad", ["", [], [""], b"whsec_x", 42, [f"{'whsec_' + 'ab' * 32}\n"]])
def test_a_bad_secret_fails_where_the_receiver_is_declared(bad: Any) -> None:
    with pytest.raises(ValidationError):
        cueapi.flask.webhook(bad)
    with pytest.raises(ValidationError):
        cueapi.fastapi.webhook(bad)
    with pytest.raises(ValueError):  # ValidationError is a ValueError
        cueapi.flask.webhook("whsec_x", tolerance=-1)
    with pytest.raises(ValidationError):
        cueapi.fastapi.webhook("whsec_x", seen=object())  # type: ignore[arg-type]


def test_fastapi_without_install_still_refuses(
    srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]
) -> None:
    api = FastAPI()
    verified = cueapi.fastapi.webhook(srv.secret)

    @api.post("/hook/{tenant}")
    async def receive(tenant: str, delivery: Annotated[Delivery, Depends(verified)]) -> dict[str, str]:
        return {"execution_id": delivery.execution_id}

    body, headers = captured["v1"]
    with serve_asgi(api) as url:
        hook = Hook(url)
        ok = hook.post(body, headers)
        assert ok.json() == {"execution_id": json.loads(body)["execution_id"]}
        r = hook.post(body.replace(b'"attempt": 1', b'"attempt": 9'), headers)
    # FastAPI's own handler wraps the same body under "detail".
    assert r.status_code == 401 and r.json()["detail"]["error"]["reason"] == "bad_signature"


def test_flask_async_view(srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    # Flask serves async views only with asgiref (flask[async]), not installed here: the wrapped
    # view is run in a real request context on an event loop of its own, as Flask would run it.
    body, headers = captured["standard"]
    app = Flask("async-receiver")
    got: list[Delivery] = []

    @cueapi.flask.webhook(srv.secret)
    async def receive(delivery: Delivery, tenant: str) -> dict[str, str]:
        await asyncio.sleep(0)
        got.append(delivery)
        return {"tenant": tenant}

    with app.test_request_context("/hook/acme", method="POST", data=body, headers=headers):
        assert asyncio.run(receive(tenant="acme")) == {"tenant": "acme"}
    with app.test_request_context("/hook/acme", method="POST", data=body[:-1], headers=headers):
        answer = asyncio.run(receive(tenant="acme"))
    assert isinstance(answer, FlaskResponse)
    assert answer.status_code == 401 and answer.get_json()["error"]["reason"] == "bad_signature"
    assert [d.execution_id for d in got] == [json.loads(body)["execution_id"]]


# -- replays -----------------------------------------------------------------------------------------


def test_replayed_request_is_flagged_not_refused(
    hooks: Callable[..., Hook], srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]
) -> None:
    body, headers = captured["standard"]
    hook = hooks(srv.secret, seen=MemorySeen())
    # A forged copy is refused before it is recorded: it does not make the real one a replay.
    refused(hook.post(body + b"\n", {**headers, "webhook-signature": "v1,AAAA"}), "bad_signature")
    assert hook.post(body, headers).status_code == 200
    assert hook.post(body, headers).status_code == 200  # answered as the first was
    # Stripping the Standard headers to fall back on v1 does not hide it either.
    assert hook.post(body, without_standard(headers)).status_code == 200
    assert [d.replayed for d in hook.got] == [False, True, True]
    assert len({d.replay_key for d in hook.got}) == 1


def test_sqlite_seen_is_shared_by_receivers_on_one_file(
    hooks: Callable[..., Hook], srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]], tmp_path: Path
) -> None:
    body, headers = captured["v1"]
    with SqliteSeen(tmp_path / "seen.db") as one, SqliteSeen(tmp_path / "seen.db") as two:
        first, second = hooks(srv.secret, seen=one), hooks(srv.secret, seen=two)
        assert first.post(body, headers).status_code == 200
        assert second.post(body, headers).status_code == 200
        assert first.post(body, headers).status_code == 200
        assert [d.replayed for d in first.got + second.got] == [False, True, True]


def test_a_retry_is_a_new_attempt_not_a_replay(tmp_path: Path, now_clock: cueapi.ManualClock) -> None:
    server = start_server(tmp_path / "retry.db", now_clock)
    try:
        store = MemorySeen()
        with receiver_for("flask", server.secret, seen=store) as hook:
            c = cue(
                server,
                hook.url + "/hook/acme",
                payload={"fail_attempts": 1},
                retry={"max_attempts": 1, "backoff_minutes": [1]},
            )
            execution_id = fire(server, c["id"])
            hook.wait(1)
            wait_for(lambda: server.execution(execution_id)["status"] == "retrying", what="the retry")
            now_clock.advance(60)
            first, second = hook.wait(2)
            assert settled(server, execution_id)["status"] == "success"
        assert (first.attempt, second.attempt) == (1, 2)
        assert first.execution_id == second.execution_id == execution_id
        assert first.idempotency_key == second.idempotency_key  # one occurrence...
        assert (first.replayed, second.replayed) == (False, False)  # ...but the retry is legitimate
        # Either attempt sent again is a replay.
        for d in (first, second):
            assert parse(d.raw_body, d.headers, server.secret, seen=store).replayed is True
    finally:
        server.app.close()


def test_idempotency_key_fallback_matches_the_server(tmp_path: Path, now_clock: cueapi.ManualClock) -> None:
    server = start_server(tmp_path / "tick.db", now_clock)
    try:
        catcher = Receiver()
        try:
            at = now_clock.now() + timedelta(seconds=60)
            c = server.cue(
                name="once",
                schedule={"type": "once", "at": at.isoformat()},
                callback={"url": catcher.url},
            )
            now_clock.advance(60)
            (req,) = catcher.wait(1)
        finally:
            catcher.close()
        execution = settled(server, req.headers["x-cueapi-execution-id"])
    finally:
        server.app.close()
    headers = {k: v for k, v in without_standard(req.headers).items() if k != "x-cueapi-idempotency-key"}
    d = parse(req.body, headers, server.secret)
    ms = int(at.timestamp() * 1000)
    assert d.idempotency_key == f"{c['id']}:{ms}" == execution["idempotency_key"]


def test_memory_seen_is_bounded_expires_and_atomic() -> None:
    now = [0.0]
    seen = MemorySeen(3, ttl=10, clock=lambda: now[0])
    assert isinstance(seen, SeenStore)
    assert [seen.seen(k) for k in "abca"] == [False, False, False, True]
    seen.seen("d")  # a fourth key: the oldest, "a", is forgotten
    assert len(seen) == 3 and seen.seen("a") is False
    now[0] = 10.0  # everything seen at 0 has expired
    assert seen.seen("b") is False and seen.seen("b") is True

    # Many threads racing on the same keys: each key is new exactly once.
    race = MemorySeen()
    fresh: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def mark() -> None:
        start.wait()
        for i in range(500):
            if not race.seen(f"k{i}"):
                with lock:
                    fresh.append(f"k{i}")

    threads = [threading.Thread(target=mark) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(fresh) == sorted(f"k{i}" for i in range(500))


def test_sqlite_seen_expires_and_prunes(tmp_path: Path) -> None:
    now = [1_000.0]
    with SqliteSeen(tmp_path / "seen.db", ttl=100, clock=lambda: now[0]) as seen:
        assert [seen.seen(k) for k in "aba"] == [False, False, True]
        now[0] += 100  # a and b expire
        assert seen.seen("a") is False and seen.seen("a") is True
        assert len(seen) == 1
    with SqliteSeen(tmp_path / "seen.db", ttl=100, clock=lambda: now[0]) as again:
        assert again.seen("a") is True  # kept in the file
        rows = again._connection().execute("SELECT key FROM cueapi_seen").fetchall()
    assert rows == [("a",)]  # the expired b was pruned
    with pytest.raises(ValidationError):
        SqliteSeen(tmp_path / "x.db", ttl=0)


RACER = """
import sys
from cueapi.webhooks import SqliteSeen
seen = SqliteSeen(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # all start marking together
print(" ".join(k for k in (f"k{i}" for i in range(300)) if not seen.seen(k)))
seen.close()
"""


def test_sqlite_seen_is_atomic_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    fresh = [k for out in outs for k in out.split()]
    assert sorted(fresh) == sorted(f"k{i}" for i in range(300))  # each key new in exactly one process


# -- parse on its own: reasons, hostile input, programming errors ----------------------------------


def test_every_reason(srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    body, headers = captured["standard"]
    v1 = captured["v1"][1]
    now = int(time.time())
    secret = srv.secret
    not_delivery = b'{"attempt": 1}'
    cases: list[tuple[Any, Any, str]] = [
        (body, {}, "missing_signature"),
        (body, None, "missing_signature"),
        (body, {"X-CueAPI-Signature": "  "}, "missing_signature"),
        (body, _Exploding(), "missing_signature"),
        (body, "X-CueAPI-Signature: v1=00", "missing_signature"),
        (body, {**v1, "x-cueapi-signature": "v2=abc"}, "bad_signature"),
        (body, {**v1, "x-cueapi-signature": "v1=zz"}, "bad_signature"),
        (body, {**v1, "x-cueapi-signature": "v1=ünïcode"}, "bad_signature"),
        (body, {**headers, "webhook-signature": "v2,abc"}, "bad_signature"),
        (body, {**headers, "webhook-id": "other"}, "bad_signature"),
        (body.replace(b'"attempt": 1', b'"attempt": 2'), v1, "bad_signature"),
        (body, {k: v for k, v in v1.items() if k != "x-cueapi-timestamp"}, "bad_timestamp"),
        (body, {**v1, "x-cueapi-timestamp": "12.5"}, "bad_timestamp"),
        (body, {**v1, "x-cueapi-timestamp": "-5"}, "bad_timestamp"),
        (body, {**v1, "x-cueapi-timestamp": "١٢٣"}, "bad_timestamp"),  # digits, not ASCII ones
        (body, {**headers, "webhook-timestamp": ""}, "bad_timestamp"),
        (body, signed("v1", secret, body, now - 301), "stale"),
        (body, signed("standard", secret, body, 0), "stale"),
        (body, signed("v1", secret, body, now + 301), "future"),
        (body, {**v1, "x-cueapi-timestamp": "9" * 5000}, "future"),
        (not_delivery, signed("v1", secret, not_delivery, now), "bad_body"),
        (b"not json", signed("v1", secret, b"not json", now), "bad_body"),
        (body, signed("sha256", secret, body, now), "scheme_not_allowed"),
        (b"[1, 2]", signed("standard", secret, b"[1, 2]", now), "bad_body"),
        (None, v1, "bad_body"),
        ("\ud800", v1, "bad_body"),
    ]
    seen_reasons = set()
    for data, hdrs, reason in cases:
        with pytest.raises(WebhookVerificationError) as info:
            parse(data, hdrs, secret)
        assert info.value.reason == reason, (data, hdrs, info.value)
        assert info.value.message and isinstance(info.value, cueapi.CueAPIError)
        seen_reasons.add(reason)
    assert seen_reasons == REASONS  # every documented reason, and no other
    # At the edge of the window both ways, still accepted.
    assert parse(body, signed("v1", secret, body, now - 290), secret).scheme == "v1"
    assert parse(body, signed("standard", secret, body, now + 290, "m"), secret).idempotency_key == "m"


def test_reserialised_bodies_verify_and_are_read_as_signed(
    srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]
) -> None:
    body, headers = captured["standard"]
    again = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)  # a framework's form
    assert again.encode() != body
    for h in (headers, without_standard(headers)):
        d = parse(again, h, srv.secret)
        assert d.payload == {"task": "sync", "note": "naïve ☃"} and d.raw_body == again.encode()
    # A str body, a bytearray, a memoryview: the same delivery.
    assert parse(bytearray(body), headers, srv.secret) == parse(memoryview(body), headers, srv.secret)


@pytest.mark.parametrize(
    "bad", [None, "", [], [""], ["whsec_x", None], b"whsec_x", 3, {"a": "b"}, " whsec_x"]
)
def test_no_usable_secret_is_a_programming_error(
    bad: Any, captured: dict[str, tuple[bytes, dict[str, str]]]
) -> None:
    body, headers = captured["standard"]
    with pytest.raises(ValidationError) as info:
        parse(body, headers, bad)
    assert isinstance(info.value, ValueError) and "secret" in str(info.value)
    for options in ({"tolerance": -1}, {"tolerance": True}, {"tolerance": 1.5}, {"seen": "store"}):
        with pytest.raises(ValidationError):
            parse(body, headers, "whsec_x", **options)


SECRET = "whsec_" + "ab" * 32
NAMES = st.sampled_from(
    [
        "X-CueAPI-Signature",
        "x-cueapi-timestamp",
        "webhook-id",
        "Webhook-Timestamp",
        "webhook-signature",
        "x-cueapi-idempotency-key",
        "content-type",
    ]
)
JUNK = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.binary(max_size=40),
    st.integers(),
    st.sampled_from(["v1=", "sha256=", "v1,", "v1," + "A" * 44, "1" * 30, " 0017 ", "٣"]).flatmap(
        lambda p: st.text(max_size=70).map(lambda t: p + t)
    ),
    st.lists(st.text(max_size=5), max_size=2),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(st.binary(max_size=300), st.text(max_size=300), st.none(), st.integers()),
    headers=st.one_of(
        st.dictionaries(st.one_of(NAMES, st.text(max_size=20)), JUNK, max_size=8),
        st.lists(st.tuples(NAMES, st.text(max_size=30)), max_size=5).map(lambda pairs: _Pairs(pairs)),
        st.none(),
        st.text(max_size=10),
    ),
)
def test_parse_hostile_requests_only_raise_verification_errors(body: Any, headers: Any) -> None:
    try:
        parse(body, headers, SECRET)
    except WebhookVerificationError as e:
        assert e.reason in REASONS and e.message
    else:
        pytest.fail("an unsigned request verified")


class _Exploding:
    """Headers whose ``items()`` fails half way."""

    def items(self) -> Iterator[tuple[str, str]]:
        yield "content-type", "application/json"
        raise RuntimeError("hostile headers")


class _Pairs:
    """Headers as a list of pairs with duplicates, behind ``items()`` (as werkzeug's are)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return self.pairs


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
DELIVERY_KEYS = ["attempt", "cue_id", "execution_id", "name", "payload", "scheduled_for"]


@settings(max_examples=250, deadline=None)
@given(
    doc=st.one_of(
        JSON,
        st.fixed_dictionaries({k: JSON for k in DELIVERY_KEYS}),
        st.fixed_dictionaries(
            {
                "attempt": st.integers(min_value=-2, max_value=3),
                "cue_id": st.text(max_size=5),
                "execution_id": st.just("exec_1"),
                "name": st.text(max_size=5),
                "payload": st.one_of(JSON, st.dictionaries(st.text(max_size=5), JSON, max_size=3)),
                "scheduled_for": st.one_of(
                    st.datetimes(timezones=st.none() | st.just(timezone.utc) | st.timezones()).map(
                        lambda d: d.isoformat()
                    ),
                    st.text(max_size=30),
                ),
            }
        ),
    ),
    scheme=st.sampled_from(["v1", "sha256", "standard"]),
)
def test_parse_signed_hostile_bodies_are_deliveries_or_bad_body(doc: Any, scheme: str) -> None:
    body = json.dumps(doc, sort_keys=True).encode()
    try:
        d = parse(body, signed(scheme, SECRET, body, int(time.time())), SECRET, allow_sha256=True)
    except WebhookVerificationError as e:
        # A sha256= signature never verifies a body shaped like a v1 message ("<ts>." + rest, as
        # the number -0.0 is): that is the scheme-confusion rule, not a bad body.
        v1_shaped = re.match(rb"-?[0-9]+\.", body) is not None
        expected = "bad_signature" if scheme == "sha256" and v1_shaped else "bad_body"
        assert e.reason == expected, e
    else:
        assert isinstance(doc, dict) and d.execution_id == doc["execution_id"] and d.payload == doc["payload"]
        assert d.scheduled_for.utcoffset() == timedelta(0) and d.attempt >= 1


@settings(max_examples=300, deadline=None)
@given(offset=st.integers(min_value=-(10**12), max_value=10**12), tolerance=st.integers(0, 10**6))
def test_timestamps_are_classified(offset: int, tolerance: int) -> None:
    body = json.dumps(
        {
            "attempt": 1,
            "cue_id": "cue_1",
            "execution_id": "exec_1",
            "name": "n",
            "payload": {},
            "scheduled_for": "2026-01-01T00:00:00+00:00",
        },
        sort_keys=True,
    ).encode()
    now = int(time.time())
    ts = now + offset
    for scheme in ("v1", "standard"):
        headers = (
            signed(scheme, SECRET, body, ts)
            if ts >= 0
            else {
                **signed(scheme, SECRET, body, 0),
                "X-CueAPI-Timestamp": str(ts),
                "webhook-timestamp": str(ts),
            }
        )
        try:
            d = parse(body, headers, SECRET, tolerance=tolerance)
        except WebhookVerificationError as e:
            if ts < 0:
                assert e.reason == "bad_timestamp"
            elif ts < time.time() - tolerance - 2:
                assert e.reason == "stale"
            elif ts > time.time() + tolerance + 2:
                assert e.reason == "future"
            else:  # within a second or two of the edge while the clock ticked
                assert e.reason in ("stale", "future")
        else:
            assert abs(offset) <= tolerance + 2 and d.timestamp == ts


def test_delivery_is_frozen_and_hashable(
    captured: dict[str, tuple[bytes, dict[str, str]]], srv: Server
) -> None:
    body, headers = captured["standard"]
    d = parse(body, headers, srv.secret)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.attempt = 2  # type: ignore[misc]
    assert {d: 1}[parse(body, headers, srv.secret)] == 1
    assert "raw_body" not in repr(d) and d.execution_id in repr(d)


# -- answering: outcome(), report(), evidence() -------------------------------------------------


def _delivery(srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]) -> Delivery:
    body, headers = captured["standard"]
    return parse(body, headers, srv.secret)


def test_outcome_body(srv: Server, captured: dict[str, tuple[bytes, dict[str, str]]]) -> None:
    d = _delivery(srv, captured)
    assert d.outcome() == {"success": True}
    assert d.outcome(False, error="boom", external_id=None) == {"success": False, "error": "boom"}
    body = d.outcome(result="r" * 2001, summary="s" * 501, metadata={"n": 1}, artifacts=({"a": 1},))
    assert body["result"] == "r" * 1999 + "…" and body["summary"] == "s" * 499 + "…"
    assert body["metadata"] == {"n": 1} and body["artifacts"] == [{"a": 1}]
    refusals: list[tuple[dict[str, Any], str | None]] = [
        ({"success": "yes"}, "success"),
        ({"external_id": "e" * 501}, "external_id"),
        ({"result_ref": "e" * 501}, "result_ref"),
        ({"result_type": "t" * 101}, "result_type"),
        ({"result_url": "ftp://example.com/x"}, "result_url"),
        ({"result_url": "https://example.com/" + "x" * 2083}, "result_url"),
        ({"result": 42}, "result"),
        ({"metadata": ["not", "a", "mapping"]}, "metadata"),
        ({"artifacts": "not a list"}, "artifacts"),
        ({"metadata": {"x": float("nan")}}, None),
        ({"metadata": {"x": object()}}, None),
        # Metadata has its own limit (the engine's, as on the outcome route) ...
        ({"metadata": {"big": "x" * 10_240}}, "metadata"),
        # ... and an answer larger than the server reads is refused whole.
        ({"artifacts": ["x" * 70_000]}, None),
    ]
    for fields, name in refusals:
        with pytest.raises(ValidationError) as info:
            d.outcome(**fields)
        assert info.value.field == name, fields


def test_report_and_evidence_through_the_client(hooks: Callable[..., Hook], srv: Server) -> None:
    hook = hooks(srv.secret)
    first = fire(srv, cue(srv, hook.url + "/hook/acme")["id"])
    second = fire(srv, cue(srv, hook.url + "/hook/acme")["id"])
    got = {d.execution_id: d for d in hook.wait(2)}
    for execution_id in (first, second):
        assert settled(srv, execution_id)["outcome_state"] is None  # answered, no outcome yet

    with cueapi.CueAPI(srv.key, base_url=srv.url) as client:
        answer = got[first].report(client, success=True, result="done later", external_id="job-1")
        assert answer["outcome_recorded"] is True
        got[first].evidence(client, result_url="https://example.com/job-1", summary="all rows")

    async def later() -> Any:
        async with cueapi.AsyncCueAPI(srv.key, base_url=srv.url) as client:
            answer = await got[second].areport(client, success=False, error="gave up")
            await got[second].aevidence(client, external_id="job-2", metadata={"tries": 3})
            return answer

    assert asyncio.run(later())["outcome_recorded"] is True
    one, two = srv.execution(first), srv.execution(second)
    assert one["outcome_state"] == "reported_success" and one["outcome"]["result"] == "done later"
    assert one["outcome"]["external_id"] == "job-1"
    assert (
        one["evidence"]["result_url"] == "https://example.com/job-1"
        and one["evidence"]["summary"] == "all rows"
    )
    assert two["outcome_state"] == "reported_failure" and two["outcome"]["error"] == "gave up"
    assert two["evidence"]["external_id"] == "job-2"


# -- packaging and examples --------------------------------------------------------------------------


def test_import_cueapi_imports_no_web_framework() -> None:
    code = (
        "import cueapi, cueapi.webhooks, sys; "
        "assert 'flask' not in sys.modules and 'fastapi' not in sys.modules "
        "and 'starlette' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    # And the integrations do import them: they are where the frameworks come in.
    code = "import cueapi.flask, cueapi.fastapi, sys; assert {'flask', 'fastapi'} <= {*sys.modules}"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("example", ["flask_receiver.py", "fastapi_receiver.py"])
def test_example_receives_a_real_delivery(example: str, srv: Server, tmp_path: Path) -> None:
    env = {**os.environ, "CUEAPI_WEBHOOK_SECRET": srv.secret, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "example.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / example), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
    try:
        found = wait_for(
            lambda: re.search(r"http://127\.0\.0\.1:(\d+)", log.read_text()) or proc.poll() is not None,
            timeout=30,
            what=f"{example} to listen",
        )
        assert isinstance(found, re.Match), log.read_text()
        url = found.group(0)
        c = cue(srv, url + "/sync", payload={"task": "sync_customer_data", "batch_size": 1000})
        execution_id = fire(srv, c["id"])
        e = wait_for(lambda: (x := srv.execution(execution_id))["outcome_state"] and x, what="the outcome")
        assert e["outcome_state"] == "reported_success", e
        assert (
            e["outcome"]["result"] == "Synced 1000 records"
            and e["outcome"]["external_id"] == e["idempotency_key"]
        )
        # A forged request is refused with the documented body.
        refused(
            httpx.post(url + "/sync", content=b"{}", headers={"X-CueAPI-Signature": "v1=00"}), "bad_timestamp"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
