"""The daemon's API surface over real loopback HTTP: problem details, OpenAPI, /docs, timestamps."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from test_daemon import finished, noisy_png, post, started

from agentir.daemon.app import build_app
from agentir.daemon.openapi import DOCS_CSP, OPERATIONS

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "error"}


@pytest.fixture(scope="module")
def png() -> bytes:
    """A noisy 256x192 shipped image, PNG-encoded."""
    return noisy_png()


async def _problem(r: aiohttp.ClientResponse, status: int, path: str) -> dict[str, Any]:
    """Check ``r`` is an RFC 9457 answer with ``status`` for ``path``; return its body."""
    assert r.status == status
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert set(body) >= PROBLEM_KEYS
    assert body["type"] == "about:blank" and body["status"] == status and body["instance"] == path
    assert body["title"] == r.reason and body["detail"] == body["error"] and "\n" not in body["detail"]
    return dict(body)


def _routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds one for every GET
            continue
        out.add((route.method, route.resource.canonical))
    return out


def _doc_ops(doc: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m in methods}


# ----------------------------------------------------------------------------- problem details
async def test_unknown_job_is_a_404_problem(tmp_path):
    """An unknown job id answers 404 problem+json naming the request path."""
    async with started(tmp_path) as (_daemon, http):
        path = "/v1/jobs/" + "0" * 32
        async with http.get(path) as r:
            body = await _problem(r, 404, path)
        assert "no job with id" in body["error"]


async def test_unknown_route_is_a_404_problem(tmp_path):
    """A path no route matches answers 404 problem+json from the middleware."""
    async with started(tmp_path) as (_daemon, http):
        async with http.get("/v2/nothing") as r:
            body = await _problem(r, 404, "/v2/nothing")
        assert "no such endpoint" in body["detail"]


async def test_wrong_method_is_a_405_problem_with_allow(tmp_path):
    """A method a path does not serve answers 405 problem+json with an Allow header."""
    async with started(tmp_path) as (_daemon, http):
        async with http.put("/v1/jobs") as r:
            await _problem(r, 405, "/v1/jobs")
            allowed = {m.strip() for m in r.headers["Allow"].split(",")}
        assert {"GET", "POST"} <= allowed and "PUT" not in allowed


async def test_bad_option_is_a_422_problem(tmp_path, png):
    """An unknown job option answers 422 problem+json naming it."""
    async with started(tmp_path) as (_daemon, http):
        params = {"options": json.dumps({"max_tool_callz": 3})}
        async with http.post("/v1/jobs", data=png, headers={"Content-Type": "image/png"}, params=params) as r:
            body = await _problem(r, 422, "/v1/jobs")
        assert "max_tool_callz" in body["detail"]


async def test_oversized_body_is_a_413_problem(tmp_path, png):
    """A body over max_body_bytes answers 413 problem+json."""
    async with started(tmp_path, max_body_bytes=10_000) as (_daemon, http), http.post("/v1/jobs", data=png, headers={"Content-Type": "image/png"}) as r:
        await _problem(r, 413, "/v1/jobs")


async def test_missing_token_is_a_401_problem_and_the_api_description_is_public(tmp_path):
    """With a token configured, /v1/jobs answers 401 problem+json while /openapi.json and /docs need none."""
    async with started(tmp_path, token="s3cret") as (_daemon, http):
        async with http.get("/v1/jobs") as r:
            body = await _problem(r, 401, "/v1/jobs")
        assert "Bearer" in body["error"]
        for path in ("/openapi.json", "/docs", "/healthz"):
            async with http.get(path) as r:
                assert r.status == 200, path


async def test_busy_answers_keep_retry_after(tmp_path, png):
    """A 429 problem answer still carries Retry-After."""
    async with started(tmp_path, max_per_client=1) as (daemon, http):
        daemon.worker.pause()
        assert (await post(http, png))[0] == 202
        async with http.post("/v1/jobs", data=png, headers={"Content-Type": "image/png"}) as r:
            await _problem(r, 429, "/v1/jobs")
            assert r.headers["Retry-After"] == "3"


# ----------------------------------------------------------------------------- OpenAPI and /docs
async def test_openapi_document_matches_the_routes_both_ways(tmp_path):
    """GET /openapi.json is OpenAPI 3.1 JSON whose paths and methods are exactly the app's routes."""
    async with started(tmp_path) as (daemon, http):
        async with http.get("/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            doc = json.loads(await r.text())
        routes = _routes(build_app(daemon))
    assert doc["openapi"] == "3.1.0" and doc["info"]["title"] and doc["info"]["version"]
    documented = _doc_ops(doc)
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented operations with no route"
    assert {(op.method, op.path) for op in OPERATIONS} == routes
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["responses"], (method, path)
            assert all(code == "default" or re.fullmatch(r"[1-5]\d\d", code) for code in op["responses"])
            assert all(r_["description"] for r_ in op["responses"].values())
            for param in op.get("parameters", []):
                assert param["in"] in ("path", "query", "header") and param["name"]
                if param["in"] == "path":
                    assert "{" + param["name"] + "}" in path and param["required"] is True
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"]) and {"Problem", "Job"} <= refs


async def test_docs_page_is_self_contained_html_naming_every_path(tmp_path):
    """GET /docs is HTML with a default-src 'self' CSP, no scripts or external resources, and every path."""
    async with started(tmp_path) as (_daemon, http):
        async with http.get("/docs") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert r.headers["Content-Security-Policy"] == DOCS_CSP == "default-src 'self'"
            page = await r.text()
        async with http.get("/openapi.json") as r:
            doc = await r.json()
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower() and "<style" not in page.lower() and " style=" not in page.lower()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    for path in doc["paths"]:
        assert f"<code>{path}</code>" in page, path


# ----------------------------------------------------------------------------- timestamps
async def test_job_views_carry_rfc3339_timestamps_that_agree_with_the_unix_times(tmp_path, png):
    """created_at/started_at/finished_at are RFC 3339 UTC (null when unset) and match the unix times."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        job = (await post(http, png))[2]["id"]
        async with http.get(f"/v1/jobs/{job}") as r:
            queued = await r.json()
        assert queued["started"] is None and queued["started_at"] is None and queued["finished_at"] is None
        daemon.worker.resume()
        assert await finished(daemon, job) == "done"
        async with http.get(f"/v1/jobs/{job}") as r:
            done = await r.json()
        async with http.get("/v1/jobs") as r:
            listed = (await r.json())["jobs"][0]
    for view in (queued, done, listed):
        for name in ("created", "started", "finished"):
            if view[name] is None:
                assert view[f"{name}_at"] is None
                continue
            stamp = view[f"{name}_at"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
            parsed = datetime.fromisoformat(stamp)
            assert parsed.tzinfo is not None and parsed.utcoffset() == UTC.utcoffset(None)
            assert abs(parsed.timestamp() - view[name]) < 0.001
    assert done["started_at"] is not None and done["finished_at"] is not None


@pytest.mark.parametrize("path", ["/openapi.json", "/docs"])
async def test_api_description_routes_answer_head(tmp_path, path):
    """HEAD on the description routes answers 200 like GET (aiohttp's implicit HEAD)."""
    async with started(tmp_path) as (_daemon, http), http.head(path) as r:
        assert r.status == 200
