"""The Executor: runs restoration tools, batching calls to the same tool across jobs.

Requests for one tool that arrive within ``batch_window`` seconds (or until ``max_batch`` are
waiting) are grouped; images of the same shape are stacked into one ``N x 3 x H x W`` call
(different shapes run as separate calls until tiling lands). If a batched call fails, each image
is retried alone so that one bad input fails only its own job's step. Tools are built once and
cached by the tool registry; tool work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import structlog
import torch

from actors.base import Actor
from bus.base import Delivery
from bus.messages import Candidate, ExecuteStep, StepExecuted, Subjects
from kernels import to_float_nchw, to_uint8_nhwc
from toolbox.base import TOOLS, Tool

log = structlog.get_logger(__name__)


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """Stack uint8 HxWx3 images into a float N x 3 x H x W tensor in [0, 1] (a Triton kernel on CUDA)."""
    return to_float_nchw(torch.from_numpy(np.stack(images)))


def from_batch(batch: torch.Tensor) -> list[np.ndarray]:
    """Float N x 3 x H x W in [0, 1] -> list of uint8 HxWx3 (clamped, rounded half up)."""
    return list(to_uint8_nhwc(batch.detach().float().contiguous()).cpu().numpy())


@dataclass(eq=False)
class _Request:
    image: np.ndarray
    done: anyio.Event = field(default_factory=anyio.Event)
    output: np.ndarray | None = None
    error: str = ""
    seconds: float = 0.0


class Executor(Actor):
    name = "executor"
    subjects = (Subjects.EXECUTE,)
    group = "executor"
    concurrency = 32  # steps waiting for a batch do not hold a worker thread
    worker_threads = 1

    def __init__(self, bus: Any, blobs: Any, *, batch_window: float = 0.004, max_batch: int = 8, worker_threads: int = 1) -> None:
        self.worker_threads = worker_threads
        super().__init__(bus, blobs)
        self.batch_window = batch_window
        self.max_batch = max_batch
        self._queues: dict[str, list[_Request]] = defaultdict(list)
        self._full: dict[str, anyio.Event] = {}
        #: Sizes of the batches run so far (for metrics and the throughput benchmark).
        self.batch_sizes: list[int] = []

    # -- batching ---------------------------------------------------------------------------
    async def _submit(self, tool: str, image: np.ndarray) -> _Request:
        request = _Request(image)
        queue = self._queues[tool]
        queue.append(request)
        if len(queue) == 1:
            self._full[tool] = anyio.Event()
            if self.task_group is None:
                raise RuntimeError("executor is not running")
            self.task_group.start_soon(self._flush_later, tool)
        elif len(queue) >= self.max_batch:
            self._full[tool].set()
        await request.done.wait()
        return request

    async def _flush_later(self, tool: str) -> None:
        with anyio.move_on_after(self.batch_window):
            await self._full[tool].wait()
        batch, self._queues[tool] = self._queues[tool], []
        try:
            await self.offload(self._run_batch, tool, batch)
        finally:
            for request in batch:
                request.done.set()

    def _run_batch(self, name: str, requests: list[_Request]) -> None:
        try:
            tool: Tool = TOOLS.get(name)
        except Exception as exc:  # noqa: BLE001 - reported per request
            for r in requests:
                r.error = f"{type(exc).__name__}: {exc}"
            return
        by_shape: dict[tuple[int, ...], list[_Request]] = defaultdict(list)
        for r in requests:
            by_shape[r.image.shape].append(r)
        for group in by_shape.values():
            for chunk_start in range(0, len(group), self.max_batch):
                chunk = group[chunk_start : chunk_start + self.max_batch]
                self.batch_sizes.append(len(chunk))
                try:
                    self._call(tool, chunk)
                except Exception as exc:  # noqa: BLE001
                    if len(chunk) == 1:
                        chunk[0].error = f"{type(exc).__name__}: {exc}"
                        log.warning("tool.failed", tool=name, shape=chunk[0].image.shape, error=str(exc))
                        continue
                    for r in chunk:  # isolate the failure to the image that causes it
                        try:
                            self._call(tool, [r])
                        except Exception as exc1:  # noqa: BLE001
                            r.error = f"{type(exc1).__name__}: {exc1}"
                            log.warning("tool.failed", tool=name, shape=r.image.shape, error=str(exc1))

    @staticmethod
    def _call(tool: Tool, chunk: list[_Request]) -> None:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = tool(to_batch([r.image for r in chunk]))
        h, w = chunk[0].image.shape[:2]
        expected = (len(chunk), 3, h * tool.scale, w * tool.scale)
        if tuple(out.shape) != expected:
            raise RuntimeError(f"tool {tool.name!r} returned shape {tuple(out.shape)}, expected {expected}")
        images = from_batch(out)
        seconds = (time.perf_counter() - t0) / len(chunk)
        for r, image in zip(chunk, images):
            r.output, r.seconds = image, seconds

    # -- messages ---------------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        match delivery.message:
            case ExecuteStep() as step:
                image = np.asarray(self.blobs.get(step.image))
                results: dict[int, _Request] = {}

                async def run_one(i: int, tool: str) -> None:
                    results[i] = await self._submit(tool, image)

                async with anyio.create_task_group() as tg:
                    for i, tool in enumerate(step.tools):
                        tg.start_soon(run_one, i, tool)
                outputs = []
                for i, tool in enumerate(step.tools):
                    r = results[i]
                    if r.output is None:
                        outputs.append(Candidate(tool=tool, error=r.error or "tool produced no output", seconds=r.seconds))
                    else:
                        outputs.append(Candidate(tool=tool, image=self.blobs.put(r.output), seconds=r.seconds))
                await self.bus.publish(
                    Subjects.REFLECT,
                    StepExecuted(
                        job=step.job,
                        node=step.node,
                        subtask=step.subtask,
                        outputs=outputs,
                        remaining=step.remaining,
                        prior=step.prior,
                        reflection=step.reflection,
                    ),
                    correlation_id=step.job,
                    cause=delivery.envelope.id,
                )
            case other:
                raise TypeError(f"executor cannot handle {type(other).__name__}")
