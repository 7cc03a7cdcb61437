"""Registries of policies by explicit name (lazy: nothing heavy loads until asked for)."""

from __future__ import annotations

from typing import Any

from agent_policies.reflection import ThresholdReflection
from toolbox.registry import Registry

PERCEPTION: Registry[Any] = Registry("perception policy")
PLANNING: Registry[Any] = Registry("planning policy")
REFLECTION: Registry[Any] = Registry("reflection policy")

PERCEPTION.register("analytic", "agent_policies.perception.analytic:AnalyticPerception")
PERCEPTION.register("vlm", "agent_policies.perception.vlm:VLMPerception")
PLANNING.register("experience", "agent_policies.planning.experience:ExperiencePlanner")
PLANNING.register("rules", "agent_policies.planning.rules:RulesPlanner")
PLANNING.register("random", "agent_policies.planning.random_order:RandomPlanner")
PLANNING.register("llm", "agent_policies.planning.llm:LLMPlanner")
PLANNING.register("fixed", "agent_policies.planning.fixed:FixedPlanner")
REFLECTION.register("threshold", "agent_policies.reflection:ThresholdReflection")
REFLECTION.register("first-success", lambda: ThresholdReflection(accept_level="low", name="first-success"))
REFLECTION.register("none", "agent_policies.reflection:NoReflection")

#: The planning policy used when a job names none.
DEFAULT_PLANNING = "experience"

#: Job options a job does not set itself. With tools tried in order of expected quality
#: (``experience``), the first output judged low or better is accepted (``first-success``) and a
#: failed step that still lowered its degradation's severity is kept rather than rolled back;
#: the benchmark's ``paper`` and ``rules`` policies restore the paper's stricter behaviour
#: (``reflection="threshold"``, ``keep_improved=False``). See the README's ablation table.
DEFAULT_JOB_OPTIONS: dict[str, object] = {"reflection": "first-success", "keep_improved": True}
