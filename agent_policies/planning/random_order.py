"""The random planner: a uniformly random order of the subtasks, reproducible per job seed.

The paper's baseline; it shows what the planner's knowledge is worth.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from agentir.agent_policies.planning import BasePlanner, PlanContext


class RandomPlanner(BasePlanner):
    name = "random"

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        order = sorted(subtasks)
        # The seed is per job; mixing in what is already done makes a re-plan deterministic
        # too while still differing between nodes of the search.
        random.Random(f"{context.seed}:{','.join(context.done)}").shuffle(order)
        return order

    def tool_order(self, subtask: str, context: PlanContext) -> list[str]:
        tools = list(context.tools.get(subtask, ()))
        random.Random(f"{context.seed}:{subtask}").shuffle(tools)
        return tools
