"""`chatkit_agent`: the gateway is the ChatKit server — an agent from the policy (SPEC §8),
for the site whose Agent Builder workflow stopped and who has no backend. What a request
goes through: docs/DESIGN.md, "One request, top-down".

The policy keys are gateway/agent/route_keys.py's (serving reads them); this module adds
the compile step, OpenAPI and warnings, and imports nothing of the `agent` extra until a
policy with such a route is compiled: the handler is gateway/agent/serving.py's.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic.dataclasses import dataclass

from ..agent.config import AgentRouteData
from ..agent.route_keys import AgentRouteKeys
from ..identity import user_secret
from ..openapi import route_path_item
from ..policy import STRICT, UpstreamConfig, UserIdSource

if TYPE_CHECKING:
    from ..agent.serving import AgentHandler


# The keys are AgentRouteKeys'; compiled into serving.py's AgentHandler. (No docstring:
# it would become the route's description in the JSON Schema.)
@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitAgentRoute(AgentRouteKeys):
    def compile(self, upstream: UpstreamConfig) -> AgentHandler:
        # The extra: present, _agent_checks saw to it.
        from ..agent.agent_spec import agent_spec
        from ..agent.serving import AgentHandler

        secret = user_secret(self.user_id, upstream)
        url_key = hashlib.sha256(b"chatkit-gateway/attachments/v1\x00" + secret).digest()
        spec = agent_spec(self.agent, self.attachments, self.knowledge)
        return AgentHandler(self, AgentRouteData(secret, url_key, spec))

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
