"""A judge that sees harm: predict a step's PSNR gain from its input *and* its output.

The paper's reflection re-perceives the treated degradation on each output and accepts the
first one rated low enough. That cannot see harm: a dehazing tool run on a clean grey scene
makes the image "less hazy" and much worse. This judge looks at the pair. For a step that ran
tool ``t`` for subtask ``s`` on input ``x`` giving ``y`` it computes :func:`step_features`:

* its own measurements (:func:`descriptors`) of ``x`` and of ``y`` and their differences: noise
  sigma, JPEG blockiness, luminance, contrast, dark channel, saturation, gradient and
  high-frequency energy, size (independent of the perception policy, so refitting perception
  does not shift the judge's inputs);
* what changed (:func:`change_features`): PSNR of ``y`` against ``x``, the mean signed and
  absolute change, how much of the change sits on the input's edges (a denoiser that removes
  structure, not noise) and how noise-like the removed part is;
* the subtask and the tool (one-hot; tools unseen in training contribute nothing);

and a small MLP (:class:`JudgeModel`) maps them to the predicted gain in dB. It is trained by
:mod:`agentir.agent_policies.reflection.fit_judge` on tool outputs whose truth is known: every tool of
a subtask applied to synthetic degradations of the fit images, to images that have that
degradation and to images that do not (the harm case), scored against the clean image.

Files: ``judge.json`` (metadata: feature names, tools, layer sizes, the command that made it,
cross-validated accuracy, the SHA-256 of the weights) and ``judge.safetensors`` (the arrays),
next to this module. A missing, corrupt or mismatched file raises :class:`JudgeError` naming
the file and the command that rebuilds it; there is no silent fallback to another judge.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentir.toolbox.vocab import DEGRADATIONS

__all__ = [
    "DEFAULT_JUDGE",
    "JUDGE_VERSION",
    "REBUILD",
    "JudgeError",
    "JudgeModel",
    "change_features",
    "descriptors",
    "load_judge",
    "step_features",
]

DEFAULT_JUDGE = Path(__file__).with_name("judge.json")
JUDGE_WEIGHTS = "judge.safetensors"
#: Bumped when the features or the file layout change; files of another version are refused.
JUDGE_VERSION = 1
REBUILD = "agentir train judge"

#: What the judge measures on each image, the step's input and its output alike.
DESCRIPTOR_NAMES: tuple[str, ...] = ("noise_sigma", "blockiness", "lum", "contrast", "dark_channel", "saturation", "grad", "hf", "log_pixels")
#: What it measures on the pair.
CHANGE_NAMES: tuple[str, ...] = ("psnr_y_vs_x", "mean_change", "abs_change", "edge_share_of_change", "residual_sigma")


class JudgeError(ValueError):
    """The judge's files are missing, corrupt or from another version; names the file and the fix."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: {reason}; rebuild it with `{REBUILD}`")


def _grey(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32) / 255.0
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _grad(g: np.ndarray) -> np.ndarray:
    gx = np.abs(np.diff(g, axis=1))[:-1, :]
    gy = np.abs(np.diff(g, axis=0))[:, :-1]
    return gx + gy


def _mad_sigma(g: np.ndarray) -> float:
    """Noise sigma (grey levels in 0..1) from the finest diagonal Haar band (Donoho's MAD rule)."""
    h, w = (g.shape[0] // 2) * 2, (g.shape[1] // 2) * 2
    if h < 2 or w < 2:
        return 0.0
    a = g[:h:2, :w:2] - g[1:h:2, :w:2] - g[:h:2, 1:w:2] + g[1:h:2, 1:w:2]
    return float(np.median(np.abs(a / 2.0)) / 0.6745)


def _blockiness(g: np.ndarray) -> float:
    """Mean jump across 8x8 block boundaries over the mean jump elsewhere (1 = no blocks)."""
    dx = np.abs(np.diff(g, axis=1))
    if dx.shape[1] < 16:
        return 1.0
    cols = np.arange(dx.shape[1])
    on = dx[:, cols % 8 == 7].mean()
    off = dx[:, cols % 8 != 7].mean()
    return float((on + 1e-4) / (off + 1e-4))


def descriptors(img: np.ndarray) -> dict[str, float]:
    """The judge's own measurements of one uint8 RGB image (independent of the perception policy)."""
    g = _grey(img)
    f = img.astype(np.float32) / 255.0
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return {
        "noise_sigma": _mad_sigma(g),
        "blockiness": float(np.log(_blockiness(g))),
        "lum": float(g.mean()),
        "contrast": float(g.std()),
        "dark_channel": float(f.min(axis=2).mean()),
        "saturation": float((f.max(axis=2) - f.min(axis=2)).mean()),
        "grad": float(np.log(np.mean(_grad(g)) + 1e-4)),
        "hf": float(np.log(np.mean(np.abs(lap)) + 1e-4)),
        "log_pixels": float(np.log(img.shape[0] * img.shape[1])),
    }


def _match(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x`` at ``y``'s size (a super-resolution step's input, upscaled bicubic)."""
    if x.shape == y.shape:
        return x
    import cv2

    return np.asarray(cv2.resize(x, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_CUBIC))


def change_features(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """What a step changed, from its input ``x`` and output ``y`` (uint8 RGB; ``y`` may be 4x larger)."""
    x = _match(x, y)
    gx, gy = _grey(x), _grey(y)
    diff = gy - gx
    mse = float(np.mean((y.astype(np.float32) - x.astype(np.float32)) ** 2)) / 255.0**2
    grad_x = _grad(gx)
    edges = grad_x > np.quantile(grad_x, 0.8) if grad_x.size else np.zeros_like(grad_x, dtype=bool)
    absd = np.abs(diff[:-1, :-1])
    return {
        "psnr_y_vs_x": float(min(60.0, 10 * np.log10(1.0 / max(mse, 1e-10)))),
        "mean_change": float(np.mean(diff)),
        "abs_change": float(np.mean(np.abs(diff))),
        "edge_share_of_change": float(absd[edges].sum() / (absd.sum() + 1e-9)),
        "residual_sigma": _mad_sigma(diff + 0.5),
    }


def step_features(subtask: str, tool: str, x: np.ndarray, y: np.ndarray, tools: Sequence[str], desc_x: Mapping[str, float] | None = None) -> np.ndarray:
    """The judge's feature vector (see the module docstring); ``tools`` is the model's tool list.

    ``desc_x`` may pass the input's :func:`descriptors` when several outputs share one input.
    """
    dx = desc_x if desc_x is not None else descriptors(x)
    dy = descriptors(y)
    ch = change_features(x, y)
    v: list[float] = []
    v += [float(dx[n]) for n in DESCRIPTOR_NAMES]
    v += [float(dy[n]) for n in DESCRIPTOR_NAMES]
    v += [float(dy[n]) - float(dx[n]) for n in DESCRIPTOR_NAMES]
    v += [float(ch[n]) for n in CHANGE_NAMES]
    v += [1.0 if subtask == d else 0.0 for d in DEGRADATIONS]
    v += [1.0 if tool == t else 0.0 for t in tools]
    return np.asarray(v, dtype=np.float64)


def feature_names(tools: Sequence[str]) -> list[str]:
    return (
        [f"x.{n}" for n in DESCRIPTOR_NAMES]
        + [f"y.{n}" for n in DESCRIPTOR_NAMES]
        + [f"dy.{n}" for n in DESCRIPTOR_NAMES]
        + list(CHANGE_NAMES)
        + [f"subtask.{d}" for d in DEGRADATIONS]
        + [f"tool.{t}" for t in tools]
    )


@dataclass(frozen=True)
class JudgeModel:
    """An MLP over standardised features: ``tanh(z W1 + b1) W2 + b2 -> tanh(.) w3 + b3`` = gain (dB)."""

    tools: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    meta: Mapping[str, Any]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted gain in dB for each row of ``features`` (``N x F``)."""
        z = (np.atleast_2d(features) - self.mean) / self.std
        for i, (w, b) in enumerate(self.layers):
            z = z @ w + b
            if i < len(self.layers) - 1:
                z = np.tanh(z)
        return np.asarray(z[:, 0], dtype=np.float64)

    def predict_step(self, subtask: str, tool: str, x: np.ndarray, y: np.ndarray, desc_x: Mapping[str, float] | None = None) -> float:
        """Predicted gain (dB) of the step that turned ``x`` into ``y`` with ``tool`` for ``subtask``."""
        return float(self.predict(step_features(subtask, tool, x, y, self.tools, desc_x)[None])[0])


def save_judge(
    json_path: Path, meta: Mapping[str, Any], tools: Sequence[str], mean: np.ndarray, std: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]]
) -> None:
    """Write ``judge.json`` and its ``judge.safetensors`` (atomically, weights first)."""
    from safetensors.numpy import save

    from agentir.bus.files import write_bytes_atomic, write_text_atomic

    arrays = {"mean": np.asarray(mean, np.float64), "std": np.asarray(std, np.float64)}
    for i, (w, b) in enumerate(layers):
        arrays[f"l{i}.w"] = np.asarray(w, np.float64)
        arrays[f"l{i}.b"] = np.asarray(b, np.float64)
    blob = save(arrays)
    weights = json_path.with_name(JUDGE_WEIGHTS)
    write_bytes_atomic(weights, blob)
    doc = {
        "format": "agentir-judge",
        "version": JUDGE_VERSION,
        **meta,
        "tools": list(tools),
        "features": feature_names(tools),
        "layers": len(layers),
        "weights": {"file": weights.name, "sha256": hashlib.sha256(blob).hexdigest()},
    }
    write_text_atomic(json_path, json.dumps(doc, indent=1) + "\n")


_CACHE: dict[Path, JudgeModel] = {}


def load_judge(path: str | Path | None = None) -> JudgeModel:
    """Load (once per process) the judge at ``path`` (default: the shipped one).

    Raises:
        JudgeError: missing, unreadable, corrupt or other-version files, or weights that do not
            match the metadata.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    p = Path(path) if path is not None else DEFAULT_JUDGE
    key = p.resolve()
    if key in _CACHE:
        return _CACHE[key]
    if not p.is_file():
        raise JudgeError(p, "judge metadata not found")
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JudgeError(p, f"not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != "agentir-judge":
        raise JudgeError(p, "not an agentir judge file")
    if meta.get("version") != JUDGE_VERSION:
        raise JudgeError(p, f"judge version {meta.get('version')!r}, this code reads version {JUDGE_VERSION}")
    weights = p.with_name(str(meta.get("weights", {}).get("file", JUDGE_WEIGHTS)))
    if not weights.is_file():
        raise JudgeError(weights, "judge weights not found")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("weights", {}).get("sha256"):
        raise JudgeError(weights, f"weights do not match {p.name} (SHA-256 differs: corrupt, or from another fit)")
    try:
        arrays = load(blob)
    except (SafetensorError, ValueError) as exc:
        raise JudgeError(weights, f"not a safetensors file ({exc})") from None
    tools = tuple(str(t) for t in meta.get("tools", []))
    n_layers = int(meta.get("layers", 0))
    try:
        layers = tuple((arrays[f"l{i}.w"], arrays[f"l{i}.b"]) for i in range(n_layers))
        mean, std = arrays["mean"], arrays["std"]
    except KeyError as exc:
        raise JudgeError(weights, f"array {exc} missing") from None
    width = len(feature_names(tools))
    if mean.shape != (width,) or std.shape != (width,) or not layers or layers[0][0].shape[0] != width:
        raise JudgeError(weights, f"arrays do not fit {width} features")
    model = JudgeModel(tools=tools, mean=mean, std=np.where(std > 1e-9, std, 1.0), layers=layers, meta=meta)
    _CACHE[key] = model
    return model
