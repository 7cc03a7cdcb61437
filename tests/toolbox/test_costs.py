"""Measured tool costs: the shipped table, reading bad files, and what the planner does with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agentir.toolbox.tools  # noqa: F401 - registers the tools
from agentir.toolbox.base import TOOL_INFO
from agentir.toolbox.costs import FORMAT, affordable, costs_document, load_costs, tool_cost


def test_every_built_in_tool_has_a_measured_cost() -> None:
    missing = [n for n, info in TOOL_INFO.items() if info.kind in ("classical", "learned") and tool_cost(n) is None]
    assert not missing
    assert all(tool_cost(n) > 0 for n in TOOL_INFO if tool_cost(n) is not None)


def test_round_trip_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "costs.json"
    good.write_text(json.dumps(costs_document({"b": 2.0, "a": 0.5}, command="test", threads=1)))
    assert load_costs(good) == {"a": 0.5, "b": 2.0}
    assert load_costs(tmp_path / "absent.json") == {}
    bad = tmp_path / "bad.json"
    for content in ("{", json.dumps({"format": "other"}), json.dumps({"format": FORMAT, "seconds_per_mp": []})):
        bad.write_text(content)
        with pytest.raises(ValueError, match="--costs-out"):
            load_costs(bad)


def test_the_planner_breaks_utility_ties_by_cost() -> None:
    from agentir.agent_policies.knowledge import Knowledge
    from agentir.agent_policies.planning import PlanContext
    from agentir.agent_policies.planning.experience import ExperiencePlanner

    k = Knowledge(precedence={}, pairs={}, tools={})  # no evidence: every tool has the same utility
    cheap, dear = sorted(("bilateral_denoise", "dct_denoise"), key=lambda n: tool_cost(n) or 0.0)
    ctx = PlanContext(levels={"noise": "high"}, scores={}, tools={"noise": [dear, cheap]})
    assert ExperiencePlanner(k).tool_order("noise", ctx) == [cheap, dear]


def test_a_speed_limit_drops_slow_tools_but_never_all_of_a_subtasks() -> None:
    """max_tool_cost: measured-slower tools go, unmeasured ones (plug-ins) stay, the cheapest stays."""
    slow, fast = "fusion_denoise", "cnn_denoise"
    assert tool_cost(slow) > 5.0 > tool_cost(fast)
    assert affordable([slow, fast, "my_plugin"], 5.0) == [fast, "my_plugin"]
    assert affordable([slow, fast], None) == [slow, fast]
    assert affordable([slow, "rl_motion_deblur"], 0.01) == [slow]  # both too slow: the cheaper one
    assert affordable([], 1.0) == []
