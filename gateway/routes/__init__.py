"""The route kinds the gateway ships: one module each, one registration line each.

A kind is a `RouteBase` subclass (policy keys, compile, serve, OpenAPI, warnings); see
gateway/policy/route.py for the contract. `dispatch.py` and `ops.py` serve them.
"""

from ..policy import register_kind
from .chatkit_agent import ChatKitAgentRoute
from .chatkit_proxy import ChatKitProxyRoute
from .chatkit_session import ChatKitSessionRoute
from .realtime_client_secret import RealtimeClientSecretRoute

register_kind(ChatKitSessionRoute)
register_kind(RealtimeClientSecretRoute)
register_kind(ChatKitProxyRoute)
register_kind(ChatKitAgentRoute)
