"""``agentir bench perception DATA... [--split held-out]``: how well perception sees the degradations.

Scores a perception policy (default ``analytic``) on one or more benchmark folders built by
``agentir degrade`` and prints, and writes as JSON (``--out``, default
``<first DATA>/bench/perception.json``):

* **mixed** (items of groups A / B / C, 2-3 degradations with the test-set parameters): per
  degradation presence accuracy, precision and recall (present = ``medium`` or worse), with the
  true/false positive/negative counts, their mean, and the fraction of images whose whole set of
  present degradations is right; presence accuracy per group too.
* **singles** (``agentir degrade --levels ...`` items: one degradation at one level): per
  degradation the exact-level accuracy on its own images, the within-one-level accuracy, the
  presence accuracy, and a 5 x 5 confusion matrix (rows: true level ``very_low .. very_high``,
  columns: predicted). The ``very_low`` row holds the *other* degradations' single images, on
  which this degradation is absent, so the matrix also shows false alarms; ``exact_all`` is the
  exact accuracy over the whole matrix. ``low_resolution`` has one level in the benchmark (every
  level is the same x4 downscale, labelled ``high``), so its exact accuracy is its presence
  accuracy.
  Per combination (``combos``): the fraction of images whose present set is right, the recall
  of each degradation present in it and the false "present" rates of the others (e.g. motion
  blur before an x4 downscale).
* **clean**: the clean references (each once), where every degradation is absent: the rate at
  which each is called present.
* **real content** (``--real-clean PATH``, repeatable; no ``DATA`` needed): real photos and
  camera frames that are clean (every degradation absent): per set, the rate at which each
  degradation is called present and the share of images with nothing present. ``PATH`` is an
  image folder or file, or a clip folder or file (``--frames-per-clip`` evenly spaced frames of
  each clip, default 4, decoded sequentially). Under ``--split held-out`` fit content is
  dropped with a warning: images with the pixels of a calibration fit photo, and the fit clips
  of :func:`agentir.agent_policies.perception.realdata.split_clips` (the first 10 ``asl_*`` clips).
* **report-only** (``--report PATH``, repeatable; e.g. ``../shared/data/real/RNI15``, real noisy
  photos without a clean reference): per image what perception finds (every degradation at
  medium or worse, and the noise level and score), and per set how often each is found.
* **speed**: milliseconds per image of ``perceive`` and of ``rate`` (one degradation, mean and
  slowest over the eight) at 512 x 512 and 1024 x 1024 (one benchmark image resized), median and
  minimum over ``--repeats`` runs on one thread after a warm-up; and the mean perceive time over
  the benchmark images themselves.

**Truth.** Every item's true level per degradation comes from the parameters the manifest says
were drawn, mapped to the nearest severity level by the calibration's own
:func:`agentir.agent_policies.perception.calibrate.label_from_params` (e.g. Gaussian sigma 37 -> high); a
degradation not applied is ``very_low``.

**Held-out split.** The shipped calibration was fitted on McMaster + Set5 + the first half (34) of
CBSD68 sorted by file name (:func:`agentir.agent_policies.perception.calibrate.split_images`), so honest
numbers use other images only: the last 34 CBSD68 images, or any images of your own. The split is
enforced by *content*, not by file name: every fit image is loaded and cropped to a multiple of 4
exactly as ``agentir degrade`` stores references, and an item whose clean reference
(``hq``) has the same pixels as a fit image is a fit item. With ``--split held-out`` (the default)
fit items are dropped with a warning (an error when nothing is left); with ``--split all`` they
are kept and the report is flagged ``includes_fit_images``. When the clean folders of the fit set
(``--clean-root``, default ``$AGENTIR_CLEAN_ROOT`` or ``/work/shared/data/clean``) are not there,
the split cannot be checked: a warning says so and every item counts as held out (right for
images you never trained on).

Build held-out data, for example::

    mkdir held && for f in $(ls CBSD68 | sort | tail -34); do ln -s "$PWD/CBSD68/$f" held/; done
    agentir degrade held perc_mixed --per-combo 34
    agentir degrade held perc_levels --per-combo 34 --levels low,medium,high,very_high
    agentir bench perception perc_mixed perc_levels

Real content, e.g. (the tables of ``docs/PERCEPTION.md``)::

    agentir bench perception --real-clean ../shared/data/video --real-clean ../shared/data/clean/CBSD68 \
        --report ../shared/data/real/RNI15 --no-speed --out out/perc_real.json

Exit codes: 0 done; 1 some images could not be read (one line each on stderr, the rest scored);
2 usage error (missing benchmark, nothing held out, unknown policy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentir.bench.runner import BenchError, BenchItemError, _safe_path, item_id, open_benchmark
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS, PRESENT_AT, level_index

__all__ = [
    "build_parser",
    "confusion_stats",
    "evaluate_real",
    "fit_fingerprints",
    "main_bench_perception",
    "presence_stats",
    "true_levels",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PRESENT = level_index(PRESENT_AT)  # level index from which a degradation counts as present ("medium")
DEFAULT_CLEAN_ROOT = "/work/shared/data/clean"
SPEED_SIZES = (512, 1024)


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# truth and split
# --------------------------------------------------------------------------------------------


def true_levels(item: Mapping[str, Any]) -> dict[str, int]:
    """Level index (0..4) of every degradation of a manifest item, from its drawn parameters.

    Raises:
        BenchItemError: the item has no usable ``params`` (rebuild the benchmark).
    """
    from agentir.agent_policies.perception.calibrate import label_from_params

    params = item.get("params")
    if not isinstance(params, list) or len(params) != len(item.get("degradations", [])):
        raise BenchItemError(item_id(item), "manifest item has no drawn parameters per degradation; rebuild the benchmark with `agentir degrade`")
    out = dict.fromkeys(DEGRADATIONS, 0)
    try:
        for p in params:
            out[p["name"]] = label_from_params(p)
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchItemError(item_id(item), f"cannot map the drawn parameters to a level ({exc!r}); rebuild the benchmark with `agentir degrade`") from None
    return out


def _fingerprint(img: np.ndarray) -> str:
    h = hashlib.sha256(repr(img.shape).encode())
    h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()


def fit_fingerprints(clean_root: str | os.PathLike[str]) -> dict[str, str] | None:
    """``{pixel fingerprint: file name}`` of the calibration's fit images, as ``agentir degrade`` crops them.

    Returns ``None`` when ``clean_root`` lacks the ``CBSD68`` / ``McMaster`` / ``Set5`` folders
    (the split cannot be checked).
    """
    from agentir.agent_policies.perception.calibrate import _load, split_images

    try:
        fit, _held = split_images(Path(clean_root))
    except FileNotFoundError:
        return None
    return {_fingerprint(_load(p)): f"{p.parent.name}/{p.name}" for p in fit}


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def presence_stats(truth: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    """Presence (level >= medium) accuracy, precision, recall and counts; precision/recall are
    ``None`` when undefined (nothing predicted / nothing present)."""
    t = np.asarray(truth) >= PRESENT
    p = np.asarray(pred) >= PRESENT
    tp, fp = int((t & p).sum()), int((~t & p).sum())
    fn, tn = int((t & ~p).sum()), int((~t & ~p).sum())
    n = tp + fp + fn + tn
    return {
        "n": n,
        "acc": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def confusion_stats(truth: Sequence[int], pred: Sequence[int], own: Sequence[bool], presence_only: bool = False) -> dict[str, Any]:
    """Exact-level statistics and the 5 x 5 confusion matrix (rows true, columns predicted).

    ``own`` marks the images of this degradation (the others are its ``very_low`` row);
    ``presence_only`` scores exact accuracy as presence agreement (``low_resolution``).
    """
    t, p, o = np.asarray(truth, int), np.asarray(pred, int), np.asarray(own, bool)
    cm = np.zeros((5, 5), int)
    np.add.at(cm, (t, p), 1)
    hit = ((t >= PRESENT) == (p >= PRESENT)) if presence_only else (t == p)
    near = hit if presence_only else (np.abs(t - p) <= 1)

    def mean(a: np.ndarray) -> float | None:
        return float(a.mean()) if a.size else None

    return {
        "n_own": int(o.sum()),
        "exact": mean(hit[o]),
        "within_one": mean(near[o]),
        "presence_acc": mean(((t >= PRESENT) == (p >= PRESENT))[o]),
        "exact_all": mean(hit),
        "false_present_on_others": mean((p >= PRESENT)[~o]),
        "confusion": cm.tolist(),
    }


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


def _collect(data_dirs: Sequence[str], split: str, clean_root: str, limit: int | None) -> tuple[list[tuple[Path, dict]], dict[str, Any]]:
    """Items to score (``(data_dir, item)``) and a description of the split."""
    from agentir.datasets import read_rgb

    fps = fit_fingerprints(clean_root)
    if fps is None:
        _err(
            f"warning: {clean_root} has no CBSD68/McMaster/Set5 folders, so the held-out split cannot be checked; every image counts as held out (pass --clean-root to check)"
        )
    chosen: list[tuple[Path, dict]] = []
    fit_items: list[str] = []
    fit_sources: set[str] = set()
    for d in data_dirs:
        manifest, _ = open_benchmark(d)
        root = Path(d)
        seen: dict[str, str | None] = {}  # source -> fit file name or None
        per_combo: dict[str, int] = {}
        for it in manifest["items"]:
            src = str(it.get("source", it["hq"]))
            if fps is not None and src not in seen:
                path = _safe_path(root, str(it["hq"]), item_id(it))
                try:
                    seen[src] = fps.get(_fingerprint(read_rgb(path)))
                except (ValueError, OSError) as exc:
                    raise BenchItemError(
                        item_id(it), f"cannot read the clean reference {path} ({exc}); rebuild the benchmark with `agentir degrade`", path
                    ) from None
            if fps is not None and seen[src] is not None:
                fit_items.append(item_id(it))
                fit_sources.add(f"{src} (= fit image {seen[src]})")
                if split == "held-out":
                    continue
            key = f"{it['group']}/{it['combo']}/{it.get('level') or ''}"
            per_combo[key] = per_combo.get(key, 0) + 1
            if limit is not None and per_combo[key] > limit:
                continue
            chosen.append((root, it))
    info = {
        "split": split,
        "checked": fps is not None,
        "clean_root": str(clean_root),
        "fit_items_found": len(fit_items),
        "fit_sources": sorted(fit_sources),
        "includes_fit_images": bool(fit_items) and split == "all",
    }
    if fit_items:
        verb = "dropped" if split == "held-out" else "KEPT (numbers are optimistic)"
        _err(f"warning: {len(fit_items)} items come from {len(fit_sources)} images the calibration was fitted on; {verb}")
    if not chosen:
        raise BenchError(
            "no held-out images left to score: every item is a calibration fit image; build the benchmark from other images (e.g. the last 34 of CBSD68) or pass --split all"
        )
    return chosen, info


def _time_ms(fn: Any, repeats: int) -> dict[str, float]:
    fn()  # warm-up (lazy imports, caches)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": round(statistics.median(ts), 2), "min_ms": round(min(ts), 2)}


def measure_speed(policy: Any, image: np.ndarray, repeats: int = 10) -> dict[str, Any]:
    """Perceive / rate milliseconds per image at the :data:`SPEED_SIZES` (``image`` resized)."""
    import cv2

    out: dict[str, Any] = {}
    for size in SPEED_SIZES:
        img = np.ascontiguousarray(cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC))
        row: dict[str, Any] = {"perceive": _time_ms(lambda img=img: policy.perceive([img]), repeats)}
        rates = {d: _time_ms(lambda d=d, img=img: policy.rate([img], d), max(1, repeats // 2)) for d in DEGRADATIONS}
        slow = max(rates, key=lambda d: rates[d]["median_ms"])
        row["rate_mean_median_ms"] = round(float(np.mean([r["median_ms"] for r in rates.values()])), 2)
        row["rate_slowest"] = {"degradation": slow, **rates[slow]}
        row["rate"] = rates
        out[f"{size}x{size}"] = row
    return out


def evaluate(policy: Any, items: Sequence[tuple[Path, dict]], progress: bool = True, batch: int = 1) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Run ``policy.perceive`` over the items, ``batch`` images per call (a VLM backend sends a
    batch concurrently); returns (results, error lines, the largest degraded input for the speed runs).

    The clean reference of every source image is scored too (once), as the ``clean`` section.
    """
    from tqdm import tqdm

    from agentir.datasets import read_rgb

    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    seconds: list[float] = []
    sample: dict[str, Any] = {}
    clean_refs: dict[str, tuple[Path, dict]] = {}
    for root, it in items:  # each clean reference once: every degradation is very_low there
        clean_refs.setdefault(str(it.get("source", it["hq"])), (root, {**it, "group": "clean", "lq": it["hq"], "degradations": [], "params": []}))
    todo = [*items, *clean_refs.values()]
    bar = tqdm(total=len(todo), disable=not progress, unit="img", desc="perception", file=sys.stderr)
    try:
        for start in range(0, len(todo), batch):
            loaded: list[tuple[dict, dict[str, int], np.ndarray]] = []
            for root, it in todo[start : start + batch]:
                iid = item_id(it)
                try:
                    truth = true_levels(it)
                    loaded.append((it, truth, read_rgb(_safe_path(root, str(it["lq"]), iid))))
                except (BenchItemError, ValueError, OSError) as exc:
                    errors.append(f"{root}/{iid}: {exc}")
            if loaded:
                t0 = time.perf_counter()
                preds = policy.perceive([img for _, _, img in loaded])
                seconds.extend([(time.perf_counter() - t0) / len(loaded)] * len(loaded))
            for (it, truth, img), p in zip(loaded, preds if loaded else []):
                if it["group"] != "clean" and (not sample or img.size > sample["image"].size):
                    sample = {"image": img, "item": item_id(it)}
                pred = {d: LEVELS.index(p.levels[d]) for d in DEGRADATIONS}
                rows.append({"group": str(it["group"]), "combo": str(it["combo"]), "degradations": list(it["degradations"]), "truth": truth, "pred": pred})
            bar.update(len(todo[start : start + batch]))
    finally:
        bar.close()
    results: dict[str, Any] = {"n_images": len(rows), "mean_perceive_ms_on_data": round(1000 * float(np.mean(seconds)), 2) if seconds else None}
    clean = [r for r in rows if r["group"] == "clean"]
    rows = [r for r in rows if r["group"] != "clean"]
    mixed = [r for r in rows if r["group"] != "single"]
    singles = [r for r in rows if r["group"] == "single"]
    if mixed:
        pres = {d: presence_stats([r["truth"][d] for r in mixed], [r["pred"][d] for r in mixed]) for d in DEGRADATIONS}
        accs = [s["acc"] for s in pres.values() if s["acc"] is not None]
        groups: dict[str, Any] = {}
        for g in sorted({r["group"] for r in mixed}):
            sub = [r for r in mixed if r["group"] == g]
            groups[g] = {
                "n": len(sub),
                "presence_acc_mean": float(np.mean([np.mean([(r["truth"][d] >= PRESENT) == (r["pred"][d] >= PRESENT) for r in sub]) for d in DEGRADATIONS])),
                "set_exact": float(np.mean([_set_exact(r) for r in sub])),
            }
        combos: dict[str, Any] = {}
        for c in sorted({r["combo"] for r in mixed}):
            sub = [r for r in mixed if r["combo"] == c]
            present = [d for d in DEGRADATIONS if any(r["truth"][d] >= PRESENT for r in sub)]
            combos[c] = {
                "n": len(sub),
                "set_exact": float(np.mean([_set_exact(r) for r in sub])),
                # per degradation truly present in this combination: how often it is seen
                "recall": {d: presence_stats([r["truth"][d] for r in sub], [r["pred"][d] for r in sub])["recall"] for d in present},
                "false_present": {d: v for d in DEGRADATIONS if d not in present and (v := float(np.mean([r["pred"][d] >= PRESENT for r in sub]))) > 0},
            }
        results["mixed"] = {
            "n": len(mixed),
            "presence": pres,
            "presence_acc_mean": float(np.mean(accs)) if accs else None,
            "presence_acc_min": float(min(accs)) if accs else None,
            "set_exact": float(np.mean([_set_exact(r) for r in mixed])),
            "groups": groups,
            "combos": combos,
        }
    if singles:
        per: dict[str, Any] = {}
        for d in DEGRADATIONS:
            own = [d in r["degradations"] for r in singles]
            per[d] = confusion_stats([r["truth"][d] for r in singles], [r["pred"][d] for r in singles], own, presence_only=d == "low_resolution")
            # which other single degradations make this one look present (false alarms)
            per[d]["false_present_by_other"] = {
                o: float(np.mean([r["pred"][d] >= PRESENT for r in singles if r["combo"] == o]))
                for o in DEGRADATIONS
                if o != d and any(r["combo"] == o for r in singles)
            }
        ex = [s["exact"] for s in per.values() if s["exact"] is not None]
        results["singles"] = {"n": len(singles), "per_degradation": per, "exact_mean": float(np.mean(ex)) if ex else None}
    if clean:
        results["clean"] = {
            "n": len(clean),
            "false_present": {d: float(np.mean([r["pred"][d] >= PRESENT for r in clean])) for d in DEGRADATIONS},
            "all_very_low_or_low": float(np.mean([all(r["pred"][d] < PRESENT for d in DEGRADATIONS) for r in clean])),
        }
    return results, errors, sample


def _real_sources(path: Path, split: str, fps: dict[str, str] | None, frames_per_clip: int) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """``[(name, image)]`` of one ``--real-clean`` / ``--report`` path and the names dropped as fit content."""
    from agentir.agent_policies.perception.calibrate import _load
    from agentir.agent_policies.perception.realdata import VIDEO_SUFFIXES, clip_frames, split_clips
    from agentir.datasets import IMAGE_SUFFIXES

    if not path.exists():
        raise BenchError(f"{path} not found (expected an image or clip folder or file)")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    clips = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not clips and not images:
        raise BenchError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or clips ({', '.join(VIDEO_SUFFIXES)}) in {path}")
    out: list[tuple[str, np.ndarray]] = []
    dropped: list[str] = []
    fit_clips: set[str] = set()
    if clips and split == "held-out":
        try:
            fit_clips = {p.name for p in split_clips(clips[0].parent)[0]}
        except FileNotFoundError:
            fit_clips = set()
    for c in clips:
        if c.name in fit_clips:
            dropped.append(c.name)
            continue
        try:
            frames = clip_frames(c, frames_per_clip)
        except FileNotFoundError as exc:
            raise BenchError(str(exc)) from None
        out += [(f"{c.name}#{i}", f) for i, f in enumerate(frames)]
    for im in images:
        try:
            img = _load(im)
        except (FileNotFoundError, ValueError) as exc:
            raise BenchError(f"cannot read {im} ({exc})") from None
        if split == "held-out" and fps is not None and _fingerprint(img) in fps:
            dropped.append(im.name)
            continue
        out.append((im.name, img))
    return out, dropped


def evaluate_real(
    policy: Any, clean_paths: Sequence[str], report_paths: Sequence[str], split: str, clean_root: str, frames_per_clip: int = 4
) -> dict[str, Any]:
    """The ``real_clean`` and ``report_only`` sections (see the module docstring)."""
    fps = fit_fingerprints(clean_root) if split == "held-out" else None
    out: dict[str, Any] = {}
    for key, paths in (("real_clean", clean_paths), ("report_only", report_paths)):
        sets: dict[str, Any] = {}
        for raw in paths:
            path = Path(raw)
            named, dropped = _real_sources(path, split, fps if key == "real_clean" else None, frames_per_clip)
            if dropped:
                _err(f"warning: {path}: {len(dropped)} fit item(s) dropped ({', '.join(dropped[:4])}{', ...' if len(dropped) > 4 else ''})")
            if not named:
                raise BenchError(f"{path}: nothing held out left to score (every item is fit content); pass --split all to score it anyway")
            preds = policy.perceive([img for _, img in named])
            present = [{d for d in DEGRADATIONS if LEVELS.index(p.levels[d]) >= PRESENT} for p in preds]
            entry: dict[str, Any] = {
                "path": str(path),
                "n": len(named),
                "dropped_fit_items": dropped,
                "found": {d: float(np.mean([d in s for s in present])) for d in DEGRADATIONS},
                "nothing_present": float(np.mean([not s for s in present])),
            }
            if key == "report_only":
                entry["images"] = {
                    name: {"present": {d: p.levels[d] for d in DEGRADATIONS if d in s}, "noise": p.levels["noise"], "noise_score": p.scores["noise"]}
                    for (name, _), p, s in zip(named, preds, present)
                }
            sets[path.name or str(path)] = entry
        if sets:
            out[key] = sets
    return out


def _model_info(policy: Any) -> dict[str, Any] | None:
    """Which fitted model was scored: the calibration JSON and its weights file's SHA-256 (analytic policy)."""
    path = getattr(policy, "calibration_path", None)
    if path is None:
        return None
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {"calibration": str(path)}
    w = doc.get("weights") if isinstance(doc, dict) else None
    return {
        "calibration": str(path),
        "weights": w.get("file") if isinstance(w, dict) else None,
        "weights_sha256": w.get("sha256") if isinstance(w, dict) else None,
        "seed": doc.get("seed"),
    }


def _set_exact(r: Mapping[str, Any]) -> bool:
    return all((r["truth"][d] >= PRESENT) == (r["pred"][d] >= PRESENT) for d in DEGRADATIONS)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _f(v: float | None, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def format_tables(report: Mapping[str, Any]) -> str:
    """The report as plain-text tables."""
    lines: list[str] = []
    res = report["results"]
    split = report["split"]
    lines.append(
        f"perception policy {report['perception']!r}; {res['n_images']} images; split {split['split']}"
        + ("" if split["checked"] else " (unchecked: fit images unknown)")
        + (f"; {split['fit_items_found']} fit items dropped" if split["fit_items_found"] and split["split"] == "held-out" else "")
        + ("; INCLUDES FIT IMAGES" if split["includes_fit_images"] else "")
    )
    m = res.get("mixed")
    if m:
        lines.append(f"\nmixed degradations (groups {', '.join(m['groups'])}; {m['n']} images): presence = medium or worse")
        lines.append(f"{'degradation':15s} {'acc':>6s} {'prec':>6s} {'recall':>6s} {'tp':>5s} {'fp':>5s} {'fn':>5s} {'tn':>5s}")
        for d, s in m["presence"].items():
            lines.append(f"{d:15s} {_f(s['acc']):>6s} {_f(s['precision']):>6s} {_f(s['recall']):>6s} {s['tp']:5d} {s['fp']:5d} {s['fn']:5d} {s['tn']:5d}")
        lines.append(f"{'mean':15s} {_f(m['presence_acc_mean']):>6s}   (min {_f(m['presence_acc_min'])}); whole present-set right: {_f(m['set_exact'])}")
        lines.append(
            "  "
            + "; ".join(f"group {g}: presence acc {_f(v['presence_acc_mean'])}, set right {_f(v['set_exact'])} (n={v['n']})" for g, v in m["groups"].items())
        )
        if m.get("combos"):
            lines.append("per combination: set right; recall of each present degradation; false 'present' rates")
            for c, v in m["combos"].items():
                rec = ", ".join(f"{d} {_f(r, '.2f')}" for d, r in v["recall"].items())
                fp = ", ".join(f"{d} {r:.2f}" for d, r in v["false_present"].items())
                lines.append(f"  {c:40s} n={v['n']:3d} set {_f(v['set_exact'], '.2f')} | recall {rec}" + (f" | FP {fp}" if fp else ""))
    s = res.get("singles")
    if s:
        lines.append(f"\nsingle degradations ({s['n']} images): exact level on each degradation's own images; confusion rows = true level")
        lines.append(
            f"{'degradation':15s} {'n':>4s} {'exact':>6s} {'+-1':>6s} {'pres':>6s} {'FP-oth':>6s} | confusion (true vl/l/m/h/vh -> predicted vl l m h vh)"
        )
        for d, st in s["per_degradation"].items():
            cm = st["confusion"]
            rows = " ".join("[" + ",".join(f"{v}" for v in row) + "]" for row in cm)
            lines.append(
                f"{d:15s} {st['n_own']:4d} {_f(st['exact']):>6s} {_f(st['within_one']):>6s} {_f(st['presence_acc']):>6s} {_f(st['false_present_on_others']):>6s} | {rows}"
            )
        lines.append(f"{'mean':15s} {'':4s} {_f(s['exact_mean']):>6s}")
        lines.append("FP-oth: how often the degradation is called present on the other degradations' single images; worst causes:")
        for d, st in s["per_degradation"].items():
            worst = sorted(st.get("false_present_by_other", {}).items(), key=lambda kv: -kv[1])[:2]
            if worst and worst[0][1] > 0:
                lines.append(f"  {d:15s} " + ", ".join(f"{o} {v:.2f}" for o, v in worst if v > 0))
    c = res.get("clean")
    if c:
        fp = ", ".join(f"{d} {v:.2f}" for d, v in c["false_present"].items() if v > 0) or "none"
        lines.append(f"\nclean references ({c['n']} images): nothing called present on {_f(c['all_very_low_or_low'])}; false 'present' rate: {fp}")
    for key, title in (("real_clean", "real clean content"), ("report_only", "report only (no reference)")):
        for name, e in res.get(key, {}).items():
            found = ", ".join(f"{d} {v:.3f}" for d, v in e["found"].items() if v > 0) or "none"
            word = "false 'present' rate" if key == "real_clean" else "found"
            lines.append(
                f"\n{title} {name} ({e['n']} images{', ' + str(len(e['dropped_fit_items'])) + ' fit items dropped' if e['dropped_fit_items'] else ''}): nothing present on {e['nothing_present']:.3f}; {word}: {found}"
            )
            if key == "real_clean":
                lines.append("  " + " ".join(f"{d} {v:.3f}" for d, v in e["found"].items()))
            for img, v in e.get("images", {}).items():
                lines.append(
                    f"  {img:28s} noise {v['noise']:9s} ({v['noise_score']:.2f}); present: {', '.join(f'{d} {lv}' for d, lv in v['present'].items()) or 'nothing'}"
                )
    sp = report.get("speed")
    if sp:
        lines.append(f"\nspeed (ms per image, one thread, median / min of {report['speed_repeats']} runs; load average {report.get('load_average', '?')})")
        for size, row in sp.items():
            p = row["perceive"]
            rs = row["rate_slowest"]
            lines.append(
                f"{size:>9s}: perceive {p['median_ms']:.1f} / {p['min_ms']:.1f}; rate one degradation mean {row['rate_mean_median_ms']:.1f}, "
                f"slowest {rs['degradation']} {rs['median_ms']:.1f} / {rs['min_ms']:.1f}"
            )
    if res.get("mean_perceive_ms_on_data") is not None:
        lines.append(f"mean perceive time over the benchmark images (their own sizes): {res['mean_perceive_ms_on_data']:.1f} ms")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def build_parser(prog: str = "agentir bench perception") -> argparse.ArgumentParser:
    """The ``agentir bench perception`` argument parser."""
    p = argparse.ArgumentParser(
        prog=prog, description="Score a perception policy on benchmark folders built by `agentir degrade` (held-out images only by default)."
    )
    p.add_argument("data_dirs", nargs="*", metavar="DATA", help="benchmark folder(s) with manifest.json: group combinations and/or --levels singles")
    p.add_argument(
        "--real-clean",
        action="append",
        default=[],
        metavar="PATH",
        help="clean real content (image or clip folder / file): false 'present' rates; fit content dropped under --split held-out (repeatable)",
    )
    p.add_argument("--report", action="append", default=[], metavar="PATH", help="images without reference (e.g. RNI15): what is found per image (repeatable)")
    p.add_argument("--frames-per-clip", type=int, default=4, metavar="N", help="evenly spaced frames taken from each clip (default 4)")
    p.add_argument(
        "--split",
        choices=["held-out", "all"],
        default="held-out",
        help="held-out (default): drop items whose clean image the calibration was fitted on; all: keep them (flagged)",
    )
    p.add_argument(
        "--clean-root",
        default=None,
        help=f"folder with CBSD68/, McMaster/, Set5/ used to recognise fit images (default $AGENTIR_CLEAN_ROOT or {DEFAULT_CLEAN_ROOT})",
    )
    p.add_argument("--perception", default="analytic", help="perception policy (default analytic)")
    p.add_argument("--out", default=None, metavar="FILE", help="JSON report (default <first DATA>/bench/perception.json)")
    p.add_argument("--limit-per-combo", type=int, default=None, metavar="N", help="only the first N images of each combination / level")
    p.add_argument("--batch", type=int, default=1, metavar="N", help="images per perceive call (default 1; a VLM backend sends a batch concurrently)")
    p.add_argument("--repeats", type=int, default=10, metavar="N", help="timed runs per speed measurement (default 10)")
    p.add_argument("--no-speed", action="store_true", help="skip the 512 / 1024 speed measurement")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main_bench_perception(argv: Sequence[str]) -> int:
    """Entry point of ``agentir bench perception`` (see the module docstring); returns the exit code."""
    from agentir.agent_policies.registry import Policies
    from agentir.settings import Settings
    from agentir.toolbox.registry import UnknownNameError

    args = build_parser().parse_args(list(argv))
    settings = Settings.from_env()
    clean_root = args.clean_root or str(settings.clean_root or DEFAULT_CLEAN_ROOT)
    try:
        if not args.data_dirs and not args.real_clean and not args.report:
            raise BenchError("nothing to score: pass benchmark folder(s) DATA, --real-clean PATH or --report PATH")
        if not args.data_dirs and not args.out:
            raise BenchError("--out FILE is needed without a benchmark folder DATA (the report's default place is DATA/bench/perception.json)")
        if args.frames_per_clip < 1:
            raise BenchError(f"--frames-per-clip must be at least 1, got {args.frames_per_clip}")
        out = Path(args.out) if args.out else Path(args.data_dirs[0]) / "bench" / "perception.json"
        if args.repeats < 1:
            raise BenchError(f"--repeats must be at least 1, got {args.repeats}")
        if args.batch < 1:
            raise BenchError(f"--batch must be at least 1, got {args.batch}")
        if args.limit_per_combo is not None and args.limit_per_combo < 1:
            raise BenchError(f"--limit-per-combo must be at least 1, got {args.limit_per_combo}")
        policy = Policies(settings.policies).perception(args.perception)
        if args.data_dirs:
            items, split = _collect(args.data_dirs, args.split, clean_root, args.limit_per_combo)
            results, errors, sample = evaluate(policy, items, progress=not args.quiet, batch=args.batch)
        else:
            fps_known = fit_fingerprints(clean_root) is not None
            split = {
                "split": args.split,
                "checked": fps_known,
                "clean_root": str(clean_root),
                "fit_items_found": 0,
                "fit_sources": [],
                "includes_fit_images": False,
            }
            results, errors, sample = {"n_images": 0, "mean_perceive_ms_on_data": None}, [], {}
        results.update(evaluate_real(policy, args.real_clean, args.report, args.split, clean_root, args.frames_per_clip))
        report: dict[str, Any] = {
            "command": "agentir bench perception " + " ".join(shlex.quote(a) for a in argv),
            "data": [str(Path(d).resolve()) for d in args.data_dirs],
            "perception": args.perception,
            "model": _model_info(policy),
            "split": split,
            "results": results,
            "errors": errors,
        }
        if not args.no_speed and sample:
            report["load_average"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
            report["speed_image"] = sample["item"]
            report["speed_repeats"] = args.repeats
            report["speed"] = measure_speed(policy, sample["image"], args.repeats)
        from agentir.imageio import write_text_atomic

        write_text_atomic(out, json.dumps(report, indent=1) + "\n")
    except (BenchError, UnknownNameError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except (ValueError, OSError) as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    print(format_tables(report), flush=True)
    for e in errors:
        _err(f"error: {e}")
    _err(f"report written to {out}")
    return EXIT_FAILED if errors else EXIT_OK
