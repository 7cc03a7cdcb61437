"""The stream engine: plans made on a scene's first frame and reused on the frames that follow.

Per frame (:meth:`StreamEngine.process`, one frame at a time, in order):

1. **Scene check.** A 64x48 grey thumbnail and the fused frame statistics
   (:func:`agentir.agent_policies.perception.framestats.frame_stats`, i.e. :func:`agentir.kernels.image_stats`)
   are compared with the previous frame's: a frame-size change, a thumbnail correlation below
   :attr:`StreamConfig.scene_correlation` or an exposure jump above
   :attr:`StreamConfig.scene_exposure` starts a new scene.
2. **Plan.** On a scene's first frame the full agent (perception, experience planner,
   execution with reflection and rollback, through the :class:`~agentir.pipeline.Restorer` and
   its default policies) restores the frame; the tools its trace accepted become the scene's
   chain. ``--every-frame`` waits for it; ``--realtime`` builds a provisional chain from a
   perception alone (planner order and tool ranking, no search) and swaps in the agent's chain
   when its search finishes in the background, so no frame waits seconds.
3. **Re-perceive** every :attr:`StreamConfig.reperceive_every` frames (one perception, no
   search); when the set of degradations present changes the scene is re-planned, otherwise
   only the tools' held parameters are re-estimated.
4. **Budget.** With :attr:`StreamConfig.max_frame_ms`, each subtask's tool is chosen among
   the tools the planner ranks for it so that the chain's cost fits the budget, maximising the
   planner's expected utility (the agent's pick first when it fits); costs are the shipped
   seconds per megapixel (:mod:`agentir.toolbox.costs`) until this stream has measured its own.
5. **Run** the chain. Tools that estimate parameters from the image (:mod:`agentir.toolbox.held`) get
   them estimated on the scene's first frame and on re-perceptions, smoothed in between
   (exponential moving average), held on every other frame: no flicker from a gain or a kernel
   that changes frame to frame. After the denoising step, :class:`agentir.toolbox.temporal.TemporalDenoiser`
   averages static pixels over up to 8 frames. Tools without held parameters go through the
   shared :class:`~agentir.actors.scheduler.BatchScheduler` when one is given (streams then share the
   Executor's batches), else run here in a worker thread.

Every result carries the frame's index, timestamp and stem (order and timing kept), the chain
used, the latency and what happened (``planned``, ``reused``, ``reperceived``, ``replanned``,
``scene_change``, ``error``).
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import cv2
import numpy as np
import structlog
import torch
import torch.nn.functional as F

from agentir.agent_policies.perception.framestats import frame_stats, stats_change
from agentir.agent_policies.planning import PlanContext
from agentir.kernels import rgb_to_ycbcr, to_float_nchw, to_uint8_nhwc
from agentir.toolbox.base import TOOL_INFO, TOOLS, run_on_rgb, tools_for
from agentir.toolbox.costs import tool_cost
from agentir.toolbox.held import ParamSmoother, estimate_params, has_params, run_with_params
from agentir.toolbox.temporal import TemporalDenoiser, estimate_noise_sigma
from agentir.toolbox.vocab import DEGRADATIONS, is_present

if TYPE_CHECKING:
    from agentir.actors.scheduler import BatchScheduler
    from agentir.pipeline import Restorer

log = structlog.get_logger(__name__)

__all__ = ["Frame", "StreamConfig", "StreamEngine", "StreamError", "StreamResult", "choose_chain"]

#: Cost assumed for a tool never measured (a plug-in): seconds per megapixel.
_UNKNOWN_COST = 10.0
#: Temporal stage cost assumed before it is measured: ms per megapixel.
_TEMPORAL_MS_PER_MP = 25.0


class StreamError(RuntimeError):
    """A stream cannot start or go on (a source that cannot be opened, a bad option); one line."""


@dataclass
class Frame:
    """One input frame: ``image`` is uint8 ``H x W x 3`` RGB, or None with ``error`` saying why
    (a frame that could not be decoded). ``timestamp`` is seconds from the stream's start."""

    index: int
    timestamp: float
    image: np.ndarray | None
    stem: str = ""
    error: str = ""
    #: When the frame entered the system (``time.perf_counter()``): latency counts from here.
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class StreamResult:
    """One output frame (``image`` None when ``error``) and what was done to it."""

    index: int
    timestamp: float
    stem: str
    image: np.ndarray | None
    event: str
    chain: list[str]
    scene: int
    latency_ms: float
    dropped: int = 0
    error: str = ""
    plan: list[str] = field(default_factory=list)
    trace: dict[str, Any] | None = None

    def meta(self) -> dict[str, Any]:
        """JSON-able metadata (no pixels)."""
        out: dict[str, Any] = {
            "index": self.index,
            "timestamp": round(self.timestamp, 6),
            "stem": self.stem,
            "event": self.event,
            "plan": list(self.plan),
            "chain": list(self.chain),
            "scene": self.scene,
            "latency_ms": round(self.latency_ms, 3),
            "dropped": self.dropped,
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class StreamConfig:
    """How a stream is restored (see the module docstring)."""

    #: Newest frame wins and planning runs in the background (drops counted); else every frame.
    realtime: bool = False
    #: Per-frame budget for the chain in ms (None: the agent's own tools, whatever they cost).
    max_frame_ms: float | None = 50.0
    #: Full perception every this many frames (0: only on scene changes).
    reperceive_every: int = 30
    #: Thumbnail correlation with the previous frame below this: a new scene.
    scene_correlation: float = 0.6
    #: Exposure change (luma / value / dark-channel mean, [0, 1]) above this: a new scene.
    scene_exposure: float = 0.12
    #: Weight of a new parameter estimate in the moving average (0 holds the first one).
    smoothing: float = 0.3
    #: Frames averaged by the temporal stage after denoising (1: off).
    temporal_frames: int = 8
    #: Its motion threshold (units of sigma / 5).
    temporal_threshold: float = 3.0
    #: Planning policy (None: the Restorer's default).
    policy: str | None = None
    #: Where the chain runs: ``auto`` (CUDA when there is one, else numpy), ``numpy`` (uint8
    #: fast paths, OpenCV), ``torch`` (the tools' torch paths on the CPU), ``cuda``.
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.max_frame_ms is not None and not (math.isfinite(self.max_frame_ms) and self.max_frame_ms > 0):
            raise StreamError(f"max_frame_ms must be a positive number of milliseconds, got {self.max_frame_ms}")
        if self.reperceive_every < 0:
            raise StreamError(f"reperceive_every must be 0 or more, got {self.reperceive_every}")
        if not 0.0 <= self.smoothing <= 1.0:
            raise StreamError(f"smoothing must be in [0, 1], got {self.smoothing}")
        if self.temporal_frames < 1:
            raise StreamError(f"temporal_frames must be at least 1, got {self.temporal_frames}")
        if self.device not in ("auto", "numpy", "torch", "cuda"):
            raise StreamError(f"device must be auto, numpy, torch or cuda, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise StreamError("device cuda was asked for, but torch sees no CUDA device here")

    def torch_device(self) -> torch.device | None:
        """The torch device the chain runs on, or None for the numpy path."""
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu") if self.device == "torch" else None


@dataclass
class _Stage:
    subtask: str
    tool: str
    smoother: ParamSmoother
    held: bool
    params: dict[str, float | str] | None = None


def _thumb(img: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if den < 1e-6:  # flat frames: equal means are the same scene
        return 1.0
    return float((a * b).sum() / den)


def chain_from_trace(trace: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``[(subtask, tool)]`` the agent's search ended with, in the order it applied them.

    For each subtask in ``trace["done"]``: the tool of its latest step judged ``accepted`` or
    ``best-of-failed`` (a subtask skipped without a kept output has none and is left out).
    """
    steps = list(trace.get("steps", ()))
    chain: list[tuple[str, str]] = []
    for subtask in trace.get("done", ()):
        rows = [r for r in steps if r.get("subtask") == subtask and r.get("verdict") in ("accepted", "best-of-failed")]
        if rows:
            best = max(rows, key=lambda r: int(r.get("node", 0)))
            chain.append((subtask, str(best["tool"])))
    return chain


def choose_chain(
    subtasks: Sequence[str],
    ranked: Mapping[str, Sequence[tuple[str, float]]],
    *,
    budget_ms: float | None,
    megapixels: float,
    cost_ms_per_mp: Mapping[str, float],
    preferred: Mapping[str, str] | None = None,
    overhead_ms: float = 0.0,
) -> list[tuple[str, str]]:
    """The chain ``[(subtask, tool)]`` with the highest total utility that fits ``budget_ms``.

    ``ranked[subtask]`` lists ``(tool, utility)`` best first; ``preferred`` (the agent's pick)
    gets a bonus of 1 so that it wins whenever it fits. Without a budget every subtask gets its
    preferred (else best-ranked) tool. When nothing fits, the cheapest chain.
    """
    preferred = dict(preferred or {})
    options: list[list[tuple[str, float, float]]] = []
    scale = 1.0
    for s in subtasks:
        cands = list(ranked.get(s, ()))
        if not cands:
            continue
        if budget_ms is None:
            pick = preferred.get(s) or cands[0][0]
            options.append([(pick, 0.0, 0.0)])
            continue
        row = []
        for tool, utility in cands:
            u = utility + (1.0 if preferred.get(s) == tool else 0.0)
            # Costs are per output megapixel; a x4 tool's output is 16x the input, and every
            # later stage works on it (``scale`` of the subtasks before this one).
            out_mp = megapixels * scale * (16.0 if s == "low_resolution" else 1.0)
            row.append((tool, u, cost_ms_per_mp.get(tool, _UNKNOWN_COST * 1000.0) * out_mp))
        if s == "low_resolution":
            scale *= 16.0
        options.append(row)
    kept = [s for s in subtasks if ranked.get(s)]
    if not options:
        return []
    best: tuple[float, float, tuple[tuple[str, float, float], ...]] | None = None
    cheapest: tuple[float, tuple[tuple[str, float, float], ...]] | None = None
    limit = None if budget_ms is None else budget_ms - overhead_ms
    for combo in itertools.product(*options):
        cost = sum(c for _, _, c in combo)
        util = sum(u for _, u, _ in combo)
        if cheapest is None or cost < cheapest[0]:
            cheapest = (cost, combo)
        if (limit is None or cost <= limit) and (best is None or util > best[0] or (util == best[0] and cost < best[1])):
            best = (util, cost, combo)
    chosen = best[2] if best is not None else cheapest[1] if cheapest is not None else ()
    return [(s, t) for s, (t, _, _) in zip(kept, chosen)]


class StreamEngine:
    """Restores one stream's frames in order, reusing plans (see the module docstring).

    Use as ``async with StreamEngine(restorer, config) as engine: result = await engine.process(frame)``.

    Args:
        restorer: a running :class:`~agentir.pipeline.Restorer` (its agent plans; its policies rank tools).
        config: the stream's options.
        scheduler: a running batch scheduler for tools without held parameters (the Restorer's
            Executor's, so that concurrent streams share batches); None runs them here.
        stream_id: names the stream in logs and the scheduler's round robin.
    """

    def __init__(
        self,
        restorer: Restorer,
        config: StreamConfig | None = None,
        *,
        scheduler: BatchScheduler | None = None,
        stream_id: str | None = None,
        spawn: Callable[..., object] | None = None,
    ) -> None:
        self.restorer = restorer
        self.config = config or StreamConfig()
        self.scheduler = scheduler
        self.stream_id = stream_id or f"stream-{uuid.uuid4().hex[:8]}"
        self.temporal = TemporalDenoiser(max_frames=self.config.temporal_frames, threshold=self.config.temporal_threshold)
        self.counters = {"plans": 0, "reperceptions": 0, "scene_changes": 0, "replans": 0, "errors": 0, "frames": 0}
        #: Measured ms per megapixel of each stage, exponential moving average.
        self.measured: dict[str, float] = {}
        self._stages: list[_Stage] = []
        self._plan: list[str] = []
        self._present: frozenset[str] | None = None
        self._levels: dict[str, str] = {}
        self._scores: dict[str, float] = {}
        self._scene = 0
        self._since_perceive = 0
        self._prev_thumb: np.ndarray | None = None
        self._prev_stats: dict[str, float] | None = None
        self._shape: tuple[int, ...] | None = None
        self._sigma = 0.0
        self._tg: anyio.abc.TaskGroup | None = None
        self._pending: Any = None  # (scene, chain, plan, trace) from a background search
        self._planning = False
        self._last_trace: dict[str, Any] | None = None
        self._uploaded: tuple[np.ndarray, torch.Tensor] | None = None
        #: Starts background work (the realtime search) when the engine is not entered itself.
        self._spawn = spawn

    async def __aenter__(self) -> StreamEngine:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        tg, self._tg = self._tg, None
        if tg is None:
            return None
        tg.cancel_scope.cancel()  # a background search still running is abandoned
        return await tg.__aexit__(*exc)

    # ------------------------------------------------------------------ planning helpers
    def _ranked(self, subtask: str) -> list[tuple[str, float]]:
        """The planner's ranking of ``subtask``'s tools with utilities (rank-based without them)."""
        planner = self.restorer.policies.planning(self.config.policy or self.restorer.policy)
        tools = list(tools_for(subtask))
        ctx = PlanContext(levels=self._levels, scores=self._scores, tools={d: tools_for(d) for d in DEGRADATIONS})
        order = planner.tool_order(subtask, ctx) if tools else []
        scores_fn = getattr(planner, "tool_scores", None)
        scores: Mapping[str, float] = {}
        if callable(scores_fn):
            scores = scores_fn(subtask, str(self._levels.get(subtask, "high")), order)
        return [(t, float(scores.get(t, -i * 0.1))) for i, t in enumerate(order)]

    def _cost_table(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in TOOL_INFO:
            shipped = tool_cost(name)
            out[name] = self.measured.get(name, (shipped if shipped is not None else _UNKNOWN_COST) * 1000.0)
        return out

    def _build(self, subtasks: Sequence[str], preferred: Mapping[str, str], shape: tuple[int, ...]) -> None:
        mp = shape[0] * shape[1] / 1e6
        ranked = {s: self._ranked(s) for s in subtasks}
        overhead = self.measured.get("temporal", _TEMPORAL_MS_PER_MP) * mp if "noise" in subtasks and self.config.temporal_frames > 1 else 0.0
        chain = choose_chain(
            subtasks, ranked, budget_ms=self.config.max_frame_ms, megapixels=mp, cost_ms_per_mp=self._cost_table(), preferred=preferred, overhead_ms=overhead
        )
        old = {(s.subtask, s.tool): s for s in self._stages}
        stages = []
        for subtask, tool in chain:
            kept = old.get((subtask, tool))
            if kept is not None:
                stages.append(kept)
                continue
            tool_obj = TOOLS.get(tool)
            stages.append(_Stage(subtask=subtask, tool=tool, smoother=ParamSmoother(self.config.smoothing), held=has_params(tool_obj)))
        self._stages = stages

    def _perceive_sync(self, image: np.ndarray) -> tuple[dict[str, str], dict[str, float]]:
        perception = self.restorer.perception.perceive([image])[0]
        return dict(perception.levels), dict(perception.scores)

    async def _perceive(self, image: np.ndarray) -> None:
        levels, scores = await anyio.to_thread.run_sync(self._perceive_sync, image)
        self._levels, self._scores = levels, scores
        self.counters["reperceptions"] += 1

    def _present_now(self) -> frozenset[str]:
        return frozenset(d for d in DEGRADATIONS if is_present(self._levels.get(d, "very_low")))

    async def _search(self, image: np.ndarray, scene: int) -> tuple[int, list[tuple[str, str]], list[str], dict[str, Any]]:
        result = await self.restorer.restore(image, policy=self.config.policy, job=f"{self.stream_id}-s{scene}-{uuid.uuid4().hex[:6]}")
        return scene, chain_from_trace(result.trace), list(result.trace.get("plan", ())), result.trace

    def _adopt(self, scene: int, chain: list[tuple[str, str]], plan: list[str], trace: dict[str, Any], shape: tuple[int, ...]) -> None:
        if scene != self._scene:
            return  # a search for a scene that has ended
        self.counters["plans"] += 1
        self._plan = plan
        self._last_trace = trace
        levels = trace.get("perception")
        if isinstance(levels, dict):
            self._levels = {str(k): str(v) for k, v in levels.items()}
            self._scores = {str(k): float(v) for k, v in dict(trace.get("scores", {})).items()}
        self._present = self._present_now()
        subtasks = [s for s, _ in chain]
        self._build(subtasks, dict(chain), shape)

    async def _plan_scene(self, image: np.ndarray, *, wait: bool) -> None:
        scene = self._scene
        if wait:
            try:
                found = await self._search(image, scene)
            except Exception as exc:  # the agent failed on this frame: a chain from perception alone
                log.warning("stream.plan_failed", stream=self.stream_id, error=str(exc))
            else:
                self._adopt(*found, image.shape)
                return
            await self._provisional(image)
            return
        # Realtime: a provisional chain from one perception, the agent's search in the background.
        await self._provisional(image)
        spawn = self._tg.start_soon if self._tg is not None else self._spawn
        if spawn is None:
            raise RuntimeError("StreamEngine was not entered (and was given no spawn=)")
        if not self._planning:
            self._planning = True
            spawn(self._background_search, image.copy(), scene)

    async def _provisional(self, image: np.ndarray) -> None:
        """A chain from one perception: the planner's order and tool ranking, no search."""
        await self._perceive(image)
        self._present = self._present_now()
        planner = self.restorer.policies.planning(self.config.policy or self.restorer.policy)
        present = sorted(self._present)
        ctx = PlanContext(levels=self._levels, scores=self._scores, tools={d: tools_for(d) for d in DEGRADATIONS})
        self._plan = list(planner.plan(present, ctx)) if present else []
        self._build(self._plan, {}, image.shape)

    async def _background_search(self, image: np.ndarray, scene: int) -> None:
        try:
            self._pending = (*(await self._search(image, scene)), image.shape)
        except Exception as exc:  # the provisional chain goes on
            log.warning("stream.plan_failed", stream=self.stream_id, error=str(exc))
        finally:
            self._planning = False

    # ------------------------------------------------------------------ per frame
    def _run_stage(self, stage: _Stage, image: np.ndarray, estimate: bool) -> np.ndarray:
        """One stage on the numpy path (held parameters, or the tool run directly), then the
        temporal step after denoising."""
        t0 = time.perf_counter()
        tool = TOOLS.get(stage.tool)
        if stage.held:
            if estimate or stage.params is None:
                stage.params = stage.smoother.update(estimate_params(tool, image))  # type: ignore[arg-type]
            out = run_with_params(tool, image, stage.params)  # type: ignore[arg-type]
        else:
            out = run_on_rgb(tool, image)
        mp = out.shape[0] * out.shape[1] / 1e6  # costs are per output megapixel
        self._measure(stage.tool, (time.perf_counter() - t0) * 1000.0 / max(mp, 1e-6))
        return self._temporal(out, mp) if stage.subtask == "noise" else out

    def _run_chain(self, image: np.ndarray, estimate: bool) -> np.ndarray:
        device = self.config.torch_device()
        if device is not None:
            return self._run_chain_torch(image, estimate, device)
        out = image
        for stage in list(self._stages):
            out = self._run_stage(stage, out, estimate)
        return out

    def _run_chain_torch(self, image: np.ndarray, estimate: bool, device: torch.device) -> np.ndarray:
        """The chain on ``device``: the frame is converted there once (:func:`agentir.kernels.to_float_nchw`),
        each tool runs its torch path (or the Tool contract), the temporal stage its torch step, and
        the result comes back once (:func:`agentir.kernels.to_uint8_nhwc`). Parameters are estimated on
        the CPU, on estimate frames only."""
        with torch.inference_mode():
            uploaded, self._uploaded = self._uploaded, None
            if uploaded is not None and uploaded[0] is image:  # the scene check put it there already
                x = uploaded[1]
            else:
                x = to_float_nchw(torch.from_numpy(np.ascontiguousarray(image))[None].to(device))
            for stage in list(self._stages):
                t0 = time.perf_counter()
                tool = TOOLS.get(stage.tool)
                fast = getattr(tool, "apply_torch", None)
                if stage.held:
                    if estimate or stage.params is None:
                        host = to_uint8_nhwc(x.contiguous()).cpu().numpy()[0]
                        stage.params = stage.smoother.update(estimate_params(tool, host))  # type: ignore[arg-type]
                    if callable(fast):
                        x = fast(x, stage.params).clamp_(0.0, 1.0)
                    else:
                        host = to_uint8_nhwc(x.contiguous()).cpu().numpy()[0]
                        x = to_float_nchw(torch.from_numpy(run_with_params(tool, host, stage.params))[None].to(device))  # type: ignore[arg-type]
                else:
                    x = tool(x).clamp_(0.0, 1.0)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                mp = x.shape[2] * x.shape[3] / 1e6
                self._measure(stage.tool, (time.perf_counter() - t0) * 1000.0 / max(mp, 1e-6))
                if stage.subtask == "noise" and self.config.temporal_frames > 1:
                    t1 = time.perf_counter()
                    x = self.temporal.step_torch(x[0], self._sigma)[None]
                    self._measure("temporal", (time.perf_counter() - t1) * 1000.0 / max(mp, 1e-6))
            return to_uint8_nhwc(x.contiguous()).cpu().numpy()[0]

    def _temporal(self, out: np.ndarray, mp: float) -> np.ndarray:
        if self.config.temporal_frames <= 1:
            return out
        t0 = time.perf_counter()
        avg = self.temporal.step(out.astype(np.float32) * np.float32(1.0 / 255.0), self._sigma)
        self._measure("temporal", (time.perf_counter() - t0) * 1000.0 / max(mp, 1e-6))
        return np.clip(avg * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _measure(self, name: str, ms_per_mp: float) -> None:
        old = self.measured.get(name)
        self.measured[name] = ms_per_mp if old is None else 0.8 * old + 0.2 * ms_per_mp

    async def _run_frame(self, image: np.ndarray, estimate: bool) -> np.ndarray:
        stages = list(self._stages)
        if self.scheduler is None or all(s.held for s in stages) or self.config.torch_device() is not None:
            return await anyio.to_thread.run_sync(self._run_chain, image, estimate)
        # Tools without held parameters go through the shared scheduler (batched across streams).
        out = image
        for stage in stages:
            if stage.held:
                out = await anyio.to_thread.run_sync(self._run_stage, stage, out, estimate)
                continue
            t0 = time.perf_counter()
            result = await self.scheduler.submit(self.stream_id, stage.tool, out)
            if result.output is None:
                raise RuntimeError(f"tool {stage.tool} failed: {result.error or 'cancelled'}")
            out = result.output
            mp = out.shape[0] * out.shape[1] / 1e6
            self._measure(stage.tool, (time.perf_counter() - t0) * 1000.0 / max(mp, 1e-6))
            if stage.subtask == "noise":
                out = await anyio.to_thread.run_sync(self._temporal, out, mp)
        return out

    def _scene_check(self, image: np.ndarray) -> tuple[bool, dict[str, float]]:
        # Statistics of a quarter-size copy: the means that detect a cut barely move, and the
        # torch reference of image_stats (the CPU path) costs ~16x less.
        device = self.config.torch_device()
        if device is not None and min(image.shape[:2]) >= 32:
            stats, thumb = self._scene_signals_torch(image, device)
        else:
            small = cv2.resize(image, (max(8, image.shape[1] // 4), max(8, image.shape[0] // 4)), interpolation=cv2.INTER_AREA)
            stats = frame_stats([small])[0]
            thumb = _thumb(small)
        changed = False
        if self._shape is not None and image.shape != self._shape:
            changed = True
        elif self._prev_thumb is not None and self._prev_stats is not None:
            corr = _correlation(thumb, self._prev_thumb)
            changed = corr < self.config.scene_correlation or stats_change(stats, self._prev_stats) > self.config.scene_exposure
        self._prev_thumb, self._prev_stats, self._shape = thumb, stats, image.shape
        return changed, stats

    def _scene_signals_torch(self, image: np.ndarray, device: torch.device) -> tuple[dict[str, float], np.ndarray]:
        """The scene check's statistics and thumbnail computed on ``device`` (the frame is uploaded
        once and kept for the chain): :func:`agentir.kernels.image_stats` on a quarter-size copy, and the
        thumbnail from the BT.601 luma of :func:`agentir.kernels.rgb_to_ycbcr`."""
        with torch.inference_mode():
            x = to_float_nchw(torch.from_numpy(np.ascontiguousarray(image))[None].to(device))
            self._uploaded = (image, x)
            small = F.avg_pool2d(x, 4)
            stats = frame_stats(small)[0]
            luma = rgb_to_ycbcr(F.adaptive_avg_pool2d(small, (48, 64)))[0, 0]
            return stats, (luma * 255.0).float().cpu().numpy()

    async def process(self, frame: Frame) -> StreamResult:
        """Restore one frame (the next in order); never raises for a bad frame: the result says ``error``."""
        self.counters["frames"] += 1
        if frame.image is None or frame.error:
            self.counters["errors"] += 1
            return self._result(frame, None, "error", error=frame.error or "no image")
        image = frame.image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
            self.counters["errors"] += 1
            return self._result(
                frame, None, "error", error=f"frame {frame.index} is not a uint8 H x W x 3 RGB image of at least 8 x 8 pixels (got {image.dtype} {image.shape})"
            )
        try:
            return await self._process(frame, image)
        except Exception as exc:  # one bad frame never ends the stream
            self.counters["errors"] += 1
            log.warning("stream.frame_failed", stream=self.stream_id, frame=frame.index, error=str(exc))
            return self._result(frame, None, "error", error=f"frame {frame.index}: {type(exc).__name__}: {exc}")

    async def _process(self, frame: Frame, image: np.ndarray) -> StreamResult:
        first = self._present is None
        changed, _ = await anyio.to_thread.run_sync(self._scene_check, image)
        event = "reused"
        estimate = False
        trace = None
        if self._pending is not None:  # a background search finished: adopt its chain
            pending, self._pending = self._pending, None
            self._adopt(*pending)
            estimate = True
            trace = self._last_trace
        if first or changed:
            if changed:
                self.counters["scene_changes"] += 1
                self._scene += 1
                event = "scene_change"
            else:
                event = "planned"
            self.temporal.reset()
            for s in self._stages:
                s.smoother.reset()
                s.params = None
            self._sigma = float(await anyio.to_thread.run_sync(lambda: estimate_noise_sigma(image.astype(np.float32) / 255.0)))
            await self._plan_scene(image, wait=not self.config.realtime)
            trace = self._last_trace if not self.config.realtime else None
            self._since_perceive = 0
            estimate = True
        else:
            self._since_perceive += 1
            every = self.config.reperceive_every
            if every and self._since_perceive >= every:
                self._since_perceive = 0
                await self._perceive(image)
                estimate = True
                event = "reperceived"
                if self._present_now() != self._present:
                    self.counters["replans"] += 1
                    event = "replanned"
                    self.temporal.reset()
                    self._sigma = float(estimate_noise_sigma(image.astype(np.float32) / 255.0))
                    await self._plan_scene(image, wait=not self.config.realtime)
                    trace = self._last_trace if not self.config.realtime else None
        out = await self._run_frame(image, estimate)
        return self._result(frame, out, event, trace=trace)

    def _result(self, frame: Frame, image: np.ndarray | None, event: str, *, error: str = "", trace: dict[str, Any] | None = None) -> StreamResult:
        return StreamResult(
            index=frame.index,
            timestamp=frame.timestamp,
            stem=frame.stem,
            image=image,
            event=event,
            chain=[s.tool for s in self._stages]
            + (["temporal"] if any(s.subtask == "noise" for s in self._stages) and self.config.temporal_frames > 1 else []),
            plan=list(self._plan),
            scene=self._scene,
            latency_ms=(time.perf_counter() - frame.arrived) * 1000.0,
            error=error,
            trace=trace,
        )

    def stats(self) -> dict[str, Any]:
        """Counters: frames, plans, reperceptions, scene changes, replans, errors; measured costs."""
        return {**self.counters, "ms_per_mp": {k: round(v, 2) for k, v in sorted(self.measured.items())}}
