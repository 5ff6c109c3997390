"""The effective policy as YAML for `check`: defaults filled in, secrets masked."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .model import Policy, RouteKind, Secret
from .values import fmt_duration

_KIND_FIELDS = {
    RouteKind.CHATKIT_SESSION: {"workflow_id", "session", "user_id"},
    RouteKind.REALTIME_CLIENT_SECRET: {"realtime"},
    RouteKind.CHATKIT_PROXY: {
        "target", "stream_idle_timeout_seconds", "max_streams_per_client", "upstream_headers"
    },
}  # fmt: skip
_OTHER_KINDS_FIELDS = {
    kind: set().union(*(f for k, f in _KIND_FIELDS.items() if k is not kind)) - own
    for kind, own in _KIND_FIELDS.items()
}


def effective_policy(policy: Policy) -> str:
    """YAML that `check` prints; it is itself a valid policy (with the secrets masked)."""
    data = _plain(policy)
    assert isinstance(data, dict)
    data.pop("source", None)
    data.pop("stub_upstream", None)
    data["limiter"]["redis_url"] = _mask_url(policy.limiter.redis_url.reveal())
    max_rate = data["upstream"]["max_rate"]
    if max_rate is not None:
        max_rate["per"] = fmt_duration(max_rate.pop("per_seconds"))
    for route, plain in zip(policy.routes, data["routes"], strict=True):
        for key in _OTHER_KINDS_FIELDS[route.kind]:
            plain.pop(key, None)
        if "upstream_headers" in plain:
            plain["upstream_headers"] = {k: _plain(v) for k, v in route.upstream_headers}
        for limit in plain["rate_limits"]:
            limit["per"] = fmt_duration(limit.pop("per_seconds"))
            if limit["types"] is None:
                del limit["types"]
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def policy_warnings(policy: Policy) -> list[str]:
    """What `check` and `serve` say about a valid policy that may still not do what is meant."""
    return [
        f"route {route.name!r}: chatkit_session mints hosted ChatKit sessions for a workflow; "
        "Agent Builder shut down on 2026-11-30, so this works only for a workflow OpenAI "
        "still serves (a ChatKit server of your own goes behind a chatkit_proxy route)"
        for route in policy.routes
        if route.kind is RouteKind.CHATKIT_SESSION
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return "***" if value else ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Fields derived from others (init=False) are not settings: not shown.
        fields = (f for f in dataclasses.fields(value) if f.init)
        return {f.name: _plain(getattr(value, f.name)) for f in fields}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, tuple | list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _mask_url(url: str) -> str:
    """A Redis URL with its password replaced, so `check` output can be pasted anywhere."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@" + (f"[{host}]" if ":" in host else host)
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
