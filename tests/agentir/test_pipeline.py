"""The whole loop through the actors: perceive, plan, execute, reflect, roll back, finish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agentir.imageio import load_image
from agentir.pipeline import Restorer
from agentir.toolbox.base import ToolError, ToolInfo, register_tool, unregister_tool
from agentir.toolbox.degrade import degrade
from agentir.toolbox.metrics import psnr

# The 256x192 demo crops: big enough not to read as low resolution (the 128 px test crops do,
# since the benchmark keeps x4-downscaled images small and perception uses size as a cue).
DATA = Path(__file__).resolve().parents[2] / "examples" / "clean"


class AlwaysFails:
    """A real tool whose every call fails, to exercise rollback (registered for tests only)."""

    name = "test_always_fails"
    degradation = "noise"
    scale = 1
    device = "cpu"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        raise ToolError(self.name, "this tool always fails")


@pytest.fixture
def failing_tool():
    """Registers AlwaysFails for one test and removes it again, so other tests never see it."""
    register_tool(ToolInfo(name="test_always_fails", degradation="noise", description="fails on purpose (tests)"), AlwaysFails)
    yield "test_always_fails"
    unregister_tool("test_always_fails")


def clean(name: str = "astronaut") -> np.ndarray:
    return load_image(DATA / f"{name}.png")


@pytest.fixture
def noisy() -> tuple[np.ndarray, np.ndarray]:
    ref = clean("coffee")
    lq, _ = degrade(ref, "noise", np.random.default_rng(3), level="high")
    return lq, ref


async def test_single_degradation_is_detected_planned_treated_and_psnr_rises(noisy):
    """A noisy shipped image: noise is perceived, denoising is planned and run, and PSNR goes up."""
    lq, ref = noisy
    async with Restorer() as restorer:
        result = await restorer.restore(lq)
    trace = result.trace
    assert trace["perception"]["noise"] in ("medium", "high", "very_high")
    assert "noise" in trace["plan"] and "noise" in trace["done"]
    assert trace["tool_calls"] >= 1 and any(s["subtask"] == "noise" for s in trace["steps"])
    assert result.image.shape == lq.shape
    assert psnr(result.image, ref) > psnr(lq, ref) + 1.0


async def test_a_speed_limit_keeps_slow_tools_out_of_the_job(noisy):
    """options max_tool_cost: no tool measured slower than the limit runs, and the job still restores."""
    from agentir.toolbox.costs import tool_cost

    lq, ref = noisy
    async with Restorer() as restorer:
        result = await restorer.restore(lq, options={"max_tool_cost": 5.0, "reflection": "threshold"})
    used = {s["tool"] for s in result.trace["steps"]}
    assert used and all((tool_cost(t) or 0.0) <= 5.0 for t in used), used
    assert psnr(result.image, ref) > psnr(lq, ref) + 1.0
    from agentir.agent_policies.options import OptionError

    async with Restorer() as restorer:  # a bad limit is refused before the job starts, naming the option
        with pytest.raises(OptionError, match="max_tool_cost"):
            await restorer.restore(lq, options={"max_tool_cost": -1})


async def test_failing_tool_causes_a_rollback_recorded_in_the_trace(noisy, failing_tool):
    """When every denoising tool fails, the search rolls back and the trace shows it; the job still ends."""
    lq, _ = noisy
    async with Restorer() as restorer:
        result = await restorer.restore(lq, options={"tools": {"noise": [failing_tool]}})
    trace = result.trace
    steps = [s for s in trace["steps"] if s["subtask"] == "noise"]
    assert steps and all("always fails" in s["error"] for s in steps)
    assert trace["rollbacks"] >= 1
    assert any(e["type"] == "rollback" and e["subtask"] == "noise" for e in trace["events"])
    assert trace["status"] in ("fallback", "success")


async def test_clean_image_is_returned_unchanged():
    """An image with nothing to fix costs no tool calls and comes back as it was."""
    ref = clean("coffee")
    async with Restorer() as restorer:
        result = await restorer.restore(ref)
    if result.trace["plan"]:
        pytest.fail(f"clean image perceived as degraded: {result.trace['perception']}")
    assert result.trace["tool_calls"] == 0
    np.testing.assert_array_equal(result.image, ref)


async def test_super_resolution_output_keeps_the_4x_size():
    """A low-resolution input comes back 4x larger once super-resolution ran."""
    ref = clean("coffee")
    lq, _ = degrade(ref, "low_resolution", np.random.default_rng(0), level="high")
    async with Restorer() as restorer:
        result = await restorer.restore(lq)
    assert "low_resolution" in result.trace["done"]
    assert result.image.shape == (lq.shape[0] * 4, lq.shape[1] * 4, 3)


async def test_perceive_request_reply_through_the_bus(noisy):
    """perceive() asks the Perceiver over the bus and gets all eight levels back."""
    lq, _ = noisy
    async with Restorer() as restorer:
        answer = await restorer.perceive(lq)
    assert len(answer.levels) == 8 and answer.levels["noise"] in ("medium", "high", "very_high")


async def test_concurrent_jobs_all_finish_and_share_batches(noisy):
    """Several jobs at once all finish; the Executor batches same-tool calls across them."""
    lq, _ = noisy
    images = [lq, lq[:, ::-1].copy(), lq[::-1].copy(), lq[::-1, ::-1].copy()]
    async with Restorer(max_inflight=4, executor_options={"batch_window": 0.05}) as restorer:
        import anyio

        results: list = [None] * len(images)

        async def one(i):
            results[i] = await restorer.restore(images[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(images)):
                tg.start_soon(one, i)
        batching = restorer.executor_stats()
    assert all(r is not None and "noise" in r.trace["done"] for r in results)
    assert batching is not None and max(batching.recent_batch_sizes) > 1


async def test_unknown_policy_fails_fast_with_close_matches():
    """A misspelt planning policy is refused before anything starts, suggesting the right name."""
    from agentir.toolbox.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="rules"):
        Restorer(policy="rule")


def test_an_unconfigured_policy_fails_when_the_restorer_is_built(monkeypatch):
    """The llm planner without an endpoint is refused up front, not once per job."""
    from agentir.agent_policies.planning.llm import LLMConfigError

    monkeypatch.delenv("AGENTIR_LLM_URL", raising=False)
    with pytest.raises(LLMConfigError, match="AGENTIR_LLM_URL"):
        Restorer(policy="llm")
