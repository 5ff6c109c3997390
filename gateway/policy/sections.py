"""The policy's sections other than routes: frozen, typed, validated by pydantic.

Each field's name, type, default and range are written once, here; `check` output, the
JSON Schema (`chatkit-gateway schema`) and the error messages all come from these.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import field
from typing import Annotated

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.json_schema import WithJsonSchema

from ..chatkit_protocol import CHATKIT_TYPES
from ..tls import TlsError, server_context
from .secrets import Secret, SecretFile, SecretUrl
from .types import (
    Between,
    Cidr,
    Duration,
    HeaderName,
    HttpUrl,
    Name,
    NonEmpty,
    OneOf,
    Sorted,
    Stripped,
    UrlPath,
    at,
    fmt_duration,
)

# Unknown keys are errors; values are checked by the types above (strict: no "2" for 2).
STRICT = ConfigDict(extra="forbid", populate_by_name=True)


def _chatkit_type(value: str) -> str:
    if value not in CHATKIT_TYPES:
        raise ValueError(f"unknown ChatKit request type {value!r}")
    return value


ChatKitType = Annotated[
    Stripped, AfterValidator(_chatkit_type), WithJsonSchema({"enum": sorted(CHATKIT_TYPES)})
]


def whole_seconds(seconds: float) -> int:
    """Delta-seconds as HTTP fields carry them (Retry-After, RateLimit `t` and `w`): rounded
    up, at least 1. (The epsilon keeps float noise such as 60.000000001 at 60.)"""
    return max(1, math.ceil(seconds - 1e-9))


class SecretWithFile:
    """Mixin for a section with `<name>` and `<name>_file` secrets: either, never both."""

    SECRET_KEYS: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> SecretWithFile:
        for key in self.SECRET_KEYS:
            from_file = getattr(self, f"{key}_file")
            if from_file is not None:
                if getattr(self, key):
                    raise at((f"{key}_file",), f"give either {key} or {key}_file, not both")
                object.__setattr__(self, key, from_file)
        return self


@dataclass(frozen=True, config=STRICT)
class Rate:
    requests: Annotated[int, Between(1, 10**9)]
    per_seconds: Annotated[Duration, Field(alias="per")]


@dataclass(frozen=True, config=STRICT)
class TlsConfig:
    """HTTPS on `port` (gateway/tls.py): PEM files, re-read when they change on disk."""

    cert_file: NonEmpty  # the certificate chain, the server's own first
    key_file: NonEmpty

    @model_validator(mode="after")
    def _loads(self, info: ValidationInfo) -> TlsConfig:
        # A bad pair is refused here: at start with its line, on reload the old one stays.
        # `check --skip-secret-files` checks a policy without the files (the key is one).
        if info.context is not None and info.context.get("secret_files") is False:
            return self
        try:
            server_context(self.cert_file, self.key_file)
        except TlsError as exc:
            raise at((exc.key,), str(exc)) from None
        return self


@dataclass(frozen=True, config=STRICT)
class ServerConfig:
    host: NonEmpty = "0.0.0.0"
    port: Annotated[int, Between(0, 65535)] = 8080
    trusted_proxies: tuple[Cidr, ...] = ()
    max_body_bytes: Annotated[int, Between(0, 1 << 30)] = 16384
    shutdown_grace_seconds: Annotated[float, Between(0, 3600)] = 10.0
    drain_timeout_seconds: Annotated[float, Between(0, 3600)] = 20.0
    keepalive_timeout_seconds: Annotated[float, Between(0, 3600)] = 15.0
    max_header_bytes: Annotated[int, Between(1024, 1 << 20)] = 8190
    # Slow and greedy clients (gateway/http_protocol.py): open connections at most, the
    # time a request head may take, and the time (plus a minimum rate) a body may take.
    max_connections: Annotated[int, Between(1, 1_000_000)] = 4096
    header_timeout_seconds: Annotated[float, Between(0.1, 3600)] = 10.0
    body_timeout_seconds: Annotated[float, Between(0.1, 3600)] = 20.0
    body_min_rate_bytes_per_second: Annotated[int, Between(1, 1 << 30)] = 1024
    # Open connections from one TCP peer address at most (gateway/listener.py). Behind a
    # proxy every client is the proxy's address: raise it there, or leave this to the proxy.
    max_connections_per_client: Annotated[int, Between(1, 1_000_000)] = 64
    # The operations endpoints (/healthz, /readyz, metrics) on a listener of their own, and
    # not on `port`; null: on `port` with everything else (gateway/routes/ops.py).
    ops_port: Annotated[int, Between(0, 65535)] | None = None
    # HTTPS on `port` with this certificate and key; null: plain HTTP (a proxy in front).
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _ops_port_of_its_own(self) -> ServerConfig:
        if self.ops_port is not None and self.ops_port == self.port and self.port != 0:
            raise at(("ops_port",), f"must differ from server.port ({self.port})")
        return self


@dataclass(frozen=True, config=STRICT)
class UpstreamConfig(SecretWithFile):
    SECRET_KEYS = ("api_key",)
    base_url: HttpUrl = "https://api.openai.com/v1"
    api_key: Secret = field(default_factory=lambda: Secret(""))
    api_key_file: SecretFile | None = None
    timeout_seconds: Annotated[float, Between(0.1, 600)] = 10.0
    retries: Annotated[int, Between(0, 10)] = 2
    # Outbound smoothing toward OpenAI (aiolimiter); null turns it off.
    max_rate: Rate | None = field(default_factory=lambda: Rate(50, 1.0))
    max_connections: Annotated[int, Between(1, 10000)] = 512


class Backend(enum.StrEnum):
    MEMORY = "memory"
    REDIS = "redis"


class OnBackendError(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, config=STRICT)
class LimiterConfig(SecretWithFile):
    SECRET_KEYS = ("redis_url",)
    backend: Annotated[Backend, OneOf()] = Backend.MEMORY
    redis_url: SecretUrl = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    redis_url_file: SecretFile | None = None
    on_backend_error: Annotated[OnBackendError, OneOf()] = OnBackendError.ALLOW
    key_prefix: NonEmpty = "ckgw:"
    timeout_seconds: Annotated[float, Between(0.001, 10)] = 0.05
    max_tracked_keys: Annotated[int, Between(1000, 100_000_000)] = 1_000_000
    # `client_ip` limits count a network, not one address: an IPv6 /64 is what one VM or
    # one home line gets, so a client could otherwise take a fresh bucket per address.
    ipv4_prefix: Annotated[int, Between(8, 32)] = 32
    ipv6_prefix: Annotated[int, Between(16, 128)] = 64


@dataclass(frozen=True, config=STRICT)
class MetricsConfig:
    path: UrlPath = "/metrics"


class LimitKey(enum.StrEnum):
    CLIENT_IP = "client_ip"
    ORIGIN = "origin"
    GLOBAL = "global"


@dataclass(frozen=True, config=STRICT)
class RateLimit:
    key: Annotated[LimitKey, OneOf()]
    requests: Annotated[int, Between(1, 10**9)]
    per_seconds: Annotated[Duration, Field(alias="per")]
    name: Name = ""  # default: `<key>_<requests>_per_<per>`, e.g. client_ip_100_per_1h
    # Narrows the limit to these ChatKit request types (routes that take them only).
    types: Annotated[frozenset[ChatKitType], Sorted] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            default = f"{self.key}_{self.requests}_per_{fmt_duration(self.per_seconds)}"
            object.__setattr__(self, "name", default)

    # Derived once, read per request.
    @functools.cached_property
    def interval(self) -> float:
        """The GCRA emission interval."""
        return self.per_seconds / self.requests

    @functools.cached_property
    def policy_header(self) -> str:
        """The answer's `RateLimit-Policy` field (IETF httpapi draft)."""
        return f'"{self.name}";q={self.requests};w={whole_seconds(self.per_seconds)}'


class UserIdSource(enum.StrEnum):
    DEVICE_ID = "device_id"  # body field `device_id` the page keeps, else the client IP
    HEADER = "header"  # a header set by a trusted auth proxy
    CLIENT_IP = "client_ip"


@dataclass(frozen=True, config=STRICT)
class UserIdConfig(SecretWithFile):
    SECRET_KEYS = ("secret",)
    source: Annotated[UserIdSource, OneOf()] = UserIdSource.DEVICE_ID
    header: HeaderName = "X-Authenticated-User"
    secret: Secret | None = None
    secret_file: SecretFile | None = None
