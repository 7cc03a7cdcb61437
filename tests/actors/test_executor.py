"""The Executor actor on a bus: steps in, StepExecuted out, cancellation, its scheduler and stats.

How calls are batched, tiled and isolated is tested on the scheduler alone in test_scheduler.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
import numpy as np
import pytest
from actor_helpers import BlackFails, Gate, registered_tools

from agentir.actors.executor import Executor
from agentir.actors.scheduler import DEFAULT_BATCH_WINDOW, DEFAULT_MAX_BATCH, DEFAULT_TILE, BatchScheduler, BatchStats
from agentir.bus.blobs import MemoryBlobStore
from agentir.bus.memory import InMemoryBus
from agentir.bus.messages import Candidate, ExecuteStep, JobCancel, JobFailed, StepExecuted, Subjects
from agentir.pipeline import RestoreError, Restorer
from agentir.toolbox.base import unregister_tool


@pytest.fixture
def tools():
    """Registers the test tools for one test and removes them again."""
    with registered_tools(BlackFails, Gate):
        yield


class Observed(Executor):
    """An Executor that signals when a job's units are queued (so tests wait on events, not time)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queued: dict[str, anyio.Event] = {}

    def event(self, job: str) -> anyio.Event:
        return self.queued.setdefault(job, anyio.Event())

    def on_queued(self, job: str, tool: str, units: int) -> None:
        self.event(job).set()

    def cancel(self, job: str) -> int:
        dropped = super().cancel(job)
        self.event(f"cancel:{job}").set()
        return dropped


@asynccontextmanager
async def running(**options):
    """An Executor on an in-memory bus; yields (executor, bus, blobs, subscription to reflect)."""
    async with InMemoryBus() as bus, anyio.create_task_group() as tg:
        blobs = MemoryBlobStore()
        executor = Observed(bus, blobs, **options)
        reflect = await bus.subscribe(Subjects.REFLECT, max_pending=256)
        await tg.start(executor.run)
        try:
            yield executor, bus, blobs, reflect
        finally:
            executor.stop()


async def step(bus, blobs, job: str, image: np.ndarray, tool: str) -> None:
    await bus.publish(Subjects.EXECUTE, ExecuteStep(job=job, node=0, subtask="noise", image=blobs.put(image), tools=[tool]), correlation_id=job)


async def collect(reflect, jobs: set[str]) -> dict[str, StepExecuted]:
    done: dict[str, StepExecuted] = {}
    async for delivery in reflect:
        done[delivery.message.job] = delivery.message
        if set(done) >= jobs:
            return done
    raise AssertionError("bus closed")


async def test_a_step_publishes_one_candidate_per_tool_in_the_steps_order(tools):
    """A step naming several tools yields one StepExecuted: a candidate per tool in order, errors as candidates, the step's fields passed on."""
    image = np.full((24, 32, 3), 40, np.uint8)
    prior = [Candidate(tool="earlier", error="x")]
    async with running(batch_window=0) as (_, bus, blobs, reflect):
        message = ExecuteStep(
            job="j",
            node=3,
            subtask="noise",
            image=blobs.put(image),
            tools=[BlackFails.name, "test_no_such_tool"],
            remaining=["blur"],
            prior=prior,
            reflection="none",
        )
        await bus.publish(Subjects.EXECUTE, message, correlation_id="j")
        with anyio.fail_after(20):
            out = (await collect(reflect, {"j"}))["j"]
    assert (out.node, out.subtask, out.remaining, out.prior, out.reflection) == (3, "noise", ["blur"], prior, "none")
    first, second = out.outputs
    assert first.tool == BlackFails.name and not first.error
    np.testing.assert_array_equal(blobs.get(first.image), 255 - image)
    assert second.tool == "test_no_such_tool" and "test_no_such_tool" in second.error and second.image is None


async def test_a_tiled_step_publishes_the_blended_full_size_image(tools):
    """A step on an image over the tile threshold comes back as one full-size candidate image, its tiles counted in stats()."""
    image = np.random.default_rng(0).integers(1, 255, (200, 200, 3), dtype=np.uint8)
    async with running(tile_threshold=150 * 150, tile=128, overlap=16) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "big", image, BlackFails.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"big"})
        stats = ex.stats()
    np.testing.assert_array_equal(blobs.get(out["big"].outputs[0].image), 255 - image)
    assert stats.tiled_requests == 1 and stats.tiles == 4


def test_executor_options_reach_its_public_scheduler():
    """The Executor's keyword options configure its public scheduler, whose defaults are the product's; bad ones raise ValueError."""
    ex = Executor(
        None, None, batch_window=0.01, max_batch=3, worker_threads=2, tile_threshold=1000, tile=128, overlap=16, max_batch_bytes=2**20, cpu_batch_bytes=2**19
    )
    s = ex.scheduler
    assert isinstance(s, BatchScheduler) and ex.worker_threads == 2
    assert (s.batch_window, s.max_batch, s.tile_threshold, s.tile, s.overlap, s.max_batch_bytes, s.cpu_batch_bytes) == (0.01, 3, 1000, 128, 16, 2**20, 2**19)
    default = Executor(None, None).scheduler
    assert (default.batch_window, default.max_batch, default.tile) == (DEFAULT_BATCH_WINDOW, DEFAULT_MAX_BATCH, DEFAULT_TILE)
    assert isinstance(ex.stats(), BatchStats) and ex.stats() == BatchStats()
    with pytest.raises(ValueError, match="max_batch"):
        Executor(None, None, max_batch=0)


async def test_cancel_drops_a_jobs_queued_units_and_publishes_nothing_for_it(tools):
    """Cancelling a job drops its queued tiles; the other job finishes, the cancelled one sends no result."""
    async with running(tile_threshold=50 * 50, tile=64, overlap=8, max_batch=1, batch_window=0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "keep", np.full((60, 60, 3), 50, np.uint8), Gate.name)
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(Gate.entered.wait)
            await step(bus, blobs, "drop", np.full((200, 200, 3), 90, np.uint8), Gate.name)
            await ex.event("drop").wait()
            assert ex.stats().queued_units == 16
            await bus.publish(Subjects.EXECUTE, JobCancel(job="drop"), correlation_id="drop")
            await ex.event("cancel:drop").wait()
            Gate.release.set()
            out = await collect(reflect, {"keep"})
            # A later step of the cancelled job is dropped at once; a probe job proves it was handled.
            await step(bus, blobs, "drop", np.full((60, 60, 3), 90, np.uint8), Gate.name)
            await step(bus, blobs, "probe", np.full((60, 60, 3), 70, np.uint8), Gate.name)
            out.update(await collect(reflect, {"probe"}))
        stats = ex.stats()
    assert set(out) == {"keep", "probe"}
    assert stats.dropped_units == 16 and stats.queued_units == 0
    assert all(90 not in batch for batch in Gate.seen)


async def test_restorer_cancel_stops_the_job_in_planner_and_executor(tools):
    """Restorer.cancel(job) makes restore() raise, drops the Planner's search and the Executor's queue."""
    image = np.full((96, 96, 3), 120, np.uint8)
    options = {"subtasks": ["noise"], "tools": {"noise": [Gate.name]}, "reflection": "none"}
    async with Restorer(executor_options={"batch_window": 0}) as restorer:
        errors: list[str] = []
        events = await restorer.bus.subscribe(Subjects.EVENTS, max_pending=256)

        async def restore() -> None:
            try:
                await restorer.restore(image, options=options, job="victim")
            except RestoreError as exc:
                errors.append(str(exc))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(restore)
                await anyio.to_thread.run_sync(Gate.entered.wait)
                assert await restorer.cancel("victim") is True
                Gate.release.set()
            async for delivery in events:  # the Planner reports the cancelled job once it dropped it
                if isinstance(delivery.message, JobFailed) and delivery.message.job == "victim":
                    assert "cancelled" in delivery.message.error
                    break
        planner = restorer._supervisor.actors["planner"]
        assert "victim" not in planner.searches
        assert restorer.stats()["jobs_in_flight"] == 0
    assert errors and "cancelled" in errors[0]


async def test_restorer_cancel_of_a_job_waiting_for_a_slot_never_starts_it(tools):
    """A job cancelled while it waits for a free slot fails at once instead of running later."""
    options = {"subtasks": ["noise"], "tools": {"noise": [Gate.name]}, "reflection": "none"}
    async with Restorer(max_inflight=1, executor_options={"batch_window": 0}) as restorer:
        outcome: dict[str, str] = {}

        async def restore(job: str) -> None:
            try:
                await restorer.restore(np.full((64, 64, 3), 120, np.uint8), options=options, job=job)
                outcome[job] = "finished"
            except RestoreError as exc:
                outcome[job] = str(exc)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(restore, "first")
                await anyio.to_thread.run_sync(Gate.entered.wait)
                tg.start_soon(restore, "queued")
                await anyio.wait_all_tasks_blocked()
                assert await restorer.cancel("queued") is False
                Gate.release.set()
    assert outcome["first"] == "finished" and "before it started" in outcome["queued"]


async def test_one_jobs_bad_whole_image_does_not_fail_the_other_in_the_batch(tools):
    """Two small images batched together: the black one's step carries the error, the other's the output."""
    async with running(max_batch=2, batch_window=5.0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "a", np.zeros((40, 50, 3), np.uint8), BlackFails.name)
        await step(bus, blobs, "b", np.full((40, 50, 3), 100, np.uint8), BlackFails.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"a", "b"})
    assert "all-black" in out["a"].outputs[0].error
    assert not out["b"].outputs[0].error and int(blobs.get(out["b"].outputs[0].image)[0, 0, 0]) == 155
    assert ex.stats().recent_batch_sizes == (2,)


def test_throughput_benchmark_prints_one_json_object_with_the_ratio(capsys):
    """`agentir bench throughput --compare --json` runs both modes and prints rates, latencies and the ratio."""
    import json

    from agentir.bench.throughput import main_bench_throughput

    try:
        code = main_bench_throughput(["--jobs", "3", "--size", "48x40", "--tool", "bench_cnn", "--compare", "--json"])
    finally:
        unregister_tool("bench_cnn")  # the benchmark registers its CNN; other tests must not see it
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["ratio_images_per_s"] > 0
    for mode in ("unbatched", "batched"):
        r = out[mode]
        assert r["images_per_s"] > 0 and r["latency_p95_s"] >= r["latency_p50_s"] > 0 and not r["failures"]
        assert r["device"] in ("cpu", "cuda") and r["size"] == "48x40"
    assert out["unbatched"]["mean_batch_size"] == 1.0
    assert out["batched"]["batch_window_ms"] == DEFAULT_BATCH_WINDOW * 1000  # the product's window, not a benchmark's own
