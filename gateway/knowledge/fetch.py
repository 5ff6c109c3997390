"""Fetching the site's pages politely and with a bounded cost (SPEC §9).

A few requests in flight per host, a timeout per request, a size cap counted as the bytes
arrive (after gzip: a compressed bomb is cut as early as a plain one), robots.txt obeyed as
`chatkit-gateway`, redirects followed by hand and only within the same origin, and
conditional requests with the stored validators (a 304 costs one round trip).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping

import aiohttp
from protego import Protego
from yarl import URL

from .model import PageState

USER_AGENT = "chatkit-gateway"
_HEADERS = {"User-Agent": f"{USER_AGENT}/1 (+knowledge ingest)", "Accept-Encoding": "gzip, deflate"}
MAX_REDIRECTS = 5
# robots.txt files are small; Google reads the first 500 KiB.
_ROBOTS_BYTES = 500 * 1024
_KINDS = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


@dataclasses.dataclass(frozen=True, slots=True)
class Fetched:
    url: str  # after same-origin redirects: the page's own URL
    kind: str  # html | markdown | text
    text: str
    etag: str | None
    last_modified: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class NotModified:
    url: str


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """A page that could not be fetched or used. `gone`: the server says it is not there
    (404, 410), or robots.txt now disallows it: its old passages go too."""

    url: str
    reason: str
    gone: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Raw:
    """A sitemap or robots.txt, whatever its type."""

    body: bytes
    headers: Mapping[str, str]


Result = Fetched | NotModified | Failed


def origin(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host or "", url.port)


def decode(body: bytes, charset: str | None, kind: str) -> str | None:
    """The text, or None when it is not text in the declared (or sniffed) encoding."""
    if b"\x00" in body[:4096]:  # binary served as text
        return None
    if charset is None and kind == "html":
        found = _META_CHARSET.search(body[:2048])
        charset = found.group(1).decode("ascii") if found else None
    if body.startswith(b"\xef\xbb\xbf"):
        charset, body = "utf-8", body[3:]
    try:
        return body.decode(charset or "utf-8")
    except (UnicodeDecodeError, LookupError):
        return None


class Fetcher:
    """One ingest's HTTP client. Use as `async with Fetcher(...) as fetcher:`."""

    __slots__ = (
        "_hosts", "_max_bytes", "_per_host", "_robots", "_robots_lock", "_session", "_timeout",
    )  # fmt: skip

    def __init__(self, *, max_page_bytes: int, timeout_seconds: float, per_host: int) -> None:
        self._max_bytes = max_page_bytes
        self._per_host = per_host
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._hosts: dict[tuple[str, str, int | None], asyncio.Semaphore] = {}
        self._robots: dict[tuple[str, str, int | None], Protego | None] = {}
        self._robots_lock: dict[tuple[str, str, int | None], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self._per_host)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=_HEADERS, timeout=self._timeout
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def page(self, url: str, old: PageState | None = None) -> Result:
        """One page: conditional when `old` has validators."""
        headers: dict[str, str] = {}
        if old is not None and old.etag:
            headers["If-None-Match"] = old.etag
        if old is not None and old.last_modified:
            headers["If-Modified-Since"] = old.last_modified
        if not await self.allowed(URL(url)):
            return Failed(url, "disallowed by robots.txt", gone=True)
        result = await self._try(url, headers)
        assert not isinstance(result, Raw)  # only asked for `any_type`
        return result

    async def raw(self, url: str, max_bytes: int) -> Raw | Failed:
        """A sitemap or robots file: the body (any type), or why not."""
        result = await self._try(url, {}, max_bytes=max_bytes, any_type=True)
        assert isinstance(result, Raw | Failed)  # `any_type`: a 304 is a failure too
        return result

    async def allowed(self, url: URL) -> bool:
        """robots.txt of the URL's origin, read once per ingest. RFC 9309: a 4xx is no
        rules; an unreachable or failing robots.txt disallows (we cannot know the rules)."""
        key = origin(url)
        if key not in self._robots:
            lock = self._robots_lock.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in self._robots:
                    self._robots[key] = await self._read_robots(url)
        rules = self._robots[key]
        return rules is not None and bool(rules.can_fetch(str(url), USER_AGENT))

    async def _read_robots(self, url: URL) -> Protego | None:
        robots = url.with_path("/robots.txt").with_query(None).with_fragment(None)
        result = await self.raw(str(robots), _ROBOTS_BYTES)
        if isinstance(result, Raw):
            return Protego.parse(result.body.decode("utf-8", "replace"))
        if result.gone or result.reason.startswith("HTTP 4"):
            return Protego.parse("")
        return None

    async def _try(
        self, url: str, headers: dict[str, str], max_bytes: int = 0, any_type: bool = False
    ) -> Result | Raw:
        """`_get`, a timeout or a connection's failure as Failed."""
        target = URL(url)
        try:
            return await self._get(target, headers, max_bytes, any_type)
        except TimeoutError:
            return Failed(url, "timed out")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return Failed(url, f"{type(exc).__name__}: {exc}"[:200])

    async def _get(
        self, url: URL, headers: dict[str, str], max_bytes: int, any_type: bool
    ) -> Result | Raw:
        assert self._session is not None, "use `async with Fetcher(...)`"
        cap = max_bytes or self._max_bytes
        start = url
        for _ in range(MAX_REDIRECTS + 1):
            sem = self._hosts.setdefault(origin(url), asyncio.Semaphore(self._per_host))
            async with (
                sem,
                self._session.get(url, headers=headers, allow_redirects=False) as resp,
            ):
                if resp.status in (301, 302, 303, 307, 308):
                    location = resp.headers.get("Location")
                    if not location:
                        return Failed(str(start), f"HTTP {resp.status} without Location")
                    nxt = url.join(URL(location)).with_fragment(None)
                    if origin(nxt) != origin(url):
                        return Failed(str(start), f"redirect to another host: {nxt.host}")
                    url = nxt
                    continue
                if resp.status == 304 and not any_type:
                    return NotModified(str(url))
                if resp.status in (404, 410):
                    return Failed(str(start), f"HTTP {resp.status}", gone=True)
                if resp.status != 200:
                    return Failed(str(start), f"HTTP {resp.status}")
                mime = resp.content_type.lower()
                kind = _KINDS.get(mime)
                if kind == "text" and url.path.endswith(".md"):
                    kind = "markdown"
                if kind is None and not any_type:
                    return Failed(str(url), f"not HTML or text ({mime})")
                if (resp.content_length or 0) > cap:
                    return Failed(str(url), f"larger than {cap} bytes")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > cap:
                        return Failed(str(url), f"larger than {cap} bytes")
                if any_type:
                    return Raw(bytes(body), resp.headers)
                assert kind is not None
                text = decode(bytes(body), resp.charset, kind)
                if text is None:
                    return Failed(str(url), "undecodable text")
                return Fetched(
                    str(url),
                    kind,
                    text,
                    resp.headers.get("ETag"),
                    resp.headers.get("Last-Modified"),
                )
        return Failed(str(start), f"more than {MAX_REDIRECTS} redirects")
