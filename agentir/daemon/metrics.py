"""Prometheus text exposition (format 0.0.4), written by hand: counters, gauges, histograms.

Families the daemon exposes (see ``docs/PROTOCOL.md``):

=====================================  =========  ==============================================
name                                   type       labels / meaning
=====================================  =========  ==============================================
``agentir_jobs``                       gauge      ``state``: jobs in the store per state
``agentir_queue_depth``                gauge      jobs queued (not yet running)
``agentir_jobs_running``               gauge      jobs running in this process
``agentir_jobs_submitted_total``       counter    jobs accepted (202)
``agentir_jobs_rejected_total``        counter    ``reason``: refused submissions by cause
``agentir_jobs_completed_total``       counter    ``state``: done / failed / cancelled / requeued
``agentir_job_seconds``                histogram  run time of successful jobs
``agentir_tool_seconds``               histogram  ``tool``: tool call latencies, from job traces
``agentir_perception_seconds``         histogram  first perception of each job
``agentir_batch_size``                 histogram  images per executor tool call
``agentir_http_requests_total``        counter    ``method``, ``route``, ``status``
``agentir_ws_events_dropped_total``    counter    progress events dropped for slow watchers
``agentir_ws_connections``             gauge      open WebSocket connections
``agentir_ws_errors_total``            counter    ``status``: ``ws.error`` answers sent
=====================================  =========  ==============================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable

_HELP: dict[str, tuple[str, str]] = {
    "agentir_jobs": ("gauge", "Jobs in the store by state."),
    "agentir_queue_depth": ("gauge", "Jobs queued and not yet running."),
    "agentir_jobs_running": ("gauge", "Jobs running in this daemon process."),
    "agentir_jobs_submitted_total": ("counter", "Jobs accepted (HTTP 202 or ws.accepted)."),
    "agentir_jobs_rejected_total": ("counter", "Submissions refused, by reason."),
    "agentir_jobs_completed_total": ("counter", "Jobs that left the running state, by outcome."),
    "agentir_job_seconds": ("histogram", "Wall time of successful jobs in seconds."),
    "agentir_tool_seconds": ("histogram", "Tool call latency in seconds, from job traces."),
    "agentir_perception_seconds": ("histogram", "Initial perception latency in seconds."),
    "agentir_batch_size": ("histogram", "Images per executor tool call."),
    "agentir_http_requests_total": ("counter", "HTTP requests by method, route and status."),
    "agentir_ws_events_dropped_total": ("counter", "Progress events dropped because a watcher was slow."),
    "agentir_ws_connections": ("gauge", "Open WebSocket connections."),
    "agentir_ws_errors_total": ("counter", "ws.error answers sent, by status."),
}

SECONDS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: Labels = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class _Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class Metrics:
    """In-process metric values; :meth:`render` writes them in the Prometheus text format.

    Counters and histograms are updated on the event loop (no locks needed); gauges are set
    right before rendering from the store's counts.
    """

    def __init__(self) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._hists: dict[str, dict[Labels, _Histogram]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        family = self._counters.setdefault(name, {})
        family[key] = family.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._gauges.setdefault(name, {})[tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float, **labels: str) -> None:
        buckets = BATCH_BUCKETS if name == "agentir_batch_size" else SECONDS_BUCKETS
        family = self._hists.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        hist = family.get(key)
        if hist is None:
            hist = family[key] = _Histogram(buckets)
        hist.observe(value)

    def counter(self, name: str, **labels: str) -> float:
        """Current value of a counter (0 if never incremented); for tests and the benchmark."""
        return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """The exposition text (families sorted by name, ``# HELP`` and ``# TYPE`` lines included)."""
        lines: list[str] = []
        names = sorted(set(self._counters) | set(self._gauges) | set(self._hists) | set(_HELP))
        for name in names:
            kind, text = _HELP.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind}")
            for key, value in sorted(self._counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(key)} {_num(value)}")
            for key, value in sorted(self._gauges.get(name, {}).items()):
                lines.append(f"{name}{_labels(key)} {_num(value)}")
            for key, hist in sorted(self._hists.get(name, {}).items()):
                lines.extend(_hist_lines(name, key, hist))
        return "\n".join(lines) + "\n"


def _hist_lines(name: str, key: Labels, hist: _Histogram) -> Iterable[str]:
    for bound, count in zip(hist.buckets, hist.counts):
        yield f"{name}_bucket{_labels(key, (('le', _num(bound)),))} {count}"
    yield f"{name}_bucket{_labels(key, (('le', '+Inf'),))} {hist.count}"
    yield f"{name}_sum{_labels(key)} {_num(hist.sum)}"
    yield f"{name}_count{_labels(key)} {hist.count}"
