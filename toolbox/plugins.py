"""User models as tools: a TOML file registers TorchScript, ``torch.export`` or ONNX models.

A plug-in file holds one ``[[tool]]`` table per model::

    [[tool]]
    name = "my_denoiser"            # unique among all tools (built-in ones too)
    degradation = "noise"           # one of the eight of BENCHMARK.md
    scale = 1                       # 1, or 4 for super-resolution
    path = "models/denoiser.pt2"    # relative to this TOML file
    format = "export"               # "torchscript" | "export" | "onnx"; default from the suffix
                                    #   (.pt / .ts -> torchscript, .pt2 -> export, .onnx -> onnx)
    input_range = "0-1"             # what the model expects: "0-1" | "0-255" | "-1-1"
    channel_order = "rgb"           # "rgb" | "bgr"
    pad_multiple = 8                # optional: reflect-pad H and W to a multiple, crop back
    device = "auto"                 # "cpu" | "cuda" | "auto" (cuda when available)
    description = "what it does"    # optional, shown to the planner
    tags = ["mild"]                 # optional, added after "plugin" ("manual" hides it from the agent)

:func:`load_plugins` validates the whole file, checks every model file without loading it, and
registers each entry with ``ToolInfo(kind="plugin", tags=("plugin", ...))``. The model itself is
loaded lazily on the first ``TOOLS.get(name)`` and cached there, so it loads once per process.
A loaded plug-in is a :class:`~agentir.toolbox.base.Tool`: ``N x 3 x H x W`` float in ``[0, 1]`` in and
out (RGB), any ``H`` / ``W``, the input never modified, the output clamped and checked to be
``scale`` times the input (else a :class:`~agentir.toolbox.base.ToolError`).

**No pickle execution.** TorchScript archives are read by ``torch.jit.load``, whose C++
unpickler restores only TorchScript types (no Python globals). ``torch.export.load`` may fall
back to Python pickle for tensor subclasses, opaque objects, legacy weight files and sample
inputs, so an ``.pt2`` archive is inspected first and refused when any of those is present (its
sample inputs are checked with ``torch.load(weights_only=True)``). Files written by
``torch.save`` (``.pth`` / ``.pkl`` / ``.bin`` checkpoints) are refused with a message that
says how to export the model instead.

**ONNX** models (``.onnx``, the format most community restoration models are also published in)
run on ``onnxruntime`` (the optional ``onnx`` extra: ``pip install 'agentir-restore[onnx]'``), CPU or
CUDA execution provider by ``device``. An ONNX file is a protobuf graph of standard operators:
loading it runs no Python code, and no custom-operator library is ever registered. The model
must take one image tensor ``N x 3 x H x W`` (float32 or float16) and return one; fixed sizes
in the graph are reported when an image does not fit them.

Models in PyTorch checkpoint form (``.pth`` from model zoos) are not loaded: the ``spandrel``
library that recognises their architectures needs torchvision, which does not install beside the
pinned torch; export such a model to ONNX or TorchScript where it was trained.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import tomllib
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch
import torch.nn.functional as F

from agentir.toolbox.base import TOOLS, ToolError, ToolInfo, check_batch, register_tool, unregister_tool
from agentir.toolbox.vocab import DEGRADATIONS

__all__ = [
    "FORMATS",
    "PluginError",
    "PluginSpec",
    "PluginTool",
    "check_model_file",
    "ensure_plugins",
    "load_plugins",
    "parse_plugins",
    "plugin_table",
    "plugins_from_env",
    "unload_plugins",
]

log = structlog.get_logger(__name__)

#: Model file formats a plug-in may use.
FORMATS: tuple[str, ...] = ("torchscript", "export", "onnx")
#: Value ranges a model may expect; ``(scale, offset)`` maps ``[0, 1]`` to the model's range.
INPUT_RANGES: dict[str, tuple[float, float]] = {"0-1": (1.0, 0.0), "0-255": (255.0, 0.0), "-1-1": (2.0, -1.0)}
CHANNEL_ORDERS: tuple[str, ...] = ("rgb", "bgr")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")

_SUFFIX_FORMAT = {".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript", ".pt2": "export", ".onnx": "onnx"}
_PICKLE_SUFFIXES = (".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar")
_FIELDS = {
    "name": str,
    "degradation": str,
    "scale": int,
    "path": str,
    "format": str,
    "input_range": str,
    "channel_order": str,
    "pad_multiple": int,
    "device": str,
    "description": str,
    "tags": list,
}
_REQUIRED = ("name", "degradation", "scale", "path")
_EXPORT_HOWTO = (
    "export the model with torch.jit.script(model).save('m.pt') or "
    "torch.export.save(torch.export.export(model, (x,), dynamic_shapes=...), 'm.pt2') "
    "(keep raw weights in .safetensors), or to ONNX with torch.onnx.export; see examples/plugins/README.md"
)


class PluginError(ValueError):
    """A plug-in file or one of its entries is invalid; the message names both and the fix.

    Attributes:
        file: the TOML file (or model file) concerned.
        entry: the entry, as ``'#<index> (<name>)'``, or ``None`` for the file as a whole.
        reason: what is wrong and what to do.
    """

    def __init__(self, file: str | os.PathLike[str], entry: str | None, reason: str) -> None:
        self.file = str(file)
        self.entry = entry
        self.reason = reason
        where = f"{self.file}: [[tool]] {entry}" if entry else self.file
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class PluginSpec:
    """One validated ``[[tool]]`` entry (paths resolved, defaults filled in)."""

    name: str
    degradation: str
    scale: int
    path: Path
    format: str
    input_range: str = "0-1"
    channel_order: str = "rgb"
    pad_multiple: int = 1
    device: str = "auto"
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    #: the TOML file the entry came from and the entry's 1-based position (for error messages).
    source: Path = Path()
    index: int = 0

    @property
    def entry(self) -> str:
        """How error messages name this entry: ``#<index> ('<name>')``."""
        return f"#{self.index} ({self.name!r})"

    def info(self) -> ToolInfo:
        """The planner-readable metadata of this plug-in."""
        desc = self.description or f"user {self.format} model {self.path.name}"
        return ToolInfo(
            name=self.name,
            degradation=self.degradation,
            scale=self.scale,
            kind="plugin",
            description=desc,
            tags=("plugin", *[t for t in self.tags if t != "plugin"]),
        )


# --------------------------------------------------------------------------- parsing


def _choice(file: Path, entry: str, key: str, value: str, choices: Sequence[str]) -> str:
    if value in choices:
        return value
    close = difflib.get_close_matches(value, list(choices), n=3)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else f"choose one of {', '.join(repr(c) for c in choices)}"
    raise PluginError(file, entry, f"{key} = {value!r} is not valid; {hint}")


def _infer_format(file: Path, entry: str, path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if suffix in _PICKLE_SUFFIXES:
        raise PluginError(
            file,
            entry,
            f"{path.name} looks like a pickle checkpoint ({suffix}), which is never loaded because unpickling runs code; "
            f'{_EXPORT_HOWTO} (if it is in fact a TorchScript archive, set format = "torchscript")',
        )
    if suffix == ".safetensors":
        raise PluginError(file, entry, f"{path.name} holds weights only, not a network; {_EXPORT_HOWTO}")
    raise PluginError(file, entry, f'cannot tell the format of {path.name} from its suffix; set format = "torchscript", "export" or "onnx"')


def _parse_entry(file: Path, index: int, raw: Any) -> PluginSpec:
    label = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise PluginError(file, label, f"must be a table, got {type(raw).__name__}; write [[tool]] followed by key = value lines")
    if isinstance(raw.get("name"), str):
        label = f"#{index + 1} ({raw['name']!r})"
    unknown = [k for k in raw if k not in _FIELDS]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, list(_FIELDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(_FIELDS)}"
        raise PluginError(file, label, f"unknown key {k!r}; {hint}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise PluginError(file, label, f"missing {', '.join(missing)}; every [[tool]] needs {', '.join(_REQUIRED)}")
    for key, value in raw.items():
        want = _FIELDS[key]
        # bool is an int subclass in Python; a TOML `true` is never a valid scale.
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise PluginError(
                file, label, f"{key} must be a TOML {'integer' if want is int else 'string' if want is str else 'array'}, got {type(value).__name__} {value!r}"
            )
    name = raw["name"].strip()
    if not name or any(c.isspace() for c in name):
        raise PluginError(file, label, f"name {raw['name']!r} must be non-empty without spaces")
    degradation = _choice(file, label, "degradation", raw["degradation"], DEGRADATIONS)
    if raw["scale"] not in (1, 4):
        raise PluginError(file, label, f"scale = {raw['scale']} is not valid; use 1, or 4 for super-resolution")
    path = Path(os.path.expanduser(raw["path"]))
    if not path.is_absolute():
        path = file.parent / path
    fmt = raw.get("format")
    fmt = _choice(file, label, "format", fmt, FORMATS) if fmt is not None else _infer_format(file, label, path)
    input_range = _choice(file, label, "input_range", raw.get("input_range", "0-1"), list(INPUT_RANGES))
    channel_order = _choice(file, label, "channel_order", raw.get("channel_order", "rgb").lower(), CHANNEL_ORDERS)
    pad_multiple = raw.get("pad_multiple", 1)
    if not 1 <= pad_multiple <= 1024:
        raise PluginError(file, label, f"pad_multiple = {pad_multiple} is not valid; use an integer from 1 to 1024")
    device = _choice(file, label, "device", raw.get("device", "auto"), DEVICES)
    tags = raw.get("tags", [])
    if not all(isinstance(t, str) and t for t in tags):
        raise PluginError(file, label, f"tags must be an array of non-empty strings, got {tags!r}")
    return PluginSpec(
        name=name,
        degradation=degradation,
        scale=raw["scale"],
        path=path,
        format=fmt,
        input_range=input_range,
        channel_order=channel_order,
        pad_multiple=pad_multiple,
        device=device,
        description=raw.get("description", "").strip(),
        tags=tuple(tags),
        source=file,
        index=index + 1,
    )


def parse_plugins(path: str | os.PathLike[str]) -> list[PluginSpec]:
    """Read and validate a plug-in TOML file; nothing is registered or loaded.

    Raises:
        PluginError: the file is missing or not TOML, an entry is invalid, two entries share a
            name, or a model file is missing / not a safe TorchScript or ``torch.export`` archive.
    """
    file = Path(path)
    if not file.is_file():
        raise PluginError(file, None, "plug-in file not found; pass the path of a TOML file (see examples/plugins/example.toml)")
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PluginError(file, None, f"not valid TOML ({exc}); see examples/plugins/example.toml") from None
    extra = [k for k in data if k != "tool"]
    if extra:
        raise PluginError(file, None, f"unknown top-level key {extra[0]!r}; a plug-in file holds only [[tool]] tables")
    entries = data.get("tool", [])
    if isinstance(entries, dict):
        raise PluginError(file, None, "[tool] is a single table; write [[tool]] (double brackets) once per model")
    if not isinstance(entries, list) or not entries:
        raise PluginError(file, None, "no [[tool]] entries; add one [[tool]] table per model")
    specs: list[PluginSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(entries):
        spec = _parse_entry(file, i, raw)
        if spec.name in seen:
            raise PluginError(file, f"#{i + 1} ({spec.name!r})", f"name {spec.name!r} is used by an earlier entry of this file; rename one")
        seen.add(spec.name)
        check_model_file(spec)
        specs.append(spec)
    return specs


# --------------------------------------------------------------------------- model files


def _zip_names(spec: PluginSpec) -> tuple[zipfile.ZipFile, list[str]]:
    """The archive and its member names with the archive's root folder stripped."""
    try:
        zf = zipfile.ZipFile(spec.path)
    except (zipfile.BadZipFile, OSError):
        raise PluginError(
            spec.source,
            spec.entry,
            f"{spec.path} is not a TorchScript or torch.export archive (not a zip file; a legacy torch.save pickle?); {_EXPORT_HOWTO}",
        ) from None
    return zf, [n.split("/", 1)[1] if "/" in n else n for n in zf.namelist()]


def check_model_file(spec: PluginSpec) -> None:
    """Check that ``spec.path`` exists and is a TorchScript / ``torch.export`` archive that loads without pickle.

    Raises:
        PluginError: missing file, wrong format, a ``torch.save`` pickle, or an export archive
            whose loading would unpickle Python objects.
    """
    if not spec.path.is_file():
        raise PluginError(spec.source, spec.entry, f"model file {spec.path} not found (paths are relative to the TOML file)")
    if spec.format == "onnx":
        _check_onnx_file(spec)
        return
    zf, names = _zip_names(spec)
    with zf:
        members = set(names)
        is_script = any(n.startswith("code/") for n in names) and "constants.pkl" in members
        is_export = "archive_format" in members
        is_pickle = "data.pkl" in members and not is_script
        if is_pickle:
            raise PluginError(
                spec.source,
                spec.entry,
                f"{spec.path.name} was written by torch.save (a pickle), which is never loaded because unpickling runs code; {_EXPORT_HOWTO}",
            )
        if spec.format == "torchscript" and not is_script:
            other = ' (it is a torch.export archive: set format = "export")' if is_export else ""
            raise PluginError(spec.source, spec.entry, f"{spec.path.name} is not a TorchScript archive{other}; {_EXPORT_HOWTO}")
        if spec.format == "export":
            if not is_export:
                other = ' (it is a TorchScript archive: set format = "torchscript")' if is_script else ""
                raise PluginError(spec.source, spec.entry, f"{spec.path.name} is not a torch.export archive{other}; {_EXPORT_HOWTO}")
            _check_export_archive(spec, zf)


#: the install hint for the optional ONNX runtime.
_ONNX_HOWTO = "install the ONNX runtime: pip install 'agentir-restore[onnx]' (or pip install onnxruntime)"


def _onnxruntime(spec: PluginSpec) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise PluginError(spec.source, spec.entry, f"{spec.path.name} is an ONNX model but onnxruntime is not installed; {_ONNX_HOWTO}") from None
    return onnxruntime


def _check_onnx_file(spec: PluginSpec) -> None:
    """Cheap checks of an ONNX file without loading it: the runtime is there and the file starts
    like a serialised ``ModelProto`` (field 1, ``ir_version``, a varint: byte ``0x08``)."""
    _onnxruntime(spec)
    with open(spec.path, "rb") as fh:
        head = fh.read(2)
    if len(head) < 2 or head[0] != 0x08:
        what = "a zip archive (TorchScript or torch.export? set format accordingly)" if head[:2] == b"PK" else "not an ONNX model"
        raise PluginError(spec.source, spec.entry, f"{spec.path.name} is {what}; export the model with torch.onnx.export, or fix format")


class _OnnxModel:
    """An ONNX model behind a torch-tensor call: ``N x 3 x H x W`` float in, float out."""

    def __init__(self, spec: PluginSpec, device: str) -> None:
        ort = _onnxruntime(spec)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.log_severity_level = 3  # errors only; warnings go through our own messages
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            elif spec.device == "cuda":
                raise PluginError(
                    spec.source, spec.entry, 'device needs CUDA but this onnxruntime has no CUDA provider; install onnxruntime-gpu or use device = "cpu"'
                )
        try:
            self.session = ort.InferenceSession(str(spec.path), sess_options=options, providers=providers)
        except Exception as exc:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise PluginError(spec.source, spec.entry, f"cannot load {spec.path.name} as onnx: {reason}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise PluginError(
                spec.source,
                spec.entry,
                f"{spec.path.name} takes {len(inputs)} inputs and gives {len(outputs)} outputs; a plug-in takes one image tensor N x 3 x H x W and returns one",
            )
        self.input = inputs[0].name
        self.half = inputs[0].type == "tensor(float16)"
        if inputs[0].type not in ("tensor(float)", "tensor(float16)"):
            raise PluginError(spec.source, spec.entry, f"{spec.path.name} takes {inputs[0].type}; a plug-in takes a float32 or float16 image tensor")
        self.shape = inputs[0].shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import numpy as np

        arr = x.detach().cpu().numpy().astype(np.float16 if self.half else np.float32, copy=False)
        try:
            y = self.session.run(None, {self.input: arr})[0]
        except Exception as exc:
            fixed = [d for d in self.shape if isinstance(d, int)]
            hint = f" (the graph has fixed input dimensions {self.shape}: export it with dynamic_axes for N, H and W, or set pad_multiple)" if fixed else ""
            raise RuntimeError(f"{' '.join(str(exc).split())[:300]}{hint}") from None
        return torch.from_numpy(np.ascontiguousarray(y)).to(x.device)


def _check_export_archive(spec: PluginSpec, zf: zipfile.ZipFile) -> None:
    """Refuse a ``.pt2`` archive whose ``torch.export.load`` would run Python pickle."""
    by_name = {n.split("/", 1)[1] if "/" in n else n: n for n in zf.namelist()}

    def bad(what: str) -> PluginError:
        return PluginError(
            spec.source,
            spec.entry,
            f"{spec.path.name} contains {what}, which torch.export.load would unpickle; re-export the model "
            "with plain tensor weights and tensor sample inputs (torch.export.save of a torch.export.export result)",
        )

    models = [n[len("models/") : -len(".json")] for n in by_name if n.startswith("models/") and n.endswith(".json")]
    if not models:
        raise PluginError(spec.source, spec.entry, f"{spec.path.name} holds no exported program (models/*.json); {_EXPORT_HOWTO}")
    for model in models:
        for kind, legacy in (("weights", f"data/weights/{model}.pt"), ("constants", f"data/constants/{model}.pt")):
            if legacy in by_name:
                raise bad(f"legacy pickled {kind} ({legacy})")
            cfg_name = f"data/{kind}/{model}_{kind}_config.json"
            if cfg_name not in by_name:
                continue
            try:
                config = json.loads(zf.read(by_name[cfg_name]).decode("utf-8")).get("config", {})
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
                raise PluginError(spec.source, spec.entry, f"{spec.path.name}: unreadable {cfg_name} ({exc}); re-export the model") from None
            for fqn, meta in config.items():
                if not isinstance(meta, dict) or meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                    raise bad(f"{kind[:-1]} {fqn!r} stored as a pickled object")
        sample = by_name.get(f"data/sample_inputs/{model}.pt")
        if sample is not None:
            payload = zf.read(sample)
            if payload:
                try:
                    torch.load(io.BytesIO(payload), weights_only=True)
                except Exception:
                    raise bad("sample inputs that are not plain tensors") from None


# --------------------------------------------------------------------------- the tool


def _resolve_device(spec: PluginSpec) -> str:
    if spec.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise PluginError(spec.source, spec.entry, 'device = "cuda" but CUDA is not available here; use device = "auto" or "cpu"')
    return spec.device


class PluginTool:
    """A user model behind the :class:`~agentir.toolbox.base.Tool` contract (see the module docstring).

    Built by the registry on first use: the constructor loads the model once.

    Raises:
        PluginError: the model file cannot be loaded (the message names the TOML file and entry).
    """

    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.degradation = spec.degradation
        self.scale = spec.scale
        self.device = _resolve_device(spec)
        self._per_image = False  # set once a batch of several images was refused by the model
        self._mul, self._add = INPUT_RANGES[spec.input_range]
        check_model_file(spec)  # the file may have changed since registration
        #: the loaded model: a torch module, or the ONNX session behind a tensor call.
        self._model: Callable[[torch.Tensor], torch.Tensor]
        try:
            if spec.format == "onnx":
                self._model = _OnnxModel(spec, self.device)
            elif spec.format == "torchscript":
                with warnings.catch_warnings():
                    # TorchScript is deprecated upstream but remains a supported plug-in format.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    model = torch.jit.load(str(spec.path), map_location=self.device)
                self._model = model.eval()
            else:
                program = torch.export.load(str(spec.path))
                self._model = program.module().to(self.device)
        except PluginError:
            raise
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PluginError(spec.source, spec.entry, f"cannot load {spec.path.name} as {spec.format}: {reason}") from exc
        log.info("plugin.loaded", tool=self.name, path=str(spec.path), format=spec.format, device=self.device)

    def __repr__(self) -> str:
        return f"PluginTool(name={self.name!r}, degradation={self.degradation!r}, path={str(self.spec.path)!r})"

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The model on a batch already in its range, order and padding; ``ToolError`` on failure."""
        try:
            if not self._per_image or x.shape[0] == 1:
                try:
                    return self._model(x)
                except Exception:
                    if x.shape[0] == 1:
                        raise
                    # A model exported with a static batch of 1 refuses larger batches: go one by one.
                    self._per_image = True
            return torch.cat([self._model(x[i : i + 1]) for i in range(x.shape[0])])
        except Exception as exc:
            text = " ".join(str(exc).split())[:300] or type(exc).__name__
            hint = ""
            if self.spec.format == "export" and ("Guard" in text or "size" in text.lower()):
                hint = "; export it with dynamic_shapes for H and W (torch.export.Dim) or set pad_multiple"
            raise ToolError(self.name, f"model {self.spec.path.name} failed on input {tuple(x.shape)}: {type(exc).__name__}: {text}{hint}") from exc

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Restore ``batch`` (``N x 3 x H x W`` RGB float in ``[0, 1]``); returns ``scale`` times the size.

        Raises:
            ToolError: bad batch layout or dtype, the model failed, or it returned the wrong
                shape or a non-float tensor.
        """
        check_batch(self.name, batch)
        n, _, h, w = batch.shape
        s = self.scale
        if n == 0 or h == 0 or w == 0:
            return batch.new_zeros((n, 3, h * s, w * s))
        x = torch.nan_to_num(batch.detach().to(self.device, torch.float32), nan=0.0).clamp(0.0, 1.0)
        if self.spec.channel_order == "bgr":
            x = x.flip(1)
        x = x * self._mul + self._add
        m = self.spec.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # reflect needs the pad to be smaller than the side; tiny images fall back to replicate.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        with torch.inference_mode():
            y = self._run(x.contiguous())
        if not isinstance(y, torch.Tensor):
            raise ToolError(self.name, f"model {self.spec.path.name} returned {type(y).__name__}, expected a tensor")
        want = (n, 3, (h + ph) * s, (w + pw) * s)
        if tuple(y.shape) != want:
            raise ToolError(
                self.name,
                f"model {self.spec.path.name} returned shape {tuple(y.shape)} for input {tuple(x.shape)}, expected {want}; "
                f"check scale = {s} and channel layout (N x 3 x H x W) in {self.spec.source.name}",
            )
        if not y.is_floating_point():
            raise ToolError(self.name, f"model {self.spec.path.name} returned {y.dtype}, expected a float tensor")
        y = y[:, :, : h * s, : w * s].float()
        y = (y - self._add) / self._mul
        if self.spec.channel_order == "bgr":
            y = y.flip(1)
        y = torch.nan_to_num(y, nan=0.0).clamp(0.0, 1.0)
        return y.to(device=batch.device, dtype=batch.dtype).contiguous()


# --------------------------------------------------------------------------- registration


def _factory(spec: PluginSpec):
    def build() -> PluginTool:
        return PluginTool(spec)

    return build


def load_plugins(path: str | os.PathLike[str], *, eager: bool = False) -> list[str]:
    """Register every ``[[tool]]`` of the plug-in file ``path``; returns their names in file order.

    Models load lazily on first ``TOOLS.get(name)`` (once: the registry caches them) unless
    ``eager`` is true, which loads them now so that a broken model fails here. Registration is
    all or nothing: on any error no entry of the file stays registered.

    Raises:
        PluginError: see :func:`parse_plugins`; also a name already registered (a built-in tool
            or another plug-in), a ``device = "cuda"`` without CUDA, or (``eager``) a model that
            fails to load.
    """
    import agentir.toolbox.tools  # noqa: F401 - built-in tools first, so that name clashes are seen

    specs = parse_plugins(path)
    for spec in specs:
        if spec.name in TOOLS:
            what = "a built-in tool" if _is_builtin(spec.name) else "an already registered plug-in"
            raise PluginError(spec.source, spec.entry, f"name {spec.name!r} is {what}; choose another name")
        _resolve_device(spec)
    done: list[str] = []
    try:
        for spec in specs:
            register_tool(spec.info(), _factory(spec))
            done.append(spec.name)
        if eager:
            for name in done:
                TOOLS.get(name)
    except Exception:
        unload_plugins(done)
        raise
    log.info("plugin.registered", file=str(path), tools=done)
    return done


#: resolved plug-in file -> the names it registered (for :func:`ensure_plugins`).
_LOADED: dict[Path, list[str]] = {}
#: the environment variable :func:`plugins_from_env` reads.
ENV_VAR = "AGENTIR_PLUGINS"


def ensure_plugins(path: str | os.PathLike[str], *, eager: bool = False) -> list[str]:
    """Like :func:`load_plugins`, but a file already loaded in this process is not loaded again.

    Entry points (the CLI, ``Restorer``) call this so that building several pipelines in one
    process registers a plug-in file once; its names are returned again.

    Raises:
        PluginError: as :func:`load_plugins`, the first time.
    """
    key = Path(path).resolve()
    names = _LOADED.get(key)
    if names is not None and all(n in TOOLS for n in names):
        return list(names)
    names = load_plugins(path, eager=eager)
    _LOADED[key] = list(names)
    return names


def plugins_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """Load the plug-in files named by ``$AGENTIR_PLUGINS`` (``os.pathsep``-separated), once each.

    Returns every registered plug-in name; an unset or empty variable loads nothing.

    Raises:
        PluginError: a named file is invalid (the message names it and the entry).
    """
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    names: list[str] = []
    for part in value.split(os.pathsep):
        if part.strip():
            names += ensure_plugins(part.strip())
    return names


def _is_builtin(name: str) -> bool:
    from agentir.toolbox.base import TOOL_INFO

    info = TOOL_INFO.get(name)
    return info is not None and info.kind != "plugin"


def unload_plugins(names: Sequence[str]) -> None:
    """Unregister the named plug-ins (and drop their loaded models); unknown names are ignored."""
    for name in names:
        if name in TOOLS:
            unregister_tool(name)
    for key in [k for k, v in _LOADED.items() if any(n in names for n in v)]:
        del _LOADED[key]


def plugin_table(names: Sequence[str] | None = None) -> list[Mapping[str, Any]]:
    """Metadata rows of the registered plug-ins (all, or ``names``), for listings and the planner."""
    from agentir.toolbox.base import TOOL_INFO

    rows: list[Mapping[str, Any]] = []
    for name, info in TOOL_INFO.items():
        if info.kind == "plugin" and (names is None or name in names):
            rows.append({"name": name, "degradation": info.degradation, "scale": info.scale, "description": info.description, "tags": list(info.tags)})
    return rows
