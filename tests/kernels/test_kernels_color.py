"""rgb_to_ycbcr / rgb_to_value: Triton vs float64 references."""

from __future__ import annotations

import pytest
import torch

from agentir.kernels import KernelInputError, rgb_to_value, rgb_to_ycbcr
from agentir.kernels.color import rgb_to_value_reference, rgb_to_ycbcr_reference
from agentir.kernels.testing import ATOL, LAYOUTS, assert_close64, make_layout

SHAPES = [
    # (N, H, W)     why
    (1, 1, 1),  # a single pixel
    (1, 5, 7),  # odd height and width
    (2, 17, 33),  # a batch; one past powers of two
    (1, 130, 3),  # several block rows under the interpreter (128-row blocks)
    (1, 2, 300),  # several block columns under the interpreter (256-column blocks)
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
OPS = [
    # (public op, reference; float64 references are the same functions on float64 input)
    (rgb_to_ycbcr, rgb_to_ycbcr_reference),
    (rgb_to_value, rgb_to_value_reference),
]
OP_IDS = ["rgb_to_ycbcr", "rgb_to_value"]


def _rand(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(device)


@pytest.mark.parametrize("op, ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_float64_reference(force_triton: None, device: torch.device, op, ref, shape, layout) -> None:
    """Each op in Triton equals its reference run in float64, for odd shapes and any strides."""
    x = make_layout(_rand((shape[0], 3, *shape[1:]), device), layout)
    out = op(x)
    assert out.is_contiguous() and out.dtype == torch.float32
    assert_close64(out, ref(x.double()), torch.float32)


@pytest.mark.parametrize("op, ref", OPS, ids=OP_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_half_precision_dtypes(force_triton: None, device: torch.device, op, ref, dtype) -> None:
    """Half-precision inputs give outputs of the same dtype within one output ulp of float64."""
    x = _rand((2, 3, 9, 13), device).to(dtype)
    out = op(x)
    assert out.dtype == dtype
    expected = ref(x.double())
    torch.testing.assert_close(out.double(), expected, atol=ATOL[dtype] * max(1.0, expected.abs().max().item()), rtol=0)


def test_ycbcr_known_colours(any_backend: str, device: torch.device) -> None:
    """Black, white and pure red map to the BT.601 studio-swing values of BENCHMARK.md."""
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], device=device)
    x = rgb.T.reshape(1, 3, 1, 3).contiguous()
    y, cb, cr = rgb_to_ycbcr(x)[0, :, 0].double().cpu()
    expected_y = [16 / 255, 235 / 255, (16 + 65.481) / 255]
    torch.testing.assert_close(y, torch.tensor(expected_y, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(cb[:2], torch.full((2,), 128 / 255, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(cr[2], torch.tensor(240 / 255, dtype=torch.float64), atol=1e-6, rtol=0)


def test_value_is_channel_max_and_3d(force_triton: None, device: torch.device) -> None:
    """rgb_to_value is the exact channel maximum; a 3 x H x W input gives 1 x H x W."""
    x = _rand((3, 6, 5), device)
    out = rgb_to_value(x)
    assert out.shape == (1, 6, 5)
    assert torch.equal(out, x.amax(dim=0, keepdim=True))


@pytest.mark.parametrize("op", [rgb_to_ycbcr, rgb_to_value], ids=OP_IDS)
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5), (3, 4, 0)])
def test_empty_inputs_return_empty(force_triton: None, device: torch.device, op, shape) -> None:
    """Empty batches give empty outputs with the op's shape (one channel for the value)."""
    out = op(torch.empty(shape, device=device))
    expected = list(shape)
    if op is rgb_to_value:
        expected[-3] = 1
    assert list(out.shape) == expected


@pytest.mark.parametrize("op", [rgb_to_ycbcr, rgb_to_value], ids=OP_IDS)
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
def test_bad_inputs_raise_value_error(op, x, match) -> None:
    """Wrong dtypes, ranks and channel counts raise a ValueError naming the expected layout."""
    with pytest.raises(KernelInputError, match=match):
        op(x)
