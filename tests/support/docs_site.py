"""Real documentation no one here wrote, served on 127.0.0.1 as a site would serve it.

Debian's postgresql-doc-15 HTML (a copy, or some of its pages, so a test can change and
remove files) under /docs/ through aiohttp's static route (ETag, Last-Modified, 304s),
a sitemap made from the files present at each request (plain, gzipped, and an index of
both halves), and a robots.txt. `fail` makes pages answer 500; `statuses` counts answers.
`python -m tests.support.docs_site [N]` serves N pages (all by default) until interrupted.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")
ROBOTS = "User-agent: *\nDisallow: /private/\n"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def copy_docs(dest: Path, limit: int | None = None, first: tuple[str, ...] = ()) -> list[str]:
    """Copy the manual's HTML pages (the `first` ones, then in name order up to `limit`)
    and its stylesheet into `dest`; the copied page names."""
    if not PG_DOCS.is_dir():
        raise RuntimeError(f"{PG_DOCS} is missing: run scripts/system-deps.sh")
    dest.mkdir(parents=True, exist_ok=True)
    names = list(first) + sorted(p.name for p in PG_DOCS.glob("*.html") if p.name not in first)
    names = names[:limit] if limit is not None else names
    for name in names:
        shutil.copy2(PG_DOCS / name, dest / name)
    shutil.copy2(PG_DOCS / "stylesheet.css", dest / "stylesheet.css")
    return names


class DocsSite:
    """Serves `root` as http://127.0.0.1:PORT/docs/…; `url` is set once started."""

    def __init__(self, root: Path, robots: str = ROBOTS) -> None:
        self.root = root
        self.robots = robots
        self.fail: set[str] = set()  # paths answering 500
        self.statuses: Counter[int] = Counter()  # answers to /docs/ pages, by status
        self.url = ""
        self._runner: web.AppRunner | None = None

    def page_url(self, name: str) -> str:
        return f"{self.url}/docs/{name}"

    def _locs(self) -> list[str]:
        return sorted(self.page_url(p.name) for p in self.root.glob("*.html"))

    @staticmethod
    def urlset(locs: list[str]) -> bytes:
        urls = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>\n'
        ).encode()

    async def _sitemap(self, request: web.Request) -> web.Response:
        return web.Response(body=self.urlset(self._locs()), content_type="application/xml")

    async def _sitemap_gz(self, request: web.Request) -> web.Response:
        body = gzip.compress(self.urlset(self._locs()))
        return web.Response(body=body, content_type="application/x-gzip")

    async def _half(self, request: web.Request) -> web.Response:
        locs = self._locs()
        half = len(locs) // 2
        part = locs[:half] if request.match_info["n"] == "1" else locs[half:]
        body = self.urlset(part)
        if request.path.endswith(".gz"):
            return web.Response(body=gzip.compress(body), content_type="application/gzip")
        return web.Response(body=body, content_type="application/xml")

    async def _index(self, request: web.Request) -> web.Response:
        maps = "".join(
            f"<sitemap><loc>{self.url}{p}</loc></sitemap>" for p in ("/part1.xml", "/part2.xml.gz")
        )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{maps}'
            "</sitemapindex>\n"
        )
        return web.Response(text=body, content_type="application/xml")

    async def _robots(self, request: web.Request) -> web.Response:
        return web.Response(text=self.robots)

    @web.middleware
    async def _fail(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self.fail:
            return web.Response(status=500, text="broken")
        return await handler(request)

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        """Counted as sent: a static file's 304 is decided when it is prepared."""
        if request.path.startswith("/docs/"):
            self.statuses[response.status] += 1

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._fail])
        app.on_response_prepare.append(self._count)
        app.router.add_get("/robots.txt", self._robots)
        app.router.add_get("/sitemap.xml", self._sitemap)
        app.router.add_get("/sitemap.xml.gz", self._sitemap_gz)
        app.router.add_get("/sitemap_index.xml", self._index)
        app.router.add_get(r"/part{n:[12]}.xml", self._half)
        app.router.add_get(r"/part{n:[12]}.xml.gz", self._half)
        app.router.add_static("/docs/", self.root)
        return app

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def _main(root: Path, limit: int | None) -> None:
    copy_docs(root, limit)
    site = DocsSite(root)
    await site.start(8765)
    print(f"serving {root} at {site.url}/sitemap.xml", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await site.stop()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        count = int(sys.argv[1]) if len(sys.argv) > 1 else None
        asyncio.run(_main(Path(tmp), count))
