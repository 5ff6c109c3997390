"""`chatkit_agent`: the gateway is the ChatKit server — an agent from the policy (SPEC §8).

For the site whose Agent Builder workflow stopped and who has no backend: the widget's
`api.url` is this route; openai-chatkit's `ChatKitServer` serves the protocol, an Agents
SDK agent answers, threads live in the route's store (SQLite, or PostgreSQL shared by
replicas). The order of the checks is the proxy route's (chatkit_proxy.py) — origin,
untyped limits before the body is read, the body within `max_json_bytes`, the type, the
stream cap, typed limits — then: the user from `X-Device-Id` (400 without one), the token
budgets (429 before the model is called) and the store (503 before a stream starts).

This module holds the policy keys and the compile step and imports nothing of the `agent`
extra; serving is in gateway/agent/, imported when a policy has such a route.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from typing import Annotated, Any, ClassVar, Literal

from aiohttp import web
from pydantic import model_validator
from pydantic.dataclasses import dataclass

from ..agent.config import (
    AgentConfig,
    AgentRouteData,
    AttachmentsConfig,
    StoreConfig,
    TitlesConfig,
    TokenBudget,
)
from ..identity import user_secret
from ..knowledge.config import KnowledgeConfig
from ..openapi import route_path_item
from ..policy import STRICT, RouteBase, UpstreamConfig, UserIdConfig, UserIdSource
from ..policy.types import Between, HttpUrl, at

EXTRA = "agent"
# What the extra installs, by import name (the store driver is checked by URL).
_MODULES = ("chatkit", "agents", "sqlalchemy")
_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg", "postgres": "asyncpg"}


def missing_modules(store_url: str) -> list[str]:
    scheme = store_url.split(":", 1)[0].lower()
    wanted = [*_MODULES, _DRIVERS.get(scheme, "aiosqlite")]
    return [name for name in wanted if importlib.util.find_spec(name) is None]


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitAgentRoute(RouteBase):
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

    @model_validator(mode="after")
    def _agent_checks(self) -> ChatKitAgentRoute:
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

    def compile(self, upstream: UpstreamConfig) -> AgentRouteData:
        from ..agent.agent_spec import agent_spec  # the extra: present, _agent_checks saw to it

        secret = user_secret(self.user_id, upstream)
        url_key = hashlib.sha256(b"chatkit-gateway/attachments/v1\x00" + secret).digest()
        spec = agent_spec(self.agent, self.attachments, self.knowledge)
        return AgentRouteData(secret, url_key, spec)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        from ..agent.serving import serve_agent

        return await serve_agent(request, self)

    def origin_exempt(self, request: web.Request) -> bool:
        # An `<img>` preview GET has no Origin; its URL is signed (attachment_admission.py).
        return request.method == "GET" and request.path != self.path

    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        below = self.path.rstrip("/") + "/attachments/{attachment_id}"
        attachment = route_path_item(doc, "chatkit_agent_attachment", self, below=True)
        attachment["get"]["operationId"] = f"{self.name}_preview"
        return {self.path: route_path_item(doc, "chatkit_agent", self), below: attachment}

    def warnings(self) -> list[str]:
        found = []
        if self.user_id.source is UserIdSource.CLIENT_IP:
            found.append(
                f"route {self.name!r}: user_id.source client_ip gives everyone behind one "
                "address the same threads"
            )
        if not self.token_budgets:
            found.append(f"route {self.name!r}: no token_budgets: model spend is unbounded")
        return found
