"""Held parameters (:mod:`agentir.toolbox.held`) and the temporal stage (:mod:`agentir.toolbox.temporal`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import agentir.toolbox.tools  # noqa: F401 - registers the tools
from agentir.toolbox.base import TOOLS, ToolError
from agentir.toolbox.degrade import degrade_chain
from agentir.toolbox.held import ParamSmoother, estimate_params, has_params, run_with_params
from agentir.toolbox.temporal import TemporalDenoiser

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"

#: Every tool that estimates parameters from the image.
HELD_TOOLS = (
    "hsv_brighten",
    "gamma_brighten",
    "stretch_brighten",
    "clahe_brighten",
    "dct_denoise",
    "dct_denoise_strong",
    "bilateral_denoise",
    "nlm_denoise",
    "dcp_dehaze",
    "dcp_dehaze_strong",
    "wiener_motion_deblur",
    "wiener_defocus_deblur",
)
#: Tools with a uint8 fast path, and how far (grey levels) it may be from ``apply``.
FAST_TOLERANCE = {"hsv_brighten": 1, "gamma_brighten": 1, "stretch_brighten": 1, "bilateral_denoise": 2}


def _images() -> list[np.ndarray]:
    out = []
    for i, name in enumerate(("coffee", "rocket")):
        img = np.array(Image.open(DATA / f"{name}.png").convert("RGB"))
        for combo in (["dark", "noise"], ["dark"]):
            d, _ = degrade_chain(img, combo, np.random.default_rng(i))
            out.append(d)
    return out


@pytest.mark.parametrize("name", HELD_TOOLS)
def test_process_is_apply_of_estimate(name: str) -> None:
    """A tool's own output is exactly ``apply(img, estimate(img))``: holding parameters changes nothing for the agent."""
    tool = TOOLS.get(name)
    assert has_params(tool)
    for rgb in _images()[:2]:
        img = rgb.astype(np.float32) / 255.0
        np.testing.assert_array_equal(tool.process(img), tool.apply(img, tool.estimate(img)))  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(FAST_TOLERANCE))
def test_uint8_fast_path_agrees_with_apply(name: str) -> None:
    """``apply_u8`` (lookup table / OpenCV's uint8 filter) is within a grey level or two of ``apply``."""
    tool = TOOLS.get(name)
    for rgb in _images():
        params = estimate_params(tool, rgb)  # type: ignore[arg-type]
        ref = np.clip(tool.apply(rgb.astype(np.float32) / 255.0, params) * 255.0 + 0.5, 0, 255).astype(np.uint8)  # type: ignore[attr-defined]
        fast = run_with_params(tool, rgb, params)  # type: ignore[arg-type]
        diff = np.abs(fast.astype(int) - ref.astype(int))
        assert diff.max() <= FAST_TOLERANCE[name], (name, diff.max())
        assert diff.mean() < 0.3


def test_held_parameters_are_used_instead_of_estimates() -> None:
    """The same frame with another held exposure comes out differently; with its own estimate, as the tool would."""
    tool = TOOLS.get("stretch_brighten")
    rgb = _images()[3]
    own = estimate_params(tool, rgb)  # type: ignore[arg-type]
    a = run_with_params(tool, rgb, own)  # type: ignore[arg-type]
    b = run_with_params(tool, rgb, {"hi": float(own["hi"]) * 0.6})  # type: ignore[arg-type]
    assert b.mean() > a.mean() + 5


def test_run_with_params_rejects_bad_input_and_names_the_tool() -> None:
    """Not uint8 HxWx3 is a ValueError; a tool failure is a ToolError naming the tool."""
    tool = TOOLS.get("gamma_brighten")
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        run_with_params(tool, np.zeros((4, 4), np.float32), {"gamma": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ToolError, match="gamma_brighten"):
        run_with_params(tool, np.zeros((16, 16, 3), np.uint8), {})  # type: ignore[arg-type]


def test_smoother_blends_numbers_and_replaces_on_a_new_variant() -> None:
    """Floats follow an exponential moving average; a different categorical value replaces the whole set."""
    s = ParamSmoother(alpha=0.25)
    assert s.update({"variant": "linear", "param": 0.4}) == {"variant": "linear", "param": 0.4}
    assert s.update({"variant": "linear", "param": 0.8}) == {"variant": "linear", "param": pytest.approx(0.5)}
    assert s.update({"variant": "shift", "param": 0.1}) == {"variant": "shift", "param": 0.1}
    s.reset()
    assert s.update({"variant": "shift", "param": 0.3}) == {"variant": "shift", "param": 0.3}
    hold = ParamSmoother(alpha=0.0)
    hold.update({"sigma": 0.1})
    assert hold.update({"sigma": 0.3}) == {"sigma": 0.1}
    with pytest.raises(ValueError, match="alpha"):
        ParamSmoother(alpha=1.5)


# ----------------------------------------------------------------------------- temporal stage
def _noisy_clip(n: int, sigma: float, *, moving_box: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    base = np.array(Image.open(DATA / "coffee.png").convert("RGB")).astype(np.float32) / 255.0
    clean, noisy = [], []
    for t in range(n):
        img = base.copy()
        if moving_box:
            img[40:60, 10 + 6 * t : 30 + 6 * t] = 1.0
        clean.append(img)
        noisy.append(np.clip(img + rng.normal(0, sigma, img.shape).astype(np.float32), 0, 1))
    return clean, noisy


def test_temporal_stage_averages_static_pixels_and_follows_motion() -> None:
    """Static background gets several times less noise; a moving box is not smeared behind itself."""
    sigma = 0.08
    clean, noisy = _noisy_clip(8, sigma, moving_box=True)
    td = TemporalDenoiser(max_frames=8, threshold=3.0)
    outs = [td.step(f, sigma) for f in noisy]
    last, ref = outs[-1], clean[-1]
    static = np.ones(ref.shape[:2], bool)
    static[30:70, :] = False
    err_static = float(np.sqrt(np.mean((last[static] - ref[static]) ** 2)))
    assert err_static < sigma / 2  # ~sqrt(8) less noise where nothing moved
    box = (slice(42, 58), slice(10 + 6 * 7 + 2, 30 + 6 * 7 - 2))
    assert float(np.abs(last[box] - 1.0).mean()) < 0.15  # the box is where it is now, not averaged away
    trail = (slice(42, 58), slice(12, 24))  # where the box was at the start
    assert float(np.abs(last[trail] - ref[trail]).mean()) < 0.1  # no ghost
    assert td.static_fraction > 0.5


def test_temporal_stage_restarts_on_a_new_size_and_on_reset() -> None:
    """A frame of another size starts over (returned as is); reset forgets the average."""
    td = TemporalDenoiser()
    a = np.full((16, 16, 3), 0.5, np.float32)
    td.step(a, 0.05)
    b = np.full((8, 12, 3), 0.2, np.float32)
    np.testing.assert_array_equal(td.step(b, 0.05), b)
    td.reset()
    assert td.static_fraction == 0.0
    with pytest.raises(ValueError, match="max_frames"):
        TemporalDenoiser(max_frames=0)


# Cases for the torch path: (height, width) -- odd sizes, the 5x5 window larger than the frame.
TORCH_CASES = [(24, 31), (3, 5), (64, 48)]


@pytest.mark.parametrize(("h", "w"), TORCH_CASES)
def test_temporal_torch_path_agrees_with_numpy(h: int, w: int) -> None:
    """``step_torch`` (the device path) gives the numpy reference's frames within float rounding."""
    rng = np.random.default_rng(1)
    ref, dev = TemporalDenoiser(), TemporalDenoiser()
    base = rng.random((h, w, 3)).astype(np.float32)
    for t in range(5):
        frame = np.clip(base + rng.normal(0, 0.05, base.shape).astype(np.float32) + (0.3 if t == 3 else 0.0), 0, 1).astype(np.float32)
        a = ref.step(frame, 0.05)
        b = dev.step_torch(torch.from_numpy(frame).permute(2, 0, 1), 0.05).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(a, b, atol=2e-5)


#: Tools with a torch (device) path, and how far (grey levels) it may be from ``apply``.
TORCH_TOLERANCE = {"hsv_brighten": 1, "gamma_brighten": 1, "stretch_brighten": 1, "bilateral_denoise": 3}


@pytest.mark.parametrize("name", sorted(TORCH_TOLERANCE))
def test_torch_path_agrees_with_numpy_apply(name: str) -> None:
    """``apply_torch`` (run here on CPU tensors, on CUDA by the stream) is within a few grey levels of the numpy ``apply``."""
    tool = TOOLS.get(name)
    for rgb in _images():
        params = estimate_params(tool, rgb)  # type: ignore[arg-type]
        x = rgb.astype(np.float32) / 255.0
        ref = tool.apply(x, params)  # type: ignore[attr-defined]
        got = tool.apply_torch(torch.from_numpy(x).permute(2, 0, 1)[None], params)[0].permute(1, 2, 0).numpy()  # type: ignore[attr-defined]
        diff = np.abs(np.clip(got, 0, 1) - np.clip(ref, 0, 1)) * 255.0
        assert diff.max() <= TORCH_TOLERANCE[name] + 0.5, (name, diff.max())
        assert diff.mean() < 0.5
