"""Backend choice: AGENTIR_KERNELS forcing, loud failures, the interpreter lock, block sizes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from agentir.kernels import KernelBackendError, backend, color, convert, tiles, to_float_nchw

REPO = Path(__file__).resolve().parents[2]


class Spy:
    """Wraps a launcher and counts calls (optionally without running it)."""

    def __init__(self, real, run: bool = True) -> None:
        self.real, self.run, self.calls = real, run, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if not self.run:
            raise AssertionError("the Triton launcher should not have been called")
        return self.real(*args, **kwargs)


def _u8(device: torch.device) -> torch.Tensor:
    return torch.randint(0, 256, (1, 5, 6, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).to(device)


def test_forced_torch_never_launches(monkeypatch: pytest.MonkeyPatch, device: torch.device) -> None:
    """AGENTIR_KERNELS=torch runs the reference even for CUDA tensors."""
    monkeypatch.setenv(backend.ENV_VAR, "torch")
    monkeypatch.setattr(convert, "_launch_to_float_nchw", Spy(None, run=False))
    x = _u8(device)
    assert torch.equal(to_float_nchw(x), convert.to_float_nchw_reference(x))


@pytest.mark.parametrize("value", ["triton", " Triton "])
def test_forced_triton_launches(force_triton: None, monkeypatch: pytest.MonkeyPatch, device: torch.device, value) -> None:
    """AGENTIR_KERNELS=triton (case and spaces ignored) runs the Triton launcher."""
    monkeypatch.setenv(backend.ENV_VAR, value)
    spy = Spy(convert._launch_to_float_nchw)
    monkeypatch.setattr(convert, "_launch_to_float_nchw", spy)
    to_float_nchw(_u8(device))
    assert spy.calls == 1


@pytest.mark.parametrize("value", [None, "", "auto"])
def test_auto_uses_reference_on_cpu(monkeypatch: pytest.MonkeyPatch, value) -> None:
    """Unset, empty or auto picks the reference for CPU tensors, even with the interpreter on."""
    if value is None:
        monkeypatch.delenv(backend.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(backend.ENV_VAR, value)
    for module, name in [
        (convert, "_launch_to_float_nchw"),
        (convert, "_launch_to_uint8_nhwc"),
        (color, "_launch_color_affine"),
        (color, "_launch_rgb_to_value"),
        (tiles, "_launch_blend_tiles"),
    ]:
        monkeypatch.setattr(module, name, Spy(None, run=False))
    x = to_float_nchw(_u8(torch.device("cpu")))
    convert.to_uint8_nhwc(x)
    color.rgb_to_ycbcr(x)
    color.rgb_to_value(x)
    t, p = tiles.extract_tiles(x[0], 3, 1)
    tiles.blend_tiles(t, p, x.shape[-2:], overlap=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_uses_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA, auto launches the Triton kernel for CUDA tensors."""
    monkeypatch.setenv(backend.ENV_VAR, "auto")
    spy = Spy(convert._launch_to_float_nchw)
    monkeypatch.setattr(convert, "_launch_to_float_nchw", spy)
    to_float_nchw(_u8(torch.device("cuda")))
    assert spy.calls == 1


def test_invalid_mode_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown AGENTIR_KERNELS value raises and lists the valid ones."""
    monkeypatch.setenv(backend.ENV_VAR, "cuda")
    with pytest.raises(KernelBackendError, match="auto, triton, torch") as info:
        to_float_nchw(_u8(torch.device("cpu")))
    assert info.value.mode == "cuda"


def test_forced_triton_on_cpu_without_interpreter_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing Triton for a CPU tensor with compiled (non-interpreted) kernels says how to fix it."""
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    monkeypatch.setattr(backend, "is_interpreted", lambda kernel: False)
    with pytest.raises(KernelBackendError, match="TRITON_INTERPRET=1") as info:
        to_float_nchw(_u8(torch.device("cpu")))
    assert (info.value.op, info.value.device) == ("to_float_nchw", "cpu")


def test_forced_triton_on_meta_device_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing Triton for a tensor on a non-CUDA, non-CPU device raises instead of falling back."""
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(KernelBackendError, match="cannot run on a meta tensor"):
        color.rgb_to_value(torch.empty((1, 3, 4, 4), device="meta"))


def test_forced_triton_without_triton_installed_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the triton package, forcing it raises while auto quietly uses the reference."""
    monkeypatch.setattr(backend, "HAS_TRITON", False)
    x = _u8(torch.device("cpu"))
    monkeypatch.setenv(backend.ENV_VAR, "auto")
    assert torch.equal(to_float_nchw(x), convert.to_float_nchw_reference(x))
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    with pytest.raises(KernelBackendError, match="not importable"):
        to_float_nchw(x)


def test_empty_input_skips_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty inputs return before the backend is consulted, so even an unusable force works."""
    monkeypatch.setenv(backend.ENV_VAR, "triton")
    monkeypatch.setattr(backend, "is_interpreted", lambda kernel: False)
    assert to_float_nchw(torch.empty((0, 4, 4, 3), dtype=torch.uint8)).shape == (0, 3, 4, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only failure path")
def test_fresh_process_without_interpreter_fails_loudly() -> None:
    """In a fresh process without TRITON_INTERPRET, AGENTIR_KERNELS=triton on CPU raises a clear error."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env[backend.ENV_VAR] = "triton"
    code = (
        "import torch\n"
        "from agentir import kernels\n"
        "try:\n"
        "    kernels.to_float_nchw(torch.zeros((1, 2, 2, 3), dtype=torch.uint8))\n"
        "except kernels.KernelBackendError as e:\n"
        "    print('ERR', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert "ERR to_float_nchw: AGENTIR_KERNELS=triton cannot run on a cpu tensor" in proc.stdout, proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stdout


def test_concurrent_launches_are_correct(force_triton: None, device: torch.device) -> None:
    """Kernels called from several threads at once (the interpreter is serialised) stay correct."""
    inputs = [torch.rand((1, 3, 9, 17), generator=torch.Generator().manual_seed(i)).to(device) for i in range(6)]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        try:
            start.wait()
            results[i] = color.rgb_to_ycbcr(inputs[i])
        except BaseException as exc:  # reported below, not swallowed
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for i, x in enumerate(inputs):
        torch.testing.assert_close(results[i], color.rgb_to_ycbcr_reference(x), atol=2e-6, rtol=0)


@pytest.mark.parametrize("h, w", [(1, 1), (5, 300), (1080, 1920)])
def test_pick_blocks_are_powers_of_two(h, w) -> None:
    """Block sizes are powers of two; interpreted blocks cover small images in one program."""
    kernel = convert._to_float_nchw_kernel
    bh, bw = backend.pick_blocks(h, w, kernel=kernel)
    assert bh & (bh - 1) == 0 and bw & (bw - 1) == 0
    if backend.is_interpreted(kernel) and h <= 128 and w <= 256:
        assert bh >= h and bw >= w
