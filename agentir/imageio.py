"""Image files in and out: safe decoding to RGB uint8, atomic writes, input discovery.

Every image that enters agentir passes through :func:`load_image` (files) or
:func:`decode_image` (bytes from the daemon), which return a C-contiguous ``uint8`` array of
shape ``(H, W, 3)`` in RGB order, whatever the file held:

========================  =========================================================
file content              what you get
========================  =========================================================
RGB                       as is
grayscale ``1``/``L``     replicated to three channels
16-bit gray (``I;16*``)   scaled ``round(x * 255 / 65535)`` (65535 -> 255, never clipped)
32-bit int ``I``          treated as 16-bit, ``[0, 65535]``; other ranges are rejected
float ``F``               ``[0, 1]`` scaled by 255, else ``[0, 255]`` rounded; others rejected
16-bit RGB(A)             Pillow keeps the high byte (``x >> 8``), so 65535 -> 255
palette ``P``             expanded; with a transparent entry, composited as below
alpha (RGBA, LA, PA ...)  composited on a **white** background (straight alpha)
CMYK, YCbCr, LAB, HSV     converted by Pillow
EXIF orientation          applied (the array is upright as a viewer shows it)
multi-frame (GIF, TIFF)   the first frame
========================  =========================================================

Every failure is an :class:`ImageInputError` whose message is one line naming the file,
the reason and what to do. Refused inputs: missing or unreadable files, empty files,
files that are not an image in a supported format (PNG, JPEG, BMP, TIFF, WebP, PPM/PGM,
GIF), truncated or corrupt data (the whole image is decoded before returning, so damage
anywhere is found), images larger than ``max_pixels`` (checked from the header *before*
the pixel data is decoded), zero-size images and images smaller than ``min_side`` pixels
on a side (:data:`MIN_SIDE` = 4: the smallest image the x4 tools and the 3x3 filters of
the perception can still work on).

Pillow's process-wide settings are left alone: ``Image.MAX_IMAGE_PIXELS`` still applies on
top of ``max_pixels`` (its ``DecompressionBombError``, and its ``DecompressionBombWarning``
where warnings are turned into errors, become :class:`ImageInputError`), and
``ImageFile.LOAD_TRUNCATED_IMAGES`` is never set; at its default (``False``) truncated
files are refused. This module imports no torch.

Output fidelity: :func:`load_image_with_meta` returns the same array plus an
:class:`ImageMeta` (source mode, grey or colour, 8 or 16 bits, ICC profile, EXIF with
Orientation set to 1 and a TIFF input's layout tags removed); :func:`encode_image` /
:func:`save_image_atomic` write PNG, JPEG, WebP or TIFF with those embedded, as one-channel
BT.601 luma for grey outputs and as 16-bit (8-bit values x257) PNG/TIFF where asked.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import structlog
from PIL import Image, ImageOps, UnidentifiedImageError

from agentir.bus.files import write_bytes_atomic, write_text_atomic  # re-exported: the project's atomic writers

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_PIXELS",
    "MIN_SIDE",
    "OUTPUT_FORMATS",
    "SUPPORTED_SUFFIXES",
    "ImageInputError",
    "ImageMeta",
    "collect_inputs",
    "decode_image",
    "encode_image",
    "encode_png",
    "load_image",
    "load_image_with_meta",
    "metadata_written",
    "output_layout",
    "output_mode",
    "output_paths",
    "prepare_output_folder",
    "resolve_collisions",
    "save_image_atomic",
    "save_png_atomic",
    "to_luma",
    "write_bytes_atomic",
    "write_text_atomic",
]

log = structlog.get_logger(__name__)

MAX_PIXELS: int = 64_000_000
"""Default limit on ``width * height`` of an input image (a decompression-bomb guard)."""

MIN_SIDE: int = 4
"""Default smallest accepted width and height in pixels."""

SUPPORTED_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
"""File name suffixes (lower case) that :func:`collect_inputs` treats as images."""

# Pillow format ids the decoder may use. An allow-list keeps exotic plug-ins (EPS runs
# Ghostscript, for one) out of reach of untrusted bytes sent to the daemon. "JPEG" also
# opens the multi-picture JPEGs (MPO) many phones write; GIF is decoded (first frame) for
# bytes sent by clients even though .gif is not in SUPPORTED_SUFFIXES.
_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP", "PPM", "GIF")
_FORMAT_NAMES = "PNG, JPEG, BMP, TIFF, WebP, PPM/PGM or GIF"

# Errors Pillow and its C decoders raise on damaged data.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    zlib.error,
)


class ImageInputError(ValueError):
    """An input image cannot be used.

    Attributes:
        path: the file (or the name given to :func:`decode_image`) the problem is about.
        reason: what is wrong, e.g. ``"file is empty"``.
        hint: what the user can do about it.

    ``str(error)`` is one line: ``"<path>: <reason>; <hint>"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, hint: str = "") -> None:
        self.path = str(path)
        self.reason = _one_line(reason)
        self.hint = _one_line(hint)
        message = f"{self.path}: {self.reason}"
        if self.hint:
            message += f"; {self.hint}"
        super().__init__(message)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- decoding


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Read an image file as an upright RGB ``uint8`` array of shape ``(H, W, 3)``.

    Args:
        path: the image file.
        max_pixels: largest accepted ``width * height``; checked before decoding.
        min_side: smallest accepted width and height.

    Returns:
        A new writable C-contiguous ``uint8`` array, RGB order (see the module docstring
        for conversions).

    Raises:
        ImageInputError: the file is missing, unreadable, empty, not a supported image,
            truncated or corrupt, too large, or too small.
        ValueError: ``max_pixels`` or ``min_side`` is not a positive integer.
    """
    return load_image_with_meta(path, max_pixels=max_pixels, min_side=min_side)[0]


@dataclass(frozen=True)
class ImageMeta:
    """What :func:`load_image_with_meta` knows about the file besides its RGB pixels.

    Attributes:
        mode: the file's pixel layout in Pillow's words, with ``";16"`` added for 16-bit
            colour (which Pillow itself reports as ``"RGB"``): ``"L"``, ``"I;16"``,
            ``"RGB"``, ``"RGB;16"``, ``"RGBA;16"``, ``"P"`` ...
        gray: the file had one colour channel (``1``, ``L``, ``LA``, ``I;16*``, ``I``, ``F``).
        bits: bits per channel of the file's samples, 8 or 16 (``I`` and ``F`` count as 16).
        icc_profile: the embedded ICC profile, as stored, or ``None``.
        exif: the EXIF block (``b"Exif\\0\\0"`` + TIFF data) with Orientation set to 1, since the
            pixels are already upright; ``None`` when the file had none or it could not be read.
    """

    mode: str = "RGB"
    gray: bool = False
    bits: int = 8
    icc_profile: bytes | None = None
    exif: bytes | None = None


def load_image_with_meta(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> tuple[np.ndarray, ImageMeta]:
    """:func:`load_image` plus the file's :class:`ImageMeta` (mode, depth, ICC profile, EXIF).

    The array is exactly what :func:`load_image` returns; the same errors are raised.
    """
    _check_limits(max_pixels, min_side)
    p = Path(path)
    if not p.exists():
        raise ImageInputError(p, "no such file", "check the path")
    if p.is_dir():
        raise ImageInputError(p, "is a folder, not an image file", "pass an image file")
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise ImageInputError(p, "file is empty", "re-export or re-download the image")
            return _decode_with_meta(fh, str(p), max_pixels=max_pixels, min_side=min_side)
    except PermissionError as exc:
        raise ImageInputError(p, "permission denied", "make the file readable") from exc
    except ImageInputError:
        raise
    except OSError as exc:
        raise ImageInputError(p, f"cannot read the file ({exc.strerror or exc})", "check the file and the disk") from exc


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    name: str = "<bytes>",
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, ...) exactly as :func:`load_image` decodes a file.

    Args:
        data: the encoded image.
        name: how error messages name the image (e.g. a client's file name).
        max_pixels: largest accepted ``width * height``; checked before decoding.
        min_side: smallest accepted width and height.

    Raises:
        ImageInputError: the bytes are empty, not a supported image, truncated or corrupt,
            too large, or too small.
        TypeError: ``data`` is not bytes-like.
        ValueError: ``max_pixels`` or ``min_side`` is not a positive integer.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image needs bytes, got {type(data).__name__}")
    _check_limits(max_pixels, min_side)
    if len(data) == 0:
        raise ImageInputError(name, "no image data (0 bytes)", "send the encoded image file")
    return _decode(io.BytesIO(data), name, max_pixels=max_pixels, min_side=min_side)


def _check_limits(max_pixels: int, min_side: int) -> None:
    for label, value in (("max_pixels", max_pixels), ("min_side", min_side)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")


def _decode(fh: BinaryIO, name: str, *, max_pixels: int, min_side: int) -> np.ndarray:
    return _decode_with_meta(fh, name, max_pixels=max_pixels, min_side=min_side)[0]


def _decode_with_meta(fh: BinaryIO, name: str, *, max_pixels: int, min_side: int) -> tuple[np.ndarray, ImageMeta]:
    try:
        im = Image.open(fh, formats=_FORMATS)
    except Image.DecompressionBombError as exc:
        raise _too_large(name, exc) from exc
    except Image.DecompressionBombWarning as exc:  # raised only where warnings are errors
        raise _too_large(name, exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(
            name,
            "not a recognised image",
            f"use a {_FORMAT_NAMES} file; if it is one, it may be damaged: re-export it",
        ) from exc
    except _DECODE_ERRORS as exc:
        raise _corrupt(name, exc) from exc

    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageInputError(name, f"image has zero size ({width}x{height})", "use a non-empty image")
        # The size comes from the header: refuse a bomb before any pixel is decoded.
        if width * height > max_pixels:
            raise ImageInputError(
                name,
                f"image is too large ({width}x{height} = {width * height} pixels, limit {max_pixels})",
                "downscale it first or raise the pixel limit",
            )
        if min(width, height) < min_side:
            raise ImageInputError(
                name,
                f"image is too small ({width}x{height}; needs at least {min_side} pixels a side)",
                "use a larger image",
            )
        rawmode = _tile_rawmode(im)  # before load(), which empties the tile list
        try:
            # A full decode now, so truncation or corruption anywhere in the data is found here.
            im.load()
        except Image.DecompressionBombError as exc:
            raise _too_large(name, exc) from exc
        except _DECODE_ERRORS as exc:
            raise _corrupt(name, exc) from exc
        upright = _exif_upright(im, name)
        rgb = _to_rgb_array(upright, name)
        return rgb, _meta(im, rawmode, rotated=upright is not im, name=name)


def _tile_rawmode(im: Image.Image) -> str:
    tile = getattr(im, "tile", None)  # an ImageFile attribute
    try:
        args = tile[0].args if tile else None
    except (AttributeError, IndexError, TypeError):
        return ""
    if isinstance(args, tuple) and args:
        args = args[0]
    return args if isinstance(args, str) else ""


_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F"})


def _meta(im: Image.Image, rawmode: str, *, rotated: bool, name: str) -> ImageMeta:
    mode = im.mode
    gray = mode in _GRAY_MODES or mode.startswith("I;16")
    bits = 16 if mode.startswith("I;16") or mode in ("I", "F") else 8
    if not gray and ";16" in rawmode and mode in ("RGB", "RGBA"):
        bits, mode = 16, f"{mode};16"
    icc = im.info.get("icc_profile")
    icc_profile = bytes(icc) if isinstance(icc, (bytes, bytearray)) and icc else None
    return ImageMeta(mode=mode, gray=gray, bits=bits, icc_profile=icc_profile, exif=_upright_exif(im, rotated=rotated, name=name))


_ORIENTATION = 0x0112
# TIFF layout tags: a TIFF input's getexif() is its whole first IFD, and these describe that
# file's pixel storage (and 34675 its ICC profile, carried apart), not the photo.
_LAYOUT_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320, 322, 323, 324, 325, 338, 339, 340, 341, 513, 514}
    | {530, 531, 532, 34675}
)


def _upright_exif(im: Image.Image, *, rotated: bool, name: str) -> bytes | None:
    """The file's EXIF with Orientation 1 (pixels are upright), or None; damaged EXIF is dropped."""
    try:
        exif = im.getexif()
        if len(exif) == 0 and not exif.get_ifd(0x8769):
            return None
        if _ORIENTATION in exif:
            if not rotated and exif.get(_ORIENTATION) not in (None, 1):
                # exif_transpose failed: the pixels are as stored, the tag no longer fits them.
                log.warning("imageio.exif_orientation_dropped", image=name)
            exif[_ORIENTATION] = 1
        for tag in _LAYOUT_TAGS & set(exif):
            del exif[tag]
        return bytes(exif.tobytes())
    except Exception as exc:  # any damage in a metadata block only loses the metadata
        log.warning("imageio.exif_not_carried", image=name, error=str(exc) or type(exc).__name__)
        return None


def _too_large(name: str, exc: BaseException) -> ImageInputError:
    return ImageInputError(
        name,
        f"image is too large for Pillow's decompression-bomb limit ({exc})",
        "downscale it first",
    )


def _corrupt(name: str, exc: BaseException) -> ImageInputError:
    detail = str(exc) or type(exc).__name__
    return ImageInputError(name, f"image data is truncated or corrupt ({detail})", "re-export or re-download it")


def _exif_upright(im: Image.Image, name: str) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as exc:
        # A damaged EXIF block should not make good pixels unusable: keep them as stored.
        log.warning("imageio.exif_ignored", image=name, error=str(exc))
        return im
    return im if upright is None else upright


def _to_rgb_array(im: Image.Image, name: str) -> np.ndarray:
    mode = im.mode
    if mode == "RGB":
        rgb = np.asarray(im, dtype=np.uint8)
    elif mode in ("1", "L"):
        rgb = _gray_to_rgb(np.asarray(im.convert("L"), dtype=np.uint8))
    elif mode.startswith("I;16"):
        rgb = _gray_to_rgb(_scale_16bit(np.asarray(im).astype(np.uint32), name))
    elif mode == "I":
        rgb = _gray_to_rgb(_scale_16bit(np.asarray(im).astype(np.int64), name))
    elif mode == "F":
        rgb = _gray_to_rgb(_scale_float(np.asarray(im, dtype=np.float64), name))
    elif mode == "P":
        if "transparency" in im.info:
            rgb = _composite_on_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
        else:
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = im.convert("RGBA") if mode != "La" else im.convert("LA").convert("RGBA")
        rgb = _composite_on_white(np.asarray(rgba, dtype=np.uint8))
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    else:
        raise ImageInputError(name, f"unsupported pixel mode {mode!r}", "convert it to 8-bit RGB or grayscale")
    if rgb.ndim != 3 or rgb.shape[2] != 3:  # defensive: a Pillow conversion gave a surprise
        raise ImageInputError(name, f"unsupported pixel layout {rgb.shape} (mode {mode!r})", "convert it to 8-bit RGB")
    # np.asarray over a Pillow image can be a read-only view of its buffer: callers own
    # the result and may modify it in place, so hand out a writable C-contiguous array.
    if not rgb.flags.writeable or not rgb.flags.c_contiguous or rgb.dtype != np.uint8:
        rgb = np.array(rgb, dtype=np.uint8, order="C")
    return rgb


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, None], 3, axis=2)


def _scale_16bit(values: np.ndarray, name: str) -> np.ndarray:
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageInputError(
            name,
            f"integer pixel values {int(values.min())}..{int(values.max())} are outside the 16-bit range 0..65535",
            "convert it to 8- or 16-bit",
        )
    # Rounded scale: 0 -> 0, 257*k -> k, 65535 -> 255.
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(values: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ImageInputError(name, "float image contains NaN or infinity", "convert it to 8-bit")
    lo = float(values.min()) if values.size else 0.0
    hi = float(values.max()) if values.size else 0.0
    if lo < 0.0 or hi > 255.0:
        raise ImageInputError(
            name,
            f"float pixel values {lo:g}..{hi:g} are outside 0..1 and 0..255",
            "convert it to 8-bit",
        )
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


# --------------------------------------------------------------------------- encoding


def _validate_image_array(img: object) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {img.dtype}; convert it first")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"cannot encode an empty image of shape {img.shape}")
    return np.ascontiguousarray(img)


def encode_png(img: np.ndarray) -> bytes:
    """Encode a ``uint8`` image as PNG bytes.

    Args:
        img: ``(H, W)`` gray, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, ``uint8``.

    Raises:
        TypeError: ``img`` is not a numpy array.
        ValueError: wrong dtype, shape, or an empty image.
    """
    arr = _validate_image_array(img)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png_atomic(path: str | os.PathLike[str], img: np.ndarray) -> None:
    """Write ``img`` as a PNG at ``path`` atomically, creating parent folders.

    The image is encoded first, written to a temporary file in the same folder, flushed to
    disk and renamed over ``path``: readers see the old file or the complete new one, never
    a partial file, and a failure leaves no temporary file behind.

    Raises:
        TypeError, ValueError: ``img`` is not a valid image (see :func:`encode_png`);
            nothing is written.
        OSError: the folder cannot be created or written.
    """
    write_bytes_atomic(path, encode_png(img))


OUTPUT_FORMATS: dict[str, str] = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
"""Output formats :func:`encode_image` writes, with the file suffix each one gets."""

DEFAULT_QUALITY: dict[str, int] = {"jpeg": 92, "webp": 90}
"""Default ``quality`` of the lossy formats; the others take no quality."""

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}
_16BIT_FORMATS = frozenset({"png", "tiff"})


def output_layout(fmt: str, *, gray: bool, bits: int) -> tuple[bool, int]:
    """The ``(gray, bits)`` a format can really store for a wish: WebP has no one-channel
    mode (written as RGB) and JPEG/WebP have 8 bits only."""
    fmt = _check_format(fmt)
    return gray and fmt != "webp", bits if fmt in _16BIT_FORMATS else 8


def output_mode(*, gray: bool, bits: int) -> str:
    """Name of an output layout: ``L``, ``I;16``, ``RGB`` or ``RGB;16`` (16-bit colour)."""
    return ("I;16" if bits == 16 else "L") if gray else ("RGB;16" if bits == 16 else "RGB")


def to_luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of an RGB ``uint8`` image, rounded: ``(H, W)`` ``uint8``."""
    arr = rgb.astype(np.uint32)
    y = (299 * arr[..., 0] + 587 * arr[..., 1] + 114 * arr[..., 2] + 500) // 1000
    return y.astype(np.uint8)


def encode_image(
    img: np.ndarray,
    fmt: str = "png",
    *,
    quality: int | None = None,
    gray: bool = False,
    bits: int = 8,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
) -> bytes:
    """Encode an RGB (or gray) ``uint8`` image in ``fmt``, with the ICC profile and EXIF embedded.

    Args:
        img: ``(H, W, 3)`` RGB or ``(H, W)`` gray ``uint8`` (RGB is reduced to BT.601 luma
            when ``gray``).
        fmt: one of :data:`OUTPUT_FORMATS`.
        quality: 1..100 for ``jpeg``/``webp`` (default :data:`DEFAULT_QUALITY`); must be
            ``None`` for ``png``/``tiff``.
        gray: write one channel (``L``/``I;16``); WebP has none, so it stays RGB there.
        bits: 8, or 16 for ``png``/``tiff`` (values scaled ``x 257``: they carry 8 bits of
            precision); JPEG and WebP are always 8-bit.
        icc_profile, exif: embedded as given (``exif`` as from :class:`ImageMeta`).
            An ICC profile of the other colour space is left out; see :func:`metadata_written`.
            (16-bit RGB, which Pillow has no mode for, is written as an uncompressed TIFF by
            this module, or as a PNG by OpenCV with the iCCP/eXIf chunks added.)

    Raises:
        TypeError, ValueError: a bad image, format, quality or bit depth.
    """
    fmt = _check_format(fmt)
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if quality is not None:
        if fmt not in DEFAULT_QUALITY:
            raise ValueError(f"quality applies to jpeg and webp only, not {fmt}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer 1..100, got {quality!r}")
    gray, bits = output_layout(fmt, gray=gray, bits=bits)
    arr = _validate_image_array(img)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if gray and arr.ndim == 3:
        arr = to_luma(arr)
    elif not gray and arr.ndim == 2:
        arr = _gray_to_rgb(arr)
    arr = np.ascontiguousarray(arr)
    if not _icc_fits(icc_profile, gray=gray):
        icc_profile = None
    if bits == 16 and not gray:
        return _encode_rgb16(arr, fmt, icc_profile=icc_profile, exif=exif)
    im = Image.fromarray(arr.astype(np.uint16) * 257) if bits == 16 else Image.fromarray(arr)
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if exif:
        options["exif"] = exif
    if fmt in DEFAULT_QUALITY:
        options["quality"] = DEFAULT_QUALITY[fmt] if quality is None else quality
    if fmt == "tiff":
        options["compression"] = "tiff_lzw"
    buf = io.BytesIO()
    im.save(buf, format=_PIL_FORMATS[fmt], **options)
    return buf.getvalue()


def metadata_written(fmt: str, *, gray: bool, bits: int, icc_profile: bytes | None, exif: bytes | None) -> tuple[bool, bool]:
    """Whether :func:`encode_image` embeds ``(icc_profile, exif)`` for this output: both where
    given, except an ICC profile for the other colour space (an RGB profile on a gray output
    or a gray one on RGB is left out: it would be invalid)."""
    gray, bits = output_layout(fmt, gray=gray, bits=bits)
    return bool(icc_profile) and _icc_fits(icc_profile, gray=gray), bool(exif)


def _icc_fits(icc_profile: bytes | None, *, gray: bool) -> bool:
    space = bytes(icc_profile[16:20]) if icc_profile else b""
    if space == b"GRAY":
        return gray
    if space == b"RGB ":
        return not gray
    return True  # unknown: keep it


def save_image_atomic(path: str | os.PathLike[str], img: np.ndarray, fmt: str = "png", **options: object) -> None:
    """Encode ``img`` with :func:`encode_image` (same keyword options) and write it atomically
    (as :func:`save_png_atomic` does); nothing is written when encoding fails."""
    write_bytes_atomic(path, encode_image(img, fmt, **options))  # type: ignore[arg-type]


def _check_format(fmt: str) -> str:
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    return fmt


def _encode_rgb16(rgb: np.ndarray, fmt: str, *, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """16-bit RGB (Pillow has no such mode): a TIFF is built here, a PNG by OpenCV plus iCCP/eXIf chunks."""
    if fmt == "tiff":
        return _tiff_rgb16(rgb, icc_profile=icc_profile, exif=exif)
    import cv2

    bgr16 = np.ascontiguousarray(rgb[:, :, ::-1].astype(np.uint16) * 257)
    ok, enc = cv2.imencode(".png" if fmt == "png" else ".tif", bgr16)
    if not ok:
        raise ValueError(f"OpenCV could not encode a 16-bit {fmt} image of shape {rgb.shape}")
    data = enc.tobytes()
    if fmt != "png":
        return data
    chunks = b""
    if icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:ihdr_end] + chunks + data[ihdr_end:]


def _tiff_rgb16(rgb: np.ndarray, *, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """An uncompressed 16-bit RGB TIFF: the EXIF tags and ICC profile are the first IFD's tags
    (as Pillow writes them for 8-bit TIFFs), the layout tags are added, the pixels follow."""
    ifd = Image.Exif()
    if exif:
        ifd.load(exif)
    height, width = rgb.shape[:2]
    layout = {256: width, 257: height, 258: (16, 16, 16), 259: 1, 262: 2, 273: 0, 277: 3, 278: height, 279: rgb.size * 2, 284: 1}
    for tag, value in layout.items():
        ifd[tag] = value
    if icc_profile:
        ifd[34675] = icc_profile
    head = bytes(ifd.tobytes())[6:]  # drop "Exif\0\0": what is left is a TIFF file's start
    # Pillow writes StripOffsets relative to the end of what it wrote; check it points there.
    if _strip_offset(head) != len(head):
        ifd[273] = len(head)
        head = bytes(ifd.tobytes())[6:]
        if _strip_offset(head) != len(head):
            raise ValueError("cannot lay out a 16-bit RGB TIFF with this Pillow")
    order = ">" if head[:2] == b"MM" else "<"
    return head + (rgb.astype(np.uint16) * 257).astype(f"{order}u2").tobytes()


def _strip_offset(head: bytes) -> object:
    check = Image.Exif()
    check.load(b"Exif\x00\x00" + head)
    return check.get(273)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


# --------------------------------------------------------------------------- discovery


def collect_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    exclude: Iterable[str | os.PathLike[str]] = (),
    rename_collisions: bool = False,
) -> list[tuple[Path, Path]]:
    """Expand files and folders into ``(image file, relative output path)`` pairs.

    * A file gives ``(file, Path(file.name))``; its suffix must be in
      :data:`SUPPORTED_SUFFIXES` (case-insensitive).
    * A folder gives every supported image below it, recursively, sorted by relative path,
      each relative to that folder. Hidden files and everything in hidden folders (names
      starting with ``.``) are skipped; symbolic links to folders are not followed.
    * Folders in ``exclude`` (typically the output folder) are skipped when met below an input
      folder, so restoring ``photos`` into ``photos/restored`` never reads back its own outputs;
      each skip is logged once at info level. An excluded folder named as an input itself, and
      files named directly, are still used.
    * The same file reached twice with the same relative path is listed once.

    Two different files whose outputs would collide (same relative path once the suffix is
    dropped, compared case-insensitively, e.g. ``a/x.png`` and ``b/x.jpg``, or ``x.jpg`` and
    ``x.png`` in one folder) raise :class:`ImageInputError` by default. With
    ``rename_collisions`` they are all kept, named as :func:`resolve_collisions` says.

    Raises:
        ImageInputError: an input does not exist, is a file of an unsupported type, is a
            folder without images, or two inputs collide (unless ``rename_collisions``); also
            for an empty ``inputs``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if len(inputs) == 0:
        raise ImageInputError("<inputs>", "no input files or folders given", "name at least one")
    skip = _folder_ids(exclude)
    found: list[tuple[Path, Path]] = []
    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            pairs = _scan_folder(root, skip)
            if not pairs:
                raise ImageInputError(
                    root,
                    "folder contains no images",
                    f"add files ending in {', '.join(sorted(SUPPORTED_SUFFIXES))}",
                )
        elif root.is_file():
            if root.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ImageInputError(
                    root,
                    f"unsupported file type {root.suffix or '(no suffix)'!r}",
                    f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}",
                )
            pairs = [(root, Path(root.name))]
        elif root.exists():
            raise ImageInputError(root, "not a regular file or folder", "pass an image file or a folder")
        else:
            raise ImageInputError(root, "no such file or folder", "check the path")
        found.extend(pairs)
    return _unique_outputs(found, rename=rename_collisions)


def resolve_collisions(pairs: Iterable[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
    """Give every ``(file, rel)`` pair its own output, keeping the order; duplicates are dropped.

    Outputs collide when the relative paths are equal once the suffix is dropped, compared
    case-insensitively (``photo.png`` and ``photo.tiff`` both become ``photo.png``). The first
    pair keeps its ``rel``; each later one is renamed after its whole source name, in the same
    folder: ``rel`` becomes ``photo.tiff.png`` (so :func:`output_paths` writes
    ``photo.tiff.png`` and ``photo.tiff.trace.json``), or ``photo.tiff-2.png``, ``-3`` ...
    when that is taken too. A renamed pair is the one whose ``rel.name`` differs from its
    file's name. The same file met twice with the same ``rel`` is listed once.
    """
    return _unique_outputs(pairs, rename=True)


def _unique_outputs(pairs: Iterable[tuple[Path, Path]], *, rename: bool) -> list[tuple[Path, Path]]:
    """The pairs with duplicates dropped and colliding outputs renamed (``rename``) or refused."""
    out: list[tuple[Path, Path]] = []
    seen: dict[str, tuple[Path, Path]] = {}
    for file, rel in pairs:
        key = _output_key(rel)
        previous = seen.get(key)
        if previous is not None:
            if previous[1] == rel and _same_file(previous[0], file):
                continue
            if not rename:
                raise ImageInputError(
                    file,
                    f"its output {rel.with_suffix('.png').as_posix()!r} would overwrite the output of {str(previous[0])!r}",
                    "rename one of them or restore them in separate runs",
                )
            n = 1
            while True:
                name = f"{file.name}.png" if n == 1 else f"{file.name}-{n}.png"
                candidate = rel.with_name(name)
                key = _output_key(candidate)
                if key not in seen:
                    break
                n += 1
            log.info("imageio.output_renamed", input=str(file), output=candidate.as_posix(), taken_by=str(previous[0]))
            rel = candidate
        seen[key] = (file, rel)
        out.append((file, rel))
    return out


def _output_key(rel: Path) -> str:
    return rel.with_suffix("").as_posix().casefold()


def _folder_ids(folders: Iterable[str | os.PathLike[str]]) -> dict[tuple[int, int], Path]:
    ids: dict[tuple[int, int], Path] = {}
    for folder in folders:
        try:
            st = os.stat(folder)
        except OSError:  # not there (yet): nothing to skip
            continue
        ids[(st.st_dev, st.st_ino)] = Path(folder)
    return ids


def _scan_folder(root: Path, skip: dict[tuple[int, int], Path] | None = None) -> list[tuple[Path, Path]]:
    pairs: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        kept = sorted(d for d in dirnames if not d.startswith("."))
        if skip:
            kept = [d for d in kept if not _skipped(Path(dirpath) / d, skip, root)]
        dirnames[:] = kept
        for fname in filenames:
            if fname.startswith(".") or Path(fname).suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            file = Path(dirpath) / fname
            if file.is_file():
                pairs.append((file, file.relative_to(root)))
    pairs.sort(key=lambda pair: pair[1].as_posix())
    return pairs


def _skipped(folder: Path, skip: dict[tuple[int, int], Path], root: Path) -> bool:
    try:
        st = os.stat(folder, follow_symlinks=False)
    except OSError:
        return False
    excluded = skip.get((st.st_dev, st.st_ino))
    if excluded is None:
        return False
    log.info("imageio.output_folder_skipped", folder=str(folder), input=str(root), reason=f"it is the output folder {str(excluded)!r}")
    return True


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def prepare_output_folder(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` (and its parents) and prove it can be written: a probe file is created
    there and removed. Returns it as a :class:`~pathlib.Path`.

    For the start of a batch, so that an unusable output folder is found before any work is
    done rather than after it.

    Raises:
        OSError: the folder cannot be created, or a file cannot be created in it (a path
            through a regular file, a read-only folder or file system, no permission, a full disk).
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=path, prefix=".agentir-probe-", suffix=".tmp")
    try:
        os.write(fd, b"probe")
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe)
    return path


def output_paths(out_dir: str | os.PathLike[str], rel: Path, *, suffix: str = ".png") -> tuple[Path, Path]:
    """Where the restored image and its trace go for an input's relative path.

    ``output_paths("OUT", Path("a/b.jpg")) == (Path("OUT/a/b.png"), Path("OUT/a/b.trace.json"))``;
    a pair renamed by :func:`resolve_collisions`, ``Path("a/b.tiff.png")``, gives ``OUT/a/b.tiff.png``
    and ``OUT/a/b.tiff.trace.json``. ``suffix`` is the image's (see :data:`OUTPUT_FORMATS`):
    with ``".jpg"`` those are ``OUT/a/b.jpg`` and ``OUT/a/b.tiff.jpg``; traces do not change.
    Outputs stay distinct for any one suffix, since :func:`resolve_collisions` makes the
    suffix-less names distinct.

    Raises:
        ValueError: ``rel`` is absolute, empty, or climbs out of ``out_dir`` with ``..``, or
            ``suffix`` is not ``"."`` plus a name (``".json"`` is the traces').
    """
    if not suffix.startswith(".") or len(suffix) < 2 or "/" in suffix or suffix.lower() == ".json":
        raise ValueError(f"bad output suffix {suffix!r}")
    rel = Path(rel)
    if rel.is_absolute() or rel.anchor:
        raise ValueError(f"relative output path expected, got {str(rel)!r}")
    if ".." in rel.parts:
        raise ValueError(f"relative output path must not contain '..', got {str(rel)!r}")
    if not rel.name or rel.name == ".":
        raise ValueError(f"relative output path names no file: {str(rel)!r}")
    out = Path(out_dir)
    image = out / rel.with_suffix(suffix)
    trace = out / rel.parent / f"{rel.stem}.trace.json"
    return image, trace
