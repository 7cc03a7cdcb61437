"""The command line: restore a folder with a corrupt file among good ones; perceive --json."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from agentir.imageio import load_image, save_png_atomic
from agentir.toolbox.degrade import degrade

DATA = Path(__file__).resolve().parents[2] / "examples" / "clean"
LEVEL_WORDS = {"very_low", "low", "medium", "high", "very_high"}


def agentir(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentir", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def make_batch(root: Path) -> Path:
    src = root / "in"
    (src / "sub").mkdir(parents=True)
    img = load_image(DATA / "astronaut.png")
    lq, _ = degrade(img, "noise", np.random.default_rng(1), level="high")
    save_png_atomic(src / "sub" / "noisy.png", lq)
    shutil.copy(DATA / "coffee.png", src / "clean.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a truncated PNG
    return src


def test_restore_batch_with_one_corrupt_file(tmp_path):
    """Good images are restored with traces, the corrupt one gets a one-line error, exit code is 1."""
    src = make_batch(tmp_path)
    out = tmp_path / "out"
    proc = agentir("restore", str(src), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    for rel in ("sub/noisy", "clean"):
        assert (out / f"{rel}.png").exists()
        trace = json.loads((out / f"{rel}.trace.json").read_text())
        for key in ("perception", "plan", "steps", "rollbacks", "tool_calls", "seconds"):
            assert key in trace
        assert isinstance(trace["tool_calls"], int)
        assert set(trace["perception"].values()) <= LEVEL_WORDS
    assert not (out / "broken.png").exists() and not (out / "broken.trace.json").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left behind
    assert "sub/noisy.png: found" in proc.stderr


def test_perceive_json_lines(tmp_path):
    """perceive --json prints one object per image with all eight degradations as level words."""
    src = make_batch(tmp_path)
    (src / "broken.png").unlink()
    proc = agentir("perceive", str(src), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 2
    for r in records:
        assert len(r["levels"]) == 8 and set(r["levels"].values()) <= LEVEL_WORDS
    noisy = next(r for r in records if r["path"].endswith("noisy.png"))
    assert noisy["levels"]["noise"] in ("medium", "high", "very_high")


def test_missing_input_and_unknown_policy_are_one_line_errors(tmp_path):
    """A missing path and a misspelt policy each give one clear line and a failing exit code."""
    proc = agentir("restore", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), cwd=tmp_path)
    assert proc.returncode == 1 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    src = make_batch(tmp_path)
    proc = agentir("restore", str(src / "clean.png"), "-o", str(tmp_path / "o"), "--policy", "rulez", cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean rules" in proc.stderr and "Traceback" not in proc.stderr
    proc = agentir("restore", str(src / "clean.png"), "-o", str(tmp_path / "o"), "--max-tool-cost", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--max-tool-cost: must be more than 0" in proc.stderr and "Traceback" not in proc.stderr


def test_training_a_tool_without_a_recipe_says_so(tmp_path):
    """`agentir train tool` on a classical tool (no training recipe) fails with the trainable names, not a stub result."""
    proc = agentir("train", "tool", "dct_denoise", cwd=tmp_path)
    assert proc.returncode == 2 and "no training recipe" in proc.stderr and "cnn_denoise" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_plugin_file_is_a_one_line_error(tmp_path):
    """restore --plugins with a broken TOML stops before any work with one line naming the file."""
    src = make_batch(tmp_path)
    bad = tmp_path / "plugins.toml"
    bad.write_text('[[tool]]\nname = "x"\ndegradation = "nosie"\n')
    proc = agentir("restore", str(src / "clean.png"), "-o", str(tmp_path / "o"), "--plugins", str(bad), cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "plugins.toml" in errors[0]
    assert not (tmp_path / "o" / "clean.png").exists()


def test_knowledge_prints_what_exploration_learned_and_rejects_a_bad_file(tmp_path):
    """`agentir knowledge` renders the shipped knowledge as prose; a corrupt file is one error line."""
    proc = agentir("knowledge", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Precedence strength" in proc.stdout and " before " in proc.stdout and "Tools for noise" in proc.stdout
    bad = tmp_path / "k.json"
    bad.write_text("{")
    proc = agentir("knowledge", str(bad), cwd=tmp_path)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
