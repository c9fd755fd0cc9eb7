"""`GET /openapi.json`: a valid OpenAPI 3.1 document, served without a key and never rate limited,
that lists exactly the routes the server answers, each with a summary and its error answers.
(tests/test_server_openapi_fuzz.py checks the answers themselves against it.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.conftest import Server, start_server

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(Path(tmp_path_factory.mktemp("openapi")) / "server.db")
    yield s
    s.app.close()


@pytest.fixture(scope="module")
def doc(live: Server) -> dict[str, Any]:
    r = live.call("GET", "/openapi.json", key=None)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield method, path, op


def concrete(path: str) -> str:
    """A documented path with its parameters filled in (an echo token of the valid form)."""
    return re.sub(r"\{token\}", "probe-token-000000", re.sub(r"\{id\}", "probe_id", path))


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["info"]["title"] == "cueapi"


def test_every_operation_has_an_id_a_summary_and_documented_errors(doc: dict[str, Any]) -> None:
    ops = list(operations(doc))
    assert len(ops) == 41
    ids = [op["operationId"] for _, _, op in ops]
    assert len(set(ids)) == len(ids)
    for method, path, op in ops:
        where = f"{method.upper()} {path}"
        assert op["summary"].strip(), where
        assert op["tags"], where
        errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
        assert errors, where
        for status, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            if (path, status) in (("/health", "503"), ("/status", "503")):
                continue  # degraded: the health answer itself, not an error envelope
            assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, where
            codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
            assert codes and all(f"`{c}`" in response["description"] for c in codes), where
        # What every route shares: bodies read before routing, keys, the limiter.
        assert "413" in op["responses"], where
        takes_key = op["security"] == [{"apiKey": []}]
        assert ("401" in op["responses"]) == takes_key, where
        exempt = path in ("/health", "/status", "/v1/info", "/metrics", "/openapi.json")
        assert ("429" in op["responses"]) != exempt, where
        # A worker's reports are spared by the limiter when the key is valid, and say so.
        report = (method, path) in (
            ("post", "/v1/executions/{id}/outcome"),
            ("post", "/v1/executions/{id}/heartbeat"),
            ("post", "/v1/worker/heartbeat"),
        )
        assert ("never refused by the rate limit" in op.get("description", "")) == report, where
    claimable = doc["paths"]["/v1/executions/claimable"]["get"]
    assert "live worker" in claimable["description"] and "Nothing is left out" in claimable["description"]
    public = sorted(f"{m.upper()} {p}" for m, p, op in ops if op["security"] == [])
    assert public == [
        "GET /health",
        "GET /metrics",
        "GET /openapi.json",
        "GET /status",
        "GET /v1/info",
        "POST /v1/auth/register",
        "POST /v1/echo/{token}",
    ]


def test_the_document_lists_exactly_the_routes_the_server_answers(live: Server, doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method in METHODS:
            r = live.call(method.upper(), concrete(path))
            code = r.json()["error"]["code"] if r.status_code >= 400 else None
            if method in item:
                # Answered by the route (a 4xx of its own at worst: the probe's id names nothing).
                assert code not in ("not_found", "method_not_allowed"), (method, path, r.text)
                assert r.status_code < 500, (method, path, r.text)
            else:
                assert (r.status_code, code) == (405, "method_not_allowed"), (method, path, r.text)
    for path in (
        "/openapi.yaml",
        "/docs",
        "/v1",
        "/v1/nope",
        "/v1/cues/x/y",
        "/v1/executions/x/undo",
        "/v2/cues",
    ):
        r = live.call("GET", path)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found"), path


def test_every_reference_resolves_and_every_component_is_used(doc: dict[str, Any]) -> None:
    refs: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            if isinstance(v.get("$ref"), str):
                refs.add(v["$ref"])
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(doc["paths"])
    walk(doc["components"])
    names = {f"#/components/schemas/{n}" for n in doc["components"]["schemas"]}
    assert refs == names


def test_served_without_a_key_and_never_rate_limited(tmp_path: Path) -> None:
    s = start_server(tmp_path / "limited.db", rate_limit_per_minute=2)
    try:
        for _ in range(5):
            r = s.call("GET", "/openapi.json", key=None)
            assert r.status_code == 200
            assert "x-ratelimit-limit" not in r.headers
        # A wrong key does not matter either: the document is public.
        assert s.call("GET", "/openapi.json", key="cue_sk_wrong").status_code == 200
        # Meanwhile a limited route runs out after 2 (the registration spent one).
        statuses = [s.call("GET", "/v1/auth/me", key=None).status_code for _ in range(3)]
        assert statuses[-1] == 429
    finally:
        s.app.close()
