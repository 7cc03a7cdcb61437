"""Faults a probe found in the daemon, reproduced over real loopback HTTP: a full disk while a job
ends, free space below the margin, clients that trickle a request, a port already in use."""

from __future__ import annotations

import contextlib
import errno
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from test_daemon import finished, noisy_png, post, started

import agentir.daemon.store as store_module
from agentir.daemon.store import JobStore

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def png() -> bytes:
    """A noisy 256x192 shipped image, PNG-encoded."""
    return noisy_png()


async def wait_thread_event(event: threading.Event, timeout: float) -> None:
    """Wait (without blocking the loop) until ``event`` is set; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        assert await anyio.to_thread.run_sync(event.wait, timeout)


# ----------------------------------------------------------------------------- 1. disk full as a job ends
async def test_a_job_whose_result_and_failure_hit_a_full_disk_frees_its_slot_and_is_failed_once_space_returns(tmp_path, png, monkeypatch):
    """ENOSPC on the result and "disk is full" on recording it: the slot is freed, readers see the job
    failed with a one-line disk error at once, no partial file is left, and the failure is written once
    the store has room again."""
    full = threading.Event()
    full.set()
    retried = threading.Event()  # recording the failure was tried again while the disk was full
    recorded = threading.Event()  # ... and then succeeded
    faults: list[str] = []
    real_write, real_requeue, real_fail = store_module.write_bytes_atomic, JobStore._requeue, JobStore._fail

    def write(path: Any, data: bytes) -> None:
        target = Path(path)
        if full.is_set() and target.suffix == ".png":
            # The worst a failed write leaves: part of the bytes in a temporary file next to the result.
            (target.parent / f".{target.name}.fault.tmp").write_bytes(data[: len(data) // 2])
            faults.append("result")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    def requeue(self: JobStore, db: sqlite3.Connection, *args: Any) -> bool:
        if full.is_set():
            faults.append("requeue")
            raise sqlite3.OperationalError("database or disk is full")
        return real_requeue(self, db, *args)

    def fail(self: JobStore, db: sqlite3.Connection, *args: Any) -> bool:
        if full.is_set():
            faults.append("fail")
            if faults.count("fail") >= 3:
                retried.set()
            raise sqlite3.OperationalError("database or disk is full")
        changed = real_fail(self, db, *args)
        recorded.set()
        return changed

    monkeypatch.setattr(store_module, "write_bytes_atomic", write)
    monkeypatch.setattr(JobStore, "_requeue", requeue)
    monkeypatch.setattr(JobStore, "_fail", fail)
    async with started(tmp_path, concurrency=1, disk_backoff=0.05) as (daemon, http):
        job = (await post(http, png))[2]["id"]
        assert await finished(daemon, job, timeout=30) == "failed"
        assert faults[:2] == ["result", "requeue"] and "fail" in faults
        assert daemon.worker.running == 0
        counts = await daemon.store.counts()
        assert counts["running"] == 0 and counts["failed"] == 1
        async with http.get(f"/v1/jobs/{job}") as r:
            info = await r.json()
        assert r.status == 200 and info["state"] == "failed" and info["recorded"] is False
        assert info["error"].startswith("no space left on the data disk") and "\n" not in info["error"]
        async with http.get(f"/v1/jobs/{job}/result") as r:
            assert r.status == 409
        async with http.get("/metrics") as r:
            text = await r.text()
        assert 'agentir_jobs{state="running"} 0.0' in text and "agentir_jobs_running 0.0" in text
        assert list(daemon.store.outbox.iterdir()) == []  # no result, no partial temporary file
        await wait_thread_event(retried, 10)  # the worker keeps trying, with a backoff

        full.clear()  # space is back
        await wait_thread_event(recorded, 10)
        assert await daemon.store.flush_pending() == 0  # queued behind the recording write: it is done
        # closing(): a Connection's own "with" ends a transaction but leaves it open (Python 3.13 warns).
        with contextlib.closing(sqlite3.connect(f"file:{daemon.store.db_path}?mode=ro", uri=True)) as db:
            state, error = db.execute("SELECT state, error FROM jobs WHERE id=?", (job,)).fetchone()
        assert state == "failed" and error == info["error"]
        async with http.get(f"/v1/jobs/{job}") as r:
            info = await r.json()
        assert info["state"] == "failed" and "recorded" not in info
        assert not daemon.store.input_path(job).exists()
        second = (await post(http, png))[2]["id"]  # the only slot is free: the next job runs
        assert await finished(daemon, second, timeout=60) == "done"


# ----------------------------------------------------------------------------- 2. readiness and free space
async def test_readyz_is_503_with_a_reason_while_free_space_is_below_the_margin(tmp_path, png, monkeypatch):
    """While the data disk has less than min_free_bytes free, /readyz is 503 with a JSON reason (and
    POST is 507); /healthz stays 200; once space returns both are ready again."""
    free = {"bytes": 10 << 20}
    fake_shutil = SimpleNamespace(disk_usage=lambda path: SimpleNamespace(total=1 << 40, used=(1 << 40) - free["bytes"], free=free["bytes"]))
    monkeypatch.setattr(store_module, "shutil", fake_shutil)
    async with started(tmp_path, min_free_bytes=64 << 20) as (_daemon, http):
        async with http.get("/readyz") as r:
            body = await r.json()
        assert r.status == 503 and body["ready"] is False and r.headers["Retry-After"] == "3"
        assert f"{10 << 20} bytes free" in body["reason"] and f"min_free_bytes {64 << 20}" in body["reason"]
        async with http.get("/healthz") as r:
            assert r.status == 200
        assert (await post(http, png))[0] == 507
        free["bytes"] = 1 << 30
        async with http.get("/readyz") as r:
            assert r.status == 200 and (await r.json())["ready"] is True
        assert (await post(http, png))[0] == 202


# ----------------------------------------------------------------------------- 3. slow clients
async def _trickle(port: int, head: bytes, drip: bytes) -> tuple[float, bytes]:
    """Send ``head``, then one byte of ``drip`` every 0.2 s until the server closes; returns (seconds, answer)."""
    t0 = time.monotonic()
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head)

        async def drip_bytes() -> None:
            for i in range(10_000):
                await anyio.sleep(0.2)  # the client's pace, not a synchronisation
                try:
                    await stream.send(drip[i % len(drip) : i % len(drip) + 1])
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(drip_bytes)
            try:
                while True:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
            tg.cancel_scope.cancel()
    return time.monotonic() - t0, answer


async def test_connections_that_trickle_their_headers_are_answered_408_and_closed(tmp_path):
    """Five connections sending a request's headers a byte every 0.2 s (and one sending nothing) are
    closed by the server after header_timeout, trickled ones with a 408; a normal request works meanwhile."""
    timeout = 1.0
    async with started(tmp_path, header_timeout=timeout) as (daemon, http):
        results: list[tuple[float, bytes]] = []

        async def one(head: bytes) -> None:
            results.append(await _trickle(daemon.port, head, b"st: x\r\nX-Slow: y\r\n"))

        with anyio.fail_after(timeout + 5):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one, b"GET /healthz HTTP/1.1\r\nHo")
                silent = await anyio.connect_tcp("127.0.0.1", daemon.port)
                async with http.get("/healthz") as r:
                    assert r.status == 200
                t0 = time.monotonic()
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await silent.receive()  # nothing sent: closed without an answer
                assert time.monotonic() - t0 < timeout + 4
                await silent.aclose()
        assert len(results) == 5
        for seconds, answer in results:
            assert timeout - 0.1 <= seconds <= timeout + 4, seconds  # never before the deadline; the margin is for a loaded CI
            assert answer.startswith(b"HTTP/1.1 408 ") and b"header_timeout" in answer
        async with http.get("/healthz") as r:
            assert r.status == 200


async def test_an_upload_whose_body_trickles_is_answered_408_and_closed(tmp_path):
    """A POST /v1/jobs whose body arrives a byte every 0.2 s gets a 408 after body_timeout and is closed."""
    timeout = 1.0
    async with started(tmp_path, body_timeout=timeout) as (daemon, http):
        head = b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG"
        with anyio.fail_after(timeout + 5):
            seconds, answer = await _trickle(daemon.port, head, b"\0")
        assert timeout - 0.1 <= seconds <= timeout + 2, seconds
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in answer
        async with http.get("/healthz") as r:
            assert r.status == 200


# ----------------------------------------------------------------------------- 4. port in use
def test_a_busy_port_is_one_error_line_and_exit_code_1(tmp_path):
    """`agentir serve --port P` with P taken exits 1 with one stderr line naming the address, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "agentir", "serve", "--port", str(port), "--data", str(tmp_path / "data"), "--log-level", "warning"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} (address already in use); choose another --port or stop the other process"
    ]


async def test_without_the_aiohttp_internals_it_needs_the_header_deadline_is_off_and_requests_still_work(tmp_path, monkeypatch):
    """If an aiohttp release renames what TimedRequestHandler reads, requests are still served (no deadline) and a warning is logged once."""
    from structlog.testing import capture_logs

    from agentir.daemon.app import TimedRequestHandler

    monkeypatch.setattr(TimedRequestHandler, "_INTERNALS", (*TimedRequestHandler._INTERNALS, "_no_such_attribute"))
    monkeypatch.setattr(TimedRequestHandler, "_warned", False)
    with capture_logs() as logs:
        async with started(tmp_path, header_timeout=0.5) as (_daemon, http):
            for _ in range(2):
                async with http.get("/healthz") as r:
                    assert r.status == 200
    assert [e["event"] for e in logs].count("daemon.header_timeout_unavailable") == 1
