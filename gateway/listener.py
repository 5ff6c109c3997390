"""The TCP listeners `serve` runs: aiohttp's server, one guarded handler per connection.

`ConnectionGuard` is a listener's protocol factory: it makes each connection's
`GuardedRequestHandler` (http_protocol.py, with the policy's `server:` limits in force
when the connection opens) and keeps the books of the connection caps — which connections
are open, from which peer address, and which of them are idle, longest idle first, to be
evicted at a cap:

- `server.max_connections_per_client`: a peer address at its cap makes room by closing
  its own longest-idle connection; with every one of them busy, the new connection gets
  `503 unavailable` and is closed (`connections_closed_total{reason="refused_per_client"}`).
  The peer is the TCP peer: behind a proxy, every client is the proxy's address.
- `server.max_connections`: then the listener's cap, the same way, across all peers
  (`reason="evicted"`, `reason="refused"`).

So one address cannot take every connection of the listener, and with `server.ops_port`
the operations endpoints have a listener, and books, of their own (`serve` in cli.py).
The handler sees the guard only through http_protocol's `Guard` protocol, so the import
goes one way: this module → http_protocol.
"""

# GuardedSite is a web.BaseSite that listens through a ConnectionGuard instead of the
# runner's web.Server, as aiohttp's TCPSite does. It keeps its own state (runner, backlog,
# asyncio server, which its stop closes) rather than BaseSite's private slots; the one
# private seam left is the guard's, http_protocol.AIOHTTP_PRIVATE, checked in start: with
# a name missing, each connection gets aiohttp's own handler (web.Server's), and the
# caps and deadlines are off — said in the log and chatkit_gateway_slow_client_guard.
#
# Covered by real TCP listeners: tests/test_hostile.py's stack (`serving`) listens through
# open_listener on port 0 and connects to `site.port`; tests/test_lifecycle.py's
# test_listener_closes_after_the_grace checks that a real `serve` stops listening, and
# test_sigterm_during_a_slow_upstream_call_still_answers_it that runner.cleanup() still
# drains the guarded connections (they register with web.Server through
# RequestHandler.connection_made). The handler factory bypasses web.Server.__call__, so
# the app's handler_args reach a connection only where RequestHandler reads them from its
# manager (handler_cancellation); its own settings come from the policy, in
# GuardedRequestHandler. The names in GuardedSite.__slots__ are this class's own.

from __future__ import annotations

import asyncio
import logging
import os
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
        metrics: Metrics | None = None,
        new_id: Callable[[], str] = lambda: os.urandom(16).hex(),
        guarded: bool = True,
    ) -> None:
        self.server = server
        self.guarded = guarded  # False: aiohttp's own handler (module comment)
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

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def count(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.connections_closed.labels(reason).inc()

    def admit(self, conn: GuardedRequestHandler, peer: str, config: ServerConfig) -> str | None:
        """Take the connection on, making room by evicting an idle one if need be: first
        at the peer's own cap (one of its idle connections), then at the listener's (the
        longest idle of all). None when admitted, else the refusal's reason."""
        books = self._peers.get(peer)
        if books is not None and books.open >= config.max_connections_per_client:
            victim = next(iter(books.idle), None)
            if victim is None:
                self.count(REFUSED_PER_CLIENT)
                return REFUSED_PER_CLIENT
            self._evict(victim)
        if len(self._open) >= config.max_connections:
            victim = next(iter(self._idle), None)
            if victim is None:
                self.count(REFUSED)
                return REFUSED
            self._evict(victim)
        books = self._peers.get(peer)
        if books is None:
            books = self._peers[peer] = _Peer()
        books.open += 1
        books.idle[conn] = None
        self._open[conn] = peer
        self._idle[conn] = None
        if self.metrics is not None:
            self.metrics.open_connections.inc()
        return None

    def _evict(self, victim: GuardedRequestHandler) -> None:
        self.release(victim)
        victim.force_close()
        self.count("evicted")

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
        if self.metrics is not None:
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
