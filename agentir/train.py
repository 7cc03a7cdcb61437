"""``agentir train``: reproduce the learned parts of agentir with one command.

``agentir train perception [--out FILE] [--seed S] [--cache FILE] [--data DIR] [--workers N]``
    Refits the built-in perception's models (:mod:`agentir.agent_policies.perception.calibrate`): it
    synthesises the severity-level and benchmark-combination images of ``BENCHMARK.md`` from the
    clean images in ``--data`` (``CBSD68/``, ``McMaster/``, ``Set5/``; fit on McMaster + Set5 + the
    first 34 CBSD68 images sorted by name, the last 34 held out), computes the analytic features,
    fits the per-degradation heads and writes, each atomically, the heads' arrays as safetensors
    and the metadata JSON (default: the shipped ``agent_policies/perception/analytic_heads.safetensors``
    and ``analytic_calibration.json``, so a refit with the default seed reproduces them; a custom
    ``--out X.json`` writes ``X.safetensors`` next to it) with the held-out accuracy in the JSON.
    Deterministic for a given ``--seed`` and data. ``--cache FILE`` keeps the synthesised features:
    when the file exists the synthesis (the longer half) is skipped, except for feature groups the
    cache lacks, which are computed on a fresh synthesis of the same seed and added to it;
    otherwise it is written for the next run. On two shared CPU cores:
    about 6-11 minutes of synthesis + features and 4-5 minutes of fitting.

``agentir train tool NAME [--steps N] [--seed S] [--data DIR] [--out DIR] [--weights-out FILE] [--resume | --fresh] [--threads T]``
    Trains the learned restoration tool ``NAME`` (``cnn_denoise``, ``cnn_dejpeg``, ``cnn_sr``,
    ``cnn_motion_deblur``, ``allinone``, ``cnn_defocus_deblur``, ``cnn_derain``;
    :mod:`agentir.toolbox.learned.train`): pairs synthesised with ``agentir.toolbox.degrade`` from the same fit
    split (held-out CBSD68 half never trained on), Adam + cosine learning rate, L1 loss, seeded.
    Checkpoints go to ``OUT/NAME/`` (default ``out/train``) every ``--ckpt-every`` steps and a
    rerun continues them (``--fresh`` starts over); the final weights are written atomically to
    ``--weights-out`` (default the shipped ``toolbox/weights/NAME.safetensors``) with the held-out
    PSNR (medium and high severity, last 34 CBSD68 images) printed and stored in their metadata.
    Each default run takes at most about 30 minutes on 2 CPU threads. An unknown ``NAME`` exits 2
    with the list of trainable names.

Exit codes: 0 trained; 1 training failed (missing data folder, a cache from another seed, a
checkpoint from another run); 2 usage error (unknown tool name, bad option).
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
DEFAULT_VIDEO = Path("/work/shared/data/video")


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_parser(prog: str = "agentir train") -> argparse.ArgumentParser:
    """The ``agentir train`` argument parser (subcommands ``perception`` and ``tool``)."""
    from agentir.agent_policies.perception.calibrate import DEFAULT_OUT

    parser = argparse.ArgumentParser(prog=prog, description="Reproduce agentir's learned components.")
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    p = sub.add_parser("perception", help="refit the built-in perception models (writes the calibration JSON and its safetensors heads)")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"calibration JSON to write (default: the shipped {DEFAULT_OUT.name}); the heads go next to it as safetensors",
    )
    p.add_argument("--seed", type=int, default=20250101, help="seed of the synthesis and the fit (default 20250101, the shipped one)")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="FILE",
        help="feature cache: read when it exists (skips the synthesis; feature groups it lacks are added), else written",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder with CBSD68/, McMaster/, Set5/ (default {DEFAULT_DATA})")
    p.add_argument(
        "--video",
        type=Path,
        default=DEFAULT_VIDEO,
        help=f"folder with the camera clips; the first 10 asl_* clips by name are fit clips, the rest held out (default {DEFAULT_VIDEO})",
    )
    p.add_argument("--workers", type=int, default=2, help="processes for the synthesis (default 2)")
    from agentir.toolbox.learned.train import build_parser as tool_parser

    sub.add_parser("judge", add_help=False, help="refit the step judge of the judge reflection (agentir train judge --help)")
    t = sub.add_parser("tool", help="train a learned restoration tool (writes toolbox/weights/NAME.safetensors)")
    tool_parser(t)
    return parser


def main_train(argv: Sequence[str]) -> int:
    """Entry point of ``agentir train`` (see the module docstring); returns the exit code."""
    argv = list(argv)
    if argv[:1] == ["judge"]:
        # ``agentir train judge [--data DIR] [--cache FILE] [--seed S] [--workers N]``: refits the
        # step judge (agent_policies/reflection/judge.json + judge.safetensors).
        from agentir.agent_policies.reflection.fit_judge import main_train_judge

        return main_train_judge(argv[1:])
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.what == "tool":
        from agentir.toolbox.learned.train import main as train_tool

        return train_tool(args=args)
    from agentir.agent_policies.perception import calibrate
    from agentir.agent_policies.perception.realdata import split_clips

    if args.workers < 1:
        _err(f"error: --workers must be at least 1, got {args.workers}")
        return EXIT_USAGE
    if args.cache is None or not args.cache.exists():
        try:
            calibrate.split_images(args.data)  # fail before spending minutes
            split_clips(args.video)
        except FileNotFoundError as exc:
            _err(f"error: {exc}")
            return EXIT_FAILED
    forwarded = ["--data", str(args.data), "--video", str(args.video), "--out", str(args.out), "--seed", str(args.seed), "--workers", str(args.workers)]
    if args.cache is not None:
        forwarded += ["--cache", str(args.cache)]
    cached = args.cache is not None and args.cache.exists()
    _err(
        f"training perception: seed {args.seed}, "
        + (f"features from cache {args.cache}" if cached else f"synthesising from {args.data}")
        + f", writing {args.out}"
    )
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
    _err(f"trained perception in {time.perf_counter() - t0:.0f} s; wrote {args.out} and {calibrate.default_weights_path(args.out)}")
    return EXIT_OK if rc == 0 else EXIT_FAILED
