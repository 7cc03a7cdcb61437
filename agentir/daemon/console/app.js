// The agentir console: routes (#/, #/jobs, #/jobs/ID, #/streams), the token, notices, the live feed.

import { ApiError, forgetImages, getJSON, hadToken, setToken, setUnauthorizedHandler, tryToken } from "./api.js";
import { h, replace } from "./dom.js";
import { showJob } from "./job.js";
import { Live } from "./live.js";
import { showStreams } from "./streams.js";
import { showJobs, showNew } from "./views.js";

const main = document.getElementById("main");
const notices = document.getElementById("notices");
const login = document.getElementById("login");
const liveStatus = document.getElementById("live-status");
const signOut = document.getElementById("sign-out");

let info = null;
let pageHandler = null; // live events for the job page on screen
let pageJob = null;
let stopPage = null; // stops the page on screen (the streams page polls)
const recent = new Map(); // this session's uploads: id -> {name, row}

/** Show a one-line message; kind: "info" | "warn" | "error"; a `key` replaces the earlier notice with that key. */
function say(text, kind = "info", key = "") {
  if (key) for (const old of notices.querySelectorAll(`.notice[data-key="${key}"]`)) old.remove();
  const close = h("button", { type: "button", class: "close", "aria-label": "dismiss" }, "×");
  const note = h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status", dataset: key ? { key } : {} },
    h("span", { class: "text" }, text), close);
  close.addEventListener("click", () => note.remove());
  notices.prepend(note);
  while (notices.children.length > 5) notices.lastElementChild.remove();
  if (kind === "info") setTimeout(() => note.remove(), 8000);
}

const live = new Live({
  onEvent: (job, event) => {
    const upload = recent.get(job);
    if (upload && event.kind !== "error") {
      const status = upload.row.querySelector(".status");
      const text = event.kind === "progress" ? ` ${event.stage}${event.tool_calls ? ` · ${event.tool_calls} tool calls` : ""}` : ` ${event.state}`;
      if (status.lastChild && status.lastChild.nodeType === Node.TEXT_NODE) status.lastChild.textContent = text;
      else status.append(text);
      upload.row.dataset.state = event.kind === "result" ? event.state : "running";
    }
    if (event.kind === "error" && job !== pageJob) say(`Live progress failed: ${event.error}`, "error");
    if (job === pageJob && pageHandler) pageHandler(event).catch(report);
  },
  onStatus: (state, text) => {
    liveStatus.textContent = { open: "live", closed: "idle" }[state] || state;
    liveStatus.className = `live-${state}`;
    document.body.dataset.live = state;
    if (text) say(text, state === "reconnecting" ? "warn" : "info", "live");
    if (state === "reconnecting") getJSON("/v1/info").catch(() => {}); // a 401 here locks the page instead of retrying forever
    if (state === "open" && text && pageJob && pageHandler) pageHandler({ kind: "resync" }).catch(report);
  },
});

function report(err) {
  if (err instanceof ApiError && err.status === 401) return; // the token form says it
  say(err instanceof ApiError ? `${err.detail}` : `Unexpected error: ${err.message}`, "error");
  console.error(err);
}

// ----------------------------------------------------------------------------- the token
function lock(message) {
  live.stop();
  if (stopPage) stopPage();
  stopPage = null;
  forgetImages();
  info = null;
  pageHandler = null;
  pageJob = null;
  recent.clear();
  replace(main); // nothing of any job stays on the page
  document.body.dataset.auth = "required";
  login.hidden = false;
  signOut.hidden = true;
  login.querySelector("#login-message").textContent = message;
  login.querySelector("#token").focus();
}

setUnauthorizedHandler(() => {
  const message = hadToken()
    ? "The daemon no longer accepts your token (it is wrong, or expired because the daemon's AGENTIR_TOKEN changed). Enter the current token."
    : "This daemon requires a token. Enter the value of its AGENTIR_TOKEN.";
  setToken("");
  lock(message);
});

login.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const value = login.querySelector("#token").value.trim();
  if (!value) {
    login.querySelector("#login-message").textContent = "Enter the token (the daemon's AGENTIR_TOKEN) to continue.";
    return;
  }
  try {
    if (!(await tryToken(value))) {
      login.querySelector("#login-message").textContent = "That token was refused: it does not match the daemon's AGENTIR_TOKEN. Check it and try again.";
      return;
    }
  } catch (err) {
    login.querySelector("#login-message").textContent = err.message;
    return;
  }
  setToken(value);
  login.querySelector("#token").value = "";
  login.hidden = true;
  start();
});

signOut.addEventListener("click", () => {
  setToken("");
  lock("Signed out. Enter the token to continue.");
});

// ----------------------------------------------------------------------------- routes
function route() {
  const hash = location.hash || "#/";
  const [path, query] = hash.slice(1).split("?");
  return { path, params: new URLSearchParams(query || "") };
}

async function render() {
  if (!info) return;
  const { path, params } = route();
  if (pageJob) live.unwatch(pageJob);
  pageHandler = null;
  pageJob = null;
  if (stopPage) stopPage();
  stopPage = null;
  const section = path.startsWith("/jobs") ? "/jobs" : path.startsWith("/streams") ? "/streams" : "/";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#${section}`);
  delete main.dataset.loaded;
  delete main.dataset.stage;
  try {
    const m = path.match(/^\/jobs\/([^/]+)$/);
    if (m) {
      const id = decodeURIComponent(m[1]);
      pageJob = id;
      main.dataset.view = "job";
      pageHandler = await showJob(main, id, { live, say, info });
      if (!pageHandler) pageJob = null;
    } else if (path === "/streams") {
      main.dataset.view = "streams";
      stopPage = showStreams(main, { say });
    } else if (path === "/jobs") {
      main.dataset.view = "jobs";
      await showJobs(main, params, { say });
    } else {
      main.dataset.view = "new";
      showNew(main, {
        info, say, live, recent,
        onSubmitted: (jobs) => {
          if (jobs.length === 1) location.hash = `#/jobs/${jobs[0].id}`;
          else for (const job of jobs) live.watch(job.id);
        },
      });
    }
  } catch (err) {
    report(err);
  }
}

async function start() {
  try {
    info = await getJSON("/v1/info");
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      replace(main, h("section", { class: "card error-card" }, h("h2", {}, "The daemon cannot be reached"), h("p", {}, err.message)));
      report(err);
    }
    return;
  }
  document.body.dataset.auth = info.auth ? "token" : "open";
  signOut.hidden = !info.auth;
  document.getElementById("version").textContent = `v${info.version}`;
  await render();
}

window.addEventListener("hashchange", () => render());
start();
