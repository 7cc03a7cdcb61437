"""The llm planner against a real chat-completions server on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from aiohttp import web
from explore_records import record
from loopback_chat import serving

from agentir.agent_policies.knowledge import Knowledge, distil
from agentir.agent_policies.planning import PlanContext
from agentir.agent_policies.planning.experience import ExperiencePlanner
from agentir.agent_policies.planning.llm import LLMAnswerError, LLMConfigError, LLMPlanner, parse_order
from agentir.toolbox.vocab import DEGRADATIONS


@dataclass
class Server:
    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    #: scripted replies (HTTP status, content); when empty the server answers the reverse alphabetical order
    script: list[tuple[int, str]] = field(default_factory=list)
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.hang:
            await self.release.wait()
        if self.script:
            status, content = self.script.pop(0)
            if status != 200:
                return web.Response(status=status, text="scripted failure")
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}]})
        prompt = body["messages"][-1]["content"]
        names = json.loads(prompt[prompt.index('{"order": ') + 10 : prompt.index("]}") + 1])
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": json.dumps({"order": sorted(names, reverse=True)})}}]})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serving(Server()) as srv:
        yield srv


def fallback() -> ExperiencePlanner:
    recs = [record(f"h{i}", "haze", "rain", psnr_ab=25.0, psnr_ba=22.0) for i in range(3)]
    return ExperiencePlanner(Knowledge.from_json(distil(recs, {})))


class Notes:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, kind: str, **data: Any) -> None:
        self.events.append({"type": kind, **data})


def ctx(notes: Notes) -> PlanContext:
    return PlanContext(levels=dict.fromkeys(DEGRADATIONS, "high"), scores={}, tools={d: ["t1", "t2"] for d in DEGRADATIONS}, note=notes)


def make(server: Server, **kw: Any) -> tuple[LLMPlanner, list[float]]:
    waits: list[float] = []
    kw.setdefault("retries", 1)
    return LLMPlanner(server.url, "test-llm", kw.pop("key", "sk-test"), fallback=fallback(), sleep=waits.append, **kw), waits


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    with anyio.fail_after(30):
        return await anyio.to_thread.run_sync(fn, *args)


async def test_the_model_orders_the_subtasks_with_the_knowledge_in_the_prompt(server: Server) -> None:
    planner, _ = make(server)
    notes = Notes()
    order = await run(planner.plan, ["haze", "noise", "rain"], ctx(notes))
    assert order == ["rain", "noise", "haze"]  # what the server answered
    assert notes.events == [{"type": "llm_plan", "order": order}]
    body = server.requests[0]
    assert body["model"] == "test-llm" and body["temperature"] == 0
    prompt = body["messages"][-1]["content"]
    assert "haze before rain" in prompt and "This image has: haze (high), noise (high), rain (high)." in prompt
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    # cached per set of subtasks: a second image with the same degradations asks nothing
    assert await run(planner.plan, ["rain", "haze", "noise"], ctx(Notes())) == order
    assert len(server.requests) == 1 and planner.stats["cache_hits"] == 1
    # one subtask needs no question at all
    assert await run(planner.plan, ["noise"], ctx(Notes())) == ["noise"]
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "bad",
    [
        "haze first, then rain",
        json.dumps({"order": ["haze"]}),
        json.dumps({"order": ["haze", "rain", "rain"]}),
        json.dumps({"order": ["haze", "fog"]}),
        json.dumps({"plan": ["haze", "rain"]}),
    ],
)
async def test_invalid_answers_are_retried_then_the_experience_planner_decides(server: Server, bad: str) -> None:
    server.script = [(200, bad), (200, bad)]
    planner, waits = make(server)
    notes = Notes()
    order = await run(planner.plan, ["rain", "haze"], ctx(notes))
    assert order == fallback().plan(["rain", "haze"], ctx(Notes())) == ["haze", "rain"]
    assert len(server.requests) == 2 and waits == [0.5]
    assert [e["type"] for e in notes.events] == ["llm_invalid", "llm_invalid", "llm_fallback"]
    assert planner.stats["fallbacks"] == 1
    # a fallback is not cached: the next job asks again (and now gets a valid answer)
    assert await run(planner.plan, ["rain", "haze"], ctx(Notes())) == ["rain", "haze"]


async def test_a_valid_answer_after_an_invalid_one_is_used(server: Server) -> None:
    server.script = [(200, "no idea"), (200, '```json\n{"order": ["Rain", "haze"]}\n```')]
    planner, _ = make(server)
    notes = Notes()
    assert await run(planner.plan, ["haze", "rain"], ctx(notes)) == ["rain", "haze"]
    assert [e["type"] for e in notes.events] == ["llm_invalid", "llm_plan"]


async def test_server_errors_are_retried_and_client_errors_are_not(server: Server) -> None:
    server.script = [(503, ""), (200, json.dumps({"order": ["rain", "haze"]}))]
    planner, waits = make(server)
    assert await run(planner.plan, ["haze", "rain"], ctx(Notes())) == ["rain", "haze"]
    assert waits == [0.5]
    server.script = [(401, "")]
    planner2, waits2 = make(server)
    notes = Notes()
    assert await run(planner2.plan, ["haze", "rain"], ctx(notes)) == ["haze", "rain"]  # the fallback's order
    assert waits2 == [] and notes.events[-1]["type"] == "llm_fallback" and "HTTP 401" in notes.events[-1]["reason"]


async def test_a_hanging_endpoint_times_out_and_falls_back(server: Server) -> None:
    server.hang = True
    planner, _ = make(server, timeout=0.3, retries=0)
    notes = Notes()
    assert await run(planner.plan, ["haze", "rain"], ctx(notes)) == ["haze", "rain"]
    assert notes.events[-1]["type"] == "llm_fallback"


async def test_an_unreachable_endpoint_falls_back() -> None:
    planner = LLMPlanner("http://127.0.0.1:9/v1", "m", fallback=fallback(), retries=0, timeout=2)
    notes = Notes()
    assert await run(planner.plan, ["haze", "rain"], ctx(notes)) == ["haze", "rain"]
    assert "cannot reach" in notes.events[-1]["reason"]


def test_configuration_errors_name_the_variable() -> None:
    """Missing or malformed endpoint settings (from AGENTIR_LLM_*, read by Settings.from_env) name the variable to set."""
    from agentir.agent_policies.registry import Policies
    from agentir.settings import Settings, SettingsError

    def build(env: dict[str, str]) -> LLMPlanner:
        planner = Policies(Settings.from_env(env).policies).planning("llm")
        assert isinstance(planner, LLMPlanner)
        return planner

    with pytest.raises(LLMConfigError, match="AGENTIR_LLM_URL"):
        build({})
    with pytest.raises(LLMConfigError, match="not an http"):
        build({"AGENTIR_LLM_URL": "ftp://x"})
    with pytest.raises(LLMConfigError, match="AGENTIR_LLM_MODEL"):
        build({"AGENTIR_LLM_URL": "http://127.0.0.1:1/v1"})
    with pytest.raises(SettingsError, match="AGENTIR_LLM_TIMEOUT"):
        build({"AGENTIR_LLM_URL": "http://127.0.0.1:1/v1", "AGENTIR_LLM_MODEL": "m", "AGENTIR_LLM_TIMEOUT": "soon"})
    p = build({"AGENTIR_LLM_URL": "http://127.0.0.1:1/v1", "AGENTIR_LLM_MODEL": "m", "AGENTIR_LLM_TIMEOUT": "5", "AGENTIR_LLM_KEY": "secret"})
    assert p.url == "http://127.0.0.1:1/v1/chat/completions" and p.timeout == 5.0 and "secret" not in repr(p)


def test_parse_order_is_strict() -> None:
    assert parse_order('["motion blur", "Low-Resolution"]', ["low_resolution", "motion_blur"]) == ["motion_blur", "low_resolution"]
    for bad in ("", "[1, 2]", '{"order": "rain"}', '["rain"]'):
        with pytest.raises(LLMAnswerError):
            parse_order(bad, ["rain", "haze"])
