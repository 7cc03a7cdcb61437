"""A real cluster on loopback: a private redis-server, ``agentir worker`` processes, a front end.

Everything runs in the test's tmp folder and is killed on teardown, also when the test fails.
Tests skip, with one reason, where redis-server is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import fault_tools
import numpy as np
import pytest
from PIL import Image

from agentir.cluster.server import RedisServer, redis_server_path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NO_REDIS = "redis-server is not installed (apt-get install redis-server); the cluster tests need a real one"

fault_tools.register()  # the front end in this process validates job options naming them


def small_image(name: str = "astronaut") -> np.ndarray:
    return np.asarray(Image.open(ROOT / "examples" / "degraded" / f"{name}.png").convert("RGB"))


class Cluster:
    """Worker processes on one broker, their logs, and what the tests do to them."""

    def __init__(self, folder: Path, redis: RedisServer) -> None:
        self.folder = folder
        self.redis = redis
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: dict[int, Path] = {}
        self._stopped: set[int] = set()

    @property
    def url(self) -> str:
        return self.redis.url

    def start_workers(self, n: int, *args: str, sleep: float = 0.2, timeout: float = 90.0) -> list[int]:
        """Start ``n`` workers at once (visibility 2 s unless ``args`` say otherwise); returns their pids once all are ready."""
        env = dict(os.environ, AGENTIR_TEST_SLEEP=str(sleep), PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
        pending = []
        for _ in range(n):
            tag = uuid.uuid4().hex[:8]
            ready, log = self.folder / f"ready-{tag}", self.folder / f"worker-{tag}.log"
            cmd = [sys.executable, str(HERE / "fault_tools.py"), "--bus", self.url, "--visibility-timeout", "2", "--ready-file", str(ready), *args]
            with open(log, "wb") as fh:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=self.folder)
            self.workers[proc.pid] = proc
            self.logs[proc.pid] = log
            pending.append((proc, ready))
        deadline = time.monotonic() + timeout
        for proc, ready in pending:
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode} at start-up: {self.logs[proc.pid].read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker not ready within {timeout:g} s: {self.logs[proc.pid].read_text()[-3000:]}")
                time.sleep(0.05)
        return [proc.pid for proc, _ in pending]

    def events(self, pid: int) -> list[dict[str, Any]]:
        """A worker's log events (JSON lines)."""
        out = []
        for line in self.logs[pid].read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    out.append(event)
        return out

    def logged(self, event: str, pids: list[int] | None = None) -> list[dict[str, Any]]:
        return [e for pid in (pids or list(self.workers)) for e in self.events(pid) if e.get("event") == event]

    def signal(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)
        if sig == signal.SIGSTOP:
            self._stopped.add(pid)
        elif sig == signal.SIGCONT:
            self._stopped.discard(pid)

    def close(self) -> None:
        for pid, proc in self.workers.items():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if pid in self._stopped:
                        os.kill(pid, signal.SIGCONT)
                    proc.terminate()
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with append-only persistence, in this test's tmp folder."""
    if redis_server_path() is None:
        pytest.skip(NO_REDIS)
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer) -> Iterator[Cluster]:
    c = Cluster(tmp_path, redis)
    try:
        yield c
    finally:
        c.close()


class EventLog:
    """Every job outcome published on the broker, counted per job (to catch duplicates)."""

    def __init__(self) -> None:
        self.finished: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()


@pytest.fixture
async def outcomes(redis: RedisServer) -> AsyncIterator[EventLog]:
    """Counts JobFinished / JobFailed per job on the events subject while the test runs."""
    from agentir.bus.messages import JobFailed, JobFinished, Subjects
    from agentir.bus.redis import RedisBus

    log = EventLog()
    bus = await RedisBus(redis.url, reconnect_timeout=30).connect()
    sub = await bus.subscribe(Subjects.EVENTS, max_pending=1024)

    async def count() -> None:
        async for d in sub:
            match d.message:
                case JobFinished(job=job):
                    log.finished[job] += 1
                case JobFailed(job=job):
                    log.failed[job] += 1
            await d.ack()

    # A plain asyncio task, not a task group: pytest-asyncio may tear the fixture down in another task.
    task = asyncio.create_task(count())
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()


async def holder_of(url: str, subject: str, group: str, timeout: float = 30.0) -> tuple[int, str]:
    """Wait until some consumer holds an entry of ``subject`` (mid-step); returns its pid and the entry id."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        with anyio.fail_after(timeout):
            while True:
                with contextlib.suppress(Exception):
                    rows = await client.xpending_range(f"agentir:s:{subject}", group, min="-", max="+", count=10)
                    if rows:
                        consumer = rows[0]["consumer"].decode()
                        return int(consumer.split(".")[-3]), rows[0]["message_id"].decode()
                await anyio.sleep(0.02)
    finally:
        await client.aclose()


async def quiet(url: str, timeout: float = 30.0) -> None:
    """Wait until no queue group has work left (nothing undelivered, nothing unacknowledged)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        with anyio.fail_after(timeout):
            while True:
                busy = False
                for key in await client.keys("agentir:s:*"):
                    for g in await client.xinfo_groups(key):
                        if g["name"].startswith(b"_sub.") or g["name"].startswith(b"_sub"):
                            continue
                        if g["pending"] or g.get("lag"):
                            busy = True
                if not busy:
                    return
                await anyio.sleep(0.05)
    finally:
        await client.aclose()


async def wait_logged(cluster: Cluster, event: str | tuple[str, ...], pids: list[int] | None = None, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until a worker (of ``pids``, default all) logs ``event`` (or any of several); on a timeout the workers' events go to stderr."""
    events = (event,) if isinstance(event, str) else event
    try:
        with anyio.fail_after(timeout):
            while not (found := [e for name in events for e in cluster.logged(name, pids)]):
                await anyio.sleep(0.05)
    except TimeoutError:
        for pid in cluster.workers:
            lines = (" ".join(str(e.get(k, "")) for k in ("event", "job", "subject", "key", "error")) for e in cluster.events(pid))
            sys.stderr.write(f"worker {pid} logged:\n  " + "\n  ".join(lines) + "\n")
        raise
    return found
