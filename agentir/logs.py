"""Logging setup, done once by each entry point (the CLI, the daemon, the benchmarks).

Library code only calls ``structlog.get_logger(__name__)``; it never configures logging, so an
embedder's own setup wins. Logs go to stderr, never stdout (stdout carries results: JSON lines,
tables).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

__all__ = ["LOG_LEVELS", "configure_logging"]

LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(level: str = "warning", *, json_logs: bool = False) -> None:
    """Console lines (default) or JSON objects (daemons, CI) on stderr, at ``level`` and above.

    Raises:
        ValueError: ``level`` is not one of :data:`LOG_LEVELS`.
    """
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LOG_LEVELS)}")
    renderer: Any = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
