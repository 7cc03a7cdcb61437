"""The step judge: its measurements, its files (and their errors), the veto, and a real job with it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from agentir.agent_policies.reflection import ACCEPT, CONTINUE, FAILURE, SUCCESS, JudgeReflection
from agentir.agent_policies.reflection.judge import DEFAULT_JUDGE, JUDGE_WEIGHTS, JudgeError, change_features, descriptors, load_judge
from agentir.bus.blobs import BlobRef
from agentir.bus.messages import Candidate

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"


def _img(name: str = "astronaut.png") -> np.ndarray:
    from agentir.datasets import read_rgb

    return read_rgb(CLEAN / name)


def test_descriptors_see_noise_blocks_and_darkness() -> None:
    """Each measurement moves the way its degradation moves it."""
    import cv2

    clean = _img()
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", clean[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 10])
    assert ok
    blocky = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    dark = (clean * 0.3).astype(np.uint8)
    d = descriptors(clean)
    assert descriptors(noisy)["noise_sigma"] > 3 * d["noise_sigma"]
    assert descriptors(blocky)["blockiness"] > d["blockiness"] + 0.1
    assert descriptors(dark)["lum"] < 0.5 * d["lum"]
    same = change_features(clean, clean)
    assert same["psnr_y_vs_x"] == 60.0 and same["abs_change"] == 0.0
    up = change_features(clean[::4, ::4], np.repeat(np.repeat(clean[::4, ::4], 4, 0), 4, 1))  # a x4 output is compared at its size
    assert up["psnr_y_vs_x"] > 20


def _cand(tool: str, gain: float | None, level: str = "low") -> Candidate:
    return Candidate(tool=tool, image=BlobRef(sha256="0" * 64, shape=(4, 4, 3), dtype="uint8"), level=level, score=1.0, gain=gain)


def test_veto_never_takes_an_output_predicted_to_hurt() -> None:
    judge = JudgeReflection()
    assert judge.min_db == -2.0
    # First-success as usual when the judge sees no harm.
    assert judge.judge("noise", [_cand("a", 0.5)], remaining=2) == (ACCEPT, 0)
    # An output re-perceived as fine but predicted to lose 5 dB is not accepted; the next one is.
    assert judge.judge("haze", [_cand("a", -5.0), _cand("b", 0.2)], remaining=0) == (ACCEPT, 1)
    assert judge.judge("haze", [_cand("a", -5.0)], remaining=1)[0] == CONTINUE
    # Every output vetoed: failure with no output, so nothing harmful is kept.
    assert judge.judge("haze", [_cand("a", -5.0), _cand("b", -3.0, "high")], remaining=0) == (FAILURE, -1)
    # Not vetoed but not good enough either: the usual failure with its best output.
    verdict, best = judge.judge("haze", [_cand("a", -1.0, "high")], remaining=0)
    assert verdict == FAILURE and best == 0
    assert judge.judge("haze", [_cand("a", 1.0, "medium"), _cand("b", 1.0, "low")], remaining=0)[0] in (ACCEPT, SUCCESS)


def test_shipped_judge_loads_and_says_how_it_was_made() -> None:
    model = load_judge()
    assert model.meta["command"].startswith("agentir train judge")
    cv = model.meta["cross_validation"]
    assert cv["absent"]["steps"] > 100 and cv["present"]["steps"] > 100
    # What the veto is for, as measured when it was fitted: it saves far more on harm than it costs on real steps.
    assert cv["absent"]["veto_db"] > cv["absent"]["rule_db"]
    x = _img()
    assert np.isfinite(model.predict_step("haze", "dcp_dehaze", x, x))


@pytest.mark.parametrize("damage", ["missing_json", "bad_json", "version", "missing_weights", "sha", "not_safetensors"])
def test_bad_judge_files_name_the_file_and_the_rebuild_command(tmp_path: Path, damage: str) -> None:
    meta = tmp_path / "judge.json"
    shutil.copy(DEFAULT_JUDGE, meta)
    shutil.copy(DEFAULT_JUDGE.with_name(JUDGE_WEIGHTS), tmp_path / JUDGE_WEIGHTS)
    doc = json.loads(meta.read_text())
    if damage == "missing_json":
        meta.unlink()
    elif damage == "bad_json":
        meta.write_text("{not json")
    elif damage == "version":
        meta.write_text(json.dumps({**doc, "version": 99}))
    elif damage == "missing_weights":
        (tmp_path / JUDGE_WEIGHTS).unlink()
    elif damage == "sha":
        (tmp_path / JUDGE_WEIGHTS).write_bytes((tmp_path / JUDGE_WEIGHTS).read_bytes()[:-8] + b"\0" * 8)
    else:
        junk = b"not a safetensors file"
        (tmp_path / JUDGE_WEIGHTS).write_bytes(junk)
        meta.write_text(json.dumps({**doc, "weights": {"file": JUDGE_WEIGHTS, "sha256": hashlib.sha256(junk).hexdigest()}}))
    with pytest.raises(JudgeError, match=r"rebuild it with `agentir train judge`") as info:
        load_judge(meta)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


async def test_a_job_with_the_judge_records_predicted_gains_and_keeps_nothing_vetoed() -> None:
    """Through the real actors: every judged output carries its predicted gain in the trace, and no
    output predicted below the veto is ever what the job returns."""
    from agentir.pipeline import Restorer
    from agentir.toolbox.degrade import apply_params

    clean = _img("coffee.png")
    noisy = apply_params(clean, {"name": "noise", "kind": "gaussian", "sigma": 25.0, "field_seed": 3})
    async with Restorer(options={"reflection": "judge"}) as restorer:
        for image in (noisy, clean):
            result = await restorer.restore(image)
            steps = result.trace["steps"]
            assert result.trace["reflection"] == "judge"
            assert all("gain_db" in s for s in steps if "error" not in s)
            accepted = [s for s in steps if s.get("verdict") == "accepted"]
            assert all(s["gain_db"] >= -2.0 for s in accepted)
