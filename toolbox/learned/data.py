"""Training pairs for the learned tools, synthesised with the project's degradation recipe.

Clean images: the FIT split only (``McMaster/*.png`` + ``Set5/*.png`` + the first half of
``CBSD68/*.png`` sorted by name, as ``agentir train perception`` uses); the last half of CBSD68
is held out for evaluation and never trained on (:func:`split_images`).

:class:`PatchPool` keeps a pool of (clean, degraded) crops in memory. Each crop is a whole
``crop x crop`` window of a clean image (offsets aligned to 8, so a JPEG grid stays aligned to
the patches) degraded as one image with :func:`agentir.toolbox.degrade.degrade_chain` at a random
severity level (or the test-set ranges), so blur borders, JPEG blocks and Poisson statistics
are those of real degraded images. Batches are random patches of the pool (aligned, randomly
flipped / rotated); every ``refresh_every`` batches ``refresh`` crops are replaced by new ones.
Everything is drawn from one :class:`numpy.random.Generator`, so a run is reproducible, and
:meth:`PatchPool.state` / :meth:`PatchPool.load_state` let a resumed run continue exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from agentir.toolbox.base import ToolSpec
from agentir.toolbox.degrade import crop_to_multiple, degrade_chain
from agentir.toolbox.splits import split_images

__all__ = ["LEVELS", "MIX_DEGRADATIONS", "RECIPES", "PatchPool", "Recipe", "load_rgb", "split_images", "synthesise"]

#: Severity levels the training data is drawn from (``None`` = the test-set ranges).
LEVELS: tuple[str | None, ...] = ("low", "medium", "high", "very_high", None)
#: Degradations the ``allinone`` model learns to remove (mixed, 1-3 per image, random order).
MIX_DEGRADATIONS: tuple[str, ...] = ("noise", "jpeg", "dark", "haze", "motion_blur", "defocus_blur", "rain")


@dataclass(frozen=True)
class Recipe:
    """How one learned tool is trained (data, network, default optimisation).

    What the tool is registered as (degradation, scale, description) is declared once, in its
    :class:`~agentir.toolbox.base.ToolSpec` of :data:`agentir.toolbox.learned.LEARNED_SPECS`; the recipe reads
    degradation and scale from there.
    """

    name: str
    degradations: tuple[str, ...]  # the single degradation, or the pool mixed from
    mixed: bool = False  # 1-3 of ``degradations`` per image in random order
    arch: str = "unetres"
    arch_kwargs: tuple[tuple[str, Any], ...] = (("ch", 32),)
    steps: int = 3000
    batch: int = 16
    patch: int = 64  # HR patch side (a multiple of 8)
    lr: float = 1e-3

    @property
    def degradation(self) -> str:
        """What the tool is registered for (from its declaration)."""
        return _spec(self.name).degradation

    @property
    def scale(self) -> int:
        """1, or 4 for super-resolution (from its declaration)."""
        return _spec(self.name).scale

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "degradation": self.degradation,
            "scale": self.scale,
            "degradations": list(self.degradations),
            "mixed": self.mixed,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "batch": self.batch,
            "patch": self.patch,
            "lr": self.lr,
            "levels": [lv or "test-set" for lv in LEVELS],
        }


_SR = (("ch", 64), ("blocks", 8))
# Large residuals (blur, mixtures) killed every ReLU before the output layer of a plain-ReLU
# run (the model collapsed to the identity): these recipes use leaky ReLU and a lower peak lr.
_LEAKY = (("ch", 32), ("leaky", 0.1))

#: Trainable learned tools, in the order they are registered.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("cnn_denoise", ("noise",), steps=4000),
        Recipe("cnn_dejpeg", ("jpeg",), steps=3000),
        Recipe("cnn_sr", ("low_resolution",), arch="srres", arch_kwargs=_SR, steps=3000, patch=96),
        Recipe("cnn_motion_deblur", ("motion_blur",), arch_kwargs=_LEAKY, steps=2000, batch=8, patch=96, lr=5e-4),
        Recipe("allinone", MIX_DEGRADATIONS, mixed=True, arch_kwargs=_LEAKY, steps=2400, lr=5e-4),
        Recipe("cnn_defocus_deblur", ("defocus_blur",), arch_kwargs=_LEAKY, steps=2000, batch=8, patch=96, lr=5e-4),
        Recipe("cnn_derain", ("rain",), arch_kwargs=_LEAKY, steps=2400, lr=5e-4),
    )
}


def _spec(name: str) -> ToolSpec:
    from agentir.toolbox.learned import LEARNED_SPECS

    for spec in LEARNED_SPECS:
        if spec.name == name:
            return spec
    raise KeyError(f"learned tool {name!r} has a recipe but no declaration in agentir.toolbox.learned.LEARNED_SPECS")


def load_rgb(path: Path) -> np.ndarray:
    """An RGB ``uint8`` image cropped to a multiple of 4 (so x4 downscaling is exact)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return np.ascontiguousarray(crop_to_multiple(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 8))


def synthesise(clean: np.ndarray, recipe: Recipe, rng: np.random.Generator) -> np.ndarray:
    """Degrade ``clean`` (uint8 RGB) as ``recipe`` trains: one level per degradation, random."""
    if recipe.mixed:
        k = int(rng.integers(1, 4))
        names = [recipe.degradations[i] for i in rng.permutation(len(recipe.degradations))[:k]]
    else:
        names = list(recipe.degradations)
    levels = [LEVELS[int(rng.integers(0, len(LEVELS)))] for _ in names]
    out, _ = degrade_chain(clean, names, rng, levels=levels)
    return out


class PatchPool:
    """In-memory pool of degraded crops and a batch sampler (see the module docstring)."""

    def __init__(
        self,
        images: list[np.ndarray],
        recipe: Recipe,
        rng: np.random.Generator,
        *,
        crop: int = 192,
        size: int = 96,
        refresh: int = 12,
        refresh_every: int = 25,
    ) -> None:
        if not images:
            raise ValueError("no clean images to train on")
        self.images, self.recipe, self.rng = images, recipe, rng
        self.crop = crop - crop % 8
        self.size, self.refresh, self.refresh_every = size, refresh, refresh_every
        self.batches = 0
        self.clean: list[np.ndarray] = []
        self.degraded: list[np.ndarray] = []
        for _ in range(size):
            c, d = self._new_crop()
            self.clean.append(c)
            self.degraded.append(d)

    def _new_crop(self) -> tuple[np.ndarray, np.ndarray]:
        img = self.images[int(self.rng.integers(0, len(self.images)))]
        h, w = img.shape[:2]
        ch, cw = min(self.crop, h - h % 8), min(self.crop, w - w % 8)
        y = 8 * int(self.rng.integers(0, (h - ch) // 8 + 1))
        x = 8 * int(self.rng.integers(0, (w - cw) // 8 + 1))
        clean = np.ascontiguousarray(img[y : y + ch, x : x + cw])
        return clean, synthesise(clean, self.recipe, self.rng)

    def batch(self, n: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(degraded, clean)`` float tensors ``n x 3 x p x p`` (degraded ``p/4`` for scale 4)."""
        s = self.recipe.scale
        step = 8 if s == 1 else 4  # offsets on the (degraded) input grid: 8 keeps JPEG blocks aligned
        xs, ys = [], []
        for _ in range(n):
            i = int(self.rng.integers(0, self.size))
            c, d = self.clean[i], self.degraded[i]
            ph = min(patch, c.shape[0], c.shape[1]) // (8 * s) * 8 * s
            lp = ph // s
            dh, dw = d.shape[:2]
            y = step * int(self.rng.integers(0, (dh - lp) // step + 1)) if dh > lp else 0
            x = step * int(self.rng.integers(0, (dw - lp) // step + 1)) if dw > lp else 0
            dp = d[y : y + lp, x : x + lp]
            cp = c[y * s : y * s + ph, x * s : x * s + ph]
            k, flip = int(self.rng.integers(0, 4)), bool(self.rng.integers(0, 2))
            dp, cp = np.rot90(dp, k), np.rot90(cp, k)
            if flip:
                dp, cp = dp[:, ::-1], cp[:, ::-1]
            xs.append(np.ascontiguousarray(dp))
            ys.append(np.ascontiguousarray(cp))
        self.batches += 1
        if self.batches % self.refresh_every == 0:
            for _ in range(self.refresh):
                j = int(self.rng.integers(0, self.size))
                self.clean[j], self.degraded[j] = self._new_crop()
        return _to_tensor(np.stack(xs)), _to_tensor(np.stack(ys))

    def state(self) -> dict[str, Any]:
        """The pool contents as tensors (for a checkpoint); the rng is saved by the caller."""
        return {
            "batches": torch.tensor(self.batches),
            "clean": [torch.from_numpy(c.copy()) for c in self.clean],
            "degraded": [torch.from_numpy(d.copy()) for d in self.degraded],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.batches = int(state["batches"])
        self.clean = [t.numpy().copy() for t in state["clean"]]
        self.degraded = [t.numpy().copy() for t in state["degraded"]]
        self.size = len(self.clean)


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
