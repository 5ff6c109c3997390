"""Token budgets' storage: reserved before the model is called, settled after (issue 20,
item 5). One suite, run on memory and on a real Redis, both on a clock the test moves
(the Redis script takes `now` from it instead of `TIME`). The route: test_budgets_route.py.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from chatkit.errors import CustomStreamError

from gateway.agent.turn_cost import TurnBudget, charge, input_estimate, reserve_turn
from gateway.limits.budgets import (
    BudgetBucket,
    Budgets,
    BudgetStorage,
    MemoryBudgets,
    RedisBudgets,
)
from gateway.limits.redis import RedisStorage
from gateway.policy import Backend, LimiterConfig, Secret
from tests.support.redis_server import RedisServer, running_redis

DAY = 86400.0


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    storage: BudgetStorage
    clock: FakeClock


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    clock = FakeClock()
    if request.param == "memory":
        yield Harness(MemoryBudgets(max_keys=1000, clock=clock), clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{random.getrandbits(48):x}:"  # a fresh namespace per test
    config = LimiterConfig(
        backend=Backend.REDIS, redis_url=Secret(server.url), key_prefix=prefix, timeout_seconds=2.0
    )
    limits = RedisStorage(config)
    try:
        yield Harness(RedisBudgets(limits, prefix, clock=clock), clock)
    finally:
        await limits.close()


def budget(tokens: int, per: float = 1000.0, key: str = "u1") -> BudgetBucket:
    return BudgetBucket(f"r:{key}_{tokens}_per_{per:g}", tokens, per)


async def test_reservations_admit_until_full_then_refuse(backend: Harness) -> None:
    b = budget(1000)  # one token a second
    s = backend.storage
    assert await s.reserve([b], 600) is None
    assert await s.reserve([b], 600) is None  # room was left: admitted, 200 over now
    assert await s.reserve([b], 1) == pytest.approx(201.0)  # until one token has room
    assert await s.reserve([b], 0) == pytest.approx(201.0)  # a check takes nothing


async def test_parallel_reservations_overshoot_by_one_at_most(backend: Harness) -> None:
    b = budget(1000)
    verdicts = [await backend.storage.reserve([b], 300) for _ in range(10)]
    assert verdicts[:4] == [None] * 4  # 0, 300, 600, 900 < 1000: each saw room
    assert all(v is not None for v in verdicts[4:])  # 1200 reserved: 1000 + one turn's
    assert verdicts[4] == pytest.approx(201.0)


async def test_settle_charges_the_difference_and_refunds(backend: Harness) -> None:
    b = budget(1000)
    s = backend.storage
    assert await s.reserve([b], 800) is None
    await s.settle([b], -800)  # OpenAI refused the call: nothing spent
    assert await s.reserve([b], 999) is None
    await s.settle([b], 50 - 999)  # usage was 50
    assert await s.reserve([b], 949) is None  # 50 + 949 = 999: still room
    assert await s.reserve([b], 1) is None  # 1000 exactly: full
    assert await s.reserve([b], 1) == pytest.approx(1.0)
    await s.settle([b], 500)  # an answer beyond its estimate: charged all the same
    assert await s.reserve([b], 1) == pytest.approx(501.0)


async def test_a_refund_never_goes_below_empty(backend: Harness) -> None:
    b = budget(1000)
    s = backend.storage
    assert await s.reserve([b], 500) is None
    backend.clock.now += 2000  # drained meanwhile
    await s.settle([b], -500)  # no credit for later
    assert await s.reserve([b], 1000) is None
    assert await s.reserve([b], 1) == pytest.approx(1.0)


async def test_budgets_drain_with_time(backend: Harness) -> None:
    b = budget(100, per=DAY)  # one token every 864 s
    s = backend.storage
    assert await s.reserve([b], 150) is None
    wait = await s.reserve([b], 1)
    assert wait == pytest.approx(50 * 864 + 864)  # until one whole token has room
    backend.clock.now += 50 * 864 - 1  # still 50 over, less a second
    assert await s.reserve([b], 1) is not None
    backend.clock.now += 864 + 1
    assert await s.reserve([b], 1) is None


async def test_all_or_nothing_across_budgets(backend: Harness) -> None:
    tight, loose = budget(100, key="user"), budget(1000, key="global")
    s = backend.storage
    assert await s.reserve([tight, loose], 100) is None
    for _ in range(3):
        assert await s.reserve([tight, loose], 100) == pytest.approx(10.0)  # 100 per 1000 s
    # The refusals took nothing of the global budget: 100 spent, 900 left.
    assert await s.reserve([loose], 899) is None
    assert await s.reserve([loose], 1) is None
    assert await s.reserve([loose], 1) is not None


def test_the_estimate_counts_text_not_inline_bytes() -> None:
    data = "data:image/png;base64," + "A" * 4_000_000
    history = [
        {"role": "user", "content": [{"type": "input_text", "text": "x" * 400}]},
        {"role": "user", "content": [{"type": "input_image", "image_url": data}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "y" * 10_000_000}]},
    ]
    tokens = input_estimate(history, "Be brief.", attachment_bytes=3000)
    # 400 + 256 KiB (one item's text at most) + 3000 bytes sent + keys: about 67k tokens,
    # where json.dumps // 4 said 3.5M.
    assert 66_000 < tokens < 67_000


@dataclass
class FakeTurn:
    """The fields of TurnContext that turn_cost reads."""

    usage: list[tuple[int, int]] = field(default_factory=list)
    outcome: str = ""
    estimated_input: int = 0
    budget: TurnBudget | None = None
    route: str = "assistant"
    call_seconds: float = 0.0
    budget_refused: bool = False


@pytest.mark.parametrize(
    ("usage", "outcome", "charged"),
    [
        ([(90, 10)], "ok", 100),  # what OpenAI reported
        ([(90, 10), (40, 5)], "ok", 145),  # a tool's second model call included
        ([], "client_error", 0),  # a 400: OpenAI billed nothing
        ([], "rate_limited", 0),
        ([], "auth_failed", 0),
        ([], "model_not_found", 0),  # every fallback model refused too
        ([], "", 0),  # the model was never called
        ([], "cancelled", 700),  # the visitor left: the estimate
        ([], "timeout", 700),
        ([], "server_error", 700),
    ],
)
def test_what_a_turn_is_charged(usage: list[tuple[int, int]], outcome: str, charged: int) -> None:
    assert charge(FakeTurn(usage, outcome, estimated_input=700)) == charged


async def test_a_turn_that_finds_no_room_ends_before_the_model_is_called() -> None:
    clock = FakeClock()
    memory = MemoryBudgets(clock=clock)
    b = budget(1000)
    turns = [FakeTurn(estimated_input=600) for _ in range(2)]
    for turn in turns:  # both passed the check before either reserved
        turn.budget = TurnBudget(Budgets(memory), [b], max_output=0)
        assert await turn.budget.check() is None
    await reserve_turn(turns[0])
    await reserve_turn(turns[1])  # 600 < 1000: room
    third = FakeTurn(estimated_input=600, budget=TurnBudget(Budgets(memory), [b], 0))
    with pytest.raises(CustomStreamError) as ended:
        await reserve_turn(third)
    refused = [t.budget_refused for t in (*turns, third)]  # what settle_turn counts
    assert not ended.value.allow_retry and refused == [False, False, True]
    for turn in turns:  # OpenAI reported 100 each: the rest of the reservations refunded
        turn.usage, turn.outcome = [(90, 10)], "ok"
        assert turn.budget is not None
        assert await turn.budget.settle(turn) == 100
    assert await memory.reserve([b], 799) is None  # 200 + 799: room left for one more
