// Server-Sent Events over fetch: EventSource cannot POST a JSON body, so ChatKit clients
// read `text/event-stream` from a fetch Response's ReadableStream themselves.

/**
 * Yield each event of an SSE body as soon as its terminating blank line arrives:
 * {data, event, id}. Comments (`: …`) and events without data are skipped, as in the
 * HTML spec's event-stream interpretation; `data:` lines of one event are joined by "\n".
 * Abort the fetch (its AbortController) to stop: the pending read then rejects.
 */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      buffer += value;
      // Normalise line ends, but keep a trailing "\r" that may be half of a "\r\n".
      const keepCR = buffer.endsWith("\r");
      buffer = buffer.replace(/\r\n?/g, "\n");
      if (keepCR) buffer = `${buffer.slice(0, -1)}\r`;
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseBlock(block);
        if (event) yield event;
      }
    }
    // A final event without its blank line is incomplete: dropped, like EventSource does.
  } finally {
    // The consumer stopped early (or the read failed): close the stream, so the
    // connection — and through the gateway, the upstream request — goes away.
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

function parseBlock(block) {
  const data = [];
  let event = "message";
  let id = null;
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") id = value;
  }
  return data.length ? { data: data.join("\n"), event, id } : null;
}
