"""A fake OpenAI HTTP server for the gateway's tests.

The gateway's upstream client is only as trustworthy as the server it is tested
against, so this fake answers with the real API's wire format (checked by
``test_fake_openai_sdk.py`` against the official ``openai`` SDK), refuses what
the real API refuses, and can be told to misbehave (errors, delays, dropped
connections) so retry and timeout paths can be exercised without a network.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web

from tests.support.loopback import LoopbackServer

DEFAULT_API_KEY: Final = "sk-test-fake-0123456789abcdef"

Endpoint = Literal["chatkit", "realtime", "cancel", "any"]
_ENDPOINTS: Final = frozenset({"chatkit", "realtime", "cancel", "any"})

CHATKIT_BETA: Final = "chatkit_beta=v1"
CHATKIT_DEFAULT_EXPIRES_SECONDS: Final = 600
CHATKIT_DEFAULT_RPM: Final = 10
REALTIME_DEFAULT_EXPIRES_SECONDS: Final = 600

_JSON_PARSE_ERROR: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please contact "
    "us through our help center at help.openai.com.)"
)
_NO_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)

Handler = Callable[[web.Request, Any], Awaitable[web.Response]]


@dataclass(frozen=True)
class Received:
    """One request as it arrived, so tests can assert on the gateway's wire format."""

    method: str
    path: str
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: Any  # parsed JSON, or None when empty or not JSON
    raw: bytes = b""
    endpoint: str = "other"  # "chatkit", "cancel", "realtime" or "other"


@dataclass
class _Fault:
    """A queued misbehaviour; ``drop`` closes the connection instead of answering."""

    kind: Literal["fail", "drop"]
    endpoint: str
    remaining: int
    status: int = 500
    body: dict[str, Any] | None = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Delay:
    seconds: float
    endpoint: str
    remaining: int


class ApiError(Exception):
    """An OpenAI-shaped error; raised by the handlers, rendered by ``_dispatch``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.payload: dict[str, Any] = {
            "error": {"message": message, "type": type, "param": param, "code": code}
        }


# --- request validation -------------------------------------------------------------------------
# The real API validates strictly (unknown keys, wrong types, ranges), and a gateway that sends a
# sloppy body must fail its tests here rather than in production. Explicit nulls for optional
# fields are accepted as "absent", since the real API's treatment of them is not pinned down.


@dataclass(frozen=True)
class _Field:
    kind: Literal["str", "int", "bool", "obj", "vars", "any"]
    required: bool = False
    min: int | None = None
    max: int | None = None
    enum: tuple[str, ...] | None = None
    fields: Mapping[str, _Field] | None = None


_EXPECTED: Final = {
    "str": "a string",
    "int": "an integer",
    "bool": "a boolean",
    "obj": "an object",
    "vars": "an object",
}

_CHATKIT_SCHEMA: Final = _Field(
    "obj",
    fields={
        "user": _Field("str", required=True, min=1),
        "workflow": _Field(
            "obj",
            required=True,
            fields={
                "id": _Field("str", required=True, min=1),
                "version": _Field("str", min=1),
                "state_variables": _Field("vars"),
                "tracing": _Field("obj", fields={"enabled": _Field("bool")}),
            },
        ),
        "expires_after": _Field(
            "obj",
            fields={
                "anchor": _Field("str", required=True, enum=("created_at",)),
                "seconds": _Field("int", required=True, min=1, max=600),
            },
        ),
        "rate_limits": _Field("obj", fields={"max_requests_per_1_minute": _Field("int", min=1)}),
        "chatkit_configuration": _Field(
            "obj",
            fields={
                "automatic_thread_titling": _Field("obj", fields={"enabled": _Field("bool")}),
                "file_upload": _Field(
                    "obj",
                    fields={
                        "enabled": _Field("bool"),
                        "max_file_size": _Field("int", min=1, max=512),
                        "max_files": _Field("int", min=0),
                    },
                ),
                "history": _Field(
                    "obj",
                    fields={"enabled": _Field("bool"), "recent_threads": _Field("int", min=0)},
                ),
            },
        ),
    },
)

_REALTIME_SCHEMA: Final = _Field(
    "obj",
    fields={
        "expires_after": _Field(
            "obj",
            fields={
                "anchor": _Field("str", enum=("created_at",)),
                "seconds": _Field("int", min=10, max=7200),
            },
        ),
        # Only the discriminator is checked: the session schema is large and not the
        # gateway's business beyond passing the configured object through.
        "session": _Field(
            "any", fields={"type": _Field("str", required=True, enum=("realtime", "transcription"))}
        ),
    },
)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _kind_ok(kind: str, value: Any) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    return isinstance(value, dict)  # obj, vars, any-with-fields


def _validate(value: Any, spec: _Field, path: str) -> None:
    name = path or "body"
    if not _kind_ok(spec.kind, value):
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected {_EXPECTED.get(spec.kind, 'an object')}, "
            f"but got {_describe(value)} instead.",
            param=path or None,
            code="invalid_type",
        )
    if spec.kind == "str":
        if spec.enum is not None and value not in spec.enum:
            supported = ", ".join(f"'{e}'" for e in spec.enum)
            raise ApiError(
                400,
                f"Invalid value: '{value}'. Supported values are: {supported}.",
                param=path,
                code="invalid_value",
            )
        if spec.min is not None and len(value) < spec.min:
            raise ApiError(
                400,
                f"Invalid '{path}': empty string. Expected a string with minimum length "
                f"{spec.min}, but got an empty string instead.",
                param=path,
                code="empty_string",
            )
    elif spec.kind == "int":
        if spec.min is not None and value < spec.min:
            raise ApiError(
                400,
                f"Invalid '{path}': integer below minimum value. Expected a value >= "
                f"{spec.min}, but got {value} instead.",
                param=path,
                code="integer_below_min_value",
            )
        if spec.max is not None and value > spec.max:
            raise ApiError(
                400,
                f"Invalid '{path}': integer above maximum value. Expected a value <= "
                f"{spec.max}, but got {value} instead.",
                param=path,
                code="integer_above_max_value",
            )
    elif spec.kind == "vars":
        for key, item in value.items():
            if len(key) > 64:
                raise ApiError(
                    400,
                    f"Invalid '{path}': key '{key[:16]}…' is longer than 64 characters.",
                    param=path,
                    code="invalid_value",
                )
            if item is None or isinstance(item, list | dict):
                raise ApiError(
                    400,
                    f"Invalid type for '{path}.{key}': expected a string, number or boolean, "
                    f"but got {_describe(item)} instead.",
                    param=f"{path}.{key}",
                    code="invalid_type",
                )
    if spec.fields is None:
        return
    for key, sub in spec.fields.items():
        sub_path = f"{path}.{key}" if path else key
        if value.get(key) is None:
            if sub.required:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{sub_path}'.",
                    param=sub_path,
                    code="missing_required_parameter",
                )
            continue
        _validate(value[key], sub, sub_path)
    if spec.kind == "obj":
        for key in value:
            if key not in spec.fields:
                sub_path = f"{path}.{key}" if path else key
                raise ApiError(
                    400,
                    f"Unknown parameter: '{sub_path}'.",
                    param=sub_path,
                    code="unknown_parameter",
                )


# --- response builders --------------------------------------------------------------------------


def _token(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(16)}"


def _realtime_session_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sess_" + "".join(secrets.choice(alphabet) for _ in range(21))


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _pcm() -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000}


def _server_vad() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def _realtime_session(requested: Mapping[str, Any]) -> dict[str, Any]:
    """The session object the real API echoes: its defaults overlaid with what was asked."""
    if requested.get("type") == "transcription":
        base: dict[str, Any] = {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": _realtime_session_id(),
            "expires_at": 0,
            "include": None,
            "audio": {
                "input": {
                    "format": _pcm(),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 200,
                    },
                }
            },
        }
    else:
        base = {
            "type": "realtime",
            "object": "realtime.session",
            "id": _realtime_session_id(),
            "model": "gpt-realtime",
            "output_modalities": ["audio"],
            "instructions": "You are a helpful, witty, and friendly AI.",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "tracing": None,
            "truncation": "auto",
            "prompt": None,
            "expires_at": 0,
            "audio": {
                "input": {
                    "format": _pcm(),
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": _server_vad(),
                },
                "output": {"format": _pcm(), "voice": "alloy", "speed": 1.0},
            },
            "include": None,
        }
    merged = _deep_merge(base, requested)
    merged["id"], merged["object"] = base["id"], base["object"]
    return merged


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    head = key[:8] if key.startswith("sk-proj-") else key[:3]
    return head + "*" * (len(key) - len(head) - 4) + key[-4:]


def _default_fault_payload(status: int) -> dict[str, Any]:
    """Bodies the real API sends for these statuses, so error mapping sees realistic input."""
    known: dict[int, tuple[str, str, str | None]] = {
        400: ("Bad request.", "invalid_request_error", None),
        401: ("Invalid authorization header.", "invalid_request_error", "invalid_api_key"),
        403: (
            "Country, region, or territory not supported",
            "request_forbidden",
            "unsupported_country_region_territory",
        ),
        404: ("Not found.", "invalid_request_error", None),
        429: (
            "Rate limit reached for requests. Please try again in 7s.",
            "requests",
            "rate_limit_exceeded",
        ),
        500: (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            None,
        ),
        502: ("Bad gateway.", "server_error", None),
        503: ("The server is overloaded or not ready yet.", "server_error", None),
        504: ("Gateway timeout.", "server_error", None),
    }
    fallback_type = "server_error" if status >= 500 else "invalid_request_error"
    message, err_type, code = known.get(status, (f"Fake fault {status}.", fallback_type, None))
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --- the server ---------------------------------------------------------------------------------


class FakeOpenAI(LoopbackServer):
    """In-process stand-in for ``api.openai.com/v1`` covering the gateway's three calls."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        known_workflows: Iterable[str] = ("wf_test",),
        latency: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.api_key = api_key
        self.known_workflows: set[str] = set(known_workflows)
        self.latency = latency
        super().__init__(host)
        self.received: list[Received] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.realtime_secrets: list[dict[str, Any]] = []
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []

    # lifecycle

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chatkit/sessions", self._chatkit_create)
        app.router.add_post("/v1/chatkit/sessions/{session_id}/cancel", self._chatkit_cancel)
        app.router.add_post("/v1/realtime/client_secrets", self._realtime_create)
        app.router.add_route("*", "/{tail:.*}", self._invalid_url)

    # inspection

    def requests_to(self, path_suffix: str) -> list[Received]:
        return [r for r in self.received if r.path.endswith(path_suffix)]

    def reset(self) -> None:
        """Forget the log and any pending faults; minted sessions stay cancellable."""
        self.received.clear()
        self._faults.clear()
        self._delays.clear()

    # fault injection

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        endpoint: Endpoint = "any",
        text: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        ``body`` defaults to the real API's error for that status; ``text`` sends a non-JSON
        body instead (e.g. an HTML 502 page from a load balancer).
        """
        self._faults.append(
            _Fault(
                "fail",
                _check_endpoint(endpoint),
                _check_times(times),
                status=status,
                body=body,
                text=text,
                headers=dict(headers or {}),
            )
        )

    def drop_next(self, times: int = 1, *, endpoint: Endpoint = "any") -> None:
        """Close the connection without answering, like a crashed or reset upstream."""
        self._faults.append(_Fault("drop", _check_endpoint(endpoint), _check_times(times)))

    def delay_next(self, seconds: float, *, times: int = 1, endpoint: Endpoint = "any") -> None:
        """Sleep before handling; combines with a queued failure or drop for the same request."""
        self._delays.append(_Delay(seconds, _check_endpoint(endpoint), _check_times(times)))

    @property
    def pending_faults(self) -> int:
        """Faults and delays not yet consumed, so a test can check that it used them all."""
        return sum(f.remaining for f in self._faults) + sum(d.remaining for d in self._delays)

    def _take_fault(self, endpoint: str) -> _Fault | None:
        for fault in self._faults:
            if fault.endpoint in ("any", endpoint):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _take_delay(self, endpoint: str) -> float:
        for delay in self._delays:
            if delay.endpoint in ("any", endpoint):
                delay.remaining -= 1
                if delay.remaining <= 0:
                    self._delays.remove(delay)
                return delay.seconds
        return 0.0

    # request plumbing

    async def _dispatch(
        self, request: web.Request, endpoint: str, handler: Handler
    ) -> web.Response:
        started = time.monotonic()
        raw = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.received.append(
            Received(request.method, request.path, headers, _parse_json(raw), raw, endpoint)
        )

        pause = self.latency + self._take_delay(endpoint)
        if pause > 0:
            await self._sleep(pause)

        extra: dict[str, str] = {}
        fault = self._take_fault(endpoint)
        if fault is not None and fault.kind == "drop":
            if request.transport is not None:
                request.transport.close()
            # aiohttp swallows the ConnectionError from writing to the closed transport.
            return web.Response(status=500)
        if fault is not None:
            extra = fault.headers
            if fault.text is not None:
                response = web.Response(
                    status=fault.status, text=fault.text, content_type="text/html"
                )
            else:
                payload = (
                    fault.body if fault.body is not None else _default_fault_payload(fault.status)
                )
                response = web.json_response(payload, status=fault.status)
        else:
            try:
                self._authorize(request)
                response = await handler(request, self._body(raw, endpoint))
            except ApiError as err:
                response = web.json_response(err.payload, status=err.status)

        response.headers["x-request-id"] = _token("req_")
        response.headers["openai-version"] = "2020-10-01"
        response.headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))
        response.headers.update(extra)
        return response

    def _authorize(self, request: web.Request) -> None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(401, _NO_KEY)
        key = auth[7:].strip()
        if not secrets.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(
                401,
                f"Incorrect API key provided: {_mask_key(key)}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    @staticmethod
    def _body(raw: bytes, endpoint: str) -> Any:
        if endpoint in ("cancel", "other"):
            return None
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, _JSON_PARSE_ERROR) from None

    @staticmethod
    def _require_chatkit_beta(request: web.Request) -> None:
        betas = {
            part.strip()
            for value in request.headers.getall("OpenAI-Beta", [])
            for part in value.split(",")
        }
        if CHATKIT_BETA not in betas:
            raise ApiError(
                400,
                "You must provide the 'OpenAI-Beta' header to access the ChatKit API. Please try "
                f"again by setting the header 'OpenAI-Beta: {CHATKIT_BETA}'.",
                code="invalid_beta",
            )

    # endpoints

    async def _chatkit_create(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, "chatkit", self._chatkit_create_inner)

    async def _chatkit_create_inner(self, request: web.Request, body: Any) -> web.Response:
        self._require_chatkit_beta(request)
        _validate(body, _CHATKIT_SCHEMA, "")
        workflow: dict[str, Any] = body["workflow"]
        if workflow.get("version") == "latest":
            raise ApiError(
                400,
                "Invalid 'workflow.version': 'latest' is not a workflow version. Omit the field "
                "to use the latest deployed version.",
                param="workflow.version",
                code="invalid_value",
            )
        if workflow["id"] not in self.known_workflows:
            raise ApiError(404, f"Workflow with id '{workflow['id']}' not found.")

        config: dict[str, Any] = body.get("chatkit_configuration") or {}
        titling = config.get("automatic_thread_titling") or {}
        upload = config.get("file_upload") or {}
        history = config.get("history") or {}
        tracing = workflow.get("tracing") or {}
        seconds = (body.get("expires_after") or {}).get("seconds")
        rpm = (body.get("rate_limits") or {}).get("max_requests_per_1_minute")
        rpm = CHATKIT_DEFAULT_RPM if rpm is None else rpm
        session: dict[str, Any] = {
            "id": _token("cksess_"),
            "object": "chatkit.session",
            "client_secret": _token("ek_"),
            "expires_at": int(time.time()) + (seconds or CHATKIT_DEFAULT_EXPIRES_SECONDS),
            "status": "active",
            "user": body["user"],
            "workflow": {
                "id": workflow["id"],
                "version": workflow.get("version"),
                "state_variables": workflow.get("state_variables"),
                "tracing": {"enabled": tracing.get("enabled", True)},
            },
            "rate_limits": {"max_requests_per_1_minute": rpm},
            "max_requests_per_1_minute": rpm,
            "chatkit_configuration": {
                "automatic_thread_titling": {"enabled": titling.get("enabled", True)},
                "file_upload": {
                    "enabled": upload.get("enabled", False),
                    "max_file_size": upload.get("max_file_size", 512),
                    "max_files": upload.get("max_files", 10),
                },
                "history": {
                    "enabled": history.get("enabled", True),
                    "recent_threads": history.get("recent_threads"),
                },
            },
        }
        self.sessions[session["id"]] = session
        return web.json_response(session)

    async def _chatkit_cancel(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, "cancel", self._chatkit_cancel_inner)

    async def _chatkit_cancel_inner(self, request: web.Request, body: Any) -> web.Response:
        self._require_chatkit_beta(request)
        session_id = request.match_info["session_id"]
        session = self.sessions.get(session_id)
        if session is None:
            raise ApiError(404, f"Session with id '{session_id}' not found.")
        if session["status"] == "active":
            expired = session["expires_at"] <= time.time()
            session["status"] = "expired" if expired else "cancelled"
        return web.json_response(session)

    async def _realtime_create(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, "realtime", self._realtime_create_inner)

    async def _realtime_create_inner(self, request: web.Request, body: Any) -> web.Response:
        _validate(body, _REALTIME_SCHEMA, "")
        seconds = (body.get("expires_after") or {}).get("seconds")
        secret: dict[str, Any] = {
            "value": _token("ek_"),
            "expires_at": int(time.time()) + (seconds or REALTIME_DEFAULT_EXPIRES_SECONDS),
            "session": _realtime_session(body.get("session") or {"type": "realtime"}),
        }
        self.realtime_secrets.append(secret)
        return web.json_response(secret)

    async def _invalid_url(self, request: web.Request) -> web.Response:
        return await self._dispatch(request, "other", self._invalid_url_inner)

    async def _invalid_url_inner(self, request: web.Request, body: Any) -> web.Response:
        raise ApiError(404, f"Invalid URL ({request.method} {request.path})")


def _check_endpoint(endpoint: str) -> str:
    if endpoint not in _ENDPOINTS:
        raise ValueError(f"endpoint must be one of {sorted(_ENDPOINTS)}, not {endpoint!r}")
    return endpoint


def _check_times(times: int) -> int:
    if times < 1:
        raise ValueError("times must be >= 1")
    return times


@contextlib.asynccontextmanager
async def running_fake(
    api_key: str = DEFAULT_API_KEY,
    *,
    known_workflows: Iterable[str] = ("wf_test",),
    latency: float = 0.0,
) -> AsyncIterator[FakeOpenAI]:
    """Start a fake for the duration of an ``async with`` block."""
    fake = FakeOpenAI(api_key, known_workflows=known_workflows, latency=latency)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()
