"""The batching scheduler: runs tool calls on images, batching calls to the same tool across jobs.

It knows nothing of the bus: work arrives as plain calls (:meth:`BatchScheduler.submit`), results
go back as :class:`ToolResult`; the :class:`~agentir.actors.executor.Executor` actor turns messages into
those calls. Use it on its own as ``async with BatchScheduler() as s: r = await s.submit(...)``.

Units of work. Each ``(job, tool, image)`` request becomes one or more *units*: the whole image,
or, when the image has more than ``tile_threshold`` pixels (or one unit of it would not fit
``max_batch_bytes``), fixed-size tiles of ``tile`` x ``tile`` pixels overlapping by ``overlap``
(:func:`agentir.kernels.extract_tiles`). Tools whose :class:`~agentir.toolbox.base.ToolInfo` carries the tag
``"global"`` (they use whole-image statistics: a tile would see different ones) and tools with
no registered info are never tiled, with one exception: a whole-image tool that splits its work
into ``estimate(img) -> params`` and ``apply(img, params)`` (:mod:`agentir.toolbox.held`) and says
how its estimate may be sampled (``estimate_sample``: ``"crop"``, a centre crop on the 8x8 grid,
or ``"stride"``, every k-th pixel) has its parameters estimated once on at most
:data:`ESTIMATE_PIXELS` pixels of a large image and is then applied tile by tile with them, so
its memory no longer grows with the image (JPEG removal, the pointwise brighteners). Super-resolution tools (scale 4) are tiled like the rest:
their output tiles lie at 4x the positions, 4x the size, and are blended with a 4x overlap.

Batching. Units for one tool wait up to ``batch_window`` seconds (or until ``max_batch`` are
queued); then one batch is taken: units of one shape (tiles of one size stack, so tiles of
several jobs share a batch), at most ``max_batch`` of them and at most ``max_batch_bytes``
(float input plus output, estimated; a single unit always runs; ``cpu_batch_bytes`` on the CPU). Batches are filled
round-robin over the jobs with queued units, least recently served job first, so a big image's
hundreds of tiles do not starve a small job queued behind them. The rest stays queued for the
next batch. A tool's batches run one at a time, in a worker thread (``run_sync``), never on the
event loop.

Failures. If a batched call fails, each unit is retried alone, so one bad input fails only its
own request (the job's other units are dropped); the other jobs' units in the batch are
unaffected. Processed tiles are blended back with feathered weights
(:func:`agentir.kernels.blend_tiles`), so seams fade instead of showing.

Cancellation. :meth:`BatchScheduler.cancel` drops the job's queued units at once and finishes its
waiting requests as cancelled; a batch already running finishes and its results for the job are
discarded. The job id is remembered (the last 4096), so its later requests finish cancelled at once.

Devices. A tool whose ``device`` is ``"cuda"`` (or ``"auto"``) gets its batches on CUDA when
available (conversion and blending then run as Triton kernels there); otherwise on the CPU.
Tools are built once and cached by the tool registry.

Threads. Batches run through ``run_sync`` (the Executor passes its actor's bounded worker
threads); cutting an image into tiles runs in anyio's default thread pool, so preparing a new
request does not wait behind a running batch. Counters are written by the worker threads under
a lock and read through :meth:`BatchScheduler.stats`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np
import structlog
import torch
from anyio.abc import TaskGroup

from agentir.kernels import blend_tiles, extract_tiles, to_float_nchw, to_uint8_nhwc
from agentir.toolbox.base import TOOL_INFO, TOOLS, Tool
from agentir.toolbox.costs import bytes_per_pixel
from agentir.toolbox.held import apply_float, estimate_params, has_params

log = structlog.get_logger(__name__)

R = TypeVar("R")

#: Most pixels a whole-image tool's parameters are estimated on before it is applied in tiles.
ESTIMATE_PIXELS = 2048 * 2048
#: The ways a tool may let its estimate be sampled (its ``estimate_sample`` attribute).
ESTIMATE_SAMPLES = ("crop", "stride")


def estimate_sample(image: np.ndarray, how: str, max_pixels: int = ESTIMATE_PIXELS) -> np.ndarray:
    """At most ``max_pixels`` of ``image`` for a parameter estimate: ``"crop"``, the centre crop
    (origin and size on the 8x8 JPEG grid), or ``"stride"``, every k-th row and column (the
    image's value distribution, without averaging pixels together)."""
    h, w = image.shape[:2]
    if h * w <= max_pixels:
        return image
    if how == "crop":
        side = max(8, int(max_pixels**0.5) // 8 * 8)
        ch, cw = min(h, side) // 8 * 8 or h, min(w, side) // 8 * 8 or w
        top, left = (h - ch) // 2 // 8 * 8, (w - cw) // 2 // 8 * 8
        return image[top : top + ch, left : left + cw]
    if how == "stride":
        k = int(np.ceil((h * w / max_pixels) ** 0.5))
        return image[::k, ::k]
    raise ValueError(f"unknown estimate sample {how!r}; use one of {', '.join(ESTIMATE_SAMPLES)}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def whole_image_bytes(tool: str, h: int, w: int, scale: int = 1) -> int:
    """Estimated peak bytes of running ``tool`` on a whole ``h x w`` image: its measured bytes per
    pixel (:func:`agentir.toolbox.costs.bytes_per_pixel`) plus the float input and output the
    scheduler converts."""
    return h * w * (bytes_per_pixel(tool) + _FLOAT_RGB * (1 + scale**2))


#: Seconds a tool's first queued unit waits for others (the product's default; benchmarks use it too).
DEFAULT_BATCH_WINDOW = 0.004
#: Most units per tool call.
DEFAULT_MAX_BATCH = 8
#: Images with more pixels than this are tiled (tile-safe tools only).
DEFAULT_TILE_THRESHOLD = 512 * 512
#: Tile side in pixels.
DEFAULT_TILE = 256
#: Overlap of neighbouring tiles in pixels (the feather ramp length).
DEFAULT_OVERLAP = 32
#: Cap on one batch's estimated float input + output bytes.
DEFAULT_MAX_BATCH_BYTES = 512 * 2**20
#: The (lower) cap for tools running on the CPU (see :class:`BatchScheduler`).
DEFAULT_CPU_BATCH_BYTES = 4 * 2**20

#: Bytes per pixel of a unit in a batch: float32 RGB input (3 x 4 bytes) plus the output
#: (3 x 4 x scale**2); the tool's own activations are not known and not counted.
_FLOAT_RGB = 12
#: How many recent batch sizes are kept for metrics readers.
_RECENT_BATCHES = 4096
#: How many cancelled job ids are remembered (to drop their late requests).
_CANCELLED_MEMORY = 4096


class RunSync(Protocol):
    """Runs ``fn(*args)`` in a worker thread and returns its result (e.g. ``Actor.offload``)."""

    def __call__(self, fn: Callable[..., R], /, *args: Any) -> Awaitable[R]: ...


#: Starts ``fn(*args)`` as a background task (e.g. ``TaskGroup.start_soon``); raises when it cannot.
Spawn = Callable[..., object]


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 HxWx3 images into a float N x 3 x H x W tensor in [0, 1] (a Triton kernel on CUDA)."""
    return to_float_nchw(torch.from_numpy(np.stack(images)))


def from_batch(batch: torch.Tensor) -> list[np.ndarray]:
    """Float N x 3 x H x W in [0, 1] -> list of uint8 HxWx3 (clamped, rounded half up)."""
    return list(to_uint8_nhwc(batch.detach().float().contiguous()).cpu().numpy())


def tool_device(tool: Any) -> torch.device:
    """Where ``tool``'s batches run: CUDA when the tool asks for it (``cuda``/``auto``) and one exists."""
    wanted = str(getattr(tool, "device", "cpu") or "cpu")
    if (wanted.startswith("cuda") or wanted == "auto") and torch.cuda.is_available():
        return torch.device("cuda" if wanted == "auto" else wanted)
    return torch.device("cpu")


def _default_run_sync() -> RunSync:
    """anyio's worker threads, one batch at a time (the Executor's default of one worker thread)."""
    limiter = anyio.CapacityLimiter(1)

    async def run_sync(fn: Callable[..., R], /, *args: Any) -> R:
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

    return run_sync


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one :meth:`BatchScheduler.submit`.

    Exactly one holds: ``output`` is the uint8 H x W x 3 image (H and W times the tool's scale),
    ``error`` says why there is none, or ``cancelled`` is True (the job was cancelled; no output).
    ``seconds`` is this request's share of the tool time (batch time / units, plus blending).
    """

    job: str
    tool: str
    output: np.ndarray | None
    error: str = ""
    seconds: float = 0.0
    cancelled: bool = False


@dataclass(frozen=True)
class BatchStats:
    """A snapshot of the scheduler's counters, totals since it was built.

    ``batches``, ``units`` (images or tiles run), ``mean_batch_size`` (units / batches),
    ``max_batch_size``, ``tiles`` (tile units run), ``tiled_requests``, ``dropped_units`` (by
    cancellation), ``queued_units`` (waiting now), ``devices`` (sorted, where batches ran) and
    ``recent_batch_sizes``: the sizes of the most recent batches, oldest first, at most 4096 of
    them (a daemon runs for months). A metrics reader that remembers ``batches`` from its last
    read takes the last ``batches - seen`` of them (fewer if more ran than are kept).
    """

    batches: int = 0
    mean_batch_size: float = 0.0
    max_batch_size: int = 0
    units: int = 0
    tiles: int = 0
    tiled_requests: int = 0
    dropped_units: int = 0
    queued_units: int = 0
    devices: tuple[str, ...] = ()
    recent_batch_sizes: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (``devices`` a list), without ``recent_batch_sizes``."""
        return {
            "batches": self.batches,
            "mean_batch_size": self.mean_batch_size,
            "max_batch_size": self.max_batch_size,
            "units": self.units,
            "tiles": self.tiles,
            "tiled_requests": self.tiled_requests,
            "dropped_units": self.dropped_units,
            "queued_units": self.queued_units,
            "devices": list(self.devices),
        }


@dataclass(eq=False)
class _Request:
    """One tool run on one job's image; ``done`` is set when ``output`` or ``error`` is final."""

    job: str
    tool: str
    image: np.ndarray
    scale: int = 1
    done: anyio.Event = field(default_factory=anyio.Event)
    output: np.ndarray | None = None
    error: str = ""
    seconds: float = 0.0
    cancelled: bool = False
    # Tiling state (tiles is None for a request run as one whole image).
    tiles: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    overlap: int = 0
    tile_out: list[torch.Tensor | None] = field(default_factory=list)
    pending: int = 1
    # Parameters a whole-image tool estimated once, applied to each tile (None: the tool's own call).
    params: dict[str, float | str] | None = None

    @property
    def finished(self) -> bool:
        return self.cancelled or bool(self.error) or self.output is not None

    def result(self) -> ToolResult:
        return ToolResult(job=self.job, tool=self.tool, output=self.output, error=self.error, seconds=self.seconds, cancelled=self.cancelled)


@dataclass(eq=False)
class _Unit:
    """A whole image or one tile of it, as queued for a batch."""

    request: _Request
    index: int  # tile index, or -1 for the whole image
    pixels: torch.Tensor | np.ndarray  # uint8 H x W x 3: a whole image, or a tile (strided view)
    shape: tuple[int, int]
    nbytes: int
    queued_at: float = 0.0  # anyio.current_time() when queued (the batch window runs from here)


class BatchScheduler:
    """Batches tool calls across jobs, tiles large images, isolates failures (see the module docstring).

    Args:
        batch_window: seconds a tool's first queued unit waits for others (0: no waiting).
        max_batch: most units per tool call.
        tile_threshold: images with more pixels than this are tiled (tile-safe tools only).
        tile: tile side in pixels.
        overlap: overlap of neighbouring tiles in pixels (the feather ramp length).
        max_batch_bytes: cap on one batch's estimated float input + output bytes; an image one
            unit of which exceeds it is tiled (when the tool allows), tiles shrinking as needed.
        cpu_batch_bytes: the (lower) batch cap for tools running on the CPU. There, stacking big
            images runs slower than one by one (activations fall out of the cache; measured
            0.65x images/s at 256x256 with an 8-layer 32-channel CNN on 2 cores), while small
            images gain from batching; 4 MiB lets 64x64 units batch fully and 256x256 in pairs.
        run_sync: runs a batch in a worker thread, ``await run_sync(fn, *args)``; default anyio's
            threads, one batch at a time.
        spawn: starts a tool's batch loop as a background task, ``spawn(async_fn, *args)``; it
            may raise (e.g. ``RuntimeError``) when the owner is not running. Without it, enter the
            scheduler (``async with``), which runs the loops in its own task group.
        on_queued: called on the event loop with ``(job, tool, units)`` once a request's units
            are queued (metrics, tests).
        memory_cap: bytes a tool that must see the whole image may use on one image
            (:func:`whole_image_bytes`); a larger one fails that tool's request with a clear
            error (the agent tries its other tools) instead of exhausting the machine. None: no cap.

    Raises:
        ValueError: an option out of range.
    """

    def __init__(
        self,
        *,
        batch_window: float = DEFAULT_BATCH_WINDOW,
        max_batch: int = DEFAULT_MAX_BATCH,
        tile_threshold: int = DEFAULT_TILE_THRESHOLD,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        cpu_batch_bytes: int = DEFAULT_CPU_BATCH_BYTES,
        run_sync: RunSync | None = None,
        spawn: Spawn | None = None,
        on_queued: Callable[[str, str, int], None] | None = None,
        memory_cap: int | None = None,
    ) -> None:
        if memory_cap is not None and memory_cap < 1:
            raise ValueError(f"memory_cap must be a positive number of bytes, got {memory_cap}")
        self.memory_cap = memory_cap
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if batch_window < 0:
            raise ValueError(f"batch_window must be 0 or more, got {batch_window}")
        if tile < 16 or not 0 <= overlap < tile // 2:
            raise ValueError(f"need tile >= 16 and 0 <= overlap < tile / 2, got tile {tile}, overlap {overlap}")
        if max_batch_bytes < 1 or cpu_batch_bytes < 1 or tile_threshold < 1:
            raise ValueError("max_batch_bytes, cpu_batch_bytes and tile_threshold must be positive")
        self.batch_window = batch_window
        self.max_batch = max_batch
        self.tile_threshold = tile_threshold
        self.tile = tile
        self.overlap = overlap
        self.max_batch_bytes = max_batch_bytes
        self.cpu_batch_bytes = cpu_batch_bytes
        self._run_sync: RunSync = run_sync if run_sync is not None else _default_run_sync()
        self._spawn: Spawn | None = spawn
        self._on_queued = on_queued
        self._own_tg: TaskGroup | None = None
        self._tool_device: dict[str, str] = {}  # device type each tool ran on (set by the worker)
        self._queues: dict[str, list[_Unit]] = defaultdict(list)
        self._wake: dict[str, anyio.Event] = {}
        self._draining: set[str] = set()
        self._served: dict[str, dict[str, int]] = defaultdict(dict)  # tool -> job -> turn last served
        self._turn = 0
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        # Counters: the batch ones are written by worker threads, so all go under one lock.
        self._lock = threading.Lock()
        self._batch_sizes: deque[int] = deque(maxlen=_RECENT_BATCHES)
        self._batches_total = 0
        self._units_total = 0
        self._max_batch_size = 0
        self._tiles_run = 0
        self._tiled_requests = 0
        self._dropped_units = 0
        self._devices: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> BatchScheduler:
        """Run the batch loops in a task group of the scheduler's own until the block exits."""
        if self._own_tg is not None or self._spawn is not None:
            raise RuntimeError("the scheduler is running already (entered, or given spawn=)")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._own_tg = tg
        self._spawn = tg.start_soon
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        """Stop the batch loops; requests still queued finish with an error."""
        tg, self._own_tg, self._spawn = self._own_tg, None, None
        if tg is None:
            return None
        tg.cancel_scope.cancel()
        return await tg.__aexit__(*exc_info)

    # -- public ------------------------------------------------------------------------------
    async def submit(self, job: str, tool: str, image: np.ndarray) -> ToolResult:
        """Run ``tool`` on ``image`` (uint8 H x W x 3) for ``job``, batched with other calls to ``tool``.

        Returns when the result is final: an output, an error (a failing tool, an unknown tool
        name, the scheduler stopping before the tool ran) or cancelled (see :meth:`cancel`).

        Raises:
            RuntimeError: the scheduler is not running (neither entered nor given ``spawn``).
        """
        request = _Request(job=job, tool=tool, image=image)
        try:
            units = await anyio.to_thread.run_sync(self._make_units, request)
        except Exception as exc:
            request.error = f"{type(exc).__name__}: {exc}"
            return request.result()
        if request.tiles is not None:
            with self._lock:
                self._tiled_requests += 1
        if job in self._cancelled:
            self._finish(request, cancelled=True)
            return request.result()
        if tool not in self._draining:
            # Started before anything is queued, so a spawn that refuses leaves no orphan units;
            # the loop runs only once this coroutine yields, by which time the units are queued.
            spawn = self._spawn
            if spawn is None:
                raise RuntimeError("the scheduler is not running: enter it (async with) or give it spawn=")
            spawn(self._drain, tool)
            self._draining.add(tool)
            self._wake[tool] = anyio.Event()
            fill_now = False
        else:
            fill_now = True
        now = anyio.current_time()
        for unit in units:
            unit.queued_at = now
        self._queues[tool].extend(units)
        if self._on_queued is not None:
            self._on_queued(job, tool, len(units))
        if fill_now and self._can_fill(tool):
            self._wake[tool].set()
        await request.done.wait()
        return request.result()

    def cancel(self, job: str) -> int:
        """Drop ``job``'s queued units and finish its requests as cancelled; returns the units dropped.

        The job is remembered: its later requests finish cancelled without running.
        """
        self._cancelled[job] = None
        self._cancelled.move_to_end(job)
        while len(self._cancelled) > _CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        dropped = 0
        for tool, queue in self._queues.items():
            keep = []
            for unit in queue:
                if unit.request.job == job:
                    dropped += 1
                    self._finish(unit.request, cancelled=True)
                else:
                    keep.append(unit)
            self._queues[tool] = keep
        for served in self._served.values():
            served.pop(job, None)
        with self._lock:
            self._dropped_units += dropped
        log.info("executor.cancelled", job=job, dropped_units=dropped)
        return dropped

    def is_cancelled(self, job: str) -> bool:
        """Whether ``job`` was cancelled (among the last 4096 cancelled jobs)."""
        return job in self._cancelled

    def stats(self) -> BatchStats:
        """A snapshot of the counters (see :class:`BatchStats`)."""
        queued = sum(len(q) for q in self._queues.values())
        with self._lock:
            n = self._batches_total
            return BatchStats(
                batches=n,
                mean_batch_size=round(self._units_total / n, 3) if n else 0.0,
                max_batch_size=self._max_batch_size,
                units=self._units_total,
                tiles=self._tiles_run,
                tiled_requests=self._tiled_requests,
                dropped_units=self._dropped_units,
                queued_units=queued,
                devices=tuple(sorted(self._devices)),
                recent_batch_sizes=tuple(self._batch_sizes),
            )

    def tile_plan(self, tool: str, h: int, w: int, *, held: bool = False) -> tuple[int, int, int] | None:
        """``(scale, tile, overlap)`` when ``tool`` should tile an ``h x w`` image, else None (runs
        whole); ``held``: the tool runs with parameters estimated once (a whole-image tool may tile)."""
        info = TOOL_INFO.get(tool)
        if info is None or ("global" in info.tags and not held):
            return None
        per_pixel = _FLOAT_RGB * (1 + info.scale**2)
        if h * w <= self.tile_threshold and h * w * per_pixel <= self.max_batch_bytes:
            return None
        tile, overlap = self.tile, self.overlap
        while tile > 32 and tile * tile * per_pixel > self.max_batch_bytes:
            tile //= 2
            overlap = min(overlap, tile // 4)
        if tile >= h and tile >= w:
            return None
        return info.scale, tile, overlap

    # -- units -------------------------------------------------------------------------------
    def held_tool(self, tool: str, h: int, w: int) -> Any:
        """The tool instance when ``tool`` is a whole-image tool that runs in tiles with held
        parameters on an ``h x w`` image (see the module docstring), else None."""
        info = TOOL_INFO.get(tool)
        if info is None or "global" not in info.tags or self.tile_plan(tool, h, w, held=True) is None:
            return None
        instance = TOOLS.get(tool)
        if has_params(instance) and getattr(instance, "estimate_sample", None) in ESTIMATE_SAMPLES:
            return instance
        return None

    def _make_units(self, request: _Request) -> list[_Unit]:
        """Cut ``request``'s image into units (runs in a worker thread: tiling copies pixels)."""
        image = request.image
        h, w = image.shape[:2]
        info = TOOL_INFO.get(request.tool)
        scale = info.scale if info is not None else 1
        request.scale = scale
        plan = self.tile_plan(request.tool, h, w)
        held = self.held_tool(request.tool, h, w) if plan is None else None
        if held is not None:
            sample = np.ascontiguousarray(estimate_sample(image, held.estimate_sample))
            request.params = estimate_params(held, sample)
            plan = self.tile_plan(request.tool, h, w, held=True)
        if plan is None:  # stays a (possibly read-only) array; stacking the batch copies it
            if self.memory_cap is not None and info is not None and "global" in info.tags:
                need = whole_image_bytes(request.tool, h, w, scale)
                if need > self.memory_cap:
                    raise MemoryError(
                        f"tool {request.tool} must see the whole {w}x{h} image and would need about {_size(need)}, "
                        f"over the memory cap of {_size(self.memory_cap)}; raise the cap (agentir restore --memory-cap GB) or downscale the image"
                    )
            nbytes = h * w * _FLOAT_RGB * (1 + scale**2)
            if nbytes > self.max_batch_bytes:  # a "global" tool: it must see the whole image
                log.warning("executor.over_cap_untiled", tool=request.tool, shape=image.shape, bytes=nbytes, cap=self.max_batch_bytes)
            return [_Unit(request, -1, image, (h, w), nbytes)]
        _, tile, overlap = plan
        # Blob-store arrays are read-only and torch wants writable memory: one copy, then views.
        hwc = torch.from_numpy(np.array(image, dtype=np.uint8, order="C", copy=True))
        tiles, positions = extract_tiles(hwc.permute(2, 0, 1), tile, overlap)
        request.tiles, request.positions, request.overlap = tiles, positions, overlap
        request.tile_out = [None] * tiles.shape[0]
        request.pending = tiles.shape[0]
        th, tw = tiles.shape[2], tiles.shape[3]
        nbytes = th * tw * _FLOAT_RGB * (1 + scale**2)
        return [_Unit(request, k, tiles[k].permute(1, 2, 0), (th, tw), nbytes) for k in range(tiles.shape[0])]

    def _finish(self, request: _Request, *, cancelled: bool = False, error: str = "") -> None:
        if request.done.is_set():
            return
        if cancelled:
            request.cancelled = True
        if error and not request.error:
            request.error = error
        request.done.set()

    # -- batching ----------------------------------------------------------------------------
    async def _drain(self, tool: str) -> None:
        """Run ``tool``'s queued units batch by batch until its queue is empty."""
        try:
            while self._queues[tool]:
                # The window runs from the oldest unit's arrival (units that queued during the
                # previous batch have waited already); no wait once a full batch is queued.
                wait = self._queues[tool][0].queued_at + self.batch_window - anyio.current_time()
                if wait > 0 and not self._can_fill(tool):
                    with anyio.move_on_after(wait):
                        await self._wake[tool].wait()
                self._wake[tool] = anyio.Event()
                batch = self._take(tool)
                if not batch:
                    continue
                ran = False
                try:
                    await self._run_sync(self._run_batch, tool, batch)
                    ran = True
                finally:
                    for unit in batch:
                        r = unit.request
                        if r.finished:
                            self._finish(r)
                        elif not ran:  # stopped before or while the batch ran: no waiter may hang
                            self._finish(r, error="executor stopped before the tool ran")
        finally:
            self._draining.discard(tool)
            if self._queues[tool]:  # stopped with work left: nobody will run it
                for unit in self._queues.pop(tool):
                    self._finish(unit.request, error="executor stopped before the tool ran")

    def _cap(self, tool: str) -> int:
        """Byte cap of one batch of ``tool``: ``cpu_batch_bytes`` too where it runs on the CPU."""
        # The tool's device is known once it ran; before that, CPU unless CUDA exists at all.
        on_cpu = self._tool_device.get(tool, "cuda" if torch.cuda.is_available() else "cpu") == "cpu"
        return min(self.max_batch_bytes, self.cpu_batch_bytes) if on_cpu else self.max_batch_bytes

    def _can_fill(self, tool: str) -> bool:
        """Whether ``tool``'s queue holds at least one full batch (by count or by bytes)."""
        queue = self._queues[tool]
        return len(queue) >= self.max_batch or sum(u.nbytes for u in queue) >= self._cap(tool)

    def _take(self, tool: str) -> list[_Unit]:
        """Remove and return the next batch of ``tool``'s queue (round-robin over jobs, one shape, capped)."""
        queue = self._queues[tool]
        queue[:] = [u for u in queue if not u.request.finished]
        if not queue:
            return []
        per_job: dict[str, list[_Unit]] = {}
        for unit in queue:
            per_job.setdefault(unit.request.job, []).append(unit)
        # Least recently served job first; never-served jobs in arrival order.
        served = self._served[tool]
        order = sorted(per_job, key=lambda j: served.get(j, -1))
        shape = per_job[order[0]][0].shape
        lanes = [[u for u in per_job[j] if u.shape == shape] for j in order]
        cap = self._cap(tool)
        batch: list[_Unit] = []
        nbytes = 0
        full = False
        for depth in range(max(len(lane) for lane in lanes)):
            for lane in lanes:  # one unit per job per round: round-robin
                if depth >= len(lane):
                    continue
                unit = lane[depth]
                if len(batch) >= self.max_batch or (batch and nbytes + unit.nbytes > cap):
                    full = True
                    break
                batch.append(unit)
                nbytes += unit.nbytes
            if full:
                break
        taken = set(map(id, batch))
        queue[:] = [u for u in queue if id(u) not in taken]
        self._turn += 1
        for unit in batch:
            served[unit.request.job] = self._turn
        for job in list(served):  # forget jobs with nothing queued: their next request starts fresh
            if job not in per_job:
                served.pop(job)
        return batch

    def _run_batch(self, name: str, units: list[_Unit]) -> None:
        """Run one batch (worker thread); on failure retry unit by unit to isolate the bad one."""
        try:
            tool: Tool = TOOLS.get(name)
        except Exception as exc:
            for u in units:
                u.request.error = u.request.error or f"{type(exc).__name__}: {exc}"
            return
        self._tool_device[name] = tool_device(tool).type
        with self._lock:
            self._batch_sizes.append(len(units))
            self._batches_total += 1
            self._units_total += len(units)
            self._max_batch_size = max(self._max_batch_size, len(units))
        try:
            self._call(tool, units)
        except Exception as exc:
            if len(units) == 1:
                self._fail(name, units[0], exc)
            else:
                for u in units:  # isolate the failure to the unit that causes it
                    if u.request.finished:
                        continue
                    try:
                        self._call(tool, [u])
                    except Exception as exc1:
                        self._fail(name, u, exc1)
        for r in {id(u.request): u.request for u in units}.values():
            if r.tiles is not None and r.pending == 0 and not r.finished:
                try:
                    self._blend(r)
                except Exception as exc:
                    r.error = f"{type(exc).__name__}: {exc}"
                    log.warning("tool.blend_failed", tool=name, shape=r.image.shape, error=str(exc))

    @staticmethod
    def _fail(name: str, unit: _Unit, exc: Exception) -> None:
        r = unit.request
        where = f" on tile {unit.index} at {tuple(r.positions[unit.index].tolist())}" if unit.index >= 0 and r.positions is not None else ""
        r.error = r.error or f"{type(exc).__name__}: {exc}{where}"
        log.warning("tool.failed", tool=name, job=r.job, shape=tuple(unit.pixels.shape), tile=unit.index, error=str(exc))

    def _call(self, tool: Tool, units: list[_Unit]) -> None:
        held = [u for u in units if u.request.params is not None]
        if held:
            self._call_held(tool, held)
            units = [u for u in units if u.request.params is None]
            if not units:
                return
        t0 = time.perf_counter()
        device = tool_device(tool)
        with self._lock:
            self._devices.add(str(device))
        if all(isinstance(u.pixels, np.ndarray) for u in units):
            pixels = torch.from_numpy(np.stack([u.pixels for u in units]))
        else:
            pixels = torch.stack([u.pixels if isinstance(u.pixels, torch.Tensor) else torch.from_numpy(np.array(u.pixels)) for u in units])
        if device.type != "cpu":
            pixels = pixels.pin_memory().to(device, non_blocking=True)
        with torch.inference_mode():
            out = tool(to_float_nchw(pixels))
        h, w = units[0].shape
        s = tool.scale
        expected = (len(units), 3, h * s, w * s)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise RuntimeError(f"tool {tool.name!r} returned shape {got}, expected {expected}")
        whole = [i for i, u in enumerate(units) if u.index < 0]
        images = from_batch(out[whole]) if whole else []
        seconds = (time.perf_counter() - t0) / len(units)
        for i, image in zip(whole, images):
            r = units[i].request
            r.output, r.seconds, r.scale = image, r.seconds + seconds, s
        for i, u in enumerate(units):
            if u.index >= 0:
                r = u.request
                if r.tile_out and r.tile_out[u.index] is None:
                    r.tile_out[u.index] = out[i].detach().float()
                    r.pending -= 1
                r.seconds += seconds
                r.scale = s
        with self._lock:
            self._tiles_run += len(units) - len(whole)

    def _call_held(self, tool: Any, units: list[_Unit]) -> None:
        """Tiles of whole-image tools, each through ``tool.apply`` with its request's held parameters."""
        t0 = time.perf_counter()
        for u in units:
            r = u.request
            assert r.params is not None  # only held requests come here
            pixels = u.pixels.numpy() if isinstance(u.pixels, torch.Tensor) else np.asarray(u.pixels)
            out = apply_float(tool, pixels, r.params)
            if out.shape != pixels.shape:  # tiles blend back at scale 1
                raise RuntimeError(f"tool {tool.name!r} applied with held parameters gave {out.shape} for a {pixels.shape} tile")
            if r.tile_out and r.tile_out[u.index] is None:
                r.tile_out[u.index] = torch.from_numpy(np.clip(out, 0.0, 1.0)).permute(2, 0, 1).contiguous()
                r.pending -= 1
            r.scale = 1
        seconds = (time.perf_counter() - t0) / len(units)
        for u in units:
            u.request.seconds += seconds
        with self._lock:
            self._tiles_run += len(units)

    def _blend(self, r: _Request) -> None:
        """Blend a request's processed tiles into its output image (feathered weights)."""
        t0 = time.perf_counter()
        if r.positions is None or any(t is None for t in r.tile_out):
            raise RuntimeError("tiles missing at blending (internal error)")
        tiles = torch.stack([t for t in r.tile_out if t is not None])
        s = r.scale
        positions = r.positions * s
        h, w = r.image.shape[:2]
        out = blend_tiles(tiles, positions, (h * s, w * s), overlap=r.overlap * s)
        r.output = to_uint8_nhwc(out).cpu().numpy()
        r.seconds += time.perf_counter() - t0
        r.tile_out = []
