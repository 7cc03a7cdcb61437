"""image_stats: Triton vs the float64 reference, the column definitions and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from agentir.kernels import STATS_COLUMNS, KernelInputError, image_stats
from agentir.kernels.stats import image_stats_reference
from agentir.kernels.testing import LAYOUTS, make_layout

SHAPES = [
    # (N, H, W)     why
    (1, 1, 1),  # a single pixel: no gradient pairs, no blockiness pairs
    (1, 5, 7),  # odd height and width, narrower than one 8x8 block
    (2, 17, 33),  # a batch; one past powers of two; several block boundaries
    (1, 130, 3),  # several row blocks under the interpreter (128 rows): dy across blocks
    (1, 2, 300),  # several column chunks under the interpreter (256 columns): dx across chunks
    (1, 9, 9),  # exactly one block-boundary pair per row
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Absolute tolerance against the float64 reference, per input dtype. Half inputs are upcast
# exactly, so every dtype only sees float32 arithmetic and per-block float32 partial sums;
# the tolerance covers those (a few ulps of values near 1) plus ratios that can exceed 1.
STATS_ATOL: dict[torch.dtype, float] = {
    torch.float32: 2e-6,
    torch.float16: 2e-6,
    torch.bfloat16: 2e-6,
}
K = len(STATS_COLUMNS)


def _rand(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(device)


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    torch.testing.assert_close(actual.double().cpu(), expected.double().cpu(), atol=STATS_ATOL[dtype], rtol=1e-5, equal_nan=True)


def _column(out: torch.Tensor, name: str) -> torch.Tensor:
    return out[..., STATS_COLUMNS.index(name)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference(force_triton: None, device: torch.device, shape, layout) -> None:
    """The Triton kernel equals the float64 reference for odd shapes and any strides."""
    x = make_layout(_rand((shape[0], 3, *shape[1:]), device), layout)
    out = image_stats(x)
    assert out.shape == (shape[0], K)
    _close(out, image_stats_reference(x.double()), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_dtypes(force_triton: None, device: torch.device, dtype: torch.dtype) -> None:
    """Half-precision inputs give float32 statistics matching the reference on the same values."""
    x = _rand((2, 3, 11, 19), device).to(dtype)
    _close(image_stats(x), image_stats_reference(x.double()), dtype)


def test_reference_path_is_float64_spec(force_torch: None, device: torch.device) -> None:
    """With AGENTIR_KERNELS=torch the op returns the float64 reference rounded to float32."""
    x = _rand((2, 3, 10, 12), device)
    out = image_stats(x)
    assert out.dtype == torch.float32 and out.device == x.device
    assert torch.equal(out, image_stats_reference(x))


def test_columns_match_direct_definitions(any_backend: str, device: torch.device) -> None:
    """Each column equals its definition computed independently with torch float64 ops."""
    x = _rand((1, 3, 6, 20), device, seed=3)
    out = image_stats(x)[0].double().cpu()
    r, g, b = x.double().cpu()[0]
    y = (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255
    v, d = torch.maximum(torch.maximum(r, g), b), torch.minimum(torch.minimum(r, g), b)
    dx = (y[:, 1:] - y[:, :-1]).abs()
    expected = {
        "luma_mean": y.mean(),
        "luma_var": y.var(unbiased=False),
        "value_mean": v.mean(),
        "value_var": v.var(unbiased=False),
        "dark_mean": d.mean(),
        "saturation_mean": ((v - d) / v).mean(),
        "grad_x_mean": dx.mean(),
        "grad_y_mean": (y[1:] - y[:-1]).abs().mean(),
        # Pairs starting at columns 7 and 15 are block boundaries.
        "blockiness": dx[:, [7, 15]].mean() / dx[:, [c for c in range(19) if c not in (7, 15)]].mean(),
    }
    for name, value in expected.items():
        assert math.isclose(_column(out, name).item(), value.item(), rel_tol=1e-5, abs_tol=1e-6), name


def test_flat_images_have_no_variance_gradient_or_saturation(any_backend: str, device: torch.device) -> None:
    """Flat grey and black images give zero variance, gradients and saturation, and blockiness 1 (0/0)."""
    x = torch.stack([torch.full((3, 16, 24), 0.5), torch.zeros(3, 16, 24)]).to(device)
    out = image_stats(x).cpu()
    for name in ("saturation_mean", "grad_x_mean", "grad_y_mean"):
        assert torch.all(_column(out, name) == 0), name
    for name in ("luma_var", "value_var"):  # E[x^2] - E[x]^2 of float32 sums: ~1e-12 residue
        assert torch.all(_column(out, name).abs() < 1e-10), name
    assert torch.all(_column(out, "blockiness") == 1)
    assert math.isclose(_column(out, "luma_mean")[1].item(), 16 / 255, abs_tol=1e-6)


def test_saturated_red_has_full_saturation(any_backend: str, device: torch.device) -> None:
    """Pure red has saturation 1, value 1 and a dark channel of 0."""
    x = torch.zeros(1, 3, 4, 5, device=device)
    x[:, 0] = 1.0
    out = image_stats(x)[0].cpu()
    assert _column(out, "saturation_mean").item() == pytest.approx(1.0, abs=1e-6)
    assert _column(out, "value_mean").item() == pytest.approx(1.0, abs=1e-6)
    assert _column(out, "dark_mean").item() == 0.0


def test_blockiness_detects_8x8_blocks(any_backend: str, device: torch.device) -> None:
    """Constant 8x8 blocks give +inf blockiness, and blocks plus noise a ratio well above 1."""
    gen = torch.Generator().manual_seed(5)
    blocks = torch.rand(2, 3, 3, 4, generator=gen).repeat_interleave(8, -2).repeat_interleave(8, -1)
    noisy = (blocks + 0.01 * torch.rand(blocks.shape, generator=gen)).clamp(0, 1)
    out = image_stats(torch.cat([blocks, noisy]).to(device)).cpu()
    b = _column(out, "blockiness")
    assert torch.isinf(b[:2]).all() and (b[:2] > 0).all()
    assert (b[2:] > 3).all()


def test_narrow_images_have_neutral_blockiness(any_backend: str, device: torch.device) -> None:
    """Images narrower than 9 columns have no block-boundary pairs, so blockiness is 1."""
    out = image_stats(_rand((2, 3, 5, 8), device)).cpu()
    assert torch.all(_column(out, "blockiness") == 1)


def test_deterministic_and_3d(force_triton: None, device: torch.device) -> None:
    """Repeated calls are bit-identical, and a 3 x H x W input gives a K vector equal to its batch row."""
    x = _rand((3, 40, 70), device)
    a, b = image_stats(x), image_stats(x)
    assert a.shape == (K,) and torch.equal(a, b)
    assert torch.equal(a, image_stats(x[None])[0])


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5), (1, 3, 4, 0), (3, 0, 4)])
def test_empty_inputs(force_triton: None, device: torch.device, shape) -> None:
    """No images gives 0 x K; images without pixels give NaN means, zero gradients, blockiness 1."""
    out = image_stats(torch.empty(shape, device=device))
    n = shape[0] if len(shape) == 4 else None
    assert out.shape == ((n, K) if n is not None else (K,))
    if out.numel():
        rows = out.reshape(-1, K).cpu()
        assert torch.isnan(rows[:, :6]).all()
        assert torch.equal(rows[:, 6:], torch.tensor([[0.0, 0.0, 1.0]]).expand(rows.shape[0], 3))


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "dtype float32, float16"),  # integer images
        (torch.zeros(1, 3, 4, 4, dtype=torch.float64), "convert it first"),
        (torch.zeros(1, 4, 4, 3), "3 channels"),  # channels last
        (torch.zeros(3, 4), "N x 3 x H x W"),  # rank 2
        ("not a tensor", "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_value_error(x, match) -> None:
    """Wrong dtypes, ranks and channel counts raise a ValueError naming the expected layout."""
    with pytest.raises(KernelInputError, match=match):
        image_stats(x)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_full_hd_on_gpu(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """A 1080p batch (and a strided crop of it) matches the float64 reference and is deterministic."""
    monkeypatch.setenv("AGENTIR_KERNELS", "triton")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.rand((3, 3, 1080, 1920), generator=g, device="cuda").to(dtype)
    out = image_stats(x)
    torch.testing.assert_close(out.double(), image_stats_reference(x.double()).double(), atol=1e-5, rtol=1e-5)
    assert torch.equal(out, image_stats(x))
    crop = x[:, :, 3:1001:2, 5:1900]
    torch.testing.assert_close(image_stats(crop).double(), image_stats_reference(crop.double()).double(), atol=1e-5, rtol=1e-5)
