"""gateway.yaml → Policy: read with lines (source.py), validated by pydantic, every problem
reported with its line (pydantic's error locations mapped onto the YAML keys)."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass
from pydantic_core import ErrorDetails

from .problems import Loc, PolicyError, Problem, key_path
from .route import RouteBase, on_kinds_changed, route_kinds
from .sections import STRICT, LimiterConfig, MetricsConfig, ServerConfig, UpstreamConfig
from .source import Document, read_document
from .types import described

# Served by the gateway itself on every policy (routes/ops.py); the metrics path too.
OPS_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})


@dataclass(frozen=True, kw_only=True, config=STRICT)
class Policy:
    """The whole policy. `routes` holds one class per kind (the registry's union)."""

    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    upstream: UpstreamConfig = dataclasses.field(default_factory=UpstreamConfig)
    limiter: LimiterConfig = dataclasses.field(default_factory=LimiterConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    routes: tuple[RouteBase, ...]

    # Not part of the file: where it came from, and the CLI's --stub-upstream.
    source: str = Field(default="", exclude=True)
    stub_upstream: bool = Field(default=False, exclude=True)

    def __post_init__(self) -> None:
        # A route's body cap defaults to its kind's, else to the server's (resolved once).
        for route in self.routes:
            if route.max_body_bytes is None:
                default = route.default_max_body_bytes or self.server.max_body_bytes
                object.__setattr__(route, "max_body_bytes", default)


@functools.cache
def policy_adapter() -> TypeAdapter[Any]:
    """The validator of the file: Policy with `routes` as the union of registered kinds."""
    kinds = route_kinds()
    union = Annotated[Union[kinds], Field(discriminator="kind")]  # type: ignore[valid-type]  # noqa: UP007
    namespace = {"__annotations__": {"routes": tuple[union, ...]}, "__module__": __name__}
    file_model = dataclass(frozen=True, kw_only=True, config=STRICT)(
        type("Policy", (Policy,), namespace)
    )
    return TypeAdapter(file_model)


on_kinds_changed(policy_adapter.cache_clear)


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of the policy file (`chatkit-gateway schema`)."""
    schema = policy_adapter().json_schema()
    for name in ("source", "stub_upstream"):
        schema.get("properties", {}).pop(name, None)
    schema["title"] = "chatkit-gateway policy (gateway.yaml)"
    return schema


def load_policy(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    stub_upstream: bool = False,
    read_secret_files: bool = True,
) -> Policy:
    """Read, interpolate and validate a policy file; raise PolicyError listing every problem."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(str(path), 1, "(file)", f"cannot read policy file: {exc}")
        raise PolicyError([problem]) from None
    return parse_policy(
        source, file=str(path), env=env, stub_upstream=stub_upstream,
        read_secret_files=read_secret_files,
    )  # fmt: skip


def parse_policy(
    source: str,
    *,
    file: str = "gateway.yaml",
    env: Mapping[str, str] | None = None,
    stub_upstream: bool = False,
    read_secret_files: bool = True,
) -> Policy:
    doc = read_document(file, source, os.environ if env is None else env)
    problems = dict(doc.problems)
    data = doc.data
    if not isinstance(data, dict):
        problems.setdefault((), Problem(file, 1, "(top)", "expected a mapping"))
        raise PolicyError(list(problems.values()))
    for key in ("source", "stub_upstream"):  # the CLI's, not the file's
        if key in data:
            problems[(key,)] = Problem(file, doc.line((key,)), key, _unknown_key((key,), {}))
    for loc, message in _document_checks(data, doc):
        problems.setdefault(loc, Problem(file, doc.line(loc), key_path(loc), message))
    policy: Policy | None = None
    try:
        policy = policy_adapter().validate_python(
            {**data, "source": file, "stub_upstream": stub_upstream},
            context={"secret_files": read_secret_files},
        )
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if _short_for_its_items(error):
                continue
            loc, message = _explain(error, data)
            if not any(loc[: len(seen)] == seen for seen in problems):
                problems[loc] = Problem(file, doc.line(loc), key_path(loc), _shown(message, doc))
    if policy is not None and not problems and (missing := _missing_api_key(policy)):
        loc = ("upstream", "api_key")
        problems[loc] = Problem(file, doc.line(loc), key_path(loc), missing)
    if problems:
        raise PolicyError(sorted(problems.values(), key=lambda p: p.line))
    assert policy is not None
    return policy


def _document_checks(data: dict[str, Any], doc: Document) -> list[tuple[Loc, str]]:
    """Checks across routes, on the data as written: they must run even when a route has
    other problems, so that one run reports all."""
    found: list[tuple[Loc, str]] = []
    routes = data.get("routes")
    if "routes" not in data or (isinstance(routes, list) and not routes):
        found.append((("routes",), "at least one route is required"))
    metrics = data.get("metrics")
    metrics_path = metrics.get("path") if isinstance(metrics, dict) else None
    reserved = OPS_PATHS | {str(metrics_path or "/metrics").rstrip("/") or "/"}
    seen: dict[tuple[str, str], int] = {}
    for i, route in enumerate(routes if isinstance(routes, list) else ()):
        if not isinstance(route, dict):
            continue
        for key in ("name", "path"):
            value = route.get(key)
            if not isinstance(value, str) or not value.strip():
                continue
            text = value.strip()
            loc = ("routes", i, key)
            if key == "path":
                text = text.rstrip("/") or "/"
                if text in reserved:
                    found.append((loc, f"{text!r} is reserved for operations endpoints"))
            first = seen.setdefault((key, text), doc.line(loc))
            if first != doc.line(loc):
                found.append((loc, f"route {key} {text!r} is already used (line {first})"))
    return found


def _missing_api_key(policy: Policy) -> str | None:
    """Why a valid policy needs the upstream.api_key it lacks (its first route calling OpenAI)."""
    route = next((r for r in policy.routes if r.needs_openai_key), None)
    if route is None or policy.stub_upstream or policy.upstream.api_key:
        return None
    calls = _CALLS.get(route.KIND, "calls OpenAI")
    return (
        f"an OpenAI API key is required: route {route.name!r} ({route.KIND}) {calls}; "
        "set api_key or api_key_file, unless the gateway runs with --stub-upstream"
    )


# Why a route kind needs upstream.api_key, in the words of the OpenAI API it calls.
_CALLS = {
    "chatkit_session": "mints ChatKit client secrets at OpenAI (/v1/chatkit/sessions)",
    "realtime_client_secret": "mints Realtime client secrets (/v1/realtime/client_secrets)",
    "chatkit_agent": "calls OpenAI's Responses API for its agent's answers",
}


def _explain(error: ErrorDetails, data: dict[str, Any]) -> tuple[Loc, str]:
    """A pydantic error as (location in the file, message in the policy's words)."""
    loc = _file_loc(error["loc"], data)
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "policy_at":
        return (*loc, *ctx["path"]), str(ctx["message"])
    if kind == "missing":
        return loc, "is required"
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return loc, _unknown_key(loc, data)
    if kind == "union_tag_invalid":
        tags = ", ".join(k.KIND for k in route_kinds())
        return (*loc, "kind"), f"expected one of {tags}, got {ctx.get('tag')!r}"
    if kind == "union_tag_not_found":
        return (*loc, "kind"), "is required"
    if kind in ("dataclass_type", "dataclass_args_type", "dict_type", "model_type"):
        return loc, f"expected a mapping, got {described(given)}"
    if kind in ("tuple_type", "list_type", "frozen_set_type", "set_type"):
        return loc, f"expected a list, got {described(given)}"
    return loc, error["msg"].removeprefix("Value error, ")


def _short_for_its_items(error: ErrorDetails) -> bool:
    """A list too short only after its invalid items were left out: their errors say why."""
    given, ctx = error.get("input"), error.get("ctx") or {}
    return (
        error["type"] == "too_short"
        and isinstance(given, list | tuple)
        and len(given) >= ctx.get("min_length", 0)
    )


def _file_loc(loc: tuple[int | str, ...], data: Any) -> Loc:
    """pydantic's location without the union tags it adds (`routes.0.chatkit_proxy.target`)."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part not in node and part == node.get("kind"):
            continue  # the discriminator's branch, not a key
        if _tag_before_its_key(node, part, loc[i + 1 : i + 2]):
            continue  # `sources.0.crawl.crawl`: the tag, then the key
        out.append(part)
        node = _child(node, part)
    return tuple(out)


def _child(node: Any, part: int | str) -> Any:
    """The value under a key or at an index of the data as written, else None."""
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _tag_before_its_key(node: Any, part: int | str, following: tuple[int | str, ...]) -> bool:
    """A union member tagged by one of its keys (knowledge sources): pydantic puts the tag
    before the key that failed, which is that key or one beside it."""
    if not isinstance(node, dict) or part not in node or isinstance(node[part], dict | list):
        return False
    return bool(following) and following[0] in node


def _unknown_key(loc: Loc, data: dict[str, Any]) -> str:
    key = loc[-1]
    cls = _class_at(loc[:-1], data)
    keys = sorted(_field_names(cls))
    is_route = isinstance(cls, type) and issubclass(cls, RouteBase)
    if is_route and any(key in _field_names(k) for k in route_kinds() if k is not cls):
        return f"not used by routes of kind {getattr(cls, 'KIND', '?')}"
    hint = ""
    if isinstance(key, str) and (close := difflib.get_close_matches(key, keys, n=1)):
        hint = f"did you mean {close[0]}? "
    return f"unknown key ({hint}expected one of: {', '.join(keys)})"


def _class_at(loc: Loc, data: Any) -> Any:
    """The dataclass that reads the mapping at `loc` (keys named in errors come from it)."""
    cls: Any = Policy
    node: Any = data
    for part in loc:
        node = _child(node, part)
        if isinstance(part, int) and cls is RouteBase:  # `routes.N`: its kind picks the class
            kinds: dict[object, type[RouteBase]] = {k.KIND: k for k in route_kinds()}
            cls = kinds.get(node.get("kind") if isinstance(node, dict) else None, RouteBase)
        elif isinstance(part, str):
            cls = _dataclass_in(typing.get_type_hints(cls, include_extras=True).get(part))
            if cls is None:
                return None
    return cls


def _dataclass_in(hint: Any) -> Any:
    """The dataclass a field holds (through Optional, tuple and Annotated)."""
    if dataclasses.is_dataclass(hint):
        return hint
    found = (_dataclass_in(arg) for arg in typing.get_args(hint))
    return next((cls for cls in found if cls is not None), None)


def _field_names(cls: Any) -> set[str]:
    """The keys a file may give: the fields (by their YAML names), not the CLI's."""
    fields = getattr(cls, "__pydantic_fields__", {})
    return {info.alias or name for name, info in fields.items() if not info.exclude}


def _shown(message: str, doc: Document) -> str:
    """Show `${VAR}` rather than a value the environment gave: it may be a secret."""
    for value, shown in doc.shown.values():
        # Short values (ports, counts) are no secrets and help more shown than hidden.
        variants = {v for v in (value, value.strip(), value.strip().lower()) if len(v) >= 8}
        for variant in sorted(variants, key=len, reverse=True):
            message = message.replace(variant, shown)
    return " ".join(message.splitlines())
