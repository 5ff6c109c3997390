// getClientSecret for the ChatKit widget, backed by chatkit-gateway.
//
// This is the part a site copies. The widget calls getClientSecret(current) on mount
// (current is null) and again before the secret expires (current is the old secret).
// The gateway mints a new session for the same end user each time: it keys the ChatKit
// `user` on the device id this page keeps in localStorage, so thread history survives a
// refresh and a reload without the browser ever choosing the workflow, model or API key.

const DEVICE_KEY = "chatkit-device-id"; // the same key as the README snippet

/** Headers the gateway exposes through CORS (Access-Control-Expose-Headers). */
export const EXPOSED_HEADERS = ["Retry-After", "RateLimit", "RateLimit-Policy", "X-Request-ID"];

/** A stable, opaque id for this browser profile and origin. */
export function deviceId() {
  let id = null;
  try {
    id = localStorage.getItem(DEVICE_KEY);
  } catch {
    // storage disabled: a fresh id per page load still works, history just won't persist
  }
  if (!id) {
    id = newUuid();
    try {
      localStorage.setItem(DEVICE_KEY, id);
    } catch {
      /* see above */
    }
  }
  return id;
}

function newUuid() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID(); // secure contexts
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The exposed headers of an answer, as the page can read them (null when absent). */
export function exposedHeaders(response) {
  return Object.fromEntries(EXPOSED_HEADERS.map((name) => [name, response.headers.get(name)]));
}

/** A refusal by the gateway (status > 0) or by the browser/network (status 0). */
export class GatewayError extends Error {
  /** `midStream`: a ChatKit `error` event after the stream began (the request was
   *  accepted with 200), not a refusal: shown as a failed answer. */
  constructor(message, { status = 0, code = "network_error", headers = {}, cause, midStream = false } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = "GatewayError";
    this.status = status;
    this.code = code;
    this.headers = headers;
    this.midStream = midStream;
  }

  /** Seconds to wait before trying again, from Retry-After (429, 503), else null. */
  get retryAfter() {
    const value = Number.parseInt(this.headers["Retry-After"] ?? "", 10);
    return Number.isFinite(value) ? value : null;
  }
}

/** An error answer's JSON `{"error": {"code", "message"}}`, tolerating anything else. */
export async function readError(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error === "object" && body.error) return body.error;
  } catch {
    /* not JSON */
  }
  return {};
}

/**
 * Build the widget's getClientSecret for one token route.
 * `onAnswer(event)` (optional) sees every outcome: {ok, status, headers, secret,
 * expiresAt, refresh, error} — the demo renders them; a site can log or ignore them.
 */
export function createGetClientSecret(endpoint, { onAnswer } = {}) {
  return async function getClientSecret(current) {
    const refresh = Boolean(current);
    let response;
    try {
      response = await fetch(endpoint, {
        method: "POST",
        mode: "cors",
        credentials: "omit",
        cache: "no-store",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ device_id: deviceId() }),
      });
    } catch (err) {
      // CORS refusals and unreachable gateways look the same to a page: a TypeError.
      const error = new GatewayError(
        `The browser refused the request or its answer (${err.name}: ${err.message}). ` +
          "Is this page's origin in the route's allowed_origins, and is the gateway up?",
        { cause: err },
      );
      onAnswer?.({ ok: false, status: 0, headers: {}, refresh, error });
      throw error;
    }
    const headers = exposedHeaders(response);
    if (!response.ok) {
      const detail = await readError(response);
      const error = new GatewayError(detail.message ?? `HTTP ${response.status}`, {
        status: response.status,
        code: detail.code ?? "unexpected_answer",
        headers,
      });
      onAnswer?.({ ok: false, status: response.status, headers, refresh, error });
      throw error;
    }
    const body = await response.json();
    if (typeof body.client_secret !== "string") {
      const error = new GatewayError("The answer carries no client_secret", {
        status: response.status,
        code: "unexpected_answer",
        headers,
      });
      onAnswer?.({ ok: false, status: response.status, headers, refresh, error });
      throw error;
    }
    onAnswer?.({
      ok: true,
      status: response.status,
      headers,
      refresh,
      secret: body.client_secret,
      expiresAt: body.expires_at,
    });
    return body.client_secret;
  };
}
