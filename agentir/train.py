"""``agentir train``: reproduce the learned parts of agentir with one command.

``agentir train perception [--out FILE] [--seed S] [--cache FILE] [--data DIR] [--workers N]``
    Refits the built-in perception's models (:mod:`agent_policies.perception.calibrate`): it
    synthesises the severity-level and benchmark-combination images of ``BENCHMARK.md`` from the
    clean images in ``--data`` (``CBSD68/``, ``McMaster/``, ``Set5/``; fit on McMaster + Set5 + the
    first 34 CBSD68 images sorted by name, the last 34 held out), computes the analytic features,
    fits the per-degradation heads and writes the calibration JSON (default: the shipped
    ``agent_policies/perception/analytic_calibration.json``, so a refit with the default seed
    reproduces it) with the held-out accuracy in it. Deterministic for a given ``--seed`` and data.
    ``--cache FILE`` keeps the synthesised features: when the file exists the synthesis (the
    longer half) is skipped; otherwise it is written for the next run. On two shared CPU cores:
    about 6-11 minutes of synthesis + features and 4-5 minutes of fitting.

``agentir train tool NAME``
    Learned restoration tools are not built yet (see the README's roadmap): exits 2 with that
    message and does nothing.

Exit codes: 0 trained; 1 training failed (missing data folder, a cache from another seed);
2 usage error or not built yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main_train"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DATA = Path("/work/shared/data/clean")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_parser(prog: str = "agentir train") -> argparse.ArgumentParser:
    """The ``agentir train`` argument parser (subcommands ``perception`` and ``tool``)."""
    from agent_policies.perception.calibrate import DEFAULT_OUT

    parser = argparse.ArgumentParser(prog=prog, description="Reproduce agentir's learned components.")
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = sub.add_parser("perception", help="refit the built-in perception models (writes the calibration JSON)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"calibration JSON to write (default: the shipped {DEFAULT_OUT.name})")
    p.add_argument("--seed", type=int, default=20250101, help="seed of the synthesis and the fit (default 20250101, the shipped one)")
    p.add_argument("--cache", type=Path, default=None, metavar="FILE", help="feature cache: read when it exists (skips the synthesis), else written")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with CBSD68/, McMaster/, Set5/ (default {DEFAULT_DATA})")
    p.add_argument("--workers", type=int, default=2, help="processes for the synthesis (default 2)")
    t = sub.add_parser("tool", help="train a learned restoration tool (not built yet)")
    t.add_argument("name", metavar="NAME")
    return parser


def main_train(argv: Sequence[str]) -> int:
    """Entry point of ``agentir train`` (see the module docstring); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.what == "tool":
        _err(f"error: learned tools are not built yet (see the README's roadmap); nothing was trained for {args.name!r}. The classical tools are listed by `agentir tools`.")
        return EXIT_USAGE
    from agent_policies.perception import calibrate

    if args.workers < 1:
        _err(f"error: --workers must be at least 1, got {args.workers}")
        return EXIT_USAGE
    if args.cache is None or not args.cache.exists():
        try:
            calibrate.split_images(args.data)  # fail before spending minutes
        except FileNotFoundError as exc:
            _err(f"error: {exc}")
            return EXIT_FAILED
    forwarded = ["--data", str(args.data), "--out", str(args.out), "--seed", str(args.seed), "--workers", str(args.workers)]
    if args.cache is not None:
        forwarded += ["--cache", str(args.cache)]
    cached = args.cache is not None and args.cache.exists()
    _err(f"training perception: seed {args.seed}, " + (f"features from cache {args.cache}" if cached else f"synthesising from {args.data}") + f", writing {args.out}")
    t0 = time.perf_counter()
    try:
        rc = calibrate.main(forwarded)
    except SystemExit as exc:  # calibrate reports a cache/seed mismatch this way
        if exc.code in (0, None):
            rc = 0
        else:
            _err(f"error: {exc.code}" if isinstance(exc.code, str) else "error: calibration failed")
            return EXIT_FAILED
    except (FileNotFoundError, ValueError, OSError) as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    _err(f"trained perception in {time.perf_counter() - t0:.0f} s; wrote {args.out}")
    return EXIT_OK if rc == 0 else EXIT_FAILED
