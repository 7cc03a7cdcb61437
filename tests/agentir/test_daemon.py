"""The daemon over real HTTP and WebSocket on loopback: contract, bad input, limits, cancel, shutdown."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgpack
import numpy as np
import pytest
import structlog
import torch
from PIL import Image

from agentir.bus.codec import decode, encode
from agentir.bus.messages import JobProgress
from agentir.client import AgentirClient, DaemonBusy, DaemonError
from agentir.daemon.app import Daemon, run_daemon
from agentir.daemon.config import ConfigError, DaemonConfig
from agentir.daemon.messages import WsAck, WsCancel, WsError, WsResult, WsSubmit, WsWatch
from agentir.daemon.store import TERMINAL, DataDirLocked, JobStore
from agentir.imageio import encode_png, load_image
from agentir.toolbox.base import ToolInfo, register_tool, unregister_tool
from agentir.toolbox.degrade import degrade

DATA = Path(__file__).resolve().parents[2] / "examples" / "clean"


# ----------------------------------------------------------------------------- helpers
def noisy_png(name: str = "coffee", seed: int = 0) -> bytes:
    lq, _ = degrade(load_image(DATA / f"{name}.png"), "noise", np.random.default_rng(seed), level="high")
    return encode_png(lq)


@pytest.fixture(scope="module")
def png() -> bytes:
    """A noisy 256x192 shipped image, PNG-encoded."""
    return noisy_png()


@asynccontextmanager
async def started(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Daemon, aiohttp.ClientSession]]:
    config = DaemonConfig(**{"port": 0, "data": tmp_path / "data", "min_free_bytes": 0, "retry_after": 3, **overrides})
    async with run_daemon(config) as daemon, aiohttp.ClientSession(base_url=daemon.url) as http:
        yield daemon, http


async def finished(daemon: Daemon, job: str, timeout: float = 60.0) -> str:
    """Wait (on the worker's events, not a poll) until ``job`` is in a terminal state; return it."""
    send, recv = anyio.create_memory_object_stream[Any](256)
    unwatch = daemon.worker.watch(job, send)
    try:
        with anyio.fail_after(timeout):
            while (await daemon.store.get(job)).state not in TERMINAL:
                try:
                    await recv.receive()
                except anyio.EndOfStream:
                    break
            return (await daemon.store.get(job)).state
    finally:
        unwatch()
        send.close()
        recv.close()


async def post(http: aiohttp.ClientSession, body: bytes, ctype: str = "image/png", **kw: Any) -> tuple[int, dict[str, Any], Any]:
    async with http.post("/v1/jobs", data=body, headers={"Content-Type": ctype, **kw.pop("headers", {})}, **kw) as r:
        return r.status, dict(r.headers), await r.json()


class BlockingTool:
    """A real denoising 'tool' that holds its call until the test releases it (identity output)."""

    name = "test_blocking_denoise"
    degradation = "noise"
    scale = 1
    device = "cpu"
    entered = threading.Event()
    release = threading.Event()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        BlockingTool.entered.set()
        BlockingTool.release.wait(30)
        return batch


@pytest.fixture
def blocking_tool():
    """Registers BlockingTool for one test; releases any held call and unregisters it afterwards."""
    BlockingTool.entered.clear()
    BlockingTool.release.clear()
    register_tool(ToolInfo(name=BlockingTool.name, degradation="noise", description="blocks (tests)"), BlockingTool)
    yield {"tools": {"noise": [BlockingTool.name]}, "subtasks": ["noise"]}
    BlockingTool.release.set()
    unregister_tool(BlockingTool.name)


async def until_tool_entered() -> None:
    with anyio.fail_after(30):
        entered = await anyio.to_thread.run_sync(BlockingTool.entered.wait, 30)
    assert entered


# ----------------------------------------------------------------------------- the contract
async def test_raw_png_is_accepted_restored_and_served_with_trace(tmp_path, png):
    """POST an image body: 202 with an id, then status done with a trace and the result PNG."""
    async with started(tmp_path) as (daemon, http):
        status, headers, body = await post(http, png)
        assert status == 202 and headers["Location"] == f"/v1/jobs/{body['id']}"
        assert await finished(daemon, body["id"]) == "done"
        async with http.get(f"/v1/jobs/{body['id']}") as r:
            info = await r.json()
        assert r.status == 200 and info["state"] == "done" and info["width"] == 256
        assert "noise" in info["trace"]["plan"] and info["trace"]["job"] == body["id"]
        async with http.get(info["result"]) as r:
            assert r.status == 200 and r.content_type == "image/png"
            out = np.asarray(Image.open(io.BytesIO(await r.read())))
        assert out.shape == (192, 256, 3)


async def test_multipart_carries_policy_and_options(tmp_path, png):
    """A multipart upload with policy and options stores both on the job."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        form = aiohttp.FormData()
        form.add_field("image", png, filename="x.png", content_type="image/png")
        form.add_field("policy", "random")
        form.add_field("options", json.dumps({"max_tool_calls": 4}))
        async with http.post("/v1/jobs", data=form) as r:
            assert r.status == 202
            job = (await r.json())["id"]
        async with http.get(f"/v1/jobs/{job}") as r:
            info = await r.json()
        assert info["state"] == "queued" and info["policy"] == "random" and info["options"] == {"max_tool_calls": 4}


async def test_the_daemons_speed_limit_applies_to_jobs_that_set_none(tmp_path, png):
    """serve --max-tool-cost: a job without its own max_tool_cost gets the daemon's (recorded on
    the job, honoured by the planner); a job's own value wins."""
    from agentir.toolbox.costs import tool_cost

    async with started(tmp_path, max_tool_cost=5.0) as (daemon, http):
        plain = (await post(http, png))[2]["id"]
        own = (await post(http, png, params={"options": json.dumps({"max_tool_cost": 100})}))[2]["id"]
        assert await finished(daemon, plain) == "done" and await finished(daemon, own) == "done"
        async with http.get(f"/v1/jobs/{plain}") as r:
            info = await r.json()
        async with http.get(f"/v1/jobs/{own}") as r:
            assert (await r.json())["options"] == {"max_tool_cost": 100}
    assert info["options"] == {"max_tool_cost": 5.0}
    used = {s["tool"] for s in info["trace"]["steps"]}
    assert used and all((tool_cost(t) or 0.0) <= 5.0 for t in used), used
    with pytest.raises(ConfigError, match="max_tool_cost"):
        DaemonConfig(max_tool_cost=0)


async def test_the_daemons_memory_cap_reaches_its_executor(tmp_path):
    """serve --memory-cap: the in-process Executor refuses whole-image tools over the cap (the
    job's trace says so) and the job still finishes with a tool that fits."""
    from pathlib import Path

    png = (Path(__file__).resolve().parents[2] / "examples" / "degraded" / "astronaut.png").read_bytes()
    async with started(tmp_path, memory_cap_gb=0.001) as (daemon, http):
        assert daemon.restorer.executor is not None and daemon.restorer.executor.scheduler.memory_cap == int(0.001 * 2**30)
        job = (await post(http, png))[2]["id"]
        assert await finished(daemon, job) == "done"
        async with http.get(f"/v1/jobs/{job}") as r:
            steps = (await r.json())["trace"]["steps"]
    assert any("over the memory cap" in s.get("error", "") for s in steps), steps
    with pytest.raises(ConfigError, match="memory_cap_gb"):
        DaemonConfig(memory_cap_gb=-1)


def _truncated(png: bytes) -> bytes:
    return png[: len(png) // 2]


def _png_bomb(side: int = 50_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels (2.5 G): a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1) * 64, 9)  # a few rows; the rest would come "later"
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("text_content_type", 415),  # wrong header
        ("text_bytes_with_image_header", 415),  # header says PNG, bytes do not
        ("empty_body", 415),
        ("truncated_png", 422),
        ("oversized_body", 413),
        ("too_many_pixels", 413),
        ("decompression_bomb", 413),  # default limits: refused from the header, nothing decoded
        ("unknown_policy", 422),
        ("bad_options_json", 422),
        ("unknown_option", 422),
        ("bad_option_value", 422),
        ("bad_tool_cost", 422),
    ],
)
async def test_bad_input_gets_its_status_and_a_one_line_json_error(tmp_path, png, case, status):
    """Each kind of bad submission gets the right status and a one-line JSON error, nothing is queued."""
    overrides: dict[str, Any] = {}
    body, ctype, params = png, "image/png", {}
    if case == "text_content_type":
        ctype = "text/plain"
    elif case == "text_bytes_with_image_header":
        body = b"hello, this is not an image at all"
    elif case == "empty_body":
        body = b""
    elif case == "truncated_png":
        body = _truncated(png)
    elif case == "oversized_body":
        overrides["max_body_bytes"] = 10_000
    elif case == "too_many_pixels":
        overrides["max_pixels"] = 10_000
    elif case == "decompression_bomb":
        body = _png_bomb()
    elif case == "unknown_policy":
        params = {"policy": "rulez"}
    elif case == "bad_options_json":
        params = {"options": "{not json"}
    elif case == "unknown_option":
        params = {"options": json.dumps({"max_tool_callz": 3})}
    elif case == "bad_option_value":
        params = {"options": json.dumps({"max_tool_calls": -1})}
    elif case == "bad_tool_cost":
        params = {"options": json.dumps({"max_tool_cost": 0})}
    async with started(tmp_path, **overrides) as (daemon, http):
        got, _, err = await post(http, body, ctype, params=params)
        assert got == status
        assert set(err) == {"type", "title", "status", "detail", "instance", "error"} and err["detail"] == err["error"]  # RFC 9457
        assert "\n" not in err["error"] and len(err["error"]) > 10
        assert (await daemon.store.counts())["queued"] == 0


async def test_bad_input_does_not_affect_a_good_job(tmp_path, png):
    """Garbage submitted next to a good image leaves the good job to complete normally."""
    async with started(tmp_path) as (daemon, http):
        good = (await post(http, png))[2]["id"]
        for bad in (b"\x89PNG\r\n\x1a\n garbage", _truncated(png), b"GIF89a" + b"\0" * 20):
            assert (await post(http, bad))[0] in (415, 422)
        assert await finished(daemon, good) == "done"


async def test_unknown_and_malformed_ids_answer_404(tmp_path):
    """Unknown ids (and ids that look like paths) get 404 with a JSON error on every job route."""
    async with started(tmp_path) as (_daemon, http):
        for job in ("0" * 32, "..%2F..%2Fetc%2Fpasswd", "nope"):
            for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/result"), ("DELETE", f"/v1/jobs/{job}")):
                async with http.request(method, path) as r:
                    assert r.status == 404, (method, path)
                    assert "error" in await r.json()
        async with http.get("/v2/nothing") as r:
            assert r.status == 404 and "error" in await r.json()


async def test_bearer_token_is_required_except_on_health_probes(tmp_path, png):
    """With a token configured, job routes need it (401 otherwise); /healthz and /readyz do not."""
    async with started(tmp_path, token="s3cret") as (_daemon, http):
        assert (await post(http, png))[0] == 401
        assert (await post(http, png, headers={"Authorization": "Bearer wrong"}))[0] == 401
        assert (await post(http, png, headers={"Authorization": "Bearer s3cret"}))[0] == 202
        async with http.get("/v1/jobs") as r:
            assert r.status == 401 and "Bearer" in (await r.json())["error"]
        async with http.get("/metrics") as r:
            assert r.status == 401
        for probe in ("/healthz", "/readyz"):
            async with http.get(probe) as r:
                assert r.status == 200


# ----------------------------------------------------------------------------- back-pressure
async def test_per_client_limit_answers_429_with_retry_after(tmp_path, png):
    """A client over its concurrent-job limit gets 429 and Retry-After; nothing more is queued."""
    async with started(tmp_path, max_per_client=2) as (daemon, http):
        daemon.worker.pause()
        assert [(await post(http, png))[0] for _ in range(2)] == [202, 202]
        status, headers, err = await post(http, png)
        assert status == 429 and headers["Retry-After"] == "3" and "limit 2" in err["error"]
        assert (await daemon.store.counts())["queued"] == 2


async def test_full_queue_answers_503_with_retry_after(tmp_path, png):
    """Past max_queue jobs in total (from different clients), submissions get 503 and Retry-After."""
    async with started(tmp_path, max_queue=2, trust_client_header=True) as (daemon, http):
        daemon.worker.pause()
        for i in range(2):
            assert (await post(http, png, headers={"X-Client-Id": f"c{i}"}))[0] == 202
        status, headers, err = await post(http, png, headers={"X-Client-Id": "c9"})
        assert status == 503 and headers["Retry-After"] == "3" and "queue is full" in err["error"]


async def test_low_disk_space_answers_507(tmp_path, png):
    """When the data disk has less free space than min_free_bytes, submissions get 507 and nothing is written."""
    async with started(tmp_path, min_free_bytes=1 << 60) as (daemon, http):
        status, _, err = await post(http, png)
        assert status == 507 and "disk is full" in err["error"]
        assert list(daemon.store.inbox.iterdir()) == []


async def test_disk_full_while_storing_a_result_keeps_the_job_and_retries_it(tmp_path, png, monkeypatch):
    """ENOSPC while writing the result re-queues the job (no attempt counted); it completes once space is back."""
    import errno

    import agentir.daemon.store as store_module

    real_write = store_module.write_bytes_atomic
    failures = []

    def full_once(path, data):
        if str(path).endswith(".png") and not failures:
            failures.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(store_module, "write_bytes_atomic", full_once)
    async with started(tmp_path, disk_backoff=0.05) as (daemon, http):
        with structlog.testing.capture_logs() as logs:
            job = (await post(http, png))[2]["id"]
            assert await finished(daemon, job) == "done"
        assert failures and any(e["event"] == "job.disk_full" for e in logs)
        assert (await daemon.store.get(job)).attempts == 1


async def test_idempotency_key_replays_the_same_job_and_rejects_a_different_body(tmp_path, png):
    """A retried POST with the same Idempotency-Key gets the same id; another image under that key is 422."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        first = await post(http, png, headers={"Idempotency-Key": "k1"})
        again = await post(http, png, headers={"Idempotency-Key": "k1"})
        assert first[0] == again[0] == 202 and first[2]["id"] == again[2]["id"]
        assert again[1].get("Idempotent-Replayed") == "true"
        other = await post(http, noisy_png("chelsea"), headers={"Idempotency-Key": "k1"})
        assert other[0] == 422 and "Idempotency-Key" in other[2]["error"]
        assert (await daemon.store.counts())["queued"] == 1


# ----------------------------------------------------------------------------- cancel, list
async def test_cancel_a_queued_job(tmp_path, png):
    """DELETE cancels a queued job; its result is 409 and a second DELETE is 409."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        job = (await post(http, png))[2]["id"]
        async with http.delete(f"/v1/jobs/{job}") as r:
            assert r.status == 200 and (await r.json())["state"] == "cancelled"
        async with http.get(f"/v1/jobs/{job}/result") as r:
            assert r.status == 409 and "cancelled" in (await r.json())["error"]
        async with http.delete(f"/v1/jobs/{job}") as r:
            assert r.status == 409
        daemon.worker.resume()
        assert (await daemon.store.get(job)).state == "cancelled"


async def test_cancel_a_running_job_stops_it_and_keeps_no_result(tmp_path, png, blocking_tool):
    """DELETE on a running job cancels it at once; the tool's late output is discarded."""
    async with started(tmp_path) as (daemon, http):
        job = (await post(http, png, params={"options": json.dumps(blocking_tool)}))[2]["id"]
        await until_tool_entered()
        async with http.get(f"/v1/jobs/{job}") as r:
            assert (await r.json())["state"] == "running"
        async with http.delete(f"/v1/jobs/{job}") as r:
            assert r.status == 200
        BlockingTool.release.set()
        assert await finished(daemon, job) == "cancelled"
        assert not daemon.store.result_path(job).exists()


async def test_list_is_paginated_newest_first(tmp_path, png):
    """GET /v1/jobs pages with limit and the 'next' cursor, newest first, and filters by state."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        ids = [(await post(http, png))[2]["id"] for _ in range(3)]
        async with http.get("/v1/jobs", params={"limit": "2"}) as r:
            page = await r.json()
        assert [j["id"] for j in page["jobs"]] == ids[::-1][:2] and page["next"]
        async with http.get("/v1/jobs", params={"limit": "2", "before": page["next"]}) as r:
            page2 = await r.json()
        assert [j["id"] for j in page2["jobs"]] == [ids[0]] and page2["next"] is None
        async with http.get("/v1/jobs", params={"state": "done"}) as r:
            assert (await r.json())["jobs"] == []
        async with http.get("/v1/jobs", params={"state": "bogus"}) as r:
            assert r.status == 400


# ----------------------------------------------------------------------------- ops
async def test_metrics_show_states_queue_depth_and_tool_latencies(tmp_path, png):
    """/metrics is Prometheus text with jobs by state, queue depth, tool latency and batch size histograms."""
    async with started(tmp_path) as (daemon, http):
        job = (await post(http, png))[2]["id"]
        assert await finished(daemon, job) == "done"
        async with http.get("/metrics") as r:
            text = await r.text()
        assert r.status == 200 and r.content_type == "text/plain" and "version=0.0.4" in r.headers["Content-Type"]
        assert 'agentir_jobs{state="done"} 1.0' in text and "agentir_queue_depth 0.0" in text
        assert "# TYPE agentir_tool_duration_seconds histogram" in text and 'le="+Inf"} ' in text
        assert 'agentir_tool_duration_seconds_count{tool="' in text and "agentir_executor_batch_images_count" in text
        assert 'agentir_http_requests_total{method="POST",route="/v1/jobs",status="202"} 1.0' in text


async def test_graceful_shutdown_requeues_a_running_job_and_a_restart_finishes_it(tmp_path, png, blocking_tool):
    """A graceful shutdown with a job running past the grace period re-queues it; the next start completes it."""
    async with started(tmp_path, shutdown_grace=0.2) as (daemon, http):
        job = (await post(http, png, params={"options": json.dumps(blocking_tool)}))[2]["id"]
        await until_tool_entered()
        send, recv = anyio.create_memory_object_stream[Any](16)
        daemon.worker.watch(job, send)

        async def release_once_requeued() -> None:
            # The held tool call is let go only after the drain re-queued the job.
            async with recv:
                async for event in recv:
                    if event.final:
                        assert event.stage == "requeued"
                        BlockingTool.release.set()
                        return

        async with anyio.create_task_group() as tg:
            tg.start_soon(release_once_requeued)
            async with send:
                await daemon.worker.drain(0.2)
    store = JobStore(tmp_path / "data")
    await store.open()
    record = await store.get(job)
    await store.close()
    assert record.state == "queued" and record.attempts == 0
    BlockingTool.release.set()
    async with started(tmp_path) as (daemon, http):
        assert await finished(daemon, job) == "done"
        assert (await daemon.store.get(job)).attempts == 1


async def test_retention_deletes_old_finished_jobs_and_their_files(tmp_path, png):
    """Cleanup removes finished jobs past retention (row and PNG); the id then answers 404."""
    async with started(tmp_path) as (daemon, http):
        job = (await post(http, png))[2]["id"]
        assert await finished(daemon, job) == "done"
        assert daemon.store.result_path(job).exists()
        assert await daemon.store.cleanup(time.time() + 1) == 1
        assert not daemon.store.result_path(job).exists()
        async with http.get(f"/v1/jobs/{job}") as r:
            assert r.status == 404


async def test_a_second_daemon_on_the_same_data_folder_is_refused(tmp_path):
    """Two daemons never share a data folder: the second fails with DataDirLocked, the first keeps serving."""
    async with started(tmp_path) as (_daemon, http):
        with pytest.raises(DataDirLocked, match="another agentir daemon"):
            async with started(tmp_path):
                pass
        async with http.get("/readyz") as r:
            assert r.status == 200


async def test_websocket_connection_limit_answers_503(tmp_path):
    """Past max_ws_connections open sockets, the upgrade is refused with 503 and Retry-After."""
    async with started(tmp_path, max_ws_connections=1) as (_daemon, http), http.ws_connect("/v1/ws"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect("/v1/ws"):
                pass
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "3"


async def test_probes_and_config_errors(tmp_path):
    """/healthz and /readyz answer 200 when serving; a bad setting is a ConfigError naming it."""
    async with started(tmp_path) as (_daemon, http):
        for probe in ("/healthz", "/readyz"):
            async with http.get(probe) as r:
                assert r.status == 200
    with pytest.raises(ConfigError, match="max_queue"):
        DaemonConfig(max_queue=0)
    bad = tmp_path / "bad.toml"
    bad.write_text("[serve]\nconcurency = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        DaemonConfig.load(bad)


# ----------------------------------------------------------------------------- WebSocket
async def _recv(ws: aiohttp.ClientWebSocketResponse) -> Any:
    with anyio.fail_after(60):
        frame = await ws.receive()
    assert frame.type == aiohttp.WSMsgType.BINARY, frame
    return decode(frame.data, max_bytes=1 << 30)


async def test_websocket_submit_streams_progress_then_the_result(tmp_path, png):
    """ws.submit is acked, job.progress events follow, and ws.result carries the PNG and trace."""
    async with started(tmp_path) as (_daemon, http), http.ws_connect("/v1/ws") as ws:
        submit = encode(WsSubmit(image=png), max_bytes=1 << 22)
        await ws.send_bytes(submit)
        ack = await _recv(ws)
        assert isinstance(ack.message, WsAck) and ack.correlation_id == decode(submit, max_bytes=1 << 22).id
        stages = []
        while True:
            env = await _recv(ws)
            if isinstance(env.message, JobProgress):
                stages.append(env.message.stage)
                continue
            break
        assert isinstance(env.message, WsResult) and env.message.state == "done"
        assert "running" in stages and "perceived" in stages
        assert np.asarray(Image.open(io.BytesIO(env.message.png))).shape == (192, 256, 3)


async def test_websocket_bad_frames_get_errors_and_the_socket_stays_usable(tmp_path, png):
    """Malformed msgpack, unknown versions and kinds, text frames and bad images get ws.error; the socket keeps working."""
    async with started(tmp_path) as (daemon, http):
        daemon.worker.pause()
        async with http.ws_connect("/v1/ws") as ws:
            future = msgpack.packb({"k": "ws.submit", "v": 99, "id": "x", "b": {"image": png}}, use_bin_type=True)
            unknown = msgpack.packb({"k": "ws.teleport", "v": 1, "id": "y", "b": {}}, use_bin_type=True)
            for frame in (b"\xc1\xc1 not msgpack", future, unknown, encode(JobProgress(job="j", stage="x"))):
                await ws.send_bytes(frame)
                err = (await _recv(ws)).message
                assert isinstance(err, WsError) and err.status == 400 and "\n" not in err.error
            await ws.send_str("hello")
            assert (await _recv(ws)).message.status == 400
            await ws.send_bytes(encode(WsSubmit(image=b"not an image", watch=False)))
            assert (await _recv(ws)).message.status == 415
            await ws.send_bytes(encode(WsWatch(job="0" * 32)))
            assert (await _recv(ws)).message.status == 404
            await ws.send_bytes(encode(WsSubmit(image=png, watch=True), max_bytes=1 << 22))
            ack = (await _recv(ws)).message
            assert isinstance(ack, WsAck) and ack.state == "queued"
            await ws.send_bytes(encode(WsCancel(job=ack.job)))
            got = {type(m := (await _recv(ws)).message): m for _ in range(2)}
            assert got[WsAck].state == "cancelled" and got[WsResult].state == "cancelled"


async def test_client_restores_over_http_and_websocket_and_reports_busy(tmp_path, png):
    """AgentirClient.restore and ws_restore return the PNG and trace; a refusal is DaemonBusy with retry_after."""
    async with started(tmp_path, token="t0k", max_per_client=1) as (daemon, _http), AgentirClient(daemon.url, token="t0k") as client:
        result, trace = await client.restore(png, options={"max_tool_calls": 8})
        assert result.startswith(b"\x89PNG") and trace["tool_calls"] >= 1
        progress: list[str] = []
        result, trace = await client.ws_restore(png, on_progress=lambda p: progress.append(p.stage))
        assert result.startswith(b"\x89PNG") and progress
        daemon.worker.pause()
        await client.submit(png)
        with pytest.raises(DaemonBusy) as busy:
            await client.submit(png)
        assert busy.value.status == 429 and busy.value.retry_after == 3
        with pytest.raises(DaemonError) as err:
            await client.status("f" * 32)
        assert err.value.status == 404


async def test_the_daemon_learns_from_judged_steps_unless_frozen(tmp_path, png):
    """The experience planner's online counts land in DATA/experience.json; frozen, nothing is written."""
    async with started(tmp_path) as (daemon, http):
        status, _, body = await post(http, png)
        assert status == 202 and await finished(daemon, body["id"]) == "done"
        trace = (await daemon.store.get(body["id"])).trace
        assert trace["planner"] == "experience" and trace["planner_info"]["learning"] is True
    saved = json.loads((tmp_path / "data" / "experience.json").read_text())
    tools = {k: v for k, v in saved["entries"].items() if k.startswith("tool|noise|")}
    assert tools and sum(n for _, n in tools.values()) >= 1
    async with started(tmp_path / "frozen", freeze_experience=True) as (daemon, http):
        status, _, body = await post(http, png)
        assert status == 202 and await finished(daemon, body["id"]) == "done"
        assert (await daemon.store.get(body["id"])).trace["planner_info"]["learning"] is False
    assert not (tmp_path / "frozen" / "data" / "experience.json").exists()


async def test_an_unconfigured_llm_policy_is_refused_with_422(tmp_path, png, monkeypatch):
    """policy=llm on a daemon without AGENTIR_LLM_URL: 422 naming the variable, nothing queued."""
    monkeypatch.delenv("AGENTIR_LLM_URL", raising=False)
    async with started(tmp_path) as (daemon, http):
        status, _, body = await post(http, png, params={"policy": "llm"})
        assert status == 422 and "AGENTIR_LLM_URL" in body["error"]
        assert (await daemon.store.counts()).get("queued", 0) == 0
