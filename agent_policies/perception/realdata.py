"""Real content for perception: the split of the camera clips and how frames are taken from them.

The clips are the ``../shared/data/video`` collection (Intel IoT Developer Kit sample videos,
CC BY 4.0): twenty 640 x 480 webcam clips ``asl_*.mkv`` and one 640 x 360 conveyor camera
``bottle-detection.mp4``, all H.264 at an ordinary bitrate. Their frames are *clean* for
perception (a user would not want a normal webcam frame "repaired"): every degradation absent.

**Split, by file name, fixed:** the ``asl_*`` clips sorted by name, the first
:data:`FIT_CLIPS` (``asl_again`` .. ``asl_night``) are *fit* clips (perception training may use
their frames); the last ten (``asl_no`` .. ``asl_yes``) and every other clip
(``bottle-detection``) are *held out* (reports only). With the clean photos' split
(:func:`agentir.toolbox.splits.split_images`: McMaster + Set5 + first half of CBSD68 fit, second half
held out) and ``../shared/data/real/RNI15`` (report-only, never fitted), that is all the real
content perception sees.

Frames: :func:`clip_frames` decodes a clip sequentially (seeking in these files is unreliable)
and keeps ``k`` evenly spaced frames of the decoded ones, optionally shifted by a fraction of
the spacing so fit frames and report frames of one clip differ.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["FIT_CLIPS", "VIDEO_SUFFIXES", "clip_frames", "split_clips"]

#: How many of the sorted ``asl_*`` clips are fit clips.
FIT_CLIPS = 10
VIDEO_SUFFIXES = (".mkv", ".mp4", ".avi", ".mov", ".webm")


def split_clips(video_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """``(fit, held_out)`` clip paths of a clip folder (see the module docstring).

    Raises:
        FileNotFoundError: the folder does not exist or holds no video files.
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"clip folder {root} not found; pass the folder with the camera clips (../shared/data/video)")
    clips = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {root}")
    asl = [p for p in clips if p.name.startswith("asl_")]
    fit = asl[:FIT_CLIPS]
    return fit, [p for p in clips if p not in fit]


def clip_frames(path: str | Path, k: int = 4, shift: float = 0.0) -> list[np.ndarray]:
    """``k`` evenly spaced RGB ``uint8`` frames of a clip.

    Frame ``i`` of ``k`` is decoded frame ``round((i + shift) * (n - 1) / (k - 1 + 2 * shift))`` of the
    ``n`` decodable frames (``shift = 0``: first and last frame included; ``shift = 0.5``: the
    frames half-way between those).

    Raises:
        FileNotFoundError: the clip cannot be opened or has no decodable frame.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        if not cap.isOpened():
            raise FileNotFoundError(f"cannot open clip {path}")
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    finally:
        cap.release()
    if not frames:
        raise FileNotFoundError(f"no decodable frame in clip {path}")
    n = len(frames)
    den = max(1e-9, k - 1 + 2 * shift)
    idx = sorted({min(n - 1, round((i + shift) * (n - 1) / den)) for i in range(k)}) if k > 1 else [round(shift * (n - 1))]
    return [np.ascontiguousarray(cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)) for i in idx]
