"""The rule-based planner: the precedence rules AgenticIR distilled from self-exploration.

From ``BENCHMARK.md``: denoise before brightening; defocus-deblur before dehaze; JPEG-removal
before defocus-deblur; motion-deblur before brightening; motion-deblur before super-resolution;
derain before dehaze; derain before super-resolution; noise and JPEG order matters little. In
general: remove blur and artifacts (rain, JPEG, noise) before enhancing content
(super-resolution, brightening, dehazing).

One total order satisfies all of them; ties inside a class are broken by severity (the worse
degradation first), which is what "order matters little" leaves to us.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentir.agent_policies.planning import BasePlanner, PlanContext

#: Lower rank runs earlier. Artifacts, then blur, then content enhancement (SR last: cheapest
#: to run everything else at the small size, and SR sharpens what is left).
RANK: dict[str, int] = {
    "rain": 0,
    "jpeg": 1,
    "noise": 1,
    "motion_blur": 2,
    "defocus_blur": 3,
    "haze": 4,
    "dark": 5,
    "low_resolution": 6,
}

#: The pairwise rules, (earlier, later), kept explicit so tests can check the order honours them.
PRECEDENCE: tuple[tuple[str, str], ...] = (
    ("noise", "dark"),
    ("defocus_blur", "haze"),
    ("jpeg", "defocus_blur"),
    ("motion_blur", "dark"),
    ("motion_blur", "low_resolution"),
    ("rain", "haze"),
    ("rain", "low_resolution"),
)


class RulesPlanner(BasePlanner):
    """Orders subtasks by :data:`RANK`, the more severe first within a rank."""

    name = "rules"

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        return sorted(subtasks, key=lambda s: (RANK[s], -float(context.scores.get(s, 0.0)), s))
