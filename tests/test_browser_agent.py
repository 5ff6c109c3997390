"""demo/agent.html, the chat of a `chatkit_agent` route, in a real headless Chromium.

A real `chatkit-gateway serve --stub-upstream` process (no OpenAI key: the built-in stub
model answers, threads in SQLite in a temporary folder) and a real `demo/serve.py`
process, as `make run` starts them. The page is served on http://127.0.0.1:<port> (the
route's allowed origin) and also reached as http://localhost:<same port> (a foreign
origin). The browser, its launch flags and the page fixtures are tests/test_browser.py's.

Chromium or Playwright missing: skipped locally, a failure under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.processes import ROOT, Gateway, base_env, free_port, start_gateway, write_policy
from tests.test_browser import Opened, Pages, fits_a_phone, has_a_favicon

# test_browser.py's fixtures: one Chromium for the module, `pages` in fresh contexts.
from tests.test_browser import chromium as chromium
from tests.test_browser import pages as pages

# Without Playwright the chromium fixture skips (a failure under CI=true).
with contextlib.suppress(ImportError):
    from playwright.async_api import Page, Response, expect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.filterwarnings("ignore:Direct usage of named widget classes:DeprecationWarning"),
]

PATH = "/chatkit/assistant"
LIMITED = "/chatkit/limited"  # one message per hour: the second is a 429
DEVICE_KEY = "chatkit-device-id"  # client-secret.js, proxy.js
STUB_SOURCE = "stub-guide.md"
PROGRESS = "Searching the documentation…"
FIRST_ANSWER_MS = 20_000  # the first turn of a fresh process imports the Agents SDK


def thread_key(endpoint: str) -> str:
    """agent.js keeps the thread id per endpoint."""
    return f"chatkit-agent-thread:{endpoint}"


# processes: the demo pages server and the gateway, one of each for the module


@dataclass
class Site:
    allowed: str  # http://127.0.0.1:<port>, on the routes' allowed_origins
    foreign: str  # http://localhost:<port>: the same server, another origin


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def site() -> AsyncIterator[Site]:
    """`demo/serve.py` as `make run` starts it."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "demo" / "serve.py"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        async with aiohttp.ClientSession() as http:
            while True:
                assert proc.returncode is None, "demo/serve.py exited early"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"{url}/agent.html") as resp:
                        if resp.status == 200:
                            break
                assert time.monotonic() < deadline, "demo/serve.py never answered"
                await asyncio.sleep(0.05)
        yield Site(allowed=url, foreign=f"http://localhost:{port}")
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def agent_route(name: str, path: str, origin: str, store: str, **overrides: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": name,
        "path": path,
        "kind": "chatkit_agent",
        "allowed_origins": [origin],
        "agent": {"model": "gpt-6.1-terra", "instructions": "Answer briefly and cite sources."},
        "store": {"url": store},
        "rate_limits": [{"key": "client_ip", "requests": 1000, "per": "1h"}],
    }
    route.update(overrides)
    return route


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(site: Site, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    """`chatkit-gateway serve --stub-upstream`, no key, threads in a temporary SQLite file."""
    tmp = tmp_path_factory.mktemp("agent-gateway")
    store = f"sqlite:///{tmp / 'threads.db'}"
    limited = [
        {"key": "client_ip", "requests": 100, "per": "1h"},
        {
            "key": "client_ip",
            "requests": 1,
            "per": "1h",
            "types": ["threads.create", "threads.add_user_message"],
        },
    ]
    routes = [
        agent_route("assistant", PATH, site.allowed, store),
        agent_route("limited", LIMITED, site.allowed, store, rate_limits=limited),
    ]
    port = free_port()
    config = write_policy(tmp / "gateway.yaml", port=port, routes=routes)
    # No key at all, as `make run` without OPENAI_API_KEY.
    config.write_text(config.read_text().replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-}"))
    started: list[Gateway] = []
    try:
        yield await start_gateway(config, port, "--stub-upstream", env=base_env(), gateways=started)
    finally:
        for one in started:
            await one.kill()


# page helpers

# Installed before a message is sent: every change of the transcript and of the progress
# line is recorded as it happens, with the page's state at that moment.
WATCH = """() => {
  const watch = { progress: [], steps: [] };
  window.__agentWatch = watch;
  const progress = document.getElementById("progress");
  const transcript = document.getElementById("transcript");
  const answerLength = () => {
    const all = transcript.querySelectorAll(".msg-assistant .msg-text");
    return all.length ? all[all.length - 1].textContent.length : -1;
  };
  new MutationObserver(() => {
    if (!progress.hidden && progress.textContent) {
      watch.progress.push({ text: progress.textContent, answer: answerLength() });
    }
  }).observe(progress, { attributes: true, childList: true, characterData: true, subtree: true });
  new MutationObserver(() => {
    const length = answerLength();
    const last = watch.steps.at(-1);
    if (!last || last.length !== length) {
      watch.steps.push({ length, state: document.body.dataset.state });
    }
  }).observe(transcript, { childList: true, characterData: true, subtree: true });
}"""


def page_url(site_origin: str, gateway: Gateway, path: str = PATH) -> str:
    query = f"?gateway={gateway.url}" + ("" if path == PATH else f"&path={path}")
    return f"{site_origin}/agent.html{query}"


async def local(page: Page, key: str) -> str | None:
    value = await page.evaluate("k => localStorage.getItem(k)", key)
    assert value is None or isinstance(value, str)
    return value


async def send(page: Page, text: str, *, state: str = "done", timeout: float = 10_000) -> None:
    await page.fill("#message", text)
    await page.click("#send")
    await expect(page.locator("body")).to_have_attribute("data-state", state, timeout=timeout)


def is_request(response: Response, endpoint: str, kind: str) -> bool:
    if response.url != endpoint or response.request.method != "POST":
        return False
    body = response.request.post_data
    return body is not None and json.loads(body).get("type") == kind


def console_errors(opened: Opened, *, refusals: bool = False) -> list[str]:
    """Errors on the page's console; with `refusals`, not those Chromium logs itself for
    a refused request (its status, a CORS refusal), which a page cannot prevent."""
    network = ("error: Failed to load resource:", "error: Access to fetch at ")
    return [
        line
        for line in opened.console
        if line.startswith("error:") and not (refusals and line.startswith(network))
    ]


def format_seconds(seconds: int) -> str:
    """demo/common.js `formatSeconds`."""
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}m {rest:02d}s" if minutes else f"{rest}s"


async def messages(page: Page) -> list[tuple[str, str]]:
    """The transcript as (role, text) pairs."""
    rows = page.locator("#transcript > li.msg")
    return [
        (
            await row.get_attribute("data-role") or "?",
            await row.locator(".msg-text").inner_text(),
        )
        for row in await rows.all()
    ]


# the tests


async def test_agent_page_streams_an_answer_cites_it_and_reads_it_back_after_reload(
    pages: Pages, site: Site, gateway: Gateway
) -> None:
    endpoint = gateway.url + PATH
    opened = await pages.open(page_url(site.allowed, gateway))
    page = opened.page
    body = page.locator("body")
    await expect(body).to_have_attribute("data-state", "empty")
    await expect(page.locator("#endpoint")).to_have_text(endpoint)
    await expect(page.locator("#send-type")).to_have_text("(threads.create)")
    await expect(page.locator("#empty")).to_be_visible()

    question = "How do refunds work for annual plans?"
    await page.evaluate(WATCH)
    async with page.expect_response(lambda r: is_request(r, endpoint, "threads.create")) as info:
        await send(page, question, timeout=FIRST_ANSWER_MS)
    created = await info.value
    assert created.status == 200
    assert (await created.header_value("content-type") or "").startswith("text/event-stream")
    watch = await page.evaluate("window.__agentWatch")

    # The progress update was shown while it lasted: before any answer text, then hidden.
    assert watch["progress"], watch
    assert {p["text"] for p in watch["progress"]} == {PROGRESS}
    assert all(p["answer"] <= 0 for p in watch["progress"]), watch["progress"]
    await expect(page.locator("#progress")).to_be_hidden()

    # The answer grew in while the stream was still open, not all at once at its end.
    answer = page.locator("#transcript .msg-assistant .msg-text")
    await expect(answer).to_have_count(1)
    final = await answer.inner_text()
    growing = [s["length"] for s in watch["steps"] if s["state"] == "streaming" and s["length"] > 0]
    assert len(set(growing)) >= 2, watch["steps"]
    assert growing == sorted(growing), growing
    assert growing[0] < len(final), (growing, final)

    # The stub quotes the question; its source is shown under the answer.
    assert f"You asked: {question}" in final
    assistant = page.locator("#transcript .msg-assistant")
    await expect(assistant).to_have_attribute("data-state", "done")
    assert int(await assistant.get_attribute("data-deltas") or 0) >= 2
    source = assistant.locator(f'.sources li.source[data-filename="{STUB_SOURCE}"]')
    await expect(source).to_have_count(1)
    await expect(source).to_have_text(STUB_SOURCE)
    user = page.locator("#transcript .msg-user")
    await expect(user).to_have_text(re.compile(re.escape(question)))
    await expect(user).not_to_have_attribute("data-pending", "true")
    await expect(page.locator("#error")).to_be_hidden()

    # The thread is remembered; the next message goes to it.
    thread_id = await local(page, thread_key(endpoint))
    assert thread_id is not None and thread_id.startswith("thr_"), thread_id
    await expect(page.locator("#thread-id")).to_contain_text(thread_id)
    await expect(page.locator("#send-type")).to_have_text("(threads.add_user_message)")
    await opened.screenshot("agent-page-answer.png")

    # A reload shows the conversation again, as the gateway's store has it.
    async with page.expect_response(lambda r: is_request(r, endpoint, "threads.get_by_id")) as info:
        await page.reload()
    assert (await info.value).status == 200
    await expect(body).to_have_attribute("data-state", "history")
    assert await messages(page) == [("user", question), ("assistant", final)]
    await expect(source).to_have_text(STUB_SOURCE)
    await expect(page.locator("#empty")).to_be_hidden()

    # A follow-up goes to the same thread (threads.add_user_message) and streams the same way.
    follow_up = "And for monthly plans?"
    async with page.expect_response(
        lambda r: is_request(r, endpoint, "threads.add_user_message")
    ) as info:
        await send(page, follow_up)
    assert (await info.value).status == 200
    assert await local(page, thread_key(endpoint)) == thread_id
    await page.reload()
    await expect(body).to_have_attribute("data-state", "history")
    shown = await messages(page)
    assert [role for role, _ in shown] == ["user", "assistant", "user", "assistant"]
    assert shown[:3] == [("user", question), ("assistant", final), ("user", follow_up)]
    assert f"You asked: {follow_up}" in shown[3][1]
    await expect(page.locator(".sources li.source")).to_have_count(2)
    await opened.screenshot("agent-page-history.png")

    # "New chat" forgets the thread: the next message creates another one.
    await page.click("#new-chat")
    await expect(body).to_have_attribute("data-state", "empty")
    await expect(page.locator("#transcript > li")).to_have_count(0)
    assert await local(page, thread_key(endpoint)) is None
    await expect(page.locator("#send-type")).to_have_text("(threads.create)")
    await page.reload()
    await expect(body).to_have_attribute("data-state", "empty")

    assert console_errors(opened) == []
    opened.assert_no_script_errors()


async def test_threads_are_private_to_each_device(
    pages: Pages, site: Site, gateway: Gateway
) -> None:
    endpoint = gateway.url + PATH
    first = await pages.open(page_url(site.allowed, gateway))
    question = "What is on my private shopping list?"
    await send(first.page, question, timeout=FIRST_ANSWER_MS)
    theirs = await local(first.page, thread_key(endpoint))
    assert theirs is not None

    # Another browser profile: another device id, and a chat that starts empty.
    second = await pages.open(page_url(site.allowed, gateway))
    page = second.page
    body = page.locator("body")
    await expect(body).to_have_attribute("data-state", "empty")
    await expect(page.locator("#transcript > li")).to_have_count(0)
    mine, other = await local(page, DEVICE_KEY), await local(first.page, DEVICE_KEY)
    assert mine and other and mine != other

    # Even with the other's thread id in its storage, it gets a readable 404, not the history.
    await page.evaluate("([k, v]) => localStorage.setItem(k, v)", [thread_key(endpoint), theirs])
    async with page.expect_response(lambda r: is_request(r, endpoint, "threads.get_by_id")) as info:
        await page.reload()
    assert (await info.value).status == 404
    await expect(body).to_have_attribute("data-state", "error")
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator("#err-status")).to_have_text("404")
    await expect(page.locator("#err-code")).to_have_text("not_found")
    await expect(page.locator("#err-message")).to_contain_text(
        f"{theirs} was not found for this device id"
    )
    await expect(page.locator("#status")).to_have_text("refused: 404 not_found")
    await expect(page.locator("#err-request-id")).not_to_have_text("—")
    await expect(page.locator("#transcript > li")).to_have_count(0)
    assert question not in await page.locator("main").inner_text()
    # The foreign id is forgotten: the next message starts a chat of this device's own.
    assert await local(page, thread_key(endpoint)) is None
    await expect(page.locator("#send-type")).to_have_text("(threads.create)")
    await second.screenshot("agent-page-foreign-thread.png")
    await send(page, "A question of my own")
    await expect(page.locator("#error")).to_be_hidden()
    own = await local(page, thread_key(endpoint))
    assert own is not None and own != theirs

    # The first device still has its conversation, and only it.
    await first.page.reload()
    await expect(first.page.locator("body")).to_have_attribute("data-state", "history")
    assert [role for role, _ in await messages(first.page)] == ["user", "assistant"]
    assert (await messages(first.page))[0] == ("user", question)

    assert console_errors(first) == []
    assert console_errors(second, refusals=True) == []  # (Chromium logs the 404 itself)
    first.assert_no_script_errors()
    second.assert_no_script_errors()


async def test_refusals_are_shown_readably(pages: Pages, site: Site, gateway: Gateway) -> None:
    # 429: one message per hour on the limited route; Retry-After read through CORS.
    endpoint = gateway.url + LIMITED
    opened = await pages.open(page_url(site.allowed, gateway, LIMITED))
    page = opened.page
    await expect(page.locator("#endpoint")).to_have_text(endpoint)
    await send(page, "the one message this hour", timeout=FIRST_ANSWER_MS)
    async with page.expect_response(
        lambda r: is_request(r, endpoint, "threads.add_user_message")
    ) as info:
        await send(page, "one more", state="error")
    refused = await info.value
    assert refused.status == 429
    retry_after = await refused.header_value("retry-after")
    assert retry_after is not None and int(retry_after) >= 1
    await expect(page.locator("#err-status")).to_have_text("429")
    await expect(page.locator("#err-code")).to_have_text("rate_limited")
    await expect(page.locator("#err-retry-after")).to_have_text(retry_after)
    await expect(page.locator("#err-ratelimit")).to_contain_text(";r=0;")
    await expect(page.locator("#status")).to_have_text(
        f"refused: 429 rate_limited — try again in {format_seconds(int(retry_after))}"
    )
    # The message that was not sent stays, marked, and is back in the box; the thread is kept.
    await expect(page.locator("#transcript .msg-user[data-failed]")).to_have_text(
        re.compile("one more")
    )
    await expect(page.locator("#message")).to_have_value("one more")
    assert await local(page, thread_key(endpoint)) is not None
    await opened.screenshot("agent-page-rate-limited.png")
    assert console_errors(opened, refusals=True) == []
    opened.assert_no_script_errors()

    # 400: a malformed device id in storage (not 16 to 128 of [A-Za-z0-9_-]).
    bad_device = f"localStorage.setItem({json.dumps(DEVICE_KEY)}, 'too short');"
    opened = await pages.open(page_url(site.allowed, gateway), init_script=bad_device)
    page = opened.page
    await expect(page.locator("body")).to_have_attribute("data-state", "empty")
    await send(page, "hello", state="error")
    await expect(page.locator("#err-status")).to_have_text("400")
    await expect(page.locator("#err-code")).to_have_text("bad_request")
    await expect(page.locator("#err-message")).to_contain_text(
        "X-Device-Id is missing or malformed"
    )
    await expect(page.locator("#transcript .msg-assistant")).to_have_count(0)
    assert console_errors(opened, refusals=True) == []
    opened.assert_no_script_errors()

    # 403 for a foreign origin: the browser refuses the preflight, the page can tell no more.
    opened = await pages.open(page_url(site.foreign, gateway))
    page = opened.page
    await expect(page.locator("#page-origin")).to_have_text(site.foreign)
    await send(page, "hello from elsewhere", state="error")
    await expect(page.locator("#err-status")).to_have_text("none — the fetch was rejected")
    await expect(page.locator("#err-code")).to_have_text("network_error")
    await expect(page.locator("#err-message")).to_contain_text("TypeError")
    await expect(page.locator("#err-message")).to_contain_text("allowed_origins")
    await expect(page.locator("#status")).to_have_text("refused by the browser (see below)")
    await opened.screenshot("agent-page-foreign-origin.png")
    assert console_errors(opened, refusals=True) == []
    opened.assert_no_script_errors()


async def test_agent_page_fits_a_phone_with_an_answer_and_has_a_favicon(
    pages: Pages, site: Site, gateway: Gateway
) -> None:
    opened = await pages.open(page_url(site.allowed, gateway))
    page = opened.page
    await expect(page.locator("body")).to_have_attribute("data-state", "empty")
    await send(
        page, "What does a long question on a narrow phone look like?", timeout=FIRST_ANSWER_MS
    )
    source = page.locator(f'#transcript .sources li.source[data-filename="{STUB_SOURCE}"]')
    await expect(source).to_have_count(1)
    answer = await page.locator("#transcript .msg-assistant .msg-text").inner_text()
    assert answer.rstrip().endswith("."), answer  # the stub's sentences end
    await has_a_favicon(opened, site.allowed)
    await fits_a_phone(opened, "agent-page")
    opened.assert_no_script_errors()
