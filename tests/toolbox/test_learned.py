"""Learned tools (``toolbox.learned``): contract, shipped-model quality, training CLI, plug-in export."""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import toolbox.tools
from toolbox.base import TOOL_INFO, TOOLS, Tool, ToolError, tools_for
from toolbox.degrade import bicubic_resize, degrade, degrade_chain
from toolbox.learned import LEARNED_TOOLS, LearnedTool, weights_path
from toolbox.learned.data import RECIPES
from toolbox.plugins import load_plugins, unload_plugins

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clean"
#: Shipped models. cnn_motion_deblur is trainable but not shipped: its runs stayed at the identity
#: (+0.00 dB held-out), so it is not registered until a run beats its input.
CORE = ("cnn_denoise", "cnn_dejpeg", "cnn_sr", "allinone")
#: Mean PSNR gain (dB) each shipped model must reach on the three example images degraded at
#: level "medium" (seeded as below); the comments give what the shipped weights measure.
MIN_GAIN = {
    "cnn_denoise": ("noise", 5.0),  # measured 6.45 (6.90, 6.55, 5.89)
    "cnn_dejpeg": ("jpeg", 0.6),  # measured 1.04 (1.00, 0.72, 1.39)
    "cnn_sr": ("low_resolution", 0.8),  # over MATLAB bicubic x4; measured 1.50 (1.81, 0.75, 1.96)
    "cnn_motion_deblur": ("motion_blur", 2.0),
    "cnn_defocus_deblur": ("defocus_blur", 2.0),
    "cnn_derain": ("rain", 2.0),
}


def _read(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _examples() -> list[np.ndarray]:
    return [_read(p) for p in sorted(EXAMPLES.glob("*.png"))]


def _to_batch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1.0 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _restore(name: str, img: np.ndarray) -> np.ndarray:
    return TOOLS.get(name)(_to_batch(img))[0].permute(1, 2, 0).numpy()


# --- registration and contract ---------------------------------------------------------------


def test_core_tools_shipped_and_registered_after_classical() -> None:
    """The shipped models are registered as learned, after every classical tool."""
    order = list(TOOL_INFO)
    last_classical = max(order.index(n) for n in toolbox.tools.CLASSICAL_TOOLS)
    for name in CORE:
        assert weights_path(name).stat().st_size <= 5_000_000
        assert name in LEARNED_TOOLS and TOOL_INFO[name].kind == "learned"
        assert order.index(name) > last_classical
    assert TOOL_INFO["cnn_sr"].scale == 4
    assert TOOL_INFO["allinone"].tags == ("manual", "allinone")
    assert "allinone" not in tools_for("noise") and "allinone" in tools_for("noise", include_manual=True)
    assert "cnn_denoise" in tools_for("noise")


@pytest.mark.parametrize("name", [*LEARNED_TOOLS, *(["fusion_denoise"] if "fusion_denoise" in TOOL_INFO else [])])
def test_contract(name: str) -> None:
    """Odd sizes, x4 for SR, deterministic, input untouched, clamped, too-small images refused."""
    tool = TOOLS.get(name)
    assert isinstance(tool, Tool) and TOOLS.get(name) is tool and tool.device in ("cpu", "cuda")
    s = TOOL_INFO[name].scale
    x = torch.rand(2, 3, 13, 21, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    y = tool(x)
    assert y.shape == (2, 3, 13 * s, 21 * s) and y.dtype == x.dtype
    assert torch.equal(x, before)
    assert torch.equal(tool(x), y)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert tool(torch.zeros(0, 3, 9, 9)).shape == (0, 3, 9 * s, 9 * s)
    with pytest.raises(ToolError, match="too small"):
        tool(torch.rand(1, 3, 5, 40))
    with pytest.raises(ToolError):
        tool(torch.rand(3, 16, 16))


@pytest.mark.parametrize("name", [n for n in MIN_GAIN if n in LEARNED_TOOLS])
def test_shipped_model_improves_its_degradation(name: str) -> None:
    """On the example photos degraded at level medium (seeded), the model beats its input."""
    degradation, margin = MIN_GAIN[name]
    gains = []
    for i, clean in enumerate(_examples()):
        deg, _ = degrade(clean, degradation, np.random.default_rng([5, i]), level="medium")
        out = _restore(name, deg)
        base = bicubic_resize(deg.astype(np.float64) / 255.0, 4).clip(0, 1) if degradation == "low_resolution" else deg / 255.0
        gains.append(_psnr(out, clean / 255.0) - _psnr(base, clean / 255.0))
    assert float(np.mean(gains)) > margin, gains


@pytest.mark.skipif("fusion_denoise" not in TOOL_INFO, reason="needs the shipped cnn_denoise weights")
def test_fusion_denoise_blends_a_self_ensemble_with_the_dct_denoiser() -> None:
    """fusion_denoise is exactly w x (cnn_denoise over 8 flips/turns) + (1 - w) x dct_denoise, and
    on the example photos with Gaussian noise sigma 25 it beats both of its parts."""
    from toolbox.learned.fusion import FUSION_WEIGHT, self_ensemble

    assert TOOL_INFO["fusion_denoise"].kind == "learned" and "fusion_denoise" in tools_for("noise")
    fusion, cnn, dct = TOOLS.get("fusion_denoise"), TOOLS.get("cnn_denoise"), TOOLS.get("dct_denoise")
    x = torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(3))
    expected = (FUSION_WEIGHT * self_ensemble(cnn, x) + (1 - FUSION_WEIGHT) * dct(x)).clamp(0, 1)
    torch.testing.assert_close(fusion(x), expected, rtol=0, atol=1e-6)
    scores = {"fusion_denoise": [], "cnn_denoise": [], "dct_denoise": []}
    for i, clean in enumerate(_examples()):
        crop = clean[:128, :128]
        noise = np.random.default_rng([11, i]).normal(0.0, 25.0, crop.shape)
        noisy = np.clip(crop + noise, 0, 255).round().astype(np.uint8)
        for name in scores:
            scores[name].append(_psnr(_restore(name, noisy), crop / 255.0))
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    assert means["fusion_denoise"] > max(means["cnn_denoise"], means["dct_denoise"]), means


def test_self_ensemble_of_an_equivariant_tool_is_the_tool() -> None:
    """Flips and quarter turns commute with a pointwise tool, so its self-ensemble changes nothing."""
    from toolbox.learned.fusion import self_ensemble

    x = torch.rand(2, 3, 7, 12, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(self_ensemble(lambda b: b.sqrt(), x), x.sqrt())


def test_allinone_runs_on_mixed_degradations() -> None:
    """The all-in-one model runs on a noise + JPEG mixture (odd size) and returns a valid image.

    Only that: the shipped all-in-one weights do not improve mixtures yet (measured on these
    three images: -1.98 dB mean; held-out medium mixtures -1.33 dB), hence its "manual" tag.
    """
    clean = _examples()[0][:101, :99]
    deg, _ = degrade_chain(clean, ["noise", "jpeg"], np.random.default_rng(9), levels=["medium", "medium"])
    out = _restore("allinone", deg)
    assert out.shape == deg.shape and np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


def test_missing_and_corrupt_weights_name_the_file_and_the_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ToolError, match=r"nope\.safetensors.*agentir train tool cnn_dejpeg"):
        LearnedTool("cnn_dejpeg", "jpeg", 1, weights=missing)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ToolError, match=r"bad\.safetensors.*agentir train tool cnn_denoise"):
        LearnedTool("cnn_denoise", "noise", 1, weights=bad)


# --- training CLI ----------------------------------------------------------------------------


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A data folder in the layout of /work/shared/data/clean built from 128x128 example crops."""
    root = tmp_path / "data"
    imgs = _examples()
    for sub, picks in (("McMaster", [0]), ("Set5", [1]), ("CBSD68", [1, 2])):
        (root / sub).mkdir(parents=True)
        for j in picks:
            crop = imgs[j][32:160, 64:192]
            cv2.imwrite(str(root / sub / f"{j}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return root


def _train(args: list[str]) -> int:
    from agentir.train import main_train

    return main_train(["tool", *args, "--threads", "1", "--no-progress"])


def test_train_tool_smoke_and_resume(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """3 steps write loadable weights; a run stopped after 2 of 4 steps resumes to the same result."""
    before = torch.get_num_threads()
    common = ["--data", str(tiny_data), "--ckpt-every", "1"]
    w = tmp_path / "w3.safetensors"
    assert _train(["cnn_dejpeg", "--steps", "3", "--out", str(tmp_path / "a"), "--weights-out", str(w), *common]) == 0
    assert "held-out medium" in capsys.readouterr().err
    assert (tmp_path / "a" / "cnn_dejpeg" / "checkpoint.pt").is_file() and (tmp_path / "a" / "cnn_dejpeg" / "report.json").is_file()
    assert TOOLS.get("cnn_dejpeg").weights != w  # the shipped weights were not touched
    tool = LearnedTool("cnn_dejpeg", "jpeg", 1, weights=w)
    assert tool(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert torch.get_num_threads() == before

    full, split = tmp_path / "full.safetensors", tmp_path / "split.safetensors"
    assert _train(["cnn_dejpeg", "--steps", "4", "--out", str(tmp_path / "b"), "--weights-out", str(full), *common]) == 0
    args = ["cnn_dejpeg", "--steps", "4", "--out", str(tmp_path / "c"), "--weights-out", str(split), *common]
    assert _train([*args, "--stop-after", "2"]) == 0 and not split.exists()
    assert "stopped at step 2" in capsys.readouterr().err
    assert _train(args) == 0
    assert "resuming cnn_dejpeg from step 2" in capsys.readouterr().err
    a, b = load_file(str(full)), load_file(str(split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # another seed refuses the checkpoint unless --fresh
    assert _train([*args, "--seed", "1"]) == 1
    assert "--fresh" in capsys.readouterr().err


def test_train_unknown_tool_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(["swinir"]) == 2
    err = capsys.readouterr().err
    assert "swinir" in err and all(n in err for n in RECIPES)


def test_train_missing_data_or_bad_checkpoint_exits_1(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _train(["cnn_dejpeg", "--steps", "1", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 1
    assert "not found" in capsys.readouterr().err
    (tmp_path / "o" / "cnn_dejpeg").mkdir(parents=True, exist_ok=True)
    (tmp_path / "o" / "cnn_dejpeg" / "checkpoint.pt").write_bytes(b"garbage")
    args = ["cnn_dejpeg", "--steps", "1", "--data", str(tiny_data), "--out", str(tmp_path / "o"), "--weights-out", str(tmp_path / "w.safetensors")]
    assert _train(args) == 1
    assert "cannot be read" in capsys.readouterr().err and not (tmp_path / "w.safetensors").exists()


# --- plug-in round trip ----------------------------------------------------------------------


def test_denoiser_exports_as_plugin(tmp_path: Path) -> None:
    """cnn_denoise scripted with TorchScript and loaded from a plug-in TOML gives the same output."""
    tool = TOOLS.get("cnn_denoise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(copy.deepcopy(tool._net).cpu().eval()).save(str(tmp_path / "den.pt"))
    (tmp_path / "p.toml").write_text(
        '[[tool]]\nname = "pl_cnn_denoise"\ndegradation = "noise"\nscale = 1\npath = "den.pt"\npad_multiple = 4\ndevice = "cpu"\n',
        encoding="utf-8",
    )
    names = load_plugins(tmp_path / "p.toml")
    try:
        x = torch.rand(2, 3, 21, 30, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(TOOLS.get("pl_cnn_denoise")(x), tool(x), atol=1e-5, rtol=0)
    finally:
        unload_plugins(names)
