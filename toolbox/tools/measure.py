"""Measure every classical tool's PSNR gain over its degraded input (a benchmark, not a test).

Usage::

    python -m agentir.toolbox.tools.measure --clean ../shared/data/clean/CBSD68 --n 10

For each degradation, at levels medium / high / very_high and with the test-set parameters
(``test``), the first ``--n`` images (sorted, cropped to multiples of 4) are degraded with
``agentir.toolbox.degrade.degrade`` and every tool registered for that degradation is run on them.
The table shows the mean PSNR gain in dB over the degraded input (for ``low_resolution``: over
bicubic x4 upscaling, as the benchmark scores it) and the mean seconds per image. Runs on one
thread so that timings compare across tools.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

LEVELS_MEASURED: tuple[str, ...] = ("medium", "high", "very_high", "test")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float RGB images in ``[0, 1]``."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def load_images(folder: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` PNG/JPEG images of ``folder`` (sorted) as RGB uint8, cropped to multiples of 4."""
    from agentir.toolbox.degrade import crop_to_multiple

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise SystemExit(f"no images in {folder}; pass --clean pointing at a folder of PNG images")
    out = []
    for p in files[:n]:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {p}")
        out.append(np.ascontiguousarray(crop_to_multiple(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))))
    return out


def measure(images: list[np.ndarray], degradations: list[str], levels: list[str], seed: int = 0) -> list[dict]:
    """Return one row per (degradation, level, tool): mean gain (dB), mean seconds, base PSNR."""
    import agentir.toolbox.tools  # noqa: F401 - registers the tools
    from agentir.toolbox.base import TOOLS, tools_for
    from agentir.toolbox.degrade import bicubic_resize, degrade

    rows = []
    for deg in degradations:
        names = tools_for(deg, include_manual=True)
        for level in levels:
            rng = np.random.default_rng(seed)
            gains: dict[str, list[float]] = {n: [] for n in names}
            secs: dict[str, list[float]] = {n: [] for n in names}
            bases = []
            for img in images:
                clean = img.astype(np.float32) / 255.0
                bad, _ = degrade(img, deg, rng, level=None if level == "test" else level)
                badf = bad.astype(np.float32) / 255.0
                ref = bicubic_resize(badf, 4.0) if deg == "low_resolution" else badf
                base = _psnr(np.clip(ref, 0, 1), clean)
                bases.append(base)
                x = torch.from_numpy(badf).permute(2, 0, 1)[None]
                for n in names:
                    tool = TOOLS.get(n)
                    t0 = time.perf_counter()
                    y = tool(x)
                    secs[n].append(time.perf_counter() - t0)
                    out = y[0].permute(1, 2, 0).numpy()
                    gains[n].append(_psnr(out, clean) - base)
            for n in names:
                rows.append(
                    {
                        "degradation": deg,
                        "level": level,
                        "tool": n,
                        "gain_db": float(np.mean(gains[n])),
                        "min_gain_db": float(np.min(gains[n])),
                        "seconds": float(np.mean(secs[n])),
                        "base_psnr": float(np.mean(bases)),
                    }
                )
    return rows


def format_table(rows: list[dict]) -> str:
    """A Markdown table: one line per (degradation, tool), one gain column per level."""
    levels = list(dict.fromkeys(r["level"] for r in rows))
    keys = list(dict.fromkeys((r["degradation"], r["tool"]) for r in rows))
    by = {(r["degradation"], r["tool"], r["level"]): r for r in rows}
    head = "| degradation | tool | " + " | ".join(f"{lv} dB (min)" for lv in levels) + " | s/img |"
    lines = [head, "|" + "---|" * (len(levels) + 3)]
    for deg, tool in keys:
        cells = []
        for lv in levels:
            r = by.get((deg, tool, lv))
            cells.append(f"{r['gain_db']:+.2f} ({r['min_gain_db']:+.1f})" if r else "")
        sec = np.mean([by[(deg, tool, lv)]["seconds"] for lv in levels if (deg, tool, lv) in by])
        lines.append(f"| {deg} | {tool} | " + " | ".join(cells) + f" | {sec:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the gain table (and the degraded-input PSNR per level)."""
    from agentir.toolbox.vocab import DEGRADATIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clean", type=Path, required=True, help="folder of clean images (e.g. CBSD68)")
    ap.add_argument("--n", type=int, default=10, help="number of images (default 10)")
    ap.add_argument("--degradations", nargs="*", default=list(DEGRADATIONS), choices=list(DEGRADATIONS))
    ap.add_argument("--levels", nargs="*", default=list(LEVELS_MEASURED), choices=list(LEVELS_MEASURED))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    images = load_images(args.clean, args.n)
    rows = measure(images, args.degradations, args.levels, args.seed)
    print(format_table(rows))
    print()
    for deg in args.degradations:
        bases = {r["level"]: r["base_psnr"] for r in rows if r["degradation"] == deg}
        print(f"degraded-input PSNR {deg}: " + ", ".join(f"{k} {v:.2f}" for k, v in bases.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
