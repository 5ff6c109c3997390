// The agent page: a chat with the gateway's own ChatKit server (a `chatkit_agent` route).
//
// The official ChatKit web component needs OpenAI's CDN and a domain key, so this page
// speaks the self-hosted ChatKit protocol itself, as the component would: threads.create
// for the first message, threads.add_user_message for the next ones, the answer rendered
// delta by delta as the Server-Sent Events arrive, its sources under it, and the history
// read back with threads.get_by_id after a reload. Every request carries X-Device-Id:
// the gateway keeps each device's threads private. Model text only ever goes through
// textContent.

import { deviceId, GatewayError } from "./client-secret.js";
import { postChatKit } from "./chatkit-request.js";
import { sseEvents } from "./sse.js";
import { $, formatSeconds, gatewayBase, linkWithGateway, params, renderError, setText } from "./common.js";

const endpoint = new URL(params.get("path") ?? "/chatkit/assistant", gatewayBase()).href;
// One remembered thread per endpoint: another ?path= (another route) has threads of its own.
const THREAD_KEY = `chatkit-agent-thread:${endpoint}`;
const MAX_HISTORY_PAGES = 20;

let threadId = readThread();
let running = null; // AbortController of the request in flight
const views = new Map(); // item id → the rendered message

// the remembered thread

function readThread() {
  try {
    return localStorage.getItem(THREAD_KEY);
  } catch {
    return null; // storage disabled: the chat works, it is just not remembered
  }
}

function rememberThread(id) {
  threadId = id;
  try {
    if (id) localStorage.setItem(THREAD_KEY, id);
    else localStorage.removeItem(THREAD_KEY);
  } catch {
    /* see readThread */
  }
  showThread();
}

function showThread(title = null) {
  setText("thread-id", threadId ? `${threadId}${title ? ` “${title}”` : ""}` : "none yet — the first message creates one");
  setText("send-type", threadId ? "(threads.add_user_message)" : "(threads.create)");
}

function setStatus(state, text = state) {
  setText("status", text);
  document.body.dataset.state = state;
}

function setBusy(controller) {
  running = controller;
  $("send").disabled = Boolean(controller);
  $("stop").disabled = !controller;
}

// requests

function userInput(text) {
  // chatkit.types.UserMessageInput
  return { content: [{ type: "input_text", text }], attachments: [], quoted_text: null, inference_options: {} };
}

function post(request, signal) {
  setText("hdr-type", request.type);
  return postChatKit(endpoint, request, signal, "chatkit_agent");
}

async function postJson(request, signal) {
  const response = await post(request, signal);
  return response.json();
}

/** A one-line summary of a refusal for the status line. */
function refusal(error) {
  if (!error.status) return "refused by the browser (see below)";
  const wait = error.retryAfter;
  return `refused: ${error.status} ${error.code}${wait !== null ? ` — try again in ${formatSeconds(wait)}` : ""}`;
}

function threadGone(error, id, what) {
  return new GatewayError(
    `${what} ${id} was not found for this device id: it belongs to another browser ` +
      "(another X-Device-Id), was deleted, or outlived the store's retention. This page " +
      "forgot it; the next message starts a new chat.",
    { status: error.status, code: error.code, headers: error.headers },
  );
}

// rendering

function clearTranscript() {
  views.clear();
  $("transcript").replaceChildren();
  $("empty").hidden = false;
}

function scrollDown() {
  const list = $("transcript");
  list.scrollTop = list.scrollHeight;
}

/** A message bubble: {li, text, parts, sourcesEl}; `parts` are an assistant's content parts. */
function addView(role, id = null) {
  $("empty").hidden = true;
  const li = document.createElement("li");
  li.className = `msg msg-${role}`;
  li.dataset.role = role;
  if (id) {
    li.dataset.itemId = id;
  }
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "Assistant" : role;
  const text = document.createElement("p");
  text.className = "msg-text";
  li.append(who, text);
  $("transcript").append(li);
  const view = { li, text, parts: [], sourcesEl: null };
  if (id) views.set(id, view);
  scrollDown();
  return view;
}

function userText(item) {
  const content = Array.isArray(item?.content) ? item.content : [];
  return content
    .map((part) => (typeof part?.text === "string" ? part.text : ""))
    .filter(Boolean)
    .join(" ");
}

function renderUser(item, view = addView("user", item.id)) {
  view.text.textContent = userText(item) || "(no text)";
  if (item.quoted_text) {
    const quote = document.createElement("blockquote");
    quote.textContent = item.quoted_text;
    view.li.insertBefore(quote, view.text);
  }
  const names = (item.attachments ?? []).map((a) => a?.name).filter((n) => typeof n === "string");
  if (names.length) {
    const files = document.createElement("p");
    files.className = "muted attachments";
    files.textContent = `Attached: ${names.join(", ")}`;
    view.li.append(files);
  }
  return view;
}

function partsOf(item) {
  return (Array.isArray(item?.content) ? item.content : []).map((c) => ({
    text: typeof c?.text === "string" ? c.text : "",
    annotations: Array.isArray(c?.annotations) ? [...c.annotations] : [],
  }));
}

function renderAssistantText(view) {
  view.text.textContent = view.parts.map((p) => p.text).join("");
  scrollDown();
}

/** One line per distinct source of the message's annotations: title, and file name or URL. */
function renderSources(view) {
  const seen = new Map();
  for (const part of view.parts) {
    for (const annotation of part.annotations) {
      const source = annotation?.source;
      if (!source || typeof source !== "object") continue;
      const key = `${source.type}|${source.filename ?? source.url ?? source.id ?? source.title}`;
      if (!seen.has(key)) seen.set(key, source);
    }
  }
  if (!seen.size) {
    view.sourcesEl?.remove();
    view.sourcesEl = null;
    return;
  }
  if (!view.sourcesEl) {
    view.sourcesEl = document.createElement("div");
    view.sourcesEl.className = "sources";
    view.li.append(view.sourcesEl);
  }
  const label = document.createElement("span");
  label.className = "muted";
  label.textContent = seen.size === 1 ? "Source" : "Sources";
  const list = document.createElement("ul");
  for (const source of seen.values()) list.append(sourceLine(source));
  view.sourcesEl.replaceChildren(label, list);
}

function sourceLine(source) {
  const li = document.createElement("li");
  li.className = "source";
  li.dataset.type = String(source.type ?? "unknown");
  const title = typeof source.title === "string" && source.title ? source.title : null;
  if (source.type === "file") {
    const filename = typeof source.filename === "string" ? source.filename : "";
    li.dataset.filename = filename;
    const name = document.createElement("code");
    name.textContent = filename || "(file)";
    li.append(name);
    if (title && title !== filename) li.append(` — ${title}`);
  } else if (source.type === "url" && isWebUrl(source.url)) {
    const link = document.createElement("a");
    link.href = source.url;
    link.rel = "noopener noreferrer";
    link.target = "_blank";
    link.textContent = title ?? source.url;
    li.append(link);
  } else {
    li.textContent = title ?? String(source.url ?? source.id ?? source.type ?? "source");
  }
  return li;
}

function isWebUrl(value) {
  try {
    return ["http:", "https:"].includes(new URL(value).protocol);
  } catch {
    return false;
  }
}

function renderAssistant(item, view = null) {
  view ??= views.get(item.id) ?? addView("assistant", item.id);
  view.parts = partsOf(item);
  renderAssistantText(view);
  renderSources(view);
  view.li.dataset.state = "done";
  return view;
}

/** Items other than messages (tasks, workflows, widgets…): a short muted line. */
function renderOther(item) {
  if (item?.type === "hidden_context_item" || item?.type === "end_of_turn") return null;
  const view = addView("note", item?.id);
  view.li.classList.add("muted");
  view.text.textContent = `(${item?.type ?? "item"})`;
  return view;
}

function renderItem(item) {
  if (item?.type === "user_message") return renderUser(item);
  if (item?.type === "assistant_message") return renderAssistant(item);
  return renderOther(item);
}

function showProgress(text) {
  const el = $("progress");
  if (text) {
    el.textContent = text;
    el.hidden = false;
  } else {
    el.hidden = true;
    el.textContent = "";
  }
}

// one streamed turn

/** What one stream has shown so far, for the status line and the end of the stream. */
class Turn {
  constructor(pending) {
    this.pending = pending; // the user's bubble, shown before the server confirmed it
    this.assistant = null;
    this.events = 0;
    this.deltas = 0;
    this.error = null;
  }

  handle(ev) {
    this.events += 1;
    switch (ev.type) {
      case "thread.created":
        rememberThread(ev.thread?.id ?? null);
        showThread(ev.thread?.title);
        break;
      case "thread.updated":
        showThread(ev.thread?.title);
        break;
      case "thread.item.added":
      case "thread.item.done":
        this.item(ev.item, ev.type === "thread.item.done");
        break;
      case "thread.item.replaced":
        this.replace(ev.item);
        break;
      case "thread.item.removed":
        views.get(ev.item_id)?.li.remove();
        views.delete(ev.item_id);
        break;
      case "thread.item.updated":
        this.update(views.get(ev.item_id), ev.update ?? {});
        break;
      case "progress_update":
        showProgress(ev.text ?? "Working…");
        break;
      case "notice": {
        const note = addView("note");
        note.li.dataset.level = String(ev.level ?? "info");
        note.text.textContent = [ev.title, ev.message].filter(Boolean).join(": ");
        break;
      }
      case "error":
        showProgress(null);
        this.error = new GatewayError(
          `${ev.message ?? "The assistant could not answer."} (an error event in the stream; ` +
            `${ev.allow_retry ? "sending again may work" : "sending again will not help"})`,
          { status: 200, code: ev.code ?? "stream_error", midStream: true },
        );
        renderError(this.error);
        if (this.assistant?.li.dataset.state === "streaming") this.assistant.li.dataset.state = "failed";
        break;
      default:
        break; // stream_options, client effects…: nothing to show here
    }
  }

  item(item, done) {
    if (item?.type === "user_message") {
      if (!done) return;
      if (this.pending) {
        // The server's copy of what was sent: now it has an id and is part of the thread.
        const view = this.pending;
        this.pending = null;
        view.li.dataset.itemId = item.id;
        delete view.li.dataset.pending;
        views.set(item.id, view);
        view.text.textContent = userText(item) || view.text.textContent;
      } else if (!views.has(item.id)) {
        renderUser(item);
      }
    } else if (item?.type === "assistant_message") {
      let view = views.get(item.id);
      if (!view) {
        view = addView("assistant", item.id);
        view.parts = partsOf(item);
        view.li.dataset.state = "streaming";
        view.li.dataset.deltas = "0";
        renderAssistantText(view);
      }
      this.assistant = view;
      if (done) {
        showProgress(null);
        renderAssistant(item, view);
      }
    } else if (done && item && !views.has(item.id)) {
      renderOther(item);
    }
  }

  replace(item) {
    const view = views.get(item?.id);
    if (!view) return this.item(item, true);
    if (item.type === "assistant_message") renderAssistant(item, view);
    else if (item.type === "user_message") view.text.textContent = userText(item);
  }

  update(view, update) {
    if (!view) return;
    const index = Number.isInteger(update.content_index) ? update.content_index : 0;
    const part = (view.parts[index] ??= { text: "", annotations: [] });
    switch (update.type) {
      case "assistant_message.content_part.added":
        view.parts[index] = partsOf({ content: [update.content] })[0];
        renderAssistantText(view);
        break;
      case "assistant_message.content_part.text_delta":
        showProgress(null); // the answer itself is the progress now
        part.text += update.delta ?? "";
        this.deltas += 1;
        view.li.dataset.deltas = String(Number(view.li.dataset.deltas ?? 0) + 1);
        renderAssistantText(view);
        break;
      case "assistant_message.content_part.annotation_added": {
        const at = Number.isInteger(update.annotation_index) ? update.annotation_index : part.annotations.length;
        part.annotations[at] = update.annotation;
        renderSources(view);
        break;
      }
      case "assistant_message.content_part.done": {
        const [finished] = partsOf({ content: [update.content] });
        part.text = finished.text;
        // (openai-chatkit sends this part without the annotations it streamed; keep them)
        if (finished.annotations.length) part.annotations = finished.annotations;
        renderAssistantText(view);
        renderSources(view);
        break;
      }
      default:
        break;
    }
  }
}

async function send(text) {
  if (running) return;
  const controller = new AbortController();
  setBusy(controller);
  renderError(null);
  const input = userInput(text);
  const sentTo = threadId;
  const request = sentTo
    ? { type: "threads.add_user_message", params: { thread_id: sentTo, input } }
    : { type: "threads.create", params: { input } };
  const pending = addView("user");
  pending.li.dataset.pending = "true";
  pending.text.textContent = text;
  const turn = new Turn(pending);
  const started = performance.now();
  setStatus("sending", `sending ${request.type}…`);
  try {
    const response = await post(request, controller.signal);
    setStatus("streaming", "the assistant is answering…");
    for await (const message of sseEvents(response.body)) {
      let ev;
      try {
        ev = JSON.parse(message.data);
      } catch {
        continue; // not JSON: nothing a ChatKit client could show
      }
      turn.handle(ev);
    }
    const ms = Math.round(performance.now() - started);
    if (turn.error) setStatus("error", `the answer failed: ${turn.error.code}`);
    else setStatus("done", `answered in ${ms} ms (${turn.deltas} deltas, ${turn.events} events)`);
  } catch (error) {
    if (error.name === "AbortError") {
      // Stop (else "New chat", which has set the page up afresh already)
      if (running === controller) setStatus("stopped", `stopped after ${turn.events} events`);
    } else {
      if (turn.pending) {
        turn.pending.li.dataset.failed = "true";
        turn.pending.li.title = "not sent";
        if (!$("message").value) $("message").value = text; // to send again
      }
      let shown = error;
      if (error.status === 404 && sentTo) {
        rememberThread(null);
        shown = threadGone(error, sentTo, "Thread");
      }
      renderError(shown);
      setStatus("error", refusal(shown));
    }
  } finally {
    showProgress(null);
    const view = turn.assistant;
    if (view?.li.dataset.state === "streaming") view.li.dataset.state = "stopped";
    if (running === controller) setBusy(null);
  }
}

// the history of the remembered thread

async function loadHistory() {
  if (!threadId) {
    clearTranscript();
    setStatus("empty", "new chat");
    return;
  }
  const id = threadId;
  const controller = new AbortController();
  setBusy(controller);
  setStatus("loading", `loading thread ${id}…`);
  try {
    const thread = await postJson({ type: "threads.get_by_id", params: { thread_id: id } }, controller.signal);
    const items = [...(thread.items?.data ?? [])];
    let more = Boolean(thread.items?.has_more);
    for (let page = 0; more && items.length && page < MAX_HISTORY_PAGES; page++) {
      const next = await postJson(
        { type: "items.list", params: { thread_id: id, order: "asc", after: items.at(-1).id, limit: 50 } },
        controller.signal,
      );
      items.push(...(next.data ?? []));
      more = Boolean(next.has_more);
    }
    clearTranscript();
    for (const item of items) renderItem(item);
    showThread(thread.title);
    const shown = items.filter((i) => i?.type === "user_message" || i?.type === "assistant_message").length;
    setStatus("history", `${shown} messages of thread ${id}, read back from the gateway`);
  } catch (error) {
    if (error.name === "AbortError") return; // "New chat" while loading
    clearTranscript();
    let shown = error;
    if (error.status === 404) {
      rememberThread(null);
      shown = threadGone(error, id, "The remembered thread");
    }
    renderError(shown);
    setStatus("error", refusal(shown));
  } finally {
    if (running === controller) setBusy(null);
  }
}

function newChat() {
  running?.abort();
  setBusy(null);
  rememberThread(null);
  renderError(null);
  showProgress(null);
  clearTranscript();
  setStatus("empty", "new chat");
  $("message").focus();
}

function start() {
  setText("page-origin", location.origin);
  setText("endpoint", endpoint);
  const id = deviceId();
  setText("device-id", `${id.slice(0, 8)}… (${id.length} chars)`);
  linkWithGateway($("to-proxy"));
  linkWithGateway($("to-token"));
  showThread();
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("message").value.trim();
    if (!text || running) return;
    $("message").value = "";
    send(text);
  });
  $("stop").addEventListener("click", () => running?.abort());
  $("new-chat").addEventListener("click", newChat);
  loadHistory();
}

window.chatkitAgentDemo = {
  endpoint,
  get threadId() {
    return threadId;
  },
  send,
};
start();
