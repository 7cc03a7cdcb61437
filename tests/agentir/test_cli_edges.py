"""Rough edges of `agentir restore` a new user hit: -q, reruns into a subfolder, name collisions,
an unwritable -o, and an embedded Restorer printing logs on stdout."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agentir import cli

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ROOT / "examples" / "clean"


def small_image(path: Path, box: tuple[int, int, int, int] = (100, 100, 164, 164), **save: Any) -> Path:
    """A 64 x 64 crop of a shipped photo (quick to restore), saved in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(CLEAN / "coffee.png") as im:
        im.convert("RGB").crop(box).save(path, **save)
    return path


def jpeg_with_damaged_exif(path: Path) -> Path:
    """A JPEG whose EXIF claims a tag larger than the file: Pillow warns (UserWarning) when reading it."""
    ifd = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 0x010E, 2, 1000, 8000) + struct.pack("<I", 0)
    return small_image(path, format="JPEG", quality=95, exif=b"Exif\x00\x00" + ifd)


def run_agentir(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m agentir ARGS` in a subprocess (separate stdout and stderr, its own logging)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("AGENTIR_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "agentir", *args], cwd=ROOT, capture_output=True, text=True, timeout=180, env=full_env)


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run cli.main in this process without reconfiguring the test session's structlog."""
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.delenv("AGENTIR_EXPERIENCE_STATE", raising=False)


# ----------------------------------------------------------------------------- 1. -q / -v


def test_quiet_restore_prints_nothing_despite_warnings_but_still_prints_errors(tmp_path: Path) -> None:
    """-q silences per-image lines, log warnings and Python warnings; an error is still its one line."""
    src = tmp_path / "in"
    small_image(src / "a.png")
    jpeg_with_damaged_exif(src / "exif.jpg")
    state = tmp_path / "state.json"
    env = {"AGENTIR_EXPERIENCE_STATE": str(state)}

    state.write_text("{")  # unreadable: the experience planner warns and sets it aside
    loud = run_agentir("restore", str(src), "-o", str(tmp_path / "o1"), env=env)
    assert loud.returncode == 0, loud.stderr
    assert "state_reset" in loud.stderr and "Tag data larger than file" in loud.stderr  # the warnings -q must hide

    state.write_text("{")
    quiet = run_agentir("restore", "-q", str(src), "-o", str(tmp_path / "o2"), env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    assert (tmp_path / "o2" / "a.png").is_file() and (tmp_path / "o2" / "exif.png").is_file()

    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    state.write_text("{")
    failing = run_agentir("restore", "-q", str(src), "-o", str(tmp_path / "o3"), env=env)
    assert failing.returncode == cli.EXIT_FAILED and failing.stdout == ""
    lines = failing.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.png" in lines[0], failing.stderr


@pytest.mark.parametrize(
    ("argv", "env_level", "expected"),
    [
        (["restore", "x", "-o", "o"], None, "warning"),
        (["restore", "-q", "x", "-o", "o"], "info", "error"),
        (["restore", "--verbose", "x", "-o", "o"], None, "info"),
        (["--log-level", "debug", "restore", "-q", "x", "-o", "o"], None, "debug"),
        (["degrade", "-q", "c", "o"], None, "error"),
        (["tools"], "error", "error"),
    ],
)
def test_log_level_comes_from_log_level_then_quiet_or_verbose_then_environment(argv: list[str], env_level: str | None, expected: str) -> None:
    """--log-level wins, then the command's -q (error) or -v (info), then $AGENTIR_LOG_LEVEL."""
    from agentir.settings import Settings

    args = cli.build_parser().parse_args(argv)
    args.settings = Settings.from_env({"AGENTIR_LOG_LEVEL": env_level} if env_level else {})
    assert cli._log_level(args) == expected


def test_quiet_and_verbose_together_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """-q and -v contradict each other: argparse refuses them with the usage exit code."""
    with pytest.raises(SystemExit) as info:
        cli.main(["restore", "-q", "-v", "x", "-o", "o"])
    assert info.value.code == cli.EXIT_USAGE and "not allowed with" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 2. output inside the input


def test_second_run_into_a_subfolder_does_not_restore_the_first_runs_outputs(tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`restore photos -o photos/restored` twice restores the same two images, never photos/restored/*."""
    photos = tmp_path / "photos"
    small_image(photos / "a.png")
    small_image(photos / "b.jpg", box=(20, 20, 84, 84))
    out = photos / "restored"
    for _ in range(2):
        assert cli.main(["restore", str(photos), "-o", str(out)]) == cli.EXIT_OK
        err = capsys.readouterr().err
        assert f"restored 2 of 2 images into {out}" in err, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.png", "a.trace.json", "b.png", "b.trace.json"]


# ----------------------------------------------------------------------------- 4. name collisions


def test_colliding_output_names_are_all_restored_to_distinct_files(tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """photo.png and photo.tiff in one folder (and photo.jpg given apart) are all restored, renamed after their source, one note each."""
    src = tmp_path / "in"
    png = small_image(src / "photo.png")
    tiff = small_image(src / "photo.tiff", box=(20, 20, 84, 84))
    jpg = small_image(tmp_path / "other" / "photo.jpg", box=(150, 60, 214, 124))
    out = tmp_path / "out"
    assert cli.main(["restore", str(src), str(jpg), "-o", str(out)]) == cli.EXIT_OK
    err = capsys.readouterr().err
    for name, source in (("photo", png), ("photo.tiff", tiff), ("photo.jpg", jpg)):
        assert (out / f"{name}.png").is_file()
        assert json.loads((out / f"{name}.trace.json").read_text())["input"] == str(source)
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2 and "photo.tiff.png" in notes[0] and "photo.jpg.png" in notes[1], err
    assert "error" not in err and "restored 3 of 3" in err


# ----------------------------------------------------------------------------- 5. unwritable -o


class _NoRestorer:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a Restorer was started although the output folder is unusable")


def _assert_refused_before_work(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1, captured.err
    assert lines[0].startswith(f"error: cannot write to {out} (") and lines[0].endswith("); choose another -o")


def test_output_under_a_regular_file_is_refused_before_any_restoration(
    tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o through a regular file (unwritable even for root) is one error line and exit 1, nothing started."""
    import agentir.pipeline

    monkeypatch.setattr(agentir.pipeline, "Restorer", _NoRestorer)
    img = small_image(tmp_path / "in" / "a.png")
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "file.txt" / "out"
    _assert_refused_before_work(["restore", str(img), "-o", str(out)], out, capsys)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_any_restoration(
    tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only -o folder is one error line and exit 1, nothing started."""
    import agentir.pipeline

    monkeypatch.setattr(agentir.pipeline, "Restorer", _NoRestorer)
    img = small_image(tmp_path / "in" / "a.png")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        _assert_refused_before_work(["restore", str(img), "-o", str(out)], out, capsys)
    finally:
        out.chmod(0o700)


# ----------------------------------------------------------------------------- 3. embedded Restorer

EMBED = textwrap.dedent(
    """
    import sys
    import anyio
    import numpy as np
    from PIL import Image

    mode, image_path = sys.argv[1], sys.argv[2]
    if mode == "structlog":  # the embedder's own structlog setup: it must win
        import structlog
        structlog.configure(
            processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
            logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        )
    elif mode == "logging":  # the embedder configured stdlib logging: agentir's events join it
        import logging
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="LOGGING %(message)s")

    from agentir.pipeline import Restorer

    async def main():
        image = np.asarray(Image.open(image_path).convert("RGB"))
        async with Restorer() as restorer:
            result = await restorer.restore(image)
        assert result.image.dtype == np.uint8

    anyio.run(main)
    """
)


@pytest.mark.parametrize("mode", ["none", "structlog", "logging"])
def test_embedded_restorer_never_logs_on_stdout_unless_the_embedder_says_so(tmp_path: Path, mode: str) -> None:
    """With no logging set up, an embedded Restorer leaves stdout empty and info off; an embedder's own setup wins."""
    img = small_image(tmp_path / "a.png")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIR_")}
    proc = subprocess.run([sys.executable, "-c", EMBED, mode, str(img)], cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    if mode == "none":
        assert proc.stdout == "" and "job.perceived" not in proc.stderr and "[info" not in proc.stderr
    elif mode == "structlog":
        assert "event='job.perceived'" in proc.stdout  # their renderer, their stream
    else:
        assert proc.stdout == "" and "LOGGING event='job.perceived'" in proc.stderr


# ----------------------------------------------------------------------------- memory cap


def test_memory_cap_skips_whole_image_tools_that_would_pass_it(tmp_path: Path, in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`--memory-cap` reaches the Executor: on the JPEG example a 1 MB cap refuses the whole-image
    DCT deblocker (the trace says why) and the agent goes on with a tool that fits."""
    out = tmp_path / "out"
    src = ROOT / "examples" / "degraded" / "astronaut.png"
    assert cli.main(["restore", str(src), "-o", str(out), "--memory-cap", "0.001"]) == cli.EXIT_OK
    trace = json.loads((out / "astronaut.trace.json").read_text())
    refused = [s for s in trace["steps"] if "over the memory cap" in s.get("error", "")]
    assert refused and all(s["tool"].startswith("dct_dejpeg") for s in refused), trace["steps"]
    assert "jpeg" in trace["done"]  # another JPEG tool did the job
    capsys.readouterr()
    with pytest.raises(SystemExit):
        cli.main(["restore", str(src), "-o", str(out), "--memory-cap", "0"])
    assert "--memory-cap" in capsys.readouterr().err
