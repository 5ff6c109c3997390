"""The policy keys of a `chatkit_agent` route below the route itself (SPEC §8).

Plain pydantic: importing this costs nothing extra, so a gateway without the `agent`
extra still parses, checks and refuses such a route with a clear message.
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import WithJsonSchema

from ..policy import STRICT
from ..policy.secrets import Secret, SecretFile, SecretUrl
from ..policy.sections import SecretWithFile
from ..policy.types import Between, Duration, Name, OneOf, Text, at, fmt_duration, strip

_MODEL = Annotated[
    str,
    BeforeValidator(strip),
    AfterValidator(lambda v: _bounded(v, 128, "a model name")),
    WithJsonSchema({"type": "string", "examples": ["gpt-6.1-terra"]}),
]


def _bounded(value: str, most: int, what: str) -> str:
    if not value or len(value) > most or any(c.isspace() for c in value):
        raise ValueError(f"expected {what} (1 to {most} characters, no spaces), got {value!r}")
    return value


_Id = Annotated[str, BeforeValidator(strip), AfterValidator(lambda v: _bounded(v, 128, "an id"))]
_Domain = Annotated[
    str, BeforeValidator(strip), AfterValidator(lambda v: _bounded(v, 253, "a domain"))
]


@dataclass(frozen=True, config=STRICT)
class FileSearchTool:
    """OpenAI's hosted File Search over vector stores (they outlived Agent Builder)."""

    type: Literal["file_search"]
    vector_store_ids: Annotated[tuple[_Id, ...], Field(min_length=1, max_length=16)]
    max_num_results: Annotated[int, Between(1, 50)] | None = None


@dataclass(frozen=True, config=STRICT)
class WebSearchTool:
    type: Literal["web_search"]
    allowed_domains: Annotated[tuple[_Domain, ...], Field(max_length=100)] = ()


Tool = Annotated[FileSearchTool | WebSearchTool, Field(discriminator="type")]


class ReasoningEffort(enum.StrEnum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, config=STRICT)
class ModelSettings:
    temperature: Annotated[float, Between(0, 2)] | None = None
    top_p: Annotated[float, Between(0, 1)] | None = None
    max_output_tokens: Annotated[int, Between(1, 1_000_000)] | None = None
    reasoning_effort: Annotated[ReasoningEffort, OneOf()] | None = None


def _read_instructions(value: object, info: ValidationInfo) -> str:
    """The path, checked readable at load; the text is kept beside it (AgentConfig)."""
    path = strip(value)
    if info.context is not None and info.context.get("secret_files") is False:
        return path
    try:
        Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path!r} is not UTF-8 text") from None
    return path


@dataclass(frozen=True, config=STRICT)
class AgentConfig:
    model: _MODEL
    # Tried in order when the model answers model_not_found (it was shut down), before
    # anything reached the visitor (SPEC §10; gateway/agent/fallback_model.py).
    fallback_models: Annotated[tuple[_MODEL, ...], Field(max_length=4)] = ()
    instructions: Annotated[Text, Field(max_length=256 * 1024)] | None = None
    # Read at load (and on reload), so the agent's prompt can live in its own file; `check`
    # shows the path.
    instructions_file: Annotated[str, BeforeValidator(_read_instructions)] | None = None
    tools: Annotated[tuple[Tool, ...], Field(max_length=8)] = ()
    model_settings: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    # The thread's last items sent to the model each turn: bounds a turn's input tokens.
    history_items: Annotated[int, Between(1, 1000)] = 30
    name: Name = "assistant"

    @model_validator(mode="after")
    def _distinct_models(self) -> AgentConfig:
        seen = {self.model}
        for i, name in enumerate(self.fallback_models):
            if name in seen:
                raise at(("fallback_models", i), f"{name!r} is already named before it")
            seen.add(name)
        return self

    @model_validator(mode="after")
    def _one_instructions(self) -> AgentConfig:
        if self.instructions is not None and self.instructions_file is not None:
            raise at(("instructions_file",), "give either instructions or instructions_file")
        text = None
        if self.instructions_file is not None and Path(self.instructions_file).is_file():
            text = Path(self.instructions_file).read_text(encoding="utf-8")
        object.__setattr__(self, "_file_text", text)
        return self

    @property
    def prompt(self) -> str | None:
        if self.instructions is not None:
            return self.instructions
        text: str | None = getattr(self, "_file_text", None)
        return text


@dataclass(frozen=True, config=STRICT)
class TitlesConfig:
    """`titles:` of a route (SPEC §10): each thread named after its first answer."""

    model: _MODEL | None = None  # default: agent.model (agent.fallback_models follow it)


def title_model(titles: bool | TitlesConfig, agent: AgentConfig) -> str | None:
    """The model that titles the route's threads; None with `titles: false`."""
    if titles is False:
        return None
    if isinstance(titles, TitlesConfig) and titles.model is not None:
        return titles.model
    return agent.model


DEFAULT_STORE = "sqlite:///chatkit-gateway-threads.db"


def _store_url(value: Secret) -> Secret:
    url = value.reveal()
    if url.startswith("(not read: "):
        return value
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("expected sqlite:///path/threads.db or postgresql://user:password@host/db")
    if scheme == "sqlite" and not url.startswith("sqlite:///"):
        raise ValueError("expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return value


@dataclass(frozen=True, config=STRICT)
class StoreConfig(SecretWithFile):
    SECRET_KEYS = ("url",)
    # Neither url nor url_file: DEFAULT_STORE (set by _default_url).
    url: Annotated[SecretUrl, AfterValidator(_store_url)] = dataclasses.field(
        default_factory=lambda: Secret("")
    )
    url_file: Annotated[SecretFile, AfterValidator(_store_url)] | None = None
    # Threads untouched this long are deleted by the sweep; null keeps them forever.
    retention: Duration | None = 30 * 86400.0
    # A store call that takes longer fails the request (503) instead of hanging it.
    timeout_seconds: Annotated[float, Between(0.1, 60)] = 5.0
    pool_size: Annotated[int, Between(1, 100)] = 5

    @model_validator(mode="after")
    def _default_url(self) -> StoreConfig:
        if not self.url and self.url_file is None:
            object.__setattr__(self, "url", Secret(DEFAULT_STORE))
        return self


DEFAULT_MIME_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf")
_Mime = Annotated[
    str,
    BeforeValidator(strip),
    AfterValidator(lambda v: _bounded(v.lower(), 100, "a MIME type like image/png")),
]


_MiB = 1024 * 1024


@dataclass(frozen=True, config=STRICT)
class AttachmentsConfig:
    max_bytes: Annotated[int, Between(1, 100 * _MiB)] = 10 * _MiB
    mime_types: Annotated[tuple[_Mime, ...], Field(min_length=1)] = DEFAULT_MIME_TYPES
    # One user's stored attachments at most (uploaded, whether sent yet or not).
    max_per_user: Annotated[int, Between(1, 100_000)] = 100
    # Attachment bytes sent to the model in one turn, newest first; older ones (and any
    # past the cap) become a line of text naming the file. Bounds a turn's memory and cost.
    max_bytes_per_turn: Annotated[int, Between(1, 100 * _MiB)] = 20 * _MiB
    # Bytes stored from one client address (its network, as `client_ip` limits count it):
    # device ids are free, addresses are not.
    max_bytes_per_client: Annotated[int, Between(1, 1024**4)] = 200 * _MiB
    # Bytes stored for the whole store: a full disk would take threads down with it.
    max_store_bytes: Annotated[int, Between(1, 1024**5)] = 5 * 1024 * _MiB

    @model_validator(mode="after")
    def _caps_fit(self) -> AttachmentsConfig:
        for key in ("max_bytes_per_turn", "max_bytes_per_client", "max_store_bytes"):
            if getattr(self, key) < self.max_bytes:
                raise at(
                    (key,),
                    f"{key} ({getattr(self, key)}) is below max_bytes ({self.max_bytes}): "
                    "an upload that fits could never be stored or sent",
                )
        return self


class BudgetKey(enum.StrEnum):
    USER = "user"
    CLIENT_IP = "client_ip"
    GLOBAL = "global"


@dataclass(frozen=True, config=STRICT)
class TokenBudget:
    key: Annotated[BudgetKey, OneOf()]
    tokens: Annotated[int, Between(1, 10**12)]
    per_seconds: Annotated[Duration, Field(alias="per")]

    @property
    def name(self) -> str:
        return f"{self.key}_{self.tokens}_tokens_per_{fmt_duration(self.per_seconds)}"


@dataclasses.dataclass(frozen=True, slots=True)
class AgentRouteData:
    """What serving needs beside the keys, worked out once per policy (the handler's)."""

    user_secret: bytes = dataclasses.field(repr=False)  # X-Device-Id → user, as for proxies
    url_key: bytes = dataclasses.field(repr=False)  # signs attachment URLs
    spec: Any = None  # gateway.agent.agent_spec.AgentSpec (the extra's types)


KIND = "chatkit_agent"
