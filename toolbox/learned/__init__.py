"""Learned restoration tools: compact CNNs trained on this project's degradation recipe.

Importing this package (``import toolbox.tools`` does, after the classical tools) registers
every learned tool whose weights are shipped in ``toolbox/weights/NAME.safetensors``, with
``ToolInfo(kind="learned")``; the network is built and its weights loaded lazily on the first
``TOOLS.get(name)``. Weights are read with ``safetensors`` only (no pickle); the file's metadata
names the architecture, the training recipe, seed, steps and held-out PSNR. Retrain any of
them with ``agentir train tool NAME`` (:mod:`toolbox.learned.train`).

=====================  ================  =====  ================================================
tool                   degradation       scale  trained on
=====================  ================  =====  ================================================
``cnn_denoise``        noise             1      Gaussian + Poisson noise, all severity levels
``cnn_dejpeg``         jpeg              1      JPEG qualities of every level (about 9-55)
``cnn_sr``             low_resolution    4      MATLAB-bicubic x4 downscaling
``cnn_motion_deblur``  motion_blur       1      the benchmark's line motion kernels
``allinone``           noise (manual)    1      1-3 mixed degradations in random order
``cnn_defocus_deblur`` defocus_blur      1      (optional) the benchmark's defocus kernels
``cnn_derain``         rain              1      (optional) synthetic rain streaks
=====================  ================  =====  ================================================

``allinone`` is tagged ``manual`` (and ``allinone``): the agent does not choose it by default.
``fusion_denoise`` (:mod:`toolbox.learned.fusion`) blends a self-ensemble of ``cnn_denoise``
with ``dct_denoise``; it has no weights of its own and is registered wherever ``cnn_denoise`` is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from toolbox.base import ToolError, ToolInfo, check_batch, register_tool

__all__ = ["LEARNED_TOOLS", "MIN_SIZE", "WEIGHTS_DIR", "LearnedTool", "load_network", "weights_path"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Smallest side (pixels of the input) a learned tool accepts.
MIN_SIZE = 8

# name -> (degradation, scale, tags); registration order (after the classical tools).
_SPECS: dict[str, tuple[str, int, tuple[str, ...]]] = {
    "cnn_denoise": ("noise", 1, ("cnn",)),
    "cnn_dejpeg": ("jpeg", 1, ("cnn",)),
    "cnn_sr": ("low_resolution", 4, ("cnn",)),
    "cnn_motion_deblur": ("motion_blur", 1, ("cnn",)),
    "allinone": ("noise", 1, ("manual", "allinone")),
    "cnn_defocus_deblur": ("defocus_blur", 1, ("cnn",)),
    "cnn_derain": ("rain", 1, ("cnn",)),
}


def weights_path(name: str) -> Path:
    """The shipped weights file of learned tool ``name``."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def _retrain_hint(name: str) -> str:
    return f"retrain it with `agentir train tool {name}`" if name in _SPECS else "retrain it with `agentir train tool NAME`"


def load_network(name: str, path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network stored in ``path`` (safetensors) and its metadata.

    Raises:
        ToolError: the file is missing, unreadable, or does not match its architecture; the
            message names the file and the command that retrains it.
    """
    from safetensors import safe_open

    from toolbox.learned.nets import build

    path = Path(path)
    if not path.is_file():
        raise ToolError(name, f"weights file {path} not found; {_retrain_hint(name)}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has .keys() but is not iterable
        arch = meta["arch"]
        kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        net = build(arch, **kwargs)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except Exception as exc:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ToolError(name, f"cannot load weights file {path} ({type(exc).__name__}: {text}); {_retrain_hint(name)}") from exc
    return net.eval(), meta


class LearnedTool:
    """A trained network behind the :class:`~toolbox.base.Tool` contract.

    ``N x 3 x H x W`` float in ``[0, 1]`` in, the same (``4H x 4W`` for scale 4) out; any size
    of at least :data:`MIN_SIZE` pixels (reflect-padded to what the network needs and cropped
    back), clamped to ``[0, 1]``, deterministic, never in place. The model moves to ``device``
    once (``"auto"``: CUDA when available).
    """

    def __init__(self, name: str, degradation: str, scale: int, *, weights: str | Path | None = None, device: str = "auto") -> None:
        self.name = name
        self.degradation = degradation
        self.scale = int(scale)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.weights = Path(weights) if weights is not None else weights_path(name)
        net, self.meta = load_network(name, self.weights)
        if int(self.meta.get("scale", scale)) != self.scale:
            raise ToolError(name, f"weights file {self.weights} is for scale {self.meta.get('scale')}, not {scale}; {_retrain_hint(name)}")
        self._net = net.to(self.device)
        self._multiple = int(getattr(net, "multiple", 1))

    def __repr__(self) -> str:
        return f"LearnedTool(name={self.name!r}, degradation={self.degradation!r}, weights={str(self.weights)!r})"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Restore every image of ``batch``.

        Raises:
            ToolError: bad layout or dtype, or an image smaller than :data:`MIN_SIZE` pixels.
        """
        check_batch(self.name, batch)
        n, _, h, w = batch.shape
        s = self.scale
        if n == 0:
            return batch.new_zeros((0, 3, h * s, w * s))
        if h < MIN_SIZE or w < MIN_SIZE:
            raise ToolError(self.name, f"image of {h}x{w} pixels is too small; learned tools need at least {MIN_SIZE}x{MIN_SIZE}")
        x = torch.nan_to_num(batch.detach().to(self.device, torch.float32), nan=0.0).clamp(0.0, 1.0)
        m = self._multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        with torch.inference_mode():
            y = self._net(x)[:, :, : h * s, : w * s].clamp(0.0, 1.0)
        return y.to(device=batch.device, dtype=batch.dtype).contiguous()


def _factory(name: str, degradation: str, scale: int) -> Callable[[], LearnedTool]:
    def build() -> LearnedTool:
        return LearnedTool(name, degradation, scale)

    return build


def _description(name: str) -> str:
    from toolbox.learned.data import RECIPES

    return RECIPES[name].description


#: Names of the learned tools registered (those whose weights are shipped), in order.
LEARNED_TOOLS: tuple[str, ...] = tuple(n for n in _SPECS if weights_path(n).is_file())

for _name in LEARNED_TOOLS:
    _deg, _scale, _tags = _SPECS[_name]
    register_tool(
        ToolInfo(name=_name, degradation=_deg, scale=_scale, kind="learned", description=_description(_name), tags=_tags),
        _factory(_name, _deg, _scale),
    )

if "cnn_denoise" in LEARNED_TOOLS:
    from toolbox.learned.fusion import FUSION_WEIGHT, FusionDenoise

    def _fusion() -> Any:
        return FusionDenoise()

    register_tool(
        ToolInfo(
            name="fusion_denoise",
            degradation="noise",
            scale=1,
            kind="learned",
            description=f"{FUSION_WEIGHT:g} x cnn_denoise self-ensembled over 8 flips/turns + {1 - FUSION_WEIGHT:g} x dct_denoise (slow, strongest)",
            tags=("ensemble", "strong", "slow"),
        ),
        _fusion,
    )
