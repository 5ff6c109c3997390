"""The policy file: parsed once into frozen objects, every problem reported with its line.

pydantic validates; `source.py` keeps the YAML lines, `document.py` maps pydantic's errors
onto them. Route kinds add their own keys (`route.py`, `gateway/routes/`).
"""

from .document import OPS_PATHS, Policy, load_policy, parse_policy, policy_schema
from .problems import PolicyError
from .render import effective_policy, policy_warnings
from .route import RouteBase, RouteHandler, register_kind, route_kinds, unregister_kind
from .secrets import Secret, secrets_in
from .sections import (
    STRICT,
    Backend,
    LimiterConfig,
    LimitKey,
    OnBackendError,
    Rate,
    RateLimit,
    ServerConfig,
    UpstreamConfig,
    UserIdConfig,
    UserIdSource,
    whole_seconds,
)
from .types import IPNetwork, JsonObject

__all__ = [
    "OPS_PATHS",
    "STRICT",
    "Backend",
    "IPNetwork",
    "JsonObject",
    "LimitKey",
    "LimiterConfig",
    "OnBackendError",
    "Policy",
    "PolicyError",
    "Rate",
    "RateLimit",
    "RouteBase",
    "RouteHandler",
    "Secret",
    "ServerConfig",
    "UpstreamConfig",
    "UserIdConfig",
    "UserIdSource",
    "effective_policy",
    "load_policy",
    "parse_policy",
    "policy_schema",
    "policy_warnings",
    "register_kind",
    "route_kinds",
    "secrets_in",
    "unregister_kind",
    "whole_seconds",
]
