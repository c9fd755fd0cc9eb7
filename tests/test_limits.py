"""Limits and defaults are defined once (src/limits.rs) and every face follows them: the outcome
route, the embedded App, the remote worker's reports, the inline-outcome helper, the OpenAPI
document, and the defaults of App.serve and `cueapi serve`."""

from __future__ import annotations

import inspect
import json
from typing import Any

import cueapi
from cueapi import _cueapi, _limits
from cueapi.handler import fit_metadata

from tests.conftest import Server, wait_for
from tests.test_server_api import fire, outcome, worker_cue

L = _cueapi.LIMITS


def test_the_python_names_are_the_engines_numbers() -> None:
    assert L["metadata_bytes"] == _limits.METADATA_BYTES
    assert dict(_limits.CUT_TEXT) == L["cut_text"] == {"result": 2000, "error": 2000, "summary": 500}
    assert dict(_limits.EVIDENCE_TEXT) == L["evidence_text"]
    assert L["worker_lease_ms"] == _limits.WORKER_LEASE_SECONDS * 1000
    assert L["max_delivery_timeout_ms"] == _limits.MAX_DELIVERY_TIMEOUT_SECONDS * 1000
    assert _limits.MAX_DELIVERIES_PER_TENANT <= _limits.MAX_DELIVERIES


def test_serve_defaults_come_from_the_engine() -> None:
    params = inspect.signature(cueapi.App.serve).parameters
    assert params["rate_limit_per_minute"].default == L["rate_limit_per_minute"]
    assert params["worker_lease_seconds"].default * 1000 == L["worker_lease_ms"]
    assert params["worker_timeout_seconds"].default * 1000 == L["worker_timeout_ms"]
    assert params["realert_seconds"].default * 1000 == L["realert_ms"]
    assert params["max_deliveries"].default == L["max_deliveries"]
    assert params["max_delivery_timeout_seconds"].default * 1000 == L["max_delivery_timeout_ms"]


def test_the_openapi_document_states_the_same_limits(server: Server) -> None:
    spec = server.call("GET", "/openapi.json", key=None).json()
    body = spec["paths"]["/v1/executions/{id}/outcome"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    props = schema["properties"]
    for field, n in L["evidence_text"].items():
        assert props[field]["maxLength"] == n, field
    assert str(L["metadata_bytes"]) in props["metadata"]["description"]


def _meta_of(size: int) -> dict[str, Any]:
    """Metadata whose canonical JSON is exactly ``size`` bytes."""
    m = {"k": ""}
    m["k"] = "x" * (size - len(_cueapi.canonical_json(json.dumps(m))))
    assert len(_cueapi.canonical_json(json.dumps(m)).encode()) == size
    return m


def test_the_outcome_route_takes_metadata_up_to_the_limit(server: Server) -> None:
    cue = worker_cue(server)
    at_limit = fire(server, cue["id"])["id"]
    assert outcome(server, at_limit, success=True, metadata=_meta_of(L["metadata_bytes"]))
    over = fire(server, cue["id"])["id"]
    big = _meta_of(L["metadata_bytes"] + 1)
    r = server.call("POST", f"/v1/executions/{over}/outcome", {"success": True, "metadata": big})
    assert r.status_code == 400 and r.json()["error"]["code"] == "metadata_too_large", r.text
    assert str(L["metadata_bytes"]) in r.json()["error"]["message"]
    assert server.execution(over)["outcome_state"] is None


def test_fit_metadata_keeps_what_fits_and_says_what_it_dropped() -> None:
    small = {"a": 1}
    assert fit_metadata(small) is small
    tb = "line\n" * 5_000
    fitted = fit_metadata({"exception_type": "E", "traceback": tb})
    assert fitted["exception_type"] == "E" and fitted["traceback"].startswith("…")
    assert fitted["traceback"].endswith(tb[-100:])
    dropped = fit_metadata({"blob": "x" * (L["metadata_bytes"] + 1)})
    assert list(dropped) == ["metadata_dropped"] and str(L["metadata_bytes"]) in dropped["metadata_dropped"]


def test_the_embedded_app_records_an_oversized_outcome_and_a_deep_traceback(tmp_path: Any) -> None:
    with cueapi.App(tmp_path / "app.db") as app:

        @app.cue("0 0 1 1 *")
        def big(ctx: cueapi.Context) -> cueapi.Outcome:
            return cueapi.Outcome(success=True, result="done", metadata={"blob": "x" * 20_000})

        def deep(n: int) -> None:
            if n == 0:
                raise RuntimeError("the bottom")
            deep(n - 1)

        @app.cue("0 0 1 1 *", retry={"max_attempts": 0})
        def crashes(ctx: cueapi.Context) -> None:
            deep(200)

        app.start()
        ran = {name: app.fire(name) for name in ("big", "crashes")}

        def done(name: str) -> cueapi.Execution | None:
            ex = app.execution(ran[name])
            return ex if ex.status in ("success", "failed") else None

        ok = wait_for(lambda: done("big"), what="big's run")
        assert ok.status == "success" and ok.outcome is not None and ok.outcome.result == "done"
        assert ok.outcome.metadata is not None and "metadata_dropped" in ok.outcome.metadata
        failed = wait_for(lambda: done("crashes"), what="crashes' run")
        assert failed.outcome is not None and failed.outcome.error == "RuntimeError: the bottom"
        meta = failed.outcome.metadata or {}
        assert meta["exception_type"] == "RuntimeError" and "the bottom" in meta["traceback"]
