"""Tests for `agentir bench perception` (accuracy tables on built benchmarks, held-out split) and `agentir train`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agentir.bench.perception import confusion_stats, main_bench_perception, presence_stats, true_levels
from agentir.datasets import build_benchmark
from agentir.toolbox.vocab import DEGRADATIONS, LEVELS
from agentir.train import main_train

CLEAN = Path(__file__).resolve().parents[1] / "data" / "clean"  # astronaut, chelsea, coffee, rocket (128 x 128)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A group-A benchmark and a two-level singles benchmark of the four test images, plus clean roots."""
    root = tmp_path_factory.mktemp("perc")
    mixed = root / "mixed"
    levels = root / "levels"
    build_benchmark(CLEAN, mixed, groups=["A"], per_combo=4, seed=3, progress=False)
    build_benchmark(CLEAN, levels, per_combo=4, seed=3, levels=["medium", "very_high"], progress=False)
    # A fit/held-out layout like the shipped calibration's: fit = McMaster + Set5 + first half of
    # CBSD68 -> coffee and astronaut are fit images, chelsea and rocket are held out.
    split = root / "clean_split"
    for sub in ("CBSD68", "McMaster", "Set5"):
        (split / sub).mkdir(parents=True)
    shutil.copy(CLEAN / "astronaut.png", split / "CBSD68" / "a.png")
    shutil.copy(CLEAN / "chelsea.png", split / "CBSD68" / "b.png")
    shutil.copy(CLEAN / "coffee.png", split / "McMaster" / "1.png")
    all_fit = root / "clean_all_fit"
    for sub in ("CBSD68", "McMaster", "Set5"):
        (all_fit / sub).mkdir(parents=True)
    for p in CLEAN.glob("*.png"):
        shutil.copy(p, all_fit / "McMaster" / p.name)
    return {"mixed": mixed, "levels": levels, "split": split, "all_fit": all_fit, "root": root}


def test_held_out_split_drops_fit_images_and_reports_all_tables(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Items made from fit images are dropped by content; presence, confusion and clean tables are printed and written."""
    out = tmp_path / "r.json"
    rc = main_bench_perception([str(data["mixed"]), str(data["levels"]), "--clean-root", str(data["split"]), "--out", str(out), "--no-speed", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(out.read_text())
    assert report["split"]["fit_items_found"] == (8 * 2) + (16 * 2)  # astronaut + coffee in both folders
    assert report["split"]["fit_sources"] == ["astronaut.png (= fit image CBSD68/a.png)", "coffee.png (= fit image McMaster/1.png)"]
    assert "dropped" in captured.err
    res = report["results"]
    assert res["mixed"]["n"] == 16 and res["singles"]["n"] == 32 and res["clean"]["n"] == 2
    for d in DEGRADATIONS:
        st = res["mixed"]["presence"][d]
        assert st["tp"] + st["fp"] + st["fn"] + st["tn"] == 16
        cm = res["singles"]["per_degradation"][d]["confusion"]
        assert len(cm) == 5 and all(len(row) == 5 for row in cm) and sum(map(sum, cm)) == 32
        assert res["singles"]["per_degradation"][d]["n_own"] == 4
    combos = res["mixed"]["combos"]
    assert sum(v["n"] for v in combos.values()) == 16 and "motion_blur+low_resolution" in combos
    assert set(combos["motion_blur+low_resolution"]["recall"]) <= {"motion_blur", "low_resolution"}
    assert "per combination" in captured.out
    assert report["model"]["calibration"].endswith("analytic_calibration.json") and len(report["model"]["weights_sha256"]) == 64
    assert "low_resolution" in captured.out and "confusion" in captured.out and "clean references" in captured.out
    assert "INCLUDES FIT IMAGES" not in captured.out


def test_split_all_keeps_and_flags_fit_images(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--split all scores the fit images too and flags the report."""
    out = tmp_path / "r.json"
    rc = main_bench_perception([str(data["mixed"]), "--split", "all", "--clean-root", str(data["split"]), "--out", str(out), "--no-speed", "-q"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["split"]["includes_fit_images"] and report["results"]["mixed"]["n"] == 32
    assert "INCLUDES FIT IMAGES" in capsys.readouterr().out


def test_only_fit_images_is_a_usage_error(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """When every item comes from a fit image nothing is scored and the exit code is 2 with advice."""
    rc = main_bench_perception([str(data["mixed"]), "--clean-root", str(data["all_fit"]), "--out", str(tmp_path / "r.json"), "--no-speed", "-q"])
    assert rc == 2
    assert "no held-out images left" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_unknown_fit_set_warns_and_counts_everything(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without the fit images' folders the split cannot be checked: a warning, and every image is held out."""
    out = tmp_path / "r.json"
    rc = main_bench_perception(
        [str(data["levels"]), "--clean-root", str(tmp_path / "nowhere"), "--out", str(out), "--no-speed", "-q", "--limit-per-combo", "1"]
    )
    assert rc == 0
    assert "cannot be checked" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert not report["split"]["checked"] and report["results"]["singles"]["n"] == 16 and "mixed" not in report["results"]


def test_missing_file_is_one_error_line(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing degraded file is one error line (exit 1) while the rest is scored."""
    bench = tmp_path / "mixed"
    shutil.copytree(data["mixed"], bench)
    manifest = json.loads((bench / "manifest.json").read_text())
    (bench / manifest["items"][0]["lq"]).unlink()
    out = tmp_path / "r.json"
    rc = main_bench_perception([str(bench), "--clean-root", str(tmp_path / "nowhere"), "--out", str(out), "--no-speed", "-q", "--limit-per-combo", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert sum(line.startswith("error:") for line in captured.err.splitlines()) == 1
    assert json.loads(out.read_text())["results"]["mixed"]["n"] == 7


@pytest.mark.slow
def test_speed_rows_cover_both_sizes(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The speed section times perceive and every rate at 512 x 512 and 1024 x 1024."""
    out = tmp_path / "r.json"
    rc = main_bench_perception(
        [str(data["mixed"]), "--clean-root", str(tmp_path / "nowhere"), "--out", str(out), "--repeats", "1", "-q", "--limit-per-combo", "1"]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report["speed"]) == {"512x512", "1024x1024"}
    assert set(report["speed"]["512x512"]["rate"]) == set(DEGRADATIONS)
    assert "perceive" in capsys.readouterr().out


def test_missing_benchmark_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder without manifest.json exits 2 and says how to build one."""
    assert main_bench_perception([str(tmp_path), "--no-speed"]) == 2
    assert "agentir degrade" in capsys.readouterr().err


def test_truth_from_drawn_parameters_matches_requested_levels(data: dict[str, Path]) -> None:
    """The truth of a levels-mode item is the level it was built at (low resolution: always high)."""
    manifest = json.loads((data["levels"] / "manifest.json").read_text())
    for it in manifest["items"]:
        truth = true_levels(it)
        d = it["combo"]
        assert truth[d] == (3 if d == "low_resolution" else LEVELS.index(it["level"]))
        assert all(v == 0 for k, v in truth.items() if k != d)


def test_presence_and_confusion_arithmetic() -> None:
    """Presence counts medium-or-worse only; the confusion matrix has true levels as rows."""
    st = presence_stats([0, 1, 2, 4, 3], [2, 0, 2, 1, 4])
    assert (st["tp"], st["fp"], st["fn"], st["tn"]) == (2, 1, 1, 1) and st["acc"] == pytest.approx(0.6)
    assert presence_stats([0, 0], [0, 1])["precision"] is None and presence_stats([0, 0], [0, 1])["recall"] is None
    cs = confusion_stats([0, 2, 3, 4], [1, 2, 4, 4], [False, True, True, True])
    assert cs["confusion"][3][4] == 1 and cs["confusion"][0][1] == 1
    assert cs["exact"] == pytest.approx(2 / 3) and cs["within_one"] == 1.0 and cs["exact_all"] == 0.5


def test_train_tool_with_an_unknown_name_lists_the_trainable_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """`agentir train tool NAME` for a name with no recipe exits 2 and lists what can be trained."""
    assert main_train(["tool", "swinir"]) == 2
    err = capsys.readouterr().err
    assert "swinir" in err and "cnn_sr" in err


def test_train_perception_forwards_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`agentir train perception` runs the calibration script with the given seed, cache and output."""
    from agentir.agent_policies.perception import calibrate

    seen: list[list[str]] = []
    monkeypatch.setattr(calibrate, "main", lambda argv: seen.append(list(argv)) or 0)
    cache = tmp_path / "feat.pkl"
    cache.write_bytes(b"")
    rc = main_train(["perception", "--out", str(tmp_path / "c.json"), "--seed", "7", "--cache", str(cache)])
    assert rc == 0
    argv = seen[0]
    assert argv[argv.index("--seed") + 1] == "7" and argv[argv.index("--cache") + 1] == str(cache)
    assert argv[argv.index("--out") + 1] == str(tmp_path / "c.json")


def test_train_perception_without_data_fails_fast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a cache and without the clean folders, training stops at once with the folder to pass."""
    assert main_train(["perception", "--data", str(tmp_path), "--out", str(tmp_path / "c.json")]) == 1
    assert "--data" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_batched_evaluation_matches_one_by_one(data: dict[str, Path], tmp_path: Path) -> None:
    """--batch only changes how many images go to one perceive call, not the numbers."""
    reports = []
    for batch in ("1", "5"):
        out = tmp_path / f"r{batch}.json"
        assert (
            main_bench_perception(
                [str(data["mixed"]), "--clean-root", str(tmp_path / "none"), "--out", str(out), "--no-speed", "-q", "--limit-per-combo", "1", "--batch", batch]
            )
            == 0
        )
        reports.append(json.loads(out.read_text())["results"])
    for r in reports:
        r.pop("mean_perceive_ms_on_data")
    assert reports[0] == reports[1]
