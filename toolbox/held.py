"""Held parameters: run a tool with the parameters it would estimate, fixed by the caller.

Several classical tools estimate something from the image before they restore it: the noise
level (denoisers), the darkening variant and exposure (brighteners), the atmospheric light
(dehazers), the blur kernel (deblurrers). On a video stream, estimating it again on every frame
makes the output flicker (each frame gets a slightly different gain or kernel). A tool that
follows :class:`ParamTool` splits its work in two:

* ``estimate(img) -> params``: what it would estimate, a small JSON-able ``{name: float | str}``;
* ``apply(img, params) -> img``: the restoration with those parameters.

Its ordinary ``process(img)`` is exactly ``apply(img, estimate(img))``, so the tool's outputs
for the agent are unchanged. A stream estimates once per scene (or every few frames), smooths
the values with :class:`ParamSmoother` and calls :func:`run_with_params` on every frame.

A tool may also offer ``apply_u8(rgb_uint8, params) -> uint8``, a faster path on uint8 frames
(a lookup table, OpenCV's uint8 filter) that agrees with ``apply`` to within a grey level or
two (each one has a test); :func:`run_with_params` prefers it.

Parameters are plain floats, or strings for categorical choices (a darkening variant): floats
are smoothed, strings are held until a new estimate differs, which then replaces the whole set
(a different variant makes the old numbers meaningless).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agentir.toolbox.base import ToolError

__all__ = ["ParamSmoother", "ParamTool", "Params", "apply_float", "estimate_params", "has_params", "run_with_params"]

#: One tool's estimated parameters.
Params = dict[str, float | str]


@runtime_checkable
class ParamTool(Protocol):
    """A tool whose numerics depend on parameters it estimates from the image (module docstring)."""

    name: str

    def estimate(self, img: np.ndarray) -> Params: ...

    def apply(self, img: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray: ...


def has_params(tool: Any) -> bool:
    """True when ``tool`` follows :class:`ParamTool` (it can run with held parameters)."""
    return callable(getattr(tool, "estimate", None)) and callable(getattr(tool, "apply", None))


def _check(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("expected a uint8 H x W x 3 RGB array")


def _to_float(rgb: np.ndarray) -> np.ndarray:
    _check(rgb)
    return rgb.astype(np.float32) * np.float32(1.0 / 255.0)


def estimate_params(tool: ParamTool, rgb: np.ndarray) -> Params:
    """The parameters ``tool`` would estimate on the uint8 RGB image ``rgb``.

    Raises:
        ToolError: the estimate failed (names the tool).
        ValueError: ``rgb`` is not uint8 H x W x 3.
    """
    img = _to_float(rgb)
    try:
        return dict(tool.estimate(img))
    except ToolError:
        raise
    except Exception as exc:  # numpy/OpenCV failures become the tool's error
        raise ToolError(tool.name, f"{type(exc).__name__}: {exc}") from exc


def run_with_params(tool: ParamTool, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
    """Run ``tool`` on uint8 RGB ``rgb`` with ``params`` held; returns uint8 (clipped, rounded).

    Raises:
        ToolError: the tool failed or returned non-finite values.
        ValueError: ``rgb`` is not uint8 H x W x 3.
    """
    fast = getattr(tool, "apply_u8", None)
    if callable(fast):
        _check(rgb)
        try:
            u8 = np.asarray(fast(rgb, params))
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(tool.name, f"{type(exc).__name__}: {exc}") from exc
        if u8.dtype != np.uint8 or u8.shape != rgb.shape:
            raise ToolError(tool.name, f"internal error: apply_u8 gave {u8.dtype} {u8.shape} for {rgb.shape}")
        return u8
    out = apply_float(tool, rgb, params)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def apply_float(tool: ParamTool, rgb: np.ndarray, params: Mapping[str, float | str]) -> np.ndarray:
    """``tool.apply`` on uint8 RGB ``rgb`` (as float32 in [0, 1]) with ``params``; the float32
    result, unclipped (the same size, or 4x for super-resolution).

    Raises:
        ToolError: the tool failed, returned another size or non-finite values.
        ValueError: ``rgb`` is not uint8 H x W x 3.
    """
    img = _to_float(rgb)
    try:
        out = np.asarray(tool.apply(img, params), dtype=np.float32)
    except ToolError:
        raise
    except Exception as exc:
        raise ToolError(tool.name, f"{type(exc).__name__}: {exc}") from exc
    if out.shape[:2] != img.shape[:2] and out.shape[:2] != (4 * img.shape[0], 4 * img.shape[1]):
        raise ToolError(tool.name, f"internal shape error: {img.shape} -> {out.shape}")
    if not np.isfinite(out).all():
        raise ToolError(tool.name, "returned non-finite values")
    return out


class ParamSmoother:
    """Smooths one tool's parameter estimates over a scene (exponential moving average).

    Args:
        alpha: weight of a new estimate (0 holds the first estimate forever, 1 follows each one).

    ``update(new)`` returns the parameters to use from now on: the first estimate as is; later
    ones blended ``old + alpha * (new - old)`` per float; a string that differs from the held one
    (or a different set of names) replaces everything. ``reset()`` forgets (a new scene).
    """

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.params: Params | None = None

    def reset(self) -> None:
        """Forget the held parameters."""
        self.params = None

    def update(self, new: Mapping[str, float | str]) -> Params:
        """Blend ``new`` into the held parameters (see the class docstring) and return them."""
        fresh = dict(new)
        old = self.params
        if old is None or set(old) != set(fresh) or any(isinstance(v, str) and old[k] != v for k, v in fresh.items()):
            self.params = fresh
            return dict(fresh)
        blended: Params = {}
        for k, v in fresh.items():
            o = old[k]
            blended[k] = v if isinstance(v, str) or isinstance(o, str) else float(o) + self.alpha * (float(v) - float(o))
        self.params = blended
        return dict(blended)
