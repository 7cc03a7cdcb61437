"""``agentir bench sizes``: seconds and peak memory of one restoration per image size.

``agentir bench sizes [SOURCE] [--sizes 0.3,2,12,24] [--degrade noise,jpeg] [--level medium]
[--whole MP] [--kill-above GB] [--out DIR] [--json] [-q]``

For each size (megapixels, 4:3) the source photo (default: the repo's ``examples/clean/chelsea.png``)
is resized and mirrored into a 2 x 2 mosaic of that size, degraded with ``--degrade`` at
``--level`` (``agentir.toolbox.degrade``, a fixed seed), and restored by the default agent in a fresh
child process, one image at a time: the wall-clock seconds (process start and model loading
excluded: the child times the restore call itself) and the child's peak resident memory
(``VmHWM``, model loading and everything else included) are reported, with the PSNR of input and output against the
clean mosaic and the tools the agent ran. A child whose resident memory passes ``--kill-above``
GB is killed and reported as such, so that a size that does not fit cannot take the machine down.

``--whole MP`` restores that size a second time with tiling switched off (the Executor's tile
threshold above the image size) and reports the PSNR between the tiled and the whole-image
outputs and each one's PSNR against the clean image: the cost of tiling in quality.

Writes ``--out`` (default ``out/bench_sizes``): the inputs, outputs and ``sizes.json``; prints a
table (or, with ``--json``, one JSON line last on stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_parser", "main_bench_sizes", "mosaic", "proc_status_kb"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = ROOT / "examples" / "clean" / "chelsea.png"
SEED = 20261208


def build_parser(prog: str = "agentir bench sizes") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Seconds and peak memory of one restoration per image size (see agentir/bench/sizes.py).")
    p.add_argument(
        "source", nargs="?", type=Path, default=DEFAULT_SOURCE, help=f"clean photo the test images are made from (default {DEFAULT_SOURCE.relative_to(ROOT)})"
    )
    p.add_argument("--sizes", default="0.3,2,12,24", help="megapixels, comma-separated (default 0.3,2,12,24)")
    p.add_argument("--degrade", default="noise,jpeg", help="degradations applied in order (default noise,jpeg)")
    p.add_argument("--level", default="medium", help="severity of each degradation (default medium)")
    p.add_argument("--whole", type=float, default=None, metavar="MP", help="also restore this size without tiling and compare")
    p.add_argument("--kill-above", type=float, default=12.0, metavar="GB", help="kill a restoration whose resident memory passes this (default 12)")
    p.add_argument("--out", type=Path, default=Path("out/bench_sizes"), help="output folder (default out/bench_sizes)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-size lines while running")
    p.add_argument("--child", nargs=3, metavar=("IN", "OUT", "TILE_THRESHOLD"), help=argparse.SUPPRESS)
    return p


def mosaic(source: np.ndarray, megapixels: float) -> np.ndarray:
    """A ``megapixels`` 4:3 image: ``source`` resized to a quarter of it, mirrored 2 x 2."""
    import cv2

    w = max(8, int(round(math.sqrt(megapixels * 1e6 * 4 / 3))) // 2 * 2)
    h = max(6, int(round(w * 3 / 4)) // 2 * 2)
    quarter = cv2.resize(source, (w // 2, h // 2), interpolation=cv2.INTER_AREA if source.shape[1] > w // 2 else cv2.INTER_CUBIC)
    top = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    return np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))


def _child(src: str, dst: str, tile_threshold: int) -> int:
    """Restore ``src`` to ``dst`` in this process; print one JSON line (seconds, tools, status)."""
    import anyio

    from agentir.datasets import read_rgb, write_png
    from agentir.pipeline import Restorer

    image = read_rgb(src)

    async def run() -> dict[str, Any]:
        options = {"tile_threshold": tile_threshold} if tile_threshold > 0 else {}
        async with Restorer(executor_options=options) as restorer:
            t0 = time.perf_counter()
            result = await restorer.restore(image)
            seconds = time.perf_counter() - t0
        write_png(dst, result.image)
        trace = result.trace
        tools = [s.get("tool") for s in trace.get("steps", []) if s.get("verdict") in ("accepted", "success")]
        return {
            "seconds": round(seconds, 3),
            "status": trace.get("status"),
            "done": trace.get("done", []),
            "tools": tools,
            "tool_calls": trace.get("tool_calls"),
            "perception_seconds": trace.get("perception_seconds"),
        }

    row = anyio.run(run)
    hwm = proc_status_kb(os.getpid(), "VmHWM")  # this process's own peak (an exec resets it; ru_maxrss does not)
    if hwm:
        row["peak_rss_mb"] = round(hwm / 1024, 1)
    print(json.dumps(row), flush=True)
    return EXIT_OK


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/PID/status`` field in kB (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_bytes(pid: int) -> int:
    return proc_status_kb(pid, "VmRSS") * 1024


def _run_child(src: Path, dst: Path, tile_threshold: int, kill_above: float) -> dict[str, Any]:
    """One restoration in a fresh process: its JSON line plus peak RSS (and whether it was killed)."""
    cmd = [sys.executable, "-m", "agentir.bench.sizes", "--child", str(src), str(dst), str(tile_threshold)]
    env = {**os.environ, "AGENTIR_LOG_LEVEL": os.environ.get("AGENTIR_LOG_LEVEL", "error")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed = threading.Event()
    limit = kill_above * 2**30
    peak_kb = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak_kb[0] = max(peak_kb[0], proc_status_kb(proc.pid, "VmHWM"))
            if _rss_bytes(proc.pid) > limit:
                killed.set()
                proc.kill()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()  # reads both pipes until the child exits (or is killed)
    watcher.join(timeout=1)
    # The child's own peak (VmHWM, reported by it; polled here for a child that did not finish).
    # Not ru_maxrss: a spawned child inherits the parent's high-water mark from before its exec.
    row: dict[str, Any] = {"peak_rss_mb": round(peak_kb[0] / 1024, 1)}
    if killed.is_set():
        row.update(status="killed", error=f"resident memory passed --kill-above {kill_above:g} GB")
        return row
    stdout = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not stdout:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        row.update(status="failed", error=f"exit {proc.returncode}: {tail[0]}")
        return row
    row.update(json.loads(stdout[-1]))
    return row


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of ``a`` against ``b``; an ``a`` of another size (the agent upscaled a small image it
    read as low resolution) is resized to ``b`` first."""
    import cv2

    from agentir.toolbox.metrics import psnr

    if a.shape != b.shape:
        a = cv2.resize(a, (b.shape[1], b.shape[0]), interpolation=cv2.INTER_AREA)
    return round(float(psnr(a.astype(np.float64) / 255.0, b.astype(np.float64) / 255.0)), 3)


def main_bench_sizes(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    if args.child:
        src, dst, tile = args.child
        return _child(src, dst, int(tile))

    from agentir.datasets import read_rgb, write_png
    from agentir.toolbox.degrade import degrade_chain
    from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

    def usage(text: str) -> int:
        print(f"error: {text}", file=sys.stderr)
        return EXIT_USAGE

    try:
        sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        return usage(f"--sizes takes megapixels separated by commas, e.g. 0.3,2,12; got {args.sizes!r}")
    if not sizes or any(not (0.01 <= s <= 100) for s in sizes):
        return usage(f"--sizes must be between 0.01 and 100 megapixels, got {args.sizes!r}")
    names = [d.strip() for d in args.degrade.split(",") if d.strip()]
    unknown = [d for d in names if d not in DEGRADATIONS]
    if not names or unknown:
        return usage(f"--degrade takes degradations from {', '.join(DEGRADATIONS)}; got {args.degrade!r}")
    if "low_resolution" in names:
        return usage("--degrade low_resolution changes the size being measured; leave it out")
    if args.level not in LEVELS:
        return usage(f"--level must be one of {', '.join(LEVELS)}, got {args.level!r}")
    if not args.source.is_file():
        return usage(f"source image {args.source} does not exist; give a clean photo")
    try:
        source = read_rgb(args.source)
    except Exception as exc:
        return usage(f"cannot read the source image {args.source}: {exc}")
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(mp, 0) for mp in sizes]
    if args.whole is not None:
        runs.append((args.whole, 1 << 40))  # a tile threshold no image reaches: whole-image tools
    rows: list[dict[str, Any]] = []
    failed = False
    for mp, threshold in runs:
        clean = mosaic(source, mp)
        h, w = clean.shape[:2]
        tag = f"{mp:g}mp"
        degraded, _ = degrade_chain(clean, names, np.random.default_rng(SEED), levels=[args.level] * len(names))
        src = args.out / f"in_{tag}.png"
        dst = args.out / (f"out_{tag}_whole.png" if threshold else f"out_{tag}.png")
        write_png(src, degraded)
        row: dict[str, Any] = {"megapixels": round(h * w / 1e6, 2), "width": w, "height": h, "tiling": not threshold}
        row.update(_run_child(src, dst, threshold, args.kill_above))
        row["input_psnr"] = _psnr(degraded, clean)
        if row.get("status") not in ("failed", "killed"):
            restored = read_rgb(dst)
            row["output_size"] = f"{restored.shape[1]}x{restored.shape[0]}"
            row["output_psnr"] = _psnr(restored, clean)
        else:
            failed = True
        rows.append(row)
        if not args.quiet:
            print(_line(row), file=sys.stderr, flush=True)
    summary: dict[str, Any] = {
        "command": "agentir bench sizes " + shlex.join(list(argv)),
        "source": str(args.source),
        "degrade": names,
        "level": args.level,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    if args.whole is not None:
        whole = rows[-1]
        tiled = next((r for r in rows[:-1] if r["megapixels"] == whole["megapixels"]), None)
        if tiled is not None and "output_psnr" in tiled and "output_psnr" in whole:
            tag = f"{args.whole:g}mp"
            between = _psnr(read_rgb(args.out / f"out_{tag}.png"), read_rgb(args.out / f"out_{tag}_whole.png"))
            summary["tiled_vs_whole"] = {
                "megapixels": whole["megapixels"],
                "identical": math.isinf(between),  # the tools kept were whole-image ones (never tiled)
                "psnr_between_db": None if math.isinf(between) else between,
                "tiled_psnr": tiled["output_psnr"],
                "whole_psnr": whole["output_psnr"],
                "difference_db": round(tiled["output_psnr"] - whole["output_psnr"], 3),
                "tiled_seconds": tiled.get("seconds"),
                "whole_seconds": whole.get("seconds"),
                "tiled_peak_rss_mb": tiled["peak_rss_mb"],
                "whole_peak_rss_mb": whole["peak_rss_mb"],
            }
    (args.out / "sizes.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(_table(summary))
    return EXIT_FAILED if failed else EXIT_OK


def _line(row: dict[str, Any]) -> str:
    what = row.get("error") or f"{row.get('seconds')} s, {row.get('output_psnr')} dB, {' > '.join(t for t in row.get('tools') or [] if t) or 'no tool'}"
    return f"{row['megapixels']:>6} MP {row['width']}x{row['height']}{'' if row['tiling'] else ' (whole)'}: peak {row['peak_rss_mb']} MB; {what}"


def _table(summary: dict[str, Any]) -> str:
    lines = [
        "| MP | size | tiling | seconds | peak RSS (MB) | PSNR in -> out (dB) | tools |",
        "|---:|---|---|---:|---:|---|---|",
    ]
    for r in summary["rows"]:
        out = r.get("output_psnr")
        lines.append(
            f"| {r['megapixels']} | {r['width']}x{r['height']} | {'tiles' if r['tiling'] else 'whole'} | {r.get('seconds', r.get('status'))} | "
            f"{r['peak_rss_mb']} | {r['input_psnr']} -> {out if out is not None else r.get('error')} | {' > '.join(t for t in r.get('tools') or [] if t)} |"
        )
    tv = summary.get("tiled_vs_whole")
    if tv:
        lines.append("")
        lines.append(
            f"tiled vs whole at {tv['megapixels']} MP: outputs "
            + ("identical (only whole-image tools were kept)" if tv["identical"] else f"{tv['psnr_between_db']} dB apart")
            + "; against the clean image "
            f"{tv['tiled_psnr']} (tiled) vs {tv['whole_psnr']} dB (whole), difference {tv['difference_db']:+.3f} dB"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main_bench_sizes(sys.argv[1:]))
