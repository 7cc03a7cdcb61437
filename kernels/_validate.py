"""Input checks shared by the public ops; every failure is a :class:`KernelInputError`."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import torch

from agentir.kernels.backend import KernelInputError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def check_tensor(
    op: str,
    name: str,
    value: Any,
    *,
    dtypes: tuple[torch.dtype, ...],
    ndims: tuple[int, ...],
    layout: str,
) -> torch.Tensor:
    """Check that ``value`` is a tensor with one of ``dtypes`` and ``ndims``; return it.

    ``layout`` names the expected axes (for example ``"N x 3 x H x W"``) in the message.
    """
    if not isinstance(value, torch.Tensor):
        raise KernelInputError(op, f"{name} must be a torch.Tensor ({layout}), got {type(value).__name__}")
    if value.dtype not in dtypes:
        raise KernelInputError(
            op,
            f"{name} must have dtype {_names(dtypes)}, got {str(value.dtype).replace('torch.', '')}; "
            f"convert it first (for example with .to(torch.{_names(dtypes[:1])}))",
        )
    if value.ndim not in ndims:
        raise KernelInputError(op, f"{name} must be {layout}, got shape {tuple(value.shape)}")
    return value


def check_channels(op: str, name: str, value: torch.Tensor, dim: int, layout: str) -> None:
    """Check that axis ``dim`` of ``value`` has exactly 3 (RGB) entries."""
    if value.shape[dim] != 3:
        raise KernelInputError(op, f"{name} must be {layout} with 3 channels, got shape {tuple(value.shape)}")


def check_output_dtype(op: str, dtype: Any) -> torch.dtype:
    """Check a requested floating output dtype."""
    if dtype not in FLOAT_DTYPES:
        raise KernelInputError(op, f"dtype must be one of {_names(FLOAT_DTYPES)}, got {dtype!r}")
    return dtype


def check_int(op: str, name: str, value: Any, *, minimum: int) -> int:
    """Check that ``value`` is an int (not a bool) no smaller than ``minimum``; return it."""
    if isinstance(value, bool):
        raise KernelInputError(op, f"{name} must be an int, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise KernelInputError(op, f"{name} must be an int, got {value!r}") from None
    if value < minimum:
        raise KernelInputError(op, f"{name} must be >= {minimum}, got {value}")
    return value
