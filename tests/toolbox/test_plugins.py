"""Plug-ins: user models exported to TorchScript / torch.export, registered from TOML, run as tools."""

from __future__ import annotations

import re
import shutil
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import agentir.toolbox.tools  # noqa: F401 - built-in tools registered (name clashes)
from agentir.toolbox.base import TOOL_INFO, TOOLS, Tool, ToolError, tools_for
from agentir.toolbox.plugins import PluginError, load_plugins, parse_plugins, unload_plugins


class Brighten(torch.nn.Module):
    """A tiny restoration model: one 3x3 conv around the identity, plus a fixed offset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        torch.nn.init.zeros_(self.conv.weight)
        torch.nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) + 0.1


class Upscale(torch.nn.Module):
    """A x4 model (nearest upsampling), or a wrong one that only doubles the size."""

    def __init__(self, factor: int = 4) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=float(self.factor), mode="nearest")


def _script(model: torch.nn.Module, path: Path, trace: bool = False) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated upstream
        m = torch.jit.trace(model.eval(), torch.rand(1, 3, 16, 16)) if trace else torch.jit.script(model.eval())
        m.save(str(path))
    return path


def _export(model: torch.nn.Module, path: Path) -> Path:
    h, w = torch.export.Dim("h", min=2, max=4096), torch.export.Dim("w", min=2, max=4096)
    ep = torch.export.export(model.eval(), (torch.rand(1, 3, 16, 16),), dynamic_shapes={"x": {2: h, 3: w}})
    torch.export.save(ep, str(path))
    return path


def _toml(path: Path, *entries: dict) -> Path:
    lines = []
    for e in entries:
        lines.append("[[tool]]")
        for k, v in e.items():
            lines.append(f"{k} = {v!r}".replace("'", '"') if isinstance(v, str) else f"{k} = {str(v).lower() if isinstance(v, bool) else v}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def loaded() -> Iterator[list[str]]:
    """Names registered by a test; unregistered afterwards so tests stay independent."""
    names: list[str] = []
    yield names
    unload_plugins(names)


def _entry(name: str, path: str, **kw: object) -> dict:
    return {"name": name, "degradation": "dark", "scale": 1, "path": path, **kw}


def test_torchscript_round_trip(tmp_path: Path, loaded: list[str]) -> None:
    """A scripted and a traced model registered from TOML load once and follow the Tool contract."""
    (tmp_path / "models").mkdir()
    _script(Brighten(), tmp_path / "models" / "s.pt")
    _script(Brighten(), tmp_path / "models" / "t.ts", trace=True)
    toml = _toml(tmp_path / "p.toml", _entry("pl_script", "models/s.pt", pad_multiple=8), _entry("pl_trace", "models/t.ts"))
    loaded += load_plugins(toml)
    assert loaded == ["pl_script", "pl_trace"]
    assert TOOL_INFO["pl_script"].kind == "plugin" and TOOL_INFO["pl_script"].tags == ("plugin",)
    assert "pl_script" in tools_for("dark")
    x = torch.rand(2, 3, 13, 21) * 0.8
    before = x.clone()
    for name in loaded:
        tool = TOOLS.get(name)
        assert isinstance(tool, Tool) and TOOLS.get(name) is tool  # loaded once, cached
        y = tool(x)
        assert y.shape == x.shape and y.dtype == x.dtype
        torch.testing.assert_close(y, (before + 0.1).clamp(0, 1))
        assert torch.equal(x, before)
        assert torch.equal(tool(x), y)  # deterministic


def test_export_round_trip_ranges_and_order(tmp_path: Path, loaded: list[str]) -> None:
    """A torch.export model with a 0-255 BGR contract, odd sizes and a batch of 3, matches its reference."""
    _export(Brighten(), tmp_path / "m.pt2")
    loaded += load_plugins(_toml(tmp_path / "p.toml", _entry("pl_export", "m.pt2", input_range="0-255", channel_order="bgr", pad_multiple=4)))
    x = torch.rand(3, 3, 7, 10) * 0.5
    y = TOOLS.get("pl_export")(x)
    # In 0-255 units the model adds 0.1, i.e. 0.1/255 in [0, 1].
    torch.testing.assert_close(y, x + 0.1 / 255)
    assert TOOLS.get("pl_export")(torch.zeros(0, 3, 5, 5)).shape == (0, 3, 5, 5)


def test_export_static_batch_falls_back_to_one_by_one(tmp_path: Path, loaded: list[str]) -> None:
    """A model exported with a static batch of 1 still restores a batch of several images."""
    h, w = torch.export.Dim("h", min=2, max=512), torch.export.Dim("w", min=2, max=512)
    ep = torch.export.export(Brighten().eval(), (torch.rand(1, 3, 16, 16),), dynamic_shapes={"x": {2: h, 3: w}})
    torch.export.save(ep, str(tmp_path / "b1.pt2"))
    loaded += load_plugins(_toml(tmp_path / "p.toml", _entry("pl_b1", "b1.pt2", input_range="-1-1")))
    x = torch.rand(3, 3, 9, 9) * 0.5
    torch.testing.assert_close(TOOLS.get("pl_b1")(x), x + 0.05)


def test_sr_plugin_and_wrong_output_shape(tmp_path: Path, loaded: list[str]) -> None:
    """A x4 plug-in returns 4x the size; a model that only doubles it gets a ToolError naming the file."""
    _script(Upscale(4), tmp_path / "x4.pt")
    _script(Upscale(2), tmp_path / "x2.pt")
    sr = {"degradation": "low_resolution", "scale": 4}
    loaded += load_plugins(_toml(tmp_path / "p.toml", {"name": "pl_x4", "path": "x4.pt", **sr}, {"name": "pl_x2", "path": "x2.pt", **sr}))
    assert TOOLS.get("pl_x4")(torch.rand(1, 3, 5, 6)).shape == (1, 3, 20, 24)
    with pytest.raises(ToolError, match=r"x2\.pt returned shape \(1, 3, 10, 12\).*expected \(1, 3, 20, 24\)"):
        TOOLS.get("pl_x2")(torch.rand(1, 3, 5, 6))


def test_bad_batch_and_failing_model_raise_tool_error(tmp_path: Path, loaded: list[str]) -> None:
    """Integer input and a model that rejects its input fail with ToolError, not a crash."""
    _script(Brighten(), tmp_path / "m.pt")
    loaded += load_plugins(_toml(tmp_path / "p.toml", _entry("pl_bad", "m.pt")))
    with pytest.raises(ToolError, match="float"):
        TOOLS.get("pl_bad")(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ToolError, match="N x 3 x H x W"):
        TOOLS.get("pl_bad")(torch.zeros(1, 4, 8, 8))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"degradation": "nosie"}, r"p\.toml: \[\[tool\]\] #1 \('pl_x'\): degradation = 'nosie' is not valid; did you mean 'noise'"),
        ({"scale": 2}, r"scale = 2 is not valid"),
        ({"scale": "4"}, r"scale must be a TOML integer, got str"),
        ({"input_range": "0-256"}, r"input_range = '0-256' is not valid; did you mean '0-255'"),
        ({"chanel_order": "bgr"}, r"unknown key 'chanel_order'; did you mean 'channel_order'"),
        ({"path": "missing.pt"}, r"model file .*missing\.pt not found"),
        ({"path": "w.pth"}, r"looks like a pickle checkpoint \(\.pth\).*torch\.jit\.script"),
        ({"path": "w.h5"}, r"set format = \"torchscript\", \"export\" or \"onnx\""),
        ({"name": "dct_denoise"}, r"'dct_denoise' is a built-in tool; choose another name"),
    ],
)
def test_invalid_entries_name_file_and_entry(tmp_path: Path, entry: dict, message: str) -> None:
    """Each invalid field gives one PluginError line naming the file, the entry and the fix; nothing is registered."""
    _script(Brighten(), tmp_path / "m.pt")
    toml = _toml(tmp_path / "p.toml", {**_entry("pl_x", "m.pt"), **entry})
    with pytest.raises(PluginError, match=message) as info:
        load_plugins(toml)
    assert "\n" not in str(info.value) and str(toml) in str(info.value)
    assert "pl_x" not in TOOLS


def test_bad_toml_duplicates_and_empty(tmp_path: Path) -> None:
    """Broken TOML, a duplicate name within the file and a file without entries are refused."""
    _script(Brighten(), tmp_path / "m.pt")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[tool]]\nname = \n", encoding="utf-8")
    with pytest.raises(PluginError, match="not valid TOML"):
        load_plugins(bad)
    dup = _toml(tmp_path / "dup.toml", _entry("pl_d", "m.pt"), _entry("pl_d", "m.pt"))
    with pytest.raises(PluginError, match=r"#2 \('pl_d'\): name 'pl_d' is used by an earlier entry"):
        load_plugins(dup)
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing\n", encoding="utf-8")
    with pytest.raises(PluginError, match="no \\[\\[tool\\]\\] entries"):
        load_plugins(empty)
    with pytest.raises(PluginError, match="plug-in file not found"):
        load_plugins(tmp_path / "nope.toml")
    assert "pl_d" not in TOOLS


def test_pickles_are_refused_without_loading(tmp_path: Path) -> None:
    """A torch.save checkpoint, even renamed .pt, and a non-zip file are refused before any unpickling."""
    torch.save(Brighten().state_dict(), tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04not a zip")
    with pytest.raises(PluginError, match=r"sd\.pt was written by torch\.save \(a pickle\)"):
        parse_plugins(_toml(tmp_path / "a.toml", _entry("pl_sd", "sd.pt")))
    with pytest.raises(PluginError, match="not a zip file"):
        parse_plugins(_toml(tmp_path / "b.toml", _entry("pl_junk", "junk.pt")))


def test_format_mismatch_is_explained(tmp_path: Path) -> None:
    """A TorchScript file declared as export (and the reverse) says which format it really is."""
    _script(Brighten(), tmp_path / "m.pt")
    _export(Brighten(), tmp_path / "m.pt2")
    with pytest.raises(PluginError, match='it is a TorchScript archive: set format = "torchscript"'):
        parse_plugins(_toml(tmp_path / "a.toml", _entry("pl_a", "m.pt", format="export")))
    with pytest.raises(PluginError, match=re.escape('it is a torch.export archive: set format = "export"')):
        parse_plugins(_toml(tmp_path / "b.toml", _entry("pl_b", "m.pt2", format="torchscript")))


def test_export_archive_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    """An export archive whose weights config asks for pickle is refused before torch.export.load runs."""
    src = _export(Brighten(), tmp_path / "m.pt2")
    dst = tmp_path / "evil.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.endswith("_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            zout.writestr(item, data)
    with pytest.raises(PluginError, match=r"which torch\.export\.load would unpickle"):
        parse_plugins(_toml(tmp_path / "p.toml", _entry("pl_evil", "evil.pt2")))


def test_corrupt_archive_fails_on_eager_load_and_rolls_back(tmp_path: Path) -> None:
    """A TorchScript archive with broken code fails at load with the entry named, and no entry stays registered."""
    _script(Brighten(), tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "broken.pt", "w") as z:  # the layout of a TorchScript archive, garbage inside
        z.writestr("broken/code/__torch__.py", "garbage(")
        z.writestr("broken/constants.pkl", b"junk")
        z.writestr("broken/data.pkl", b"junk")
        z.writestr("broken/version", "3\n")
    toml = _toml(tmp_path / "p.toml", _entry("pl_ok", "m.pt"), _entry("pl_broken", "broken.pt"))
    with pytest.raises(PluginError, match=r"#2 \('pl_broken'\): cannot load broken\.pt as torchscript"):
        load_plugins(toml, eager=True)
    assert "pl_ok" not in TOOLS and "pl_broken" not in TOOLS


def test_cuda_without_cuda_is_refused(tmp_path: Path) -> None:
    """An explicit device = "cuda" on a machine without CUDA fails at registration, not at first use."""
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    _script(Brighten(), tmp_path / "m.pt")
    with pytest.raises(PluginError, match='device = "cuda" but CUDA is not available'):
        load_plugins(_toml(tmp_path / "p.toml", _entry("pl_cuda", "m.pt", device="cuda")))
    assert "pl_cuda" not in TOOLS


def test_shipped_example_toml_loads(tmp_path: Path, loaded: list[str]) -> None:
    """examples/plugins/example.toml is valid: with models exported to the paths it names, both entries run."""
    example = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "example.toml"
    toml = tmp_path / "example.toml"
    shutil.copy(example, toml)
    (tmp_path / "models").mkdir()
    _export(Brighten(), tmp_path / "models" / "my_denoiser.pt2")
    _script(Upscale(4), tmp_path / "models" / "my_sr_x4.pt")
    loaded += load_plugins(toml, eager=True)
    assert loaded == ["my_denoiser", "my_sr_x4"]
    assert "my_sr_x4" not in tools_for("low_resolution") and TOOL_INFO["my_sr_x4"].tags == ("plugin", "manual")
    x = torch.rand(1, 3, 9, 11)
    assert TOOLS.get("my_denoiser")(x).shape == x.shape
    torch.testing.assert_close(TOOLS.get("my_sr_x4")(x), torch.nn.functional.interpolate(x, scale_factor=4.0), atol=1e-5, rtol=0)


class ToBytes(torch.nn.Module):
    """A model that returns uint8 pixels instead of floats."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 255).to(torch.uint8)


def test_integer_output_and_static_sizes_raise_tool_error(tmp_path: Path, loaded: list[str]) -> None:
    """A model returning uint8, and an export with a fixed 16x16 input given 9x9, fail with a ToolError that says why."""
    _script(ToBytes(), tmp_path / "u8.pt")
    ep = torch.export.export(Brighten().eval(), (torch.rand(1, 3, 16, 16),))
    torch.export.save(ep, str(tmp_path / "static.pt2"))
    loaded += load_plugins(_toml(tmp_path / "p.toml", _entry("pl_u8", "u8.pt"), _entry("pl_static", "static.pt2")))
    with pytest.raises(ToolError, match=r"returned torch\.uint8, expected a float tensor"):
        TOOLS.get("pl_u8")(torch.rand(1, 3, 8, 8))
    with pytest.raises(ToolError, match=r"static\.pt2 failed on input \(1, 3, 9, 9\).*dynamic_shapes"):
        TOOLS.get("pl_static")(torch.rand(1, 3, 9, 9))
    assert TOOLS.get("pl_static")(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)


def test_ensure_and_env_load_a_file_once(tmp_path: Path, loaded: list[str]) -> None:
    """ensure_plugins and $AGENTIR_PLUGINS register a file once however often entry points call them."""
    from agentir.toolbox.plugins import ensure_plugins, plugins_from_env

    _script(Brighten(), tmp_path / "m.pt")
    toml = _toml(tmp_path / "p.toml", _entry("pl_once", "m.pt"))
    loaded += ensure_plugins(toml)
    assert ensure_plugins(toml) == ["pl_once"]
    assert plugins_from_env({"AGENTIR_PLUGINS": str(toml)}) == ["pl_once"]
    assert plugins_from_env({}) == []
    with pytest.raises(PluginError, match="already registered plug-in"):
        load_plugins(toml)  # the strict loader still refuses a second registration
