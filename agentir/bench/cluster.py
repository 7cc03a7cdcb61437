"""``agentir bench cluster``: jobs/s and latency against the number of worker processes, in one run.

``agentir bench cluster [--workers 1,2] [--jobs N] [--low-load-jobs N] [--inflight N]
[--max-tool-calls N] [--json]``

Starts its own ``redis-server`` (on a free loopback port, in a temporary folder), then for each
count in ``--workers`` that many ``agentir worker`` processes (one core each: ``--concurrency 1
--torch-threads 1``) behind a front end (a :class:`~agentir.pipeline.Restorer` on the broker, as
``agentir serve --bus`` runs it), and the same jobs through the in-process Restorer on the
in-memory bus (the one-machine daemon's engine, torch limited to one thread as well). Jobs are
the degraded example images, restored with a small tool budget.

Reported: per run jobs/s and latency p50/p95 with ``--inflight`` jobs in flight; the p50 at
low load (one job at a time) on the in-memory bus and on Redis with one worker, and their
difference (what the broker adds); ``lost`` (submitted jobs that never finished) and
``duplicated`` (extra ``JobFinished`` for a job) counted over every Redis run. Ratios are of one
run on one machine; a shared machine makes them noisy.

Exit codes: 0 measured; 1 some job failed or was lost; 2 usage error (or no redis-server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main_bench_cluster"]

ROOT = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentir bench cluster", description="Throughput and latency of agentir on a Redis bus vs worker processes, and vs in-process."
    )
    p.add_argument("--workers", default="1,2", help="comma-separated worker process counts (default 1,2)")
    p.add_argument("--jobs", type=int, default=16, metavar="N", help="jobs per throughput run (default 16)")
    p.add_argument("--low-load-jobs", type=int, default=8, metavar="N", help="jobs run one at a time for the low-load latency (default 8)")
    p.add_argument("--inflight", type=int, default=4, metavar="N", help="jobs in flight in a throughput run (default 4)")
    p.add_argument("--max-tool-calls", type=int, default=3, metavar="N", help="tool budget per job (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return p


def _images() -> list[Any]:
    import numpy as np
    from PIL import Image

    folder = ROOT / "examples" / "degraded"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no example images in {folder}")
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        v = latencies[0] if latencies else float("nan")
        return v, v
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return statistics.median(latencies), q[94]


async def _drive(restorer: Any, images: list[Any], jobs: int, inflight: int, tag: str) -> tuple[float, list[float], list[str], int]:
    """Run ``jobs`` jobs, ``inflight`` at once; returns (seconds, latencies, finished job ids, failures)."""
    import anyio

    from agentir.pipeline import RestoreError

    latencies: list[float] = []
    finished: list[str] = []
    failures = 0
    slots = anyio.Semaphore(inflight)

    async def one(i: int) -> None:
        nonlocal failures
        async with slots:
            t0 = time.perf_counter()
            try:
                result = await restorer.restore(images[i % len(images)], job=f"{tag}-{i}")
            except RestoreError:
                failures += 1
                return
            latencies.append(time.perf_counter() - t0)
            finished.append(result.job)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(jobs):
            tg.start_soon(one, i)
    return time.perf_counter() - t0, latencies, finished, failures


def _start_workers(url: str, n: int, folder: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    readies = []
    for k in range(n):
        ready = folder / f"ready-{n}-{k}"
        log = open(folder / f"worker-{n}-{k}.log", "wb")  # noqa: SIM115 - closed when the process is reaped
        cmd = [
            sys.executable,
            "-m",
            "agentir.cluster",
            "--bus",
            url,
            "--concurrency",
            "1",
            "--torch-threads",
            "1",
            "--log-level",
            "warning",
            "--ready-file",
            str(ready),
        ]
        procs.append(
            subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1"),
            )
        )
        log.close()
        readies.append(ready)
    deadline = time.monotonic() + 120
    for proc, ready in zip(procs, readies):
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                _stop(procs)
                raise RuntimeError(f"a worker did not start (exit {proc.returncode}); see {folder}")
            time.sleep(0.05)
    return procs


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


async def _bench(args: argparse.Namespace, counts: list[int]) -> dict[str, Any]:
    import torch

    from agentir.bus.messages import JobFinished, Subjects
    from agentir.bus.redis import RedisBus
    from agentir.cluster.server import RedisServer
    from agentir.pipeline import Restorer

    torch.set_num_threads(1)  # the in-process baseline gets what one worker gets per actor
    images = _images()
    options = {"max_tool_calls": args.max_tool_calls}
    out: dict[str, Any] = {"jobs": args.jobs, "inflight": args.inflight, "max_tool_calls": args.max_tool_calls, "image_shape": list(images[0].shape)}

    # In-process: the in-memory bus with local actors.
    async with Restorer(options=options, max_inflight=args.inflight, job_timeout=300) as local:
        await _drive(local, images, 2, 1, "warm-mem")
        _, low, _, _ = await _drive(local, images, args.low_load_jobs, 1, "low-mem")
        seconds, lat, done, failed = await _drive(local, images, args.jobs, args.inflight, "mem")
    p50, p95 = _quantiles(lat)
    out["in_memory"] = {
        "jobs_per_s": round(len(done) / seconds, 3),
        "p50_s": round(p50, 4),
        "p95_s": round(p95, 4),
        "low_load_p50_s": round(_quantiles(low)[0], 4),
    }
    failures = failed

    finished: Counter[str] = Counter()
    submitted: list[str] = []
    runs = []
    tmp = tempfile.mkdtemp(prefix="agentir-bench-cluster-")  # kept (with the worker logs) if a job failed
    with RedisServer(Path(tmp) / "redis", appendonly=True) as server:
        async with RedisBus(server.url) as watch_bus:
            events = await watch_bus.subscribe(Subjects.EVENTS, max_pending=4096)

            async def count() -> None:
                async for d in events:
                    if isinstance(d.message, JobFinished):
                        finished[d.message.job] += 1
                    await d.ack()

            counter = asyncio.create_task(count())
            try:
                for n in counts:
                    procs = _start_workers(server.url, n, Path(tmp))
                    try:
                        async with Restorer(bus=server.url, options=options, max_inflight=args.inflight, job_timeout=300) as front:
                            await _drive(front, images, 2 * n, n, f"warm-{n}")
                            row: dict[str, Any] = {"workers": n}
                            if n == counts[0]:
                                _, low, _, failed_low = await _drive(front, images, args.low_load_jobs, 1, f"low-{n}")
                                submitted += [f"low-{n}-{i}" for i in range(args.low_load_jobs)]
                                failures += failed_low
                                row["low_load_p50_s"] = round(_quantiles(low)[0], 4)
                            seconds, lat, done, failed = await _drive(front, images, args.jobs, args.inflight, f"run-{n}")
                            submitted += [f"run-{n}-{i}" for i in range(args.jobs)]
                            failures += failed
                            p50, p95 = _quantiles(lat)
                            row.update(jobs_per_s=round(len(done) / seconds, 3), p50_s=round(p50, 4), p95_s=round(p95, 4))
                            runs.append(row)
                    finally:
                        _stop(procs)
                await asyncio.sleep(0.5)  # late duplicates, if any, arrive now
            finally:
                counter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await counter
    if failures == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        out["logs"] = tmp
    out["runs"] = runs
    out["lost"] = sum(1 for j in submitted if finished[j] == 0)
    out["duplicated"] = sum(max(0, finished[j] - 1) for j in submitted)
    out["failed"] = failures
    base = runs[0]["jobs_per_s"] if runs else 0.0
    out["speedup"] = {str(r["workers"]): round(r["jobs_per_s"] / base, 3) if base else None for r in runs}
    if runs and "low_load_p50_s" in runs[0]:
        out["redis_p50_overhead_ms"] = round(1000 * (runs[0]["low_load_p50_s"] - out["in_memory"]["low_load_p50_s"]), 2)
    out["cpu_count"] = os.cpu_count()
    out["note"] = "one run on one machine; other load on it skews the ratios"
    return out


def main_bench_cluster(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentir bench cluster``; returns the exit code."""
    import anyio

    from agentir.cluster.server import redis_server_path
    from agentir.logs import configure_logging

    parser = _parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--workers must be comma-separated counts like 1,2, got {args.workers!r}")
    if not counts or any(c < 1 for c in counts):
        parser.error(f"--workers must be counts of at least 1, got {args.workers!r}")
    for flag, value in (
        ("--jobs", args.jobs),
        ("--low-load-jobs", args.low_load_jobs),
        ("--inflight", args.inflight),
        ("--max-tool-calls", args.max_tool_calls),
    ):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if redis_server_path() is None:
        print(
            "error: redis-server is not installed (apt-get install redis-server, or set AGENTIR_REDIS_SERVER); the cluster benchmark starts its own",
            file=sys.stderr,
        )
        return 2
    configure_logging("error")
    result = anyio.run(_bench, args, counts)
    if args.json:
        print(json.dumps(result))
    else:
        mem = result["in_memory"]
        print(
            f"in-process (memory bus): {mem['jobs_per_s']:.2f} jobs/s  p50 {mem['p50_s']:.3f} s  p95 {mem['p95_s']:.3f} s  low-load p50 {mem['low_load_p50_s']:.3f} s"
        )
        for r in result["runs"]:
            print(
                f"redis, {r['workers']} worker(s): {r['jobs_per_s']:.2f} jobs/s  p50 {r['p50_s']:.3f} s  p95 {r['p95_s']:.3f} s  speedup {result['speedup'][str(r['workers'])]}"
            )
        if "redis_p50_overhead_ms" in result:
            print(f"Redis adds {result['redis_p50_overhead_ms']:.1f} ms to p50 at low load; lost {result['lost']}, duplicated {result['duplicated']}")
    return 0 if result["lost"] == 0 and result["failed"] == 0 else 1
