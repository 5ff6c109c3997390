"""Where a route's pages are: sitemap URLs, a crawl's scope, a local folder (SPEC §9).

One page is one URL: `normalise` lowercases scheme and host, drops the default port, the
fragment and dot segments, and fixes percent-encoding (yarl), so two links to one page meet.
A crawl also drops query strings (why: docs/DESIGN.md, Sources); sitemap URLs keep theirs
(the site listed them on purpose).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeXML
from defusedxml import DefusedXmlException
from yarl import URL

from .config import CrawlSource, PathSource, SitemapSource
from .fetch import Failed, Fetcher, origin

# The sitemap protocol's own limits: 50 MiB uncompressed, 50,000 URLs a file.
SITEMAP_BYTES = 50 << 20
MAX_SITEMAPS = 1000  # files of one sitemap index tree, nested indexes included
FILE_SUFFIXES = {".html": "html", ".htm": "html", ".md": "markdown", ".txt": "text"}


class SourceError(Exception):
    """A source that yields nothing usable (its pages are kept as they are)."""


def normalise(raw: str, base: URL | None = None, *, keep_query: bool = True) -> URL | None:
    """The page's one URL, or None when it is not an http(s) page."""
    try:
        url = URL(raw.strip())
        if base is not None:
            url = base.join(url)
        if url.scheme not in ("http", "https") or not url.host:
            return None
        url = url.with_fragment(None).with_user(None).with_password(None)
        if not keep_query:
            url = url.with_query(None)
        if not url.path:
            url = url.with_path("/")
        return URL(str(url))  # yarl drops a default port when it prints: :80 meets no port
    except (ValueError, TypeError):
        return None


def excluded(url: URL, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(url.path, g) for g in globs)


@dataclasses.dataclass(frozen=True, slots=True)
class CrawlScope:
    """Same origin, below the start URL's folder (its path up to the last `/`)."""

    origin: tuple[str, str, int | None]
    folder: str

    @classmethod
    def of(cls, start: URL) -> CrawlScope:
        return cls(origin(start), start.path[: start.path.rfind("/") + 1])

    def __contains__(self, url: URL) -> bool:
        return origin(url) == self.origin and url.path.startswith(self.folder)


def crawl_start(source: CrawlSource) -> tuple[URL, CrawlScope]:
    start = normalise(source.crawl, keep_query=False)
    if start is None:  # the policy checked it already
        raise SourceError(f"not an http(s) URL: {source.crawl}")
    return start, CrawlScope.of(start)


def links(page_url: URL, hrefs: tuple[str, ...], scope: CrawlScope) -> Iterator[URL]:
    for href in hrefs:
        url = normalise(href, page_url, keep_query=False)
        if url is not None and url in scope:
            yield url


def _gunzip(body: bytes) -> bytes:
    """A .gz sitemap (whatever its Content-Type says), capped as it inflates."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(body, SITEMAP_BYTES + 1)
    if len(out) > SITEMAP_BYTES:
        raise SourceError(f"larger than {SITEMAP_BYTES} bytes uncompressed")
    return out


def _parse(body: bytes) -> Element:
    if body[:2] == b"\x1f\x8b":
        try:
            body = _gunzip(body)
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise SourceError(f"bad gzip: {exc}") from None
    try:
        # No DTDs at all: no entity expansion (billion laughs), no external entities (XXE).
        return SafeXML.fromstring(body, forbid_dtd=True)
    except (SafeXML.ParseError, DefusedXmlException, ValueError) as exc:
        raise SourceError(f"not a sitemap (XML): {exc}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


async def sitemap_urls(fetcher: Fetcher, source: SitemapSource) -> list[URL]:
    """Every <loc> on the sitemap's own origin (the protocol's rule), indexes followed.
    Raises SourceError when no sitemap of the tree could be read."""
    root = normalise(source.sitemap)
    if root is None:
        raise SourceError(f"not an http(s) URL: {source.sitemap}")
    pages: dict[URL, None] = {}
    todo, seen, errors = [root], {root}, []
    while todo and len(pages) < source.max_pages:
        url = todo.pop(0)
        got = await fetcher.raw(str(url), SITEMAP_BYTES)
        if isinstance(got, Failed):
            errors.append(f"{url}: {got.reason}")
            continue
        try:
            tree = _parse(got.body)
        except SourceError as exc:
            errors.append(f"{url}: {exc}")
            continue
        kind = _local(tree.tag)
        for loc in tree.iter():
            if _local(loc.tag) != "loc" or not loc.text:
                continue
            found = normalise(loc.text)
            if found is None or origin(found) != origin(root):
                continue
            if kind == "sitemapindex":
                if found not in seen and len(seen) < MAX_SITEMAPS:
                    seen.add(found)
                    todo.append(found)
            elif len(pages) < source.max_pages:
                pages[found] = None
    if errors and not pages:
        raise SourceError("; ".join(errors[:3]))
    return list(pages)


@dataclasses.dataclass(frozen=True, slots=True)
class LocalFile:
    url: URL
    path: Path
    kind: str
    stamp: str  # size and mtime: an unchanged file is not read again


def local_files(source: PathSource) -> Iterator[LocalFile]:
    """The folder's pages in a stable order. Symlinks are followed only while they stay
    inside the folder (a link to /etc is not the site)."""
    top = Path(source.path).resolve()
    base = URL(source.base_url if source.base_url.endswith("/") else source.base_url + "/")
    count = 0
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            kind = FILE_SUFFIXES.get(os.path.splitext(name)[1].lower())
            if kind is None:
                continue
            path = Path(folder, name)
            try:
                real = path.resolve(strict=True)
                stat = real.stat()
            except OSError:
                continue
            if not real.is_relative_to(top) or not real.is_file():
                continue
            rel = path.relative_to(top).as_posix()
            url = normalise(str(base) + quote(rel))
            if url is None:
                continue
            yield LocalFile(url, real, kind, f'"{stat.st_size}-{stat.st_mtime_ns}"')
            count += 1
            if count >= source.max_pages:
                return
