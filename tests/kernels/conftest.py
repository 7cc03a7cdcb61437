"""Fixtures for the kernel tests: the device and forcing a backend (helpers: agentir.kernels.testing).

Without CUDA the Triton kernels run under the Triton interpreter, which must be switched on
before ``triton`` is first imported: this file sets ``TRITON_INTERPRET=1`` at import time
(pytest imports conftest files before the test modules), as the root conftest also does.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from agentir.kernels import backend, convert

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def triton_runnable() -> bool:
    """Whether the Triton kernels can run on DEVICE (natively on CUDA, or interpreted)."""
    if not backend.HAS_TRITON:
        return False
    return DEVICE.type == "cuda" or backend.is_interpreted(convert._to_float_nchw_kernel)


@pytest.fixture
def device() -> torch.device:
    """The device the tests run on: CUDA when present, else CPU (Triton interpreted)."""
    return DEVICE


@pytest.fixture
def force_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the Triton path (``AGENTIR_KERNELS=triton``), skipping where it cannot run."""
    if not triton_runnable():
        pytest.skip(
            "Triton kernels cannot run here: no CUDA and the kernels were not built for the "
            "interpreter (TRITON_INTERPRET=1 must be set before triton is first imported)"
        )
    monkeypatch.setenv(backend.ENV_VAR, "triton")


@pytest.fixture
def force_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the torch reference path (``AGENTIR_KERNELS=torch``)."""
    monkeypatch.setenv(backend.ENV_VAR, "torch")


@pytest.fixture(params=["triton", "torch"])
def any_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per backend."""
    if request.param == "triton":
        request.getfixturevalue("force_triton")
    else:
        monkeypatch.setenv(backend.ENV_VAR, "torch")
    return request.param
