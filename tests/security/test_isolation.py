"""Tenant isolation over every route of the route table (``GET /openapi.json``): a second user's
key on the first user's ids answers 404 and changes nothing, for every method and path; the routes
without ids show and touch only the caller's own. A route added without a case here fails the
test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Receiver, Server, start_server, wait_for

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}
CONFIRM = {"X-Confirm-Destructive": "true", "X-Worker-Id": "b-worker"}

# Routes that answer without a key hold nothing of a tenant's (checked below for leaks).
PUBLIC = {
    "GET /health",
    "GET /metrics",
    "GET /openapi.json",
    "GET /status",
    "GET /v1/info",
    "POST /v1/auth/register",
    "POST /v1/echo/{token}",
}
# The echo token is a capability shared on purpose: any user's key reads what arrived at a token
# (the official CLI's quickstart polls it with the key that made the cue).
SHARED = {"GET /v1/echo/{token}"}


class Tenant:
    def __init__(self, server: Server, key: str, secret: str) -> None:
        self.server, self.key, self.secret = server, key, secret

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return self.server.call(method, path, body, key=self.key, **kw)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        r = self.call(method, path, body)
        assert r.status_code < 300, (method, path, r.text)
        return r.json() if r.content else None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """User A with one of everything (a failed webhook cue and its alert, a worker cue with a
    waiting and a claimed execution, a worker); user B with nothing."""
    receiver = Receiver()
    receiver.answer = lambda _r: (500, {}, b"", 0.0)
    server = start_server(Path(tmp_path_factory.mktemp("iso")) / "iso.db")
    a = Tenant(server, server.key, server.secret)
    b_key, b_secret = server.register("b@example.com")
    b = Tenant(server, b_key, b_secret)
    try:
        hook = a.ok(
            "POST",
            "/v1/cues",
            {
                "name": "a-hook",
                "schedule": FAR,
                "callback": {"url": receiver.url + "/hook", "headers": {"X-A-Secret": "a-callback-secret"}},
                "retry": {"max_attempts": 0},
            },
        )
        failed = a.ok("POST", f"/v1/cues/{hook['id']}/fire", {})["id"]
        alert = wait_for(lambda: a.ok("GET", "/v1/alerts")["alerts"], 20, "A's alert")[0]["id"]
        a.ok("PATCH", "/v1/auth/me", {"alert_webhook_url": receiver.url + "/alerts"})
        work = a.ok(
            "POST",
            "/v1/cues",
            {"name": "a-work", "schedule": FAR, "transport": "worker", "payload": {"task": "t"}},
        )
        a.ok("POST", "/v1/worker/heartbeat", {"worker_id": "a-worker", "handlers": ["t"]})
        claimed = a.ok("POST", f"/v1/cues/{work['id']}/fire", {})["id"]
        a.ok("POST", f"/v1/executions/{claimed}/claim", {"worker_id": "a-worker"})
        waiting = a.ok("POST", f"/v1/cues/{work['id']}/fire", {})["id"]
        wait_for(lambda: a.ok("GET", f"/v1/executions/{failed}")["status"] == "failed", 20, "the failure")
        yield {
            "a": a,
            "b": b,
            "ids": {
                "cues": [hook["id"], work["id"]],
                "executions": [failed, claimed, waiting],
                "alerts": [alert],
                "workers": ["a-worker"],
            },
        }
    finally:
        server.app.close()
        receiver.close()


def snapshot(a: Tenant, ids: dict[str, list[str]]) -> dict[str, Any]:
    """Everything A can read, minus what moves with the clock alone."""
    out: dict[str, Any] = {
        "me": a.ok("GET", "/v1/auth/me"),
        "secret": a.ok("GET", "/v1/auth/webhook-secret"),
        "alert_secret": a.ok("GET", "/v1/auth/alert-webhook-secret"),
        "cues": a.ok("GET", "/v1/cues"),
        "executions": a.call("GET", "/v1/executions", params={"status": "all"}).json(),
        "alerts": a.ok("GET", "/v1/alerts"),
        "workers": a.ok("GET", "/v1/workers"),
    }
    for cue in ids["cues"]:
        out[cue] = a.ok("GET", f"/v1/cues/{cue}")
    for e in ids["executions"]:
        out[e] = a.ok("GET", f"/v1/executions/{e}")
    for al in ids["alerts"]:
        out[al] = a.ok("GET", f"/v1/alerts/{al}")
    return json.loads(json.dumps(out).replace('"stale"', '"active"'), object_hook=_steady)


def _steady(d: dict[str, Any]) -> dict[str, Any]:
    for moving in ("last_seen_at", "seconds_since_heartbeat", "lease_expires_at", "rate_limit", "updated"):
        d.pop(moving, None)
    return d


def example_body(op: dict[str, Any]) -> Any:
    content = op.get("requestBody", {}).get("content", {})
    return content.get("application/json", {}).get("example")


# A's ids each path template is tried with; bodies that are valid for the route, so that a 404 is
# about ownership and nothing else.
KIND = {"cues": "cues", "executions": "executions", "alerts": "alerts", "workers": "workers"}
BODIES: dict[str, Any] = {
    "PATCH /v1/cues/{id}": {"name": "taken-by-b"},
    "POST /v1/cues/{id}/fire": {},
    "POST /v1/executions/{id}/claim": {"worker_id": "b-worker"},
    "POST /v1/executions/{id}/heartbeat": {},
    "POST /v1/executions/{id}/outcome": {"success": True, "result": "written by b"},
    "PATCH /v1/executions/{id}/evidence": {"external_id": "b-evidence"},
}


def test_another_users_key_on_every_route_with_an_id_is_a_404_that_changes_nothing(
    world: dict[str, Any],
) -> None:
    a, b, ids = world["a"], world["b"], world["ids"]
    doc = b.server.call("GET", "/openapi.json", key=None).json()
    before = snapshot(a, ids)
    tried, wrong = 0, []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            route = f"{method.upper()} {path}"
            if route in PUBLIC or route in SHARED or "{" not in path:
                continue
            kind = KIND[path.split("/")[2]]
            body = BODIES.get(route, example_body(op))
            for target in ids[kind]:
                concrete = path.replace("{id}", target)
                r = b.call(method.upper(), concrete, body, headers=CONFIRM)
                tried += 1
                if r.status_code != 404 or r.json()["error"]["code"] not in {
                    "cue_not_found",
                    "execution_not_found",
                    "alert_not_found",
                    "worker_not_found",
                    "not_found",
                }:
                    wrong.append((route, target, r.status_code, r.text[:200]))
                for secret in (a.key, a.secret, "a-callback-secret", "owner@example.com"):
                    assert secret not in r.text, (route, r.text)
    assert wrong == []
    assert tried >= 35
    assert snapshot(a, ids) == before


def test_routes_without_ids_show_and_touch_only_the_callers_own(world: dict[str, Any]) -> None:
    a, b, ids = world["a"], world["b"], world["ids"]
    doc = b.server.call("GET", "/openapi.json", key=None).json()
    before = snapshot(a, ids)
    a_ids = [i for group in ids.values() for i in group if i != "a-worker"]
    leaks = (a.key, a.secret, "a-callback-secret", "owner@example.com", *a_ids)

    checks = {
        "GET /v1/alerts": lambda: b.ok("GET", "/v1/alerts")["alerts"] == [],
        "GET /v1/cues": lambda: b.ok("GET", "/v1/cues")["cues"] == [],
        "GET /v1/executions": lambda: (
            b.call("GET", "/v1/executions", params={"status": "all"}).json()["executions"] == []
        ),
        "GET /v1/executions/claimable": lambda: b.ok("GET", "/v1/executions/claimable")["executions"] == [],
        "POST /v1/executions/claim": lambda: (
            b.call("POST", "/v1/executions/claim", {"worker_id": "b-worker"}).status_code in {404, 409}
        ),
        # B may name its own worker as A named theirs (B's heartbeat above did): it never holds A's claim.
        "GET /v1/workers": lambda: ids["executions"][1] not in b.call("GET", "/v1/workers").text,
        "POST /v1/worker/heartbeat": lambda: (
            b.ok("POST", "/v1/worker/heartbeat", {"worker_id": "a-worker", "handlers": ["x"]}) is not None
        ),
        "POST /v1/cues/bulk-delete": lambda: (
            b.call("POST", "/v1/cues/bulk-delete", {"ids": ids["cues"]}, headers=CONFIRM).json()["deleted"]
            == []
        ),
        "POST /v1/cues": lambda: (
            b.call(
                "POST",
                "/v1/cues",
                {"name": "chain", "schedule": FAR, "transport": "worker", "on_success_fire": ids["cues"][0]},
            ).status_code
            == 422
        ),
        "GET /v1/usage": lambda: b.ok("GET", "/v1/usage") is not None,
        "GET /v1/auth/me": lambda: b.ok("GET", "/v1/auth/me")["email"] == "b@example.com",
        "PATCH /v1/auth/me": lambda: b.ok("PATCH", "/v1/auth/me", {"alert_webhook_url": ""}) is not None,
        "GET /v1/auth/webhook-secret": lambda: (
            b.ok("GET", "/v1/auth/webhook-secret")["webhook_secret"] == b.secret
        ),
        "GET /v1/auth/alert-webhook-secret": lambda: b.ok("GET", "/v1/auth/alert-webhook-secret") is not None,
        "POST /v1/auth/alert-webhook-secret/regenerate": lambda: (
            b.call("POST", "/v1/auth/alert-webhook-secret/regenerate", headers=CONFIRM).status_code == 200
        ),
        "POST /v1/auth/webhook-secret/regenerate": lambda: (
            b.call("POST", "/v1/auth/webhook-secret/regenerate", headers=CONFIRM).status_code == 200
        ),
    }
    missing = []
    for path, ops in doc["paths"].items():
        for method in ops:
            route = f"{method.upper()} {path}"
            if "{" in path or route in PUBLIC or route == "POST /v1/auth/key/regenerate":
                continue
            if route not in checks:
                missing.append(route)
                continue
            assert checks[route](), route
    assert missing == [], "routes with no isolation check"
    # Every list and account answer B gets, searched for anything of A's.
    for path in (
        "/v1/alerts",
        "/v1/cues",
        "/v1/executions?status=all",
        "/v1/workers",
        "/v1/usage",
        "/v1/auth/me",
    ):
        text = b.call("GET", path).text
        assert not [x for x in leaks if x in text], path
    # Public routes hold nothing of a tenant's either.
    for path in ("/health", "/metrics", "/status", "/v1/info", "/openapi.json"):
        text = b.server.call("GET", path, key=None).text
        assert not [x for x in leaks if x in text], path
    # B's key rotation last: it changes B's key only.
    r = b.call("POST", "/v1/auth/key/regenerate", headers=CONFIRM)
    assert r.status_code == 200 and r.json()["api_key"] not in (a.key, b.key)
    assert a.call("GET", "/v1/auth/me").status_code == 200
    assert snapshot(a, ids) == before
