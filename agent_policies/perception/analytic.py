"""The built-in perception policy: analytic features + tiny fitted models, numpy/OpenCV only.

For each degradation, :mod:`agentir.agent_policies.perception.features` computes a few hand-made
measurements (noise sigma, block artefacts, luminance, dark channel, gradient fall-off and
anisotropy, streak energy, image size), and a small model fitted by
:mod:`agentir.agent_policies.perception.calibrate` on synthetic data from :mod:`agentir.toolbox.degrade` maps them
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

The fitted model is two files: ``analytic_calibration.json`` (metadata: feature groups and
names per degradation, heads, hidden units, presence offsets, seed, the command that made it,
held-out accuracy, and the name and SHA-256 of the weights file) and
``analytic_heads.safetensors`` (the arrays: per degradation ``<deg>.mean`` / ``<deg>.std``
feature standardisation and per head ``<deg>.k<k>.W1`` / ``.b1`` / ``.w2`` / ``.b2``, float64),
read with :func:`safetensors.numpy.load_file` (no pickle). Regenerate both with
``agentir train perception`` (:mod:`agentir.agent_policies.perception.calibrate`; see that module for the
held-out accuracy); a missing, corrupt or mismatched file raises :class:`CalibrationError`
naming the file and that command.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agentir.agent_policies.perception.features import GROUPS, compute_features, feature_names
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS, check_degradation

__all__ = [
    "AnalyticPerception",
    "CalibrationError",
    "Perception",
    "load_calibration",
    "predict_from_features",
    "write_calibration",
]

DEFAULT_CALIBRATION = Path(__file__).with_name("analytic_calibration.json")
#: File name of the MLP heads' arrays next to the calibration JSON (see the module docstring).
WEIGHTS_NAME = "analytic_heads.safetensors"
DEFAULT_WEIGHTS = DEFAULT_CALIBRATION.with_name(WEIGHTS_NAME)
#: The command that regenerates both files.
RETRAIN_COMMAND = "agentir train perception"
_FORMAT = "agentir-analytic-perception"
_VERSION = 2

# low_resolution: presence probability -> level (see the module docstring)
_LOWRES_CUTS = (0.3, 0.5, 0.7, 0.9)


class CalibrationError(ValueError):
    """The calibration JSON or its weights file is missing, corrupt or inconsistent.

    ``path`` names the bad file; the message says to regenerate both with ``agentir train perception``.
    """

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"perception calibration {path}: {reason}; retrain it with `{RETRAIN_COMMAND}` (writes {DEFAULT_CALIBRATION.name} and {WEIGHTS_NAME})")


@dataclass(frozen=True)
class Perception:
    """What perception says about one image.

    Attributes:
        levels: every degradation name in :data:`agentir.toolbox.vocab.DEGRADATIONS` -> one of
            :data:`agentir.toolbox.vocab.LEVELS`.
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


def write_calibration(json_path: str | Path, weights_path: str | Path, payload: dict, models: dict) -> None:
    """Write fitted ``models`` as ``weights_path`` (safetensors arrays) and ``json_path`` (metadata).

    ``models`` maps each degradation to ``{"groups", "features", "ks", "hidden", "presence_offset",
    "_mean", "_std", "_heads": [(W1, b1, w2, b2), ...]}`` (what
    :func:`agentir.agent_policies.perception.calibrate.fit_models` returns and :func:`load_calibration`
    reads back); ``payload`` holds the other JSON fields (seed, command, held-out accuracy ...).
    Each file is written atomically, the weights first; the JSON records the weights' SHA-256, so
    a crash between the two renames leaves a pair the loader refuses rather than mixes.
    """
    from safetensors.numpy import save

    json_path, weights_path = Path(json_path), Path(weights_path)
    tensors: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    for d, m in models.items():
        tensors[f"{d}.mean"] = np.asarray(m["_mean"], dtype=np.float64)
        tensors[f"{d}.std"] = np.asarray(m["_std"], dtype=np.float64)
        for k, (w1, b1, w2, b2) in zip(m["ks"], m["_heads"]):
            tensors[f"{d}.k{k}.W1"] = np.ascontiguousarray(w1, dtype=np.float64)
            tensors[f"{d}.k{k}.b1"] = np.asarray(b1, dtype=np.float64)
            tensors[f"{d}.k{k}.w2"] = np.asarray(w2, dtype=np.float64)
            tensors[f"{d}.k{k}.b2"] = np.array([b2], dtype=np.float64)
        meta[d] = {k: m[k] for k in ("groups", "features", "ks", "hidden", "presence_offset")}
    blob = save(tensors, metadata={"format": _FORMAT, "version": str(_VERSION)})
    same_dir = weights_path.resolve().parent == json_path.resolve().parent
    doc = {
        "version": _VERSION,
        **payload,
        "weights": {
            "file": weights_path.name if same_dir else str(weights_path.resolve()),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
        },
        "models": meta,
    }
    from agentir.bus.files import write_bytes_atomic  # the project's one atomic writer (fsync, rename)

    write_bytes_atomic(weights_path, blob)
    write_bytes_atomic(json_path, (json.dumps(doc, indent=1, default=float) + "\n").encode())


def load_calibration(path: str | Path) -> tuple[dict, dict]:
    """Read a calibration JSON and its safetensors weights; returns ``(json payload, models)``.

    ``models`` is in the in-memory form :func:`write_calibration` takes.

    Raises:
        CalibrationError: either file is missing, unreadable, corrupt, from another training or
            inconsistent; the message names the file and the command that regenerates it.
    """
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(path, "file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationError(path, f"cannot read it ({exc})") from None
    meta = payload.get("models") if isinstance(payload, dict) else None
    if not isinstance(meta, dict):
        raise CalibrationError(path, "no 'models' table")
    missing = [d for d in DEGRADATIONS if d not in meta]
    if missing:
        raise CalibrationError(path, f"no model for {', '.join(missing)}")
    w = payload.get("weights")
    if not isinstance(w, dict) or not isinstance(w.get("file"), str) or not isinstance(w.get("sha256"), str):
        raise CalibrationError(path, f"no 'weights' entry naming the {WEIGHTS_NAME} file (an old JSON with inline weights?)")
    wpath = Path(w["file"])
    if not wpath.is_absolute():
        wpath = path.parent / wpath
    try:
        blob = wpath.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(wpath, f"weights file not found (named by {path})") from None
    except OSError as exc:
        raise CalibrationError(wpath, f"cannot read the weights file ({exc})") from None
    try:
        arrays = load_file(str(wpath))
    except Exception as exc:  # safetensors raises its own SafetensorError and others on corrupt input
        raise CalibrationError(wpath, f"not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    if hashlib.sha256(blob).hexdigest() != w["sha256"]:
        raise CalibrationError(wpath, f"its SHA-256 does not match the one recorded in {path} (the two files come from different trainings)")
    models: dict[str, dict] = {}
    for d in DEGRADATIONS:
        m = meta[d]
        try:
            names, ks, hidden = list(m["features"]), [int(k) for k in m["ks"]], int(m["hidden"])
            groups = list(m["groups"])
            n = len(names)
            mean, std = arrays[f"{d}.mean"], arrays[f"{d}.std"]
            heads = []
            for k in ks:
                w1, b1 = arrays[f"{d}.k{k}.W1"], arrays[f"{d}.k{k}.b1"]
                w2, b2 = arrays[f"{d}.k{k}.w2"], arrays[f"{d}.k{k}.b2"]
                if w1.shape != (n, hidden) or b1.shape != (hidden,) or w2.shape != (hidden,) or b2.shape != (1,):
                    raise CalibrationError(wpath, f"model {d!r} head k={k} has shapes that do not fit {n} features x {hidden} hidden units")
                heads.append((w1.astype(np.float64), b1.astype(np.float64), w2.astype(np.float64), float(b2[0])))
        except KeyError as exc:
            raise CalibrationError(wpath, f"model {d!r} lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise CalibrationError(path, f"malformed model {d!r} ({exc!r})") from None
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            raise CalibrationError(path, f"model {d!r} reads feature groups this code does not have: {', '.join(map(str, unknown))}")
        extra = sorted(set(names) - set(feature_names(groups)))
        if extra:
            raise CalibrationError(path, f"model {d!r} needs features this code does not compute ({', '.join(extra[:4])}); the model is from another version")
        if mean.shape != (n,) or std.shape != (n,) or not heads:
            raise CalibrationError(wpath, f"model {d!r} has inconsistent sizes")
        if not all(np.isfinite(a).all() for a in (mean, std, *[h[0] for h in heads])):
            raise CalibrationError(wpath, f"model {d!r} has non-finite weights")
        models[d] = {
            "groups": groups,
            "features": names,
            "ks": ks,
            "hidden": hidden,
            "presence_offset": float(m.get("presence_offset", 0.0)),
            "_mean": mean.astype(np.float64),
            "_std": std.astype(np.float64),
            "_heads": heads,
        }
    return payload, models


def predict_from_features(models: dict, features: dict[str, float]) -> dict[str, tuple[int, float]]:
    """Apply fitted ``models`` (as :func:`load_calibration` returns them) to one image's features.

    Returns ``{degradation: (level index 0..4, score)}`` for every degradation whose model's
    features are all present in ``features``.
    """
    return {d: _predict_one(m, features) for d, m in models.items() if all(n in features for n in m["features"])}


def _check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        raise ValueError("images must be a sequence of H x W x 3 arrays, not one array; wrap a single image in a list")
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise ValueError(f"image {i}: expected a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise ValueError(f"image {i}: expected dtype uint8 (RGB 0..255), got {img.dtype}; convert with (np.clip(x, 0, 1) * 255).round().astype(np.uint8)")
        if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image {i}: expected a non-empty H x W x 3 RGB array, got shape {img.shape}")
        out.append(np.ascontiguousarray(img))
    return out


class AnalyticPerception:
    """Perception policy from analytic image features (no network, no GPU).

    Args:
        calibration: path of the calibration JSON; default the shipped
            ``analytic_calibration.json`` (its weights file, named inside it, is read too).

    Raises:
        CalibrationError: the JSON or its safetensors weights file is missing, unreadable,
            corrupt, from another training or lacks a model for a degradation.

    Cost: about 37-45 ms per 512 x 512 image for :meth:`perceive` (median, two shared CPU cores
    under load; ``agentir bench perception`` measures it); larger images cost about the same
    (texture features use a 512 x 512 centre crop, global ones a 256-pixel thumbnail).
    Thread-safe: instances are read-only after construction.
    """

    name = "analytic"

    def __init__(self, calibration: str | Path | None = None) -> None:
        path = Path(calibration) if calibration is not None else DEFAULT_CALIBRATION
        _payload, models = load_calibration(path)
        self.calibration_path = path
        self._models = models
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
