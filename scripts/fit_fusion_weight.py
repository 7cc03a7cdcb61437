"""Choose the blend weight of ``fusion_denoise`` on the fit images, and report it held out.

Usage: python scripts/fit_fusion_weight.py CLEAN_DIR [--threads N]

For every image of the fit split (``agentir.toolbox.splits``) and two noise conditions (Gaussian sigma
25, and the recipe's ``high`` level, drawn as ``agentir train tool`` draws its held-out
conditions), it computes the self-ensembled ``cnn_denoise`` output E and the ``dct_denoise``
output D once, then the PSNR of ``w E + (1 - w) D`` for w = 0, 0.1, ..., 1. It prints the fit
mean per weight, the weight with the best fit mean, and the held-out half of CBSD68 with that
weight next to its two parts (the numbers the README quotes). ``FUSION_WEIGHT`` in
``toolbox/learned/fusion.py`` is the printed choice. About 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from tqdm import tqdm

import agentir.toolbox.tools  # noqa: F401 - registers the tools (learned ones included)
from agentir.toolbox.base import TOOLS
from agentir.toolbox.degrade import apply_params, degrade_chain
from agentir.toolbox.learned.data import load_rgb
from agentir.toolbox.learned.fusion import self_ensemble
from agentir.toolbox.learned.train import EVAL_SEED
from agentir.toolbox.metrics import psnr
from agentir.toolbox.splits import split_images

WEIGHTS = [round(0.1 * k, 1) for k in range(11)]
CONDITIONS = ("sigma25", "high")


def _parts(clean: np.ndarray, condition: int, index: int, cnn, dct) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([EVAL_SEED, 100 + condition, index])
    if CONDITIONS[condition] == "sigma25":
        deg = apply_params(clean, {"name": "noise", "kind": "gaussian", "sigma": 25.0, "field_seed": int(rng.integers(0, 2**62))})
    else:
        deg, _ = degrade_chain(clean, ["noise"], rng, levels=["high"])
    x = torch.from_numpy(deg).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        e = self_ensemble(cnn, x).clamp(0, 1)
        d = dct(x).clamp(0, 1)

    def to(t: torch.Tensor) -> np.ndarray:
        return t[0].permute(1, 2, 0).numpy().astype(np.float64)

    return to(e), to(d), clean.astype(np.float64) / 255.0


def _table(paths, cnn, dct, label: str) -> dict[str, np.ndarray]:
    """PSNR per condition: an images x weights array."""
    out = {c: [] for c in CONDITIONS}
    for i, p in enumerate(tqdm(paths, desc=label, unit="img")):
        clean = load_rgb(p)
        for ci, c in enumerate(CONDITIONS):
            e, d, ref = _parts(clean, ci, i, cnn, dct)
            out[c].append([psnr(w * e + (1 - w) * d, ref) for w in WEIGHTS])
    return {c: np.asarray(v) for c, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clean_dir")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fit, held = split_images(args.clean_dir, require_both=True)
    cnn, dct = TOOLS.get("cnn_denoise"), TOOLS.get("dct_denoise")
    fit_t = _table(fit, cnn, dct, "fit")
    mean = np.mean([fit_t[c].mean(0) for c in CONDITIONS], axis=0)
    print("fit images:", len(fit))
    for j, w in enumerate(WEIGHTS):
        print(f"  w={w:.1f}  " + "  ".join(f"{c} {fit_t[c][:, j].mean():.3f}" for c in CONDITIONS) + f"  mean {mean[j]:.3f}")
    best = WEIGHTS[int(np.argmax(mean))]
    print(f"best weight on the fit images: {best:.1f}")
    held_t = _table(held, cnn, dct, "held-out")
    jb, j1 = WEIGHTS.index(best), WEIGHTS.index(1.0)
    print(f"held-out CBSD68 ({len(held)} images), PSNR dB:")
    for c in CONDITIONS:
        print(
            f"  {c}: dct_denoise {held_t[c][:, 0].mean():.2f}  cnn_denoise x8 {held_t[c][:, j1].mean():.2f}  fusion (w={best:.1f}) {held_t[c][:, jb].mean():.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
