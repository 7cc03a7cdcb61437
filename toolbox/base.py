"""The ``Tool`` interface every restoration tool follows, and the tool registry.

A tool takes a batch ``N x 3 x H x W`` float tensor in ``[0, 1]`` (RGB) and returns the same
layout: ``H x W`` unchanged for scale 1, ``4H x 4W`` for super-resolution (scale 4). Tools are
deterministic and must not modify their input in place.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import structlog
import torch

from agentir.toolbox.registry import Registry, UnknownNameError
from agentir.toolbox.vocab import check_degradation

log = structlog.get_logger(__name__)


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


#: The tag :attr:`ToolSpec.whole_image` adds: the Executor never tiles a tool that carries it.
WHOLE_IMAGE_TAG = "global"


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """Everything about one built-in tool, declared in one place.

    The built-in tool packages (:mod:`agentir.toolbox.tools`, :mod:`agentir.toolbox.learned`) each declare a
    tuple of these, best first per degradation, and register them with :func:`register_spec`;
    the :class:`ToolInfo` the planner reads is derived from it (:attr:`info`).
    """

    name: str
    degradation: str
    description: str
    #: ``"package.module:Callable"``, imported on the first build and called as
    #: ``Callable(name=name, **kwargs)`` (so registering costs no import).
    factory: str
    scale: int = 1
    kind: str = "classical"
    #: Keyword arguments of ``factory`` (frozen into a read-only mapping).
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    tags: tuple[str, ...] = ()
    #: The tool uses whole-image statistics (global exposure, atmospheric light, a blur kernel or
    #: streak angle fitted to the whole frame, the 8x8 JPEG grid): a tile would see different
    #: ones, so it is never tiled. Shows in :attr:`ToolInfo.tags` as :data:`WHOLE_IMAGE_TAG`.
    whole_image: bool = False
    #: Learned tools only: their weights file ``toolbox/weights/NAME.safetensors`` is
    #: ``"shipped"`` (always registered; a missing or corrupt file makes the tool unavailable,
    #: see :func:`unavailable_reason`) or ``"optional"`` (trainable but not shipped: registered
    #: once the file exists). Read by :mod:`agentir.toolbox.learned`.
    weights: Literal["shipped", "optional"] | None = None
    #: Other registered tools this one is built from (it is unavailable when one of them is).
    requires: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if WHOLE_IMAGE_TAG in self.tags:
            raise ValueError(f"tool {self.name!r}: declare whole_image=True instead of the {WHOLE_IMAGE_TAG!r} tag")
        if ":" not in self.factory:
            raise ValueError(f"tool {self.name!r}: factory must be 'package.module:Callable', got {self.factory!r}")
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))

    @property
    def info(self) -> ToolInfo:
        """The planner-readable metadata (``"global"`` appended to the tags of whole-image tools)."""
        tags = (*self.tags, WHOLE_IMAGE_TAG) if self.whole_image else self.tags
        return ToolInfo(name=self.name, degradation=self.degradation, scale=self.scale, kind=self.kind, description=self.description, tags=tags)

    def build(self) -> Tool:
        """Import :attr:`factory` and build the tool (:class:`ToolError` when it cannot be built)."""
        module, _, attr = self.factory.partition(":")
        target = getattr(importlib.import_module(module), attr)
        tool: Tool = target(name=self.name, **self.kwargs)
        return tool


#: name -> tool instance (built lazily, cached: models load once).
TOOLS: Registry[Tool] = Registry("tool")
#: name -> metadata, readable without building anything.
TOOL_INFO: dict[str, ToolInfo] = {}
#: name -> declaration, for the tools registered with :func:`register_spec` (not plug-ins).
TOOL_SPECS: dict[str, ToolSpec] = {}
#: name -> a check that says why the tool cannot be built (or None), without building it.
_CHECKS: dict[str, Callable[[], str | None]] = {}
#: (tool, reason) pairs already logged as ``tool.unavailable``: each is said once per process.
_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def register_tool(info: ToolInfo, factory: Callable[[], Tool] | str, *, check: Callable[[], str | None] | None = None) -> None:
    """Register a tool factory together with its metadata.

    Args:
        check: optional; returns why the tool cannot be built (one line) or None, without
            building it (``agentir tools`` shows the reason, see :func:`unavailable_reason`).
    """
    check_degradation(info.degradation)
    if info.scale not in (1, 4):
        raise ValueError(f"tool {info.name!r}: scale must be 1 or 4, not {info.scale}")
    TOOLS.register(info.name, factory)
    TOOL_INFO[info.name] = info
    if check is not None:
        _CHECKS[info.name] = check


def register_spec(spec: ToolSpec, *, check: Callable[[], str | None] | None = None) -> None:
    """Register a declared tool: its :attr:`ToolSpec.info`, and a lazy builder.

    A build that raises :class:`ToolError` (a missing or corrupt weights file) is logged once as
    ``tool.unavailable`` and re-raised, so whoever asked (the Executor) reports it.
    """

    def build() -> Tool:
        try:
            return spec.build()
        except ToolError as exc:
            reason = exc.reason if exc.tool == spec.name else f"needs {exc.tool}: {exc.reason}"
            _warn_unavailable(spec.name, reason)
            raise

    register_tool(spec.info, build, check=check)
    TOOL_SPECS[spec.name] = spec


def _warn_unavailable(name: str, reason: str) -> None:
    with _WARNED_LOCK:
        if (name, reason) in _WARNED:
            return
        _WARNED.add((name, reason))
    log.warning("tool.unavailable", tool=name, reason=reason)


def unavailable_reason(name: str) -> str | None:
    """Why registered tool ``name`` cannot be built (one line), or None as far as can be told.

    Builds nothing: runs the tool's registered check (learned tools load and verify their
    weights file) and those of the tools it :attr:`~ToolSpec.requires`. Tools without a check
    (classical tools, plug-ins) answer None.

    Raises:
        UnknownNameError: ``name`` is not registered.
    """
    if name not in TOOLS:
        raise UnknownNameError("tool", name, TOOLS.names())
    check = _CHECKS.get(name)
    reason = check() if check is not None else None
    if reason is not None:
        return reason
    spec = TOOL_SPECS.get(name)
    for other in spec.requires if spec is not None else ():
        if other not in TOOLS:
            return f"needs tool {other!r}, which is not registered"
        problem = unavailable_reason(other)
        if problem is not None:
            return f"needs {other}: {problem}"
    return None


def unregister_tool(name: str) -> None:
    """Remove a registered tool and its metadata (plug-ins being unloaded, tests)."""
    TOOLS.unregister(name)
    TOOL_INFO.pop(name, None)
    TOOL_SPECS.pop(name, None)
    _CHECKS.pop(name, None)


#: Order of tool kinds in :func:`tools_for`: classical tools first, then learned ones, then plug-ins.
_KIND_ORDER = {"classical": 0, "learned": 1, "plugin": 2}


def tools_for(degradation: str, *, include_manual: bool = False) -> list[str]:
    """Names of the registered tools that treat ``degradation``: classical, learned, then plug-in
    tools, each kind in registration order (best first), whichever package was imported first.

    Tools tagged ``manual`` are left out unless ``include_manual`` is true.
    """
    check_degradation(degradation)
    names = [name for name, info in TOOL_INFO.items() if info.degradation == degradation and (include_manual or "manual" not in info.tags)]
    return sorted(names, key=lambda n: _KIND_ORDER.get(TOOL_INFO[n].kind, len(_KIND_ORDER)))  # stable: keeps registration order within a kind


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
