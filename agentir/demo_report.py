"""Before/after pictures and numbers for a restored folder (used by ``make demo``).

``python -m agentir.demo_report DEGRADED_DIR RESTORED_DIR [CLEAN_DIR] -o montage.png``

For every degraded image with a restored output (``RESTORED/<rel>.png``) it draws one row:
degraded input (upscaled x4 when it is small, like the benchmark scores it) | restored |
clean reference (when a file of the same stem exists in CLEAN_DIR). With references it prints
PSNR / SSIM before and after, per image and on average.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from agentir.imageio import collect_inputs, load_image, output_paths, save_png_atomic
from agentir.toolbox.degrade import bicubic_resize
from agentir.toolbox.metrics import score

_LABEL_H = 18


def _label(img: np.ndarray, text: str) -> np.ndarray:
    canvas = Image.new("RGB", (img.shape[1], img.shape[0] + _LABEL_H), "white")
    canvas.paste(Image.fromarray(img), (0, _LABEL_H))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0))
    return np.asarray(canvas)


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BICUBIC))


def build_report(degraded: Path, restored: Path, clean: Path | None) -> tuple[np.ndarray, list[dict]]:
    rows, records = [], []
    for path, rel in collect_inputs([degraded]):
        out_png, trace_json = output_paths(restored, rel)
        if not out_png.exists():
            continue
        lq, out = load_image(path), load_image(out_png)
        ref_path = next((p for p in sorted(clean.glob(f"{rel.stem}.*"))), None) if clean else None
        ref = load_image(ref_path) if ref_path else None
        trace = json.loads(trace_json.read_text()) if trace_json.exists() else {}
        h, w = ref.shape[:2] if ref is not None else out.shape[:2]
        shown_lq = bicubic_resize(lq, 4) if lq.shape[0] * 4 == h else lq
        record = {"image": rel.as_posix(), "done": trace.get("done", []), "tool_calls": trace.get("tool_calls"), "rollbacks": trace.get("rollbacks")}
        before_text, after_text = "degraded input", "restored: " + (" > ".join(trace.get("done", [])) or "unchanged")
        if ref is not None and out.shape == ref.shape:
            before, after = score(lq, ref), score(out, ref)
            record.update(psnr_before=before["psnr"], psnr_after=after["psnr"], ssim_before=before["ssim"], ssim_after=after["ssim"])
            before_text += f"  {before['psnr']:.2f} dB"
            after_text += f"  {after['psnr']:.2f} dB"
        panels = [_label(_fit(shown_lq, h, w), before_text), _label(_fit(out, h, w), after_text)]
        if ref is not None:
            panels.append(_label(_fit(ref, h, w), "clean reference"))
        rows.append(np.concatenate(panels, axis=1))
        records.append(record)
    if not rows:
        raise ValueError(f"no restored images found in {restored} for the inputs in {degraded}")
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0), records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentir.demo_report", description=__doc__.splitlines()[0])
    parser.add_argument("degraded", type=Path)
    parser.add_argument("restored", type=Path)
    parser.add_argument("clean", type=Path, nargs="?")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        montage, records = build_report(args.degraded, args.restored, args.clean)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    save_png_atomic(args.output, montage)
    scored = [r for r in records if "psnr_after" in r]
    for r in scored:
        print(
            f"{r['image']:<28} PSNR {r['psnr_before']:6.2f} -> {r['psnr_after']:6.2f} dB   SSIM {r['ssim_before']:.3f} -> {r['ssim_after']:.3f}   ({' > '.join(r['done']) or 'unchanged'})"
        )
    if scored:

        def mean(k: str) -> float:
            return float(np.mean([r[k] for r in scored]))

        print(f"{'mean':<28} PSNR {mean('psnr_before'):6.2f} -> {mean('psnr_after'):6.2f} dB   SSIM {mean('ssim_before'):.3f} -> {mean('ssim_after'):.3f}")
    print(f"before/after picture: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
