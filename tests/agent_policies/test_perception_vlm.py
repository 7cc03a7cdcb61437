"""Tests for the vision-language perception backend against a real OpenAI-style HTTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import cv2
import numpy as np
import pytest
from aiohttp import web
from loopback_chat import serving
from structlog.testing import capture_logs

from agentir.agent_policies.perception import AnalyticPerception, PerceptionPolicy
from agentir.agent_policies.perception.vlm import (
    HUMAN_NAMES,
    VLMAnswerError,
    VLMConfigError,
    VLMPerception,
    parse_joint_answer,
    parse_level_answer,
)
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS

ANALYTIC = AnalyticPerception()


def scene(seed: int, size: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A small textured RGB test image."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (*size, 3)).astype(np.float32), (0, 0), 3.0)
    img = (img - img.min()) / (np.ptp(img) + 1e-6) * 200 + 20
    for _ in range(6):
        c = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.circle(img, (int(rng.integers(0, size[1])), int(rng.integers(0, size[0]))), int(rng.integers(5, 30)), c, -1)
    return np.clip(img, 0, 255).astype(np.uint8)


@dataclass
class Server:
    """A chat-completions endpoint: by default it answers by running the analytic policy on the image it got."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: scripted replies, used first: (HTTP status, message content or raw body); None = answer honestly
    script: list[tuple[int, str | None]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    hang: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.hang:
            await self.release.wait()  # until the test ends: the client's timeout must fire first
        if self.script:
            status, content = self.script.pop(0)
            if status != 200:
                return web.Response(status=status, text="scripted failure")
            if content is not None and content.startswith("RAW:"):
                return web.Response(status=200, text=content[4:], content_type="application/json")
            if content is not None:
                return web.json_response(chat(content))
        return web.json_response(chat(honest_answer(body)))


def chat(content: str) -> dict[str, Any]:
    """A minimal chat-completions response carrying ``content``."""
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def decode_image(body: dict[str, Any]) -> np.ndarray:
    """The RGB image inside a request's data URL."""
    parts = body["messages"][-1]["content"]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    assert url.startswith("data:image/png;base64,")
    buf = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def question(body: dict[str, Any]) -> str:
    """The text question inside a request."""
    return next(p["text"] for p in body["messages"][-1]["content"] if p["type"] == "text")


def honest_answer(body: dict[str, Any]) -> str:
    """What a perfect VLM would say: the analytic levels of the decoded image, in the asked format."""
    [p] = ANALYTIC.perceive([decode_image(body)])
    q = question(body)
    if "JSON object" in q:
        return json.dumps({d: lv.replace("_", " ") for d, lv in p.levels.items()})
    d = next(d for d, h in HUMAN_NAMES.items() if f"the {h} in" in q)
    return p.levels[d].replace("_", " ").capitalize() + "."


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """The endpoint on an ephemeral loopback port."""
    async with serving(Server()) as srv:
        yield srv


def make(server: Server, **kw: Any) -> tuple[VLMPerception, list[float]]:
    """A policy for ``server`` whose retry waits are recorded instead of slept."""
    waits: list[float] = []
    kw.setdefault("retries", 1)
    policy = VLMPerception(server.url, "test-vlm", kw.pop("key", "sk-test"), fallback=ANALYTIC, sleep=waits.append, **kw)
    return policy, waits


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking policy call in a worker thread (the event loop keeps serving HTTP)."""
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(fn, *args)


# ------------------------------------------------------------------------------------ happy paths


async def test_joint_mode_asks_once_per_image_and_returns_the_answer(server: Server) -> None:
    """Joint mode sends one request per image (model, bearer key, PNG data URL) and returns the VLM's levels."""
    policy, _ = make(server)
    imgs = [scene(1), scene(2, (40, 200))]
    out = await run(policy.perceive, imgs)
    assert len(server.requests) == 2
    assert all(r["model"] == "test-vlm" for r in server.requests)
    assert all(h.get("Authorization") == "Bearer sk-test" for h in server.headers)
    expected = ANALYTIC.perceive(imgs)
    for got, want in zip(out, expected):
        assert got.levels == want.levels
        assert got.scores == {d: float(LEVELS.index(lv)) for d, lv in want.levels.items()}
    assert policy.stats["fallbacks"] == 0
    assert isinstance(policy, PerceptionPolicy)


async def test_per_degradation_mode_asks_eight_questions_and_rate_asks_one(server: Server) -> None:
    """Per-degradation mode asks the paper's one question per degradation; rate asks only the one needed."""
    policy, _ = make(server, mode="per_degradation")
    img = scene(3)
    [p] = await run(policy.perceive, [img])
    assert len(server.requests) == len(DEGRADATIONS)
    assert p.levels == ANALYTIC.perceive([img])[0].levels
    server.requests.clear()
    [(level, score)] = await run(policy.rate, [img], "motion_blur")
    assert len(server.requests) == 1 and "motion blur" in question(server.requests[0])
    assert level == p.levels["motion_blur"] and score == float(LEVELS.index(level))


async def test_env_configuration_and_base_url(server: Server) -> None:
    """URL, model and key come from AGENTIR_VLM_* (via Settings.from_env); a base URL gets /chat/completions appended; no key, no header."""
    from agentir.settings import Settings

    settings = Settings.from_env({"AGENTIR_VLM_URL": server.url, "AGENTIR_VLM_MODEL": "env-model"})
    policy = VLMPerception.from_settings(settings.policies)
    assert policy.url == server.url + "/chat/completions"
    await run(policy.rate, [scene(4)], "noise")
    assert server.requests[0]["model"] == "env-model"
    assert "Authorization" not in server.headers[0]
    assert "sk-" not in repr(policy)


# ------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    "content",
    [
        "The image looks noisy.",  # prose
        json.dumps(dict.fromkeys(DEGRADATIONS[:-1], "low")),  # one degradation missing
        json.dumps({**dict.fromkeys(DEGRADATIONS, "low"), "blur": "low"}),  # unknown key
        json.dumps({**dict.fromkeys(DEGRADATIONS, "low"), "noise": "severe"}),  # not a level word
        json.dumps({**dict.fromkeys(DEGRADATIONS, "low"), "noise": 3}),  # a number
        'RAW:{"choices": []}',  # not a chat completion
        "RAW:not json at all",
    ],
)
async def test_invalid_answers_are_retried_then_fall_back(server: Server, content: str) -> None:
    """An invalid answer is retried, and after the last retry that image is rated by the analytic policy (logged)."""
    policy, waits = make(server, retries=1)
    server.script = [(200, content), (200, content)]
    img = scene(5)
    with capture_logs() as logs:
        [p] = await run(policy.perceive, [img])
    assert len(server.requests) == 2 and waits == [0.5]
    assert p == ANALYTIC.perceive([img])[0]  # analytic levels *and* scores
    assert policy.stats["fallbacks"] == 1 and policy.stats["invalid_answers"] == 2
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["perception.vlm.fallback"]


async def test_server_errors_are_retried_with_backoff(server: Server) -> None:
    """HTTP 500 and 429 are retried with doubling waits; the third answer is used."""
    policy, waits = make(server, retries=2, backoff=0.25)
    server.script = [(500, None), (429, None)]
    img = scene(6)
    [p] = await run(policy.perceive, [img])
    assert len(server.requests) == 3 and waits == [0.25, 0.5]
    assert p.levels == ANALYTIC.perceive([img])[0].levels and policy.stats["fallbacks"] == 0


async def test_client_errors_are_not_retried(server: Server) -> None:
    """HTTP 401 is a configuration problem: no retry, immediate fallback."""
    policy, waits = make(server, retries=3)
    server.script = [(401, None)]
    with capture_logs() as logs:
        out = await run(policy.rate, [scene(7)], "haze")
    assert len(server.requests) == 1 and waits == []
    assert out == ANALYTIC.rate([scene(7)], "haze")
    assert any("HTTP 401" in e.get("reason", "") for e in logs)


async def test_timeout_falls_back(server: Server) -> None:
    """A server that never answers hits the request timeout and the image falls back."""
    server.hang = True
    policy, _ = make(server, retries=0, timeout=0.3)
    img = scene(8)
    [p] = await run(policy.perceive, [img])
    assert p == ANALYTIC.perceive([img])[0] and policy.stats["fallbacks"] == 1


async def test_unreachable_endpoint_falls_back_per_image() -> None:
    """A closed port is retried, then every image of the batch is rated by the fallback."""
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[float] = []
    policy = VLMPerception(f"http://127.0.0.1:{port}/v1", "m", fallback=ANALYTIC, retries=1, sleep=waits.append)
    imgs = [scene(9), scene(10)]
    out = await run(policy.perceive, imgs)
    assert out == ANALYTIC.perceive(imgs)
    assert policy.stats["fallbacks"] == 2 and policy.stats["requests"] == 4


# ------------------------------------------------------------------------------------ validation and config


def test_answers_are_normalised_strictly() -> None:
    """Case, spaces, hyphens and code fences are normalised; anything ambiguous is refused."""
    ans = {
        "Low Resolution": "Very Low",
        "noise": "very-high",
        "JPEG": "medium",
        "dark": "low",
        "haze": "HIGH",
        "motion blur": "very_low",
        "defocus_blur": "low",
        "rain": "very low",
    }
    levels = parse_joint_answer("```json\n" + json.dumps(ans) + "\n```")
    assert levels["low_resolution"] == "very_low" and levels["noise"] == "very_high" and levels["motion_blur"] == "very_low"
    assert list(levels) == list(DEGRADATIONS)
    assert parse_level_answer(" 'Very high'. ") == "very_high"
    assert parse_level_answer('{"level": "medium"}') == "medium"
    for bad in ("low or medium", "It is low.", "", '{"level": "medium", "why": "x"}', '["low"]'):
        with pytest.raises(VLMAnswerError):
            parse_level_answer(bad)
    with pytest.raises(VLMAnswerError, match="given twice"):
        parse_joint_answer(json.dumps({**dict.fromkeys(DEGRADATIONS, "low"), "Motion Blur": "low"}))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": None, "model": "m"}, "AGENTIR_VLM_URL"),
        ({"url": "127.0.0.1:8000", "model": "m"}, "http"),
        ({"url": "http://127.0.0.1:1/v1", "model": None}, "AGENTIR_VLM_MODEL"),
        ({"url": "http://127.0.0.1:1/v1", "model": "m", "mode": "both"}, "AGENTIR_VLM_MODE"),
        ({"url": "http://127.0.0.1:1/v1", "model": "m", "timeout": 0}, "timeout"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    """A missing or malformed setting raises VLMConfigError naming what to set."""
    with pytest.raises(VLMConfigError, match=re.escape(message)):
        VLMPerception(**kwargs)


def test_bad_images_and_names_raise_before_any_request() -> None:
    """Bad images and unknown degradations raise ValueError like the analytic policy, without HTTP."""
    policy = VLMPerception("http://127.0.0.1:1/v1", "m", fallback=ANALYTIC)
    with pytest.raises(ValueError, match="uint8"):
        policy.perceive([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError):
        policy.rate([scene(1)], "blurr")
    assert policy.stats["requests"] == 0
