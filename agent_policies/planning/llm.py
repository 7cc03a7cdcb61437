"""The ``llm`` planner: a language model orders the subtasks, given the distilled knowledge as text.

Any OpenAI-compatible chat-completions endpoint. Configuration: constructor arguments, or
:meth:`LLMPlanner.from_settings` (``PolicySettings.llm``, which the entry points fill from
``AGENTIR_LLM_URL``: a base such as ``http://127.0.0.1:8000/v1`` or the full
``.../chat/completions``; ``AGENTIR_LLM_MODEL``; ``AGENTIR_LLM_KEY``, an optional bearer token;
``AGENTIR_LLM_TIMEOUT``, seconds per request, default 30). Building the planner without a URL
or model raises :class:`LLMConfigError` (so a job naming ``llm`` on an unconfigured machine is
refused up front with that message).

The prompt holds what ``agentir explore`` learned (:meth:`Knowledge.describe`: precedence
strengths, pairwise findings, tool success rates) and the job's degradations with their
severity, and asks for ``{"order": [...]}``. The answer must be one JSON object (a Markdown code
fence around it is allowed; a bare JSON list is accepted too) whose order is a permutation of
exactly the job's subtasks (names normalised: case, spaces, hyphens). An invalid answer, a
timeout, a connection error, HTTP 429 or 5xx is retried up to ``retries`` times with exponential
backoff; other HTTP errors are not retried. When no valid order comes back the ``experience``
planner decides instead; the trace records every answer that was rejected (``llm_invalid``), the
fallback (``llm_fallback``) or the accepted order (``llm_plan``). Valid orders are cached per set
of subtasks (an LRU of 1024), so a re-plan or a batch of similar images asks once. Tool order
and re-planning after a failure use the ``experience`` planner's knowledge.

Calls are synchronous (``blocking = True``): the Planner actor runs this policy in a worker
thread so the event loop keeps serving other jobs.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from agentir.agent_policies.chat import AnswerError, HTTPFailure, endpoint, message_content, post_json
from agentir.agent_policies.planning import BasePlanner, PlanContext
from agentir.agent_policies.settings import PolicySettings

log = structlog.get_logger(__name__)

__all__ = ["LLMAnswerError", "LLMConfigError", "LLMPlanner", "parse_order"]

MAX_BACKOFF_S = 8.0
CACHE_SIZE = 1024

SYSTEM_PROMPT = (
    "You are the planner of an image-restoration agent. An image suffers several degradations; "
    "each is removed by its own tool, one after another, and the order matters. Use the "
    "experience below, gathered by running every order on training images, to choose the order. "
    "Answer with one JSON object only, no prose."
)


class LLMConfigError(ValueError):
    """The LLM endpoint is not configured (no URL or model, bad numbers)."""


class LLMAnswerError(AnswerError):
    what = "LLM plan"


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def parse_order(text: str, subtasks: Sequence[str]) -> list[str]:
    """The order in an answer; raises :class:`LLMAnswerError` unless it is a permutation of ``subtasks``."""
    t = text.strip()
    fence = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", t, flags=re.S)
    if fence:
        t = fence.group(1)
    try:
        obj = json.loads(t)
    except json.JSONDecodeError:
        raise LLMAnswerError("not JSON", text) from None
    order = obj.get("order") if isinstance(obj, dict) else obj
    if not isinstance(order, list) or not all(isinstance(x, str) for x in order):
        raise LLMAnswerError('expected {"order": [names...]}', text)
    names = [_norm(x) for x in order]
    want = sorted(subtasks)
    if sorted(names) != want:
        raise LLMAnswerError(f"not a permutation of {', '.join(want)}", text)
    return names


class LLMPlanner(BasePlanner):
    """Orders subtasks by asking a language model (see the module docstring)."""

    name = "llm"
    blocking = True

    def __init__(
        self,
        url: str | None = None,
        model: str | None = None,
        key: str | None = None,
        *,
        timeout: float | None = None,
        retries: int = 2,
        backoff: float = 0.5,
        fallback: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = url or ""
        model = model or ""
        if not url:
            raise LLMConfigError(
                "the llm planner has no endpoint: set AGENTIR_LLM_URL (e.g. http://127.0.0.1:8000/v1) and AGENTIR_LLM_MODEL, or use --policy experience"
            )
        if not url.startswith(("http://", "https://")):
            raise LLMConfigError(f"LLM endpoint {url!r} is not an http(s) URL; set AGENTIR_LLM_URL to e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise LLMConfigError("no LLM model name: set AGENTIR_LLM_MODEL (the endpoint's model id)")
        if timeout is None:
            timeout = 30.0
        if not timeout > 0 or retries < 0 or backoff < 0:
            raise LLMConfigError("LLM timeout must be > 0, retries and backoff >= 0")
        self.url = endpoint(url)
        self.model = model
        self._key = key or None
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._sleep = sleep
        if fallback is None:
            from agentir.agent_policies.planning.experience import ExperiencePlanner

            fallback = ExperiencePlanner()
        self.fallback = fallback
        self._cache: OrderedDict[tuple[str, ...], list[str]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "invalid_answers": 0, "fallbacks": 0, "cache_hits": 0}

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> LLMPlanner:
        """The planner for ``settings.llm``, falling back to the experience planner those settings describe."""
        from agentir.agent_policies.planning.experience import ExperiencePlanner

        llm = settings.llm
        return cls(llm.url, llm.model, llm.key, timeout=llm.timeout, fallback=ExperiencePlanner.from_settings(settings))

    def __repr__(self) -> str:  # never shows the key
        return f"LLMPlanner(url={self.url!r}, model={self.model!r})"

    def info(self) -> dict[str, Any]:
        base = self.fallback.info() if hasattr(self.fallback, "info") else {}
        return {**base, "llm": {"url": self.url, "model": self.model}}

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def prompt(self, subtasks: Sequence[str], context: PlanContext) -> str:
        knowledge = getattr(self.fallback, "knowledge", None)
        lines = []
        if knowledge is not None:
            lines += ["Experience from self-exploration:", knowledge.describe(subtasks), ""]
        present = ", ".join(f"{d} ({str(context.levels.get(d, 'unknown')).replace('_', ' ')})" for d in subtasks)
        lines.append(f"This image has: {present}.")
        lines.append(
            'Give the order in which to remove them as {"order": ['
            + ", ".join(f'"{d}"' for d in sorted(subtasks))
            + "]} rearranged, first to run first, each name exactly once."
        )
        return "\n".join(lines)

    def _ask(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        payload = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "max_tokens": 200,
                "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": self.prompt(subtasks, context)}],
            }
        ).encode("utf-8")
        attempt = 0
        while True:
            delay: float | None = None
            try:
                self._count("requests")
                return parse_order(message_content(post_json(self.url, payload, key=self._key, timeout=self.timeout), LLMAnswerError), subtasks)
            except LLMAnswerError as exc:
                self._count("invalid_answers")
                if context.note is not None:
                    context.note("llm_invalid", attempt=attempt + 1, reason=exc.reason, answer=exc.answer)
                if attempt >= self.retries:
                    raise
            except HTTPFailure as exc:
                if not exc.retry or attempt >= self.retries:
                    raise
                delay = exc.retry_after
            self._count("retries")
            wait = self.backoff * (2**attempt) if delay is None else delay
            self._sleep(min(MAX_BACKOFF_S, max(0.0, wait)))
            attempt += 1

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        names = list(dict.fromkeys(subtasks))
        if len(names) <= 1:
            return names
        key = tuple(sorted(names))
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
        if cached is not None:
            self._count("cache_hits")
            return list(cached)
        try:
            order = self._ask(names, context)
        except (HTTPFailure, LLMAnswerError) as exc:
            self._count("fallbacks")
            reason = str(exc)
            log.warning("planning.llm.fallback", url=self.url, model=self.model, reason=reason)
            if context.note is not None:
                context.note("llm_fallback", reason=reason, planner="experience")
            return list(self.fallback.plan(names, context))
        if context.note is not None:
            context.note("llm_plan", order=order)
        with self._lock:
            self._cache[key] = order
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return list(order)

    def tool_order(self, subtask: str, context: PlanContext) -> list[str]:
        return list(self.fallback.tool_order(subtask, context))
