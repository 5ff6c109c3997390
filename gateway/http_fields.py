"""HTTP fields a proxy handles itself (RFC 9110 §7.6.1): never forwarded, never configured."""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection"}
)  # fmt: skip
