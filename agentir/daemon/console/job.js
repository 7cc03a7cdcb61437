// One job's page (#/jobs/ID): live progress, before/after with a slider, the plan, perception,
// timings and the search tree.

import { ApiError, getJSON, imageUrl } from "./api.js";
import { fmtSeconds, fmtTime, h, levelClass, replace, words } from "./dom.js";
import { renderTree } from "./tree.js";

const TERMINAL = new Set(["done", "failed", "cancelled"]);

function loadInto(img, path, onError) {
  imageUrl(path).then((url) => { img.src = url; }).catch((err) => {
    img.alt = `could not load ${path}: ${err.message}`;
    if (onError) onError(err);
  });
}

function compare(job, previews, say) {
  const before = h("img", { class: "cmp-before", alt: "before (the uploaded image)", id: "img-before" });
  const after = h("img", { class: "cmp-after", alt: "after (the restored image)", id: "img-after" });
  const frame = h("div", { class: "cmp-frame" }, before, after, h("div", { class: "cmp-line" }));
  const slider = h("input", { type: "range", min: 0, max: 100, value: 50, class: "cmp-slider", id: "cmp-slider", "aria-label": "before / after split" });
  const setSplit = () => frame.style.setProperty("--split", `${slider.value}%`);
  slider.addEventListener("input", setSplit);
  setSplit();
  frame.style.setProperty("--ratio", `${job.width} / ${job.height}`);
  if (previews.input && previews.input.url) loadInto(before, previews.input.url);
  else before.alt = "no copy of the input was kept for this job";
  loadInto(after, job.result, (err) => say(`The result image of job ${job.id} could not be loaded: ${err.message}`));
  return h("section", { class: "card compare" },
    h("h3", {}, "Before / after"),
    frame,
    h("div", { class: "cmp-legend" }, h("span", {}, "◀ before"), slider, h("span", {}, "after ▶")));
}

function perception(trace) {
  const levels = trace.perception || {};
  const names = Object.keys(levels);
  if (!names.length) return null;
  return h("section", { class: "card" }, h("h3", {}, "Perception"),
    h("table", { class: "perception" }, h("tbody", {}, names.map((n) =>
      h("tr", {}, h("th", {}, words(n)), h("td", {}, h("span", { class: `level ${levelClass(levels[n])}` }, words(levels[n]))),
        h("td", { class: "muted" }, trace.scores && trace.scores[n] !== undefined ? trace.scores[n].toFixed(2) : ""))))));
}

function plan(trace) {
  const chips = (list) => (list && list.length ? list.map((s, i) => [i ? h("span", { class: "arrow" }, "→") : null, h("span", { class: "chip" }, words(s))]) : h("span", { class: "muted" }, "nothing"));
  return h("section", { class: "card plan", id: "plan" }, h("h3", {}, "Plan"),
    h("p", {}, h("span", { class: "label" }, "First plan: "), chips(trace.plan)),
    h("p", {}, h("span", { class: "label" }, "Done, in order: "), chips(trace.done)),
    h("p", { class: "muted" }, `status ${trace.status || "–"} · planner ${trace.planner || "–"} · judge ${trace.reflection || "–"} · ` +
      `${trace.tool_calls ?? 0} tool calls · ${trace.rollbacks ?? 0} rollbacks`));
}

function timings(job, trace) {
  const queued = job.started && job.created ? job.started - job.created : null;
  const ran = job.finished && job.started ? job.finished - job.started : null;
  return h("dl", { class: "timings" },
    h("dt", {}, "created"), h("dd", {}, fmtTime(job.created_at)),
    h("dt", {}, "waited"), h("dd", {}, fmtSeconds(queued)),
    h("dt", {}, "ran"), h("dd", {}, fmtSeconds(ran)),
    h("dt", {}, "perception"), h("dd", {}, fmtSeconds(trace.perception_seconds)),
    h("dt", {}, "search"), h("dd", {}, fmtSeconds(trace.search_seconds)));
}

/**
 * Renders job `id` into `root` and keeps it live through `live`; returns a handler for live
 * events of this job (the app routes WebSocket events to the open page).
 */
export async function showJob(root, id, { live, say, info }) {
  let job;
  try {
    job = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      replace(root, h("section", { class: "card missing", id: "job-missing" },
        h("h2", {}, "Job not found"),
        h("p", {}, `No job with id “${id}” on this daemon: the link may be mistyped, or retention deleted the job. `,
          h("a", { href: "#/jobs" }, "Open the job list"), " or ", h("a", { href: "#/" }, "restore a new image"), ".")));
      say(`Job “${id}” does not exist on this daemon; check the link or pick a job from the list.`, "error");
      return null;
    }
    throw err;
  }
  const maxCalls = (job.options && job.options.max_tool_calls) || ((info.options || []).find((o) => o.name === "max_tool_calls") || {}).default || 32;
  const stage = h("span", { class: "stage", id: "job-stage" }, job.progress ? job.progress.stage : job.state);
  const detail = h("span", { class: "muted", id: "job-detail" }, job.progress && job.progress.detail ? ` ${job.progress.detail}` : "");
  const bar = h("progress", { max: maxCalls, value: (job.progress && job.progress.tool_calls) || 0, id: "job-progress" });
  const stateBadge = h("span", { class: `badge state-${job.state}`, id: "job-state" }, job.state);
  const body = h("div", { class: "job-body" });
  replace(root,
    h("section", { class: "card job-head" },
      h("h2", {}, "Job ", h("code", {}, job.id), " ", stateBadge),
      h("p", { class: "muted" }, `${job.width}×${job.height} · policy ${job.policy} · options ${JSON.stringify(job.options || {})}`),
      h("div", { class: "live" }, bar, " ", stage, detail),
      h("p", {}, h("a", { href: `#/jobs/${job.id}`, class: "permalink" }, "Link to this job"))),
    body);

  const finish = async () => {
    job = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
    stateBadge.textContent = job.state;
    stateBadge.className = `badge state-${job.state}`;
    stage.textContent = job.state;
    detail.textContent = job.error ? ` ${job.error}` : "";
    bar.value = (job.trace && job.trace.tool_calls) || bar.value;
    const trace = job.trace || {};
    let previews = { input: null, candidates: [] };
    try {
      previews = await getJSON(`/v1/jobs/${job.id}/previews`);
    } catch (err) {
      say(`The previews of job ${job.id} could not be loaded (${err.message}); the trace is shown without thumbnails.`, "warn");
    }
    const parts = [];
    if (job.state === "done") parts.push(compare(job, previews, say));
    else if (job.state === "failed") parts.push(h("section", { class: "card error-card" }, h("h3", {}, "Failed"), h("p", {}, job.error || "no reason recorded")));
    else if (job.state === "cancelled") parts.push(h("section", { class: "card" }, h("h3", {}, "Cancelled")));
    parts.push(h("div", { class: "cols" }, plan(trace), perception(trace), h("section", { class: "card" }, h("h3", {}, "Timings"), timings(job, trace))));
    if ((trace.steps || []).length || (trace.events || []).length) {
      parts.push(h("section", { class: "card" }, h("h3", {}, "Search tree"),
        h("p", { class: "muted" }, "Each node is an image; under it the subtasks tried there, each tool's output with the judge's verdict. " +
          "Rollbacks, re-plans and the fallback are marked."),
        renderTree(trace, previews, (img, url) => loadInto(img, url))));
    }
    replace(body, parts);
    root.dataset.loaded = job.state;
  };

  if (TERMINAL.has(job.state)) {
    await finish();
    return null;
  }
  root.dataset.loaded = "live";
  replace(body, h("section", { class: "card" }, h("p", { class: "muted" }, "Waiting for the job to finish; progress updates live.")));
  live.watch(job.id);
  return async (event) => {
    if (event.kind === "progress") {
      stage.textContent = event.stage;
      detail.textContent = event.detail ? ` ${event.detail}` : "";
      bar.value = event.tool_calls;
      stateBadge.textContent = "running";
      stateBadge.className = "badge state-running";
      root.dataset.stage = event.stage;
    } else if (event.kind === "result") {
      await finish();
    } else if (event.kind === "error") {
      say(`Live progress of job ${job.id} failed: ${event.error}`, "error");
    } else if (event.kind === "resync") {
      const now = await getJSON(`/v1/jobs/${encodeURIComponent(id)}`);
      if (TERMINAL.has(now.state)) await finish();
    }
  };
}
