"""run_kernel_bench: report shape and honesty about what was timed (never timing values)."""

from __future__ import annotations

import pytest
import torch

from agentir.kernels.bench import main, run_kernel_bench

OPS = {"to_float_nchw", "to_uint8_nhwc", "rgb_to_ycbcr", "rgb_to_value", "image_stats"}


def test_report_covers_every_op_and_size() -> None:
    """One entry per op and size, with times, bandwidths and the device name."""
    report = run_kernel_bench(sizes=[(8, 12), (5, 7)], repeats=1, tile=4, overlap=1, device="cpu")
    assert report["device"].startswith("cpu")
    results = report["results"]
    assert len(results) == 2 * (len(OPS) + 1)
    assert {r["op"] for r in results} == OPS | {"blend_tiles[4/1]"}
    for r in results:
        assert r["reference_ms"] > 0 and r["eager_ms"] > 0
        assert r["reference_gbps"] > 0 and r["bytes"] > 0


def test_cpu_report_says_triton_was_not_run() -> None:
    """On the CPU the Triton columns are empty and the note says it was not run natively."""
    report = run_kernel_bench(sizes=[(4, 4)], repeats=1, tile=2, overlap=0, device="cpu")
    assert report["triton_native"] is False
    assert "not run natively" in report["note"]
    assert all(r["triton_ms"] is None and r["triton_vs_reference"] is None for r in report["results"])


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"batch": 0}, {"sizes": [(0, 4)]}])
def test_bad_arguments_raise(kwargs) -> None:
    """Non-positive repeats, batch or sizes raise ValueError."""
    with pytest.raises(ValueError):
        run_kernel_bench(**{"sizes": [(4, 4)], "repeats": 1, "device": "cpu", **kwargs})


def test_command_line_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m agentir.kernels.bench prints the device, the note and one row per op."""
    if torch.cuda.is_available():
        pytest.skip("the CPU table is checked here; the GPU run is in the gpu tests")
    main(["--sizes", "6x8", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.startswith("device: cpu") and "not run natively" in out
    assert sum(line.startswith(tuple(OPS)) for line in out.splitlines()) == len(OPS)
