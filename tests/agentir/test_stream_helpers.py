"""Frames the stream tests make themselves (no tests here): short synthetic pans over the shipped test images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"


def pan(name: str, n: int, *, size: tuple[int, int] = (320, 240), step: int = 3, start: int = 0) -> list[np.ndarray]:
    """``n`` frames of a camera panning right over ``tests/data/clean/NAME.png`` (upscaled so
    that frames of ``size`` (width, height) do not read as low resolution)."""
    img = np.array(Image.open(DATA / f"{name}.png").convert("RGB"))
    big = cv2.resize(img, (480, 480), interpolation=cv2.INTER_CUBIC)
    w, h = size
    return [np.ascontiguousarray(big[60 : 60 + h, 10 + (start + i) * step : 10 + (start + i) * step + w]) for i in range(n)]


def darken(frames: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """The benchmark's ``dark`` at test-set parameters, drawn once and held over the frames."""
    from agentir.bench.stream import degrade_clip

    out, _ = degrade_clip(frames, ["dark"], seed)
    return out


def write_folder(folder: Path, frames: list[np.ndarray], *, prefix: str = "f") -> list[str]:
    """PNG files ``PREFIX_000.png``...; returns their stems."""
    folder.mkdir(parents=True, exist_ok=True)
    stems = []
    for i, f in enumerate(frames):
        stem = f"{prefix}_{i:03d}"
        cv2.imwrite(str(folder / f"{stem}.png"), np.ascontiguousarray(f[..., ::-1]))
        stems.append(stem)
    return stems


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """A lossless FFV1 .mkv of ``frames``."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened(), "this OpenCV cannot write FFV1"
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    return frames
