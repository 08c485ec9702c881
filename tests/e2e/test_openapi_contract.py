"""The API contract: the served OpenAPI document is valid and says what the server does, and no
input generated from it (valid or not) makes the server answer 5xx."""

from __future__ import annotations

import asyncio
import copy
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
import schemathesis
from conftest import Api, create_database, drop_database
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate

pytestmark = pytest.mark.timeout(120)

EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 15, schemathesis.GenerationMode.NEGATIVE: 8}
"""Generated requests per operation: valid ones, and ones that break the schema."""
FUZZ_BUDGET_S = 90.0
"""A bound on the whole run (it takes under 30 s on two busy cores)."""


async def test_served_document_is_valid_openapi(api: Api) -> None:
    status, doc = await api.get("/openapi.json")
    assert status == 200
    validate(doc)  # raises on any violation (e.g. a duplicate operationId)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_document_declares_what_the_server_does(api: Api) -> None:
    _, doc = await api.get("/openapi.json")
    paths = doc["paths"]
    # One of the two spellings of the task route is published; both are served.
    assert "/tasks/" in paths and "/tasks" not in paths
    for path in ("/tasks", "/tasks/"):
        status, body = await api.post(path, {"name": f"t{uuid.uuid4().hex[:6]}", "project_id": "nope"})
        assert status == 404 and body["error"]["details"]["field"], body

    # The log read answers a page as JSON, or a stream as NDJSON or text.
    ok = paths["/jobs/{job_id}/logs"]["get"]["responses"]["200"]["content"]
    assert set(ok) == {"application/json", "application/x-ndjson", "text/plain"}
    assert ok["application/x-ndjson"]["schema"]["type"] == "string"
    assert ok["text/plain"]["schema"]["type"] == "string"

    for path, item in paths.items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            params = {p["name"]: p for p in op.get("parameters", [])}
            for name, param in params.items():
                kind = param["schema"]["type"]
                if name.endswith("_id") or name in ("limit", "before", "after", "tail", "offset", "attempt"):
                    assert kind == "integer", where
                if name == "project":
                    assert kind == "string", where
            codes = set(op["responses"])
            assert "405" in codes, where
            if path != "/openapi.json":
                assert "503" in codes, where
                assert "Retry-After" in op["responses"]["503"]["headers"], where
            if "requestBody" in op:
                assert {"400", "413", "415", "422"} <= codes, where
            if method in ("post", "patch", "delete"):
                assert "415" in codes, where
            if "{" in path:
                assert {"404", "422"} <= codes, where


# ---------------------------------------------------------------- property-based run


@pytest.fixture
async def fuzz_server(pg_root_url: str, server_factory: Any) -> AsyncIterator[Any]:
    """A server on a database of its own: the fuzzer deletes and archives whatever it finds. Its
    long-polls (a worker's events) last at most a second."""
    url = await create_database(pg_root_url, "wn_fuzz")
    srv = await server_factory("--max-wait", "1", database=url)
    yield srv
    await srv.stop()
    await drop_database(pg_root_url, url)


def _fuzzable(doc: dict[str, Any], known: dict[str, list[Any]]) -> dict[str, Any]:
    """The served document, bounded for a test: no streams (``?follow``), claims that do not
    long-poll, and path parameters that sometimes name objects that exist."""
    doc = copy.deepcopy(doc)
    for item in doc["paths"].values():
        for op in item.values():
            kept = []
            for param in op.get("parameters", []):
                if param["name"] == "follow":
                    continue
                if param["in"] == "path" and known.get(param["name"]):
                    param["schema"] = {"anyOf": [{"enum": known[param["name"]]}, param["schema"]]}
                kept.append(param)
            op["parameters"] = kept
    doc["components"]["schemas"]["ClaimRequest"]["properties"]["wait"]["maximum"] = 0
    _cap_sizes(doc["components"]["schemas"])
    return doc


def _cap_sizes(node: Any) -> None:
    """Lower the largest sizes (10,000 jobs in a batch, a megabyte of log) so that generating
    an example past them stays cheap; test_input_limits checks the real bounds."""
    if isinstance(node, dict):
        for key, cap in (("maxItems", 5), ("maxLength", 100)):
            if isinstance(node.get(key), int) and node[key] > cap:
                node[key] = cap
        for value in node.values():
            _cap_sizes(value)
    elif isinstance(node, list):
        for value in node:
            _cap_sizes(value)


def _fuzz(base: str, doc: dict[str, Any]) -> list[str]:
    """Generate requests for every operation, valid and invalid; the server errors found."""
    schema = schemathesis.openapi.from_dict(doc)
    found: list[str] = []
    session = requests.Session()
    deadline = time.monotonic() + FUZZ_BUDGET_S
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in EXAMPLES:
            if time.monotonic() > deadline:
                found.append(f"fuzz budget of {FUZZ_BUDGET_S}s spent before {operation.label}")
                return found

            @settings(
                max_examples=EXAMPLES[mode],
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=base, session=session, timeout=10)
                if response.status_code >= 500:
                    found.append(
                        f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.300} "
                        f"-> {response.status_code} {response.text[:300]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): the positive run covered it.
                assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
    return found


async def test_generated_requests_never_get_a_server_error(fuzz_server: Any, http: Any) -> None:
    api = Api(fuzz_server.url, http)
    name = f"fuzz-{uuid.uuid4().hex[:6]}"
    project = await api.ok("POST", "/projects", {"name": name})
    await api.ok("POST", "/tasks/", {"name": "t", "project_id": name})
    job = await api.ok("POST", f"/projects/{name}/jobs", {"name": "j", "task": "t"})
    worker = await api.ok("POST", "/workers", {"name": "w", "project": name})
    known = {"project": [name, str(project["id"])], "job_id": [job["id"]], "worker_id": [worker["id"]]}
    _, doc = await api.get("/openapi.json")
    started = time.monotonic()
    found = await asyncio.to_thread(_fuzz, fuzz_server.url, _fuzzable(doc, known))
    took = time.monotonic() - started
    assert not found, "\n".join(found) + f"\n(server log tail)\n{fuzz_server.log()[-3000:]}"
    assert took < FUZZ_BUDGET_S
