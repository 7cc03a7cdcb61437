"""``agentir serve``: a long-running daemon with an HTTP and WebSocket API and a durable job store.

Start it and call it::

    agentir serve --port 8080 --data /var/lib/agentir          # or: python -m agentir.daemon ...
    curl -s -H 'Content-Type: image/png' --data-binary @photo.png localhost:8080/v1/jobs
    # -> {"id": "3f0c...", "state": "queued"}
    curl -s localhost:8080/v1/jobs/3f0c...                       # state, progress, trace
    curl -s -o restored.png localhost:8080/v1/jobs/3f0c.../result

Parts: :mod:`~agentir.daemon.config` (settings), :mod:`~agentir.daemon.store` (SQLite + spool),
:mod:`~agentir.daemon.worker` (runs jobs through one :class:`~agentir.pipeline.Restorer`),
:mod:`~agentir.daemon.app` (routes, limits, graceful shutdown), :mod:`~agentir.daemon.ws`
(WebSocket, msgpack envelopes), :mod:`~agentir.daemon.metrics` (Prometheus text).
The protocol is described in ``docs/PROTOCOL.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from agentir.logs import configure_logging

__all__ = ["build_parser", "main_serve"]


def build_parser(prog: str = "agentir serve") -> argparse.ArgumentParser:
    """The ``agentir serve`` argument parser (flags override the ``--config`` file)."""
    p = argparse.ArgumentParser(prog=prog, description="Run the agentir daemon: HTTP/WebSocket API, durable job store, worker.")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080; 0 picks a free one, see --port-file)")
    p.add_argument("--data", default=None, metavar="DIR", help="data folder: jobs.sqlite3 and spool/ (default ./agentir-data)")
    p.add_argument("--config", default=None, metavar="FILE", help="TOML settings file (see agentir.daemon.config)")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' (better: set AGENTIR_TOKEN)")
    p.add_argument("--concurrency", type=int, default=None, help="jobs restored at once (default 2)")
    p.add_argument("--max-queue", type=int, default=None, help="queued + running jobs before 503 (default 256)")
    p.add_argument("--max-per-client", type=int, default=None, help="queued + running jobs per client before 429 (default 16)")
    p.add_argument(
        "--freeze-experience",
        action="store_true",
        default=None,
        help="do not learn while serving (the experience planner reads DATA/experience.json but never updates it)",
    )
    p.add_argument(
        "--max-tool-cost",
        type=float,
        default=None,
        metavar="S_PER_MP",
        help="jobs that do not set the max_tool_cost option skip tools measured slower than this many seconds per megapixel (`agentir tools`)",
    )
    p.add_argument(
        "--memory-cap",
        type=float,
        default=None,
        metavar="GB",
        help="most memory a tool that must see the whole image may use on one image; over it that tool is skipped for another",
    )
    p.add_argument("--port-file", default=None, metavar="FILE", help="write the bound port here once listening")
    p.add_argument(
        "--bus",
        default=None,
        metavar="URL",
        help="be a front end: send jobs to `agentir worker` processes on this Redis broker (redis://HOST:6379/0) instead of running actors here",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-console", action="store_true", help="console log lines instead of JSON")
    return p


def main_serve(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``agentir serve``; returns the exit code (2 for bad settings)."""
    import anyio

    from agentir.daemon.config import ConfigError, DaemonConfig
    from agentir.settings import Settings, SettingsError

    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        settings = Settings.from_env()
        config = DaemonConfig.load(
            args.config,
            settings=settings,
            host=args.host,
            port=args.port,
            data=args.data,
            token=args.token,
            concurrency=args.concurrency,
            max_queue=args.max_queue,
            max_per_client=args.max_per_client,
            port_file=args.port_file,
            freeze_experience=args.freeze_experience,
            max_tool_cost=args.max_tool_cost,
            memory_cap_gb=args.memory_cap,
            bus=args.bus,
        )
    except (ConfigError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    if config.bus:
        from agentir.bus.errors import BrokerUnavailable
        from agentir.bus.redis import ping_url

        try:
            ping_url(config.bus)  # a front end without its broker is useless: say so at once
        except BrokerUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
    configure_logging(args.log_level, json_logs=not args.log_console)
    from agentir.bus.errors import BrokerUnavailable
    from agentir.daemon.app import ListenError, serve_forever
    from agentir.daemon.store import StoreError
    from agentir.pipeline import DEFAULT_BUS

    # The daemon builds its Restorer; with a broker it becomes a front end of the workers there.
    DEFAULT_BUS.set(config.bus or None)
    try:
        anyio.run(serve_forever, config, settings)
    except BaseException as raised:
        # Startup errors come out of task groups wrapped in (nested) exception groups: unwrap one.
        error = _single(raised)
        if isinstance(error, KeyboardInterrupt):
            return 130
        if isinstance(error, (ListenError, StoreError, BrokerUnavailable)):  # port in use; data folder held; broker unreachable ...
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        if isinstance(error, OSError):  # data folder not writable ...
            print(f"error: cannot start the daemon ({error}); check --host/--port and that --data is writable", file=sys.stderr, flush=True)
            return 1
        raise
    return 0


def _single(exc: BaseException) -> BaseException:
    """The one exception inside (nested) exception groups of one member each, else ``exc`` itself."""
    inner = getattr(exc, "exceptions", None)  # duck-typed: BaseExceptionGroup is not a builtin on 3.10
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], BaseException):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc
