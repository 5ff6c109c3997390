"""Hostile sites (SPEC §9): every bad page is one failed page with its reason, the ingest
goes on, costs what the caps say, and the good pages are indexed (real SQLite index)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.agent.store_schema import open_engine
from gateway.knowledge.config import KnowledgeConfig
from gateway.knowledge.index import KnowledgeIndex
from gateway.knowledge.ingest import IngestReport, ingest
from gateway.knowledge.sql_index import open_index

GOOD = (
    "<html><head><title>Good page</title></head>"
    "<body><main><h1>Good</h1><p>{}</p></main></body></html>"
)
CAP = 1 << 20


class Hostile:
    """One server on 127.0.0.1 with every kind of bad page, and a robots.txt to set."""

    def __init__(self) -> None:
        self.robots = "User-agent: *\nAllow: /\n"
        self.url = ""
        self.endless = 0  # pages of the endless crawl served
        self._runner: web.AppRunner | None = None

    def sitemap(self, *paths: str) -> str:
        urls = "".join(f"<url><loc>{self.url}{p}</loc></url>" for p in paths)
        return f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        html = "text/html"
        if path == "/robots.txt":
            return web.Response(text=self.robots)
        if path == "/good.html":
            return web.Response(text=GOOD.format("The okapi grazes quietly."), content_type=html)
        if path == "/map.xml":
            return web.Response(
                text=self.sitemap(*request.query.getall("p")), content_type="text/xml"
            )
        if path == "/notxml.xml":
            return web.Response(text="<html>this is not a sitemap", content_type="text/xml")
        if path == "/huge.html":  # no Content-Length: the cap counts what arrives
            resp = web.StreamResponse(headers={"Content-Type": html})
            await resp.prepare(request)
            for _ in range(10 * 1024):
                await resp.write(b"<p>" + b"x" * 1020 + b"</p>")
            return resp
        if path == "/deep.html":
            body = "<div>" * 50_000 + "<p>The narwhal dives deep.</p>" + "</div>" * 50_000
            return web.Response(text=GOOD.format(body), content_type=html)
        if path.startswith("/endless/"):
            self.endless += 1
            n = int(path.rsplit("/", 1)[1].split(".")[0])
            links = "".join(f'<a href="{n + k}.html?session={n}">next</a>' for k in (1, 2))
            return web.Response(text=GOOD.format(f"Page {n} {links}"), content_type=html)
        if path in ("/loop1", "/loop2"):
            raise web.HTTPFound("/loop2" if path == "/loop1" else "/loop1")
        if path == "/away":
            raise web.HTTPFound(self.url.replace("127.0.0.1", "localhost") + "/good.html")
        if path == "/slow.html":
            await asyncio.sleep(30)
        if path == "/paper.pdf":
            return web.Response(body=b"%PDF-1.7 ...", content_type="application/pdf")
        if path == "/bad.html":
            return web.Response(
                body=b"\xff\xfe\xfa\xc3\x28 broken", content_type=html, charset="utf-8"
            )
        raise web.HTTPNotFound()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def site() -> AsyncIterator[Hostile]:
    s = Hostile()
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[KnowledgeIndex]:
    engine = open_engine(f"sqlite:///{tmp_path / 'k.db'}", timeout=5, pool_size=1)
    try:
        yield await open_index(engine)
    finally:
        await engine.dispose()


Run = Callable[..., Awaitable[IngestReport]]


@pytest.fixture
def run(index: KnowledgeIndex) -> Run:
    async def go(sources: list[dict[str, Any]], **kw: Any) -> IngestReport:
        config = KnowledgeConfig(
            **{"sources": sources, "max_page_bytes": CAP, "timeout_seconds": 1, **kw}
        )
        return await ingest("r", config, index)

    return go


async def urls(index: KnowledgeIndex, query: str) -> list[str]:
    return [hit.url for hit in await index.search("r", query, 8)]


async def test_bad_pages_fail_one_by_one(site: Hostile, run: Run, index: KnowledgeIndex) -> None:
    paths = ("/good.html", "/huge.html", "/deep.html", "/loop1", "/away", "/slow.html",
             "/paper.pdf", "/bad.html")  # fmt: skip
    query = "&".join(f"p={p}" for p in paths)
    report = await run([{"sitemap": f"{site.url}/map.xml?{query}"}])
    assert dict(report.reasons) == {
        f"larger than {CAP} bytes": 1,
        "more than 5 redirects": 1,
        "redirect to another host": 1,
        "timed out": 1,
        "not HTML or text": 1,
        "undecodable text": 1,
    }
    assert (report.added, report.failed, report.committed) == (2, 6, True)
    assert await urls(index, "okapi") == [f"{site.url}/good.html"]
    assert await urls(index, "narwhal") == [f"{site.url}/deep.html"]  # 50,000 levels deep


async def test_endless_links_stop_at_max_pages(site: Hostile, run: Run) -> None:
    report = await run([{"crawl": f"{site.url}/endless/1.html", "max_pages": 25}])
    assert (report.added, report.failed) == (25, 0)
    assert site.endless == 25  # query strings dropped: ?session= variants are one page


async def test_robots_disallowing_everything(site: Hostile, run: Run) -> None:
    site.robots = "User-agent: *\nDisallow: /\n"
    report = await run([{"sitemap": f"{site.url}/map.xml?p=/good.html"}])
    assert (report.fetched, report.failed, report.committed) == (0, 1, False)
    assert dict(report.reasons) == {"disallowed by robots.txt": 1}
    site.robots = "User-agent: chatkit-gateway\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    report = await run([{"sitemap": f"{site.url}/map.xml?p=/good.html"}])
    assert (report.fetched, report.committed) == (0, False)


async def test_a_sitemap_that_is_not_xml_beside_a_good_one(
    site: Hostile, run: Run, index: KnowledgeIndex
) -> None:
    report = await run(
        [{"sitemap": f"{site.url}/notxml.xml"}, {"sitemap": f"{site.url}/map.xml?p=/good.html"}]
    )
    assert (report.added, report.failed, report.committed) == (1, 1, True)
    assert [r for r, _ in report.reasons] == ["source"]
    assert await urls(index, "okapi") == [f"{site.url}/good.html"]


async def test_a_local_folder_stays_inside_itself(
    tmp_path: Path, run: Run, index: KnowledgeIndex
) -> None:
    site = tmp_path / "site"
    (site / "guide").mkdir(parents=True)
    (site / "guide" / "install.md").write_text("# Installing\n\nThe wombat installs it.\n")
    (site / "notes.txt").write_text("The quokka smiles.\n")
    (site / "index.html").write_text(GOOD.format("The okapi grazes quietly."))
    (site / "logo.png").write_bytes(b"\x89PNG")
    secret = tmp_path / "secret.txt"
    secret.write_text("The pangolin password.\n")
    (site / "leak.txt").symlink_to(secret)
    source = {"path": str(site), "base_url": "https://example.org/"}
    report = await run([source])
    assert (report.added, report.failed) == (3, 0)
    assert await urls(index, "wombat") == ["https://example.org/guide/install.md"]
    assert not await urls(index, "pangolin")
    report = await run([source])
    assert (report.added, report.unchanged) == (0, 3)
    # A newer file with the same text: read again, not re-indexed; a changed one is.
    (site / "notes.txt").write_text("The quokka smiles.\n")
    (site / "index.html").write_text(GOOD.format("The okapi sleeps now."))
    report = await run([source])
    assert (report.added, report.changed, report.unchanged) == (0, 1, 2)
    assert await urls(index, "sleeps") == ["https://example.org/index.html"]
