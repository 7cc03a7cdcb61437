"""``agentir worker``: the actors in one process, on a Redis bus shared with other machines.

Run a front end (``agentir serve --bus redis://HOST:6379/0``) and any number of workers::

    agentir worker --bus redis://HOST:6379/0                          # all four actors
    agentir worker --bus redis://HOST:6379/0 --actors executor --concurrency 2

Workers can join and leave at any time: each actor's messages are shared by all the workers that
run it (Redis consumer groups); what a dead or stalled worker held is handed to another after
``--visibility-timeout`` seconds; a message that keeps killing its workers is dead-lettered after
``--max-deliveries`` and its job fails with that reason. The Planner keeps each job's search in
Redis (compare-and-set per decision), so any worker's Planner continues any job. See
``docs/CLUSTER.md``.

Exit codes: 0 stopped by SIGTERM/SIGINT; 1 the broker is unreachable or refused us (one line
on stderr naming the URL); 2 a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import structlog

from agentir.logs import configure_logging

__all__ = ["build_worker_parser", "dead_letter_failure", "main_worker", "run_worker"]

log = structlog.get_logger(__name__)


def build_worker_parser(prog: str = "agentir worker") -> argparse.ArgumentParser:
    from agentir.actors.supervisor import ACTOR_NAMES

    p = argparse.ArgumentParser(prog=prog, description="Run agentir actors in this process on a shared Redis bus (see docs/CLUSTER.md).")
    p.add_argument("--bus", required=True, metavar="URL", help="the broker, redis://HOST:6379/0 (the front end's --bus)")
    p.add_argument("--actors", default=",".join(ACTOR_NAMES), help=f"comma-separated actors to run here (default: all, {','.join(ACTOR_NAMES)})")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="images perceived / tool calls run at once per actor (default 1: one core)")
    p.add_argument("--torch-threads", type=int, default=1, metavar="N", help="torch intra-op threads (default 1; scale with worker processes)")
    p.add_argument("--perception", default="analytic", help="perception policy (default analytic; the front end's)")
    p.add_argument(
        "--memory-cap",
        type=float,
        default=None,
        metavar="GB",
        help="most memory a tool that must see the whole image may use on one image; over it that tool is skipped for another",
    )
    p.add_argument("--plugins", action="append", default=[], metavar="FILE", help="tool plug-in TOML file (repeatable; also AGENTIR_PLUGINS)")
    p.add_argument("--prefix", default="agentir", help="key prefix in Redis (default agentir; the front end's)")
    p.add_argument("--visibility-timeout", type=float, default=30.0, metavar="S", help="seconds before a silent worker's messages go to another (default 30)")
    p.add_argument("--max-deliveries", type=int, default=5, metavar="N", help="deliveries of one message before it is dead-lettered (default 5)")
    p.add_argument("--ready-file", default=None, metavar="FILE", help="write the process id here once the actors are running")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-console", action="store_true", help="console log lines instead of JSON")
    return p


def dead_letter_failure(data: bytes, attempts: int, reason: str) -> tuple[str, str] | None:
    """The job a dead-lettered message belonged to and the one-line error to fail it with, if any."""
    try:
        envelope = msgpack.unpackb(data, raw=False)
    except Exception:
        return None  # garbage: no job to fail
    if not isinstance(envelope, dict):
        return None
    body = envelope.get("b")
    job = body.get("job") if isinstance(body, dict) else None
    job = job if isinstance(job, str) and job else envelope.get("cid")
    if not isinstance(job, str) or not job:
        return None
    kind = envelope.get("k") if isinstance(envelope.get("k"), str) else "message"
    return job, f"job {job} failed: its {kind} message was dead-lettered after {attempts} deliveries ({reason}); the step kept failing or killing its worker"


async def run_worker(args: argparse.Namespace) -> None:
    """Connect, start the chosen actors, serve until SIGTERM/SIGINT; hands held messages back on exit."""
    import anyio

    import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools
    from agentir.actors.supervisor import Supervisor, build_actors
    from agentir.agent_policies.registry import Policies
    from agentir.bus.messages import JobFailed, Subjects
    from agentir.bus.redis import DeadLetter, RedisBus, RedisStateStore
    from agentir.bus.redis_blobs import RedisBlobStore
    from agentir.settings import Settings
    from agentir.toolbox.plugins import ensure_plugins

    names = [n.strip() for n in args.actors.split(",") if n.strip()]
    settings = Settings.from_env()
    for path in [*settings.plugins, *args.plugins]:
        ensure_plugins(path)
    policies = Policies(settings.policies)
    perception = policies.perception(args.perception)

    bus: RedisBus

    async def on_dead_letter(letter: DeadLetter) -> None:
        failure = dead_letter_failure(letter.data, letter.attempts, letter.reason)
        if failure is not None:
            job, error = failure
            log.error("job.dead_lettered", job=job, subject=letter.subject, attempts=letter.attempts, reason=letter.reason)
            await bus.publish(Subjects.EVENTS, JobFailed(job=job, error=error), correlation_id=job)

    bus = RedisBus(
        args.bus,
        prefix=args.prefix,
        visibility_timeout=args.visibility_timeout,
        max_deliveries=args.max_deliveries,
        on_dead_letter=on_dead_letter,
    )
    blobs = RedisBlobStore(args.bus, prefix=args.prefix)
    try:
        await bus.connect()
        await anyio.to_thread.run_sync(blobs.ping)
        executor_options = {"memory_cap": int(args.memory_cap * 2**30)} if args.memory_cap else None
        factories = build_actors(
            bus,
            blobs,
            perception=perception,
            policies=policies,
            names=names,
            state=RedisStateStore(bus),
            concurrency=args.concurrency,
            executor_options=executor_options,
        )
        supervisor = Supervisor(factories)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            log.info("worker.ready", actors=names, bus=bus.consumer_id, pid=os.getpid())
            if args.ready_file:
                from agentir.bus.files import write_text_atomic

                write_text_atomic(args.ready_file, f"{os.getpid()}\n")
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("worker.signal", signal=signal.Signals(signum).name)
                    break
            supervisor.stop()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            policies.flush()
            await bus.close()  # hands what this worker held back to the other workers at once
            blobs.close()


def main_worker(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentir worker``; returns the exit code."""
    import anyio

    from agentir.actors.supervisor import ACTOR_NAMES
    from agentir.bus.errors import BrokerUnavailable
    from agentir.bus.redis import check_url, ping_url

    parser = build_worker_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    names = [n.strip() for n in args.actors.split(",") if n.strip()]
    unknown = [n for n in names if n not in ACTOR_NAMES]
    if unknown or not names:
        parser.error(f"--actors: unknown actor(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ACTOR_NAMES)}")
    for flag, value in (("--concurrency", args.concurrency), ("--torch-threads", args.torch_threads), ("--max-deliveries", args.max_deliveries)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if args.memory_cap is not None and not args.memory_cap > 0:
        parser.error(f"--memory-cap must be a positive number of gigabytes, got {args.memory_cap}")
    if not args.visibility_timeout > 0:
        parser.error(f"--visibility-timeout must be positive, got {args.visibility_timeout}")
    try:
        check_url(args.bus)
    except BrokerUnavailable as exc:
        print(f"error: --bus: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        ping_url(args.bus)  # before the slow imports: a wrong URL is said at once
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    configure_logging(args.log_level, json_logs=not args.log_console)
    _set_torch_threads(args.torch_threads)
    if args.ready_file:
        Path(args.ready_file).unlink(missing_ok=True)
    try:
        anyio.run(run_worker, args)
    except BaseException as raised:
        error = _single(raised)
        if isinstance(error, KeyboardInterrupt):
            return 130
        if isinstance(error, BrokerUnavailable):
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        if isinstance(error, (ValueError, LookupError)):  # an unknown policy, a bad plug-in file ...
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 2
        raise
    return 0


def _set_torch_threads(n: int) -> None:
    # Each worker process gets its share of the cores; torch, OpenCV and the BLAS would otherwise
    # each start a thread per core in every worker (several workers on one machine then fight).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    import cv2
    import torch

    cv2.setNumThreads(n)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # already set (torch allows it once, before any parallel work)
        torch.set_num_interop_threads(n)


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one member each, else ``exc``."""
    inner: Any = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc
