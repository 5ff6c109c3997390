"""Value types of the policy file, for pydantic: each parses one YAML value or says why not.

Strict (a quoted `"2"` is not a number): an unquoted value arrives as a `Scalar`, so a number
field takes what YAML reads in it, a text field its text (`name: 2026` is the name "2026").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
)
from pydantic.json_schema import WithJsonSchema
from pydantic_core import PydanticCustomError, core_schema

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# In the JSON Schema, a number or a boolean may also be written as `${VAR}` (or with a
# default), replaced when the file is read: an editor must not flag `port: ${PORT:-8080}`.
ENV_REFERENCE = {"type": "string", "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"}


class Scalar(str):
    """An unquoted YAML scalar: its text (this str) and `typed`, what YAML reads in it."""

    __slots__ = ("typed",)
    typed: object


def at(path: tuple[str | int, ...], message: str) -> PydanticCustomError:
    """An error about a key below the one being validated (a check that spans keys)."""
    return PydanticCustomError("policy_at", "{message}", {"path": path, "message": message})


def text(value: object) -> str:
    """The value as text, or a ValueError saying what it was instead."""
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {described(value)}")
    return str(value)


def described(value: object) -> str:
    """A value as an error names it: `'text'`, `5`, `a list`, `a mapping`."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(str(value)) if isinstance(value, str) else repr(value)


def _yaml_value(value: object, what: str, kinds: type | UnionType) -> Any:
    """What YAML reads in an unquoted scalar, if one of `kinds` (a bool is no number); quoted
    text is refused for a non-text type."""
    if isinstance(value, str) and not isinstance(value, Scalar):
        raise ValueError(f"expected {what}, got the quoted text {value!r} (write it unquoted)")
    given = value.typed if isinstance(value, Scalar) else value
    if not isinstance(given, kinds) or (isinstance(given, bool) and kinds is not bool):
        raise ValueError(f"expected {what}, got {described(value)}")
    return given


@dataclass(frozen=True, slots=True)
class Between:
    """`Annotated[int, Between(0, 10)]`: a whole number (or, on float, a number) in range."""

    low: float
    high: float

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        whole = source is int
        what = "a whole number" if whole else "a number"
        kinds = int if whole else int | float
        show: Callable[[float], str] = str if whole else "{:g}".format
        low, high = (int(self.low), int(self.high)) if whole else (self.low, self.high)

        def parse(value: object) -> object:
            given = _yaml_value(value, what, kinds)
            if not low <= given <= high:
                raise ValueError(f"must be between {show(low)} and {show(high)}, got {show(given)}")
            return given if whole else float(given)

        return core_schema.no_info_before_validator_function(parse, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        out = handler(schema)
        out.update(minimum=self.low, maximum=self.high)
        return {"anyOf": [out, ENV_REFERENCE]}


Bool = Annotated[
    bool,
    BeforeValidator(lambda value: _yaml_value(value, "true or false", bool)),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, ENV_REFERENCE]}),
]


class OneOf:
    """`Annotated[SomeEnum, OneOf()]`: one of the enum's values, all named in the error."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        names = [str(m.value) for m in source]

        def parse(value: object) -> object:
            if isinstance(value, source):
                return value
            given = strip(value)
            if given not in names:
                raise ValueError(f"expected one of {', '.join(names)}, got {given!r}")
            return source(given)

        return core_schema.no_info_before_validator_function(parse, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {"anyOf": [handler(schema), ENV_REFERENCE]}


def strip(value: object) -> str:
    return text(value).strip()


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


Text = Annotated[str, BeforeValidator(text), WithJsonSchema({"type": "string"})]
Stripped = Annotated[str, BeforeValidator(strip)]  # the base of the checked texts below
NonEmpty = Annotated[Stripped, AfterValidator(_nonempty), WithJsonSchema({"type": "string"})]

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (lowercase letters, digits, '_' and '-', "
            "starting with a letter)"
        )
    return value


Name = Annotated[
    Stripped, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": _NAME.pattern})
]


def _url_path(raw: str) -> str:
    if not raw.startswith("/") or "?" in raw or "#" in raw or "//" in raw:
        raise ValueError(f"expected an absolute URL path like /api/chatkit, got {raw!r}")
    if any(part in (".", "..") for part in raw.split("/")):
        raise ValueError(f"path must not contain '.' or '..' segments: {raw!r}")
    return raw.rstrip("/") or "/"


UrlPath = Annotated[
    Stripped, AfterValidator(_url_path), WithJsonSchema({"type": "string", "pattern": "^/"})
]


def http_url_parts(raw: str) -> SplitResult:
    """`raw` split, if it is an http(s) URL with a host (and a port, if any, not 0)."""
    try:
        parts = urlsplit(raw)
        if parts.scheme in ("http", "https") and parts.hostname and parts.port != 0:
            return parts
    except ValueError:  # a port that is no number, a bad IPv6 address
        pass
    raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")


def _http_url(raw: str) -> str:
    parts = http_url_parts(raw)
    if parts.query or parts.fragment:
        raise ValueError(f"URL must not carry a query or fragment: {raw!r}")
    if parts.username is not None or parts.password is not None:
        # `check` would print it, the client send it on every request: the message hides it.
        shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        raise ValueError(
            f"URL must not carry a user or password ({shown}): give credentials as a "
            "secret (api_key, or upstream_headers on a proxy route)"
        )
    return raw.rstrip("/")


HttpUrl = Annotated[
    Stripped,
    AfterValidator(_http_url),
    WithJsonSchema({"type": "string", "format": "uri", "pattern": "^https?://"}),
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: object) -> float:
    """`30s`, `10m`, `1h`, `1d` (or a bare number of seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):  # made in code
        seconds = float(value)
    else:
        raw = text(value)
        match = _DURATION.match(raw)
        if not match:
            raise ValueError(f"expected a duration like 30s, 10m, 1h or 1d, got {raw!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("duration must be greater than zero")
    return seconds


def fmt_duration(seconds: float) -> str:
    """The shortest policy spelling of a duration: 3600 → `1h`."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(_duration),
    PlainSerializer(fmt_duration),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)?$"}),
]

HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


def _header_name(value: str) -> str:
    if not HEADER_NAME.fullmatch(value):
        raise ValueError(f"bad header name {value!r}")
    return value


HeaderName = Annotated[
    Stripped,
    AfterValidator(_header_name),
    WithJsonSchema({"type": "string", "pattern": f"^{HEADER_NAME.pattern}$"}),
]


def _cidr(value: object) -> IPNetwork:
    if isinstance(value, IPNetwork):
        return value
    raw = strip(value)
    try:
        return ipaddress.ip_network(raw, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad CIDR {raw!r}: {exc}") from None


Cidr = Annotated[
    IPNetwork,
    BeforeValidator(_cidr),
    PlainSerializer(str),
    WithJsonSchema({"type": "string", "description": "an IPv4 or IPv6 network (CIDR)"}),
]


# Sets written as lists, shown sorted by `check` (a set's order changes from run to run).
Sorted = PlainSerializer(sorted)


def _json_object(value: object) -> dict[str, Any]:
    """Pass-through objects (sent upstream as JSON): YAML's own types, dates and non-finite
    numbers kept as their text (they would not encode)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping, got {described(value)}")
    return {str(k): _json_ready(v) for k, v in value.items()}


def _json_ready(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, Scalar):
        return value.typed  # a number, a bool or the text (source.py's _yaml_type)
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


JsonObject = Annotated[
    dict[str, Any], BeforeValidator(_json_object), WithJsonSchema({"type": "object"})
]
