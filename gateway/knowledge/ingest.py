"""One ingest of one route: every source's pages fetched, extracted, cut into passages and
brought into the index aside, then switched in one commit (SPEC §9).

Pages stream through a few workers to one writer, so memory is bounded by the workers, not
the site. New and changed pages are put; unchanged and failed ones are kept; the commit
removes the rest (docs/DESIGN.md, Knowledge ingest).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Literal

from yarl import URL

from .config import CrawlSource, KnowledgeConfig, PathSource, SitemapSource
from .extract import extract
from .fetch import Failed, Fetcher, NotModified, decode
from .index import IndexBuild, KnowledgeIndex, Validators
from .model import Page, PageState
from .passages import page as make_page
from .sources import (
    CrawlScope,
    LocalFile,
    SourceError,
    crawl_start,
    excluded,
    links,
    local_files,
    normalise,
    sitemap_urls,
)

Outcome = Literal["added", "changed", "unchanged", "failed"]


@dataclasses.dataclass(frozen=True, slots=True)
class IngestEvent:
    """One page done (or one source failed: `url` is the source's)."""

    url: str
    outcome: Outcome
    detail: str  # why it failed; "" otherwise
    done: int  # pages done so far
    queued: int  # pages known so far (a crawl finds more as it goes)


@dataclasses.dataclass(frozen=True, slots=True)
class IngestReport:
    route: str
    added: int
    changed: int
    removed: int
    unchanged: int
    failed: int  # pages (and sources) that failed or were skipped; failed pages keep theirs
    fetched: int  # pages answered (200, 304, or a local file read or unchanged)
    seconds: float
    before: int = 0  # pages in the index before
    committed: bool = True  # False: nothing could be fetched, the old index stays
    reasons: tuple[tuple[str, int], ...] = ()  # failures by reason, most frequent first

    @property
    def pages(self) -> int:
        """Pages in the index after."""
        return self.before + self.added - self.removed if self.committed else self.before

    def line(self) -> str:
        return (
            f"ingest {self.route}: {self.pages} pages ({self.added} added, {self.changed} "
            f"changed, {self.removed} removed, {self.unchanged} unchanged, {self.failed} "
            f"failed) in {self.seconds:.1f} s"
        )


@dataclasses.dataclass(slots=True)
class _Job:
    url: URL
    scope: CrawlScope | None = None  # a crawl's page: its links are followed
    source: int = -1  # which crawl source (for its max_pages)
    local: LocalFile | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    """What a worker hands the writer: put `page`, or keep `url` if the index has it."""

    outcome: Outcome | None  # None: not counted (a redirect to a page reached elsewhere)
    url: str
    page: Page | None = None
    detail: str = ""
    keep: bool = True  # False: the server says the page is gone, its passages go too
    validators: Validators | None = None  # the same text under a new ETag: store that one


@dataclasses.dataclass(slots=True)
class _Run:
    config: KnowledgeConfig
    old: dict[str, PageState]
    progress: Callable[[IngestEvent], None] | None
    queue: asyncio.Queue[_Job] = dataclasses.field(default_factory=asyncio.Queue)
    writes: asyncio.Queue[_Write | None] = dataclasses.field(
        default_factory=lambda: asyncio.Queue(maxsize=8)
    )
    seen: set[str] = dataclasses.field(default_factory=set)
    crawled: Counter[int] = dataclasses.field(default_factory=Counter)
    counts: Counter[str] = dataclasses.field(default_factory=Counter)
    reasons: Counter[str] = dataclasses.field(default_factory=Counter)
    protected: list[CrawlScope] = dataclasses.field(default_factory=list)  # failed sources: kept
    fetched: int = 0
    done: int = 0

    def add(self, job: _Job) -> None:
        key = str(job.url)
        if key in self.seen or excluded(job.url, self.config.exclude):
            return
        if job.scope is not None:
            max_pages = self.config.sources[job.source].max_pages
            if self.crawled[job.source] >= max_pages:
                return
            self.crawled[job.source] += 1
        self.seen.add(key)
        self.queue.put_nowait(job)

    async def source_failed(self, url: str, reason: str, base: str) -> None:
        root = normalise(base)
        assert root is not None  # the policy checked it
        self.protected.append(CrawlScope.of(root))
        await self.writes.put(_Write("failed", url, detail=f"source: {reason}", keep=False))

    async def sources(self, fetcher: Fetcher) -> None:
        for i, source in enumerate(self.config.sources):
            if isinstance(source, CrawlSource):
                start, scope = crawl_start(source)
                self.add(_Job(start, scope, i))
                # A 304 has no links: the pages this crawl reached last time are asked for
                # again (a gone one answers 404 and goes).
                for known in map(URL, self.old):
                    if known in scope:
                        self.add(_Job(known, scope, i))
            elif isinstance(source, SitemapSource):
                try:
                    for url in await sitemap_urls(fetcher, source):
                        self.add(_Job(url))
                except SourceError as exc:
                    await self.source_failed(source.sitemap, str(exc), source.sitemap)
            elif isinstance(source, PathSource):
                try:
                    files = await asyncio.to_thread(list, local_files(source))
                except OSError as exc:
                    await self.source_failed(source.path, str(exc), source.base_url)
                    continue
                for file in files:
                    self.add(_Job(file.url, local=file))

    async def worker(self, fetcher: Fetcher) -> None:
        while True:
            job = await self.queue.get()
            try:
                await self.writes.put(await self.one(fetcher, job))
            finally:
                self.queue.task_done()

    async def one(self, fetcher: Fetcher, job: _Job) -> _Write:
        key = str(job.url)
        prev = self.old.get(key)
        if job.local is not None:
            return await self.local(job, job.local, prev)
        got = await fetcher.page(key, prev)
        if isinstance(got, NotModified):
            self.fetched += 1
            return _Write("unchanged", key)
        if isinstance(got, Failed):
            return _Write("failed", key, detail=got.reason, keep=not got.gone)
        self.fetched += 1
        final = normalise(got.url) or job.url
        if final != job.url:  # a redirect within the host: the page is where it landed
            if str(final) in self.seen or excluded(final, self.config.exclude):
                return _Write(None, str(final), keep=False)  # counted where it is reached
            self.seen.add(str(final))
            key, prev = str(final), self.old.get(str(final))
        return await self.stored(job, key, got.kind, got.text, (got.etag, got.last_modified), prev)

    async def local(self, job: _Job, file: LocalFile, prev: PageState | None) -> _Write:
        key = str(file.url)
        self.fetched += 1
        if prev is not None and prev.etag == file.stamp:
            return _Write("unchanged", key)
        try:
            size = file.path.stat().st_size
            if size > self.config.max_page_bytes:
                return _Write("failed", key, detail=f"larger than {size} bytes")
            body = await asyncio.to_thread(file.path.read_bytes)
        except OSError as exc:
            return _Write("failed", key, detail=exc.strerror or str(exc))
        text = decode(body, None, file.kind)
        if text is None:
            return _Write("failed", key, detail="undecodable text")
        return await self.stored(job, key, file.kind, text, (file.stamp, None), prev)

    async def stored(
        self, job: _Job, key: str, kind: str, text: str, fresh: Validators, prev: PageState | None
    ) -> _Write:
        """Extracted (a crawl's links queued) and compared with what the index holds."""
        found = await asyncio.to_thread(extract, kind, text, key)
        if job.scope is not None:
            for link in links(URL(key), found.links, job.scope):
                self.add(_Job(link, job.scope, job.source))
        new = make_page(key, found, *fresh)
        if prev is None:
            return _Write("added", key, new)
        if prev.text_hash != new.text_hash:
            return _Write("changed", key, new)
        stale = fresh != (prev.etag, prev.last_modified)
        return _Write("unchanged", key, validators=fresh if stale else None)

    async def writer(self, build: IndexBuild) -> None:
        written: set[str] = set()
        while (item := await self.writes.get()) is not None:
            if item.url not in written:
                if item.page is not None:
                    written.add(item.url)
                    await build.put(item.page)
                elif item.keep and item.url in self.old:
                    written.add(item.url)
                    await build.keep(item.url, item.validators)
            if item.outcome is None:
                continue
            self.counts[item.outcome] += 1
            self.done += 1
            if item.detail:  # "not HTML or text (application/pdf)" → "not HTML or text"
                self.reasons[item.detail.split(" (")[0].split(":")[0]] += 1
            if self.progress is not None:
                event = IngestEvent(item.url, item.outcome, item.detail, self.done, len(self.seen))
                self.progress(event)
        for url in self.old:  # a failed source's pages stay as they were
            if url not in written and any(URL(url) in scope for scope in self.protected):
                await build.keep(url)


async def ingest(
    route: str,
    config: KnowledgeConfig,
    index: KnowledgeIndex,
    *,
    progress: Callable[[IngestEvent], None] | None = None,
) -> IngestReport:
    started = time.monotonic()
    old = await index.pages(route)
    run = _Run(config, old, progress)
    build = await index.begin(route)
    writer = asyncio.create_task(run.writer(build))
    try:
        async with Fetcher(
            max_page_bytes=config.max_page_bytes,
            timeout_seconds=config.timeout_seconds,
            per_host=config.concurrency_per_host,
        ) as fetcher:
            workers = [
                asyncio.create_task(run.worker(fetcher))
                for _ in range(min(32, 2 * config.concurrency_per_host + 2))
            ]
            try:
                await run.sources(fetcher)
                joined = asyncio.create_task(run.queue.join())
                await asyncio.wait((joined, writer), return_when=asyncio.FIRST_COMPLETED)
                if writer.done():  # the store failed: stop fetching, keep the old index
                    joined.cancel()
                    writer.result()
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        await run.writes.put(None)
        await writer
        committed = run.fetched > 0
        removed = await build.commit() if committed else 0
        if not committed:
            await build.abort()
    except BaseException:
        writer.cancel()
        with contextlib.suppress(Exception):
            await build.abort()
        raise
    c = run.counts
    return IngestReport(
        route, c["added"], c["changed"], removed, c["unchanged"], c["failed"], run.fetched,
        time.monotonic() - started, len(old), committed, tuple(run.reasons.most_common()),
    )  # fmt: skip
