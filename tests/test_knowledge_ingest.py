"""`chatkit-gateway ingest` (SPEC §9), a real process against real documentation: pages of
the PostgreSQL 15 manual served on loopback with ETags, indexed in a real SQLite store.
What the owner sees: the summary line, the exit status, and what a search then finds."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.agent.store_schema import open_engine
from gateway.knowledge.sql_index import open_index
from tests.conftest import TEST_KEY, policy_yaml
from tests.support.agent_client import agent_route
from tests.support.docs_site import DocsSite, copy_docs
from tests.support.processes import SCRIPT, base_env, free_port

ROUTE = "assistant"
PAGES = 40
FIRST = ("tutorial-join.html", "sql-select.html", "tutorial-fk.html", "tutorial-window.html")
LINE = re.compile(
    r"^ingest assistant: (\d+) pages \((\d+) added, (\d+) changed, (\d+) removed, "
    r"(\d+) unchanged, (\d+) failed\) in \d+\.\d s$"
)
pytestmark = pytest.mark.slow


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[DocsSite]:
    root = tmp_path / "html"
    copy_docs(root, PAGES, FIRST)
    s = DocsSite(root)
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


def write_policy(tmp: Path, knowledge: dict[str, Any], name: str = "gateway.yaml") -> Path:
    store = f"sqlite:///{tmp / 'threads.db'}"
    route = agent_route(store, knowledge=knowledge)
    path = tmp / name
    path.write_text(policy_yaml(routes=[route], server={"port": free_port()}))
    return path


async def run_ingest(policy: Path, *args: str, key: bool = True) -> tuple[int, str, str]:
    env = base_env(OPENAI_API_KEY=TEST_KEY) if key else base_env()
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT), "ingest", "--config", str(policy), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def summary(stdout: str) -> tuple[int, ...]:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    found = LINE.match(lines[0])
    assert found, lines[0]
    return tuple(int(n) for n in found.groups())


async def search(tmp: Path, query: str) -> list[str]:
    engine = open_engine(f"sqlite:///{tmp / 'threads.db'}", timeout=5, pool_size=1)
    try:
        index = await open_index(engine)
        return [hit.url for hit in await index.search(ROUTE, query, 8)]
    finally:
        await engine.dispose()


async def test_ingest_rerun_change_remove_and_fail(site: DocsSite, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, {"sources": [{"sitemap": f"{site.url}/sitemap.xml"}]})
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES, PAGES, 0, 0, 0, 0)
    join = site.page_url("tutorial-join.html")
    hits = await search(tmp_path, "joins between tables")
    assert any(h.startswith(join + "#") for h in hits), hits  # cited with its section anchor

    # Nothing changed: every page asked with its ETag, answered 304, nothing re-indexed.
    site.statuses.clear()
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES, 0, 0, 0, PAGES, 0)
    assert site.statuses == {304: PAGES}

    # One page changes, one is deleted, one answers 500 this time.
    page = site.root / "tutorial-join.html"
    page.write_text(
        page.read_text().replace(
            "Thus far, our queries", "The zanzibarquux join is new. Thus far, our queries"
        )
    )
    removed = site.root / "tutorial-fk.html"
    removed.unlink()
    site.fail.add("/docs/tutorial-window.html")
    assert not await search(tmp_path, "zanzibarquux")
    assert any("tutorial-fk.html" in h for h in await search(tmp_path, "foreign keys"))
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES - 1, 0, 1, 1, PAGES - 3, 1)
    assert f"failed {site.page_url('tutorial-window.html')}: HTTP 500" in err
    assert "failed: 1 HTTP 500" in err
    assert (await search(tmp_path, "zanzibarquux"))[0].startswith(join)
    assert not any("tutorial-fk.html" in h for h in await search(tmp_path, "foreign keys"))
    # The failed page keeps the passages it had.
    assert any("tutorial-window.html" in h for h in await search(tmp_path, "window functions"))


async def test_a_redeploy_with_the_same_text_is_asked_with_its_new_etag(
    site: DocsSite, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path, {"sources": [{"sitemap": f"{site.url}/sitemap.xml"}]})
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    # A redeploy: every file written again with the same bytes, so new ETags.
    later = time.time_ns() + 60 * 10**9
    for file in site.root.glob("*.html"):
        os.utime(file, ns=(later, later))
    site.statuses.clear()
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES, 0, 0, 0, PAGES, 0)  # the same text: nothing re-indexed
    assert site.statuses == {200: PAGES}  # but fetched whole once: the ETags had changed
    site.statuses.clear()
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES, 0, 0, 0, PAGES, 0)
    assert site.statuses == {304: PAGES}  # asked with the new ETags


async def test_nothing_fetched_exits_1_and_keeps_the_index(site: DocsSite, tmp_path: Path) -> None:
    policy = write_policy(tmp_path, {"sources": [{"sitemap": f"{site.url}/sitemap_index.xml"}]})
    status, out, err = await run_ingest(policy)
    assert status == 0, err
    assert summary(out) == (PAGES, PAGES, 0, 0, 0, 0)  # index → plain half + gzipped half
    await site.stop()
    status, out, err = await run_ingest(policy)
    assert status == 1
    assert summary(out) == (PAGES, 0, 0, 0, 0, 1)  # the sitemap is the one failure
    assert "no page could be fetched; the index is left as it was" in err
    assert any("tutorial-join.html" in h for h in await search(tmp_path, "joins between tables"))


async def test_crawl_gzip_sitemap_and_exclude(site: DocsSite, tmp_path: Path) -> None:
    block = {
        "sources": [
            {"crawl": site.page_url("tutorial-join.html"), "max_pages": 15},
            {"sitemap": f"{site.url}/sitemap.xml.gz"},
        ],
        "exclude": ["/docs/sql-*"],
    }
    status, out, err = await run_ingest(write_policy(tmp_path, block))
    assert status == 0, err
    sql_pages = sum(1 for p in site.root.glob("sql-*.html"))
    # The crawl also follows links to pages this copy of the manual lacks: 404s, failed.
    broken = site.statuses[404]
    assert broken > 0
    assert summary(out) == (PAGES - sql_pages,) * 2 + (0, 0, 0, broken)
    assert f"failed: {broken} HTTP 404" in err
    hits = await search(tmp_path, "SELECT retrieves rows from zero or more tables")
    assert hits
    assert not [h for h in hits if "/docs/sql-" in h]


async def test_cli_mistakes_exit_2(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, {"sources": [{"sitemap": "http://127.0.0.1:9/sitemap.xml"}]})
    status, _, err = await run_ingest(policy, "--route", "nope")
    assert status == 2
    assert "no route 'nope' with a knowledge block" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy.read_text().replace("sitemap: http://", "sitemap: ftp://"))
    status, _, err = await run_ingest(bad)
    assert status == 2
    assert "expected an http:// or https:// URL" in err
    assert sys.executable  # the CLI under test is this venv's


async def test_ingest_needs_no_openai_key(site: DocsSite, tmp_path: Path) -> None:
    """An ingest calls no model: a policy whose key is not set (a CI job, a cron on another
    host) ingests all the same."""
    store = f"sqlite:///{tmp_path / 'threads.db'}"
    route = agent_route(store, knowledge={"sources": [{"sitemap": f"{site.url}/sitemap.xml"}]})
    policy = tmp_path / "gateway.yaml"
    policy.write_text(yaml.safe_dump({"routes": [route]}))
    status, out, err = await run_ingest(policy, key=False)
    assert status == 0, err
    assert summary(out)[:2] == (PAGES, PAGES)
