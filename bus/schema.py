"""Message schema machinery: the ``@message`` / ``@record`` decorators and wire conversion.

A message kind is a frozen, slotted, keyword-only dataclass with a ``KIND`` string and a
``VERSION`` int, registered once (a duplicate kind fails at import). Nested records are plain
frozen dataclasses. Conversion to and from msgpack-ready values is driven by the type hints, so
a decoded message has exactly the declared types or is rejected.

Evolution: add fields with defaults only (readers ignore fields they do not know). A breaking
change bumps ``VERSION`` and registers an upgrade function from the previous version's body.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from agentir.bus.errors import MalformedMessage

T = TypeVar("T")


class Message:
    """Base of every message kind (see :func:`message`)."""

    __slots__ = ()
    KIND: ClassVar[str]
    VERSION: ClassVar[int]


#: kind -> message class
REGISTRY: dict[str, type[Message]] = {}
#: (kind, from_version) -> function upgrading a body dict to from_version + 1
UPGRADES: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


@typing.dataclass_transform(kw_only_default=True, frozen_default=True)
def message(kind: str, version: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: make ``cls`` a frozen slotted keyword-only dataclass and register its kind.

    Raises:
        ValueError: ``kind`` is already registered (two schemas may not share a kind).
    """

    def wrap(cls: type[T]) -> type[T]:
        if kind in REGISTRY:
            raise ValueError(f"message kind {kind!r} is registered twice ({REGISTRY[kind].__qualname__} and {cls.__qualname__})")
        if not issubclass(cls, Message):
            raise TypeError(f"{cls.__qualname__} must derive from bus.Message")
        new = dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
        new.KIND = kind
        new.VERSION = version
        REGISTRY[kind] = new
        return new

    return wrap


def upgrade(kind: str, from_version: int) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Callable[[dict[str, Any]], dict[str, Any]]]:
    """Register a function that turns a ``kind`` body of ``from_version`` into ``from_version + 1``."""

    def wrap(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        UPGRADES[(kind, from_version)] = fn
        return fn

    return wrap


@typing.dataclass_transform(kw_only_default=True, frozen_default=True)
def record(cls: type[T]) -> type[T]:
    """Class decorator for nested values inside messages (frozen, slotted, keyword-only)."""
    return dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)


# ----------------------------------------------------------------------------- conversion
def to_wire(value: Any) -> Any:
    """Turn a message (or any nested value) into msgpack-ready builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)  # each class's own module resolves its annotations
        _HINTS[cls] = hints
    return hints


def _fail(path: str, expected: str, value: Any) -> MalformedMessage:
    return MalformedMessage(f"field {path}: expected {expected}, got {type(value).__name__}")


def from_wire(tp: Any, value: Any, path: str = "body") -> Any:
    """Build a value of type ``tp`` from wire data, rejecting anything that does not fit."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return from_wire(arg, value, path)
            except MalformedMessage as exc:
                errors.append(exc)
        raise errors[0] if errors else _fail(path, str(tp), value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "a list", value)
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise MalformedMessage(f"field {path}: expected {len(args)} items, got {len(value)}")
            return tuple(from_wire(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [from_wire(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, "a map", value)
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {from_wire(kt, k, f"{path} key"): from_wire(vt, v, f"{path}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _fail(path, f"a {tp.__name__} map", value)
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = from_wire(hints[f.name], value[f.name], f"{path}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise MalformedMessage(f"field {path}.{f.name} is missing")
        return tp(**kwargs)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, "a number", value)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, "an integer", value)
        return value
    if tp in (str, bool, bytes):
        if not isinstance(value, tp):
            raise _fail(path, tp.__name__, value)
        return value
    if tp is type(None):
        if value is not None:
            raise _fail(path, "nil", value)
        return None
    raise MalformedMessage(f"field {path}: unsupported schema type {tp!r}")
