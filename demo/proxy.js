// The proxy page: ChatKit requests through a `chatkit_proxy` route, streamed answers
// rendered event by event as they arrive.

import { GatewayError } from "./client-secret.js";
import { postChatKit } from "./chatkit-request.js";
import { sseEvents } from "./sse.js";
import { $, gatewayBase, linkWithGateway, logLine, params, renderError, setText } from "./common.js";

const endpoint = new URL(params.get("path") ?? "/chatkit", gatewayBase()).href;
let threadId = null;
let running = null; // AbortController of the request in flight
let eventCount = 0;

function userInput(text) {
  // chatkit.types.UserMessageInput
  return { content: [{ type: "input_text", text }], attachments: [], quoted_text: null, inference_options: {} };
}

function setStatus(status, text = status) {
  setText("status", text);
  document.body.dataset.state = status;
}

function showThread() {
  setText("thread-id", threadId);
  setText("send-type", threadId ? "(threads.add_user_message)" : "(threads.create)");
}

function post(request, signal) {
  return postChatKit(endpoint, request, signal, "chatkit_proxy");
}

function summarize(ev) {
  switch (ev.type) {
    case "thread.created":
    case "thread.updated":
      return `${ev.thread?.id ?? ""}${ev.thread?.title ? ` “${ev.thread.title}”` : ""}`;
    case "thread.item.added":
    case "thread.item.done":
      return `${ev.item?.type ?? "?"} ${ev.item?.id ?? ""}${itemText(ev.item) ? `: ${itemText(ev.item)}` : ""}`;
    case "thread.item.updated":
      return `${ev.update?.type ?? "?"}${ev.update?.delta !== undefined ? ` ${JSON.stringify(ev.update.delta)}` : ""}`;
    case "error":
      return `${ev.code ?? ""} ${ev.message ?? ""}`.trim();
    case "notice":
    case "progress_update":
      return ev.message ?? ev.text ?? "";
    default:
      return "";
  }
}

function itemText(item) {
  if (!item || !Array.isArray(item.content)) return "";
  return item.content.map((c) => c.text ?? "").join("");
}

function render(ev, started, assistant) {
  eventCount += 1;
  const ms = Math.round(performance.now() - started);
  const li = logLine("events", `+${ms}ms  ${ev.type ?? "?"}  ${summarize(ev)}`, { type: ev.type ?? "?", index: eventCount, ms }, 500);
  li.classList.add(`ev-${(ev.type ?? "unknown").split(".")[0]}`);
  if (ev.type === "thread.created") {
    threadId = ev.thread.id;
    showThread();
  }
  if (ev.type === "thread.item.updated" && ev.update?.type === "assistant_message.content_part.text_delta") {
    assistant.text += ev.update.delta;
    setText("assistant", assistant.text);
  }
  if (ev.type === "thread.item.done" && ev.item?.type === "assistant_message") {
    assistant.text = itemText(ev.item);
    setText("assistant", assistant.text);
  }
  if (ev.type === "error") renderError(new GatewayError(ev.message ?? "stream error", { status: 200, code: ev.code ?? "stream_error", midStream: true }));
}

async function send(request) {
  running?.abort();
  const controller = new AbortController();
  running = controller;
  renderError(null);
  $("stop").disabled = false;
  setStatus("sending", `sending ${request.type}…`);
  const started = performance.now();
  try {
    const response = await post(request, controller.signal);
    const type = response.headers.get("Content-Type") ?? "";
    if (type.startsWith("text/event-stream")) {
      $("events").replaceChildren();
      eventCount = 0;
      const assistant = { text: "" };
      setText("assistant", "…");
      setStatus("streaming", `streaming ${request.type}…`);
      for await (const message of sseEvents(response.body)) {
        let ev;
        try {
          ev = JSON.parse(message.data);
        } catch {
          ev = { type: "(not JSON)", raw: message.data };
        }
        render(ev, started, assistant);
        setStatus("streaming", `streaming ${request.type}… ${eventCount} events`);
      }
      setStatus("done", `done: ${eventCount} events in ${Math.round(performance.now() - started)} ms`);
    } else {
      const body = await response.json();
      $("json").textContent = JSON.stringify(body, null, 2);
      const count = Array.isArray(body?.data) ? ` (${body.data.length} items)` : "";
      setStatus("json", `JSON answer to ${request.type}${count}`);
    }
  } catch (error) {
    if (error.name === "AbortError") setStatus("stopped", `stopped after ${eventCount} events`);
    else {
      renderError(error);
      setStatus("error", error.status ? `refused: ${error.status} ${error.code}` : "refused by the browser");
    }
  } finally {
    if (running === controller) {
      running = null;
      $("stop").disabled = true;
    }
  }
}

function start() {
  setText("page-origin", location.origin);
  setText("endpoint", endpoint);
  linkWithGateway($("to-token"));
  linkWithGateway($("to-agent"));
  linkWithGateway($("to-agent-intro"));
  showThread();
  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = userInput($("message").value || "Hello");
    send(
      threadId
        ? { type: "threads.add_user_message", params: { thread_id: threadId, input } }
        : { type: "threads.create", params: { input } },
    );
  });
  $("list").addEventListener("click", () => send({ type: "threads.list", params: { limit: 20, order: "desc" } }));
  $("stop").addEventListener("click", () => running?.abort());
  $("new-thread").addEventListener("click", () => {
    threadId = null;
    showThread();
  });
}

window.chatkitProxyDemo = { endpoint, send };
start();
