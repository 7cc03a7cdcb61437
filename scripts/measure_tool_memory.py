"""Measure each whole-image tool's peak memory per pixel, for the Executor's memory cap.

    python scripts/measure_tool_memory.py [--megapixels 2] [-o agentir/toolbox/tool_memory.json]

Each tool that must see the whole image (tagged ``global``; those with a held-parameter tile path
still do on images under the tile threshold) runs once,
in a fresh process, on a noisy photo-like image of ``--megapixels``; the process's peak resident
memory (VmHWM) minus its peak just before the call, divided by the pixels, is the tool's bytes
per pixel (rounded up to 16). The Executor refuses to run such a tool on an image whose
estimate passes its memory cap (``memory_cap``), instead of letting the machine swap or the
kernel kill it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, math, os, sys
import numpy as np
import torch
import agentir.toolbox.tools  # noqa: F401
from agentir.actors.scheduler import to_batch
from agentir.bench.sizes import proc_status_kb
from agentir.toolbox.base import TOOLS

name, mp = sys.argv[1], float(sys.argv[2])
w = int(math.sqrt(mp * 1e6 * 4 / 3)); h = int(w * 3 / 4)
rng = np.random.default_rng(0)
y, x = np.mgrid[0:h, 0:w].astype(np.float32)
img = np.stack([x / w, y / h, 0.5 + 0.4 * np.sin(x / 37 + y / 53)], -1) * 180 + rng.normal(0, 12, (h, w, 3))
img = np.clip(img, 0, 255).astype(np.uint8)
tool = TOOLS.get(name)
with torch.inference_mode():
    tool(to_batch([img[:64, :64]]))  # warm-up: lazy imports and caches are not the image's cost
    before = proc_status_kb(os.getpid(), "VmHWM") * 1024
    tool(to_batch([img]))
after = proc_status_kb(os.getpid(), "VmHWM") * 1024
print(json.dumps({"tool": name, "pixels": h * w, "bytes": max(0, after - before)}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--megapixels", type=float, default=2.0)
    p.add_argument("-o", "--out", type=Path, default=Path("agentir/toolbox/tool_memory.json"))
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import agentir.toolbox.tools  # noqa: F401
    from agentir.toolbox.base import TOOL_INFO

    names = sorted(n for n, info in TOOL_INFO.items() if "global" in info.tags)
    per_pixel: dict[str, int] = {}
    for name in names:
        run = subprocess.run([sys.executable, "-c", CHILD, name, str(args.megapixels)], capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            print(f"{name}: failed: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        row = json.loads(run.stdout.strip().splitlines()[-1])
        per_pixel[name] = int(math.ceil(row["bytes"] / row["pixels"] / 16) * 16)
        print(f"{name:28s} {per_pixel[name]:6d} bytes / pixel", flush=True)
    doc = {
        "about": "peak bytes per pixel of each whole-image tool (scripts/measure_tool_memory.py); the Executor's memory cap reads it",
        "command": "python scripts/measure_tool_memory.py --megapixels " + f"{args.megapixels:g}",
        "megapixels": args.megapixels,
        "bytes_per_pixel": per_pixel,
    }
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
