"""Crash safety: a daemon process killed with SIGKILL mid-job loses no accepted job after a restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import numpy as np

from agentir.bus.codec import decode, encode
from agentir.bus.messages import JobProgress
from agentir.daemon.messages import WsResult, WsWatch
from agentir.imageio import decode_image, encode_png, load_image
from agentir.toolbox.degrade import degrade

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "clean"


def _start(data: Path, port_file: Path, log: Path) -> subprocess.Popen[bytes]:
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AGENTIR_TOKEN", None)
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "agentir.daemon", "--port", "0", "--data", str(data), "--port-file", str(port_file), "--concurrency", "1"],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def _wait_port(proc: subprocess.Popen[bytes], port_file: Path, log: Path, timeout: float = 60.0) -> int:
    # A bounded wait for a subprocess to come up: the only polling in these tests.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited with {proc.returncode}: {log.read_text()[-2000:]}")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        time.sleep(0.1)
    raise AssertionError(f"daemon did not come up within {timeout} s: {log.read_text()[-2000:]}")


async def _follow_until(ws: aiohttp.ClientWebSocketResponse, job: str, *, want_result: bool) -> WsResult | None:
    await ws.send_bytes(encode(WsWatch(job=job)))
    while True:
        frame = await ws.receive()
        assert frame.type == aiohttp.WSMsgType.BINARY, frame
        msg = decode(frame.data, max_bytes=1 << 30).message
        if isinstance(msg, JobProgress) and msg.job == job and not want_result and msg.stage != "running":
            return None  # the job is inside the pipeline now
        if isinstance(msg, WsResult) and msg.job == job:
            return msg


async def test_kill_9_mid_job_then_restart_completes_every_accepted_job_once(tmp_path):
    """SIGKILL while a job runs; after a restart on the same data folder every accepted job is done, with one result each."""
    data, port_file, log = tmp_path / "data", tmp_path / "port", tmp_path / "daemon.log"
    images = []
    for i, name in enumerate(["coffee", "chelsea", "astronaut", "coffee"]):
        lq, _ = degrade(load_image(DATA / f"{name}.png"), "noise", np.random.default_rng(i), level="high")
        images.append(encode_png(lq))
    proc = _start(data, port_file, log)
    try:
        port = await anyio.to_thread.run_sync(_wait_port, proc, port_file, log)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            ids = []
            for png in images:
                async with http.post("/v1/jobs", data=png, headers={"Content-Type": "image/png"}) as r:
                    assert r.status == 202
                    ids.append((await r.json())["id"])
            async with http.ws_connect("/v1/ws") as ws:
                with anyio.fail_after(60):
                    # Kill while the last job is inside the pipeline (the others queued before it).
                    early = await _follow_until(ws, ids[-1], want_result=False)
                    assert early is None, "the job ended before the kill; the test needs it running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    with sqlite3.connect(data / "jobs.sqlite3") as db:
        at_kill = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    db.close()
    assert at_kill[ids[-1]] == "running"

    proc = _start(data, port_file, log)
    try:
        port = await anyio.to_thread.run_sync(_wait_port, proc, port_file, log)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.ws_connect("/v1/ws") as ws:
                with anyio.fail_after(120):
                    results = [await _follow_until(ws, job, want_result=True) for job in ids]
            assert [r.state for r in results] == ["done"] * len(ids)
            for job in ids:
                async with http.get(f"/v1/jobs/{job}") as r:
                    info = await r.json()
                assert info["state"] == "done"
                async with http.get(f"/v1/jobs/{job}/result") as r:
                    assert decode_image(await r.read()).shape == (192, 256, 3)
            async with http.get(f"/v1/jobs/{ids[-1]}") as r:
                assert (await r.json())["attempts"] == 2  # the killed run, then the rerun
        outputs = sorted(p.name for p in (data / "spool" / "out").iterdir())
        assert outputs == sorted(f"{job}.png" for job in ids)  # one result per job, no strays
        assert list((data / "spool" / "in").iterdir()) == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # graceful exit on SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()
