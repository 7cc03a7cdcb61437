"""Settings: the AGENTIR_* variables read once at an entry point, each into its field, bad values named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import numpy as np
import pytest

from agentir.agent_policies.knowledge import distil
from agentir.agent_policies.settings import ChatSettings, PolicySettings
from agentir.imageio import load_image
from agentir.pipeline import Restorer
from agentir.settings import Settings, SettingsError
from agentir.toolbox.degrade import degrade

DATA = Path(__file__).resolve().parents[1] / "data" / "clean"


def agentir(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m agentir ARGS`` with the test's AGENTIR_* variables only (none inherited)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIR_")}
    return subprocess.run([sys.executable, "-m", "agentir", *args], env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=300)


def knowledge_file(path: Path, command: str) -> Path:
    """A small valid knowledge file (distilled from no records) whose config names ``command``."""
    path.write_text(json.dumps(distil([], {"command": command})))
    return path


# ----------------------------------------------------------------------------- from_env
def test_an_empty_environment_gives_the_defaults():
    """Settings.from_env({}) has no knowledge override, no experience state, learning off, no endpoints, warning, no token, no plug-ins."""
    s = Settings.from_env({})
    assert s.policies.knowledge is None and s.policies.experience_state is None and s.policies.experience_learn is False
    assert s.policies.llm == ChatSettings() and s.policies.vlm == ChatSettings()
    assert s.policies.llm.url == "" and s.policies.vlm.url == ""
    assert s.log_level == "warning" and s.token is None and s.plugins == () and s.clean_root is None
    assert s == Settings() and s.policies == PolicySettings()


def test_every_variable_lands_in_its_field(tmp_path):
    """Each AGENTIR_* variable sets its own field (plug-ins split on os.pathsep with blanks ignored, the log level lower-cased)."""
    sep = os.pathsep
    env = {
        "AGENTIR_KNOWLEDGE": str(tmp_path / "k.json"),
        "AGENTIR_EXPERIENCE_STATE": str(tmp_path / "exp.json"),
        "AGENTIR_LLM_URL": "http://127.0.0.1:9/v1",
        "AGENTIR_LLM_MODEL": "planner-7b",
        "AGENTIR_LLM_KEY": "llm-secret",
        "AGENTIR_LLM_TIMEOUT": "2.5",
        "AGENTIR_VLM_URL": "http://127.0.0.1:8/v1",
        "AGENTIR_VLM_MODEL": "eyes-3b",
        "AGENTIR_VLM_KEY": "vlm-secret",
        "AGENTIR_VLM_MODE": "json",
        "AGENTIR_VLM_TIMEOUT": "7",
        "AGENTIR_PLUGINS": f"{tmp_path / 'a.toml'}{sep}{sep}  {sep}{tmp_path / 'b.toml'}{sep}",
        "AGENTIR_LOG_LEVEL": "INFO",
        "AGENTIR_TOKEN": "s3cret",
        "AGENTIR_CLEAN_ROOT": str(tmp_path / "clean"),
    }
    s = Settings.from_env(env)
    p = s.policies
    assert p.knowledge == tmp_path / "k.json"
    assert p.experience_state == tmp_path / "exp.json" and p.experience_learn is True
    assert p.llm == ChatSettings(url="http://127.0.0.1:9/v1", model="planner-7b", key="llm-secret", timeout=2.5)
    assert p.vlm == ChatSettings(url="http://127.0.0.1:8/v1", model="eyes-3b", key="vlm-secret", timeout=7.0, mode="json")
    assert s.plugins == (tmp_path / "a.toml", tmp_path / "b.toml")
    assert s.log_level == "info" and s.token == "s3cret" and s.clean_root == tmp_path / "clean"


@pytest.mark.parametrize("freeze", ["1", "true", "YES", "on"])
def test_freezing_keeps_the_state_and_turns_learning_off(tmp_path, freeze):
    """AGENTIR_EXPERIENCE_FREEZE=1 (or true/yes/on) keeps the experience state but turns learning off."""
    s = Settings.from_env({"AGENTIR_EXPERIENCE_STATE": str(tmp_path / "exp.json"), "AGENTIR_EXPERIENCE_FREEZE": freeze})
    assert s.policies.experience_state == tmp_path / "exp.json" and s.policies.experience_learn is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AGENTIR_LLM_TIMEOUT", "soon"),
        ("AGENTIR_LLM_TIMEOUT", "0"),
        ("AGENTIR_LLM_TIMEOUT", "nan"),
        ("AGENTIR_VLM_TIMEOUT", "-1"),
        ("AGENTIR_LOG_LEVEL", "loud"),
        ("AGENTIR_EXPERIENCE_FREEZE", "maybe"),
    ],
)
def test_a_bad_value_raises_settings_error_naming_the_variable(name, value):
    """A variable with an unusable value raises SettingsError whose name and message name that variable."""
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert err.value.name == name and name in str(err.value) and "\n" not in str(err.value)


def test_the_token_and_keys_never_appear_in_the_repr():
    """repr(settings) shows neither the bearer token nor the LLM and VLM keys."""
    s = Settings.from_env({"AGENTIR_TOKEN": "tok-123456", "AGENTIR_LLM_KEY": "llm-abcdef", "AGENTIR_VLM_KEY": "vlm-ghijkl", "AGENTIR_LLM_URL": "http://x"})
    text = repr(s)
    assert "http://x" in text  # the repr is a real one
    assert all(secret not in text for secret in ("tok-123456", "llm-abcdef", "vlm-ghijkl")), text


def test_with_experience_keeps_the_path_and_can_turn_learning_off(tmp_path):
    """with_experience(path, learn=False) keeps the path and turns learning off; learn=True turns it on; the original is unchanged."""
    s = Settings.from_env({"AGENTIR_EXPERIENCE_STATE": str(tmp_path / "old.json"), "AGENTIR_TOKEN": "t"})
    frozen = s.with_experience(tmp_path / "exp.json", learn=False)
    assert frozen.policies.experience_state == tmp_path / "exp.json" and frozen.policies.experience_learn is False
    learning = Settings().with_experience(tmp_path / "exp.json", learn=True)
    assert learning.policies.experience_learn is True
    assert Settings().with_experience(None, learn=True).policies.experience_learn is False  # nowhere to keep what it learns
    assert frozen.token == "t" and s.policies.experience_state == tmp_path / "old.json" and s.policies.experience_learn is True


# ----------------------------------------------------------------------------- the CLI's entry point
def test_the_cli_reads_the_knowledge_variable_and_names_a_missing_file(tmp_path):
    """`agentir knowledge` with AGENTIR_KNOWLEDGE at a missing file exits 1 with one line naming the file."""
    missing = tmp_path / "no-such-knowledge.json"
    proc = agentir("knowledge", env={"AGENTIR_KNOWLEDGE": str(missing)}, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in proc.stderr
    good = knowledge_file(tmp_path / "k.json", "from-the-environment")
    proc = agentir("knowledge", env={"AGENTIR_KNOWLEDGE": str(good)}, cwd=tmp_path)
    assert proc.returncode == 0 and str(good) in proc.stdout and "from-the-environment" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args", [("tools",), ("knowledge",), ("--log-level", "info", "tools")], ids=" ".join)
def test_a_bad_log_level_variable_stops_any_command_with_one_line(tmp_path, args):
    """AGENTIR_LOG_LEVEL=loud makes any command exit 2 with one line naming the variable, no traceback."""
    proc = agentir(*args, env={"AGENTIR_LOG_LEVEL": "loud"}, cwd=tmp_path)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "AGENTIR_LOG_LEVEL" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# ----------------------------------------------------------------------------- Restorers
def test_two_restorers_with_different_settings_do_not_share_planners(tmp_path):
    """Two Restorers built from different AGENTIR_KNOWLEDGE settings in one process each plan from their own knowledge."""
    k1 = knowledge_file(tmp_path / "k1.json", "one")
    k2 = knowledge_file(tmp_path / "k2.json", "two")
    r1 = Restorer(settings=Settings.from_env({"AGENTIR_KNOWLEDGE": str(k1)}))
    r2 = Restorer(settings=Settings.from_env({"AGENTIR_KNOWLEDGE": str(k2)}))
    p1, p2 = r1.policies.planning("experience"), r2.policies.planning("experience")
    assert p1 is not p2
    assert p1.info()["knowledge"] == str(k1) and p2.info()["knowledge"] == str(k2)
    assert Restorer(settings=Settings()).policies.planning("experience").info()["knowledge"] not in (str(k1), str(k2))


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    """A 128x128 test photograph from tests/data/clean with strong noise."""
    lq, _ = degrade(load_image(DATA / "coffee.png"), "noise", np.random.default_rng(5), level="high")
    return lq


@pytest.mark.parametrize("learn", [True, False])
async def test_a_learning_restorer_writes_its_state_on_exit_and_a_frozen_one_never(tmp_path, noisy, learn):
    """A Restorer whose settings keep experience in tmp/exp.json writes it on exit when learning, never when frozen."""
    state = tmp_path / "exp.json"
    settings = Settings().with_experience(state, learn=learn)
    with anyio.fail_after(240):
        async with Restorer(settings=settings) as restorer:
            result = await restorer.restore(noisy, options={"subtasks": ["noise"]})
            assert result.trace["planner"] == "experience" and result.trace["planner_info"]["learning"] is learn
            assert result.trace["steps"]  # at least one judged step to learn from
    if learn:
        saved = json.loads(state.read_text())
        assert any(k.startswith("tool|noise|") for k in saved["entries"]), saved
    else:
        assert not state.exists()
