"""Peak resident memory of `chatkit-gateway conversations` as the store grows.

The export streams one query and holds one thread at a time (gateway/agent/export.py), so
its peak should not follow the store's size. A store is filled with N threads written the
way `serve` writes them (the SDK's own JSON: a question, a cited answer, a follow-up, an
uncited answer; feedback on every other thread), then the real command runs in a fresh
process that reports its own peak (`ru_maxrss`), JSON Lines to a file, for each N. Also the
same on a private PostgreSQL with `--postgres`.

Run: .venv/bin/python -m bench.export_rss [--sizes 1000,10000] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import free_port

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000
POLICY = """
server: {{host: 127.0.0.1, port: {port}}}
upstream: {{base_url: "http://127.0.0.1:9/v1", api_key: sk-bench-not-a-real-key}}
limiter: {{backend: memory}}
routes:
  - name: assistant
    path: /chatkit/assistant
    kind: chatkit_agent
    allowed_origins: [https://example.org]
    agent: {{model: gpt-6.1-terra, instructions: Answer briefly.}}
    store: {{url: "{url}"}}
"""
_MEASURE = """
import resource, sys
from gateway.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


async def fill(url: str, threads: int) -> None:
    """`threads` conversations, as the gateway stores them, in batches."""
    from chatkit.types import (
        Annotation,
        AssistantMessageContent,
        AssistantMessageItem,
        InferenceOptions,
        ThreadMetadata,
        URLSource,
        UserMessageItem,
        UserMessageTextContent,
    )

    from gateway.agent.store import migrate
    from gateway.agent.store_schema import _now, feedback, items, open_engine
    from gateway.agent.store_schema import threads as table

    engine = open_engine(url, timeout=60, pool_size=1)
    await migrate(engine)
    now = _now()
    source = URLSource(url="https://example.org/docs/hours", title="Opening hours")
    answer = "We open at nine and close at five on weekdays; on Saturdays until noon. " * 4
    try:
        for start in range(0, threads, BATCH):
            rows: dict[str, list[dict[str, object]]] = {"t": [], "i": [], "f": []}
            for n in range(start, min(start + BATCH, threads)):
                tid, user, when = f"thr_{n:08d}", f"user{n % 997:027d}", now
                data = ThreadMetadata(id=tid, title=f"Hours question {n}", created_at=when)
                rows["t"].append({"id": tid, "user_id": user, "created_at": when,
                                  "updated_at": when, "data": data.model_dump_json()})  # fmt: skip
                for k in range(4):
                    iid = f"msg_{n:08d}_{k}"
                    if k % 2 == 0:
                        asked = UserMessageTextContent(text=f"When do you open? ({n}, {k})")
                        item: object = UserMessageItem(
                            id=iid, thread_id=tid, created_at=when, content=[asked],
                            inference_options=InferenceOptions(),
                        )  # fmt: skip
                    else:
                        notes = [Annotation(source=source, index=len(answer))] if k == 1 else []
                        item = AssistantMessageItem(
                            id=iid, thread_id=tid, created_at=when,
                            content=[AssistantMessageContent(text=answer, annotations=notes)],
                        )  # fmt: skip
                    dumped = item.model_dump_json()  # type: ignore[attr-defined]
                    rows["i"].append({"id": iid, "thread_id": tid, "user_id": user, "data": dumped})
                if n % 2:
                    rows["f"].append({"thread_id": tid, "item_id": f"msg_{n:08d}_3",
                                      "user_id": user, "kind": "negative",
                                      "created_at": when})  # fmt: skip
            async with engine.begin() as conn:
                await conn.execute(table.insert(), rows["t"])
                await conn.execute(items.insert(), rows["i"])
                await conn.execute(feedback.insert(), rows["f"])
    finally:
        await engine.dispose()


def export_peak(config: Path, out: Path) -> tuple[int, float, int]:
    """(peak RSS in KiB, seconds, lines written) of one export in a fresh process."""
    args = ["conversations", "--config", str(config), "--route", "assistant"]
    started = time.monotonic()
    done = subprocess.run(
        [PY, "-c", _MEASURE, *args, "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    peak = int(done.stderr.strip().splitlines()[-1])
    with out.open("rb") as f:
        lines = sum(1 for _ in f)
    return peak, seconds, lines


async def measure(label: str, urls: dict[int, str], tmp: Path) -> None:
    for size, url in urls.items():
        await fill(url, size)
        config = tmp / f"policy-{size}.yaml"
        config.write_text(POLICY.format(port=free_port(), url=url))
        peak, seconds, lines = export_peak(config, tmp / f"export-{size}.jsonl")
        assert lines == size, (lines, size)
        mib, written = peak / 1024, (tmp / f"export-{size}.jsonl").stat().st_size / 2**20
        print(f"{label:<10} {size:>7} threads: peak RSS {mib:6.1f} MiB, {seconds:5.1f} s, "
              f"{written:.1f} MiB written")  # fmt: skip


async def _main(sizes: list[int], postgres: bool) -> None:
    print(f"{dt.date.today()} conversations export, JSON Lines to a file")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        await measure("SQLite", {n: f"sqlite:///{tmp}/threads-{n}.db" for n in sizes}, tmp)
        if postgres:
            from tests.support.postgres_server import running_postgres

            with running_postgres() as server:
                urls = {n: server.new_database() for n in sizes}
                await measure("PostgreSQL", urls, tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="store sizes, in threads")
    parser.add_argument("--postgres", action="store_true", help="also on a private PostgreSQL")
    args = parser.parse_args()
    asyncio.run(_main([int(s) for s in args.sizes.split(",")], args.postgres))
    return 0


if __name__ == "__main__":
    sys.exit(main())
