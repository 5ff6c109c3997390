"""`python -m bench.agent_bench`: the gateway's `chatkit_agent` route beside OpenAI's own
sample stack, against one fake Responses upstream, interleaved, at 1 and 200 conversations.

Processes: the fake upstream (bench/agent_upstream.py: N text deltas, a fixed delay before
each) and this load client on core 1; the server under test on core 0, started afresh for
each round: either `chatkit-gateway serve` (one chatkit_agent route: origin check, two
rate limits and two token budgets raised so nothing is refused, a stream cap, SQLite
store, metrics, JSON access log) or bench/agent_sample_stack.py (FastAPI on uvicorn,
ChatKitServer, in-memory store, none of those). Rounds alternate which server goes first.

Each conversation is a `threads.create` streaming a whole answer; the client checks it
got every delta of the answer. Per server and concurrency C:
- added time to first text delta: the client's (request sent → first `text_delta` event)
  minus the upstream's own (its handler entered → its first delta written), per
  conversation, matched by a tag in the user message;
- CPU per streamed event: the server's utime+stime (/proc/PID/stat, all its threads)
  over the phase / the SSE events the clients received;
- RSS per open conversation: the server's RSS at the moment all C conversations are
  streaming (each has its first delta, none has finished) minus its RSS just before,
  / C (at C=1: the median over the phase's conversations, sampled mid-answer).
C=1: `--sequential` conversations one after another; C=200: all opened at once, their
deltas after the first `--burst-pace` apart (the upstream's `pace:`), so that all are still
open when the last one's first delta arrives; the first delta comes as at C=1.
The sample stack's uvicorn uses httptools when it is installed (the samples'
`uvicorn[standard]`), else h11: `--sample-http` chooses, the report says which ran.
Results: bench/results/agent_bench.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.agent_upstream import API_KEY, answer_chunks
from bench.common import cpu_seconds, free_port, status_kib, use_uvloop, wait_ready

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PY = sys.executable
GATEWAY = str(Path(PY).with_name("chatkit-gateway"))
ORIGIN = "https://example.org"
TARGETS = ("gateway", "sample")
SERVER_CORE, CLIENT_CORE = "0", "1"

POLICY = """
server:
  host: 127.0.0.1
  port: {port}
  shutdown_grace_seconds: 0
  max_connections: 10000
  max_connections_per_client: 10000
upstream:
  base_url: http://127.0.0.1:{upstream}/v1
  api_key: {api_key}
  timeout_seconds: 30
  retries: 2
  max_rate: null
limiter: {{backend: memory}}
routes:
  - name: assistant
    path: /chatkit/assistant
    kind: chatkit_agent
    allowed_origins: [{origin}]
    agent:
      model: gpt-6.1-terra
      instructions: You are the assistant of this site. Answer briefly.
      history_items: 30
    store:
      url: sqlite:///{db}
      retention: 30d
    rate_limits:
      - {{key: client_ip, requests: 1000000000, per: 1h}}
      - {{key: client_ip, requests: 1000000000, per: 1h, types: [threads.create]}}
    token_budgets:
      - {{key: user, tokens: 1000000000000, per: 1d}}
      - {{key: global, tokens: 1000000000000, per: 1d}}
    max_streams_per_client: 10000
"""


@dataclass
class Conversation:
    tag: str
    status: int = 0
    events: int = 0
    deltas: int = 0
    text: str = ""
    started: float = 0.0
    first_delta: float | None = None  # seconds after `started`
    finished: bool = False
    error: str = ""


@dataclass
class Phase:
    target: str
    round: int
    concurrency: int
    conversations: int
    errors: int
    events: int
    events_per_conversation: float
    added_ttfd_ms: list[float]
    upstream_ttfd_ms_p50: float
    cpu_seconds: float
    cpu_us_per_event: float | None
    cpu_ms_per_conversation: float
    rss_idle_kib: int
    rss_open_kib: int
    rss_kib_per_conversation: float
    streaming_at_sample: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def rss_kib(pid: int) -> int:
    return status_kib(pid, "VmRSS")


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, chunks: list[str]) -> None:
        self.session = session
        self.url = url
        self.expected = "".join(chunks)
        self.deltas = len(chunks)
        self.tags = itertools.count()
        self.streaming = 0  # conversations with their first delta and not finished

    async def converse(
        self,
        label: str,
        on_delta: Callable[[Conversation], None] | None = None,
        pace_ms: int | None = None,
    ) -> Conversation:
        n = next(self.tags)
        conv = Conversation(tag=f"ckb-{label}-{n:06d}")
        text = f"Hello, {conv.tag}" + (f" pace:{pace_ms}" if pace_ms else "")
        body = {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": text}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
        headers = {
            "Origin": ORIGIN,
            "X-Device-Id": f"bench-device-{n:012d}",
            "Content-Type": "application/json",
        }
        conv.started = time.perf_counter()
        try:
            async with self.session.post(self.url, data=json.dumps(body), headers=headers) as r:
                conv.status = r.status
                if r.status != 200:
                    conv.error = (await r.text())[:200]
                    return conv
                async for line in r.content:
                    if not line.startswith(b"data: "):
                        continue
                    conv.events += 1
                    if b"content_part.text_delta" not in line:
                        continue
                    event = json.loads(line[6:])
                    conv.text += event["update"]["delta"]
                    conv.deltas += 1
                    if conv.first_delta is None:
                        conv.first_delta = time.perf_counter() - conv.started
                        self.streaming += 1
                    if on_delta is not None:
                        on_delta(conv)
        except (aiohttp.ClientError, TimeoutError) as exc:
            conv.error = repr(exc)
        finally:
            if conv.first_delta is not None:
                self.streaming -= 1
            conv.finished = True
        if not conv.error and conv.text != self.expected:
            conv.error = f"got {conv.deltas} deltas, text {conv.text[:60]!r}"
        return conv


async def upstream_ttfd(session: aiohttp.ClientSession, upstream: str) -> dict[str, float]:
    async with session.get(f"{upstream}/stats") as r:
        return dict((await r.json())["ttfd"])


async def run_phase(
    client: Client,
    session: aiohttp.ClientSession,
    upstream: str,
    pid: int,
    target: str,
    rnd: int,
    concurrency: int,
    sequential: int,
    pace_ms: int,
) -> Phase:
    await asyncio.sleep(0.5)  # settle after the warm-up / the previous phase
    label = f"{target}-r{rnd}-c{concurrency}"
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    convs: list[Conversation] = []
    rss_idle_all: list[int] = []
    rss_open_all: list[int] = []
    streaming_at_sample = 0
    if concurrency == 1:
        for _ in range(sequential):
            idle = rss_kib(pid)
            sampled: list[int] = []

            def at_half(conv: Conversation, sampled: list[int] = sampled) -> None:
                if conv.deltas == client.deltas // 2 + 1 and not sampled:
                    sampled.append(rss_kib(pid))

            convs.append(await client.converse(label, at_half))
            if sampled:
                rss_idle_all.append(idle)
                rss_open_all.append(sampled[0])
        streaming_at_sample = 1
    else:
        idle = rss_kib(pid)
        sample: list[int] = []

        def all_streaming(conv: Conversation) -> None:
            nonlocal streaming_at_sample
            if conv.deltas == 1 and client.streaming == concurrency and not sample:
                sample.append(rss_kib(pid))
                streaming_at_sample = client.streaming

        peak = [0, idle]  # the most conversations streaming at once seen, and RSS then

        async def peak_watch() -> None:  # in case they are never all streaming at once
            while True:
                if client.streaming > peak[0]:
                    peak[:] = [client.streaming, rss_kib(pid)]
                await asyncio.sleep(0.005)

        tasks = [
            asyncio.create_task(client.converse(label, all_streaming, pace_ms))
            for _ in range(concurrency)
        ]
        watcher = asyncio.create_task(peak_watch())
        convs = list(await asyncio.gather(*tasks))
        watcher.cancel()
        if not sample:
            streaming_at_sample = peak[0]
            sample.append(peak[1])
        rss_idle_all.append(idle)
        rss_open_all.append(sample[0])
    cpu1, t1 = cpu_seconds(pid), time.perf_counter()
    ttfd_up = await upstream_ttfd(session, upstream)
    ok = [c for c in convs if not c.error and c.first_delta is not None]
    added = [
        round((c.first_delta - ttfd_up[c.tag]) * 1e3, 3)
        for c in ok
        if c.first_delta is not None and c.tag in ttfd_up
    ]
    events = sum(c.events for c in convs)
    per_conv = [(o - i) for i, o in zip(rss_idle_all, rss_open_all, strict=True)]
    rss_per = (
        statistics.median(per_conv)
        if concurrency == 1 and per_conv
        else sum(per_conv) / concurrency
    )
    errors = [c for c in convs if c.error]
    return Phase(
        target=target,
        round=rnd,
        concurrency=concurrency,
        conversations=len(convs),
        errors=len(errors),
        events=events,
        events_per_conversation=events / len(convs) if convs else 0.0,
        added_ttfd_ms=added,
        upstream_ttfd_ms_p50=round(
            statistics.median([ttfd_up[c.tag] for c in ok if c.tag in ttfd_up] or [0.0]) * 1e3, 3
        ),
        cpu_seconds=round(cpu1 - cpu0, 4),
        cpu_us_per_event=round((cpu1 - cpu0) / events * 1e6, 2) if events else None,
        cpu_ms_per_conversation=round((cpu1 - cpu0) / len(convs) * 1e3, 2) if convs else 0.0,
        rss_idle_kib=rss_idle_all[0] if rss_idle_all else 0,
        rss_open_kib=rss_open_all[0] if rss_open_all else 0,
        rss_kib_per_conversation=round(rss_per, 2),
        streaming_at_sample=streaming_at_sample,
        seconds=round(t1 - t0, 3),
        extra={"first_errors": [c.error for c in errors[:3]]},
    )


def sample_http(choice: str) -> str:
    """What uvicorn's `http` setting comes to in the sample stack's process."""
    if choice != "auto":
        return choice
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def start_server(
    target: str, port: int, upstream_port: int, tmp: Path, http: str = "auto"
) -> subprocess.Popen[bytes]:
    if target == "gateway":
        policy = tmp / "gateway.yaml"
        policy.write_text(
            POLICY.format(
                port=port,
                upstream=upstream_port,
                api_key=API_KEY,
                origin=ORIGIN,
                db=tmp / "threads.db",
            )
        )
        cmd = [GATEWAY, "serve", "--config", str(policy)]
    else:
        up = f"http://127.0.0.1:{upstream_port}/v1"
        cmd = [PY, "-m", "bench.agent_sample_stack", str(port), up, "--api-key", API_KEY,
               "--http", http]  # fmt: skip
    return subprocess.Popen(
        ["taskset", "-c", SERVER_CORE, *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=HERE.parent,
    )


async def gateway_evidence(session: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """What the gateway's own metrics say it did (requests counted, tokens charged)."""
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    wanted = (
        "chatkit_gateway_chatkit_requests_total",
        "chatkit_gateway_model_tokens_total",
        "chatkit_gateway_rate_limited_total",
    )
    out = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        for name in wanted:
            if line.startswith(name + "{"):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


async def one_server(
    args: argparse.Namespace, target: str, rnd: int, upstream_port: int
) -> list[Phase]:
    port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    chunks = answer_chunks(args.deltas)
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(target, port, upstream_port, Path(tmp), args.sample_http)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base + ("/healthz" if target == "gateway" else "/"), timeout=60)
            url = base + ("/chatkit/assistant" if target == "gateway" else "/chatkit")
            connector = aiohttp.TCPConnector(limit=0)
            timeout = aiohttp.ClientTimeout(total=90)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                client = Client(session, url, chunks)
                for _ in range(2):  # warm-up: imports, pools, first-request paths
                    await client.converse(f"{target}-warm")
                await asyncio.gather(*(client.converse(f"{target}-warm") for _ in range(20)))
                phases = []
                for concurrency in args.concurrency:
                    phase = await run_phase(
                        client, session, upstream, proc.pid, target, rnd, concurrency,
                        args.sequential, round(args.burst_pace * 1000),
                    )  # fmt: skip
                    if target == "gateway":
                        phase.extra["metrics"] = await gateway_evidence(session, base)
                    phases.append(phase)
                    brief = {k: v for k, v in asdict(phase).items() if k != "added_ttfd_ms"}
                    print(json.dumps(brief), file=sys.stderr)
            return phases
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarise(phases: list[Phase]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for p in phases:
        out.setdefault(str(p.concurrency), {}).setdefault(p.target, {})
    for conc, targets in out.items():
        for target in targets:
            mine = [p for p in phases if str(p.concurrency) == conc and p.target == target]
            added = [v for p in mine for v in p.added_ttfd_ms]
            cpu = sum(p.cpu_seconds for p in mine)
            events = sum(p.events for p in mine)
            targets[target] = {
                "conversations": sum(p.conversations for p in mine),
                "errors": sum(p.errors for p in mine),
                "events_per_conversation": statistics.median(
                    p.events_per_conversation for p in mine
                ),
                "added_ttfd_ms_p50": pct(added, 0.5),
                "added_ttfd_ms_p90": pct(added, 0.9),
                "added_ttfd_ms_max": pct(added, 1.0),
                "upstream_ttfd_ms_p50": statistics.median(p.upstream_ttfd_ms_p50 for p in mine),
                "cpu_us_per_event": cpu / events * 1e6 if events else None,
                "cpu_us_per_event_rounds": [p.cpu_us_per_event for p in mine],
                "cpu_ms_per_conversation": cpu * 1e3 / max(1, sum(p.conversations for p in mine)),
                "rss_kib_per_conversation": statistics.median(
                    p.rss_kib_per_conversation for p in mine
                ),
                "rss_kib_per_conversation_rounds": [p.rss_kib_per_conversation for p in mine],
                "rss_mib_idle": statistics.median(p.rss_idle_kib for p in mine) / 1024,
                "streaming_at_sample_min": min(p.streaming_at_sample for p in mine),
            }
    return out


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


def markdown(summary: dict[str, dict[str, dict[str, Any]]], args: argparse.Namespace) -> str:
    def fmt(v: float | None, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    rows = [
        ("added time to first text delta, p50 (ms)", "added_ttfd_ms_p50", ".2f"),
        ("added time to first text delta, p90 (ms)", "added_ttfd_ms_p90", ".2f"),
        ("CPU per streamed event (µs)", "cpu_us_per_event", ".0f"),
        ("CPU per conversation (ms)", "cpu_ms_per_conversation", ".1f"),
        ("RSS per open conversation (KiB)", "rss_kib_per_conversation", ".0f"),
    ]
    lines = [
        f"Machine: {machine()}; upstream: {args.deltas} deltas, {args.delay * 1e3:.0f} ms "
        f"before each (at {max(args.concurrency)}: {args.burst_pace * 1e3:.0f} ms after the "
        f"first); {args.rounds} rounds; sample stack's uvicorn on {sample_http(args.sample_http)}.",
        "",
        "| conversations | measure | gateway | sample stack | gateway / sample |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for conc, targets in summary.items():
        g, s = targets.get("gateway", {}), targets.get("sample", {})
        for label, key, spec in rows:
            gv, sv = g.get(key), s.get(key)
            ratio = f"{gv / sv:.2f}" if gv is not None and sv and sv > 0 else "—"
            lines.append(f"| {conc} | {label} | {fmt(gv, spec)} | {fmt(sv, spec)} | {ratio} |")
    lines.append("")
    for conc, targets in summary.items():
        for target, t in targets.items():
            lines.append(
                f"- {target} at {conc}: {t['conversations']} conversations, {t['errors']} errors, "
                f"{t['events_per_conversation']:.0f} events each, upstream's own first delta "
                f"{t['upstream_ttfd_ms_p50']:.1f} ms, idle RSS {t['rss_mib_idle']:.1f} MiB, "
                f"{t['streaming_at_sample_min']} streaming when RSS was sampled"
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace, upstream_port: int) -> list[Phase]:
    phases: list[Phase] = []
    for rnd in range(args.rounds):
        order = TARGETS if rnd % 2 == 0 else TARGETS[::-1]
        for target in order:
            phases += await one_server(args, target, rnd, upstream_port)
    return phases


# What the sample stack (bench/agent_sample_stack.py) and the gateway's agent route import,
# with the extra of pyproject.toml that brings each. Checked first: a missing one would
# otherwise show only as a server that "did not come up", a minute and a half later.
NEEDS = {"fastapi": "dev", "uvicorn": "dev", "agents": "agent", "chatkit": "agent"}


def missing_dependencies() -> list[str]:
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 200])
    parser.add_argument("--sequential", type=int, default=5, help="conversations at C=1")
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each delta")
    parser.add_argument(
        "--burst-pace", type=float, default=0.6,
        help="seconds between the deltas after the first, when C > 1",
    )  # fmt: skip
    parser.add_argument("--sample-http", default="auto", choices=["auto", "h11", "httptools"])
    parser.add_argument("--quick", action="store_true", help="1 round: a smoke run")
    args = parser.parse_args()
    if missing := missing_dependencies():
        extras = ",".join(sorted({NEEDS[name] for name in missing}))
        sys.exit(
            f"bench.agent_bench: {', '.join(missing)} not installed in {sys.prefix} (OpenAI's "
            "sample stack runs on FastAPI and uvicorn). Install them with "
            f"`{PY} -m pip install -e '.[{extras}]'`, or run `make bench`, whose venv has "
            "the dev extra."
        )
    if args.quick:
        args.rounds = 1
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    use_uvloop()
    upstream_port = free_port()
    upstream = subprocess.Popen(
        ["taskset", "-c", CLIENT_CORE, PY, "-m", "bench.agent_upstream", str(upstream_port),
         "--deltas", str(args.deltas), "--delay", str(args.delay)],
        stdout=subprocess.DEVNULL, cwd=HERE.parent,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/stats", timeout=30)
        phases = asyncio.run(run(args, upstream_port))
    finally:
        upstream.terminate()
        upstream.wait(timeout=30)
    summary = summarise(phases)
    report = {
        "machine": machine(),
        "command": "python -m bench.agent_bench " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "quick"},
        "sample_http": sample_http(args.sample_http),
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "phases": [asdict(p) for p in phases],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "agent_bench.json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(summary, args))


if __name__ == "__main__":
    main()
