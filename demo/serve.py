"""Serve the demo pages (this folder) over HTTP with caching off: `make run` starts it.

    .venv/bin/python demo/serve.py [--host 127.0.0.1] [--port 8000]

Open http://localhost:8000/ — an allowed origin in the shipped gateway.yaml. Only files
inside this folder are served; every answer says `Cache-Control: no-store`, so an edited
page or script is what the next reload runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_NO_CACHE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def make_app(root: Path = ROOT) -> web.Application:
    """An aiohttp app serving `root`'s files (directories → index.html), uncached."""
    base = root.resolve()

    async def static(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"], headers=_NO_CACHE)
        path = (base / request.match_info["tail"]).resolve()
        if path.is_dir():
            path = path / "index.html"
        content_type = _TYPES.get(path.suffix)
        if not path.is_relative_to(base) or content_type is None or not path.is_file():
            raise web.HTTPNotFound(headers=_NO_CACHE)
        return web.FileResponse(path, headers={**_NO_CACHE, "Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", static)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    shown = "localhost" if host in ("127.0.0.1", "::1", "localhost") else host
    print(f"demo pages on http://{shown}:{port}/ (serving {ROOT})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
