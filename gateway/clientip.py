"""Which address a request counts against.

Rules (the same as Home Assistant's `forwarded.py` and aiohttp-remotes' XForwardedStrict):
- The TCP peer is the client, unless the peer is inside `server.trusted_proxies`.
- Then `X-Forwarded-For` is read right to left, skipping addresses that are themselves
  trusted proxies; the first untrusted one is the client. If every hop is trusted, the
  left-most is taken.
- Several X-Forwarded-For headers are joined in order (RFC 9110 list semantics).
- A peer outside the trusted list is never believed: whatever a client writes into the
  header, its bucket is its own address. A garbled header from a trusted peer falls back
  to the peer, logged once per request at debug level.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from .policy import IPNetwork, ServerConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ClientIPResolver:
    """Trusted networks parsed once at start (and on reload); `resolve` is per request."""

    __slots__ = ("_trusted",)

    def __init__(self, trusted: Sequence[IPNetwork]) -> None:
        self._trusted = tuple(trusted)

    @classmethod
    def from_config(cls, server: ServerConfig) -> ClientIPResolver:
        return cls(server.trusted_proxies)

    def _is_trusted(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self._trusted)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        return self.at_edge(peer, forwarded_for)[0]

    def at_edge(self, peer: str | None, forwarded_for: Sequence[str]) -> tuple[str, bool]:
        """The client's address, and whether the peer is a trusted proxy: decided once per
        request (request_context.py), read by everything after."""
        parsed = _parse(peer)
        if parsed is None:
            return peer or "unknown", False
        peer_addr, peer_text = parsed
        if not self._trusted or not self._is_trusted(peer_addr):
            return peer_text, False
        if not forwarded_for:
            return peer_text, True
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        chosen = peer_text
        for raw in reversed(hops):
            hop = _parse(raw)
            if hop is None:
                return peer_text, True  # garbage in the chain: trust nothing further left
            chosen = hop[1]
            if not self._is_trusted(hop[0]):
                break
        return chosen, True


class ClientKey:
    """The key a client's `client_ip` limits count: its address's network at the policy's
    prefix (`limiter.ipv4_prefix`, `limiter.ipv6_prefix`), e.g. `2001:db8:1:2::/64`."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, ipv4_prefix: int, ipv6_prefix: int) -> None:
        self._v4, self._v6 = ipv4_prefix, ipv6_prefix

    def __call__(self, client_ip: str) -> str:
        if self._v4 == 32 and ":" not in client_ip:  # an IPv4 address counted alone
            return client_ip
        return _network_key(client_ip, self._v4, self._v6)


@functools.lru_cache(maxsize=4096)
def _network_key(client_ip: str, v4: int, v6: int) -> str:
    """Memoised like `_parse`; a whole address (/32, /128) is its own canonical text."""
    parsed = _parse(client_ip)
    if parsed is None:
        return client_ip
    addr = parsed[0]
    bits = v4 if addr.version == 4 else v6
    if bits == addr.max_prefixlen:
        return parsed[1]
    return str(ipaddress.ip_network((addr, bits), strict=False))


@functools.lru_cache(maxsize=4096)
def _parse(raw: str | None) -> tuple[IPAddress, str] | None:
    """An address as proxies write it (bare, `[v6]`, `[v6]:port` or `v4:port`), and its
    canonical text: what limits count and logs show.

    Memoised: the same few peers (proxies, keep-alive clients) come back on every request,
    and ipaddress parses in Python; a flood of new addresses only cycles the cache.
    """
    if not raw or len(raw) > 64:
        return None
    text = raw.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr, str(addr)
