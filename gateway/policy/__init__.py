"""The policy file: parsed once into frozen objects, every problem reported with its line."""

from .load import load_policy, parse_policy
from .model import (
    Backend,
    LimiterConfig,
    LimitKey,
    MetricsConfig,
    OnBackendError,
    Policy,
    Rate,
    RateLimit,
    RealtimeOptions,
    Route,
    RouteKind,
    Secret,
    ServerConfig,
    SessionOptions,
    UpstreamConfig,
    UserIdConfig,
    UserIdSource,
    whole_seconds,
)
from .reader import PolicyError, Problem
from .render import effective_policy, policy_warnings
from .routes import CHATKIT_STREAMING_TYPES, CHATKIT_TYPES, HOP_BY_HOP, OPS_PATHS

__all__ = [
    "CHATKIT_STREAMING_TYPES",
    "CHATKIT_TYPES",
    "HOP_BY_HOP",
    "OPS_PATHS",
    "Backend",
    "LimitKey",
    "LimiterConfig",
    "MetricsConfig",
    "OnBackendError",
    "Policy",
    "PolicyError",
    "Problem",
    "Rate",
    "RateLimit",
    "RealtimeOptions",
    "Route",
    "RouteKind",
    "Secret",
    "ServerConfig",
    "SessionOptions",
    "UpstreamConfig",
    "UserIdConfig",
    "UserIdSource",
    "effective_policy",
    "load_policy",
    "parse_policy",
    "policy_warnings",
    "whole_seconds",
]
