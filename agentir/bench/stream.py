"""``agentir bench stream SOURCE [--degrade COMBO] [--size WxH] [--json]``: the stream against the per-frame agent.

Reads up to ``--max-frames`` frames of SOURCE (a video file or a folder of frames), optionally
degrades them itself with the benchmark recipe (``agentir.toolbox.degrade``): the parameters are drawn
once from ``--seed`` and held over the clip as a real camera would (the same darkening, the same
noise level), only the per-pixel random fields (noise, rain drops) are drawn anew per frame.
Then, in one run on the same frames:

* **stream** (``--every-frame``): the stream engine with plan reuse over every frame: fps,
  latency p50 / p95 / p99, plans, re-perceptions, and (when it degraded the source) PSNR / SSIM
  against the clean frames and flicker;
* **stream_realtime**: the same frames delivered at the clip's frame rate, newest frame wins:
  fps, latency percentiles, dropped frames;
* **agent**: the full agent (``Restorer.restore``) on each of the first ``--agent-frames``
  frames, one after the other: seconds per frame, PSNR / SSIM, flicker;
* **speed-up**: stream fps over agent fps, measured in this run; quality on the same first
  frames for a like-for-like comparison (``same_frames``).

Flicker: the mean absolute difference, in grey levels (0-255), between the output's
frame-to-frame change and the clean clip's, averaged over pixels, channels and frame pairs.
Frames are held in memory (decoding is not timed).

Clips in ``../shared/data/video`` are the Intel IoT Developer Kit sample videos, CC BY 4.0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import numpy as np

__all__ = ["degrade_clip", "flicker", "main_bench_stream"]

CREDIT = "Intel IoT Developer Kit sample videos, CC BY 4.0"


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def degrade_clip(frames: Sequence[np.ndarray], combo: Sequence[str], seed: int) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Degrade every frame with parameters drawn once (on the first frame) and held; per-pixel
    random fields (``field_seed``: noise, rain) advance by one per frame."""
    from agentir.toolbox.degrade import apply_params, degrade_chain

    _, params = degrade_chain(frames[0], list(combo), np.random.default_rng(seed))
    out = []
    for i, f in enumerate(frames):
        img = f
        for p in params:
            q = dict(p)
            if "field_seed" in q and q.get("name") in ("noise", "rain"):
                q["field_seed"] = (int(q["field_seed"]) + i) % (2**63)
            img = apply_params(img, q)
        out.append(img)
    return out, params


def flicker(outputs: Sequence[np.ndarray], clean: Sequence[np.ndarray]) -> float:
    """Mean |(out_t - out_t-1) - (clean_t - clean_t-1)| in grey levels (NaN under two frames)."""
    n = min(len(outputs), len(clean))
    if n < 2:
        return math.nan
    vals = []
    for t in range(1, n):
        do = outputs[t].astype(np.int16) - outputs[t - 1].astype(np.int16)
        dc = clean[t].astype(np.int16) - clean[t - 1].astype(np.int16)
        vals.append(float(np.abs(do - dc).mean()))
    return float(np.mean(vals))


def _quality(outputs: Sequence[np.ndarray | None], clean: Sequence[np.ndarray] | None) -> dict[str, Any]:
    from agentir.toolbox.metrics import score

    if clean is None:
        return {}
    pairs = [(o, c) for o, c in zip(outputs, clean) if o is not None]
    if not pairs:
        return {"psnr": None, "ssim": None, "flicker": None}
    scores = [score(o, c) for o, c in pairs]
    fl = flicker([o for o, _ in pairs], [c for _, c in pairs])
    return {
        "psnr": round(float(np.mean([s["psnr"] for s in scores])), 3),
        "ssim": round(float(np.mean([s["ssim"] for s in scores])), 4),
        "flicker": None if math.isnan(fl) else round(fl, 3),
    }


def _load(source: str, size: tuple[int, int] | None, max_frames: int) -> tuple[list[np.ndarray], list[str], float]:
    from agentir.stream.io import open_source

    src = open_source(source, size=size)
    frames, stems = [], []
    try:
        for frame in src.frames():
            if frame.image is not None:
                frames.append(frame.image)
                stems.append(frame.stem)
            if len(frames) >= max_frames:
                break
    finally:
        src.close()
    return frames, stems, float(src.fps or 30.0)


async def _stream(
    restorer: Any, frames: Sequence[np.ndarray], stems: Sequence[str], fps: float, *, realtime: bool, budget: float | None, extra: dict[str, Any] | None = None
) -> tuple[list[np.ndarray | None], dict[str, Any]]:
    from agentir.stream.engine import Frame, StreamConfig, StreamEngine
    from agentir.stream.runner import iterate, percentile

    config = StreamConfig(realtime=realtime, max_frame_ms=budget, **(extra or {}))

    async def gen() -> AsyncIterator[Frame]:
        t0 = time.perf_counter()
        for i, img in enumerate(frames):
            if realtime:  # delivered at the clip's rate, as a camera would
                wait = t0 + i / fps - time.perf_counter()
                if wait > 0:
                    await anyio.sleep(wait)
            yield Frame(index=i, timestamp=i / fps, image=img, stem=stems[i])

    outputs: list[np.ndarray | None] = [None] * len(frames)
    latencies: list[float] = []
    first_done: float | None = None
    chains: dict[str, int] = {}
    dropped = 0
    t0 = time.perf_counter()
    async with StreamEngine(restorer, config) as engine:
        results = iterate(gen(), engine, realtime=realtime, stamp_on_take=not realtime)
        async with aclosing(results):
            async for result, _dropped in results:
                if result.image is not None:
                    if first_done is None:
                        first_done = time.perf_counter()
                    outputs[result.index] = result.image
                    latencies.append(result.latency_ms)
                    key = " > ".join(result.chain)
                    chains[key] = chains.get(key, 0) + 1
        stats = engine.stats()
    seconds = time.perf_counter() - t0
    done = sum(o is not None for o in outputs)
    steady = time.perf_counter() - first_done if first_done is not None else 0.0
    return outputs, {
        "fps": round(done / seconds, 3) if seconds > 0 else 0.0,
        # After the first output (the scene's plan): the rate of plan reuse itself.
        "fps_steady": round((done - 1) / steady, 3) if steady > 0 and done > 1 else None,
        "seconds": round(seconds, 3),
        "frames_in": len(frames),
        "frames_out": done,
        "dropped": dropped,
        "latency_ms": {q: round(percentile(latencies, v), 2) for q, v in (("p50", 50), ("p95", 95), ("p99", 99))},
        "plans": stats["plans"],
        "reperceptions": stats["reperceptions"],
        "scene_changes": stats["scene_changes"],
        "replans": stats["replans"],
        "chains": chains,
        "ms_per_mp": stats["ms_per_mp"],
    }


async def _agent(restorer: Any, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray | None], dict[str, Any]]:
    outputs: list[np.ndarray | None] = []
    seconds = []
    plans: dict[str, int] = {}
    for img in frames:
        t0 = time.perf_counter()
        result = await restorer.restore(img)
        seconds.append(time.perf_counter() - t0)
        outputs.append(result.image)
        key = " > ".join(str(s.get("tool")) for s in result.trace.get("steps", ()) if s.get("verdict") in ("accepted", "best-of-failed"))
        plans[key] = plans.get(key, 0) + 1
    total = float(sum(seconds))
    return outputs, {
        "frames": len(frames),
        "fps": round(len(frames) / total, 4) if total > 0 else 0.0,
        "seconds_per_frame": round(total / max(1, len(frames)), 3),
        "tools": plans,
    }


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from agentir.pipeline import Restorer
    from agentir.stream.io import parse_size

    size = parse_size(args.size) if args.size else None
    clean, stems, fps = await anyio.to_thread.run_sync(_load, args.source, size, args.max_frames)
    if len(clean) < 2:
        raise ValueError(f"{args.source}: need at least 2 decodable frames, got {len(clean)}")
    combo = list(args.degrade.split("+")) if args.degrade else []
    params: list[dict[str, Any]] = []
    if combo:
        frames, params = await anyio.to_thread.run_sync(degrade_clip, clean, combo, args.seed)
        reference: list[np.ndarray] | None = clean
    else:
        frames, reference = clean, None
    n_agent = min(args.agent_frames, len(frames))
    report: dict[str, Any] = {
        "source": args.source,
        "credit": CREDIT if "shared/data/video" in args.source.replace("\\", "/") else None,
        "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        "frames": len(frames),
        "fps_source": fps,
        "degrade": "+".join(combo) or None,
        "params": params,
        "seed": args.seed,
        "max_frame_ms": args.max_frame_ms,
    }
    async with Restorer() as restorer:
        extra = {"temporal_frames": args.temporal_frames, "temporal_threshold": args.temporal_threshold}
        report["temporal"] = extra
        out_s, st = await _stream(restorer, frames, stems, fps, realtime=False, budget=args.max_frame_ms, extra=extra)
        st.update(_quality(out_s, reference))
        report["stream"] = st
        if not args.no_realtime:
            out_r, rt = await _stream(restorer, frames, stems, fps, realtime=True, budget=args.max_frame_ms, extra=extra)
            rt.update(_quality(out_r, reference))
            report["stream_realtime"] = rt
        if n_agent:
            out_a, ag = await _agent(restorer, frames[:n_agent])
            ag.update(_quality(out_a, reference[:n_agent] if reference is not None else None))
            report["agent"] = ag
            report["speedup"] = round(st["fps"] / ag["fps"], 2) if ag["fps"] else None
            report["speedup_steady"] = round(st["fps_steady"] / ag["fps"], 2) if ag["fps"] and st["fps_steady"] else None
            same: dict[str, Any] = {"frames": n_agent, "stream": _quality(out_s[:n_agent], reference[:n_agent] if reference is not None else None)}
            if reference is not None:
                same["input"] = _quality(list(frames[:n_agent]), reference[:n_agent])
                same["agent"] = {k: ag[k] for k in ("psnr", "ssim", "flicker")}
            report["same_frames"] = same
    if reference is not None:
        report["input"] = _quality(list(frames), reference)
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agentir bench stream", description="The stream engine (plan reuse) against the per-frame agent, in one run.")
    p.add_argument("source", help="video file or folder of frames (clean, when --degrade is given)")
    p.add_argument("--degrade", default=None, help="degrade the frames first with this combination, e.g. dark+noise (parameters held over the clip)")
    p.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT first")
    p.add_argument("--seed", type=int, default=0, help="seed of the degradation parameters (default 0)")
    p.add_argument("--max-frames", type=int, default=90, help="frames read from the source (default 90)")
    p.add_argument("--agent-frames", type=int, default=12, help="frames the per-frame agent restores (the first N; default 12, 0 skips it)")
    p.add_argument("--max-frame-ms", default="50", help="the stream's per-frame budget in ms, or none (default 50)")
    p.add_argument("--temporal-frames", type=int, default=8, help="frames the temporal stage averages (1: off; default 8)")
    p.add_argument("--temporal-threshold", type=float, default=3.0, help="its motion threshold in units of sigma / 5 (default 3)")
    p.add_argument("--no-realtime", action="store_true", help="skip the realtime run")
    p.add_argument("--json", action="store_true", help="one JSON line on stdout")
    return p


def main_bench_stream(argv: Sequence[str]) -> int:
    """Entry point of ``agentir bench stream``; returns the exit code."""
    from agentir.stream.cli import parse_budget
    from agentir.stream.engine import StreamError
    from agentir.toolbox.vocab import check_degradation

    args = build_parser().parse_args(list(argv))
    try:
        args.max_frame_ms = parse_budget(str(args.max_frame_ms))
    except argparse.ArgumentTypeError as exc:
        _err(f"error: --max-frame-ms: {exc}")
        return 2
    if args.max_frames < 2 or args.agent_frames < 0:
        _err("error: --max-frames must be at least 2 and --agent-frames 0 or more")
        return 2
    try:
        for name in args.degrade.split("+") if args.degrade else []:
            check_degradation(name)
        report = anyio.run(_bench, args)
    except (StreamError, ValueError) as exc:
        _err(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(report), flush=True)
    else:
        _err(json.dumps(report, indent=1))
    return 0
