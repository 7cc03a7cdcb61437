"""Distilling exploration records into knowledge, and reading knowledge files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from explore_records import record

from agentir.agent_policies.knowledge import DEFAULT_KNOWLEDGE, FORMAT, VERSION, Knowledge, KnowledgeError, agent_path, distil
from agentir.toolbox.vocab import DEGRADATIONS


def test_agent_path_follows_the_least_degraded_output() -> None:
    rec = record("x", "rain", "haze", psnr_ab=25.0, psnr_ba=23.0)
    path = agent_path(rec, ["rain", "haze"])
    assert [n["path"][-1] for n in path] == [["rain", "t1"], ["haze", "t1"]]
    assert path[-1]["psnr"] == 25.0


def test_distil_learns_the_better_order_and_the_better_tool() -> None:
    recs = [record(f"r{i}", "rain", "haze", psnr_ab=25.0, psnr_ba=23.0) for i in range(3)]
    recs.append(record("r9", "rain", "haze", psnr_ab=22.0, psnr_ba=23.0))  # one image disagrees
    recs += [record(f"n{i}", "noise", "dark", psnr_ab=24.0, psnr_ba=21.0, good_tool="t2") for i in range(2)]
    k = distil(recs, {"seed": 0})
    pairs = {(p["first"], p["then"]): p for p in k["pairs"]}
    assert pairs[("rain", "haze")]["support"] == 4
    assert pairs[("rain", "haze")]["wins"] == 3
    assert pairs[("rain", "haze")]["mean_gain_db"] == pytest.approx((2 + 2 + 2 - 1) / 4)
    assert pairs[("noise", "dark")]["wins"] == 2
    assert k["precedence"]["rain"] > k["precedence"]["haze"]
    assert k["precedence"]["noise"] > k["precedence"]["dark"]
    # tools: the good tool leads at the high level, with every call counted
    rain_high = k["tools"]["rain"]["high"]
    assert rain_high[0]["tool"] == "t1" and rain_high[0]["successes"] == rain_high[0]["calls"]
    assert k["tools"]["noise"]["high"][0]["tool"] == "t2"
    # the per-combination table has both orders with the agent's PSNR
    combo = next(c for c in k["combinations"] if c["combination"] == ["haze", "rain"])
    assert {tuple(o["order"]) for o in combo["orders"]} == {("rain", "haze"), ("haze", "rain")}
    assert any("rain before haze" in r for r in k["rules"])
    json.dumps(k, allow_nan=False)  # writable as strict JSON


def test_distil_is_deterministic_whatever_the_record_order() -> None:
    recs = [record(f"r{i}", "rain", "haze", psnr_ab=25.0 - i, psnr_ba=23.0) for i in range(5)]
    a = json.dumps(distil(recs, {}), sort_keys=True)
    random.Random(1).shuffle(recs)
    assert json.dumps(distil(recs, {}), sort_keys=True) == a


def test_unexplored_pairs_are_ordered_by_strength_and_explored_ones_by_evidence() -> None:
    recs = [record(f"a{i}", "rain", "haze", psnr_ab=25.0, psnr_ba=23.0) for i in range(4)]
    recs += [record(f"b{i}", "haze", "dark", psnr_ab=25.0, psnr_ba=23.0) for i in range(4)]
    k = Knowledge.from_json(distil(recs, {}))
    assert k.p_before("rain", "haze") > 0.75
    assert k.p_before("haze", "rain") == pytest.approx(1 - k.p_before("rain", "haze"))
    # rain and dark were never explored together: transitivity through haze orders them
    assert 0.5 < k.p_before("rain", "dark") < k.p_before("rain", "haze") + 0.2
    assert k.order(["dark", "haze", "rain"]) == ["rain", "haze", "dark"]
    # degradations with no evidence at all are neutral, and ties keep the tie-break order
    assert k.p_before("jpeg", "noise") == pytest.approx(0.5)
    assert k.order(["noise", "jpeg"], tie_break={"noise": 0, "jpeg": 1}) == ["noise", "jpeg"]


def test_tool_stats_pool_levels_with_too_few_calls() -> None:
    k = Knowledge.from_json(distil([record("r", "rain", "haze", psnr_ab=25.0, psnr_ba=23.0)], {}))
    stats = k.tool_stats("rain", "medium")  # never seen at medium: pooled over the levels seen
    assert set(stats) == {"t1", "t2"}
    assert stats["t1"].success_rate == 1.0 and stats["t2"].success_rate == 0.0
    assert k.tool_utility(stats["t1"]) > k.tool_utility(stats["t2"])
    assert "rain" in k.describe(["rain"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "something-else"}), "not an agentir knowledge file"),
        (json.dumps({"format": FORMAT, "version": VERSION - 1}), "re-run `agentir explore`"),
        (json.dumps({"format": FORMAT, "version": VERSION, "precedence": {}}), "malformed"),
        (json.dumps({"format": FORMAT, "version": VERSION, "precedence": {"fog": 1.0}, "pairs": [], "tools": {}}), "unknown degradation 'fog'"),
    ],
)
def test_bad_knowledge_files_raise_a_clear_error(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "k.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KnowledgeError, match=message) as info:
        Knowledge.load(path)
    assert str(path) in str(info.value)


def test_the_shipped_knowledge_loads_and_covers_group_a() -> None:
    k = Knowledge.load(DEFAULT_KNOWLEDGE)
    from agentir.toolbox.degrade import COMBINATIONS

    explored = {tuple(sorted(c["combination"])) for c in k.combinations}
    assert explored == {tuple(sorted(c)) for c in COMBINATIONS["A"]}
    assert not explored & {tuple(sorted(c)) for c in COMBINATIONS["B"] + COMBINATIONS["C"]}
    assert len(k.pairs) == 8 and set(k.precedence) == set(DEGRADATIONS)
    assert k.summary["images"] >= 8 * 4
    # every degradation has tool statistics for the classical tools the agent chooses from
    import agentir.toolbox.tools  # noqa: F401 - registers the classical tools whose statistics are checked
    from agentir.toolbox.base import TOOL_INFO, tools_for

    for d in DEGRADATIONS:
        seen = set(k.tool_stats(d, "high"))
        classical = {t for t in tools_for(d) if TOOL_INFO[t].kind == "classical"}
        assert classical <= seen, d


def test_a_levels_few_calls_lean_on_the_tools_numbers_over_all_levels() -> None:
    """Empirical-Bayes shrinkage: 2 calls at 'medium' barely move the pooled estimate, 200 dominate it."""
    from agentir.agent_policies.knowledge import LEVEL_SHRINK

    def with_medium(calls: int) -> Knowledge:
        obj = distil([record("r", "rain", "haze", psnr_ab=25.0, psnr_ba=23.0)], {})
        obj["tools"]["rain"] = {
            "high": [{"tool": "t1", "calls": 40, "successes": 40, "mean_gain_db": 4.0}],
            "medium": [{"tool": "t1", "calls": calls, "successes": 0, "mean_gain_db": -2.0}],
        }
        return Knowledge.from_json(obj)

    def pooled(n: int) -> float:
        return (40 * 4.0 + n * -2.0) / (40 + n)

    few = with_medium(2).tool_stats("rain", "medium")["t1"]
    many = with_medium(200).tool_stats("rain", "medium")["t1"]
    assert few.calls == 2 + LEVEL_SHRINK and many.calls == 200 + LEVEL_SHRINK
    assert few.mean_gain_db == pytest.approx((2 * -2.0 + LEVEL_SHRINK * pooled(2)) / (2 + LEVEL_SHRINK))
    assert few.mean_gain_db > 2.0 > -1.0 > many.mean_gain_db
    assert few.success_rate > 0.7 and many.success_rate < 0.2
    # a level never seen: the pooled numbers as they are
    assert with_medium(2).tool_stats("rain", "low")["t1"].mean_gain_db == pytest.approx(pooled(2))


def test_the_shipped_records_distil_to_the_shipped_knowledge_byte_for_byte():
    """agent_policies/knowledge.json is what distil() makes of the shipped exploration records (CI checks it; the slow test re-explores)."""
    from agentir.agent_policies.knowledge import SHIPPED_RECORDS, knowledge_text, read_records

    header, records = read_records(SHIPPED_RECORDS)
    shipped = DEFAULT_KNOWLEDGE.read_text(encoding="utf-8")
    config = json.loads(shipped)["config"]
    assert header["tools"] == config["tools"] and sorted(header["images"]) == sorted(r["source"] for r in records)
    assert knowledge_text(distil(records, config)) == shipped
