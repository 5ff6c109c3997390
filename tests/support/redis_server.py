"""A private redis-server for one test: free port, no persistence, stoppable and pausable.

Missing binary: a failure under CI (the set-up must install it), a skip elsewhere.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is missing under CI (scripts/system-deps.sh installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return found


class RedisServer:
    """One redis-server process; `stop`/`start` keep the port, `pause`/`resume` SIGSTOP it."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.unix_socket = workdir / "redis.sock"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "unixsocket": str(self.unix_socket),
            "unixsocketperm": "700",
            "save": "",
            "appendonly": "no",
            "dir": str(self.workdir),
            "loglevel": "warning",
        }
        argv = [self.binary]
        for name, value in options.items():
            argv += (f"--{name}", value)
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "+PONG":
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused server cannot exit
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def command(self, *args: str) -> str | None:
        """One command in inline form, the first reply line back (None when unreachable)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall((" ".join(args) + "\r\n").encode())
                return sock.recv(65536).decode().split("\r\n", 1)[0]
        except OSError:
            return None

    def info(self, section: str) -> dict[str, str]:
        """`INFO <section>` as a dict (a RESP bulk string read whole)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(f"INFO {section}\r\n".encode())
            data = b""
            while True:
                data += sock.recv(65536)
                head, _, body = data.partition(b"\r\n")
                if head and len(body) >= int(head[1:]) + 2:
                    break
        out: dict[str, str] = {}
        for line in body.decode().splitlines():
            if ":" in line and not line.startswith("#"):
                name, value = line.split(":", 1)
                out[name] = value
        return out


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = redis_binary()
    with tempfile.TemporaryDirectory(prefix="ckgw-redis-") as tmp:
        server = RedisServer(binary, Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()
