"""Stream sources (video files, folders of frames, V4L2 devices, RTSP/HTTP URLs) and sinks
(a video file, a folder of frames, none), all through OpenCV.

Sources yield :class:`~agentir.stream.engine.Frame` objects from a blocking iterator (the
runner reads them in a worker thread). A frame that cannot be decoded is a frame with
``error`` set (the stream goes on); a source that cannot be opened is one
:class:`~agentir.stream.engine.StreamError` naming it.

Sinks: ``.mkv`` is written lossless (FFV1), ``.avi`` FFV1 too, ``.mp4`` as MPEG-4 Part 2
(``mp4v``: this OpenCV build has no H.264 encoder); at the source's frame rate, to a temporary
file renamed when the stream ends. A folder gets one PNG per frame named after the input
frame's stem (``frame_000123.png`` for frames of a video).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from agentir.stream.engine import Frame, StreamError

__all__ = ["FolderSink", "NullSink", "Sink", "Source", "VideoSink", "open_sink", "open_source", "parse_size"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mkv", ".mp4", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
#: Consecutive failed reads after which a video source counts as ended.
_MAX_BAD_READS = 5
#: Seconds OpenCV may take to open or read a network stream.
_NET_TIMEOUT_MS = 5000


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)`` (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 8 or int(m.group(2)) < 8:
        raise StreamError(f"--size must be WIDTHxHEIGHT with both at least 8, e.g. 640x480, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _natural_key(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class Source:
    """Frames from somewhere; ``fps`` is the source's rate when known, ``live`` whether it runs on
    its own clock (a camera or a network stream) rather than as fast as it is read."""

    name: str = ""
    fps: float | None = None
    live: bool = False

    def frames(self) -> Iterator[Frame]:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file."""


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


class FolderSource(Source):
    """Image files of a folder in natural name order; each frame keeps its file stem."""

    def __init__(self, path: Path, *, fps: float | None, size: tuple[int, int] | None) -> None:
        self.path = path
        self.name = str(path)
        self.fps = fps or 30.0
        self.size = size
        self.files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: _natural_key(p.name))
        if not self.files:
            raise StreamError(f"folder {path} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")

    def frames(self) -> Iterator[Frame]:
        for i, p in enumerate(self.files):
            ts = i / float(self.fps or 30.0)
            try:
                data = np.fromfile(str(p), dtype=np.uint8)
                bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            except OSError as exc:
                bgr, err = None, f"{p}: cannot be read ({exc.strerror or exc})"
            else:
                err = f"{p}: not a decodable image" if bgr is None else ""
            if bgr is None:
                yield Frame(index=i, timestamp=ts, image=None, stem=p.stem, error=err)
                continue
            yield Frame(index=i, timestamp=ts, image=_resize(np.ascontiguousarray(bgr[..., ::-1]), self.size), stem=p.stem)


class CaptureSource(Source):
    """A video file, V4L2 device or network URL read with ``cv2.VideoCapture``."""

    def __init__(self, spec: str, cap: cv2.VideoCapture, *, fps: float | None, size: tuple[int, int] | None, live: bool) -> None:
        self.name = spec
        self.cap = cap
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps or (rate if 0 < rate < 1000 else 30.0)
        self.size = size
        self.live = live
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.count = int(count) if count and count > 0 and not live else None

    def frames(self) -> Iterator[Frame]:
        i = 0
        bad = 0
        stem_fmt = "frame_{:06d}"
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                bad += 1
                # A file whose frame count says more are left: an undecodable frame, skip it.
                if self.count is not None and i < self.count - 1 and bad < _MAX_BAD_READS:
                    yield Frame(
                        index=i,
                        timestamp=i / float(self.fps or 30.0),
                        image=None,
                        stem=stem_fmt.format(i),
                        error=f"{self.name}: frame {i} could not be decoded",
                    )
                    i += 1
                    continue
                return
            bad = 0
            pos = float(self.cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
            ts = pos if pos > 0 or i == 0 else i / float(self.fps or 30.0)
            if self.live:
                ts = time.monotonic()
            img = bgr if bgr.ndim == 3 else cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
            yield Frame(index=i, timestamp=ts, image=_resize(np.ascontiguousarray(img[..., ::-1]), self.size), stem=stem_fmt.format(i))
            i += 1

    def close(self) -> None:
        self.cap.release()


def open_source(spec: str, *, fps: float | None = None, size: tuple[int, int] | None = None) -> Source:
    """Open ``spec``: a folder of frames, a video file, ``/dev/videoN`` (or a bare device
    number) or an ``rtsp://`` / ``http(s)://`` URL.

    Raises:
        StreamError: it does not exist or cannot be opened (one line naming it).
    """
    if re.match(r"^(rtsp|rtsps|rtmp|http|https|udp|tcp)://", spec, re.I):
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, _NET_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, _NET_TIMEOUT_MS]
        cap = cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise StreamError(f"cannot open stream URL {spec}: unreachable, refused or not a video stream")
        return CaptureSource(spec, cap, fps=fps, size=size, live=True)
    if spec.isdigit() or spec.startswith("/dev/video"):
        device = f"/dev/video{spec}" if spec.isdigit() else spec
        if not os.path.exists(device):
            raise StreamError(f"no video device {device} (is the camera connected, and is it V4L2?)")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise StreamError(f"video device {device} cannot be opened (busy, or no permission)")
        return CaptureSource(device, cap, fps=fps, size=size, live=True)
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, fps=fps, size=size)
    if not path.exists():
        raise StreamError(f"no such file or folder: {spec}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise StreamError(f"{spec} is not a video file OpenCV can decode")
    return CaptureSource(str(path), cap, fps=fps, size=size, live=False)


class Sink:
    """Where restored frames go."""

    name: str = "none"

    def write(self, stem: str, image: np.ndarray | None) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Finish (a video file is renamed into place here)."""


class NullSink(Sink):
    """Statistics only."""

    def write(self, stem: str, image: np.ndarray | None) -> None:
        return None


class FolderSink(Sink):
    """One PNG per frame, named after the input frame's stem (written to a temporary name, then renamed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StreamError(f"cannot create output folder {path}: {exc.strerror or exc}") from None

    def write(self, stem: str, image: np.ndarray | None) -> None:
        if image is None:
            return
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
        if not ok:
            raise StreamError(f"cannot encode frame {stem} as PNG")
        target = self.path / f"{stem}.png"
        tmp = target.with_name(f".{target.name}.tmp")
        buf.tofile(str(tmp))
        os.replace(tmp, target)


class VideoSink(Sink):
    """A video file at ``fps`` (see the module docstring for codecs). Frames of another size than
    the first are resized to it (a video has one size); a missing frame repeats the last one,
    so the timing stays the source's."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.name = str(path)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        ext = path.suffix.lower()
        self.fourccs = {".mkv": ("FFV1",), ".avi": ("FFV1", "MJPG"), ".mp4": ("avc1", "mp4v"), ".mov": ("avc1", "mp4v")}.get(ext, ("mp4v",))
        self.tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.last: np.ndarray | None = None
        self.frames = 0
        if not path.parent.exists():
            raise StreamError(f"output folder {path.parent} does not exist")

    def _open(self, w: int, h: int) -> cv2.VideoWriter:
        for code in self.fourccs:
            fourcc = cv2.VideoWriter_fourcc(*code)  # type: ignore[attr-defined]  # present at run time, missing from the stubs
            writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (w, h))
            if writer.isOpened():
                return writer
            writer.release()
        raise StreamError(f"cannot write video {self.path}: none of the codecs {', '.join(self.fourccs)} is available")

    def write(self, stem: str, image: np.ndarray | None) -> None:
        if image is None:
            image = self.last
            if image is None:
                return
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])
            self.writer = self._open(*self.size)
        assert self.size is not None
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(image[..., ::-1]))
        self.last = image
        self.frames += 1

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)


def open_sink(spec: str | None, *, fps: float) -> Sink:
    """``None`` / ``"none"``: statistics only; a name with a video extension: a video file; else a folder."""
    if spec is None or spec.lower() in ("none", "null", ""):
        return NullSink()
    path = Path(spec)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoSink(path, fps)
    if path.exists() and not path.is_dir():
        raise StreamError(f"output {spec} exists and is not a folder; give a folder, a video file name (.mkv, .mp4, .avi) or none")
    return FolderSink(path)
