"""Regenerate the shipped clean images from scikit-image's sample data.

Writes

* ``tests/data/clean/{astronaut,coffee,chelsea,rocket}.png``: 128x128 crops for tests;
* ``examples/clean/{astronaut,coffee,chelsea}.png``: 256 wide x 192 high crops for the demo.

Each image is a fixed crop of a ``skimage.data`` photograph, optionally reduced first by an
exact integer box average (``PIL.Image.reduce``), which also softens the JPEG artefacts of
the ``rocket`` source. Nothing is random, so a run reproduces the shipped pixels exactly as
long as scikit-image ships the same source pixels; the script checks that against recorded
hashes and stops if they differ. Licences: see ``tests/data/LICENSE.md``.

Usage (from the repository root)::

    .venv/bin/python scripts/make_examples.py          # (re)write the images
    .venv/bin/python scripts/make_examples.py --check  # verify the shipped images, write nothing

Degraded versions are not made here; they come from ``agentir.toolbox.degrade``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script: make the repository importable
    sys.path.insert(0, str(REPO))

from agentir.imageio import load_image, save_png_atomic  # noqa: E402 - needs the sys.path entry added above

# sha256 of the source arrays (C order, uint8) as scikit-image 0.26.0 returns them.
SOURCE_SHA256: dict[str, str] = {
    "astronaut": "a8c429c18afa7b0fd5673e598d73a21225d94c864a71bbb3885126fdecb41071",
    "coffee": "0ce2b51640b9c95f19617f03eabf40c3f0368589cc1ee1190b70966165ac184f",
    "chelsea": "416b729128bfb2c3d1eb69bf9b1734a796293abc17939267b2dc94f8a5784031",
    "rocket": "3d4435cc745752b7f9724df88c6e18817de3ce7e3d2d71c55f85f7831e68f197",
}


@dataclass(frozen=True)
class Crop:
    """One shipped image: ``source`` reduced by ``reduce``, then cropped at ``(x, y)``."""

    out: str
    source: str
    reduce: int
    x: int
    y: int
    width: int
    height: int


CROPS: tuple[Crop, ...] = (
    # tests/data/clean: 128x128, one per source.
    Crop("tests/data/clean/astronaut.png", "astronaut", 2, 48, 0, 128, 128),  # face, collar
    Crop("tests/data/clean/coffee.png", "coffee", 2, 81, 8, 128, 128),  # cup, crema
    Crop("tests/data/clean/chelsea.png", "chelsea", 2, 50, 10, 128, 128),  # eyes, fur
    Crop("tests/data/clean/rocket.png", "rocket", 2, 96, 85, 128, 128),  # rocket, lights, night sky
    # examples/clean: 256 wide x 192 high.
    Crop("examples/clean/astronaut.png", "astronaut", 2, 0, 0, 256, 192),
    Crop("examples/clean/coffee.png", "coffee", 2, 22, 4, 256, 192),
    Crop("examples/clean/chelsea.png", "chelsea", 1, 110, 80, 256, 192),
)


def source_image(name: str) -> np.ndarray:
    """Return the scikit-image sample ``name`` as RGB uint8, checked against its hash."""
    import skimage.data

    img = np.ascontiguousarray(getattr(skimage.data, name)(), dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise SystemExit(f"skimage.data.{name}() is not an RGB image (shape {img.shape})")
    digest = hashlib.sha256(img.tobytes()).hexdigest()
    expected = SOURCE_SHA256.get(name)
    if expected and digest != expected:
        raise SystemExit(
            f"skimage.data.{name}() differs from the recorded source (sha256 {digest}); "
            "this scikit-image ships other pixels: install scikit-image 0.26.0 or update "
            "SOURCE_SHA256 and the shipped images together"
        )
    return img


def render(crop: Crop, source: np.ndarray) -> np.ndarray:
    """Cut one shipped image out of its source array."""
    im = Image.fromarray(source)
    if crop.reduce > 1:
        im = im.reduce(crop.reduce)
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    if crop.x + crop.width > w or crop.y + crop.height > h:
        raise SystemExit(f"{crop.out}: crop exceeds the {w}x{h} source {crop.source}")
    out = arr[crop.y : crop.y + crop.height, crop.x : crop.x + crop.width]
    return np.ascontiguousarray(out)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) every image in :data:`CROPS`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify, do not write")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)

    sources: dict[str, np.ndarray] = {}
    stale: list[str] = []
    for crop in CROPS:
        if crop.source not in sources:
            sources[crop.source] = source_image(crop.source)
        img = render(crop, sources[crop.source])
        path = args.root / crop.out
        if args.check:
            if not path.is_file() or not np.array_equal(load_image(path), img):
                stale.append(crop.out)
        else:
            save_png_atomic(path, img)
            print(f"wrote {crop.out} ({img.shape[1]}x{img.shape[0]}, {path.stat().st_size} bytes)")
    if stale:
        listing = ", ".join(stale)
        print(f"out of date: {listing}; run scripts/make_examples.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
