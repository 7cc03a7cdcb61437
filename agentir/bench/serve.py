"""``agentir bench serve``: a load benchmark of the daemon on loopback.

Starts ``python -m agentir.daemon`` on 127.0.0.1 (a free port, a temporary data folder unless
``--data``), waits until it is ready, then ``--clients`` concurrent clients submit ``--jobs`` jobs in
total (the shipped example crops with synthetic noise, cycled) and wait for each result, over
HTTP (POST, poll status, GET result) or the WebSocket (``ws.submit`` with watch). 429/503
answers are retried after ``Retry-After`` and counted. Prints throughput and the latency
percentiles (submit to result in hand), and the daemon's own per-job and tool timings from
``/metrics``. Bounded: every job has a timeout and the daemon is stopped (SIGTERM) at the end.

Example::

    agentir bench serve --clients 4 --jobs 32 --concurrency 2 --transport http
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main_bench_serve", "percentile"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser(prog: str = "agentir bench serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Load-test the daemon on loopback: N clients, M jobs; throughput and latency percentiles.")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--jobs", type=int, default=32, help="jobs in total (default 32)")
    p.add_argument("--concurrency", type=int, default=2, help="the daemon's concurrent jobs (default 2)")
    p.add_argument("--transport", choices=["http", "ws"], default="http", help="http (poll) or ws (pushed events); default http")
    p.add_argument("--data", default=None, metavar="DIR", help="daemon data folder (default: a temporary one, removed afterwards)")
    p.add_argument("--job-timeout", type=float, default=300.0, help="seconds before one job counts as failed (default 300)")
    p.add_argument("--poll", type=float, default=0.05, help="HTTP status poll interval in seconds (default 0.05)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    return p


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _images() -> list[bytes]:
    import numpy as np

    from agentir.imageio import encode_png, load_image
    from agentir.toolbox.degrade import degrade

    root = Path(__file__).resolve().parents[2] / "examples" / "clean"
    out = []
    for i, path in enumerate(sorted(root.glob("*.png"))):
        lq, _ = degrade(load_image(path), "noise", np.random.default_rng(i), level="high")
        out.append(encode_png(lq))
    if not out:
        raise FileNotFoundError(f"no example images in {root}; run from a source checkout")
    return out


def _start_daemon(data: Path, concurrency: int, clients: int, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = data / "port"
    port_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AGENTIR_TOKEN"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentir.daemon", "--host", "127.0.0.1", "--port", "0", "--data", str(data / "daemon"),
             "--port-file", str(port_file), "--concurrency", str(concurrency), "--max-per-client", str(max(16, 2 * clients)),
             "--max-queue", str(max(256, 4 * clients)), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}; see {log_path}")
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the daemon did not come up within 120 s; see {log_path}")


async def _run_load(url: str, args: argparse.Namespace, images: list[bytes]) -> dict[str, Any]:
    import aiohttp
    import anyio

    from agentir.bus.codec import decode, encode
    from agentir.client import AgentirClient, DaemonBusy, DaemonError
    from agentir.daemon.messages import WsAck, WsError, WsResult, WsSubmit

    latencies: list[float] = []
    failures: list[str] = []
    busy = 0
    next_job = 0

    async def one_http(client: AgentirClient, data: bytes) -> None:
        nonlocal busy
        while True:
            try:
                job = await client.submit(data)
                break
            except DaemonBusy as exc:
                busy += 1
                await anyio.sleep(min(exc.retry_after, 5.0))
        while True:
            info = await client.status(job)
            if info["state"] in ("done", "failed", "cancelled"):
                break
            await anyio.sleep(args.poll)
        if info["state"] != "done":
            raise DaemonError(0, f"job {job} {info['state']}: {info.get('error', '')}")
        await client.result(job)

    async def one_ws(ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
        nonlocal busy
        while True:
            await ws.send_bytes(encode(WsSubmit(image=data), max_bytes=len(data) + (1 << 20)))
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.BINARY:
                    raise DaemonError(0, f"unexpected WebSocket frame {frame.type}")
                msg = decode(frame.data, max_bytes=1 << 30).message
                if isinstance(msg, WsError):
                    if msg.status in (429, 503):
                        busy += 1
                        await anyio.sleep(min(msg.retry_after or 1.0, 5.0))
                        break
                    raise DaemonError(msg.status, msg.error)
                if isinstance(msg, WsResult):
                    if msg.state != "done":
                        raise DaemonError(0, f"job {msg.job} {msg.state}: {msg.error}")
                    return
                if isinstance(msg, WsAck):
                    continue
            else:
                raise DaemonError(0, "the daemon closed the WebSocket")

    async def client_task(index: int) -> None:
        nonlocal next_job
        async with AgentirClient(url, timeout=args.job_timeout) as client:
            ws = await client.session.ws_connect(url.replace("http://", "ws://") + "/v1/ws", max_msg_size=0) if args.transport == "ws" else None
            try:
                while next_job < args.jobs:
                    i = next_job
                    next_job += 1
                    t0 = time.perf_counter()
                    try:
                        with anyio.fail_after(args.job_timeout):
                            if ws is not None:
                                await one_ws(ws, images[i % len(images)])
                            else:
                                await one_http(client, images[i % len(images)])
                        latencies.append(time.perf_counter() - t0)
                    except (DaemonError, TimeoutError, aiohttp.ClientError) as exc:
                        failures.append(f"job {i}: {exc}")
            finally:
                if ws is not None:
                    await ws.close()

    # One warm-up job (not measured): first tool calls build caches.
    async with AgentirClient(url, timeout=args.job_timeout) as client:
        await client.restore(images[0])
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for c in range(args.clients):
            tg.start_soon(client_task, c)
    wall = time.perf_counter() - t0
    async with AgentirClient(url) as client:
        metrics = await client.metrics()
    return {"latencies": latencies, "failures": failures, "busy_retries": busy, "wall": wall, "metrics": metrics}


def _from_metrics(text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        for family in ("agentir_job_duration_seconds", "agentir_tool_duration_seconds", "agentir_executor_batch_images"):
            if name.startswith(f"{family}_sum") or name.startswith(f"{family}_count"):
                key = f"{family}_{'sum' if '_sum' in name else 'count'}"
                sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def _mean(sums: dict[str, float], family: str, digits: int) -> float | None:
    """The mean of a histogram family from :func:`_from_metrics`' sums (None when it has no observations)."""
    count = sums.get(f"{family}_count")
    return round(sums.get(f"{family}_sum", 0.0) / count, digits) if count else None


def main_bench_serve(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentir bench serve``; returns the exit code (1 if any job failed)."""
    import anyio

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    if args.clients < 1 or args.jobs < 1 or args.concurrency < 1:
        print("error: --clients, --jobs and --concurrency must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    images = _images()
    with tempfile.TemporaryDirectory(prefix="agentir-bench-serve-") as tmp:
        data = Path(args.data) if args.data else Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        log_path = data / "daemon.log"
        proc, port = _start_daemon(data, args.concurrency, args.clients, log_path)
        try:
            out = anyio.run(_run_load, f"http://127.0.0.1:{port}", args, images)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    lat = out["latencies"]
    m = _from_metrics(out["metrics"])
    result = {
        "clients": args.clients,
        "jobs": args.jobs,
        "concurrency": args.concurrency,
        "transport": args.transport,
        "completed": len(lat),
        "failed": len(out["failures"]),
        "busy_retries": out["busy_retries"],
        "wall_s": round(out["wall"], 3),
        "throughput_jobs_per_s": round(len(lat) / out["wall"], 3) if out["wall"] > 0 else 0.0,
        "latency_p50_s": round(percentile(lat, 50), 3),
        "latency_p95_s": round(percentile(lat, 95), 3),
        "latency_p99_s": round(percentile(lat, 99), 3),
        "daemon_job_mean_s": _mean(m, "agentir_job_duration_seconds", 3),
        "tool_call_mean_s": _mean(m, "agentir_tool_duration_seconds", 3),
        "mean_batch_size": _mean(m, "agentir_executor_batch_images", 2),
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"agentir bench serve: {args.jobs} jobs from {args.clients} clients over {args.transport}, daemon concurrency {args.concurrency} ({os.cpu_count()} CPUs)"
        )
        print(f"  completed {result['completed']}, failed {result['failed']}, busy retries {result['busy_retries']}, wall {result['wall_s']:.2f} s")
        print(f"  throughput {result['throughput_jobs_per_s']:.2f} jobs/s")
        print(f"  latency p50 {result['latency_p50_s']:.3f} s  p95 {result['latency_p95_s']:.3f} s  p99 {result['latency_p99_s']:.3f} s")
        print(f"  daemon: mean job {result['daemon_job_mean_s']} s, mean tool call {result['tool_call_mean_s']} s, mean batch {result['mean_batch_size']}")
    for line in out["failures"][:10]:
        print(f"error: {line}", file=sys.stderr)
    return EXIT_FAILED if out["failures"] else EXIT_OK
