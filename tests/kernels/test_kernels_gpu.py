"""Full-size (1080p) kernel checks on a CUDA device; run with ``pytest -m gpu tests/kernels``."""

from __future__ import annotations

import pytest
import torch

from agentir.kernels import (
    blend_tiles,
    extract_tiles,
    rgb_to_value,
    rgb_to_ycbcr,
    to_float_nchw,
    to_uint8_nhwc,
)
from agentir.kernels.color import rgb_to_value_reference, rgb_to_ycbcr_reference
from agentir.kernels.convert import to_float_nchw_reference, to_uint8_nhwc_reference
from agentir.kernels.testing import assert_close64
from agentir.kernels.tiles import blend_tiles_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

H, W = 1080, 1920
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """Force the Triton path on the CUDA device."""
    monkeypatch.setenv("AGENTIR_KERNELS", "triton")
    return torch.device("cuda")


def _rand(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator(device="cuda").manual_seed(seed), device="cuda")


def test_convert_full_hd_batch(native: torch.device) -> None:
    """A batch of 1080p frames converts both ways bit-identically to the references."""
    u8 = (_rand((4, H, W, 3)) * 256).clamp(max=255).to(torch.uint8)
    f = to_float_nchw(u8)
    assert torch.equal(f, to_float_nchw_reference(u8))
    assert torch.equal(to_uint8_nhwc(f), u8)
    g = _rand((4, 3, H, W), seed=1) * 1.2 - 0.1
    assert torch.equal(to_uint8_nhwc(g), to_uint8_nhwc_reference(g))
    crop = u8[:, 100:1000:3, 7:1900]  # non-contiguous view
    assert torch.equal(to_float_nchw(crop), to_float_nchw_reference(crop))


@pytest.mark.parametrize("dtype", DTYPES)
def test_color_full_hd(native: torch.device, dtype: torch.dtype) -> None:
    """The colour transforms on 1080p frames match the float64 references per dtype."""
    x = _rand((2, 3, H, W)).to(dtype)
    for op, ref in [(rgb_to_ycbcr, rgb_to_ycbcr_reference), (rgb_to_value, rgb_to_value_reference)]:
        assert_close64(op(x), ref(x.double()), dtype)
    if dtype == torch.float32:
        assert torch.equal(rgb_to_ycbcr(x), rgb_to_ycbcr_reference(x))


@pytest.mark.parametrize("tile, overlap", [(512, 32), (256, 16), (384, 0)])
def test_tiles_full_hd_round_trip(native: torch.device, tile: int, overlap: int) -> None:
    """A 1080p image cut into tiles and blended back is reproduced within 1e-6."""
    img = _rand((3, H, W))
    tiles, pos = extract_tiles(img, tile, overlap)
    torch.testing.assert_close(blend_tiles(tiles, pos, (H, W), overlap=overlap), img, atol=1e-6, rtol=0)


def test_blend_full_hd_processed_tiles(native: torch.device) -> None:
    """Blending modified 1080p tiles matches the float64 reference."""
    tiles, pos = extract_tiles(_rand((3, H, W)), 512, 32)
    tiles = tiles * _rand(tiles.shape, seed=2)
    out = blend_tiles(tiles, pos, (H, W), overlap=32)
    assert_close64(out, blend_tiles_reference(tiles.double(), pos, (H, W), overlap=32), torch.float32)


def test_bench_runs_triton_natively() -> None:
    """On CUDA the benchmark times the Triton kernels and reports finite ratios."""
    from agentir.kernels.bench import run_kernel_bench

    report = run_kernel_bench(sizes=[(H, W)], repeats=3)
    assert report["triton_native"] is True
    assert all(r["triton_ms"] > 0 and r["triton_vs_eager"] > 0 for r in report["results"])
