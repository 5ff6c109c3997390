// One ChatKit request from a demo page: POST with the device id, the answer's headers
// shown, a refusal turned into a GatewayError (used by proxy.js and agent.js).

import { deviceId, exposedHeaders, GatewayError, readError } from "./client-secret.js";
import { renderHeaders, setText } from "./common.js";

/** POST one ChatKit request to `endpoint`; returns the Response, or throws a GatewayError.
 * `kind`: the route kind the page expects there, named in the hint when the browser
 * refuses the request (a foreign origin, no such route, the gateway down). */
export async function postChatKit(endpoint, request, signal, kind) {
  let response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Device-Id": deviceId() },
      body: JSON.stringify(request),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new GatewayError(
      `The browser refused the request or its answer (${err.name}: ${err.message}). ` +
        `Is there a ${kind} route at this path, is this page's origin on its ` +
        "allowed_origins, and is the gateway up?",
      { cause: err },
    );
  }
  const headers = exposedHeaders(response);
  renderHeaders(headers);
  setText("hdr-status", response.status);
  setText("hdr-content-type", response.headers.get("Content-Type"));
  if (!response.ok) {
    const detail = await readError(response);
    throw new GatewayError(detail.message ?? `HTTP ${response.status}`, {
      status: response.status,
      code: detail.code ?? "unexpected_answer",
      headers,
    });
  }
  return response;
}
