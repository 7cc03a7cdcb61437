"""The ``Tool`` interface every restoration tool follows, and the tool registry.

A tool takes a batch ``N x 3 x H x W`` float tensor in ``[0, 1]`` (RGB) and returns the same
layout: ``H x W`` unchanged for scale 1, ``4H x 4W`` for super-resolution (scale 4). Tools are
deterministic and must not modify their input in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from toolbox.registry import Registry
from toolbox.vocab import check_degradation


class ToolError(RuntimeError):
    """A tool failed on its input. ``tool`` names it; the message says why."""

    def __init__(self, tool: str, reason: str) -> None:
        self.tool = tool
        self.reason = reason
        super().__init__(f"tool {tool!r} failed: {reason}")


@runtime_checkable
class Tool(Protocol):
    """A restoration tool. See the module docstring for the tensor contract."""

    name: str
    degradation: str
    scale: int
    device: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ToolInfo:
    """What the planner may read about a tool without building it."""

    name: str
    degradation: str
    scale: int = 1
    kind: str = "classical"  # "classical" | "learned" | "plugin"
    description: str = ""
    #: "manual" keeps a tool out of the agent's default choice (``tools_for``); it can still be
    #: named explicitly (job option ``tools``, plug-ins, benchmarks).
    tags: tuple[str, ...] = field(default_factory=tuple)


#: name -> tool instance (built lazily, cached: models load once).
TOOLS: Registry[Tool] = Registry("tool")
#: name -> metadata, readable without building anything.
TOOL_INFO: dict[str, ToolInfo] = {}


def register_tool(info: ToolInfo, factory) -> None:
    """Register a tool factory together with its metadata."""
    check_degradation(info.degradation)
    if info.scale not in (1, 4):
        raise ValueError(f"tool {info.name!r}: scale must be 1 or 4, not {info.scale}")
    TOOLS.register(info.name, factory)
    TOOL_INFO[info.name] = info


def unregister_tool(name: str) -> None:
    """Remove a registered tool and its metadata (plug-ins being unloaded, tests)."""
    TOOLS.unregister(name)
    TOOL_INFO.pop(name, None)


def tools_for(degradation: str, *, include_manual: bool = False) -> list[str]:
    """Names of the registered tools that treat ``degradation``, in registration order.

    Tools tagged ``manual`` are left out unless ``include_manual`` is true.
    """
    check_degradation(degradation)
    return [name for name, info in TOOL_INFO.items() if info.degradation == degradation and (include_manual or "manual" not in info.tags)]


def run_on_rgb(tool: Tool, rgb: np.ndarray) -> np.ndarray:
    """Run ``tool`` on one RGB ``uint8`` ``H x W x 3`` image outside the actors; returns ``uint8``.

    For offline work on whole images (self-exploration, one-tool benchmark policies): ``/255``
    in, clamp to [0, 1], ``x255`` and round out. The Executor does its own conversions with the
    Triton kernels (batches, tiles, devices).

    Raises:
        ToolError: the tool returned NaN or infinite values (or raised it itself).
    """
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    with torch.inference_mode():
        y = tool(x)
    if not bool(torch.isfinite(y).all()):
        raise ToolError(tool.name, "returned non-finite values")
    return y[0].clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def check_batch(name: str, batch: torch.Tensor) -> None:
    """Raise ``ToolError`` unless ``batch`` is a float ``N x 3 x H x W`` tensor."""
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4 or batch.shape[1] != 3:
        shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ToolError(name, f"expected an N x 3 x H x W tensor, got {shape}")
    if not batch.is_floating_point():
        raise ToolError(name, f"expected a float tensor in [0, 1], got {batch.dtype}")
