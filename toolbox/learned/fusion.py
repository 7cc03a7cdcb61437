"""``fusion_denoise``: the strongest (and slowest) denoiser, built from two others.

The output is ``w * E + (1 - w) * D`` where

* ``E`` is ``cnn_denoise`` under a geometric self-ensemble: the network runs on the eight
  flips / quarter turns of the image and the eight results, turned back, are averaged (the
  network's errors are not equivariant, so they partly cancel);
* ``D`` is ``dct_denoise`` (sliding 8x8 DCT hard thresholding): a classical estimate whose
  errors differ in kind from the network's (it over-smooths texture where the network leaves
  residual noise), so the blend beats both.

``w`` (:data:`FUSION_WEIGHT`) was chosen on the *fit* images only by
``python scripts/fit_fusion_weight.py ../shared/data/clean`` (it prints held-out PSNR per
weight too, for the README); nothing here is trained. The tool needs the ``cnn_denoise``
weights and is registered only where they are shipped. It costs about nine times
``cnn_denoise`` (see ``agentir tools``).
"""

from __future__ import annotations

import torch

from agentir.toolbox.base import ToolError, check_batch

__all__ = ["FUSION_WEIGHT", "FusionDenoise", "self_ensemble"]

#: Weight of the self-ensembled network (the rest goes to the DCT denoiser).
FUSION_WEIGHT = 0.7


def self_ensemble(tool, batch: torch.Tensor) -> torch.Tensor:
    """Mean of ``tool`` over the eight flips / quarter turns of ``batch`` (each turned back).

    ``tool`` must be a scale-1 :class:`~agentir.toolbox.base.Tool` that accepts any ``H x W``.
    """
    out = torch.zeros_like(batch)
    for k in range(4):
        for flip in (False, True):
            x = torch.rot90(batch, k, (2, 3))
            if flip:
                x = x.flip(3)
            y = tool(x.contiguous())
            if flip:
                y = y.flip(3)
            out += torch.rot90(y, -k, (2, 3))
    return out / 8.0


class FusionDenoise:
    """``FUSION_WEIGHT x self-ensembled cnn_denoise + (1 - FUSION_WEIGHT) x dct_denoise``.

    Follows the :class:`~agentir.toolbox.base.Tool` contract: ``N x 3 x H x W`` float in ``[0, 1]`` in
    and out, deterministic, never in place; raises :class:`~agentir.toolbox.base.ToolError` for what its
    parts refuse (for example an image under 8 x 8 pixels).
    """

    degradation = "noise"
    scale = 1

    def __init__(self, name: str = "fusion_denoise", *, weight: float = FUSION_WEIGHT) -> None:
        from agentir.toolbox.base import TOOLS

        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {weight}")
        self.name = name
        self.weight = float(weight)
        self._cnn = TOOLS.get("cnn_denoise")  # ToolError naming the weights file when missing
        self._dct = TOOLS.get("dct_denoise")
        self.device = getattr(self._cnn, "device", "cpu")

    def __repr__(self) -> str:
        return f"FusionDenoise(name={self.name!r}, weight={self.weight})"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        check_batch(self.name, batch)
        if batch.shape[0] == 0:
            return batch.clone()
        try:
            ens = self_ensemble(self._cnn, batch)
            dct = self._dct(batch).to(ens.device, ens.dtype)
        except ToolError as exc:
            raise ToolError(self.name, f"{exc.tool}: {exc.reason}") from exc
        return (self.weight * ens + (1.0 - self.weight) * dct).clamp(0.0, 1.0)
