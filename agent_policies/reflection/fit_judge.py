"""Fit the step judge (:mod:`agentir.agent_policies.reflection.judge`) on tool outputs whose truth is known.

``agentir train judge --data CLEAN_DIR [--cache FILE] [--seed S]`` (the command that made the
shipped ``judge.json`` / ``judge.safetensors``):

1. **Steps.** For every fit image (``agentir.toolbox.splits``: McMaster, Set5, the first half of CBSD68;
   never the held-out half) and ``configs`` random configurations (a benchmark combination of
   groups A-C, drawn with the benchmark's recipe, or the clean image itself), the true
   degradations are treated in a random order: at each step every tool of the subtask runs on
   the current image (``steps``), and the truly best output becomes the next step's input. On
   the first step, one subtask the image does **not** have (the harm case: dehazing a clean
   grey scene) is run too, and on clean images two such subtasks. Tools slower than
   ``max_cost`` s/MP (``toolbox/tool_costs.json``) are left out of the data.
2. **Truth.** The gain of a step is PSNR(output, clean) - PSNR(input, clean) in dB, with the
   clean image brought to the step's size (x4 bicubic up for an input smaller than the output;
   the antialiased x4 downscale for steps before super-resolution).
3. **Fit.** An MLP (2 x 64 tanh units, Huber loss on the gain clipped to +-6 dB, Adam, full
   batch, fixed seed) on the standardised features; 5-fold cross-validation grouped by image
   reports the error in dB and how often the judge picks the truly best tool of a step,
   against the first tool in the planner's order and the current re-perception rule
   (``first-success``); then the final model is fitted on every step.

The step records (features, gains) are cached in ``--cache`` so refitting skips the tools.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentir.agent_policies.reflection.judge import DEFAULT_JUDGE, REBUILD, descriptors, feature_names, save_judge, step_features

SEED = 20261202
HIDDEN = 64
CLIP_DB = 6.0
EPOCHS = 1500


def _tool_order() -> dict[str, list[str]]:
    """Each subtask's tools in the order the experience planner tries them first (its knowledge)."""
    import agentir.agent_policies.knowledge
    from agentir.toolbox.base import tools_for
    from agentir.toolbox.vocab import DEGRADATIONS

    order: dict[str, list[str]] = {}
    knowledge = json.loads(Path(agentir.agent_policies.knowledge.__file__).with_name("knowledge.json").read_text(encoding="utf-8"))
    ranked = knowledge.get("tools", {})
    for d in DEGRADATIONS:
        names = tools_for(d)
        pref: list[str] = []
        for rows in (ranked.get(d) or {}).values():
            pref += [r["tool"] for r in rows if r["tool"] in names and r["tool"] not in pref]
        order[d] = pref + [t for t in names if t not in pref]
    return order


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-10 else float(10 * np.log10(255.0**2 / mse))


def _reference(clean: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    from agentir.toolbox.degrade import bicubic_resize

    if clean.shape[:2] == tuple(shape[:2]):
        return clean
    return np.clip(np.round(bicubic_resize(clean, (int(shape[0]), int(shape[1])))), 0, 255).astype(np.uint8)


def _image_steps(args: tuple[int, str, int, float, int, list[str]]) -> list[dict[str, Any]]:
    """Every step record of one fit image (see the module docstring); deterministic per image."""
    image_index, path, configs, max_cost, seed, tools = args
    import torch

    import agentir.toolbox.tools  # noqa: F401 - registers the tools
    from agentir.agent_policies.perception.analytic import AnalyticPerception
    from agentir.toolbox.base import TOOLS, run_on_rgb
    from agentir.toolbox.costs import load_costs
    from agentir.toolbox.degrade import COMBINATIONS, degrade_chain
    from agentir.toolbox.learned.data import load_rgb
    from agentir.toolbox.vocab import DEGRADATIONS, level_index

    torch.set_num_threads(1)
    costs = load_costs()
    order = _tool_order()
    usable = {d: [t for t in order[d] if costs.get(t, 0.0) <= max_cost] for d in DEGRADATIONS}
    combos = [c for g in ("A", "B", "C") for c in COMBINATIONS[g]]
    perception = AnalyticPerception()
    rng = np.random.default_rng([seed, image_index])
    clean = load_rgb(Path(path))
    rows: list[dict[str, Any]] = []
    for cfg in range(configs + 1):
        if cfg == 0:
            names: tuple[str, ...] = ()
            x = clean
        else:
            names = combos[int(rng.integers(len(combos)))]
            x, _ = degrade_chain(clean, names, np.random.default_rng([seed, image_index, cfg]))
        todo = [str(d) for d in rng.permutation(list(names))] if names else []
        absent = [d for d in DEGRADATIONS if d not in names and d != "low_resolution"]
        harm = [str(d) for d in rng.choice(absent, size=2 if not names else 1, replace=False)]
        current = x
        for k, (subtask, present) in enumerate([(d, False) for d in harm] + [(d, True) for d in todo]):
            ref_in = _reference(clean, current.shape)
            desc_x = descriptors(current)
            base = _psnr(current, ref_in)
            outs = []
            for tool in usable[subtask]:
                try:
                    y = run_on_rgb(TOOLS.get(tool), current)
                except Exception:
                    continue
                ref_out = _reference(clean, y.shape)
                base_up = base if y.shape == current.shape else _psnr(_reference(current, y.shape), ref_out)
                level, _score = perception.rate([y], subtask)[0]
                outs.append((tool, y, _psnr(y, ref_out) - base_up, level))
            if not outs:
                continue
            # The current rule (first-success): the first output rated low or better, else the best rated.
            rule = next((i for i, o in enumerate(outs) if level_index(o[3]) <= level_index("low")), None)
            if rule is None:
                rule = min(range(len(outs)), key=lambda i: level_index(outs[i][3]))
            for i, (tool, y, gain, _level) in enumerate(outs):
                rows.append(
                    {
                        "image": image_index,
                        "group": f"{image_index}/{cfg}/{k}",
                        "combo": "+".join(names) or "clean",
                        "subtask": subtask,
                        "present": present,
                        "tool": tool,
                        "rank": i,
                        "rule_pick": i == rule,
                        "gain": float(gain),
                        "features": step_features(subtask, tool, current, y, tools, desc_x).tolist(),
                    }
                )
            if present:
                current = outs[max(range(len(outs)), key=lambda i: outs[i][2])][1]
    return rows


def generate_steps(data: str | Path, *, configs: int = 3, max_cost: float = 5.0, seed: int = SEED, workers: int = 2, progress: bool = True) -> dict[str, Any]:
    """Run the tools and record every step of every fit image (see the module docstring)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    import agentir.toolbox.tools  # noqa: F401 - registers the tools
    from agentir.toolbox.costs import load_costs
    from agentir.toolbox.splits import split_images
    from agentir.toolbox.vocab import DEGRADATIONS

    fit, _ = split_images(data, require_both=True)
    costs = load_costs()
    order = _tool_order()
    tools = sorted({t for d in DEGRADATIONS for t in order[d] if costs.get(t, 0.0) <= max_cost})
    jobs = [(i, str(p), configs, max_cost, seed, tools) for i, p in enumerate(fit)]
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(jobs), desc="judge steps", unit="img", disable=not progress, file=sys.stderr)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for part in pool.map(_image_steps, jobs):
            rows += part
            bar.update(1)
    bar.close()
    return {"tools": tools, "seed": seed, "configs": configs, "max_cost": max_cost, "images": len(fit), "rows": rows}


def _fit(x: np.ndarray, y: np.ndarray, seed: int, epochs: int = EPOCHS) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-9, std, 1.0)
    xt = torch.tensor((x - mean) / std, dtype=torch.float64)
    yt = torch.tensor(np.clip(y, -CLIP_DB, CLIP_DB), dtype=torch.float64)
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, 1)
    ).double()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.HuberLoss(delta=1.0)
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(net(xt)[:, 0], yt)
        loss.backward()
        opt.step()
    layers = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in net if isinstance(m, torch.nn.Linear)]
    return mean, std, layers


def _predict(mean: np.ndarray, std: np.ndarray, layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    z = (x - mean) / std
    for i, (w, b) in enumerate(layers):
        z = z @ w + b
        if i < len(layers) - 1:
            z = np.tanh(z)
    return np.asarray(z[:, 0])


def evaluate(rows: Sequence[dict[str, Any]], pred: np.ndarray, min_db: float = -2.0) -> dict[str, Any]:
    """Per step (all tools of one subtask on one input), split into steps whose degradation is
    present and steps whose degradation is absent (the harm case):

    * ``rule_db``: mean true gain of the current rule's pick (first-success);
    * ``veto_db``: the same pick, refused (gain 0) when the judge predicts below ``min_db``;
    * ``refused``: how often the veto fires; ``oracle_db``: the best tool, or nothing if all hurt;
    * ``judge_picks_best`` / ``first_picks_best``: how often the highest predicted output, and
      the first in the planner's order, is the truly best one (present steps);
    * ``mae_db``: mean absolute error of the predicted gain (clipped as in training).
    """
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["group"], []).append(i)
    acc: dict[str, dict[str, list[float]]] = {
        k: {m: [] for m in ("rule_db", "veto_db", "refused", "oracle_db", "judge_picks_best", "first_picks_best")} for k in ("present", "absent")
    }
    for idx in groups.values():
        gains = np.array([rows[i]["gain"] for i in idx])
        p = pred[idx]
        first = int(np.argmin([rows[i]["rank"] for i in idx]))
        rule = next((j for j, i in enumerate(idx) if rows[i]["rule_pick"]), first)
        refuse = bool(p[rule] < min_db)
        a = acc["present" if rows[idx[0]]["present"] else "absent"]
        a["rule_db"].append(float(gains[rule]))
        a["veto_db"].append(0.0 if refuse else float(gains[rule]))
        a["refused"].append(float(refuse))
        a["oracle_db"].append(float(max(0.0, gains.max())))
        a["judge_picks_best"].append(float(int(np.argmax(p)) == int(np.argmax(gains))))
        a["first_picks_best"].append(float(first == int(np.argmax(gains))))
    out: dict[str, Any] = {k: {m: round(float(np.mean(v)), 4) for m, v in d.items()} | {"steps": len(d["rule_db"])} for k, d in acc.items()}
    out["min_db"] = min_db
    out["mae_db"] = round(float(np.mean(np.abs(pred - np.clip([r["gain"] for r in rows], -CLIP_DB, CLIP_DB)))), 4)
    return out


def fit_judge(
    data: str | Path, *, out: Path = DEFAULT_JUDGE, cache: Path | None = None, seed: int = SEED, workers: int = 2, progress: bool = True
) -> dict[str, Any]:
    """Generate (or read from ``cache``) the steps, cross-validate, fit, write the judge files."""
    from agentir.bus.files import write_text_atomic

    t0 = time.perf_counter()
    if cache is not None and cache.is_file():
        records = json.loads(cache.read_text(encoding="utf-8"))
    else:
        records = generate_steps(data, seed=seed, workers=workers, progress=progress)
        if cache is not None:
            write_text_atomic(cache, json.dumps(records) + "\n")
    rows = records["rows"]
    x = np.array([r["features"] for r in rows], dtype=np.float64)
    y = np.array([r["gain"] for r in rows], dtype=np.float64)
    images = np.array([r["image"] for r in rows])
    folds = np.random.default_rng(seed).permutation(int(images.max()) + 1) % 5
    pred = np.zeros_like(y)
    for f in range(5):
        test = folds[images] == f
        mean, std, layers = _fit(x[~test], y[~test], seed + f)
        pred[test] = _predict(mean, std, layers, x[test])
    cv = evaluate(rows, pred)
    mean, std, layers = _fit(x, y, seed)
    meta = {
        "command": f"{REBUILD} --data {data} --seed {seed}",
        "seed": seed,
        "images": records["images"],
        "steps": cv["present"]["steps"] + cv["absent"]["steps"],
        "rows": len(rows),
        "max_cost": records["max_cost"],
        "hidden": HIDDEN,
        "cross_validation": cv,
    }
    save_judge(out, meta, records["tools"], mean, std, layers)
    return {**meta, "seconds": round(time.perf_counter() - t0, 1), "feature_count": len(feature_names(records["tools"]))}


def main_train_judge(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="agentir train judge", description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/clean", help="the clean-data root (CBSD68/, McMaster/, Set5/); only its fit split is used")
    p.add_argument("--cache", type=Path, default=None, help="step records cache (JSON): written on the first run, read after")
    p.add_argument("--out", type=Path, default=DEFAULT_JUDGE, help="where judge.json (+ judge.safetensors beside it) go")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--workers", type=int, default=2, help="processes running the tools (the records do not depend on it)")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(list(argv))
    try:
        result = fit_judge(args.data, out=args.out, cache=args.cache, seed=args.seed, workers=args.workers, progress=not args.quiet)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main_train_judge(sys.argv[1:]))
