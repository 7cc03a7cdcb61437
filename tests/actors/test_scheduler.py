"""The batching scheduler on its own, no bus: batching, fairness, tiling and blending, caps, failures, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
import pytest
import torch
from actor_helpers import BlackFails, Gate, registered_tools

from agentir.actors.scheduler import (
    DEFAULT_BATCH_WINDOW,
    DEFAULT_CPU_BATCH_BYTES,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BATCH_BYTES,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    DEFAULT_TILE_THRESHOLD,
    BatchScheduler,
    BatchStats,
    ToolResult,
    estimate_sample,
    from_batch,
    to_batch,
    tool_device,
)
from agentir.kernels.tiles import tile_starts
from agentir.toolbox.base import TOOLS, ToolInfo, register_tool, unregister_tool
from agentir.toolbox.metrics import psnr


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


class WrongShape:
    """Returns a tensor of the wrong size: the scheduler must refuse it, not pass it on."""

    name = "test_wrong_shape"
    degradation = "noise"
    scale = 1
    device = "cpu"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch[:, :, :-1]


TEST_TOOLS = (SeededConv, BlackFails, Gate, WrongShape)


@pytest.fixture
def tools():
    """Registers the test tools for one test and removes them again."""
    with registered_tools(*TEST_TOOLS):
        yield


class Queued:
    """An ``on_queued`` hook that sets one event per job once its units are queued (tests wait on events, not time)."""

    def __init__(self) -> None:
        self.events: dict[str, anyio.Event] = {}
        self.calls: list[tuple[str, int]] = []

    def event(self, job: str) -> anyio.Event:
        return self.events.setdefault(job, anyio.Event())

    def __call__(self, job: str, tool: str, units: int) -> None:
        self.calls.append((job, units))
        self.event(job).set()


class Jobs:
    """Background ``submit`` calls: ``start`` one per job, ``await finished()`` for all their results."""

    def __init__(self, scheduler: BatchScheduler, tg: anyio.abc.TaskGroup) -> None:
        self.scheduler, self.tg = scheduler, tg
        self.results: dict[str, ToolResult] = {}
        self._done: dict[str, anyio.Event] = {}

    def start(self, job: str, tool: str, image: np.ndarray) -> None:
        done = self._done[job] = anyio.Event()

        async def one() -> None:
            try:
                self.results[job] = await self.scheduler.submit(job, tool, image)
            finally:
                done.set()

        self.tg.start_soon(one)

    async def finished(self) -> dict[str, ToolResult]:
        for done in self._done.values():
            await done.wait()
        return self.results


@asynccontextmanager
async def running(**options: Any) -> AsyncIterator[tuple[BatchScheduler, Queued, Jobs]]:
    """A running scheduler with a queued hook and a :class:`Jobs` for background submits."""
    queued = Queued()
    async with anyio.create_task_group() as tg, BatchScheduler(on_queued=queued, **options) as scheduler:
        yield scheduler, queued, Jobs(scheduler, tg)


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


async def wait_for_gate() -> None:
    await anyio.to_thread.run_sync(Gate.entered.wait)


# -- batching ----------------------------------------------------------------------------------
async def test_same_tool_calls_within_the_window_wait_and_share_one_batch(tools):
    """Calls to one tool queued within the batch window wait for each other and run as a single batch."""
    async with running(batch_window=60.0, max_batch=3) as (s, queued, jobs):
        with anyio.fail_after(20):
            for k, job in enumerate(("a", "b")):
                jobs.start(job, BlackFails.name, np.full((20, 30, 3), 10 * (k + 1), np.uint8))
                await queued.event(job).wait()
            stats = s.stats()
            assert stats.batches == 0 and stats.queued_units == 2  # still inside the window
            jobs.start("c", BlackFails.name, np.full((20, 30, 3), 30, np.uint8))  # fills the batch
            results = await jobs.finished()
    assert [len(b) for b in BlackFails.batches] == [3]
    assert s.stats().recent_batch_sizes == (3,)
    for k, job in enumerate(("a", "b", "c")):
        assert results[job].error == "" and int(results[job].output[0, 0, 0]) == 255 - 10 * (k + 1)


async def test_units_queued_while_a_batch_runs_form_the_next_batch_together(tools):
    """Requests of several jobs that queue while the tool is busy all go into its next call."""
    async with running(batch_window=0, max_batch=8) as (_, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("first", Gate.name, np.full((32, 32, 3), 1, np.uint8))
            await wait_for_gate()
            for k, job in enumerate(("b", "c", "d")):
                jobs.start(job, Gate.name, np.full((32, 32, 3), 100 + k, np.uint8))
                await queued.event(job).wait()
            Gate.release.set()
            results = await jobs.finished()
    assert Gate.seen == [[1], [100, 101, 102]]
    assert all(not r.error and r.output is not None for r in results.values())


async def test_batches_are_filled_round_robin_across_jobs(tools):
    """A job queued behind another job's many tiles gets into the very next batch (fair ordering)."""
    many = np.full((300, 300, 3), 10, np.uint8)  # 9 tiles of 128
    async with running(tile_threshold=50 * 50, tile=128, overlap=16, max_batch=2, batch_window=0) as (_, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("many", Gate.name, many)
            await wait_for_gate()
            # One at a time: requests are prepared concurrently, so the smaller "few2" could
            # otherwise be queued before "few" and lead the next batch with its own shape.
            jobs.start("few", Gate.name, np.full((128, 128, 3), 200, np.uint8))
            await queued.event("few").wait()
            jobs.start("few2", Gate.name, np.full((100, 100, 3), 200, np.uint8))
            await queued.event("few2").wait()
            Gate.release.set()
            results = await jobs.finished()
    # First batch: two tiles of "many"; the next one mixes "few" (200) with "many" (10); then
    # "few2" leads (never served) and goes alone, since its 100x100 shape matches no other unit.
    assert Gate.seen[0] == [10, 10] and sorted(Gate.seen[1]) == [10, 200]
    assert Gate.seen[2] == [200]
    assert set(results) == {"many", "few", "few2"} and all(not r.error for r in results.values())


async def test_tiles_of_several_jobs_share_a_batch_and_a_bad_tile_fails_only_its_job(tools):
    """Tiles of two jobs share batches; a black tile fails its own job's request while the other job succeeds."""
    good = photo(200, 200, seed=2)
    bad = photo(200, 200, seed=5)
    bad[:128, :128] = 0  # exactly one all-black tile
    async with running(tile_threshold=150 * 150, tile=128, overlap=16, max_batch=8, batch_window=5.0) as (s, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("bad", BlackFails.name, bad)
            await queued.event("bad").wait()
            jobs.start("good", BlackFails.name, good)
            results = await jobs.finished()
    assert "all-black" in results["bad"].error and "tile 0" in results["bad"].error and results["bad"].output is None
    assert not results["good"].error
    np.testing.assert_array_equal(results["good"].output, 255 - good)
    assert s.stats().recent_batch_sizes[0] == 8  # 4 tiles of each job in one batch


async def test_a_failing_batch_is_retried_unit_by_unit_so_only_the_bad_job_fails(tools):
    """Two whole images batched together: the call fails, each is retried alone, only the black one errs."""
    async with running(max_batch=2, batch_window=5.0) as (s, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("a", BlackFails.name, np.zeros((40, 50, 3), np.uint8))
            await queued.event("a").wait()
            jobs.start("b", BlackFails.name, np.full((40, 50, 3), 100, np.uint8))
            results = await jobs.finished()
    assert [len(b) for b in BlackFails.batches] == [2, 1, 1]  # the batch, then one retry per unit
    assert "all-black" in results["a"].error and results["a"].output is None
    assert not results["b"].error and int(results["b"].output[0, 0, 0]) == 155
    assert s.stats().recent_batch_sizes == (2,)  # retries are not counted as batches


async def test_a_tool_returning_the_wrong_shape_or_an_unknown_tool_fails_the_request(tools):
    """A tool whose output shape is wrong, or a tool name nobody registered, gives an error result, not an output."""
    async with BatchScheduler(batch_window=0) as s:
        with anyio.fail_after(20):
            wrong = await s.submit("w", WrongShape.name, np.full((16, 16, 3), 5, np.uint8))
            unknown = await s.submit("u", "test_no_such_tool", np.full((16, 16, 3), 5, np.uint8))
    assert wrong.output is None and "returned shape" in wrong.error
    assert unknown.output is None and "test_no_such_tool" in unknown.error


# -- memory caps --------------------------------------------------------------------------------
async def test_image_over_the_memory_cap_is_tiled_and_batches_stay_under_it(tools):
    """An image one unit of which exceeds max_batch_bytes is cut into tiles instead of running whole."""
    image = photo(300, 280, seed=1)
    cap = 2**20  # a whole 300x280 unit needs ~2 MB in + out
    async with BatchScheduler(tile_threshold=10**9, tile=256, overlap=16, max_batch_bytes=cap, max_batch=16) as s:
        with anyio.fail_after(20):
            result = await s.submit("huge", SeededConv.name, image)
        stats = s.stats()
    assert not result.error and result.output is not None and result.output.shape == image.shape
    assert stats.tiled_requests == 1 and stats.tiles >= 4
    tile_bytes = 128 * 128 * 12 * 2  # the tile is halved until one unit fits the cap
    assert max(stats.recent_batch_sizes) == 2 and 2 * tile_bytes <= cap


async def test_cpu_tools_batch_under_the_cpu_byte_cap(tools):
    """On the CPU the lower cpu_batch_bytes cap splits what max_batch alone would run as one batch."""
    unit = 64 * 64 * 12 * 2  # float input + output of one 64x64 image
    async with running(batch_window=0, max_batch=8, cpu_batch_bytes=2 * unit) as (_, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("first", Gate.name, np.full((64, 64, 3), 1, np.uint8))
            await wait_for_gate()  # the Gate ran once: the scheduler now knows it runs on the CPU
            for k, job in enumerate(("b", "c", "d")):
                jobs.start(job, Gate.name, np.full((64, 64, 3), 100 + k, np.uint8))
                await queued.event(job).wait()
            Gate.release.set()
            results = await jobs.finished()
    assert Gate.seen == [[1], [100, 101], [102]]
    assert all(not r.error for r in results.values())


# -- tiling and blending ---------------------------------------------------------------------------
async def test_tiled_output_matches_whole_image_without_seams(tools):
    """A tile-safe conv tool run on overlapping tiles agrees with the whole-image run within 2 grey levels, also at the seams."""
    image = photo(301, 357)
    async with BatchScheduler(tile_threshold=100 * 100, tile=128, overlap=32, batch_window=0.01) as s:
        with anyio.fail_after(20):
            result = await s.submit("big", SeededConv.name, image)
        stats = s.stats()
    assert not result.error and result.output is not None and stats.tiled_requests == 1
    assert stats.tiles == len(tile_starts(301, 128, 32)) * len(tile_starts(357, 128, 32)) == 12
    ref = whole(SeededConv.name, image).astype(int)
    diff = np.abs(result.output.astype(int) - ref)
    assert diff.max() <= 2 and diff.mean() < 0.05
    # Seams: the bands where tiles meet (within 8 px of a tile edge inside the image).
    ys = sorted({p for t in tile_starts(301, 128, 32) for p in (t, t + 128)} - {0, 301})
    xs = sorted({p for t in tile_starts(357, 128, 32) for p in (t, t + 128)} - {0, 357})
    for y in ys:
        assert diff[max(0, y - 8) : y + 8].max() <= 2
    for x in xs:
        assert diff[:, max(0, x - 8) : x + 8].max() <= 2


async def test_dct_denoise_tiled_agrees_with_whole_image(tools):
    """The registered dct_denoise, tiled, stays within a small tolerance of its whole-image output."""
    import agentir.toolbox.tools  # noqa: F401 - registers the classical tools

    image = photo(260, 300, seed=3)
    async with BatchScheduler(tile_threshold=160 * 160, tile=160, overlap=24) as s:
        with anyio.fail_after(30):
            result = await s.submit("d", "dct_denoise", image)
        assert s.stats().tiles == 6
    assert result.output is not None
    ref = whole("dct_denoise", image).astype(float)
    assert psnr(result.output.astype(float) / 255.0, ref / 255.0) > 38  # tiled against whole


async def test_super_resolution_is_tiled_with_a_4x_blend(tools):
    """A scale-4 tool on tiles, blended at 4x positions and overlap, matches its whole-image output."""
    import agentir.toolbox.tools  # noqa: F401 - registers the classical tools

    image = photo(200, 230, seed=4)
    async with BatchScheduler(tile_threshold=150 * 150, tile=128, overlap=16) as s:
        with anyio.fail_after(30):
            result = await s.submit("sr", "lanczos_sr", image)
        assert s.stats().tiles == 4
    assert result.output is not None
    tiled = result.output.astype(float)
    ref = whole("lanczos_sr", image).astype(float)
    assert tiled.shape == (800, 920, 3) and np.abs(tiled - ref).max() <= 4
    assert psnr(tiled / 255.0, ref / 255.0) > 50


def test_global_tools_are_never_tiled(tools):
    """A tool tagged 'global' runs whole however large the image; tile-safe tools tile, small images do not."""
    register_tool(ToolInfo(name="test_global", degradation="haze", tags=("global",)), SeededConv)
    try:
        s = BatchScheduler(tile_threshold=64 * 64)
        assert s.tile_plan("test_global", 1000, 1000) is None
        assert s.tile_plan(SeededConv.name, 1000, 1000) == (1, 256, 32)
        assert s.tile_plan(SeededConv.name, 60, 60) is None
        assert s.tile_plan("test_unregistered_tool", 1000, 1000) is None
    finally:
        unregister_tool("test_global")


def jpeg_photo(h: int, w: int, quality: int = 20) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", photo(h, w, seed=5)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize(("tool", "floor_db"), [("dct_dejpeg_strong", 55.0), ("hsv_brighten", 50.0), ("stretch_brighten", 50.0)])
async def test_whole_image_tools_with_held_parameters_run_in_tiles_like_whole(tools, tool, floor_db):
    """A whole-image tool that estimates its parameters (JPEG quality, exposure) is estimated once
    and applied tile by tile on a large image: its output matches the whole-image call."""
    import agentir.toolbox.tools  # noqa: F401 - registers the classical tools

    image = jpeg_photo(520, 600) if "dejpeg" in tool else (photo(520, 600, seed=2) // 3).astype(np.uint8)
    async with BatchScheduler(tile_threshold=200 * 200, tile=256, overlap=32) as s:
        assert s.tile_plan(tool, 520, 600) is None and s.held_tool(tool, 520, 600) is not None
        with anyio.fail_after(60):
            result = await s.submit("big", tool, image)
        assert result.error == "" and result.output is not None
        assert s.stats().tiles == 9 and s.stats().tiled_requests == 1
    ref = whole(tool, image)
    assert np.abs(ref.astype(int) - image.astype(int)).mean() > 1  # the tool does something here
    db = psnr(result.output.astype(float) / 255.0, ref.astype(float) / 255.0)
    print(f"{tool}: tiled vs whole {db:.1f} dB")
    assert db > floor_db


def test_tools_without_held_parameters_stay_whole(tools):
    """clahe_brighten (local by nature) and the dehazers (a filter radius tied to the image size)
    give no held path: they run whole however large the image."""
    import agentir.toolbox.tools  # noqa: F401

    s = BatchScheduler(tile_threshold=64 * 64)
    for tool in ("clahe_brighten", "dcp_dehaze", "streak_derain"):
        assert s.tile_plan(tool, 1000, 1000) is None and s.held_tool(tool, 1000, 1000) is None
    assert s.held_tool("dct_dejpeg", 60, 60) is None  # small images run whole anyway


async def test_a_whole_image_tool_over_the_memory_cap_fails_clearly_and_tiled_tools_run(tools):
    """With a memory cap, a tool that must see the whole image and would need more than the cap
    fails its request with a message naming the tool, the need and how to raise the cap; a tiled
    tool on the same image and a small image for the same tool still run."""
    import agentir.toolbox.tools  # noqa: F401
    from agentir.actors.scheduler import whole_image_bytes
    from agentir.toolbox.costs import bytes_per_pixel

    big = photo(600, 800, seed=4)
    need = whole_image_bytes("dcp_dehaze", 600, 800)
    assert need == 600 * 800 * (bytes_per_pixel("dcp_dehaze") + 24) and bytes_per_pixel("dcp_dehaze") < bytes_per_pixel("no_such_tool")
    async with BatchScheduler(memory_cap=need // 2) as s:
        with anyio.fail_after(60):
            refused = await s.submit("j", "dcp_dehaze", big)
            small = await s.submit("j", "dcp_dehaze", photo(100, 120))
            tiled = await s.submit("j", "dct_denoise", big)
    assert refused.output is None and "dcp_dehaze must see the whole 800x600 image" in refused.error
    assert "over the memory cap" in refused.error and "--memory-cap" in refused.error
    assert small.error == "" and small.output is not None
    assert tiled.error == "" and tiled.output is not None
    with pytest.raises(ValueError, match="memory_cap"):
        BatchScheduler(memory_cap=0)


def test_estimate_sample_crops_on_the_jpeg_grid_and_strides_evenly():
    img = np.arange(1000 * 1300 * 3, dtype=np.uint32).reshape(1000, 1300, 3).astype(np.uint8)
    crop = estimate_sample(img, "crop", max_pixels=256 * 256)
    assert crop.shape[:2] == (256, 256)
    top = (1000 - 256) // 2 // 8 * 8
    left = (1300 - 256) // 2 // 8 * 8
    assert top % 8 == 0 and left % 8 == 0 and np.array_equal(crop, img[top : top + 256, left : left + 256])
    stride = estimate_sample(img, "stride", max_pixels=256 * 256)
    assert stride.shape[0] * stride.shape[1] <= 256 * 256
    k = int(np.ceil((1000 * 1300 / (256 * 256)) ** 0.5))
    assert np.array_equal(stride, img[::k, ::k])
    assert estimate_sample(img[:100, :100], "crop", max_pixels=256 * 256).shape == (100, 100, 3)  # small: whole
    assert estimate_sample(img[:100, :100], "stride", max_pixels=256 * 256).shape == (100, 100, 3)
    with pytest.raises(ValueError, match="unknown estimate sample"):
        estimate_sample(img, "median", max_pixels=256 * 256)


def test_tool_device_falls_back_to_cpu_without_cuda():
    """A tool asking for CUDA runs on the CPU when no CUDA device exists (and on CUDA when one does)."""

    class OnCuda:
        device = "cuda"

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tool_device(OnCuda()).type == expected
    assert tool_device(SeededConv()).type == "cpu"


# -- cancellation and stopping -------------------------------------------------------------------
async def test_cancel_drops_queued_units_and_later_requests_of_the_job(tools):
    """cancel(job) drops the job's queued tiles at once, finishes its request cancelled, and refuses its later requests."""
    async with running(tile_threshold=50 * 50, tile=64, overlap=8, max_batch=1, batch_window=0) as (s, queued, jobs):
        with anyio.fail_after(20):
            jobs.start("keep", Gate.name, np.full((60, 60, 3), 50, np.uint8))
            await wait_for_gate()
            jobs.start("drop", Gate.name, np.full((200, 200, 3), 90, np.uint8))
            await queued.event("drop").wait()
            assert queued.calls[-1] == ("drop", 16) and s.stats().queued_units == 16
            assert s.cancel("drop") == 16 and s.is_cancelled("drop") and not s.is_cancelled("keep")
            Gate.release.set()
            results = await jobs.finished()
            later = await s.submit("drop", Gate.name, np.full((60, 60, 3), 90, np.uint8))
        stats = s.stats()
    assert results["drop"].cancelled and results["drop"].output is None
    assert later.cancelled and later.output is None and [j for j, _ in queued.calls].count("drop") == 1  # never queued
    assert not results["keep"].error and results["keep"].output is not None
    assert stats.dropped_units == 16 and stats.queued_units == 0
    assert all(90 not in batch for batch in Gate.seen)


async def test_stopping_the_scheduler_fails_requests_still_queued(tools):
    """Leaving the scheduler's block finishes the running batch and fails what is still queued, so no caller hangs."""
    queued = Queued()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg, BatchScheduler(batch_window=0, max_batch=1, on_queued=queued) as s:
            jobs = Jobs(s, tg)
            jobs.start("a", Gate.name, np.full((16, 16, 3), 1, np.uint8))
            await wait_for_gate()
            jobs.start("b", Gate.name, np.full((16, 16, 3), 2, np.uint8))
            await queued.event("b").wait()
            # Runs only once this task yields, i.e. after leaving the block started stopping the scheduler.
            tg.start_soon(anyio.to_thread.run_sync, Gate.release.set)
    results = jobs.results
    assert results["a"].output is not None and not results["a"].error
    assert results["b"].output is None and "stopped before the tool ran" in results["b"].error


async def test_submit_to_a_scheduler_that_is_not_running_raises(tools):
    """A scheduler neither entered nor given spawn= refuses work instead of queueing it for nobody."""
    s = BatchScheduler()
    with pytest.raises(RuntimeError, match="not running"):
        await s.submit("j", BlackFails.name, np.full((16, 16, 3), 1, np.uint8))
    assert s.stats().queued_units == 0


# -- options and counters --------------------------------------------------------------------------
def test_defaults_are_the_products_and_bad_options_are_refused():
    """The defaults are 4 ms, 8 units, 256-pixel tiles overlapping by 32 above 512x512, 512 MiB / 4 MiB; bad values raise ValueError."""
    s = BatchScheduler()
    assert (s.batch_window, s.max_batch, s.tile, s.overlap, s.tile_threshold) == (0.004, 8, 256, 32, 512 * 512)
    assert (s.max_batch_bytes, s.cpu_batch_bytes) == (512 * 2**20, 4 * 2**20)
    assert (DEFAULT_BATCH_WINDOW, DEFAULT_MAX_BATCH, DEFAULT_TILE, DEFAULT_OVERLAP, DEFAULT_TILE_THRESHOLD) == (0.004, 8, 256, 32, 512 * 512)
    assert (DEFAULT_MAX_BATCH_BYTES, DEFAULT_CPU_BATCH_BYTES) == (512 * 2**20, 4 * 2**20)
    for bad in ({"max_batch": 0}, {"batch_window": -1.0}, {"tile": 8}, {"tile": 64, "overlap": 32}, {"max_batch_bytes": 0}, {"tile_threshold": 0}):
        with pytest.raises(ValueError):
            BatchScheduler(**bad)


async def test_stats_count_batches_units_tiles_and_recent_sizes(tools):
    """stats() counts batches, units, tiles, tiled requests and devices, and lists recent batch sizes oldest first."""
    async with BatchScheduler(tile_threshold=100 * 100, tile=64, overlap=8, max_batch=4, batch_window=0) as s:
        assert s.stats() == BatchStats()
        with anyio.fail_after(20):
            await s.submit("tiled", SeededConv.name, photo(120, 120))  # 4 tiles of 64: one batch of 4
            await s.submit("whole", SeededConv.name, photo(40, 40))
        stats = s.stats()
    assert stats.batches == 2 and stats.units == 5 and stats.tiles == 4 and stats.tiled_requests == 1
    assert stats.recent_batch_sizes == (4, 1) and stats.max_batch_size == 4 and stats.mean_batch_size == 2.5
    assert stats.devices == ("cpu",) and stats.dropped_units == 0 and stats.queued_units == 0
    as_dict = stats.as_dict()
    assert as_dict["devices"] == ["cpu"] and "recent_batch_sizes" not in as_dict
    assert set(as_dict) == {"batches", "mean_batch_size", "max_batch_size", "units", "tiles", "tiled_requests", "dropped_units", "queued_units", "devices"}


async def test_batches_run_through_the_given_run_sync(tools):
    """Batches go through the run_sync the owner passes (the Executor's bounded worker threads)."""
    calls: list[str] = []

    async def run_sync(fn: Any, /, *args: Any) -> Any:
        calls.append(args[0])
        return await anyio.to_thread.run_sync(fn, *args)

    async with BatchScheduler(run_sync=run_sync, batch_window=0) as s:
        with anyio.fail_after(20):
            result = await s.submit("j", BlackFails.name, np.full((16, 16, 3), 5, np.uint8))
    assert calls == [BlackFails.name] and int(result.output[0, 0, 0]) == 250
