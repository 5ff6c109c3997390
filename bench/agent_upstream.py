"""A fake OpenAI Responses API for bench/agent_bench.py: one fixed streamed answer.

Run: python -m bench.agent_upstream PORT [--deltas N] [--delay SECONDS] [--api-key KEY]

`POST /v1/responses` (streaming only) answers `event: <type>\\ndata: <json>\\n\\n` for each of
response.created, output_item.added (a message), content_part.added, N output_text.delta
(`--delay` seconds before each; a request whose body has `pace:<ms>` gets the deltas
after the first that many ms apart, so a burst of conversations can be held open without
changing how the first delta comes), output_text.done, content_part.done, output_item.done and
response.completed with usage. Every event is an instance of the `openai` SDK's own types
(`openai.types.responses`), so what the servers under test parse is what OpenAI sends.

It times its own part of each answer — from its handler being entered to the first
delta written — and keeps it under the request's tag: the first `ckb-…` word of the
request body (the harness puts one in each conversation's user message), so the
harness can subtract the upstream's own time to first delta from what its client saw.
`GET /stats` answers {"ttfd": {tag: seconds}, "requests", "max_open", "unauthorised"};
`POST /stats/reset` empties them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from typing import Any

from aiohttp import web
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_status import ResponseStatus
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

from bench.common import use_uvloop
from gateway.gc_tuning import tune_gc

TAG = re.compile(rb"ckb-[A-Za-z0-9-]{4,64}")
PACE = re.compile(rb"pace:([0-9]{1,6})")
WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")
API_KEY = "sk-bench-not-a-real-key"


def answer_chunks(deltas: int) -> list[str]:
    """The answer's text deltas: the harness checks that each conversation got exactly these."""
    return [WORDS[i % len(WORDS)] for i in range(deltas)]


def sse(event: ResponseStreamEvent) -> bytes:
    data = event.model_dump_json(exclude_unset=True)
    return f"event: {event.type}\ndata: {data}\n\n".encode()


class Upstream:
    def __init__(self, deltas: int, delay: float, api_key: str) -> None:
        self.chunks = answer_chunks(deltas)
        self.delay = delay
        self.api_key = api_key
        self.ids = itertools.count(1)
        self.ttfd: dict[str, float] = {}
        self.requests = 0
        self.open = 0
        self.max_open = 0
        self.unauthorised = 0

    def _response(self, rid: str, model: str, status: ResponseStatus, **extra: Any) -> Response:
        return Response(
            id=rid,
            object="response",
            created_at=time.time(),
            model=model,
            status=status,
            output=extra.pop("output", []),
            parallel_tool_calls=True,
            tool_choice="auto",
            tools=[],
            **extra,
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        entered = time.perf_counter()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.unauthorised += 1
            raise web.HTTPUnauthorized(
                text='{"error": {"message": "bad key", "type": "invalid_request_error"}}',
                content_type="application/json",
            )
        raw = await request.read()
        body = json.loads(raw)
        if not body.get("stream"):
            raise web.HTTPBadRequest(text="this fake only streams")
        found = TAG.search(raw)
        tag = found.group().decode() if found else f"untagged-{self.requests}"
        paced = PACE.search(raw)
        later = int(paced.group(1)) / 1000 if paced else self.delay
        model = str(body.get("model", "gpt-6.1-terra"))
        self.requests += 1
        n = next(self.ids)
        rid, mid = f"resp_bench{n:08d}", f"msg_bench{n:08d}"
        seq = itertools.count()
        text = "".join(self.chunks)
        empty = ResponseOutputText(type="output_text", text="", annotations=[])
        full = ResponseOutputText(type="output_text", text=text, annotations=[])
        message = ResponseOutputMessage(
            id=mid, type="message", role="assistant", status="in_progress", content=[]
        )
        done_message = ResponseOutputMessage(
            id=mid, type="message", role="assistant", status="completed", content=[full]
        )
        tokens_in = max(1, len(raw) // 4)
        tokens_out = len(self.chunks)
        usage = ResponseUsage(
            input_tokens=tokens_in,
            input_tokens_details=InputTokensDetails(cached_tokens=0, cache_write_tokens=0),
            output_tokens=tokens_out,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=0),
            total_tokens=tokens_in + tokens_out,
        )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await response.prepare(request)
            head: list[ResponseStreamEvent] = [
                ResponseCreatedEvent(
                    type="response.created",
                    sequence_number=next(seq),
                    response=self._response(rid, model, "in_progress"),
                ),
                ResponseOutputItemAddedEvent(
                    type="response.output_item.added",
                    sequence_number=next(seq),
                    output_index=0,
                    item=message,
                ),
                ResponseContentPartAddedEvent(
                    type="response.content_part.added",
                    sequence_number=next(seq),
                    part=empty,
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                ),
            ]
            await response.write(b"".join(sse(e) for e in head))
            for i, chunk in enumerate(self.chunks):
                await asyncio.sleep(self.delay if i == 0 else later)
                delta = ResponseTextDeltaEvent(
                    type="response.output_text.delta",
                    sequence_number=next(seq),
                    delta=chunk,
                    logprobs=[],
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                )
                await response.write(sse(delta))
                if i == 0:
                    self.ttfd[tag] = time.perf_counter() - entered
            tail: list[ResponseStreamEvent] = [
                ResponseTextDoneEvent(
                    type="response.output_text.done",
                    sequence_number=next(seq),
                    text=text,
                    logprobs=[],
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                ),
                ResponseContentPartDoneEvent(
                    type="response.content_part.done",
                    sequence_number=next(seq),
                    part=full,
                    item_id=mid,
                    output_index=0,
                    content_index=0,
                ),
                ResponseOutputItemDoneEvent(
                    type="response.output_item.done",
                    sequence_number=next(seq),
                    output_index=0,
                    item=done_message,
                ),
                ResponseCompletedEvent(
                    type="response.completed",
                    sequence_number=next(seq),
                    response=self._response(
                        rid, model, "completed", output=[done_message], usage=usage
                    ),
                ),
            ]
            await response.write(b"".join(sse(e) for e in tail))
            await response.write_eof()
        finally:
            self.open -= 1
        return response

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ttfd": self.ttfd,
                "requests": self.requests,
                "max_open": self.max_open,
                "unauthorised": self.unauthorised,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.ttfd = {}
        self.requests = self.max_open = self.unauthorised = 0
        return web.json_response({})


def make_app(deltas: int, delay: float, api_key: str = API_KEY) -> web.Application:
    upstream = Upstream(deltas, delay, api_key)
    app = web.Application()
    app.router.add_post("/v1/responses", upstream.responses)
    app.router.add_get("/stats", upstream.stats)
    app.router.add_post("/stats/reset", upstream.reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds before each delta")
    parser.add_argument("--api-key", default=API_KEY)
    args = parser.parse_args()
    use_uvloop()
    tune_gc()
    app = make_app(args.deltas, args.delay, args.api_key)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
