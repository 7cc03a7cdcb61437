"""The ``experience`` planner (the default): orders subtasks and tools from self-exploration.

It reads the knowledge file made by ``agentir explore`` (:mod:`agentir.agent_policies.knowledge`;
``PolicySettings.knowledge`` points at another one, default the shipped ``knowledge.json``):

* **Order**: the permutation of the subtasks with the highest pairwise probability
  (:meth:`Knowledge.order`); explored pairs use their win counts, pairs never explored together
  (groups B and C, three-degradation jobs) use the Bradley-Terry strengths. Ties fall back to
  the rule ranks.
* **Re-plan** after a failure: the best order among those not starting with a subtask that
  already failed first at that node (the same knowledge, not just "move the next one forward").
* **Tools**: tried in order of expected utility at the perceived severity (mostly the explored
  PSNR gain, see :meth:`Knowledge.tool_utility`), so that the first tool is usually the one to
  keep (fewer calls than trying them in registry order). A tool never explored (a new plug-in)
  is expected to gain what the explored tools of its degradation gain on average.

**Learning while serving** (:class:`OnlineExperience`): each judged tool output (success =
perceived ``low`` or better) and each first step taken with other subtasks pending (a vote for
that order when it succeeds, against it when it rolls back) update counts that are added to the
explored ones. Counts per entry are capped (older evidence is scaled down: bounded size and a
slow forgetting), entries are capped in number, and the state is written atomically every
``FLUSH_EVERY`` updates and on shutdown. While learning, tools with little evidence get an
upper-confidence bonus (a UCB bandit), so a new plug-in gets tried. Learning is off unless the
settings name a state file and turn it on (``PolicySettings.experience_state`` and
``experience_learn``; the daemon does, an embedder sets ``AGENTIR_EXPERIENCE_STATE=FILE``); a
frozen state is read but never changed. Batch commands and the benchmark do not learn, so their
results stay reproducible.

**Bad knowledge**: a missing, corrupt or older knowledge file makes the planner behave exactly
like ``rules`` and says so once in the log (``planning.experience.no_knowledge``); every trace
names the knowledge used (``"knowledge": null`` in that case).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import structlog

from agentir.agent_policies.knowledge import DEFAULT_KNOWLEDGE, Knowledge, KnowledgeError, ToolStat
from agentir.agent_policies.planning import BasePlanner, PlanContext
from agentir.agent_policies.planning.rules import RANK
from agentir.agent_policies.settings import PolicySettings

log = structlog.get_logger(__name__)

__all__ = ["ExperiencePlanner", "OnlineExperience"]

ONLINE_FORMAT = "agentir-experience-online"
ONLINE_VERSION = 1
#: Largest count one entry keeps; beyond it both counts are scaled down (forgetting).
ENTRY_CAP = 200.0
#: Largest number of entries (tool and order statistics together); the least recently updated go.
MAX_ENTRIES = 4096
#: Write the state after this many updates (and on shutdown).
FLUSH_EVERY = 16
#: Explored evidence counts at most this many pseudo-calls, so online evidence can overrule it.
PRIOR_CAP = 40.0
#: UCB exploration weight while learning.
UCB_C = 0.15


class OnlineExperience:
    """Counts learned while serving (see the module docstring). Thread-safe; bounded."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, learn: bool = True) -> None:
        self.path = None if path is None else Path(path)
        self.learn = learn
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, list[float]] = OrderedDict()  # key -> [successes, trials]
        self._dirty = 0
        if self.path is not None:
            self._load()

    # keys: "tool|<degradation>|<level>|<tool>" and "order|<first>|<then>"
    @staticmethod
    def tool_key(degradation: str, level: str, tool: str) -> str:
        return f"tool|{degradation}|{level}|{tool}"

    @staticmethod
    def order_key(first: str, then: str) -> str:
        return f"order|{first}|{then}"

    def get(self, key: str) -> tuple[float, float]:
        with self._lock:
            s, n = self._entries.get(key, (0.0, 0.0))
            return float(s), float(n)

    def __len__(self) -> int:
        return len(self._entries)

    def update(self, key: str, success: bool) -> None:
        """Add one outcome (no-op when not learning)."""
        if not self.learn:
            return
        with self._lock:
            entry = self._entries.pop(key, [0.0, 0.0])
            entry[0] += 1.0 if success else 0.0
            entry[1] += 1.0
            if entry[1] > ENTRY_CAP:
                f = ENTRY_CAP / entry[1]
                entry = [entry[0] * f, ENTRY_CAP]
            self._entries[key] = entry  # most recently updated last
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)
            self._dirty += 1
            due = self._dirty >= FLUSH_EVERY
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the state atomically when it changed (no-op without a path)."""
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            obj = {"format": ONLINE_FORMAT, "version": ONLINE_VERSION, "entries": {k: [round(v[0], 4), round(v[1], 4)] for k, v in self._entries.items()}}
            self._dirty = 0
        from agentir.bus.files import write_text_atomic

        try:
            write_text_atomic(self.path, json.dumps(obj, indent=0) + "\n")
        except OSError as exc:
            log.warning("planning.experience.state_not_saved", path=str(self.path), error=str(exc))

    def _load(self) -> None:
        assert self.path is not None
        try:
            obj = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._set_aside(f"unreadable ({exc})")
            return
        if not isinstance(obj, dict) or obj.get("format") != ONLINE_FORMAT or obj.get("version") != ONLINE_VERSION or not isinstance(obj.get("entries"), dict):
            self._set_aside("not a current agentir online-experience file")
            return
        for k, v in list(obj["entries"].items())[-MAX_ENTRIES:]:
            if (
                isinstance(k, str)
                and isinstance(v, list)
                and len(v) == 2
                and all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in v)
                and v[0] <= v[1]
            ):
                self._entries[k] = [float(v[0]), min(float(v[1]), ENTRY_CAP)]

    def _set_aside(self, reason: str) -> None:
        """Keep a bad state file (renamed ``.bad``) and start from the explored knowledge alone."""
        assert self.path is not None
        bad = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, bad)
        except OSError:
            bad = self.path
        log.warning("planning.experience.state_reset", path=str(self.path), kept_as=str(bad), reason=reason)


class ExperiencePlanner(BasePlanner):
    """Plans from the knowledge file plus what it learned while serving (see the module docstring)."""

    name = "experience"

    def __init__(self, knowledge: Knowledge | str | os.PathLike[str] | None = None, online: OnlineExperience | None = None) -> None:
        """``knowledge``: a :class:`Knowledge` or its file (default the shipped one); ``online``:
        where serving experience is kept (default: nowhere, no learning)."""
        if isinstance(knowledge, Knowledge):
            self.knowledge: Knowledge | None = knowledge
        else:
            path = knowledge or DEFAULT_KNOWLEDGE
            try:
                self.knowledge = Knowledge.load(path)
            except KnowledgeError as exc:
                self.knowledge = None
                log.warning("planning.experience.no_knowledge", reason=str(exc), fallback="rules")
        self.online = online if online is not None else OnlineExperience(None, learn=False)

    @classmethod
    def from_settings(cls, settings: PolicySettings) -> ExperiencePlanner:
        """The planner the settings describe (knowledge file, online state, learning on or off)."""
        state = settings.experience_state
        return cls(settings.knowledge, OnlineExperience(state, learn=settings.experience_learn and state is not None))

    def info(self) -> dict[str, Any]:
        """What a trace records about this planner's knowledge."""
        k = self.knowledge
        return {
            "knowledge": None if k is None else (k.path or "in-memory"),
            "learning": self.online.learn,
            "online_entries": len(self.online),
        }

    # ---------------------------------------------------------------- orders
    def _p_before(self, a: str, b: str) -> float:
        assert self.knowledge is not None
        p = self.knowledge.p_before(a, b)
        s_ab, n_ab = self.online.get(OnlineExperience.order_key(a, b))
        s_ba, n_ba = self.online.get(OnlineExperience.order_key(b, a))
        votes_for, votes = s_ab + (n_ba - s_ba), n_ab + n_ba
        if votes <= 0:
            return p
        weight = 4.0  # the explored estimate counts as four online votes
        return (weight * p + votes_for) / (weight + votes)

    def _best_order(self, subtasks: Sequence[str], not_first: Collection[str] = ()) -> list[str] | None:
        assert self.knowledge is not None
        return self.knowledge.best_order(subtasks, tie_break=RANK, not_first=not_first, p_before=self._p_before)

    def plan(self, subtasks: Sequence[str], context: PlanContext) -> list[str]:
        if self.knowledge is None:
            return sorted(subtasks, key=lambda s: (RANK[s], -float(context.scores.get(s, 0.0)), s))
        order = self._best_order(subtasks)
        return order if order is not None else list(subtasks)

    def replan(self, subtasks: Sequence[str], context: PlanContext, *, not_first: Collection[str]) -> list[str] | None:
        if self.knowledge is None:
            return super().replan(subtasks, context, not_first=not_first)
        return self._best_order(subtasks, not_first)

    # ---------------------------------------------------------------- tools
    def tool_scores(self, subtask: str, level: str, tools: Sequence[str]) -> dict[str, float]:
        """Each tool's expected utility (plus the UCB bonus while learning)."""
        stats = self.knowledge.tool_stats(subtask, level) if self.knowledge is not None else {}
        out: dict[str, float] = {}
        counts = {t: self.online.get(OnlineExperience.tool_key(subtask, level, t)) for t in tools}
        total = sum(n for _, n in counts.values()) + sum(min(PRIOR_CAP, s.calls) for t, s in stats.items() if t in tools)
        # A tool never explored (a new plug-in) is expected to gain what the explored ones do on
        # average; what it does while serving then scales that (see Knowledge.tool_utility).
        explored_calls = sum(s.calls for s in stats.values())
        prior_gain = sum(s.calls * s.mean_gain_db for s in stats.values()) / explored_calls if explored_calls else 0.0
        for t in tools:
            st = stats.get(t)
            s_on, n_on = counts[t]
            if st is None and self.knowledge is not None:
                st = ToolStat(t, 0.0, 0.0, prior_gain)
            elif st is not None and st.calls > PRIOR_CAP:  # cap the explored evidence, keep its rate
                f = PRIOR_CAP / st.calls
                st = ToolStat(st.tool, st.calls * f, st.successes * f, st.mean_gain_db)
            u = self.knowledge.tool_utility(st, extra_successes=s_on, extra_calls=n_on) if self.knowledge is not None else 0.5
            if self.online.learn:
                n = (st.calls if st else 0) + n_on
                u += UCB_C * math.sqrt(2.0 * math.log(total + 2.0) / (n + 1.0))
            out[t] = u
        return out

    def tool_order(self, subtask: str, context: PlanContext) -> list[str]:
        tools = list(context.tools.get(subtask, ()))
        if self.knowledge is None or not tools:
            return tools
        level = str(context.levels.get(subtask, "high"))
        scores = self.tool_scores(subtask, level, tools)
        from agentir.toolbox.costs import tool_cost

        # Equal utility: the cheaper tool first (measured s/MP), then registry order (stable sort).
        return sorted(tools, key=lambda t: (-round(scores[t], 9), tool_cost(t) if tool_cost(t) is not None else float("inf")))

    # ---------------------------------------------------------------- learning
    def observe_step(self, subtask: str, level: str, tool: str, success: bool) -> None:
        """A judged tool output (reflection's verdict on it)."""
        self.online.update(OnlineExperience.tool_key(subtask, level, tool), success)

    def observe_order(self, first: str, pending: Sequence[str], success: bool) -> None:
        """``first`` ran first while ``pending`` waited: success is a vote for that order, a rollback against it."""
        for then in pending:
            if then != first:
                self.online.update(OnlineExperience.order_key(first, then), success)

    def flush(self) -> None:
        self.online.flush()
