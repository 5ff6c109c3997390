"""A background poll that lives as long as the app: one loop for the model watch, the
knowledge refresh and the like, so a bug in one poll is logged and the next one runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def polling(
    name: str,
    poll: Callable[[], Awaitable[None]],
    every: Callable[[], float],
    log: logging.Logger,
    *,
    wait_first: bool = False,
) -> AsyncIterator[None]:
    """Runs `poll` now (or after one period, `wait_first`) and then every `every()` seconds
    until the block ends; an exception is logged by its type alone (no message: it may carry
    a URL or a secret)."""

    async def loop() -> None:
        if wait_first:
            await asyncio.sleep(every())
        while True:
            try:
                await poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s failed: %s", name, type(exc).__name__)
            await asyncio.sleep(every())

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
