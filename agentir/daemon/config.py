"""Daemon settings: defaults, a TOML file (``--config``), environment and command-line overrides.

Precedence, lowest first: the defaults below, the TOML file's ``[serve]`` table (or its top
level), ``AGENTIR_TOKEN`` for the bearer token (so it need not appear in ``ps``), then the
command-line flags.

Example ``agentir.toml``::

    [serve]
    host = "127.0.0.1"
    port = 8080
    data = "/var/lib/agentir"
    concurrency = 2            # jobs restored at once
    max_queue = 256            # queued + running jobs before POST answers 503
    max_per_client = 16        # queued + running jobs per client before POST answers 429
    max_body_bytes = 33554432  # 32 MiB; larger uploads answer 413
    max_pixels = 40000000      # decoded width x height; larger images answer 413
    retention_seconds = 86400  # finished jobs (and their PNGs) are deleted after this
    freeze_experience = false  # true: plan from the knowledge and DATA/experience.json, never update it
    max_tool_cost = 5.0        # optional: jobs that do not set max_tool_cost skip tools slower than 5 s/MP
    memory_cap_gb = 4.0        # optional: a whole-image tool that would need more on an image is skipped for another
    header_timeout = 10.0      # a request's headers must arrive within this (else 408, connection closed)
    body_timeout = 120.0       # an upload's body must arrive within this (else 408, connection closed)
    bus = "redis://10.0.0.5:6379/0"  # optional: a front end of `agentir worker` processes (docs/CLUSTER.md)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentir.settings import Settings


class ConfigError(ValueError):
    """A bad setting; the message names it and says what is expected."""


@dataclass
class DaemonConfig:
    """Every setting of ``agentir serve`` (see the module docstring for the file format)."""

    host: str = "127.0.0.1"
    port: int = 8080
    data: Path = field(default_factory=lambda: Path("agentir-data"))
    token: str = ""  #: bearer token; empty disables auth
    concurrency: int = 2  #: jobs restored at once by the worker
    max_queue: int = 256  #: queued + running jobs before POST answers 503
    max_per_client: int = 16  #: queued + running jobs of one client before 429
    max_ws_connections: int = 64  #: open WebSockets before /v1/ws answers 503
    max_body_bytes: int = 32 << 20
    max_pixels: int = 40_000_000
    min_free_bytes: int = 64 << 20  #: refuse new jobs (507) when the data disk has less free
    job_timeout: float = 600.0
    max_attempts: int = 3  #: a job that was running during this many crashes is failed
    retention_seconds: float = 86_400.0
    cleanup_interval: float = 300.0
    shutdown_grace: float = 30.0  #: seconds running jobs get to finish on SIGTERM before re-queueing
    disk_backoff: float = 30.0  #: seconds without claiming jobs after the disk filled up while storing a result
    #: seconds a connection has to send a request's complete headers (from connecting, or from the
    #: request's first byte); past it the daemon answers 408 (nothing sent: no answer) and closes it
    header_timeout: float = 10.0
    #: seconds a POST /v1/jobs body (the upload) has to arrive in full; past it 408 and the connection is closed
    body_timeout: float = 120.0
    retry_after: int = 5  #: seconds suggested in Retry-After on 429 / 503
    policy: str = "experience"  #: default planning policy
    #: the experience planner learns from every judged step into DATA/experience.json; true freezes it
    freeze_experience: bool = False
    #: default of the job option ``max_tool_cost`` (seconds per megapixel) for jobs that do not set
    #: it: skip tools measured slower (e.g. 5 leaves out fusion_denoise and rl_motion_deblur)
    max_tool_cost: float | None = None
    #: most memory (GB) a tool that must see the whole image may need on one image (the Executor's
    #: ``memory_cap``; measured bytes per pixel times the pixels); over it the tool is skipped
    memory_cap_gb: float | None = None
    perception: str = "analytic"
    blob_bytes: int = 512 << 20  #: in-memory blob store bound
    trust_client_header: bool = False  #: use X-Client-Id (behind a trusted proxy) instead of the peer address
    port_file: Path | None = None  #: write the bound port here once listening (tests, supervisors)
    #: broker URL (``redis://HOST:6379/0``): run no actors here, send jobs to ``agentir worker``
    #: processes on that broker (jobs stay durable in this daemon's store). Empty: actors in-process.
    bus: str = ""

    def __post_init__(self) -> None:
        self.data = Path(self.data)
        if self.port_file is not None:
            self.port_file = Path(self.port_file)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for out-of-range values."""
        for name in ("concurrency", "max_queue", "max_per_client", "max_ws_connections", "max_body_bytes", "max_pixels", "max_attempts", "blob_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"setting {name!r} must be a positive integer, got {value!r}")
        for name in ("job_timeout", "retention_seconds", "cleanup_interval", "shutdown_grace", "disk_backoff", "header_timeout", "body_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"setting {name!r} must be a positive number of seconds, got {value!r}")
        if self.max_tool_cost is not None and (
            isinstance(self.max_tool_cost, bool) or not isinstance(self.max_tool_cost, (int, float)) or self.max_tool_cost <= 0
        ):
            raise ConfigError(f"setting 'max_tool_cost' must be a positive number of seconds per megapixel, got {self.max_tool_cost!r}")
        if self.memory_cap_gb is not None and (
            isinstance(self.memory_cap_gb, bool) or not isinstance(self.memory_cap_gb, (int, float)) or self.memory_cap_gb <= 0
        ):
            raise ConfigError(f"setting 'memory_cap_gb' must be a positive number of gigabytes, got {self.memory_cap_gb!r}")
        if not 0 <= int(self.port) <= 65535:
            raise ConfigError(f"setting 'port' must be 0..65535, got {self.port!r}")
        if self.min_free_bytes < 0:
            raise ConfigError(f"setting 'min_free_bytes' must be >= 0, got {self.min_free_bytes!r}")
        if not isinstance(self.bus, str):
            raise ConfigError(f"setting 'bus' must be a broker URL like redis://HOST:6379/0, got {self.bus!r}")
        if self.bus:
            from agentir.bus.errors import BrokerUnavailable
            from agentir.bus.redis import check_url

            try:
                check_url(self.bus)
            except BrokerUnavailable as exc:
                raise ConfigError(f"setting 'bus': {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, *, settings: Settings | None = None, **overrides: Any) -> DaemonConfig:
        """Defaults, then the TOML file at ``path``, then ``settings.token`` (``AGENTIR_TOKEN``,
        read by the entry point), then non-None ``overrides``.

        Raises:
            ConfigError: the file is missing or not TOML, or has an unknown or bad setting.
        """
        values: dict[str, Any] = {}
        if path is not None:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError("reading --config needs Python 3.11 or newer (tomllib); pass settings as flags instead") from None
            try:
                with open(path, "rb") as fh:
                    doc = tomllib.load(fh)
            except FileNotFoundError:
                raise ConfigError(f"config file {str(path)!r} does not exist; check the --config path") from None
            except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
                raise ConfigError(f"config file {str(path)!r} cannot be read as TOML ({exc}); fix it") from None
            values.update(doc.get("serve", doc) if isinstance(doc.get("serve"), dict) else doc)
        if settings is not None and settings.token:
            values["token"] = settings.token
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad setting: {exc}") from None
