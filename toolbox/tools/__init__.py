"""The classical (CPU, training-free) restoration tools, registered on import.

Importing this package registers every tool in :data:`toolbox.base.TOOLS` with its
:class:`~toolbox.base.ToolInfo`; the tool objects themselves are built lazily on first
``TOOLS.get(name)``. Within a degradation, tools are registered best-first (by the PSNR gains
measured with ``python -m toolbox.tools.measure``), so ``tools_for(degradation)`` lists them in
the order an agent should try them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from toolbox.base import ToolInfo, register_tool

__all__ = ["CLASSICAL_TOOLS"]


def _lazy(module: str, cls: str, **kwargs: Any) -> Callable[[], Any]:
    """A zero-argument factory that imports ``toolbox.tools.<module>`` only when called."""

    def factory() -> Any:
        return getattr(importlib.import_module(f"toolbox.tools.{module}"), cls)(**kwargs)

    return factory


# (name, degradation, scale, module, class, kwargs, tags, description), best first per degradation.
_SPECS: tuple[tuple[str, str, int, str, str, dict[str, Any], tuple[str, ...], str], ...] = (
    # noise
    (
        "dct_denoise",
        "noise",
        1,
        "denoise",
        "DCTDenoise",
        {},
        ("auto-sigma",),
        "sliding 8x8 DCT hard thresholding at 2.7x the estimated noise sigma (opponent colour)",
    ),
    (
        "dct_denoise_strong",
        "noise",
        1,
        "denoise",
        "DCTDenoise",
        {"strength": 1.3},
        ("auto-sigma", "strong"),
        "sliding DCT thresholding with a 1.3x larger sigma (heavy or Poisson noise)",
    ),
    ("bilateral_denoise", "noise", 1, "denoise", "BilateralDenoise", {}, ("auto-sigma",), "bilateral filter with colour sigma from the estimated noise sigma"),
    (
        "nlm_denoise",
        "noise",
        1,
        "denoise",
        "NLMDenoise",
        {"h_factor": 0.65},
        ("auto-sigma", "mild"),
        "OpenCV fast non-local means, h from the estimated noise sigma",
    ),
    # jpeg
    (
        "dct_dejpeg",
        "jpeg",
        1,
        "jpeg",
        "DCTDejpeg",
        {},
        ("auto-quality",),
        "sliding DCT thresholding with strength from the JPEG quality read off the quantisation lattice",
    ),
    ("dct_dejpeg_strong", "jpeg", 1, "jpeg", "DCTDejpeg", {"strength": 1.4}, ("auto-quality", "strong"), "stronger sliding DCT deblocking (1.4x threshold)"),
    ("bilateral_dejpeg", "jpeg", 1, "jpeg", "BilateralDejpeg", {}, ("mild",), "mild bilateral smoothing of blocks and ringing"),
    # low resolution
    (
        "bp_sr",
        "low_resolution",
        4,
        "sr",
        "BackProjectionSR",
        {},
        (),
        "sharpened Lanczos x4 refined by back-projection against the antialiased bicubic downscale",
    ),
    ("lanczos_sr", "low_resolution", 4, "sr", "LanczosSR", {"sharpen": 0.8}, (), "Lanczos x4 plus unsharp mask"),
    ("bicubic_sr", "low_resolution", 4, "sr", "BicubicSR", {}, ("mild",), "plain MATLAB-style bicubic x4 (the metric's own baseline)"),
    # dark
    ("hsv_brighten", "dark", 1, "brighten", "HSVBrighten", {}, ("auto",), "classify the V-channel darkening (shift / linear / gamma) and invert it"),
    ("gamma_brighten", "dark", 1, "brighten", "GammaBrighten", {}, (), "gamma on HSV value to a mean of 0.45"),
    ("stretch_brighten", "dark", 1, "brighten", "StretchBrighten", {}, ("mild",), "linear stretch of HSV value to a robust maximum of 0.97"),
    ("clahe_brighten", "dark", 1, "brighten", "CLAHEBrighten", {}, ("local",), "gamma brightening followed by CLAHE on Lab lightness"),
    # haze
    ("dcp_dehaze", "haze", 1, "dehaze", "DCPDehaze", {"omega": 0.85, "t0": 0.2}, (), "dark channel prior, guided-filter transmission, omega 0.85"),
    ("stretch_dehaze", "haze", 1, "dehaze", "StretchDehaze", {"amount": 0.7}, ("mild",), "subtract a smooth haze veil and stretch contrast"),
    ("dcp_dehaze_strong", "haze", 1, "dehaze", "DCPDehaze", {"omega": 0.95, "t0": 0.1}, ("strong",), "dark channel prior with omega 0.95 for dense haze"),
    # motion blur
    (
        "wiener_motion_deblur",
        "motion_blur",
        1,
        "deblur",
        "WienerMotionDeblur",
        {"reg": 1e-3},
        ("blind",),
        "spectrum-fitted line kernel (angle, length) and gradient-regularised Wiener deconvolution",
    ),
    (
        "wiener_motion_deblur_soft",
        "motion_blur",
        1,
        "deblur",
        "WienerMotionDeblur",
        {"reg": 5e-3, "noise_weight": 300.0},
        ("blind", "mild"),
        "as wiener_motion_deblur with 5x more regularisation (noisy inputs, less ringing)",
    ),
    (
        "rl_motion_deblur",
        "motion_blur",
        1,
        "deblur",
        "RLMotionDeblur",
        {"iterations": 30},
        ("blind", "mild"),
        "the same blind kernel estimate, 30 Richardson-Lucy iterations (15 on noisy inputs): no inverse-filter ringing",
    ),
    # defocus blur
    (
        "wiener_defocus_deblur",
        "defocus_blur",
        1,
        "deblur",
        "WienerDefocusDeblur",
        {"reg": 5e-4},
        ("blind",),
        "spectrum-fitted disk radius and gradient-regularised Wiener deconvolution",
    ),
    (
        "wiener_defocus_deblur_soft",
        "defocus_blur",
        1,
        "deblur",
        "WienerDefocusDeblur",
        {"reg": 3e-3, "noise_weight": 300.0},
        ("blind", "mild"),
        "as wiener_defocus_deblur with 6x more regularisation (noisy inputs, less ringing)",
    ),
    (
        "wiener_defocus_deblur_r3",
        "defocus_blur",
        1,
        "deblur",
        "WienerDefocusDeblur",
        # "manual": not offered to the agent. Reflection reads its over-sharpened output as very_low
        # defocus, yet it lost 0.3-0.9 dB after JPEG removal and on high/very_high singles.
        {"reg": 1e-3, "radius": (3, 0.1)},
        ("fixed", "mild", "manual"),
        "Wiener deconvolution with a fixed radius-3 disk kernel (under-corrects larger blur, never rings)",
    ),
    # rain
    (
        "streak_derain",
        "rain",
        1,
        "derain",
        "StreakDerain",
        {"across": 9, "along": 7, "strength": 1.1},
        (),
        "remove the grey, thin, oriented streak layer found by directional openings",
    ),
    (
        "streak_derain_mild",
        "rain",
        1,
        "derain",
        "StreakDerain",
        {"across": 7, "along": 7, "strength": 0.8},
        ("mild",),
        "milder streak removal (narrower, 80 % of the layer)",
    ),
    ("median_derain", "rain", 1, "derain", "MedianDerain", {}, ("mild",), "replace grey bright outliers by the 5x5 median"),
)

#: Tools that use whole-image statistics (global exposure, atmospheric light, a blur kernel or
#: streak angle fitted to the whole frame, the 8x8 JPEG grid): the Executor never tiles them.
GLOBAL_TOOLS: frozenset[str] = frozenset(
    {
        "hsv_brighten",
        "gamma_brighten",
        "stretch_brighten",
        "clahe_brighten",
        "dcp_dehaze",
        "dcp_dehaze_strong",
        "stretch_dehaze",
        "wiener_motion_deblur",
        "wiener_motion_deblur_soft",
        "rl_motion_deblur",
        "wiener_defocus_deblur",
        "wiener_defocus_deblur_soft",
        "wiener_defocus_deblur_r3",
        "dct_dejpeg",
        "dct_dejpeg_strong",
        "streak_derain",
        "streak_derain_mild",
    }
)

#: Names of the tools this package registers, in registration order.
CLASSICAL_TOOLS: tuple[str, ...] = tuple(spec[0] for spec in _SPECS)

for _name, _deg, _scale, _module, _cls, _kwargs, _tags, _desc in _SPECS:
    register_tool(
        ToolInfo(
            name=_name,
            degradation=_deg,
            scale=_scale,
            kind="classical",
            description=_desc,
            tags=(*_tags, "global") if _name in GLOBAL_TOOLS else _tags,
        ),
        _lazy(_module, _cls, name=_name, **_kwargs),
    )

import toolbox.learned  # noqa: E402,F401 - learned tools register after the classical ones
