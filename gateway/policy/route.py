"""What every route has, and the registry of route kinds.

A route kind is one class, in one module of `gateway/routes/`: its policy keys (the
dataclass fields, with `kind: Literal["…"]`), how it is compiled into the handler that
serves its requests, its OpenAPI path items and what `check` warns about. `register_kind`
refuses a class that lacks any of these, at import; the parser, `check`, the JSON
Schema, compile, dispatch and `/openapi.json` all iterate the registry, so nothing about
a kind is written anywhere else.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Protocol, TypeVar

from aiohttp import web
from pydantic import model_validator
from pydantic.dataclasses import dataclass

from .origins import Origin
from .sections import STRICT, RateLimit, UpstreamConfig
from .types import Between, Bool, HeaderName, Name, Sorted, UrlPath, at

_BUILT_IN_KINDS = "gateway.routes"  # imports and registers the shipped kinds


class RouteHandler(Protocol):
    """What a kind's `compile()` makes of a route: everything serving needs, worked out
    once per policy, and the handler of the requests its origin and method checks let
    through. (`info` is the request's `RequestInfo`: the policy stands below it.)"""

    async def serve(self, request: web.Request, info: Any, /) -> web.StreamResponse: ...


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RouteBase(abc.ABC):
    """The keys of every route kind; a kind subclasses it with `kind` and its own keys."""

    name: Name
    path: UrlPath
    allowed_origins: Annotated[frozenset[Origin], Sorted] = frozenset()
    allow_missing_origin: Bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    # None: the kind's default (`default_max_body_bytes`, else server.max_body_bytes).
    max_body_bytes: Annotated[int, Between(0, 1 << 31)] | None = None
    cors_max_age_seconds: Annotated[int, Between(0, 86400)] = 600
    # Request headers a page may send beyond those every route allows (Content-Type,
    # X-Request-ID, Authorization, X-Device-Id): the preflight's Access-Control-Allow-Headers.
    cors_allow_headers: tuple[HeaderName, ...] = ()

    if TYPE_CHECKING:
        kind: str  # each kind's own field: `kind: Literal["<name>"]`, the union's tag

    # What the kind is, for the layers that treat kinds alike.
    KIND: ClassVar[str]  # set by register_kind from the Literal
    needs_openai_key: ClassVar[bool] = False  # calls OpenAI with upstream.api_key
    serves_below: ClassVar[bool] = False  # also answers paths below its own (uploads)
    no_store: ClassVar[bool] = False  # every answer `Cache-Control: no-store`
    takes_types: ClassVar[bool] = False  # rate limits may narrow to ChatKit types
    default_max_body_bytes: ClassVar[int | None] = None
    methods: ClassVar[frozenset[str]] = frozenset({"POST"})

    @model_validator(mode="after")
    def _route_checks(self) -> RouteBase:
        if not self.allowed_origins and not self.allow_missing_origin:
            raise at(
                ("allowed_origins",), "list at least one origin (or set allow_missing_origin: true)"
            )
        for i, limit in enumerate(self.rate_limits):
            if limit.types is not None and not self.takes_types:
                takers = ", ".join(k.KIND for k in route_kinds() if k.takes_types)
                raise at(
                    ("rate_limits", i, "types"), f"types narrows limits of {takers} routes only"
                )
        return self

    @abc.abstractmethod
    def compile(self, upstream: UpstreamConfig) -> RouteHandler:
        """The route's handler, with what serving needs worked out once per policy."""

    @abc.abstractmethod
    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Path items for this route (by path), from the templates in `doc`'s components."""

    @property
    def body_limit(self) -> int:
        """`max_body_bytes` as resolved by the Policy (the kind's or the server's default)."""
        assert self.max_body_bytes is not None
        return self.max_body_bytes

    def origin_exempt(self, request: web.Request) -> bool:
        """A request this kind authorises itself (a signed URL an `<img>` loads, with no
        Origin), so the Origin check does not apply; every other request is checked."""
        return False

    def warnings(self) -> list[str]:
        """What `check` and `serve` say about a valid route that may not do what is meant."""
        return []


R = TypeVar("R", bound=type[RouteBase])
_KINDS: dict[str, type[RouteBase]] = {}
_listeners: list[Callable[[], None]] = []


def register_kind(cls: R) -> R:
    """Add a route kind (usable as a class decorator); a class missing a piece is refused."""
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise TypeError(f"route kind {cls.__name__} does not implement: {missing}")
    hints = typing.get_type_hints(cls, include_extras=False)
    tag = hints.get("kind")
    if typing.get_origin(tag) is not typing.Literal or len(typing.get_args(tag)) != 1:
        raise TypeError(f"route kind {cls.__name__} needs a field `kind: Literal['<name>']`")
    (name,) = typing.get_args(tag)
    if name in _KINDS and _KINDS[name] is not cls:
        raise TypeError(f"route kind {name!r} is registered twice")
    cls.KIND = name
    _KINDS[name] = cls
    for listener in _listeners:
        listener()
    return cls


def unregister_kind(cls: type[RouteBase]) -> None:
    """Remove a kind added by `register_kind` (a plugin unloaded, a test's own kind)."""
    if _KINDS.get(cls.KIND) is cls:
        del _KINDS[cls.KIND]
        for listener in _listeners:
            listener()


def route_kinds() -> tuple[type[RouteBase], ...]:
    """Every registered kind, the shipped ones loaded on first use (as entry points are)."""
    # Imported every time (a no-op once loaded): a kind registered before the shipped ones
    # were imported must not hide them.
    importlib.import_module(_BUILT_IN_KINDS)
    return tuple(_KINDS.values())


def on_kinds_changed(listener: Callable[[], None]) -> None:
    _listeners.append(listener)
