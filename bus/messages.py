"""Every message kind that crosses the bus, one versioned schema each.

Flow of one job (subjects in :class:`Subjects`)::

    JobSubmitted -> Perceiver -> Perceived -> Planner -> ExecuteStep -> Executor
      -> StepExecuted -> Reflector -> Reflected -> Planner -> ... -> JobFinished | JobFailed

Pixels never ride inline: images are :class:`~agentir.bus.blobs.BlobRef` into a blob store. Subtasks are
named by the degradation they treat (``"noise"``, ``"haze"``, ...; see ``agentir.toolbox.vocab``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from agentir.bus.blobs import BlobRef
from agentir.bus.schema import Message, message, record


class Subjects:
    """Subject names. A deployment may prefix them (``Bus`` implementations take subjects verbatim)."""

    SUBMIT = "agentir.job.submit"  # JobSubmitted            -> Perceiver (queue group)
    PERCEIVE = "agentir.perceive"  # PerceiveRequest (request/reply) -> Perceiver
    PLAN = "agentir.plan"  # Perceived, Reflected       -> Planner
    EXECUTE = "agentir.execute"  # ExecuteStep, JobCancel -> Executor (queue group)
    EXECUTE_CANCEL = "agentir.execute.cancel"  # JobCancel    -> every Executor (no group)
    REFLECT = "agentir.reflect"  # StepExecuted           -> Reflector (queue group)
    EVENTS = "agentir.job.events"  # JobProgress, JobFinished, JobFailed -> clients


# ----------------------------------------------------------------------------- records
@record
class Candidate:
    """One tool's output for a subtask, as executed and (after reflection) rated.

    ``level`` is empty until the Reflector rates it; ``error`` is non-empty when the tool failed
    (then ``image`` is None). ``gain`` is the step judge's predicted PSNR gain (dB) of this
    output over the step's input, or None where no judge ran (the ``judge`` reflection sets it).
    """

    tool: str
    image: BlobRef | None = None
    level: str = ""
    score: float = 0.0
    seconds: float = 0.0
    error: str = ""
    gain: float | None = None


# ----------------------------------------------------------------------------- messages
@message("job.submitted")
class JobSubmitted(Message):
    """A client asks for ``image`` to be restored.

    ``policy`` names the planning policy (empty: the Planner's default, ``experience``).
    ``options`` are the wire form of :class:`agentir.agent_policies.options.JobOptions`: only the options
    the client set; the Planner fills in the defaults and validates them there, in one place.
    """

    job: str
    image: BlobRef
    policy: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@message("perceive.request")
class PerceiveRequest(Message):
    """Request/reply: rate every degradation of ``image`` (answered with :class:`Perceived`)."""

    image: BlobRef


@message("perceived")
class Perceived(Message):
    """Severity per degradation: ``levels`` (five words) and continuous ``scores`` (0 = absent .. 4).

    ``policy`` and ``options`` are the job's, passed on from :class:`JobSubmitted` so that the
    Planner needs no other state to start the search. Empty ``job`` answers a PerceiveRequest.
    """

    job: str
    image: BlobRef
    levels: dict[str, str]
    scores: dict[str, float]
    seconds: float = 0.0
    policy: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@message("step.execute")
class ExecuteStep(Message):
    """Run ``tools`` (one wave) for ``subtask`` on ``image``, at search node ``node``.

    ``remaining`` are the subtask's tools not yet tried and ``prior`` the rated candidates of
    earlier waves at this node; the Executor passes both on untouched so the Reflector can judge
    the node as a whole. ``reflection`` names the job's judge (empty: the job default's).
    """

    job: str
    node: int
    subtask: str
    image: BlobRef
    tools: list[str]
    remaining: list[str] = field(default_factory=list)
    prior: list[Candidate] = field(default_factory=list)
    reflection: str = ""


@message("step.executed")
class StepExecuted(Message):
    """The outputs of one wave (one :class:`Candidate` per tool, unrated)."""

    job: str
    node: int
    subtask: str
    outputs: list[Candidate]
    remaining: list[str] = field(default_factory=list)
    prior: list[Candidate] = field(default_factory=list)
    reflection: str = ""
    #: the step's input image (what the outputs are judged against); None from older senders.
    source: BlobRef | None = None


@message("step.reflected")
class Reflected(Message):
    """Judgement of a node: all candidates so far (rated), the verdict and the index of the best.

    ``verdict`` is one of ``accept`` (an output rated very_low), ``success`` (best is low or
    better), ``failure`` (best is worse than low, or every tool failed) or ``continue`` (no
    output is good enough yet and tools remain: run the next wave). ``best`` is -1 when no tool
    produced an output.
    """

    job: str
    node: int
    subtask: str
    candidates: list[Candidate]
    verdict: str
    best: int


@message("job.progress")
class JobProgress(Message):
    """What a job is doing now, for clients: ``stage`` is perceived/planned/executing/reflected/rollback."""

    job: str
    stage: str
    detail: str = ""
    tool_calls: int = 0


@message("job.finished")
class JobFinished(Message):
    """The job's result image and its trace (a JSON-ready map: perception, plan, steps, ...)."""

    job: str
    result: BlobRef
    trace: dict[str, Any]


@message("job.failed")
class JobFailed(Message):
    """The job could not be completed; ``error`` says why in one line."""

    job: str
    error: str
    trace: dict[str, Any] = field(default_factory=dict)


@message("job.cancel")
class JobCancel(Message):
    """Stop ``job``: the Planner drops its search and the Executor its queued tool work.

    Sent to the plan subject by a client; the Planner passes it on to the execute subject, and
    the executor its queue group picks passes it on to ``Subjects.EXECUTE_CANCEL``, which every
    executor reads (on several workers, each drops the job's queued work).
    """

    job: str = ""
    reason: str = ""


@message("error.reply")
class ErrorReply(Message):
    """Answer to a request whose handler failed."""

    error_type: str
    detail: str
