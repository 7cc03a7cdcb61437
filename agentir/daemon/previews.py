"""Console previews: a viewing copy of each job's input and a thumbnail of every tool candidate.

A job's trace names each tool output it judged (``steps``: node, subtask, tool, level, verdict)
but holds no pixels, and the daemon deletes a job's input once it is done. The console shows the
search as a tree of thumbnails and the input beside the result, so the daemon keeps small JPEG
copies, written while the job runs:

* :class:`Previews` subscribes (no queue group: it only listens) to the Planner's subject on the
  Restorer's bus. A ``Perceived`` for a job the worker runs gives the input image; every
  ``Reflected`` gives the candidates judged so far. Pixels are read from the blob store and
  encoded in a worker thread, never on the event loop; the listener itself only queues work and
  never blocks the bus (a full queue drops the preview and counts it).
* Files live in ``DATA/spool/previews/<id>/``: ``input.jpg`` (longest side at most
  ``input_px``), ``c<k>.jpg`` per candidate (at most ``thumb_px``) and ``index.json`` naming what
  each file shows (node, subtask, tool, index within the node's subtask). At most
  ``max_candidates`` thumbnails per job; together under about 1.5 MB for the defaults. They are
  deleted with the job (retention, :meth:`~agentir.daemon.store.JobStore.cleanup`).
* Previews are best effort: an evicted blob, a full disk or a full queue leaves a hole (and a
  count in ``agentir_previews_dropped_total``), never a failed job.

Routes (``agentir.daemon.web``): ``GET /v1/jobs/{id}/previews`` (the index, with URLs) and
``GET /v1/jobs/{id}/previews/{name}`` (one JPEG).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import numpy as np
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agentir.bus.blobs import BlobRef, BlobStore
from agentir.bus.messages import Perceived, Reflected, Subjects
from agentir.daemon.metrics import Metrics
from agentir.daemon.store import JobStore

log = structlog.get_logger(__name__)

__all__ = ["PREVIEW_NAME", "Previews", "jpeg_thumbnail", "preview_file", "read_index", "remove_previews"]

#: File names a preview route serves (anything else is a 404; no path comes from the request).
PREVIEW_NAME = re.compile(r"^(input|c\d{1,4})\.jpg$")
_SUBTASK = re.compile(r"^[a-z_]{1,32}$")


@dataclass
class _Job:
    """What the listener knows of one running job's previews."""

    seen: set[tuple[int, str, int]] = field(default_factory=set)
    accounted: int = 0  # candidates written, failed or dropped
    thumbs: int = 0  # thumbnail files assigned
    input_done: bool = False
    changed: anyio.Event = field(default_factory=anyio.Event)
    index: dict[str, Any] = field(default_factory=lambda: {"input": None, "candidates": []})


@dataclass(frozen=True)
class _Work:
    job: str
    ref: BlobRef
    file: str
    px: int
    quality: int
    entry: dict[str, Any]


def jpeg_thumbnail(array: np.ndarray, px: int, quality: int) -> tuple[bytes, int, int]:
    """``array`` (uint8 RGB) as a JPEG whose longest side is at most ``px`` (never enlarged); with its width and height."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB")
    image.thumbnail((px, px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue(), image.width, image.height


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename (no fsync: a preview lost in a crash is harmless)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_index(folder: Path) -> dict[str, Any]:
    """A job's preview index (``{"input": ..., "candidates": [...]}``); empty when none was written."""
    try:
        value = json.loads((folder / "index.json").read_text("utf-8"))
    except (FileNotFoundError, ValueError):
        return {"input": None, "candidates": []}
    if not isinstance(value, dict):
        return {"input": None, "candidates": []}
    return value


class Previews:
    """Writes the console previews of the jobs this daemon runs (see the module docstring).

    Args:
        store: where the files go (``store.previews_path(job)``).
        metrics: counts bytes written and previews dropped.
        thumb_px / input_px: longest side of a candidate thumbnail / of the input copy.
        max_candidates: thumbnails kept per job (more candidates are counted, not written).
        queue: preview encodings waiting at most; more are dropped.
    """

    def __init__(
        self,
        store: JobStore,
        metrics: Metrics,
        *,
        thumb_px: int = 192,
        input_px: int = 1280,
        max_candidates: int = 64,
        quality: int = 80,
        queue: int = 256,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.thumb_px = thumb_px
        self.input_px = input_px
        self.max_candidates = max_candidates
        self.quality = quality
        self._jobs: dict[str, _Job] = {}
        self._queue_size = queue
        self._send: MemoryObjectSendStream[_Work] | None = None
        self._blobs: BlobStore | None = None

    # -- the worker's side ---------------------------------------------------------------------
    def begin(self, job: str) -> None:
        """Start collecting ``job``'s previews (the worker is about to run it)."""
        self._jobs[job] = _Job()

    def end(self, job: str) -> None:
        """Stop collecting ``job``'s previews (what is queued is still written)."""
        self._jobs.pop(job, None)

    async def settle(self, job: str, expected: int, timeout: float = 2.0) -> bool:
        """Wait until ``expected`` candidates of ``job`` are written (or dropped), at most
        ``timeout`` seconds; True when they are. Called before the job is marked done, so a
        console that opens the finished job finds every thumbnail."""
        state = self._jobs.get(job)
        if state is None:
            return False
        with anyio.move_on_after(timeout):
            while state.accounted < expected:
                await state.changed.wait()
            return True
        log.info("previews.settle_timeout", job=job, expected=expected, accounted=state.accounted)
        return False

    # -- the listener --------------------------------------------------------------------------
    async def run(self, bus: Any, blobs: BlobStore, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``bus`` and write previews until cancelled."""
        self._blobs = blobs
        sub = await bus.subscribe(Subjects.PLAN, max_pending=256)
        send, recv = anyio.create_memory_object_stream[_Work](self._queue_size)
        self._send = send
        async with anyio.create_task_group() as tg, send, recv:
            tg.start_soon(self._encode_loop, recv)
            task_status.started()
            try:
                async for delivery in sub:
                    try:
                        self._on_message(delivery.message)
                    except Exception as exc:  # a preview must never take the listener down
                        log.warning("previews.listen_failed", error=f"{type(exc).__name__}: {exc}")
                    await delivery.ack()
            finally:
                self._send = None
                with anyio.CancelScope(shield=True):
                    await sub.close()
                tg.cancel_scope.cancel()

    def _on_message(self, message: Any) -> None:
        match message:
            case Perceived(job=job, image=ref) if job in self._jobs:
                state = self._jobs[job]
                if not state.input_done:
                    state.input_done = True
                    self._queue(_Work(job, ref, "input.jpg", self.input_px, 85, {"kind": "input"}), state)
            case Reflected(job=job, node=node, subtask=subtask, candidates=candidates) if job in self._jobs:
                state = self._jobs[job]
                for index, cand in enumerate(candidates):
                    key = (int(node), str(subtask), index)
                    if key in state.seen:
                        continue  # an earlier wave, or a redelivery
                    state.seen.add(key)
                    # seq: the order of the trace's steps (the index keeps it whatever order encodings finish in)
                    entry = {"seq": len(state.seen) - 1, "node": int(node), "subtask": str(subtask), "index": index, "tool": str(cand.tool)}
                    if cand.image is None or not _SUBTASK.match(str(subtask)):
                        self._account(state, entry)
                        continue
                    if state.thumbs >= self.max_candidates:
                        self.metrics.inc("agentir_previews_dropped_total", reason="limit")
                        self._account(state, None)
                        continue
                    name = f"c{state.thumbs}.jpg"
                    state.thumbs += 1
                    self._queue(_Work(job, cand.image, name, self.thumb_px, self.quality, entry), state)
            case _:
                pass

    def _queue(self, work: _Work, state: _Job) -> None:
        try:
            if self._send is None:
                raise anyio.WouldBlock
            self._send.send_nowait(work)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.metrics.inc("agentir_previews_dropped_total", reason="queue_full")
            if work.file != "input.jpg":
                self._account(state, None)

    def _account(self, state: _Job, entry: dict[str, Any] | None) -> None:
        if entry is not None:
            state.index["candidates"].append(entry)
            state.index["candidates"].sort(key=lambda e: e.get("seq", 0))
        state.accounted += 1
        state.changed.set()
        state.changed = anyio.Event()

    async def _encode_loop(self, recv: MemoryObjectReceiveStream[_Work]) -> None:
        async for work in recv:
            state = self._jobs.get(work.job)
            try:
                written = await anyio.to_thread.run_sync(self._write, work)
            except Exception as exc:  # evicted blob, full disk ...: a hole in the previews
                log.info("previews.dropped", job=work.job, file=work.file, error=f"{type(exc).__name__}: {exc}")
                self.metrics.inc("agentir_previews_dropped_total", reason=type(exc).__name__)
                written = None
            if state is None:
                continue
            if work.file == "input.jpg":
                if written is not None:
                    state.index["input"] = written
                    await anyio.to_thread.run_sync(self._write_index, work.job, state.index)
                continue
            self._account(state, written if written is not None else {**work.entry, "file": None})
            if written is not None:
                await anyio.to_thread.run_sync(self._write_index, work.job, state.index)

    def _write(self, work: _Work) -> dict[str, Any]:
        if self._blobs is None:
            raise RuntimeError("previews are not running")
        if self.store.space_problem() is not None:
            raise OSError("the data disk is below its free-space margin")
        array = np.asarray(self._blobs.get(work.ref))
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        data, width, height = jpeg_thumbnail(array, work.px, work.quality)
        folder = self.store.previews_path(work.job)
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / work.file, data)
        self.metrics.inc("agentir_previews_written_bytes_total", float(len(data)))
        return {**work.entry, "file": work.file, "width": width, "height": height, "bytes": len(data)}

    def _write_index(self, job: str, index: dict[str, Any]) -> None:
        folder = self.store.previews_path(job)
        if not folder.is_dir():
            return
        try:
            _write_atomic(folder / "index.json", json.dumps(index).encode())
        except OSError as exc:
            log.info("previews.index_failed", job=job, error=str(exc))


def remove_previews(folder: Path) -> None:
    """Delete a job's preview folder (missing is fine)."""
    shutil.rmtree(folder, ignore_errors=True)


def preview_file(folder: Path, name: str) -> Path | None:
    """The path of preview ``name`` in ``folder``, or None for a name no preview has."""
    if not PREVIEW_NAME.match(name):
        return None
    return folder / name
