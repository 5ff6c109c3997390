"""A browser origin as a policy value: normalised the way browsers send it in `Origin`, so
the check per request is a set lookup (origin.py)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator
from pydantic.json_schema import WithJsonSchema

from .types import Stripped


def _origin(raw: str) -> str:
    """A browser origin, normalised the way browsers send it (lowercase, no default port)."""
    try:
        parts = urlsplit(raw)
    except ValueError:
        raise ValueError(f"expected an origin like https://example.org, got {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an origin like https://example.org, got {raw!r}")
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            f"an origin is scheme://host[:port] with no path, got {raw!r}"
            + (" (drop the trailing '/')" if parts.path == "/" else "")
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in origin {raw!r}") from None
    if port == 0:
        raise ValueError(f"bad port in origin {raw!r}")
    host = _origin_host(parts.hostname, raw)
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _origin_host(host: str, raw: str) -> str:
    """The host as a browser writes it in `Origin`: an IP literal or an ASCII (punycode) name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    if "*" in host:
        raise ValueError(f"wildcards are not supported in origins, list each one: {raw!r}")
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        ascii_host = ""
    if not _HOSTNAME.fullmatch(ascii_host):
        raise ValueError(f"bad host name in origin {raw!r}")
    return ascii_host.lower()


Origin = Annotated[
    Stripped,
    AfterValidator(_origin),
    WithJsonSchema({"type": "string", "format": "uri", "examples": ["https://example.org"]}),
]
