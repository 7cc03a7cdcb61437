"""Motion-adaptive temporal averaging of video frames (a stream's denoising stage).

Not a :class:`~agentir.toolbox.base.Tool`: it keeps state from frame to frame, so the agent never
calls it on still images; a stream runs it right after its denoising tool. Each pixel keeps a
running average of the frames since it last moved, up to ``max_frames`` of them:

* ``d`` = the largest, over the three channels, 5x5 box mean of ``|frame - average|``;
* the pixel moved when ``d > threshold * sigma / 5`` (``sigma``: the scene's noise level
  before denoising, in [0, 1] units; a 5x5 mean of pure noise has about a fifth of its
  spread), and its count restarts at 1 (the new frame as is: no ghosting);
* otherwise its count grows by one (capped) and ``average += (frame - average) / count``.

Static background thus averages up to ``max_frames`` frames (noise down by up to
``sqrt(max_frames)``, and no frame-to-frame flicker), moving parts stay as the spatial
denoiser left them. ``max_frames = 8`` and ``threshold = 3`` were chosen on clips that the
stream benchmark's README numbers do not use (``asl_book``, ``bottle-detection``), see
``agentir/stream``.

Two implementations: numpy/OpenCV (:meth:`TemporalDenoiser.step`, the reference) and torch
(:meth:`TemporalDenoiser.step_torch`, any device: the frames stay where they are); a test
checks that they agree.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agentir.toolbox.tools._common import estimate_noise_sigma

__all__ = ["TemporalDenoiser", "estimate_noise_sigma"]


class TemporalDenoiser:
    """Per-pixel running average since the pixel last moved (see the module docstring).

    Args:
        max_frames: most frames averaged (1 turns it off).
        threshold: motion threshold in units of ``sigma / 5``.

    Raises:
        ValueError: ``max_frames < 1`` or ``threshold <= 0``.
    """

    def __init__(self, *, max_frames: int = 8, threshold: float = 3.0) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold}")
        self.max_frames = int(max_frames)
        self.threshold = float(threshold)
        self._acc: np.ndarray | torch.Tensor | None = None
        self._count: np.ndarray | torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the average (a scene change, a new frame size)."""
        self._acc = None
        self._count = None

    @property
    def static_fraction(self) -> float:
        """Share of pixels averaged over more than one frame now (0 before the second frame)."""
        if self._count is None:
            return 0.0
        return float((self._count > 1).float().mean()) if isinstance(self._count, torch.Tensor) else float(np.mean(self._count > 1))

    def step(self, frame: np.ndarray, sigma: float) -> np.ndarray:
        """Blend float32 ``H x W x 3`` ``frame`` in [0, 1] into the average; returns the new average.

        The reference implementation. A frame of another size than the last one starts over.
        """
        x = np.asarray(frame, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 frame, got shape {x.shape}")
        acc = self._acc
        if not isinstance(acc, np.ndarray) or acc.shape != x.shape or self.max_frames == 1:
            self._acc = x.copy()
            self._count = np.ones(x.shape[:2], np.float32)
            return x.copy()
        count = self._count
        assert isinstance(count, np.ndarray)  # set together with _acc
        diff = cv2.subtract(x, acc)
        b = np.abs(cv2.blur(diff, (5, 5)))
        d = cv2.max(cv2.max(b[..., 0], b[..., 1]), b[..., 2])
        moving = d > np.float32(self.threshold * float(sigma) / 5.0)
        count = np.minimum(count + np.float32(1.0), np.float32(self.max_frames))
        count[moving] = 1.0
        inv = np.float32(1.0) / count
        acc = cv2.add(acc, cv2.multiply(diff, cv2.merge([inv, inv, inv])))
        self._acc, self._count = acc, count
        return acc.copy()

    def step_torch(self, frame: torch.Tensor, sigma: float) -> torch.Tensor:
        """As :meth:`step` on a float ``3 x H x W`` tensor on any device (the result stays there)."""
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"expected a 3 x H x W frame, got shape {tuple(frame.shape)}")
        x = frame.float()
        acc = self._acc
        if not isinstance(acc, torch.Tensor) or acc.shape != x.shape or acc.device != x.device or self.max_frames == 1:
            self._acc = x.clone()
            self._count = torch.ones(x.shape[1:], device=x.device)
            return x.clone()
        count = self._count
        assert isinstance(count, torch.Tensor)
        diff = x - acc
        # cv2.blur's default border is BORDER_REFLECT_101, torch's "reflect" padding.
        pad = F.pad(diff[None], (2, 2, 2, 2), mode="reflect") if min(x.shape[1:]) > 2 else F.pad(diff[None], (2, 2, 2, 2), mode="replicate")
        d = F.avg_pool2d(pad, 5, stride=1)[0].abs().amax(dim=0)
        moving = d > self.threshold * float(sigma) / 5.0
        count = torch.where(moving, torch.ones_like(count), torch.clamp(count + 1.0, max=float(self.max_frames)))
        acc = acc + diff / count[None]
        self._acc, self._count = acc, count
        return acc.clone()
