"""Compile every kernel for a CUDA architecture without a GPU: ``python -m agentir.kernels.compile_check``.

The Triton interpreter is lenient where the compiler is not (types of loop-carried values,
integer arguments equal to 1 that Triton specialises into constants, intrinsics), so a kernel
that passes the CPU tests can still fail to compile. This runs the real compiler down to PTX
and a cubin (``ptxas`` ships in the triton wheel) and checks the PTX for the arithmetic the
torch references assume: no fused multiply-adds and IEEE division.

It must run in a process where ``TRITON_INTERPRET`` was not set when triton was imported
(the interpreter replaces Triton's own library functions too). It uses Triton's compiler API
(``ASTSource``, ``GPUTarget``), which is internal and may move between Triton releases.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentir.kernels import backend, color, convert, stats, tiles

__all__ = ["CompiledKernel", "compile_kernels", "main"]

# Scalar arguments that are floats; every other non-pointer, non-constexpr argument is i32.
_FLOAT_ARGS = frozenset(
    ["m00", "m01", "m02", "m10", "m11", "m12", "m20", "m21", "m22", "p0", "p1", "p2", "q0", "q1", "q2", "scale", "inv_ramp_y", "inv_ramp_x"]
)
_BLOCKS = {"BLOCK_H": 8, "BLOCK_W": 128}

# (case name, kernel, pointer element types, ints equal to 1 that Triton turns into constants)
_CASES: list[tuple[str, Any, dict[str, str], dict[str, int]]] = [
    ("to_float_nchw/u8->fp32", convert._to_float_nchw_kernel, {"src_ptr": "*u8", "dst_ptr": "*fp32"}, {}),
    ("to_float_nchw/u8->bf16", convert._to_float_nchw_kernel, {"src_ptr": "*u8", "dst_ptr": "*bf16"}, {"stride_c": 1}),
    ("to_uint8_nhwc/fp32", convert._to_uint8_nhwc_kernel, {"src_ptr": "*fp32", "dst_ptr": "*u8"}, {"stride_w": 1}),
    ("to_uint8_nhwc/fp16", convert._to_uint8_nhwc_kernel, {"src_ptr": "*fp16", "dst_ptr": "*u8"}, {}),
    ("color_affine/fp32", color._color_affine_kernel, {"src_ptr": "*fp32", "dst_ptr": "*fp32"}, {"stride_w": 1}),
    ("color_affine/bf16", color._color_affine_kernel, {"src_ptr": "*bf16", "dst_ptr": "*bf16"}, {}),
    ("rgb_to_value/fp16", color._rgb_to_value_kernel, {"src_ptr": "*fp16", "dst_ptr": "*fp16"}, {"H": 1, "W": 1}),
    ("blend_tiles/fp32", tiles._blend_tiles_kernel, {"tiles_ptr": "*fp32", "pos_ptr": "*i64", "out_ptr": "*fp32"}, {"stride_w": 1}),
    (
        "blend_tiles/bf16-uniform-one-tile",
        tiles._blend_tiles_kernel,
        {"tiles_ptr": "*bf16", "pos_ptr": "*i64", "out_ptr": "*bf16"},
        {"ramp_y": 1, "ramp_x": 1, "T": 1},
    ),
    ("image_stats/fp32", stats._image_stats_kernel, {"src_ptr": "*fp32", "part_ptr": "*fp32"}, {"stride_w": 1}),
    ("image_stats/bf16-one-row", stats._image_stats_kernel, {"src_ptr": "*bf16", "part_ptr": "*fp32"}, {"H": 1}),
]


@dataclass(frozen=True, slots=True)
class CompiledKernel:
    """One compiled case: its name, PTX text, cubin size and problems found in the PTX."""

    name: str
    ptx: str
    cubin_bytes: int
    problems: tuple[str, ...]


def _ptx_problems(ptx: str) -> tuple[str, ...]:
    problems = []
    if re.search(r"\bfma\.rn\.f32\b", ptx):
        problems.append("fused multiply-add in PTX (launch without enable_fp_fusion=False?)")
    if "div.full.f32" in ptx or "div.approx.f32" in ptx:
        problems.append("approximate float division in PTX (use tl.math.div_rn)")
    return tuple(problems)


def compile_kernels(arch: int = 90) -> list[CompiledKernel]:
    """Compile every kernel case for ``sm_<arch>``; raise on the first compiler error.

    Raises:
        RuntimeError: triton is missing, or the kernels were built for the interpreter.
        triton.compiler.errors.CompilationError: a kernel does not compile.
    """
    if not backend.HAS_TRITON:
        raise RuntimeError("triton is not installed; nothing to compile")
    if backend.is_interpreted(convert._to_float_nchw_kernel):
        raise RuntimeError(
            "kernels were created for the Triton interpreter; run this in a process without "
            "TRITON_INTERPRET=1 (e.g. env -u TRITON_INTERPRET python -m agentir.kernels.compile_check)"
        )
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    out = []
    for name, kernel, pointers, ones in _CASES:
        consts = {**ones, **_BLOCKS}
        signature = {}
        for arg in kernel.arg_names:
            if arg in consts:
                signature[arg] = "constexpr"
            elif arg in pointers:
                signature[arg] = pointers[arg]
            else:
                signature[arg] = "fp32" if arg in _FLOAT_ARGS else "i32"
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs=consts),
            target=GPUTarget("cuda", arch, 32),
            options=dict(backend.LAUNCH_OPTIONS),
        )
        ptx = compiled.asm["ptx"]
        out.append(CompiledKernel(name, ptx, len(compiled.asm.get("cubin", b"")), _ptx_problems(ptx)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Print one line per compiled case; return 1 if any case has a problem."""
    p = argparse.ArgumentParser(prog="python -m agentir.kernels.compile_check", description=__doc__.split("\n")[0])
    p.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 80 or 90")
    args = p.parse_args(argv)
    failed = False
    for k in compile_kernels(args.arch):
        status = "ok" if k.cubin_bytes and not k.problems else "PROBLEM"
        failed |= status != "ok"
        print(f"{status} sm_{args.arch} {k.name}: cubin {k.cubin_bytes} bytes" + "".join(f"; {x}" for x in k.problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
