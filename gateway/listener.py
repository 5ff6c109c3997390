"""The TCP listeners `serve` runs: aiohttp's server, one guarded handler per connection.

`ConnectionGuard` is a listener's protocol factory: it makes each connection's
`GuardedRequestHandler` (http_protocol.py, with the `server:` limits in force when the
connection opens) and keeps the books of the connection caps: the open connections by
peer address, and the idle ones, longest idle first, evicted at a cap (the rules:
docs/DESIGN.md, "Slow and greedy clients").
"""

# GuardedSite is a web.BaseSite that listens through a ConnectionGuard instead of the
# runner's web.Server, keeping its own runner, backlog and asyncio server rather than
# BaseSite's private slots. The handler factory bypasses web.Server.__call__, so the app's
# handler_args reach a connection only where RequestHandler reads them from its manager
# (handler_cancellation); its own settings come from the policy.

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import __version__ as aiohttp_version
from aiohttp import web
from yarl import URL

from .compiled_policy import ACTIVE_POLICY
from .http_protocol import GuardedRequestHandler, missing_internals
from .metrics import METRICS, Metrics
from .policy import ServerConfig
from .request_context import REQUEST_IDS
from .tls import ListenerTls

log = logging.getLogger("gateway.server")

# Reasons in chatkit_gateway_connections_closed_total: at the listener's cap with every
# connection busy, and at one peer's cap with each of its connections busy.
REFUSED = "refused"
REFUSED_PER_CLIENT = "refused_per_client"


@dataclass(slots=True)
class _Peer:
    """One peer address's books: its open connections, and the idle ones among them."""

    open: int = 0
    idle: dict[GuardedRequestHandler, None] = field(default_factory=dict)


class ConnectionGuard:
    """The listener's protocol factory: one GuardedRequestHandler per connection, and the
    books of the caps: every open connection with its peer, and the idle ones, overall and
    per peer, each ordered by when the connection became idle (longest idle first)."""

    def __init__(
        self,
        server: web.Server,
        config: Callable[[], ServerConfig],
        *,
        metrics: Metrics,
        new_id: Callable[[], str],
        guarded: bool,
    ) -> None:
        self.server = server
        self.guarded = guarded  # False: aiohttp's own handler (aiohttp lacks a name)
        self.config = config
        self.metrics = metrics
        self.new_id = new_id
        self._open: dict[GuardedRequestHandler, str] = {}  # → its peer
        self._idle: dict[GuardedRequestHandler, None] = {}
        self._peers: dict[str, _Peer] = {}

    def __call__(self) -> web.RequestHandler:
        if not self.guarded:
            return self.server()
        return GuardedRequestHandler(self, self.config())

    def count(self, reason: str) -> None:
        self.metrics.connections_closed.labels(reason).inc()

    def admit(self, conn: GuardedRequestHandler, peer: str, config: ServerConfig) -> str | None:
        """Take the connection on, making room by evicting an idle one if need be: first
        at the peer's own cap (one of its idle connections), then at the listener's (the
        longest idle of all). None when admitted, else the refusal's reason."""
        books = self._peers.get(peer)
        if (
            books is not None
            and books.open >= config.max_connections_per_client
            and not self._make_room(books.idle, REFUSED_PER_CLIENT)
        ):
            return REFUSED_PER_CLIENT
        if len(self._open) >= config.max_connections and not self._make_room(self._idle, REFUSED):
            return REFUSED
        books = self._peers.get(peer)
        if books is None:
            books = self._peers[peer] = _Peer()
        books.open += 1
        books.idle[conn] = None
        self._open[conn] = peer
        self._idle[conn] = None
        self.metrics.open_connections.inc()
        return None

    def _make_room(self, idle: dict[GuardedRequestHandler, None], refusal: str) -> bool:
        """Close the longest idle of `idle`; with none idle, count the refusal instead."""
        victim = next(iter(idle), None)
        if victim is None:
            self.count(refusal)
            return False
        self.release(victim)
        victim.force_close()
        self.count("evicted")
        return True

    def release(self, conn: GuardedRequestHandler) -> None:
        peer = self._open.pop(conn, None)
        if peer is None:
            return
        self._idle.pop(conn, None)
        books = self._peers[peer]
        books.idle.pop(conn, None)
        books.open -= 1
        if not books.open:
            del self._peers[peer]
        self.metrics.open_connections.dec()

    def set_idle(self, conn: GuardedRequestHandler, idle: bool) -> None:
        peer = self._open.get(conn)
        if peer is None:
            return
        books = self._peers[peer]
        self._idle.pop(conn, None)
        books.idle.pop(conn, None)
        if idle:  # to the end: idle since now
            self._idle[conn] = None
            books.idle[conn] = None


class GuardedSite(web.BaseSite):
    """A TCP listener like aiohttp's TCPSite, for a gateway app, through a ConnectionGuard."""

    __slots__ = (
        "_app", "_host", "_listening", "_port", "_site_backlog", "_site_runner", "_tls_watch",
        "guard", "tls", "use_tls",
    )  # fmt: skip

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        backlog: int = 128,
        use_tls: bool = False,
    ):
        super().__init__(runner, backlog=backlog)
        self._site_runner = runner
        self._site_backlog = backlog
        self._listening: asyncio.AbstractServer | None = None
        self._app = runner.app
        self._host = host
        self._port = port
        self.guard: ConnectionGuard | None = None
        # HTTPS when asked and the policy has server.tls (then for as long as it runs:
        # a reload can change the files, not turn TLS on or off).
        self.use_tls = use_tls
        self.tls: ListenerTls | None = None
        self._tls_watch: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        sockets: Any = getattr(self._listening, "sockets", None)
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    @property
    def name(self) -> str:
        scheme = "http" if self.tls is None else "https"
        return str(URL.build(scheme=scheme, host=self._host, port=self.port))

    async def start(self) -> None:
        await super().start()
        server = self._site_runner.server
        assert server is not None
        app = self._app
        compiled = app[ACTIVE_POLICY]
        self.guard = ConnectionGuard(
            server,
            lambda: compiled.current.policy.server,
            metrics=app[METRICS],
            new_id=app[REQUEST_IDS],
            guarded=_guard_state(app[METRICS]),
        )
        loop = asyncio.get_running_loop()
        tls_files = compiled.current.policy.server.tls if self.use_tls else None
        if tls_files is not None:
            self.tls = ListenerTls(tls_files)
            self._tls_watch = asyncio.create_task(
                self.tls.watch(lambda: compiled.current.policy.server.tls)
            )
        self._listening = await loop.create_server(
            self.guard,
            self._host,
            self._port,
            backlog=self._site_backlog,
            reuse_address=True,
            ssl=None if self.tls is None else self.tls.context,
        )

    async def stop(self) -> None:
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self._listening is not None:
            self._listening.close()
        await super().stop()


def _guard_state(metrics: Metrics) -> bool:
    """Whether this aiohttp has every private name the slow-client guard reads; if not,
    say so loudly (a log error, chatkit_gateway_slow_client_guard{state="disabled"})."""
    missing = missing_internals()
    metrics.slow_client_guard.labels("active").set(0 if missing else 1)
    metrics.slow_client_guard.labels("disabled").set(1 if missing else 0)
    if missing:
        log.error(
            "slow-client guard disabled: aiohttp internals changed; serving with aiohttp's "
            "own limits (no header/body deadlines, no connection caps)",
            extra={"detail": f"aiohttp {aiohttp_version} lacks {', '.join(missing)}"},
        )
    return not missing


async def open_listener(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float,
    use_tls: bool = False,
) -> tuple[web.AppRunner, GuardedSite]:
    """The runner and guarded listener `serve` runs the app with (tests start the very
    same stack in-process), with `use_tls` HTTPS when the policy has server.tls. OSError
    when the address cannot be bound, runner cleaned up."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, use_tls=use_tls)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, site
