#!/usr/bin/env bash
# The GPU checks in one go: `pytest -m gpu`, the kernel and throughput benchmarks, and the stream
# benchmark at 1080p on a clip this script makes from the repo's own images; writes ONE JSON file.
#
#   bash scripts/gpu_check.sh [OUT.json]      # default: $OUT/gpu_check.json, else out/gpu_check.json
#
# Meant for a bare CUDA machine with plain python3 (torch, triton, numpy, opencv, aiohttp, anyio,
# msgpack, pytest) and no ../shared: packages it lacks (structlog, pytest-asyncio) are installed
# from wheels in a git-ignored folder when one is there (.whl/ or .device/wheels/, e.g. made with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
# -d .whl structlog pytest-asyncio`). Without CUDA it still runs, on small sizes, and records
# "cuda": false (a dry run of the script itself, not a measurement). Each step has a time limit;
# a failing step is recorded with its exit status and the end of its output, and the rest go on.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUTFILE=${1:-${OUT:-$ROOT/out}/gpu_check.json}
mkdir -p "$(dirname "$OUTFILE")"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/agentir-gpu.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- packages the device machine lacks, from carried wheels -------------------------------------
for wheels in .whl .device/wheels; do
  if ls "$wheels"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$wheels"/*.whl \
      && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

CUDA=$("$PY" -c 'import torch; print(1 if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)
if [ "$CUDA" = 1 ]; then
  SIZE=1920x1080; KSIZES="540x960 1080x1920"; REPEATS=20; FRAMES=120; TSIZE=512x512; BUDGET=16
else
  SIZE=320x180; KSIZES="64x96"; REPEATS=2; FRAMES=12; TSIZE=64x64; BUDGET=50
fi

# step NAME TIMEOUT CMD...: runs CMD, keeps stdout in $WORK/NAME.out, the exit status in NAME.rc.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" >&2
  timeout "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
  echo $? >"$WORK/$name.rc"
  tail -c 4000 "$WORK/$name.err" >&2
}

step env 60 "$PY" - <<'EOF'
import json, platform
import torch
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.cuda.is_available()}
try:
    import triton
    info["triton"] = triton.__version__
except ImportError:
    info["triton"] = None
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(device=p.name, sm=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count)
print(json.dumps(info))
EOF

# The GPU tests (they skip without CUDA). -p no:cacheprovider: nothing written into the repo.
step gpu_tests 600 "$PY" -m pytest -m gpu tests -q -p no:cacheprovider -o addopts="" --junitxml="$WORK/gpu_tests.xml"

step kernels 300 "$PY" -m agentir bench kernels --sizes $KSIZES --repeats "$REPEATS" --json
step throughput_cnn 300 "$PY" -m agentir bench throughput --jobs 16 --compare --rounds 2 --tool bench_cnn --size "$TSIZE" --json

# A 1080p clip (a slow pan over a shipped picture, upscaled), as PNG frames in a temporary folder.
step make_clip 120 "$PY" - "$WORK/clip" "$SIZE" "$FRAMES" <<'EOF'
import sys
from pathlib import Path
import cv2
import numpy as np
out, size, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
w, h = (int(v) for v in size.split("x"))
img = cv2.imread("examples/clean/astronaut.png")
big = cv2.resize(img, (int(w * 1.25), int(w * 1.25 * img.shape[0] / img.shape[1]) + h), interpolation=cv2.INTER_CUBIC)
out.mkdir(parents=True)
span = big.shape[1] - w
for i in range(n):
    x = int(span * i / max(1, n - 1))
    cv2.imwrite(str(out / f"frame_{i:04d}.png"), np.ascontiguousarray(big[:h, x : x + w]))
print(f'{{"frames": {n}, "size": "{size}"}}')
EOF
step stream 600 "$PY" -m agentir bench stream "$WORK/clip" --degrade dark+noise --max-frames "$FRAMES" --agent-frames 3 --max-frame-ms "$BUDGET" --json

# --- one JSON file --------------------------------------------------------------------------------
"$PY" - "$WORK" "$OUTFILE" "$CUDA" <<'EOF'
import json, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path
work, outfile, cuda = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
report = {"format": "agentir-gpu-check", "version": 1, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cuda": cuda}
if not cuda:
    report["note"] = "no CUDA: a dry run on small sizes (checks the script, measures nothing worth reporting)"
for name in ("env", "gpu_tests", "kernels", "throughput_cnn", "make_clip", "stream"):
    rc_file = work / f"{name}.rc"
    entry = {"rc": int(rc_file.read_text().strip()) if rc_file.exists() else None}
    text = (work / f"{name}.out").read_text(errors="replace") if (work / f"{name}.out").exists() else ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # A step prints one JSON document: the whole output (pretty-printed), else its last line.
    entry["result"] = None
    for candidate in (text, lines[-1] if lines else ""):
        try:
            entry["result"] = json.loads(candidate)
            break
        except json.JSONDecodeError:
            continue
    if entry["result"] is None:
        entry["stdout_tail"] = text[-2000:]
    if entry["rc"] not in (0, None):
        entry["stderr_tail"] = (work / f"{name}.err").read_text(errors="replace")[-2000:]
    report[name] = entry
xml = work / "gpu_tests.xml"
if xml.exists():
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    if suite is not None:
        report["gpu_tests"]["counts"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
outfile.write_text(json.dumps(report, indent=1) + "\n")
print(f"wrote {outfile}")
EOF
