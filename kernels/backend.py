"""Backend choice for the kernels: Triton on CUDA, the pure-torch reference elsewhere.

Every public op in :mod:`agentir.kernels` asks :func:`use_triton` whether to launch its Triton kernel
or run its reference. The answer depends on the ``AGENTIR_KERNELS`` environment variable,
read at each call so a daemon (or a test) can change it without re-importing:

``auto`` (default)
    Triton when the tensor is on a CUDA device and the kernels were compiled natively; the
    reference otherwise (CPU tensors, no Triton installed, or kernels built for the Triton
    interpreter, which is far slower than torch).
``torch``
    Always the reference.
``triton``
    Always the Triton kernel. A choice that cannot be honoured raises
    :class:`KernelBackendError` instead of silently falling back: CPU tensors need the kernels
    to have been created under the Triton interpreter (``TRITON_INTERPRET=1`` set before
    ``triton`` and ``kernels`` are first imported).

The interpreter is not thread-safe, so interpreted launches are serialised by one
process-wide lock (:func:`launching`). It is also slow per program, so :func:`pick_blocks`
chooses large blocks (few programs) when interpreting.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

try:  # Triton wheels exist for Linux only; the references must work without it.
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is missing
    triton = None
    tl = None

__all__ = [
    "ENV_VAR",
    "HAS_TRITON",
    "LAUNCH_OPTIONS",
    "MODES",
    "ImageGrid",
    "KernelBackendError",
    "KernelError",
    "KernelInputError",
    "cdiv",
    "describe",
    "image_grid",
    "is_interpreted",
    "jit",
    "kernel_mode",
    "launching",
    "pick_blocks",
    "tl",
    "triton",
    "use_triton",
]

ENV_VAR = "AGENTIR_KERNELS"
MODES = ("auto", "triton", "torch")
HAS_TRITON = triton is not None

# One lock for every interpreted launch in the process: the interpreter patches
# triton.language globals while a kernel runs, so two threads would corrupt each other.
_INTERPRETER_LOCK = threading.Lock()


class KernelError(Exception):
    """Base class of every error raised by :mod:`agentir.kernels`."""


class KernelBackendError(KernelError, RuntimeError):
    """The requested backend cannot run here.

    Attributes:
        op: name of the public op that was called.
        mode: the ``AGENTIR_KERNELS`` value in force.
        device: the device of the input tensor, as a string (``""`` when not known).
    """

    def __init__(self, message: str, *, op: str = "", mode: str = "", device: str = "") -> None:
        super().__init__(message)
        self.op = op
        self.mode = mode
        self.device = device


class KernelInputError(KernelError, ValueError):
    """An op got a tensor of the wrong dtype, shape or device, or a bad argument.

    Attributes:
        op: name of the public op that was called.
    """

    def __init__(self, op: str, message: str) -> None:
        super().__init__(f"{op}: {message}")
        self.op = op


def jit(fn: Any) -> Any:
    """``triton.jit`` when Triton is installed, else ``None`` (the op then runs its reference).

    Kernel modules use it instead of ``triton.jit`` so they import on machines without Triton;
    ``from __future__ import annotations`` keeps their ``tl.constexpr`` annotations unevaluated.
    """
    return triton.jit(fn) if HAS_TRITON else None


@jit
def tile_grid(pid, H, W, stride_n, stride_h, stride_w, tiles_w, tiles_per_image, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Geometry of program ``pid`` in a 1-D grid over (image, BLOCK_H x BLOCK_W tile).

    Returns ``(n, rows, cols, mask, offsets)``: the image index, the tile's row and column
    indices, the in-bounds mask and the strided element offsets of its pixels (channel 0) in
    the source. A 1-D grid has no per-axis size limits.
    """
    n = pid // tiles_per_image
    tile = pid % tiles_per_image
    rows = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)
    mask = (rows[:, None] < H) & (cols[None, :] < W)
    offsets = n.to(tl.int64) * stride_n + rows[:, None] * stride_h + cols[None, :] * stride_w
    return n, rows, cols, mask, offsets


def kernel_mode() -> str:
    """Return the backend mode from ``AGENTIR_KERNELS`` (``auto`` when unset or empty).

    Raises:
        KernelBackendError: the variable holds something other than auto, triton or torch.
    """
    raw = os.environ.get(ENV_VAR, "")
    mode = raw.strip().lower() or "auto"
    if mode not in MODES:
        raise KernelBackendError(
            f"{ENV_VAR}={raw!r} is not a kernel backend; set it to one of {', '.join(MODES)} (or unset it for auto)",
            mode=raw,
        )
    return mode


def is_interpreted(kernel: Any) -> bool:
    """Whether ``kernel`` (a ``@triton.jit`` function) was created for the Triton interpreter.

    Triton decides this once, when the decorator runs, from ``TRITON_INTERPRET``; setting the
    variable later has no effect on kernels that already exist.
    """
    if not HAS_TRITON:
        return False
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def use_triton(tensor: torch.Tensor, *, kernel: Any, op: str) -> bool:
    """Decide whether ``op`` runs its Triton ``kernel`` on ``tensor`` or its torch reference.

    Args:
        tensor: the op's main input; its device drives the choice.
        kernel: the op's ``@triton.jit`` function (``None`` when Triton is not installed).
        op: the public op name, for error messages.

    Returns:
        True to launch the Triton kernel, False to run the reference.

    Raises:
        KernelBackendError: ``AGENTIR_KERNELS`` is invalid, or it is ``triton`` and Triton is
            not installed, or the tensor is on a device the kernel cannot reach (CPU tensors
            need ``TRITON_INTERPRET=1`` before the first import of ``triton``).
    """
    mode = kernel_mode()
    if mode == "torch":
        return False
    device = tensor.device
    available = HAS_TRITON and kernel is not None
    if mode == "auto":
        # The interpreter is orders of magnitude slower than torch: never pick it implicitly.
        return available and device.type == "cuda" and not is_interpreted(kernel)
    if not available:
        raise KernelBackendError(
            f"{op}: {ENV_VAR}=triton but the triton package is not importable; install triton (Linux only) or set {ENV_VAR}=auto to use the torch reference",
            op=op,
            mode=mode,
            device=str(device),
        )
    if device.type == "cuda":
        return True
    if device.type == "cpu" and is_interpreted(kernel):
        return True
    if device.type == "cpu":
        hint = (
            "move the input to a CUDA device, or set TRITON_INTERPRET=1 before triton and "
            f"kernels are first imported, or set {ENV_VAR}=auto to use the torch reference"
        )
    else:
        hint = f"move the input to a CUDA device or set {ENV_VAR}=auto to use the torch reference"
    raise KernelBackendError(
        f"{op}: {ENV_VAR}=triton cannot run on a {device.type} tensor; {hint}",
        op=op,
        mode=mode,
        device=str(device),
    )


@contextlib.contextmanager
def launching(kernel: Any, device: torch.device) -> Iterator[None]:
    """Context for one kernel launch: the interpreter lock, or the tensor's CUDA device.

    Serialising interpreted launches makes the kernels safe to call from worker threads
    (the actors run CPU work off the event loop); on CUDA it selects the input's device so
    multi-GPU hosts launch on the right one.
    """
    if is_interpreted(kernel):
        with _INTERPRETER_LOCK:
            yield
    elif device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def cdiv(a: int, b: int) -> int:
    """Ceiling division (``triton.cdiv`` that works without triton installed)."""
    return -(-a // b)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def pick_blocks(height: int, width: int, *, kernel: Any, block_h: int = 8, block_w: int = 128) -> tuple[int, int]:
    """Choose the ``BLOCK_H`` x ``BLOCK_W`` tile of a 2-D image kernel.

    Natively the given defaults are used (fixed sizes: no retuning per image size), shrunk to
    the image when it is smaller so tiny images do not launch mostly-masked programs. Under
    the interpreter each program costs a Python round trip, so the blocks grow to cover up to
    128 x 256 pixels at once. Both values are powers of two, as ``tl.arange`` requires.
    """
    if is_interpreted(kernel):
        return min(_pow2_at_least(height), 128), min(_pow2_at_least(width), 256)
    return (
        max(1, min(_pow2_at_least(height), block_h)),
        max(16, min(_pow2_at_least(width), block_w)),
    )


# Passed to every launch. Fusing a multiply and an add into one FMA rounds once instead of
# twice, so kernel results would drift from the torch references by an ulp and, after
# rounding to uint8, occasionally by one level. These kernels are memory-bound; separate
# roundings cost nothing measurable and keep them bit-compatible with their references.
# (Passing it explicitly also silences Triton 3.9's warning about the changing default.)
LAUNCH_OPTIONS: dict[str, Any] = {"enable_fp_fusion": False}


class ImageGrid(NamedTuple):
    """Launch geometry of a 2-D image kernel: one program per (image, block) on a 1-D grid."""

    block_h: int
    block_w: int
    tiles_w: int
    tiles_per_image: int
    grid: tuple[int]


def image_grid(n: int, height: int, width: int, *, kernel: Any) -> ImageGrid:
    """Blocks from :func:`pick_blocks` and the 1-D grid covering ``n`` images of that size.

    A flat grid (decoded in the kernel as image, block row, block column) avoids CUDA's
    65535 limit on the second and third grid axes.
    """
    block_h, block_w = pick_blocks(height, width, kernel=kernel)
    tiles_w = cdiv(width, block_w)
    tiles_per_image = cdiv(height, block_h) * tiles_w
    return ImageGrid(block_h, block_w, tiles_w, tiles_per_image, (n * tiles_per_image,))


def describe() -> dict[str, Any]:
    """Return what the backend choice depends on, for logs and benchmark reports."""
    try:
        mode: str = kernel_mode()
    except KernelBackendError as exc:
        mode = f"invalid ({exc.mode!r})"
    cuda = torch.cuda.is_available()
    return {
        "mode": mode,
        "triton_version": triton.__version__ if HAS_TRITON else None,
        "triton_interpret_env": os.environ.get("TRITON_INTERPRET", ""),
        "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }
