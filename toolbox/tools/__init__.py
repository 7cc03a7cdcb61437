"""The classical (CPU, training-free) restoration tools, registered on import.

Importing this package registers every tool of :data:`CLASSICAL_SPECS` in
:data:`agentir.toolbox.base.TOOLS` (its :class:`~agentir.toolbox.base.ToolInfo` in ``TOOL_INFO``); the tool
objects themselves are built lazily on first ``TOOLS.get(name)``. Within a degradation, tools
are declared best-first (by the PSNR gains measured with ``python -m agentir.toolbox.tools.measure``),
so ``tools_for(degradation)`` lists them in the order an agent should try them.
"""

from __future__ import annotations

from agentir.toolbox.base import ToolSpec, register_spec

__all__ = ["CLASSICAL_SPECS", "CLASSICAL_TOOLS"]

#: One declaration per classical tool, best first per degradation. ``whole_image=True`` marks the
#: tools that use whole-image statistics (global exposure, atmospheric light, a blur kernel or
#: streak angle fitted to the whole frame, the 8x8 JPEG grid): the Executor never tiles them.
CLASSICAL_SPECS: tuple[ToolSpec, ...] = (
    # noise
    ToolSpec(
        name="dct_denoise",
        degradation="noise",
        factory="agentir.toolbox.tools.denoise:DCTDenoise",
        tags=("auto-sigma",),
        description="sliding 8x8 DCT hard thresholding at 2.7x the estimated noise sigma (opponent colour)",
    ),
    ToolSpec(
        name="dct_denoise_strong",
        degradation="noise",
        factory="agentir.toolbox.tools.denoise:DCTDenoise",
        kwargs={"strength": 1.3},
        tags=("auto-sigma", "strong"),
        description="sliding DCT thresholding with a 1.3x larger sigma (heavy or Poisson noise)",
    ),
    ToolSpec(
        name="bilateral_denoise",
        degradation="noise",
        factory="agentir.toolbox.tools.denoise:BilateralDenoise",
        tags=("auto-sigma",),
        description="bilateral filter with colour sigma from the estimated noise sigma",
    ),
    ToolSpec(
        name="nlm_denoise",
        degradation="noise",
        factory="agentir.toolbox.tools.denoise:NLMDenoise",
        kwargs={"h_factor": 0.65},
        tags=("auto-sigma", "mild"),
        description="OpenCV fast non-local means, h from the estimated noise sigma",
    ),
    # jpeg
    ToolSpec(
        name="dct_dejpeg",
        degradation="jpeg",
        factory="agentir.toolbox.tools.jpeg:DCTDejpeg",
        tags=("auto-quality",),
        whole_image=True,
        description="sliding DCT thresholding with strength from the JPEG quality read off the quantisation lattice",
    ),
    ToolSpec(
        name="dct_dejpeg_strong",
        degradation="jpeg",
        factory="agentir.toolbox.tools.jpeg:DCTDejpeg",
        kwargs={"strength": 1.4},
        tags=("auto-quality", "strong"),
        whole_image=True,
        description="stronger sliding DCT deblocking (1.4x threshold)",
    ),
    ToolSpec(
        name="bilateral_dejpeg",
        degradation="jpeg",
        factory="agentir.toolbox.tools.jpeg:BilateralDejpeg",
        tags=("mild",),
        description="mild bilateral smoothing of blocks and ringing",
    ),
    # low resolution
    ToolSpec(
        name="bp_sr",
        degradation="low_resolution",
        scale=4,
        factory="agentir.toolbox.tools.sr:BackProjectionSR",
        description="sharpened Lanczos x4 refined by back-projection against the antialiased bicubic downscale",
    ),
    ToolSpec(
        name="lanczos_sr",
        degradation="low_resolution",
        scale=4,
        factory="agentir.toolbox.tools.sr:LanczosSR",
        kwargs={"sharpen": 0.8},
        description="Lanczos x4 plus unsharp mask",
    ),
    ToolSpec(
        name="bicubic_sr",
        degradation="low_resolution",
        scale=4,
        factory="agentir.toolbox.tools.sr:BicubicSR",
        tags=("mild",),
        description="plain MATLAB-style bicubic x4 (the metric's own baseline)",
    ),
    # dark
    ToolSpec(
        name="hsv_brighten",
        degradation="dark",
        factory="agentir.toolbox.tools.brighten:HSVBrighten",
        tags=("auto",),
        whole_image=True,
        description="classify the V-channel darkening (shift / linear / gamma) and invert it",
    ),
    ToolSpec(
        name="gamma_brighten",
        degradation="dark",
        factory="agentir.toolbox.tools.brighten:GammaBrighten",
        whole_image=True,
        description="gamma on HSV value to a mean of 0.45",
    ),
    ToolSpec(
        name="stretch_brighten",
        degradation="dark",
        factory="agentir.toolbox.tools.brighten:StretchBrighten",
        tags=("mild",),
        whole_image=True,
        description="linear stretch of HSV value to a robust maximum of 0.97",
    ),
    ToolSpec(
        name="clahe_brighten",
        degradation="dark",
        factory="agentir.toolbox.tools.brighten:CLAHEBrighten",
        tags=("local",),
        whole_image=True,
        description="gamma brightening followed by CLAHE on Lab lightness",
    ),
    # haze
    ToolSpec(
        name="dcp_dehaze",
        degradation="haze",
        factory="agentir.toolbox.tools.dehaze:DCPDehaze",
        kwargs={"omega": 0.85, "t0": 0.2},
        whole_image=True,
        description="dark channel prior, guided-filter transmission, omega 0.85",
    ),
    ToolSpec(
        name="stretch_dehaze",
        degradation="haze",
        factory="agentir.toolbox.tools.dehaze:StretchDehaze",
        kwargs={"amount": 0.7},
        tags=("mild",),
        whole_image=True,
        description="subtract a smooth haze veil and stretch contrast",
    ),
    ToolSpec(
        name="dcp_dehaze_strong",
        degradation="haze",
        factory="agentir.toolbox.tools.dehaze:DCPDehaze",
        kwargs={"omega": 0.95, "t0": 0.1},
        tags=("strong",),
        whole_image=True,
        description="dark channel prior with omega 0.95 for dense haze",
    ),
    # motion blur
    ToolSpec(
        name="wiener_motion_deblur",
        degradation="motion_blur",
        factory="agentir.toolbox.tools.deblur:WienerMotionDeblur",
        kwargs={"reg": 1e-3},
        tags=("blind",),
        whole_image=True,
        description="spectrum-fitted line kernel (angle, length) and gradient-regularised Wiener deconvolution",
    ),
    ToolSpec(
        name="wiener_motion_deblur_soft",
        degradation="motion_blur",
        factory="agentir.toolbox.tools.deblur:WienerMotionDeblur",
        kwargs={"reg": 5e-3, "noise_weight": 300.0},
        tags=("blind", "mild"),
        whole_image=True,
        description="as wiener_motion_deblur with 5x more regularisation (noisy inputs, less ringing)",
    ),
    ToolSpec(
        name="rl_motion_deblur",
        degradation="motion_blur",
        factory="agentir.toolbox.tools.deblur:RLMotionDeblur",
        kwargs={"iterations": 30},
        tags=("blind", "mild"),
        whole_image=True,
        description="the same blind kernel estimate, 30 Richardson-Lucy iterations (15 on noisy inputs): no inverse-filter ringing",
    ),
    # defocus blur
    ToolSpec(
        name="wiener_defocus_deblur",
        degradation="defocus_blur",
        factory="agentir.toolbox.tools.deblur:WienerDefocusDeblur",
        kwargs={"reg": 5e-4},
        tags=("blind",),
        whole_image=True,
        description="spectrum-fitted disk radius and gradient-regularised Wiener deconvolution",
    ),
    ToolSpec(
        name="wiener_defocus_deblur_soft",
        degradation="defocus_blur",
        factory="agentir.toolbox.tools.deblur:WienerDefocusDeblur",
        kwargs={"reg": 3e-3, "noise_weight": 300.0},
        tags=("blind", "mild"),
        whole_image=True,
        description="as wiener_defocus_deblur with 6x more regularisation (noisy inputs, less ringing)",
    ),
    ToolSpec(
        name="wiener_defocus_deblur_r3",
        degradation="defocus_blur",
        factory="agentir.toolbox.tools.deblur:WienerDefocusDeblur",
        kwargs={"reg": 1e-3, "radius": (3, 0.1)},
        # "manual": not offered to the agent. Reflection reads its over-sharpened output as very_low
        # defocus, yet it lost 0.3-0.9 dB after JPEG removal and on high/very_high singles.
        tags=("fixed", "mild", "manual"),
        whole_image=True,
        description="Wiener deconvolution with a fixed radius-3 disk kernel (under-corrects larger blur, never rings)",
    ),
    # rain
    ToolSpec(
        name="streak_derain",
        degradation="rain",
        factory="agentir.toolbox.tools.derain:StreakDerain",
        kwargs={"across": 9, "along": 7, "strength": 1.1},
        whole_image=True,
        description="remove the grey, thin, oriented streak layer found by directional openings",
    ),
    ToolSpec(
        name="streak_derain_mild",
        degradation="rain",
        factory="agentir.toolbox.tools.derain:StreakDerain",
        kwargs={"across": 7, "along": 7, "strength": 0.8},
        tags=("mild",),
        whole_image=True,
        description="milder streak removal (narrower, 80 % of the layer)",
    ),
    ToolSpec(
        name="median_derain",
        degradation="rain",
        factory="agentir.toolbox.tools.derain:MedianDerain",
        tags=("mild",),
        description="replace grey bright outliers by the 5x5 median",
    ),
)

#: Names of the tools this package registers, in registration order.
CLASSICAL_TOOLS: tuple[str, ...] = tuple(spec.name for spec in CLASSICAL_SPECS)

for _spec in CLASSICAL_SPECS:
    register_spec(_spec)

import agentir.toolbox.learned  # noqa: E402,F401 - learned tools register after the classical ones
