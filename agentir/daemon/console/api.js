// The daemon's HTTP API as the console uses it: the bearer token, problem-details errors, images
// fetched with the token (as blob: URLs, since <img src> cannot send an Authorization header).

const TOKEN_KEY = "agentir.token";

/** An answer other than success; `status` and a one-line `detail` (RFC 9457 problem details). */
export class ApiError extends Error {
  constructor(status, detail, path) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.path = path;
  }
}

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let onUnauthorized = () => {};

export function getToken() { return token; }
export function hadToken() { return token !== ""; }

export function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Called with the ApiError whenever the daemon answers 401 (the token is missing, wrong or expired). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

function headers(extra = {}) {
  const h = { ...extra };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function problem(response, path) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    detail = body.detail || body.error || detail;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, detail, path);
}

/** fetch() with the token; raises ApiError for every non-2xx answer (and calls the 401 handler). */
export async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  } catch (err) {
    throw new ApiError(0, `the daemon cannot be reached (${err.message}); check that agentir serve is running`, path);
  }
  if (!response.ok) {
    const error = await problem(response, path);
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return response;
}

export async function getJSON(path) {
  return (await request(path)).json();
}

/** Check a token without keeping it: true when the daemon accepts it (or needs none). */
export async function tryToken(candidate) {
  const response = await fetch("/v1/info", { headers: candidate ? { Authorization: `Bearer ${candidate}` } : {} });
  if (response.status === 401) return false;
  if (!response.ok) throw await problem(response, "/v1/info");
  return true;
}

/** Submit one file with a policy and options; returns {id, state}. */
export async function submit(file, policy, options) {
  const form = new FormData();
  form.append("image", file, file.name);
  if (policy) form.append("policy", policy);
  form.append("options", JSON.stringify(options || {}));
  const response = await request("/v1/jobs", { method: "POST", body: form });
  return response.json();
}

const blobUrls = new Map();

/** A blob: URL for an image the daemon serves (fetched with the token; cached per path). */
export async function imageUrl(path, { fresh = false } = {}) {
  if (!fresh && blobUrls.has(path)) return blobUrls.get(path);
  const blob = await (await request(path)).blob();
  const url = URL.createObjectURL(blob);
  const old = blobUrls.get(path);
  if (old) URL.revokeObjectURL(old);
  blobUrls.set(path, url);
  return url;
}

/** Forget one fetched image (a stream that ended). */
export function forgetImage(path) {
  const url = blobUrls.get(path);
  if (url) URL.revokeObjectURL(url);
  blobUrls.delete(path);
}

/** Forget every fetched image (after sign-out, so nothing of a job stays reachable). */
export function forgetImages() {
  for (const url of blobUrls.values()) URL.revokeObjectURL(url);
  blobUrls.clear();
}

/** The WebSocket subprotocols carrying the token (browsers cannot set headers on a WebSocket). */
export function wsProtocols() {
  const out = ["agentir.v1"];
  if (token) {
    const b64 = btoa(String.fromCharCode(...new TextEncoder().encode(token)))
      .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    out.push(`agentir.bearer.${b64}`);
  }
  return out;
}
