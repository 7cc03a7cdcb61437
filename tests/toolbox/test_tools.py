"""Contract and quality tests for the classical restoration tools in ``agentir.toolbox.tools``."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import agentir.toolbox.tools
from agentir.toolbox.base import TOOL_INFO, TOOLS, Tool, ToolError, run_on_rgb, tools_for
from agentir.toolbox.degrade import apply_params, bicubic_resize
from agentir.toolbox.tools._common import estimate_noise_sigma
from agentir.toolbox.tools.brighten import classify_darkening
from agentir.toolbox.tools.deblur import estimate_defocus, estimate_motion
from agentir.toolbox.tools.jpeg import estimate_jpeg_quality
from agentir.toolbox.vocab import DEGRADATIONS

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"
NAMES = list(agentir.toolbox.tools.CLASSICAL_TOOLS)


def _procedural(h: int = 128, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth-gradients-plus-edges RGB uint8 test image (shapes, stripes, a soft texture)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([0.3 + 0.4 * xx / w, 0.25 + 0.5 * yy / h, 0.6 - 0.3 * (xx + yy) / (h + w)], axis=2)
    img[(xx - w * 0.35) ** 2 + (yy - h * 0.4) ** 2 < (0.18 * w) ** 2] = (0.9, 0.2, 0.15)
    img[int(0.6 * h) : int(0.85 * h), int(0.55 * w) : int(0.9 * w)] = (0.1, 0.15, 0.6)
    img[:, int(0.1 * w) : int(0.12 * w)] = 0.95
    img += 0.08 * np.sin(xx * 0.35 + yy * 0.2)[..., None]
    smooth = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)), (0, 0), 3)[..., None]
    img = cv2.GaussianBlur(img, (0, 0), 0.7) + 0.1 * smooth
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def _photo(name: str = "astronaut") -> np.ndarray:
    """A 128x128 test photograph from tests/data, or the procedural image if it is missing."""
    path = DATA / f"{name}.png"
    if not path.exists():
        return _procedural()
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _to_batch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


# --- registration ---------------------------------------------------------------------------


def test_every_degradation_has_at_least_two_tools():
    """Each of the eight degradations has two or more registered tools for reflection to choose from."""
    for deg in DEGRADATIONS:
        assert len([n for n in tools_for(deg) if n in NAMES]) >= 2, deg


@pytest.mark.parametrize("name", NAMES)
def test_tool_matches_its_info(name):
    """A built tool satisfies the Tool protocol and agrees with its ToolInfo (degradation, scale, cpu)."""
    tool = TOOLS.get(name)
    info = TOOL_INFO[name]
    assert isinstance(tool, Tool)
    assert (tool.name, tool.degradation, tool.scale, tool.device) == (name, info.degradation, info.scale, "cpu")
    assert info.kind == "classical" and info.description and "\n" not in info.description


# --- the tensor contract --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 8, 8), (1, 3, 5, 7), (1, 3, 1, 1)])
def test_contract_on_odd_and_tiny_sizes(name, shape):
    """Output has the input layout (x4 for SR), lies in [0, 1], keeps dtype, and leaves the input untouched."""
    tool = TOOLS.get(name)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen)
    before = x.clone()
    y = tool(x)
    n, c, h, w = shape
    assert y.shape == (n, c, h * tool.scale, w * tool.scale)
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_batch_independent(name):
    """Two runs give identical outputs, and an image's result does not depend on its batch mates."""
    tool = TOOLS.get(name)
    a = _to_batch(_procedural(40, 36, seed=1))
    b = _to_batch(_procedural(40, 36, seed=2)).flip(-1)
    batch = torch.cat([a, b])
    y1, y2 = tool(batch), tool(batch.clone())
    assert torch.equal(y1, y2)
    assert torch.allclose(tool(b)[0], y1[1], atol=1e-6)


@pytest.mark.parametrize("name", ["dct_denoise", "bp_sr", "wiener_motion_deblur"])
def test_float64_and_empty_batches(name):
    """A float64 batch comes back float64, and an empty batch gives an empty result of the right size."""
    tool = TOOLS.get(name)
    x = torch.rand(1, 3, 12, 10, dtype=torch.float64)
    assert tool(x).dtype == torch.float64
    empty = tool(torch.zeros(0, 3, 6, 5))
    assert empty.shape == (0, 3, 6 * tool.scale, 5 * tool.scale)


@pytest.mark.parametrize(
    "bad",
    [
        torch.rand(3, 8, 8),
        torch.rand(1, 1, 8, 8),
        torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8),
        np.zeros((1, 3, 8, 8)),
    ],
)
def test_bad_input_raises_tool_error(bad):
    """Wrong rank, channel count, integer dtype or a non-tensor raise ToolError naming the tool."""
    with pytest.raises(ToolError, match="dct_denoise"):
        TOOLS.get("dct_denoise")(bad)


def test_out_of_range_input_is_clamped():
    """Values outside [0, 1] (and NaN) are clamped instead of propagating through the filters."""
    x = torch.rand(1, 3, 16, 16) * 3 - 1
    x[0, 0, 3, 3] = float("nan")
    y = TOOLS.get("dcp_dehaze")(x)
    assert torch.isfinite(y).all() and float(y.min()) >= 0 and float(y.max()) <= 1


# --- estimators -----------------------------------------------------------------------------


def test_noise_sigma_estimate_tracks_true_sigma():
    """The MAD noise estimate is within 35 % of the true Gaussian sigma and small on a clean image."""
    img = _photo("coffee").astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    assert estimate_noise_sigma(img) < 4 / 255
    for sigma in (15 / 255, 40 / 255):
        noisy = img + rng.standard_normal(img.shape).astype(np.float32) * sigma
        assert abs(estimate_noise_sigma(noisy) - sigma) < 0.35 * sigma


@pytest.mark.parametrize("quality", [10, 20, 30, 50])
def test_jpeg_quality_is_read_from_the_quantisation_lattice(quality):
    """The estimated JPEG quality is within 2 of the quality used by the benchmark's encoder."""
    img = _photo("chelsea")
    out = apply_params(img, {"name": "jpeg", "applied": True, "quality": quality})
    q, conf = estimate_jpeg_quality(out.astype(np.float32) / 255.0)
    assert q is not None and abs(q - quality) <= 2 and conf > 0.5


def test_jpeg_quality_is_none_for_a_raw_image():
    """An image that was never JPEG-compressed shows no lattice and gives no quality."""
    q, _ = estimate_jpeg_quality(_photo("chelsea").astype(np.float32) / 255.0)
    assert q is None


@pytest.mark.parametrize(("angle", "radius", "sigma"), [(-60.0, 10, 3.0), (25.0, 15, 5.0), (80.0, 10, 3.0)])
def test_motion_blur_parameters_are_recovered(angle, radius, sigma):
    """The spectrum fit recovers the recipe's blur angle (within 3 degrees) and kernel size."""
    # chelsea: on 128 px crops dominated by straight stripes (coffee, rocket) the fit can confuse
    # neighbouring kernel sizes near the axes; the full-size benchmark images are far easier.
    img = _photo("chelsea")
    params = {"name": "motion_blur", "applied": True, "radius": radius, "sigma": sigma, "angle": angle}
    blurred = apply_params(img, params).astype(np.float32) / 255.0
    a, r, s = estimate_motion(blurred)
    diff = abs((a - angle + 90) % 180 - 90)
    assert diff <= 3 and (r, s) == (radius, sigma)


@pytest.mark.parametrize(("radius", "alias"), [(3, 0.1), (6, 0.5)])
def test_defocus_radius_is_recovered(radius, alias):
    """The spectrum fit recovers the recipe's defocus disk radius."""
    img = _photo("coffee")
    blurred = apply_params(img, {"name": "defocus_blur", "applied": True, "radius": radius, "alias": alias})
    assert estimate_defocus(blurred.astype(np.float32) / 255.0)[0] == radius


@pytest.mark.parametrize(
    ("params", "variant"),
    [({"variant": "gamma", "gamma": 0.55}, "gamma"), ({"variant": "linear", "max": 120}, "linear")],
)
def test_darkening_variant_is_recognised(params, variant):
    """Gamma and linear-rescale darkenings of a well-exposed image are told apart."""
    img = _photo("rocket")
    dark = apply_params(img, {"name": "dark", "applied": True, **params})
    assert classify_darkening(dark.astype(np.float32) / 255.0)[0] == variant


@pytest.mark.parametrize(("params", "variant"), [({"variant": "shift", "shift": 50}, "shift"), ({"variant": "linear", "max": 150}, "linear")])
def test_darkening_variant_survives_later_noise(params, variant):
    """A shift's clipped pile at black is still told from a rescale once noise spreads it."""
    img = _photo("coffee")
    dark = apply_params(img, {"name": "dark", "applied": True, **params}).astype(np.float64)
    noisy = np.clip(dark + np.random.default_rng(0).normal(0.0, 3.0, dark.shape), 0, 255).round()
    assert classify_darkening(noisy.astype(np.float32) / 255.0)[0] == variant


def test_gamma_darkening_is_undone_towards_a_well_exposed_mean():
    """hsv_brighten inverts a gamma darkening (top end intact) and lands near the clean image."""
    img = _photo("rocket")
    dark = apply_params(img, {"name": "dark", "applied": True, "variant": "gamma", "gamma": 0.6})
    out = run_on_rgb(TOOLS.get("hsv_brighten"), dark)
    assert _psnr(out, img) > _psnr(dark, img) + 3.0


# --- quality: the first (best-first) tool of each degradation raises PSNR --------------------

# Recorded degradations (replayed bit-exactly by apply_params) and the minimum gain in dB that
# the first registered tool must reach on each test photograph.
QUALITY_CASES = [
    ("noise", {"kind": "gaussian", "sigma": 30.0, "field_seed": 7}, 4.0),
    ("noise", {"kind": "poisson", "scale": 2.0, "field_seed": 8}, 4.0),
    ("jpeg", {"quality": 15}, 0.2),
    ("low_resolution", {"scale": 4}, 0.15),
    # chelsea has no highlights, so its gamma darkening is taken for a linear one: smaller gain.
    ("dark", {"variant": "gamma", "gamma": 0.6}, 1.0),
    ("dark", {"variant": "linear", "max": 130}, 3.0),
    ("haze", {"A": 0.9, "beta": 1.4, "field_seed": 3}, 2.0),
    ("motion_blur", {"radius": 15, "sigma": 5.0, "angle": 33.0}, 5.0),
    ("defocus_blur", {"radius": 4, "alias": 0.5}, 2.0),
    ("rain", {"value": 80, "length": 30, "angle": 10, "field_seed": 5}, 2.0),
]


@pytest.mark.parametrize(("degradation", "params", "min_gain"), QUALITY_CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("photo", ["chelsea", "rocket"])
def test_first_tool_raises_psnr(degradation, params, min_gain, photo):
    """On a benchmark-degraded photograph the best-first tool for that degradation gains at least min_gain dB."""
    clean = _photo(photo)
    bad = apply_params(clean, {"name": degradation, "applied": True, **params})
    ref = bicubic_resize(bad, 4.0) if degradation == "low_resolution" else bad
    tool = TOOLS.get(tools_for(degradation)[0])
    out = tool(_to_batch(bad))[0].permute(1, 2, 0).numpy()
    assert out.shape == clean.shape
    gain = _psnr(out, clean / 255.0) - _psnr(ref / 255.0, clean / 255.0)
    assert gain >= min_gain, f"{tool.name}: gain {gain:.2f} dB < {min_gain} dB"


def test_procedural_image_is_restored_by_every_degradations_first_tool():
    """On the procedural smooth+edges image (no test data needed) each degradation's first tool gains PSNR."""
    clean = _procedural(96, 112)
    for degradation, params, _ in QUALITY_CASES:
        bad = apply_params(clean, {"name": degradation, "applied": True, **params})
        ref = bicubic_resize(bad, 4.0) if degradation == "low_resolution" else bad
        out = TOOLS.get(tools_for(degradation)[0])(_to_batch(bad))[0].permute(1, 2, 0).numpy()
        gain = _psnr(out, clean / 255.0) - _psnr(ref / 255.0, clean / 255.0)
        assert gain > 0.0, f"{degradation}: {gain:.2f} dB"


def test_defocus_deblur_leaves_a_sharp_photo_nearly_unchanged():
    """On an unblurred photo the radius estimate is the identity kernel, so the output stays within 40 dB."""
    clean = _photo("chelsea")
    assert estimate_defocus(clean.astype(np.float32) / 255.0)[0] == 0
    out = TOOLS.get("wiener_defocus_deblur")(_to_batch(clean))[0].permute(1, 2, 0).numpy()
    assert _psnr(out, clean / 255.0) > 40.0


def test_deconvolution_regularises_noisy_inputs_more():
    """The Wiener regularisation grows with the estimated noise, and is the base value on a clean image."""
    from agentir.toolbox.tools.deblur import noise_aware_reg

    img = _photo("coffee").astype(np.float32) / 255.0
    noisy = img + np.random.default_rng(0).standard_normal(img.shape).astype(np.float32) * (20 / 255)
    assert noise_aware_reg(img, 1e-3, 100.0) == pytest.approx(1e-3)
    assert noise_aware_reg(noisy, 1e-3, 100.0) > 5e-3


def test_manual_tools_are_not_offered_to_the_agent():
    """A tool tagged manual is registered and callable but left out of tools_for's default list."""
    assert "wiener_defocus_deblur_r3" in TOOLS
    assert "wiener_defocus_deblur_r3" not in tools_for("defocus_blur")
    assert "wiener_defocus_deblur_r3" in tools_for("defocus_blur", include_manual=True)
