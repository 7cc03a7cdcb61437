"""Perception policies: rate each degradation of an image on the five severity levels.

``PerceptionPolicy`` is the plug-in point the Perceiver and Reflector actors call;
``AnalyticPerception`` is the built-in, dependency-light implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from agentir.agent_policies.perception.analytic import AnalyticPerception, CalibrationError, Perception

__all__ = ["AnalyticPerception", "CalibrationError", "Perception", "PerceptionPolicy"]


@runtime_checkable
class PerceptionPolicy(Protocol):
    """Rates degradations of RGB ``uint8`` ``H x W x 3`` images (any size).

    Implementations raise ``ValueError`` for an image that is not a non-empty ``uint8``
    ``H x W x 3`` array, and for an unknown degradation name in :meth:`rate`.
    """

    name: str

    def perceive(self, images: Sequence[np.ndarray]) -> list[Perception]:
        """One :class:`Perception` (all eight degradations) per image, in order."""
        ...

    def rate(self, images: Sequence[np.ndarray], degradation: str) -> list[tuple[str, float]]:
        """``(level, score)`` of one degradation per image; what ``perceive`` would say for it."""
        ...
