// Live progress over the daemon's WebSocket (/v1/ws, msgpack envelopes): watch jobs, and when
// the connection drops, reconnect with a growing delay and watch every unfinished job again.

import { decode, encode } from "./msgpack.js";
import { wsProtocols } from "./api.js";

const RETRY_MS = [500, 1000, 2000, 4000, 5000];

function newId() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function envelope(id, kind, body) {
  return encode({ k: kind, v: 1, id, cid: null, cause: null, src: "agentir.console", ts: Date.now() / 1000, rt: null, b: body });
}

/**
 * One WebSocket shared by the page. `onEvent(job, event)` gets {kind: "progress", stage, detail,
 * tool_calls}, {kind: "result", state, error} or {kind: "error", status, error}; `onStatus(state,
 * text)` gets "connecting" | "open" | "reconnecting" | "closed" with a line for the page.
 */
export class Live {
  constructor({ onEvent, onStatus }) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.watched = new Set();
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.everOpened = false;
    this.drops = 0;
    this.sent = new Map(); // envelope id -> job, to name the job of a ws.error
  }

  /** Follow `job` until it ends (connects on first use; survives reconnects). */
  watch(job) {
    this.stopped = false;
    this.watched.add(job);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.send("ws.watch", { job });
    else this.connect();
  }

  unwatch(job) { this.watched.delete(job); }

  /** Close for good (sign-out): no reconnect. */
  stop() {
    this.stopped = true;
    this.watched.clear();
    clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000, "signed out");
    this.ws = null;
  }

  send(kind, body) {
    const id = newId();
    if (this.sent.size > 1000) this.sent.clear();
    this.sent.set(id, body.job);
    this.ws.send(envelope(id, kind, body));
  }

  connect() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN) || this.timer) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.onStatus(this.attempt ? "reconnecting" : "connecting", "");
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/v1/ws`, wsProtocols());
    } catch (err) {
      this.retry(`the live feed could not be opened (${err.message})`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      const again = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.onStatus("open", again ? "Live feed reconnected; progress resumed." : "");
      for (const job of this.watched) this.send("ws.watch", { job });
    };
    ws.onmessage = (msg) => this.handle(msg.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) { this.onStatus("closed", ""); return; }
      if (this.watched.size === 0 && ev.code === 1000) { this.onStatus("closed", ""); return; }
      this.drops += 1;
      this.retry(`the live connection to the daemon dropped (code ${ev.code})`);
    };
  }

  retry(why) {
    const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
    this.attempt += 1;
    this.onStatus("reconnecting", `Live progress paused: ${why}; reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    this.timer = setTimeout(() => { this.timer = null; this.connect(); }, delay);
  }

  handle(data) {
    let env;
    try {
      env = decode(new Uint8Array(data));
    } catch (err) {
      console.warn("agentir: undecodable frame", err);
      return;
    }
    const body = env.b || {};
    switch (env.k) {
      case "job.progress":
        this.onEvent(body.job, { kind: "progress", stage: body.stage, detail: body.detail || "", tool_calls: body.tool_calls || 0 });
        break;
      case "ws.result":
        this.watched.delete(body.job);
        this.onEvent(body.job, { kind: "result", state: body.state, error: body.error || "" });
        break;
      case "ws.error": {
        const job = this.sent.get(env.cid) || env.cid || "";
        this.watched.delete(job);
        this.onEvent(job, { kind: "error", status: body.status, error: body.error });
        break;
      }
      default:
        break;
    }
  }
}
