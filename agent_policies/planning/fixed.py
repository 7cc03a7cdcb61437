"""The fixed planner: one order for every image (the vocabulary's order), no knowledge used.

A baseline between ``random`` (no knowledge, varies per image) and ``rules`` (the paper's
precedence knowledge): it shows what a single hand-written pipeline order achieves.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentir.agent_policies.planning import BasePlanner, PlanContext
from agentir.toolbox.vocab import DEGRADATIONS


class FixedPlanner(BasePlanner):
    name = "fixed"

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        return sorted(subtasks, key=DEGRADATIONS.index)
