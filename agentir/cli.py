"""The ``agentir`` command line.

``agentir restore INPUT... -o OUT``   restore files/folders (outputs mirror relative paths)
``agentir perceive INPUT... --json``  rate every degradation, one JSON object per line
``agentir degrade CLEAN OUT``         build the benchmark's degraded images (BENCHMARK.md recipe)
``agentir bench DATA_DIR ...``       compare policies on a built benchmark (tables, charts, HTML)
``agentir bench perception|serve|kernels ...``  the sub-benchmarks
``agentir serve``                     the daemon: HTTP/WebSocket API over a durable job store
``agentir train perception``          refit the perception calibration reproducibly
``agentir tools``                     list the registered tools and policies

Exit codes: 0 all inputs done, 1 some input failed or the output folder cannot be written
(each failure is one line on stderr), 2 usage error. User errors never print a traceback.

Log level: ``--log-level`` if given, else ``-q`` (error) or ``-v`` (info) where the command has
them, else ``$AGENTIR_LOG_LEVEL`` (default warning). ``restore -q`` prints nothing on success;
errors still print their line.

``restore`` details: an output folder inside an input folder is skipped when that input is
searched, so a second run does not restore the first run's outputs. Inputs whose outputs would
collide (``photo.png`` and ``photo.tiff`` both give ``photo.png``) are all restored: the first
keeps ``photo.png``, each other one is named after its whole source name, ``photo.tiff.png``
(``photo.tiff-2.png`` ... if taken), with a ``note:`` line saying so. The output folder is
created and test-written before any image is restored.

``restore`` output fidelity: ``--format png|jpeg|webp|tiff`` (suffix ``.png``, ``.jpg``,
``.webp``, ``.tif``; the collision renaming above holds with any of them: ``photo.tiff.jpg``),
``--quality 1..100`` for jpeg (default 92) and webp (default 90), refused with a usage error
for png and tiff (lossless: there is nothing to choose). The input's ICC profile and EXIF are
embedded in the output (EXIF Orientation set to 1: the pixels are written upright). A
greyscale input gives a greyscale output (BT.601 luma of the restored RGB; WebP has no
greyscale mode and stays RGB). ``--depth auto`` (default) writes 16-bit PNG/TIFF for a 16-bit
input, ``--depth 8``/``16`` force it (16 needs png or tiff); the restoration itself works on
8 bits, so a 16-bit output is the 8-bit result scaled x257 and carries 8 bits of precision.
The trace
records ``input_mode``, ``output_mode``, ``output_format``, ``output_bits`` and which metadata
was carried (``icc_profile``, ``exif``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentir.logs import LOG_LEVELS, configure_logging
from agentir.settings import Settings, SettingsError
from agentir.toolbox.vocab import is_present

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- restore
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


_FORMATS = ("png", "jpeg", "webp", "tiff")
_LOSSY_DEFAULT_QUALITY = {"jpeg": 92, "webp": 90}  # mirrors agentir.imageio.DEFAULT_QUALITY (not imported: keeps --help light)


def _quality(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (1..100)") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be 1..100, got {value}")
    return value


def _check_restore_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors between restore options (argparse's one error line, exit 2)."""
    if args.quality is not None and args.format not in _LOSSY_DEFAULT_QUALITY:
        parser.error(f"--quality applies to --format jpeg or webp only; {args.format} is lossless")
    if args.depth == "16" and args.format not in ("png", "tiff"):
        parser.error(f"--depth 16 needs --format png or tiff; {args.format} stores 8 bits")


def _summary(rel: Path, trace: dict[str, Any]) -> str:
    found = [f"{d}={lv}" for d, lv in trace.get("perception", {}).items() if is_present(lv)]
    plan = " > ".join(trace.get("plan", [])) or "-"
    done = " > ".join(trace.get("done", [])) or "-"
    if trace.get("status") == "kept_input":
        done = f"- (the result was predicted {-float(trace.get('predicted_gain_db', 0.0)):.1f} dB worse than the input: the input is kept)"
    return (
        f"{rel.as_posix()}: found {', '.join(found) or 'nothing to fix'}; plan {plan}; done {done}; "
        f"{trace.get('tool_calls', 0)} tool calls, {trace.get('rollbacks', 0)} rollbacks, "
        f"{trace.get('seconds', 0):.2f} s [{trace.get('status', '?')}]"
    )


async def _restore_all(args: argparse.Namespace) -> int:
    import anyio
    from tqdm import tqdm

    from agentir.imageio import (
        OUTPUT_FORMATS,
        ImageInputError,
        ImageMeta,
        collect_inputs,
        encode_image,
        load_image_with_meta,
        metadata_written,
        output_layout,
        output_mode,
        output_paths,
        prepare_output_folder,
        resolve_collisions,
        write_bytes_atomic,
        write_text_atomic,
    )
    from agentir.pipeline import RestoreError, Restorer

    failed = 0
    out_dir = Path(args.output)
    found: list[tuple[Path, Path]] = []
    for raw in args.inputs:
        try:
            # The output folder is skipped below inputs: a rerun must not restore its own outputs.
            found.extend(collect_inputs([raw], exclude=[out_dir], rename_collisions=True))
        except ImageInputError as exc:
            _err(f"error: {exc}")
            failed += 1
    items = resolve_collisions(found)  # across inputs too: one output per input
    fmt = getattr(args, "format", "png")
    suffix = OUTPUT_FORMATS[fmt]
    quality = getattr(args, "quality", None)
    depth = getattr(args, "depth", "auto")
    if not args.quiet:
        for path, rel in items:
            if rel.name != path.name:
                taken = rel.parent / Path(path.name).with_suffix(suffix)
                _err(f"note: {path} is restored as {rel.with_suffix(suffix).as_posix()}: {taken.as_posix()} is another input's output")
    try:
        prepare_output_folder(out_dir)  # before any work: an unusable -o is found now, not after
    except OSError as exc:
        _err(f"error: cannot write to {out_dir} ({exc.strerror or exc}); choose another -o")
        return EXIT_FAILED
    options: dict[str, Any] = {}
    if args.max_tool_calls is not None:
        options["max_tool_calls"] = args.max_tool_calls
    if args.max_tool_cost is not None:
        options["max_tool_cost"] = args.max_tool_cost
    if args.no_rollback:
        options["rollback"] = False
    if args.no_reflection:
        options["reflection"] = "none"
    # The bar is for people at a terminal; piped stderr gets the per-image lines only.
    bar = tqdm(total=len(items), unit="img", disable=len(items) < 2 or args.quiet or not sys.stderr.isatty(), file=sys.stderr, dynamic_ncols=True)
    restored = 0

    def encode(result_image: Any, meta: ImageMeta) -> tuple[bytes, dict[str, Any]]:
        wanted_bits = meta.bits if depth == "auto" else int(depth)
        gray, bits = output_layout(fmt, gray=meta.gray, bits=wanted_bits)
        data = encode_image(result_image, fmt, quality=quality, gray=gray, bits=bits, icc_profile=meta.icc_profile, exif=meta.exif)
        icc_kept, exif_kept = metadata_written(fmt, gray=gray, bits=bits, icc_profile=meta.icc_profile, exif=meta.exif)
        fields: dict[str, Any] = {
            "input_mode": meta.mode,
            "input_bits": meta.bits,
            "output_mode": output_mode(gray=gray, bits=bits),
            "output_format": fmt,
            "output_bits": bits,
            "metadata": {"icc_profile": icc_kept, "exif": exif_kept},
        }
        if quality is not None or fmt in _LOSSY_DEFAULT_QUALITY:
            fields["output_quality"] = quality if quality is not None else _LOSSY_DEFAULT_QUALITY[fmt]
        if bits == 16:
            fields["output_precision_bits"] = 8  # the tools work on uint8: the result is scaled x257
        return data, fields

    async def one(restorer: Restorer, path: Path, rel: Path, limiter: anyio.Semaphore) -> None:
        nonlocal restored, failed
        async with limiter:
            try:
                image, meta = await anyio.to_thread.run_sync(load_image_with_meta, path)
                image_out, trace_out = output_paths(out_dir, rel, suffix=suffix)
                result = await restorer.restore(image, job=rel.as_posix())
                data, fields = await anyio.to_thread.run_sync(encode, result.image, meta)
                trace = {
                    "input": str(path),
                    "output": str(image_out),
                    "input_shape": list(image.shape),
                    "output_shape": list(result.image.shape),
                    **fields,
                    **result.trace,
                }
                await anyio.to_thread.run_sync(write_bytes_atomic, image_out, data)
                await anyio.to_thread.run_sync(write_text_atomic, trace_out, json.dumps(trace, indent=2) + "\n")
                restored += 1
                if not args.quiet:
                    bar.write(_summary(rel, trace), file=sys.stderr)
            except (ImageInputError, RestoreError, OSError, ValueError) as exc:
                failed += 1
                bar.write(f"error: {exc}" if isinstance(exc, ImageInputError) else f"error: {path}: {exc}", file=sys.stderr)
            finally:
                bar.update(1)

    executor_options = {"memory_cap": int(args.memory_cap * 2**30)} if args.memory_cap else None
    async with Restorer(
        policy=args.policy,
        options=options,
        settings=args.settings,
        max_inflight=max(1, args.jobs),
        plugins=args.plugins,
        executor_options=executor_options,
    ) as restorer:
        limiter = anyio.Semaphore(max(1, args.jobs))
        async with anyio.create_task_group() as tg:
            for path, rel in items:
                tg.start_soon(one, restorer, path, rel, limiter)
    bar.close()
    if not args.quiet:
        _err(f"restored {restored} of {len(items)} images into {out_dir}" + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    import anyio

    return anyio.run(_restore_all, args)


# ----------------------------------------------------------------------------- perceive
def cmd_perceive(args: argparse.Namespace) -> int:
    from agentir.agent_policies.registry import Policies
    from agentir.imageio import ImageInputError, collect_inputs, load_image

    policy = Policies(args.settings.policies).perception(args.perception)
    failed = 0
    for raw in args.inputs:
        try:
            items = collect_inputs([raw], rename_collisions=True)  # nothing is written: no name may stop a folder
        except ImageInputError as exc:
            _err(f"error: {exc}")
            failed += 1
            continue
        for path, _rel in items:
            try:
                image = load_image(path)
            except ImageInputError as exc:
                _err(f"error: {exc}")
                failed += 1
                continue
            [p] = policy.perceive([image])
            if args.json:
                record = {"path": str(path), "levels": dict(p.levels), "scores": {k: round(float(v), 3) for k, v in p.scores.items()}}
                print(json.dumps(record), flush=True)
            else:
                present = [f"{d}={lv}" for d, lv in p.levels.items() if is_present(lv)]
                print(f"{path}: {', '.join(present) or 'no degradation at medium or worse'}", flush=True)
    return EXIT_FAILED if failed else EXIT_OK


# ----------------------------------------------------------------------------- degrade
def cmd_degrade(args: argparse.Namespace) -> int:
    from agentir.datasets import build_benchmark

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    levels = [lv.strip() for lv in args.levels.split(",")] if args.levels else None
    manifest = build_benchmark(
        args.clean, args.out, groups=groups, per_combo=args.per_combo, seed=args.seed, levels=levels, progress=not args.quiet, split=args.split
    )
    _err(f"wrote {len(manifest.get('items', []))} degraded images and {Path(args.out) / 'manifest.json'}")
    return EXIT_OK


# ----------------------------------------------------------------------------- tools
def cmd_tools(args: argparse.Namespace) -> int:
    import agentir.toolbox.tools  # noqa: F401 - registers the built-in tools
    from agentir.agent_policies.registry import PERCEPTION, PLANNING, REFLECTION
    from agentir.toolbox.base import TOOL_INFO, unavailable_reason
    from agentir.toolbox.costs import tool_cost
    from agentir.toolbox.vocab import DEGRADATIONS, SUBTASKS

    for d in DEGRADATIONS:
        print(f"{d} ({SUBTASKS[d]}):")
        for info in TOOL_INFO.values():
            if info.degradation == d:
                manual = " (manual: not tried by the agent unless named)" if "manual" in info.tags else ""
                # A shipped tool whose weights file is missing or corrupt stays listed, with why.
                reason = unavailable_reason(info.name)
                unavailable = f" (unavailable: {reason})" if reason is not None else ""
                cost = tool_cost(info.name)
                cost_text = f"{cost:6.2f} s/MP" if cost is not None else "   ? s/MP"
                print(f"  {info.name:<28} x{info.scale} {info.kind:<9} {cost_text}  {info.description}{manual}{unavailable}")
    print(f"perception policies: {', '.join(PERCEPTION.names())}")
    print(f"planning policies:   {', '.join(PLANNING.names())}")
    print(f"reflection policies: {', '.join(REFLECTION.names())}")
    return EXIT_OK


def cmd_knowledge(args: argparse.Namespace) -> int:
    """Print what exploration learned: the knowledge file as prose (or its JSON)."""
    from agentir.agent_policies.knowledge import DEFAULT_KNOWLEDGE, Knowledge, KnowledgeError

    path = args.file or args.settings.policies.knowledge or DEFAULT_KNOWLEDGE
    try:
        k = Knowledge.load(path)
    except KnowledgeError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    if args.json:
        print(Path(path).read_text(encoding="utf-8"), end="")
        return EXIT_OK
    print(f"knowledge {path}: {k.summary.get('images', '?')} images explored ({k.config.get('command', '')})")
    print(k.describe())
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from agentir import __version__
    from agentir.agent_policies.options import JobOptions

    parser = argparse.ArgumentParser(prog="agentir", description="Offline agentic image restoration (perceive, plan, execute, reflect, roll back).")
    parser.add_argument("--version", action="version", version=f"agentir {__version__}")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="default warning ($AGENTIR_LOG_LEVEL); wins over a command's -q/-v")
    parser.add_argument("--log-json", action="store_true", help="structured JSON logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("restore", help="restore images (files or folders)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder; mirrors input paths, an image (suffix of --format) plus .trace.json")
    p.add_argument(
        "--format",
        default="png",
        choices=_FORMATS,
        help="output format: png (default), jpeg (.jpg), webp or tiff (.tif); the input's ICC profile and EXIF are embedded, "
        "EXIF orientation set upright; greyscale stays greyscale (not in webp)",
    )
    p.add_argument(
        "--quality",
        type=_quality,
        default=None,
        metavar="Q",
        help=f"1..100 for jpeg (default {_LOSSY_DEFAULT_QUALITY['jpeg']}) and webp (default {_LOSSY_DEFAULT_QUALITY['webp']}); a usage error with png or tiff",
    )
    p.add_argument(
        "--depth",
        default="auto",
        choices=("8", "16", "auto"),
        help="output bits per channel: auto (default) matches the input (16-bit PNG/TIFF for a 16-bit input), 16 needs png or tiff; "
        "restoration works in 8 bits, so 16-bit outputs carry 8 bits of precision (scaled x257)",
    )
    p.add_argument("--policy", default=None, help="planning policy (default: experience; also: rules, random, fixed, llm)")
    p.add_argument("--max-tool-calls", type=int, default=None, help=f"tool-call budget per image (default {JobOptions().max_tool_calls})")
    p.add_argument(
        "--max-tool-cost",
        type=_positive_float,
        default=None,
        metavar="S_PER_MP",
        help="skip tools measured slower than this many seconds per megapixel (`agentir tools` lists them), "
        "e.g. 5 leaves out fusion_denoise and rl_motion_deblur; a subtask keeps at least its cheapest tool",
    )
    p.add_argument(
        "--memory-cap",
        type=_positive_float,
        default=None,
        metavar="GB",
        help="most memory a tool that must see the whole image may use on one image; over it that tool is "
        "skipped with a clear error and the agent tries another (default: no cap; tiled tools stay within a few hundred MB)",
    )
    p.add_argument("--no-rollback", action="store_true", help="ablation: never roll back a failed subtask")
    p.add_argument("--no-reflection", action="store_true", help="ablation: take each first tool output unjudged")
    p.add_argument("-j", "--jobs", type=int, default=2, help="images restored concurrently (default 2)")
    p.add_argument("--plugins", metavar="FILE", default=None, help="TOML file of user models to register as tools (also $AGENTIR_PLUGINS)")
    talk = p.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors (no per-image lines, progress bar or warnings)")
    talk.add_argument("-v", "--verbose", action="store_true", help="info logs too (what each actor does)")
    p.set_defaults(func=cmd_restore, check_args=lambda a, _p=p: _check_restore_args(_p, a))

    p = sub.add_parser("perceive", help="rate the eight degradations of images")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--json", action="store_true", help='one JSON object per line: {"path", "levels", "scores"}')
    p.add_argument("--perception", default="analytic", help="perception policy (default: analytic)")
    p.set_defaults(func=cmd_perceive)

    p = sub.add_parser("degrade", help="synthesise the benchmark's degraded images from clean ones")
    p.add_argument("clean", metavar="CLEAN_DIR")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--groups", default="A,B,C", help="comma-separated groups (default A,B,C)")
    p.add_argument("--per-combo", type=int, default=20, help="images per combination (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", default="", help="instead of groups: single degradations at these levels, e.g. low,medium,high")
    p.add_argument(
        "--split", default="all", choices=["all", "train", "held-out"], help="all images, or the first (train) or second (held-out) half by name (default all)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, errors only")
    p.set_defaults(func=cmd_degrade)

    p = sub.add_parser("tools", help="list tools and policies")
    p.set_defaults(func=cmd_tools)

    p = sub.add_parser("knowledge", help="show what self-exploration learned (the experience planner's knowledge)")
    p.add_argument("file", nargs="?", default=None, help="knowledge JSON (default: $AGENTIR_KNOWLEDGE or the shipped one)")
    p.add_argument("--json", action="store_true", help="print the file itself")
    p.set_defaults(func=cmd_knowledge)

    p = sub.add_parser("bench", add_help=False, help="benchmark policies on a built dataset (agentir bench --help)")
    p.add_argument("bench_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", add_help=False, help="run the daemon: HTTP/WebSocket API, durable job store (agentir serve --help)")
    p.add_argument("serve_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "explore", add_help=False, help="self-exploration: run every order and tool on training images, write the knowledge (agentir explore --help)"
    )
    p.add_argument("explore_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_explore)

    p = sub.add_parser("train", add_help=False, help="train or calibrate models (agentir train perception --help)")
    p.add_argument("train_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("stream", add_help=False, help="restore a live video stream, plans reused across frames (agentir stream --help)")
    p.add_argument("stream_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("worker", add_help=False, help="run actors in this process on a shared Redis bus (agentir worker --help)")
    p.add_argument("worker_argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_worker)
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    from agentir.daemon import main_serve

    return int(main_serve(list(args.serve_argv)))


def cmd_train(args: argparse.Namespace) -> int:
    from agentir.train import main_train

    return int(main_train(list(args.train_argv)))


def cmd_explore(args: argparse.Namespace) -> int:
    from agentir.explore import main_explore

    return int(main_explore(list(args.explore_argv)))


def cmd_stream(args: argparse.Namespace) -> int:
    from agentir.stream import main_stream

    return int(main_stream(list(args.stream_argv)))


def cmd_worker(args: argparse.Namespace) -> int:
    from agentir.cluster import main_worker

    return int(main_worker(list(args.worker_argv)))


def cmd_bench(args: argparse.Namespace) -> int:
    from agentir.bench import main_bench

    return main_bench(list(args.bench_argv))


def _log_level(args: argparse.Namespace) -> str:
    """--log-level if given, else -q (error) / -v (info) of the command, else the settings' level."""
    if args.log_level:
        return str(args.log_level)
    if getattr(args, "quiet", False):
        return "error"
    if getattr(args, "verbose", False):
        return "info"
    return str(args.settings.log_level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Options before the first positional word belong to the delegated command.
    if args.command == "bench":
        args.bench_argv = extra + list(args.bench_argv)
    elif args.command == "serve":
        args.serve_argv = extra + list(args.serve_argv)
    elif args.command == "train":
        args.train_argv = extra + list(args.train_argv)
    elif args.command == "explore":
        args.explore_argv = extra + list(args.explore_argv)
    elif args.command == "stream":
        args.stream_argv = extra + list(args.stream_argv)
    elif args.command == "worker":
        args.worker_argv = extra + list(args.worker_argv)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    check_args = getattr(args, "check_args", None)
    if check_args is not None:
        check_args(args)
    try:
        # The environment is read here, once, and handed down (see agentir.settings).
        args.settings = Settings.from_env()
    except SettingsError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    configure_logging(_log_level(args), json_logs=args.log_json)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # user errors (unknown policy, bad folder...) get one line, not a traceback
        from agentir.toolbox.registry import UnknownNameError

        if isinstance(exc, (UnknownNameError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)):
            _err(f"error: {exc}")
            return EXIT_USAGE if isinstance(exc, UnknownNameError) else EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
