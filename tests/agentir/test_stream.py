"""The stream engine, ``agentir stream``, its sources and sinks, and ``Restorer.stream``.

Frames come from short synthetic pans over ``tests/data/clean`` (made here, written to tmp
folders and videos); darkness is the degradation because the agent restores it in a fraction of
a second, so the tests are about plan reuse, order and bad input rather than quality.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from test_stream_helpers import darken, pan, read_video, write_folder, write_video

from agentir.pipeline import Restorer
from agentir.stream import Frame, StreamConfig, StreamEngine, StreamError, main_stream
from agentir.stream.engine import chain_from_trace, choose_chain
from agentir.stream.io import open_sink, open_source, parse_size
from agentir.stream.runner import LatestSlot, iterate


def _json_line(out: str) -> dict:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- pure parts
def test_choose_chain_fits_the_budget_and_prefers_the_agents_pick() -> None:
    """The best-utility chain under the budget wins; the agent's pick wins when it fits; nothing fits: the cheapest."""
    ranked = {"noise": [("slow", 2.0), ("fast", 1.0)], "dark": [("b1", 1.0), ("b2", 0.5)]}
    costs = {"slow": 1000.0, "fast": 30.0, "b1": 20.0, "b2": 5.0}
    assert choose_chain(["noise", "dark"], ranked, budget_ms=60, megapixels=1.0, cost_ms_per_mp=costs) == [("noise", "fast"), ("dark", "b1")]
    assert choose_chain(["noise", "dark"], ranked, budget_ms=None, megapixels=1.0, cost_ms_per_mp=costs) == [("noise", "slow"), ("dark", "b1")]
    assert choose_chain(["noise", "dark"], ranked, budget_ms=60, megapixels=1.0, cost_ms_per_mp=costs, preferred={"dark": "b2"}) == [
        ("noise", "fast"),
        ("dark", "b2"),
    ]
    assert choose_chain(["noise", "dark"], ranked, budget_ms=1, megapixels=1.0, cost_ms_per_mp=costs) == [("noise", "fast"), ("dark", "b2")]


def test_chain_from_trace_takes_the_kept_tool_of_each_done_subtask() -> None:
    """Rejected and rolled-back steps are not part of the reused chain; a skipped subtask has no tool."""
    trace = {
        "done": ["noise", "dark", "haze"],
        "steps": [
            {"node": 0, "subtask": "noise", "tool": "a", "verdict": "rejected"},
            {"node": 0, "subtask": "noise", "tool": "b", "verdict": "accepted"},
            {"node": 1, "subtask": "dark", "tool": "c", "verdict": "best-of-failed"},
            {"node": 3, "subtask": "dark", "tool": "d", "verdict": "accepted"},
            {"node": 4, "subtask": "haze", "tool": "e", "verdict": "rejected"},
        ],
    }
    assert chain_from_trace(trace) == [("noise", "b"), ("dark", "d")]


async def test_latest_slot_keeps_the_newest_and_counts_drops() -> None:
    """Realtime mode's mailbox: a waiting frame is replaced by a newer one and counted."""
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert await slot.get() == 4 and slot.dropped == 4
    slot.put(7)
    slot.close()
    assert await slot.get() == 7
    assert await slot.get() is None


def test_parse_size_and_bad_options() -> None:
    """--size is WxH; stream options out of range are one clear error."""
    assert parse_size("640x480") == (640, 480)
    with pytest.raises(StreamError, match="WIDTHxHEIGHT"):
        parse_size("640")
    with pytest.raises(StreamError, match="max_frame_ms"):
        StreamConfig(max_frame_ms=-1)


# ----------------------------------------------------------------------------- engine
async def test_engine_plans_once_and_reuses_the_plan_across_a_pan() -> None:
    """One agent search for a steady scene; every later frame reuses its chain, in order, at the input's size."""
    frames = darken(pan("rocket", 8))
    async with Restorer() as restorer, StreamEngine(restorer, StreamConfig(reperceive_every=4)) as engine:
        results = [await engine.process(Frame(index=i, timestamp=i / 30, image=f, stem=f"s{i}")) for i, f in enumerate(frames)]
    assert [r.index for r in results] == list(range(8))
    assert [r.stem for r in results] == [f"s{i}" for i in range(8)]
    assert results[0].event == "planned" and "dark" in results[0].plan and results[0].trace is not None
    assert all(r.event in ("reused", "reperceived") for r in results[1:])
    assert results[4].event == "reperceived"
    assert engine.counters["plans"] == 1 and engine.counters["scene_changes"] == 0
    assert engine.counters["reperceptions"] == 1
    chains = {tuple(r.chain) for r in results}
    assert len(chains) == 1 and next(iter(chains))  # one non-empty chain, reused
    for r, f in zip(results, frames):
        assert r.image is not None and r.image.shape == f.shape
        assert r.image.mean() > f.mean() + 10  # brightened


@pytest.mark.parametrize("device", ["numpy", "torch"])
async def test_engine_detects_a_cut_and_a_size_change_as_scene_changes(device: str) -> None:
    """A cut to another scene and a frame-size change each start a new scene with a new plan (numpy and device scene checks)."""
    a = darken(pan("rocket", 4))
    b = darken(pan("coffee", 4), seed=1)
    small = darken(pan("coffee", 2, size=(256, 192), start=4), seed=1)
    async with Restorer() as restorer, StreamEngine(restorer, StreamConfig(reperceive_every=0, device=device)) as engine:
        results = [await engine.process(Frame(index=i, timestamp=i / 30, image=f)) for i, f in enumerate(a + b + small)]
    events = [r.event for r in results]
    assert events == ["planned", "reused", "reused", "reused", "scene_change", "reused", "reused", "reused", "scene_change", "reused"]
    assert engine.counters["scene_changes"] == 2 and engine.counters["plans"] == 3
    assert [r.scene for r in results] == [0] * 4 + [1] * 4 + [2] * 2
    assert results[-1].image is not None and results[-1].image.shape == (192, 256, 3)


async def test_engine_holds_parameters_within_a_scene() -> None:
    """The brightening gain estimated on a scene's first frame is held: the same input frame gives the same output."""
    frames = darken(pan("rocket", 3))
    seq = [frames[0], frames[1], frames[0]]
    async with Restorer() as restorer, StreamEngine(restorer, StreamConfig(reperceive_every=0)) as engine:
        held = list(engine._stages)  # before planning: none
        results = [await engine.process(Frame(index=i, timestamp=i / 30, image=f)) for i, f in enumerate(seq)]
        held = [s for s in engine._stages if s.held]
    assert held and all(s.params for s in held)
    assert results[0].image is not None and results[2].image is not None
    assert np.array_equal(results[0].image, results[2].image)


async def test_engine_reports_a_bad_frame_and_goes_on() -> None:
    """A frame without pixels (undecodable) or of the wrong layout is an error result; the next frames are restored."""
    frames = darken(pan("rocket", 3))
    async with Restorer() as restorer, StreamEngine(restorer) as engine:
        r0 = await engine.process(Frame(index=0, timestamp=0, image=frames[0]))
        r1 = await engine.process(Frame(index=1, timestamp=0.03, image=None, error="f1.png: not a decodable image"))
        r2 = await engine.process(Frame(index=2, timestamp=0.06, image=np.zeros((4, 4), np.uint8)))
        r3 = await engine.process(Frame(index=3, timestamp=0.09, image=frames[1]))
    assert r0.image is not None and r3.image is not None and r3.event == "reused"
    assert r1.event == "error" and "f1.png" in r1.error and r1.image is None
    assert r2.event == "error" and "uint8 H x W x 3" in r2.error
    assert engine.counters["errors"] == 2


async def test_realtime_newest_frame_wins_and_order_is_kept() -> None:
    """Frames arriving faster than they are restored are dropped (counted), never reordered."""
    frames = darken(pan("rocket", 12))

    async def burst() -> AsyncIterator[Frame]:
        for i, f in enumerate(frames):
            yield Frame(index=i, timestamp=i / 30, image=f)
            await anyio.sleep(0)  # no pacing: far faster than restoration

    out = []
    async with Restorer() as restorer, StreamEngine(restorer, StreamConfig(realtime=True)) as engine:
        async for result, dropped in iterate(burst(), engine, realtime=True):
            out.append((result.index, dropped))
    indices = [i for i, _ in out]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert out[-1][1] > 0 and len(indices) + out[-1][1] == len(frames)
    assert indices[-1] == len(frames) - 1  # the newest frame is never the one dropped


async def test_restorer_stream_api_yields_results_in_order() -> None:
    """``async for r in restorer.stream(frames)`` restores numpy frames in order, one plan for the pan."""
    frames = darken(pan("rocket", 6))
    async with Restorer() as restorer:
        results = [r async for r in restorer.stream(frames, reperceive_every=0)]
        with pytest.raises(StreamError, match="unknown stream option"):
            async for _ in restorer.stream(frames, colour="red"):
                pass
    assert [r.index for r in results] == list(range(6))
    assert [r.event for r in results].count("planned") == 1
    assert all(r.image is not None and r.image.shape == frames[0].shape for r in results)


async def test_restorer_stream_stops_reading_when_the_caller_breaks() -> None:
    """Leaving the loop early stops pulling frames: a bounded number beyond the last result were read."""
    frames = darken(pan("rocket", 3))
    pulled = 0

    def source():  # an endless camera
        nonlocal pulled
        while True:
            pulled += 1
            yield frames[pulled % 3]

    async with Restorer() as restorer:
        n = 0
        async for _ in restorer.stream(source(), reperceive_every=0):
            n += 1
            if n == 3:
                break
    assert n == 3 and pulled <= 3 + 4 + 2  # the queue (4), the frame in hand and the one being read


# ----------------------------------------------------------------------------- CLI, sources, sinks
def test_cli_folder_in_folder_out_keeps_stems_and_prints_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``agentir stream DIR -o DIR --json``: one output per input, same stems, a JSON summary last on stdout."""
    stems = write_folder(tmp_path / "in", darken(pan("rocket", 6)), prefix="cam")
    code = main_stream([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-q"])
    assert code == 0
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == stems
    summary = _json_line(capsys.readouterr().out)
    assert summary["frames_in"] == summary["frames_out"] == 6 and summary["dropped"] == 0
    assert summary["plans"] == 1 and summary["scene_changes"] == 0
    assert set(summary["latency_ms"]) == {"p50", "p95", "p99", "max"} and summary["fps"] > 0


def test_cli_corrupt_frame_mid_stream_is_an_error_and_the_rest_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupt frame file in the middle of a folder: reported for that frame, every other frame restored."""
    stems = write_folder(tmp_path / "in", darken(pan("rocket", 5)))
    (tmp_path / "in" / f"{stems[2]}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    code = main_stream([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "-q"])
    assert code == 0
    assert sorted(p.stem for p in (tmp_path / "out").iterdir()) == [s for i, s in enumerate(stems) if i != 2]
    summary = _json_line(capsys.readouterr().out)
    assert summary["errors"] == 1 and summary["frames_out"] == 4
    assert stems[2] in summary["error_messages"][0]


def test_cli_video_in_video_out_same_frame_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A lossless .mkv in, a .mkv out with as many frames of the same size, and a video that ends is a clean end."""
    frames = darken(pan("rocket", 6))
    write_video(tmp_path / "in.mkv", frames)
    code = main_stream([str(tmp_path / "in.mkv"), "-o", str(tmp_path / "out.mkv"), "--json", "-q"])
    assert code == 0
    out = read_video(tmp_path / "out.mkv")
    assert len(out) == 6 and out[0].shape == frames[0].shape
    assert not list(tmp_path.glob(".*partial*"))  # the temporary file was renamed into place
    summary = _json_line(capsys.readouterr().out)
    assert summary["source_ended"] == "end" and summary["frames_out"] == 6


def test_cli_size_option_resizes_frames(tmp_path: Path) -> None:
    """--size WxH resizes every frame before restoration."""
    write_folder(tmp_path / "in", darken(pan("rocket", 2)))
    assert main_stream([str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--size", "256x192", "-q"]) == 0
    out = read_video_or_png(tmp_path / "out")
    assert all(img.shape == (192, 256, 3) for img in out)


def read_video_or_png(folder: Path) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("/no/such/clip.mkv", "no such file or folder: /no/such/clip.mkv"),
        ("/dev/video97", "no video device /dev/video97"),
        ("http://127.0.0.1:9/cam.mjpg", "cannot open stream URL http://127.0.0.1:9/cam.mjpg"),
        ("rtsp://127.0.0.1:9/live", "cannot open stream URL rtsp://127.0.0.1:9/live"),
    ],
)
def test_cli_unopenable_source_is_one_clear_error(source: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file or device or an unreachable URL: exit 2 and one stderr line naming it."""
    assert main_stream([source, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([ln for ln in err if "error" in ln]) == 1 and needle in err[-1]


def test_not_a_video_and_empty_folder_are_clear_errors(tmp_path: Path) -> None:
    """A file OpenCV cannot decode and a folder without images are named in the error."""
    bad = tmp_path / "notes.mkv"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(StreamError, match=r"notes\.mkv is not a video file"):
        open_source(str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamError, match="holds no image files"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(StreamError, match="is not a folder"):
        open_sink(str(tmp_path / "file.txt"), fps=30)


async def test_torch_device_path_agrees_with_the_numpy_path() -> None:
    """The chain's torch path (what runs on CUDA) gives frames within a few grey levels of the numpy path."""
    frames = darken(pan("rocket", 3))
    outs = {}
    async with Restorer() as restorer:
        for device in ("numpy", "torch"):
            async with StreamEngine(restorer, StreamConfig(device=device, reperceive_every=0)) as engine:
                outs[device] = [(await engine.process(Frame(index=i, timestamp=0, image=f))).image for i, f in enumerate(frames)]
    for a, b in zip(outs["numpy"], outs["torch"]):
        assert a is not None and b is not None
        diff = np.abs(a.astype(int) - b.astype(int))
        assert diff.max() <= 3 and diff.mean() < 0.5
