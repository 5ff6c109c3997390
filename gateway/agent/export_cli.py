"""`chatkit-gateway conversations --config FILE --route NAME [--since 7d] [--format jsonl|csv]
[--output FILE] [--summary]`: a route's conversations, read from its store (export.py).

Read-only: the store is opened on its own engine and never migrated here (`serve` does that);
a store of another schema version is refused with what to do. Records (or the summary) go to
stdout or `--output`; one line on stderr says how many. Exit 0; 1 when the store cannot be
read; 2 for a policy or argument mistake. Errors name what failed, never the store URL (it
may carry a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Any, TextIO

from ..policy import PolicyError, load_policy
from ..policy.types import _duration
from .config import KIND

_ENGINE_TIMEOUT = 30.0  # a batch job waits longer for a busy store than a request does


def since_cutoff(value: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """`7d`, `12h`, … → the naive UTC time that far back (the store's columns are UTC)."""
    if value is None:
        return None
    seconds = _duration(value)  # ValueError: "expected a duration like 30s, …"
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return now - dt.timedelta(seconds=seconds)


def run(
    config: Path,
    route_name: str,
    since: str | None,
    fmt: str,
    output: Path | None,
    summary: bool,
) -> int:
    try:
        policy = load_policy(config, stub_upstream=True)  # the upstream's key is not needed
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    route = next((r for r in policy.routes if r.name == route_name), None)
    if route is None or route.kind != KIND:
        print(f"{config}: no {KIND} route named {route_name!r}", file=sys.stderr)
        return 2
    try:
        cutoff = since_cutoff(since)
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    url = getattr(route, "store").url.reveal()  # noqa: B009 (StoreConfig; kind-specific)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        print(
            f"conversations {route_name}: the store's SQLite file does not exist", file=sys.stderr
        )
        return 1
    with contextlib.ExitStack() as stack:
        out: TextIO = sys.stdout
        if output is not None:
            newline = "" if fmt == "csv" else None
            out = stack.enter_context(output.open("w", encoding="utf-8", newline=newline))
        return asyncio.run(_export(route_name, url, cutoff, fmt, out, summary))


async def _export(
    name: str, url: str, cutoff: dt.datetime | None, fmt: str, out: TextIO, summary: bool
) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from .export import FEEDBACK_SINCE, Summary, Writer, thread_records
    from .store_migrations import SCHEMA_VERSION, _stored_version
    from .store_schema import open_engine

    engine = open_engine(url, timeout=_ENGINE_TIMEOUT, pool_size=1)
    count = 0
    try:
        async with engine.connect() as conn:
            version = await conn.run_sync(_stored_version)
        problem = _version_problem(version, SCHEMA_VERSION)
        if problem:
            print(f"conversations {name}: {problem}", file=sys.stderr)
            return 1
        assert version is not None
        totals = Summary()
        writer: Any = None if summary else Writer(out, fmt)
        records = thread_records(engine, cutoff, with_feedback=version >= FEEDBACK_SINCE)
        async for record in records:
            count += 1
            if writer is None:
                totals.add(record)
            else:
                writer.write(record)
        if summary:
            for line in totals.lines():
                out.write(line + "\n")
        out.flush()
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        kind = type(getattr(exc, "orig", None) or exc).__name__
        print(f"conversations {name}: {kind}: the store could not be read", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    print(f"conversations {name}: {count} threads", file=sys.stderr)
    return 0


def _version_problem(found: int | None, known: int) -> str:
    if found is None:
        return "the store has no conversations yet (serve creates its tables)"
    if found > known:
        return f"the store has schema version {found}; this gateway reads up to {known}"
    return ""
