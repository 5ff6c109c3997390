"""Retrieval quality on real documentation no one here wrote: the PostgreSQL 15 manual
(Debian's postgresql-doc-15), 50 questions (tests/data/knowledge_questions.yaml), hit@8
kept above a fixed floor on both backends. bench/knowledge_quality.py prints the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.knowledge_quality import MANUAL, measure
from tests.support.postgres_server import running_postgres

pytestmark = pytest.mark.slow

# What the index reached when the floor was set (README, Performance), less a little room.
FLOOR = {"sqlite": 0.94, "postgresql": 0.90}


def _manual() -> Path:
    if not (MANUAL / "index.html").is_file():
        pytest.fail(f"{MANUAL} is missing: scripts/system-deps.sh installs postgresql-doc-15")
    return MANUAL


async def test_hit_at_8_on_sqlite(tmp_path: Path) -> None:
    quality = await measure(f"sqlite:///{tmp_path}/knowledge.db", _manual())
    assert quality.pages > 1000
    assert quality.rate(8) >= FLOOR["sqlite"], quality.misses


async def test_hit_at_8_on_postgresql() -> None:
    with running_postgres() as server:
        quality = await measure(server.new_database(), _manual())
    assert quality.pages > 1000
    assert quality.rate(8) >= FLOOR["postgresql"], quality.misses
