"""``agentir stream SOURCE [-o SINK] [--fps N] [--realtime | --every-frame] [--max-frame-ms MS] [--size WxH] [--json]``."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from agentir.stream.engine import StreamConfig, StreamError, StreamResult
from agentir.stream.runner import StreamSummary, percentile

__all__ = ["build_parser", "main_stream", "parse_budget"]

EXIT_USAGE = 2
EXIT_FAILED = 1


def parse_budget(text: str) -> float | None:
    """``--max-frame-ms``: a positive number of milliseconds, or ``none`` (the agent's own tools)."""
    if text.strip().lower() in ("none", "off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds or 'none', got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of milliseconds, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentir stream",
        description="Restore a video stream: the agent plans on a scene's first frame, the chosen tools run on the frames that follow.",
    )
    p.add_argument("source", help="video file, folder of frames, /dev/videoN, or rtsp:// / http:// URL")
    p.add_argument("-o", "--output", default=None, help="video file (.mkv lossless FFV1, .mp4, .avi), folder of frames, or none (default: statistics only)")
    p.add_argument("--fps", type=_positive_float, default=None, help="frame rate of a folder source and of the output (default: the source's, 30 for folders)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--realtime", action="store_true", help="newest frame wins (drops counted); files are played at their frame rate; planning runs in the background"
    )
    mode.add_argument("--every-frame", action="store_true", help="restore every frame in order, waiting for planning (default)")
    p.add_argument(
        "--max-frame-ms", type=parse_budget, default=50.0, help="per-frame budget for the tool chain in ms, or none for the agent's own tools (default 50)"
    )
    p.add_argument("--size", default=None, help="resize frames to WIDTHxHEIGHT first")
    p.add_argument("--reperceive-every", type=int, default=30, help="full perception every N frames (0: only on scene changes; default 30)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N input frames")
    p.add_argument("--policy", default=None, help="planning policy (default: the Restorer's, experience)")
    p.add_argument("--json", action="store_true", help="one JSON summary line last on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


class _Progress:
    """Live statistics on stderr: rewritten in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def __call__(self, result: StreamResult, summary: StreamSummary) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < (0.5 if self.tty else 5.0) and result.event == "reused":
            return
        self.last = now
        fps = summary.frames_out / summary.seconds if summary.seconds > 0 else 0.0
        p95 = percentile(summary.latencies_ms[-300:], 95)
        line = (
            f"frame {result.index:6d}  in {summary.frames_in} out {summary.frames_out} dropped {summary.dropped} errors {summary.errors}"
            f"  {fps:6.2f} fps  p95 {p95:7.1f} ms  scene {result.scene}  {result.event:12s} {' > '.join(result.chain)}"
        )
        if self.tty:
            sys.stderr.write("\r" + line[:200].ljust(120))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.enabled and self.tty and self.shown:
            sys.stderr.write("\n")


def _err(msg: str) -> None:
    print(f"agentir stream: {msg}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, progress: _Progress) -> StreamSummary:
    from agentir.pipeline import Restorer
    from agentir.stream.io import open_sink, open_source, parse_size
    from agentir.stream.runner import run_stream

    size = parse_size(args.size) if args.size else None
    config = StreamConfig(realtime=bool(args.realtime), max_frame_ms=args.max_frame_ms, reperceive_every=args.reperceive_every, policy=args.policy)
    source = await anyio.to_thread.run_sync(lambda: open_source(args.source, fps=args.fps, size=size))
    try:
        sink = open_sink(args.output, fps=args.fps or source.fps or 30.0)
    except BaseException:
        source.close()
        raise
    async with Restorer(policy=args.policy) as restorer:
        return await run_stream(source, sink, restorer, config, on_result=progress, max_frames=args.max_frames)


def main_stream(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentir stream``; returns the exit status (0 ok, 1 frames failed, 2 usage / source)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.reperceive_every < 0:
        parser.error("--reperceive-every must be 0 or more")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error("--max-frames must be at least 1")
    progress = _Progress(not args.quiet)
    try:
        summary = anyio.run(_run, args, progress)
    except StreamError as exc:
        progress.done()
        _err(f"error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        progress.done()
        _err("interrupted")
        return 130
    progress.done()
    out: dict[str, Any] = summary.as_dict()
    if not args.quiet:
        lat = out["latency_ms"]
        _err(
            f"{out['frames_out']} frames out of {out['frames_in']} in {out['seconds']:.2f} s ({out['fps']:.2f} fps), "
            f"{out['dropped']} dropped, {out['errors']} errors; latency p50 {lat['p50']} / p95 {lat['p95']} / p99 {lat['p99']} ms; "
            f"{out['plans']} plans, {out['reperceptions']} re-perceptions, {out['scene_changes']} scene changes"
        )
    if args.json:
        print(json.dumps(out), flush=True)
    return EXIT_FAILED if summary.frames_in and summary.frames_out == 0 else 0
