"""What one ChatKit request carries into the SDK: who asks, and what the turn may spend."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..knowledge.model import Hit
    from ..requestinfo import RequestInfo
    from .config import AttachmentsConfig
    from .turn_cost import TurnBudget


@dataclasses.dataclass(slots=True)
class TurnContext:
    """The SDK's `context` argument: every store call is scoped to `user`."""

    user: str  # the keyed hash of the device id (identity.py), never the raw value
    route: str
    client: str  # the client's network, as `client_ip` limits count it
    info: RequestInfo
    upload_base: str = ""  # absolute URL below the route where uploads go
    attachments: AttachmentsConfig | None = None
    url_key: bytes = dataclasses.field(default=b"", repr=False)  # signs upload URLs
    # (in, out) tokens of each model call (the answer's, its title's): recorded by the
    # calls, counted and charged once when the turn ends (turn_cost.settle_turn).
    usage: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    # What a turn is charged when the model reports no usage (the visitor left, the call
    # failed): the input's size in tokens, roughly (turn_cost.input_estimate).
    estimated_input: int = 0
    # The model call's outcome as metrics count it ("ok", "client_error", …); "" while
    # no call was made. A call OpenAI refused (4xx) is charged nothing (turn_cost.py).
    outcome: str = ""
    call_seconds: float = 0.0  # how long that call took
    # The budgets had no room left at the reservation before the model call.
    budget_refused: bool = False
    # The turn's token budgets: reserved before the model is called, settled after.
    budget: TurnBudget | None = None
    # Attachment bytes (as stored, before base64) this turn sent the model: at most
    # `attachments.max_bytes_per_turn` (converter.py).
    attachment_bytes: int = 0
    # knowledge (SPEC §9): the passages the site search handed the model this turn, in
    # citation order ([1] first): a second search goes on numbering, and `[n]` in the
    # answer becomes a link to hit n's page (gateway/knowledge/citations.py).
    knowledge_hits: list[Hit] = dataclasses.field(default_factory=list)
