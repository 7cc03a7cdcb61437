"""Training loop of the learned tools (``agentir train tool NAME``).

Adam with a short linear warm-up and a cosine learning-rate decay to 1 % of the peak, L1 loss,
batches from :class:`agentir.toolbox.learned.data.PatchPool` (fit split only). Seeded and deterministic
on CPU for a given thread count: ``torch.manual_seed(seed)`` for the initial weights and one
``numpy.random.Generator(seed)`` for every data draw. Resumable: every ``--ckpt-every`` steps
the model, optimiser, step, both random states and the data pool go to
``OUT/NAME/checkpoint.pt`` (written atomically, read back with ``torch.load(weights_only=True)``),
and a later run with the same name, seed and steps continues that run (``--fresh`` starts over).

At the end the held-out PSNR is measured on the held-out CBSD68 half at levels ``medium`` and
``high`` (plus Gaussian sigma 25 for ``cnn_denoise`` and JPEG quality 10 for ``cnn_dejpeg``),
against the degraded input (against MATLAB bicubic x4 for super-resolution), printed, saved in
``OUT/NAME/report.json`` and in the metadata of the weights, which are written atomically to
``--weights-out`` (default ``toolbox/weights/NAME.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agentir.toolbox.learned import WEIGHTS_DIR, weights_path
from agentir.toolbox.learned.data import RECIPES, PatchPool, Recipe, load_rgb, split_images
from agentir.toolbox.learned.nets import build, count_params

__all__ = ["DEFAULT_DATA", "DEFAULT_OUT", "WEIGHTS_DIR", "build_parser", "evaluate", "main", "train"]

DEFAULT_DATA = Path("/work/shared/data/clean")
DEFAULT_OUT = Path("out/train")
EVAL_SEED = 777
EVAL_LEVELS = ("medium", "high")
#: Extra fixed-parameter held-out conditions per tool: label -> ``apply_params`` dict.
EVAL_EXTRA: dict[str, dict[str, dict[str, Any]]] = {
    "cnn_denoise": {"gaussian_sigma25": {"name": "noise", "kind": "gaussian", "sigma": 25.0}},
    "cnn_dejpeg": {"jpeg_q10": {"name": "jpeg", "quality": 10}},
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def lr_at(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    """Learning rate of step ``step`` (0-based): linear warm-up, then cosine to ``peak / 100``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    low = peak / 100.0
    return low + 0.5 * (peak - low) * (1.0 + math.cos(math.pi * min(1.0, t)))


def run_net(net: torch.nn.Module, x: torch.Tensor, scale: int, multiple: int) -> torch.Tensor:
    """``net`` on an ``N x 3 x H x W`` batch: reflect-pad to ``multiple``, crop back, clamp."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    y = net(x)[..., : h * scale, : w * scale]
    return y.clamp(0.0, 1.0)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    from agentir.toolbox.metrics import psnr

    return psnr(a, b)


def evaluate(net: torch.nn.Module, recipe: Recipe, images: list[np.ndarray], *, levels: Sequence[str] = EVAL_LEVELS) -> dict[str, dict[str, float]]:
    """Mean held-out PSNR per condition: ``{"medium": {"input": dB, "output": dB, "n": k}, ...}``.

    For super-resolution ``input`` is MATLAB bicubic x4 of the low-resolution image (the metric's
    own baseline). Degradations are drawn from a fixed seed, independent of the training seed.
    """
    from agentir.toolbox.degrade import apply_params
    from agentir.toolbox.metrics import score

    multiple = getattr(net, "multiple", 1)
    conditions: list[tuple[str, dict[str, Any] | None]] = [(lv, None) for lv in levels]
    conditions += list(EVAL_EXTRA.get(recipe.name, {}).items())
    result: dict[str, dict[str, float]] = {}
    net.eval()
    for ci, (label, params) in enumerate(conditions):
        ins, outs = [], []
        for i, clean in enumerate(images):
            rng = np.random.default_rng([EVAL_SEED, ci, i])
            if params is None:
                from agentir.toolbox.degrade import degrade_chain

                if recipe.mixed:
                    k = int(rng.integers(1, 4))
                    names = [recipe.degradations[j] for j in rng.permutation(len(recipe.degradations))[:k]]
                else:
                    names = list(recipe.degradations)
                deg, _ = degrade_chain(clean, names, rng, levels=[label] * len(names))
            else:
                p = dict(params)
                if p["name"] == "noise":
                    p["field_seed"] = int(rng.integers(0, 2**62))
                deg = apply_params(clean, p)
            x = torch.from_numpy(deg).permute(2, 0, 1)[None].float() / 255.0
            with torch.inference_mode():
                y = run_net(net, x, recipe.scale, multiple)[0].permute(1, 2, 0).numpy().astype(np.float64)
            ins.append(score(deg, clean)["psnr"] if recipe.scale == 4 else _psnr(deg, clean))
            outs.append(_psnr(y, clean.astype(np.float64) / 255.0))
        result[label] = {"input": float(np.mean(ins)), "output": float(np.mean(outs)), "n": len(images)}
    return result


def _save_atomic_torch(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_weights(net: torch.nn.Module, recipe: Recipe, meta: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def train(
    name: str,
    *,
    steps: int | None = None,
    seed: int = 0,
    data: Path = DEFAULT_DATA,
    out: Path = DEFAULT_OUT,
    weights_out: Path | None = None,
    resume: bool = True,
    threads: int = 2,
    ckpt_every: int = 200,
    eval_images: int = 0,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train tool ``name`` (a key of :data:`~agentir.toolbox.learned.data.RECIPES`); returns the report.

    Args:
        eval_images: how many held-out images to evaluate on (0 = all of them).
        stop_after: train at most this many steps in this call, then checkpoint and return
            ``{"name": ..., "stopped_at": step}`` without evaluating or writing weights (a later
            call resumes); ``None`` trains to the end.

    Raises:
        KeyError: unknown ``name``.
        FileNotFoundError: ``data`` lacks the clean image folders.
        ValueError: a checkpoint from another seed / number of steps is in the way (use ``resume=False``).
    """
    from tqdm import tqdm

    recipe = RECIPES[name]
    steps = recipe.steps if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    fit_paths, held_paths = split_images(data, require_both=True)
    run_dir = Path(out) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    weights_out = weights_path(name) if weights_out is None else Path(weights_out)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = build(recipe.arch, **dict(recipe.arch_kwargs))
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        fit = [load_rgb(p) for p in fit_paths]
        pool = PatchPool(fit, recipe, rng)
        start, elapsed, loss_avg = 0, 0.0, None
        if resume and ckpt_path.exists():
            try:
                ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
            except Exception as exc:
                raise ValueError(f"checkpoint {ckpt_path} cannot be read ({type(exc).__name__}); pass --fresh to start over") from exc
            if ck["config"] != {"name": name, "seed": seed, "steps": steps}:
                raise ValueError(
                    f"checkpoint {ckpt_path} is from another run ({ck['config']}); pass --fresh to start over or the same --seed/--steps to continue it"
                )
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            torch.set_rng_state(ck["torch_rng"])
            rng.bit_generator.state = json.loads(ck["np_rng"])
            pool.load_state(ck["pool"])
            start, elapsed = int(ck["step"]), float(ck["elapsed"])
            loss_avg = None if float(ck.get("loss_avg", -1.0)) < 0 else float(ck["loss_avg"])
            _err(f"resuming {name} from step {start} of {steps} ({ckpt_path})")

        def checkpoint(step: int) -> None:
            _save_atomic_torch(
                {
                    "config": {"name": name, "seed": seed, "steps": steps},
                    "model": net.state_dict(),
                    "opt": opt.state_dict(),
                    "step": step,
                    "elapsed": elapsed + time.perf_counter() - t0,
                    "torch_rng": torch.get_rng_state(),
                    "np_rng": json.dumps(rng.bit_generator.state),
                    "pool": pool.state(),
                    "loss_avg": -1.0 if loss_avg is None else float(loss_avg),
                },
                ckpt_path,
            )

        net.train()
        t0 = time.perf_counter()
        end = steps if stop_after is None else min(steps, start + max(1, int(stop_after)))
        bar = tqdm(range(start, end), initial=start, total=steps, desc=name, disable=not progress, file=sys.stderr, dynamic_ncols=True)
        for step in bar:
            x, y = pool.batch(recipe.batch, recipe.patch)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, recipe.lr)
            loss = F.l1_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.detach().item()
            loss_avg = lv if loss_avg is None else 0.98 * loss_avg + 0.02 * lv
            if progress:
                bar.set_postfix(l1=f"{loss_avg:.4f}", refresh=False)
            if (step + 1) % ckpt_every == 0 and step + 1 < end:
                checkpoint(step + 1)
        bar.close()
        checkpoint(end)
        train_s = elapsed + time.perf_counter() - t0
        if end < steps:
            _err(f"{name}: stopped at step {end} of {steps} after {train_s:.0f} s; checkpoint {ckpt_path} (rerun to continue)")
            return {"name": name, "stopped_at": end, "checkpoint": str(ckpt_path)}

        held = [load_rgb(p) for p in held_paths]
        if eval_images:
            held = held[: int(eval_images)]
        t1 = time.perf_counter()
        heldout = evaluate(net, recipe, held)
        eval_s = time.perf_counter() - t1
        report: dict[str, Any] = {
            "name": name,
            "recipe": recipe.as_dict(),
            "seed": seed,
            "steps": steps,
            "threads": int(threads),
            "params": count_params(net),
            "train_seconds": round(train_s, 1),
            "eval_seconds": round(eval_s, 1),
            "final_l1": loss_avg,
            "heldout_psnr": heldout,
            "heldout_images": [p.name for p in held_paths[: len(held)]],
            "data": str(data),
        }
        meta = {
            "arch": recipe.arch,
            "arch_kwargs": dict(recipe.arch_kwargs),
            "scale": str(recipe.scale),
            "recipe": recipe.as_dict(),
            "seed": str(seed),
            "steps": str(steps),
            "heldout_psnr": heldout,
            "format": "agentir-learned-tool-v1",
        }
        _write_weights(net, recipe, meta, weights_out)
        report["weights"] = str(weights_out)
        report["weights_bytes"] = weights_out.stat().st_size
        (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    finally:
        torch.set_num_threads(old_threads)
    base = "bicubic" if recipe.scale == 4 else "input"
    for label, r in heldout.items():
        _err(f"{name} held-out {label} ({r['n']} images): {base} {r['input']:.2f} dB -> output {r['output']:.2f} dB ({r['output'] - r['input']:+.2f})")
    _err(f"{name}: {steps} steps in {train_s:.0f} s on {threads} thread(s); wrote {weights_out} ({float(report['weights_bytes']) / 1e6:.2f} MB)")
    return report


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``agentir train tool`` (added to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(prog="agentir train tool", description="Train a learned restoration tool.")
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(RECIPES)}")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the tool's recipe)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and of every data draw (default 0)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with CBSD68/, McMaster/, Set5/ (default {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"checkpoints and report go to OUT/NAME/ (default {DEFAULT_OUT})")
    p.add_argument("--weights-out", type=Path, default=None, metavar="FILE", help="final weights (default toolbox/weights/NAME.safetensors)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", dest="resume", action="store_true", default=True, help="continue OUT/NAME/checkpoint.pt when present (default)")
    g.add_argument("--fresh", dest="resume", action="store_false", help="ignore any checkpoint and start over")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    p.add_argument("--ckpt-every", type=int, default=200, metavar="N", help="checkpoint every N steps (default 200)")
    p.add_argument("--eval-images", type=int, default=0, metavar="K", help="evaluate on the first K held-out images (default 0 = all)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N", help="train at most N steps now, checkpoint and exit 0 (rerun to continue)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None, args: argparse.Namespace | None = None) -> int:
    """Run ``agentir train tool`` with parsed ``args`` (or parse ``argv``); returns the exit code."""
    if args is None:
        args = build_parser().parse_args(list(argv or []))
    if args.name not in RECIPES:
        _err(f"error: learned tool {args.name!r} is not built yet (no training recipe); trainable: {', '.join(RECIPES)}")
        return EXIT_USAGE
    for opt in ("threads", "ckpt_every", "stop_after"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            _err(f"error: --{opt.replace('_', '-')} must be at least 1, got {getattr(args, opt)}")
            return EXIT_USAGE
    if args.steps is not None and args.steps < 1:
        _err(f"error: --steps must be at least 1, got {args.steps}")
        return EXIT_USAGE
    try:
        train(
            args.name,
            steps=args.steps,
            seed=args.seed,
            data=args.data,
            out=args.out,
            weights_out=args.weights_out,
            resume=args.resume,
            threads=args.threads,
            ckpt_every=args.ckpt_every,
            eval_images=args.eval_images,
            progress=args.progress,
            stop_after=args.stop_after,
        )
    except (FileNotFoundError, ValueError, OSError) as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main(sys.argv[1:]))
