"""The demo pages in a real headless Chromium: CORS as a browser enforces it (issue 6).

Only a browser decides whether a page may read an answer, sends preflights on its own and
hides headers that are not exposed; so these tests drive Debian's `chromium` through
Playwright (never a downloaded browser). The demo folder is served by demo/serve.py on
two origins: http://127.0.0.1:<port> (allowed by the policy) and http://localhost:<other
port> (not allowed). A screenshot of every page lands in test-artifacts/ (gitignored).

Chromium or Playwright missing: skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.policy import Policy
from tests.conftest import TEST_KEY, make_policy
from tests.support.fake_openai import FakeOpenAI

try:
    from playwright.async_api import (
        Browser,
        ConsoleMessage,
        Page,
        Response,
        async_playwright,
        expect,
    )
except ImportError:  # pragma: no cover - depends on the environment
    async_playwright = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Nothing but the servers on this machine: every other host name fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
SESSION = "/api/chatkit/session"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true; scripts/system-deps.sh installs it)")
    pytest.skip(reason)


@functools.cache
def _load_demo_module(name: str) -> Any:
    """demo/<name>.py (the demo folder is not a package: it ships as plain files)."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fnv1a(text: str) -> str:
    """demo/common.js `fingerprint` (FNV-1a over UTF-16 code units; secrets are ASCII)."""
    h = 0x811C9DC5
    for ch in text:
        h ^= ord(ch)
        h = (h * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def access_lines(json_logs: Any, route: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in json_logs.lines]
    return [r for r in lines if r.get("message") == "request" and r.get("route") == route]


# fixtures: one Chromium for the module (a fresh context per page), everything else per test
# — all on the module's event loop, which the browser's driver connection is bound to.

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # openai-chatkit warns about its own widget classes when imported; not ours to fix.
    pytest.mark.filterwarnings("ignore:Direct usage of named widget classes:DeprecationWarning"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    if async_playwright is None:
        _unavailable("playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        _unavailable(f"chromium not found at {CHROMIUM}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=15000
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Opened:
    page: Page
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / name), full_page=True)

    def assert_no_script_errors(self) -> None:
        assert not self.errors, (
            f"uncaught errors in the page: {self.errors}; console: {self.console}"
        )


class Pages:
    """Opens pages in fresh contexts (own storage, cache and preflight cache)."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.opened: list[Opened] = []

    async def open(self, url: str, *, init_script: str | None = None) -> Opened:
        # Never `page.route()` here: while any route is set, Playwright answers every CORS
        # preflight itself with allow-all headers, so the gateway would never see one and
        # a foreign origin would pass. Outside traffic is cut by --host-resolver-rules.
        context = await self.browser.new_context(viewport={"width": 1100, "height": 900})
        if init_script is not None:
            await context.add_init_script(init_script)
        page = await context.new_page()
        opened = Opened(page)
        self.opened.append(opened)

        def on_console(msg: ConsoleMessage) -> None:
            opened.console.append(f"{msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
        await page.goto(url)
        return opened


@pytest_asyncio.fixture(loop_scope="module")
async def pages(chromium: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    """Each test's pages; their last state is kept in test-artifacts/last/ (for failures)."""
    opened = Pages(chromium)
    yield opened
    for i, one in enumerate(opened.opened):
        with contextlib.suppress(Exception):
            (ARTIFACTS / "last").mkdir(parents=True, exist_ok=True)
            path = ARTIFACTS / "last" / f"{request.node.name}-{i}.png"
            await one.page.screenshot(
                path=str(path), full_page=True, timeout=2000, animations="disabled"
            )
        await one.page.context.close()


@dataclass
class DemoSite:
    allowed: str  # http://127.0.0.1:<port>
    foreign: str  # http://localhost:<other port>, on no route's list


@pytest_asyncio.fixture(loop_scope="module")
async def demo() -> AsyncIterator[DemoSite]:
    """demo/ served by demo/serve.py on an allowed and on a foreign origin."""
    make_app: Callable[[Path], web.Application] = _load_demo_module("serve").make_app
    servers = [TestServer(make_app(DEMO), host="127.0.0.1", shutdown_timeout=1.0) for _ in range(2)]
    for server in servers:
        await server.start_server()
    try:
        yield DemoSite(
            allowed=f"http://127.0.0.1:{servers[0].port}",
            foreign=f"http://localhost:{servers[1].port}",
        )
    finally:
        for server in servers:
            await server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key=TEST_KEY) as fake:
        yield fake


Gateways = Callable[..., Awaitable[str]]


@pytest_asyncio.fixture(loop_scope="module")
async def gateways() -> AsyncIterator[Gateways]:
    """`await gateways(policy, metrics=None)` → the base URL of a real gateway."""
    servers: list[TestServer] = []

    async def start(policy: Policy, *, metrics: Metrics | None = None) -> str:
        server = TestServer(create_app(policy, metrics=metrics), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield start
    for server in servers:
        await server.close()


def site_route(origin: str, **overrides: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "site",
        "path": SESSION,
        "kind": "chatkit_session",
        "workflow_id": "wf_test",
        "allowed_origins": [origin],
        "rate_limits": [{"key": "client_ip", "requests": 100, "per": "1h"}],
        "session": {"expires_after_seconds": 600, "max_requests_per_1_minute": 10},
    }
    route.update(overrides)
    return route


async def stub_gateway(
    gateways: Gateways, *routes: dict[str, Any], metrics: Metrics | None = None
) -> str:
    """A gateway with the built-in stub upstream (what `make run` does offline); its URL."""
    return await gateways(make_policy(stub=True, routes=list(routes)), metrics=metrics)


# the client-secrets page


async def test_allowed_origin_gets_a_secret_and_refreshes_before_expiry(
    pages: Pages, demo: DemoSite, gateways: Gateways
) -> None:
    gw = await stub_gateway(
        gateways, site_route(demo.allowed, session={"expires_after_seconds": 2})
    )
    answers: list[tuple[float, Response]] = []
    opened = await pages.open("about:blank")
    page = opened.page

    def record(response: Response) -> None:
        if response.url == gw + SESSION and response.request.method == "POST":
            answers.append((time.time(), response))

    page.on("response", record)
    await page.goto(f"{demo.allowed}/?gateway={gw}")

    await expect(page.locator("body")).to_have_attribute("data-state", "offline")
    await expect(page.locator("#mode")).to_have_text("offline · stub upstream")
    first = await answers[0][1].json()
    secret = first["client_secret"]
    assert secret.startswith("ek_stub_")
    # Shown masked (prefix only) with a fingerprint; never whole.
    await expect(page.locator("#secret")).to_have_text(re.compile(r"^ek_stub_•+ \(\d+ chars\)$"))
    await expect(page.locator("#attempts li").first).to_contain_text(f"fp {fnv1a(secret)}")
    assert secret not in await page.content()
    await expect(page.locator("#gateway-url")).to_have_text(gw + SESSION)
    await expect(page.locator("#expires-in")).to_have_attribute(
        "data-seconds", re.compile("^[12]$")
    )

    # The page refreshes before expiry, as the widget would: a new secret, same device.
    await expect(page.locator("#refreshes")).to_have_text("1")
    assert len(answers) == 2
    refreshed_at, response = answers[1]
    assert refreshed_at < first["expires_at"], "refreshed only after expiry"
    second = (await response.json())["client_secret"]
    assert second != secret
    await expect(page.locator("#secret-fp")).to_have_text(fnv1a(second))
    await expect(page.locator("#attempts li")).to_have_count(2)
    await expect(page.locator("#next-refresh")).to_contain_text("in ")
    await expect(page.locator("#error")).to_be_hidden()
    await opened.screenshot("token-page-refreshed.png")
    opened.assert_no_script_errors()


async def test_json_post_goes_through_its_preflight(
    pages: Pages, demo: DemoSite, gateways: Gateways, json_logs: Any
) -> None:
    gw = await stub_gateway(gateways, site_route(demo.allowed))
    opened = await pages.open(f"{demo.allowed}/?gateway={gw}")
    await expect(opened.page.locator("body")).to_have_attribute("data-state", "offline")

    seen = [(r["method"], r["status"], r["origin"]) for r in access_lines(json_logs, "site")]
    assert seen == [("OPTIONS", 204, demo.allowed), ("POST", 200, demo.allowed)]
    await expect(opened.page.locator("#expires-in")).to_have_text(re.compile(r"^(10|9)m \d\ds$"))
    await opened.screenshot("token-page-offline.png")
    opened.assert_no_script_errors()


async def test_foreign_origin_is_refused_by_the_browser(
    pages: Pages, demo: DemoSite, gateways: Gateways, json_logs: Any
) -> None:
    metrics = Metrics()
    gw = await stub_gateway(gateways, site_route(demo.allowed), metrics=metrics)
    opened = await pages.open(f"{demo.foreign}/?gateway={gw}")
    page = opened.page

    await expect(page.locator("body")).to_have_attribute("data-state", "error")
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#err-status")).to_have_text("none — the fetch was rejected")
    await expect(page.locator("#err-code")).to_have_text("network_error")
    await expect(page.locator("#err-message")).to_contain_text("TypeError")
    await expect(page.locator("#secret")).to_have_text("—")
    await opened.screenshot("token-page-foreign-origin.png")
    # The JSON POST's preflight was refused, so Chromium never sent the POST itself.
    assert [(r["method"], r["status"]) for r in access_lines(json_logs, "site")] == [
        ("OPTIONS", 403)
    ]
    assert sample(metrics, "chatkit_gateway_origin_rejected_total", route="site") == 1

    # A "simple" POST (no preflight) reaches the gateway, which refuses it with 403 and no
    # CORS headers: the page still cannot read even the status.
    outcome = await page.evaluate(
        """async (url) => {
            try { const r = await fetch(url, {method: "POST", body: "{}"}); return r.status; }
            catch (e) { return e.name; }
        }""",
        gw + SESSION,
    )
    assert outcome == "TypeError"
    assert sample(metrics, "chatkit_gateway_origin_rejected_total", route="site") == 2
    assert [(r["method"], r["status"]) for r in access_lines(json_logs, "site")][-1] == (
        "POST",
        403,
    )
    assert (
        sample(metrics, "chatkit_gateway_upstream_requests_total", route="site", outcome="ok") == 0
    )
    opened.assert_no_script_errors()


async def test_rate_limited_answer_is_readable_by_the_page(
    pages: Pages, demo: DemoSite, gateways: Gateways
) -> None:
    limits = [{"key": "client_ip", "requests": 2, "per": "1h"}]
    gw = await stub_gateway(gateways, site_route(demo.allowed, rate_limits=limits))
    opened = await pages.open(f"{demo.allowed}/?gateway={gw}")
    page = opened.page
    await expect(page.locator("body")).to_have_attribute("data-state", "offline")
    await expect(page.locator("#hdr-ratelimit")).to_contain_text(";r=1;")

    await page.click("#refresh-now")
    await expect(page.locator("#refreshes")).to_have_text("1")
    await expect(page.locator("#hdr-ratelimit")).to_contain_text(";r=0;")

    async with page.expect_response(lambda r: r.url == gw + SESSION) as info:
        await page.click("#refresh-now")
    refused = await info.value
    assert refused.status == 429
    headers = await refused.all_headers()
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#err-status")).to_have_text("429")
    await expect(page.locator("#err-code")).to_have_text("rate_limited")
    # What the page's JS read through response.headers — only possible because the
    # gateway names these in Access-Control-Expose-Headers.
    await expect(page.locator("#err-retry-after")).to_have_text(headers["retry-after"])
    assert int(headers["retry-after"]) >= 1
    await expect(page.locator("#err-ratelimit")).to_have_text(headers["ratelimit"])
    assert ";r=0;" in headers["ratelimit"]
    await expect(page.locator("#err-ratelimit-policy")).to_have_text(headers["ratelimit-policy"])
    await expect(page.locator("#err-request-id")).to_have_text(headers["x-request-id"])
    await expect(page.locator("#hdr-retry-after")).to_have_text(headers["retry-after"])
    # The page keeps the secret it has (still valid) and says when it will try again.
    await expect(page.locator("#refreshes")).to_have_text("1")
    await expect(page.locator("#next-refresh")).to_contain_text("in ")
    await opened.screenshot("token-page-rate-limited.png")
    opened.assert_no_script_errors()


FAKE_CHATKIT_JS = """
// Stands in for chatkit.js (as if the site bundled @openai/chatkit, so the page does not
// load the CDN copy): the same element name and the same contract —
// getClientSecret(null) on mount, getClientSecret(current) to refresh.
class FakeChatKit extends HTMLElement {
  setOptions(options) { this.options = options; this.run(); }
  async run() {
    const first = await this.options.api.getClientSecret(null);
    const second = await this.options.api.getClientSecret(first);
    this.textContent = "stand-in ChatKit widget: mounted, then refreshed its secret";
    this.dataset.secrets = JSON.stringify([first, second]);
  }
}
customElements.define("openai-chatkit", FakeChatKit);
"""


async def test_real_secret_mounts_the_widget_with_get_client_secret(
    pages: Pages, demo: DemoSite, gateways: Gateways, openai_fake: FakeOpenAI
) -> None:
    policy = make_policy(base_url=openai_fake.base_url, routes=[site_route(demo.allowed)])
    gw = await gateways(policy)  # in front of the fake OpenAI: real-looking ek_ secrets
    opened = await pages.open(f"{demo.allowed}/?gateway={gw}", init_script=FAKE_CHATKIT_JS)
    page = opened.page

    await expect(page.locator("body")).to_have_attribute("data-state", "widget")
    widget = page.locator("openai-chatkit")
    await expect(widget).to_have_attribute("data-secrets", re.compile(r"^\[.+\]$"))
    first, second = json.loads(await widget.get_attribute("data-secrets") or "[]")
    minted = [s["client_secret"] for s in openai_fake.sessions.values()]
    # The widget's mount call reused the secret the page had just fetched; its refresh
    # minted a new session for the same end user.
    assert minted == [first, second] and first != second
    users = [r.body["user"] for r in openai_fake.requests_to("/chatkit/sessions")]
    assert len(users) == 2 and users[0] == users[1]
    await expect(page.locator("#widget-status")).to_have_attribute("data-failed", "false")
    await expect(page.locator("#secret-fp")).to_have_text(fnv1a(second))
    await opened.screenshot("token-page-widget.png")
    opened.assert_no_script_errors()


# the proxy page, against demo/chatkit_backend.py — a real ChatKit server (the openai-chatkit
# SDK) — whose answer the test releases one event at a time


@dataclass
class Backend:
    """A self-hosted ChatKit endpoint at `url`, as the proxy route's `target`."""

    url: str
    gate: asyncio.Semaphore  # one release() lets one more event of respond() out
    seen: list[str]  # the ChatKit request types it received
    abandoned: Callable[[], int]  # streams whose client went away


@pytest_asyncio.fixture(loop_scope="module")
async def chatkit_backend() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    """`await chatkit_backend(cors_origin=None)` → a running demo backend, gated."""
    module = _load_demo_module("chatkit_backend")
    started: list[tuple[TestServer, Backend]] = []

    async def start(*, cors_origin: str | None = None) -> Backend:
        gate = asyncio.Semaphore(0)
        server = module.EchoServer(gate=gate)
        app = module.make_app(server, cors_origins=[cors_origin] if cors_origin else [])
        http = TestServer(app, host="127.0.0.1", shutdown_timeout=1.0)
        await http.start_server()
        url = f"http://127.0.0.1:{http.port}/chatkit"
        backend = Backend(url, gate, server.seen, lambda: int(server.abandoned))
        started.append((http, backend))
        return backend

    yield start
    for http, backend in started:
        for _ in range(1000):  # a test that failed half-way leaves respond() waiting
            backend.gate.release()
        await http.close()


EVENT_COUNT = "n => document.querySelectorAll('#events li').length === n"


@pytest.mark.parametrize("via", ["gateway", "direct"])
async def test_proxy_page_renders_streamed_events_in_order_as_they_arrive(
    via: str,
    pages: Pages,
    demo: DemoSite,
    gateways: Gateways,
    chatkit_backend: Callable[..., Awaitable[Backend]],
) -> None:
    if via == "gateway":
        backend = await chatkit_backend()
        chat = {
            "name": "chat",
            "path": "/chatkit",
            "kind": "chatkit_proxy",
            "target": backend.url,
            "allowed_origins": [demo.allowed],
            "rate_limits": [{"key": "client_ip", "requests": 100, "per": "1h"}],
        }
        endpoint = await stub_gateway(gateways, chat)
    else:  # the page and the SDK alone: the same page against the backend itself
        backend = await chatkit_backend(cors_origin=demo.allowed)
        endpoint = backend.url.removesuffix("/chatkit")
    opened = await pages.open(f"{demo.allowed}/proxy.html?gateway={endpoint}")
    page = opened.page
    events = page.locator("#events li")
    await expect(page.locator("#endpoint")).to_have_text(endpoint + "/chatkit")

    await page.fill("#message", "hello proxy")
    await page.click("#send")
    # What the SDK sends before our respond() runs: the thread, the user's message, options.
    await expect(events).to_have_count(3)
    await expect(page.locator("body")).to_have_attribute("data-state", "streaming")
    prefix = ["thread.created", "thread.item.done", "stream_options"]
    assert [await li.get_attribute("data-type") for li in await events.all()] == prefix
    thread_id = (await page.locator("#thread-id").inner_text()).strip()
    assert thread_id.startswith("thr_")

    # Each further event is rendered while the server has not produced the next one yet.
    deltas = ["Echo:", " hello", " proxy"]
    steps = [
        ("thread.item.added", None),
        *(("thread.item.updated", "".join(deltas[: i + 1])) for i in range(len(deltas))),
        ("thread.item.done", "".join(deltas)),
    ]
    for n, (kind, assistant) in enumerate(steps, start=len(prefix) + 1):
        await asyncio.sleep(0.05)  # time enough for anything buffered to show up early
        await expect(events).to_have_count(n - 1)
        backend.gate.release()
        # (polled every animation frame: expect()'s back-off would make this loop slow)
        await page.wait_for_function(EVENT_COUNT, arg=n, timeout=5000)
        await expect(events.nth(n - 1)).to_have_attribute("data-type", kind)
        await expect(events.nth(n - 1)).to_have_attribute("data-index", str(n))
        if assistant is not None:
            await expect(page.locator("#assistant")).to_have_text(assistant)
    await expect(page.locator("body")).to_have_attribute("data-state", "done")
    await expect(page.locator("#status")).to_contain_text(
        f"done: {len(prefix) + len(steps)} events"
    )
    arrivals = [int(await li.get_attribute("data-ms") or -1) for li in await events.all()]
    assert arrivals == sorted(arrivals)
    await expect(page.locator("#hdr-content-type")).to_contain_text("text/event-stream")
    if via == "gateway":
        await expect(page.locator("#hdr-x-request-id")).not_to_have_text("—")
    await opened.screenshot(f"proxy-page-{via}.png")

    # A JSON request type: threads.list answers JSON, shown as such.
    await page.click("#list")
    await expect(page.locator("body")).to_have_attribute("data-state", "json")
    listed = json.loads(await page.locator("#json").inner_text())
    assert [t["id"] for t in listed["data"]] == [thread_id]

    # The next message goes to the same thread (threads.add_user_message), all at once.
    for _ in range(len(steps)):
        backend.gate.release()
    await page.fill("#message", "again")
    await page.click("#send")
    await expect(page.locator("body")).to_have_attribute("data-state", "done")
    await expect(page.locator("#assistant")).to_have_text("Echo: again")

    # Stop aborts the fetch mid-stream: the backend, still waiting to send its next event,
    # sees its client go away (through the gateway: the upstream request is cancelled).
    await page.fill("#message", "stop me")
    await page.click("#send")
    await expect(events).to_have_count(len(prefix))
    await page.click("#stop")
    await expect(page.locator("body")).to_have_attribute("data-state", "stopped")
    await until(lambda: backend.abandoned() == 1)
    assert backend.seen == ["threads.create", "threads.list", *["threads.add_user_message"] * 2]
    await opened.screenshot(f"proxy-page-{via}-json.png")
    opened.assert_no_script_errors()


# every page: a 360 px phone, a favicon, Agent Builder users sent to the agent route

PHONE = 360  # CSS px: the narrowest common phone
FITS = "document.scrollingElement.scrollWidth"


async def fits_a_phone(opened: Opened, name: str) -> None:
    """No sideways scrolling at 360 px, in the page's current state (content shown)."""
    page = opened.page
    await page.set_viewport_size({"width": PHONE, "height": 800})
    await page.wait_for_function(f"{FITS} <= {PHONE}", timeout=5000)  # relaid out
    width = await page.evaluate(FITS)
    assert width <= PHONE, f"{name}: {width} px wide at a {PHONE} px viewport"
    await opened.screenshot(f"{name}-360px.png")


async def has_a_favicon(opened: Opened, origin: str) -> None:
    """A favicon link that the demo server answers (no 404 for /favicon.ico in the log)."""
    href = await opened.page.evaluate("document.querySelector('link[rel~=icon]')?.href ?? ''")
    assert href.startswith(origin + "/") and href.endswith(".svg"), href
    response = await opened.page.request.get(href)
    assert response.status == 200, href
    assert response.headers["content-type"] == "image/svg+xml"
    assert (await response.text()).lstrip().startswith("<svg")


async def sends_agent_builder_users_to_the_agent_route(opened: Opened, gateway: str) -> None:
    intro = opened.page.locator("#agent-builder")
    await expect(intro).to_contain_text("Agent Builder")
    await expect(intro.locator("code", has_text="chatkit_agent")).to_have_count(1)
    link = intro.locator("a#to-agent-intro")
    await expect(link).to_have_attribute("href", f"agent.html?gateway={quote(gateway, safe='')}")


async def test_token_and_proxy_pages_fit_a_phone_have_a_favicon_and_name_the_agent_route(
    pages: Pages,
    demo: DemoSite,
    gateways: Gateways,
    chatkit_backend: Callable[..., Awaitable[Backend]],
) -> None:
    backend = await chatkit_backend()
    for _ in range(100):
        backend.gate.release()
    chat = {
        "name": "chat",
        "path": "/chatkit",
        "kind": "chatkit_proxy",
        "target": backend.url,
        "allowed_origins": [demo.allowed],
    }
    gw = await stub_gateway(gateways, site_route(demo.allowed), chat)

    opened = await pages.open(f"{demo.allowed}/?gateway={gw}")
    await expect(opened.page.locator("body")).to_have_attribute("data-state", "offline")
    await expect(opened.page.locator("#attempts li")).to_have_count(1)
    await sends_agent_builder_users_to_the_agent_route(opened, gw)
    await has_a_favicon(opened, demo.allowed)
    await fits_a_phone(opened, "token-page")
    opened.assert_no_script_errors()

    opened = await pages.open(f"{demo.allowed}/proxy.html?gateway={gw}")
    page = opened.page
    await sends_agent_builder_users_to_the_agent_route(opened, gw)
    await page.fill("#message", "a message long enough to fill the events list on a phone")
    await page.click("#send")
    await expect(page.locator("body")).to_have_attribute("data-state", "done")
    await page.click("#list")
    await expect(page.locator("body")).to_have_attribute("data-state", "json")
    await has_a_favicon(opened, demo.allowed)
    await fits_a_phone(opened, "proxy-page")
    opened.assert_no_script_errors()

    # The demo server's rendered docs (/project/) carry the favicon too.
    opened = await pages.open(f"{demo.allowed}/project/")
    await has_a_favicon(opened, demo.allowed)


async def test_proxy_page_shows_a_failure_mid_stream_as_one_not_as_a_refusal(
    pages: Pages, demo: DemoSite, gateways: Gateways
) -> None:
    """The request is accepted (200) and the stream begins; then the server sends a ChatKit
    `error` event. That is a failed answer, not "Refused" with "Status 200"."""

    async def failing(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        thread = {"id": "thr_failing", "created_at": "2026-12-07T00:00:00", "items": {}}
        for event in (
            {"type": "thread.created", "thread": thread},
            {
                "type": "error",
                "code": "custom",
                "message": "The backend broke.",
                "allow_retry": True,
            },
        ):
            await resp.write(f"data: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/chatkit", failing)
    server = TestServer(app, host="127.0.0.1", shutdown_timeout=1.0)
    await server.start_server()
    try:
        chat = {
            "name": "chat",
            "path": "/chatkit",
            "kind": "chatkit_proxy",
            "target": f"http://127.0.0.1:{server.port}/chatkit",
            "allowed_origins": [demo.allowed],
        }
        gw = await stub_gateway(gateways, chat)
        opened = await pages.open(f"{demo.allowed}/proxy.html?gateway={gw}")
        page = opened.page
        await page.fill("#message", "hello")
        await page.click("#send")
        await expect(page.locator("#events li[data-type='error']")).to_have_count(1)
        await expect(page.locator("#error")).to_be_visible()
        await expect(page.locator("#error")).to_have_attribute("data-kind", "mid-stream")
        await expect(page.locator("#err-title")).to_have_text("The answer failed mid-stream")
        await expect(page.locator("#err-status")).to_contain_text("accepted (200)")
        await expect(page.locator("#err-code")).to_have_text("custom")
        await expect(page.locator("#err-message")).to_have_text("The backend broke.")
        await opened.screenshot("proxy-page-mid-stream-failure.png")
        await fits_a_phone(opened, "proxy-page-mid-stream-failure")
        opened.assert_no_script_errors()
    finally:
        await server.close()
