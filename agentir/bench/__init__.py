"""``agentir bench``: compare restoration policies on a benchmark built by ``agentir degrade``.

``agentir bench DATA_DIR [--policies default,random,fixed,no-reflection,no-rollback,input,random-gt]
[--workers N] [--resume | --overwrite] [--out DIR] [--limit-per-combo N] [--groups A,B,C]
[--samples N] [--perception NAME] [--max-tool-calls N] [--job-timeout S] [--report-only] [-q]``

Runs each policy over the manifest's images (:mod:`agentir.bench.runner`), then writes the
tables, ``results.json`` / ``results.csv``, charts and ``report.html`` (:mod:`agentir.bench.report`)
into ``--out`` (default ``DATA_DIR/bench``) and prints the tables.

Exit codes: 0 every image scored; 1 some images failed or could not be scored (one line each on
stderr; the results still cover the rest); 2 usage error (unknown policy or group, missing
benchmark, an existing run without ``--resume`` / ``--overwrite``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from agentir.bench.runner import (
    DEFAULT_POLICIES,
    POLICIES,
    BenchError,
    collect_results,
    open_benchmark,
    parse_groups,
    parse_policies,
    run_bench,
    select_items,
)

__all__ = ["build_parser", "main_bench"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser(prog: str = "agentir bench") -> argparse.ArgumentParser:
    """The ``agentir bench`` argument parser."""
    p = argparse.ArgumentParser(prog=prog, description="Run restoration policies over a benchmark (agentir degrade) and report PSNR / SSIM / cost.")
    p.add_argument("data_dir", metavar="DATA_DIR", help="benchmark folder with manifest.json (from `agentir degrade`)")
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_POLICIES),
        help="comma-separated; " + "; ".join(f"{k}: {v.description}" for k, v in POLICIES.items()) + f" (default: {','.join(DEFAULT_POLICIES)})",
    )
    p.add_argument("--workers", type=int, default=2, help="images restored concurrently per policy (default 2)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in --out, skipping images already done")
    mode.add_argument("--overwrite", action="store_true", help="discard the results already in --out and start over")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default DATA_DIR/bench)")
    p.add_argument("--limit-per-combo", type=int, default=None, metavar="N", help="only the first N images of each combination")
    p.add_argument("--groups", default=None, help="comma-separated groups (default: all in the benchmark)")
    p.add_argument("--samples", type=int, default=2, metavar="N", help="images per combination kept and shown in report.html (default 2)")
    p.add_argument("--perception", default="analytic", help="perception policy (default analytic)")
    p.add_argument("--max-tool-calls", type=int, default=None, metavar="N", help="tool-call budget per image (default: the pipeline's)")
    p.add_argument("--job-timeout", type=float, default=600.0, metavar="S", help="seconds before one image's job counts as failed (default 600)")
    p.add_argument("--report-only", action="store_true", help="run nothing; rebuild the tables and report from the results in --out")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


#: ``agentir bench NAME ...`` sub-benchmarks: name -> "module:function(argv) -> exit code".
SUB_BENCHMARKS: dict[str, str] = {
    "clean": "agentir.bench.clean:main_bench_clean",
    "cluster": "agentir.bench.cluster:main_bench_cluster",
    "kernels": "agentir.kernels.bench:main",
    "perception": "agentir.bench.perception:main_bench_perception",
    "serve": "agentir.bench.serve:main_bench_serve",
    "sizes": "agentir.bench.sizes:main_bench_sizes",
    "stream": "agentir.bench.stream:main_bench_stream",
    "tools": "agentir.bench.tools:main_bench_tools",
    "throughput": "agentir.bench.throughput:main_bench_throughput",
}


def _run_sub_benchmark(name: str, argv: list[str]) -> int:
    import importlib

    module, _, func = SUB_BENCHMARKS[name].partition(":")
    try:
        entry = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError):
        print(f"error: 'agentir bench {name}' is not built yet (see the README's roadmap); nothing was done", file=sys.stderr)
        return 2
    code = entry(argv)
    return 0 if code is None else int(code)


def main_bench(argv: list[str] | Sequence[str]) -> int:
    """Entry point of ``agentir bench`` (see the module docstring); returns the exit code.

    ``agentir bench clean|cluster|kernels|perception|serve|sizes|stream|tools|throughput ...`` run the named sub-benchmark instead.
    """
    import anyio

    argv = list(argv)
    if argv and argv[0] in SUB_BENCHMARKS:
        return _run_sub_benchmark(argv[0], argv[1:])

    from agentir.bench.report import format_tables, write_report
    from agentir.bench.runner import default_restorer_factory
    from agentir.toolbox.registry import UnknownNameError

    parser = build_parser()
    args = parser.parse_args(list(argv))
    out = args.out or f"{args.data_dir.rstrip('/')}/bench"
    command = "agentir bench " + " ".join(shlex.quote(a) for a in argv)
    try:
        if args.workers < 1:
            raise BenchError(f"--workers must be at least 1, got {args.workers}")
        if args.samples < 0:
            raise BenchError(f"--samples must be 0 or more, got {args.samples}")
        if args.max_tool_calls is not None and args.max_tool_calls < 0:
            raise BenchError(f"--max-tool-calls must be 0 or more, got {args.max_tool_calls}")
        common = dict(policies=args.policies, groups=args.groups, limit_per_combo=args.limit_per_combo)
        if args.report_only:
            run = collect_results(args.data_dir, out, **common)
        else:
            # Check the cheap things (names, benchmark, selection) before loading perception.
            manifest, _ = open_benchmark(args.data_dir)
            select_items(manifest, parse_groups(args.groups, manifest), args.limit_per_combo)
            if any(POLICIES[n].restores for n in parse_policies(args.policies)):
                _check_perception(args.perception)
            options = {} if args.max_tool_calls is None else {"max_tool_calls": args.max_tool_calls}
            factory = default_restorer_factory(perception=args.perception, job_timeout=args.job_timeout, options=options)

            async def go() -> dict:
                return await run_bench(
                    args.data_dir,
                    out,
                    workers=args.workers,
                    resume=args.resume,
                    overwrite=args.overwrite,
                    samples_per_combo=args.samples,
                    restorer_factory=factory,
                    progress=not args.quiet,
                    **common,
                )

            run = anyio.run(go)
        summary = write_report(run, out, args.data_dir, command=command, samples_per_combo=args.samples)
    except (BenchError, UnknownNameError) as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    except (ValueError, OSError) as exc:  # e.g. a perception calibration missing, a folder not writable
        _err(f"error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _err(f"interrupted; finished images are kept in {out}/results.jsonl: continue with --resume")
        return 130
    print(format_tables(summary, run["policies"]), flush=True)
    bad = [r for r in run["records"] if r.get("status") in ("failed", "error")]
    note = f"; resumed {run['skipped']} done before" if run["skipped"] else ""
    _err(f"ran {run['ran']} (policy, image) pairs{note}; results in {out}/results.json, report in {out}/report.html")
    if bad:
        _err(f"{len(bad)} of {len(run['records'])} images failed or could not be scored (status in {out}/images.csv)")
        return EXIT_FAILED
    return EXIT_OK


def _check_perception(name: str) -> None:
    """Fail before any image runs when the perception policy is unknown."""
    from agentir.agent_policies.registry import PERCEPTION, Policies
    from agentir.settings import Settings
    from agentir.toolbox.registry import UnknownNameError

    if name not in PERCEPTION:
        raise UnknownNameError("perception policy", name, PERCEPTION.names())
    Policies(Settings.from_env().policies).perception(name)  # builds it now, so a broken installation fails before any image runs
