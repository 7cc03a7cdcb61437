"""Learned restoration tools: compact CNNs trained on this project's degradation recipe.

Importing this package (``import agentir.toolbox.tools`` does, after the classical tools) registers
the learned tools of :data:`LEARNED_SPECS` with ``ToolInfo(kind="learned")``; the network is
built and its weights (``toolbox/weights/NAME.safetensors``, :func:`weights_path`) loaded lazily
on the first ``TOOLS.get(name)``. Weights are read with ``safetensors`` only (no pickle); the
file's metadata names the architecture, the training recipe, seed, steps and held-out PSNR.
Retrain any of them with ``agentir train tool NAME`` (:mod:`agentir.toolbox.learned.train`).

A tool whose weights are *shipped* is always registered: when its file is missing or corrupt
(truncated, another architecture, trained for another tool) building it raises
:class:`~agentir.toolbox.base.ToolError` naming the file and the command that rebuilds it, the log says
so once (``tool.unavailable``), and ``agentir tools`` lists it as unavailable with that reason
(:func:`agentir.toolbox.base.unavailable_reason`). A tool whose weights are *optional* (trainable, not
shipped) is registered only once its file exists.

=====================  ================  =====  ================================================
tool                   degradation       scale  trained on
=====================  ================  =====  ================================================
``cnn_denoise``        noise             1      Gaussian + Poisson noise, all severity levels
``cnn_dejpeg``         jpeg              1      JPEG qualities of every level (about 9-55)
``cnn_sr``             low_resolution    4      MATLAB-bicubic x4 downscaling
``cnn_motion_deblur``  motion_blur       1      (optional) the benchmark's line motion kernels
``allinone``           noise (manual)    1      1-3 mixed degradations in random order
``cnn_defocus_deblur`` defocus_blur      1      (optional) the benchmark's defocus kernels
``cnn_derain``         rain              1      (optional) synthetic rain streaks
=====================  ================  =====  ================================================

``allinone`` is tagged ``manual`` (and ``allinone``): the agent does not choose it by default.
``fusion_denoise`` (:mod:`agentir.toolbox.learned.fusion`) blends a self-ensemble of ``cnn_denoise``
with ``dct_denoise``; it has no weights of its own and is unavailable when ``cnn_denoise`` is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from agentir.toolbox.base import ToolError, ToolSpec, check_batch, register_spec
from agentir.toolbox.learned.fusion import FUSION_WEIGHT

__all__ = ["LEARNED_SPECS", "LEARNED_TOOLS", "MIN_SIZE", "WEIGHTS_DIR", "LearnedTool", "learned_tool", "load_network", "weights_path"]

#: Folder of the learned tools' weights (``NAME.safetensors``); read at each use, so tests can
#: point it elsewhere with ``monkeypatch.setattr(agentir.toolbox.learned, "WEIGHTS_DIR", tmp)``.
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Smallest side (pixels of the input) a learned tool accepts.
MIN_SIZE = 8

_NET = "agentir.toolbox.learned:learned_tool"

#: One declaration per learned tool, in registration order (after the classical tools); each
#: ``weights="..."`` tool has a training recipe of the same name in :data:`agentir.toolbox.learned.data.RECIPES`.
LEARNED_SPECS: tuple[ToolSpec, ...] = (
    ToolSpec(
        name="cnn_denoise",
        degradation="noise",
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="shipped",
        description="residual U-Net at half resolution trained on Gaussian and Poisson noise, all levels",
    ),
    ToolSpec(
        name="cnn_dejpeg",
        degradation="jpeg",
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="shipped",
        description="residual U-Net at half resolution trained on JPEG qualities 9-55 (block grid aligned)",
    ),
    ToolSpec(
        name="cnn_sr",
        degradation="low_resolution",
        scale=4,
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="shipped",
        description="x4 residual CNN over bicubic, trained on the antialiased MATLAB-bicubic downscale",
    ),
    # Not shipped: its training runs stayed at the identity (+0.00 dB held-out); registered once
    # a run writes its weights.
    ToolSpec(
        name="cnn_motion_deblur",
        degradation="motion_blur",
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="optional",
        description="residual U-Net at half resolution trained on the benchmark's line motion kernels",
    ),
    ToolSpec(
        name="allinone",
        degradation="noise",
        kind="learned",
        factory=_NET,
        tags=("manual", "allinone"),
        weights="shipped",
        description="experimental residual U-Net for 1-3 mixed degradations (noise, jpeg, dark, haze, blur, rain); "
        "the shipped weights lose 1.3 dB on held-out medium mixtures, manual only",
    ),
    ToolSpec(
        name="cnn_defocus_deblur",
        degradation="defocus_blur",
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="optional",
        description="residual U-Net at half resolution trained on the benchmark's defocus kernels",
    ),
    ToolSpec(
        name="cnn_derain",
        degradation="rain",
        kind="learned",
        factory=_NET,
        tags=("cnn",),
        weights="optional",
        description="residual U-Net at half resolution trained on synthetic rain streaks",
    ),
    ToolSpec(
        name="fusion_denoise",
        degradation="noise",
        kind="learned",
        factory="agentir.toolbox.learned.fusion:FusionDenoise",
        requires=("cnn_denoise", "dct_denoise"),
        tags=("ensemble", "strong", "slow"),
        description=f"{FUSION_WEIGHT:g} x cnn_denoise self-ensembled over 8 flips/turns + {1 - FUSION_WEIGHT:g} x dct_denoise (slow, strongest)",
    ),
)
_BY_NAME: dict[str, ToolSpec] = {s.name: s for s in LEARNED_SPECS}


def weights_path(name: str) -> Path:
    """The weights file of learned tool ``name`` (in :data:`WEIGHTS_DIR`)."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def _retrain_hint(name: str) -> str:
    spec = _BY_NAME.get(name)
    return f"retrain it with `agentir train tool {name}`" if spec is not None and spec.weights else "retrain it with `agentir train tool NAME`"


def load_network(name: str, path: Path, *, scale: int | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network stored in ``path`` (safetensors) and its metadata.

    When ``name`` has a training recipe, the file must hold that recipe's network (trained for
    ``name``); when ``scale`` is given, the file must be for that scale.

    Raises:
        ToolError: the file is missing, unreadable (truncated, not safetensors), holds another
            network, or does not match its architecture; the message names the file and the
            command that rebuilds it.
    """
    from safetensors import safe_open

    from agentir.toolbox.learned.data import RECIPES
    from agentir.toolbox.learned.nets import build

    path = Path(path)
    hint = _retrain_hint(name)
    if not path.is_file():
        raise ToolError(name, f"weights file {path} not found; {hint}")

    def refuse(exc: Exception) -> ToolError:
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        return ToolError(name, f"cannot load weights file {path} ({type(exc).__name__}: {text}); {hint}")

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has .keys() but is not iterable
        arch = meta.get("arch")
        kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        trained_for = json.loads(meta.get("recipe", "{}")).get("name", name)
    except Exception as exc:
        raise refuse(exc) from exc
    if arch is None:
        raise ToolError(name, f"weights file {path} has no 'arch' metadata (it was not written by `agentir train tool`); {hint}")
    wrong = None
    recipe = RECIPES.get(name)
    if recipe is not None and trained_for != name:
        # A file of another tool can load cleanly (cnn_denoise and cnn_dejpeg share one
        # architecture) and then restore the wrong degradation without a word: refuse it.
        wrong = f"was trained for {trained_for}, not {name}"
    elif recipe is not None and (arch, kwargs) != (recipe.arch, dict(recipe.arch_kwargs)):
        wrong = f"holds a {arch} {kwargs} network, {name} is a {recipe.arch} {dict(recipe.arch_kwargs)}"
    elif scale is not None and str(meta.get("scale", scale)) != str(scale):
        wrong = f"is for scale {meta.get('scale')}, not {scale}"
    if wrong is not None:
        raise ToolError(name, f"weights file {path} {wrong}; {hint}")
    try:
        net = build(arch, **kwargs)
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except Exception as exc:
        raise refuse(exc) from exc
    return net.eval(), meta


class LearnedTool:
    """A trained network behind the :class:`~agentir.toolbox.base.Tool` contract.

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
        net, self.meta = load_network(name, self.weights, scale=self.scale)
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


def learned_tool(name: str) -> LearnedTool:
    """Build learned tool ``name`` of :data:`LEARNED_SPECS` from its weights file.

    Raises:
        ToolError: the weights file is missing or corrupt (the message names the file and the
            command that rebuilds it).
    """
    spec = _BY_NAME[name]
    return LearnedTool(name, spec.degradation, spec.scale)


def _weights_check(spec: ToolSpec) -> Callable[[], str | None]:
    """A check (for :func:`agentir.toolbox.base.unavailable_reason`) that loads and verifies the weights on the CPU."""

    def check() -> str | None:
        try:
            load_network(spec.name, weights_path(spec.name), scale=spec.scale)
        except ToolError as exc:
            return exc.reason
        return None

    return check


def _registered(spec: ToolSpec) -> bool:
    # Optional weights are not shipped: such a tool exists once somebody trained it.
    return spec.weights != "optional" or weights_path(spec.name).is_file()


#: Names of the learned tools registered with a weights file of their own, in order
#: (every shipped one, and the optional ones whose file exists).
LEARNED_TOOLS: tuple[str, ...] = tuple(s.name for s in LEARNED_SPECS if s.weights is not None and _registered(s))

for _spec in LEARNED_SPECS:
    if _registered(_spec):
        register_spec(_spec, check=_weights_check(_spec) if _spec.weights is not None else None)
