"""The one split of the clean images every learned part of agentir uses.

Fit on McMaster + Set5 + the first half of CBSD68 by file name; hold out the second half of
CBSD68. Perception is calibrated, learned tools are trained and self-exploration explores on the
fit images only; ``agentir degrade --split held-out`` builds benchmarks from the held-out ones.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FOLDERS", "split_images"]

#: The sub-folders of the clean-image root (``../shared/data/clean``).
FOLDERS = ("CBSD68", "McMaster", "Set5")


def split_images(root: str | Path, *, require_both: bool = False) -> tuple[list[Path], list[Path]]:
    """``(fit, held_out)`` PNG paths under ``root``.

    Raises:
        FileNotFoundError: a folder is missing, or (``require_both``) there are no fit or no
            held-out images.
    """
    root = Path(root)
    for sub in FOLDERS:
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub} not found; pass --data pointing at the clean image folders ({', '.join(s + '/' for s in FOLDERS)})")
    cbsd = sorted((root / "CBSD68").glob("*.png"))
    half = len(cbsd) // 2
    fit = sorted((root / "McMaster").glob("*.png")) + sorted((root / "Set5").glob("*.png")) + cbsd[:half]
    if require_both and (not fit or not cbsd[half:]):
        raise FileNotFoundError(f"no fit or held-out PNG images under {root}")
    return fit, cbsd[half:]
