"""One generic registry type for tools and policies, by explicit name.

Entries are either objects or lazy ``"module:Attr"`` strings resolved on first use, so that
registering a heavy tool costs nothing until somebody asks for it. Unknown names answer with
close matches.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists close matches.

    Attributes:
        kind: what was looked up ("tool", "planning policy", ...).
        name: the unknown name.
        choices: every registered name.
    """

    def __init__(self, kind: str, name: str, choices: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.choices = choices
        close = difflib.get_close_matches(name, choices, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(choices)) or 'none'}"
        super().__init__(f"unknown {kind} {name!r}; {hint}")

    def __str__(self) -> str:  # KeyError quotes its argument; we want the sentence.
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> factory table. ``register`` fails on duplicates; ``get`` builds (and caches) one instance."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[[], T] | str] = {}
        self._instances: dict[str, T] = {}

    def register(self, name: str, factory: Callable[[], T] | str, *, replace: bool = False) -> None:
        """Register ``factory`` (a zero-argument callable or a lazy ``"module:Attr"``) under ``name``.

        Raises:
            ValueError: ``name`` is already registered and ``replace`` is false.
        """
        if name in self._factories and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._factories[name] = factory
        self._instances.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (and its cached instance); unknown names raise :class:`UnknownNameError`."""
        if name not in self._factories:
            raise UnknownNameError(self.kind, name, list(self._factories))
        del self._factories[name]
        self._instances.pop(name, None)

    def names(self) -> list[str]:
        return list(self._factories)

    def cached(self, name: str) -> T | None:
        """The instance built for ``name`` so far, or None (builds nothing)."""
        return self._instances.get(name)

    def forget(self, name: str) -> None:
        """Drop ``name``'s cached instance, so the next ``get`` builds a new one (settings changed)."""
        self._instances.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def get(self, name: str) -> T:
        """Return the (cached) instance registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        if name in self._instances:
            return self._instances[name]
        try:
            factory = self._factories[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, list(self._factories)) from None
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        instance = factory()
        self._instances[name] = instance
        return instance
