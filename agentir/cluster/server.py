"""A private ``redis-server`` on a free loopback port, for tests and ``agentir bench cluster``.

Not for production (run Redis as the operator's service there); this starts one in a folder of
its own, waits until it answers, and stops it (SIGTERM, so the append-only file is complete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port", "redis_server_path"]


def redis_server_path() -> str | None:
    """The ``redis-server`` executable (``AGENTIR_REDIS_SERVER``, then ``PATH``, then /usr/bin), or None."""
    env = os.environ.get("AGENTIR_REDIS_SERVER")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, data in ``folder`` (append-only when ``appendonly``).

    Use as a context manager, or :meth:`start` / :meth:`stop`; :meth:`restart` keeps the port and
    the data folder (what the append-only file holds survives).
    """

    def __init__(self, folder: str | os.PathLike[str], *, port: int | None = None, appendonly: bool = True, executable: str | None = None) -> None:
        exe = executable or redis_server_path()
        if exe is None:
            raise FileNotFoundError("redis-server is not installed (apt-get install redis-server, or set AGENTIR_REDIS_SERVER)")
        self.executable = exe
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.executable,
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
            "--protected-mode", "yes", "--daemonize", "no", "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.folder / "redis.log").read_text(errors="replace")[-2000:] if (self.folder / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} at start-up: {log}")
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:g} s")

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Redis writes out its append-only file and exits), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
