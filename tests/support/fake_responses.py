"""A fake OpenAI Responses API (``POST /v1/responses``) for the ``chatkit_agent`` tests.

Every event and object it sends is an instance of the ``openai`` SDK's own pydantic types
(``openai.types.responses``; events are validated against the SDK's ``ResponseStreamEvent``
union), dumped with ``model_dump_json(by_alias=True, exclude_unset=True)``, so it cannot drift
from what the SDK parses. ``test_fake_responses_sdk.py`` checks it against the SDK (strict
validation, the ``responses.stream`` state machine) and the Agents SDK.

    async with FakeResponses(api_key=KEY) as fake:          # 127.0.0.1, a free port
        fake.script(Script(text="Hello there", delay=0.05))  # the next answer
        client = AsyncOpenAI(base_url=fake.base_url, api_key=KEY)
        ...
        assert fake.requests[-1].instructions == "Be brief."

A ``Script`` is one successful answer, optionally preceded by ``fail_times`` HTTP failures.
``fake.script(a, b)`` queues scripts for the next answers, in arrival order; ``fake.default``
(assignable) answers when the queue is empty. Script fields:

- ``text``; ``chunks``: the ``output_text.delta`` pieces (default: ``text`` split before each
  word); ``delay``: seconds between deltas; ``latency``: seconds before the HTTP answer starts.
- ``file_search`` / ``web_search``: ``None`` runs the hosted call only when the request's
  ``tools`` have one; ``True`` or ``FileSearch(queries, results, delay)`` /
  ``WebSearch(query, sources, delay)`` always; ``False`` never. ``delay`` is spent between
  ``.searching`` and ``.completed``. Results and sources appear in the finished item only when
  the request's ``include`` asks for them, as with OpenAI.
- ``function_calls``: ``FunctionCall(name, arguments, call_id)`` items (a function tool the
  request offers, e.g. the gateway's ``search_site``), streamed as OpenAI does
  (``output_item.added``, ``function_call_arguments.delta``/``.done``, ``output_item.done``);
  the answer is then the calls alone, no message. Queue the follow-up answer as the next
  script: the follow-up request carries the ``function_call_output`` items
  (``ResponsesRequest.function_outputs``).
- ``citations``: ``FileCitation`` / ``UrlCitation`` on the text (``None``: one per search
  result or source, at the end of the text). Each is streamed as one
  ``output_text.annotation.added`` once the text reaches its index; the finished part and
  message carry them all.
- ``input_tokens`` / ``output_tokens`` / ``reasoning_tokens`` / ``cached_tokens``: ``usage``
  (defaults: ceil(len/4) of instructions+input JSON, and of the text, plus reasoning).
- ``status`` with ``fail_times`` (``None``: forever), ``retry_after`` (429 default: 1 s) and
  ``error_message``: answer that HTTP error in OpenAI's ``{"error": {...}}`` shape first.
- ``die_after=N``: cut the connection after N deltas, before ``response.completed``
  (non-streamed: with no answer). ``hang_after=N``: block after N deltas until the client
  goes away (non-streamed: before answering).
- ``end``: ``"completed"``, ``"incomplete"`` (max_output_tokens), ``"failed"``
  (``response.failed``; non-streamed a 200 with ``status: failed``), ``"error"`` (an ``error``
  event).

Title calls (gateway/agent/titles.py: a thread's title after its first answer, told apart by
their ``instructions``) are answered from their own queue, ``fake.script_title(...)``, then
``fake.title_default`` (a short title), and recorded in ``fake.title_requests``, not in
``fake.requests``: a test scripting turns is not disturbed by the titles between them.

``fake.models`` (tests/support/fake_models.py) answers ``GET /v1/models`` and ``/v1/models/{id}``
(the SDK's ``Model``, a ``shutdown_date`` for chosen models, 404 ``model_not_found`` for
unknown ones, a 5xx while ``fail_status`` is set); a model it ``retire``s is refused by
``/v1/responses`` with ``model_not_found`` before any script is taken.

A wrong or missing ``Authorization: Bearer`` key is always a 401, unknown body keys a 400.
Every request is recorded in ``fake.requests`` (``ResponsesRequest``: headers including the
key, masked in its repr; the parsed body; helpers for model, instructions, tools, input items
and content parts; ``outcome``). A client that leaves mid-answer increments
``fake.disconnects`` and sets ``fake.disconnected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, Union, cast, get_args

import pydantic
from aiohttp import web
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFailedEvent,
    ResponseFileSearchToolCall,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseIncompleteEvent,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseUsage,
)
from openai.types.responses import response_output_text as output_text
from openai.types.responses import response_output_text_annotation_added_event as added_event
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from openai.types.responses.response_error import ResponseError
from openai.types.responses.response_file_search_tool_call import Result as FileSearchResult
from openai.types.responses.response_function_web_search import ActionSearch, ActionSearchSource
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from gateway.agent.titles import INSTRUCTIONS as TITLE_INSTRUCTIONS
from tests.support.fake_models import ModelCatalogue
from tests.support.fake_openai import _NO_KEY, DEFAULT_API_KEY, _default_fault_payload, _mask_key
from tests.support.loopback import LoopbackServer

End = Literal["completed", "incomplete", "failed", "error"]
_PARAMS: Final = ResponseCreateParamsNonStreaming.__optional_keys__
# The SDK's event union, discriminated on "type" as the SDK itself parses it.
_EVENT_TYPES: Final = get_args(get_args(ResponseStreamEvent)[0])
_EVENTS: Final[pydantic.TypeAdapter[Any]] = pydantic.TypeAdapter(
    cast(Any, Annotated[Union[_EVENT_TYPES], pydantic.Field(discriminator="type")])  # noqa: UP007
)
_TERMINAL: Final = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
    "error": "error",
}
_ids = itertools.count(1)


@dataclass(frozen=True)
class SearchHit:
    file_id: str = "file-fake-handbook"
    filename: str = "handbook.md"
    text: str = "Opening hours are nine to five."
    score: float = 0.92


@dataclass(frozen=True)
class FileSearch:
    queries: tuple[str, ...] | None = None  # None: the last user message's text
    results: tuple[SearchHit, ...] = (SearchHit(),)
    delay: float = 0.0


@dataclass(frozen=True)
class WebSource:
    url: str = "https://example.com/fake-page"
    title: str = "Fake page"


@dataclass(frozen=True)
class WebSearch:
    query: str | None = None  # None: the last user message's text
    sources: tuple[WebSource, ...] = (WebSource(),)
    delay: float = 0.0


@dataclass(frozen=True)
class FileCitation:
    file_id: str
    filename: str
    index: int | None = None  # where in the text it cites; None: at the end


@dataclass(frozen=True)
class UrlCitation:
    url: str
    title: str
    start_index: int = 0
    end_index: int | None = None  # None: the end of the text


Citation = FileCitation | UrlCitation


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str | dict[str, Any] = "{}"  # a dict is sent as its JSON
    call_id: str | None = None  # None: a fresh call_…

    @property
    def json_arguments(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Script:
    text: str = "Hello from the fake Responses API."
    chunks: Sequence[str] | None = None
    delay: float = 0.0
    latency: float = 0.0
    file_search: FileSearch | bool | None = None
    web_search: WebSearch | bool | None = None
    citations: Sequence[Citation] | None = None
    function_calls: Sequence[FunctionCall] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    status: int | None = None
    fail_times: int | None = 1
    retry_after: float | None = None
    error_message: str | None = None
    die_after: int | None = None
    hang_after: int | None = None
    end: End = "completed"

    def __post_init__(self) -> None:
        if self.chunks is not None and "".join(self.chunks) != self.text:
            raise ValueError("chunks must join to text")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be an HTTP error status")
        if self.fail_times is not None and self.fail_times < 1:
            raise ValueError("fail_times must be >= 1 or None")
        if min(self.die_after or 0, self.hang_after or 0) < 0:
            raise ValueError("die_after and hang_after must be >= 0")
        if self.end not in _TERMINAL.values():
            raise ValueError(f"end must be one of {sorted(_TERMINAL.values())}")

    def deltas(self) -> list[str]:
        if self.chunks is not None:
            return [chunk for chunk in self.chunks if chunk]
        parts: list[str] = re.findall(r"\s*\S+", self.text)
        rest = self.text[len("".join(parts)) :]
        return [*parts, rest] if rest else parts


# What a title call gets when no title script is queued (gateway/agent/titles.py): usage 0,
# so tests that count a turn's tokens are not shifted by it (title tests script their own).
TITLE_DEFAULT: Final = Script(text="A fake title", input_tokens=0, output_tokens=0)


@dataclass
class ResponsesRequest:
    """One request as it arrived. ``outcome``: "pending", "completed", "incomplete", "failed",
    "error", "http_<status>", "died", "hung" or "disconnected"."""

    method: str
    path: str
    headers: dict[str, str]  # lowercase names; Authorization kept (masked in repr)
    body: Any  # parsed JSON, None when empty or not JSON
    outcome: str = "pending"
    response_id: str | None = None

    def __repr__(self) -> str:
        shown = {k: "<masked>" if k == "authorization" else v for k, v in self.headers.items()}
        return (
            f"ResponsesRequest({self.method} {self.path}, outcome={self.outcome!r}, "
            f"headers={shown!r}, body={self.body!r})"
        )

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:].strip() if auth.startswith("Bearer ") else None

    def _get(self, key: str) -> Any:
        return self.body.get(key) if isinstance(self.body, dict) else None

    @property
    def model(self) -> Any:
        return self._get("model")

    @property
    def instructions(self) -> Any:
        return self._get("instructions")

    @property
    def stream(self) -> bool:
        return self._get("stream") is True

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self._get("tools") or [])

    @property
    def input_items(self) -> list[dict[str, Any]]:
        value = self._get("input")
        return [{"role": "user", "content": value}] if isinstance(value, str) else list(value or [])

    @property
    def function_outputs(self) -> list[dict[str, Any]]:
        """The ``function_call_output`` input items: what the client's tools returned."""
        return [item for item in self.input_items if item.get("type") == "function_call_output"]

    def content_parts(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Content parts of all input messages, optionally of one type ("input_image", …)."""
        parts: list[dict[str, Any]] = []
        for item in self.input_items:
            content = item.get("content")
            if isinstance(content, str):
                content = [{"type": "input_text", "text": content}]
            for part in content if isinstance(content, list) else []:
                if isinstance(part, dict) and kind in (None, part.get("type")):
                    parts.append(part)
        return parts


@dataclass
class _Pending:
    script: Script
    failures_left: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.failures_left = self.script.fail_times


class _Refused(Exception):
    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.status, self.error = status, error


@dataclass(frozen=True)
class _Cite:
    position: int  # streamed once the text reaches it
    annotation: output_text.Annotation  # in the finished part
    event_annotation: added_event.Annotation  # the SDK has a twin class for the event


class FakeResponses(LoopbackServer):
    """In-process stand-in for ``api.openai.com/v1/responses``."""

    shutdown_timeout = 1.0
    handler_cancellation = True  # a client that goes away cancels its handler: we notice

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        default: Script | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host)
        self.api_key = api_key
        self.requests: list[ResponsesRequest] = []
        self.models = ModelCatalogue()  # GET /v1/models…, retired models (fake_models.py)
        self.disconnects = 0
        self.disconnected = asyncio.Event()
        self._queue: list[_Pending] = []
        self._default = _Pending(default or Script())
        self.title_requests: list[ResponsesRequest] = []
        self._title_queue: list[_Pending] = []
        self._title_default = _Pending(TITLE_DEFAULT)

    @property
    def default(self) -> Script:
        return self._default.script

    @default.setter
    def default(self, script: Script) -> None:
        self._default = _Pending(script)

    def script(self, *scripts: Script) -> None:
        """Queue scripts for the next answers, in order."""
        self._queue.extend(_Pending(s) for s in scripts)

    @property
    def title_default(self) -> Script:
        return self._title_default.script

    @title_default.setter
    def title_default(self, script: Script) -> None:
        self._title_default = _Pending(script)

    def script_title(self, *scripts: Script) -> None:
        """Queue scripts for the next title calls, in order."""
        self._title_queue.extend(_Pending(s) for s in scripts)

    @property
    def pending_scripts(self) -> int:
        return len(self._queue)

    def reset(self) -> None:
        self.requests.clear()
        self._queue.clear()
        self.title_requests.clear()
        self._title_queue.clear()
        self.disconnects = 0
        self.disconnected.clear()

    async def wait_for_requests(self, count: int = 1, timeout: float = 5.0) -> ResponsesRequest:
        """Wait until ``count`` requests have arrived; returns the ``count``-th."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {count} requests arrived")
            await asyncio.sleep(0.005)
        return self.requests[count - 1]

    # lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    # plumbing

    def _gone(self, record: ResponsesRequest) -> None:
        if record.outcome != "disconnected" and not self._closing.is_set():
            record.outcome = "disconnected"
            self.disconnects += 1
            self.disconnected.set()

    def _take(self, title: bool = False) -> tuple[Script, bool]:
        """The script for this attempt, and whether the attempt is one of its failures."""
        queue, default = (
            (self._title_queue, self._title_default) if title else (self._queue, self._default)
        )
        pending = queue[0] if queue else default
        script = pending.script
        if script.status is not None and pending.failures_left != 0:
            if pending.failures_left is not None:
                pending.failures_left -= 1
            return script, True
        if pending is not default:
            queue.pop(0)
        return script, False

    @staticmethod
    def _headers(started: float) -> dict[str, str]:
        return {
            "x-request-id": f"req_{secrets.token_hex(16)}",
            "openai-version": "2020-10-01",
            "openai-processing-ms": str(int((time.monotonic() - started) * 1000)),
        }

    def _refuse(
        self, record: ResponsesRequest, started: float, status: int, error: dict[str, Any]
    ) -> web.Response:
        record.outcome = f"http_{status}"
        return web.json_response({"error": error}, status=status, headers=self._headers(started))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        record = ResponsesRequest(request.method, request.path, headers, body)
        if _is_title(body):  # titles: apart from the turns
            self.title_requests.append(record)
        elif not _below_models(request.path):  # look-ups: in self.models.requests
            self.requests.append(record)
        try:
            return await self._serve(request, record, started)
        except asyncio.CancelledError:
            self._gone(record)
            raise

    async def _serve(
        self, request: web.Request, record: ResponsesRequest, started: float
    ) -> web.StreamResponse:
        try:
            self._authorize(record)
            if _below_models(request.path):
                status, payload = self.models.answer(request.method, request.path)
                record.outcome = "completed" if status == 200 else f"http_{status}"
                return web.json_response(payload, status=status, headers=self._headers(started))
            if request.method != "POST" or request.path != "/v1/responses":
                raise _Refused(404, _error(f"Invalid URL ({request.method} {request.path})"))
            body = _validate(record.body)
            gone = self.models.refusal(body["model"])
            if gone is not None:
                raise _Refused(*gone)
            base = _base(body)
        except _Refused as refused:
            return self._refuse(record, started, refused.status, refused.error)
        script, fail = self._take(title=_is_title(body))
        await self._sleep(script.latency)
        if fail:
            assert script.status is not None
            error = dict(_default_fault_payload(script.status)["error"])
            if script.error_message is not None:
                error["message"] = script.error_message
            response = self._refuse(record, started, script.status, error)
            retry_after = 1.0 if script.retry_after is None and script.status == 429 else None
            retry_after = script.retry_after if script.retry_after is not None else retry_after
            if retry_after is not None:
                response.headers["retry-after"] = f"{retry_after:g}"
            return response
        record.response_id = base["id"]
        async with contextlib.aclosing(self._play(script, base, body, record)) as events:
            if body.get("stream") is True:
                return await self._stream(request, record, started, events)
            return await self._answer(request, record, started, events)

    def _authorize(self, record: ResponsesRequest) -> None:
        key = record.api_key
        if not key:
            raise _Refused(401, _error(_NO_KEY))
        if not secrets.compare_digest(key.encode(), self.api_key.encode()):
            message = (
                f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys."
            )
            raise _Refused(401, _error(message, "invalid_api_key"))

    async def _stream(
        self,
        request: web.Request,
        record: ResponsesRequest,
        started: float,
        events: AsyncGenerator[ResponseStreamEvent | None, None],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=self._headers(started))
        resp.content_type = "text/event-stream"
        resp.charset = "utf-8"
        resp.headers["cache-control"] = "no-cache"
        await resp.prepare(request)
        async for event in events:
            if event is None:
                record.outcome = "died"
                if request.transport is not None:
                    request.transport.close()
                return resp
            try:
                await resp.write(f"event: {event.type}\ndata: {_dump(event)}\n\n".encode())
            except ConnectionError:
                self._gone(record)
                return resp
            record.outcome = _TERMINAL.get(event.type, record.outcome)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    async def _answer(
        self,
        request: web.Request,
        record: ResponsesRequest,
        started: float,
        events: AsyncGenerator[ResponseStreamEvent | None, None],
    ) -> web.StreamResponse:
        final: ResponseStreamEvent | None = None
        async for event in events:
            if event is None:
                record.outcome = "died"
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=500)  # never sent: the transport is closed
            final = event
        if not isinstance(
            final, ResponseCompletedEvent | ResponseIncompleteEvent | ResponseFailedEvent
        ):
            # An "error" event, or a hang ended by close(): what OpenAI answers is a 500.
            hung = record.outcome == "hung"
            refused = self._refuse(record, started, 500, _default_fault_payload(500)["error"])
            record.outcome = "hung" if hung else record.outcome
            return refused
        record.outcome = _TERMINAL[final.type]
        return web.Response(
            text=_dump(final.response),
            content_type="application/json",
            headers=self._headers(started),
        )

    async def _play(
        self, script: Script, base: dict[str, Any], body: dict[str, Any], record: ResponsesRequest
    ) -> AsyncGenerator[ResponseStreamEvent | None, None]:
        """The answer's events in order, sleeping where the script says; None = cut here."""
        seq = itertools.count()
        response = Response.model_validate(base)
        yield _event(seq, "response.created", response=response)
        yield _event(seq, "response.in_progress", response=response)
        output: list[ResponseOutputItem] = []
        searches = _searches(script, response, body)
        for kind, started, finished, delay in searches:
            at = {"item_id": started.id, "output_index": len(output)}
            yield _event(seq, "response.output_item.added", output_index=len(output), item=started)
            yield _event(seq, f"response.{kind}.in_progress", **at)
            yield _event(seq, f"response.{kind}.searching", **at)
            await self._sleep(delay)
            yield _event(seq, f"response.{kind}.completed", **at)
            yield _event(seq, "response.output_item.done", output_index=len(output), item=finished)
            output.append(finished)
        for call in script.function_calls:
            calling = _CallPlay(call, len(output))
            async for event in calling.events(seq):
                yield event
            output.append(calling.item)

        calls = bool(script.function_calls)
        text, deltas = ("", []) if calls else (script.text, script.deltas())
        die = None if script.die_after is None else min(script.die_after, len(deltas))
        hang = None if script.hang_after is None else min(script.hang_after, len(deltas))
        finishes = script.end in ("completed", "incomplete") and not calls
        message_id, index = f"msg_{_token()}", len(output)
        at = {"item_id": message_id, "output_index": index, "content_index": 0}
        annotations: list[output_text.Annotation] = []
        if text or finishes:
            item = ResponseOutputMessage(
                id=message_id, type="message", role="assistant", status="in_progress", content=[]
            )
            yield _event(seq, "response.output_item.added", output_index=index, item=item)
            empty = ResponseOutputText(type="output_text", text="", annotations=[], logprobs=[])
            yield _event(seq, "response.content_part.added", **at, part=empty)
            pending = _citations(script, searches, len(text))
            sent = 0
            for n, delta in enumerate(deltas):
                if n in (die, hang):
                    break
                if n:
                    await self._sleep(script.delay)
                yield _event(seq, "response.output_text.delta", **at, delta=delta, logprobs=[])
                sent += len(delta)
                while pending and (pending[0].position <= sent or n == len(deltas) - 1):
                    cite = pending.pop(0)
                    yield _event(
                        seq,
                        "response.output_text.annotation.added",
                        **at,
                        annotation_index=len(annotations),
                        annotation=cite.event_annotation,
                    )
                    annotations.append(cite.annotation)
        if die is not None:
            yield None
            return
        if hang is not None:
            record.outcome = "hung"
            await self._closing.wait()  # until the client goes away (cancelled) or we close
            return
        if finishes:
            yield _event(seq, "response.output_text.done", **at, text=text, logprobs=[])
            part = ResponseOutputText(
                type="output_text", text=text, annotations=annotations, logprobs=[]
            )
            yield _event(seq, "response.content_part.done", **at, part=part)
            message = ResponseOutputMessage(
                id=message_id,
                type="message",
                role="assistant",
                content=[part],
                status="completed" if script.end == "completed" else "incomplete",
            )
            yield _event(seq, "response.output_item.done", output_index=index, item=message)
            output.append(message)

        final: dict[str, Any] = {**base, "output": output, "usage": _usage(script, body)}
        error_text = script.error_message or "The server had an error processing your request."
        if script.end == "completed":
            final.update(status="completed", completed_at=int(time.time()))
        elif script.end == "incomplete":
            final.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        elif script.end == "failed":
            error = ResponseError(code="server_error", message=error_text)
            final.update(status="failed", usage=None, error=error)
        else:
            yield _event(seq, "error", code="server_error", message=error_text, param=None)
            return
        yield _event(seq, f"response.{script.end}", response=Response.model_validate(final))


class _CallPlay:
    """One function call's events, as OpenAI streams them; `item` is the finished call."""

    def __init__(self, call: FunctionCall, index: int) -> None:
        arguments = call.json_arguments
        self.index = index
        self.started = ResponseFunctionToolCall(
            id=f"fc_{_token()}", type="function_call", status="in_progress",
            call_id=call.call_id or f"call_{_token()}", name=call.name, arguments="",
        )  # fmt: skip
        self.item = self.started.model_copy(update={"status": "completed", "arguments": arguments})

    async def events(self, seq: Iterator[int]) -> AsyncGenerator[ResponseStreamEvent, None]:
        at = {"item_id": self.started.id, "output_index": self.index}
        yield _event(seq, "response.output_item.added", output_index=self.index, item=self.started)
        arguments = self.item.arguments
        for start in range(0, len(arguments), 16):
            delta = arguments[start : start + 16]
            yield _event(seq, "response.function_call_arguments.delta", **at, delta=delta)
        yield _event(seq, "response.function_call_arguments.done", **at, arguments=arguments)
        yield _event(seq, "response.output_item.done", output_index=self.index, item=self.item)


def _is_title(body: Any) -> bool:
    return isinstance(body, dict) and body.get("instructions") == TITLE_INSTRUCTIONS


def _below_models(path: str) -> bool:
    return path == "/v1/models" or path.startswith("/v1/models/")


def _token() -> str:
    return f"fake{next(_ids):08d}{secrets.token_hex(12)}"


def _dump(model: pydantic.BaseModel) -> str:
    return model.model_dump_json(by_alias=True, exclude_unset=True)


def _event(seq: Iterator[int], kind: str, **fields: Any) -> ResponseStreamEvent:
    """One event, validated by the SDK's own event types, with the next sequence number."""
    event: ResponseStreamEvent = _EVENTS.validate_python(
        {"type": kind, "sequence_number": next(seq), **fields}
    )
    return event


def _error(message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": param, "code": code}


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _Refused(400, _error("We could not parse the JSON body of your request."))
    for key in body:
        if key not in _PARAMS:
            raise _Refused(400, _error(f"Unknown parameter: '{key}'.", "unknown_parameter", key))
    if not isinstance(body.get("model"), str):
        message = "Missing required parameter: 'model'."
        raise _Refused(400, _error(message, "missing_required_parameter", "model"))
    return body


def _base(body: dict[str, Any]) -> dict[str, Any]:
    """The in-progress Response, echoing the request as OpenAI does (checked by the SDK)."""
    base: dict[str, Any] = {
        "id": f"resp_{_token()}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": body.get("service_tier") or "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    try:
        Response.model_validate(base)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        message = f"Invalid '{param}': {first['msg']}"
        raise _Refused(400, _error(message, "invalid_value", param)) from None
    return base


def _last_user_text(body: dict[str, Any]) -> str:
    """What a model would search for: the text of the last user message."""
    for item in reversed(ResponsesRequest("POST", "", {}, body).input_items):
        if item.get("role", "user") == "user":
            one = ResponsesRequest("POST", "", {}, {"input": [item]})
            texts = [str(part.get("text", "")) for part in one.content_parts("input_text")]
            if any(texts):
                return " ".join(texts)
    return "query"


Search = tuple[
    str, ResponseFileSearchToolCall | ResponseFunctionWebSearch, ResponseOutputItem, float
]


def _searches(script: Script, response: Response, body: dict[str, Any]) -> list[Search]:
    """The hosted tool calls to play: (event kind, item when added, item when done, delay)."""
    tools = {tool.type for tool in response.tools}
    include = set(body.get("include") or [])
    query = _last_user_text(body)
    out: list[Search] = []
    fs = script.file_search
    if isinstance(fs, FileSearch) or (fs is None and "file_search" in tools) or fs is True:
        fs = fs if isinstance(fs, FileSearch) else FileSearch()
        results = [
            FileSearchResult(
                file_id=hit.file_id, filename=hit.filename, text=hit.text, score=hit.score
            )
            for hit in fs.results
        ]
        call_id = f"fs_{_token()}"
        started = ResponseFileSearchToolCall(
            id=call_id, type="file_search_call", status="in_progress", queries=[]
        )
        finished = ResponseFileSearchToolCall(
            id=call_id,
            type="file_search_call",
            status="completed",
            queries=list(fs.queries or (query,)),
            results=results if "file_search_call.results" in include else None,
        )
        out.append(("file_search_call", started, finished, fs.delay))
    ws = script.web_search
    wanted = bool(tools & {"web_search", "web_search_preview"})
    if isinstance(ws, WebSearch) or (ws is None and wanted) or ws is True:
        ws = ws if isinstance(ws, WebSearch) else WebSearch()
        call_id = f"ws_{_token()}"
        action = ActionSearch(type="search", query=ws.query or query)
        if "web_search_call.action.sources" in include:
            sources = [ActionSearchSource(type="url", url=s.url) for s in ws.sources]
            action = ActionSearch(type="search", query=ws.query or query, sources=sources)
        started_ws = ResponseFunctionWebSearch(
            id=call_id,
            type="web_search_call",
            status="in_progress",
            action=ActionSearch(type="search"),
        )
        finished_ws = ResponseFunctionWebSearch(
            id=call_id, type="web_search_call", status="completed", action=action
        )
        out.append(("web_search_call", started_ws, finished_ws, ws.delay))
    return out


def _citations(script: Script, searches: list[Search], length: int) -> list[_Cite]:
    chosen: list[Citation] = list(script.citations or ())
    if script.citations is None:
        for kind, _, _, _ in searches:
            if kind == "file_search_call":
                fs = script.file_search if isinstance(script.file_search, FileSearch) else None
                hits = (fs or FileSearch()).results
                chosen += [FileCitation(hit.file_id, hit.filename) for hit in hits]
            else:
                ws = script.web_search if isinstance(script.web_search, WebSearch) else None
                chosen += [UrlCitation(src.url, src.title) for src in (ws or WebSearch()).sources]
    out: list[_Cite] = []
    for c in chosen:
        if isinstance(c, FileCitation):
            at = length if c.index is None else c.index
            fields: dict[str, Any] = {"file_id": c.file_id, "filename": c.filename, "index": at}
            pair: tuple[output_text.Annotation, added_event.Annotation] = (
                output_text.AnnotationFileCitation(type="file_citation", **fields),
                added_event.AnnotationFileCitation(type="file_citation", **fields),
            )
        else:
            at = length if c.end_index is None else c.end_index
            fields = {"url": c.url, "title": c.title, "start_index": c.start_index, "end_index": at}
            pair = (
                output_text.AnnotationURLCitation(type="url_citation", **fields),
                added_event.AnnotationURLCitation(type="url_citation", **fields),
            )
        out.append(_Cite(at, *pair))
    return sorted(out, key=lambda cite: cite.position)


def _usage(script: Script, body: dict[str, Any]) -> ResponseUsage:
    prompt = str(body.get("instructions") or "") + json.dumps(body.get("input") or "")
    input_tokens = script.input_tokens
    if input_tokens is None:
        input_tokens = -(-len(prompt) // 4)
    output_tokens = script.output_tokens
    if output_tokens is None:
        said = "".join(c.json_arguments for c in script.function_calls) or script.text
        output_tokens = -(-len(said) // 4) + script.reasoning_tokens
    return ResponseUsage(
        input_tokens=input_tokens,
        input_tokens_details=InputTokensDetails(
            cached_tokens=script.cached_tokens, cache_write_tokens=0
        ),
        output_tokens=output_tokens,
        output_tokens_details=OutputTokensDetails(reasoning_tokens=script.reasoning_tokens),
        total_tokens=input_tokens + output_tokens,
    )
