"""The experience planner: plans from knowledge, falls back to rules, learns while serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog
from explore_records import record

from agentir.agent_policies.knowledge import Knowledge, distil
from agentir.agent_policies.planning import PlanContext
from agentir.agent_policies.planning import experience as exp
from agentir.agent_policies.planning.experience import ExperiencePlanner, OnlineExperience
from agentir.agent_policies.planning.rules import RulesPlanner
from agentir.agent_policies.reflection import ThresholdReflection
from agentir.agent_policies.search import Budget, Execute, Search
from agentir.bus.blobs import BlobRef
from agentir.bus.messages import Candidate
from agentir.toolbox.vocab import DEGRADATIONS


def knowledge() -> Knowledge:
    """haze before rain (against the rules' rain-first), dark after noise; tool t2 is the good one for rain."""
    recs = [record(f"h{i}", "haze", "rain", psnr_ab=25.0, psnr_ba=22.0, good_tool="t2") for i in range(4)]
    recs += [record(f"n{i}", "noise", "dark", psnr_ab=24.0, psnr_ba=21.0) for i in range(4)]
    return Knowledge.from_json(distil(recs, {}))


def ctx(**levels: str) -> PlanContext:
    tools = {d: ["t1", "t2", "t3"] for d in DEGRADATIONS}
    return PlanContext(levels={d: levels.get(d, "very_low") for d in DEGRADATIONS}, scores={}, tools=tools)


def test_orders_follow_the_explored_evidence_not_the_rules() -> None:
    p = ExperiencePlanner(knowledge())
    c = ctx(rain="high", haze="high")
    assert RulesPlanner().plan(["rain", "haze"], c) == ["rain", "haze"]
    assert p.plan(["rain", "haze"], c) == ["haze", "rain"]
    assert p.plan(["dark", "noise"], c) == ["noise", "dark"]
    # a combination never explored together, three subtasks: every pairwise preference holds
    assert p.plan(["rain", "haze", "noise", "dark"], c).index("noise") < p.plan(["rain", "haze", "noise", "dark"], c).index("dark")


def test_replan_picks_the_best_order_not_starting_with_a_failed_subtask() -> None:
    p = ExperiencePlanner(knowledge())
    c = ctx(rain="high", haze="high", noise="high")
    first = p.plan(["rain", "haze", "noise"], c)
    again = p.replan(["rain", "haze", "noise"], c, not_first={first[0]})
    assert again is not None and again[0] != first[0] and sorted(again) == sorted(first)
    assert p.replan(["rain", "haze"], c, not_first={"rain", "haze"}) is None


def test_tools_are_tried_by_expected_success() -> None:
    p = ExperiencePlanner(knowledge())
    c = ctx(rain="high")
    order = p.tool_order("rain", c)
    assert order[0] == "t2"  # the tool that succeeded in exploration
    # t3 was never explored (a new plug-in): expected to gain what t1 and t2 gain on average, so
    # it goes before t1, which never succeeded and gained less
    assert order == ["t2", "t3", "t1"]


def test_missing_knowledge_falls_back_to_the_rules_and_says_so(tmp_path: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        p = ExperiencePlanner(tmp_path / "missing.json")
    assert p.knowledge is None and p.info()["knowledge"] is None
    assert [e["event"] for e in logs] == ["planning.experience.no_knowledge"]
    assert "agentir explore" in logs[0]["reason"]
    c = ctx(rain="high", haze="high", dark="high", noise="high")
    subtasks = ["dark", "haze", "rain", "noise"]
    assert p.plan(subtasks, c) == RulesPlanner().plan(subtasks, c)
    assert p.tool_order("rain", c) == ["t1", "t2", "t3"]


def test_settings_name_the_knowledge_file(tmp_path: Path) -> None:
    """AGENTIR_KNOWLEDGE, read by Settings.from_env at an entry point, reaches the planner built by Policies."""
    from agentir.agent_policies.registry import Policies
    from agentir.settings import Settings

    path = tmp_path / "k.json"
    path.write_text(json.dumps(distil([record("h", "haze", "rain", psnr_ab=25.0, psnr_ba=22.0)], {})))
    settings = Settings.from_env({"AGENTIR_KNOWLEDGE": str(path)})
    assert Policies(settings.policies).planning("experience").info()["knowledge"] == str(path)
    assert ExperiencePlanner().info()["knowledge"] != str(path)  # the planner itself reads no environment


def test_online_failures_move_a_tool_down_and_are_persisted(tmp_path: Path) -> None:
    state = tmp_path / "experience.json"
    p = ExperiencePlanner(knowledge(), OnlineExperience(state, learn=True))
    c = ctx(rain="high")
    assert p.tool_order("rain", c)[0] == "t2"
    for _ in range(60):
        p.observe_step("rain", "high", "t2", False)
        p.observe_step("rain", "high", "t3", True)
    assert p.tool_order("rain", c)[0] == "t3"
    p.flush()
    saved = json.loads(state.read_text())
    assert saved["format"] == exp.ONLINE_FORMAT and saved["entries"]["tool|rain|high|t3"] == [60.0, 60.0]
    # a new planner on the same state starts where the old one stopped
    q = ExperiencePlanner(knowledge(), OnlineExperience(state, learn=False))
    assert q.tool_order("rain", c)[0] == "t3"


def test_frozen_experience_reads_but_never_writes(tmp_path: Path) -> None:
    state = tmp_path / "experience.json"
    online = OnlineExperience(state, learn=False)
    online.update(OnlineExperience.tool_key("rain", "high", "t1"), True)
    online.flush()
    assert len(online) == 0 and not state.exists()


def test_order_votes_can_overturn_the_explored_order() -> None:
    p = ExperiencePlanner(knowledge(), OnlineExperience(None, learn=True))
    c = ctx(rain="high", haze="high")
    assert p.plan(["rain", "haze"], c) == ["haze", "rain"]
    for _ in range(30):
        p.observe_order("haze", ["rain"], False)  # haze first keeps rolling back
        p.observe_order("rain", ["haze"], True)
    assert p.plan(["rain", "haze"], c) == ["rain", "haze"]


def test_online_state_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exp, "MAX_ENTRIES", 5)
    monkeypatch.setattr(exp, "ENTRY_CAP", 10.0)
    online = OnlineExperience(None, learn=True)
    for i in range(12):
        online.update(OnlineExperience.tool_key("noise", "high", f"t{i}"), True)
    assert len(online) == 5
    assert online.get(OnlineExperience.tool_key("noise", "high", "t0")) == (0.0, 0.0)  # least recently updated went
    for _ in range(25):
        online.update("tool|noise|high|t11", False)
    s, n = online.get("tool|noise|high|t11")
    assert n == 10.0 and 0 < s < 1  # capped: older evidence scaled down


@pytest.mark.parametrize("content", ["{torn", json.dumps({"format": "other"}), json.dumps({"format": exp.ONLINE_FORMAT, "version": 99, "entries": {}})])
def test_a_bad_state_file_is_set_aside_not_lost(tmp_path: Path, content: str) -> None:
    state = tmp_path / "experience.json"
    state.write_text(content)
    with structlog.testing.capture_logs() as logs:
        online = OnlineExperience(state, learn=True)
    assert len(online) == 0
    assert (tmp_path / "experience.json.bad").read_text() == content
    assert logs[0]["event"] == "planning.experience.state_reset"


def test_state_entries_with_bad_values_are_dropped(tmp_path: Path) -> None:
    state = tmp_path / "experience.json"
    entries = {"tool|rain|high|ok": [1, 2], "tool|rain|high|neg": [-1, 2], "tool|rain|high|more": [3, 2], "tool|rain|high|str": ["a", 2]}
    state.write_text(json.dumps({"format": exp.ONLINE_FORMAT, "version": exp.ONLINE_VERSION, "entries": entries}))
    online = OnlineExperience(state, learn=True)
    assert len(online) == 1 and online.get("tool|rain|high|ok") == (1.0, 2.0)


def test_the_search_feeds_judged_steps_to_a_learning_planner() -> None:
    online = OnlineExperience(None, learn=True)
    p = ExperiencePlanner(knowledge(), online)
    img = BlobRef(sha256="0" * 64, shape=(8, 8, 3), dtype="uint8")
    s = Search(
        image=img,
        levels={"rain": "high", "haze": "high"},
        scores={},
        planner=p,
        reflection=ThresholdReflection(),
        tools=lambda d: ["t1", "t2"],
        budget=Budget(wave=0),
    )
    act = s.start()
    assert isinstance(act, Execute) and act.subtask == "haze" and act.tools[0] == "t2"
    out = BlobRef(sha256="1" * 64, shape=(8, 8, 3), dtype="uint8")
    cands = [Candidate(tool="t2", image=out, level="very_low", score=0.1), Candidate(tool="t1", image=out, level="high", score=3.0)]
    s.on_reflected(act.node, "haze", cands, "accept", 0)
    assert online.get("tool|haze|high|t2") == (1.0, 1.0)
    assert online.get("tool|haze|high|t1") == (0.0, 1.0)
    assert online.get("order|haze|rain") == (1.0, 1.0)
    assert s.trace["planner_info"]["learning"] is True
