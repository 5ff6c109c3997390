"""The ChatKit `user`: stable for one end user, and never who they are.

OpenAI scopes thread history by `user`, and the widget asks for a new session before the
old one expires, so the same person must map to the same value every time — on every
replica and across restarts. We send `u_` + HMAC-SHA256(secret, source:value) truncated to
128 bits:
- `device_id` (default): an opaque id the page keeps in localStorage and sends as
  `{"device_id": "…"}`; without one, the client IP stands in (hashed, never raw).
- `header`: a header set by a trusted auth proxy (believed only from a trusted peer).
- `client_ip`: the client address alone (users behind one NAT share history).
A `chatkit_proxy` route sends the same value to the site's backend as `X-ChatKit-User`
(`proxy_user_id`), from the page's `X-Device-Id` header hashed as a `device_id` is (one
device is one user on both kinds), and never from the client IP unless the policy says
`client_ip`.
The secret is `user_id.secret` if set, else derived from the OpenAI API key, so a fleet
agrees without extra configuration; rotating the key then re-scopes history, which is why
an explicit secret is recommended in production.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from .errors import BadRequest
from .policy import UpstreamConfig, UserIdConfig, UserIdSource
from .requestinfo import RequestInfo

_DEVICE_ID = re.compile(r"[\x21-\x7e]{1,128}")
# A header a page sets: random enough to be a bearer token for the visitor's history.
_DEVICE_HEADER = re.compile(r"[A-Za-z0-9_-]{16,128}")
DEVICE_HEADER = "X-Device-Id"
_DERIVE = b"chatkit-gateway/user-id/v1\x00"


def user_secret(config: UserIdConfig, upstream: UpstreamConfig) -> bytes:
    if config.secret:
        return config.secret.reveal().encode()
    key = upstream.api_key.reveal() or "stub-upstream"
    return hashlib.sha256(_DERIVE + key.encode()).digest()


def end_user_id(
    config: UserIdConfig,
    secret: bytes,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    info: RequestInfo,
) -> str:
    source = config.source
    if source is UserIdSource.HEADER:
        value = headers.get(config.header) if info.peer_trusted else None
        if not value or not _DEVICE_ID.fullmatch(value):
            raise BadRequest(f"{config.header} is missing (set by the auth proxy)")
        material = f"header:{value}"
    elif source is UserIdSource.DEVICE_ID and "device_id" in body:
        device = body["device_id"]
        if not isinstance(device, str) or not _DEVICE_ID.fullmatch(device):
            raise BadRequest("device_id must be a string of 1 to 128 visible ASCII characters")
        material = f"device:{device}"
    else:
        material = f"ip:{info.client_ip}"
    return _user_id(secret, material)


def proxy_user_id(
    config: UserIdConfig,
    secret: bytes,
    headers: Mapping[str, str],
    client_ip: str,
    from_trusted_proxy: bool,
) -> str | None:
    """The X-ChatKit-User of a proxied request, or None when the request names no user
    (no valid `X-Device-Id`, or the trusted header is missing or not from a trusted peer)."""
    source = config.source
    if source is UserIdSource.HEADER:
        value = headers.get(config.header) if from_trusted_proxy else None
        if not value or not _DEVICE_ID.fullmatch(value):
            return None
        return _user_id(secret, f"header:{value}")
    if source is UserIdSource.CLIENT_IP:
        return _user_id(secret, f"ip:{client_ip}")
    device = headers.get(DEVICE_HEADER)
    if device is None or not _DEVICE_HEADER.fullmatch(device):
        return None
    return _user_id(secret, f"device:{device}")


@functools.lru_cache(maxsize=8192)
def _user_id(secret: bytes, material: str) -> str:
    """Memoised: a widget asks again for the same user (OpenSSL's HMAC costs microseconds)."""
    return "u_" + hmac.digest(secret, material.encode(), "sha256")[:16].hex()
