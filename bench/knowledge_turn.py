"""What a site search adds to an agent turn: the tool call to its output, as the gateway
runs it (the progress update, the index search, the numbered passages).

    python -m bench.knowledge_turn [--postgres]

The PostgreSQL 15 manual (Debian's postgresql-doc-15) is ingested into a fresh store through
the real ingest; then the real `search_site` tool (gateway/knowledge/tool.py) is invoked the
way the Agents SDK invokes it, with the questions of tests/data/knowledge_questions.yaml,
ROUNDS times each, one at a time. The model's own time is not in it (no model here): this
is the part of the turn the gateway adds. Target (issue 21): p99 ≤ 25 ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from typing import Any

from agents.tool_context import ToolContext
from chatkit.agents import AgentContext
from chatkit.types import ThreadMetadata

from bench.knowledge_quality import BASE, MANUAL, ROUTE, manual_bench, questions
from gateway.agent.context import TurnContext
from gateway.agent.store_schema import open_engine
from gateway.knowledge.config import KnowledgeConfig, PathSource
from gateway.knowledge.ingest import ingest
from gateway.knowledge.sql_index import open_index
from gateway.knowledge.tool import TOOL_NAME, search_tool

ROUNDS = 10


def _turn() -> TurnContext:
    return TurnContext(user="u_bench", route=ROUTE, client="127.0.0.1", info=None)  # type: ignore[arg-type]


async def measure(store_url: str) -> list[float]:
    engine = open_engine(store_url, timeout=30.0, pool_size=2)
    try:
        index = await open_index(engine)
        config = KnowledgeConfig(sources=(PathSource(path=str(MANUAL), base_url=BASE),))
        await ingest(ROUTE, config, index)

        async def opened() -> Any:
            return index

        tool = search_tool(ROUTE, config.max_results, opened, lambda: None, timeout=5.0)
        thread = ThreadMetadata(id="thr_bench", created_at=time.time())  # type: ignore[arg-type]
        asked = [q for q, _ in questions()]
        times: list[float] = []
        for _ in range(ROUNDS):
            for question in asked:
                context = AgentContext(thread=thread, store=None, request_context=_turn())  # type: ignore[arg-type]
                arguments = json.dumps({"query": question})
                call = ToolContext(
                    context, tool_name=TOOL_NAME, tool_call_id="call_1", tool_arguments=arguments
                )
                started = time.perf_counter()
                output = await tool.on_invoke_tool(call, arguments)
                times.append(time.perf_counter() - started)
                assert output.startswith("[1]"), output[:200]
        return times
    finally:
        await engine.dispose()


def _line(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return (
        f"{name}: {len(ms)} searches, tool call to output p50 {statistics.median(ms):.1f} ms, "
        f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
    )


async def _main(postgres: bool) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        print(_line("SQLite", await measure(f"sqlite:///{tmp}/knowledge.db")))
    if postgres:
        from tests.support.postgres_server import running_postgres

        with running_postgres() as server:
            print(_line("PostgreSQL", await measure(server.new_database())))
    return 0


def main() -> int:
    return manual_bench(__doc__.split("\n")[0], _main)


if __name__ == "__main__":
    sys.exit(main())
