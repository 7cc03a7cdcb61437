"""Tests for agentir.imageio: decoding every input kind, refusing bad inputs, atomic writes."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from structlog.testing import capture_logs

from agentir import imageio
from agentir.imageio import (
    MAX_PIXELS,
    SUPPORTED_SUFFIXES,
    ImageInputError,
    collect_inputs,
    decode_image,
    encode_png,
    load_image,
    output_paths,
    prepare_output_folder,
    resolve_collisions,
    save_png_atomic,
    write_text_atomic,
)

DATA = Path(__file__).resolve().parents[1] / "data"


# ----------------------------------------------------------------------------- helpers


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def _png_header_only(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG whose IHDR claims width x height, with a tiny (wrong-sized) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    if idat is None:
        idat = zlib.compress(b"\x00" * 16)
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _gradient_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256], axis=2).astype(np.uint8)


def _assert_one_line(err: ImageInputError, path: object) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert "; " in text  # reason; what to do


def _files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- good inputs


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket"])
def test_shipped_test_images_load_as_128px_rgb(name: str) -> None:
    """Each shipped clean test image decodes to a contiguous 128x128 RGB uint8 array."""
    img = load_image(DATA / "clean" / f"{name}.png")
    assert img.shape == (128, 128, 3)
    assert img.dtype == np.uint8
    assert img.flags["C_CONTIGUOUS"]
    assert img.flags["WRITEABLE"]  # callers may modify it in place
    assert img.std() > 10  # a real photograph, not a flat patch


@pytest.mark.parametrize(
    "fmt,suffix",
    [("PNG", ".png"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("PPM", ".ppm"), ("WEBP", ".webp")],
)
def test_lossless_formats_round_trip_exactly(tmp_path: Path, fmt: str, suffix: str) -> None:
    """RGB pixels written in a lossless format come back unchanged."""
    rgb = _gradient_rgb()
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    path = _write(tmp_path / f"img{suffix}", _encode(Image.fromarray(rgb), fmt, **kwargs))
    out = load_image(path)
    np.testing.assert_array_equal(out, rgb)


def test_decode_image_matches_load_image(tmp_path: Path) -> None:
    """Decoding bytes gives the same array as loading the same bytes from a file."""
    data = _encode(Image.fromarray(_gradient_rgb()), "JPEG", quality=90)
    path = _write(tmp_path / "a.jpg", data)
    np.testing.assert_array_equal(decode_image(data, name="a.jpg"), load_image(path))
    np.testing.assert_array_equal(decode_image(memoryview(data)), load_image(path))


def test_grayscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    """An 8-bit grayscale image becomes RGB with three equal channels."""
    gray = (np.arange(16 * 16).reshape(16, 16) % 256).astype(np.uint8)
    out = load_image(_write(tmp_path / "g.png", _encode(Image.fromarray(gray, "L"), "PNG")))
    assert out.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_bilevel_image_maps_to_black_and_white(tmp_path: Path) -> None:
    """A 1-bit image becomes RGB with values 0 and 255 only."""
    bits = np.zeros((8, 8), dtype=bool)
    bits[:, 4:] = True
    out = load_image(_write(tmp_path / "b.png", _encode(Image.fromarray(bits), "PNG")))
    assert set(np.unique(out).tolist()) == {0, 255}
    assert (out[:, 4:] == 255).all() and (out[:, :4] == 0).all()


def test_16bit_gray_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """16-bit gray values are scaled by 255/65535 with rounding, so 65535 becomes 255."""
    values = np.array([0, 257, 32768, 65535, 65535 - 128, 1000, 40000, 12345] * 2, dtype=np.uint16)
    arr = np.tile(values, (16, 1))
    im = Image.fromarray(arr)
    assert im.mode == "I;16"
    out = load_image(_write(tmp_path / "g16.png", _encode(im, "PNG")))
    expected = np.rint(arr.astype(np.float64) * 255 / 65535).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 0], expected)
    assert out[0, 3, 0] == 255 and out[0, 1, 0] == 1


def test_16bit_gray_tiff_is_scaled(tmp_path: Path) -> None:
    """A 16-bit grayscale TIFF maps its full range onto 0..255."""
    arr = np.tile(np.array([0, 65535, 32896, 257], dtype=np.uint16), (8, 2))
    out = load_image(_write(tmp_path / "g16.tiff", _encode(Image.fromarray(arr), "TIFF")))
    np.testing.assert_array_equal(out[0, :4, 1], [0, 255, 128, 1])


def test_16bit_rgb_png_keeps_full_range(tmp_path: Path) -> None:
    """A 16-bit RGB PNG maps 65535 to 255 and 0 to 0 (no clipping to 8 bit)."""
    import cv2

    arr = np.zeros((8, 8, 3), dtype=np.uint16)
    arr[:, :, 2] = 65535  # cv2 writes BGR: this is red
    arr[:, :, 1] = 32768
    ok, enc = cv2.imencode(".png", arr)
    assert ok
    out = load_image(_write(tmp_path / "rgb16.png", enc.tobytes()))
    assert tuple(out[0, 0]) == (255, 128, 0)


def test_32bit_int_image_in_16bit_range_is_scaled(tmp_path: Path) -> None:
    """A 32-bit integer image holding 0..65535 is scaled like 16-bit data."""
    arr = np.tile(np.array([0, 65535, 257, 514], dtype=np.int32), (8, 2))
    im = Image.fromarray(arr)
    assert im.mode == "I"
    out = load_image(_write(tmp_path / "i32.tif", _encode(im, "TIFF")))
    np.testing.assert_array_equal(out[0, :4, 0], [0, 255, 1, 2])


def test_32bit_int_image_outside_16bit_range_is_refused(tmp_path: Path) -> None:
    """A 32-bit integer image with values beyond 65535 is refused rather than guessed at."""
    arr = np.full((8, 8), 70000, dtype=np.int32)
    path = _write(tmp_path / "i32.tif", _encode(Image.fromarray(arr), "TIFF"))
    with pytest.raises(ImageInputError, match="outside the 16-bit range"):
        load_image(path)


def test_float_image_in_unit_range_is_scaled(tmp_path: Path) -> None:
    """A float image with values in 0..1 is scaled by 255."""
    arr = np.tile(np.array([0.0, 1.0, 0.5, 0.25], dtype=np.float32), (8, 2))
    im = Image.fromarray(arr)
    assert im.mode == "F"
    out = load_image(_write(tmp_path / "f.tif", _encode(im, "TIFF")))
    np.testing.assert_array_equal(out[0, :4, 2], [0, 255, 128, 64])


def test_float_image_with_nan_is_refused(tmp_path: Path) -> None:
    """A float image containing NaN is refused."""
    arr = np.zeros((8, 8), dtype=np.float32)
    arr[2, 3] = np.nan
    path = _write(tmp_path / "nan.tif", _encode(Image.fromarray(arr), "TIFF"))
    with pytest.raises(ImageInputError, match="NaN"):
        load_image(path)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    """Transparent pixels become white, opaque keep their colour, half alpha mixes with white."""
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, 0:2, 3] = 0
    rgba[:, 2:4, 3] = 255
    rgba[:, 4:, 3] = 128
    out = load_image(_write(tmp_path / "a.png", _encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (200, 0, 0)
    mix = (200 * 128 + 255 * 127 + 127) // 255, (255 * 127 + 127) // 255
    assert tuple(out[0, 5]) == (mix[0], mix[1], mix[1])


def test_gray_alpha_is_composited_on_white(tmp_path: Path) -> None:
    """A grayscale image with alpha (LA) is composited on white."""
    la = np.zeros((8, 8, 2), dtype=np.uint8)
    la[:, :4, 1] = 0
    la[:, 4:, 1] = 255
    out = load_image(_write(tmp_path / "la.png", _encode(Image.fromarray(la, "LA"), "PNG")))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 7]) == (0, 0, 0)


def test_palette_image_is_expanded(tmp_path: Path) -> None:
    """A palette image becomes the RGB colours its palette names."""
    im = Image.new("P", (8, 8))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    im.putdata([0] * 32 + [1] * 32)
    out = load_image(_write(tmp_path / "p.png", _encode(im, "PNG")))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[7, 7]) == (200, 100, 50)


def test_palette_transparency_is_composited_on_white(tmp_path: Path) -> None:
    """A palette entry marked transparent becomes white."""
    im = Image.new("P", (8, 8))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    im.putdata([0] * 32 + [1] * 32)
    out = load_image(_write(tmp_path / "pt.png", _encode(im, "PNG", transparency=0)))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[7, 7]) == (200, 100, 50)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    """A CMYK JPEG is converted to RGB (pure cyan becomes near (0, 255, 255))."""
    im = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    out = load_image(_write(tmp_path / "c.jpg", _encode(im, "JPEG", quality=95)))
    assert out.shape == (16, 16, 3)
    assert out[8, 8, 0] < 20 and out[8, 8, 1] > 235 and out[8, 8, 2] > 235


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A JPEG stored wide with EXIF orientation 6 loads tall, rotated 90 degrees clockwise."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # left half red
    stored[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    data = _encode(im, "JPEG", quality=95, exif=exif.tobytes())
    out = load_image(_write(tmp_path / "rot.jpg", data))
    assert out.shape == (40, 20, 3)
    # Rotated clockwise, the stored left (red) ends on top and the right (blue) at the bottom.
    assert out[2, 10, 0] > 200 and out[2, 10, 2] < 60
    assert out[-3, 10, 2] > 200 and out[-3, 10, 0] < 60


def test_multiframe_tiff_uses_first_frame(tmp_path: Path) -> None:
    """A multi-page TIFF loads its first page."""
    first = Image.new("RGB", (8, 8), (255, 0, 0))
    second = Image.new("RGB", (8, 8), (0, 0, 255))
    buf = io.BytesIO()
    first.save(buf, format="TIFF", save_all=True, append_images=[second])
    out = load_image(_write(tmp_path / "multi.tiff", buf.getvalue()))
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_animated_gif_bytes_use_first_frame() -> None:
    """Animated GIF bytes decode to their first frame."""
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), name="anim.gif")
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_smallest_accepted_side_is_min_side(tmp_path: Path) -> None:
    """A 4x4 image is accepted and a 3x4 image is refused as too small."""
    ok = _write(tmp_path / "ok.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    assert load_image(ok).shape == (4, 4, 3)
    small = _write(tmp_path / "small.png", _encode(Image.new("RGB", (3, 4)), "PNG"))
    with pytest.raises(ImageInputError, match="too small") as info:
        load_image(small)
    _assert_one_line(info.value, small)


# ----------------------------------------------------------------------------- bad inputs


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist raises ImageInputError naming the path."""
    path = tmp_path / "nope.png"
    with pytest.raises(ImageInputError, match="no such file") as info:
        load_image(path)
    assert info.value.path == str(path)
    _assert_one_line(info.value, path)


def test_folder_is_refused_by_load_image(tmp_path: Path) -> None:
    """Passing a folder to load_image raises ImageInputError, not IsADirectoryError."""
    with pytest.raises(ImageInputError, match="folder"):
        load_image(tmp_path)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    """A zero-byte file raises ImageInputError saying it is empty."""
    path = _write(tmp_path / "empty.png", b"")
    with pytest.raises(ImageInputError, match="empty") as info:
        load_image(path)
    assert info.value.reason == "file is empty"
    _assert_one_line(info.value, path)


def test_empty_bytes_are_refused() -> None:
    """decode_image with no bytes raises ImageInputError naming the given name."""
    with pytest.raises(ImageInputError) as info:
        decode_image(b"", name="upload.png")
    _assert_one_line(info.value, "upload.png")


def test_decode_image_rejects_non_bytes() -> None:
    """decode_image given a str raises TypeError (a programming error, not bad input)."""
    with pytest.raises(TypeError):
        decode_image("not bytes")  # type: ignore[arg-type]  # deliberate: a str, to test the TypeError


def test_text_file_named_png_is_refused(tmp_path: Path) -> None:
    """A text file with a .png name raises ImageInputError saying it is not an image."""
    path = _write(tmp_path / "notes.png", b"hello, I am not an image\n" * 10)
    with pytest.raises(ImageInputError, match="not a recognised image") as info:
        load_image(path)
    _assert_one_line(info.value, path)


def test_unsupported_format_is_refused() -> None:
    """An image in a format outside the allow-list (ICO) is refused."""
    data = _encode(Image.new("RGB", (16, 16)), "ICO")
    with pytest.raises(ImageInputError, match="not a recognised image"):
        decode_image(data, name="icon.png")


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_truncated_image_is_refused(tmp_path: Path, fmt: str, suffix: str) -> None:
    """An image cut short in its pixel data raises ImageInputError, not a partial image."""
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(noisy), fmt)
    path = _write(tmp_path / f"cut{suffix}", data[: len(data) * 2 // 3])
    with pytest.raises(ImageInputError, match="truncated or corrupt") as info:
        load_image(path)
    _assert_one_line(info.value, path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_is_refused(tmp_path: Path) -> None:
    """A PNG whose compressed data is garbage raises ImageInputError."""
    data = _png_header_only(16, 16, idat=b"\x78\x9c" + b"\xff" * 40)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        decode_image(data, name="bad.png")


def test_decompression_bomb_header_is_refused_quickly(tmp_path: Path) -> None:
    """A 300-byte PNG claiming 100000x100000 pixels is refused without decoding it."""
    path = _write(tmp_path / "bomb.png", _png_header_only(100_000, 100_000))
    assert path.stat().st_size < 300
    with pytest.raises(ImageInputError, match="too large") as info:
        load_image(path)
    _assert_one_line(info.value, path)


def test_pixel_limit_is_checked_before_decoding() -> None:
    """An image over max_pixels is refused as too large even if its pixel data is garbage."""
    data = _png_header_only(2000, 1000, idat=b"garbage")
    expected = r"too large \(2000x1000 = 2000000 pixels, limit 1000000\)"
    with pytest.raises(ImageInputError, match=expected):
        decode_image(data, max_pixels=1_000_000)


def test_pixel_limit_argument_applies_to_valid_images() -> None:
    """A valid image just over a caller's max_pixels is refused, one at the limit accepted."""
    data = _encode(Image.new("RGB", (40, 25)), "PNG")
    assert decode_image(data, max_pixels=1000).shape == (25, 40, 3)
    with pytest.raises(ImageInputError, match="too large"):
        decode_image(data, max_pixels=999)


def test_pillow_bomb_warning_becomes_input_error() -> None:
    """Where warnings are errors, Pillow's DecompressionBombWarning becomes ImageInputError."""
    data = _png_header_only(10_000, 9_000)  # 90 M pixels: above Pillow's warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageInputError, match="too large"):
            decode_image(data, max_pixels=10**9)


def test_bomb_over_default_limit_is_refused_when_pillow_only_warns() -> None:
    """With Pillow's warning merely shown, our own default limit still refuses 90 M pixels."""
    data = _png_header_only(10_000, 9_000)
    assert MAX_PIXELS < 10_000 * 9_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ImageInputError, match=f"limit {MAX_PIXELS}"):
            decode_image(data)


def test_zero_size_image_is_refused() -> None:
    """A PNG header with zero width is refused with ImageInputError."""
    with pytest.raises(ImageInputError):
        decode_image(_png_header_only(0, 16), name="zero.png")


def test_invalid_limits_raise_value_error(tmp_path: Path) -> None:
    """A non-positive max_pixels or min_side is a programming error (ValueError)."""
    data = _encode(Image.new("RGB", (8, 8)), "PNG")
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image(data, max_pixels=0)
    with pytest.raises(ValueError, match="min_side"):
        decode_image(data, min_side=-1)


def test_loading_leaves_pillow_globals_alone(tmp_path: Path) -> None:
    """Decoding good and bad inputs does not change Pillow's process-wide limits."""
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    decode_image(_encode(Image.new("RGB", (8, 8)), "PNG"))
    with pytest.raises(ImageInputError):
        decode_image(_png_header_only(100_000, 100_000))
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_error_message_strips_newlines() -> None:
    """ImageInputError keeps its message on one line even if the reason has newlines."""
    err = ImageInputError("x.png", "bad\nthing", "do\nthis")
    assert str(err) == "x.png: bad thing; do this"
    assert isinstance(err, ValueError)


# ----------------------------------------------------------------------------- collect_inputs


def _tree(root: Path) -> None:
    png = _encode(Image.new("RGB", (8, 8)), "PNG")
    names = ["b.png", "a.jpg", "sub/c.TIF", "sub/deeper/d.webp", ".hidden.png", ".cache/e.png"]
    for rel in names + ["notes.txt", "sub/f.gif"]:
        _write(root / rel, png)


def test_collect_inputs_walks_a_nested_folder(tmp_path: Path) -> None:
    """A folder yields its supported images recursively, sorted, relative to it, hidden skipped."""
    root = tmp_path / "in"
    _tree(root)
    pairs = collect_inputs([root])
    rels = [rel.as_posix() for _, rel in pairs]
    assert rels == ["a.jpg", "b.png", "sub/c.TIF", "sub/deeper/d.webp"]
    assert all(file == root / rel for file, rel in pairs)


def test_collect_inputs_file_gives_its_name(tmp_path: Path) -> None:
    """A file input maps to its bare file name."""
    path = _write(tmp_path / "x" / "y" / "photo.JPEG", b"whatever")
    assert collect_inputs([str(path)]) == [(path, Path("photo.JPEG"))]


def test_collect_inputs_missing_path_is_refused(tmp_path: Path) -> None:
    """A missing input raises ImageInputError naming it."""
    with pytest.raises(ImageInputError, match="no such file or folder") as info:
        collect_inputs([tmp_path / "ghost"])
    _assert_one_line(info.value, tmp_path / "ghost")


def test_collect_inputs_unsupported_file_type_is_refused(tmp_path: Path) -> None:
    """An explicitly named file with an unsupported suffix is refused."""
    path = _write(tmp_path / "notes.txt", b"hi")
    with pytest.raises(ImageInputError, match="unsupported file type"):
        collect_inputs([path])


def test_collect_inputs_folder_without_images_is_refused(tmp_path: Path) -> None:
    """A folder with no supported images is refused rather than silently doing nothing."""
    _write(tmp_path / "only.txt", b"hi")
    with pytest.raises(ImageInputError, match="no images"):
        collect_inputs([tmp_path])


def test_collect_inputs_rejects_empty_input_list() -> None:
    """An empty list of inputs is refused."""
    with pytest.raises(ImageInputError):
        collect_inputs([])


def test_collect_inputs_colliding_outputs_across_inputs_raise(tmp_path: Path) -> None:
    """Two different files whose outputs would both be x.png raise, naming both."""
    a = _write(tmp_path / "a" / "x.png", b"1")
    b = _write(tmp_path / "b" / "x.jpg", b"2")
    with pytest.raises(ImageInputError, match="would overwrite") as info:
        collect_inputs([tmp_path / "a", b])
    assert str(b) in str(info.value) and str(a) in str(info.value)


def test_collect_inputs_same_stem_in_one_folder_raises(tmp_path: Path) -> None:
    """x.jpg and X.png in one folder would write the same output and are refused."""
    _write(tmp_path / "x.jpg", b"1")
    _write(tmp_path / "X.png", b"2")
    with pytest.raises(ImageInputError, match="would overwrite"):
        collect_inputs([tmp_path])


def test_collect_inputs_same_file_twice_is_listed_once(tmp_path: Path) -> None:
    """Naming a file directly and via its folder (same relative path) lists it once."""
    path = _write(tmp_path / "in" / "x.png", b"1")
    assert collect_inputs([tmp_path / "in", path]) == [(path, Path("x.png"))]


def test_collect_inputs_keeps_input_order(tmp_path: Path) -> None:
    """Pairs come in the order inputs were given, each folder sorted within."""
    z = _write(tmp_path / "z.png", b"1")
    _write(tmp_path / "d" / "b.png", b"1")
    _write(tmp_path / "d" / "a.png", b"1")
    rels = [rel.as_posix() for _, rel in collect_inputs([z, tmp_path / "d"])]
    assert rels == ["z.png", "a.png", "b.png"]


def test_collect_inputs_skips_the_output_folder_below_an_input(tmp_path: Path) -> None:
    """An excluded folder (the output) inside an input folder is not searched, logged once at info."""
    _write(tmp_path / "photos" / "a.png", b"1")
    _write(tmp_path / "photos" / "restored" / "a.png", b"2")
    _write(tmp_path / "photos" / "restored" / "deep" / "b.png", b"3")
    _write(tmp_path / "photos" / "kept" / "c.png", b"4")
    with capture_logs() as logs:
        pairs = collect_inputs([tmp_path / "photos"], exclude=[tmp_path / "photos" / "." / "restored"])
    assert [rel.as_posix() for _, rel in pairs] == ["a.png", "kept/c.png"]
    skipped = [e for e in logs if e["event"] == "imageio.output_folder_skipped"]
    assert len(skipped) == 1 and skipped[0]["log_level"] == "info" and skipped[0]["folder"].endswith("restored")
    # Not yet created, or named as an input itself: nothing is skipped.
    assert len(collect_inputs([tmp_path / "photos"], exclude=[tmp_path / "nowhere"])) == 4
    assert len(collect_inputs([tmp_path / "photos" / "restored"], exclude=[tmp_path / "photos" / "restored"])) == 2


def test_collect_inputs_can_rename_colliding_outputs(tmp_path: Path) -> None:
    """With rename_collisions, photo.png and photo.tiff in one folder are both kept, the second as photo.tiff.png."""
    png = _write(tmp_path / "in" / "photo.png", b"1")
    tiff = _write(tmp_path / "in" / "photo.tiff", b"2")
    pairs = collect_inputs([tmp_path / "in"], rename_collisions=True)
    assert pairs == [(png, Path("photo.png")), (tiff, Path("photo.tiff.png"))]
    assert output_paths("OUT", pairs[1][1]) == (Path("OUT/photo.tiff.png"), Path("OUT/photo.tiff.trace.json"))


def test_resolve_collisions_numbers_names_that_are_taken_too(tmp_path: Path) -> None:
    """Across folders, a renamed name already taken gets -2; a file met twice is listed once."""
    a = _write(tmp_path / "a" / "x.png", b"1")
    b = _write(tmp_path / "b" / "X.png", b"2")
    c = _write(tmp_path / "c" / "x.png", b"3")
    d = _write(tmp_path / "d" / "sub" / "x.jpg", b"4")
    pairs = [(a, Path("x.png")), (b, Path("X.png")), (c, Path("x.png")), (a, Path("x.png")), (d, Path("sub/x.jpg"))]
    assert resolve_collisions(pairs) == [
        (a, Path("x.png")),
        (b, Path("X.png.png")),
        (c, Path("x.png-2.png")),
        (d, Path("sub/x.jpg")),
    ]


def test_prepare_output_folder_creates_it_and_leaves_no_probe(tmp_path: Path) -> None:
    """The output folder is created with its parents and proven writable; the probe file is gone."""
    out = prepare_output_folder(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and out.is_dir() and _files_in(out) == []


def test_prepare_output_folder_under_a_regular_file_fails(tmp_path: Path) -> None:
    """A path through a regular file cannot be created (even as root): OSError, nothing made."""
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OSError):
        prepare_output_folder(tmp_path / "file.txt" / "out")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_prepare_output_folder_read_only_fails(tmp_path: Path) -> None:
    """An existing folder without write permission is refused with OSError."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OSError):
            prepare_output_folder(ro)
        with pytest.raises(OSError):
            prepare_output_folder(ro / "sub")
    finally:
        ro.chmod(0o700)


def test_supported_suffixes_are_lowercase_with_dot() -> None:
    """SUPPORTED_SUFFIXES holds the documented lower-case suffixes."""
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"} == SUPPORTED_SUFFIXES


# ----------------------------------------------------------------------------- output_paths


def test_output_paths_mirror_relative_path(tmp_path: Path) -> None:
    """An input a/b.c.jpg maps to OUT/a/b.c.png and OUT/a/b.c.trace.json."""
    image, trace = output_paths(tmp_path, Path("a/b.c.jpg"))
    assert image == tmp_path / "a" / "b.c.png"
    assert trace == tmp_path / "a" / "b.c.trace.json"


@pytest.mark.parametrize("rel", ["/etc/x.png", "../x.png", "a/../../x.png", "."])
def test_output_paths_refuse_escaping_paths(tmp_path: Path, rel: str) -> None:
    """Absolute, climbing or empty relative paths are refused so outputs stay inside OUT."""
    with pytest.raises(ValueError):
        output_paths(tmp_path, Path(rel))


# ----------------------------------------------------------------------------- writing


def test_save_png_atomic_round_trips_and_creates_parents(tmp_path: Path) -> None:
    """save_png_atomic creates missing folders and the saved pixels load back unchanged."""
    rgb = _gradient_rgb()
    path = tmp_path / "deep" / "er" / "out.png"
    save_png_atomic(path, rgb)
    np.testing.assert_array_equal(load_image(path), rgb)
    assert _files_in(path.parent) == ["out.png"]


def test_save_png_atomic_replaces_existing_file(tmp_path: Path) -> None:
    """Saving over an existing file replaces it and leaves no temporary file."""
    path = tmp_path / "out.png"
    save_png_atomic(path, np.zeros((8, 8, 3), np.uint8))
    save_png_atomic(path, np.full((8, 8, 3), 7, np.uint8))
    assert (load_image(path) == 7).all()
    assert _files_in(tmp_path) == ["out.png"]


def test_save_png_atomic_gives_normal_permissions(tmp_path: Path) -> None:
    """The written file gets the mode a plain create gives (0666 minus umask), not 0600."""
    current = os.umask(0o022)
    os.umask(current)
    path = tmp_path / "out.png"
    save_png_atomic(path, np.zeros((8, 8, 3), np.uint8))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~current


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((8, 8, 3), np.float32),
        np.zeros((8, 8, 2), np.uint8),
        np.zeros((0, 8, 3), np.uint8),
        [[1, 2]],
    ],
    ids=["float", "two-channels", "empty", "list"],
)
def test_invalid_array_writes_nothing(tmp_path: Path, bad: object) -> None:
    """An invalid image raises before writing and leaves an existing file untouched."""
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises((TypeError, ValueError)):
        save_png_atomic(path, bad)  # type: ignore[arg-type]  # deliberate: invalid images, to test the error
    assert path.read_bytes() == b"old"
    assert _files_in(tmp_path) == ["out.png"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failure_during_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """If the disk write or rename fails, the old file stays intact and no temp file remains."""
    path = tmp_path / "out.png"
    path.write_bytes(b"old")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        save_png_atomic(path, np.zeros((8, 8, 3), np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert _files_in(tmp_path) == ["out.png"]


def test_failure_without_existing_file_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed first write leaves neither the target nor a temporary file."""

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(imageio.os, "replace", boom)
    with pytest.raises(OSError):
        save_png_atomic(tmp_path / "out.png", np.zeros((8, 8, 3), np.uint8))
    monkeypatch.undo()
    assert _files_in(tmp_path) == []


def test_write_text_atomic_writes_utf8_and_replaces(tmp_path: Path) -> None:
    """write_text_atomic writes UTF-8 text, replaces old content and leaves no temp file."""
    path = tmp_path / "t" / "trace.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, '{"note": "café ✓"}')
    assert path.read_text(encoding="utf-8") == '{"note": "café ✓"}'
    assert _files_in(path.parent) == ["trace.json"]


def test_write_text_atomic_rejects_bytes(tmp_path: Path) -> None:
    """Passing bytes to write_text_atomic is a TypeError and writes nothing."""
    with pytest.raises(TypeError):
        write_text_atomic(tmp_path / "x.json", b"{}")  # type: ignore[arg-type]  # deliberate: bytes, not str, to test the TypeError
    assert _files_in(tmp_path) == []


def test_encode_png_accepts_gray_and_rgba() -> None:
    """encode_png writes gray and RGBA arrays that decode to the expected RGB."""
    gray = np.full((6, 6), 90, np.uint8)
    assert (decode_image(encode_png(gray)) == 90).all()
    rgba = np.zeros((6, 6, 4), np.uint8)
    assert (decode_image(encode_png(rgba)) == 255).all()  # fully transparent -> white
    assert encode_png(np.zeros((6, 6, 1), np.uint8)).startswith(b"\x89PNG")
