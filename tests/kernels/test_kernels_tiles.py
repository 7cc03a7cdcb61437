"""extract_tiles / blend_tiles: tiling rule, exact reconstruction, Triton vs float64 blend."""

from __future__ import annotations

import pytest
import torch

from agentir.kernels import KernelInputError, blend_tiles, extract_tiles
from agentir.kernels.testing import LAYOUTS, assert_close64, make_layout
from agentir.kernels.tiles import blend_tiles_reference, tile_starts

ROUND_TRIPS = [
    # (H, W, tile, overlap)       why
    (1, 1, 4, 0),  # single pixel, tile larger than the image
    (5, 7, 3, 1),  # odd sizes, small tiles, shifted last tile on both axes
    (37, 53, 16, 4),  # odd image, power-of-two tile
    (64, 64, 32, 8),  # exact multiple of the stride plus the overlap
    (33, 130, (8, 16), (2, 5)),  # rectangular tiles and overlaps
    (20, 9, 32, 8),  # tile bigger than the image on both axes: one clipped tile
    (12, 13, 5, 4),  # overlap = tile - 1 (stride-1 tiles: 72 of them)
    (19, 300, 12, 0),  # no overlap; wider than one interpreter block
]


def _rand(shape: tuple[int, ...], device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g).to(device)


@pytest.mark.parametrize(
    "length, tile, overlap, starts",
    [
        (10, 4, 1, [0, 3, 6]),  # stride 3; the last tile already ends at the border
        (11, 4, 1, [0, 3, 6, 7]),  # the last tile is shifted back to end at the border
        (3, 8, 2, [0]),  # tile clipped to the image
        (5, 1, 0, [0, 1, 2, 3, 4]),  # one-pixel tiles
        (0, 4, 1, []),  # empty axis
    ],
)
def test_tile_starts_rule(length, tile, overlap, starts) -> None:
    """Tiles start every tile - overlap pixels and the last one ends exactly at the border."""
    assert tile_starts(length, tile, overlap) == starts


@pytest.mark.parametrize("h, w, tile, overlap", ROUND_TRIPS)
def test_extract_tiles_are_image_crops(device: torch.device, h, w, tile, overlap) -> None:
    """Every tile equals the image crop at its position, and the tiles cover every pixel."""
    img = _rand((3, h, w), device)
    tiles, pos = extract_tiles(img, tile, overlap)
    th, tw = tiles.shape[-2:]
    assert tiles.is_contiguous() and pos.dtype == torch.int64 and pos.shape == (tiles.shape[0], 2)
    covered = torch.zeros(h, w, dtype=torch.bool)
    for k, (y, x) in enumerate(pos.tolist()):
        assert torch.equal(tiles[k], img[:, y : y + th, x : x + tw])
        covered[y : y + th, x : x + tw] = True
    assert bool(covered.all())


@pytest.mark.parametrize("h, w, tile, overlap", ROUND_TRIPS)
def test_extract_then_blend_reproduces_image(any_backend: str, device: torch.device, h, w, tile, overlap) -> None:
    """Blending unmodified tiles gives back the image within 1e-6, on both backends."""
    img = _rand((3, h, w), device, seed=h * w)
    tiles, pos = extract_tiles(img, tile, overlap)
    out = blend_tiles(tiles, pos, (h, w), overlap=overlap)
    assert out.shape == img.shape and out.dtype == img.dtype
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


def test_extract_then_blend_strided_source(any_backend: str, device: torch.device) -> None:
    """A strided view of an image tiles and blends back to the same values."""
    base = _rand((3, 30, 50), device)
    img = base[:, 1::2, ::3]
    tiles, pos = extract_tiles(img, 7, 2)
    torch.testing.assert_close(blend_tiles(tiles, pos, img.shape[1:], overlap=2), img, atol=1e-6, rtol=0)


def _scene(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    # Processed tiles differ where they overlap; positions include tiles hanging off every
    # edge, a tile entirely outside, and leave some output pixels uncovered.
    pos = torch.tensor([[0, 0], [5, 9], [-4, 20], [14, -6], [10, 30], [50, 50], [3, 12]], device=device)
    tiles = _rand((len(pos), 2, 9, 13), device, seed=1).to(dtype)
    return tiles, pos


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("weights, overlap", [("feather", 3), ("feather", (2, 5)), ("uniform", 3)])
def test_blend_matches_float64_reference(force_triton: None, device: torch.device, weights, overlap, layout) -> None:
    """The Triton blend equals the float64 reference for overlapping, clipped and strided tiles."""
    tiles, pos = _scene(device, torch.float32)
    tiles = make_layout(tiles, layout)
    out = blend_tiles(tiles, pos, (21, 37), overlap=overlap, weights=weights)
    expected = blend_tiles_reference(tiles.double(), pos, (21, 37), overlap=overlap, weights=weights)
    assert_close64(out, expected, torch.float32)
    assert out[:, 20, 20].abs().max().item() == 0  # no tile covers row 20, column 20


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_blend_half_precision(force_triton: None, device: torch.device, dtype) -> None:
    """Half-precision tiles blend (in float32) to within one output ulp of float64."""
    tiles, pos = _scene(device, dtype)
    out = blend_tiles(tiles, pos, (21, 37), overlap=3)
    assert out.dtype == dtype
    assert_close64(out, blend_tiles_reference(tiles.double(), pos, (21, 37), overlap=3), dtype)


def test_feather_cross_fades_linearly(any_backend: str, device: torch.device) -> None:
    """Two tiles overlapping by exactly `overlap` columns blend with a linear ramp 1/(o+1)...o/(o+1)."""
    o = 3
    tiles = torch.stack([torch.zeros(1, 1, 6), torch.ones(1, 1, 6)]).to(device)
    pos = torch.tensor([[0, 0], [0, 6 - o]], device=device)
    out = blend_tiles(tiles, pos, (1, 9), overlap=o)
    expected = [0, 0, 0, 1 / 4, 2 / 4, 3 / 4, 1, 1, 1]
    torch.testing.assert_close(out[0, 0].cpu(), torch.tensor(expected), atol=1e-6, rtol=0)


def test_positions_on_cpu_with_tiles_elsewhere_and_int32(any_backend: str, device: torch.device) -> None:
    """int32 positions held on the CPU are accepted for tiles on any device."""
    img = _rand((3, 12, 10), device)
    tiles, pos = extract_tiles(img, 5, 2)
    out = blend_tiles(tiles, pos.cpu().to(torch.int32), (12, 10), overlap=2)
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "tiles_shape, out_hw, expected_shape",
    [
        ((0, 3, 4, 4), (5, 6), (3, 5, 6)),  # no tiles: an all-zero image
        ((2, 3, 4, 4), (0, 6), (3, 0, 6)),  # empty output
        ((2, 3, 0, 4), (5, 6), (3, 5, 6)),  # empty tiles
    ],
)
def test_blend_empty_inputs(force_triton: None, device: torch.device, tiles_shape, out_hw, expected_shape) -> None:
    """Empty tiles or an empty output size give a zero image of the requested shape."""
    tiles = torch.empty(tiles_shape, device=device)
    pos = torch.zeros((tiles_shape[0], 2), dtype=torch.int64, device=device)
    out = blend_tiles(tiles, pos, out_hw, overlap=1)
    assert out.shape == expected_shape and not bool(out.any())


def test_extract_empty_image(device: torch.device) -> None:
    """An image with no rows yields zero tiles and zero positions."""
    tiles, pos = extract_tiles(torch.empty((3, 0, 5), device=device), 4, 1)
    assert tiles.shape[0] == 0 and pos.shape == (0, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image": torch.zeros(3, 4, 4, dtype=torch.int32)}, "dtype"),
        ({"image": torch.zeros(1, 3, 4, 4)}, "C x H x W"),
        ({"tile": 0}, "tile must be >= 1"),
        ({"tile": (4, 4, 4)}, "pair"),
        ({"tile": 2.5}, "must be an int"),
        ({"overlap": -1}, "overlap must be >= 0"),
        ({"overlap": 4}, "smaller than tile"),
    ],
)
def test_extract_bad_arguments_raise(kwargs, match) -> None:
    """Bad images, tiles and overlaps raise a ValueError that says what to change."""
    args = {"image": torch.zeros(3, 8, 8), "tile": 4, "overlap": 1, **kwargs}
    with pytest.raises(KernelInputError, match=match):
        extract_tiles(args["image"], args["tile"], args["overlap"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tiles": torch.zeros(2, 3, 4, 4, dtype=torch.uint8)}, "dtype"),
        ({"tiles": torch.zeros(3, 4, 4)}, "T x C x th x tw"),
        ({"positions": torch.zeros(2, 2)}, "integer dtype"),
        ({"positions": torch.zeros(3, 2, dtype=torch.int64)}, "T = 2"),
        ({"positions": [[0, 0], [0, 4]]}, "torch.Tensor"),
        ({"out_hw": (8,)}, "out_hw"),
        ({"out_hw": (-1, 8)}, "out_hw\\[0\\] must be >= 0"),
        ({"overlap": -2}, "overlap must be >= 0"),
        ({"weights": "gaussian"}, "feather, uniform"),
    ],
)
def test_blend_bad_arguments_raise(kwargs, match) -> None:
    """Bad tiles, positions, sizes, overlaps and weight names raise a ValueError."""
    args = {
        "tiles": torch.zeros(2, 3, 4, 4),
        "positions": torch.zeros(2, 2, dtype=torch.int64),
        "out_hw": (8, 8),
        "overlap": 1,
        "weights": "feather",
        **kwargs,
    }
    with pytest.raises(KernelInputError, match=match):
        blend_tiles(args["tiles"], args["positions"], args["out_hw"], overlap=args["overlap"], weights=args["weights"])
