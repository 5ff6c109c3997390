"""What the benchmarks share: ports, start-up waits, a process's CPU and memory from /proc,
uvloop, one pooled client session per app, and the token route they all drive."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

CLK_TCK = os.sysconf("SC_CLK_TCK")
SESSION = web.AppKey("session", aiohttp.ClientSession)

# The token route the gateway benchmarks drive, an item of a policy's `routes:` list: an
# origin check and two limits (client_ip, global), raised so that nothing is refused.
TOKEN_ROUTE = """\
  - name: site
    path: /api/chatkit/session
    kind: chatkit_session
    workflow_id: wf_bench
    allowed_origins: [https://example.org]
    rate_limits:
      - {key: client_ip, requests: 1000000000, per: 1h}
      - {key: global, requests: 1000000000, per: 1d}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 15.0) -> None:
    """Until `url` answers at all: any HTTP status is ready enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_kib(pid: int, field: str) -> int:
    """A memory line of /proc/PID/status, in KiB: `VmRSS` now, `VmHWM` the peak; 0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def use_uvloop() -> None:
    """uvloop for the event loops asyncio makes from now on, when it is installed."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def pooled_session(limit: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: one client session (`limit` connections, 0 for no limit) at
    app[SESSION] while the app runs."""

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit)) as s:
            app[SESSION] = s
            yield

    return session
