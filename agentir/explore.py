"""``agentir explore``: self-exploration over the full tree of subtask orders and tools.

``agentir explore DATA -o KNOWLEDGE.json [--per-combo N] [--seed S] [--workers N] [--records FILE] [--fresh]``

``DATA`` is either the clean-image root holding ``CBSD68/``, ``McMaster/`` and ``Set5/`` (then
only the training split is used: McMaster + Set5 + the first 34 CBSD68 images by name, the same
split perception is fitted on; the last 34 CBSD68 images are never explored), or any folder of
clean images (all of them are used).

For each of the eight group-A combinations of ``BENCHMARK.md`` (groups B and C are never
explored), ``--per-combo`` images are drawn from the training images and degraded with the
benchmark recipe (seeded per image). On every degraded image the whole tree is run: both orders
of its two subtasks and, at every step, every tool the agent may choose (``tools_for``), each
child continuing from each tool output. Every node (the input, each step's output) is perceived
on all eight degradations and scored against the clean reference (PSNR / SSIM-Y). Records go
one image per line to ``--records`` (default ``KNOWLEDGE.records.jsonl``); a rerun resumes
where it stopped (same settings) unless ``--fresh``. Finally :func:`agentir.agent_policies.knowledge.distil`
writes the knowledge file atomically.

Deterministic: tools and perception are deterministic and images are seeded, so the same
command on the same data writes the same knowledge file byte for byte (timings stay in the
records, not in the knowledge).

Exit codes: 0 written; 1 failed (missing data, records from other settings); 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import os
import sys
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_jobs", "explore_image", "main_explore", "training_images"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RECORDS_VERSION = 1


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def training_images(data: Path) -> tuple[list[Path], str]:
    """The images exploration may use, and how they were chosen."""
    from agentir.datasets import list_images
    from agentir.toolbox.splits import FOLDERS, split_images

    if all((data / sub).is_dir() for sub in FOLDERS):
        return split_images(data)[0], "training split: McMaster + Set5 + first half of CBSD68 by name"
    return list_images(data), "every image of the folder"


def _rel(path: Path, data: Path) -> str:
    try:
        return path.relative_to(data).as_posix()
    except ValueError:
        return path.name


def group_a(names: Sequence[str] | None = None) -> list[tuple[int, tuple[str, ...]]]:
    """The group-A combinations (index, names), all or those named as ``"rain+haze"``.

    Raises:
        ValueError: a name that is not a group-A combination (B and C are never explored).
    """
    from agentir.toolbox.degrade import COMBINATIONS

    table = {"+".join(c): (i, tuple(c)) for i, c in enumerate(COMBINATIONS["A"])}
    if not names:
        return list(table.values())
    out = []
    for n in names:
        if n not in table:
            raise ValueError(f"{n!r} is not a group-A combination (only group A is explored); choose from {', '.join(table)}")
        out.append(table[n])
    return sorted(set(out))


def build_jobs(images: Sequence[Path], data: Path, *, per_combo: int, seed: int, combinations: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One job per (group-A combination, drawn image): ids, sources and degradation seeds."""
    jobs = []
    for ci, combo in group_a(combinations):
        rng = np.random.default_rng([seed, 7919, ci])
        k = min(per_combo, len(images))
        picks = sorted(rng.choice(len(images), size=k, replace=False).tolist())
        for j, idx in enumerate(picks):
            src = _rel(images[idx], data)
            jobs.append(
                {
                    "id": f"A{ci}_{'+'.join(combo)}_{j:02d}",
                    "combination": list(combo),
                    "source": src,
                    "path": str(images[idx]),
                    "seed": [seed, zlib.crc32("+".join(combo).encode()), zlib.crc32(src.encode())],
                }
            )
    return jobs


# --------------------------------------------------------------------------------------------
# one image's tree (runs in a worker process)
# --------------------------------------------------------------------------------------------

_STATE: dict[str, Any] = {}


def _register_tools() -> None:
    """Register every tool, classical and learned: exploration tries them all."""
    for module in ("agentir.toolbox.tools", "agentir.toolbox.learned"):
        importlib.import_module(module)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    _register_tools()  # a spawned worker process has none registered yet


def _perception() -> Any:
    if "perception" not in _STATE:
        from agentir.agent_policies.perception.analytic import AnalyticPerception

        _STATE["perception"] = AnalyticPerception()
    return _STATE["perception"]


def _run_tool(name: str, img: np.ndarray) -> np.ndarray:
    from agentir.toolbox.base import TOOLS, run_on_rgb

    return run_on_rgb(TOOLS.get(name), img)


def _node(img: np.ndarray, ref: np.ndarray, path: list[list[str]], seconds: float) -> dict[str, Any]:
    from agentir.toolbox.metrics import score

    p = _perception().perceive([img])[0]
    s = score(img.astype(np.float64) / 255.0, ref.astype(np.float64) / 255.0)
    return {
        "path": path,
        "psnr": round(float(s["psnr"]), 4),
        "ssim": round(float(s["ssim"]), 5),
        "levels": dict(p.levels),
        "scores": {k: round(float(v), 4) for k, v in p.scores.items()},
        "seconds": round(seconds, 4),
    }


def explore_image(job: Mapping[str, Any], tools: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The full tree for one degraded image: every order of its subtasks, every tool per step."""
    from agentir.datasets import read_rgb
    from agentir.toolbox.degrade import crop_to_multiple, degrade_chain

    t0 = time.perf_counter()
    ref = crop_to_multiple(read_rgb(job["path"]), 4)
    lq, params = degrade_chain(ref, list(job["combination"]), np.random.default_rng(list(job["seed"])))
    record: dict[str, Any] = {
        "id": job["id"],
        "combination": list(job["combination"]),
        "source": job["source"],
        "params": params,
        "input": {k: v for k, v in _node(lq, ref, [], 0.0).items() if k not in ("path", "seconds")},
        "nodes": [],
    }

    def expand(img: np.ndarray, path: list[list[str]], todo: list[str]) -> None:
        if not todo:
            return
        d = todo[0]
        for tool in tools[d]:
            child = [*path, [d, tool]]
            t = time.perf_counter()
            try:
                out = _run_tool(tool, img)
            except Exception as exc:  # a tool failing is a finding, not a crash of the exploration
                record["nodes"].append({"path": child, "error": f"{type(exc).__name__}: {exc}"[:300], "seconds": round(time.perf_counter() - t, 4)})
                continue
            record["nodes"].append(_node(out, ref, child, time.perf_counter() - t))
            expand(out, child, todo[1:])

    for order in itertools.permutations(job["combination"]):
        expand(lq, [], list(order))
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _explore_in_worker(args: tuple[Mapping[str, Any], Mapping[str, Sequence[str]]]) -> dict[str, Any]:
    return explore_image(*args)


# --------------------------------------------------------------------------------------------
# records file (resumable)
# --------------------------------------------------------------------------------------------


def _read_records(path: Path, header: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Records already written with the same settings; a torn last line is dropped."""
    if not path.exists():
        return {}
    done: dict[str, dict[str, Any]] = {}
    with path.open("r", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    if not lines:
        return {}
    try:
        first = json.loads(lines[0])
    except json.JSONDecodeError:
        raise ValueError(f"{path} is not an exploration records file; delete it or pass --fresh") from None
    if first.get("header") != dict(header):
        raise ValueError(f"{path} holds records made with other settings ({first.get('header')}); pass --fresh to start over or --records to use another file")
    for line in lines[1:]:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a crash tore
        done[rec["id"]] = rec
    return done


def _rewrite_records(path: Path, header: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> None:
    from agentir.imageio import write_text_atomic

    lines = [json.dumps({"header": dict(header)}, sort_keys=True)] + [json.dumps(r, sort_keys=True) for r in records.values()]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _iterate(jobs: list[dict[str, Any]], tools: Mapping[str, Sequence[str]], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1:
        _init_worker(1)
        for job in jobs:
            yield explore_image(job, tools)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(1,)) as pool:
        yield from pool.map(_explore_in_worker, [(job, tools) for job in jobs], chunksize=1)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def build_parser(prog: str = "agentir explore") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Self-exploration: run every subtask order and tool on group-A training images and distil the knowledge."
    )
    p.add_argument("data", type=Path, help="clean images: the root with CBSD68/ McMaster/ Set5/ (training split) or any image folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="knowledge JSON to write")
    p.add_argument("--per-combo", type=int, default=8, help="images per group-A combination (default 8)")
    p.add_argument("--combinations", default="", help="comma-separated group-A combinations to explore, e.g. rain+haze,noise+jpeg (default: all eight)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image draw and the degradations (default 0)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--records", type=Path, default=None, help="per-image records, JSON lines (default OUT.records.jsonl); resumed when present")
    p.add_argument("--fresh", action="store_true", help="ignore existing records and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main_explore(argv: Sequence[str]) -> int:
    """Entry point of ``agentir explore`` (see the module docstring); returns the exit code."""
    args = build_parser().parse_args(list(argv))
    if args.per_combo < 1 or args.workers < 1:
        _err("error: --per-combo and --workers must be at least 1")
        return EXIT_USAGE
    _register_tools()
    from agentir.agent_policies.knowledge import distil, knowledge_text
    from agentir.imageio import write_text_atomic
    from agentir.toolbox.base import tools_for
    from agentir.toolbox.vocab import DEGRADATIONS

    data = args.data
    try:
        images, how = training_images(data)
    except (FileNotFoundError, ValueError) as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    tools = {d: tools_for(d) for d in DEGRADATIONS}
    try:
        jobs = build_jobs(images, data, per_combo=args.per_combo, seed=args.seed, combinations=[c for c in args.combinations.split(",") if c])
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_USAGE
    header = {
        "version": RECORDS_VERSION,
        "seed": args.seed,
        "per_combo": args.per_combo,
        "images": [j["source"] for j in jobs],
        "tools": tools,
    }
    records_path = args.records or args.out.with_name(args.out.name + ".records.jsonl")
    try:
        done = {} if args.fresh else _read_records(records_path, header)
    except ValueError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED
    done = {k: v for k, v in done.items() if k in {j["id"] for j in jobs}}
    todo = [j for j in jobs if j["id"] not in done]
    calls = sum(len(tools[a]) + len(tools[b]) + 2 * len(tools[a]) * len(tools[b]) for a, b in (j["combination"] for j in jobs))
    _err(f"exploring {len(jobs)} images ({how}; {len(done)} already recorded) x full tree = {calls} tool calls in all, {args.workers} worker(s)")
    _rewrite_records(records_path, header, done)
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), initial=len(done), unit="img", disable=args.no_progress or None, file=sys.stderr, dynamic_ncols=True)
    with records_path.open("a", encoding="utf-8") as fh:
        for rec in _iterate(todo, tools, args.workers):
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[rec["id"]] = rec
            bar.update(1)
    bar.close()
    config = {
        "command": f"agentir explore DATA -o {args.out.name} --per-combo {args.per_combo} --seed {args.seed}"
        + (f" --combinations {args.combinations}" if args.combinations else ""),
        "selection": how,
        "seed": args.seed,
        "per_combo": args.per_combo,
        "group": "A",
        "images": sorted({j["source"] for j in jobs}),
        "tools": tools,
        "perception": "analytic",
    }
    knowledge = distil([done[j["id"]] for j in jobs], config)
    write_text_atomic(args.out, knowledge_text(knowledge))
    _err(
        f"explored {len(jobs)} images in {time.perf_counter() - t0:.0f} s; wrote {args.out} ({len(knowledge['pairs'])} pairs, {sum(len(v) for v in knowledge['tools'].values())} tool tables)"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main_explore(sys.argv[1:]))
