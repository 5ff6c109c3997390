"""What one turn costs against the route's token budgets, and when that is decided.

Before the SDK runs, `check` refuses a turn whose budget is full (429 JSON, nothing
stored). Before the model is called, `reserve` takes the turn's estimate — its input, plus
`max_output_tokens` — from every budget at once, so that parallel turns see each other.
When the turn ends, `settle_turn` — the one place, serving.py's `finally` — counts what
`respond()` recorded on the turn (the call's outcome and time, the tokens) and `settle`
turns the reservation into the charge:

- the usage OpenAI reported, when it reported some;
- nothing when OpenAI refused the call (4xx: it bills nothing) or it was never made;
- otherwise (the visitor left, a timeout, a 5xx) the input estimate: what the model could
  really have been sent — each history item's text up to `ITEM_TEXT_CAP`, and the
  attachment bytes the converter sent after the per-turn cap (`attachment_bytes`) —
  never the size of whatever an attacker uploaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import RateLimited, Unavailable
from ..limits.budgets import BudgetBucket, Budgets
from ..policy import whole_seconds

if TYPE_CHECKING:
    from ..metrics import Metrics


class Turn(Protocol):
    """What is read here of a turn's context (context.TurnContext, which refers to this
    module: a protocol keeps the two apart)."""

    route: str
    usage: list[tuple[int, int]]
    outcome: str
    call_seconds: float
    budget_refused: bool
    estimated_input: int
    budget: TurnBudget | None


BYTES_PER_TOKEN = 4  # OpenAI's rule of thumb for text; also how attachment bytes are priced
# One history item's text at most, as counted: a user message cannot be longer than the
# largest request body (`max_json_bytes`, 256 KiB by default), an answer is bounded by
# `max_output_tokens`.
ITEM_TEXT_CAP = 256 * 1024
# Inline attachment data in converted input: counted by `attachment_bytes` instead.
_INLINE = frozenset({"image_url", "file_data"})
# Outcomes of a model call OpenAI answered with a 4xx: refused before any work, not billed
# ("model_not_found": model_watch.MODEL_NOT_FOUND, every fallback model refused too).
REFUSED = frozenset({"client_error", "rate_limited", "auth_failed", "model_not_found"})


class TurnBudget:
    """A turn's buckets, and what it has reserved in them so far."""

    __slots__ = ("_budgets", "buckets", "max_output", "reserved")

    def __init__(self, budgets: Budgets, buckets: list[BudgetBucket], max_output: int) -> None:
        self._budgets = budgets
        self.buckets = buckets
        self.max_output = max_output
        self.reserved = 0

    async def check(self) -> float | None:
        """Seconds to wait when a budget is full, else None (Unavailable: `deny` rule)."""
        return await self._budgets.reserve(self.buckets, 0)

    async def reserve(self, tokens: int) -> float | None:
        """Each call of the turn (its answer's, its title's: titles.py) reserves its own
        estimate; the seconds to wait when a budget has no room left for it, else None."""
        wait = await self._budgets.reserve(self.buckets, tokens)
        if wait is None:
            self.reserved += tokens
        return wait

    async def settle(self, context: Turn) -> int:
        """Charges the turn (see the module doc); returns the charge."""
        charged = charge(context)
        await self._budgets.settle(self.buckets, charged - self.reserved)
        self.reserved = 0
        return charged


def charge(context: Turn) -> int:
    used = sum(i + o for i, o in context.usage)
    if used:
        return used
    if not context.outcome or context.outcome in REFUSED:
        return 0
    return context.estimated_input


def budget_spent(wait: float) -> RateLimited:
    return RateLimited("Token budget spent", headers={"Retry-After": str(whole_seconds(wait))})


def input_estimate(history: Iterable[Any], instructions: str | None, attachment_bytes: int) -> int:
    """The turn's input in tokens, roughly, without copying it (no `json.dumps` of inline
    attachments): text lengths are counted where they lie."""
    size = len(instructions or "") + attachment_bytes
    for item in history:
        size += min(_text_size(item), ITEM_TEXT_CAP)
    return -(-size // BYTES_PER_TOKEN)


def _text_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k) + _text_size(v) for k, v in value.items() if k not in _INLINE)
    if isinstance(value, list | tuple):
        return sum(_text_size(v) for v in value)
    return 0 if value is None else len(str(value))


_SPENT = "The assistant has answered all it may for now. Please try again later."
_UNAVAILABLE = "The assistant could not answer just now. Please try again."


async def reserve_turn(context: Turn) -> None:
    """Before the model is called: the turn's estimate reserved, or the turn ends in a
    ChatKit error without calling it (a parallel turn took the budget's last room: noted
    on the turn for `settle_turn`; or the budgets' Redis is down under `deny`)."""
    budget = context.budget
    if budget is None:
        return
    from chatkit.errors import CustomStreamError  # the agent extra: loaded with the route

    try:
        wait = await budget.reserve(max(1, context.estimated_input + budget.max_output))
    except Unavailable:
        raise CustomStreamError(_UNAVAILABLE, allow_retry=True) from None
    if wait is not None:
        context.budget_refused = True
        raise CustomStreamError(_SPENT, allow_retry=False)


async def settle_turn(context: Turn, budget: TurnBudget, metrics: Metrics) -> None:
    """The turn's end, in one place: what it recorded counted, then its charge settled.
    The metrics come first: the settlement may wait on Redis, and the answer is out."""
    route = context.route
    if context.outcome:  # a model call was made
        metrics.upstream_call(route, context.outcome, context.call_seconds)
    tokens_in = sum(i for i, _ in context.usage)  # the answer's call and the title's
    tokens_out = sum(o for _, o in context.usage)
    if tokens_in:
        metrics.model_tokens.labels(route, "input").inc(tokens_in)
    if tokens_out:
        metrics.model_tokens.labels(route, "output").inc(tokens_out)
    if context.budget_refused:
        metrics.rate_limited.labels(route, "tokens").inc()
    await budget.settle(context)
