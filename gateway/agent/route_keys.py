"""The policy keys of a `chatkit_agent` route (SPEC §8), where serving can import them.

The kind (gateway/routes/chatkit_agent.py) adds compile, OpenAPI and warnings to these;
serving (gateway/agent/serving.py) reads them, and the kind imports serving: the keys stand
below both. Plain pydantic, like config.py: a gateway without the `agent` extra still
parses, checks and refuses such a route with a clear message.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Annotated, ClassVar, Literal

from pydantic import model_validator
from pydantic.dataclasses import dataclass

from ..knowledge.config import KnowledgeConfig
from ..policy import STRICT, RouteBase, UserIdConfig
from ..policy.types import Between, HttpUrl, at
from .config import AgentConfig, AttachmentsConfig, StoreConfig, TitlesConfig, TokenBudget

EXTRA = "agent"
# What the extra installs, by import name (the store driver is checked by URL).
_MODULES = ("chatkit", "agents", "sqlalchemy")
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "postgres": "asyncpg"}


def missing_modules(store_url: str) -> list[str]:
    scheme = store_url.split(":", 1)[0].lower()
    wanted = [*_MODULES, _DRIVERS.get(scheme, "aiosqlite")]
    return [name for name in wanted if importlib.util.find_spec(name) is None]


@dataclass(frozen=True, kw_only=True, config=STRICT)
class AgentRouteKeys(RouteBase):
    kind: Literal["chatkit_agent"]
    agent: AgentConfig
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    # Absent: `attachments.create` is refused and nothing can be uploaded.
    attachments: AttachmentsConfig | None = None
    user_id: UserIdConfig = dataclasses.field(default_factory=UserIdConfig)
    # The site's own pages, indexed in the route's store and searched by the agent (§9).
    knowledge: KnowledgeConfig | None = None
    # Each thread named after its first answer by one short model call (SPEC §10): true (the
    # agent's model), {model: NAME}, or false.
    titles: bool | TitlesConfig = True
    token_budgets: tuple[TokenBudget, ...] = ()
    max_streams_per_client: Annotated[int, Between(1, 10000)] | None = None
    max_json_bytes: Annotated[int, Between(1024, 16 << 20)] = 256 * 1024
    # Uploads (attachments.create's upload URLs) one client may have in flight at once,
    # each holding up to attachments.max_bytes.
    max_uploads_per_client: Annotated[int, Between(1, 10000)] = 4
    # The model's stream may pause (a file search); longer than this without an event: failed.
    stream_idle_timeout_seconds: Annotated[float, Between(1, 3600)] = 120.0
    stream_write_timeout_seconds: Annotated[float, Between(1, 3600)] = 30.0
    # The route's URL as browsers see it, for upload URLs; default: from the request (its
    # Host, and X-Forwarded-Proto/-Host when the peer is a trusted proxy).
    public_url: HttpUrl | None = None
    needs_openai_key: ClassVar[bool] = True
    serves_below: ClassVar[bool] = True  # attachment uploads and previews
    takes_types: ClassVar[bool] = True
    no_store: ClassVar[bool] = True
    default_max_body_bytes: ClassVar[int | None] = 10 * 1024 * 1024
    methods: ClassVar[frozenset[str]] = frozenset({"POST", "GET"})

    @property
    def json_limit(self) -> int:
        """The endpoint's cap: the smaller of `max_json_bytes` and `max_body_bytes`."""
        return min(self.max_json_bytes, self.body_limit)

    @model_validator(mode="after")
    def _agent_checks(self) -> AgentRouteKeys:
        missing = missing_modules(self.store.url.reveal())
        if missing:
            raise at(
                ("kind",),
                f"chatkit_agent needs the `{EXTRA}` extra (missing: {', '.join(missing)}): "
                f"pip install 'chatkit-gateway[{EXTRA}]'",
            )
        names = [b.name for b in self.token_budgets]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise at(("token_budgets", i), f"budget {name} is given twice")
        return self
