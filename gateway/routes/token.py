"""Token routes: mint a ChatKit session or a Realtime client secret with the server's key.

The browser's body may carry only a `device_id` (see identity.py); workflow, model and
key come from the policy alone.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import UpstreamError
from ..identity import end_user_id
from ..policy import Policy, Route, RouteKind
from ..requestinfo import INFO
from ..upstream import CHATKIT_BETA, CHATKIT_SESSIONS, REALTIME_CLIENT_SECRETS, UPSTREAM
from .body import parse_object, read_capped


def session_body(policy: Policy, route: Route, user: str) -> dict[str, Any]:
    opts = route.session
    workflow: dict[str, Any] = {"id": route.workflow_id}
    if opts.workflow_version:
        workflow["version"] = opts.workflow_version
    if opts.state_variables:
        workflow["state_variables"] = opts.state_variables
    if opts.tracing_enabled is not None:
        workflow["tracing"] = {"enabled": opts.tracing_enabled}
    body: dict[str, Any] = {"workflow": workflow, "user": user}
    if opts.expires_after_seconds:
        body["expires_after"] = {"anchor": "created_at", "seconds": opts.expires_after_seconds}
    if opts.max_requests_per_1_minute:
        body["rate_limits"] = {"max_requests_per_1_minute": opts.max_requests_per_1_minute}
    if opts.chatkit_configuration:
        body["chatkit_configuration"] = opts.chatkit_configuration
    return body


def realtime_body(route: Route) -> dict[str, Any]:
    opts = route.realtime
    body: dict[str, Any] = {}
    if opts.expires_after_seconds:
        body["expires_after"] = {"anchor": "created_at", "seconds": opts.expires_after_seconds}
    if opts.session:
        body["session"] = opts.session
    return body


async def handle_token(request: web.Request) -> web.Response:
    info = request[INFO]
    assert info.route is not None
    route = info.route.route
    policy = info.runtime.policy
    browser = parse_object(await read_capped(request, route.max_body_bytes))
    upstream = request.app[UPSTREAM]
    if route.kind is RouteKind.CHATKIT_SESSION:
        user = end_user_id(
            route,
            info.route.user_secret,
            browser,
            request.headers,
            info.client_ip,
            info.runtime.resolver.trusts(request.remote),
        )
        data = await upstream.create(
            CHATKIT_SESSIONS, session_body(policy, route, user), info, beta=CHATKIT_BETA
        )
        secret, expires_at = data.get("client_secret"), data.get("expires_at")
    else:
        data = await upstream.create(REALTIME_CLIENT_SECRETS, realtime_body(route), info)
        secret, expires_at = data.get("value"), data.get("expires_at")
    if not isinstance(secret, str) or not secret or not isinstance(expires_at, int):
        raise UpstreamError("Upstream answered without a client secret")
    return web.json_response({"client_secret": secret, "expires_at": expires_at})
