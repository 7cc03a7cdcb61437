"""The search over subtask orders: plan, accept, roll back, backtrack, budgets, fallback."""

from __future__ import annotations

import itertools

from agentir.agent_policies.planning import PlanContext
from agentir.agent_policies.planning.random_order import RandomPlanner
from agentir.agent_policies.planning.rules import PRECEDENCE, RANK, RulesPlanner
from agentir.agent_policies.reflection import ThresholdReflection
from agentir.agent_policies.search import Budget, Execute, Finish, Search
from agentir.bus.blobs import BlobRef
from agentir.bus.messages import Candidate
from agentir.toolbox.vocab import DEGRADATIONS

_counter = itertools.count()


def ref() -> BlobRef:
    return BlobRef(sha256=f"{next(_counter):064x}", shape=(4, 4, 3), dtype="uint8")


def levels(**present: str) -> dict[str, str]:
    out = dict.fromkeys(DEGRADATIONS, "very_low")
    out.update(present)
    return out


def make(present: dict[str, str], budget: Budget | None = None, tools=("t1", "t2")) -> Search:
    return Search(
        image=ref(),
        levels=levels(**present),
        scores={d: 3.0 if d in present else 0.0 for d in DEGRADATIONS},
        planner=RulesPlanner(),
        reflection=ThresholdReflection(),
        tools=lambda d: [f"{d}.{t}" for t in tools],
        budget=budget or Budget(keep_improved=False),  # the paper: roll back on every failure
    )


def run(search: Search, outcome) -> tuple[Finish, list[tuple[int, str, str]]]:
    """Drive the search like the actors do; ``outcome(subtask, tool, done)`` gives each output's level."""
    action = search.start()
    calls = []
    while isinstance(action, Execute):
        node = search.nodes[action.node]
        outputs = []
        for tool in action.tools:
            calls.append((action.node, action.subtask, tool))
            outputs.append(Candidate(tool=tool, image=ref(), level=outcome(action.subtask, tool, node.done), score=1.0))
        candidates = [*action.prior, *outputs]
        verdict, best = search.reflection.judge(action.subtask, candidates, remaining=len(action.remaining))
        action = search.on_reflected(action.node, action.subtask, candidates, verdict, best)
    assert isinstance(action, Finish)
    return action, calls


def test_rules_order_satisfies_every_precedence_rule():
    """The rule planner's order puts each rule's first subtask before its second."""
    plan = RulesPlanner().plan(list(DEGRADATIONS), PlanContext(levels={}, scores={}, tools={}))
    for first, second in PRECEDENCE:
        assert plan.index(first) < plan.index(second), (first, second)
    assert set(RANK) == set(DEGRADATIONS)


def test_nothing_present_finishes_at_once_with_the_input():
    """An image with no degradation at medium or worse is returned unchanged without tool calls."""
    search = make({"noise": "low"})
    action = search.start()
    assert isinstance(action, Finish) and action.status == "nothing_to_do"
    assert search.trace["tool_calls"] == 0


def test_first_very_low_output_is_accepted_without_trying_other_tools():
    """A very_low output ends the subtask; later tools of that subtask are never run."""
    search = make({"noise": "high", "dark": "medium"})
    finish, calls = run(search, lambda s, t, d: "very_low")
    assert calls == [(0, "noise", "noise.t1"), (1, "dark", "dark.t1")]
    assert finish.status == "success" and search.trace["done"] == ["noise", "dark"]


def test_all_tools_are_tried_and_best_low_counts_as_success():
    """Without a very_low output every tool runs, and a best at low is a success."""
    search = make({"haze": "high"})
    finish, calls = run(search, lambda s, t, d: "low" if t.endswith("t2") else "medium")
    assert [c[2] for c in calls] == ["haze.t1", "haze.t2"]
    assert finish.status == "success" and search.trace["rollbacks"] == 0
    verdicts = [s["verdict"] for s in search.trace["steps"]]
    assert verdicts == ["rejected", "accepted"]


def test_failure_rolls_back_and_replans_with_the_failed_subtask_not_first():
    """When a subtask fails first, the search rolls back and tries another subtask first."""
    search = make({"noise": "high", "dark": "high"})

    # Denoising fails on the raw image but succeeds after brightening.
    def outcome(subtask, tool, done):
        if subtask == "noise" and "dark" not in done:
            return "high"
        return "very_low"

    finish, calls = run(search, outcome)
    assert [c[1] for c in calls] == ["noise", "noise", "dark", "noise"]
    assert finish.status == "success"
    assert search.trace["rollbacks"] == 1
    assert next(e for e in search.trace["events"] if e["type"] == "rollback")["subtask"] == "noise"
    assert search.trace["done"] == ["dark", "noise"]


def test_dead_end_backtracks_to_the_parent():
    """When every subtask fails at a child node, the search returns to the parent and changes the order."""
    search = make({"noise": "high", "dark": "high"}, tools=("t1",))

    # Brightening first makes denoising impossible; denoise first works only if done before dark.
    def outcome(subtask, tool, done):
        if subtask == "noise" and done == ():
            return "very_low"
        if subtask == "dark" and done == ("noise",):
            return "high"  # dark fails after noise...
        if subtask == "dark" and done == ():
            return "very_low"
        if subtask == "noise" and done == ("dark",):
            return "very_low"
        return "high"

    finish, _calls = run(search, outcome)
    kinds = [e["type"] for e in search.trace["events"]]
    assert "dead_end" in kinds and "backtrack" in kinds
    assert finish.status == "success" and search.trace["done"] == ["dark", "noise"]


def test_everything_failing_falls_back_within_budget():
    """If every order fails, the search ends with the best result seen and stays within its budget."""
    budget = Budget(max_tool_calls=7, max_rollbacks=10, keep_improved=False)
    search = make({"noise": "very_high", "jpeg": "high", "haze": "medium"}, budget=budget)
    finish, calls = run(search, lambda s, t, d: "high")
    assert finish.status == "fallback"
    assert len(calls) <= budget.max_tool_calls
    assert search.trace["tool_calls"] == len(calls)
    assert any(e["type"] in ("fallback", "budget") for e in search.trace["events"])


def test_failed_output_that_helped_is_kept_in_fallback():
    """In fallback the least-bad failed output is used when it lowered the degradation's severity."""
    search = make({"noise": "very_high"}, budget=Budget(max_rollbacks=0, keep_improved=False))
    finish, _ = run(search, lambda s, t, d: "medium")  # better than very_high, not good enough
    assert finish.status == "fallback"
    assert finish.image != search.nodes[0].image


def test_no_rollback_keeps_going_after_a_failure():
    """With rollback disabled a failed subtask keeps its best output and the plan continues."""
    search = make({"noise": "high", "dark": "high"}, budget=Budget(rollback=False, keep_improved=False))
    _finish, calls = run(search, lambda s, t, d: "medium" if s == "noise" else "very_low")
    assert search.trace["rollbacks"] == 0
    assert [c[1] for c in calls] == ["noise", "noise", "dark"]


def test_duplicate_reflection_is_ignored():
    """A reflection delivered twice (at-least-once bus) does not advance the search twice."""
    search = make({"noise": "high"})
    action = search.start()
    cands = [Candidate(tool=action.tools[0], image=ref(), level="very_low")]
    first = search.on_reflected(action.node, action.subtask, cands, "accept", 0)
    assert isinstance(first, Finish)
    assert search.on_reflected(action.node, action.subtask, cands, "accept", 0) is None


def test_wave_zero_runs_all_tools_at_once():
    """wave=0 sends all of a subtask's tools in one step (for batching on a GPU)."""
    search = make({"rain": "high"}, budget=Budget(wave=0, keep_improved=False), tools=("a", "b", "c"))
    action = search.start()
    assert isinstance(action, Execute) and action.tools == ["rain.a", "rain.b", "rain.c"] and action.remaining == []


def test_random_planner_is_reproducible_per_seed():
    """The random policy gives the same order for the same seed and covers other orders for others."""
    subtasks = ["noise", "jpeg", "haze"]

    def ctx(seed: int) -> PlanContext:
        return PlanContext(levels={}, scores={}, tools={}, seed=seed)

    planner = RandomPlanner()
    assert planner.plan(subtasks, ctx(1)) == planner.plan(subtasks, ctx(1))
    assert len({tuple(planner.plan(subtasks, ctx(s))) for s in range(30)}) > 2


def test_budget_defaults_are_the_job_defaults():
    """The search's Budget() and JobOptions().budget() agree (one set of defaults)."""
    from agentir.agent_policies.options import JobOptions

    assert Budget() == JobOptions().budget()


def test_fallback_never_reruns_a_tool_on_an_image_it_already_failed_on():
    """Deterministic tools give the same output twice: the fallback gives up subtasks that failed at its node."""
    search = make({"jpeg": "high", "motion_blur": "very_high"})
    seen = []
    action = search.start()
    while isinstance(action, Execute):
        for tool in action.tools:
            seen.append((action.image, tool))
        outputs = [Candidate(tool=t, image=ref(), level="very_low" if action.subtask == "jpeg" else "very_high", score=3.9) for t in action.tools]
        candidates = [*action.prior, *outputs]
        verdict, best = search.reflection.judge(action.subtask, candidates, remaining=len(action.remaining))
        action = search.on_reflected(action.node, action.subtask, candidates, verdict, best)
    assert isinstance(action, Finish) and action.status == "fallback"
    assert len(seen) == len(set(seen)), "a tool ran twice on the same image"
    fallback = next(e for e in search.trace["events"] if e["type"] == "fallback")
    assert fallback["given_up"] == ["motion_blur"]


def test_keep_improved_keeps_a_failed_step_that_helped_and_rolls_back_one_that_did_not():
    """keep_improved: noise high -> medium (helped, failed) is kept; dark stays high (no help) and rolls back."""
    search = make({"noise": "high", "dark": "high"}, budget=Budget(keep_improved=True))
    _finish, calls = run(search, lambda s, t, d: "medium" if s == "noise" else "very_low")
    assert search.trace["rollbacks"] == 0 and search.trace["status"] == "success"
    assert [e["type"] for e in search.trace["events"] if e["type"] == "keep_improved"] == ["keep_improved"]
    assert [c[1] for c in calls] == ["noise", "noise", "dark"]
    useless = make({"noise": "high", "dark": "high"}, budget=Budget(keep_improved=True))
    run(useless, lambda s, t, d: "very_high" if s == "noise" and not d else "very_low")
    assert useless.trace["rollbacks"] >= 1  # nothing helped: the paper's rollback


def test_first_success_reflection_accepts_the_first_low_output():
    """accept_level="low" stops at the first output judged low (one call instead of two)."""
    from agentir.agent_policies.registry import Policies

    search = make({"noise": "high"})
    search.reflection = Policies().reflection("first-success")
    finish, calls = run(search, lambda s, t, d: "low")
    assert calls == [(0, "noise", "noise.t1")] and finish.status == "success"
    strict = make({"noise": "high"})
    _, calls = run(strict, lambda s, t, d: "low")
    assert len(calls) == 2  # the paper's rule tries the next tool unless very_low


def _judged(present: dict[str, str]) -> Search:
    from agentir.agent_policies.reflection import JudgeReflection

    return Search(
        image=ref(),
        levels=levels(**present),
        scores={d: 3.0 if d in present else 0.0 for d in DEGRADATIONS},
        planner=RulesPlanner(),
        reflection=JudgeReflection(),
        tools=lambda d: [f"{d}.{t}" for t in ("t1", "t2")],
        budget=Budget(),
    )


def run_judged(search: Search, gain) -> Finish:
    """Like :func:`run`, every output rated very_low, with the judge's predicted gain ``gain(subtask, tool)``."""
    action = search.start()
    while isinstance(action, Execute):
        outputs = [Candidate(tool=t, image=ref(), level="very_low", score=0.0, gain=gain(action.subtask, t)) for t in action.tools]
        candidates = [*action.prior, *outputs]
        verdict, best = search.reflection.judge(action.subtask, candidates, remaining=len(action.remaining))
        action = search.on_reflected(action.node, action.subtask, candidates, verdict, best)
    assert isinstance(action, Finish)
    return action


def test_a_result_the_judge_predicts_worse_than_the_input_returns_the_input():
    """Do no harm: two accepted steps of -1.5 dB each (each within the step veto's 2 dB margin) add up
    to -3 dB, so the job returns its input, says so in its status and records the prediction."""
    search = _judged({"noise": "high", "dark": "medium"})
    root = search.nodes[0].image
    finish = run_judged(search, lambda s, t: -1.5)
    assert finish.status == "kept_input" and finish.image == root
    assert search.trace["done"] == [] and search.trace["predicted_gain_db"] == -3.0
    (event,) = [e for e in search.trace["events"] if e["type"] == "kept_input"]
    assert event["predicted_gain_db"] == -3.0 and event["limit_db"] == -2.0


def test_a_result_predicted_better_overall_is_kept_even_with_one_losing_step():
    """A -1.5 dB step after a +4 dB one: +2.5 dB in all, the result stands."""
    search = _judged({"noise": "high", "dark": "medium"})
    finish = run_judged(search, lambda s, t: 4.0 if s == "noise" else -1.5)
    assert finish.status == "success" and finish.image != search.nodes[0].image
    assert search.trace["predicted_gain_db"] == 2.5 and search.trace["done"] == ["noise", "dark"]


def test_unjudged_steps_never_trigger_the_input_rule():
    """Without predicted gains (the paper's reflection) a result is never swapped for the input."""
    search = make({"noise": "high"})
    finish, _ = run(search, lambda s, t, d: "very_low")
    assert finish.status == "success" and "predicted_gain_db" not in search.trace
