"""One settings object per process part, built at the entry point and passed down.

The ``AGENTIR_*`` environment variables are read here and nowhere else (the one exception is
``AGENTIR_KERNELS``, read by :mod:`agentir.kernels.backend` on each call, as its style contract says: a
kernel backend is forced by an environment variable, like ``TRITON_INTERPRET``). The CLI and the
daemon call :meth:`Settings.from_env`; an embedder passes a :class:`Settings` to ``Restorer``
(or lets it read the environment the same way). Below the entry points, code receives settings
as arguments: there is no module-level configuration state.

| variable | setting |
|---|---|
| ``AGENTIR_KNOWLEDGE`` | ``policies.knowledge``: the experience planner's knowledge file |
| ``AGENTIR_EXPERIENCE_STATE`` | ``policies.experience_state``: its online counts (learning on) |
| ``AGENTIR_EXPERIENCE_FREEZE`` | ``1``/``true``/``yes``: read that state, never change it |
| ``AGENTIR_LLM_URL``, ``_MODEL``, ``_KEY``, ``_TIMEOUT`` | ``policies.llm``: the ``llm`` planner's endpoint |
| ``AGENTIR_VLM_URL``, ``_MODEL``, ``_KEY``, ``_MODE``, ``_TIMEOUT`` | ``policies.vlm``: the ``vlm`` perception's endpoint |
| ``AGENTIR_PLUGINS`` | ``plugins``: tool plug-in TOML files, separated by ``os.pathsep`` |
| ``AGENTIR_LOG_LEVEL`` | ``log_level``: debug, info, warning (default), error |
| ``AGENTIR_TOKEN`` | ``token``: the daemon's bearer token |
| ``AGENTIR_CLEAN_ROOT`` | ``clean_root``: the clean training images (``bench perception`` recognises fit images) |
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agentir.agent_policies.settings import ChatSettings, PolicySettings
from agentir.logs import LOG_LEVELS

__all__ = ["Settings", "SettingsError"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting with a value that cannot be used; ``name`` is the variable or key."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the application parts are configured with (see the module docstring)."""

    policies: PolicySettings = field(default_factory=PolicySettings)
    plugins: tuple[Path, ...] = ()
    log_level: str = "warning"
    token: str | None = field(default=None, repr=False)
    clean_root: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings the ``AGENTIR_*`` variables of ``environ`` (default ``os.environ``) give.

        Raises:
            SettingsError: a variable with a value that cannot be used (the message names it).
        """
        env = os.environ if environ is None else environ

        def text(name: str) -> str:
            return env.get(name, "").strip()

        def seconds(name: str) -> float | None:
            raw = text(name)
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(name, f"{name}={raw!r} is not a number of seconds") from None
            if not math.isfinite(value) or value <= 0:
                raise SettingsError(name, f"{name}={raw!r} must be a number of seconds above 0")
            return value

        freeze = text("AGENTIR_EXPERIENCE_FREEZE").lower()
        if freeze not in _TRUE + _FALSE:
            raise SettingsError("AGENTIR_EXPERIENCE_FREEZE", f"AGENTIR_EXPERIENCE_FREEZE={freeze!r}: use 1 or 0")
        state = text("AGENTIR_EXPERIENCE_STATE")
        level = (text("AGENTIR_LOG_LEVEL") or "warning").lower()
        if level not in LOG_LEVELS:
            raise SettingsError("AGENTIR_LOG_LEVEL", f"AGENTIR_LOG_LEVEL={level!r}: use one of {', '.join(LOG_LEVELS)}")
        policies = PolicySettings(
            knowledge=Path(text("AGENTIR_KNOWLEDGE")) if text("AGENTIR_KNOWLEDGE") else None,
            experience_state=Path(state) if state else None,
            experience_learn=bool(state) and freeze not in _TRUE,
            llm=ChatSettings(
                url=text("AGENTIR_LLM_URL"),
                model=text("AGENTIR_LLM_MODEL"),
                key=text("AGENTIR_LLM_KEY") or None,
                timeout=seconds("AGENTIR_LLM_TIMEOUT"),
            ),
            vlm=ChatSettings(
                url=text("AGENTIR_VLM_URL"),
                model=text("AGENTIR_VLM_MODEL"),
                key=text("AGENTIR_VLM_KEY") or None,
                timeout=seconds("AGENTIR_VLM_TIMEOUT"),
                mode=text("AGENTIR_VLM_MODE") or None,
            ),
        )
        plugins = tuple(Path(p.strip()) for p in env.get("AGENTIR_PLUGINS", "").split(os.pathsep) if p.strip())
        return cls(
            policies=policies,
            plugins=plugins,
            log_level=level,
            token=text("AGENTIR_TOKEN") or None,
            clean_root=Path(text("AGENTIR_CLEAN_ROOT")) if text("AGENTIR_CLEAN_ROOT") else None,
        )

    def with_experience(self, state: Path | None, *, learn: bool) -> Settings:
        """A copy whose experience planner keeps its online counts in ``state`` (learning or frozen)."""
        policies = dataclasses.replace(self.policies, experience_state=state, experience_learn=learn and state is not None)
        return dataclasses.replace(self, policies=policies)
