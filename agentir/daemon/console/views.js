// The "new job" page (drop or pick images, policy and options from GET /v1/info) and the job
// list (state filter, paging).

import { ApiError, getJSON, submit } from "./api.js";
import { fmtBytes, fmtSeconds, fmtTime, h, replace } from "./dom.js";

const STATES = ["queued", "running", "done", "failed", "cancelled"];

function optionInput(opt) {
  const id = `opt-${opt.name}`;
  let input;
  if (opt.type === "boolean") {
    input = h("input", { type: "checkbox", id, name: opt.name, checked: Boolean(opt.default) });
  } else if (opt.enum) {
    input = h("select", { id, name: opt.name }, opt.enum.map((v) => h("option", { value: v, selected: v === opt.default }, v)));
  } else {
    const props = { type: "number", id, name: opt.name, placeholder: opt.default === null ? "no limit" : String(opt.default) };
    if (opt.minimum !== undefined) props.min = opt.minimum;
    if (opt.maximum !== undefined) props.max = opt.maximum;
    props.step = opt.type === "integer" ? 1 : "any";
    input = h("input", props);
  }
  return h("label", { class: "opt", title: opt.help }, h("span", {}, opt.name.replace(/_/g, " ")), input, h("small", { class: "muted" }, opt.help));
}

/** The options the user changed from their defaults (the API fills in the rest). */
function readOptions(form, info) {
  const out = {};
  for (const opt of info.options) {
    const el = form.elements.namedItem(opt.name);
    if (!el) continue;
    if (opt.type === "boolean") {
      if (el.checked !== Boolean(opt.default)) out[opt.name] = el.checked;
    } else if (opt.enum) {
      if (el.value !== opt.default) out[opt.name] = el.value;
    } else if (el.value !== "") {
      out[opt.name] = opt.type === "integer" ? parseInt(el.value, 10) : parseFloat(el.value);
    }
  }
  return out;
}

/** The new-job page; `onSubmitted(jobs)` gets [{id, name}] once uploads are accepted. */
export function showNew(root, { info, say, live, onSubmitted, recent }) {
  const limits = info.limits;
  const fileInput = h("input", { type: "file", id: "file", accept: "image/*", multiple: true, class: "visually-hidden" });
  const drop = h("label", { class: "drop", id: "drop", for: "file" },
    h("strong", {}, "Drop images here or click to pick"),
    h("span", { class: "muted" }, `${limits.formats.join(", ")} · up to ${fmtBytes(limits.max_body_bytes)} and ${(limits.max_pixels / 1e6).toFixed(0)} megapixels each`));
  const policy = h("select", { id: "policy", name: "policy" }, info.policies.map((p) =>
    h("option", { value: p.name, selected: p.name === info.default_policy, disabled: !p.usable, title: p.note }, p.usable ? p.name : `${p.name} (unavailable)`)));
  const form = h("form", { id: "new-job", class: "card" },
    h("h2", {}, "Restore images"),
    drop, fileInput,
    h("div", { class: "row" }, h("label", { class: "opt" }, h("span", {}, "planning policy"), policy)),
    h("details", { class: "options" }, h("summary", {}, "Options"), h("div", { class: "opts" }, info.options.map(optionInput))),
    h("div", { class: "row" }, h("button", { type: "submit", id: "submit", disabled: true }, "Restore"), h("span", { id: "picked", class: "muted" }, "no image picked")));
  const uploads = h("ul", { id: "uploads", class: "uploads" });
  let files = [];
  const pick = (list) => {
    files = Array.from(list || []);
    form.querySelector("#picked").textContent = files.length ? files.map((f) => `${f.name} (${fmtBytes(f.size)})`).join(", ") : "no image picked";
    form.querySelector("#submit").disabled = files.length === 0;
  };
  fileInput.addEventListener("change", () => pick(fileInput.files));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); drop.classList.remove("over"); pick(ev.dataTransfer.files); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const options = readOptions(form, info);
    const accepted = [];
    form.querySelector("#submit").disabled = true;
    for (const file of files) {
      const row = h("li", { class: "upload", dataset: { name: file.name } }, h("span", { class: "name" }, file.name), " ", h("span", { class: "status" }, "uploading…"));
      uploads.prepend(row);
      const status = row.querySelector(".status");
      if (file.size > limits.max_body_bytes) {
        const text = `${file.name} is ${fmtBytes(file.size)}, over this daemon's upload limit of ${fmtBytes(limits.max_body_bytes)}; downscale or recompress it and try again.`;
        status.textContent = "refused";
        row.classList.add("error");
        say(text, "error");
        continue;
      }
      try {
        const job = await submit(file, policy.value, options);
        status.replaceChildren(h("a", { href: `#/jobs/${job.id}` }, `job ${job.id.slice(0, 8)}…`), ` ${job.state}`);
        accepted.push({ id: job.id, name: file.name });
        recent.set(job.id, { name: file.name, row });
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) return;
        status.textContent = "refused";
        row.classList.add("error");
        say(`${file.name} was refused: ${err.detail || err.message}`, "error");
      }
    }
    pick([]);
    fileInput.value = "";
    if (accepted.length) onSubmitted(accepted);
  });
  replace(root, form, h("section", { class: "card" }, h("h3", {}, "This session's uploads"), uploads));
  for (const [id, entry] of recent) {
    uploads.append(entry.row);
    live.watch(id);
  }
}

/** The job list: `params` are the hash's query (state, before). */
export async function showJobs(root, params, { say }) {
  const state = params.get("state") || "";
  const before = params.get("before") || "";
  const trail = (params.get("trail") || "").split(",").filter(Boolean); // cursors of earlier pages, for "newer"
  const query = new URLSearchParams({ limit: "20" });
  if (state) query.set("state", state);
  if (before) query.set("before", before);
  const page = await getJSON(`/v1/jobs?${query}`);
  const filter = h("select", { id: "state-filter", "aria-label": "state" },
    h("option", { value: "" }, "all states"), STATES.map((s) => h("option", { value: s, selected: s === state }, s)));
  filter.addEventListener("change", () => { location.hash = filter.value ? `#/jobs?state=${filter.value}` : "#/jobs"; });
  const link = (cursor, nextTrail) => {
    const q = new URLSearchParams();
    if (state) q.set("state", state);
    if (cursor) q.set("before", cursor);
    if (nextTrail.length) q.set("trail", nextTrail.join(","));
    const s = q.toString();
    return `#/jobs${s ? `?${s}` : ""}`;
  };
  const rows = page.jobs.map((job) => {
    const ran = job.finished && job.started ? job.finished - job.started : null;
    return h("tr", { dataset: { job: job.id, state: job.state } },
      h("td", {}, h("a", { href: `#/jobs/${job.id}` }, h("code", {}, job.id.slice(0, 12)))),
      h("td", {}, h("span", { class: `badge state-${job.state}` }, job.state)),
      h("td", {}, fmtTime(job.created_at)),
      h("td", {}, `${job.width}×${job.height}`),
      h("td", {}, job.policy),
      h("td", {}, fmtSeconds(ran)),
      h("td", { class: "muted" }, job.error ? job.error.slice(0, 80) : (job.progress && job.progress.stage) || ""));
  });
  const newer = before ? h("a", { href: link(trail[trail.length - 1] || "", trail.slice(0, -1)), id: "page-newer", class: "button" }, "← newer") : null;
  const older = page.next ? h("a", { href: link(page.next, before ? [...trail, before] : trail), id: "page-older", class: "button" }, "older →") : null;
  replace(root, h("section", { class: "card" },
    h("div", { class: "row" }, h("h2", {}, "Jobs"), filter),
    rows.length
      ? h("table", { class: "jobs", id: "jobs" },
        h("thead", {}, h("tr", {}, ["id", "state", "created", "size", "policy", "ran", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, rows))
      : h("p", { class: "muted", id: "jobs-empty" }, state ? `No ${state} jobs.` : "No jobs yet."),
    h("div", { class: "row paging" }, newer, older)));
  if (!rows.length && before) say("This page is empty: the jobs were deleted by retention; go back to the newest page.", "warn");
}
