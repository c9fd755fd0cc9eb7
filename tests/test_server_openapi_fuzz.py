"""Property-based fuzzing of `cueapi serve` against its own OpenAPI document.

A live server with one user and seeded data (worker and webhook cues, executions in several states,
an alert, a worker, an echo) is driven by schemathesis through every operation that
``GET /openapi.json`` lists, with inputs generated from the document (valid ones and invalid ones),
authenticated with the user's key. Every answer must be: not a 5xx, of a status the operation
documents, of a documented media type, and valid against the documented schema — error answers
included, whose schemas pin the error codes each status may carry.

Bounded and deterministic for CI: Hypothesis is derandomised (no example database, no shrinking) and
makes at most ``MAX_EXAMPLES`` cases per operation. Generated path ids would only ever reach the
404 branch, so half of them are swapped for ids of the seeded objects. The key rotation runs as a fresh user
each time (it revokes the key the other requests use).
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import Receiver, Server, start_server, wait_for

# Cases per operation: small for CI; CUEAPI_FUZZ_EXAMPLES=1000 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("CUEAPI_FUZZ_EXAMPLES", "50"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ECHO_TOKEN = "fuzz-echo-token-0001"
# The key rotation revokes the key every later request would use: it runs as a user of its own.
KEY_ROTATION = "POST /v1/auth/key/regenerate"
# Run last, in this order: they use up or remove what the others need (the seeded pending executions,
# workers and cues).
LAST = ["POST /v1/executions/claim", "DELETE /v1/workers/{id}", "DELETE /v1/cues/{id}"]


@dataclass
class Seeded:
    """A live server and the ids of what was made on it before fuzzing."""

    server: Server
    receiver: Receiver
    ids: dict[str, list[str]] = field(default_factory=dict)
    rotations: Iterator[int] = field(default_factory=itertools.count)
    # Statuses answered, by operation.
    answers: dict[str, collections.Counter[int]] = field(default_factory=dict)

    def ids_for(self, method: str, path: str) -> list[str]:
        """Ids worth putting in `{id}` / `{token}` of an operation."""
        if path.startswith("/v1/echo/"):
            return [ECHO_TOKEN]
        if path == "/v1/cues/{id}" and method.upper() == "DELETE":
            return self.ids["doomed_cues"]
        for prefix, kind in (
            ("/v1/cues/", "cues"),
            ("/v1/executions/", "executions"),
            ("/v1/alerts/", "alerts"),
            ("/v1/workers/", "workers"),
        ):
            if path.startswith(prefix):
                return self.ids[kind]
        return []


def _ok(r: httpx.Response, *status: int) -> dict[str, Any]:
    assert r.status_code in (status or (200,)), r.text
    return dict(r.json()) if r.content else {}


def seed(server: Server, receiver: Receiver) -> dict[str, list[str]]:
    """Makes something of every kind, in several states, and returns their ids."""
    call = server.call
    worker_cue = server.cue(
        name="fuzz-worker",
        transport="worker",
        schedule={"type": "recurring", "cron": "0 3 * * *", "timezone": "Europe/Paris"},
        payload={"task": "report"},
        retry={"max_attempts": 0},
        alerts={"consecutive_failures": 1},
        verification={"mode": "manual"},
    )
    hook_cue = server.cue(
        name="fuzz-webhook",
        schedule={"type": "interval", "every": "1h"},
        callback={"url": receiver.url + "/hook", "headers": {"X-Team": "fuzz"}},
        description="delivered to a local receiver",
    )
    once = server.cue(
        name="fuzz-once", transport="worker", schedule={"type": "once", "at": "2099-01-01T00:00:00Z"}
    )
    doomed = [
        server.cue(name=f"fuzz-doomed-{i}", transport="worker", schedule={"cron": "@daily"})["id"]
        for i in range(3)
    ]
    _ok(call("POST", "/v1/worker/heartbeat", {"worker_id": "worker-1", "handlers": ["report"]}))
    _ok(call("POST", "/v1/worker/heartbeat", {"worker_id": "fuzz-w2"}))
    fired = [_ok(call("POST", f"/v1/cues/{worker_cue['id']}/fire", {}))["id"] for _ in range(5)]
    pending, claimed, succeeded, failed, parked = fired
    for execution in (claimed, succeeded, failed, parked):
        _ok(call("POST", f"/v1/executions/{execution}/claim", {"worker_id": "worker-1"}))
    _ok(
        call(
            "POST",
            f"/v1/executions/{succeeded}/outcome",
            {"success": True, "result": "42 rows", "external_id": "run-42", "metadata": {"rows": 42}},
        )
    )
    _ok(call("PATCH", f"/v1/executions/{succeeded}/evidence", {"result_url": "https://example.com/r/42"}))
    _ok(call("POST", f"/v1/executions/{failed}/outcome", {"success": False, "error": "disk full"}))
    _ok(call("POST", f"/v1/executions/{parked}/outcome", {"success": True}))
    _ok(call("POST", f"/v1/executions/{parked}/verification-pending"))
    delivered = _ok(call("POST", f"/v1/cues/{hook_cue['id']}/fire", {"payload_override": {"n": 1}}))["id"]
    receiver.wait(1)
    wait_for(lambda: server.execution(delivered)["status"] != "pending", what="the webhook delivery")
    alerts = wait_for(lambda: _ok(call("GET", "/v1/alerts"))["alerts"], what="an alert")
    _ok(call("POST", f"/v1/echo/{ECHO_TOKEN}", {"hello": "fuzz"}, key=None))
    return {
        "cues": [worker_cue["id"], hook_cue["id"], once["id"]],
        "doomed_cues": doomed,
        "executions": [pending, claimed, succeeded, failed, parked, delivered],
        "alerts": [a["id"] for a in alerts],
        "workers": ["fuzz-w2", "worker-1"],
    }


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    server = start_server(Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db")
    receiver = Receiver()
    try:
        yield Seeded(server, receiver, seed(server, receiver))
    finally:
        server.app.close()
        receiver.close()


Operation = APIOperation[Any, Any, Any, Any]


def strategy(operation: Operation, ids: list[str]) -> st.SearchStrategy[tuple[Case[Any], str | None]]:
    """Cases for an operation (valid and invalid inputs, and the document's examples), each with a
    seeded id to put in its path, or None to keep the generated one."""
    cases = st.one_of(
        operation.as_strategy(GenerationMode("positive")),
        operation.as_strategy(GenerationMode("negative")),
        *operation.get_strategies_from_examples(),
    )
    return st.tuples(cases, st.one_of(st.none(), st.sampled_from(ids)) if ids else st.none())


def fuzz(operation: Operation, seeded: Seeded) -> None:
    """Runs one operation with generated inputs; raises on the first answer that breaks a check."""
    label = operation.label
    names = [n for n in ("id", "token") if "{" + n + "}" in operation.path]

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(strategy(operation, seeded.ids_for(operation.method, operation.path) if names else []))
    def run(drawn: tuple[Case[Any], str | None]) -> None:
        case, seeded_id = drawn
        if seeded_id is not None:
            case.path_parameters = {**(case.path_parameters or {}), names[0]: seeded_id}
        key = seeded.server.key
        if label == KEY_ROTATION:
            # The rotation revokes the key: it runs as a user of its own.
            key, _ = seeded.server.register(f"rotate-{next(seeded.rotations)}@example.com")
        response = case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS)
        seeded.answers.setdefault(label, collections.Counter())[response.status_code] += 1

    run()


def test_every_operation_answers_as_documented(seeded: Seeded) -> None:
    api = schemathesis.openapi.from_url(seeded.server.url + "/openapi.json")
    operations: list[Operation] = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), result.err()  # an operation schemathesis cannot read
        operations.append(result.ok())
    documented = [f"{m.upper()} {p}" for p, item in api.raw_schema["paths"].items() for m in item]
    # Every operation but the document itself (schemathesis leaves out the URL it loaded).
    assert sorted(o.label for o in operations) == sorted(set(documented) - {"GET /openapi.json"})
    failures: list[str] = []
    for operation in sorted(operations, key=lambda o: LAST.index(o.label) if o.label in LAST else -1):
        try:
            fuzz(operation, seeded)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # schemathesis reports failures as an exception group
            failures.append(f"{operation.label}:\n{e}")
    for label, counts in sorted(seeded.answers.items()):
        print(label, dict(sorted(counts.items())))
    # The success answers were checked too: every operation (seeded ids, document examples) got one.
    unhappy = [label for label, counts in seeded.answers.items() if not any(200 <= c < 300 for c in counts)]
    assert not failures and not unhappy, (
        f"never a 2xx: {unhappy}; "
        + f"{len(failures)} operation(s) broke their documentation:\n\n"
        + "\n\n".join(failures)
    )
