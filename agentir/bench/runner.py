"""Run restoration policies over a benchmark manifest, score every output, resumably.

The benchmark folder is the one :func:`agentir.datasets.build_benchmark` writes (``manifest.json``
plus ``lq/`` and ``hq/`` images). For every selected policy and manifest item the runner loads
the degraded input, restores it (or not: the ``input`` policy), scores the result against the
clean reference with :func:`agentir.toolbox.metrics.score` (PSNR on RGB, SSIM on Y, x4 bicubic for an
output 4x smaller than its reference) and appends one record to ``<out>/results.jsonl``.

Delivery guarantees of the results log:

* one JSON object per line, written with ``flush`` + ``fsync`` before the next image's record,
  so a crash or Ctrl-C loses at most the images in flight;
* a line torn by a crash (no trailing newline) is cut off when the log is reopened, and that
  image runs again;
* with ``resume=True`` every ``(policy, item)`` already in the log is skipped, except records
  with status ``"error"`` (the image could not be scored at all, e.g. a missing file), which are
  retried; the log's manifest fingerprint (``run.json``) must match the benchmark's;
* without ``resume`` an existing non-empty log is an error unless ``overwrite=True``.

Record statuses: the search's own (``success``, ``fallback``, ``nothing_to_do``), ``input`` for
the ``input`` policy, ``failed`` when the restore raised :class:`~agentir.pipeline.RestoreError`
(the degraded input is then scored as the output, so a failing agent is not flattered by
dropping its failures) and ``error`` when the image could not be scored (missing or corrupt
file, a shape the protocol cannot score); ``error`` records have no PSNR/SSIM and are left out
of the means.

Scoring: :func:`agentir.toolbox.metrics.score` (an output 4x smaller than its reference is upscaled x4
bicubic, ``rescaled: "up_x4"``); an output 4x larger, which ``BENCHMARK.md`` does not cover, is
downscaled x4 bicubic and flagged ``rescaled: "down_x4"`` (see :func:`_score`).

Per-image ``seconds`` is the job's wall clock inside the :class:`~agentir.pipeline.Restorer`
(``trace["seconds"]``); with ``workers > 1`` concurrent jobs share the CPU/GPU, so it is not a
single-image latency.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import numpy as np
import structlog

__all__ = [
    "POLICIES",
    "BenchError",
    "BenchItemError",
    "PolicySpec",
    "ResultLog",
    "UnknownChoiceError",
    "collect_results",
    "item_id",
    "open_benchmark",
    "parse_groups",
    "parse_policies",
    "run_bench",
    "select_items",
]

log = structlog.get_logger(__name__)

#: The results log inside the output folder.
RESULTS_LOG = "results.jsonl"
#: What the log belongs to (manifest fingerprint, data folder).
RUN_META = "run.json"
#: PSNR of identical images is infinite; records cap it here so JSON stays standard.
PSNR_CAP = 100.0
#: Images per combination whose outputs are kept (for the HTML report).
DEFAULT_SAMPLES = 2


class BenchError(ValueError):
    """A benchmark run cannot start or continue; the message says what to do."""


class UnknownChoiceError(BenchError):
    """An unknown policy or group name.

    Attributes:
        kind: ``"policy"`` or ``"group"``.
        name: the unknown name.
        choices: the valid names.
    """

    def __init__(self, kind: str, name: str, choices: Sequence[str]) -> None:
        self.kind = kind
        self.name = name
        self.choices = list(choices)
        folded = [c for c in self.choices if c.lower() == name.lower()]
        close = folded or difflib.get_close_matches(name, self.choices, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"choose from {', '.join(self.choices)}"
        super().__init__(f"unknown {kind} {name!r}; {hint}")


class BenchItemError(BenchError):
    """One manifest item cannot be used (missing or corrupt file); the run goes on without it.

    Attributes:
        item: the item's id (its ``lq`` path).
        path: the offending file, when there is one.
    """

    def __init__(self, item: str, reason: str, path: str | os.PathLike[str] | None = None) -> None:
        self.item = item
        self.path = None if path is None else str(path)
        super().__init__(f"{item}: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySpec:
    """What one benchmark policy runs.

    Attributes:
        name: the benchmark's name for it (``default``, ``random-gt`` ...).
        planner: planning policy for the :class:`~agentir.pipeline.Restorer`; ``None`` means
            no restoration (the degraded input is scored).
        options: job options passed to every restore (``rollback``, ``reflection`` ...).
        ground_truth: give the true degradations from the manifest as the job's ``subtasks``
            (replacing perception).
        tool: instead of the agent, run this one tool on every image (the ``allinone``
            baseline: one network for every degradation, no perception, no plan).
        description: one line for tables and ``--help``.
    """

    name: str
    planner: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    ground_truth: bool = False
    tool: str | None = None
    description: str = ""

    @property
    def restores(self) -> bool:
        """Whether this policy changes the image at all."""
        return self.planner is not None or self.tool is not None


#: The benchmark's policies by name, in the order tables show them.
POLICIES: dict[str, PolicySpec] = {
    p.name: p
    for p in (
        PolicySpec(name="input", planner=None, description="the degraded input itself, no restoration"),
        PolicySpec(
            name="default", planner="experience", description="the agent: experience planner, first-success reflection, rollback of steps that did not help"
        ),
        PolicySpec(
            name="paper",
            planner="experience",
            options={"reflection": "threshold", "rollback": True, "keep_improved": False},
            description="experience planner with the paper's reflection: accept only very_low early, roll back on every failure",
        ),
        PolicySpec(
            name="rules",
            planner="rules",
            options={"reflection": "threshold", "rollback": True, "keep_improved": False},
            description="the Foundation's agent: the paper's precedence rules and reflection",
        ),
        PolicySpec(name="random", planner="random", description="random subtask and tool order"),
        PolicySpec(name="fixed", planner="fixed", description="one fixed subtask order for every image"),
        PolicySpec(name="llm", planner="llm", description="a language model orders the subtasks (needs AGENTIR_LLM_URL / AGENTIR_LLM_MODEL)"),
        PolicySpec(
            name="no-reflection", planner="experience", options={"reflection": "none"}, description="experience planner, first tool output taken unjudged"
        ),
        PolicySpec(name="no-rollback", planner="experience", options={"rollback": False}, description="experience planner, never backtracks"),
        PolicySpec(
            name="judge",
            planner="experience",
            options={"reflection": "judge"},
            description="experience planner, first-success reflection with the step judge's harm veto (input and output seen)",
        ),
        PolicySpec(
            name="allinone", planner=None, tool="allinone", description="one all-in-one network on every image (no agent); needs the learned allinone tool"
        ),
        PolicySpec(name="random-gt", planner="random", ground_truth=True, description="random order of the true degradations (no perception)"),
    )
}

#: Default ``--policies``: every policy that needs no external service (``llm`` needs an endpoint).
DEFAULT_POLICIES: tuple[str, ...] = ("default", "paper", "rules", "random", "fixed", "no-reflection", "no-rollback", "input", "random-gt")


def _split(text: str | Iterable[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else list(text)
    return list(dict.fromkeys(p.strip() for p in parts if p and p.strip()))


def parse_policies(text: str | Iterable[str]) -> list[str]:
    """``"default,input"`` (or a list) -> validated policy names, duplicates dropped, order kept.

    Raises:
        UnknownChoiceError: a name is not in :data:`POLICIES` (the message lists close matches).
        BenchError: no names given.
    """
    names = _split(text)
    if not names:
        raise BenchError(f"no policies given; choose from {', '.join(POLICIES)}")
    for n in names:
        if n not in POLICIES:
            raise UnknownChoiceError("policy", n, list(POLICIES))
    return names


def parse_groups(text: str | Iterable[str] | None, manifest: Mapping[str, Any]) -> list[str]:
    """Validated group names present in ``manifest`` (``None`` or empty: all of its groups).

    Raises:
        UnknownChoiceError: a name is no group of the benchmark recipe.
        BenchError: a valid group this benchmark was not built with.
    """
    available = [str(g) for g in manifest.get("groups") or []] or list(dict.fromkeys(str(it.get("group")) for it in manifest.get("items", [])))
    names = _split(text) if text is not None else []
    if not names:
        return available
    from agentir.toolbox.degrade import COMBINATIONS

    known = list(dict.fromkeys([*COMBINATIONS, *available]))
    for n in names:
        if n not in known:
            raise UnknownChoiceError("group", n, known)
        if n not in available:
            raise BenchError(f"group {n!r} is not in this benchmark (it has {', '.join(available)}); rebuild it with `agentir degrade ... --groups {n}`")
    return names


def item_id(item: Mapping[str, Any]) -> str:
    """The stable id of a manifest item: its degraded image's relative path."""
    return str(item["lq"])


def open_benchmark(data_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], str]:
    """Load and check ``data_dir/manifest.json``; returns ``(manifest, sha256 of the file)``.

    Raises:
        BenchError: the folder or manifest is missing, unreadable, or not a benchmark manifest.
    """
    from agentir.datasets import MANIFEST_VERSION

    d = Path(data_dir)
    if not d.is_dir():
        raise BenchError(f"benchmark folder not found: {d}; build one with `agentir degrade CLEAN_DIR {d}`")
    path = d / "manifest.json"
    if not path.is_file():
        raise BenchError(f"no manifest.json in {d}; build the benchmark there with `agentir degrade CLEAN_DIR {d}` (a build that did not finish writes none)")
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"{path} is not valid JSON ({exc}); rebuild the benchmark with `agentir degrade`") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("items"), list):
        raise BenchError(f"{path} has no list of items; it is not an agentir benchmark manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise BenchError(
            f"{path} has manifest version {manifest.get('version')!r}; this code reads version {MANIFEST_VERSION}; rebuild it with `agentir degrade`"
        )
    for k, it in enumerate(manifest["items"]):
        missing = [key for key in ("group", "combo", "degradations", "lq", "hq") if not isinstance(it, dict) or key not in it]
        if missing:
            raise BenchError(f"{path}: item {k} lacks {', '.join(missing)}; rebuild the benchmark with `agentir degrade`")
    ids = [item_id(it) for it in manifest["items"]]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise BenchError(f"{path}: two items share the input {dup!r}; rebuild the benchmark with `agentir degrade`")
    return manifest, hashlib.sha256(raw).hexdigest()


def combo_key(item: Mapping[str, Any]) -> str:
    """``"<group>/<combo>"`` (plus ``/<level>`` in levels mode): the unit a score is averaged over."""
    return f"{item['group']}/{item['combo']}" + (f"/{item['level']}" if item.get("level") else "")


def select_items(manifest: Mapping[str, Any], groups: Sequence[str], limit_per_combo: int | None = None) -> list[dict[str, Any]]:
    """The manifest items of ``groups``, at most ``limit_per_combo`` per combination (the first ones).

    Raises:
        BenchError: ``limit_per_combo`` is not a positive int, or nothing is selected.
    """
    if limit_per_combo is not None and (isinstance(limit_per_combo, bool) or not isinstance(limit_per_combo, int) or limit_per_combo < 1):
        raise BenchError(f"--limit-per-combo must be a positive integer, got {limit_per_combo!r}")
    wanted = set(groups)
    count: dict[str, int] = {}
    out = []
    for it in manifest["items"]:
        if it["group"] not in wanted:
            continue
        key = combo_key(it)
        count[key] = count.get(key, 0) + 1
        if limit_per_combo is None or count[key] <= limit_per_combo:
            out.append(dict(it))
    if not out:
        raise BenchError(f"no benchmark images in groups {', '.join(groups)}; check the manifest")
    return out


def sampled_ids(items: Sequence[Mapping[str, Any]], per_combo: int) -> set[str]:
    """The first ``per_combo`` items of each combination: whose outputs are kept for the report."""
    seen: dict[str, int] = {}
    out = set()
    for it in items:
        key = combo_key(it)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= per_combo:
            out.add(item_id(it))
    return out


def relative_stem(item: Mapping[str, Any]) -> PurePosixPath:
    """``lq/A/rain+haze/101085.png`` -> ``A/rain+haze/101085`` (where traces and outputs go)."""
    p = PurePosixPath(item_id(item))
    if p.parts and p.parts[0] == "lq":
        p = PurePosixPath(*p.parts[1:])
    return p.with_suffix("")


# ----------------------------------------------------------------------------- results log
class ResultLog:
    """Append-only JSONL of per-image records, keyed by ``(policy, id)``; thread-safe appends.

    Every :meth:`append` is flushed and fsynced before it returns. Opening cuts a torn last
    line (a crash mid-write) so the next append starts on a fresh line.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every complete record, later lines winning; undecodable lines are skipped with a warning."""
        records: dict[tuple[str, str], dict[str, Any]] = {}
        if not self.path.is_file():
            return records
        with self.path.open("rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.endswith(b"\n"):
                    break  # torn by a crash; repair() drops it
                try:
                    rec = json.loads(line)
                    records[(str(rec["policy"]), str(rec["id"]))] = rec
                except (ValueError, KeyError, TypeError):
                    log.warning("bench.log_line_skipped", path=str(self.path), line=n)
        return records

    def repair(self) -> None:
        """Cut everything after the last newline (a partial record left by a crash)."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            log.warning("bench.log_torn_line_dropped", path=str(self.path), bytes=len(data) - end)
            with self.path.open("r+b") as fh:
                fh.truncate(end)
                fh.flush()
                os.fsync(fh.fileno())

    def clear(self) -> None:
        """Start the log over (an empty file)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("wb") as fh:
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record as a line; durable (fsync) when this returns."""
        line = (json.dumps(record, allow_nan=False, default=str, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- one image
def _safe_path(root: Path, rel: str, item: str) -> Path:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BenchItemError(item, f"manifest path {rel!r} leaves the benchmark folder; rebuild the benchmark with `agentir degrade`")
    return root.joinpath(*p.parts)


def load_pair(data_dir: Path, item: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Read an item's degraded input and clean reference as RGB uint8.

    Raises:
        BenchItemError: a file is missing or cannot be decoded (the message names it).
    """
    from agentir.datasets import read_rgb

    iid = item_id(item)
    out = []
    for key in ("lq", "hq"):
        path = _safe_path(data_dir, str(item[key]), iid)
        if not path.is_file():
            raise BenchItemError(iid, f"missing file {path} (named by the manifest); rebuild the benchmark with `agentir degrade`", path)
        try:
            out.append(read_rgb(path))
        except (ValueError, OSError) as exc:
            raise BenchItemError(iid, f"cannot read {path}: {exc}", path) from None
    return out[0], out[1]


def _finite(x: float) -> float:
    x = float(x)
    if math.isnan(x):
        raise ValueError("metric is NaN")
    return min(x, PSNR_CAP)


def _score(output: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """PSNR / SSIM per ``BENCHMARK.md``, plus ``rescaled``: how the output was resized first.

    ``BENCHMARK.md`` covers outputs of the reference's size and outputs 4x smaller (no
    super-resolution; :func:`agentir.toolbox.metrics.score` upscales them). An output 4x *larger* (the
    agent super-resolved a full-size input: a perception false positive) is brought back with
    the same MATLAB-style bicubic, antialiased, and flagged ``"down_x4"`` rather than dropped,
    so the mistake costs what the round trip costs instead of hiding the image from the mean.
    """
    from agentir.toolbox.degrade import bicubic_resize
    from agentir.toolbox.metrics import score

    rescaled = None
    oh, ow = output.shape[:2]
    rh, rw = reference.shape[:2]
    if (oh, ow) == (rh * 4, rw * 4):
        output, rescaled = bicubic_resize(output, (rh, rw)), "down_x4"
    elif (oh * 4, ow * 4) == (rh, rw):
        rescaled = "up_x4"
    s = score(output, reference)
    return {"psnr": round(_finite(s["psnr"]), 6), "ssim": round(float(s["ssim"]), 6), "rescaled": rescaled}


def _base_record(spec: PolicySpec, item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "policy": spec.name,
        "id": item_id(item),
        "group": item["group"],
        "combo": item["combo"],
        "key": combo_key(item),
        "stem": item.get("stem") or PurePosixPath(item_id(item)).stem,
        "degradations": list(item["degradations"]),
        "psnr": None,
        "ssim": None,
        "seconds": 0.0,
        "tool_calls": 0,
        "rollbacks": 0,
        "status": "error",
        "error": None,
        "trace": None,
        "output": None,
        "rescaled": None,
        "perceived": [],
        "plan": [],
        "done": [],
    }


def _present(levels: Mapping[str, Any]) -> list[str]:
    return [d for d, lv in levels.items() if lv in ("medium", "high", "very_high")]


@dataclass
class _Context:
    data_dir: Path
    out_dir: Path
    log: ResultLog
    sampled: set[str]
    on_done: Callable[[dict[str, Any]], None]


async def _run_item(ctx: _Context, spec: PolicySpec, item: Mapping[str, Any], restorer: Any) -> dict[str, Any]:
    from agentir.imageio import save_png_atomic, write_text_atomic
    from agentir.pipeline import RestoreError

    rec = _base_record(spec, item)
    iid = rec["id"]
    try:
        lq, hq = await anyio.to_thread.run_sync(load_pair, ctx.data_dir, item)
        trace: dict[str, Any] | None = None
        if not spec.restores:
            output, rec["status"] = lq, "input"
        else:
            options = {"subtasks": list(item["degradations"])} if spec.ground_truth else None
            t0 = time.perf_counter()
            try:
                result = await restorer.restore(lq, options=options, job=iid)
                output, trace = result.image, dict(result.trace)
                rec["status"] = str(trace.get("status", "success"))
            except RestoreError as exc:
                # A failed job is scored as if it returned its input (see the module docstring).
                output, trace = lq, dict(exc.trace or {})
                rec["status"], rec["error"] = "failed", f"{iid}: restore failed: {exc.error}"
                log.info("bench.restore_failed", policy=spec.name, item=iid, error=str(exc.error))
            seconds = float(trace.get("seconds") or (time.perf_counter() - t0))
            rec.update(
                seconds=round(seconds, 4),
                tool_calls=int(trace.get("tool_calls", 0) or 0),
                rollbacks=int(trace.get("rollbacks", 0) or 0),
                perceived=_present(trace.get("perception") or {}) if not spec.ground_truth else list(item["degradations"]),
                plan=list(trace.get("plan") or []),
                done=list(trace.get("done") or []),
            )
        try:
            rec.update(await anyio.to_thread.run_sync(_score, output, hq))
        except ValueError as exc:
            raise BenchItemError(
                iid, f"cannot score the {spec.name} output of shape {tuple(output.shape)} against the reference {tuple(hq.shape)}: {exc}"
            ) from None
        rel = relative_stem(item)
        if trace is not None:
            trace_path = ctx.out_dir / "traces" / spec.name / f"{rel}.json"
            doc = {"policy": spec.name, "id": iid, "psnr": rec["psnr"], "ssim": rec["ssim"], "status": rec["status"], "error": rec["error"], **trace}
            await anyio.to_thread.run_sync(write_text_atomic, trace_path, json.dumps(doc, indent=1, default=str, allow_nan=False) + "\n")
            rec["trace"] = trace_path.relative_to(ctx.out_dir).as_posix()
        if iid in ctx.sampled and spec.restores:
            out_path = ctx.out_dir / "outputs" / spec.name / f"{rel}.png"
            await anyio.to_thread.run_sync(save_png_atomic, out_path, np.ascontiguousarray(output))
            rec["output"] = out_path.relative_to(ctx.out_dir).as_posix()
    except BenchItemError as exc:
        rec.update(status="error", error=str(exc), psnr=None, ssim=None)
        log.info("bench.item_error", policy=spec.name, item=iid, error=str(exc))
    except Exception as exc:
        rec.update(status="error", error=f"{iid}: {type(exc).__name__}: {exc}", psnr=None, ssim=None)
        log.exception("bench.item_crashed", policy=spec.name, item=iid)
    await anyio.to_thread.run_sync(ctx.log.append, rec)
    ctx.on_done(rec)
    return rec


class ToolRestorer:
    """Stands in for a Restorer where a policy is one tool run on the whole image (``allinone``)."""

    def __init__(self, tool: str) -> None:
        import agentir.toolbox.tools  # noqa: F401 - registers the built-in (and learned) tools
        from agentir.toolbox.base import TOOLS

        self.name = tool
        self.tool = TOOLS.get(tool)  # UnknownNameError names close matches; a missing weight file fails here
        self._lock = anyio.Lock()

    async def __aenter__(self) -> ToolRestorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def restore(self, image: np.ndarray, *, options: Mapping[str, Any] | None = None, job: str = "") -> Any:
        from types import SimpleNamespace

        from agentir.toolbox.base import run_on_rgb

        t0 = time.perf_counter()
        async with self._lock:  # one call at a time: the tool uses every thread it is given
            out = await anyio.to_thread.run_sync(run_on_rgb, self.tool, image)
        seconds = time.perf_counter() - t0
        trace = {
            "plan": [self.name],
            "done": [self.name],
            "tool_calls": 1,
            "rollbacks": 0,
            "seconds": round(seconds, 4),
            "status": "success",
            "steps": [{"tool": self.name, "seconds": round(seconds, 4)}],
        }
        return SimpleNamespace(image=out, trace=trace)


class _NoRestorer:
    """Stands in for a Restorer where a policy restores nothing (``input``)."""

    async def __aenter__(self) -> _NoRestorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


RestorerFactory = Callable[[PolicySpec, int], AbstractAsyncContextManager[Any]]


def default_restorer_factory(*, perception: str = "analytic", job_timeout: float = 600.0, options: Mapping[str, Any] | None = None) -> RestorerFactory:
    """A factory building one :class:`~agentir.pipeline.Restorer` per policy (``max_inflight = workers``)."""

    def make(spec: PolicySpec, workers: int) -> AbstractAsyncContextManager[Any]:
        from agentir.pipeline import Restorer

        if spec.tool is not None:
            return ToolRestorer(spec.tool)
        return Restorer(
            policy=spec.planner or "rules", perception=perception, options={**(options or {}), **spec.options}, max_inflight=workers, job_timeout=job_timeout
        )

    return make


def _check_run_meta(out_dir: Path, fingerprint: str, data_dir: Path, resume: bool, overwrite: bool, results: ResultLog) -> None:
    meta_path = out_dir / RUN_META
    existing = results.read()
    if existing and not resume and not overwrite:
        raise BenchError(
            f"{results.path} already holds {len(existing)} results; pass --resume to continue that run, --overwrite to start over, or choose another --out"
        )
    if resume and existing and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except ValueError:
            meta = {}
        if meta.get("manifest_sha256") not in (None, fingerprint):
            raise BenchError(f"{out_dir} holds results of a different benchmark (manifest changed since); use another --out or --overwrite")
    if overwrite or not resume:
        results.clear()
    from agentir.imageio import write_text_atomic

    write_text_atomic(meta_path, json.dumps({"manifest_sha256": fingerprint, "data_dir": str(data_dir.resolve())}, indent=1) + "\n")


async def run_bench(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    policies: Sequence[str] = DEFAULT_POLICIES,
    groups: str | Sequence[str] | None = None,
    limit_per_combo: int | None = None,
    workers: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    samples_per_combo: int = DEFAULT_SAMPLES,
    restorer_factory: RestorerFactory | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``policies`` over the benchmark in ``data_dir``; records go to ``out_dir/results.jsonl``.

    Args:
        data_dir: a folder written by ``agentir degrade`` (with ``manifest.json``).
        out_dir: where the log, traces and sampled outputs go (created).
        policies: names from :data:`POLICIES`.
        groups: groups to run (default: all the benchmark has).
        limit_per_combo: only the first N images of each combination.
        workers: images restored concurrently within one Restorer per policy.
        resume: skip ``(policy, image)`` pairs already in the log (module docstring).
        overwrite: discard an existing log instead of refusing to start.
        samples_per_combo: images per combination whose outputs are saved for the report.
        restorer_factory: builds the Restorer for a policy (tests inject fakes).
        progress: show a tqdm bar with ETA on stderr.

    Returns:
        ``{"manifest", "fingerprint", "items", "policies", "records", "ran", "skipped"}`` where
        ``records`` holds the selected ``(policy, item)`` records (run now or resumed) in policy
        then manifest order, ``ran`` how many images ran now and ``skipped`` how many were resumed.

    Raises:
        BenchError: bad arguments, a missing benchmark, or an existing log without
            ``resume`` / ``overwrite``.
    """
    from tqdm import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BenchError(f"--workers must be a positive integer, got {workers!r}")
    if isinstance(samples_per_combo, bool) or not isinstance(samples_per_combo, int) or samples_per_combo < 0:
        raise BenchError(f"samples per combination must be a non-negative integer, got {samples_per_combo!r}")
    names = parse_policies(policies)
    data = Path(data_dir)
    manifest, fingerprint = open_benchmark(data)
    group_list = parse_groups(groups, manifest)
    items = select_items(manifest, group_list, limit_per_combo)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = ResultLog(out / RESULTS_LOG)
    results.repair()
    _check_run_meta(out, fingerprint, data, resume, overwrite, results)
    finished = {k: r for k, r in results.read().items() if r.get("status") != "error"}
    factory = restorer_factory or default_restorer_factory()

    plan: list[tuple[PolicySpec, list[dict[str, Any]]]] = []
    for n in names:
        spec = POLICIES[n]
        plan.append((spec, [it for it in items if (n, item_id(it)) not in finished]))
    todo = sum(len(p) for _, p in plan)
    skipped = len(items) * len(names) - todo
    if skipped:
        log.info("bench.resumed", skipped=skipped, todo=todo)

    bar = tqdm(total=todo, unit="img", desc="bench", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    errors = {"n": 0}

    def on_done(rec: dict[str, Any]) -> None:
        if rec["status"] in ("error", "failed"):
            errors["n"] += 1
            bar.write(f"{rec['policy']}: {rec['error']}", file=sys.stderr)
        bar.set_postfix_str(f"{rec['policy']} {rec['key']}" + (f" errors={errors['n']}" if errors["n"] else ""), refresh=False)
        bar.update(1)

    ctx = _Context(data_dir=data, out_dir=out, log=results, sampled=sampled_ids(items, samples_per_combo), on_done=on_done)
    try:
        for spec, pending in plan:
            if not pending:
                continue
            log.info("bench.policy_start", policy=spec.name, images=len(pending), workers=workers)
            cm = factory(spec, workers) if spec.restores else _NoRestorer()
            async with cm as restorer:
                limiter = anyio.Semaphore(workers)

                async def one(it: dict[str, Any], restorer: Any = restorer, spec: PolicySpec = spec, limiter: anyio.Semaphore = limiter) -> None:
                    async with limiter:
                        await _run_item(ctx, spec, it, restorer)

                async with anyio.create_task_group() as tg:
                    for it in pending:
                        tg.start_soon(one, it)
    finally:
        bar.close()

    return _gather(results, manifest, fingerprint, items, names, group_list, ran=todo, skipped=skipped)


def _gather(
    results: ResultLog,
    manifest: dict[str, Any],
    fingerprint: str,
    items: list[dict[str, Any]],
    names: list[str],
    group_list: list[str],
    *,
    ran: int,
    skipped: int,
) -> dict[str, Any]:
    all_records = results.read()
    records = [all_records[(n, item_id(it))] for n in names for it in items if (n, item_id(it)) in all_records]
    return {
        "manifest": manifest,
        "fingerprint": fingerprint,
        "items": items,
        "policies": names,
        "groups": group_list,
        "records": records,
        "ran": ran,
        "skipped": skipped,
    }


def collect_results(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    policies: Sequence[str] = DEFAULT_POLICIES,
    groups: str | Sequence[str] | None = None,
    limit_per_combo: int | None = None,
) -> dict[str, Any]:
    """What :func:`run_bench` returns, from the existing log only (nothing runs; for ``--report-only``).

    Raises:
        BenchError: bad arguments, a missing benchmark or no results log in ``out_dir``.
    """
    names = parse_policies(policies)
    manifest, fingerprint = open_benchmark(data_dir)
    group_list = parse_groups(groups, manifest)
    items = select_items(manifest, group_list, limit_per_combo)
    results = ResultLog(Path(out_dir) / RESULTS_LOG)
    if not results.path.is_file():
        raise BenchError(f"no {RESULTS_LOG} in {out_dir}; run `agentir bench {data_dir} --out {out_dir}` first")
    return _gather(results, manifest, fingerprint, items, names, group_list, ran=0, skipped=0)
