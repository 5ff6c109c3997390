"""`serve` keeps a route's knowledge current (SPEC §9): refreshes, gauges, failures, replicas.

A real gateway app with a `chatkit_agent` route whose `knowledge` is a small site served on
loopback by aiohttp (a sitemap, pages with ETags), its index in a real SQLite or PostgreSQL
store. The wall clock the refresher schedules by is moved forward instead of waiting a
`refresh` period, and the poll runs every few hundredths of a second instead of 30 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.agent.runtime import AGENTS
from gateway.app import create_app
from gateway.compiled_policy import ACTIVE_POLICY
from gateway.knowledge import refresh
from gateway.metrics import Metrics
from gateway.reload import apply_policy
from tests.support.agent_client import agent_policy, create, headers
from tests.support.postgres_server import PostgresServer, running_postgres
from tests.support.processes import ROOT, base_env, free_port
from tests.test_readme import readme_command

ROUTE = "assistant"
Client = TestClient[web.Request, web.Application]


class Site:
    """A small documentation site: a sitemap of HTML pages with ETags, on 127.0.0.1."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, str]] = {}  # path → (title, paragraph)
        self.requests: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None  # when set: the sitemap waits for it
        self.url = ""
        self._runner: web.AppRunner | None = None

    def page(self, path: str, title: str, text: str) -> None:
        self.pages[path] = (title, text)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if path == "/robots.txt":
            return web.Response(text="User-agent: *\nAllow: /\n")
        if path == "/docs/sitemap.xml":
            if self.gate is not None:
                await self.gate.wait()
            locs = "".join(f"<url><loc>{self.url}{p}</loc></url>" for p in sorted(self.pages))
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>'
            )
            return web.Response(text=body, content_type="application/xml")
        if path not in self.pages:
            raise web.HTTPNotFound()
        title, text = self.pages[path]
        html = (
            f"<!doctype html><html><head><title>{title}</title></head><body>"
            "<nav><a href='/docs/'>Home</a></nav>"
            f"<main><h1>{title}</h1><p>{text}</p><p>{text}</p></main>"
            "<footer>Example footer</footer></body></html>"
        )
        etag = '"' + hashlib.sha256(html.encode()).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=html, content_type="text/html", headers={"ETag": etag})


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site()
    s.page("/docs/install.html", "Installing Frobnicator", "Install the zebrafish package.")
    s.page("/docs/usage.html", "Using Frobnicator", "Call the capybara command daily.")
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


class Clock:
    """The refresher's wall clock, moved forward by the test (the index stamps real time)."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(refresh, "_now", c)
    monkeypatch.setattr(refresh, "POLL_SECONDS", 0.05)
    return c


def knowledge(site: Site, **extra: Any) -> dict[str, Any]:
    return {"sources": [{"sitemap": f"{site.url}/docs/sitemap.xml"}], **extra}


def policy(store_url: str, block: dict[str, Any] | None) -> Any:
    extra: dict[str, Any] = {} if block is None else {"knowledge": block}
    return agent_policy(store_url, stub=True, **extra)


@pytest.fixture
async def start_app() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def start(store_url: str, block: dict[str, Any] | None) -> Client:
        app = create_app(policy(store_url, block), metrics=Metrics())
        client: Client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def metric(client: Client, name: str, route: str = ROUTE) -> float | None:
    """The sample `name{route=…}` of the app's /metrics, None when absent."""
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("route") == route:
                return float(sample.value)
    return None


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def pages_are(client: Client, n: int) -> None:
    async def check() -> bool:
        return await metric(client, "chatkit_gateway_knowledge_pages") == n

    await until(check, f"{n} pages in the index")


async def search(client: Client, query: str) -> list[str]:
    """What the route's search tool finds: the index the gateway serves, searched."""
    runtime = client.app[AGENTS]
    routes = client.app[ACTIVE_POLICY].current.policy.routes
    agent_route: Any = next(r for r in routes if r.name == ROUTE)
    index = await runtime.index_for(await runtime.store_for(agent_route))
    return [hit.url for hit in await index.search(ROUTE, query, 8)]


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'threads.db'}"


# --------------------------------------------------------------------------- one replica


async def test_refresh_indexes_the_site_then_follows_changes_and_removals(
    site: Site, clock: Clock, start_app: Any, tmp_path: Path
) -> None:
    before = time.time()
    client = await start_app(sqlite(tmp_path), knowledge(site, refresh="1h"))
    await pages_are(client, 2)
    last = await metric(client, "chatkit_gateway_knowledge_last_ingest_timestamp_seconds")
    assert last is not None and before - 1 <= last <= time.time() + 1
    assert await metric(client, "chatkit_gateway_knowledge_refresh_seconds") == 3600
    assert await metric(client, "chatkit_gateway_knowledge_ingest_errors_total") == 0
    assert await search(client, "zebrafish") == [f"{site.url}/docs/install.html"]
    fetched = site.requests["/docs/install.html"]

    # Not due again before the period: polls go on, nothing is fetched.
    await asyncio.sleep(0.3)
    assert site.requests["/docs/install.html"] == fetched

    # The site changes: a page's text, a page removed. After `refresh`, both show.
    site.page("/docs/install.html", "Installing Frobnicator", "Install the quokka package.")
    del site.pages["/docs/usage.html"]
    clock.shift += 3600
    await pages_are(client, 1)
    assert await search(client, "quokka") == [f"{site.url}/docs/install.html"]
    assert await search(client, "zebrafish") == []
    assert await search(client, "capybara") == []
    later = await metric(client, "chatkit_gateway_knowledge_last_ingest_timestamp_seconds")
    assert later is not None and later >= last
    assert await metric(client, "chatkit_gateway_knowledge_ingest_errors_total") == 0


async def test_a_failing_source_is_logged_counted_and_retried_never_fatal(
    site: Site, clock: Clock, start_app: Any, tmp_path: Path, json_logs: Any
) -> None:
    await site.stop()  # nothing answers at the sitemap's address
    client = await start_app(sqlite(tmp_path), knowledge(site, refresh="1h"))

    async def counted() -> bool:
        return (await metric(client, "chatkit_gateway_knowledge_ingest_errors_total") or 0) >= 1

    await until(counted, "the failed refresh counted")
    assert await metric(client, "chatkit_gateway_knowledge_pages") == 0
    last = await metric(client, "chatkit_gateway_knowledge_last_ingest_timestamp_seconds")
    assert last == 0  # never ingested
    lines = [line for line in json_logs.lines if "knowledge refresh of route assistant" in line]
    assert lines, json_logs.lines

    # The gateway goes on serving: its health, and a chat on the same route.
    async with client.get("/healthz") as resp:
        assert resp.status == 200
    async with client.post("/chatkit/assistant", json=create("hello"), headers=headers()) as resp:
        assert resp.status == 200
        await resp.read()

    # Not retried at once; after the retry delay, it is (and counted again).
    errors = await metric(client, "chatkit_gateway_knowledge_ingest_errors_total")
    await asyncio.sleep(0.3)
    assert await metric(client, "chatkit_gateway_knowledge_ingest_errors_total") == errors
    clock.shift += refresh.RETRY_SECONDS

    async def again() -> bool:
        now = await metric(client, "chatkit_gateway_knowledge_ingest_errors_total")
        return now is not None and errors is not None and now > errors

    await until(again, "the retry counted")


async def test_a_route_without_refresh_is_never_ingested_by_serve_but_its_gauges_follow(
    site: Site, clock: Clock, start_app: Any, tmp_path: Path
) -> None:
    """The gauges follow an ingest made elsewhere (the CLI, another replica)."""
    from gateway.agent.store import open_engine
    from gateway.knowledge.ingest import ingest
    from gateway.knowledge.sql_index import open_index

    client = await start_app(sqlite(tmp_path), knowledge(site))
    await pages_are(client, 0)
    assert await metric(client, "chatkit_gateway_knowledge_refresh_seconds") is None
    assert await metric(client, "chatkit_gateway_knowledge_last_ingest_timestamp_seconds") == 0

    engine = open_engine(sqlite(tmp_path), timeout=5, pool_size=1)
    try:
        compiled = policy(sqlite(tmp_path), knowledge(site))
        config = next(r for r in compiled.routes if r.name == ROUTE).knowledge
        report = await ingest(ROUTE, config, await open_index(engine))
        assert (report.added, report.failed) == (2, 0)
    finally:
        await engine.dispose()
    await pages_are(client, 2)
    clock.shift += 10 * 86400
    await asyncio.sleep(0.3)
    assert site.requests["/docs/sitemap.xml"] == 1  # the ingest above, never serve

    # `refresh` added by a reload: the index is fresh, so the next ingest is at the last
    # one + refresh, not at once.
    clock.shift = 0
    apply_policy(client.app, policy(sqlite(tmp_path), knowledge(site, refresh="1h")))
    await asyncio.sleep(0.3)
    assert site.requests["/docs/sitemap.xml"] == 1
    clock.shift += 3600

    async def refreshed() -> bool:
        return site.requests["/docs/sitemap.xml"] == 2

    await until(refreshed, "serve's refresh an hour after the CLI's ingest")


async def test_a_reload_adds_changes_and_removes_a_routes_knowledge(
    site: Site, clock: Clock, start_app: Any, tmp_path: Path
) -> None:
    client = await start_app(sqlite(tmp_path), None)
    await asyncio.sleep(0.2)
    assert await metric(client, "chatkit_gateway_knowledge_pages") is None

    apply_policy(client.app, policy(sqlite(tmp_path), knowledge(site, refresh="1d")))
    await pages_are(client, 2)
    assert await metric(client, "chatkit_gateway_knowledge_refresh_seconds") == 86400

    # New sources: ingested at once, not a day later.
    other = Site()
    other.page("/docs/faq.html", "Frobnicator FAQ", "Ask the wombat.")
    await other.start()
    try:
        apply_policy(client.app, policy(sqlite(tmp_path), knowledge(other, refresh="1d")))
        await pages_are(client, 1)
        assert await search(client, "wombat") == [f"{other.url}/docs/faq.html"]
    finally:
        await other.stop()

    apply_policy(client.app, policy(sqlite(tmp_path), None))

    async def gone() -> bool:
        names = ("pages", "last_ingest_timestamp_seconds", "refresh_seconds")
        values = [await metric(client, f"chatkit_gateway_knowledge_{n}") for n in names]
        return values == [None, None, None]

    await until(gone, "the route's knowledge series removed")


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


async def test_two_replicas_on_one_postgresql_refresh_one_at_a_time(
    site: Site, clock: Clock, start_app: Any, pg: PostgresServer, json_logs: Any
) -> None:
    url = pg.new_database()
    site.gate = asyncio.Event()  # the first ingest waits at the sitemap
    first = await start_app(url, knowledge(site, refresh="1h"))

    async def started() -> bool:
        return site.requests["/docs/sitemap.xml"] == 1

    await until(started, "an ingest started")
    second = await start_app(url, knowledge(site, refresh="1h"))

    async def told() -> bool:
        return any("another replica is at it" in line for line in json_logs.lines)

    await until(told, "the second replica finds the lock taken")
    assert site.requests["/docs/sitemap.xml"] == 1
    site.gate.set()
    await pages_are(first, 2)
    await pages_are(second, 2)  # its gauges follow the other replica's ingest
    await asyncio.sleep(0.3)
    assert site.requests["/docs/sitemap.xml"] == 1  # and it does not ingest again
    for client in (first, second):
        assert await metric(client, "chatkit_gateway_knowledge_ingest_errors_total") == 0


async def test_a_stopped_store_is_logged_and_counted_and_the_gateway_serves_on(
    site: Site, clock: Clock, start_app: Any, pg: PostgresServer, json_logs: Any
) -> None:
    url = pg.new_database()
    client = await start_app(url, knowledge(site, refresh="1h"))
    await pages_are(client, 2)
    pg.stop()
    try:
        clock.shift += 3600

        async def counted() -> bool:
            return (await metric(client, "chatkit_gateway_knowledge_ingest_errors_total")) == 1

        await until(counted, "the refresh on a stopped store counted")
        async with client.get("/healthz") as resp:
            assert resp.status == 200
        failed = [line for line in json_logs.lines if "knowledge refresh of route" in line]
        assert failed and all(pg.password not in line for line in json_logs.lines)
        assert await metric(client, "chatkit_gateway_knowledge_pages") == 2  # the last known
    finally:
        pg.start()
    clock.shift += refresh.RETRY_SECONDS
    site.page("/docs/faq.html", "Frobnicator FAQ", "Ask the wombat.")
    await pages_are(client, 3)  # back without a restart


# --------------------------------------------------------------------------- the README


INGEST = ".venv/bin/chatkit-gateway ingest --config gateway.yaml"
SUMMARY = re.compile(
    r"^ingest assistant: (\d+) pages \((\d+) added, 0 changed, 0 removed, (\d+) unchanged, "
    r"0 failed\) in \d+\.\d s$"
)


async def test_readme_ingest_command_on_make_runs_policy(tmp_path: Path) -> None:
    """The README's `chatkit-gateway ingest`, on gateway.yaml's demo route: this project's
    docs, served by demo/serve.py as `make run` starts it (on a free port)."""
    spec = importlib.util.spec_from_file_location("demo_serve", ROOT / "demo" / "serve.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    repo = tmp_path / "repo"  # a copy: the docs do not change between the two runs
    for name in demo.documents():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    server = TestServer(demo.make_app(repo=repo), host="127.0.0.1", port=free_port())
    await server.start_server()
    command = readme_command(INGEST)
    env = base_env(
        DEMO_PORT=str(server.port),
        CHATKIT_STORE_URL=sqlite(tmp_path),
        OPENAI_API_KEY="sk-readme-not-used-0123456789",  # the policy wants one; ingest never calls
    )
    outputs = []
    try:
        for _ in range(2):
            proc = await asyncio.create_subprocess_exec(
                "bash", "-c", command.text, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()
            outputs.append(out.decode().strip())
    finally:
        await server.close()
    first, again = (SUMMARY.match(o) for o in outputs)
    assert first and again, outputs
    docs = len(demo.documents(repo))
    assert (int(first[1]), int(first[2]), int(first[3])) == (docs, docs, 0)  # README, docs/…
    assert (int(again[1]), int(again[2]), int(again[3])) == (docs, 0, docs)  # 304s
