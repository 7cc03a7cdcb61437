"""Test-wide setup: the Triton interpreter on machines without CUDA, quiet structured logs."""

from __future__ import annotations

import os

# Must happen before anything imports triton: on a CPU-only machine the kernels run in
# Triton's interpreter.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass

import structlog

structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.KeyValueRenderer()],
    logger_factory=structlog.ReturnLoggerFactory(),  # tests read logs with structlog.testing.capture_logs
    cache_logger_on_first_use=False,
)
