"""The knowledge index's behaviour, one suite over both backends (SQLite FTS5 in a file, a
real PostgreSQL from tests/support/postgres_server.py), as the limits run one suite over
storages."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.agent.store_schema import open_engine
from gateway.knowledge import index_query
from gateway.knowledge.index import IndexConflict, IndexUnavailable, KnowledgeIndex
from gateway.knowledge.index_query import Candidates, candidates
from gateway.knowledge.index_schema import SCHEMA_VERSION
from gateway.knowledge.model import IndexStats, Page, Passage
from gateway.knowledge.sql_index import open_index
from tests.support.postgres_server import PostgresServer, running_postgres

ROUTE = "docs"
Opened = Callable[..., Any]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """One server for the module; the store-down test stops and starts it again."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    server: PostgresServer = request.getfixturevalue("pg")
    return server.new_database()


@pytest.fixture
async def opened(store_url: str) -> AsyncIterator[Opened]:
    """Opens the store as a process would (its own engine); all disposed at the end."""
    engines: list[AsyncEngine] = []

    async def open_(timeout: float = 5.0) -> KnowledgeIndex:
        engine = open_engine(store_url, timeout=timeout, pool_size=2)
        engines.append(engine)
        return await open_index(engine)

    yield open_
    for engine in engines:
        await engine.dispose()


@pytest.fixture
async def index(opened: Opened) -> KnowledgeIndex:
    found: KnowledgeIndex = await opened()
    return found


def page(url: str, title: str, *texts: str, etag: str | None = None) -> Page:
    passages = tuple(
        Passage(heading=f"{title} > part {n}", url=f"{url}#part{n}", text=text)
        for n, text in enumerate(texts)
    )
    return Page(url, title, f"hash-{hash(texts)}", passages, etag=etag, last_modified=None)


async def ingest(index: KnowledgeIndex, *pages: Page, keep: tuple[str, ...] = ()) -> int:
    build = await index.begin(ROUTE)
    for item in pages:
        await build.put(item)
    for url in keep:
        await build.keep(url)
    return await build.commit()


async def urls(index: KnowledgeIndex, query: str, limit: int = 8, route: str = ROUTE) -> list[str]:
    return [hit.url.split("#")[0] for hit in await index.search(route, query, limit)]


BACKUP = page("https://ex.org/backup", "Backup and Restore", "Use pg_dump to back up a database.")
VACUUM = page("https://ex.org/vacuum", "Routine Vacuuming", "Vacuum reclaims dead row storage.")
LOCKS = page("https://ex.org/locks", "Explicit Locking", "Table-level locks and row locks.")


async def test_a_commit_adds_replaces_and_removes_pages(index: KnowledgeIndex) -> None:
    assert await index.stats(ROUTE) == IndexStats(pages=0, last_ingest=None)
    assert await ingest(index, BACKUP, VACUUM, LOCKS) == 0
    stats = await index.stats(ROUTE)
    assert stats.pages == 3 and stats.last_ingest is not None
    changed = page(BACKUP.url, "Backup and Restore", "Continuous archiving with WAL files.")
    removed = await ingest(index, changed, keep=(VACUUM.url,))
    assert removed == 1  # LOCKS: in no source any more
    assert (await index.stats(ROUTE)).pages == 2
    assert await urls(index, "archiving WAL") == [BACKUP.url]
    assert await urls(index, "pg_dump") == []  # the old version is gone
    assert await urls(index, "reclaims dead rows") == [VACUUM.url]  # kept as it was
    assert await urls(index, "locks") == []


async def test_page_state_is_kept_for_conditional_requests(index: KnowledgeIndex) -> None:
    tagged = page("https://ex.org/a", "A", "alpha text", etag='W/"1"')
    await ingest(index, tagged)
    state = (await index.pages(ROUTE))[tagged.url]
    assert state == tagged.state
    await ingest(index, keep=(tagged.url,))
    assert (await index.pages(ROUTE))[tagged.url].etag == 'W/"1"'
    # The same text under new validators (a redeploy): kept, and asked with these next time.
    build = await index.begin(ROUTE)
    await build.keep(tagged.url, ('W/"2"', "Mon, 07 Dec 2026 10:00:00 GMT"))
    assert await build.commit() == 0
    state = (await index.pages(ROUTE))[tagged.url]
    assert (state.etag, state.last_modified) == ('W/"2"', "Mon, 07 Dec 2026 10:00:00 GMT")
    assert state.text_hash == tagged.text_hash
    assert await urls(index, "alpha") == [tagged.url]  # its passages stay


async def test_a_search_during_a_build_sees_the_committed_index(opened: Opened) -> None:
    serve, ingester = await opened(), await opened()  # two processes, one store
    await ingest(serve, BACKUP, VACUUM)
    build = await ingester.begin(ROUTE)
    await build.put(page(BACKUP.url, "Backup and Restore", "Point-in-time recovery."))
    await build.put(LOCKS)
    assert await urls(serve, "pg_dump") == [BACKUP.url]
    assert await urls(serve, "recovery locks") == []
    assert set(await serve.pages(ROUTE)) == {BACKUP.url, VACUUM.url}
    assert await build.commit() == 1  # VACUUM neither put nor kept
    assert await urls(serve, "pg_dump vacuum") == []
    assert set(await urls(serve, "recovery locks")) == {BACKUP.url, LOCKS.url}


async def test_abort_leaves_the_old_index(index: KnowledgeIndex) -> None:
    await ingest(index, BACKUP)
    before = await index.stats(ROUTE)
    build = await index.begin(ROUTE)
    await build.put(page(BACKUP.url, "Backup", "Snapshots of the cluster."))
    await build.put(LOCKS)
    await build.abort()
    await build.abort()  # twice: nothing more
    assert await urls(index, "pg_dump") == [BACKUP.url]
    assert await urls(index, "snapshots locks") == []
    assert await index.stats(ROUTE) == before
    with pytest.raises(RuntimeError):
        await build.put(LOCKS)


async def test_a_crashed_build_never_shows(opened: Opened) -> None:
    index = await opened()
    await ingest(index, BACKUP)
    crashed = await (await opened()).begin(ROUTE)
    await crashed.put(LOCKS)  # and the process dies: no commit, no abort
    assert await urls(index, "locks") == []
    await ingest(index, VACUUM, keep=(BACKUP.url,))
    assert await urls(index, "locks") == []  # the next commit dropped its rows
    assert set(await index.pages(ROUTE)) == {BACKUP.url, VACUUM.url}


async def test_two_builds_of_one_route_the_second_commit_is_refused(index: KnowledgeIndex) -> None:
    await ingest(index, BACKUP)
    first, second = await index.begin(ROUTE), await index.begin(ROUTE)
    await first.put(VACUUM)
    await second.put(LOCKS)
    await first.commit()
    with pytest.raises(IndexConflict):
        await second.commit()
    assert await urls(index, "vacuum locks") == [VACUUM.url]


async def test_the_same_url_twice_in_a_build_is_one_page(index: KnowledgeIndex) -> None:
    build = await index.begin(ROUTE)
    await build.put(page(BACKUP.url, "Backup", "first version"))
    await build.keep(BACKUP.url)
    await build.put(page(BACKUP.url, "Backup", "second version"))
    await build.commit()
    assert (await index.stats(ROUTE)).pages == 1
    assert await urls(index, "version") == [BACKUP.url]
    assert await urls(index, "first") == []


async def test_many_kept_pages(index: KnowledgeIndex) -> None:
    many = [page(f"https://ex.org/p{n}", f"Page {n}", f"word{n} common") for n in range(520)]
    await ingest(index, *many)
    assert await ingest(index, keep=tuple(p.url for p in many[:510])) == 10
    assert (await index.stats(ROUTE)).pages == 510
    assert await urls(index, "word509") == ["https://ex.org/p509"]
    assert await urls(index, "word515") == []


HOSTILE = [
    'backup"',
    '"backup',
    "backup NEAR restore",
    "NEAR(backup restore, 2)",
    "backup AND OR NOT",
    "NOT backup",
    "-backup",
    "backup*",
    "^backup",
    "title: backup",
    "{title heading}: backup",
    "body:backup url:x",
    "back\x00up backup\x00",
    "backup " + "lorem ipsum dolor " * 6000,  # 100 kB
    "🔥 backup 🚀 \U0001f600",
    "backup'); DROP TABLE ckgw_knowledge_pages; --",
    "backup \\ ' : & | ! < > ( ) @@ :* <-> \ud800",
    "backup " + "x" * 5000,
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_any_query_is_safe_and_still_finds(index: KnowledgeIndex, query: str) -> None:
    await ingest(index, BACKUP, VACUUM, LOCKS)
    assert (await urls(index, query))[:1] == [BACKUP.url]


@pytest.mark.parametrize("query", ["", "   ", "what is the", "How can I do it?", "🔥🔥", "\x00"])
async def test_a_query_without_terms_finds_nothing(index: KnowledgeIndex, query: str) -> None:
    await ingest(index, BACKUP)
    assert await index.search(ROUTE, query, 8) == []


async def test_questions_are_natural_language(index: KnowledgeIndex) -> None:
    await ingest(index, BACKUP, VACUUM, LOCKS)
    hits = await index.search(ROUTE, "How do I back up my databases?", 8)
    assert hits[0].url == f"{BACKUP.url}#part0"  # stemmed: back up / databases
    assert (
        hits[0].title == "Backup and Restore" and hits[0].heading == "Backup and Restore > part 0"
    )
    assert "pg_dump" in hits[0].text
    # OR: one matching term is enough; best first.
    assert set(await urls(index, "vacuum locking unknownword")) == {VACUUM.url, LOCKS.url}
    assert len(await index.search(ROUTE, "vacuum locks backup", 2)) == 2


async def test_a_title_outranks_a_passing_mention(index: KnowledgeIndex) -> None:
    said = Passage("", "https://ex.org/config", "Run a vacuum weekly; vacuum keeps tables small.")
    mention = Page("https://ex.org/config", "Server Configuration", "h1", (said,))
    text = Passage("", "https://ex.org/vacuum", "Reclaims storage occupied by dead tuples.")
    titled = Page("https://ex.org/vacuum", "Vacuum", "h2", (text,))
    await ingest(index, mention, titled)
    assert await urls(index, "vacuum") == [titled.url, mention.url]


async def test_a_heading_outranks_a_passing_mention(index: KnowledgeIndex) -> None:
    body = Passage("Indexes > Overview", "https://ex.org/i#o", "Joins, joins: indexes help.")
    head = Passage("Indexes > Joins", "https://ex.org/i#j", "Nested loops and hashes.")
    await ingest(index, Page("https://ex.org/i", "Indexes", "h", (body, head)))
    hits = await index.search(ROUTE, "joins", 8)
    assert [hit.url for hit in hits] == [head.url, body.url]


MAINTENANCE = page("https://ex.org/maint", "Maintenance", "Run vacuum on a big table weekly.")
TABLES = [
    page(f"https://ex.org/t{n}", f"Table {n}", f"The table {n}: table rows, table columns.")
    for n in range(12)
]


async def test_a_rare_word_outranks_common_ones(index: KnowledgeIndex) -> None:
    """Every passage says table, one says vacuum: the question is about vacuum, though twelve
    titles say table (PostgreSQL's ts_rank alone ranked them first)."""
    await ingest(index, MAINTENANCE, *TABLES)
    assert (await urls(index, "How do I vacuum a table?"))[0] == MAINTENANCE.url
    hits = await index.search(ROUTE, "vacuum table", 1)
    assert [hit.url.split("#")[0] for hit in hits] == [MAINTENANCE.url]
    # Common words alone still find, all of them ranked.
    assert len(await urls(index, "table rows columns")) == 8


def test_the_rarest_terms_passages_are_ranked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_query, "RANKED", 1000)
    docs = {"create": 2204, "index": 1210, "concurrently": 40, "locking": 308, "writes": 787}
    assert candidates(docs) == Candidates(["concurrently", "locking"], every=False)
    assert candidates({"vacuum": 236, "full": 600}) is None  # all of them: any term's
    common = {"create": 2204, "table": 2691, "nowhere": 0}
    assert candidates(common) == Candidates(["create", "table"], every=True)
    assert candidates({"table": 2691}) is None
    assert candidates({"nowhere": 0, "never": 0}) is None


async def test_a_bounded_search_still_ranks_the_best_first(
    index: KnowledgeIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a tiny budget: the rare term's passages alone; common terms, the passages with
    all of them; and when those are fewer than asked for, any term's."""
    await ingest(index, MAINTENANCE, *TABLES)
    monkeypatch.setattr(index_query, "RANKED", 5)
    assert await urls(index, "vacuum the table", 1) == [MAINTENANCE.url]
    both = await urls(index, "table columns")
    assert len(both) == 8 and MAINTENANCE.url not in both
    monkeypatch.setattr(index_query, "RANKED", 0)
    found = await urls(index, "vacuum table")  # in one passage together: any term's
    assert found[0] == MAINTENANCE.url and len(found) == 8


async def test_a_version_1_index_is_migrated_with_its_data(store_url: str, opened: Opened) -> None:
    """A database as version 1 left it (no passage counts, no term statistics) with a
    committed route: the start brings it to this version and computes its statistics."""
    await ingest(await opened(), MAINTENANCE, *TABLES)
    engine = open_engine(store_url, timeout=5, pool_size=1)
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(sa.text("DROP TABLE ckgw_knowledge_terms"))
            await conn.execute(sa.text("ALTER TABLE ckgw_knowledge_routes DROP COLUMN passages"))
            await conn.execute(sa.text("DELETE FROM ckgw_knowledge_schema"))
            await conn.execute(
                sa.text("INSERT INTO ckgw_knowledge_schema VALUES (1, CURRENT_TIMESTAMP)")
            )
        upgraded = await opened()
        assert (await urls(upgraded, "How do I vacuum a table?"))[0] == MAINTENANCE.url
        async with engine.connect() as conn:
            versions = await conn.execute(sa.text("SELECT version FROM ckgw_knowledge_schema"))
            assert sorted(versions.scalars()) == [1, SCHEMA_VERSION]
            if engine.dialect.name == "postgresql":
                counted = "SELECT passages FROM ckgw_knowledge_routes WHERE route = 'docs'"
                assert (await conn.execute(sa.text(counted))).scalar() == 13
                docs = "SELECT docs FROM ckgw_knowledge_terms WHERE lexeme = :w"
                assert (await conn.execute(sa.text(docs), {"w": "tabl"})).scalar() == 13
                assert (await conn.execute(sa.text(docs), {"w": "vacuum"})).scalar() == 1
        assert await ingest(upgraded, MAINTENANCE) == 12  # and later commits recount
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                assert (await conn.execute(sa.text(counted))).scalar() == 1
                assert (await conn.execute(sa.text(docs), {"w": "tabl"})).scalar() == 1
    finally:
        await engine.dispose()


async def test_stored_text_any_characters(index: KnowledgeIndex) -> None:
    odd = page(
        "https://ex.org/odd", "Odd\x00 page 🔥", "nul\x00bytes and \ud800 surrogates émoji 🚀"
    )
    await ingest(index, odd)
    hits = await index.search(ROUTE, "surrogates emoji", 8)
    assert [hit.title for hit in hits] == ["Odd page 🔥"]
    assert "\x00" not in hits[0].text


async def test_routes_are_kept_apart(index: KnowledgeIndex) -> None:
    await ingest(index, BACKUP, VACUUM)
    other = await index.begin("blog")
    await other.put(page(BACKUP.url, "Backup", "Blog post about backup tapes."))
    assert await other.commit() == 0  # the docs route's pages are not the blog's
    assert await urls(index, "tapes") == []
    assert await urls(index, "tapes", route="blog") == [BACKUP.url]
    assert await urls(index, "vacuum", route="blog") == []
    assert await urls(index, "vacuum", route="nobody") == []
    assert (await index.stats(ROUTE)).pages == 2
    assert (await index.stats("blog")).pages == 1
    assert await ingest(index) == 2  # an empty docs ingest removes only docs pages
    assert await urls(index, "tapes", route="blog") == [BACKUP.url]


async def test_migrations(store_url: str, opened: Opened) -> None:
    index = await opened()  # an empty database: the tables are created
    await ingest(index, BACKUP)
    again = await opened()  # a second start keeps the data
    assert await urls(again, "pg_dump") == [BACKUP.url]
    engine = open_engine(store_url, timeout=5, pool_size=1)
    try:
        async with engine.begin() as conn:
            versions = await conn.execute(sa.text("SELECT version FROM ckgw_knowledge_schema"))
            assert versions.scalars().all() == [SCHEMA_VERSION]
            await conn.execute(
                sa.text("INSERT INTO ckgw_knowledge_schema VALUES (:v, CURRENT_TIMESTAMP)"),
                {"v": SCHEMA_VERSION + 1},
            )
        newer = f"knowledge index has schema version {SCHEMA_VERSION + 1}; this gateway knows"
        with pytest.raises(RuntimeError, match=newer):
            await open_index(engine)
    finally:
        await engine.dispose()


async def test_sqlite_store_busy_build_fails_old_index_serves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/store.db"
    engine = open_engine(url, timeout=0.3, pool_size=1)
    index = await open_index(engine)
    try:
        await ingest(index, BACKUP)
        build = await index.begin(ROUTE)
        other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the database
        with pytest.raises(IndexUnavailable, match="knowledge store unavailable"):
            await build.put(LOCKS)
        await build.abort()  # cannot clean up now: does not raise
        assert await urls(index, "pg_dump") == [BACKUP.url]
        other.execute("ROLLBACK")
        other.close()
        assert await ingest(index, VACUUM, keep=(BACKUP.url,)) == 0
        assert set(await urls(index, "pg_dump vacuum locks")) == {BACKUP.url, VACUUM.url}
    finally:
        await engine.dispose()


async def test_postgres_down_build_fails_old_index_serves(pg: PostgresServer) -> None:
    engine = open_engine(pg.new_database(), timeout=2, pool_size=2)
    index = await open_index(engine)
    try:
        await ingest(index, BACKUP)
        build = await index.begin(ROUTE)
        await build.put(VACUUM)
        pg.stop()
        try:
            with pytest.raises(IndexUnavailable) as failed:
                await build.put(LOCKS)
            assert pg.password not in str(failed.value)
            await build.abort()  # the store is down: does not raise
            with pytest.raises(IndexUnavailable):
                await index.search(ROUTE, "backup", 8)
        finally:
            pg.start()
        assert await urls(index, "pg_dump vacuum locks") == [BACKUP.url]
        assert await ingest(index, LOCKS, keep=(BACKUP.url,)) == 0
        assert set(await urls(index, "pg_dump vacuum locks")) == {BACKUP.url, LOCKS.url}
    finally:
        await engine.dispose()


async def test_postgres_refresh_lock_is_one_holder_across_engines(pg: PostgresServer) -> None:
    url = pg.new_database()
    engines = [open_engine(url, timeout=5, pool_size=2) for _ in range(2)]
    try:
        a, b = [await open_index(engine) for engine in engines]
        async with a.refresh_lock(ROUTE) as held:
            assert held is True
            async with b.refresh_lock(ROUTE) as other:
                assert other is False
            async with b.refresh_lock("blog") as other_route:
                assert other_route is True
        async with b.refresh_lock(ROUTE) as held:
            assert held is True
        with pytest.raises(ValueError):
            async with b.refresh_lock(ROUTE) as held:
                raise ValueError("the refresh failed")
        async with a.refresh_lock(ROUTE) as held:  # released though the body failed
            assert held is True
    finally:
        for engine in engines:
            await engine.dispose()


async def test_sqlite_refresh_lock_is_always_ours(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path}/s.db", timeout=5, pool_size=1)
    try:
        index = await open_index(engine)
        async with index.refresh_lock(ROUTE) as one, index.refresh_lock(ROUTE) as two:
            assert one is True and two is True
    finally:
        await engine.dispose()


async def test_concurrent_searches_during_a_commit(opened: Opened) -> None:
    serve, ingester = await opened(), await opened()
    await ingest(serve, BACKUP, VACUUM)
    build = await ingester.begin(ROUTE)
    await build.put(page(BACKUP.url, "Backup and Restore", "pg_dump and pg_restore."))
    await build.keep(VACUUM.url)
    searches = [serve.search(ROUTE, "pg_dump vacuum", 8) for _ in range(10)]
    results = await asyncio.gather(build.commit(), *searches)
    for hits in results[1:]:
        assert isinstance(hits, list) and len(hits) == 2  # the old index or the new, whole
