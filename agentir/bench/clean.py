"""``agentir bench clean``: does the agent leave clean photos and camera frames alone?

A user restoring a photo that needs nothing must get it back unharmed. This benchmark feeds
clean images (photos, and frames sampled from real camera clips) to every policy and scores
each output against its own input:

* mean PSNR of output against input, each image capped at :data:`CAP_DB` (an untouched image
  counts as the cap, so one ruined image is not hidden by a perfect copy's infinity);
* the share of images returned untouched (byte-identical);
* the worst image and its PSNR, and how many fell below :data:`HARM_DB`;
* the share of images on which each degradation was perceived (at ``medium`` or worse): on
  clean input every one of those is a false positive.

It builds a benchmark folder (``OUT/data``: a manifest whose items have no degradations and
whose reference is the input itself) and runs it with the same resumable runner as
``agentir bench`` (``OUT/run``: results log, traces, sampled outputs), so ``--resume`` works.

Sources: image files and folders (recursive), video files (``--frames-per-clip`` frames evenly
spread over the clip), and the clean-data root (a folder holding ``CBSD68/``, ``McMaster/`` and
``Set5/``), of which only the held-out half of CBSD68 is taken unless ``--split all``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentir.bench.runner import POLICIES, BenchError, parse_policies

#: Per-image PSNR cap (dB) for the mean: a copy is infinitely close; 50 dB is invisible.
CAP_DB = 50.0
#: An output this far from its clean input (dB) is counted as harmed.
HARM_DB = 35.0
#: What the run builds and reads below ``OUT``.
DATA, RUN = "data", "run"
VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".mov", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")
#: Policies run by default: the agent, its ablations and the paper's reflection.
DEFAULT_CLEAN_POLICIES = ("default", "paper", "fixed", "no-reflection", "no-rollback", "random", "random-gt")
#: The eight degradations (kept here so the report needs no toolbox import).
DEGRADATIONS = ("low_resolution", "noise", "jpeg", "dark", "haze", "motion_blur", "defocus_blur", "rain")


def _is_clean_root(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("CBSD68", "McMaster", "Set5"))


def _video_frames(path: Path, count: int) -> list[tuple[str, np.ndarray]]:
    """``count`` frames evenly spread over the clip, as ``(name, RGB uint8)``."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise BenchError(f"{path}: cannot open this video (not a video file, or a codec OpenCV lacks); pass image files or another clip")
        # Decoded in order: seeking is not frame-exact in every container, and the frame count a
        # container states may be off by one, so the last wanted frame is the last one decoded.
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        wanted = sorted({int(round(i * (total - 1) / max(1, count - 1))) for i in range(count)}) if total > 1 else [0]
        frames: list[tuple[str, np.ndarray]] = []
        index, last = 0, None
        while len(frames) < len(wanted):
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if index == wanted[len(frames)]:
                frames.append((f"{path.stem}_f{index:05d}", np.ascontiguousarray(bgr[:, :, ::-1])))
            last = (index, bgr)
            index += 1
        if len(frames) < len(wanted) and last is not None and (not frames or frames[-1][0] != f"{path.stem}_f{last[0]:05d}"):
            frames.append((f"{path.stem}_f{last[0]:05d}", np.ascontiguousarray(last[1][:, :, ::-1])))
        if not frames:
            raise BenchError(f"{path}: no frame could be decoded; check the file")
        return frames
    finally:
        cap.release()


def collect_sources(sources: Sequence[str], *, frames_per_clip: int, split: str) -> list[tuple[str, str, np.ndarray | Path]]:
    """``(kind, name, image or path)`` for every clean image: kind ``photo`` or ``frame``.

    Raises:
        BenchError: a source that does not exist, or nothing to run.
    """
    from agentir.toolbox.splits import split_images

    out: list[tuple[str, str, np.ndarray | Path]] = []
    for raw in sources:
        path = Path(raw)
        if not path.exists():
            raise BenchError(f"{path}: no such file or folder; pass clean images, folders of them, video clips or the clean-data root")
        if path.is_dir() and _is_clean_root(path):
            fit, held = split_images(path)
            chosen = held if split == "held-out" else fit + held
            out += [("photo", f"{p.parent.name}_{p.stem}", p) for p in chosen]
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                    out.append(("photo", p.relative_to(path).with_suffix("").as_posix().replace("/", "_"), p))
                elif p.suffix.lower() in VIDEO_SUFFIXES and p.is_file():
                    out += [("frame", n, f) for n, f in _video_frames(p, frames_per_clip)]
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            out += [("frame", n, f) for n, f in _video_frames(path, frames_per_clip)]
        else:
            out.append(("photo", path.stem, path))
    if not out:
        raise BenchError(f"no clean images found in {', '.join(sources)}; pass image files, folders or video clips")
    names = [n for _, n, _ in out]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BenchError(f"two sources give the image name {dup!r}; pass them in separate runs or rename one")
    return out


def build_clean_set(sources: Sequence[str], data_dir: Path, *, frames_per_clip: int = 4, split: str = "held-out") -> dict[str, Any]:
    """Write the clean images and a benchmark manifest (no degradations, reference = input) into ``data_dir``."""
    from agentir.bus.files import write_text_atomic
    from agentir.datasets import MANIFEST_VERSION, read_rgb, write_png

    items: list[dict[str, Any]] = []
    skipped: list[str] = []
    for kind, name, src in collect_sources(sources, frames_per_clip=frames_per_clip, split=split):
        try:
            img = read_rgb(src) if isinstance(src, Path) else src
        except Exception as exc:  # a corrupt file: named, skipped, the rest goes on
            skipped.append(f"{src}: {exc}")
            print(f"skipped {src}: {exc}", file=sys.stderr)
            continue
        rel = Path("clean", kind, f"{name}.png")
        write_png(data_dir / rel, img)
        items.append(
            {
                "group": "clean",
                "combo": kind,
                "degradations": [],
                "levels": [],
                "level": None,
                "source": str(src) if isinstance(src, Path) else name,
                "stem": name,
                "lq": rel.as_posix(),
                "hq": rel.as_posix(),
                "lq_shape": list(img.shape),
                "hq_shape": list(img.shape),
            }
        )
    manifest = {
        "format": "agentir-benchmark",
        "version": MANIFEST_VERSION,
        "mode": "clean",
        "sources": [str(s) for s in sources],
        "groups": ["clean"],
        "split": split,
        "frames_per_clip": frames_per_clip,
        "combos": {"clean": sorted({it["combo"] for it in items})},
        "skipped": skipped,
        "items": items,
    }
    manifest_path = data_dir / "manifest.json"
    text = json.dumps(manifest, indent=1) + "\n"
    # Rebuilding the same set keeps the manifest's bytes (and so --resume) intact.
    if not manifest_path.is_file() or manifest_path.read_text(encoding="utf-8") != text:
        write_text_atomic(manifest_path, text)
    return manifest


def summarise(records: Sequence[Mapping[str, Any]], policies: Sequence[str]) -> dict[str, Any]:
    """Per policy (and per kind, photo / frame): the clean-set scores of the module docstring."""

    def block(recs: list[Mapping[str, Any]]) -> dict[str, Any]:
        scored = [r for r in recs if r.get("psnr") is not None]
        if not scored:
            return {"images": 0}
        capped = [min(float(r["psnr"]), CAP_DB) for r in scored]
        worst = min(scored, key=lambda r: float(r["psnr"]))
        perceived = {d: float(np.mean([d in (r.get("perceived") or []) for r in scored])) for d in DEGRADATIONS}
        return {
            "images": len(scored),
            "psnr_vs_input": round(float(np.mean(capped)), 2),
            "untouched": round(float(np.mean([float(r["psnr"]) >= 99.0 for r in scored])), 3),
            "below_35db": int(sum(c < HARM_DB for c in capped)),
            "worst": {"image": worst["id"], "psnr": round(min(float(worst["psnr"]), CAP_DB), 2), "done": list(worst.get("done") or [])},
            "false_positive": {d: round(v, 3) for d, v in perceived.items() if v > 0},
            "failed": int(sum(r.get("status") == "failed" for r in recs)),
            "seconds_per_image": round(float(np.mean([float(r.get("seconds") or 0.0) for r in scored])), 3),
        }

    out: dict[str, Any] = {}
    for name in policies:
        recs = [r for r in records if r["policy"] == name]
        kinds = sorted({str(r.get("combo", "")) for r in recs})
        out[name] = {"all": block(recs), **{k: block([r for r in recs if r.get("combo") == k]) for k in kinds}}
    return out


def format_table(summary: Mapping[str, Any]) -> str:
    """A markdown table: one row per policy."""
    lines = [
        f"| policy | images | PSNR vs input (dB, cap {CAP_DB:.0f}) | untouched | below {HARM_DB:.0f} dB | worst image (dB) | false positives (share of images) |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, kinds in summary.items():
        b = kinds["all"]
        if not b.get("images"):
            lines.append(f"| {name} | 0 | | | | | |")
            continue
        fp = ", ".join(f"{d} {v:.0%}" for d, v in sorted(b["false_positive"].items(), key=lambda kv: -kv[1])) or "none"
        lines.append(
            f"| {name} | {b['images']} | {b['psnr_vs_input']:.2f} | {b['untouched']:.0%} | {b['below_35db']} | "
            f"{b['worst']['image']} ({b['worst']['psnr']:.2f}; {' > '.join(b['worst']['done']) or 'nothing done'}) | {fp} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="agentir bench clean",
        description="Clean photos and camera frames through every policy: is the output still its input? (see agentir/bench/clean.py)",
    )
    p.add_argument("sources", nargs="+", help="clean image files or folders, video clips, or the clean-data root (CBSD68/McMaster/Set5)")
    p.add_argument("-o", "--out", required=True, help="output folder (data/ and run/ are made in it)")
    p.add_argument("--policies", default=",".join(DEFAULT_CLEAN_POLICIES), help=f"comma-separated, from {', '.join(POLICIES)}")
    p.add_argument("--frames-per-clip", type=int, default=4, help="frames sampled evenly from each video clip (default 4)")
    p.add_argument("--split", choices=("held-out", "all"), default="held-out", help="for the clean-data root: held-out half of CBSD68 (default) or all")
    p.add_argument("--workers", type=int, default=2, help="images restored at once per policy")
    p.add_argument("--resume", action="store_true", help="keep the results already in OUT/run")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main_bench_clean(argv: Sequence[str]) -> int:
    """Entry point of ``agentir bench clean``; returns the exit code."""
    import anyio

    from agentir.bench.runner import run_bench
    from agentir.bus.files import write_text_atomic

    args = build_parser().parse_args(list(argv))
    out = Path(args.out)
    try:
        if args.frames_per_clip < 1:
            raise BenchError(f"--frames-per-clip must be at least 1, got {args.frames_per_clip}")
        names = parse_policies(args.policies)
        manifest = build_clean_set(args.sources, out / DATA, frames_per_clip=args.frames_per_clip, split=args.split)

        async def go() -> dict[str, Any]:
            return await run_bench(
                out / DATA, out / RUN, policies=names, workers=args.workers, resume=args.resume, overwrite=not args.resume, progress=not args.quiet
            )

        run = anyio.run(go)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarise(run["records"], names)
    doc = {
        "command": "agentir bench clean " + " ".join(shlex.quote(a) for a in argv),
        "images": len(manifest["items"]),
        "kinds": {k: sum(it["combo"] == k for it in manifest["items"]) for k in manifest["combos"]["clean"]},
        "cap_db": CAP_DB,
        "policies": summary,
    }
    write_text_atomic(out / "clean_summary.json", json.dumps(doc, indent=1) + "\n")
    table = format_table(summary)
    write_text_atomic(out / "clean_summary.md", table + "\n")
    if args.json:
        print(json.dumps(doc, separators=(",", ":")))
    else:
        print(table)
    return 0
