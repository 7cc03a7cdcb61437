"""What the policies are configured with: one :class:`PolicySettings`, built at an entry point.

Nothing in :mod:`agentir.agent_policies` reads the environment or keeps configuration in module state.
The entry points (``agentir`` CLI, the daemon, an embedder's ``Restorer``) build the settings,
``agentir.settings.Settings.from_env`` reading the ``AGENTIR_*`` variables there, and pass them
to :class:`agentir.agent_policies.registry.Policies`, which builds each policy from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ChatSettings", "PolicySettings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatSettings:
    """An OpenAI-compatible chat endpoint (the ``llm`` planner, the ``vlm`` perception).

    ``url`` empty means "not configured": building the policy then fails with a message saying
    which variable to set. ``timeout`` and ``mode`` ``None`` take the policy's own default.
    """

    url: str = ""
    model: str = ""
    key: str | None = field(default=None, repr=False)
    timeout: float | None = None
    mode: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """Settings of every built-in policy.

    Attributes:
        knowledge: the knowledge file of the ``experience`` planner (``None``: the shipped one).
        experience_state: where the ``experience`` planner's online counts persist (``None``:
            nowhere; batch commands keep their results reproducible that way).
        experience_learn: update those counts from judged steps (needs ``experience_state``).
        llm: the ``llm`` planner's endpoint.
        vlm: the ``vlm`` perception's endpoint.
    """

    knowledge: Path | None = None
    experience_state: Path | None = None
    experience_learn: bool = False
    llm: ChatSettings = field(default_factory=ChatSettings)
    vlm: ChatSettings = field(default_factory=ChatSettings)
