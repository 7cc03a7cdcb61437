"""Policies by explicit name, and :class:`Policies`: the instances one process part uses.

The registries map a name to a factory that takes the :class:`~agentir.agent_policies.settings.PolicySettings`
and imports its module only when called (nothing heavy loads until a policy is asked for). They
hold no instances: a :class:`Policies` object, built by an entry point from its settings and
handed to the actors, builds each policy once and keeps it. Two ``Restorer`` objects with
different settings in one process therefore never share a learning planner or an endpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agentir.agent_policies.perception import PerceptionPolicy
from agentir.agent_policies.planning import LearningPolicy, PlanningPolicy
from agentir.agent_policies.reflection import ReflectionPolicy
from agentir.agent_policies.settings import PolicySettings
from agentir.toolbox.registry import Registry

__all__ = ["DEFAULT_PERCEPTION", "DEFAULT_PLANNING", "PERCEPTION", "PLANNING", "REFLECTION", "Policies"]

Factory = Callable[[PolicySettings], Any]

PERCEPTION: Registry[Factory] = Registry("perception policy")
PLANNING: Registry[Factory] = Registry("planning policy")
REFLECTION: Registry[Factory] = Registry("reflection policy")


def _lazy(target: str, *, settings: bool = False, **kwargs: Any) -> Factory:
    """A factory for ``module:Name``; ``settings=True`` builds with ``Name.from_settings(settings)``."""
    module, _, attr = target.partition(":")

    def build(policy_settings: PolicySettings) -> Any:
        cls = getattr(importlib.import_module(module), attr)
        return cls.from_settings(policy_settings, **kwargs) if settings else cls(**kwargs)

    return build


def _register(registry: Registry[Factory], name: str, factory: Factory) -> None:
    # The generic registry builds zero-argument factories on get(); these take settings, so the
    # registry stores them as values (a zero-argument lambda returning the factory).
    registry.register(name, lambda: factory)


_register(PERCEPTION, "analytic", _lazy("agentir.agent_policies.perception.analytic:AnalyticPerception"))
_register(PERCEPTION, "vlm", _lazy("agentir.agent_policies.perception.vlm:VLMPerception", settings=True))
_register(PLANNING, "experience", _lazy("agentir.agent_policies.planning.experience:ExperiencePlanner", settings=True))
_register(PLANNING, "rules", _lazy("agentir.agent_policies.planning.rules:RulesPlanner"))
_register(PLANNING, "random", _lazy("agentir.agent_policies.planning.random_order:RandomPlanner"))
_register(PLANNING, "llm", _lazy("agentir.agent_policies.planning.llm:LLMPlanner", settings=True))
_register(PLANNING, "fixed", _lazy("agentir.agent_policies.planning.fixed:FixedPlanner"))
_register(REFLECTION, "threshold", _lazy("agentir.agent_policies.reflection:ThresholdReflection"))
_register(REFLECTION, "first-success", _lazy("agentir.agent_policies.reflection:ThresholdReflection", accept_level="low", name="first-success"))
_register(REFLECTION, "none", _lazy("agentir.agent_policies.reflection:NoReflection"))
_register(REFLECTION, "judge", _lazy("agentir.agent_policies.reflection:JudgeReflection"))

#: The planning policy used when a job names none.
DEFAULT_PLANNING = "experience"
#: The perception policy used when none is named.
DEFAULT_PERCEPTION = "analytic"


class Policies:
    """The policy instances of one ``Restorer`` (or daemon), each built once from ``settings``.

    Raises (from the accessors):
        UnknownNameError: no policy of that kind has that name (the message lists close matches).
        ValueError: the policy cannot be built with these settings (e.g. ``llm`` without an
            endpoint); its message says what to set.
    """

    def __init__(self, settings: PolicySettings | None = None) -> None:
        self.settings = settings if settings is not None else PolicySettings()
        self._built: dict[tuple[str, str], Any] = {}

    def _get(self, registry: Registry[Factory], name: str) -> Any:
        key = (registry.kind, name)
        if key not in self._built:
            self._built[key] = registry.get(name)(self.settings)
        return self._built[key]

    def planning(self, name: str | None = None) -> PlanningPolicy:
        """The planning policy ``name`` (default :data:`DEFAULT_PLANNING`)."""
        policy: PlanningPolicy = self._get(PLANNING, name or DEFAULT_PLANNING)
        return policy

    def reflection(self, name: str) -> ReflectionPolicy:
        """The reflection policy ``name``."""
        policy: ReflectionPolicy = self._get(REFLECTION, name)
        return policy

    def perception(self, name: str | None = None) -> PerceptionPolicy:
        """The perception policy ``name`` (default :data:`DEFAULT_PERCEPTION`)."""
        policy: PerceptionPolicy = self._get(PERCEPTION, name or DEFAULT_PERCEPTION)
        return policy

    def flush(self) -> None:
        """Persist what learning policies learned (small atomic writes); call on shutdown."""
        for policy in list(self._built.values()):
            if isinstance(policy, LearningPolicy):
                policy.flush()
