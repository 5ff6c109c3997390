"""Serve the demo pages (this folder) over HTTP with caching off: `make run` starts it.

    .venv/bin/python demo/serve.py [--host 127.0.0.1] [--port 8000]

Open http://localhost:8000/ — an allowed origin in the shipped gateway.yaml. Only files
inside this folder are served; every answer says `Cache-Control: no-store`, so an edited
page or script is what the next reload runs. Below /project/ it also serves this project's
documentation as HTML with a sitemap (below): the demo agent's knowledge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import html
import re
import signal
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
FAVICON = '<link rel="icon" href="/favicon.svg" type="image/svg+xml">'  # demo/favicon.svg
_NO_CACHE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


# ---------------------------------------------------------------------------- /project/
# This project's own documentation as a small web site: the demo agent's knowledge. README.md,
# SECURITY.md and docs/*.md, rendered from Markdown to HTML (each heading with the id GitHub
# gives it, so a citation's `page#section` opens at the section), and a sitemap the
# gateway's `assistant` route ingests (gateway.yaml, `knowledge:`). Pages carry an ETag: an
# unchanged page costs a refresh a 304. Read from disk on each request: an edited document
# is what the next refresh indexes.

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/project/"
_REVALIDATE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def documents(repo: Path = REPO) -> list[str]:
    """The documents served, as paths below the repository: README first."""
    found = [name for name in ("README.md", "SECURITY.md") if (repo / name).is_file()]
    found += sorted(f"docs/{p.name}" for p in (repo / "docs").glob("*.md") if p.is_file())
    return found


def _slug(text: str, seen: dict[str, int]) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    base = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
    n = seen.get(base, 0)
    seen[base] = n + 1
    return base if n == 0 else f"{base}-{n}"


def _plain(inline: Token) -> str:
    return "".join(child.content for child in inline.children or () if child.content)


def render(source: str, name: str) -> str:
    """A whole HTML page of the Markdown document: its title, headings with ids."""
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(source)
    seen: dict[str, int] = {}
    title = name
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            text = _plain(tokens[i + 1])
            token.attrSet("id", _slug(text, seen))
            if token.tag == "h1" and title == name:
                title = text
    body = md.renderer.render(tokens, md.options, {})
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'{FAVICON}<link rel="stylesheet" href="/demo.css"></head><body>'
        f'<nav><a href="{PREFIX}">chatkit-gateway documentation</a> · '
        f'<a href="/agent.html">ask the assistant</a></nav>'
        f'<main class="doc">{body}</main></body></html>\n'
    )


def _index(docs: list[str]) -> str:
    items = "".join(f'<li><a href="{PREFIX}{d}">{html.escape(d)}</a></li>' for d in docs)
    return render_page("chatkit-gateway documentation", f"<h1>Documentation</h1><ul>{items}</ul>")


def render_page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{FAVICON}</head><body><main>{body}</main>"
        "</body></html>\n"
    )


def _answer(request: web.Request, text: str, content_type: str) -> web.Response:
    """200 with an ETag, or 304 when the client has it (a refresh's conditional request)."""
    etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
    headers = {**_REVALIDATE, "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(text=text, content_type=content_type, charset="utf-8", headers=headers)


def add_project_docs(app: web.Application, repo: Path = REPO) -> None:
    """`/project/` (an index), `/project/sitemap.xml` and one page per document."""

    async def index(request: web.Request) -> web.StreamResponse:
        return _answer(request, _index(documents(repo)), "text/html")

    async def sitemap(request: web.Request) -> web.StreamResponse:
        base = f"{request.scheme}://{request.host}{PREFIX}"
        locs = "".join(f"<url><loc>{escape(base + d)}</loc></url>" for d in documents(repo))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>\n'
        )
        return _answer(request, body, "application/xml")

    async def page(request: web.Request) -> web.StreamResponse:
        name = request.match_info["doc"]
        if name not in documents(repo):  # only the listed files: never a path of the caller's
            raise web.HTTPNotFound(headers=_REVALIDATE)
        source = (repo / name).read_text(encoding="utf-8")
        return _answer(request, render(source, name), "text/html")

    app.router.add_get(PREFIX, index)
    app.router.add_get(PREFIX + "sitemap.xml", sitemap)
    app.router.add_get(PREFIX + "{doc:.+\\.md}", page)


def make_app(root: Path = ROOT, repo: Path = REPO) -> web.Application:
    """An aiohttp app serving `root`'s files (directories → index.html), uncached, and
    `repo`'s documentation below /project/."""
    base = root.resolve()

    async def static(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=_NO_CACHE)
        path = (base / request.match_info["tail"]).resolve()
        if path.is_dir():
            path = path / "index.html"
        content_type = _TYPES.get(path.suffix)
        if not path.is_relative_to(base) or content_type is None or not path.is_file():
            raise web.HTTPNotFound(headers=_NO_CACHE)
        return web.FileResponse(path, headers={**_NO_CACHE, "Content-Type": content_type})

    app = web.Application()
    add_project_docs(app, repo)  # /project/: before the catch-all
    app.router.add_route("*", "/{tail:.*}", static)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    print(f"demo pages on http://{shown}:{port}/ (serving {ROOT})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
