"""Retrieval quality of the knowledge index: hit@k on the PostgreSQL 15 manual.

    python -m bench.knowledge_quality [--postgres]

Ingests Debian's postgresql-doc-15 HTML (a `path:` source, so no server is needed) into a
fresh SQLite index — and a private PostgreSQL with `--postgres` — then asks the questions
of tests/data/knowledge_questions.yaml. A question is a hit at k when one of the pages
that answer it is among the first k passages' pages. tests/test_knowledge_quality.py keeps
hit@8 above a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

import yaml

from gateway.agent.store_schema import open_engine
from gateway.knowledge.config import KnowledgeConfig, PathSource
from gateway.knowledge.ingest import ingest
from gateway.knowledge.sql_index import open_index

MANUAL = Path("/usr/share/doc/postgresql-doc-15/html")
QUESTIONS = Path(__file__).resolve().parent.parent / "tests" / "data" / "knowledge_questions.yaml"
BASE = "https://docs.example/pg15/"
ROUTE = "docs"
KS = (1, 3, 8)


@dataclasses.dataclass(frozen=True, slots=True)
class Quality:
    pages: int
    questions: int
    hits: dict[int, int]  # k → questions answered within the first k passages
    misses: tuple[str, ...]  # questions not answered within 8

    def rate(self, k: int) -> float:
        return self.hits[k] / self.questions

    def line(self, backend: str) -> str:
        rates = ", ".join(f"hit@{k} {self.rate(k):.0%}" for k in KS)
        return f"{backend}: {self.pages} pages, {self.questions} questions: {rates}"


def questions() -> list[tuple[str, set[str]]]:
    raw = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))
    return [(q["q"], {f"{BASE}{p}.html" for p in q["pages"]}) for q in raw]


async def measure(store_url: str, manual: Path = MANUAL) -> Quality:
    engine = open_engine(store_url, timeout=30.0, pool_size=2)
    try:
        index = await open_index(engine)
        config = KnowledgeConfig(sources=(PathSource(path=str(manual), base_url=BASE),))
        report = await ingest(ROUTE, config, index)
        asked = questions()
        hits = dict.fromkeys(KS, 0)
        misses = []
        for question, wanted in asked:
            found = await index.search(ROUTE, question, max(KS))
            urls = [urldefrag(hit.url).url for hit in found]
            for k in KS:
                if wanted & set(urls[:k]):
                    hits[k] += 1
            if not wanted & set(urls):
                misses.append(question)
        return Quality(report.pages, len(asked), hits, tuple(misses))
    finally:
        await engine.dispose()


async def _main(postgres: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        quality = await measure(f"sqlite:///{tmp}/knowledge.db")
    print(quality.line("SQLite FTS5"))
    for miss in quality.misses:
        print(f"  missed: {miss}")
    if postgres:
        from tests.support.postgres_server import running_postgres

        with running_postgres() as server:
            quality = await measure(server.new_database())
        print(quality.line("PostgreSQL"))
        for miss in quality.misses:
            print(f"  missed: {miss}")
    return 0


def manual_bench(description: str, run: Callable[[bool], Coroutine[Any, Any, int]]) -> int:
    """The command line of a bench over the manual: `--postgres`, the manual checked."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--postgres", action="store_true", help="also on a private PostgreSQL")
    args = parser.parse_args()
    if not MANUAL.is_dir():
        print(f"{MANUAL} is missing: apt-get install postgresql-doc-15", file=sys.stderr)
        return 2
    return asyncio.run(run(args.postgres))


def main() -> int:
    return manual_bench(__doc__.split("\n")[0], _main)


if __name__ == "__main__":
    sys.exit(main())
