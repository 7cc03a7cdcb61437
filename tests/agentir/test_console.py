"""The web console's server side over real HTTP on loopback: static files and their CSP, the token,
GET /v1/info, the job previews (thumbnails) and the Prometheus metrics."""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from test_daemon import finished, started  # the daemon-test helpers the other daemon tests share

from agentir.agent_policies.options import JobOptions
from agentir.daemon.metrics import FAMILIES, Metrics
from agentir.daemon.web import CONSOLE_CSP, CONSOLE_FILES

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "agentir" / "daemon" / "console"
DEGRADED = ROOT / "examples" / "degraded" / "astronaut.png"


async def submit(http: aiohttp.ClientSession, body: bytes, headers: dict[str, str] | None = None) -> str:
    async with http.post("/v1/jobs", data=body, headers={"Content-Type": "image/png", **(headers or {})}) as r:
        assert r.status == 202, await r.text()
        return str((await r.json())["id"])


# ----------------------------------------------------------------------------- static files
async def test_console_page_and_files_are_served_with_a_strict_csp(tmp_path):
    """GET / is the console's HTML and every console file comes with its type, the CSP and an ETag that revalidates."""
    async with started(tmp_path) as (_daemon, http):
        async with http.get("/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert r.headers["Content-Security-Policy"] == CONSOLE_CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            page = await r.text()
        assert page.startswith("<!DOCTYPE html>") and 'src="/console/app.js"' in page
        types = {"html": "text/html", "js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        for name in CONSOLE_FILES:
            async with http.get(f"/console/{name}") as r:
                assert r.status == 200, name
                assert r.content_type == types[name.rsplit(".", 1)[1]], name
                assert r.headers["Content-Security-Policy"] == CONSOLE_CSP
                assert await r.read() == (CONSOLE / name).read_bytes()
                etag = r.headers["ETag"]
            async with http.get(f"/console/{name}", headers={"If-None-Match": etag}) as r:
                assert r.status == 304, name
        async with http.get("/console/../app.py") as r:
            assert r.status == 404
        async with http.get("/console/secrets.txt") as r:
            assert r.status == 404 and r.content_type == "application/problem+json"
            assert "no console file 'secrets.txt'" in (await r.json())["detail"]


def test_console_files_on_disk_are_exactly_the_served_list():
    """Every file in agentir/daemon/console is in CONSOLE_FILES and the reverse (a new module cannot be forgotten)."""
    assert sorted(p.name for p in CONSOLE.iterdir() if p.is_file()) == sorted(CONSOLE_FILES)


def test_console_has_nothing_a_strict_csp_would_block():
    """No inline scripts, inline styles, event-handler attributes, eval or innerHTML; every script is a module from /console/."""
    html = (CONSOLE / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, flags=re.S | re.I)
    assert scripts and all('src="/console/' in attrs and 'type="module"' in attrs and not body.strip() for attrs, body in scripts)
    assert "<style" not in html.lower() and " style=" not in html.lower()
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert not re.search(r'(src|href)="(https?:)?//', html), "external resource"
    for path in CONSOLE.glob("*.js"):
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "eval(", "new Function", "document.write", 'setAttribute("style"', "insertAdjacentHTML"):
            assert banned not in text, f"{path.name} uses {banned}"
        for spec in re.findall(r'from "([^"]+)"', text):
            assert spec.startswith("./") and (CONSOLE / spec[2:]).is_file(), f"{path.name} imports {spec}"


# ----------------------------------------------------------------------------- the token
async def test_with_a_token_the_console_loads_but_no_job_data_does(tmp_path):
    """With a token the console's files are public while /v1/info, job lists, previews and the WebSocket need it."""
    async with started(tmp_path, token="s3cret") as (daemon, http):
        auth = {"Authorization": "Bearer s3cret"}
        job = await submit(http, DEGRADED.read_bytes(), auth)
        assert await finished(daemon, job) == "done"
        for path in ("/", "/console/app.js", "/console/style.css"):
            async with http.get(path) as r:
                assert r.status == 200, path
        for path in ("/v1/info", "/v1/jobs", f"/v1/jobs/{job}", f"/v1/jobs/{job}/previews", f"/v1/jobs/{job}/previews/input.jpg", f"/v1/jobs/{job}/result"):
            async with http.get(path) as r:
                assert r.status == 401, path
            async with http.get(path, headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401, path
            async with http.get(path, headers=auth) as r:
                assert r.status == 200, path


def _bearer_protocol(token: str) -> str:
    return "agentir.bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


async def test_websocket_takes_the_token_as_a_subprotocol_and_answers_agentir_v1(tmp_path):
    """A browser's WebSocket carries the token as subprotocol agentir.bearer.<base64url>; the daemon picks agentir.v1, a wrong one is 401."""
    token = "tøken with spaces/+="
    async with started(tmp_path, token=token) as (_daemon, http):
        async with http.ws_connect("/v1/ws", protocols=("agentir.v1", _bearer_protocol(token))) as ws:
            assert ws.protocol == "agentir.v1"
        for protocols in (("agentir.v1", _bearer_protocol("wrong")), ("agentir.v1", "agentir.bearer.!!!"), ("agentir.v1",)):
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                async with http.ws_connect("/v1/ws", protocols=protocols):
                    pass
            assert caught.value.status == 401, protocols


# ----------------------------------------------------------------------------- /v1/info
async def test_info_lists_policies_options_and_the_upload_limits(tmp_path):
    """GET /v1/info names every planning policy (unusable ones with the reason), each option's default, and the daemon's limits."""
    async with started(tmp_path, max_body_bytes=1 << 20, max_pixels=4_000_000) as (_daemon, http), http.get("/v1/info") as r:
        assert r.status == 200
        info = await r.json()
    policies = {p["name"]: p for p in info["policies"]}
    assert {"experience", "rules", "random", "llm"} <= set(policies)
    assert policies["experience"]["usable"] and policies["experience"]["default"] and info["default_policy"] == "experience"
    assert not policies["llm"]["usable"] and "AGENTIR_LLM_URL" in policies["llm"]["note"]
    options = {o["name"]: o for o in info["options"]}
    defaults = JobOptions()
    for name in ("max_tool_calls", "max_rollbacks", "max_seconds", "wave", "rollback", "keep_improved", "reflection"):
        assert options[name]["default"] == getattr(defaults, name), name
    assert "first-success" in options["reflection"]["enum"]
    assert info["limits"]["max_body_bytes"] == 1 << 20 and info["limits"]["max_pixels"] == 4_000_000 and info["auth"] is False


# ----------------------------------------------------------------------------- previews
async def test_previews_hold_the_input_and_a_thumbnail_per_judged_step_and_go_with_the_job(tmp_path):
    """A finished job has a JPEG input copy and one small thumbnail per trace step (matched by node, subtask, index); retention deletes them."""
    async with started(tmp_path) as (daemon, http):
        job = await submit(http, DEGRADED.read_bytes())
        assert await finished(daemon, job) == "done"
        async with http.get(f"/v1/jobs/{job}") as r:
            trace = (await r.json())["trace"]
        async with http.get(f"/v1/jobs/{job}/previews") as r:
            assert r.status == 200
            previews = await r.json()
        steps = trace["steps"]
        assert steps and len(previews["candidates"]) == len(steps)
        seen: dict[tuple[int, str], int] = {}
        for step, cand in zip(steps, previews["candidates"]):
            index = seen.get((step["node"], step["subtask"]), 0)
            seen[(step["node"], step["subtask"])] = index + 1
            assert (cand["node"], cand["subtask"], cand["index"], cand["tool"]) == (step["node"], step["subtask"], index, step["tool"])
        for entry, bound in [(previews["input"], 1280), *[(c, 192) for c in previews["candidates"]]]:
            async with http.get(entry["url"]) as r:
                assert r.status == 200 and r.content_type == "image/jpeg"
                image = Image.open(io.BytesIO(await r.read()))
            assert image.format == "JPEG" and max(image.size) <= bound and image.size == (entry["width"], entry["height"])
        assert previews["input"]["width"] == 256  # the 256x192 input, not scaled up
        for name in ("c999.jpg", "index.json", "..%2Fjobs.sqlite3"):
            async with http.get(f"/v1/jobs/{job}/previews/{name}") as r:
                assert r.status == 404, name
                assert "preview" in (await r.json())["detail"]
        async with http.get(f"/v1/jobs/{'0' * 32}/previews") as r:
            assert r.status == 404 and "no job with id" in (await r.json())["detail"]
        folder = daemon.store.previews_path(job)
        assert folder.is_dir()
        assert await daemon.store.cleanup(time.time() + 1) == 1
        assert not folder.exists()
        async with http.get(f"/v1/jobs/{job}/previews") as r:
            assert r.status == 404
        text = await (await http.get("/metrics")).text()
        assert re.search(r"^agentir_previews_written_bytes_total [1-9]", text, flags=re.M)


# ----------------------------------------------------------------------------- metrics
def test_metric_names_follow_the_prometheus_conventions():
    """Counters end in _total; histograms name their unit (_seconds, _bytes, _images); no family name repeats."""
    for name, family in FAMILIES.items():
        assert re.fullmatch(r"agentir_[a-z_]+", name), name
        if family.kind == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if family.kind == "histogram":
            assert name.endswith(("_seconds", "_bytes", "_images")), name


def test_each_metrics_object_has_its_own_registry():
    """Two Metrics in one process count separately (a per-daemon registry, not the global one)."""
    from prometheus_client import REGISTRY

    a, b = Metrics(), Metrics()
    a.inc("agentir_jobs_submitted_total")
    a.inc("agentir_jobs_rejected_total", reason="too_large")
    assert a.counter("agentir_jobs_submitted_total") == 1 and b.counter("agentir_jobs_submitted_total") == 0
    assert a.counter("agentir_jobs_rejected_total", reason="too_large") == 1
    assert REGISTRY.get_sample_value("agentir_jobs_submitted_total") is None
    with pytest.raises(KeyError):
        a.inc("agentir_jobs_submited_total")
    with pytest.raises(ValueError, match="not a gauge"):
        a.set("agentir_jobs_submitted_total", 1)


async def test_metrics_endpoint_has_build_info_process_metrics_and_a_versioned_content_type(tmp_path):
    """/metrics is text format 0.0.4 (or OpenMetrics on request) with build info, process metrics, uploads in bytes and request durations."""
    async with started(tmp_path) as (daemon, http):
        body = DEGRADED.read_bytes()
        job = await submit(http, body)
        assert await finished(daemon, job) == "done"
        async with http.get("/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = await r.text()
        async with http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
            assert (await r.text()).rstrip().endswith("# EOF")
    assert re.search(r'^agentir_build_info\{[^}]*version="[^"]+"[^}]*\} 1\.0$', text, flags=re.M)
    assert re.search(r"^process_resident_memory_bytes \S+$", text, flags=re.M)
    assert re.search(r"^process_cpu_seconds_total \S+$", text, flags=re.M)
    assert f"agentir_upload_size_bytes_sum {float(len(body))}" in text
    assert re.search(r'^agentir_http_request_duration_seconds_count\{method="POST",route="/v1/jobs"\} 1\.0$', text, flags=re.M)
    assert 'agentir_jobs_completed_total{state="done"} 1.0' in text
    assert re.search(r"^agentir_job_duration_seconds_count 1\.0$", text, flags=re.M)
    assert "agentir_job_seconds" not in text and "agentir_batch_size" not in text  # the old, off-convention names


async def test_two_daemons_in_one_process_keep_their_own_metrics(tmp_path):
    """Two daemons started side by side in one process: a job submitted to one is counted by that one only."""
    async with started(tmp_path / "a") as (a, http_a), started(tmp_path / "b") as (_b, http_b):
        a.worker.pause()
        await submit(http_a, DEGRADED.read_bytes())
        text_a = await (await http_a.get("/metrics")).text()
        text_b = await (await http_b.get("/metrics")).text()
    assert re.search(r"^agentir_jobs_submitted_total 1\.0$", text_a, flags=re.M)
    assert re.search(r"^agentir_jobs_submitted_total 0\.0$", text_b, flags=re.M)
    assert text_a.count("# TYPE agentir_build_info gauge") == text_b.count("# TYPE agentir_build_info gauge") == 1
