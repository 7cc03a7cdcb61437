"""to_float_nchw / to_uint8_nhwc: Triton vs float64 and vs the torch reference."""

from __future__ import annotations

import pytest
import torch

from agentir.kernels import KernelInputError, to_float_nchw, to_uint8_nhwc
from agentir.kernels.convert import to_float_nchw_reference, to_uint8_nhwc_reference
from agentir.kernels.testing import LAYOUTS, assert_close64, make_layout

SHAPES = [
    # (N, H, W)     why
    (1, 1, 1),  # a single pixel: all lanes of the block but one are masked
    (1, 5, 7),  # odd height and width
    (2, 17, 33),  # a batch; one past powers of two
    (1, 130, 3),  # taller than one interpreter block (128 rows): several block rows
    (1, 2, 300),  # wider than one interpreter block (256 columns)
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _u8(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).to(device)


def _f(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Range beyond [0, 1] so clamping is exercised.
    return (torch.rand(shape, generator=g) * 1.2 - 0.1).to(device)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_to_float_nchw_matches_float64(force_triton: None, device: torch.device, shape, layout) -> None:
    """The Triton conversion equals u8 / 255 in float64 within float32 tolerance, any strides."""
    n, h, w = shape
    x = make_layout(_u8((n, h, w, 3), device), layout)
    out = to_float_nchw(x)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert_close64(out, x.permute(0, 3, 1, 2).double() / 255.0, torch.float32)
    assert torch.equal(out, to_float_nchw_reference(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_float_nchw_output_dtypes(force_triton: None, device: torch.device, dtype) -> None:
    """A requested half-precision output is the float32 result rounded, as in the reference."""
    x = _u8((2, 9, 13, 3), device)
    out = to_float_nchw(x, dtype=dtype)
    assert out.dtype == dtype
    assert_close64(out, x.permute(0, 3, 1, 2).double() / 255.0, dtype)
    if dtype == torch.bfloat16 and device.type == "cpu":
        return  # the interpreter truncates float32 -> bfloat16; compiled Triton rounds as torch
    assert torch.equal(out, to_float_nchw_reference(x, dtype=dtype))


def test_to_float_nchw_scale_and_3d(force_triton: None, device: torch.device) -> None:
    """A 3-D H x W x 3 image gives 3 x H x W, and a custom scale multiplies each value."""
    x = _u8((6, 5, 3), device)
    out = to_float_nchw(x, scale=2.0)
    assert out.shape == (3, 6, 5)
    assert torch.equal(out, x.permute(2, 0, 1).float() * 2.0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_to_uint8_nhwc_matches_reference(force_triton: None, device: torch.device, shape, layout) -> None:
    """The Triton quantisation equals the reference exactly and float64 rounding within 1 level."""
    n, h, w = shape
    x = make_layout(_f((n, 3, h, w), device), layout)
    out = to_uint8_nhwc(x)
    assert out.dtype == torch.uint8 and out.shape == (n, h, w, 3) and out.is_contiguous()
    assert torch.equal(out, to_uint8_nhwc_reference(x))
    exact = torch.floor(x.double().clamp(0, 1) * 255 + 0.5).permute(0, 2, 3, 1)
    assert (out.double() - exact).abs().max().item() <= 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_to_uint8_nhwc_input_dtypes(force_triton: None, device: torch.device, dtype) -> None:
    """Half-precision inputs quantise exactly as the reference does."""
    x = _f((2, 3, 7, 9), device).to(dtype)
    assert torch.equal(to_uint8_nhwc(x), to_uint8_nhwc_reference(x))


def test_to_uint8_nhwc_special_values(any_backend: str, device: torch.device) -> None:
    """NaN and values below 0 give 0, values above 1 and +inf give 255, on both backends."""
    vals = torch.tensor([float("nan"), -0.5, float("-inf"), 1.5, float("inf"), 0.0, 1.0], device=device)
    x = vals.reshape(1, 1, 1, -1).expand(1, 3, 1, 7)
    out = to_uint8_nhwc(x)
    assert out[0, 0, :, 0].tolist() == [0, 0, 0, 255, 255, 0, 255]


def test_to_uint8_nhwc_rounds_half_up(any_backend: str, device: torch.device) -> None:
    """A value whose float32 product with 255 is exactly k + 0.5 rounds up to k + 1."""
    ks = torch.arange(255, dtype=torch.float64)
    x = ((ks + 0.5) / 255).float()
    ties = (x * 255.0) == (ks + 0.5).float()  # float32 product exactly on the half
    x, ks = x[ties], ks[ties]
    assert bool((ks % 2 == 0).any()), "need an even k, where half-to-even would differ"
    out = to_uint8_nhwc(x.to(device).reshape(1, 1, 1, -1).expand(1, 3, 1, -1).contiguous())
    assert out[0, 0, :, 0].cpu().tolist() == (ks + 1).to(torch.uint8).tolist()


def test_round_trip_uint8_float_uint8(any_backend: str, device: torch.device) -> None:
    """uint8 -> float -> uint8 returns the original image on both backends."""
    x = _u8((2, 11, 6, 3), device)
    assert torch.equal(to_uint8_nhwc(to_float_nchw(x)), x)
    assert torch.equal(to_uint8_nhwc(to_float_nchw(x[0])), x[0])


@pytest.mark.parametrize(
    "shape_in, shape_out",
    [
        ((0, 4, 5, 3), (0, 3, 4, 5)),  # no images
        ((2, 0, 5, 3), (2, 3, 0, 5)),  # zero height
        ((0, 5, 3), (3, 0, 5)),  # 3-D, zero height
    ],
)
def test_empty_inputs_return_empty(force_triton: None, device: torch.device, shape_in, shape_out) -> None:
    """Empty inputs give empty outputs of the right shape in both directions."""
    x = torch.empty(shape_in, dtype=torch.uint8, device=device)
    out = to_float_nchw(x)
    assert out.shape == shape_out and out.dtype == torch.float32
    back = to_uint8_nhwc(out)
    assert back.shape == shape_in and back.dtype == torch.uint8


@pytest.mark.parametrize(
    "fn, x, kwargs, match",
    [
        (to_float_nchw, torch.zeros(2, 4, 4, 3), {}, "dtype uint8"),  # float input
        (to_float_nchw, torch.zeros(2, 4, 4, 4, dtype=torch.uint8), {}, "3 channels"),
        (to_float_nchw, torch.zeros(4, 4, dtype=torch.uint8), {}, "N x H x W x 3"),
        (to_float_nchw, torch.zeros(1, 4, 4, 3, dtype=torch.uint8), {"dtype": torch.int32}, "dtype must"),
        (to_float_nchw, torch.zeros(1, 4, 4, 3, dtype=torch.uint8), {"scale": float("nan")}, "scale"),
        (to_float_nchw, [[1, 2, 3]], {}, "torch.Tensor"),
        (to_uint8_nhwc, torch.zeros(1, 3, 4, 4, dtype=torch.uint8), {}, "dtype float32, float16"),
        (to_uint8_nhwc, torch.zeros(1, 3, 4, 4, dtype=torch.float64), {}, "convert it first"),
        (to_uint8_nhwc, torch.zeros(1, 4, 4, 3), {}, "3 channels"),
        (to_uint8_nhwc, torch.zeros(1, 1, 3, 4, 4), {}, "N x 3 x H x W"),
    ],
)
def test_bad_inputs_raise_value_error(fn, x, kwargs, match) -> None:
    """Wrong dtypes, ranks, channel counts and arguments raise a ValueError that says why."""
    with pytest.raises(ValueError, match=match) as info:
        fn(x, **kwargs)
    assert isinstance(info.value, KernelInputError)
