"""Ingest speed and memory (SPEC §9): the PostgreSQL 15 manual (~1,170 pages) on loopback.

`python -m bench.knowledge_ingest`: the docs site runs in a process of its own (pinned to
the other core when there is one); each ingest runs in a fresh process pinned to one core,
into a SQLite store: a first run (every page fetched, extracted, indexed), then an
unchanged re-run (every page a 304). Reported: pages/s, and peak RSS above the process's
idle RSS (everything imported, before the ingest), from /proc (VmHWM - VmRSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITE_PORT = 8765


def _rss(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _child(sitemap: str, db: str) -> dict[str, object]:
    from gateway.agent.store_schema import open_engine
    from gateway.knowledge.config import KnowledgeConfig, SitemapSource
    from gateway.knowledge.ingest import ingest
    from gateway.knowledge.sql_index import open_index

    engine = open_engine(f"sqlite:///{db}", timeout=30, pool_size=1)
    index = await open_index(engine)
    config = KnowledgeConfig(sources=(SitemapSource(sitemap=sitemap),))
    await index.pages("bench")  # warm: the first query's setup is not the ingest's
    idle = _rss("VmRSS")
    cpu = time.process_time()
    report = await ingest("bench", config, index)
    cpu = time.process_time() - cpu
    await engine.dispose()
    return {
        "line": report.line(),
        "failed": dict(report.reasons),
        "pages": report.fetched,
        "seconds": report.seconds,
        "cpu": cpu,
        "idle_mib": idle,
        "peak_above_idle_mib": _rss("VmHWM") - idle,
    }


def child(sitemap: str, db: str) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    print(json.dumps(asyncio.run(_child(sitemap, db))), flush=True)


def main() -> None:
    cores = os.cpu_count() or 1
    site = subprocess.Popen(
        [sys.executable, "-m", "tests.support.docs_site"], stdout=subprocess.PIPE, text=True
    )
    try:
        if hasattr(os, "sched_setaffinity") and cores > 1:
            os.sched_setaffinity(site.pid, {1})
        assert site.stdout is not None
        line = site.stdout.readline()  # "serving … at URL/sitemap.xml"
        sitemap = line.split(" at ", 1)[1].strip()
        with tempfile.TemporaryDirectory() as tmp:
            db = str(Path(tmp) / "k.db")
            runs = []
            for label in ("first run", "unchanged re-run"):
                out = subprocess.run(
                    [sys.executable, "-m", "bench.knowledge_ingest", "--child", sitemap, db],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append((label, result))
        for label, r in runs:
            rate = r["pages"] / r["seconds"]
            print(
                f"{label:17} {r['pages']} pages in {r['seconds']:.2f} s = {rate:,.0f} pages/s; "
                f"CPU {r['cpu']:.2f} s; peak RSS +{r['peak_above_idle_mib']:.0f} MiB above "
                f"idle ({r['idle_mib']:.0f} MiB)\n  {r['line']}; failed: {r['failed']}"
            )
    finally:
        site.terminate()
        site.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, metavar=("SITEMAP", "DB"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
    else:
        main()
