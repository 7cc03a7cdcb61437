"""Logging setup, done once by each entry point (the CLI, the daemon, the benchmarks).

Library code only calls ``structlog.get_logger(__name__)`` and never configures logging, so an
embedder's own setup wins. The one exception is :func:`ensure_logging`, called where an embedder
enters the library (:class:`agentir.pipeline.Restorer`): when nothing configured structlog, its
default would print every level to **stdout**, so it is pointed at stderr, warnings and up (or at
the embedder's stdlib ``logging`` handlers, where those are set). An embedder's own
``structlog.configure``, before or after, wins. Logs go to stderr, never stdout (stdout carries
results: JSON lines, tables).
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

import structlog

__all__ = ["LOG_LEVELS", "configure_logging", "ensure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")

_warnings_log = structlog.get_logger("py.warnings")


def configure_logging(level: str = "warning", *, json_logs: bool = False) -> None:
    """Console lines (default) or JSON objects (daemons, CI) on stderr, at ``level`` and above.

    Python ``warnings`` (a library's ``UserWarning``...) become ``python.warning`` log events at
    warning level, one line each, so they obey ``level`` too (``error`` silences them); the
    ``warnings`` filters still apply (turned into errors, they still raise). Records of stdlib
    ``logging`` below ``level`` are dropped (no handler is installed: warnings and up print as
    Python's last-resort handler prints them).

    Raises:
        ValueError: ``level`` is not one of :data:`LOG_LEVELS`.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
    numeric = getattr(logging, level.upper())
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.getLogger().setLevel(max(numeric, logging.WARNING))
    warnings.showwarning = _log_warning


def _log_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    _warnings_log.warning("python.warning", category=category.__name__, message=str(message), source=f"{filename}:{lineno}")


def ensure_logging() -> None:
    """Unless the application configured structlog: its logs to stderr at warning level and up.

    Where the application configured stdlib ``logging`` (the root logger has handlers), the
    events go to those handlers at the levels they set instead. Nothing else is touched (Python
    ``warnings``, the root logger's level). Not cached, so a later ``structlog.configure`` wins.
    """
    if structlog.is_configured():
        return
    if logging.getLogger().handlers:
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                structlog.processors.KeyValueRenderer(key_order=["event"]),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=False,
        )
        return
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
