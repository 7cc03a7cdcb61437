"""Streaming camera-frame restoration: plans made on a scene's first frame, reused on the rest.

* :mod:`agentir.stream.engine` -- :class:`StreamEngine` (plan reuse, held parameters, budgets);
* :mod:`agentir.stream.io` -- sources (video files, folders, V4L2, URLs) and sinks;
* :mod:`agentir.stream.runner` -- bounded queues, newest-wins realtime mode, statistics;
* :mod:`agentir.stream.api` -- ``async for result in restorer.stream(frames)``;
* :mod:`agentir.stream.cli` -- ``agentir stream``.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentir.stream.engine import Frame, StreamConfig, StreamEngine, StreamError, StreamResult

__all__ = ["Frame", "StreamConfig", "StreamEngine", "StreamError", "StreamResult", "main_stream"]


def main_stream(argv: Sequence[str] | None = None) -> int:
    """``agentir stream ...`` (see :mod:`agentir.stream.cli`)."""
    from agentir.stream.cli import main_stream as run

    return run(argv)
