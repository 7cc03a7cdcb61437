"""``agentir bench serve``: percentiles, and one small end-to-end load run against a loopback daemon."""

from __future__ import annotations

import json
import math

import pytest

from agentir.bench.serve import main_bench_serve, percentile
from agentir.daemon import main_serve
from agentir.daemon.config import DaemonConfig


def test_percentile_interpolates_and_handles_edges():
    """Percentiles interpolate linearly between sorted values; no values give NaN."""
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0], 99) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert math.isnan(percentile([], 50))


def test_config_file_then_overrides(tmp_path, monkeypatch):
    """A TOML [serve] table sets values, AGENTIR_TOKEN sets the token, explicit overrides win."""
    cfg = tmp_path / "agentir.toml"
    cfg.write_text("[serve]\nport = 9000\nconcurrency = 3\nmax_queue = 10\n")
    from agentir.settings import Settings

    settings = Settings.from_env({"AGENTIR_TOKEN": "from-env"})  # the entry point reads the environment
    config = DaemonConfig.load(cfg, settings=settings, port=9100, data=str(tmp_path / "d"))
    assert (config.port, config.concurrency, config.max_queue, config.token) == (9100, 3, 10, "from-env")


def test_main_serve_refuses_bad_settings_with_exit_2(tmp_path, capsys):
    """`agentir serve` with an out-of-range setting or a missing config file exits 2 with one line."""
    assert main_serve(["--port", "99999", "--data", str(tmp_path)]) == 2
    assert main_serve(["--config", str(tmp_path / "missing.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "'port'" in err[0] and "does not exist" in err[1]


@pytest.mark.slow
def test_bench_serve_runs_jobs_from_several_clients(capsys):
    """A small load run completes every job and prints throughput and latency percentiles as JSON."""
    assert main_bench_serve(["--clients", "2", "--jobs", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["completed"] == 4 and result["failed"] == 0
    assert result["latency_p50_s"] <= result["latency_p95_s"] <= result["latency_p99_s"]
