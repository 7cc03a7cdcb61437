"""Tests for agentir.toolbox.degrade: the BENCHMARK.md degradation recipe."""

from __future__ import annotations

import io
import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from agentir.toolbox.degrade import (
    COMBINATIONS,
    apply_params,
    bicubic_resize,
    crop_to_multiple,
    degrade,
    degrade_chain,
    haze_depth_proxy,
)
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

SEVERE_LEVELS = LEVELS[1:]


def textured(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A procedurally generated RGB uint8 image with gradients, stripes and mid-range values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 128 + 50 * np.sin(xx / 3.0 + seed) * np.cos(yy / 5.0)
    img = np.stack([base + 20 * (yy / h), base - 15 * (xx / w), base + rng.normal(0, 8, (h, w))], axis=-1)
    return np.clip(img, 30, 225).round().astype(np.uint8)


def psnr255(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def draws(name: str, level: str | None = None, n: int = 60) -> list[dict]:
    img = textured(16, 16)
    rng = np.random.default_rng(123)
    return [degrade(img, name, rng, level=level)[1] for _ in range(n)]


# ----------------------------------------------------------------------------------- tables


def test_combinations_follow_benchmark_groups() -> None:
    """Groups A/B/C hold 8/4/4 combinations of known degradations, in BENCHMARK order."""
    assert [len(COMBINATIONS[g]) for g in "ABC"] == [8, 4, 4]
    assert COMBINATIONS["A"][0] == ("rain", "haze")
    assert COMBINATIONS["B"][1] == ("haze", "noise")
    assert COMBINATIONS["C"][0] == ("haze", "motion_blur", "low_resolution")
    for combos in COMBINATIONS.values():
        for combo in combos:
            assert all(n in DEGRADATIONS for n in combo)


# ----------------------------------------------------------------- test-set parameter ranges


def test_noise_test_set_ranges() -> None:
    """Test-set noise is Gaussian sigma in [20, 50] or Poisson scale in [1, 3], both kinds occurring."""
    ps = draws("noise")
    kinds = {p["kind"] for p in ps}
    assert kinds == {"gaussian", "poisson"}
    for p in ps:
        if p["kind"] == "gaussian":
            assert 20 <= p["sigma"] <= 50
        else:
            assert 1 <= p["scale"] <= 3


def test_jpeg_dark_rain_test_set_ranges() -> None:
    """JPEG quality, dark variants and rain parameters stay inside the half-open recipe ranges."""
    assert all(10 <= p["quality"] < 30 for p in draws("jpeg"))
    dark = draws("dark")
    assert {p["variant"] for p in dark} == {"shift", "gamma", "linear"}
    for p in dark:
        if p["variant"] == "shift":
            assert 30 <= p["shift"] < 50
        elif p["variant"] == "gamma":
            assert 0.5 <= p["gamma"] < 0.7
        else:
            assert 100 <= p["max"] < 150
    for p in draws("rain"):
        assert 50 <= p["value"] < 100 and 20 <= p["length"] < 40 and -30 <= p["angle"] < 30


def test_haze_and_blur_test_set_ranges() -> None:
    """Haze A/beta and the blur kernels come from the recipe's ranges and kernel tables."""
    for p in draws("haze"):
        assert 0.7 <= p["A"] <= 1.0 and 0.6 <= p["beta"] <= 1.8
    motion = draws("motion_blur")
    assert {(p["radius"], p["sigma"]) for p in motion} == {(10, 3.0), (15, 5.0), (15, 8.0)}
    assert all(-90 <= p["angle"] <= 90 for p in motion)
    assert {(p["radius"], p["alias"]) for p in draws("defocus_blur")} == {(3, 0.1), (4, 0.5), (6, 0.5)}


# ------------------------------------------------------------------- level parameter ranges


@pytest.mark.parametrize(
    ("level", "sigma", "scale"),
    [("low", (2, 6), (0.4, 0.6)), ("medium", (10, 20), (0.8, 1.2)), ("high", (25, 35), (1.7, 2.3)), ("very_high", (40, 50), (2.7, 3.3))],
)
def test_noise_level_ranges(level: str, sigma: tuple[float, float], scale: tuple[float, float]) -> None:
    """Severity-level noise draws its sigma / Poisson scale from that level's range."""
    for p in draws("noise", level, 30):
        lo, hi = sigma if p["kind"] == "gaussian" else scale
        assert lo <= p.get("sigma", p.get("scale")) <= hi
        assert p["level"] == level


@pytest.mark.parametrize(("level", "i"), [(lv, i) for i, lv in enumerate(SEVERE_LEVELS)])
def test_centred_levels_stay_within_ten_percent(level: str, i: int) -> None:
    """Centred level parameters (JPEG, dark, haze, rain) lie within +-10 % of the BENCHMARK centre."""

    def near(x: float, c: float) -> bool:
        return c * 0.9 - 0.5 <= x <= c * 1.1 + 0.5  # +-0.5 for integer rounding

    for p in draws("jpeg", level, 20):
        assert near(p["quality"], (50, 30, 20, 10)[i])
    for p in draws("dark", level, 30):
        key, centres = {"shift": ("shift", (15, 30, 50, 70)), "gamma": ("gamma", (0.8, 0.7, 0.6, 0.5)), "linear": ("max", (230, 190, 150, 120))}[p["variant"]]
        assert near(p[key], centres[i])
    for p in draws("haze", level, 20):
        a, b = ((0.6, 0.4), (0.7, 0.6), (0.8, 1.2), (1.0, 1.8))[i]
        assert a * 0.9 <= p["A"] <= min(1.0, a * 1.1) and b * 0.9 <= p["beta"] <= b * 1.1
    for p in draws("rain", level, 20):
        assert near(p["value"], (5, 60, 75, 85)[i])
    assert {(p["radius"], p["sigma"]) for p in draws("motion_blur", level, 5)} == {((5, 2.0), (10, 3.0), (15, 5.0), (15, 8.0))[i]}
    assert {(p["radius"], p["alias"]) for p in draws("defocus_blur", level, 5)} == {((2, 0.1), (3, 0.1), (4, 0.5), (6, 0.5))[i]}


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_very_low_is_identity(name: str) -> None:
    """Level very_low returns an unchanged copy (same size even for low_resolution) marked not applied."""
    img = textured()
    out, p = degrade(img, name, np.random.default_rng(0), level="very_low")
    assert out is not img and np.array_equal(out, img)
    assert p == {"name": name, "level": "very_low", "applied": False}


# --------------------------------------------------------------- shapes, determinism, replay


@pytest.mark.parametrize("name", DEGRADATIONS)
@pytest.mark.parametrize("level", [None, "low", "very_high"])
def test_shapes_and_dtype(name: str, level: str | None) -> None:
    """Every degradation returns uint8 RGB of the input size, except low_resolution which is 4x smaller."""
    img = textured(44, 60)
    before = img.copy()
    out, p = degrade(img, name, np.random.default_rng(1), level=level)
    assert out.dtype == np.uint8
    assert out.shape == ((11, 15, 3) if name == "low_resolution" else img.shape)
    assert np.array_equal(img, before), "the input must not be modified"
    assert p["name"] == name and p["level"] == level and p["applied"] is True


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_deterministic_and_replayable(name: str) -> None:
    """Same seed gives the same image and params; params survive JSON and replay bit-exactly."""
    img = textured()
    a, pa = degrade(img, name, np.random.default_rng(7))
    b, pb = degrade(img, name, np.random.default_rng(7))
    assert np.array_equal(a, b) and pa == pb
    replay = apply_params(img, json.loads(json.dumps(pa)))
    assert np.array_equal(replay, a)


def test_different_seeds_differ() -> None:
    """Different seeds give different noise fields."""
    img = textured()
    a, _ = degrade(img, "noise", np.random.default_rng(1))
    b, _ = degrade(img, "noise", np.random.default_rng(2))
    assert not np.array_equal(a, b)


def test_chain_applies_in_order_and_matches_single_steps() -> None:
    """degrade_chain equals applying degrade one name after another with the same generator."""
    img = textured(48, 64)
    combo = ("haze", "motion_blur", "low_resolution")
    out, params = degrade_chain(img, combo, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    ref = img
    for n in combo:
        ref, _ = degrade(ref, n, rng)
    assert np.array_equal(out, ref)
    assert [p["name"] for p in params] == list(combo)
    assert out.shape == (12, 16, 3)


def test_chain_levels() -> None:
    """degrade_chain passes one level per name and very_low skips a step."""
    img = textured()
    out, params = degrade_chain(img, ["noise", "jpeg"], np.random.default_rng(0), levels=["very_low", "very_low"])
    assert np.array_equal(out, img) and [p["applied"] for p in params] == [False, False]


@pytest.mark.parametrize("level", SEVERE_LEVELS)
def test_low_resolution_is_x4_at_every_level(level: str) -> None:
    """low_resolution is a x4 downscale at every level above very_low."""
    out, p = degrade(textured(40, 48), "low_resolution", np.random.default_rng(0), level=level)
    assert out.shape == (10, 12, 3) and p["scale"] == 4


# -------------------------------------------------------------------------------- monotone


@pytest.mark.parametrize("name", [n for n in DEGRADATIONS if n != "low_resolution"])
def test_levels_are_monotone(name: str) -> None:
    """A higher severity level lowers PSNR on average (same seed per level, 3 images)."""
    means = []
    for level in SEVERE_LEVELS:
        vals = []
        for s in range(3):
            img = textured(64, 64, seed=s)
            out, _ = degrade(img, name, np.random.default_rng(100 + s), level=level)
            vals.append(psnr255(out, img))
        means.append(float(np.mean(vals)))
    assert all(a > b for a, b in itertools.pairwise(means)), (name, means)


# ---------------------------------------------------------------------------- the formulas


def test_gaussian_noise_has_the_drawn_sigma() -> None:
    """Gaussian colour noise on a mid-grey image has standard deviation sigma (0-255 scale)."""
    img = np.full((128, 128, 3), 128, np.uint8)
    out = apply_params(img, {"name": "noise", "kind": "gaussian", "sigma": 25.0, "field_seed": 5})
    diff = out.astype(np.float64) - 128
    assert abs(diff.std() - 25.0) < 1.0 and abs(diff.mean()) < 0.5
    assert not np.array_equal(out[..., 0], out[..., 1]), "noise must be per channel (colour)"


def test_poisson_noise_follows_the_recipe_formula() -> None:
    """Poisson noise x + (poisson(x v)/v - x) * scale on [0, 1] with v = 2^ceil(log2 #unique) has variance x/v*scale^2."""
    img = np.full((160, 160, 3), 128, np.uint8)
    img[0, :128, 0] = np.arange(128)
    img[0, :128, 1] = np.arange(128, 256)  # 256 unique values -> v = 256
    out = apply_params(img, {"name": "noise", "kind": "poisson", "scale": 2.0, "field_seed": 3})
    diff = (out[1:].astype(np.float64) - 128) / 255.0
    expected = math.sqrt(128 / 255 / 256) * 2.0
    assert abs(diff.std() / expected - 1) < 0.05


def test_jpeg_matches_an_rgb_jpeg_codec() -> None:
    """JPEG is applied to RGB data as an RGB JPEG (channel order respected), matching Pillow's IJG encoder."""
    img = textured(40, 56)
    out = apply_params(img, {"name": "jpeg", "quality": 20})
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=20)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.abs(out.astype(int) - ref).mean() < 0.5


def test_dark_variants_on_v_channel() -> None:
    """Dark shift lowers the HSV V (= max over RGB) by the shift, linear maps V max to m, gamma darkens."""
    img = textured()
    v = img.max(axis=2).astype(int)
    shifted = apply_params(img, {"name": "dark", "variant": "shift", "shift": 40}).max(axis=2).astype(int)
    assert np.abs(shifted - np.clip(v - 40, 0, 255)).max() <= 1
    linear = apply_params(img, {"name": "dark", "variant": "linear", "max": 120}).max(axis=2)
    assert linear.max() == 120 and linear.min() == 0
    gamma = apply_params(img, {"name": "dark", "variant": "gamma", "gamma": 0.6}).max(axis=2).astype(int)
    assert np.abs(gamma - np.round((v / 255) ** (1 / 0.6) * 255)).max() <= 1


def test_haze_follows_the_scattering_model() -> None:
    """Haze is J t + 255 A (1 - t) with t = exp(-beta d) over the documented depth proxy."""
    img = textured()
    p = {"name": "haze", "A": 0.9, "beta": 1.5, "field_seed": 11}
    out = apply_params(img, p)
    d = haze_depth_proxy(img.shape[0], img.shape[1], 11)
    t = np.exp(-1.5 * d)[..., None]
    assert np.abs(out.astype(float) - (img * t + 255 * 0.9 * (1 - t))).max() <= 0.5 + 1e-9
    assert d.max() == pytest.approx(1.0) and d.min() > 0
    assert d[:5].mean() > d[-5:].mean(), "depth grows towards the top"


@pytest.mark.parametrize("name", ["motion_blur", "defocus_blur"])
def test_blurs_keep_flat_images(name: str) -> None:
    """Normalised blur kernels with replicated/reflected edges leave a flat image unchanged."""
    img = np.full((40, 40, 3), 77, np.uint8)
    out, _ = degrade(img, name, np.random.default_rng(0))
    assert np.array_equal(out, img)


def test_horizontal_motion_blur_is_one_sided() -> None:
    """At angle 0 a single bright column smears to one side only (towards smaller x: out[x] mixes img[x + i])."""
    img = np.zeros((9, 60, 3), np.uint8)
    img[:, 20] = 255
    out = apply_params(img, {"name": "motion_blur", "radius": 10, "sigma": 3.0, "angle": 0.0})
    row = out[4, :, 0].astype(int)
    assert row[20] > 0 and row[21:].sum() == 0 and row[9] == 0 and row[10:20].min() >= 0 and row[19] > row[15] > 0


def test_rain_adds_the_same_streaks_to_all_channels() -> None:
    """Rain only brightens, and adds one grey streak layer to every channel."""
    img = np.full((64, 64, 3), 60, np.uint8)
    out, _p = degrade(img, "rain", np.random.default_rng(4))
    added = out.astype(int) - 60
    assert added.min() >= 0 and added.max() > 100
    assert np.array_equal(added[..., 0], added[..., 1]) and np.array_equal(added[..., 1], added[..., 2])


# --------------------------------------------------------------------------- resize / crop


def test_bicubic_resize_matches_antialiased_bicubic_in_the_interior() -> None:
    """Away from borders, MATLAB-style bicubic equals Pillow's antialiased bicubic (same kernel, a = -0.5)."""
    x = np.random.default_rng(0).random((64, 48)).astype(np.float32)
    for sc, border in ((0.25, 3), (4, 12)):
        ours = bicubic_resize(x, sc)
        ref = np.asarray(Image.fromarray(x).resize(ours.shape[::-1], Image.BICUBIC))
        assert np.abs(ours - ref)[border:-border, border:-border].max() < 1e-5


def test_bicubic_resize_types_and_sizes() -> None:
    """uint8 stays uint8 (rounded), float keeps its dtype, tuples set the output size, constants survive."""
    img = textured(40, 48)
    small = bicubic_resize(img, 0.25)
    assert small.dtype == np.uint8 and small.shape == (10, 12, 3)
    f = bicubic_resize(img.astype(np.float32) / 255, 0.25)
    assert f.dtype == np.float32 and np.abs(f * 255 - small).max() <= 0.5 + 1e-3
    assert bicubic_resize(img, (7, 9)).shape == (7, 9, 3)
    flat = np.full((12, 16, 3), 0.3)
    assert np.allclose(bicubic_resize(flat, 4), 0.3) and np.allclose(bicubic_resize(flat, 0.5), 0.3)


def test_bicubic_resize_rejects_bad_arguments() -> None:
    """Non-positive scales, bad sizes and non-image arrays raise ValueError."""
    img = textured()
    for bad in (0, -1.0, float("nan"), (0, 5), (3,)):
        with pytest.raises(ValueError):
            bicubic_resize(img, bad)  # type: ignore[arg-type]  # deliberate: bad scales and sizes, to test the ValueError
    with pytest.raises(ValueError):
        bicubic_resize(np.zeros((4,)), 2)
    with pytest.raises(ValueError):
        bicubic_resize(np.zeros((4, 4), np.int32), 2)


def test_crop_to_multiple() -> None:
    """Cropping drops bottom/right rows and columns down to multiples of m; too small images raise."""
    img = textured(43, 61)
    out = crop_to_multiple(img)
    assert out.shape == (40, 60, 3) and np.array_equal(out, img[:40, :60])
    assert crop_to_multiple(img, 1).shape == img.shape
    with pytest.raises(ValueError, match="smaller than 4"):
        crop_to_multiple(img[:3])
    with pytest.raises(ValueError):
        crop_to_multiple(img, 0)


# ------------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("img", "match"),
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8), np.uint8), "H x W x 3"),
        (np.zeros((8, 8, 4), np.uint8), "H x W x 3"),
        (np.zeros((0, 8, 3), np.uint8), "non-empty"),
        ([[1, 2, 3]], "numpy array"),
    ],
)
def test_bad_images_raise(img: object, match: str) -> None:
    """Images that are not non-empty uint8 H x W x 3 arrays raise ValueError saying what is expected."""
    with pytest.raises(ValueError, match=match):
        degrade(img, "noise", np.random.default_rng(0))  # type: ignore[arg-type]  # deliberate: bad images, to test the ValueError


def test_bad_names_levels_and_rng_raise() -> None:
    """Unknown degradations suggest close names, unknown levels list the valid ones, a non-Generator rng is a TypeError."""
    img = textured()
    with pytest.raises(ValueError, match="did you mean motion_blur"):
        degrade(img, "motion_blurr", np.random.default_rng(0))
    with pytest.raises(ValueError, match="very_low"):
        degrade(img, "noise", np.random.default_rng(0), level="extreme")
    with pytest.raises(TypeError, match="default_rng"):
        degrade(img, "noise", 0)  # type: ignore[arg-type]  # deliberate: an int, not a Generator, to test the TypeError
    with pytest.raises(ValueError, match="one level per name"):
        degrade_chain(img, ["noise", "jpeg"], np.random.default_rng(0), levels=["low"])
    with pytest.raises(ValueError, match="empty"):
        degrade_chain(img, [], np.random.default_rng(0))
    with pytest.raises(ValueError, match="string"):
        degrade_chain(img, "noise", np.random.default_rng(0))
    with pytest.raises(ValueError, match="lack the key"):
        apply_params(img, {"name": "jpeg"})
