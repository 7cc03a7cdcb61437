"""Make the demo's degraded inputs from the shipped clean crops (reproducible).

Run from the repository root: ``python scripts/make_degraded_examples.py``. Each example gets one
benchmark combination with the test-set parameters of BENCHMARK.md and a fixed seed; the drawn
parameters go to ``examples/degraded/params.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agentir.imageio import load_image, save_png_atomic, write_text_atomic
from agentir.toolbox.degrade import degrade_chain

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "astronaut": ("noise", "jpeg"),
    "coffee": ("dark", "noise"),
    "chelsea": ("motion_blur", "jpeg"),
}
SEED = 2025


def main() -> None:
    out = ROOT / "examples" / "degraded"
    params = {}
    for i, (name, combo) in enumerate(EXAMPLES.items()):
        clean = load_image(ROOT / "examples" / "clean" / f"{name}.png")
        lq, drawn = degrade_chain(clean, combo, np.random.default_rng([SEED, i]))
        save_png_atomic(out / f"{name}.png", lq)
        params[name] = {"combination": "+".join(combo), "params": drawn}
    write_text_atomic(out / "params.json", json.dumps(params, indent=2) + "\n")
    print(f"wrote {len(EXAMPLES)} degraded examples to {out}")


if __name__ == "__main__":
    main()
