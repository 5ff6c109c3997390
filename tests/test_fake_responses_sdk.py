"""The fake Responses API, checked against the official ``openai`` SDK and the Agents SDK.

The SDK parses with strict validation here, and ``responses.stream`` runs its own stream
state machine (indexes, item identities, completion), so an event the real API would never
send fails these tests instead of passing silently.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import openai
import pytest
from agents import Agent, FileSearchTool, ModelSettings, RunConfig, Runner, function_tool
from agents.models.openai_responses import OpenAIResponsesModel
from openai import AsyncOpenAI
from openai.types.responses import (
    FileSearchToolParam,
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFileSearchToolCall,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseIncompleteEvent,
    ResponseOutputMessage,
    ResponseOutputTextAnnotationAddedEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
)
from openai.types.shared import Reasoning

from tests.support.fake_responses import (
    FakeResponses,
    FileCitation,
    FileSearch,
    FunctionCall,
    Script,
    SearchHit,
    UrlCitation,
    WebSearch,
    WebSource,
)

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

KEY = "sk-test-responses-0123456789"
FILE_SEARCH: FileSearchToolParam = {"type": "file_search", "vector_store_ids": ["vs_1"]}

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeResponses]:
    async with FakeResponses(api_key=KEY) as server:
        yield server


def make_client(fake: FakeResponses, **kw: Any) -> AsyncOpenAI:
    kw.setdefault("api_key", KEY)
    kw.setdefault("max_retries", 0)
    return AsyncOpenAI(base_url=fake.base_url, _strict_response_validation=True, **kw)


@pytest.fixture
async def client(fake: FakeResponses) -> AsyncIterator[AsyncOpenAI]:
    sdk = make_client(fake)
    yield sdk
    await sdk.close()


async def collect(client: AsyncOpenAI, **kw: Any) -> list[ResponseStreamEvent]:
    kw.setdefault("model", "gpt-6.1-terra")
    kw.setdefault("input", "What are the opening hours?")
    stream = await client.responses.create(stream=True, **kw)
    return [event async for event in stream]


def types(events: list[ResponseStreamEvent]) -> list[str]:
    return [event.type for event in events]


def completed(events: list[ResponseStreamEvent]) -> Response:
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent)
    return last.response


# --- streamed text -------------------------------------------------------------------------------


async def test_text_streams_as_typed_events_with_usage(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(Script(text="Nine to five.", input_tokens=12, output_tokens=4))
    events = await collect(client, instructions="Be brief.")

    assert types(events) == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert [d.delta for d in deltas] == ["Nine", " to", " five."]
    message_id = deltas[0].item_id
    assert message_id.startswith("msg_")
    assert {(d.item_id, d.output_index, d.content_index) for d in deltas} == {(message_id, 0, 0)}
    response = completed(events)
    assert response.id.startswith("resp_") and response.id == fake.requests[0].response_id
    assert response.status == "completed"
    assert response.output_text == "Nine to five."
    assert response.model == "gpt-6.1-terra"
    assert response.instructions == "Be brief."
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)
    assert response.usage.total_tokens == 16
    message = response.output[0]
    assert isinstance(message, ResponseOutputMessage) and message.id == message_id
    assert message.status == "completed"
    assert fake.requests[0].outcome == "completed"


async def test_deltas_arrive_incrementally(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.script(Script(text="one two three four", delay=0.1))
    stream = await client.responses.create(model="gpt-6.1-terra", input="count", stream=True)
    arrivals: list[float] = []
    async for event in stream:
        if event.type == "response.output_text.delta":
            arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.08 for gap in gaps), gaps


async def test_explicit_chunks_and_default_usage(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.script(Script(text="abcdefgh", chunks=["abc", "defgh"], reasoning_tokens=5))
    events = await collect(client, input="12345678", instructions="1234")
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert deltas == ["abc", "defgh"]
    usage = completed(events).usage
    assert usage is not None
    # ceil(len('1234' + '"12345678"') / 4) = 4; ceil(8 / 4) + 5 reasoning = 7
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (4, 7, 11)
    assert usage.output_tokens_details.reasoning_tokens == 5


async def test_wire_format_is_server_sent_events(fake: FakeResponses) -> None:
    fake.script(Script(text="Hi"))
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{fake.base_url}/responses",
            json={"model": "gpt-6.1-terra", "input": "hi", "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        )
        body = await resp.text()
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["x-request-id"].startswith("req_")
    blocks = body.split("\n\n")
    assert blocks[-1] == ""  # every event ends with a blank line
    seen = []
    for block in blocks[:-1]:
        event_line, data_line = block.split("\n")
        name = event_line.removeprefix("event: ")
        data = json.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        seen.append(name)
    assert seen[0] == "response.created" and seen[-1] == "response.completed"
    assert "[DONE]" not in body  # the Responses API, unlike Chat Completions, sends none


# --- file search and web search ------------------------------------------------------------------


async def test_file_search_streams_call_events_and_citations(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(
        Script(
            text="Open nine to five. Closed on Sunday.",
            file_search=FileSearch(
                queries=("opening hours",),
                results=(
                    SearchHit("file-hours", "hours.md", "9-5", 0.9),
                    SearchHit("file-days", "days.pdf", "closed Sunday", 0.8),
                ),
                delay=0.2,
            ),
            citations=[
                FileCitation("file-hours", "hours.md", index=18),
                FileCitation("file-days", "days.pdf"),
            ],
        )
    )
    started = time.monotonic()
    events = await collect(client, tools=[FILE_SEARCH])
    assert time.monotonic() - started >= 0.2  # the search "takes a while"

    names = types(events)
    assert names[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert names.count("response.output_text.annotation.added") == 2
    assert names[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    # The first citation (index 18) arrives as soon as the text has reached it.
    first = names.index("response.output_text.annotation.added")
    streamed = "".join(e.delta for e in events[:first] if isinstance(e, ResponseTextDeltaEvent))
    assert streamed == "Open nine to five."

    added = events[2]
    assert added.type == "response.output_item.added"
    assert isinstance(added.item, ResponseFileSearchToolCall)
    assert added.item.status == "in_progress" and added.item.queries == []
    call_id = added.item.id
    assert call_id.startswith("fs_")
    assert {e.item_id for e in events[3:6] if hasattr(e, "item_id")} == {call_id}

    annotations = [e for e in events if isinstance(e, ResponseOutputTextAnnotationAddedEvent)]
    assert [a.annotation_index for a in annotations] == [0, 1]
    assert [(a.output_index, a.content_index) for a in annotations] == [(1, 0), (1, 0)]
    cited = [a.annotation for a in annotations]
    assert [(c.type, c.file_id, c.filename, c.index) for c in cited] == [  # type: ignore[union-attr]
        ("file_citation", "file-hours", "hours.md", 18),
        ("file_citation", "file-days", "days.pdf", 36),
    ]

    response = completed(events)
    call, message = response.output
    assert isinstance(call, ResponseFileSearchToolCall)
    assert call.status == "completed" and call.queries == ["opening hours"]
    assert call.results is None  # not asked for with include=
    assert isinstance(message, ResponseOutputMessage)
    part = message.content[0]
    assert part.type == "output_text"
    assert [(a.type, a.file_id) for a in part.annotations] == [  # type: ignore[union-attr]
        ("file_citation", "file-hours"),
        ("file_citation", "file-days"),
    ]
    assert response.tools[0].type == "file_search"
    assert response.tools[0].vector_store_ids == ["vs_1"]


async def test_file_search_runs_when_the_request_has_the_tool(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    events = await collect(
        client,
        input="When are you open?",
        tools=[FILE_SEARCH],
        include=["file_search_call.results"],
    )
    response = completed(events)
    call = response.output[0]
    assert isinstance(call, ResponseFileSearchToolCall)
    assert call.queries == ["When are you open?"]  # the user's question
    assert call.results is not None
    assert [(r.file_id, r.filename) for r in call.results] == [
        ("file-fake-handbook", "handbook.md")
    ]
    message = response.output[1]
    assert isinstance(message, ResponseOutputMessage)
    part = message.content[0]
    assert part.type == "output_text"
    # One default citation per result, at the end of the text.
    assert [(a.type, a.index) for a in part.annotations] == [  # type: ignore[union-attr]
        ("file_citation", len(part.text))
    ]

    no_tool = await collect(client)
    assert "response.file_search_call.searching" not in types(no_tool)
    fake.script(Script(file_search=False))
    disabled = await collect(client, tools=[FILE_SEARCH])
    assert "response.file_search_call.searching" not in types(disabled)


async def test_web_search_with_url_citations(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.script(
        Script(
            text="See the docs.",
            web_search=WebSearch(
                query="fake docs", sources=(WebSource("https://docs.example/x", "Docs"),)
            ),
            citations=[UrlCitation("https://docs.example/x", "Docs", start_index=4, end_index=12)],
        )
    )
    events = await collect(
        client, tools=[{"type": "web_search"}], include=["web_search_call.action.sources"]
    )
    names = types(events)
    assert names[2:7] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    annotation = next(e for e in events if isinstance(e, ResponseOutputTextAnnotationAddedEvent))
    assert annotation.annotation is not None and annotation.annotation.type == "url_citation"
    assert (annotation.annotation.url, annotation.annotation.title) == (
        "https://docs.example/x",
        "Docs",
    )
    assert (annotation.annotation.start_index, annotation.annotation.end_index) == (4, 12)
    call = completed(events).output[0]
    assert isinstance(call, ResponseFunctionWebSearch)
    assert call.id.startswith("ws_") and call.status == "completed"
    assert call.action.type == "search"
    assert call.action.query == "fake docs"
    assert call.action.sources is not None
    assert [s.url for s in call.action.sources] == ["https://docs.example/x"]


# --- non-streamed and the stream helper ---------------------------------------------------------


async def test_non_streamed_create_echoes_the_request(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(Script(text="Done.", input_tokens=30, output_tokens=2))
    response = await client.responses.create(
        model="gpt-6.1-terra",
        instructions="You are terse.",
        input=[{"role": "user", "content": "hi"}],
        tools=[FILE_SEARCH],
        temperature=0.2,
        max_output_tokens=64,
        reasoning={"effort": "low"},
        metadata={"thread": "t1"},
    )
    assert isinstance(response, Response)
    assert response.status == "completed"
    assert response.output_text == "Done."
    assert response.model == "gpt-6.1-terra"
    assert response.instructions == "You are terse."
    assert response.temperature == 0.2
    assert response.max_output_tokens == 64
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.metadata == {"thread": "t1"}
    assert [t.type for t in response.tools] == ["file_search"]
    assert [o.type for o in response.output] == ["file_search_call", "message"]
    assert response.usage is not None and response.usage.total_tokens == 32
    assert response._request_id is not None and response._request_id.startswith("req_")
    sent = fake.requests[0]
    assert not sent.stream and sent.outcome == "completed"


async def test_stream_helper_gets_the_final_text(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.script(Script(text="Final words here.", file_search=True))
    async with client.responses.stream(
        model="gpt-6.1-terra", input="hi", tools=[FILE_SEARCH]
    ) as stream:
        snapshots = [e.snapshot async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert snapshots == ["Final", "Final words", "Final words here."]
    assert final.output_text == "Final words here."
    assert [o.type for o in final.output] == ["file_search_call", "message"]


async def test_function_call_streams_as_the_sdk_parses_it(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    tool: Any = {
        "type": "function",
        "name": "search_site",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
            "additionalProperties": False,
        },
        "strict": True,
    }
    query = {"query": "opening hours on a long weekend"}
    fake.script(Script(function_calls=[FunctionCall("search_site", query, call_id="call_1")]))
    async with client.responses.stream(
        model="gpt-6.1-terra", input="When are you open?", tools=[tool]
    ) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    names = [e.type for e in events]
    assert names[2] == "response.output_item.added"
    assert names.count("response.function_call_arguments.delta") > 1  # in pieces
    assert names[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (done,) = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert json.loads(done.arguments) == query
    (call,) = final.output  # the call alone: no message until the tool's output comes back
    assert isinstance(call, ResponseFunctionToolCall)
    assert (call.name, call.call_id, call.status) == ("search_site", "call_1", "completed")
    assert json.loads(call.arguments) == query
    assert final.output_text == ""


async def test_agents_sdk_runs_a_function_tool_and_answers(fake: FakeResponses) -> None:
    calls: list[str] = []

    @function_tool
    def search_site(query: str) -> str:
        """Search the site."""
        calls.append(query)
        return "[1] Hours\nURL: https://example.org/hours\nNine to five."

    fake.script(
        Script(function_calls=[FunctionCall("search_site", {"query": "hours"})]),
        Script(text="Nine to five [1]."),
    )
    client = AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    agent = Agent(
        name="helper",
        model=OpenAIResponsesModel(model="gpt-6.1-terra", openai_client=client),
        tools=[search_site],
    )
    try:
        result = Runner.run_streamed(
            agent, "When do you open?", run_config=RunConfig(tracing_disabled=True)
        )
        async for _ in result.stream_events():
            pass
    finally:
        await client.close()
    assert calls == ["hours"]
    assert result.final_output == "Nine to five [1]."
    first, follow_up = fake.requests
    assert [t["name"] for t in first.tools] == ["search_site"]
    assert first.function_outputs == []
    (output,) = follow_up.function_outputs
    (call,) = [i for i in follow_up.input_items if i.get("type") == "function_call"]
    assert output["call_id"] == call["call_id"] and call["name"] == "search_site"
    assert output["output"] == "[1] Hours\nURL: https://example.org/hours\nNine to five."
    assert result.context_wrapper.usage.requests == 2


# --- recording -----------------------------------------------------------------------------------


async def test_records_headers_history_settings_and_attachments(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    history: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"role": "assistant", "content": "earlier answer"},
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look at these"},
                {
                    "type": "input_image",
                    "image_url": "data:image/png;base64,AAAA",
                    "detail": "auto",
                },
                {"type": "input_file", "file_id": "file-abc"},
            ],
        },
    ]
    await collect(client, input=history, temperature=0.5, max_output_tokens=10)
    sent = await fake.wait_for_requests(1)
    assert sent.api_key == KEY
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(sent) and "<masked>" in repr(sent)
    assert sent.path == "/v1/responses" and sent.stream
    assert sent.model == "gpt-6.1-terra"
    assert sent.body["temperature"] == 0.5 and sent.body["max_output_tokens"] == 10
    assert len(sent.input_items) == 3
    assert [p["file_id"] for p in sent.content_parts("input_file")] == ["file-abc"]
    assert [p["image_url"] for p in sent.content_parts("input_image")] == [
        "data:image/png;base64,AAAA"
    ]
    assert [p["text"] for p in sent.content_parts("input_text")] == [
        "first",
        "earlier answer",
        "look at these",
    ]


async def test_scripts_queue_in_order_then_the_default(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.default = Script(text="default")
    fake.script(Script(text="first"), Script(text="second"))
    assert fake.pending_scripts == 2
    texts = [completed(await collect(client)).output_text for _ in range(4)]
    assert texts == ["first", "second", "default", "default"]
    assert fake.pending_scripts == 0


# --- failures ------------------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_authentication_error(fake: FakeResponses) -> None:
    wrong = make_client(fake, api_key="sk-wrong-key-99998888")
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            await collect(wrong)
    finally:
        await wrong.close()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong-key-99998888" not in info.value.message
    assert fake.requests[0].outcome == "http_401"
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{fake.base_url}/responses", json={"model": "m"})
        payload = await resp.json()
    assert resp.status == 401
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert "didn't provide an API key" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_scripted_http_errors(
    fake: FakeResponses, client: AsyncOpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.script(Script(status=status, retry_after=7 if status == 429 else None))
    with pytest.raises(error) as info:
        await collect(client)
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and set(info.value.body) >= {"message", "type"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
        assert info.value.code == "rate_limit_exceeded"
    else:
        assert info.value.type == "server_error"
    # One failure, then the same script answers.
    assert completed(await collect(client)).output_text.startswith("Hello")
    assert [r.outcome for r in fake.requests] == [f"http_{status}", "completed"]


async def test_fail_times_with_sdk_retries_succeeds(fake: FakeResponses) -> None:
    fake.script(Script(text="third time lucky", status=503, fail_times=2, retry_after=0.01))
    sdk = make_client(fake, max_retries=2)
    try:
        events = await collect(sdk)
    finally:
        await sdk.close()
    assert completed(events).output_text == "third time lucky"
    assert [r.outcome for r in fake.requests] == ["http_503", "http_503", "completed"]
    assert [r.headers["x-stainless-retry-count"] for r in fake.requests] == ["0", "1", "2"]


async def test_fail_forever_and_custom_message(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.default = Script(status=500, fail_times=None, error_message="upstream exploded")
    for _ in range(3):
        with pytest.raises(openai.InternalServerError, match="upstream exploded"):
            await client.responses.create(model="gpt-6.1-terra", input="hi")


async def test_unknown_parameter_and_bad_tool_are_bad_requests(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await collect(client, extra_body={"chatkit": True})
    assert (info.value.code, info.value.param) == ("unknown_parameter", "chatkit")
    with pytest.raises(openai.BadRequestError):
        await collect(client, tools=[{"type": "file_search"}])  # no vector_store_ids
    with pytest.raises(openai.BadRequestError, match="model"):
        await client.post("/responses", cast_to=Response, body={"input": "hi"})


async def test_die_mid_answer_is_a_connection_error(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(Script(text="one two three four", die_after=2))
    seen: list[str] = []
    stream = await client.responses.create(model="gpt-6.1-terra", input="hi", stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for event in stream:
            seen.append(event.type)
    assert seen.count("response.output_text.delta") == 2
    assert "response.completed" not in seen
    assert fake.requests[0].outcome == "died"

    fake.script(Script(die_after=0))
    with pytest.raises(openai.APIConnectionError):
        await client.responses.create(model="gpt-6.1-terra", input="hi")


@pytest.mark.parametrize(
    ("end", "event_type"),
    [
        ("failed", ResponseFailedEvent),
        ("error", ResponseErrorEvent),
        ("incomplete", ResponseIncompleteEvent),
    ],
)
async def test_terminal_failures_in_the_stream(
    fake: FakeResponses, client: AsyncOpenAI, end: Any, event_type: type[Any]
) -> None:
    fake.script(Script(text="partial", end=end, error_message="model fell over"))
    events = await collect(client)
    last = events[-1]
    assert isinstance(last, event_type)
    assert "response.completed" not in types(events)
    assert fake.requests[0].outcome == end
    if isinstance(last, ResponseFailedEvent):
        assert last.response.status == "failed"
        assert last.response.error is not None
        assert last.response.error.message == "model fell over"
    elif isinstance(last, ResponseErrorEvent):
        assert (last.code, last.message) == ("server_error", "model fell over")
    else:
        assert last.response.status == "incomplete"
        assert last.response.incomplete_details is not None
        assert last.response.incomplete_details.reason == "max_output_tokens"


async def test_non_streamed_failed_response(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.script(Script(text="", end="failed"))
    response = await client.responses.create(model="gpt-6.1-terra", input="hi")
    assert response.status == "failed"
    assert response.error is not None and response.error.code == "server_error"
    assert response.output == []


# --- hangs and disconnects -----------------------------------------------------------------------


async def test_client_leaving_a_hung_stream_is_seen(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(Script(text="one two three", hang_after=1))
    stream = await client.responses.create(model="gpt-6.1-terra", input="hi", stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    assert fake.requests[0].outcome == "hung"
    assert fake.disconnects == 0
    await stream.close()
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    assert fake.disconnects == 1
    assert fake.requests[0].outcome == "disconnected"


async def test_cancelled_call_is_seen_as_disconnect(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.script(Script(hang_after=0))
    task = asyncio.create_task(client.responses.create(model="gpt-6.1-terra", input="hi"))
    await fake.wait_for_requests(1)
    await asyncio.sleep(0.05)
    assert fake.requests[0].outcome == "hung"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    assert fake.requests[0].outcome == "disconnected"


async def test_latency_and_slow_search_can_be_left(fake: FakeResponses) -> None:
    fake.script(Script(file_search=FileSearch(delay=30)))
    sdk = make_client(fake, timeout=0.3)
    try:
        stream = await sdk.responses.create(model="gpt-6.1-terra", input="hi", stream=True)
        with pytest.raises(openai.APITimeoutError):
            async for _ in stream:
                pass
    finally:
        await sdk.close()
    await asyncio.wait_for(fake.disconnected.wait(), 5)
    assert fake.requests[0].outcome == "disconnected"


async def test_close_does_not_wait_for_a_hung_request(fake: FakeResponses) -> None:
    fake.script(Script(hang_after=0))
    sdk = make_client(fake, timeout=0.2)
    try:
        with pytest.raises(openai.APITimeoutError):
            await sdk.responses.create(model="gpt-6.1-terra", input="hi")
    finally:
        await sdk.close()
    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 1.0


def test_script_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="chunks"):
        Script(text="abc", chunks=["ab"])
    with pytest.raises(ValueError, match="status"):
        Script(status=200)
    with pytest.raises(ValueError, match="fail_times"):
        Script(status=500, fail_times=0)
    with pytest.raises(ValueError, match="end"):
        Script(end="done")  # type: ignore[arg-type]
    assert Script(text="a b  c ").deltas() == ["a", " b", "  c", " "]


# --- the Agents SDK ------------------------------------------------------------------------------


async def test_agents_sdk_streams_file_search_answer(fake: FakeResponses) -> None:
    fake.script(
        Script(
            text="We open at nine.",
            delay=0.01,
            file_search=FileSearch(results=(SearchHit("file-hours", "hours.md"),)),
            input_tokens=40,
            output_tokens=5,
        )
    )
    client = AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    agent = Agent(
        name="helper",
        instructions="Answer from the handbook.",
        model=OpenAIResponsesModel(model="gpt-6.1-terra", openai_client=client),
        tools=[FileSearchTool(vector_store_ids=["vs_1"], max_num_results=3)],
        model_settings=ModelSettings(
            temperature=0.3, max_tokens=200, reasoning=Reasoning(effort="low")
        ),
    )
    try:
        result = Runner.run_streamed(
            agent, "When do you open?", run_config=RunConfig(tracing_disabled=True)
        )
        raw: list[Any] = [
            event.data
            async for event in result.stream_events()
            if event.type == "raw_response_event"
        ]
    finally:
        await client.close()

    assert [e.delta for e in raw if e.type == "response.output_text.delta"] == [
        "We",
        " open",
        " at",
        " nine.",
    ]
    citations = [e.annotation for e in raw if e.type == "response.output_text.annotation.added"]
    assert [(c.type, c.file_id, c.filename) for c in citations] == [
        ("file_citation", "file-hours", "hours.md")
    ]
    assert "response.file_search_call.completed" in [e.type for e in raw]
    assert result.final_output == "We open at nine."
    usage = result.context_wrapper.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens) == (1, 40, 5)
    assert usage.total_tokens == 45

    sent = fake.requests[0]
    assert sent.model == "gpt-6.1-terra" and sent.stream
    assert sent.instructions == "Answer from the handbook."
    assert sent.tools == [
        {"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": 3}
    ]
    assert sent.input_items == [{"role": "user", "content": "When do you open?"}]
    assert sent.body["temperature"] == 0.3
    assert sent.body["max_output_tokens"] == 200
    assert sent.body["reasoning"] == {"effort": "low"}


# --- models (SPEC §10) -----------------------------------------------------------------------


async def test_models_list_and_retrieve_parse_as_the_sdk_s_model(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    fake.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")

    listed = [model async for model in client.models.list()]  # strict validation
    assert [m.id for m in listed] == ["gpt-4.1-sunset", "gpt-6.1-terra", "gpt-6.1-terra-mini"]
    assert all(isinstance(m, openai.types.Model) and m.object == "model" for m in listed)

    retiring = await client.models.retrieve("gpt-4.1-sunset")
    assert (retiring.id, retiring.shutdown_date) == ("gpt-4.1-sunset", "2026-12-11")
    assert (await client.models.retrieve("gpt-6.1-terra")).shutdown_date is None
    fake.models.add("gpt-old", shutdown_date=1_797_033_600)  # unix seconds: not the SDK's type,
    lenient = AsyncOpenAI(base_url=fake.base_url, api_key=KEY)  # but read as given
    try:
        old = await lenient.models.retrieve("gpt-old")
    finally:
        await lenient.close()
    assert cast(Any, old.shutdown_date) == 1_797_033_600
    assert fake.models.requests == ["/v1/models", *(f"/v1/models/{m}" for m in (
        "gpt-4.1-sunset", "gpt-6.1-terra", "gpt-old"))]  # fmt: skip
    assert fake.requests == []  # look-ups are kept apart


async def test_an_unknown_model_is_404_model_not_found(
    fake: FakeResponses, client: AsyncOpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-nonesuch")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    with pytest.raises(openai.AuthenticationError):
        await make_client(fake, api_key="sk-wrong-000000000000").models.retrieve("gpt-6.1-terra")


async def test_models_fail_with_the_status_chosen(fake: FakeResponses, client: AsyncOpenAI) -> None:
    fake.models.fail_status = 503
    with pytest.raises(openai.InternalServerError) as caught:
        await client.models.retrieve("gpt-6.1-terra")
    assert caught.value.status_code == 503
    fake.models.fail_status = None
    assert (await client.models.retrieve("gpt-6.1-terra")).id == "gpt-6.1-terra"


@pytest.mark.parametrize(
    ("status", "error"), [(400, openai.BadRequestError), (404, openai.NotFoundError)]
)
async def test_a_retired_model_is_refused_before_any_script(
    fake: FakeResponses, client: AsyncOpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.models.gone_status = status
    fake.models.retire("gpt-4.1-sunset")
    fake.script(Script(text="From the successor."))
    with pytest.raises(error) as caught:
        await collect(client, model="gpt-4.1-sunset")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert fake.requests[0].outcome == f"http_{status}"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-4.1-sunset")

    events = await collect(client, model="gpt-6.1-terra")  # the script is still there
    assert completed(events).output_text == "From the successor."
    with pytest.raises(error):  # through the Agents SDK too
        model = OpenAIResponsesModel(model="gpt-4.1-sunset", openai_client=client)
        agent = Agent(name="helper", model=model)
        await Runner.run(agent, "Hi", run_config=RunConfig(tracing_disabled=True))
