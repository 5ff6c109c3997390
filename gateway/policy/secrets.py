"""Secrets in the policy: never shown in repr, logs or `check`; read from `*_file` keys.

`check` shows a secret as `***`, a secret file by its path, a URL (Redis, the thread
store) with every credential masked — password, a lone user, credential query parameters
such as `?password=` or `?sslpassword=` — so its output can be pasted into an issue.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import BeforeValidator, GetCoreSchemaHandler, PlainSerializer, ValidationInfo
from pydantic.json_schema import WithJsonSchema
from pydantic_core import core_schema

from .types import text


class Secret:
    """A string that never shows itself in repr, str, logs or `check` output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        def parse(value: object) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, str):
                return Secret(value.strip())
            raise ValueError("expected text")

        return core_schema.no_info_plain_validator_function(
            parse,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda s: "***" if s else ""
            ),
        )


class FileSecret(Secret):
    """A secret read from a file (`*_file` keys); `check` shows the path, never the text."""

    __slots__ = ("path",)

    def __init__(self, value: str, path: str) -> None:
        super().__init__(value)
        self.path = path


# Query parameters that carry credentials: libpq's `password`/`sslpassword`, tokens, API
# keys, signatures of presigned URLs (`X-Amz-Signature`, `sig`), … — by name, any case.
# (`sslkey`/`sslcert` name files, not secrets: shown.)
CREDENTIAL_PARAM = re.compile(
    r"pass(word|wd)?|pwd|secret|token|signature|credential|api[-_]?key|authorization|"
    r"^auth$|^key$|^sig$",
    re.IGNORECASE,
)


def is_credential(raw_name: str) -> bool:
    """Is a query parameter of this (percent-encoded) name a credential?"""
    return CREDENTIAL_PARAM.search(unquote_plus(raw_name)) is not None


def _parts(url: str) -> tuple[str, str, str, str, str] | None:
    """scheme, userinfo, host (and port), path, query-and-fragment — split by hand: no
    ValueError on a malformed host, and `sqlite:///x.db` comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, _, host = rest[:end].rpartition("@")
    path, mark, query = rest[end:].partition("?")
    return scheme, userinfo, host, path, mark + query


def _pairs(query: str) -> list[str]:
    return re.split("([&;])", query)


def url_credentials(url: str) -> list[str]:
    """The credentials a URL carries, as written: its password (or a user given alone,
    which is how tokens ride in URLs) and the values of credential query parameters."""
    parts = _parts(url)
    if parts is None:
        return []
    _, userinfo, _, _, query = parts
    found = []
    name, colon, password = userinfo.partition(":")
    if password or (name and not colon):
        found.append(password or name)
    for pair in _pairs(query.lstrip("?").partition("#")[0])[::2]:
        key, eq, value = pair.partition("=")
        if eq and value and is_credential(key):
            found.append(value)
    return found


def mask_url(url: str) -> str:
    """A URL with every credential replaced by `***` — the password (a user given alone
    too) and credential query parameters — so `check` output can be pasted anywhere."""
    parts = _parts(url)
    if parts is None:
        return url
    scheme, userinfo, host, path, query = parts
    if userinfo:
        name, colon, _ = userinfo.partition(":")
        host = (f"{name}:***" if colon else "***") + "@" + host
    query, hash_, fragment = query.partition("#")
    pairs = _pairs(query)
    for i in range(0, len(pairs), 2):
        key, eq, value = pairs[i].partition("=")
        if eq and value and is_credential(key.lstrip("?")):
            pairs[i] = f"{key}=***"
    return f"{scheme}://{host}{path}{''.join(pairs)}{hash_}{fragment}"


def secrets_in(value: object) -> set[str]:
    """Every secret a policy holds (and each credential in a URL secret alone): what the log
    boundary masks (logs.py). Walks the dataclasses, so a new secret key is covered."""
    found: set[str] = set()
    if isinstance(value, Secret):
        revealed = value.reveal()
        if revealed:
            found.add(revealed)
            if "://" in revealed:
                for credential in url_credentials(revealed):
                    found |= {credential, unquote_plus(credential)}
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            found |= secrets_in(getattr(value, f.name))
    elif isinstance(value, dict):
        for item in value.values():
            found |= secrets_in(item)
    elif isinstance(value, list | tuple | frozenset):
        for item in value:
            found |= secrets_in(item)
    return found


def _url_secret(value: object) -> Secret:
    return value if isinstance(value, Secret) else Secret(text(value).strip())


# A URL that may carry a password (Redis): `check` shows it with the password masked.
SecretUrl = Annotated[
    Secret,
    BeforeValidator(_url_secret),
    PlainSerializer(lambda s: mask_url(s.reveal())),
    WithJsonSchema({"type": "string", "format": "uri"}),
]


def _read_secret_file(value: object, info: ValidationInfo) -> Secret:
    """`*_file` keys: the file's text, stripped. `check --skip-secret-files` (context
    `secret_files: False`) checks the path only, for CI without the production secrets."""
    path = text(value).strip()
    if not path:
        raise ValueError("must not be empty")
    if info.context is not None and info.context.get("secret_files") is False:
        return FileSecret(f"(not read: {path})", path)
    try:
        return FileSecret(Path(path).read_text(encoding="utf-8").strip(), path)
    except OSError as exc:
        raise ValueError(f"cannot read secret file {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path!r} is not UTF-8 text") from None


SecretFile = Annotated[
    Secret,
    BeforeValidator(_read_secret_file),
    PlainSerializer(lambda s: s.path if isinstance(s, FileSecret) else "***"),
    WithJsonSchema({"type": "string", "description": "path of a file holding the secret"}),
]
