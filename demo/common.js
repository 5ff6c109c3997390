// Helpers shared by the demo pages: where the gateway is, and how to show answers.

import { EXPOSED_HEADERS } from "./client-secret.js";

export const params = new URLSearchParams(location.search);

/**
 * The gateway's base URL: `?gateway=http://127.0.0.1:8080`, else this page's host on
 * port 8080 (what `make run` starts), so localhost pages talk to localhost and
 * 127.0.0.1 pages to 127.0.0.1.
 */
export function gatewayBase() {
  const given = params.get("gateway");
  if (given) return new URL(given).origin;
  return `${location.protocol}//${location.hostname}:8080`;
}

/** Carry ?gateway= over to a link to the other demo page. */
export function linkWithGateway(anchor) {
  const given = params.get("gateway");
  if (given) anchor.href = `${anchor.getAttribute("href")}?gateway=${encodeURIComponent(given)}`;
}

export const $ = (id) => document.getElementById(id);

export function setText(id, value) {
  const el = $(id);
  el.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
}

/** Keep the recognisable prefix (`ek_`, `ek_stub_`) and hide the rest. */
export function maskSecret(secret) {
  const prefix = /^[a-z]+_(?:stub_)?/.exec(secret)?.[0] ?? "";
  const hidden = Math.min(Math.max(secret.length - prefix.length, 0), 24);
  return `${prefix}${"•".repeat(hidden)} (${secret.length} chars)`;
}

/** A short FNV-1a fingerprint: tells two secrets apart without showing either. */
export function fingerprint(secret) {
  let h = 0x811c9dc5;
  for (let i = 0; i < secret.length; i++) {
    h ^= secret.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

export function formatSeconds(seconds) {
  if (seconds <= 0) return "0s";
  const s = Math.ceil(seconds);
  const m = Math.floor(s / 60);
  return m ? `${m}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

/** Fill the "last answer headers" table (ids hdr-retry-after, hdr-ratelimit, …). */
export function renderHeaders(headers) {
  for (const name of EXPOSED_HEADERS) setText(`hdr-${name.toLowerCase()}`, headers[name]);
}

/** Show a GatewayError (or any error) in the error panel; null hides it. */
export function renderError(error) {
  const panel = $("error");
  if (!error) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const status = error.status ?? 0;
  // A failure inside an accepted stream is no refusal: the request got its 200, the answer
  // began, then the server sent a ChatKit `error` event.
  $("err-title").textContent = error.midStream ? "The answer failed mid-stream" : "Refused";
  panel.dataset.kind = error.midStream ? "mid-stream" : "refused";
  if (error.midStream) setText("err-status", "the request was accepted (200); the stream then carried an error event");
  else setText("err-status", status ? status : "none — the fetch was rejected");
  setText("err-code", error.code ?? error.name);
  setText("err-message", error.message);
  const headers = error.headers ?? {};
  setText("err-retry-after", headers["Retry-After"]);
  setText("err-ratelimit", headers.RateLimit);
  setText("err-ratelimit-policy", headers["RateLimit-Policy"]);
  setText("err-request-id", headers["X-Request-ID"]);
  panel.dataset.status = String(status);
}

/** Append a line to a log list, newest last, keeping the last `keep`. */
export function logLine(listId, text, attrs = {}, keep = 50) {
  const list = $(listId);
  const li = document.createElement("li");
  li.textContent = text;
  for (const [k, v] of Object.entries(attrs)) li.dataset[k] = String(v);
  list.append(li);
  while (list.children.length > keep) list.firstElementChild.remove();
  return li;
}

export function clock() {
  return new Date().toLocaleTimeString([], { hour12: false });
}
