"""The built-in perception policy: analytic features + tiny fitted models, numpy/OpenCV only.

For each degradation, :mod:`agent_policies.perception.features` computes a few hand-made
measurements (noise sigma, block artefacts, luminance, dark channel, gradient fall-off and
anisotropy, streak energy, image size), and a small model fitted by
:mod:`agent_policies.perception.calibrate` on synthetic data from :mod:`toolbox.degrade` maps them
to the five severity levels. The model per degradation is four cumulative heads
``P(level >= k)`` for ``k = 1..4`` over standardised features of the groups it needs, each a
logistic output over 16 tanh hidden units (a tiny MLP stored as JSON); every head sees
every feature of those groups, so it learns to discount the other degradations (noise that is
really JPEG ringing, blur that is really a small image, ...). The probabilities are made monotone
(``P(>= k+1) <= P(>= k)``) and the level ``L`` is the number of heads above 0.5. The presence
head (``k = 2``, medium or worse) carries a logit offset chosen by cross-validation on the fit
images (``presence_offset`` in the JSON, already folded into its bias). The continuous
score is ``L + P(>= L+1) - (1 - P(>= L))``, which lies in ``(L - 0.5, L + 0.5]`` (clipped to
``0..4``), so a higher level always has a higher score, also across images, and within a level
the score says how close the image is to the next level up or down.

``low_resolution`` has a single presence head because every benchmark level is the same x4
downscale: its level is ``very_high`` / ``high`` / ``medium`` / ``low`` / ``very_low`` from the
presence probability (``>= 0.9 / 0.7 / 0.5 / 0.3``) and its score is ``4 * p``.

The shipped ``analytic_calibration.json`` holds the fitted weights; regenerate it with
``python -m agent_policies.perception.calibrate`` (see that module for the held-out accuracy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent_policies.perception.features import compute_features
from toolbox.vocab import DEGRADATIONS, LEVELS, check_degradation

__all__ = ["AnalyticPerception", "CalibrationError", "Perception", "predict_from_features"]

DEFAULT_CALIBRATION = Path(__file__).with_name("analytic_calibration.json")

# low_resolution: presence probability -> level (see the module docstring)
_LOWRES_CUTS = (0.3, 0.5, 0.7, 0.9)


class CalibrationError(ValueError):
    """The calibration file is missing or malformed. ``path`` names it; regenerate it with the calibrate script."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"perception calibration {path}: {reason}; regenerate it with "
            "`python -m agent_policies.perception.calibrate`"
        )


@dataclass(frozen=True)
class Perception:
    """What perception says about one image.

    Attributes:
        levels: every degradation name in :data:`toolbox.vocab.DEGRADATIONS` -> one of
            :data:`toolbox.vocab.LEVELS`.
        scores: the same names -> continuous severity, 0 (absent) .. 4 (very high), monotone
            with the level.
    """

    levels: dict[str, str]
    scores: dict[str, float]


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _predict_one(model: dict, features: dict[str, float]) -> tuple[int, float]:
    x = (np.array([features[n] for n in model["features"]]) - model["_mean"]) / model["_std"]
    probs = [_sigmoid(float(np.tanh(x @ w1 + b1) @ w2) + b2) for w1, b1, w2, b2 in model["_heads"]]
    if len(probs) == 1:  # presence-only model (low_resolution)
        p = probs[0]
        return sum(p >= c for c in _LOWRES_CUTS), 4.0 * p
    mono, cur = [1.0], 1.0  # mono[k] = P(level >= k), made non-increasing; P(>= 0) = 1
    for p in probs:
        cur = min(cur, p)
        mono.append(cur)
    mono.append(0.0)  # P(>= 5) = 0
    level = sum(p > 0.5 for p in mono[1:5])
    # level L scores in (L - 0.5, L + 0.5]: strictly monotone with the level across images
    score = level + mono[level + 1] - (1.0 - mono[level])
    return level, min(4.0, max(0.0, score))


def _prepare_models(models: dict) -> dict:
    """Attach numpy arrays to the JSON models (idempotent)."""
    for m in models.values():
        if "_mean" not in m:
            m["_mean"] = np.asarray(m["mean"], dtype=np.float64)
            m["_std"] = np.asarray(m["std"], dtype=np.float64)
            m["_heads"] = [
                (
                    np.asarray(h["W1"], dtype=np.float64),
                    np.asarray(h["b1"], dtype=np.float64),
                    np.asarray(h["w2"], dtype=np.float64),
                    float(h["b2"]),
                )
                for h in m["heads"]
            ]
    return models


def predict_from_features(models: dict, features: dict[str, float]) -> dict[str, tuple[int, float]]:
    """Apply fitted ``models`` (the JSON's ``"models"``) to one image's features.

    Returns ``{degradation: (level index 0..4, score)}`` for every degradation whose model's
    features are all present in ``features``.
    """
    _prepare_models(models)
    return {d: _predict_one(m, features) for d, m in models.items() if all(n in features for n in m["features"])}


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        raise ValueError(
            "images must be a sequence of H x W x 3 arrays, not one array; wrap a single image in a list"
        )
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise ValueError(f"image {i}: expected a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise ValueError(
                f"image {i}: expected dtype uint8 (RGB 0..255), got {img.dtype}; "
                "convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8)"
            )
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image {i}: expected a non-empty H x W x 3 RGB array, got shape {img.shape}")
        out.append(np.ascontiguousarray(img))
    return out


class AnalyticPerception:
    """Perception policy from analytic image features (no network, no GPU).

    Args:
        calibration: path of the calibration JSON; default the shipped
            ``analytic_calibration.json``.

    Raises:
        CalibrationError: the file is missing, unreadable or lacks a model for a degradation.

    Cost: about 35-40 ms per 512 x 512 image for :meth:`perceive` (median, two shared CPU cores
    under load; ``agentir bench perception`` measures it); larger images cost about the same
    (texture features use a 512 x 512 centre crop, global ones a 256-pixel thumbnail).
    Thread-safe: instances are read-only after construction.
    """

    name = "analytic"

    def __init__(self, calibration: str | Path | None = None) -> None:
        path = Path(calibration) if calibration is not None else DEFAULT_CALIBRATION
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(path, "file not found") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise CalibrationError(path, f"cannot read it ({exc})") from None
        models = payload.get("models") if isinstance(payload, dict) else None
        if not isinstance(models, dict):
            raise CalibrationError(path, "no 'models' table")
        missing = [d for d in DEGRADATIONS if d not in models]
        if missing:
            raise CalibrationError(path, f"no model for {', '.join(missing)}")
        try:
            for d in DEGRADATIONS:
                m = models[d]
                n = len(m["features"])
                if len(m["mean"]) != n or len(m["std"]) != n or any(len(h["W1"]) != n for h in m["heads"]):
                    raise CalibrationError(path, f"model {d!r} has inconsistent sizes")
        except (KeyError, TypeError) as exc:
            raise CalibrationError(path, f"malformed model ({exc!r})") from None
        self.calibration_path = path
        self._models = _prepare_models({d: models[d] for d in DEGRADATIONS})
        self._all_groups = tuple(dict.fromkeys(g for m in self._models.values() for g in m["groups"]))

    def perceive(self, images: Sequence[np.ndarray]) -> list[Perception]:
        """Rate every degradation on each image.

        Args:
            images: RGB ``uint8`` ``H x W x 3`` arrays of any size (1 x 1 included).

        Returns:
            One :class:`Perception` per image, in order; ``levels`` and ``scores`` name all eight
            degradations.

        Raises:
            ValueError: an image is not a non-empty ``uint8`` ``H x W x 3`` array.
        """
        out = []
        for img in _check_images(images):
            feats = compute_features(img, self._all_groups)
            pred = {d: _predict_one(self._models[d], feats) for d in DEGRADATIONS}
            out.append(
                Perception(
                    levels={d: LEVELS[pred[d][0]] for d in DEGRADATIONS},
                    scores={d: round(pred[d][1], 4) for d in DEGRADATIONS},
                )
            )
        return out

    def rate(self, images: Sequence[np.ndarray], degradation: str) -> list[tuple[str, float]]:
        """Rate one degradation on each image (computes only the features its model needs).

        Returns:
            ``(level, score)`` per image, equal to what :meth:`perceive` says for ``degradation``.

        Raises:
            ValueError: an unknown degradation, or a bad image as in :meth:`perceive`.
        """
        check_degradation(degradation)
        model = self._models[degradation]
        out = []
        for img in _check_images(images):
            feats = compute_features(img, model["groups"])
            level, score = _predict_one(model, feats)
            out.append((LEVELS[level], round(score, 4)))
        return out
