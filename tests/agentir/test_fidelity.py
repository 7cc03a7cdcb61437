"""Output fidelity of `agentir restore`: format and quality, ICC profile and EXIF, greyscale, bit depth."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from agentir import cli
from agentir.imageio import (
    DEFAULT_QUALITY,
    encode_image,
    load_image,
    load_image_with_meta,
    metadata_written,
    output_paths,
    to_luma,
)

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ROOT / "examples" / "clean"
ARTIST = 315
ORIENTATION = 0x0112
SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run cli.main in this process without reconfiguring the test session's structlog."""
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.delenv("AGENTIR_EXPERIENCE_STATE", raising=False)


def photo(box: tuple[int, int, int, int] = (100, 100, 164, 164)) -> Image.Image:
    """A small RGB crop of a shipped photo (quick to restore)."""
    with Image.open(CLEAN / "coffee.png") as im:
        return im.convert("RGB").crop(box)


def srgb_profile() -> bytes:
    """An sRGB ICC profile as bytes."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_with(**tags: Any) -> Image.Exif:
    """An EXIF block holding the given numeric tags (keyword ``t<number>``)."""
    exif = Image.Exif()
    for key, value in tags.items():
        exif[int(key[1:])] = value
    return exif


def save(im: Image.Image, path: Path, **options: Any) -> Path:
    """Save ``im`` at ``path`` (folders created), in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **options)
    return path


def restore(inputs: list[Path], out: Path, *options: str) -> None:
    """`agentir restore INPUTS -o OUT OPTIONS` in this process; it must succeed."""
    assert cli.main(["restore", "-q", *map(str, inputs), "-o", str(out), *options]) == cli.EXIT_OK


def trace_of(out: Path, stem: str) -> dict[str, Any]:
    """The trace restore wrote for ``stem``."""
    return json.loads((out / f"{stem}.trace.json").read_text())


def opened(path: Path) -> Image.Image:
    """``path`` opened and fully decoded by Pillow."""
    im = Image.open(path)
    im.load()
    return im


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_every_format_writes_a_readable_file_with_its_suffix_and_size(tmp_path: Path, in_process: None, fmt: str) -> None:
    """Each --format gives a file with its suffix that Pillow reads, of the size the trace gives, with the trace beside it."""
    src = save(photo(), tmp_path / "in" / "photo.png")
    out = tmp_path / "out"
    restore([src], out, "--format", fmt)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"photo{SUFFIX[fmt]}", "photo.trace.json"])
    trace = trace_of(out, "photo")
    im = opened(out / f"photo{SUFFIX[fmt]}")
    assert im.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}[fmt]
    height, width = trace["output_shape"][:2]
    assert im.size == (width, height) and im.mode == "RGB"
    assert trace["output"] == str(out / f"photo{SUFFIX[fmt]}")
    assert trace["output_format"] == fmt and trace["input_mode"] == "RGB" and trace["output_mode"] == "RGB"


def test_jpeg_quality_changes_the_file_size_monotonically(tmp_path: Path, in_process: None) -> None:
    """--quality 30 writes a smaller JPEG than --quality 95 of the same input, and the trace records it."""
    src = save(photo(), tmp_path / "in" / "photo.png")
    sizes = {}
    for q in (30, 95):
        restore([src], tmp_path / f"q{q}", "--format", "jpeg", "--quality", str(q))
        sizes[q] = (tmp_path / f"q{q}" / "photo.jpg").stat().st_size
        assert trace_of(tmp_path / f"q{q}", "photo")["output_quality"] == q
    assert sizes[30] < sizes[95], sizes


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp", "tiff"])
def test_icc_profile_and_exif_survive_restore(tmp_path: Path, in_process: None, fmt: str) -> None:
    """An input's ICC profile and EXIF Artist tag are embedded, unchanged, in the restored file of every format."""
    icc = srgb_profile()
    src = save(photo(), tmp_path / "in" / "photo.png", icc_profile=icc, exif=exif_with(t315="Ada Lovelace"))
    out = tmp_path / "out"
    restore([src], out, "--format", fmt)
    im = opened(out / f"photo{SUFFIX[fmt]}")
    assert im.info.get("icc_profile") == icc
    assert im.getexif().get(ARTIST) == "Ada Lovelace"
    assert trace_of(out, "photo")["metadata"] == {"icc_profile": True, "exif": True}


def test_exif_rotated_input_comes_out_upright_with_orientation_one(tmp_path: Path, in_process: None) -> None:
    """A landscape JPEG tagged Orientation=6 is restored as the portrait a viewer shows, with Orientation 1 (or none) and its other tags kept."""
    stored = photo((40, 40, 120, 88))  # 80 wide, 48 high as stored
    src = save(stored, tmp_path / "in" / "turned.jpg", quality=95, exif=exif_with(t274=6, t315="Ada"))
    out = tmp_path / "out"
    restore([src], out)
    trace = trace_of(out, "turned")
    assert trace["input_shape"][:2] == [80, 48]  # upright: 48 wide, 80 high
    im = opened(out / "turned.png")
    height, width = trace["output_shape"][:2]
    assert im.size == (width, height) and height > width
    assert im.getexif().get(ORIENTATION, 1) == 1 and im.getexif().get(ARTIST) == "Ada"


@pytest.mark.parametrize(("fmt", "mode"), [("png", "L"), ("jpeg", "L"), ("tiff", "L"), ("webp", "RGB")])
def test_greyscale_in_gives_greyscale_out(tmp_path: Path, in_process: None, fmt: str, mode: str) -> None:
    """A mode-L input is written as mode L (WebP, which has no greyscale mode, as RGB) and the trace names both modes."""
    src = save(photo().convert("L"), tmp_path / "in" / "grey.png")
    out = tmp_path / "out"
    restore([src], out, "--format", fmt)
    assert opened(out / f"grey{SUFFIX[fmt]}").mode == mode
    trace = trace_of(out, "grey")
    assert trace["input_mode"] == "L" and trace["output_mode"] == mode


def _gray16(path: Path) -> Path:
    gray = np.asarray(photo().convert("L"), dtype=np.uint16) * 257 + 3  # low bits set: truly 16-bit
    return save(Image.fromarray(gray), path)


def _rgb16(path: Path) -> Path:
    rgb = np.asarray(photo(), dtype=np.uint16) * 257 + 5
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


def _unchanged(path: Path) -> np.ndarray:
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert arr is not None
    return arr


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_rgb_output_keeps_icc_profile_and_exif(tmp_path: Path, in_process: None, fmt: str) -> None:
    """A 16-bit RGB PNG or TIFF (not written by Pillow) still embeds the input's ICC profile and EXIF, and its pixels read back."""
    icc = srgb_profile()
    src = save(photo(), tmp_path / "in" / "photo.png", icc_profile=icc, exif=exif_with(t315="Ada"))
    out = tmp_path / "out"
    restore([src], out, "--format", fmt, "--depth", "16")
    path = out / f"photo{SUFFIX[fmt]}"
    im = opened(path)
    assert im.info.get("icc_profile") == icc and im.getexif().get(ARTIST) == "Ada"
    deep = _unchanged(path)
    assert deep.dtype == np.uint16 and deep.shape[2] == 3 and not (deep % 257).any()
    np.testing.assert_array_equal(deep[:, :, ::-1] // 257, np.asarray(im.convert("RGB")))
    assert trace_of(out, "photo")["metadata"] == {"icc_profile": True, "exif": True}


def test_a_tiff_inputs_layout_tags_are_not_carried_as_exif(tmp_path: Path) -> None:
    """The EXIF carried from a TIFF input keeps its photo tags but not the input file's layout tags (size, strips, compression)."""
    src = save(photo(), tmp_path / "in.tif", exif=exif_with(t315="Ada"), compression="tiff_lzw")
    meta = load_image_with_meta(src)[1]
    assert meta.exif is not None
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif.get(ARTIST) == "Ada" and not {256, 257, 259, 273, 279} & set(exif)


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_16bit_input_gives_16bit_output_with_depth_auto_and_8bit_with_depth_8(tmp_path: Path, in_process: None, fmt: str) -> None:
    """16-bit grey and RGB PNGs come out 16-bit (values x257: 8 bits of precision) with --depth auto, 8-bit with --depth 8."""
    inputs = [_gray16(tmp_path / "in" / "g16.png"), _rgb16(tmp_path / "in" / "c16.png")]
    restore(inputs, tmp_path / "auto", "--format", fmt)
    restore(inputs, tmp_path / "eight", "--format", fmt, "--depth", "8")
    suffix = SUFFIX[fmt]
    for stem, channels, mode16, mode8 in (("g16", 1, "I;16", "L"), ("c16", 3, "RGB;16", "RGB")):
        deep = _unchanged(tmp_path / "auto" / f"{stem}{suffix}")
        assert deep.dtype == np.uint16 and (deep.ndim == 2) == (channels == 1)
        assert not (deep % 257).any()  # the restored 8-bit values, scaled
        flat = _unchanged(tmp_path / "eight" / f"{stem}{suffix}")
        assert flat.dtype == np.uint8 and flat.shape == deep.shape
        np.testing.assert_array_equal(deep // 257, flat)
        auto, eight = trace_of(tmp_path / "auto", stem), trace_of(tmp_path / "eight", stem)
        assert auto["input_bits"] == 16 and auto["output_bits"] == 16 and auto["output_precision_bits"] == 8
        assert auto["input_mode"] == mode16 and auto["output_mode"] == mode16
        assert eight["output_bits"] == 8 and eight["output_mode"] == mode8
    assert opened(tmp_path / "auto" / f"g16{suffix}").mode == "I;16"


def test_depth_16_forces_a_16bit_output_for_an_8bit_input(tmp_path: Path, in_process: None) -> None:
    """--depth 16 writes a 16-bit PNG from an 8-bit input."""
    src = save(photo(), tmp_path / "in" / "photo.png")
    restore([src], tmp_path / "out", "--depth", "16")
    assert _unchanged(tmp_path / "out" / "photo.png").dtype == np.uint16


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--format", "gif"], "argument --format: invalid choice: 'gif'"),
        (["--quality", "0"], "argument --quality: must be 1..100, got 0"),
        (["--quality", "101", "--format", "jpeg"], "argument --quality: must be 1..100, got 101"),
        (["--quality", "high"], "argument --quality: 'high' is not a whole number"),
        (["--quality", "80"], "--quality applies to --format jpeg or webp only; png is lossless"),
        (["--format", "tiff", "--quality", "80"], "--quality applies to --format jpeg or webp only; tiff is lossless"),
        (["--format", "jpeg", "--depth", "16"], "--depth 16 needs --format png or tiff"),
        (["--depth", "12"], "argument --depth: invalid choice: '12'"),
    ],
)
def test_bad_format_quality_or_depth_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str], options: list[str], message: str) -> None:
    """Bad --format, --quality or --depth values (or --quality for a lossless format) are one argparse error line, exit 2."""
    with pytest.raises(SystemExit) as info:
        cli.main(["restore", "x.png", "-o", "o", *options])
    assert info.value.code == cli.EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("agentir restore: error: ") and message in errors[0], errors


def test_colliding_names_stay_distinct_with_the_jpeg_suffix(tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """photo.png and photo.tiff restored as JPEG give photo.jpg and photo.tiff.jpg, with a note naming the new one."""
    src = tmp_path / "in"
    save(photo(), src / "photo.png")
    save(photo((20, 20, 84, 84)), src / "photo.tiff")
    out = tmp_path / "out"
    assert cli.main(["restore", str(src), "-o", str(out), "--format", "jpeg"]) == cli.EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "photo.tiff.jpg", "photo.tiff.trace.json", "photo.trace.json"]
    assert trace_of(out, "photo.tiff")["input"] == str(src / "photo.tiff")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "restored as photo.tiff.jpg: photo.jpg is another input's output" in notes[0], notes


# ----------------------------------------------------------------------------- the library parts


def test_load_image_with_meta_returns_load_images_pixels_and_the_files_metadata(tmp_path: Path) -> None:
    """load_image_with_meta gives the same array as load_image plus mode, depth, ICC profile and EXIF with Orientation 1."""
    icc = srgb_profile()
    src = save(photo((0, 0, 40, 24)), tmp_path / "t.jpg", quality=95, icc_profile=icc, exif=exif_with(t274=8, t315="Ada"))
    rgb, meta = load_image_with_meta(src)
    np.testing.assert_array_equal(rgb, load_image(src))
    assert rgb.shape == (40, 24, 3)
    assert (meta.mode, meta.gray, meta.bits, meta.icc_profile) == ("RGB", False, 8, icc)
    assert meta.exif is not None
    exif = Image.Exif()
    exif.load(meta.exif)
    assert exif.get(ORIENTATION) == 1 and exif.get(ARTIST) == "Ada"
    plain = save(photo(), tmp_path / "plain.png")
    assert load_image_with_meta(plain)[1].exif is None and load_image_with_meta(plain)[1].icc_profile is None


def test_to_luma_is_rounded_bt601() -> None:
    """to_luma weighs R, G, B by 0.299, 0.587, 0.114 and rounds."""
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [10, 20, 30]]], dtype=np.uint8)
    np.testing.assert_array_equal(to_luma(rgb), [[76, 150, 29, 255, 18]])


def test_encode_image_refuses_quality_for_lossless_formats_and_leaves_out_a_mismatched_icc_profile() -> None:
    """Quality for PNG is a ValueError; an RGB profile is not embedded in a greyscale output, and metadata_written says so."""
    rgb = np.asarray(photo())
    with pytest.raises(ValueError, match="quality applies to jpeg and webp only"):
        encode_image(rgb, "png", quality=50)
    with pytest.raises(ValueError, match="unknown output format"):
        encode_image(rgb, "gif")
    icc = srgb_profile()
    grey = Image.open(io.BytesIO(encode_image(rgb, "png", gray=True, icc_profile=icc)))
    assert grey.mode == "L" and "icc_profile" not in grey.info
    assert metadata_written("png", gray=True, bits=8, icc_profile=icc, exif=None) == (False, False)
    assert metadata_written("tiff", gray=False, bits=16, icc_profile=icc, exif=b"Exif\x00\x00") == (True, True)
    assert metadata_written("webp", gray=False, bits=16, icc_profile=icc, exif=b"Exif\x00\x00") == (True, True)


def test_output_paths_take_the_formats_suffix() -> None:
    """output_paths puts the format's suffix on the image (renamed collisions too) and leaves the trace name alone."""
    assert output_paths("O", Path("a/b.png"), suffix=".jpg") == (Path("O/a/b.jpg"), Path("O/a/b.trace.json"))
    assert output_paths("O", Path("a/b.tiff.png"), suffix=".tif") == (Path("O/a/b.tiff.tif"), Path("O/a/b.tiff.trace.json"))
    with pytest.raises(ValueError, match="bad output suffix"):
        output_paths("O", Path("b.png"), suffix=".json")


def test_the_clis_default_qualities_are_the_writers() -> None:
    """The defaults --help names for --quality are the ones encode_image uses."""
    assert cli._LOSSY_DEFAULT_QUALITY == DEFAULT_QUALITY == {"jpeg": 92, "webp": 90}
