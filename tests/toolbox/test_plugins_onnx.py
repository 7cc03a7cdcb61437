"""ONNX plug-ins: community models in the format they are published in, run on onnxruntime.

The models are built here with the ``onnx`` helper API (standard operators only, weights as
initialisers), so the tests need no exporter and no download.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx package (test extra) builds the tiny models")
pytest.importorskip("onnxruntime", reason="onnxruntime (test extra / the onnx extra) runs them")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402 - after the skips above

import agentir.toolbox.tools  # noqa: F401,E402 - built-in tools registered (name clashes)
from agentir.toolbox.base import TOOL_INFO, TOOLS, Tool, ToolError, tools_for  # noqa: E402
from agentir.toolbox.plugins import PluginError, load_plugins, unload_plugins  # noqa: E402


def _model(path: Path, *, offset: float = 0.1, shape: list[object] | None = None, inputs: int = 1, scale: int = 1) -> Path:
    """A tiny ONNX model: identity 3x3 convolution plus ``offset`` (x4 nearest upsampling when ``scale`` is 4)."""
    shape = shape if shape is not None else ["n", 3, "h", "w"]
    weight = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        weight[c, c, 1, 1] = 1.0
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Add", ["c", "b"], ["y0"])]
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([offset], np.float32), "b")]
    if scale != 1:
        nodes.append(helper.make_node("Resize", ["y0", "", "s"], ["y"], mode="nearest"))
        inits.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "s"))
    else:
        nodes.append(helper.make_node("Identity", ["y0"], ["y"]))
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if inputs == 2:
        graph_inputs.append(helper.make_tensor_value_info("sigma", TensorProto.FLOAT, [1]))
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, "oh", "ow"])
    model = helper.make_model(helper.make_graph(nodes, "tiny", graph_inputs, [out], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _toml(toml: Path, **entry: object) -> Path:
    fields = {"name": "pl_onnx", "degradation": "dark", "scale": 1, "path": "m.onnx", **entry}
    body = "\n".join(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"' for k, v in fields.items())
    toml.write_text("[[tool]]\n" + body + "\n", encoding="utf-8")
    return toml


@pytest.fixture
def loaded() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    unload_plugins(names)


def test_onnx_round_trip_follows_the_tool_contract(tmp_path: Path, loaded: list[str]) -> None:
    """An .onnx file is recognised by its suffix, registered as a plug-in and run on odd sizes and a batch."""
    _model(tmp_path / "m.onnx")
    loaded += load_plugins(_toml(tmp_path / "p.toml"))
    assert TOOL_INFO["pl_onnx"].kind == "plugin" and "pl_onnx" in tools_for("dark")
    x = torch.rand(2, 3, 13, 21) * 0.8
    before = x.clone()
    tool = TOOLS.get("pl_onnx")
    assert isinstance(tool, Tool) and TOOLS.get("pl_onnx") is tool
    y = tool(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y, (before + 0.1).clamp(0, 1))
    assert torch.equal(x, before)


def test_onnx_ranges_order_padding_and_sr(tmp_path: Path, loaded: list[str]) -> None:
    """0-255 BGR contract with padding, and a x4 model, match their references."""
    _model(tmp_path / "m.onnx", offset=1.0)
    _model(tmp_path / "sr.onnx", offset=0.0, scale=4)
    loaded += load_plugins(_toml(tmp_path / "p.toml", input_range="0-255", channel_order="bgr", pad_multiple=8))
    loaded += load_plugins(_toml(tmp_path / "q.toml", name="pl_onnx_sr", degradation="low_resolution", scale=4, path="sr.onnx"))
    x = torch.rand(1, 3, 7, 10) * 0.5
    torch.testing.assert_close(TOOLS.get("pl_onnx")(x), x + 1.0 / 255)
    y = TOOLS.get("pl_onnx_sr")(x)
    assert y.shape == (1, 3, 28, 40)
    torch.testing.assert_close(y, torch.nn.functional.interpolate(x, scale_factor=4.0, mode="nearest"))


def test_onnx_static_batch_falls_back_and_static_size_is_explained(tmp_path: Path, loaded: list[str]) -> None:
    """A graph fixed at batch 1 runs images one by one; one fixed at 16x16 fails on 13x21 with the fix in the message."""
    _model(tmp_path / "b1.onnx", shape=[1, 3, "h", "w"])
    _model(tmp_path / "fixed.onnx", shape=[1, 3, 16, 16])
    loaded += load_plugins(_toml(tmp_path / "p.toml", name="pl_b1", path="b1.onnx"))
    loaded += load_plugins(_toml(tmp_path / "q.toml", name="pl_fixed", path="fixed.onnx"))
    x = torch.rand(3, 3, 9, 11) * 0.5
    torch.testing.assert_close(TOOLS.get("pl_b1")(x), x + 0.1)
    with pytest.raises(ToolError, match=r"fixed input dimensions \[1, 3, 16, 16\].*dynamic_axes") as info:
        TOOLS.get("pl_fixed")(torch.rand(1, 3, 13, 21))
    assert "\n" not in str(info.value)
    torch.testing.assert_close(TOOLS.get("pl_fixed")(torch.full((1, 3, 16, 16), 0.5)), torch.full((1, 3, 16, 16), 0.6))


def test_onnx_with_two_inputs_is_refused_on_load(tmp_path: Path) -> None:
    """A model that needs a second input (a noise-level map, say) cannot be a plug-in: a clear PluginError, nothing stays registered."""
    _model(tmp_path / "m.onnx", inputs=2)
    with pytest.raises(PluginError, match=r"p\.toml: \[\[tool\]\] #1 \('pl_onnx'\): m\.onnx takes 2 inputs"):
        load_plugins(_toml(tmp_path / "p.toml"), eager=True)
    assert "pl_onnx" not in TOOLS


def test_files_that_are_not_onnx_are_refused_without_loading(tmp_path: Path) -> None:
    """Random bytes and a zip archive named .onnx: refused at registration, naming the file and what to do."""
    (tmp_path / "m.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(PluginError, match=r"m\.onnx is not an ONNX model; export the model with torch\.onnx\.export"):
        load_plugins(_toml(tmp_path / "p.toml"))
    with zipfile.ZipFile(tmp_path / "z.onnx", "w") as zf:
        zf.writestr("x/data.pkl", b"")
    with pytest.raises(PluginError, match=r"z\.onnx is a zip archive"):
        load_plugins(_toml(tmp_path / "q.toml", path="z.onnx"))
    (tmp_path / "t.onnx").write_bytes(b"\x08\x08truncated protobuf")
    with pytest.raises(PluginError, match=r"cannot load t\.onnx as onnx"):
        load_plugins(_toml(tmp_path / "r.toml", path="t.onnx"), eager=True)
    assert "pl_onnx" not in TOOLS


def test_missing_onnxruntime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without onnxruntime importable, an ONNX plug-in says which extra to install."""
    _model(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(PluginError, match=r"onnxruntime is not installed; install the ONNX runtime: pip install 'agentir-restore\[onnx\]'"):
        load_plugins(_toml(tmp_path / "p.toml"))
    assert "pl_onnx" not in TOOLS
