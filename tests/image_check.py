"""`make image-test`'s checks of a built image (scripts/image-test.sh builds it), run through
`buildah run` (chroot isolation: the host's network, so 127.0.0.1 reaches the container):

- its default command with nothing mounted exits 2 and says what to mount and which key;
- its default command with a policy mounted at /etc/chatkit-gateway/gateway.yaml (plus
  --stub-upstream: no OpenAI here) serves a token route and an agent turn, as its non-root
  user, with the threads in the SQLite volume (a host directory, written by uid 10001);
- `chatkit-gateway check` works inside it.

    python -m tests.image_check IMAGE   (buildah's storage options in $BUILDAH_STORE)
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ORIGIN = "https://owner.github.io"
POLICY_PATH = "/etc/chatkit-gateway/gateway.yaml"
VOLUME = "/var/lib/chatkit-gateway"
IMAGE_UID = 10001


def _policy(port: int) -> str:
    return f"""\
server: {{host: 127.0.0.1, port: {port}}}
routes:
  - name: voice
    path: /api/realtime/secret
    kind: realtime_client_secret
    allowed_origins: [{ORIGIN}]
  - name: assistant
    path: /chatkit/assistant
    kind: chatkit_agent
    allowed_origins: [{ORIGIN}]
    agent: {{model: gpt-6.1-terra, instructions: Answer briefly.}}
    store: {{url: "sqlite:///{VOLUME}/threads.db"}}
"""


class Buildah:
    """One working container of the image, run with its own config (user, env, entrypoint)."""

    def __init__(self, image: str) -> None:
        self.store = shlex.split(os.environ.get("BUILDAH_STORE", ""))
        self.image = image
        self.name = f"ckgw-image-check-{os.getpid()}"
        out = self._buildah("from", "--pull=never", "--name", self.name, image)
        self.container = out.strip().splitlines()[-1]
        # buildah run mounts an image VOLUME as an anonymous volume, and (buildah 1.28) at
        # random over a -v bind mount on the same path; docker run's -v replaces it. So
        # the working container forgets the VOLUME (the image keeps it: volumes()).
        for volume in self.volumes():
            self._buildah("config", "--volume", f"{volume}-", self.container)

    def volumes(self) -> list[str]:
        raw = self._buildah("inspect", "--type", "image", self.image)
        return sorted(json.loads(raw)["OCIv1"]["config"].get("Volumes") or {})

    def _buildah(self, *args: str) -> str:
        cmd = ["buildah", *self.store, *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    def default_command(self) -> list[str]:
        raw = self._buildah("inspect", "--type", "image", self.image)
        config = json.loads(raw)["OCIv1"]["config"]
        return [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]

    def run_args(self, mounts: list[str], command: list[str]) -> list[str]:
        volumes = [arg for mount in mounts for arg in ("-v", mount)]
        return ["buildah", *self.store, "run", "--isolation", "chroot", *volumes,
                self.container, "--", *command]  # fmt: skip

    def run(self, mounts: list[str], command: list[str]) -> subprocess.CompletedProcess[str]:
        args = self.run_args(mounts, command)
        return subprocess.run(args, capture_output=True, text=True, timeout=120)

    def remove(self) -> None:
        subprocess.run(["buildah", *self.store, "rm", self.container], capture_output=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendant(root: int, name: str) -> int | None:
    """The pid of `root`'s descendant whose command line names `name` (the container's
    process, in the host's pid numbering), if any."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # buildah's own processes carry the command too, after `--`.
            if b"buildah" not in argv[0] and any(name.encode() in arg for arg in argv[:2]):
                return pid
    return None


def _expect(ok: bool, what: str, detail: object = "") -> None:
    if not ok:
        raise SystemExit(f"image-test FAILED: {what}\n{detail}")
    print(f"image-test ok: {what}", file=sys.stderr)


async def _wait_listening(port: int, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _expect(False, "the gateway stays up", proc.stdout.read() if proc.stdout else "")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    _expect(False, f"the gateway listens on 127.0.0.1:{port} within {seconds:g} s")


async def _serve_checks(base: str) -> None:
    headers = {"Origin": ORIGIN, "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/realtime/secret", json={}, headers=headers) as resp:
            body: Any = await resp.json()
            secret = str(body.get("value") or body.get("client_secret") or "")
            _expect(resp.status == 200 and secret.startswith("ek_stub_"),
                    "a token route answers with a (stub) client secret", body)  # fmt: skip
        turn = {
            "type": "threads.create",
            "params": {"input": {"content": [{"type": "input_text", "text": "Hello?"}],
                                 "attachments": [], "inference_options": {}}},
        }  # fmt: skip
        device = {**headers, "X-Device-Id": "device-image-check-0001"}
        async with http.post(f"{base}/chatkit/assistant", json=turn, headers=device) as resp:
            raw = (await resp.read()).decode()
        deltas = [
            event["update"]["delta"]
            for line in raw.splitlines()
            if line.startswith("data: ")
            and (event := json.loads(line[6:]))["type"] == "thread.item.updated"
            and event["update"]["type"] == "assistant_message.content_part.text_delta"
        ]
        _expect(resp.status == 200 and "You asked: Hello?" in "".join(deltas),
                "an agent turn streams the (stub) model's answer", raw[-2000:])  # fmt: skip


async def main(image: str) -> int:
    box = Buildah(image)
    try:
        with tempfile.TemporaryDirectory(prefix="ckgw-image-") as tmp:
            await _check(box, Path(tmp))
    finally:
        box.remove()
    return 0


async def _check(box: Buildah, tmp: Path) -> None:
    default = box.default_command()
    _expect(POLICY_PATH in default, f"the default command serves {POLICY_PATH}", default)
    _expect(box.volumes() == [VOLUME], f"the image declares the volume {VOLUME}", box.volumes())

    # Nothing mounted: a message that says what to mount and which key, status 2.
    bare = box.run([], default)
    said = bare.stdout + bare.stderr  # the gateway logs JSON lines on stdout
    _expect(bare.returncode == 2 and "docker run -v" in said
            and "OPENAI_API_KEY" in said and "api_key_file" in said,
            "with no policy mounted, the default command says what to mount", said)  # fmt: skip

    ident = box.run([], ["id", "-u"])
    _expect(ident.stdout.strip() == str(IMAGE_UID), f"it runs as uid {IMAGE_UID}", ident)

    port = _free_port()
    policy = tmp / "gateway.yaml"
    policy.write_text(_policy(port))
    volume = tmp / "lib"
    volume.mkdir()
    os.chown(volume, IMAGE_UID, IMAGE_UID)  # as a Docker named volume takes the image's dir
    mounts = [f"{policy}:{POLICY_PATH}:ro", f"{volume}:{VOLUME}"]

    checked = box.run(mounts, ["chatkit-gateway", "check", "--config", POLICY_PATH,
                               "--stub-upstream"])  # fmt: skip
    _expect(checked.returncode == 0 and "chatkit_agent" in checked.stdout,
            "chatkit-gateway check works inside the image", checked.stderr)  # fmt: skip

    proc = subprocess.Popen(box.run_args(mounts, [*default, "--stub-upstream"]),
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        await _wait_listening(port, proc, 60)
        await _serve_checks(f"http://127.0.0.1:{port}")
    finally:
        # As `docker stop` does: SIGTERM to the gateway itself (buildah run would kill it).
        os.kill(_descendant(proc.pid, "chatkit-gateway") or proc.pid, signal.SIGTERM)
        try:
            log = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            log = proc.communicate()[0]
    _expect(proc.returncode == 0 and '"stopped"' in log, "SIGTERM stops it cleanly (0)",
            f"status {proc.returncode}\n{log[-2000:]}")  # fmt: skip
    db = volume / "threads.db"
    _expect(db.exists() and db.stat().st_uid == IMAGE_UID,
            f"the threads are in the SQLite volume, written by uid {IMAGE_UID}",
            sorted(p.name for p in volume.iterdir()))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    sys.exit(asyncio.run(main(sys.argv[1])))
