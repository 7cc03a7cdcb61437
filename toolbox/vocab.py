"""The shared vocabulary: degradation names, severity levels and subtask names.

Torch-free on purpose so that every package (the bus included) may import it.
The names and their order follow ``BENCHMARK.md``.
"""

from __future__ import annotations

#: The eight degradations, in the order ``BENCHMARK.md`` lists them.
DEGRADATIONS: tuple[str, ...] = (
    "low_resolution",
    "noise",
    "jpeg",
    "dark",
    "haze",
    "motion_blur",
    "defocus_blur",
    "rain",
)

#: The five severity levels, mildest first. ``very_low`` means absent.
LEVELS: tuple[str, ...] = ("very_low", "low", "medium", "high", "very_high")

#: A degradation "is present" (becomes a subtask) at this level or worse.
PRESENT_AT = "medium"

#: Subtask name for each degradation (what a tool does about it).
SUBTASKS: dict[str, str] = {
    "low_resolution": "super_resolution",
    "noise": "denoising",
    "jpeg": "jpeg_artifact_removal",
    "dark": "brightening",
    "haze": "dehazing",
    "motion_blur": "motion_deblurring",
    "defocus_blur": "defocus_deblurring",
    "rain": "deraining",
}


def level_index(level: str) -> int:
    """Return the rank of ``level`` (0 = very_low ... 4 = very_high).

    Raises:
        ValueError: ``level`` is not one of :data:`LEVELS`.
    """
    try:
        return LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown severity level {level!r}; expected one of {', '.join(LEVELS)}") from None


def is_present(level: str) -> bool:
    """True when ``level`` is ``medium`` or worse, i.e. the degradation needs a subtask."""
    return level_index(level) >= level_index(PRESENT_AT)


def check_degradation(name: str) -> str:
    """Return ``name`` if it is a known degradation, else raise ``ValueError`` with close matches."""
    if name in DEGRADATIONS:
        return name
    import difflib

    close = difflib.get_close_matches(name, DEGRADATIONS, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; expected one of {', '.join(DEGRADATIONS)}"
    raise ValueError(f"unknown degradation {name!r}{hint}")
