"""The Executor: batching across jobs, tiling with feathered blending, caps, fairness, cancellation."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import ClassVar

import anyio
import numpy as np
import pytest
import torch

from actors.executor import Executor, from_batch, to_batch, tool_device
from agentir.pipeline import RestoreError, Restorer
from bus.blobs import MemoryBlobStore
from bus.memory import InMemoryBus
from bus.messages import ExecuteStep, JobCancel, JobFailed, StepExecuted, Subjects
from kernels.tiles import tile_starts
from toolbox.base import TOOLS, ToolError, ToolInfo, register_tool, unregister_tool
from toolbox.metrics import psnr


class SeededConv:
    """A small learned-style tool: a 3-layer 3x3 conv net with fixed seeded weights (residual)."""

    name = "test_seeded_conv"
    degradation = "noise"
    scale = 1
    device = "cpu"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(7)
        self.weights = [torch.randn(o, i, 3, 3, generator=g) * 0.15 for i, o in ((3, 8), (8, 8), (8, 3))]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch
        for k, w in enumerate(self.weights):
            x = torch.nn.functional.conv2d(x, w, padding=1)
            if k < len(self.weights) - 1:
                x = torch.relu(x)
        return (batch + 0.2 * x).clamp(0.0, 1.0)


class BlackFails:
    """Inverts the image; fails on any image (or tile) that is entirely black, to model bad input."""

    name = "test_black_fails"
    degradation = "noise"
    scale = 1
    device = "cpu"
    batches: ClassVar[list[list[float]]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        BlackFails.batches.append([float(b.mean()) for b in batch])
        if any(float(b.max()) == 0.0 for b in batch):
            raise ToolError(self.name, "cannot restore an all-black image")
        return 1.0 - batch


class Gate:
    """Blocks every call until ``release`` is set; ``entered`` is set when a call is waiting."""

    name = "test_gate"
    degradation = "noise"
    scale = 1
    device = "cpu"
    entered = threading.Event()
    release = threading.Event()
    seen: ClassVar[list[list[int]]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        Gate.seen.append([round(float(b.mean()) * 255) for b in batch])
        Gate.entered.set()
        if not Gate.release.wait(20):
            raise ToolError(self.name, "gate never opened")
        return batch.clone()


@pytest.fixture
def tools():
    """Registers the test tools for one test and removes them again."""
    Gate.entered, Gate.release, Gate.seen, BlackFails.batches = threading.Event(), threading.Event(), [], []
    for cls in (SeededConv, BlackFails, Gate):
        register_tool(ToolInfo(name=cls.name, degradation="noise", kind="learned", description="test tool"), cls)
    yield
    Gate.release.set()
    for cls in (SeededConv, BlackFails, Gate):
        unregister_tool(cls.name)


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


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients plus noise and an edge: structure for a conv net to act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 17 + y / 23)], axis=-1) * 200 + rng.normal(0, 20, (h, w, 3))
    img[h // 3 : h // 2, :, 1] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


def whole(tool_name: str, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return from_batch(TOOLS.get(tool_name)(to_batch([image])))[0]


async def test_tiled_output_matches_whole_image_without_seams(tools):
    """A tile-safe conv tool run on overlapping tiles agrees with the whole-image run, also at the seams."""
    image = photo(301, 357)
    async with running(tile_threshold=100 * 100, tile=128, overlap=32, batch_window=0.01) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "big", image, SeededConv.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"big"})
        stats = ex.stats()
    [cand] = out["big"].outputs
    assert not cand.error and stats["tiled_requests"] == 1
    assert stats["tiles"] == len(tile_starts(301, 128, 32)) * len(tile_starts(357, 128, 32)) == 12
    tiled = blobs.get(cand.image).astype(int)
    ref = whole(SeededConv.name, image).astype(int)
    diff = np.abs(tiled - ref)
    assert diff.max() <= 2 and diff.mean() < 0.05
    # Seams: the bands where tiles meet (within 16 px of a tile edge inside the image).
    ys = sorted({p for s in tile_starts(301, 128, 32) for p in (s, s + 128)} - {0, 301})
    xs = sorted({p for s in tile_starts(357, 128, 32) for p in (s, s + 128)} - {0, 357})
    for y in ys:
        assert diff[max(0, y - 8) : y + 8].max() <= 2
    for x in xs:
        assert diff[:, max(0, x - 8) : x + 8].max() <= 2


async def test_dct_denoise_tiled_agrees_with_whole_image(tools):
    """The registered dct_denoise, tiled, stays within a small tolerance of its whole-image output."""
    import toolbox.tools  # noqa: F401 - registers the classical tools

    image = photo(260, 300, seed=3)
    async with running(tile_threshold=160 * 160, tile=160, overlap=24) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "d", image, "dct_denoise")
        with anyio.fail_after(30):
            out = await collect(reflect, {"d"})
        assert ex.stats()["tiles"] == 6
    tiled = blobs.get(out["d"].outputs[0].image).astype(float)
    ref = whole("dct_denoise", image).astype(float)
    assert psnr(tiled / 255.0, ref / 255.0) > 38  # tiled against whole


async def test_image_over_the_memory_cap_is_tiled_and_batches_stay_under_it(tools):
    """An image one unit of which exceeds max_batch_bytes is cut into tiles instead of running whole."""
    image = photo(300, 280, seed=1)
    cap = 2**20  # a whole 300x280 unit needs ~2 MB in + out
    async with running(tile_threshold=10**9, tile=256, overlap=16, max_batch_bytes=cap, max_batch=16) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "huge", image, SeededConv.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"huge"})
        stats = ex.stats()
    cand = out["huge"].outputs[0]
    assert not cand.error and blobs.get(cand.image).shape == image.shape
    assert stats["tiled_requests"] == 1 and stats["tiles"] >= 4
    tile_bytes = 128 * 128 * 12 * 2  # the tile is halved until one unit fits the cap
    assert max(ex.batch_sizes) == 2 and 2 * tile_bytes <= cap


async def test_tiles_of_several_jobs_share_a_batch_and_a_bad_tile_fails_only_its_job(tools):
    """Tiles of two jobs share batches; a black tile fails its own job's step while the other job succeeds."""
    good = photo(200, 200, seed=2)
    bad = photo(200, 200, seed=5)
    bad[:128, :128] = 0  # exactly one all-black tile
    async with running(tile_threshold=150 * 150, tile=128, overlap=16, max_batch=8, batch_window=5.0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "bad", bad, BlackFails.name)
        await step(bus, blobs, "good", good, BlackFails.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"good", "bad"})
    assert out["bad"].outputs[0].error and "all-black" in out["bad"].outputs[0].error and "tile 0" in out["bad"].outputs[0].error
    assert not out["good"].outputs[0].error
    np.testing.assert_array_equal(blobs.get(out["good"].outputs[0].image), 255 - good)
    assert ex.batch_sizes[0] == 8  # 4 tiles of each job in one batch


async def test_one_jobs_bad_whole_image_does_not_fail_the_other_in_the_batch(tools):
    """Two small images batched together: the black one's step fails, the other's succeeds."""
    async with running(max_batch=2, batch_window=5.0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "a", np.zeros((40, 50, 3), np.uint8), BlackFails.name)
        await step(bus, blobs, "b", np.full((40, 50, 3), 100, np.uint8), BlackFails.name)
        with anyio.fail_after(20):
            out = await collect(reflect, {"a", "b"})
    assert "all-black" in out["a"].outputs[0].error
    assert not out["b"].outputs[0].error and int(blobs.get(out["b"].outputs[0].image)[0, 0, 0]) == 155
    assert ex.batch_sizes[0] == 2


async def test_batches_are_filled_round_robin_across_jobs(tools):
    """A job queued behind another job's many tiles gets into the very next batch (fair ordering)."""
    many = np.full((300, 300, 3), 10, np.uint8)  # 9 tiles of 128
    few = np.full((100, 100, 3), 200, np.uint8)
    async with running(tile_threshold=50 * 50, tile=128, overlap=16, max_batch=2, batch_window=0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "many", many, Gate.name)
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(Gate.entered.wait)
            # One at a time: the Executor prepares steps concurrently, so the smaller "few2"
            # could otherwise be queued before "few" and lead the next batch with its own shape.
            await step(bus, blobs, "few", np.full((128, 128, 3), 200, np.uint8), Gate.name)
            await ex.event("few").wait()
            await step(bus, blobs, "few2", few, Gate.name)
            await ex.event("few2").wait()
            Gate.release.set()
            await collect(reflect, {"many", "few", "few2"})
    # First batch: two tiles of "many"; the next one mixes "few" (200) with "many" (10); then
    # "few2" leads (never served) and goes alone, since its 100x100 shape matches no other unit.
    assert Gate.seen[0] == [10, 10] and sorted(Gate.seen[1]) == [10, 200]
    assert Gate.seen[2] == [200]


async def test_cancel_drops_a_jobs_queued_units_and_publishes_nothing_for_it(tools):
    """Cancelling a job drops its queued tiles; the other job finishes, the cancelled one sends no result."""
    async with running(tile_threshold=50 * 50, tile=64, overlap=8, max_batch=1, batch_window=0) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "keep", np.full((60, 60, 3), 50, np.uint8), Gate.name)
        with anyio.fail_after(20):
            await anyio.to_thread.run_sync(Gate.entered.wait)
            await step(bus, blobs, "drop", np.full((200, 200, 3), 90, np.uint8), Gate.name)
            await ex.event("drop").wait()
            assert ex.stats()["queued_units"] == 16
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
    assert stats["dropped_units"] == 16 and stats["queued_units"] == 0
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


def test_tool_device_falls_back_to_cpu_without_cuda():
    """A tool asking for CUDA runs on the CPU when no CUDA device exists (and on CUDA when one does)."""

    class OnCuda:
        device = "cuda"

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tool_device(OnCuda()).type == expected
    assert tool_device(SeededConv()).type == "cpu"


def test_global_tools_are_never_tiled(tools):
    """A tool tagged 'global' runs whole however large the image; tile-safe tools tile."""
    register_tool(ToolInfo(name="test_global", degradation="haze", tags=("global",)), SeededConv)
    try:
        ex = Executor(None, None, tile_threshold=64 * 64)
        assert ex._tile_plan("test_global", 1000, 1000) is None
        assert ex._tile_plan(SeededConv.name, 1000, 1000) == (1, 256, 32)
        assert ex._tile_plan(SeededConv.name, 60, 60) is None
    finally:
        unregister_tool("test_global")


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


async def test_super_resolution_is_tiled_with_a_4x_blend(tools):
    """A scale-4 tool on tiles, blended at 4x positions and overlap, matches its whole-image output."""
    import toolbox.tools  # noqa: F401 - registers the classical tools

    image = photo(200, 230, seed=4)
    async with running(tile_threshold=150 * 150, tile=128, overlap=16) as (ex, bus, blobs, reflect):
        await step(bus, blobs, "sr", image, "lanczos_sr")
        with anyio.fail_after(30):
            out = await collect(reflect, {"sr"})
        assert ex.stats()["tiles"] == 4
    tiled = blobs.get(out["sr"].outputs[0].image).astype(float)
    ref = whole("lanczos_sr", image).astype(float)
    assert tiled.shape == (800, 920, 3) and np.abs(tiled - ref).max() <= 4
    assert psnr(tiled / 255.0, ref / 255.0) > 50
