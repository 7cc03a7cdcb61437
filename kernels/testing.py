"""Test helpers for the kernels (as FlagGems' ``testing``): tolerances, layouts, comparisons.

Kept in the package so tests and later kernels share one definition of "close enough".
"""

from __future__ import annotations

import torch

__all__ = ["ATOL", "LAYOUTS", "assert_close64", "make_layout"]

# Absolute tolerance of a kernel result against a float64 reference, per dtype: a few float32
# ulps near 1.0, and one ulp of the output format for the half types (bfloat16 conversion
# under the Triton interpreter truncates instead of rounding to nearest, so a full ulp).
ATOL: dict[torch.dtype, float] = {
    torch.float32: 2e-6,
    torch.float16: 1e-3,
    torch.bfloat16: 8e-3,
}

LAYOUTS = ("contiguous", "strided", "permuted")


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Return a tensor equal to ``t`` in the memory layout named by ``layout``.

    ``contiguous``: a contiguous copy; ``strided``: every other element of a buffer twice as
    wide on the last axis (non-unit innermost stride); ``permuted``: the same values with the
    memory order of the axes reversed (e.g. channels innermost for ``N x 3 x H x W``).
    """
    if layout == "contiguous":
        return t.contiguous()
    if layout == "strided":
        buf = torch.zeros((*t.shape[:-1], t.shape[-1] * 2), dtype=t.dtype, device=t.device)
        buf[..., ::2] = t
        return buf[..., ::2]
    if layout == "permuted":
        order = tuple(reversed(range(t.ndim)))
        return t.permute(order).contiguous().permute(order)
    raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def assert_close64(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype) -> None:
    """Assert ``actual`` equals the float64 ``expected64`` within ``ATOL[dtype]``, shape included."""
    if actual.shape != expected64.shape:
        raise AssertionError(f"shape {tuple(actual.shape)} != expected {tuple(expected64.shape)}")
    torch.testing.assert_close(actual.double(), expected64.to(actual.device), atol=ATOL[dtype], rtol=0)
