"""The processes: ``agentir serve --bus`` as a front end of ``agentir worker`` processes, and the
one-line start-up errors for a broker URL that is wrong or unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import anyio
import pytest

from agentir.cluster.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AGENTIR_TOKEN", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def _errors(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("command", [["agentir.cluster"], ["agentir.daemon", "--port", "0", "--data", "data"]], ids=["worker", "serve"])
def test_an_unreachable_broker_is_one_clear_error_at_start_up(command, tmp_path):
    """A worker or front end whose --bus names no running Redis exits 1 with one line naming the URL."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = _run([*command, "--bus", url], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = _errors(proc)
    assert url in line and "check the --bus URL" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["agentir.cluster"], ["agentir.daemon", "--port", "0", "--data", "data"]], ids=["worker", "serve"])
def test_a_malformed_broker_url_is_a_usage_error(command, tmp_path):
    """A --bus that is not a redis:// URL is refused before anything starts (exit 2, one line)."""
    proc = _run([*command, "--bus", "http://127.0.0.1:6379/0"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = _errors(proc)
    assert "http://127.0.0.1:6379/0" in line and "redis://HOST:6379/0" in line


async def test_serve_with_a_bus_is_a_front_end_of_the_workers(cluster, tmp_path):
    """`agentir serve --bus` runs no actors: a worker process restores the jobs it accepts over HTTP."""
    (worker,) = cluster.start_workers(1)
    port_file, log = tmp_path / "port", tmp_path / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("AGENTIR_TOKEN", None)
    cmd = [sys.executable, "-m", "agentir.daemon", "--port", "0", "--data", str(tmp_path / "data"), "--port-file", str(port_file), "--bus", cluster.url]
    with log.open("wb") as fh:
        daemon = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not (port_file.exists() and port_file.read_text().strip()):
            assert daemon.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await anyio.sleep(0.05)
        port = int(port_file.read_text())
        png = (ROOT / "examples" / "degraded" / "coffee.png").read_bytes()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.post("/v1/jobs", params={"options": '{"max_tool_calls": 2}'}, data=png, headers={"Content-Type": "image/png"}) as r:
                assert r.status == 202, await r.text()
                job = (await r.json())["id"]
            with anyio.fail_after(90):
                while True:
                    async with http.get(f"/v1/jobs/{job}") as r:
                        state = (await r.json())["state"]
                    if state not in ("queued", "running"):
                        break
                    await anyio.sleep(0.1)
            assert state == "done", log.read_text()[-3000:]
            async with http.get(f"/v1/jobs/{job}/result") as r:
                assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
        assert any(e.get("job") == job for e in cluster.logged("job.perceived", [worker]))
        assert "job.perceived" not in log.read_text()  # the front end perceived nothing itself
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)


async def test_a_workers_memory_cap_refuses_whole_image_tools_over_it(cluster):
    """`agentir worker --memory-cap GB`: the worker's Executor refuses a whole-image tool whose
    estimate passes the cap (the job's trace says so) and the job finishes with another tool."""
    import numpy as np
    from PIL import Image

    from agentir.pipeline import Restorer

    cluster.start_workers(1, "--memory-cap", "0.001")
    image = np.asarray(Image.open(ROOT / "examples" / "degraded" / "astronaut.png").convert("RGB"))
    async with Restorer(bus=cluster.url, job_timeout=90) as front:
        with anyio.fail_after(120):
            result = await front.restore(image, options={"subtasks": ["jpeg"], "reflection": "none", "tools": {"jpeg": ["dct_dejpeg_strong", "cnn_dejpeg"]}})
    steps = result.trace["steps"]
    assert any(s["tool"] == "dct_dejpeg_strong" and "over the memory cap" in s.get("error", "") for s in steps), steps
    assert result.image.shape == image.shape
