// The live streams page (#/streams): every video stream open on /v1/stream, with a preview of its
// latest restored frame, fps, drops, latency and the tool chain; polled while the page is shown.

import { ApiError, forgetImage, getJSON, imageUrl } from "./api.js";
import { h, replace } from "./dom.js";

const POLL_MS = 1000;

function fmtMs(v) {
  return v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`;
}

/** One stream's card; `update(stream)` refreshes it in place (no layout jump while it plays). */
function streamCard(stream) {
  const img = h("img", { class: "stream-preview", alt: `latest restored frame of ${stream.id}`, width: 320, height: 240 });
  const placeholder = h("div", { class: "stream-wait muted" }, "waiting for the first frame…");
  const frame = h("div", { class: "stream-frame" }, placeholder, img);
  const stats = h("dl", { class: "timings stream-stats" });
  const card = h("article", { class: "card stream", dataset: { stream: stream.id } },
    h("div", { class: "row" }, h("h3", {}, h("code", {}, stream.id)), h("span", { class: "badge" }, stream.mode), h("span", { class: "muted" }, stream.client)),
    h("div", { class: "stream-body" }, frame, stats));
  let seq = -1;
  let loading = false;
  const update = async (s) => {
    const rows = [
      ["fps", h("span", { class: "stream-fps" }, s.fps.toFixed(1))],
      ["frames in / out", `${s.frames_in} / ${s.frames_out}`],
      ["dropped", h("span", { class: `stream-dropped${s.dropped ? " warn" : ""}` }, String(s.dropped))],
      ["errors", String(s.errors)],
      ["latency p50", fmtMs(s.latency_ms_p50)],
      ["size", s.width ? `${s.width}×${s.height}` : "–"],
      ["chain", s.chain.length ? s.chain.join(" → ") : "(nothing to fix)"],
      ["opened", new Date(s.opened_at).toLocaleTimeString()],
    ];
    replace(stats, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    card.dataset.frames = String(s.frames_out);
    if (s.preview && s.preview_seq !== seq && !loading) {
      loading = true;
      try {
        const url = await imageUrl(s.preview, { fresh: true });
        img.src = url;
        placeholder.hidden = true;
        seq = s.preview_seq;
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw err; // 404: the stream just ended
      } finally {
        loading = false;
      }
    }
  };
  return { card, update, forget: () => forgetImage(stream.preview || `/v1/streams/${stream.id}/preview.jpg`) };
}

/** The streams page; returns a function that stops its polling (called when the route changes). */
export function showStreams(root, { say }) {
  const list = h("div", { id: "streams", class: "streams" });
  const empty = h("p", { id: "streams-empty", class: "muted" },
    "No stream is open. Send frames to this daemon's WebSocket /v1/stream (docs/PROTOCOL.md, Streams) and they show here live.");
  replace(root, h("section", { class: "card" }, h("div", { class: "row" }, h("h2", {}, "Live streams"), h("span", { id: "streams-count", class: "muted" }, "")), empty, list));
  const cards = new Map();
  let stopped = false;
  let timer = null;
  let failures = 0;
  const poll = async () => {
    if (stopped) return;
    try {
      const { streams } = await getJSON("/v1/streams");
      failures = 0;
      const open = new Set(streams.map((s) => s.id));
      for (const [id, entry] of cards) {
        if (!open.has(id)) {
          entry.card.remove();
          entry.forget();
          cards.delete(id);
        }
      }
      for (const s of streams) {
        let entry = cards.get(s.id);
        if (!entry) {
          entry = streamCard(s);
          cards.set(s.id, entry);
          list.append(entry.card);
        }
        await entry.update(s);
      }
      empty.hidden = streams.length > 0;
      document.getElementById("streams-count").textContent = streams.length ? `${streams.length} open` : "";
      root.dataset.loaded = "1";
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return; // the token form takes over
      failures += 1;
      if (failures === 1) say(`Cannot read the streams: ${err.detail || err.message}; retrying`, "warn", "streams");
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const entry of cards.values()) entry.forget();
  };
}
