"""X-Forwarded-For rules: only trusted peers are believed, right-most untrusted hop wins."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.clientip import ClientIPResolver

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

TRUSTED = ClientIPResolver([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),  # untrusted peer: header ignored
        ("10.1.1.1", [], "10.1.1.1"),  # trusted peer without header
        ("10.1.1.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.1.1.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # client-written left hop ignored
        ("10.1.1.1", ["1.2.3.4, 10.9.9.9"], "1.2.3.4"),  # trusted hops skipped
        ("10.1.1.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # several headers, in order
        ("10.1.1.1", ["10.2.2.2, 10.3.3.3"], "10.2.2.2"),  # all trusted: left-most
        ("10.1.1.1", ["1.2.3.4:5678"], "1.2.3.4"),  # v4 with port
        ("10.1.1.1", ["[2001:db8::1]:443"], "2001:db8::1"),  # bracketed v6 with port
        ("10.1.1.1", ["2001:db8::1"], "2001:db8::1"),
        ("fd00::1", ["2001:db8::2"], "2001:db8::2"),  # v6 trusted proxy
        ("::ffff:10.1.1.1", ["1.2.3.4"], "1.2.3.4"),  # v4-mapped peer
        ("10.1.1.1", ["garbage"], "10.1.1.1"),  # unparsable: fall back to the peer
        ("10.1.1.1", ["1.2.3.4, nonsense"], "10.1.1.1"),
        ("10.1.1.1", ["x" * 10_000], "10.1.1.1"),
        ("10.1.1.1", [""], "10.1.1.1"),
    ],
)
def test_resolve(peer: str, xff: list[str], expected: str) -> None:
    assert TRUSTED.resolve(peer, xff) == expected


def test_no_trusted_proxies_ignores_header() -> None:
    assert ClientIPResolver([]).resolve("10.1.1.1", ["1.2.3.4"]) == "10.1.1.1"


def test_spoofed_headers_from_untrusted_peer_give_one_bucket() -> None:
    keys = {TRUSTED.resolve("198.51.100.7", [f"1.2.{i // 256}.{i % 256}"]) for i in range(5000)}
    assert keys == {"198.51.100.7"}
