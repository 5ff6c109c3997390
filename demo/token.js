// The client-secrets page: get a secret exactly as the ChatKit widget does, then either
// mount the real widget (real key and workflow) or, offline (`--stub-upstream`, secrets
// `ek_stub_…`), show the secret, its expiry and the refresh the widget would do.

import { createGetClientSecret, deviceId } from "./client-secret.js";
import {
  $,
  clock,
  fingerprint,
  formatSeconds,
  gatewayBase,
  linkWithGateway,
  logLine,
  maskSecret,
  params,
  renderError,
  renderHeaders,
  setText,
} from "./common.js";

const CHATKIT_JS = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js";
const STUB_PREFIX = "ek_stub_";

const routeSelect = $("route");
const routePath = params.get("route") ?? routeSelect.value;
if (![...routeSelect.options].some((o) => o.value === routePath)) {
  routeSelect.add(new Option(`${routePath} (from ?route=)`, routePath));
}
routeSelect.value = routePath;
const kind =
  params.get("kind") ?? routeSelect.selectedOptions[0]?.dataset.kind ??
  (routePath.includes("realtime") ? "realtime" : "chatkit");
const endpoint = new URL(routePath, gatewayBase()).href;
const widgetWanted = params.get("widget") !== "off" && kind === "chatkit";

const state = {
  current: null, // the latest secret handed out
  expiresAt: null, // its expiry, unix seconds
  lifetime: null, // seconds it was valid for when we got it
  refreshes: 0,
  refreshAt: null, // when the page's own refresh timer fires (ms), offline mode
  timer: null,
  mode: "loading",
};

const getClientSecret = createGetClientSecret(endpoint, { onAnswer });

function onAnswer(event) {
  renderHeaders(event.headers);
  const what = event.refresh ? "refresh" : "first";
  if (event.ok) {
    state.current = event.secret;
    state.expiresAt = event.expiresAt;
    state.lifetime = Math.max(0, event.expiresAt - Date.now() / 1000);
    if (event.refresh) state.refreshes += 1;
    renderError(null);
    setText("secret", maskSecret(event.secret));
    setText("secret-fp", fingerprint(event.secret));
    setText("refreshes", state.refreshes);
    setText("expires-at", new Date(event.expiresAt * 1000).toLocaleTimeString([], { hour12: false }));
    setText("last-status", `${event.status} OK (${what})`);
    logLine("attempts", `${clock()} ${what} → ${event.status}, ${maskSecret(event.secret)}, fp ${fingerprint(event.secret)}`, {
      status: event.status,
    });
  } else {
    const e = event.error;
    renderError(e);
    const retry = e.retryAfter !== null ? `, Retry-After ${e.retryAfter}s` : "";
    setText("last-status", e.status ? `${e.status} ${e.code}${retry}` : `rejected by the browser (${e.cause?.name ?? "error"})`);
    logLine("attempts", `${clock()} ${what} → ${e.status || "fetch rejected"} ${e.code}${retry}`, {
      status: e.status,
    });
  }
  tick();
}

/** Refresh before expiry: 20% of the lifetime ahead, between 1 s and 60 s. */
function scheduleRefresh(delaySeconds = null) {
  clearTimeout(state.timer);
  if (delaySeconds === null) {
    const margin = Math.min(60, Math.max(1, state.lifetime * 0.2));
    delaySeconds = Math.max(0, state.expiresAt - Date.now() / 1000 - margin);
  }
  state.refreshAt = Date.now() + delaySeconds * 1000;
  state.timer = setTimeout(refresh, delaySeconds * 1000);
  tick();
}

async function refresh() {
  state.refreshAt = null;
  try {
    await getClientSecret(state.current);
    if (state.mode !== "widget") scheduleRefresh();
  } catch (error) {
    // The old secret may still be good; try again when the gateway says we may.
    if (state.mode !== "widget") scheduleRefresh(error.retryAfter ?? 5);
  }
}

function tick() {
  if (state.expiresAt !== null) {
    const left = state.expiresAt - Date.now() / 1000;
    setText("expires-in", left > 0 ? formatSeconds(left) : "expired");
    $("expires-in").dataset.seconds = String(Math.max(0, Math.ceil(left)));
  }
  if (state.mode === "widget") setText("next-refresh", "done by the widget (it calls getClientSecret(current) before expiry)");
  else if (state.refreshAt !== null) {
    const late = state.expiresAt !== null && state.refreshAt > state.expiresAt * 1000;
    const when = `in ${formatSeconds((state.refreshAt - Date.now()) / 1000)}`;
    setText("next-refresh", late ? `${when} — after this secret expires (the gateway said to wait)` : when);
  }
  else setText("next-refresh", null);
}

function setMode(mode, label) {
  state.mode = mode;
  setText("mode", label);
  $("mode").dataset.mode = mode;
  document.body.dataset.state = mode;
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.append(script);
  });
}

async function mountWidget(first) {
  $("widget-card").hidden = false;
  setText("widget-status", "loading chatkit.js…");
  try {
    // A site that bundles @openai/chatkit has the element already; otherwise the CDN.
    if (!customElements.get("openai-chatkit")) await loadScript(CHATKIT_JS);
    await Promise.race([
      customElements.whenDefined("openai-chatkit"),
      new Promise((_, reject) => setTimeout(() => reject(new Error("openai-chatkit was never defined")), 15000)),
    ]);
  } catch (error) {
    setText("widget-status", `${error.message} — offline? The secret above is real; only the widget could not load.`);
    $("widget-status").dataset.failed = "true";
    return;
  }
  // Hand the widget the secret this page already fetched, then let it drive refreshes.
  let unused = first;
  const chatkit = document.createElement("openai-chatkit");
  chatkit.setOptions({
    api: {
      async getClientSecret(current) {
        if (!current && unused && unused.expiresAt - Date.now() / 1000 > 30) {
          const { secret } = unused;
          unused = null;
          return secret;
        }
        unused = null;
        return getClientSecret(current);
      },
    },
  });
  chatkit.addEventListener("chatkit.error", (event) => {
    setText("widget-status", `widget error: ${event.detail?.error?.message ?? "see the console"}`);
  });
  $("chatkit-root").append(chatkit);
  setText("widget-status", "mounted: the widget calls getClientSecret(current) on its own from here on");
  $("widget-status").dataset.failed = "false";
}

async function start() {
  setText("page-origin", location.origin);
  setText("gateway-url", endpoint);
  setText("device-id", deviceId());
  linkWithGateway($("to-proxy"));
  linkWithGateway($("to-agent"));
  linkWithGateway($("to-agent-intro"));
  routeSelect.addEventListener("change", () => {
    params.set("route", routeSelect.value);
    params.delete("kind");
    location.search = params.toString();
  });
  $("refresh-now").addEventListener("click", () => {
    clearTimeout(state.timer);
    if (state.current === null) first();
    else refresh();
  });
  setInterval(tick, 250);
  await first();
}

/** The mount-time call; on failure, retry as the gateway allows, then pick the mode. */
async function first() {
  let secret;
  try {
    secret = await getClientSecret(null);
  } catch (error) {
    setMode("error", "no secret yet");
    clearTimeout(state.timer);
    const wait = error.retryAfter ?? 10;
    state.refreshAt = Date.now() + wait * 1000;
    state.timer = setTimeout(first, wait * 1000);
    return;
  }
  if (secret.startsWith(STUB_PREFIX)) {
    setMode("offline", "offline · stub upstream");
    scheduleRefresh();
  } else if (!widgetWanted) {
    setMode("manual", kind === "realtime" ? "Realtime client secret" : "widget off (?widget=off)");
    scheduleRefresh();
  } else {
    setMode("widget", "live · ChatKit widget");
    await mountWidget({ secret, expiresAt: state.expiresAt });
  }
}

// For the console: chatkitDemo.getClientSecret(null) runs the same code path.
window.chatkitDemo = { getClientSecret, endpoint, state };
start();
