"""The policy as frozen, typed objects: parsed once, shared read-only by every request."""

from __future__ import annotations

import enum
import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret:
    """A string that never shows itself in repr, str, logs or `check` output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class RouteKind(enum.StrEnum):
    CHATKIT_SESSION = "chatkit_session"
    REALTIME_CLIENT_SECRET = "realtime_client_secret"  # noqa: S105 (a kind, not a secret)
    CHATKIT_PROXY = "chatkit_proxy"

    @property
    def is_token(self) -> bool:
        return self is not RouteKind.CHATKIT_PROXY


class LimitKey(enum.StrEnum):
    CLIENT_IP = "client_ip"
    ORIGIN = "origin"
    GLOBAL = "global"


class UserIdSource(enum.StrEnum):
    DEVICE_ID = "device_id"  # body field `device_id` the page keeps, else the client IP
    HEADER = "header"  # a header set by a trusted auth proxy
    CLIENT_IP = "client_ip"


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int
    per_seconds: float


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    trusted_proxies: tuple[IPNetwork, ...] = ()
    max_body_bytes: int = 16384
    shutdown_grace_seconds: float = 10.0
    drain_timeout_seconds: float = 20.0
    keepalive_timeout_seconds: float = 15.0
    max_header_bytes: int = 8190
    # Slow and greedy clients (gateway/server_limits.py): open connections at most, the
    # time a request head may take, and the time (plus a minimum rate) a body may take.
    max_connections: int = 4096
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 20.0
    body_min_rate_bytes_per_second: int = 1024


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    base_url: str = "https://api.openai.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    timeout_seconds: float = 10.0
    retries: int = 2
    max_rate: Rate | None = Rate(50, 1.0)
    max_connections: int = 512


class Backend(enum.StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


class OnBackendError(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    backend: Backend = Backend.MEMORY
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    on_backend_error: OnBackendError = OnBackendError.ALLOW
    key_prefix: str = "ckgw:"
    timeout_seconds: float = 0.05
    max_tracked_keys: int = 1_000_000


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    path: str = "/metrics"


def whole_seconds(seconds: float) -> int:
    """Delta-seconds as HTTP fields carry them (Retry-After, RateLimit `t` and `w`): rounded
    up, at least 1. (The epsilon keeps float noise such as 60.000000001 at 60.)"""
    return max(1, math.ceil(seconds - 1e-9))


@dataclass(frozen=True, slots=True)
class RateLimit:
    key: LimitKey
    requests: int
    per_seconds: float
    name: str
    types: frozenset[str] | None = None
    # Derived once, read per request: the GCRA emission interval and the answer's
    # `RateLimit-Policy` field (IETF httpapi draft), which never change for a limit.
    interval: float = field(init=False, repr=False, compare=False)
    policy_header: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        window = whole_seconds(self.per_seconds)
        object.__setattr__(self, "interval", self.per_seconds / self.requests)
        object.__setattr__(self, "policy_header", f'"{self.name}";q={self.requests};w={window}')

    @property
    def identity(self) -> tuple[object, ...]:
        """What must stay equal for a reload to keep this limit's counters."""
        return (self.key, self.requests, self.per_seconds, self.types)


@dataclass(frozen=True, slots=True)
class UserIdConfig:
    source: UserIdSource = UserIdSource.DEVICE_ID
    header: str = "X-Authenticated-User"
    secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class SessionOptions:
    expires_after_seconds: int | None = None
    max_requests_per_1_minute: int | None = None
    workflow_version: str | None = None
    state_variables: dict[str, Any] | None = None
    tracing_enabled: bool | None = None
    chatkit_configuration: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RealtimeOptions:
    expires_after_seconds: int | None = None
    session: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    kind: RouteKind
    allowed_origins: frozenset[str]
    allow_missing_origin: bool
    rate_limits: tuple[RateLimit, ...]
    max_body_bytes: int
    cors_max_age_seconds: int = 600
    user_id: UserIdConfig = UserIdConfig()
    workflow_id: str | None = None
    session: SessionOptions = SessionOptions()
    realtime: RealtimeOptions = RealtimeOptions()
    target: str | None = None
    stream_idle_timeout_seconds: float = 300.0
    max_streams_per_client: int | None = None
    upstream_headers: tuple[tuple[str, Secret], ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    server: ServerConfig
    upstream: UpstreamConfig
    limiter: LimiterConfig
    metrics: MetricsConfig
    routes: tuple[Route, ...]
    stub_upstream: bool = False
