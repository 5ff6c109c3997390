"""The fake OpenAI server, checked against the official ``openai`` SDK.

If the SDK (with strict response validation) accepts the fake's answers and maps its errors
to the right exception classes, the fake speaks the real wire format. The recorded-request
assertions here are the contract the gateway's own upstream client is held to.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.beta.chatkit import ChatSession
from openai.types.realtime import (
    ClientSecretCreateResponse,
    RealtimeSessionCreateResponse,
    RealtimeTranscriptionSessionCreateResponse,
)

from tests.support.fake_openai import DEFAULT_API_KEY, FakeOpenAI, Received, running_fake

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with running_fake() as server:
        yield server


def make_client(fake: FakeOpenAI, **kw: Any) -> AsyncOpenAI:
    # Strict validation makes the SDK parse responses with pydantic instead of trusting them,
    # so a wrongly shaped answer fails the test instead of passing silently.
    kw.setdefault("api_key", fake.api_key)
    kw.setdefault("max_retries", 0)
    return AsyncOpenAI(base_url=fake.base_url, _strict_response_validation=True, **kw)


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    sdk = make_client(fake)
    yield sdk
    await sdk.close()


def only(requests: list[Received]) -> Received:
    assert len(requests) == 1, requests
    return requests[0]


async def create_session(client: AsyncOpenAI, **kw: Any) -> ChatSession:
    kw.setdefault("user", "user-1")
    kw.setdefault("workflow", {"id": "wf_test"})
    return await client.beta.chatkit.sessions.create(**kw)


# --- ChatKit sessions ----------------------------------------------------------------------------


async def test_chatkit_create_parses_into_chat_session(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    config = {
        "automatic_thread_titling": {"enabled": False},
        "file_upload": {"enabled": True, "max_file_size": 16, "max_files": 3},
        "history": {"enabled": True, "recent_threads": 5},
    }
    before = int(time.time())
    session = await client.beta.chatkit.sessions.create(
        user="anon-42",
        workflow={"id": "wf_test", "state_variables": {"plan": "pro", "seats": 3}},
        expires_after={"anchor": "created_at", "seconds": 300},
        rate_limits={"max_requests_per_1_minute": 5},
        chatkit_configuration={
            "automatic_thread_titling": {"enabled": False},
            "file_upload": {"enabled": True, "max_file_size": 16, "max_files": 3},
            "history": {"enabled": True, "recent_threads": 5},
        },
    )
    after = int(time.time())

    assert isinstance(session, ChatSession)
    assert session.object == "chatkit.session"
    assert session.id.startswith("cksess_") and len(session.id) > len("cksess_")
    assert session.client_secret.startswith("ek_") and len(session.client_secret) > 10
    assert before + 300 <= session.expires_at <= after + 300
    assert session.status == "active"
    assert session.user == "anon-42"
    assert session.workflow.id == "wf_test"
    assert session.workflow.version is None
    assert session.workflow.state_variables == {"plan": "pro", "seats": 3}
    assert session.workflow.tracing.enabled is True
    assert session.rate_limits.max_requests_per_1_minute == 5
    assert session.max_requests_per_1_minute == 5
    assert session.chatkit_configuration.model_dump() == config
    assert session._request_id is not None and session._request_id.startswith("req_")
    assert fake.sessions[session.id]["client_secret"] == session.client_secret

    sent = only(fake.requests_to("/chatkit/sessions"))
    assert sent.method == "POST"
    assert sent.path == "/v1/chatkit/sessions"
    assert sent.endpoint == "chatkit"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == {
        "user": "anon-42",
        "workflow": {"id": "wf_test", "state_variables": {"plan": "pro", "seats": 3}},
        "expires_after": {"anchor": "created_at", "seconds": 300},
        "rate_limits": {"max_requests_per_1_minute": 5},
        "chatkit_configuration": config,
    }


async def test_chatkit_create_fills_in_the_api_defaults(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    before = int(time.time())
    session = await create_session(client, workflow={"id": "wf_test", "version": "3"})

    assert before + 600 <= session.expires_at <= int(time.time()) + 600
    assert session.workflow.version == "3"
    assert session.workflow.state_variables is None
    assert session.rate_limits.max_requests_per_1_minute == 10
    assert session.max_requests_per_1_minute == 10
    cfg = session.chatkit_configuration
    assert cfg.automatic_thread_titling.enabled is True
    assert cfg.file_upload.enabled is False
    assert (cfg.file_upload.max_file_size, cfg.file_upload.max_files) == (512, 10)
    assert cfg.history.enabled is True and cfg.history.recent_threads is None
    assert only(fake.received).body == {
        "user": "user-1",
        "workflow": {"id": "wf_test", "version": "3"},
    }


async def test_each_session_gets_fresh_ids_and_secrets(client: AsyncOpenAI) -> None:
    first = await create_session(client)
    second = await create_session(client)
    assert first.id != second.id
    assert first.client_secret != second.client_secret


async def test_cancel_returns_the_cancelled_session(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    created = await create_session(client, user="u-cancel")
    cancelled = await client.beta.chatkit.sessions.cancel(created.id)

    assert isinstance(cancelled, ChatSession)
    assert cancelled.id == created.id
    assert cancelled.user == "u-cancel"
    assert cancelled.status == "cancelled"
    assert fake.sessions[created.id]["status"] == "cancelled"

    sent = only(fake.requests_to("/cancel"))
    assert sent.method == "POST"
    assert sent.path == f"/v1/chatkit/sessions/{created.id}/cancel"
    assert sent.endpoint == "cancel"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.body is None


async def test_cancel_of_unknown_session_is_not_found(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="cksess_nope"):
        await client.beta.chatkit.sessions.cancel("cksess_nope")


# --- Realtime client secrets ---------------------------------------------------------------------


async def test_realtime_client_secret(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    before = int(time.time())
    secret = await client.realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 600},
        session={"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."},
    )

    assert isinstance(secret, ClientSecretCreateResponse)
    assert secret.value.startswith("ek_") and len(secret.value) > 10
    assert before + 600 <= secret.expires_at <= int(time.time()) + 600
    assert isinstance(secret.session, RealtimeSessionCreateResponse)
    assert secret.session.type == "realtime"
    assert secret.session.object == "realtime.session"
    assert secret.session.id.startswith("sess_")
    assert secret.session.model == "gpt-realtime"
    assert secret.session.instructions == "Be brief."
    assert secret.session.audio is not None and secret.session.audio.output is not None
    assert secret.session.audio.output.voice == "alloy"
    assert fake.realtime_secrets[-1]["value"] == secret.value

    sent = only(fake.requests_to("/realtime/client_secrets"))
    assert sent.method == "POST"
    assert sent.path == "/v1/realtime/client_secrets"
    assert sent.endpoint == "realtime"
    assert sent.headers["authorization"] == f"Bearer {fake.api_key}"
    assert sent.headers["content-type"] == "application/json"
    assert "openai-beta" not in sent.headers
    assert sent.body == {
        "expires_after": {"anchor": "created_at", "seconds": 600},
        "session": {"type": "realtime", "model": "gpt-realtime", "instructions": "Be brief."},
    }


async def test_realtime_transcription_session_and_defaults(client: AsyncOpenAI) -> None:
    before = int(time.time())
    secret = await client.realtime.client_secrets.create(session={"type": "transcription"})
    assert isinstance(secret.session, RealtimeTranscriptionSessionCreateResponse)
    assert secret.session.type == "transcription"
    assert before + 600 <= secret.expires_at <= int(time.time()) + 600


async def test_responses_carry_request_id_and_processing_time(client: AsyncOpenAI) -> None:
    raw = await client.beta.chatkit.sessions.with_raw_response.create(
        user="u", workflow={"id": "wf_test"}
    )
    assert raw.headers["x-request-id"].startswith("req_")
    assert int(raw.headers["openai-processing-ms"]) >= 0
    assert raw.request_id == raw.headers["x-request-id"]
    assert raw.parse().user == "u"
    # Exactly the SDK model's fields, with JSON types (pydantic would coerce e.g. "yes" -> True).
    payload = raw.http_response.json()
    assert set(payload) == set(ChatSession.model_fields)
    assert payload["workflow"]["tracing"] == {"enabled": True}
    assert isinstance(payload["expires_at"], int)


# --- errors from validation ----------------------------------------------------------------------


async def test_wrong_key_is_authentication_error(fake: FakeOpenAI) -> None:
    wrong = "sk-test-wrong-key-99998888"
    sdk = make_client(fake, api_key=wrong)
    try:
        with pytest.raises(openai.AuthenticationError) as info:
            await create_session(sdk)
    finally:
        await sdk.close()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"
    assert info.value.type == "invalid_request_error"
    assert "Incorrect API key provided" in info.value.message
    assert wrong not in info.value.message  # the key is masked, as the real API does
    assert info.value.message.count("8888") == 1
    assert fake.sessions == {}


async def test_wrong_key_is_refused_on_every_endpoint(fake: FakeOpenAI) -> None:
    sdk = make_client(fake, api_key="sk-other")
    try:
        with pytest.raises(openai.AuthenticationError):
            await sdk.realtime.client_secrets.create()
        with pytest.raises(openai.AuthenticationError):
            await sdk.beta.chatkit.sessions.cancel("cksess_x")
    finally:
        await sdk.close()
    assert fake.realtime_secrets == []


async def test_unknown_workflow_is_not_found(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await create_session(client, workflow={"id": "wf_nope"})
    assert info.value.status_code == 404
    assert "Workflow with id 'wf_nope' not found" in info.value.message


async def test_known_workflows_can_be_changed_at_runtime(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.known_workflows.add("wf_other")
    session = await create_session(client, workflow={"id": "wf_other"})
    assert session.workflow.id == "wf_other"


async def test_chatkit_requires_the_beta_header(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="OpenAI-Beta"):
        await create_session(client, extra_headers={"OpenAI-Beta": openai.omit})
    with pytest.raises(openai.BadRequestError, match="OpenAI-Beta"):
        await client.beta.chatkit.sessions.cancel(
            "cksess_x", extra_headers={"OpenAI-Beta": "assistants=v2"}
        )


@pytest.mark.parametrize(
    ("overrides", "param", "code"),
    [
        ({"user": ""}, "user", "empty_string"),
        ({"user": 7}, "user", "invalid_type"),
        ({"workflow": {}}, "workflow.id", "missing_required_parameter"),
        ({"workflow": {"id": "wf_test", "version": "latest"}}, "workflow.version", "invalid_value"),
        ({"workflow": {"id": "wf_test", "extra": 1}}, "workflow.extra", "unknown_parameter"),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 601}},
            "expires_after.seconds",
            "integer_above_max_value",
        ),
        (
            {"expires_after": {"anchor": "created_at", "seconds": 0}},
            "expires_after.seconds",
            "integer_below_min_value",
        ),
        ({"expires_after": {"seconds": 60}}, "expires_after.anchor", "missing_required_parameter"),
        (
            {"rate_limits": {"max_requests_per_1_minute": 0}},
            "rate_limits.max_requests_per_1_minute",
            "integer_below_min_value",
        ),
        (
            {"chatkit_configuration": {"file_upload": {"max_file_size": 513}}},
            "chatkit_configuration.file_upload.max_file_size",
            "integer_above_max_value",
        ),
        ({"scope": {"project": "x"}}, "scope", "unknown_parameter"),
    ],
)
async def test_chatkit_rejects_invalid_bodies(
    fake: FakeOpenAI, client: AsyncOpenAI, overrides: dict[str, Any], param: str, code: str
) -> None:
    body: dict[str, Any] = {"user": "u", "workflow": {"id": "wf_test"}, **overrides}
    with pytest.raises(openai.BadRequestError) as info:
        await client.post(
            "/chatkit/sessions",
            cast_to=ChatSession,
            body=body,
            options={"headers": {"OpenAI-Beta": "chatkit_beta=v1"}},
        )
    assert info.value.param == param
    assert info.value.code == code
    assert info.value.type == "invalid_request_error"
    assert fake.sessions == {}


@pytest.mark.parametrize("path", ["/v1/chatkit/sessions", "/v1/realtime/client_secrets"])
async def test_non_json_body_is_rejected(fake: FakeOpenAI, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            fake.base_url.removesuffix("/v1") + path,
            data=b"user=u&workflow=wf_test",
            headers={
                "Authorization": f"Bearer {fake.api_key}",
                "OpenAI-Beta": "chatkit_beta=v1",
                "Content-Type": "application/json",
            },
        )
        payload = await resp.json()
    assert resp.status == 400
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert "could not parse the JSON body" in payload["error"]["message"]
    assert resp.headers["x-request-id"].startswith("req_")
    sent = only(fake.received)
    assert sent.body is None and sent.raw == b"user=u&workflow=wf_test"


@pytest.mark.parametrize("seconds", [9, 7201])
async def test_realtime_expiry_out_of_range(client: AsyncOpenAI, seconds: int) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": seconds},
            session={"type": "realtime", "model": "gpt-realtime"},
        )
    assert info.value.param == "expires_after.seconds"


async def test_realtime_edges_of_range_are_accepted(client: AsyncOpenAI) -> None:
    for seconds in (10, 7200):
        await client.realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": seconds}
        )


async def test_unknown_path_is_invalid_url(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match=r"Invalid URL \(POST /v1/chatkit/session\)"):
        await client.post("/chatkit/session", cast_to=ChatSession, body={})
    assert only(fake.received).endpoint == "other"


# --- injected faults -----------------------------------------------------------------------------


async def test_fail_next_500_is_internal_server_error_once(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.fail_next(500)
    with pytest.raises(openai.InternalServerError) as info:
        await create_session(client)
    assert info.value.status_code == 500
    assert info.value.type == "server_error"
    assert info.value.response.headers["x-request-id"].startswith("req_")
    assert fake.sessions == {}
    await create_session(client)  # consumed: the next call succeeds
    assert fake.pending_faults == 0


async def test_fail_next_429_carries_retry_after(client: AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.fail_next(429, headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as info:
        await create_session(client)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "7"


async def test_fail_next_with_custom_body_and_html(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    custom = {"error": {"message": "nope", "type": "x", "param": None, "code": "y"}}
    fake.fail_next(403, body=custom)
    fake.fail_next(502, text="<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await create_session(client)
    assert denied.value.body == custom["error"]
    with pytest.raises(openai.InternalServerError) as bad_gateway:
        await create_session(client)
    assert bad_gateway.value.status_code == 502
    assert bad_gateway.value.response.headers["content-type"].startswith("text/html")


async def test_faults_are_per_endpoint_and_in_order(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    created = await create_session(client)
    fake.fail_next(503, endpoint="realtime", times=2)
    fake.fail_next(500, endpoint="chatkit")
    fake.drop_next(endpoint="chatkit")

    cancelled = await client.beta.chatkit.sessions.cancel(created.id)
    assert cancelled.status == "cancelled"  # no "cancel" or "any" fault was queued
    with pytest.raises(openai.InternalServerError) as first:
        await create_session(client)
    assert first.value.status_code == 500
    with pytest.raises(openai.APIConnectionError):
        await create_session(client)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as info:
            await client.realtime.client_secrets.create()
        assert info.value.status_code == 503
    await client.realtime.client_secrets.create()
    await create_session(client)
    assert fake.pending_faults == 0


async def test_any_fault_hits_whichever_endpoint_comes_first(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    fake.fail_next(500)
    with pytest.raises(openai.InternalServerError):
        await client.beta.chatkit.sessions.cancel("cksess_x")
    await client.realtime.client_secrets.create()


async def test_drop_next_is_connection_error(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.drop_next()
    with pytest.raises(openai.APIConnectionError) as info:
        await create_session(client)
    assert not isinstance(info.value, openai.APITimeoutError)
    assert len(fake.received) == 1  # it did arrive; the answer never came
    await create_session(client)


async def test_delay_next_times_out(fake: FakeOpenAI) -> None:
    fake.delay_next(2.0)
    sdk = make_client(fake, timeout=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await create_session(sdk)
        assert time.monotonic() - started < 1.5
        await create_session(sdk)  # consumed: no delay any more
    finally:
        await sdk.close()
    assert len(fake.received) == 2


async def test_latency_applies_to_every_request(fake: FakeOpenAI, client: AsyncOpenAI) -> None:
    fake.latency = 0.15
    for _ in range(2):
        raw = await client.realtime.client_secrets.with_raw_response.create()
        assert int(raw.headers["openai-processing-ms"]) >= 140


async def test_close_does_not_wait_for_a_delayed_request(fake: FakeOpenAI) -> None:
    fake.delay_next(30.0)
    sdk = make_client(fake, timeout=0.2)
    try:
        with pytest.raises(openai.APITimeoutError):
            await create_session(sdk)
    finally:
        await sdk.close()
    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 1.0  # aiohttp's own shutdown wait would be 2 s


async def test_strict_client_rejects_a_malformed_answer(
    fake: FakeOpenAI, client: AsyncOpenAI
) -> None:
    """Guards the harness: without strict validation the tests above could not fail."""
    fake.fail_next(200, body={"id": "cksess_1", "object": "chatkit.session"})
    with pytest.raises(openai.APIResponseValidationError):
        await create_session(client)


async def test_fault_arguments_are_checked(fake: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="endpoint"):
        fake.fail_next(500, endpoint="chat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        fake.drop_next(0)


async def test_custom_api_key_and_base_url() -> None:
    async with running_fake(api_key="sk-proj-custom-1234", known_workflows=["wf_a"]) as server:
        assert server.api_key == "sk-proj-custom-1234"
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        sdk = make_client(server)
        try:
            session = await create_session(sdk, workflow={"id": "wf_a"})
            with pytest.raises(openai.NotFoundError):
                await create_session(sdk, workflow={"id": "wf_test"})
        finally:
            await sdk.close()
        assert session.workflow.id == "wf_a"
        default_key = make_client(server, api_key=DEFAULT_API_KEY)
        try:
            with pytest.raises(openai.AuthenticationError):
                await create_session(default_key, workflow={"id": "wf_a"})
        finally:
            await default_key.close()
    with pytest.raises(RuntimeError):
        _ = server.base_url
