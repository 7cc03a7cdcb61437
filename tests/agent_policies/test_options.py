"""JobOptions: one validator and one set of defaults for every way a job enters."""

from __future__ import annotations

import json
import math

import pytest

from agentir.agent_policies.options import JOB_OPTION_NAMES, JobOptions, OptionError
from agentir.agent_policies.search import Budget


def test_defaults_are_the_products():
    """The typed defaults: experience-era judge (first-success) and keep_improved on, 32 tool calls."""
    o = JobOptions()
    assert (o.reflection, o.keep_improved, o.max_tool_calls, o.rollback, o.wave) == ("first-success", True, 32, True, 1)
    assert o.budget() == Budget()


def test_parse_applies_given_values_over_the_defaults_or_a_base():
    """parse() fills defaults for what is not given; a base's values survive unless overridden."""
    base = JobOptions.parse({"max_tool_calls": 8})
    o = JobOptions.parse({"wave": 0, "subtasks": ["noise", "noise", "haze"]}, base=base)
    assert o.max_tool_calls == 8 and o.wave == 0 and o.subtasks == ("noise", "haze")
    assert o.to_wire()["subtasks"] == ["noise", "haze"]


@pytest.mark.parametrize(
    ("raw", "option"),
    [
        ({"max_tool_calls": 10**400}, "max_tool_calls"),  # an integer past any budget (OverflowError later)
        ({"max_tool_calls": 3.5}, "max_tool_calls"),  # a fractional count
        ({"max_tool_calls": 4.0}, "max_tool_calls"),  # a float is not a count either
        ({"max_tool_calls": True}, "max_tool_calls"),  # bool is an int subclass
        ({"max_tool_calls": -1}, "max_tool_calls"),
        ({"max_rollbacks": 10**6}, "max_rollbacks"),
        ({"wave": "x"}, "wave"),
        ({"max_seconds": math.nan}, "max_seconds"),
        ({"max_seconds": math.inf}, "max_seconds"),
        ({"max_seconds": -math.inf}, "max_seconds"),
        ({"max_seconds": 0}, "max_seconds"),
        ({"max_seconds": 10**400}, "max_seconds"),  # int too large for a float
        ({"max_tool_cost": math.nan}, "max_tool_cost"),
        ({"max_tool_cost": 0}, "max_tool_cost"),
        ({"rollback": 1}, "rollback"),
        ({"keep_improved": "yes"}, "keep_improved"),
        ({"reflection": "judge-dredd"}, "reflection"),
        ({"subtasks": "noise"}, "subtasks"),
        ({"subtasks": ["nosie"]}, "subtasks"),
        ({"tools": {"noise": []}}, "tools"),
        ({"tools": {"noise": ["no_such_tool"]}}, "tools"),
        ({"tools": {"blur": ["dct_denoise"]}}, "tools"),
        ({"tools": ["dct_denoise"]}, "tools"),
        ({"budget": 3}, "budget"),
    ],
)
def test_bad_values_are_refused_naming_the_option(raw, option):
    """Every value a probe found accepted-then-failing (or nonsensical) is an OptionError naming the option."""
    with pytest.raises(OptionError) as info:
        JobOptions.validate(raw)
    assert info.value.option == option
    assert option in str(info.value)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300  # one short line, even for a 400-digit number


def test_not_a_map_is_refused():
    """options that are not a JSON object get a one-line error with an example."""
    with pytest.raises(OptionError, match="JSON object"):
        JobOptions.validate(["max_tool_calls", 3])  # type: ignore[arg-type]  # deliberate: a list, not a map, to test the error


def test_validated_options_are_json_without_nan():
    """What validate() returns serialises as strict JSON (no NaN/Infinity ever reaches a listing)."""
    values = JobOptions.validate({"max_seconds": 12, "max_tool_cost": 5, "tools": {"noise": ["dct_denoise"]}, "rollback": False})
    assert values == {"max_seconds": 12.0, "max_tool_cost": 5.0, "tools": {"noise": ["dct_denoise"]}, "rollback": False}
    json.dumps(values, allow_nan=False)
    json.dumps(JobOptions.parse(values).to_wire(), allow_nan=False)


def test_every_field_is_an_option_and_round_trips():
    """The option names are the dataclass fields, and to_wire() parses back to the same options."""
    o = JobOptions.parse({"max_tool_calls": 5, "subtasks": ["rain"], "tools": {"rain": ["streak_derain"]}, "max_tool_cost": 2.5})
    assert set(o.to_wire()) <= set(JOB_OPTION_NAMES)
    assert JobOptions.parse(o.to_wire()) == o
