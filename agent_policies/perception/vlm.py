"""Perception by a vision-language model behind any OpenAI-compatible chat-completions endpoint.

:class:`VLMPerception` sends each image (a base64 PNG ``data:`` URL in an ``image_url`` content
part) to ``POST <url>`` and asks the AgenticIR paper's question, the severity of each degradation
on the five levels ``very low / low / medium / high / very high``. Two ways of asking:

* ``mode="joint"`` (default): **one request per image** asking for all eight degradations as one
  JSON object ``{"noise": "medium", ...}``. Eight times cheaper; what a general VLM (GPT-4o,
  Qwen2-VL, ...) answers reliably.
* ``mode="per_degradation"``: the paper's form, **one request per degradation** ("How severe is
  the motion blur in this image? ..."), answered by one level word; eight requests per image
  for :meth:`perceive`, one for :meth:`rate`.

Configuration: constructor arguments, or :meth:`VLMPerception.from_settings` (``PolicySettings.vlm``,
which the entry points fill from the environment): ``AGENTIR_VLM_URL`` (the endpoint:
a full ``.../chat/completions`` URL, or a base such as ``http://127.0.0.1:8000/v1`` to which
``/chat/completions`` is appended), ``AGENTIR_VLM_MODEL`` (the ``model`` field), ``AGENTIR_VLM_KEY``
(optional; sent as ``Authorization: Bearer``), ``AGENTIR_VLM_MODE`` (``joint`` /
``per_degradation``), ``AGENTIR_VLM_TIMEOUT`` (seconds per request, default 60).

Answer validation is strict: the reply must be a chat completion whose first choice's message
content (a string or text parts) is, in joint mode, one JSON object (a Markdown code fence around
it is allowed) with exactly the eight degradation names as keys (case, spaces and hyphens are
normalised: ``"Motion blur"`` -> ``motion_blur``) and a level word as every value (``"very low"``,
``"Very_Low"`` -> ``very_low``); in per-degradation mode a single level word (optionally quoted or
ending with a full stop) or ``{"level": word}``. Anything else is an invalid answer.

Failure semantics: a request that times out, cannot connect, gets HTTP 429 or 5xx, or returns an
invalid answer is retried up to ``retries`` times with exponential backoff (``backoff * 2**k``
seconds, at most 8 s; a numeric ``Retry-After`` header is honoured up to the same cap). Other
HTTP errors (400, 401, 404 ...: a configuration problem) are not retried. When an image still has
no valid answer, that image (all of it, in per-degradation mode too) is rated by the built-in
:class:`~agentir.agent_policies.perception.analytic.AnalyticPerception` instead, and the event
``perception.vlm.fallback`` is logged with the reason; :meth:`perceive` and :meth:`rate` never
raise for an endpoint problem. ``stats`` counts requests, retries, invalid answers and fallbacks.

Scores: a VLM gives levels only, so the score of a VLM-rated degradation is its level index
(0.0 ... 4.0), which is monotone with the level as the contract asks; fallback images carry the
analytic scores. Calls are synchronous (stdlib :mod:`urllib`, no new dependency) and block the
calling thread: call them from a worker thread, as the Perceiver and Reflector actors do. A batch
of images is sent ``concurrency`` requests at a time from a small thread pool. Images whose long
side exceeds ``max_side`` are shrunk (area interpolation) before sending.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import cv2
import numpy as np
import structlog

from agentir.agent_policies.chat import AnswerError, HTTPFailure, endpoint, message_content, post_json
from agentir.agent_policies.perception.analytic import AnalyticPerception, Perception, _check_images
from agentir.agent_policies.settings import PolicySettings
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS, check_degradation

__all__ = ["VLMAnswerError", "VLMConfigError", "VLMPerception", "parse_joint_answer", "parse_level_answer"]

log = structlog.get_logger(__name__)

MODES = ("joint", "per_degradation")
MAX_BACKOFF_S = 8.0

#: How each degradation is named in the questions (the paper's wording).
HUMAN_NAMES: dict[str, str] = {
    "low_resolution": "low resolution",
    "noise": "noise",
    "jpeg": "JPEG compression artifacts",
    "dark": "darkness (under-exposure)",
    "haze": "haze",
    "motion_blur": "motion blur",
    "defocus_blur": "defocus blur",
    "rain": "rain",
}
_LEVEL_WORDS = "very low, low, medium, high, very high"

SYSTEM_PROMPT = "You are an expert in image quality assessment. You rate image degradations precisely and answer in the exact format asked."
JOINT_QUESTION = (
    "For each of these degradations, how severe is it in this image: "
    + ", ".join(f"{HUMAN_NAMES[d]} ({d})" for d in DEGRADATIONS)
    + f"? Rate each on the scale {_LEVEL_WORDS} (very low means absent). "
    "Answer with one JSON object only, no other text, whose keys are exactly "
    + ", ".join(DEGRADATIONS)
    + ' and whose values are level words, e.g. {"noise": "medium", ...}.'
)
SINGLE_QUESTION = "How severe is the {what} in this image? Answer with exactly one of: " + _LEVEL_WORDS + " (very low means there is none)."


class VLMConfigError(ValueError):
    """The VLM backend is not configured (no endpoint URL or model, bad mode or numbers)."""


class VLMAnswerError(AnswerError):
    """A reply that is not a valid answer. ``answer`` holds (the start of) what came back."""

    what = "VLM answer"


# --------------------------------------------------------------------------------------------
# answer validation
# --------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().lower())


_LEVEL_OF = {lv: lv for lv in LEVELS} | {lv.replace("_", " "): lv for lv in LEVELS}


def _level_word(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return _LEVEL_OF.get(_norm(value))


def _strip_fence(text: str) -> str:
    t = text.strip()
    m = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", t, flags=re.S)
    return m.group(1) if m else t


def parse_joint_answer(text: str) -> dict[str, str]:
    """The eight levels from a joint answer (see the module docstring).

    Raises:
        VLMAnswerError: not one JSON object with exactly the eight names and level words.
    """
    try:
        obj = json.loads(_strip_fence(text))
    except json.JSONDecodeError:
        raise VLMAnswerError("not a JSON object", text) from None
    if not isinstance(obj, dict):
        raise VLMAnswerError("not a JSON object", text)
    out: dict[str, str] = {}
    for k, v in obj.items():
        name = _norm(str(k))
        if name not in DEGRADATIONS:
            raise VLMAnswerError(f"unknown degradation {k!r}", text)
        if name in out:
            raise VLMAnswerError(f"degradation {name!r} given twice", text)
        level = _level_word(v)
        if level is None:
            raise VLMAnswerError(f"{k!r} has no level word ({v!r})", text)
        out[name] = level
    missing = [d for d in DEGRADATIONS if d not in out]
    if missing:
        raise VLMAnswerError(f"missing {', '.join(missing)}", text)
    return {d: out[d] for d in DEGRADATIONS}


def parse_level_answer(text: str) -> str:
    """The level of a per-degradation answer: one level word, or ``{"level": word}``.

    Raises:
        VLMAnswerError: anything else.
    """
    t = _strip_fence(text)
    if t.startswith("{"):
        try:
            obj = json.loads(t)
        except json.JSONDecodeError:
            raise VLMAnswerError("broken JSON", text) from None
        level = _level_word(obj.get("level")) if isinstance(obj, dict) and len(obj) == 1 else None
    else:
        level = _level_word(t.strip().rstrip(".").strip().strip("\"'`").rstrip(".").strip())
    if level is None:
        raise VLMAnswerError(f"expected one of: {_LEVEL_WORDS}", text)
    return level


def _content(body: bytes) -> str:
    """The first choice's message text of a chat-completions response."""
    return message_content(body, VLMAnswerError)


# --------------------------------------------------------------------------------------------
# the policy
# --------------------------------------------------------------------------------------------


class VLMPerception:
    """Perception policy asking a vision-language model over HTTP (see the module docstring).

    Args:
        url: endpoint (``AGENTIR_VLM_URL``); a base URL gets ``/chat/completions`` appended.
        model: model name sent in each request (``AGENTIR_VLM_MODEL``).
        key: API key, sent as a bearer token when given (``AGENTIR_VLM_KEY``).
        mode: ``"joint"`` (one request per image) or ``"per_degradation"`` (``AGENTIR_VLM_MODE``).
        timeout: seconds per HTTP request (``AGENTIR_VLM_TIMEOUT``, default 60).
        retries: extra attempts per request after a retryable failure (default 2).
        backoff: first retry delay in seconds, doubled each time (default 0.5).
        concurrency: requests in flight at once for a batch (default 4).
        max_side: images with a longer side are shrunk before sending (default 2048).
        fallback: policy used when the VLM fails for an image; default a lazily built
            :class:`AnalyticPerception`.
        sleep: the function that waits between retries (tests pass a recorder).

    Raises:
        VLMConfigError: no URL or model, an unknown mode, or a non-positive timeout.

    Thread-safe: each call makes its own HTTP requests; ``stats`` updates hold a lock.
    """

    name = "vlm"

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        key: str | None = None,
        *,
        mode: str | None = None,
        timeout: float | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        concurrency: int = 4,
        max_side: int = 2048,
        fallback: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = url or ""
        model = model or ""
        if not url:
            raise VLMConfigError("no VLM endpoint: set AGENTIR_VLM_URL (e.g. http://127.0.0.1:8000/v1) or pass url=")
        if not url.startswith(("http://", "https://")):
            raise VLMConfigError(f"VLM endpoint {url!r} is not an http(s) URL; set AGENTIR_VLM_URL to e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise VLMConfigError("no VLM model name: set AGENTIR_VLM_MODEL (the endpoint's model id) or pass model=")
        mode = mode or "joint"
        if mode not in MODES:
            raise VLMConfigError(f"unknown VLM mode {mode!r}; use one of {', '.join(MODES)} (AGENTIR_VLM_MODE)")
        if timeout is None:
            timeout = 60.0
        if not timeout > 0 or retries < 0 or backoff < 0 or concurrency < 1 or max_side < 8:
            raise VLMConfigError("VLM timeout must be > 0, retries and backoff >= 0, concurrency >= 1 and max_side >= 8")
        self.url = endpoint(url)
        self.model = model
        self._key = key or None
        self.mode = mode
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self.max_side = int(max_side)
        self._fallback = fallback
        self._sleep = sleep
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "invalid_answers": 0, "fallbacks": 0}

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> VLMPerception:
        """The policy for ``settings.vlm`` (endpoint, model, key, mode, timeout)."""
        vlm = settings.vlm
        return cls(vlm.url, vlm.model, vlm.key, mode=vlm.mode, timeout=vlm.timeout)

    def __repr__(self) -> str:  # never shows the key
        return f"VLMPerception(url={self.url!r}, model={self.model!r}, mode={self.mode!r})"

    # ---------------------------------------------------------------- plumbing
    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    @property
    def fallback(self) -> Any:
        """The policy used for images the VLM could not rate (built on first use)."""
        with self._lock:
            if self._fallback is None:
                self._fallback = AnalyticPerception()
            return self._fallback

    def _data_url(self, img: np.ndarray) -> str:
        h, w = img.shape[:2]
        if max(h, w) > self.max_side:
            f = self.max_side / max(h, w)
            img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if not ok:  # pragma: no cover - OpenCV encodes any valid uint8 RGB image
            raise VLMAnswerError("could not encode the image as PNG")
        return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")

    def _post(self, payload: bytes) -> bytes:
        self._count("requests")
        return post_json(self.url, payload, key=self._key, timeout=self.timeout)

    def _ask(self, data_url: str, question: str, parse: Callable[[str], Any]) -> Any:
        """One question about one image, with retries; raises ``HTTPFailure`` / ``VLMAnswerError``."""
        payload = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "max_tokens": 300,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": [{"type": "text", "text": question}, {"type": "image_url", "image_url": {"url": data_url}}]},
                ],
            }
        ).encode("utf-8")
        attempt = 0
        while True:
            delay: float | None = None
            try:
                return parse(_content(self._post(payload)))
            except VLMAnswerError as exc:
                self._count("invalid_answers")
                if attempt >= self.retries:
                    raise
                log.info("perception.vlm.retry", attempt=attempt + 1, reason=exc.reason)
            except HTTPFailure as exc:
                if not exc.retry or attempt >= self.retries:
                    raise
                delay = exc.retry_after
                log.info("perception.vlm.retry", attempt=attempt + 1, reason=exc.reason)
            self._count("retries")
            wait = self.backoff * (2**attempt) if delay is None else delay
            self._sleep(min(MAX_BACKOFF_S, max(0.0, wait)))
            attempt += 1

    def _levels_of(self, img: np.ndarray, degradations: Sequence[str]) -> dict[str, str]:
        """VLM levels of ``degradations`` for one image; raises on failure."""
        data_url = self._data_url(img)
        if self.mode == "joint":
            levels: dict[str, str] = self._ask(data_url, JOINT_QUESTION, parse_joint_answer)
            return {d: levels[d] for d in degradations}
        return {d: self._ask(data_url, SINGLE_QUESTION.format(what=HUMAN_NAMES[d]), parse_level_answer) for d in degradations}

    def _map(self, fn: Callable[[int, np.ndarray], Any], imgs: list[np.ndarray]) -> list[Any]:
        if len(imgs) <= 1 or self.concurrency == 1:
            return [fn(i, im) for i, im in enumerate(imgs)]
        with ThreadPoolExecutor(min(self.concurrency, len(imgs)), thread_name_prefix="vlm") as ex:
            return list(ex.map(fn, range(len(imgs)), imgs))

    def _failed(self, index: int, img: np.ndarray, exc: Exception) -> None:
        self._count("fallbacks")
        log.warning(
            "perception.vlm.fallback",
            image=index,
            shape=list(img.shape),
            reason=str(exc),
            error=type(exc).__name__,
            url=self.url,
            model=self.model,
        )

    # ---------------------------------------------------------------- public API
    def perceive(self, images: Sequence[np.ndarray]) -> list[Perception]:
        """Rate every degradation on each image (VLM levels; analytic on failure).

        Raises:
            ValueError: an image is not a non-empty ``uint8`` ``H x W x 3`` array (never for an
                endpoint problem: those fall back per image).
        """
        imgs = _check_images(images)

        def one(i: int, img: np.ndarray) -> Perception:
            try:
                levels = self._levels_of(img, DEGRADATIONS)
            except (HTTPFailure, VLMAnswerError) as exc:
                self._failed(i, img, exc)
                return self.fallback.perceive([img])[0]
            return Perception(levels=levels, scores={d: float(LEVELS.index(lv)) for d, lv in levels.items()})

        return self._map(one, imgs)

    def rate(self, images: Sequence[np.ndarray], degradation: str) -> list[tuple[str, float]]:
        """``(level, score)`` of one degradation per image; one request per image in either mode.

        Raises:
            ValueError: an unknown degradation, or a bad image as in :meth:`perceive`.
        """
        check_degradation(degradation)
        imgs = _check_images(images)

        def one(i: int, img: np.ndarray) -> tuple[str, float]:
            try:
                level = self._levels_of(img, [degradation])[degradation]
            except (HTTPFailure, VLMAnswerError) as exc:
                self._failed(i, img, exc)
                return self.fallback.rate([img], degradation)[0]
            return level, float(LEVELS.index(level))

        return self._map(one, imgs)
