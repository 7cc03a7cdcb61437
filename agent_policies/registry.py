"""Registries of policies by explicit name (lazy: nothing heavy loads until asked for)."""

from __future__ import annotations

from typing import Any

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
REFLECTION.register("none", "agent_policies.reflection:NoReflection")

#: The planning policy used when a job names none.
DEFAULT_PLANNING = "experience"
