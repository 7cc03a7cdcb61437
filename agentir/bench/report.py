"""Turn benchmark records into tables, ``results.json`` / ``results.csv``, PNG charts and an HTML report.

Scores follow ``BENCHMARK.md``: a combination's score is the mean over its scored images, a
group's the mean over its combinations, and ``all`` the mean over the groups. Seconds, tool
calls and rollbacks are averaged the same way (per image within a combination). Images with
status ``error`` (not scorable) are left out of the means and counted under ``errors``;
``failed`` restores are scored on their input and counted under ``failed``.

Files written into the output folder (each to a temporary name, then renamed, so a crash never
leaves a half-written one):

* ``results.json``: run metadata, per-group / per-combination / overall statistics per policy
  and every per-image record;
* ``results.csv``: one row per (level, name, policy), level ``group``, ``combo`` or ``all``;
* ``images.csv``: one row per (policy, image);
* ``results.md``: the group table as Markdown (for the README);
* ``chart_<metric>.png``: grouped bars (groups x policies) for psnr, ssim, seconds, tool_calls;
* ``report.html`` plus ``report_files/``: tables, charts, and for the sampled images thumbnails
  of input / each policy's output / reference with each trace's summary.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from agentir.bench.runner import POLICIES, combo_key, item_id, relative_stem, sampled_ids

__all__ = ["CHART_METRICS", "format_tables", "summarize", "write_report"]

log = structlog.get_logger(__name__)

#: Metrics with a chart each.
CHART_METRICS: tuple[str, ...] = ("psnr", "ssim", "seconds", "tool_calls")
_STATS = ("psnr", "ssim", "seconds", "tool_calls", "rollbacks")
_LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM (Y)", "seconds": "seconds per image", "tool_calls": "tool calls per image", "rollbacks": "rollbacks per image"}
_THUMB = 192


# ----------------------------------------------------------------------------- statistics
def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarize(records: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]], policies: Sequence[str]) -> dict[str, Any]:
    """Per-combination, per-group and overall statistics for each policy.

    Returns:
        ``{"combos": {policy: {key: stats}}, "groups": {policy: {group: stats}}, "overall":
        {policy: stats}, "combo_order": [...], "group_of": {key: group}}`` where ``stats`` has
        ``psnr``, ``ssim``, ``seconds``, ``tool_calls``, ``rollbacks`` (``None`` when nothing
        was scored) and the counts ``n`` (scored images), ``failed``, ``errors``, ``missing``.
    """
    combo_order = list(dict.fromkeys(combo_key(it) for it in items))
    group_of = {combo_key(it): str(it["group"]) for it in items}
    expected: dict[str, int] = {}
    for it in items:
        expected[combo_key(it)] = expected.get(combo_key(it), 0) + 1
    by: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        by.setdefault((str(r["policy"]), str(r["key"])), []).append(r)

    combos: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    overall: dict[str, dict[str, Any]] = {}
    group_order = list(dict.fromkeys(group_of[k] for k in combo_order))
    for p in policies:
        combos[p] = {}
        for key in combo_order:
            recs = by.get((p, key), [])
            scored = [r for r in recs if r.get("psnr") is not None and r.get("status") != "error"]
            st: dict[str, Any] = {m: _mean([float(r[m]) for r in scored]) for m in _STATS}
            st.update(
                n=len(scored),
                oversized=sum(r.get("rescaled") == "down_x4" for r in scored),
                failed=sum(r.get("status") == "failed" for r in recs),
                errors=sum(r.get("status") == "error" for r in recs),
                missing=expected[key] - len(recs),
            )
            combos[p][key] = st
        groups[p] = {}
        for g in group_order:
            keys = [k for k in combo_order if group_of[k] == g]
            groups[p][g] = _combine([combos[p][k] for k in keys])
        overall[p] = _combine(list(groups[p].values()))
    return {"combos": combos, "groups": groups, "overall": overall, "combo_order": combo_order, "group_of": group_of, "group_order": group_order}


def _combine(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean of the parts' means (parts with nothing scored are left out), counts summed."""
    st: dict[str, Any] = {m: _mean([float(x[m]) for x in parts if x.get(m) is not None]) for m in _STATS}
    for c in ("n", "failed", "errors", "missing", "oversized"):
        st[c] = int(sum(int(x.get(c, 0)) for x in parts))
    return st


# ----------------------------------------------------------------------------- text tables
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _row(label: list[str], st: Mapping[str, Any]) -> list[str]:
    return [
        *label,
        _fmt(st["psnr"], ".2f"),
        _fmt(st["ssim"], ".4f"),
        _fmt(st["seconds"], ".2f"),
        _fmt(st["tool_calls"], ".2f"),
        _fmt(st["rollbacks"], ".2f"),
        str(st["n"]),
        str(st["failed"] + st["errors"]) + ("" if not st["missing"] else f" (+{st['missing']} not run)"),
    ]


def _table(header: list[str], rows: list[list[str]], seps: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    n_label = sum(1 for h in header if h in ("group", "combination", "policy"))

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < n_label else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    for i, r in enumerate(rows):
        if i in seps:
            out.append("")
        out.append(line(r))
    return "\n".join(out)


_HEAD = ["PSNR", "SSIM", "sec/img", "calls/img", "rollb/img", "n", "failed"]


def format_tables(summary: Mapping[str, Any], policies: Sequence[str]) -> str:
    """The terminal tables: per group (plus ``all``) and per combination, a row per policy."""
    rows: list[list[str]] = []
    seps: set[int] = set()
    for g in [*summary["group_order"], "all"]:
        if rows and len(policies) > 1:
            seps.add(len(rows))
        for p in policies:
            st = summary["overall"][p] if g == "all" else summary["groups"][p][g]
            rows.append(_row([g, p], st))
    text = ["Per group (mean over combinations; PSNR on RGB, SSIM on Y):", _table(["group", "policy", *_HEAD], rows, seps)]
    rows, seps = [], set()
    for key in summary["combo_order"]:
        if rows and len(policies) > 1:
            seps.add(len(rows))
        for p in policies:
            rows.append(_row([key, p], summary["combos"][p][key]))
    text += ["", "Per combination (mean over images):", _table(["combination", "policy", *_HEAD], rows, seps)]
    over = {p: summary["overall"][p]["oversized"] for p in policies if summary["overall"][p]["oversized"]}
    if over:
        text.append(
            "\nNote: outputs 4x larger than their reference (super-resolution of a full-size input) were scored after a x4 bicubic downscale: "
            + ", ".join(f"{p} {n}" for p, n in over.items())
        )
    return "\n".join(text)


def format_markdown(summary: Mapping[str, Any], policies: Sequence[str]) -> str:
    """The group table as Markdown: a row per policy, PSNR / SSIM per group, then cost per image."""
    gs = list(summary["group_order"])
    head = ["policy", *(f"{g} PSNR / SSIM" for g in gs), "all PSNR / SSIM", "s / img", "tool calls / img", "rollbacks / img", "images", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for p in policies:
        cells = [p]
        for st in [*(summary["groups"][p][g] for g in gs), summary["overall"][p]]:
            cells.append(f"{_fmt(st['psnr'], '.2f')} / {_fmt(st['ssim'], '.4f')}")
        o = summary["overall"][p]
        cells += [_fmt(o["seconds"], ".2f"), _fmt(o["tool_calls"], ".2f"), _fmt(o["rollbacks"], ".2f"), str(o["n"]), str(o["failed"] + o["errors"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- files
def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def _chart_png(summary: Mapping[str, Any], policies: Sequence[str], metric: str) -> bytes:
    # The object API with an explicit Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [*summary["group_order"], "all"]
    fig = Figure(figsize=(max(6.0, 1.2 + 0.35 * len(groups) * len(policies)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(policies))
    x = np.arange(len(groups), dtype=float)
    for i, p in enumerate(policies):
        vals = [(summary["overall"][p] if g == "all" else summary["groups"][p][g])[metric] for g in groups]
        heights = [math.nan if v is None else float(v) for v in vals]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=p)
        fmt = "%.2f" if metric != "ssim" else "%.3f"
        ax.bar_label(bars, fmt=fmt, fontsize=6, padding=1)
    ax.set_xticks(x, groups)
    ax.set_xlabel("group")
    ax.set_ylabel(_LABELS[metric])
    ax.set_title(f"{_LABELS[metric]} by group and policy")
    if metric in ("psnr", "ssim"):
        lo = [v for p in policies for g in groups if (v := (summary["overall"][p] if g == "all" else summary["groups"][p][g])[metric]) is not None]
        if lo:
            span = max(lo) - min(lo)
            ax.set_ylim(max(0.0, min(lo) - max(span * 0.5, 0.02 if metric == "ssim" else 1.0)), max(lo) + max(span * 0.15, 0.01 if metric == "ssim" else 0.3))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="policy", title_fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _thumb(img: np.ndarray, size: tuple[int, int] | None = None) -> tuple[bytes, tuple[int, int]]:
    """JPEG bytes of ``img`` fitted into :data:`_THUMB` px (or resized to ``size`` = (w, h))."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img))
    if size is None:
        s = _THUMB / max(im.width, im.height)
        size = (max(1, round(im.width * s)), max(1, round(im.height * s)))
    im = im.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    return buf.getvalue(), size


def _trace_summary(rec: Mapping[str, Any], trace: Mapping[str, Any] | None) -> dict[str, Any]:
    """What was perceived, planned, tried and rolled back, from a record and its trace."""
    out: dict[str, Any] = {"status": rec.get("status"), "error": rec.get("error")}
    if trace is None:
        return out
    levels = trace.get("perception") or {}
    out["perceived"] = ", ".join(f"{d}={lv}" for d, lv in levels.items() if lv not in ("very_low", None)) or "nothing"
    spec = POLICIES.get(str(rec.get("policy")))
    if spec is not None and spec.ground_truth:
        out["perceived"] += " (replaced by the true degradations: " + ", ".join(rec.get("degradations", [])) + ")"
    out["planned"] = " > ".join(trace.get("plan") or []) or "-"
    out["done"] = " > ".join(trace.get("done") or []) or "-"
    out["tried"] = [
        f"{s.get('subtask')}: {s.get('tool')} -> {s.get('level') or 'not rated'} ({s.get('verdict') or 'unjudged'})"
        + (f" error: {s['error']}" if s.get("error") else "")
        for s in trace.get("steps") or []
    ]
    out["rolled_back"] = [
        (f"{e.get('subtask')} at node {e.get('node')}" if e.get("type") == "rollback" else f"backtrack from node {e.get('node')} ({e.get('subtask')})")
        for e in trace.get("events") or []
        if e.get("type") in ("rollback", "backtrack")
    ]
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_stats_table(summary: Mapping[str, Any], policies: Sequence[str], level: str) -> str:
    keys = [*summary["group_order"], "all"] if level == "group" else list(summary["combo_order"])
    head = "".join(f"<th>{h}</th>" for h in [level, "policy", *_HEAD])
    body = []
    for k in keys:
        for i, p in enumerate(policies):
            st = summary["overall"][p] if k == "all" else (summary["groups"][p][k] if level == "group" else summary["combos"][p][k])
            cells = _row([k if i == 0 else "", p], st)
            body.append("<tr" + (' class="first"' if i == 0 else "") + ">" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>")
    return f"<table class='stats'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table.stats{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}
table.stats td,table.stats th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
table.stats td:nth-child(-n+2),table.stats th:nth-child(-n+2){text-align:left}
table.stats tr.first td{border-top:2px solid #999}
.charts img{max-width:48%;margin:4px}
.sample{display:flex;gap:10px;overflow-x:auto;padding:6px 0;border-bottom:1px solid #ddd}
.cell{flex:0 0 auto;width:200px;font-size:12px}
.cell img{display:block;border:1px solid #ccc}
.cell b{display:block;margin:2px 0}
details{font-size:11px}
details ul{padding-left:1.1em;margin:2px 0}
.err{color:#a00}
"""


def _write_bytes(path: Path, data: bytes) -> None:
    from agentir.imageio import write_bytes_atomic

    write_bytes_atomic(path, data)


def _write_text(path: Path, text: str) -> None:
    from agentir.imageio import write_text_atomic

    write_text_atomic(path, text)


def _samples_html(run: Mapping[str, Any], out_dir: Path, data_dir: Path, samples_per_combo: int) -> str:
    from agentir.datasets import read_rgb
    from agentir.toolbox.degrade import bicubic_resize

    items = run["items"]
    policies = run["policies"]
    keep = sampled_ids(items, samples_per_combo)
    recs = {(r["policy"], r["id"]): r for r in run["records"]}
    files = out_dir / "report_files" / "thumbs"
    parts: list[str] = []
    current = None
    for it in items:
        iid = item_id(it)
        if iid not in keep:
            continue
        key = combo_key(it)
        if key != current:
            parts.append(f"<h3>{_esc(key)}</h3>")
            current = key
        rel = relative_stem(it)
        cells = []
        size: tuple[int, int] | None = None
        ref = inp = None
        try:
            ref = read_rgb(data_dir / it["hq"])
            data, size = _thumb(ref)
            _write_bytes(files / "reference" / f"{rel}.jpg", data)
        except (OSError, ValueError) as exc:
            log.warning("bench.thumb_failed", item=iid, error=str(exc))
        try:
            inp = read_rgb(data_dir / it["lq"])
            shown = bicubic_resize(inp, 4) if ref is not None and inp.shape[0] * 4 == ref.shape[0] else inp
            data, _ = _thumb(shown, size)
            _write_bytes(files / "input" / f"{rel}.jpg", data)
        except (OSError, ValueError) as exc:
            log.warning("bench.thumb_failed", item=iid, error=str(exc))

        def cell(title: str, img_rel: str | None, caption: str = "", details: str = "") -> str:
            img = f"<img src='{_esc(img_rel)}' alt='{_esc(title)}'>" if img_rel else "<div class='err'>no image</div>"
            return f"<div class='cell'><b>{_esc(title)}</b>{img}<div>{caption}</div>{details}</div>"

        truth = ", ".join(it["degradations"])
        caption = _esc(f"{iid} (true: {truth})")
        r_in = recs.get(("input", iid))
        if r_in is not None and r_in.get("psnr") is not None:
            caption += f"<br>{r_in['psnr']:.2f} dB / {r_in['ssim']:.4f}"
        cells.append(cell("degraded input", f"report_files/thumbs/input/{rel}.jpg" if inp is not None else None, caption))
        for p in policies:
            if p == "input":
                continue  # shown in the first column
            r = recs.get((p, iid))
            if r is None:
                cells.append(cell(p, None, "not run"))
                continue
            img_rel = None
            if r.get("output"):
                try:
                    out_img = read_rgb(out_dir / r["output"])
                    shown = bicubic_resize(out_img, 4) if ref is not None and out_img.shape[0] * 4 == ref.shape[0] else out_img
                    data, _ = _thumb(shown, size)
                    img_rel = f"report_files/thumbs/{p}/{rel}.jpg"
                    _write_bytes(out_dir / img_rel, data)
                except (OSError, ValueError) as exc:
                    log.warning("bench.thumb_failed", item=iid, policy=p, error=str(exc))
            caption = (f"{r['psnr']:.2f} dB / {r['ssim']:.4f}" if r.get("psnr") is not None else "<span class='err'>not scored</span>") + (
                f"<br>{r['tool_calls']} calls, {r['rollbacks']} rollbacks, {r['seconds']:.1f} s" if POLICIES[p].restores else ""
            )
            trace = _read_json(out_dir / r["trace"]) if r.get("trace") else None
            s = _trace_summary(r, trace)
            lines = [f"<li>status: {_esc(s['status'])}</li>"]
            if s.get("error"):
                lines.append(f"<li class='err'>error: {_esc(s['error'])}</li>")
            if trace is not None:
                lines += [
                    f"<li>perceived: {_esc(s['perceived'])}</li>",
                    f"<li>planned: {_esc(s['planned'])}</li>",
                    f"<li>done: {_esc(s['done'])}</li>",
                    "<li>tried:<ul>" + "".join(f"<li>{_esc(t)}</li>" for t in s["tried"]) + "</ul></li>" if s["tried"] else "<li>tried: nothing</li>",
                    "<li>rolled back: " + (_esc("; ".join(s["rolled_back"])) or "never") + "</li>",
                    f"<li><a href='{_esc(r['trace'])}'>full trace</a></li>",
                ]
            details = f"<details><summary>trace</summary><ul>{''.join(lines)}</ul></details>" if POLICIES[p].restores or s.get("error") else ""
            cells.append(cell(p, img_rel, caption, details))
        cells.append(cell("reference", f"report_files/thumbs/reference/{rel}.jpg" if ref is not None else None))
        parts.append("<div class='sample'>" + "".join(cells) + "</div>")
    return "\n".join(parts)


def write_report(run: Mapping[str, Any], out_dir: str | Path, data_dir: str | Path, *, command: str = "", samples_per_combo: int = 2) -> dict[str, Any]:
    """Write every output file listed in the module docstring; returns the summary.

    Args:
        run: what :func:`agentir.bench.runner.run_bench` (or ``collect_results``) returned.
        out_dir: the run's output folder.
        data_dir: the benchmark folder (for input and reference thumbnails).
        command: the command line, recorded in ``results.json`` and the HTML.
        samples_per_combo: images per combination shown in the HTML.
    """
    out = Path(out_dir)
    data = Path(data_dir)
    policies = list(run["policies"])
    summary = summarize(run["records"], run["items"], policies)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    meta = {
        "created": when,
        "command": command,
        "data_dir": str(data.resolve()),
        "manifest_sha256": run["fingerprint"],
        "manifest_seed": run["manifest"].get("seed"),
        "groups": list(run["groups"]),
        "images": len(run["items"]),
        "scoring_note": "outputs 4x larger than their reference (super-resolution of a full-size input, not covered by BENCHMARK.md) are downscaled x4 bicubic before scoring and counted as 'oversized'",
        "protocol": "PSNR on RGB [0,1]; SSIM on BT.601 Y (11x11 Gaussian, sigma 1.5); outputs 4x smaller than the reference upscaled x4 bicubic; combination = mean over images, group = mean over combinations, all = mean over groups",
    }
    doc = {
        "meta": meta,
        "policies": {p: POLICIES[p].description for p in policies},
        "overall": summary["overall"],
        "groups": summary["groups"],
        "combos": summary["combos"],
        "images": list(run["records"]),
    }
    _write_text(out / "results.json", json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")

    head = ["level", "name", "policy", "psnr", "ssim", "seconds", "tool_calls", "rollbacks", "n", "failed", "errors", "missing", "oversized"]
    rows: list[list[Any]] = []
    for p in policies:
        for g, st in summary["groups"][p].items():
            rows.append(["group", g, p, *(st[c] for c in head[3:])])
        rows.append(["all", "all", p, *(summary["overall"][p][c] for c in head[3:])])
        for k, st in summary["combos"][p].items():
            rows.append(["combo", k, p, *(st[c] for c in head[3:])])
    _write_text(out / "results.csv", _csv_text(head, rows))
    ihead = [
        "policy",
        "id",
        "group",
        "combo",
        "psnr",
        "ssim",
        "seconds",
        "tool_calls",
        "rollbacks",
        "status",
        "rescaled",
        "perceived",
        "plan",
        "done",
        "trace",
        "output",
        "error",
    ]
    irows = [[r.get(c) if not isinstance(r.get(c), list) else "+".join(r[c]) for c in ihead] for r in run["records"]]
    _write_text(out / "images.csv", _csv_text(ihead, irows))
    _write_text(out / "results.md", format_markdown(summary, policies))

    charts = []
    for m in CHART_METRICS:
        name = f"chart_{m}.png"
        _write_bytes(out / name, _chart_png(summary, policies, m))
        charts.append(name)

    samples = _samples_html(run, out, data, samples_per_combo)
    pol_list = "".join(f"<li><b>{_esc(p)}</b>: {_esc(POLICIES[p].description)}</li>" for p in policies)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>agentir benchmark</title><style>{_CSS}</style></head><body>
<h1>agentir benchmark</h1>
<p>{_esc(when)} &middot; {len(run["items"])} images &middot; groups {_esc(", ".join(run["groups"]))} &middot; data {_esc(meta["data_dir"])}<br>
<code>{_esc(command)}</code></p>
<p>{_esc(meta["protocol"])}. Seconds are wall clock per job; with several workers jobs share the machine.
Failed jobs are scored on their input; {_esc(meta["scoring_note"])}.</p>
<ul>{pol_list}</ul>
<h2>Per group</h2>{_html_stats_table(summary, policies, "group")}
<div class="charts">{"".join(f"<img src='{c}' alt='{c}'>" for c in charts)}</div>
<h2>Per combination</h2>{_html_stats_table(summary, policies, "combo")}
<h2>Samples ({samples_per_combo} per combination): input, each policy's output, reference</h2>
{samples}
</body></html>
"""
    _write_text(out / "report.html", page)
    return summary
