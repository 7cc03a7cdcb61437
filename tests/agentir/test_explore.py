"""``agentir explore``: the full tree on real (small) images, reproducible and resumable.

Calls :func:`main_explore` (what ``agentir explore`` runs) rather than the CLI's ``main``, which
would point structlog at pytest's captured stderr for the rest of the session.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentir.agent_policies.knowledge import Knowledge
from agentir.explore import build_jobs, main_explore, training_images

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "clean"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "clean"
    d.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(EXAMPLES / name, d / name)
    return d


def explore(data: Path, out: Path, *extra: str) -> int:
    return main_explore([str(data), "-o", str(out), "--per-combo", "1", "--workers", "1", "--combinations", "rain+haze", "--no-progress", *extra])


def test_explores_the_full_tree_and_writes_knowledge(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a" / "knowledge.json"
    assert explore(data, out) == 0
    k = Knowledge.load(out)
    assert k.summary["images"] == 1
    assert [c["combination"] for c in k.combinations] == [["haze", "rain"]]
    records = [json.loads(line) for line in out.with_name("knowledge.json.records.jsonl").read_text().splitlines()]
    header, rec = records[0]["header"], records[1]
    tools = header["tools"]
    n_rain, n_haze = len(tools["rain"]), len(tools["haze"])
    # every order, every tool at each step: n_rain + n_haze first steps, 2 * n_rain * n_haze leaves
    assert len(rec["nodes"]) == n_rain + n_haze + 2 * n_rain * n_haze
    leaves = [n for n in rec["nodes"] if len(n["path"]) == 2]
    assert {tuple(p[0] for p in n["path"]) for n in leaves} == {("rain", "haze"), ("haze", "rain")}
    for n in rec["nodes"]:
        assert set(n["levels"]) == set(tools) and n["psnr"] > 0  # perceived on all eight, scored
    assert rec["input"]["psnr"] < max(n["psnr"] for n in leaves)  # some leaf restores something
    stats = k.tool_stats("rain", rec["input"]["levels"]["rain"])
    assert set(stats) == set(tools["rain"])
    assert "explored 1 images" in capsys.readouterr().err


def test_the_same_command_reproduces_the_same_file_and_resumes(data: Path, tmp_path: Path) -> None:
    first = tmp_path / "a" / "knowledge.json"
    second = tmp_path / "b" / "knowledge.json"
    assert explore(data, first, "--per-combo", "2") == 0
    # a crash after one image: the header, one record and a torn line survive
    records = first.with_name("knowledge.json.records.jsonl")
    second.parent.mkdir()
    lines = records.read_text().splitlines()
    assert len(lines) == 3
    second.with_name("knowledge.json.records.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:50])
    assert explore(data, second, "--per-combo", "2") == 0
    assert second.read_bytes() == first.read_bytes()
    assert explore(data, tmp_path / "c" / "knowledge.json", "--per-combo", "2", "--fresh") == 0
    assert (tmp_path / "c" / "knowledge.json").read_bytes() == first.read_bytes()


def test_records_from_other_settings_are_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "knowledge.json"
    assert explore(data, out) == 0
    capsys.readouterr()
    assert explore(data, out, "--seed", "5") == 1
    assert "other settings" in capsys.readouterr().err


def test_only_group_a_may_be_explored(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main_explore([str(data), "-o", str(tmp_path / "k.json"), "--combinations", "motion_blur+jpeg", "--no-progress"])
    assert rc == 2
    assert "only group A is explored" in capsys.readouterr().err


def test_missing_data_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_explore([str(tmp_path / "nope"), "-o", str(tmp_path / "k.json"), "--no-progress"]) == 1
    assert "not found" in capsys.readouterr().err


def test_the_training_split_never_includes_held_out_images(tmp_path: Path) -> None:
    root = tmp_path / "clean"
    for sub, n in (("CBSD68", 6), ("McMaster", 2), ("Set5", 1)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            shutil.copy(EXAMPLES / "coffee.png", root / sub / f"{sub}_{i}.png")
    images, how = training_images(root)
    names = {p.name for p in images}
    assert {"CBSD68_0.png", "CBSD68_1.png", "CBSD68_2.png"} <= names
    assert not {"CBSD68_3.png", "CBSD68_4.png", "CBSD68_5.png"} & names
    assert "training split" in how
    jobs = build_jobs(images, root, per_combo=3, seed=0)
    assert len(jobs) == 8 * 3 and all(j["source"].split("/")[-1] in names for j in jobs)


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "clean"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "CBSD68").is_dir(), reason="needs ../shared/data/clean (the training images)")
def test_the_documented_command_reproduces_the_shipped_knowledge(tmp_path: Path) -> None:
    """`agentir explore ../shared/data/clean -o knowledge.json --per-combo 8` (about 6-15 minutes on 2 cores)."""
    from agentir.agent_policies.knowledge import DEFAULT_KNOWLEDGE

    out = tmp_path / "knowledge.json"
    assert main_explore([str(SHARED), "-o", str(out), "--per-combo", "8", "--workers", "2", "--no-progress"]) == 0
    assert out.read_bytes() == DEFAULT_KNOWLEDGE.read_bytes()


def test_the_reflection_replay_script_cross_validates_on_records(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/reflection_on_exploration.py replays rules and orders on real records (2 folds)."""
    import importlib.util
    import re

    out = tmp_path / "k" / "knowledge.json"
    assert explore(data, out, "--per-combo", "2") == 0
    path = Path(__file__).resolve().parents[2] / "scripts" / "reflection_on_exploration.py"
    spec = importlib.util.spec_from_file_location("reflection_on_exploration", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    capsys.readouterr()
    assert script.main([str(out.with_name("knowledge.json.records.jsonl"))]) == 0
    text = capsys.readouterr().out
    assert "2 explored images, 2-fold cross-validated knowledge" in text
    db = {m[0].strip(): float(m[1]) for m in re.findall(r"^\s+(?:reflection|order) (.+?)\s+mean PSNR ([\d.]+) dB", text, re.M)}
    assert set(db) >= {"first", "threshold", "first-success", "oracle", "knowledge", "fixed", "best order", "worst order"}
    assert db["best order"] >= db["knowledge"] >= db["worst order"]
    assert db["best order"] >= db["random (mean of orders)"] >= db["worst order"]
    assert script.main([]) == 2


def test_a_fresh_process_registers_every_tool_before_exploring(data: Path, tmp_path: Path) -> None:
    """`agentir explore` run in its own process (no test module imported the tools first) explores with every tool."""
    import json
    import subprocess
    import sys

    out = tmp_path / "k.json"
    cmd = [
        sys.executable,
        "-m",
        "agentir",
        "explore",
        str(data),
        "-o",
        str(out),
        "--per-combo",
        "1",
        "--workers",
        "1",
        "--combinations",
        "rain+haze",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    knowledge = json.loads(out.read_text())
    assert knowledge["config"]["tools"]["rain"] and knowledge["config"]["tools"]["haze"], proc.stderr
    assert " 0 tool calls" not in proc.stderr
