"""Tests for the built-in analytic perception policy (procedural images only)."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from agentir.agent_policies.perception import AnalyticPerception, CalibrationError, Perception, PerceptionPolicy
from agentir.agent_policies.perception.calibrate import label_from_params
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS, level_index


@pytest.fixture(scope="module")
def policy() -> AnalyticPerception:
    return AnalyticPerception()


def scene(seed: int = 0, size: tuple[int, int] = (320, 480)) -> np.ndarray:
    """A natural-looking procedural RGB image: 1/f colour texture plus sharp-edged shapes."""
    rng = np.random.default_rng(seed)
    h, w = size
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w)) ** 1.1
    chans = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((h, w)))
        f = np.real(np.fft.ifft2(spec))
        chans.append((f - f.mean()) / (f.std() + 1e-9))
    mix = rng.normal(0.0, 0.4, (3, 3)) + np.eye(3)
    img = np.stack(chans, -1) @ mix.T * 30.0 + rng.uniform(90, 150, 3)
    img = np.ascontiguousarray(img)
    for _ in range(25):
        colour = tuple(float(c) for c in rng.uniform(20, 235, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(8, w // 5)), int(rng.integers(8, h // 5)))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            pts = rng.integers(0, [w, h], (4, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def add_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noisy = img + np.random.default_rng(seed).normal(0.0, sigma, img.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def at_least(level: str, floor: str) -> bool:
    return level_index(level) >= level_index(floor)


def test_policy_implements_protocol(policy: AnalyticPerception) -> None:
    """AnalyticPerception satisfies the PerceptionPolicy protocol and is named "analytic"."""
    assert isinstance(policy, PerceptionPolicy)
    assert policy.name == "analytic"


@pytest.mark.parametrize("shape", [(1, 1), (8, 8), (1, 64), (64, 1), (3, 17), (13, 300), (81, 121), (600, 900)])
def test_any_size_gives_all_levels_and_scores(policy: AnalyticPerception, shape: tuple[int, int]) -> None:
    """Images of any size, 1-pixel edges included, yield a level and a finite 0..4 score for all eight degradations."""
    img = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    (p,) = policy.perceive([img])
    assert isinstance(p, Perception)
    assert list(p.levels) == list(DEGRADATIONS) and list(p.scores) == list(DEGRADATIONS)
    assert all(lv in LEVELS for lv in p.levels.values())
    assert all(np.isfinite(s) and 0.0 <= s <= 4.0 for s in p.scores.values())


def test_batched_equals_one_by_one(policy: AnalyticPerception) -> None:
    """Perceiving a batch gives exactly the per-image results, in order."""
    imgs = [scene(1), add_noise(scene(2, (200, 260)), 30), jpeg(scene(3, (128, 96)), 10)]
    assert policy.perceive(imgs) == [policy.perceive([im])[0] for im in imgs]
    assert policy.perceive([]) == []


def test_rate_matches_perceive(policy: AnalyticPerception) -> None:
    """rate() returns the same level and score perceive() gives for that degradation."""
    imgs = [add_noise(scene(4), 25), scene(5, (100, 150))]
    full = policy.perceive(imgs)
    for deg in DEGRADATIONS:
        assert policy.rate(imgs, deg) == [(p.levels[deg], p.scores[deg]) for p in full]


def test_scores_are_monotone_with_levels(policy: AnalyticPerception) -> None:
    """Across many images a higher level never comes with a lower score for the same degradation."""
    imgs = [scene(s) for s in range(3)]
    imgs += [add_noise(imgs[0], s) for s in (5, 15, 30, 50)] + [jpeg(imgs[1], q) for q in (10, 30)]
    imgs += [(imgs[2] * f).astype(np.uint8) for f in (0.3, 0.6)]
    ps = policy.perceive(imgs)
    for deg in DEGRADATIONS:
        pairs = sorted((level_index(p.levels[deg]), p.scores[deg]) for p in ps)
        by_level: dict[int, list[float]] = {}
        for lv, s in pairs:
            by_level.setdefault(lv, []).append(s)
        ordered = sorted(by_level)
        for lo, hi in itertools.pairwise(ordered):
            assert max(by_level[lo]) <= min(by_level[hi]) + 1e-6, deg


def test_clean_scenes_read_mostly_very_low(policy: AnalyticPerception) -> None:
    """Clean procedural scenes read at most one degradation as present, and mostly very_low/low."""
    for seed in range(4):
        (p,) = policy.perceive([scene(seed)])
        present = [d for d, lv in p.levels.items() if at_least(lv, "medium")]
        assert len(present) <= 1, (seed, p.levels)
        assert p.levels["noise"] in ("very_low", "low") and p.levels["jpeg"] in ("very_low", "low"), p.levels


def test_strong_noise_reads_noise(policy: AnalyticPerception) -> None:
    """Gaussian colour noise of sigma 35 reads noise at medium or worse and not as rain."""
    for seed in range(3):
        (p,) = policy.perceive([add_noise(scene(seed), 35, seed)])
        assert at_least(p.levels["noise"], "medium"), p.levels
        assert not at_least(p.levels["rain"], "medium"), p.levels


def test_noise_score_grows_with_sigma(policy: AnalyticPerception) -> None:
    """The noise score increases with the noise sigma."""
    img = scene(7)
    scores = [s for _, s in policy.rate([add_noise(img, sg) for sg in (0, 8, 20, 35, 50)], "noise")]
    assert all(a < b for a, b in itertools.pairwise(scores)), scores


def test_dark_image_reads_dark(policy: AnalyticPerception) -> None:
    """An image scaled down to a quarter of its brightness reads dark at medium or worse."""
    dark = (scene(8).astype(np.float64) * 0.35).round().astype(np.uint8)
    ((level, _),) = policy.rate([dark], "dark")
    assert at_least(level, "medium")
    ((level, _),) = policy.rate([scene(8)], "dark")
    assert not at_least(level, "medium")


def test_jpeg_q10_reads_jpeg(policy: AnalyticPerception) -> None:
    """JPEG at quality 10 reads jpeg at medium or worse; it is not taken for noise."""
    for seed in range(3):
        (p,) = policy.perceive([jpeg(scene(seed), 10)])
        assert at_least(p.levels["jpeg"], "medium"), p.levels
        assert not at_least(p.levels["noise"], "medium"), p.levels


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((16, 16, 3), np.float32),
        np.zeros((16, 16), np.uint8),
        np.zeros((16, 16, 4), np.uint8),
        np.zeros((0, 16, 3), np.uint8),
        [[0, 0, 0]],
    ],
    ids=["float", "gray", "rgba", "empty", "list"],
)
def test_bad_images_raise_value_error(policy: AnalyticPerception, bad: object) -> None:
    """Anything but a non-empty uint8 H x W x 3 array is refused with ValueError, in perceive and rate."""
    with pytest.raises(ValueError):
        policy.perceive([bad])  # type: ignore[list-item]  # deliberate: bad images, to test the ValueError
    with pytest.raises(ValueError):
        policy.rate([bad], "noise")  # type: ignore[list-item]  # deliberate: bad images, to test the ValueError


def test_single_array_instead_of_sequence_is_refused(policy: AnalyticPerception) -> None:
    """Passing one image array instead of a list of images raises ValueError telling how to wrap it."""
    with pytest.raises(ValueError, match="wrap"):
        policy.perceive(scene(0, (64, 64)))  # type: ignore[arg-type]  # deliberate: one array, not a list, to test the ValueError


def test_unknown_degradation_is_refused(policy: AnalyticPerception) -> None:
    """rate() with a misspelt degradation raises ValueError suggesting the right name."""
    with pytest.raises(ValueError, match="noise"):
        policy.rate([scene(0, (64, 64))], "noize")


def test_missing_or_broken_calibration_is_reported(tmp_path) -> None:
    """A missing or incomplete calibration file raises CalibrationError naming the file."""
    with pytest.raises(CalibrationError, match="not found"):
        AnalyticPerception(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"models": {"noise": {}}}))
    with pytest.raises(CalibrationError, match="no model for"):
        AnalyticPerception(broken)


def test_labels_from_test_set_parameters() -> None:
    """Test-set parameters map to the nearest severity level (e.g. Gaussian sigma 37 -> high)."""
    assert label_from_params({"name": "noise", "kind": "gaussian", "sigma": 37.0}) == 3
    assert label_from_params({"name": "noise", "kind": "poisson", "scale": 1.0}) == 2
    assert label_from_params({"name": "jpeg", "quality": 10}) == 4
    assert label_from_params({"name": "dark", "variant": "linear", "max": 120}) == 4
    assert label_from_params({"name": "motion_blur", "radius": 10, "sigma": 3.0}) == 2
    assert label_from_params({"name": "rain", "applied": False}) == 0


# --------------------------------------------------------------------------------------------
# motion features and the safetensors model files
# --------------------------------------------------------------------------------------------


EDGE_IMAGES = {
    "1x1": np.full((1, 1, 3), 77, np.uint8),
    "8x8-random": np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8),
    "8x8-black": np.zeros((8, 8, 3), np.uint8),
    "constant-white": np.full((64, 96, 3), 255, np.uint8),
    "1x700": np.random.default_rng(3).integers(0, 256, (1, 700, 3), dtype=np.uint8),
    "700x2": np.random.default_rng(4).integers(0, 256, (700, 2, 3), dtype=np.uint8),
    "3x1000-constant": np.full((3, 1000, 3), 9, np.uint8),
    "checkerboard": (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2),
}


@pytest.mark.parametrize("name", list(EDGE_IMAGES))
def test_motion_features_are_finite_on_edge_images(name: str) -> None:
    """The motion group's raw values (before compute_features' non-finite guard) are finite on tiny, constant and extreme-aspect images."""
    from agentir.agent_policies.perception.features import _GROUP_FUNCS, _Prepared, compute_features, feature_names

    img = EDGE_IMAGES[name]
    raw = _GROUP_FUNCS["motion"](_Prepared(img))
    assert list(raw) == feature_names(("motion",)) and len(raw) == 16
    assert all(isinstance(v, float) and np.isfinite(v) for v in raw.values()), raw
    full = compute_features(img)
    assert all(np.isfinite(v) for v in full.values())


def test_motion_features_see_a_downscaled_line_blur() -> None:
    """A 15 px one-sided motion blur followed by an x4 downscale leaves a directional Laplacian
    correlation (max minus orthogonal, scale 1) well above that of the same image downscaled sharp."""
    from agentir.agent_policies.perception.features import compute_features
    from agentir.toolbox.degrade import apply_params, bicubic_resize

    for seed, angle in ((0, 0.0), (1, 60.0), (2, -35.0)):
        img = scene(seed, (320, 480))
        blurred = apply_params(img, {"name": "motion_blur", "radius": 15, "sigma": 5.0, "angle": angle})
        small_sharp = bicubic_resize(img, 0.25)
        small_blur = bicubic_resize(blurred, 0.25)
        f_sharp = compute_features(small_sharp, ("motion",))
        f_blur = compute_features(small_blur, ("motion",))
        assert f_blur["motion.ac1_max_minus_orth"] > f_sharp["motion.ac1_max_minus_orth"] + 0.1, (angle, f_sharp, f_blur)


def test_shipped_model_is_small_safetensors_with_metadata_json() -> None:
    """The shipped heads are a safetensors file under 1 MB; the JSON holds metadata only (no weight arrays) and names the file and its hash."""
    from agentir.agent_policies.perception.analytic import DEFAULT_CALIBRATION, DEFAULT_WEIGHTS, WEIGHTS_NAME

    assert DEFAULT_WEIGHTS.name == WEIGHTS_NAME and DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    doc = json.loads(DEFAULT_CALIBRATION.read_text())
    assert doc["weights"]["file"] == WEIGHTS_NAME and len(doc["weights"]["sha256"]) == 64
    assert DEFAULT_CALIBRATION.stat().st_size < 64_000
    for m in doc["models"].values():
        assert set(m) == {"groups", "features", "ks", "hidden", "presence_offset"}
    assert "agentir train perception" in doc["command"]


def _tiny_models(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    models = {}
    for d in DEGRADATIONS:
        feats = ["size.log_long", "size.log_short", "lum.v_mean"]
        ks = [2] if d == "low_resolution" else [1, 2, 3, 4]
        models[d] = {
            "groups": ["size", "lum"],
            "features": feats,
            "ks": ks,
            "hidden": 4,
            "presence_offset": 0.5,
            "_mean": rng.normal(size=3),
            "_std": rng.uniform(0.5, 2.0, 3),
            "_heads": [(rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=4), float(rng.normal())) for _ in ks],
        }
    return models


def test_calibration_round_trip(tmp_path) -> None:
    """write_calibration + load_calibration give back the same arrays and metadata; a policy loads the pair."""
    from agentir.agent_policies.perception.analytic import load_calibration, write_calibration

    models = _tiny_models()
    js, st = tmp_path / "c.json", tmp_path / "c.safetensors"
    write_calibration(js, st, {"seed": 5, "command": "agentir train perception --seed 5"}, models)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]  # no temp files left
    payload, back = load_calibration(js)
    assert payload["seed"] == 5 and payload["weights"]["file"] == "c.safetensors"
    for d in DEGRADATIONS:
        a, b = models[d], back[d]
        assert (a["features"], a["ks"], a["hidden"], a["groups"]) == (b["features"], b["ks"], b["hidden"], b["groups"])
        assert np.array_equal(a["_mean"], b["_mean"]) and np.array_equal(a["_std"], b["_std"])
        for ha, hb in zip(a["_heads"], b["_heads"]):
            assert all(np.array_equal(x, y) for x, y in zip(ha[:3], hb[:3])) and ha[3] == hb[3]
    (p,) = AnalyticPerception(js).perceive([scene(0, (64, 64))])
    assert set(p.levels) == set(DEGRADATIONS)


def test_shipped_pair_copied_elsewhere_gives_the_same_answers(policy: AnalyticPerception, tmp_path) -> None:
    """The JSON finds its weights file next to itself, wherever the pair is copied."""
    import shutil

    from agentir.agent_policies.perception.analytic import DEFAULT_CALIBRATION, DEFAULT_WEIGHTS

    shutil.copy(DEFAULT_CALIBRATION, tmp_path / DEFAULT_CALIBRATION.name)
    shutil.copy(DEFAULT_WEIGHTS, tmp_path / DEFAULT_WEIGHTS.name)
    imgs = [scene(3, (96, 128)), jpeg(scene(4, (96, 128)), 15)]
    assert AnalyticPerception(tmp_path / DEFAULT_CALIBRATION.name).perceive(imgs) == policy.perceive(imgs)


def test_missing_weights_file_names_it_and_the_command(tmp_path) -> None:
    """A JSON whose safetensors file is gone raises CalibrationError naming that file and `agentir train perception`."""
    from agentir.agent_policies.perception.analytic import write_calibration

    js, st = tmp_path / "c.json", tmp_path / "heads.safetensors"
    write_calibration(js, st, {}, _tiny_models())
    st.unlink()
    with pytest.raises(CalibrationError, match="agentir train perception") as info:
        AnalyticPerception(js)
    assert info.value.path == st and "heads.safetensors" in str(info.value) and "not found" in str(info.value)
    with pytest.raises(CalibrationError, match="agentir train perception"):
        AnalyticPerception(tmp_path / "absent.json")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other-training"])
def test_corrupt_weights_file_is_reported(tmp_path, damage: str) -> None:
    """Garbage, a truncated file or a valid file from another training raise CalibrationError naming the weights file."""
    from agentir.agent_policies.perception.analytic import write_calibration

    js, st = tmp_path / "c.json", tmp_path / "c.safetensors"
    write_calibration(js, st, {}, _tiny_models())
    if damage == "garbage":
        st.write_bytes(b"\x00not safetensors at all" * 10)
        match = "not a readable safetensors"
    elif damage == "truncated":
        st.write_bytes(st.read_bytes()[:-40])
        match = "not a readable safetensors"
    else:
        write_calibration(tmp_path / "other.json", st, {}, _tiny_models(seed=1))
        match = "SHA-256"
    with pytest.raises(CalibrationError, match=match) as info:
        AnalyticPerception(js)
    assert info.value.path == st and "agentir train perception" in str(info.value)


def test_old_json_with_inline_weights_is_refused(tmp_path) -> None:
    """A version-1 JSON (weights inline, no weights file) is refused with the retrain command."""
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"version": 1, "models": {d: {"features": [], "mean": [], "std": [], "heads": []} for d in DEGRADATIONS}}))
    with pytest.raises(CalibrationError, match=r"weights.*agentir train perception"):
        AnalyticPerception(old)


def test_written_files_are_world_readable(tmp_path) -> None:
    """The atomic writer leaves ordinary file modes (not mkstemp's 0600), so shipped files stay readable."""
    import os
    import stat

    from agentir.agent_policies.perception.analytic import write_calibration

    old = os.umask(0o022)
    try:
        write_calibration(tmp_path / "c.json", tmp_path / "c.safetensors", {}, _tiny_models())
    finally:
        os.umask(old)
    for name in ("c.json", "c.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def test_feature_cache_missing_groups() -> None:
    """A feature cache written before a group existed is recognised as lacking exactly that group."""
    from agentir.agent_policies.perception.calibrate import missing_groups
    from agentir.agent_policies.perception.features import GROUPS, compute_features

    img = scene(0, (64, 64))
    full = {"fit": [{"features": compute_features(img)}]}
    assert missing_groups(full) == []
    old = {"fit": [{"features": compute_features(img, [g for g in GROUPS if g != "motion"])}]}
    assert missing_groups(old) == ["motion"]


def test_model_needing_unknown_features_is_refused(tmp_path) -> None:
    """A model that reads a feature this code does not compute (a model from another version) is refused at load time."""
    from agentir.agent_policies.perception.analytic import write_calibration

    models = _tiny_models()
    models["rain"]["features"] = ["size.log_long", "size.log_short", "lum.no_such_feature"]
    write_calibration(tmp_path / "c.json", tmp_path / "c.safetensors", {}, models)
    with pytest.raises(CalibrationError, match=r"lum\.no_such_feature.*agentir train perception"):
        AnalyticPerception(tmp_path / "c.json")
