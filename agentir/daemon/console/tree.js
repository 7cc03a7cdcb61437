// The search as a tree, rebuilt from a job's trace (agent_policies/search.py writes it):
// nodes are images (the input, then one per kept step), each with the subtasks tried there in
// order; a subtask's candidates are the trace's steps at that node, in order, matched to the
// daemon's thumbnails by (node, subtask, index). Events mark verdicts, rollbacks, re-plans,
// backtracks and the fallback.

import { fmtSeconds, h, levelClass, words } from "./dom.js";

const CHILD_EVENTS = new Set(["keep_improved", "keep_failed", "skip"]);

/** {nodes: Map id -> {id, parent, via, items: [...]}, notes: [...]} from a trace. */
export function buildTree(trace) {
  const steps = Array.isArray(trace.steps) ? trace.steps : [];
  const events = Array.isArray(trace.events) ? trace.events : [];
  const groups = new Map(); // "node|subtask" -> steps, with their index in the group
  steps.forEach((step) => {
    const key = `${step.node}|${step.subtask}`;
    if (!groups.has(key)) groups.set(key, []);
    const list = groups.get(key);
    list.push({ ...step, index: list.length });
  });
  const nodes = new Map();
  const node = (id, parent = null, via = null) => {
    if (!nodes.has(id)) nodes.set(id, { id, parent, via, items: [] });
    return nodes.get(id);
  };
  node(0);
  let next = 1;
  const child = (parent, via, why) => {
    const n = node(next++, parent, via);
    n.why = why;
    node(parent).items.push({ kind: "child", id: n.id });
    return n;
  };
  const used = new Set();
  const notes = [];
  for (const ev of events) {
    const at = typeof ev.node === "number" ? node(ev.node) : null;
    switch (ev.type) {
      case "reflect": {
        const key = `${ev.node}|${ev.subtask}`;
        used.add(key);
        at.items.push({ kind: "attempt", subtask: ev.subtask, verdict: ev.verdict, best: ev.best, steps: groups.get(key) || [] });
        if (ev.verdict === "accept" || ev.verdict === "success") child(ev.node, ev.subtask, ev.verdict);
        break;
      }
      case "fallback":
        at.items.push({ kind: "event", ev });
        child(ev.node, null, "fallback");
        break;
      default:
        if (CHILD_EVENTS.has(ev.type) && at) {
          at.items.push({ kind: "event", ev });
          child(ev.node, ev.subtask, ev.type);
        } else if (at) at.items.push({ kind: "event", ev });
        else notes.push(ev);
    }
  }
  // Steps no reflection judged (a failed or interrupted job): shown under their node.
  for (const [key, list] of groups) {
    if (used.has(key)) continue;
    const [id, subtask] = key.split("|");
    node(Number(id)).items.push({ kind: "attempt", subtask, verdict: "unjudged", best: null, steps: list });
  }
  return { nodes, notes };
}

const EVENT_TEXT = {
  rollback: (ev) => `Rolled back: ${words(ev.subtask)} failed here (${ev.reason || "no output good enough"}); re-planning with it not first`,
  replan: (ev) => `Re-planned: ${(ev.order || []).map(words).join(" → ")}`,
  backtrack: (ev) => `Dead end: backtracked to node ${ev.to}, ${words(ev.subtask)} not first there`,
  dead_end: () => "Dead end: every remaining order failed here",
  budget: (ev) => `Out of budget (${ev.reason})`,
  no_tools: (ev) => `No tools for ${words(ev.subtask)}`,
  keep_improved: (ev) => `Kept the failed ${words(ev.subtask)} step: it still lowered the severity`,
  keep_failed: (ev) => `Greedy: kept the least-bad ${words(ev.subtask)} output`,
  skip: (ev) => `Greedy: skipped ${words(ev.subtask)}`,
  fallback: (ev) => `Fallback: continue from node ${ev.node} (done: ${(ev.done || []).map(words).join(", ") || "nothing"}` +
    `${(ev.given_up || []).length ? `; given up: ${ev.given_up.map(words).join(", ")}` : ""})`,
};

const MARK = { rollback: "rollback", backtrack: "rollback", dead_end: "rollback", replan: "replan", fallback: "fallback", budget: "fallback" };

function eventLine(ev) {
  const text = (EVENT_TEXT[ev.type] || ((e) => `${words(e.type)}${e.detail ? `: ${e.detail}` : ""}`))(ev);
  return h("li", { class: `event mark-${MARK[ev.type] || "note"}`, dataset: { event: ev.type } }, text);
}

const VERDICT_TEXT = { accept: "accepted at once", success: "success", failure: "failed", unjudged: "not judged" };

function candidate(step, thumbs, loadThumb) {
  const key = `${step.node}|${step.subtask}|${step.index}`;
  const thumb = thumbs.get(key);
  const verdict = step.error ? "error" : step.verdict || "pending";
  const img = h("img", { class: "thumb", alt: `${step.tool} output`, width: 96, height: 96, decoding: "async" });
  const box = h("figure", { class: `cand verdict-${verdict}`, dataset: { tool: step.tool, verdict } },
    thumb && thumb.url ? img : h("div", { class: "thumb nothumb" }, step.error ? "tool failed" : "no preview"),
    h("figcaption", {},
      h("span", { class: "tool" }, step.tool),
      h("span", { class: `level ${levelClass(step.level)}` }, step.error ? step.error : words(step.level || "–")),
      h("span", { class: "verdict" }, verdict.replace(/-/g, " ")),
      typeof step.gain_db === "number"
        ? h("span", { class: "gain", title: "the step judge's predicted PSNR gain over the step's input" }, `${step.gain_db >= 0 ? "+" : ""}${step.gain_db.toFixed(1)} dB predicted`)
        : null,
      h("span", { class: "secs" }, fmtSeconds(step.seconds))));
  if (thumb && thumb.url) loadThumb(img, thumb.url);
  return box;
}

/** The tree as nested lists; `previews` is GET /v1/jobs/{id}/previews, `loadThumb(img, url)` fills an image. */
export function renderTree(trace, previews, loadThumb) {
  const { nodes, notes } = buildTree(trace);
  const thumbs = new Map();
  for (const c of (previews && previews.candidates) || []) thumbs.set(`${c.node}|${c.subtask}|${c.index}`, c);
  const finalDone = (trace.done || []).join("|");
  const renderNode = (n, done) => {
    const title = n.id === 0 ? "Input image" : n.why === "fallback" ? "Best result so far (fallback)" : `After ${words(n.via)}`;
    const final = n.items.length === 0 && done.join("|") === finalDone;
    const items = n.items.map((it) => {
      if (it.kind === "child") {
        const c = nodes.get(it.id);
        return renderNode(c, c.via ? [...done, c.via] : done);
      }
      if (it.kind === "event") return eventLine(it.ev);
      return h("li", { class: `attempt verdict-${it.verdict}`, dataset: { subtask: it.subtask, verdict: it.verdict } },
        h("div", { class: "attempt-head" }, h("strong", {}, words(it.subtask)), " ",
          h("span", { class: `badge badge-${it.verdict}` }, VERDICT_TEXT[it.verdict] || it.verdict),
          it.best ? h("span", { class: "muted" }, ` best: ${it.best}`) : null,
          h("span", { class: "muted" }, ` · ${fmtSeconds(it.steps.reduce((a, s) => a + (s.seconds || 0), 0))}`)),
        h("div", { class: "cands" }, it.steps.map((s) => candidate(s, thumbs, loadThumb))));
    });
    return h("li", { class: `node${final ? " final" : ""}`, dataset: { node: n.id } },
      h("div", { class: "node-head" }, h("span", { class: "node-id" }, `node ${n.id}`), " ", title, final ? h("span", { class: "badge badge-final" }, "result") : null),
      items.length ? h("ul", { class: "node-items" }, items) : null);
  };
  return h("div", { class: "tree-wrap" },
    notes.length ? h("ul", { class: "notes" }, notes.map(eventLine)) : null,
    h("ul", { class: "tree", id: "tree" }, renderNode(nodes.get(0), [])));
}
