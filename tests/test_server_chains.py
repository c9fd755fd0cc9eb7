"""The hosted service's cue fields on `cueapi serve`: `catch_up` in its words, `on_success_fire`
chains (a success fires the next cue with `triggered_by: "chain"`; a failure does not; loops and
missing targets are refused), `required_payload_keys` and `require_payload_override` enforced when
a cue is fired by hand, and an idempotency key reused with another request refused."""

from __future__ import annotations

from typing import Any

import cueapi

from tests.conftest import Answer, Received, Receiver, Server, wait_for

FAR = {"type": "once", "at": "2099-01-01T00:00:00Z"}


def worker(s: Server, name: str, **fields: Any) -> dict[str, Any]:
    return s.cue(name=name, transport="worker", schedule=FAR, payload={"task": name}, **fields)


def fire(s: Server, cue: dict[str, Any], **body: Any) -> Any:
    return s.call("POST", f"/v1/cues/{cue['id']}/fire", body)


def run(s: Server, cue: dict[str, Any], success: bool = True) -> str:
    """Fires a worker cue, claims its execution and reports the outcome."""
    eid = fire(s, cue).json()["id"]
    assert s.call("POST", f"/v1/executions/{eid}/claim", {"worker_id": "w"}).status_code == 200
    r = s.call("POST", f"/v1/executions/{eid}/outcome", {"success": success, "result": "done"})
    assert r.status_code == 200, r.text
    return str(eid)


def chained_from(s: Server, cue: dict[str, Any]) -> list[dict[str, Any]]:
    got = s.call("GET", "/v1/executions", params={"cue_id": cue["id"], "triggered_by": "chain"})
    assert got.status_code == 200, got.text
    return list(got.json()["executions"])


# -- catch_up ----------------------------------------------------------------------------------------


def test_catch_up_speaks_the_hosted_vocabulary(server: Server) -> None:
    for given, shown in (
        ("run_once_if_missed", "run_once_if_missed"),
        ("skip_missed", "skip_missed"),
        ("replay_all", "replay_all"),
        ("all", "replay_all"),
        ({"policy": "skip", "max": 7}, "skip_missed"),
    ):
        cue = worker(server, f"c-{shown}-{len(str(given))}", catch_up=given)
        assert cue["catch_up"] == shown
        assert cue["catch_up_max"] == (7 if isinstance(given, dict) else 100)
    changed = server.call(
        "PATCH", f"/v1/cues/{cue['id']}", {"catch_up": "replay_all", "catch_up_max": 12}
    ).json()
    assert (changed["catch_up"], changed["catch_up_max"]) == ("replay_all", 12)
    before = server.call("GET", "/v1/cues").json()["total"]
    bad = server.call(
        "POST", "/v1/cues", {"name": "bad", "transport": "worker", "schedule": FAR, "catch_up": "whenever"}
    )
    assert bad.status_code == 422 and "catch_up" in bad.json()["error"]["message"]
    assert server.call("GET", "/v1/cues").json()["total"] == before
    # The official SDK at its head types catch_up as a string: our own model, typed the same way.
    assert cueapi.Cue.model_validate(changed).catch_up == "replay_all"


# -- on_success_fire ---------------------------------------------------------------------------------


def test_a_success_fires_the_next_cue_and_a_failure_does_not(server: Server) -> None:
    second = worker(server, "second")
    first = worker(server, "first", on_success_fire=second["id"])
    assert first["on_success_fire"] == second["id"]
    parent = run(server, first)
    (step,) = wait_for(lambda: chained_from(server, second), what="the chained execution")
    assert step["triggered_by"] == "chain" and step["chain_parent_id"] == parent and step["chain_depth"] == 1
    assert step["status"] == "pending" and step["payload"] == {"task": "second"}
    # The step is an execution like any other: it runs, and its own outcome is recorded.
    claimed = server.call("POST", "/v1/executions/claim", {"worker_id": "w", "task": "second"}).json()
    assert claimed["execution_id"] == step["id"] and claimed["triggered_by"] == "chain"
    # A failure does not chain.
    run(server, first, success=False)
    assert len(chained_from(server, second)) == 1


def test_webhook_success_chains_to_a_webhook_cue(server: Server, receiver: Receiver) -> None:
    def answer(req: Received) -> Answer:
        return 200, {"Content-Type": "application/json"}, b'{"success": true, "result": "ok"}', 0.0

    receiver.answer = answer
    hook = {"url": receiver.url + "/hook"}
    third = server.cue(name="third", schedule=FAR, callback=hook, payload={"step": 3})
    second = server.cue(
        name="second-hook", schedule=FAR, callback=hook, payload={"step": 2}, on_success_fire=third["id"]
    )
    first = server.cue(
        name="first-hook", schedule=FAR, callback=hook, payload={"step": 1}, on_success_fire=second["id"]
    )
    fire(server, first)
    requests = receiver.wait(3)
    assert [r.json()["payload"]["step"] for r in requests] == [1, 2, 3]
    (last,) = wait_for(lambda: chained_from(server, third), what="the last step")
    assert last["chain_depth"] == 2
    assert wait_for(lambda: server.execution(last["id"])["status"] == "success")


def test_chain_targets_are_checked(server: Server, other: str) -> None:
    a = worker(server, "a")
    b = worker(server, "b", on_success_fire=a["id"])
    before = server.call("GET", "/v1/cues").json()["total"]
    # A loop, direct or through others.
    loop = server.call("PATCH", f"/v1/cues/{a['id']}", {"on_success_fire": b["id"]})
    assert loop.status_code == 422 and "loop" in loop.json()["error"]["message"], loop.text
    me = server.call("PATCH", f"/v1/cues/{a['id']}", {"on_success_fire": a["id"]})
    assert me.status_code == 422 and "loop" in me.json()["error"]["message"]
    # Missing, another user's, or not an id.
    theirs = server.call(
        "POST", "/v1/cues", {"name": "theirs", "transport": "worker", "schedule": FAR}, key=other
    ).json()
    for target in ("cue_doesnotexist", theirs["id"], "not-an-id"):
        r = server.call(
            "POST",
            "/v1/cues",
            {"name": "x", "transport": "worker", "schedule": FAR, "on_success_fire": target},
        )
        assert r.status_code == 422 and "on_success_fire" in r.json()["error"]["message"], r.text
    assert server.call("GET", "/v1/cues").json()["total"] == before
    assert server.call("GET", f"/v1/cues/{a['id']}").json()["on_success_fire"] is None
    # Clearing works; deleting a target clears what pointed at it.
    cleared = server.call("PATCH", f"/v1/cues/{b['id']}", {"on_success_fire": None}).json()
    assert cleared["on_success_fire"] is None
    c = worker(server, "c", on_success_fire=a["id"])
    assert server.call("DELETE", f"/v1/cues/{a['id']}").status_code == 204
    assert server.call("GET", f"/v1/cues/{c['id']}").json()["on_success_fire"] is None


def test_a_chain_step_that_cannot_run_is_recorded_with_its_reason(server: Server) -> None:
    paused = worker(server, "paused-target")
    server.call("PATCH", f"/v1/cues/{paused['id']}", {"status": "paused"})
    picky = worker(server, "picky-target", require_payload_override=True)
    for target in (paused, picky):
        src = worker(server, f"from-{target['name']}", on_success_fire=target["id"])
        run(server, src)
        (step,) = wait_for(lambda t=target: chained_from(server, t), what="the recorded step")  # type: ignore[misc]
        assert step["status"] == "skipped" and step["error_message"], step


# -- manual fires ------------------------------------------------------------------------------------


def test_required_payload_keys_and_override_are_enforced(server: Server) -> None:
    keyed = worker(server, "keyed", required_payload_keys=["customer_id", "region"])
    assert keyed["required_payload_keys"] == ["customer_id", "region"]
    missing = fire(server, keyed, payload_override={"customer_id": 7})
    assert missing.status_code == 400
    err = missing.json()["error"]
    assert err["code"] == "missing_payload_keys" and err["missing_keys"] == ["region"]
    assert fire(server, keyed, payload_override={"customer_id": 7, "region": "eu"}).status_code == 200
    strict = worker(server, "strict", require_payload_override=True)
    refused = fire(server, strict)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "payload_override_required"
    assert fire(server, strict, payload_override={"x": 1}).status_code == 200
    runs = server.call("GET", "/v1/executions", params={"cue_id": strict["id"]}).json()["total"]
    assert runs == 1
    # Fields the official CLI sends on update are kept.
    patched = server.call(
        "PATCH", f"/v1/cues/{strict['id']}", {"require_payload_override": False, "required_payload_keys": []}
    ).json()
    assert patched["require_payload_override"] is False and patched["required_payload_keys"] == []
    bad = server.call("PATCH", f"/v1/cues/{strict['id']}", {"required_payload_keys": "region"})
    assert bad.status_code == 422 and "required_payload_keys" in bad.json()["error"]["message"]


def test_an_idempotency_key_reused_with_another_request_is_a_conflict(server: Server) -> None:
    cue = worker(server, "keyed-fire")
    first = fire(server, cue, idempotency_key="k-1", payload_override={"n": 1})
    again = fire(server, cue, idempotency_key="k-1", payload_override={"n": 1})
    assert first.status_code == again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False
    other = fire(server, cue, idempotency_key="k-1", payload_override={"n": 2})
    assert other.status_code == 409
    err = other.json()["error"]
    assert err["code"] == "idempotency_key_conflict" and err["execution_id"] == first.json()["id"]
    assert server.call("GET", "/v1/executions", params={"cue_id": cue["id"]}).json()["total"] == 1
