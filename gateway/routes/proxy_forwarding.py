"""What of a browser's request reaches a ChatKit backend: the path below the route, and
the headers. Everything a backend (or a framework in front of it) might read as a claim
about the client, an earlier hop or the original URL is the gateway's to set, never the
client's.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

from multidict import CIMultiDict, CIMultiDictProxy

from ..http_fields import HOP_BY_HOP
from ..upstream import backend

# Escapes that could turn into a traversal, a different path, or control bytes once a
# backend decodes them: `.`, `/`, `\`, `%` (double encoding), and C0 controls/DEL; and a
# `%` that is not an escape at all (IIS reads `%u002e` as `.`).
_SUSPECT_ESCAPE = re.compile(r"%(?:2e|2f|5c|25|[01][0-9a-f]|7f)|%(?![0-9a-f]{2})", re.IGNORECASE)
# Set by the gateway from what it knows, never copied from the browser: framing, the
# forwarding headers, and what a client could claim about earlier hops, the original URL
# or method (a backend or framework behind us may believe them), or its ChatKit user.
_NOT_FORWARDED = HOP_BY_HOP | {
    "host", "content-length", "expect", "accept-encoding", "x-request-id",
    "forwarded", "via", "x-real-ip", "true-client-ip", "cf-connecting-ip", "fastly-client-ip",
    "x-client-ip", "x-cluster-client-ip", "x-original-forwarded-for", "x-originating-ip",
    "x-original-url", "x-original-uri", "x-original-host", "x-original-method",
    "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override",
    "x-envoy-external-address", "x-envoy-internal", "x-envoy-original-path",
    "x-chatkit-user", "x-device-id",
}  # fmt: skip
# ... and every X-Forwarded-* (For, Proto, Host, Port, Prefix, Server, Ssl, Scheme, …).
_FORWARDED_PREFIX = "x-forwarded-"


def upstream_url(route_path: str, target: str, raw_path: str, raw_query: str) -> str | None:
    """`target` + the part of the (still percent-encoded) path below the route, or None
    when that part could step outside the target or name something else once a backend
    normalises it: dot segments (also with `;params`, which Tomcat and Spring drop),
    empty segments, encoded dots/slashes/backslashes, double encoding, `%u` escapes,
    bytes that are not UTF-8 (overlong `%c0%ae`), and characters that Unicode
    compatibility folds into others (full-width dot U+FF0E, solidus U+FF0F)."""
    base = route_path.rstrip("/")
    if raw_path != base and not raw_path.startswith(base + "/"):
        return None  # matched only after decoding: the raw form is not ours to trust
    suffix = raw_path[len(base) :]
    if suffix in ("", "/"):
        url = target
    else:
        if _SUSPECT_ESCAPE.search(suffix) or "\\" in suffix or not _plain(suffix):
            return None
        parts = suffix[1:].split("/")
        if any(p.split(";", 1)[0] in (".", "..") for p in parts) or "" in parts[:-1]:
            return None
        url = target + suffix
    return f"{url}?{raw_query}" if raw_query else url


def _plain(raw: str) -> bool:
    """The path decodes to UTF-8 that Unicode compatibility normalisation leaves alone."""
    if raw.isascii() and "%" not in raw:
        return True
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return unicodedata.is_normalized("NFKC", text)


def forward_headers(
    received: CIMultiDictProxy[str],
    *,
    peer: str | None,
    scheme: str,
    trusted: bool,
    request_id: str,
    user: str | None,
    streaming: bool,
    forwarded_host: str | None = None,
    untrusted_header: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> CIMultiDict[str]:
    """The browser's end-to-end headers (Cookie and Authorization included: the backend is
    the site's own and may authenticate with them), the forwarding headers, the end user
    (`X-ChatKit-User`), the policy's (`extra`). Dropped: hop-by-hop headers, what a client
    claims about earlier hops or the original URL, every name with `_` (nginx drops those
    too: many frameworks read `X_Forwarded_For` as `X-Forwarded-For`), and
    `untrusted_header` (an auth proxy's user header, when the peer is not that proxy)."""
    drop_too = untrusted_header.lower() if untrusted_header and not trusted else None
    out = backend.end_to_end(
        received,
        lambda name: (
            name in _NOT_FORWARDED
            or "_" in name
            or name.startswith(_FORWARDED_PREFIX)
            or name == drop_too
        ),
    )
    # What an untrusted peer claims about earlier hops is dropped, not passed on.
    prior = ", ".join(received.getall("X-Forwarded-For", ())) if trusted else ""
    out["X-Forwarded-For"] = f"{prior}, {peer or 'unknown'}" if prior else (peer or "unknown")
    out["X-Forwarded-Proto"] = scheme  # the public scheme (request_context.py)
    if forwarded_host is not None:
        out["X-Forwarded-Host"] = forwarded_host
    out["X-Request-ID"] = request_id
    if user is not None:
        out["X-ChatKit-User"] = user
    # A compressor buffers; event streams are asked for plain. Other answers may come
    # compressed, passed through untouched with their Content-Encoding.
    asked = received.get("Accept-Encoding", "identity")
    out["Accept-Encoding"] = "identity" if streaming else asked
    for name, value in extra:
        out[name] = value
    return out
