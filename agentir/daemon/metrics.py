"""The daemon's Prometheus metrics, through ``prometheus_client`` with one registry per daemon.

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` (never the global
one), so several daemons in one process (tests, an embedding application) keep separate
counts. Families follow the Prometheus naming conventions: counters end in ``_total``, durations
are ``_seconds``, sizes ``_bytes``; ``agentir_build_info`` carries the versions as labels, and the
``process_*`` / ``python_*`` families come from the standard collectors.

Families the daemon exposes (see ``docs/PROTOCOL.md``):

=========================================  =========  ==========================================
name                                       type       labels / meaning
=========================================  =========  ==========================================
``agentir_build_info``                     gauge      ``version``, ``python``, ``aiohttp``: 1
``agentir_jobs``                           gauge      ``state``: jobs in the store per state
``agentir_queue_depth``                    gauge      jobs queued (not yet running)
``agentir_jobs_running``                   gauge      jobs running in this process
``agentir_jobs_submitted_total``           counter    jobs accepted (202)
``agentir_jobs_rejected_total``            counter    ``reason``: refused submissions by cause
``agentir_jobs_completed_total``           counter    ``state``: done / failed / cancelled / requeued
``agentir_job_duration_seconds``           histogram  run time of successful jobs
``agentir_tool_duration_seconds``          histogram  ``tool``: tool call latencies, from job traces
``agentir_perception_duration_seconds``    histogram  first perception of each job
``agentir_executor_batch_images``          histogram  images per executor tool call
``agentir_upload_size_bytes``              histogram  size of accepted uploads
``agentir_http_requests_total``            counter    ``method``, ``route``, ``status``
``agentir_http_request_duration_seconds``  histogram  ``method``, ``route``: time to the response
``agentir_ws_connections``                 gauge      open WebSocket connections
``agentir_ws_events_dropped_total``        counter    progress events dropped for slow watchers
``agentir_ws_errors_total``                counter    ``status``: ``ws.error`` answers sent
``agentir_previews_written_bytes_total``   counter    bytes of console previews written
``agentir_previews_dropped_total``         counter    ``reason``: previews not written
``process_*``, ``python_*``                various    the process and interpreter collectors
=========================================  =========  ==========================================

Callers name a family by its exposed name (``inc("agentir_jobs_submitted_total")``); a name not
in :data:`FAMILIES`, or labels other than the family's, raise ``KeyError`` / ``ValueError`` at
once rather than exposing a misspelt series.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

__all__ = ["BATCH_BUCKETS", "BYTES_BUCKETS", "FAMILIES", "SECONDS_BUCKETS", "Family", "Metrics"]

SECONDS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32)
BYTES_BUCKETS: tuple[float, ...] = (16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)


@dataclass(frozen=True)
class Family:
    """One metric family: its type, help text, label names and (histograms) buckets."""

    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = SECONDS_BUCKETS


#: Every family the daemon exposes, by its exposed name (counters with their ``_total``).
FAMILIES: dict[str, Family] = {
    "agentir_jobs": Family("gauge", "Jobs in the store by state.", ("state",)),
    "agentir_queue_depth": Family("gauge", "Jobs queued and not yet running."),
    "agentir_jobs_running": Family("gauge", "Jobs running in this daemon process."),
    "agentir_jobs_submitted_total": Family("counter", "Jobs accepted (HTTP 202 or ws.ack)."),
    "agentir_jobs_rejected_total": Family("counter", "Submissions refused, by reason.", ("reason",)),
    "agentir_jobs_completed_total": Family("counter", "Jobs that left the running state, by outcome.", ("state",)),
    "agentir_job_duration_seconds": Family("histogram", "Wall time of successful jobs in seconds."),
    "agentir_tool_duration_seconds": Family("histogram", "Tool call latency in seconds, from job traces.", ("tool",)),
    "agentir_perception_duration_seconds": Family("histogram", "Initial perception latency in seconds."),
    "agentir_executor_batch_images": Family("histogram", "Images per executor tool call.", buckets=BATCH_BUCKETS),
    "agentir_upload_size_bytes": Family("histogram", "Size of accepted uploads in bytes.", buckets=BYTES_BUCKETS),
    "agentir_http_requests_total": Family("counter", "HTTP requests by method, route and status.", ("method", "route", "status")),
    "agentir_http_request_duration_seconds": Family("histogram", "Time from request to response in seconds.", ("method", "route")),
    "agentir_ws_connections": Family("gauge", "Open WebSocket connections."),
    "agentir_ws_events_dropped_total": Family("counter", "Progress events dropped because a watcher was slow."),
    "agentir_ws_errors_total": Family("counter", "ws.error answers sent, by status.", ("status",)),
    "agentir_previews_written_bytes_total": Family("counter", "Bytes of console previews (JPEG thumbnails) written."),
    "agentir_previews_dropped_total": Family("counter", "Console previews not written, by reason.", ("reason",)),
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("agentir-restore")
    except Exception:  # not installed as a distribution (a source checkout on sys.path)
        return "unknown"


class Metrics:
    """The daemon's metric values in a registry of its own; :meth:`render` writes the exposition.

    Updated on the event loop and from worker threads alike (``prometheus_client`` locks).
    Gauges are set right before rendering from the store's counts.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        from aiohttp import __version__ as aiohttp_version

        build = Info("agentir_build", "The running agentir build.", registry=self.registry)
        build.info({"version": _version(), "python": platform.python_version(), "aiohttp": aiohttp_version})
        self._metrics: dict[str, Any] = {}
        for name, family in FAMILIES.items():
            if family.kind == "counter":
                self._metrics[name] = Counter(name, family.help, family.labels, registry=self.registry)
            elif family.kind == "gauge":
                self._metrics[name] = Gauge(name, family.help, family.labels, registry=self.registry)
            else:
                self._metrics[name] = Histogram(name, family.help, family.labels, registry=self.registry, buckets=family.buckets)

    def _child(self, name: str, kind: str, labels: dict[str, str]) -> Any:
        family = FAMILIES[name]  # KeyError names an unknown family
        if family.kind != kind:
            raise ValueError(f"metric {name} is a {family.kind}, not a {kind}")
        metric = self._metrics[name]
        return metric.labels(**labels) if family.labels else metric

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to counter ``name`` (its exposed name, ``_total`` included)."""
        self._child(name, "counter", labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set gauge ``name``."""
        self._child(name, "gauge", labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in histogram ``name``."""
        self._child(name, "histogram", labels).observe(value)

    def counter(self, name: str, **labels: str) -> float:
        """Current value of a counter (0 if never incremented); for tests and the benchmark."""
        if FAMILIES[name].kind != "counter":
            raise ValueError(f"metric {name} is not a counter")
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for a scrape with ``Accept: accept``: ``(body, content type)``.

        The Prometheus text format (``text/plain; version=...``) unless the scraper asks for
        OpenMetrics."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
