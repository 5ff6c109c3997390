"""The checks of a ChatKit endpoint, written once for `chatkit_proxy` and `chatkit_agent`.

Every request there is a small JSON object whose `type` picks the limits that apply
(`types:`). So, in order, each step cheaper than the next and none reading more than it
must — `read_call`:
1. a declared Content-Length over the endpoint's cap (the smaller of `max_json_bytes` and
   the route's `max_body_bytes`) is refused (413): nothing read, nothing spent;
2. the limits that need no body (no `types:`) are spent: a client over them is refused
   (429) before one byte of its body is read or parsed;
3. the body is read within the cap (256 KiB by default: far above any message a person
   types, far below what makes parsing cost a pod) and parsed (400; nesting is bounded by
   the interpreter's recursion guard), and the type learnt;
then, after the route's own refusals by type, `admit_call`:
4. the per-client stream cap (429) for a streaming type, before the typed limits spend
   anything (the slot taken later is the binding check: this one can race);
5. the limits narrowed to that type are spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .chatkit_protocol import CHATKIT_STREAMING_TYPES
from .concurrency import SLOTS, STREAMS
from .errors import PayloadTooLarge
from .limits.base import Verdict
from .limits.enforcement import spend_limits
from .metrics import chatkit_type_label
from .request_body import parse_object, read_capped
from .requestinfo import RequestInfo


@dataclass(slots=True)
class ChatKitCall:
    """A ChatKit request read and typed (its label is on `RequestInfo.chatkit_type`)."""

    body: bytes
    parsed: dict[str, Any]
    kind: object  # the body's `type`, as sent
    streaming: bool  # answered with Server-Sent Events
    spent: Verdict | None  # the untyped limits' report, for the typed ones to join


async def read_call(request: web.Request, info: RequestInfo, limit: int) -> ChatKitCall:
    """Steps 1 to 3: the size, the untyped limits, the body parsed and its type."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge()
    # Limits that need no body first: a client over them costs a dict lookup.
    spent = await spend_limits(request, info, typed=False)
    body = await read_capped(request, limit)
    parsed = parse_object(body, empty_ok=False)
    kind = parsed.get("type")
    label = info.chatkit_type = chatkit_type_label(kind if isinstance(kind, str) else None)
    return ChatKitCall(body, parsed, kind, label in CHATKIT_STREAMING_TYPES, spent)


async def admit_call(
    request: web.Request, info: RequestInfo, call: ChatKitCall, stream_cap: int | None
) -> None:
    """Steps 4 and 5: the stream cap for a streaming type, then the typed limits."""
    if call.streaming:
        request.app[SLOTS].check(STREAMS, info.route_label, info.client_ip, stream_cap)
    await spend_limits(request, info, typed=True, earlier=call.spent)
