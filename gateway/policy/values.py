"""Parsers for single policy values: each takes a Field and returns a value or raises Invalid."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from .model import IPNetwork, Secret
from .reader import Field, Invalid

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def get(fields: dict[str, Field], key: str, parse: Callable[[Field], T], default: T) -> T:
    """The parsed value of an optional key; a bad value is recorded and the default used."""
    f = fields.get(key)
    if f is None or not f.present:
        return default
    try:
        return parse(f)
    except Invalid as exc:
        f.problem(str(exc))
        return default


def need(
    parent: Field, fields: dict[str, Field], key: str, parse: Callable[[Field], T]
) -> T | None:
    """The parsed value of a required key, or None with a problem recorded."""
    f = fields.get(key)
    if f is None or not f.present:
        parent.child(None, key).problem("is required", parent.line)
        return None
    return get(fields, key, parse, None)


def text(f: Field) -> str:
    return f.scalar()


def nonempty(f: Field) -> str:
    value = f.scalar().strip()
    if not value:
        raise Invalid("must not be empty")
    return value


def boolean(f: Field) -> bool:
    value = f.scalar().strip().lower()
    if value in ("true", "yes", "on"):
        return True
    if value in ("false", "no", "off"):
        return False
    raise Invalid(f"expected true or false, got {value!r}")


def integer(low: int, high: int) -> Callable[[Field], int]:
    def parse(f: Field) -> int:
        raw = f.scalar().strip()
        try:
            value = int(raw)
        except ValueError:
            raise Invalid(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def number(low: float, high: float) -> Callable[[Field], float]:
    def parse(f: Field) -> float:
        raw = f.scalar().strip()
        try:
            value = float(raw)
        except ValueError:
            raise Invalid(f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise Invalid(f"must be between {low:g} and {high:g}, got {value:g}")
        return value

    return parse


def duration_seconds(f: Field) -> float:
    """`30s`, `10m`, `1h`, `1d` (or a bare number of seconds)."""
    raw = f.scalar()
    match = _DURATION.match(raw)
    if not match:
        raise Invalid(f"expected a duration like 30s, 10m, 1h or 1d, got {raw!r}")
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if value <= 0:
        raise Invalid("duration must be greater than zero")
    return value


def fmt_duration(seconds: float) -> str:
    """The shortest policy spelling of a duration: 3600 → `1h`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def one_of(choices: Callable[[str], T], allowed: list[str]) -> Callable[[Field], T]:
    def parse(f: Field) -> T:
        raw = f.scalar().strip()
        if raw not in allowed:
            raise Invalid(f"expected one of {', '.join(allowed)}, got {raw!r}")
        return choices(raw)

    return parse


def name(f: Field) -> str:
    raw = f.scalar().strip()
    if not _NAME.match(raw):
        raise Invalid(
            f"{raw!r} is not a valid name (lowercase letters, digits, '_' and '-', "
            "starting with a letter)"
        )
    return raw


def url_path(f: Field) -> str:
    raw = f.scalar().strip()
    if not raw.startswith("/") or "?" in raw or "#" in raw or "//" in raw:
        raise Invalid(f"expected an absolute URL path like /api/chatkit, got {raw!r}")
    if any(part in (".", "..") for part in raw.split("/")):
        raise Invalid(f"path must not contain '.' or '..' segments: {raw!r}")
    return raw.rstrip("/") or "/"


def http_url(f: Field) -> str:
    raw = f.scalar().strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise Invalid(f"expected an http:// or https:// URL, got {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise Invalid(f"expected an http:// or https:// URL, got {raw!r}")
    if parts.query or parts.fragment:
        raise Invalid(f"URL must not carry a query or fragment: {raw!r}")
    return raw.rstrip("/")


def origin(f: Field) -> str:
    """A browser origin, normalised the way browsers send it (lowercase, no default port)."""
    raw = f.scalar().strip()
    try:
        return normalise_origin(raw)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def normalise_origin(raw: str) -> str:
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


def cidr(f: Field) -> IPNetwork:
    raw = f.scalar().strip()
    try:
        return ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise Invalid(f"bad CIDR {raw!r}: {exc}") from None


def header_name(f: Field) -> str:
    raw = f.scalar().strip()
    if not HEADER_NAME.fullmatch(raw):
        raise Invalid(f"bad header name {raw!r}")
    return raw


def secret(fields: dict[str, Field], key: str, parent: Field) -> Secret | None:
    """`key` inline (usually `${VAR}`) or `key_file` naming a file, never both."""
    # A key given with no value (`api_key:`) counts as absent.
    inline, from_file = (
        f if (f := fields.get(k)) is not None and f.present else None for k in (key, f"{key}_file")
    )
    if inline is not None and from_file is not None:
        from_file.problem(f"give either {key} or {key}_file, not both")
        return None
    if from_file is not None:
        path = get(fields, f"{key}_file", nonempty, "")
        if not path:
            return None
        try:
            return Secret(Path(path).read_text(encoding="utf-8").strip())
        except OSError as exc:
            from_file.problem(f"cannot read secret file {path!r}: {exc.strerror or exc}")
            return None
        except UnicodeDecodeError:
            from_file.problem(f"secret file {path!r} is not UTF-8 text")
            return None
    if inline is not None:
        return Secret(get(fields, key, text, "").strip())
    return None


def try_parse(f: Field, parse: Callable[[Field], T]) -> T | None:
    try:
        return parse(f)
    except Invalid as exc:
        f.problem(str(exc))
        return None
