"""Build the benchmark: degrade clean images with the ``BENCHMARK.md`` recipe and write them to disk.

Layout written under ``out_dir``::

    lq/<group>/<combo>/<stem>.png     degraded input (4x smaller when the combo has low_resolution)
    hq/<group>/<combo>/<stem>.png     the clean reference (cropped to a multiple of 4)
    manifest.json                     written last; every parameter drawn, relative paths, seed

``<combo>`` is the degradation names joined by ``+`` in the order applied (``rain+haze``).
In *levels* mode (``levels=[...]``) every single degradation is written at each requested
severity level instead: ``lq/single/<degradation>/<level>/<stem>.png`` (and the same under
``hq/``), with the same manifest item format (``group`` is ``"single"``, ``combo`` the
degradation, ``level`` the level).

Reproducibility: each image's generator is seeded from ``(seed, crc32(task), crc32(source
file name), repeat)`` where ``task`` is ``"<group>/<combo>"`` or ``"single/<degradation>/<level>"``,
so a result depends neither on which other groups / images are built nor on their order. Every
file is written to a temporary name and renamed into place; the manifest goes last, so a
directory with a ``manifest.json`` is complete.

Run as a script: ``python -m agentir.datasets CLEAN_DIR OUT_DIR [--groups A B C] [--per-combo 20]
[--seed 0] [--levels low medium ...] [--score]``.
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import structlog
from tqdm import tqdm

from agentir.imageio import load_image, save_png_atomic, write_text_atomic
from agentir.toolbox.degrade import COMBINATIONS, crop_to_multiple, degrade_chain
from agentir.toolbox.vocab import DEGRADATIONS, level_index

__all__ = [
    "IMAGE_SUFFIXES",
    "MANIFEST_VERSION",
    "build_benchmark",
    "list_images",
    "load_manifest",
    "read_rgb",
    "score_inputs",
    "write_png",
]

log = structlog.get_logger(__name__)

#: File suffixes read as clean images (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Which images of a folder to use (see :func:`build_benchmark`).
SPLITS = ("all", "train", "held-out")
#: Bumped when the manifest layout changes incompatibly.
MANIFEST_VERSION = 1
_CROP = 4


def list_images(clean_dir: str | os.PathLike[str]) -> list[Path]:
    """Sorted image files directly inside ``clean_dir`` (by file name).

    Raises:
        FileNotFoundError: ``clean_dir`` does not exist or is not a directory.
        ValueError: it holds no image files, or two images share a stem (``a.png`` and ``a.jpg``).
    """
    d = Path(clean_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"clean image directory not found: {d} (give a folder of PNG/JPG images)")
    files = sorted((p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {d}")
    stems: dict[str, Path] = {}
    for p in files:
        if p.stem in stems:
            raise ValueError(f"two images share the stem {p.stem!r} ({stems[p.stem].name}, {p.name}) in {d}; rename one")
        stems[p.stem] = p
    return files


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as RGB ``uint8`` ``H x W x 3`` (:func:`agentir.imageio.load_image`).

    Raises:
        ValueError: the file cannot be decoded as an image (an ``ImageInputError`` naming it).
    """
    return load_image(path)


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> None:
    """Write an RGB ``uint8`` image as PNG atomically (:func:`agentir.imageio.save_png_atomic`)."""
    save_png_atomic(path, rgb)


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


def _image_seed(seed: int, task: str, source: str, repeat: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), zlib.crc32(task.encode("utf-8")), zlib.crc32(source.encode("utf-8")), int(repeat)])


def _check_groups(groups: Iterable[str]) -> list[str]:
    if isinstance(groups, str):
        groups = list(groups)  # "AB" -> ["A", "B"]
    out = list(dict.fromkeys(groups))
    unknown = [g for g in out if g not in COMBINATIONS]
    if unknown or not out:
        raise ValueError(f"unknown or empty groups {unknown or out!r}; choose from {', '.join(COMBINATIONS)}")
    return out


def build_benchmark(
    clean_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    groups: Sequence[str] = ("A", "B", "C"),
    per_combo: int | None = 20,
    seed: int = 0,
    levels: Sequence[str] | None = None,
    progress: bool = True,
    split: str = "all",
) -> dict:
    """Degrade the clean images of ``clean_dir`` and write the benchmark to ``out_dir``.

    Args:
        clean_dir: folder of clean images (read sorted by file name; see :func:`list_images`).
        out_dir: destination (created; existing files with the same names are replaced).
        groups: benchmark groups to build (``A``, ``B``, ``C``); ignored in levels mode.
        per_combo: images per combination (the first ones in sorted order; cycled when there are
            fewer, repeats named ``<stem>_r<k>``); ``None`` uses every image once.
        seed: base seed; every image gets its own generator derived from it (module docstring).
        levels: ``None`` builds the combinations with the test-set parameters; a list of level
            names builds every single degradation at each of those levels instead.
        progress: show a tqdm progress bar.
        split: ``"all"`` images, or only the ``"train"`` (first half by name) or ``"held-out"``
            (second half) of ``clean_dir``: the project fits perception, trains tools and
            explores on the first half of CBSD68 (plus McMaster and Set5), so benchmarks of
            learned components use ``held-out``.

    Returns:
        The manifest (also written to ``out_dir/manifest.json``): ``version``, ``mode``
        (``"combinations"`` / ``"levels"``), ``seed``, ``clean_dir``, ``groups``, ``levels``,
        ``per_combo``, ``combos`` (group -> combo names), ``skipped`` (unreadable or too small
        files with the reason) and ``items``: one dict per written pair with ``group``, ``combo``,
        ``degradations``, ``levels``, ``source`` (clean file name), ``stem``, ``lq`` / ``hq``
        (paths relative to ``out_dir``), ``lq_shape`` / ``hq_shape``, ``seed`` (the image's
        seed-sequence entropy) and ``params`` (one dict per degradation, as returned by
        :func:`agentir.toolbox.degrade.degrade`).

    Raises:
        FileNotFoundError: ``clean_dir`` is missing.
        ValueError: no usable images, bad ``groups`` / ``levels`` / ``per_combo``.
    """
    if per_combo is not None and (not isinstance(per_combo, int) or per_combo < 1):
        raise ValueError(f"per_combo must be a positive int or None, got {per_combo!r}")
    if isinstance(levels, str):
        raise ValueError(f"levels must be a list of level names, not the string {levels!r}")
    level_list: list[str] | None = None
    if levels is not None:
        level_list = list(dict.fromkeys(levels))
        if not level_list:
            raise ValueError("levels is empty; give level names such as ['low', 'medium'] or None for combinations")
        for lv in level_list:
            level_index(lv)
        group_list: list[str] = []
    else:
        group_list = _check_groups(groups)

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    files = list_images(clean_dir)
    half = len(files) // 2
    files = {"all": files, "train": files[:half], "held-out": files[half:]}[split]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    images: list[tuple[str, np.ndarray]] = []
    skipped: list[dict[str, str]] = []
    for f in files:
        try:
            images.append((f.name, np.ascontiguousarray(crop_to_multiple(read_rgb(f), _CROP))))
        except ValueError as exc:
            log.warning("dataset.image_skipped", path=str(f), reason=str(exc))
            skipped.append({"source": f.name, "reason": str(exc)})
    if not images:
        raise ValueError(f"none of the {len(files)} image files in {clean_dir} could be used; see the skipped reasons above")

    # (group, combo name, degradations, levels per degradation, task key, lq/hq subfolder)
    tasks: list[tuple[str, str, tuple[str, ...], list[str | None], str]] = []
    combos: dict[str, list[str]] = {}
    if level_list is None:
        for g in group_list:
            combos[g] = ["+".join(c) for c in COMBINATIONS[g]]
            for c in COMBINATIONS[g]:
                name = "+".join(c)
                tasks.append((g, name, c, [None] * len(c), f"{g}/{name}"))
    else:
        combos["single"] = list(DEGRADATIONS)
        for d in DEGRADATIONS:
            for lv in level_list:
                tasks.append(("single", d, (d,), [lv], f"single/{d}/{lv}"))

    n = len(images) if per_combo is None else per_combo
    items: list[dict[str, Any]] = []
    bar = tqdm(total=len(tasks) * n, disable=not progress, unit="img", desc="benchmark")
    try:
        for group, combo, names, lvls, task in tasks:
            bar.set_postfix_str(task, refresh=False)
            for i in range(n):
                source, clean = images[i % len(images)]
                repeat = i // len(images)
                stem = Path(source).stem + (f"_r{repeat}" if repeat else "")
                ss = _image_seed(seed, task, source, repeat)
                lq, params = degrade_chain(clean, names, np.random.default_rng(ss), levels=lvls)
                rel_lq = Path("lq", task, f"{stem}.png")
                rel_hq = Path("hq", task, f"{stem}.png")
                write_png(out / rel_lq, lq)
                write_png(out / rel_hq, clean)
                items.append(
                    {
                        "group": group,
                        "combo": combo,
                        "degradations": list(names),
                        "levels": lvls,
                        "level": lvls[0] if level_list is not None else None,
                        "source": source,
                        "stem": stem,
                        "lq": rel_lq.as_posix(),
                        "hq": rel_hq.as_posix(),
                        "lq_shape": list(lq.shape),
                        "hq_shape": list(clean.shape),
                        "seed": [int(e) for e in cast(Sequence[int], ss.entropy)],  # _image_seed gives a list
                        "params": params,
                    }
                )
                bar.update(1)
    finally:
        bar.close()

    manifest = {
        "format": "agentir-benchmark",
        "version": MANIFEST_VERSION,
        "mode": "combinations" if level_list is None else "levels",
        "seed": int(seed),
        "clean_dir": str(Path(clean_dir).resolve()),
        "groups": group_list if level_list is None else ["single"],
        "levels": level_list,
        "per_combo": per_combo,
        "split": split,
        "combos": combos,
        "skipped": skipped,
        "items": items,
    }
    _write_json(out / "manifest.json", manifest)
    log.info("dataset.built", out_dir=str(out), items=len(items), skipped=len(skipped), mode=manifest["mode"])
    return manifest


def load_manifest(out_dir: str | os.PathLike[str]) -> dict:
    """Read ``out_dir/manifest.json`` written by :func:`build_benchmark`.

    Raises:
        FileNotFoundError: no manifest (the build did not finish, or the wrong folder).
        ValueError: the manifest has an unsupported version.
    """
    path = Path(out_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in {out_dir}; build the benchmark first (build_benchmark)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path} has manifest version {manifest.get('version')!r}; this code reads version {MANIFEST_VERSION}")
    return manifest


def score_inputs(out_dir: str | os.PathLike[str], manifest: dict | None = None) -> dict:
    """Score the degraded inputs themselves against their references (the "no restoration" baseline).

    Low-resolution inputs are upscaled x4 bicubic first (:func:`agentir.toolbox.metrics.score`).

    Returns:
        ``{"combos": {"<group>/<combo>[/<level>]": {"psnr", "ssim", "n"}}, "groups": {group:
        {"psnr", "ssim"}}}`` where a group's score is the mean over its combinations' means.
    """
    from agentir.toolbox.metrics import score  # local: only the scoring path needs it

    out = Path(out_dir)
    manifest = manifest if manifest is not None else load_manifest(out)
    per: dict[str, list[dict[str, float]]] = {}
    group_of: dict[str, str] = {}
    for it in manifest["items"]:
        key = f"{it['group']}/{it['combo']}" + (f"/{it['level']}" if it.get("level") else "")
        s = score(read_rgb(out / it["lq"]), read_rgb(out / it["hq"]))
        per.setdefault(key, []).append(s)
        group_of[key] = it["group"]
    combos = {k: {"psnr": float(np.mean([s["psnr"] for s in v])), "ssim": float(np.mean([s["ssim"] for s in v])), "n": len(v)} for k, v in per.items()}
    groups: dict[str, dict[str, float]] = {}
    for g in dict.fromkeys(group_of.values()):
        ks = [k for k in combos if group_of[k] == g]
        groups[g] = {
            "psnr": float(np.mean([combos[k]["psnr"] for k in ks])),
            "ssim": float(np.mean([combos[k]["ssim"] for k in ks])),
        }
    return {"combos": combos, "groups": groups}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m agentir.datasets", description=__doc__.splitlines()[0])
    ap.add_argument("clean_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--groups", nargs="+", default=["A", "B", "C"])
    ap.add_argument("--per-combo", type=int, default=20, help="images per combination (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--levels", nargs="+", default=None, help="build single degradations at these levels instead")
    ap.add_argument("--score", action="store_true", help="print the degraded-input PSNR/SSIM afterwards")
    args = ap.parse_args(argv)
    manifest = build_benchmark(
        args.clean_dir,
        args.out_dir,
        groups=args.groups,
        per_combo=args.per_combo or None,
        seed=args.seed,
        levels=args.levels,
    )
    print(f"wrote {len(manifest['items'])} pairs to {args.out_dir} ({len(manifest['skipped'])} files skipped)")
    if args.score:
        result = score_inputs(args.out_dir, manifest)
        for k, v in result["combos"].items():
            print(f"{k:50s} PSNR {v['psnr']:6.2f}  SSIM {v['ssim']:.4f}  n={v['n']}")
        for g, v in result["groups"].items():
            print(f"group {g:44s} PSNR {v['psnr']:6.2f}  SSIM {v['ssim']:.4f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
