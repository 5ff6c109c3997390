"""`python -m bench.knowledge_search`: the knowledge index's search latency and hit@8.

Corpus: the PostgreSQL 15 manual as Debian ships it (/usr/share/doc/postgresql-doc-15/html,
~1,100 pages), each page extracted and split into passages by the ingest's own code
(gateway/knowledge/extract.py, passages.py); no HTTP.

Per backend (SQLite FTS5 in a temporary file; a private PostgreSQL from
tests/support/postgres_server.py, on the same machine): build the index through the real
KnowledgeIndex (begin/put/commit), then run every question ROUNDS times, one at a time,
through `search(route, question, 8)`: the latency is the call's, as the agent's tool sees it.
hit@8: a question counts when one of its expected pages is among the 8 passages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.agent.store_schema import open_engine
from gateway.knowledge.extract import extract_html
from gateway.knowledge.index import KnowledgeIndex
from gateway.knowledge.model import Page
from gateway.knowledge.passages import page
from gateway.knowledge.sql_index import open_index
from tests.support.postgres_server import running_postgres

CORPUS = Path("/usr/share/doc/postgresql-doc-15/html")
BASE = "https://www.postgresql.org/docs/15/"
ROUTE = "docs"

# Natural-language questions a visitor would ask, with the pages that answer them.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("How do I back up a database with pg_dump?", ("backup-dump", "app-pgdump")),
    ("How can I restore a dump file?", ("app-pgrestore", "backup-dump")),
    ("What does VACUUM do and why is it needed?", ("routine-vacuuming", "sql-vacuum")),
    ("How do I create an index on a column?", ("sql-createindex", "indexes-intro")),
    ("What are partial indexes?", ("indexes-partial",)),
    ("Which index types are there, B-tree, hash, GIN?", ("indexes-types",)),
    ("How does full text search ranking work?", ("textsearch-controls",)),
    ("How do I set up continuous archiving and point-in-time recovery?",
     ("continuous-archiving",)),
    ("How do I configure client authentication in pg_hba.conf?", ("auth-pg-hba-conf",)),
    ("How much memory should shared_buffers and work_mem get?", ("runtime-config-resource",)),
    ("How do I load a CSV file into a table?", ("sql-copy",)),
    ("What is the difference between json and jsonb?", ("datatype-json",)),
    ("Which operators work on jsonb values?", ("functions-json",)),
    ("How do I partition a large table by range?", ("ddl-partitioning",)),
    ("How do I set up a hot standby server?", ("warm-standby", "hot-standby")),
    ("How does logical replication with publications and subscriptions work?",
     ("logical-replication", "logical-replication-publication",
      "logical-replication-subscription", "sql-createsubscription")),
    ("How do I read the output of EXPLAIN ANALYZE?", ("using-explain", "sql-explain")),
    ("What transaction isolation levels are supported?", ("transaction-iso",)),
    ("What are the table-level lock modes?", ("explicit-locking",)),
    ("How do I write a trigger function in PL/pgSQL?", ("plpgsql-trigger",)),
    ("How do I use a WITH query, a common table expression?", ("queries-with",)),
    ("How do window functions like rank and row_number work?",
     ("tutorial-window", "functions-window")),
    ("How do I add a column to an existing table?", ("sql-altertable", "ddl-alter")),
    ("How do I define a foreign key constraint?", ("ddl-constraints",)),
    ("How do I get the current date and time?", ("functions-datetime",)),
    ("How do I enable SSL connections on the server?", ("ssl-tcp",)),
    ("How do I grant privileges on a table to a role?", ("sql-grant", "ddl-priv")),
    ("How does row level security work?", ("ddl-rowsecurity",)),
    ("How do I upgrade to a new major version with pg_upgrade?", ("pgupgrade", "upgrading")),
    ("What is a connection string in libpq?", ("libpq-connect",)),
    ("How do I configure checkpoints and the write-ahead log?", ("wal-configuration",)),
    ("How do I log slow queries?", ("runtime-config-logging",)),
    ("How do I create an enum type?", ("datatype-enum",)),
    ("How do I create a sequence for auto-increment ids?", ("sql-createsequence",)),
    ("How do I send notifications with LISTEN and NOTIFY?", ("sql-notify", "sql-listen")),
    ("How do I rebuild a corrupted index?", ("sql-reindex",)),
    ("Which statistics views show database activity?", ("monitoring-stats",)),
    ("How do I install an extension?", ("sql-createextension",)),
    ("Which string functions can replace or split text?", ("functions-string",)),
    ("How do I insert rows and return the generated id?", ("sql-insert", "dml-returning")),
]  # fmt: skip


def load_page(path: Path) -> Page:
    """As the ingest makes it: extracted (selectolax) and split along the headings."""
    url = BASE + path.name
    return page(url, extract_html(path.read_text(errors="replace"), url))


async def measure(url: str, corpus: list[Page], rounds: int) -> dict[str, Any]:
    engine = open_engine(url, timeout=30, pool_size=4)
    try:
        index: KnowledgeIndex = await open_index(engine)
        started = time.perf_counter()
        build = await index.begin(ROUTE)
        for item in corpus:
            await build.put(item)
        await build.commit()
        built = time.perf_counter() - started
        hits = 0
        for question, expected in QUESTIONS:
            found = await index.search(ROUTE, question, 8)
            names = {
                hit.url.removeprefix(BASE).split("#")[0].removesuffix(".html") for hit in found
            }
            hits += bool(names & set(expected))
        latencies: list[float] = []
        cpu = time.process_time()
        for _ in range(rounds):
            for question, _expected in QUESTIONS:
                began = time.perf_counter()
                await index.search(ROUTE, question, 8)
                latencies.append((time.perf_counter() - began) * 1000)
        cpu = time.process_time() - cpu
        latencies.sort()
        return {
            "index_seconds": round(built, 1),
            "searches": len(latencies),
            "p50_ms": round(statistics.median(latencies), 2),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
            "max_ms": round(latencies[-1], 2),
            # this process's CPU per search (SQLite: all of it; PostgreSQL: the client's)
            "cpu_ms_per_search": round(cpu * 1000 / len(latencies), 2),
            "hit_at_8": f"{hits}/{len(QUESTIONS)}",
        }
    finally:
        await engine.dispose()


async def run(rounds: int, backends: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    corpus = [load_page(path) for path in sorted(CORPUS.glob("*.html"))]
    passages = sum(len(item.passages) for item in corpus)
    results: dict[str, Any] = {
        "pages": len(corpus),
        "passages": passages,
        "parse_seconds": round(time.perf_counter() - started, 1),
    }
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as folder:
            results["sqlite"] = await measure(f"sqlite:///{folder}/store.db", corpus, rounds)
    if "postgresql" in backends:
        with running_postgres() as server:
            results["postgresql"] = await measure(server.url, corpus, rounds)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="times each question is asked")
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.backend or ["sqlite", "postgresql"]))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
