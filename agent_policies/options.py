"""Job options: one typed :class:`JobOptions`, one validator, one set of defaults.

A job's options tune its search. On the wire (``JobSubmitted.options``, ``Perceived.options``, the
daemon's JSON and its SQLite rows) they travel as a plain map holding only what the client set;
:meth:`JobOptions.validate` checks and normalises such a map, :meth:`JobOptions.parse` turns it
into the typed object with every default filled in. The CLI, the daemon, the ``Restorer``, the
Planner actor and the benchmarks all go through these two functions, so an option is checked the
same way wherever it enters and its default is written once, here.

Every bad value is an :class:`OptionError` naming the option (``error.option``) with a one-line
message that says what would be accepted; nothing out of range is accepted to fail later
(integers past any sensible budget, NaN or infinite seconds, fractional counts, booleans as
numbers).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentir.agent_policies.search import Budget
from agentir.toolbox.vocab import DEGRADATIONS, check_degradation

__all__ = ["JOB_OPTION_NAMES", "JobOptions", "OptionError"]


class OptionError(ValueError):
    """A job option with a value that cannot be accepted; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(message)


#: Upper bounds that keep a budget meaningful (and an integer inside 64 bits on every layer).
MAX_TOOL_CALLS = 10_000
MAX_ROLLBACKS = 1_000
MAX_WAVE = 64
MAX_SECONDS = 7 * 24 * 3600.0
MAX_TOOL_COST = 1e6


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """How one job's search runs. Every field has the product's default.

    Attributes:
        max_tool_calls: tool outputs the search may ask for in all (0 .. 10,000).
        max_rollbacks: rollbacks and re-plans it may make (0 .. 1,000).
        max_seconds: wall time of the search before it falls back to the best result (> 0).
        wave: tools run per step before the judge looks; 0 runs all of a subtask's tools at once.
        rollback: roll back and re-plan a failed step (False keeps failures and moves on).
        keep_improved: a failed step that still lowered its degradation's severity is kept
            rather than rolled back (the paper rolls back on every failure: ``False``).
        reflection: the judge, by registered name (``first-success``, ``threshold``, ``none``).
        subtasks: known degradations that replace perception (``random-gt``; a caller who knows).
        tools: per subtask, the tools to try in this order instead of the planner's choice.
        max_tool_cost: skip tools measured slower than this many seconds per megapixel (keeping
            at least each subtask's cheapest tool and unmeasured plug-ins).
    """

    # The search's limits take Budget's defaults: one place for each number.
    max_tool_calls: int = Budget.max_tool_calls
    max_rollbacks: int = Budget.max_rollbacks
    max_seconds: float = Budget.max_seconds
    wave: int = Budget.wave
    rollback: bool = Budget.rollback
    keep_improved: bool = Budget.keep_improved
    reflection: str = "first-success"
    subtasks: tuple[str, ...] | None = None
    tools: Mapping[str, tuple[str, ...]] | None = field(default=None, hash=False)
    max_tool_cost: float | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def parse(
        cls,
        raw: Mapping[str, Any] | None = None,
        *,
        base: JobOptions | None = None,
        reflections: Collection[str] | None = None,
        tools: Collection[str] | None = None,
    ) -> JobOptions:
        """Validate ``raw`` (see :meth:`validate`) and apply it over ``base`` (default: the defaults)."""
        values = cls.validate(raw, reflections=reflections, tools=tools)
        start = base if base is not None else cls()
        typed: dict[str, Any] = dict(values)
        if "subtasks" in typed:
            typed["subtasks"] = tuple(typed["subtasks"])
        if "tools" in typed:
            typed["tools"] = {k: tuple(v) for k, v in typed["tools"].items()}
        return dataclasses.replace(start, **typed)

    @staticmethod
    def validate(
        raw: Mapping[str, Any] | None,
        *,
        reflections: Collection[str] | None = None,
        tools: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Check a wire-form options map and return it normalised (JSON- and msgpack-ready).

        Args:
            raw: the map a client sent (``None`` or empty: no options).
            reflections: the reflection policy names to accept (default: the registered ones).
            tools: the tool names to accept in ``tools`` (default: the registered tools).

        Raises:
            OptionError: an unknown option or a bad value; ``option`` names it.
        """
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise OptionError("options", 'options must be a JSON object, e.g. {"max_tool_calls": 16}')
        unknown = sorted(str(k) for k in raw if k not in JOB_OPTION_NAMES)
        if unknown:
            raise OptionError(unknown[0], f"unknown job option(s) {', '.join(unknown)}; known: {', '.join(JOB_OPTION_NAMES)}")
        out: dict[str, Any] = {}
        for name, value in raw.items():
            out[name] = _CHECKS[name](name, value, reflections, tools)
        return out

    # ------------------------------------------------------------------ views
    def budget(self) -> Budget:
        """The search's limits."""
        return Budget(
            max_tool_calls=self.max_tool_calls,
            max_rollbacks=self.max_rollbacks,
            max_seconds=self.max_seconds,
            wave=self.wave,
            rollback=self.rollback,
            keep_improved=self.keep_improved,
        )

    def to_wire(self) -> dict[str, Any]:
        """Every field as a JSON- and msgpack-ready map (``None`` fields left out)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "subtasks":
                value = list(value)
            elif f.name == "tools":
                value = {k: list(v) for k, v in value.items()}
            out[f.name] = value
        return out


#: The options a job may carry, in the order the documentation lists them.
JOB_OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(JobOptions))


# ---------------------------------------------------------------------- per-option checks
def _whole(name: str, value: Any, top: int) -> int:
    # bool is an int subclass and a float 3.0 is a number; neither is a count a client meant.
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(name, f"job option {name!r} must be a whole number from 0 to {top}, got {value!r}")
    if not 0 <= value <= top:
        raise OptionError(name, f"job option {name!r} must be from 0 to {top}, got {_short(value)}")
    return int(value)


def _seconds(name: str, value: Any, top: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(name, f"job option {name!r} must be a number, got {value!r}")
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if not math.isfinite(as_float) or not 0 < as_float <= top:
        raise OptionError(name, f"job option {name!r} must be a finite number above 0 and at most {top:g}, got {_short(value)}")
    return as_float


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(name, f"job option {name!r} must be true or false, got {value!r}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {len(str(value))}-digit number"


def _check_reflection(name: str, value: Any, reflections: Collection[str] | None) -> str:
    if reflections is None:
        from agentir.agent_policies.registry import REFLECTION

        reflections = REFLECTION.names()
    if not isinstance(value, str) or value not in reflections:
        raise OptionError(name, f"job option 'reflection' must be one of {', '.join(reflections)}, got {value!r}")
    return value


def _check_subtasks(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise OptionError(name, f"job option 'subtasks' must be a list of degradation names ({', '.join(DEGRADATIONS)})")
    try:
        return [check_degradation(s) for s in dict.fromkeys(value)]
    except ValueError as exc:
        raise OptionError(name, f"job option 'subtasks': {exc}") from None


def _check_tools(name: str, value: Any, tools: Collection[str] | None) -> dict[str, list[str]]:
    if tools is None:
        import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools, so their names are known
        from agentir.toolbox.base import TOOL_INFO

        tools = TOOL_INFO
    if not isinstance(value, Mapping):
        raise OptionError(name, "job option 'tools' must map a degradation to a list of tool names")
    out: dict[str, list[str]] = {}
    for subtask, names in value.items():
        try:
            check_degradation(subtask)
        except ValueError as exc:
            raise OptionError(name, f"job option 'tools': {exc}") from None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise OptionError(name, f"job option 'tools' for {subtask!r} must be a non-empty list of tool names")
        for n in names:
            if n not in tools:
                raise OptionError(name, f"unknown tool {n!r} in job option 'tools'; `agentir tools` lists them")
        out[subtask] = list(names)
    return out


_CHECKS: dict[str, Any] = {
    "max_tool_calls": lambda n, v, r, t: _whole(n, v, MAX_TOOL_CALLS),
    "max_rollbacks": lambda n, v, r, t: _whole(n, v, MAX_ROLLBACKS),
    "wave": lambda n, v, r, t: _whole(n, v, MAX_WAVE),
    "max_seconds": lambda n, v, r, t: _seconds(n, v, MAX_SECONDS),
    "max_tool_cost": lambda n, v, r, t: _seconds(n, v, MAX_TOOL_COST),
    "rollback": lambda n, v, r, t: _flag(n, v),
    "keep_improved": lambda n, v, r, t: _flag(n, v),
    "reflection": lambda n, v, r, t: _check_reflection(n, v, r),
    "subtasks": lambda n, v, r, t: _check_subtasks(n, v),
    "tools": lambda n, v, r, t: _check_tools(n, v, t),
}
