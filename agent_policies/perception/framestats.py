"""Cheap per-frame statistics for streams: :func:`agentir.kernels.image_stats` on a batch of frames.

A video stream cannot afford the full perception (about 66 features, tens of milliseconds) on
every frame. It looks at these nine fused statistics instead (luma and value mean / variance,
dark channel, saturation, gradients, 8x8 blockiness; see :data:`agentir.kernels.STATS_COLUMNS`) to tell
when a scene changed or its exposure drifted, and re-runs the full perception only then (and
every few frames). The statistics are computed where the frames are: a CUDA batch runs the
Triton kernel, a CPU one the torch reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from agentir.kernels import STATS_COLUMNS, image_stats, to_float_nchw

__all__ = ["STATS_COLUMNS", "frame_stats", "stats_change"]


def frame_stats(frames: Sequence[np.ndarray] | torch.Tensor) -> list[dict[str, float]]:
    """One ``{column: value}`` per frame (uint8 ``H x W x 3`` arrays of one size, or a float
    ``N x 3 x H x W`` tensor in [0, 1] on any device).

    Raises:
        ValueError: frames of different sizes or of the wrong layout.
    """
    if isinstance(frames, torch.Tensor):
        batch = frames
    else:
        if not frames:
            return []
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"frame_stats takes frames of one size, got {sorted(shapes)}")
        batch = to_float_nchw(torch.from_numpy(np.stack(frames)))
    rows = image_stats(batch).double().cpu().numpy()
    return [{name: float(v) for name, v in zip(STATS_COLUMNS, row)} for row in rows]


def stats_change(a: dict[str, float], b: dict[str, float]) -> float:
    """How different two frames' exposure looks: the largest change of luma mean, value mean or
    dark-channel mean (in [0, 1] units). A scene cut or a lighting change moves them by 0.1 or
    more; noise and small motion by well under 0.02."""
    return max(abs(a[k] - b[k]) for k in ("luma_mean", "value_mean", "dark_mean"))
