"""`chatkit-gateway ingest --config FILE [--route NAME]`: bring routes' knowledge up to date.

Each route's index is opened in its own store (a separate engine: the SQLite store is in
WAL mode, so a running `serve` keeps reading the last committed index meanwhile) and
ingested under the index's refresh lock (a `serve` refreshing the same route at that
moment is waited for by neither: the second one says so and stops). A progress bar on a
terminal, plain lines otherwise; always the summary line. Exit 0; 1 when a route could not
be ingested (no page fetched, store down); 2 for a policy or argument mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from ..policy import PolicyError, load_policy
from .config import KnowledgeConfig
from .ingest import IngestEvent, IngestReport, ingest
from .refresh import knowledge_routes

PLAIN_EVERY = 100  # pages between two plain progress lines
_ENGINE_TIMEOUT = 30.0  # a batch job waits longer for a busy store than a request does


def run(config: Path, route: str | None) -> int:
    try:
        # An ingest calls no model: the OpenAI key the routes need is not asked for.
        policy = load_policy(config, stub_upstream=True)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    routes = knowledge_routes(policy)
    if route is not None:
        routes = [(r, k) for r, k in routes if r.name == route]
        if not routes:
            print(f"{config}: no route {route!r} with a knowledge block", file=sys.stderr)
            return 2
    if not routes:
        print(f"{config}: no route has a knowledge block", file=sys.stderr)
        return 2
    return asyncio.run(_all(routes))


async def _all(routes: list[tuple[Any, KnowledgeConfig]]) -> int:
    ingested = [await _one(route, config) for route, config in routes]  # each one tried
    return 0 if all(ingested) else 1


async def _one(route: Any, config: KnowledgeConfig) -> bool:
    from ..agent.store_schema import open_engine
    from .index import IndexConflict, IndexUnavailable
    from .sql_index import open_index

    name = route.name
    store = route.store
    engine = open_engine(
        store.url.reveal(), timeout=max(store.timeout_seconds, _ENGINE_TIMEOUT), pool_size=2
    )
    try:
        index = await open_index(engine)
        async with index.refresh_lock(name) as held:
            if not held:
                print(f"ingest {name}: another process is ingesting this route", file=sys.stderr)
                return False
            with _progress(name, sys.stderr) as progress:
                report = await ingest(name, config, index, progress=progress)
    except IndexConflict:
        print(f"ingest {name}: another ingest committed meanwhile; run again", file=sys.stderr)
        return False
    except (IndexUnavailable, OSError) as exc:
        # The message names what failed, never the store URL (it may carry a password).
        print(f"ingest {name}: {type(exc).__name__}: knowledge store unavailable", file=sys.stderr)
        return False
    finally:
        await engine.dispose()
    _summary(report)
    return report.committed


def _summary(report: IngestReport) -> None:
    print(report.line(), flush=True)
    if report.reasons:
        why = ", ".join(f"{n} {reason}" for reason, n in report.reasons)
        print(f"ingest {report.route}: failed: {why}", file=sys.stderr)
    if not report.committed:
        print(
            f"ingest {report.route}: no page could be fetched; the index is left as it was",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _progress(name: str, out: TextIO) -> Iterator[Callable[[IngestEvent], None]]:
    """A rich progress bar on a terminal; otherwise a line per failure and per 100 pages."""
    if not out.isatty():

        def plain(event: IngestEvent) -> None:
            if event.outcome == "failed":
                print(f"ingest {name}: failed {event.url}: {event.detail}", file=out)
            elif event.done % PLAIN_EVERY == 0:
                print(f"ingest {name}: {event.done} of {event.queued} pages", file=out)

        yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(f"ingest {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[url]}", style="dim"),
        console=Console(file=out),
        transient=True,
    ) as bar:
        task = bar.add_task(name, total=None, url="")

        def rich(event: IngestEvent) -> None:
            if event.outcome == "failed":
                bar.console.print(f"failed {event.url}: {event.detail}", markup=False)
            bar.update(task, completed=event.done, total=event.queued, url=event.url[-60:])

        yield rich
