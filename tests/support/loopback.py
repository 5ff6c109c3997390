"""What the fake upstreams share: a server on an ephemeral loopback port, its lifecycle,
and sleeps that `close()` cuts short (so a test that left a slow request behind never
makes close() wait for it)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar, Self

from aiohttp import web


class LoopbackServer:
    shutdown_timeout: ClassVar[float] = 2.0
    handler_cancellation: ClassVar[bool] = False  # True: a client gone cancels its handler

    def __init__(self, host: str) -> None:
        self.host = host
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = asyncio.Event()

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Bind an ephemeral port so parallel tests never collide."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        self._closing.clear()
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self.shutdown_timeout,
            handler_cancellation=self.handler_cancellation,
        )
        await runner.setup()
        await web.TCPSite(runner, self.host, 0).start()
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()  # wake handlers that sleep or hang
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner = None
        self._port = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)
