"""How the Redis limiter talks to Redis: batched script calls, and a fair timeout.

Two problems of an asyncio client on a busy pod, both measured (docs/DESIGN.md, "Limits shared
across replicas"):
- one command per request costs a write, a read and several event-loop turns each, which
  is most of the Redis backend's CPU; `Batches` shares them between waiting requests;
- a plain `asyncio.timeout` counts time the event loop spent on *other* requests, so a
  pod at 100% CPU "times out" on a healthy Redis and drops to per-pod limits;
  `Patience` only gives up on time Redis is to blame for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from .base import BackendUnavailable

MAX_IN_FLIGHT = 2  # pipelines out at once; later requests gather for the next one
BUSY = 0.5  # share of the wait this process spent on the CPU: it, not Redis, was slow

Job = tuple[list[str], list[str], "asyncio.Future[list[bytes]]"]


class Batches:
    """Sends the script calls of waiting requests together, as one pipeline.

    Each request still has its own EVALSHA (its own all-or-nothing decision) and waits
    for one round trip at most; but while `MAX_IN_FLIGHT` pipelines are out, newcomers
    gather for the next, so under load one write and one read serve many requests. A
    lone request is a batch of one and leaves in the same event-loop turn.
    """

    __slots__ = (
        "_client",
        "_closed",
        "_pending",
        "_scheduled",
        "_script",
        "_tasks",
        "_timeout",
        "replied_at",
    )

    def __init__(self, client: Redis, script: str, timeout: float) -> None:
        self._client = client
        self._script = client.register_script(script)  # its sha, and its text for NOSCRIPT
        self._timeout = timeout
        self._pending: list[Job] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = self._closed = False
        self.replied_at = -1e9  # loop time of Redis's last answer

    def submit(self, keys: list[str], args: list[str]) -> asyncio.Future[list[bytes]]:
        future: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()
        self._pending.append((keys, args, future))
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed and len(self._tasks) < MAX_IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch = [job for job in self._pending if not job[2].done()]  # skip the given-up
        self._pending = []
        if batch:
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending:
            self._schedule()

    async def _send(self, batch: list[Job]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                results = await self._pipeline(batch)
                missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
                if missing:  # Redis restarted or flushed its scripts: load once, rerun those
                    self._script.sha = await self._client.script_load(self._script.script)
                    again = await self._pipeline([batch[i] for i in missing])
                    for i, result in zip(missing, again, strict=True):
                        results[i] = result
            self.replied_at = asyncio.get_running_loop().time()
        except asyncio.CancelledError:  # closing
            _settle(batch, [BackendUnavailable("closed")] * len(batch))
            raise
        except Exception as exc:
            results = [exc] * len(batch)
        _settle(batch, results)

    async def _pipeline(self, batch: list[Job]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        self._closed = True
        _settle(self._pending, [BackendUnavailable("closed")] * len(self._pending))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _settle(batch: list[Job], results: list[Any]) -> None:
    for (_, _, future), result in zip(batch, results, strict=True):
        if not future.done():  # a waiter that timed out or went away is done already
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class Patience:
    """Ends a wait on Redis `timeout` seconds after it began, unless we were the slow ones.

    At the deadline the wait gets another `timeout` if the event loop noticed the
    deadline late (the process was stalled or CPU-throttled), or if this process was on
    the CPU for most of the wait while Redis kept answering (a saturated pod). Never
    beyond `limit` in all. A paused or dead Redis answers nothing, so its waits end on
    time and the circuit breaker hears of them.
    """

    __slots__ = (
        "_cpu0",
        "_deadline",
        "_due",
        "_handle",
        "_limit",
        "_loop",
        "_replied",
        "_t0",
        "_timeout",
    )

    def __init__(
        self,
        deadline: asyncio.Timeout,
        timeout: float,
        limit: float,
        replied_at: Callable[[], float],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline, self._timeout, self._replied = deadline, timeout, replied_at
        self._t0, self._cpu0 = self._loop.time(), time.process_time()
        self._limit = self._t0 + limit
        self._due = self._t0 + timeout
        self._handle = self._loop.call_at(self._due, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        stalled = now - self._due > self._timeout / 2
        busy = (time.process_time() - self._cpu0) / max(now - self._t0, 1e-6) > BUSY
        answering = self._replied() > now - self._timeout
        if (stalled or (busy and answering)) and now + self._timeout <= self._limit:
            self._due = now + self._timeout
            self._handle = self._loop.call_at(self._due, self._check)
        else:
            self._deadline.reschedule(now)  # expires at once: TimeoutError in the waiter

    def cancel(self) -> None:
        self._handle.cancel()
