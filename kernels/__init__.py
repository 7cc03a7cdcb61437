"""Triton kernels for hot pre/post-processing, each beside its pure-torch reference.

Public ops (Triton on CUDA tensors, the torch reference elsewhere; ``AGENTIR_KERNELS=
auto|triton|torch`` forces a choice, see :mod:`agentir.kernels.backend`):

* :func:`to_float_nchw`, :func:`to_uint8_nhwc` -- uint8 NHWC images <-> float NCHW batches;
* :func:`rgb_to_ycbcr`, :func:`rgb_to_value` -- BT.601 YCbCr (the stream's device-side scene
  check), HSV value (the brightening tools' torch path);
* :func:`extract_tiles`, :func:`blend_tiles` -- overlapping tiles and their feathered blend;
* :func:`image_stats` -- per-image perception statistics in one pass (``STATS_COLUMNS``; the
  stream's per-frame statistics, ``agentir.agent_policies.perception.framestats``).

``run_kernel_bench`` lives in :mod:`agentir.kernels.bench` (imported on demand, not here).
"""

from __future__ import annotations

from agentir.kernels.backend import KernelBackendError, KernelError, KernelInputError
from agentir.kernels.color import rgb_to_value, rgb_to_ycbcr
from agentir.kernels.convert import to_float_nchw, to_uint8_nhwc
from agentir.kernels.stats import STATS_COLUMNS, image_stats
from agentir.kernels.tiles import blend_tiles, extract_tiles

__all__ = [
    "STATS_COLUMNS",
    "KernelBackendError",
    "KernelError",
    "KernelInputError",
    "blend_tiles",
    "extract_tiles",
    "image_stats",
    "rgb_to_value",
    "rgb_to_ycbcr",
    "to_float_nchw",
    "to_uint8_nhwc",
]
