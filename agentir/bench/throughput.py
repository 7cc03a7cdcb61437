"""``agentir bench throughput``: N concurrent restore jobs through the actor system.

``agentir bench throughput [--jobs N] [--no-batch | --compare] [--size WxH] [--tool NAME]
[--window-ms MS] [--max-batch N] [--rounds R] [--json]``

Every job runs the whole loop (submit, perceive, plan, execute, reflect, finish) on the in-process
bus, with a controlled workload: the job options force one subtask (``subtasks``, default the
tool's degradation) and one tool for it (``tools``), and ``reflection`` ``none`` so the
Executor's tool calls dominate. ``--no-batch`` runs the Executor with ``max_batch=1`` and no
batch window; ``--compare`` runs unbatched and batched in this same process (alternating, ``--rounds``
times each) and prints the ratio of the best rounds and the median of the per-round ratios. ``--tool bench_cnn`` is a small seeded
8-layer, 32-channel CNN (a stand-in for a learned tool, registered by this benchmark only).

Prints one JSON object (``--json``) or a short table: images per second, latency p50 / p95 in
seconds, mean batch size, device. Numbers are measured in one run on this machine; compare
ratios, not absolute values, across machines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agentir.actors.scheduler import DEFAULT_BATCH_WINDOW

__all__ = ["SeededCNN", "main_bench_throughput", "run_throughput"]

BENCH_CNN = "bench_cnn"


class SeededCNN:
    """A stand-in learned tool: ``layers`` 3x3 convolutions of ``width`` channels, fixed seeded weights.

    Residual (``x + 0.1 * net(x)``, clamped), so the output stays an image. ``device = "auto"``:
    the Executor places its batches on CUDA when there is one.
    """

    name = BENCH_CNN
    degradation = "noise"
    scale = 1
    device = "auto"

    def __init__(self, *, layers: int = 8, width: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        chans = [3] + [width] * (layers - 1) + [3]
        self.weights = [torch.randn(o, i, 3, 3, generator=g) * (2.0 / (9 * i)) ** 0.5 for i, o in itertools.pairwise(chans)]
        self._on: dict[torch.device, list[torch.Tensor]] = {}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        weights = self._on.get(batch.device)
        if weights is None:  # moved once per device, then cached (models load once)
            weights = self._on[batch.device] = [w.to(batch.device) for w in self.weights]
        # channels_last takes oneDNN's fast convolution path on CPU (2-4x here); fp16 on CUDA.
        x = batch.contiguous(memory_format=torch.channels_last)
        if batch.device.type == "cuda":
            x, weights = x.half(), [w.half() for w in weights]
        for k, w in enumerate(weights):
            x = torch.nn.functional.conv2d(x, w, padding=1)
            if k < len(weights) - 1:
                x = torch.relu(x)
        return (batch + 0.1 * x.float()).clamp(0.0, 1.0)


def _register_bench_cnn() -> None:
    from agentir.toolbox.base import TOOL_INFO, ToolInfo, register_tool

    if BENCH_CNN not in TOOL_INFO:
        register_tool(
            ToolInfo(name=BENCH_CNN, degradation="noise", kind="learned", tags=("manual",), description="seeded 8x32 CNN (throughput benchmark)"),
            SeededCNN,
        )


def _images(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` different noisy synthetic photos (smooth gradients, an edge, Gaussian noise sigma 25)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        base = np.stack([x / max(w, 1), y / max(h, 1), 0.5 + 0.4 * np.sin(x / (11 + i) + y / 23)], axis=-1) * 200
        base[h // 3 : h // 2] += 40
        out.append(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8))
    return out


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


async def run_throughput(
    *,
    jobs: int,
    size: tuple[int, int],
    tool: str,
    subtask: str,
    batch: bool,
    window: float = DEFAULT_BATCH_WINDOW,
    max_batch: int,
    cpu_batch_bytes: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run ``jobs`` concurrent restores (after a warm-up wave of as many) and return the measurements."""
    import anyio

    from agentir.pipeline import Restorer

    w, h = size
    images = _images(2 * jobs, h, w, seed)
    executor_options: dict[str, Any] = {"batch_window": window, "max_batch": max_batch} if batch else {"batch_window": 0.0, "max_batch": 1}
    if batch and cpu_batch_bytes is not None:
        executor_options["cpu_batch_bytes"] = cpu_batch_bytes
    options = {"subtasks": [subtask], "tools": {subtask: [tool]}, "reflection": "none", "rollback": False}
    latencies: list[float] = [0.0] * jobs
    failures: list[str] = []
    async with Restorer(max_inflight=max(jobs, 1), executor_options=executor_options, options=options) as restorer:
        before: dict[str, Any] = {}

        async def one(i: int, timed: bool) -> None:
            t0 = time.perf_counter()
            try:
                result = await restorer.restore(images[i])
                steps = result.trace.get("steps", [])
                if timed and (not steps or any(s.get("error") for s in steps)):
                    failures.append(f"job {i}: {steps[-1].get('error') if steps else 'no tool step ran'}")
            except Exception as exc:
                failures.append(f"job {i}: {type(exc).__name__}: {exc}")
            if timed:
                latencies[i] = time.perf_counter() - t0

        # Warm-up wave (same concurrency, other images): loads the tool, perception and kernels
        # and lets the allocator and thread pools settle, so the timed wave measures steady state.
        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(one, jobs + i, False)
        before = restorer.stats()
        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(jobs):
                tg.start_soon(one, i, True)
        wall = time.perf_counter() - t0
        after = restorer.stats()
    batches = after.get("batches", 0) - before.get("batches", 0)
    units = after.get("units", 0) - before.get("units", 0)
    return {
        "mode": "batched" if batch else "unbatched",
        "jobs": jobs,
        "size": f"{w}x{h}",
        "tool": tool,
        "subtask": subtask,
        "images_per_s": round(jobs / wall, 3) if wall > 0 else 0.0,
        "wall_s": round(wall, 4),
        "latency_p50_s": round(_percentile(latencies, 50), 4),
        "latency_p95_s": round(_percentile(latencies, 95), 4),
        "mean_batch_size": round(units / batches, 3) if batches else 0.0,
        "batches": batches,
        "max_batch": executor_options["max_batch"],
        "batch_window_ms": round(executor_options["batch_window"] * 1000, 3),
        "device": ",".join(after.get("devices", [])) or "cpu",
        "device_name": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "failures": failures,
    }


def build_parser(prog: str = "agentir bench throughput") -> argparse.ArgumentParser:
    """The ``agentir bench throughput`` argument parser."""
    p = argparse.ArgumentParser(prog=prog, description="Concurrent restore jobs through the actor system: images/s, latency, batch size.")
    p.add_argument("--jobs", type=int, default=16, metavar="N", help="concurrent jobs (default 16)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-batch", action="store_true", help="Executor with max_batch=1 and no batch window")
    mode.add_argument("--compare", action="store_true", help="run unbatched and batched in this process and print the ratio")
    p.add_argument("--size", default="256x256", metavar="WxH", help="image size (default 256x256)")
    p.add_argument("--tool", default="dct_denoise", help=f"the tool every job runs (default dct_denoise; {BENCH_CNN}: a seeded 8x32 CNN)")
    p.add_argument("--subtask", default=None, help="the subtask forced on every job (default: the tool's degradation)")
    p.add_argument(
        "--window-ms",
        type=float,
        default=DEFAULT_BATCH_WINDOW * 1000.0,
        metavar="MS",
        help=f"batch window in ms (default: the Executor's, {DEFAULT_BATCH_WINDOW * 1000:g})",
    )
    p.add_argument("--max-batch", type=int, default=16, metavar="N", help="largest batch (default 16)")
    p.add_argument("--cpu-batch-mb", type=float, default=None, metavar="MB", help="Executor's batch cap for CPU tools in MiB (default: the Executor's, 4)")
    p.add_argument("--rounds", type=int, default=1, metavar="R", help="with --compare: rounds per mode, alternating; best kept (default 1)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _quiet_logs() -> None:
    """Unless the CLI configured logging already: warnings and errors only, on stderr (stdout carries the result)."""
    import logging

    import structlog

    if structlog.is_configured():
        return
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 256x256 (W x H), got {text!r}") from None
    if w < 16 or h < 16:
        raise ValueError(f"--size must be at least 16x16, got {text!r}")
    return w, h


def main_bench_throughput(argv: list[str] | Sequence[str]) -> int:
    """Entry point of ``agentir bench throughput`` (see the module docstring); returns the exit code."""
    import anyio

    import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools
    from agentir.toolbox.base import TOOL_INFO
    from agentir.toolbox.registry import UnknownNameError

    args = build_parser().parse_args(list(argv))
    _quiet_logs()
    try:
        size = _parse_size(args.size)
        if args.jobs < 1 or args.max_batch < 1 or args.rounds < 1 or args.window_ms < 0:
            raise ValueError("--jobs, --max-batch and --rounds must be at least 1, --window-ms 0 or more")
        if args.tool == BENCH_CNN:
            _register_bench_cnn()
        if args.tool not in TOOL_INFO:
            from agentir.toolbox.base import TOOLS

            raise UnknownNameError("tool", args.tool, TOOLS.names())
        subtask = args.subtask or TOOL_INFO[args.tool].degradation
        if args.threads < 0:
            raise ValueError("--threads must be 0 (torch's choice) or more")
        if args.threads:
            torch.set_num_threads(args.threads)
    except (ValueError, UnknownNameError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def run(batch: bool) -> dict[str, Any]:
        return anyio.run(
            lambda: run_throughput(
                jobs=args.jobs,
                size=size,
                tool=args.tool,
                subtask=subtask,
                batch=batch,
                window=args.window_ms / 1000.0,
                max_batch=args.max_batch,
                seed=args.seed,
                cpu_batch_bytes=None if args.cpu_batch_mb is None else max(1, int(args.cpu_batch_mb * 2**20)),
            )
        )

    if args.compare:
        runs: dict[str, list[dict[str, Any]]] = {"unbatched": [], "batched": []}
        for _ in range(args.rounds):
            runs["unbatched"].append(run(False))
            runs["batched"].append(run(True))
        best = {k: max(v, key=lambda r: r["images_per_s"]) for k, v in runs.items()}
        ratio = best["batched"]["images_per_s"] / best["unbatched"]["images_per_s"] if best["unbatched"]["images_per_s"] else 0.0
        # Per round (unbatched then batched back to back): robust to load that drifts between rounds.
        paired = [b["images_per_s"] / u["images_per_s"] for u, b in zip(runs["unbatched"], runs["batched"]) if u["images_per_s"]]
        result: dict[str, Any] = {
            "compare": True,
            "ratio_images_per_s": round(ratio, 3),
            "ratio_median_of_rounds": round(float(np.median(paired)), 3) if paired else 0.0,
            "rounds": args.rounds,
            "unbatched": best["unbatched"],
            "batched": best["batched"],
            "all_images_per_s": {k: [r["images_per_s"] for r in v] for k, v in runs.items()},
        }
        failed = any(r["failures"] for v in runs.values() for r in v)
    else:
        result = run(not args.no_batch)
        failed = bool(result["failures"])
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        rows = [result["unbatched"], result["batched"]] if args.compare else [result]
        print(f"{'mode':<10} {'images/s':>9} {'p50 s':>8} {'p95 s':>8} {'batch':>6}  device")
        for r in rows:
            print(
                f"{r['mode']:<10} {r['images_per_s']:>9.2f} {r['latency_p50_s']:>8.3f} {r['latency_p95_s']:>8.3f} {r['mean_batch_size']:>6.2f}  {r['device']}"
            )
        if args.compare:
            print(f"batched / unbatched images/s: {result['ratio_images_per_s']:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main_bench_throughput(sys.argv[1:]))
