"""The durable job store: SQLite (WAL, ``synchronous=FULL``) plus a spool folder of images.

Layout of the data folder::

    jobs.sqlite3            one row per job (state, client, options, trace, timings)
    spool/in/<id>           the uploaded bytes, exactly as received (validated before accept)
    spool/out/<id>.png      the result
    spool/previews/<id>/    the console's JPEG previews (agentir.daemon.previews), deleted with the job

Guarantees:

* **Accepted means durable.** :meth:`JobStore.submit` writes the input file (fsync of the file and
  its folder), then commits the row (WAL fsync) before it returns; the HTTP 202 is sent after.
* **Nothing accepted is lost.** :meth:`JobStore.open` puts jobs found ``running`` (the previous
  process died) back to ``queued``; a job that was running during ``max_attempts`` crashes is
  failed instead, so a poison image cannot crash-loop the daemon.
* **One result per job.** The result PNG is written atomically under the job's own id before the
  row says ``done``; a rerun after a crash overwrites the same file.
* **No path from user input.** Files are named by server-generated ids only (32 hex digits).
* **One daemon per data folder.** :meth:`JobStore.open` takes an exclusive lock on
  ``daemon.lock`` (released by the OS when the process dies, ``kill -9`` included); a second
  daemon on the same folder fails with :class:`DataDirLocked` instead of re-queueing the first
  one's running jobs.
* All SQLite work runs in one worker thread (never on the event loop), one call at a time.
* **A failure the database cannot take yet is not lost.** :meth:`JobStore.fail_or_defer` keeps a
  failure that cannot be written (the disk is full) in memory: every read (:meth:`JobStore.get`,
  :meth:`JobStore.list_jobs`, :meth:`JobStore.counts`, the queue limits of :meth:`JobStore.submit`)
  already shows the job ``failed`` (with ``"recorded": false``), and :meth:`JobStore.flush_pending`
  writes it once the disk has room. A process that dies first re-queues the job at the next start.

States: ``queued -> running -> done | failed | cancelled``; ``queued -> cancelled``;
``running -> queued`` (crash recovery, graceful shutdown, transient I/O errors).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from shutil import rmtree
from typing import Any, TypeVar

import anyio
import structlog

from agentir.imageio import write_bytes_atomic

log = structlog.get_logger(__name__)

T = TypeVar("T")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES: tuple[str, ...] = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
TERMINAL: frozenset[str] = frozenset({DONE, FAILED, CANCELLED})
ACTIVE: tuple[str, str] = (QUEUED, RUNNING)

_ID = re.compile(r"^[0-9a-f]{32}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    state      TEXT NOT NULL,
    client     TEXT NOT NULL,
    idem_key   TEXT,
    input_sha  TEXT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    policy     TEXT NOT NULL,
    options    TEXT NOT NULL,
    created    REAL NOT NULL,
    started    REAL,
    finished   REAL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    error      TEXT NOT NULL DEFAULT '',
    trace      TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(client, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE INDEX IF NOT EXISTS jobs_client ON jobs(client, state);
"""


# ----------------------------------------------------------------------------- errors


def rfc3339(t: float) -> str:
    """Unix seconds as RFC 3339 UTC with milliseconds (``2026-12-08T01:02:03.456Z``)."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreError(Exception):
    """Base of the job store's errors; ``status`` is the HTTP status the daemon answers with."""

    status = 500
    retry_after: int | None = None


class DataDirLocked(StoreError):
    """Another daemon process holds the data folder."""

    def __init__(self, root: str) -> None:
        self.root = root
        super().__init__(f"another agentir daemon is using the data folder {root}; stop it or pass a different --data")


class JobNotFound(StoreError):
    """No job with this id (never existed, or deleted by retention)."""

    status = 404

    def __init__(self, job: str) -> None:
        self.job = job
        super().__init__(f"no job with id {job!r}; check the id (finished jobs are deleted after the retention period)")


class JobFinishedError(StoreError):
    """The job is already in a terminal state, so it cannot be cancelled."""

    status = 409

    def __init__(self, job: str, state: str) -> None:
        self.job = job
        self.state = state
        super().__init__(f"job {job} is already {state}; nothing to cancel")


class ResultNotReady(StoreError):
    """The result of a job that is not ``done``."""

    status = 409

    def __init__(self, job: str, state: str, error: str = "") -> None:
        self.job = job
        self.state = state
        why = f": {error}" if error else ""
        hint = "wait for state 'done' (GET /v1/jobs/{id})" if state in ACTIVE else "it has no result"
        super().__init__(f"job {job} is {state}{why}; {hint}")


class QueueFull(StoreError):
    """Too many queued or running jobs in total."""

    status = 503

    def __init__(self, active: int, limit: int, retry_after: int) -> None:
        self.active = active
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"the queue is full ({active} jobs queued or running, limit {limit}); retry after {retry_after} s")


class ClientLimit(StoreError):
    """Too many queued or running jobs for one client."""

    status = 429

    def __init__(self, client: str, active: int, limit: int, retry_after: int) -> None:
        self.client = client
        self.active = active
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"client has {active} jobs queued or running (limit {limit}); wait for one to finish, retry after {retry_after} s")


class IdempotencyConflict(StoreError):
    """An idempotency key reused for a different image or options."""

    status = 422

    def __init__(self, key: str, job: str) -> None:
        self.key = key
        self.job = job
        super().__init__(f"Idempotency-Key {key!r} was used for a different request (job {job}); use a new key per distinct job")


class DiskFull(StoreError):
    """The data folder's disk has too little free space to accept a job."""

    status = 507

    def __init__(self, free: int, needed: int) -> None:
        self.free = free
        self.needed = needed
        super().__init__(f"the daemon's disk is full ({free} bytes free, needs {needed}); free space or retry later")


# ----------------------------------------------------------------------------- records
@dataclass
class JobRecord:
    """One job's row. ``trace`` is the pipeline's JSON trace once the job finished."""

    id: str
    seq: int
    state: str
    client: str
    idem_key: str | None
    input_sha: str
    width: int
    height: int
    policy: str
    options: dict[str, Any]
    created: float
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    error: str = ""
    trace: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self, *, with_trace: bool = True) -> dict[str, Any]:
        """The job as the HTTP API shows it (no client address, no file paths)."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "policy": self.policy,
            "options": self.options,
            "width": self.width,
            "height": self.height,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "attempts": self.attempts,
        }
        for name in ("created", "started", "finished"):  # RFC 3339 UTC beside each unix time
            t = out[name]
            out[f"{name}_at"] = None if t is None else rfc3339(t)
        if self.error:
            out["error"] = self.error
        if with_trace:
            out["trace"] = self.trace
        out.update(self.extra)
        return out


def _row(r: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=r["id"],
        seq=r["seq"],
        state=r["state"],
        client=r["client"],
        idem_key=r["idem_key"],
        input_sha=r["input_sha"],
        width=r["width"],
        height=r["height"],
        policy=r["policy"],
        options=json.loads(r["options"]),
        created=r["created"],
        started=r["started"],
        finished=r["finished"],
        attempts=r["attempts"],
        error=r["error"],
        trace=json.loads(r["trace"]) if r["trace"] else None,
    )


def valid_id(job: str) -> bool:
    """Whether ``job`` has the shape of a server-generated id (checked before any lookup)."""
    return bool(_ID.match(job))


def free_space(path: str | os.PathLike[str]) -> int:
    """Free bytes on the disk holding ``path`` (the only place the store asks; tests replace ``shutil`` here)."""
    return int(shutil.disk_usage(path).free)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota) is full: ENOSPC, EDQUOT or SQLite's "disk is full"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


# ----------------------------------------------------------------------------- the store
class JobStore:
    """SQLite + spool store; every public coroutine runs its work in one dedicated thread.

    Args:
        root: the data folder (created if missing).
        max_attempts: crash recoveries before a job is failed as a likely crasher.
        min_free_bytes: refuse new jobs while the disk has less free space than this.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_attempts: int = 3, min_free_bytes: int = 0) -> None:
        self.root = Path(root)
        self.inbox = self.root / "spool" / "in"
        self.outbox = self.root / "spool" / "out"
        self.previews = self.root / "spool" / "previews"
        self.db_path = self.root / "jobs.sqlite3"
        self.max_attempts = max_attempts
        self.min_free_bytes = min_free_bytes
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        #: failures that could not be written yet: job -> (finished, error, trace); see fail_or_defer
        self._pending: dict[str, tuple[float, str, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)

    # -- plumbing ----------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self._locked, fn, *args, limiter=self._limiter)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self._db is None:
                raise StoreError("the job store is closed; restart the daemon")
            return fn(self._db, *args)

    def input_path(self, job: str) -> Path:
        if not valid_id(job):
            raise JobNotFound(job)
        return self.inbox / job

    def result_path(self, job: str) -> Path:
        if not valid_id(job):
            raise JobNotFound(job)
        return self.outbox / f"{job}.png"

    def previews_path(self, job: str) -> Path:
        """The folder of ``job``'s console previews (see :mod:`agentir.daemon.previews`)."""
        if not valid_id(job):
            raise JobNotFound(job)
        return self.previews / job

    def space_problem(self, extra: int = 0) -> DiskFull | None:
        """A :class:`DiskFull` if the data disk has less than ``min_free_bytes + extra`` free, else None.

        The one free-space check: :meth:`submit` raises it (507), ``/readyz`` reports it (503).
        """
        needed = self.min_free_bytes + extra
        free = free_space(self.root)
        return DiskFull(free, needed) if free < needed else None

    @property
    def pending_count(self) -> int:
        """Failures held in memory because the database could not take them yet."""
        return len(self._pending)

    def _state_sql(self) -> tuple[str, list[Any]]:
        """The SQL expression of a row's state as readers see it (pending failures count as failed)."""
        if not self._pending:
            return "state", []
        ids = list(self._pending)
        return f"(CASE WHEN id IN ({','.join('?' * len(ids))}) THEN '{FAILED}' ELSE state END)", ids

    def _overlay(self, record: JobRecord) -> JobRecord:
        pending = self._pending.get(record.id)
        if pending is not None and record.state == RUNNING:
            record.state = FAILED
            record.finished, record.error = pending[0], pending[1]
            record.trace = pending[2]
            record.extra["recorded"] = False
        return record

    # -- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> dict[str, int]:
        """Create or open the store and recover from a crash; returns what recovery did."""
        return await anyio.to_thread.run_sync(self._open, limiter=self._limiter)

    def _open(self) -> dict[str, int]:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "daemon.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DataDirLocked(str(self.root)) from None
        self._lock_fd = fd
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30.0)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # every commit fsyncs the WAL: accepted means on disk
        db.executescript(_SCHEMA)
        with self._lock:
            self._db = db
        return self._locked(self._recover)

    def _recover(self, db: sqlite3.Connection) -> dict[str, int]:
        now = time.time()
        with db:
            db.execute("BEGIN IMMEDIATE")
            failed = db.execute(
                "UPDATE jobs SET state=?, finished=?, error=? WHERE state=? AND attempts>=?",
                (FAILED, now, f"the daemon stopped while running this job {self.max_attempts} times; the image may crash a tool", RUNNING, self.max_attempts),
            ).rowcount
            requeued = db.execute("UPDATE jobs SET state=? WHERE state=?", (QUEUED, RUNNING)).rowcount
        # Files without a row: uploads whose commit never happened, results of deleted jobs.
        known = {r[0] for r in db.execute("SELECT id FROM jobs")}
        orphans = 0
        for folder, suffix in ((self.inbox, ""), (self.outbox, ".png")):
            for path in folder.iterdir():
                name = path.name
                job = name[: -len(suffix)] if suffix and name.endswith(suffix) else name
                if name.startswith(".") or job not in known:
                    path.unlink(missing_ok=True)
                    orphans += 1
        stats = {"requeued": requeued, "failed": failed, "orphans": orphans}
        log.info("store.opened", path=str(self.db_path), **stats)
        return stats

    async def close(self) -> None:
        """Close the database (pending calls finish first)."""

        def _close() -> None:
            with self._lock:
                if self._db is not None:
                    if self._pending and self._flush_pending(self._db):
                        log.error("store.closed_with_unrecorded_failures", jobs=sorted(self._pending), hint="they are re-queued at the next start")
                    self._db.close()
                    self._db = None
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

        await anyio.to_thread.run_sync(_close, limiter=self._limiter)

    # -- submit ------------------------------------------------------------------------------
    async def submit(
        self,
        data: bytes,
        *,
        client: str,
        input_sha: str,
        width: int,
        height: int,
        policy: str,
        options: dict[str, Any],
        idem_key: str | None = None,
        max_queue: int,
        max_per_client: int,
        retry_after: int = 5,
    ) -> tuple[JobRecord, bool]:
        """Durably accept a job; returns ``(record, created)`` (``created`` False on an idempotent replay).

        Raises:
            IdempotencyConflict: ``idem_key`` was used by this client for a different request.
            QueueFull: ``max_queue`` jobs are queued or running.
            ClientLimit: ``client`` has ``max_per_client`` jobs queued or running.
            DiskFull: too little free space, or a write failed with ENOSPC.
        """
        return await self._run(self._submit, data, client, input_sha, width, height, policy, options, idem_key, max_queue, max_per_client, retry_after)

    def _submit(
        self,
        db: sqlite3.Connection,
        data: bytes,
        client: str,
        input_sha: str,
        width: int,
        height: int,
        policy: str,
        options: dict[str, Any],
        idem_key: str | None,
        max_queue: int,
        max_per_client: int,
        retry_after: int,
    ) -> tuple[JobRecord, bool]:
        options_json = json.dumps(options, sort_keys=True)
        if idem_key is not None:
            row = db.execute("SELECT * FROM jobs WHERE client=? AND idem_key=?", (client, idem_key)).fetchone()
            if row is not None:
                record = _row(row)
                if record.input_sha != input_sha or record.policy != policy or json.dumps(record.options, sort_keys=True) != options_json:
                    raise IdempotencyConflict(idem_key, record.id)
                return record, False
        state_sql, state_args = self._state_sql()
        active = db.execute(f"SELECT COUNT(*) FROM jobs WHERE {state_sql} IN (?, ?)", (*state_args, *ACTIVE)).fetchone()[0]
        if active >= max_queue:
            raise QueueFull(active, max_queue, retry_after)
        mine = db.execute(f"SELECT COUNT(*) FROM jobs WHERE client=? AND {state_sql} IN (?, ?)", (client, *state_args, *ACTIVE)).fetchone()[0]
        if mine >= max_per_client:
            raise ClientLimit(client, mine, max_per_client, retry_after)
        needed = self.min_free_bytes + len(data)
        full = self.space_problem(len(data))
        if full is not None:
            raise full
        job = uuid.uuid4().hex
        path = self.inbox / job
        try:
            write_bytes_atomic(path, data)
            now = time.time()
            with db:
                db.execute(
                    "INSERT INTO jobs (id, state, client, idem_key, input_sha, width, height, policy, options, created) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (job, QUEUED, client, idem_key, input_sha, width, height, policy, options_json, now),
                )
        except BaseException as exc:
            path.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull(free_space(self.root), needed) from None
            raise
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job,)).fetchone()
        return _row(row), True

    # -- worker side -------------------------------------------------------------------------
    async def claim(self) -> JobRecord | None:
        """Move the oldest queued job to ``running`` (counting an attempt) and return it, or None."""
        return await self._run(self._claim)

    def _claim(self, db: sqlite3.Connection) -> JobRecord | None:
        with db:
            row = db.execute(
                "UPDATE jobs SET state=?, started=?, attempts=attempts+1 WHERE seq=(SELECT seq FROM jobs WHERE state=? ORDER BY seq LIMIT 1) RETURNING *",
                (RUNNING, time.time(), QUEUED),
            ).fetchone()
        return _row(row) if row is not None else None

    async def read_input(self, job: str) -> bytes:
        """The uploaded bytes of ``job``."""
        return await anyio.to_thread.run_sync(self.input_path(job).read_bytes)

    async def finish(self, job: str, png: bytes, trace: dict[str, Any]) -> bool:
        """Store the result and mark ``job`` done; False (result discarded) if it is no longer running."""
        return await self._run(self._finish, job, png, trace)

    def _finish(self, db: sqlite3.Connection, job: str, png: bytes, trace: dict[str, Any]) -> bool:
        state = db.execute("SELECT state FROM jobs WHERE id=?", (job,)).fetchone()
        if state is None or state[0] != RUNNING:
            return False
        path = self.result_path(job)
        try:
            write_bytes_atomic(path, png)  # before the row says done: "done" always has its file
            with db:
                changed = db.execute(
                    "UPDATE jobs SET state=?, finished=?, trace=?, error='' WHERE id=? AND state=?",
                    (DONE, time.time(), json.dumps(trace), job, RUNNING),
                ).rowcount
        except BaseException:
            # A result whose row does not say done is no result: remove it, and any temporary file
            # a failed write left behind (the writer cleans up after itself; this is the backstop).
            path.unlink(missing_ok=True)
            for debris in self.outbox.glob(f".{path.name}.*"):
                debris.unlink(missing_ok=True)
            raise
        self.input_path(job).unlink(missing_ok=True)
        return changed == 1

    async def fail(self, job: str, error: str, trace: dict[str, Any] | None = None) -> bool:
        """Mark a running ``job`` failed with a one-line ``error``."""
        return await self._run(self._fail, job, error, trace)

    def _fail(self, db: sqlite3.Connection, job: str, error: str, trace: dict[str, Any] | None, finished: float | None = None) -> bool:
        with db:
            changed = db.execute(
                "UPDATE jobs SET state=?, finished=?, error=?, trace=? WHERE id=? AND state=?",
                (FAILED, time.time() if finished is None else finished, " ".join(error.split()), json.dumps(trace) if trace else None, job, RUNNING),
            ).rowcount
        if changed:
            self.input_path(job).unlink(missing_ok=True)
        return changed == 1

    async def fail_or_defer(self, job: str, error: str, trace: dict[str, Any] | None = None) -> bool:
        """Mark a running ``job`` failed like :meth:`fail`, even when the database cannot take it now.

        If the write fails (disk full, ...), the failure is kept in memory: reads show the job
        ``failed`` at once, and :meth:`flush_pending` records it later. Returns True if it was
        written now, False if it is pending. Never raises for a write failure.
        """
        try:
            return await self.fail(job, error, trace)
        except Exception as exc:
            log.error("store.fail_deferred", job=job, error=f"{type(exc).__name__}: {exc}")
            await self._run(self._defer, job, error, trace)
            return False

    def _defer(self, db: sqlite3.Connection, job: str, error: str, trace: dict[str, Any] | None) -> None:
        self._pending[job] = (time.time(), " ".join(error.split()), trace)

    async def flush_pending(self) -> int:
        """Write the failures :meth:`fail_or_defer` kept in memory; returns how many are still pending."""
        if not self._pending:
            return 0
        return await self._run(self._flush_pending)

    def _flush_pending(self, db: sqlite3.Connection) -> int:
        for job, (finished, error, trace) in list(self._pending.items()):
            try:
                self._fail(db, job, error, trace, finished)  # also removes the input
            except Exception as exc:
                log.info("store.pending_not_recorded", job=job, left=len(self._pending), error=f"{type(exc).__name__}: {exc}")
                break
            del self._pending[job]
            log.info("store.pending_recorded", job=job, state=FAILED)
        return len(self._pending)

    async def requeue(self, job: str, *, count_attempt: bool = False) -> bool:
        """Put a running ``job`` back in the queue (shutdown, transient errors)."""
        return await self._run(self._requeue, job, count_attempt)

    def _requeue(self, db: sqlite3.Connection, job: str, count_attempt: bool) -> bool:
        with db:
            changed = db.execute(
                "UPDATE jobs SET state=?, started=NULL, attempts=attempts-? WHERE id=? AND state=?",
                (QUEUED, 0 if count_attempt else 1, job, RUNNING),
            ).rowcount
        return changed == 1

    async def cancel(self, job: str) -> str:
        """Cancel ``job``; returns the state it was in (``queued`` or ``running``).

        Raises:
            JobNotFound: unknown id.
            JobFinishedError: already done, failed or cancelled.
        """
        return await self._run(self._cancel, job)

    def _cancel(self, db: sqlite3.Connection, job: str) -> str:
        with db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT state FROM jobs WHERE id=?", (job,)).fetchone()
            if row is None:
                raise JobNotFound(job)
            state = FAILED if job in self._pending else row[0]
            if state in TERMINAL:
                raise JobFinishedError(job, state)
            db.execute("UPDATE jobs SET state=?, finished=?, error=? WHERE id=?", (CANCELLED, time.time(), "cancelled by the client", job))
        self.input_path(job).unlink(missing_ok=True)
        return str(state)

    # -- reads -------------------------------------------------------------------------------
    async def get(self, job: str) -> JobRecord:
        """The job's record.

        Raises:
            JobNotFound: unknown or malformed id.
        """
        if not valid_id(job):
            raise JobNotFound(job)
        return await self._run(self._get, job)

    def _get(self, db: sqlite3.Connection, job: str) -> JobRecord:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job,)).fetchone()
        if row is None:
            raise JobNotFound(job)
        return self._overlay(_row(row))

    async def list_jobs(self, *, limit: int = 50, before: int | None = None, state: str | None = None) -> list[JobRecord]:
        """Newest first; ``before`` is the ``seq`` cursor from the previous page."""
        return await self._run(self._list, limit, before, state)

    def _list(self, db: sqlite3.Connection, limit: int, before: int | None, state: str | None) -> list[JobRecord]:
        sql = "SELECT * FROM jobs WHERE 1=1"
        args: list[Any] = []
        if before is not None:
            sql += " AND seq<?"
            args.append(before)
        if state is not None:
            state_sql, state_args = self._state_sql()
            sql += f" AND {state_sql}=?"
            args.extend([*state_args, state])
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [self._overlay(_row(r)) for r in db.execute(sql, args)]

    async def counts(self) -> dict[str, int]:
        """Number of jobs per state (every state present, zeros included)."""
        return await self._run(self._counts)

    def _counts(self, db: sqlite3.Connection) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        state_sql, state_args = self._state_sql()
        for state, n in db.execute(f"SELECT {state_sql} AS s, COUNT(*) FROM jobs GROUP BY s", state_args):
            out[state] = n
        return out

    # -- retention ---------------------------------------------------------------------------
    async def cleanup(self, older_than: float) -> int:
        """Delete finished jobs (rows and files) that finished before ``older_than`` (unix time)."""
        return await self._run(self._cleanup, older_than)

    def _cleanup(self, db: sqlite3.Connection, older_than: float) -> int:
        rows = db.execute("SELECT id FROM jobs WHERE state IN (?, ?, ?) AND finished < ?", (DONE, FAILED, CANCELLED, older_than)).fetchall()
        for (job,) in rows:
            # Files first: a crash in between leaves a row without a file, never an orphan file.
            self.result_path(job).unlink(missing_ok=True)
            self.input_path(job).unlink(missing_ok=True)
            rmtree(self.previews_path(job), ignore_errors=True)
        with db:
            db.executemany("DELETE FROM jobs WHERE id=?", [(job,) for (job,) in rows])
        if rows:
            log.info("store.cleanup", deleted=len(rows))
        return len(rows)
