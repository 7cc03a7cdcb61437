"""Tests for agentir.bench: running policies over a tiny benchmark, resuming, scoring and reporting."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from agentir.bench import main_bench
from agentir.bench.report import write_report
from agentir.bench.runner import (
    RESULTS_LOG,
    BenchError,
    PolicySpec,
    UnknownChoiceError,
    parse_groups,
    parse_policies,
    run_bench,
)
from agentir.datasets import build_benchmark, load_manifest, score_inputs
from agentir.pipeline import RestoreError, RestoreResult

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"
# One two-degradation combination and one with low resolution (scored after a x4 bicubic).
KEEP = {"A/noise+jpeg", "C/rain+noise+low_resolution"}


@pytest.fixture(scope="module")
def bench_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A benchmark of the shipped clean images: 2 combinations x 2 images (built once per module)."""
    out = tmp_path_factory.mktemp("bench") / "data"
    manifest = build_benchmark(CLEAN, out, groups=["A", "C"], per_combo=2, seed=1, progress=False)
    manifest["items"] = [it for it in manifest["items"] if f"{it['group']}/{it['combo']}" in KEEP]
    manifest["combos"] = {g: [c for c in cs if f"{g}/{c}" in KEEP] for g, cs in manifest["combos"].items()}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return out


@pytest.fixture
def bench_data(bench_src: Path, tmp_path: Path) -> Path:
    """A private copy of the module's benchmark that a test may damage."""
    import shutil

    dst = tmp_path / "data"
    shutil.copytree(bench_src, dst)
    return dst


class FakeRestorer:
    """Stands in for the Restorer: returns the input brightened by 1 and a small trace; counts calls."""

    def __init__(self, spec: PolicySpec, workers: int, calls: list[tuple[str, str, dict | None]], fail: bool = False, upscale: bool = False) -> None:
        self.spec = spec
        self.calls = calls
        self.fail = fail
        self.upscale = upscale

    async def __aenter__(self) -> FakeRestorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def restore(self, image: np.ndarray, *, options: dict | None = None, job: str | None = None) -> RestoreResult:
        self.calls.append((self.spec.name, str(job), options))
        trace: dict[str, Any] = {
            "perception": {"noise": "high", "jpeg": "medium", "rain": "very_low"},
            "plan": ["noise", "jpeg"],
            "done": ["noise"],
            "steps": [{"node": 0, "subtask": "noise", "tool": "fake_denoise", "level": "low", "verdict": "accepted"}],
            "events": [{"type": "rollback", "node": 1, "subtask": "jpeg"}],
            "status": "fallback",
            "tool_calls": 3,
            "rollbacks": 1,
            "seconds": 0.5,
        }
        if self.fail:
            raise RestoreError(str(job), "every tool crashed", trace)
        out = np.clip(image.astype(np.int16) + 1, 0, 255).astype(np.uint8)
        if self.upscale:
            out = np.repeat(np.repeat(out, 4, axis=0), 4, axis=1)
        return RestoreResult(job=str(job), image=out, trace=trace)


def fake_factory(calls: list, fail: bool = False, upscale: bool = False):
    """A restorer factory building :class:`FakeRestorer` objects that log into ``calls``."""
    return lambda spec, workers: FakeRestorer(spec, workers, calls, fail, upscale)


def log_lines(out: Path) -> list[dict]:
    """The records of the run's JSONL log."""
    return [json.loads(line) for line in (out / RESULTS_LOG).read_text(encoding="utf-8").splitlines()]


async def test_end_to_end_real_pipeline_writes_every_output(bench_data: Path, tmp_path: Path) -> None:
    """The real agent and the input baseline run over the tiny benchmark and every output file appears."""
    out = tmp_path / "out"
    run = await run_bench(bench_data, out, policies=["input", "default"], workers=2, samples_per_combo=1, progress=False)
    summary = write_report(run, out, bench_data, command="test", samples_per_combo=1)
    n_items = len(load_manifest(bench_data)["items"])
    assert len(run["records"]) == 2 * n_items
    bad = [r for r in run["records"] if r["status"] in ("error", "failed")]
    assert not bad, bad
    for r in run["records"]:
        assert 5.0 < r["psnr"] < 60.0 and 0.0 < r["ssim"] <= 1.0
        if r["policy"] == "default":
            trace = json.loads((out / r["trace"]).read_text())
            assert trace["id"] == r["id"] and "perception" in trace and "plan" in trace
            assert r["tool_calls"] == trace["tool_calls"] and r["seconds"] > 0
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["groups"]["default"]) == {"A", "C"} and len(doc["images"]) == 2 * n_items
    assert summary["overall"]["default"]["n"] == n_items
    csv_text = (out / "results.csv").read_text()
    assert csv_text.startswith("level,name,policy,psnr") and "combo,C/rain+noise+low_resolution,default" in csv_text
    for m in ("psnr", "ssim", "seconds", "tool_calls"):
        with Image.open(out / f"chart_{m}.png") as im:
            assert im.format == "PNG" and im.width > 100
    page = (out / "report.html").read_text()
    srcs = re.findall(r"src='([^']+)'", page)
    thumbs = [s for s in srcs if s.startswith("report_files/")]
    # one sampled image per combination: degraded input (the input policy's column), default output, reference
    assert len(set(thumbs)) == 3 * len(KEEP)
    assert all((out / s).is_file() for s in srcs)
    assert "planned:" in page and "rolled back:" in page
    saved = [r["output"] for r in run["records"] if r["output"]]
    assert len(saved) == len(KEEP) and all((out / s).is_file() for s in saved)


async def test_resume_skips_finished_images_and_reruns_a_torn_record(bench_data: Path, tmp_path: Path) -> None:
    """A resumed run restores nothing already logged; a record torn by a crash is cut off and redone."""
    out = tmp_path / "out"
    calls: list = []
    first = await run_bench(bench_data, out, policies=["default", "random"], restorer_factory=fake_factory(calls), progress=False)
    n = len(first["records"])
    assert len(calls) == n == 2 * len(load_manifest(bench_data)["items"])
    for rec in log_lines(out):
        assert {"psnr", "ssim", "seconds", "tool_calls", "rollbacks", "status", "trace"} <= rec.keys()
        assert rec["tool_calls"] == 3 and rec["rollbacks"] == 1 and rec["seconds"] == 0.5 and (out / rec["trace"]).is_file()

    calls.clear()
    again = await run_bench(bench_data, out, policies=["default", "random"], resume=True, restorer_factory=fake_factory(calls), progress=False)
    assert calls == [] and again["skipped"] == n and len(log_lines(out)) == n
    assert again["records"] == first["records"]

    raw = (out / RESULTS_LOG).read_bytes()
    (out / RESULTS_LOG).write_bytes(raw[: raw.rstrip(b"\n").rfind(b"\n") + 1] + b'{"policy": "random", "id": "lq/A/no')
    await run_bench(bench_data, out, policies=["default", "random"], resume=True, restorer_factory=fake_factory(calls), progress=False)
    assert len(calls) == 1 and calls[0][0] == "random"
    assert len(log_lines(out)) == n


async def test_existing_results_need_resume_or_overwrite(bench_data: Path, tmp_path: Path) -> None:
    """Starting over an existing log is refused unless --overwrite, which empties it first."""
    out = tmp_path / "out"
    await run_bench(bench_data, out, policies=["input"], progress=False)
    with pytest.raises(BenchError, match="--resume"):
        await run_bench(bench_data, out, policies=["input"], progress=False)
    await run_bench(bench_data, out, policies=["input"], overwrite=True, progress=False)
    assert len(log_lines(out)) == len(load_manifest(bench_data)["items"])


async def test_input_policy_matches_score_inputs(bench_data: Path, tmp_path: Path) -> None:
    """The input baseline's per-combination and per-group scores equal agentir.datasets.score_inputs."""
    out = tmp_path / "out"
    run = await run_bench(bench_data, out, policies=["input"], progress=False)
    summary = write_report(run, out, bench_data, samples_per_combo=0)
    expected = score_inputs(bench_data)
    for key, st in expected["combos"].items():
        got = summary["combos"]["input"][key]
        assert got["n"] == st["n"]
        assert got["psnr"] == pytest.approx(st["psnr"], abs=1e-5) and got["ssim"] == pytest.approx(st["ssim"], abs=1e-5)
    for g, st in expected["groups"].items():
        assert summary["groups"]["input"][g]["psnr"] == pytest.approx(st["psnr"], abs=1e-5)
    assert all(r["tool_calls"] == 0 and r["status"] == "input" for r in run["records"])


async def test_random_gt_gives_the_true_degradations_as_subtasks(bench_data: Path, tmp_path: Path) -> None:
    """random-gt runs the random planner with the manifest's degradations replacing perception."""
    calls: list = []
    specs: list[PolicySpec] = []

    def factory(spec: PolicySpec, workers: int) -> FakeRestorer:
        specs.append(spec)
        return FakeRestorer(spec, workers, calls)

    await run_bench(bench_data, tmp_path / "out", policies=["random-gt", "no-rollback"], restorer_factory=factory, progress=False)
    assert [(s.planner, dict(s.options)) for s in specs] == [("random", {}), ("experience", {"rollback": False})]
    truth = {it["lq"]: it["degradations"] for it in load_manifest(bench_data)["items"]}
    gt_calls = [c for c in calls if c[0] == "random-gt"]
    assert gt_calls and all(opts == {"subtasks": truth[job]} for _, job, opts in gt_calls)
    assert all(opts is None for name, _, opts in calls if name == "no-rollback")


async def test_failed_restore_is_scored_on_its_input_and_flagged(bench_data: Path, tmp_path: Path) -> None:
    """A job that fails counts as returning its input, with status failed and the error kept."""
    out = tmp_path / "out"
    run = await run_bench(bench_data, out, policies=["input", "default"], restorer_factory=fake_factory([], fail=True), progress=False)
    by = {(r["policy"], r["id"]): r for r in run["records"]}
    for (policy, iid), r in by.items():
        if policy == "default":
            assert r["status"] == "failed" and "every tool crashed" in r["error"]
            assert r["psnr"] == by[("input", iid)]["psnr"] and r["tool_calls"] == 3


async def test_outputs_4x_too_large_are_downscaled_scored_and_flagged(bench_data: Path, tmp_path: Path) -> None:
    """A super-resolved full-size input is scored after a x4 bicubic downscale and counted as oversized."""
    out = tmp_path / "out"
    run = await run_bench(bench_data, out, policies=["default"], restorer_factory=fake_factory([], upscale=True), progress=False)
    summary = write_report(run, out, bench_data, samples_per_combo=0)
    lowres = [r for r in run["records"] if "low_resolution" in r["degradations"]]
    full = [r for r in run["records"] if "low_resolution" not in r["degradations"]]
    assert lowres and all(r["rescaled"] is None and r["psnr"] is not None for r in lowres)  # 4x4-upscaled LR input: reference size
    assert full and all(r["rescaled"] == "down_x4" and 10.0 < r["psnr"] < 60.0 for r in full)
    assert summary["overall"]["default"]["oversized"] == len(full)


def test_missing_and_corrupt_files_are_errors_naming_the_file_and_the_rest_runs(bench_data: Path, tmp_path: Path, capsys) -> None:
    """A missing input and a corrupt reference fail only their own images; the exit code is 1."""
    items = load_manifest(bench_data)["items"]
    (bench_data / items[0]["lq"]).unlink()
    (bench_data / items[1]["hq"]).write_bytes(b"not a png")
    out = tmp_path / "out"
    code = main_bench([str(bench_data), "--policies", "input", "--out", str(out), "-q"])
    assert code == 1
    recs = {r["id"]: r for r in log_lines(out)}
    assert recs[items[0]["lq"]]["status"] == "error" and str(bench_data / items[0]["lq"]) in recs[items[0]["lq"]]["error"]
    assert recs[items[1]["lq"]]["status"] == "error" and items[1]["hq"] in recs[items[1]["lq"]]["error"]
    broken = {items[0]["lq"], items[1]["lq"]}
    rest = [r for rid, r in recs.items() if rid not in broken]
    assert rest and all(r["status"] == "input" and r["psnr"] is not None for r in rest)
    assert "failed or could not be scored" in capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    assert sum(st["errors"] for st in doc["combos"]["input"].values()) == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--policies", "default,radnom"], "unknown policy 'radnom'; did you mean random"),
        (["--groups", "A,Q"], "unknown group 'Q'"),
        (["--groups", "B"], "group 'B' is not in this benchmark"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_bad_arguments_give_one_line_usage_errors(bench_src: Path, tmp_path: Path, capsys, argv: Sequence[str], message: str) -> None:
    """Unknown policy or group names and bad numbers exit 2 with a one-line error and write nothing."""
    out = tmp_path / "out"
    assert main_bench([str(bench_src), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()


def test_missing_benchmark_folder_or_manifest_is_a_clear_error(tmp_path: Path, capsys) -> None:
    """A missing folder and a folder without manifest.json each get an error that says how to build one."""
    assert main_bench([str(tmp_path / "nowhere")]) == 2
    assert "benchmark folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main_bench([str(tmp_path / "empty")]) == 2
    assert "no manifest.json" in capsys.readouterr().err


def test_policy_and_group_parsing() -> None:
    """Names are split on commas, de-duplicated in order, and unknown ones list close matches."""
    assert parse_policies("input, default,input") == ["input", "default"]
    with pytest.raises(UnknownChoiceError, match="did you mean no-rollback"):
        parse_policies(["no-rollbak"])
    assert parse_groups(None, {"groups": ["A", "C"]}) == ["A", "C"]
    assert parse_groups("C", {"groups": ["A", "C"]}) == ["C"]
    with pytest.raises(UnknownChoiceError, match="did you mean A"):
        parse_groups("a", {"groups": ["A", "C"]})


def test_report_only_rebuilds_outputs_from_the_log(bench_src: Path, tmp_path: Path, capsys) -> None:
    """--report-only runs nothing and rewrites results.json from the existing log."""
    out = tmp_path / "out"
    assert main_bench([str(bench_src), "--policies", "input", "--out", str(out), "-q"]) == 0
    (out / "results.json").unlink()
    assert main_bench([str(bench_src), "--policies", "input", "--out", str(out), "--report-only"]) == 0
    assert json.loads((out / "results.json").read_text())["overall"]["input"]["n"] == len(load_manifest(bench_src)["items"])
    assert "Per group" in capsys.readouterr().out


async def test_a_one_tool_policy_runs_that_tool_on_every_image(bench_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PolicySpec with ``tool`` (the ``allinone`` baseline) runs the real tool once per image, no agent."""
    from agentir.bench import runner

    spec = PolicySpec(name="one-tool", planner=None, tool="bilateral_denoise", description="test")
    monkeypatch.setitem(runner.POLICIES, "one-tool", spec)
    out = tmp_path / "out"
    run = await run_bench(bench_data, out, policies=["input", "one-tool"], workers=2, progress=False)
    rows = [r for r in run["records"] if r["policy"] == "one-tool"]
    inputs = {r["id"]: r for r in run["records"] if r["policy"] == "input"}
    assert rows and all(r["status"] == "success" and r["tool_calls"] == 1 and r["plan"] == ["bilateral_denoise"] for r in rows)
    assert any(r["psnr"] != inputs[r["id"]]["psnr"] for r in rows)  # the tool changed the images


def test_the_allinone_policy_names_its_tool() -> None:
    from agentir.bench.runner import POLICIES

    assert POLICIES["allinone"].tool == "allinone" and POLICIES["allinone"].restores
