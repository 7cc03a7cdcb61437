"""Every kernel compiles for an H100 (sm_90) with the arithmetic the references assume.

Runs the real Triton compiler and the wheel's ptxas, no GPU needed. Interpreted kernels
cannot be compiled in the same process, so on CPU-only machines the check runs in a fresh
process without TRITON_INTERPRET.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentir.kernels import backend, convert

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not backend.HAS_TRITON, reason="triton is not installed")


def test_all_kernels_compile_for_sm90(tmp_path: Path) -> None:
    """Each kernel case yields a cubin and PTX with no fused multiply-add or approximate division."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # keep the user's cache untouched
    proc = subprocess.run(
        [sys.executable, "-m", "agentir.kernels.compile_check", "--arch", "90"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert len(lines) >= 9 and all(line.startswith("ok sm_90 ") for line in lines), proc.stdout


def test_compile_check_refuses_interpreted_kernels() -> None:
    """In a process with interpreted kernels the checker says how to run it instead of crashing."""
    if not backend.is_interpreted(convert._to_float_nchw_kernel):
        pytest.skip("kernels are compiled natively in this process")
    from agentir.kernels.compile_check import compile_kernels

    with pytest.raises(RuntimeError, match="without TRITON_INTERPRET=1"):
        compile_kernels()
