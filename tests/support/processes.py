"""Real `chatkit-gateway serve` processes for tests that need real TCP and real signals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import policy_yaml

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = Path(sys.executable).parent / "chatkit-gateway"


def base_env(**extra: str) -> dict[str, str]:
    """The parent's environment minus anything that could leak a real key into the child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CHATKIT_"))}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_policy(
    path: Path, *, port: int, base_url: str = "http://127.0.0.1:9/v1", **kw: Any
) -> Path:
    kw.setdefault("server", {})
    kw["server"] = {
        "host": "127.0.0.1",
        "port": port,
        "shutdown_grace_seconds": 1,
        "trusted_proxies": [],
        **kw["server"],
    }
    path.write_text(policy_yaml(base_url=base_url, **kw))
    return path


def json_lines(stdout: str) -> list[dict[str, Any]]:
    records = []
    for line in stdout.splitlines():
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert {"time", "level", "message"} <= record.keys(), line
        records.append(record)
    return records


class Gateway:
    """A `chatkit-gateway serve` child process; its stdout is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode())

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    async def wait_exit(self, timeout: float) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


async def start_gateway(
    config: Path, port: int, *args: str, env: Mapping[str, str], gateways: list[Gateway]
) -> Gateway:
    proc = await asyncio.create_subprocess_exec(
        str(SCRIPT),
        "serve",
        "--config",
        str(config),
        *args,
        env=dict(env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,  # anything on stderr must be JSON too
    )
    gateway = Gateway(proc, port)
    gateways.append(gateway)
    deadline = time.monotonic() + 15
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.returncode is None, f"gateway exited early:\n{gateway.stdout}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{gateway.url}/healthz") as resp:
                    if resp.status == 200:
                        return gateway
            assert time.monotonic() < deadline, f"gateway never became healthy:\n{gateway.stdout}"
            await asyncio.sleep(0.05)


async def poll(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)
