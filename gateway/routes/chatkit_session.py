"""`chatkit_session`: a hosted ChatKit session for a workflow (`wf_…`), minted with the
server's key. Agent Builder's workflows stopped on 2026-11-30: only for a workflow OpenAI
still serves."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, model_validator
from pydantic.dataclasses import dataclass

from ..errors import WorkflowNotFound
from ..identity import end_user_id, user_secret
from ..policy import STRICT, JsonObject, UpstreamConfig, UserIdConfig
from ..policy.types import Between, Bool, NonEmpty, at
from ..requestinfo import RequestInfo
from .token import TokenMint, TokenRoute, expires_after


def _workflow_id(value: str) -> str:
    if not value.startswith("wf_"):
        raise ValueError(f"a workflow id starts with 'wf_', got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True, config=STRICT)
class SessionOptions:
    """Passed on in the upstream body (SPEC §1)."""

    expires_after_seconds: Annotated[int, Between(1, 600)] | None = None
    max_requests_per_1_minute: Annotated[int, Between(1, 10000)] | None = None
    workflow_version: NonEmpty | None = None
    state_variables: JsonObject | None = None
    tracing_enabled: Bool | None = None
    chatkit_configuration: JsonObject | None = None

    @model_validator(mode="after")
    def _no_latest(self) -> SessionOptions:
        if self.workflow_version == "latest":
            raise at(("workflow_version",), "leave workflow_version out instead of 'latest'")
        return self


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitSessionRoute(TokenRoute):
    kind: Literal["chatkit_session"]
    workflow_id: Annotated[NonEmpty, AfterValidator(_workflow_id)]
    session: SessionOptions = field(default_factory=SessionOptions)
    user_id: UserIdConfig = field(default_factory=UserIdConfig)
    endpoint = "/chatkit/sessions"
    beta = "chatkit_beta=v1"
    not_found = WorkflowNotFound  # "Workflow with id … not found"

    def compile(self, upstream: UpstreamConfig) -> TokenMint:
        return TokenMint(self, user_secret(self.user_id, upstream))

    def upstream_body(
        self, browser: dict[str, Any], request: web.Request, info: RequestInfo, mint: TokenMint
    ) -> dict[str, Any]:
        user = end_user_id(self.user_id, mint.user_secret, browser, request.headers, info)
        opts = self.session
        workflow: dict[str, Any] = {"id": self.workflow_id}
        if opts.workflow_version:
            workflow["version"] = opts.workflow_version
        if opts.state_variables:
            workflow["state_variables"] = opts.state_variables
        if opts.tracing_enabled is not None:
            workflow["tracing"] = {"enabled": opts.tracing_enabled}
        body: dict[str, Any] = {"workflow": workflow, "user": user}
        if opts.expires_after_seconds:
            body["expires_after"] = expires_after(opts.expires_after_seconds)
        if opts.max_requests_per_1_minute:
            body["rate_limits"] = {"max_requests_per_1_minute": opts.max_requests_per_1_minute}
        if opts.chatkit_configuration:
            body["chatkit_configuration"] = opts.chatkit_configuration
        return body

    def answer(self, upstream: dict[str, Any]) -> tuple[object, object]:
        return upstream.get("client_secret"), upstream.get("expires_at")

    @staticmethod
    def stub_answer(body: dict[str, Any], secret: str, expires_at: int) -> dict[str, Any]:
        return {
            "id": "cksess_stub_" + secret[-16:],
            "object": "chatkit.session",
            "client_secret": secret,
            "expires_at": expires_at,
            "status": "active",
            "user": body.get("user"),
            "workflow": body.get("workflow"),
        }

    def warnings(self) -> list[str]:
        return [
            f"route {self.name!r}: chatkit_session mints hosted ChatKit sessions for a "
            "workflow; Agent Builder shut down on 2026-11-30, so this works only for a "
            "workflow OpenAI still serves (an Agent Builder workflow's agent becomes a "
            "chatkit_agent route: README, Migrating from Agent Builder)"
        ]
