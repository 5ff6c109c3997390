"""One request to a `chatkit_agent` route, from the checked request to the SDK's answer.

Everything that can refuse does so before the SDK runs or the stream starts, as JSON
(errors.py): the body (413/400), the user (400), the type (400 for what this route does
not serve), the stream cap and limits (429), the token budgets (429), the store (503),
an unknown or another user's id (404). The first event of a stream is awaited before
the answer's status is sent, so a thread that is not the caller's is a 404, not an
event. Once streaming, a failure is a ChatKit `error` event (the SDK's own), and a
visitor who leaves cancels the handler, the SDK's generator and, with it, the model call.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from aiohttp import web
from chatkit.server import NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from pydantic import ValidationError

from ..chatkit_endpoint import admit_call, read_call
from ..concurrency import PREVIEWS, SLOTS, STREAMS, UPLOADS
from ..errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from ..identity import DEVICE_HEADER, proxy_user_id
from ..limits.budgets import BudgetBucket
from ..limits.enforcement import spend_limits
from ..metrics import METRICS
from ..policy import UserIdSource
from ..requestinfo import RequestInfo
from .attachment_admission import BELOW
from .attachment_upload import handle_attachment, signed_user
from .config import AgentRouteData, BudgetKey
from .context import TurnContext
from .preview import PER_CLIENT as PREVIEWS_PER_CLIENT
from .preview import serve_preview
from .route_keys import AgentRouteKeys
from .runtime import AGENTS
from .store import SqlStore
from .turn_cost import TurnBudget, budget_spent, settle_turn

# What the SDK serves here: no client tools, widgets actions or dictation in a policy agent.
SERVED = frozenset(
    {
        "threads.create",
        "threads.add_user_message",
        "threads.retry_after_item",
        "threads.get_by_id",
        "threads.list",
        "threads.update",
        "threads.delete",
        "items.list",
        "items.feedback",
        "attachments.create",
        "attachments.delete",
    }
)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_ATTACHMENTS = 10


class AgentHandler:
    """A chatkit_agent route's handler: its keys, and what compile() worked out for them."""

    __slots__ = ("data", "route")

    def __init__(self, route: AgentRouteKeys, data: AgentRouteData) -> None:
        self.route = route
        self.data = data

    def __repr__(self) -> str:  # the keys in `data` stay out of it
        return f"AgentHandler({self.route.name!r})"

    async def serve(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        route = self.route
        if request.path.rstrip("/") != route.path.rstrip("/"):
            return await _attachment(request, route, self.data, info)
        if request.method != "POST":
            raise MethodNotAllowed(headers={"Allow": "POST, OPTIONS"})
        return await _turn(request, route, self.data, info)


async def _turn(
    request: web.Request, route: AgentRouteKeys, data: AgentRouteData, info: RequestInfo
) -> web.StreamResponse:
    call = await read_call(request, info, route.json_limit)
    kind, parsed, body, streaming = call.kind, call.parsed, call.body, call.streaming
    if not isinstance(kind, str) or kind not in SERVED:  # a list is no type (nor hashable)
        raise BadRequest(f"This route does not serve ChatKit requests of type {str(kind)[:64]!r}")
    if route.attachments is None and kind in ("attachments.create", "attachments.delete"):
        raise BadRequest("This route takes no attachments")
    user = _user(request, route, data, info)
    await admit_call(request, info, call, route.max_streams_per_client)
    runtime = request.app[AGENTS]
    output = data.spec.model_settings.max_tokens or 0
    budget = TurnBudget(runtime.budgets, _budgets(route, user, info), output)
    if streaming and budget.buckets:
        wait = await budget.check()  # Unavailable (503): Redis down under `deny`
        if wait is not None:
            request.app[METRICS].rate_limited.labels(route.name, "tokens").inc()
            raise budget_spent(wait)
    store = await runtime.store_for(route)
    upstream = info.compiled.policy.upstream
    server = runtime.server_for(route, data, store, upstream)
    context = _context(request, route, data, info, user)
    context.budget = budget if streaming else None
    request.app[METRICS].chatkit_requests.labels(route.name, info.chatkit_type).inc()
    try:
        await _own_attachments(parsed, store, context)
        result = await server.process(body, context)
    except NotFoundError:
        raise NotFound() from None
    except ValidationError:
        raise BadRequest("Not a valid ChatKit request") from None
    if isinstance(result, NonStreamingResult):
        return web.Response(body=result.json, content_type="application/json")
    cap = route.max_streams_per_client
    try:
        async with request.app[SLOTS].hold(STREAMS, route.name, info.client_ip, cap):
            return await _stream(request, info, route, result)
    finally:
        # The turn settled, in one place (turn_cost.py): its call and tokens counted, its
        # reservation made its charge — the usage OpenAI reported, nothing for a call it
        # refused, else the bounded input estimate.
        await settle_turn(context, budget, request.app[METRICS])


async def _own_attachments(parsed: dict[str, Any], store: SqlStore, context: TurnContext) -> None:
    """A message's attachments must be the user's: checked before the SDK creates a thread
    (it loads them after its first event, too late for a 404)."""
    params = parsed.get("params")
    given = params.get("input") if isinstance(params, dict) else None
    ids = given.get("attachments") if isinstance(given, dict) else None
    if not isinstance(ids, list):
        return
    if len(ids) > _MAX_ATTACHMENTS:
        raise BadRequest(f"At most {_MAX_ATTACHMENTS} attachments per message")
    if not all(isinstance(i, str) for i in ids):
        raise BadRequest("Not a valid ChatKit request")
    if len(set(ids)) != len(ids):  # the widget never repeats one: refused, not guessed at
        raise BadRequest("A message carries each attachment once")
    for attachment_id in ids:
        await store.load_attachment(attachment_id, context)  # NotFoundError: 404


async def _stream(
    request: web.Request, info: RequestInfo, route: AgentRouteKeys, result: StreamingResult
) -> web.StreamResponse:
    events = result.json_events
    try:
        try:
            first = await anext(events)
        except NotFoundError:
            raise NotFound() from None
        except StopAsyncIteration:
            first = b""
        info.response_headers["Cache-Control"] = "no-cache"
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        chunk = first
        while chunk:
            try:
                async with asyncio.timeout(route.stream_write_timeout_seconds):
                    await response.write(chunk)
            except (ConnectionError, TimeoutError):
                info.error_code = "client_gone"
                return response  # the finally below ends the SDK's generator: model cancelled
            chunk = await anext(events, b"")
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response
    finally:
        await events.aclose()


async def _attachment(
    request: web.Request, route: AgentRouteKeys, data: AgentRouteData, info: RequestInfo
) -> web.StreamResponse:
    rest = request.path[len(route.path.rstrip("/")) :]
    attachment_id = rest.removeprefix(BELOW)
    config = route.attachments
    if config is None or not rest.startswith(BELOW) or not _ID.fullmatch(attachment_id):
        raise NotFound()
    upload = request.method == "POST"
    if not upload and request.method != "GET":
        raise MethodNotAllowed(headers={"Allow": "GET, POST, OPTIONS"})
    declared = request.content_length
    if upload and declared is not None and declared > config.max_bytes + 64 * 1024:
        raise PayloadTooLarge()
    await spend_limits(request, info, typed=False)  # previews too: no free GETs
    user = signed_user(request, data.url_key, attachment_id)
    store = await request.app[AGENTS].store_for(route)
    context = _context(request, route, data, info, user)
    slots = request.app[SLOTS]
    if upload:
        cap = route.max_uploads_per_client
        async with slots.hold(UPLOADS, route.name, info.client_ip, cap):
            return await handle_attachment(
                request, store.attachments, config, context, attachment_id
            )
    async with slots.hold(PREVIEWS, route.name, info.client_ip, PREVIEWS_PER_CLIENT):
        timeout = route.stream_write_timeout_seconds
        return await serve_preview(request, store.attachments, context, attachment_id, timeout)


def _user(
    request: web.Request, route: AgentRouteKeys, data: AgentRouteData, info: RequestInfo
) -> str:
    trusted = info.peer_trusted
    user = proxy_user_id(route.user_id, data.user_secret, request.headers, info.client_ip, trusted)
    if user is None:
        if route.user_id.source is UserIdSource.HEADER:
            raise BadRequest(f"{route.user_id.header} is missing (set by the auth proxy)")
        raise BadRequest(
            f"{DEVICE_HEADER} is missing or malformed: the page's api.fetch must send an "
            "opaque id of 16 to 128 characters [A-Za-z0-9_-] (crypto.randomUUID() fits)"
        )
    return user


def _budgets(route: AgentRouteKeys, user: str, info: RequestInfo) -> list[BudgetBucket]:
    client = info.compiled.client_key(info.client_ip)
    keys = {BudgetKey.USER: user, BudgetKey.CLIENT_IP: client, BudgetKey.GLOBAL: ""}
    return [
        BudgetBucket(f"{route.name}:{b.name}:{keys[b.key]}", b.tokens, b.per_seconds)
        for b in route.token_budgets
    ]


def _context(
    request: web.Request,
    route: AgentRouteKeys,
    data: AgentRouteData,
    info: RequestInfo,
    user: str,
) -> TurnContext:
    if route.public_url is not None:
        base = route.public_url.rstrip("/")
    else:
        host = info.host if info.host is not None else request.host  # no Host: aiohttp's
        base = f"{info.scheme}://{host}{route.path.rstrip('/')}"
    return TurnContext(
        user=user,
        route=route.name,
        client=info.client_ip,
        info=info,
        upload_base=base,
        attachments=route.attachments,
        url_key=data.url_key,
    )
