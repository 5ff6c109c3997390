"""A route kind is one module: a class registered once is parsed, compiled, dispatched and
shown by `check`, `/openapi.json` and `schema`, with nothing written anywhere else."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic.dataclasses import dataclass

from gateway import cli
from gateway.app import create_app
from gateway.limits.enforcement import spend_limits
from gateway.openapi import document
from gateway.policy import (
    STRICT,
    PolicyError,
    RouteBase,
    UpstreamConfig,
    parse_policy,
    policy_schema,
    register_kind,
    route_kinds,
    unregister_kind,
)
from gateway.policy.types import NonEmpty
from gateway.requestinfo import RequestInfo
from tests.conftest import ALLOWED, TEST_KEY, policy_yaml

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, kw_only=True, config=STRICT)
class EchoRoute(RouteBase):
    """A kind that exists only here: it answers with its greeting, compiled upper-case."""

    kind: Literal["echo"]
    greeting: NonEmpty = "hello"

    def compile(self, upstream: UpstreamConfig) -> EchoHandler:
        return EchoHandler(self.greeting.upper())

    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {self.path: {"post": {"summary": f"echo ({self.name})", "responses": {}}}}

    def warnings(self) -> list[str]:
        return [f"route {self.name!r}: echo routes are for tests"]


class EchoHandler:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    async def serve(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        await spend_limits(request, info)
        return web.json_response({"greeting": self.greeting})


@pytest.fixture
def echo_kind() -> Iterator[type[EchoRoute]]:
    register_kind(EchoRoute)
    try:
        yield EchoRoute
    finally:
        unregister_kind(EchoRoute)


ENV = {"OPENAI_API_KEY": TEST_KEY}
ECHO = {
    "name": "echo",
    "path": "/echo",
    "kind": "echo",
    "greeting": "bonjour",
    "allowed_origins": [ALLOWED],
    "rate_limits": [{"key": "client_ip", "requests": 1, "per": "1h"}],
}


def echo_policy_text() -> str:
    return policy_yaml(routes=[ECHO])


def test_a_registered_kind_parses_and_validates_its_own_keys(echo_kind: type[EchoRoute]) -> None:
    policy = parse_policy(echo_policy_text(), env=ENV)
    (route,) = policy.routes
    assert isinstance(route, EchoRoute) and route.greeting == "bonjour"
    assert route.max_body_bytes == 16384  # the server's default, like every kind's
    bad = echo_policy_text().replace("greeting: bonjour", "greting: bonjour")
    with pytest.raises(PolicyError) as caught:
        parse_policy(bad, env=ENV)
    (problem,) = caught.value.problems
    assert problem.path == "routes[0].greting"
    assert "did you mean greeting?" in problem.message
    # Its keys are its own: on a proxy route, `greeting` is another kind's key.
    proxy = policy_yaml(
        routes=[
            {
                "name": "p",
                "path": "/p",
                "kind": "chatkit_proxy",
                "target": "http://b/c",
                "allowed_origins": [ALLOWED],
                "greeting": "x",
            }
        ]
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(proxy, env=ENV)
    assert [str(p).split(": ", 1)[1] for p in caught.value.problems] == [
        "routes[0].greeting: not used by routes of kind chatkit_proxy"
    ]


def test_without_registration_the_kind_is_unknown() -> None:
    assert "echo" not in {k.KIND for k in route_kinds()}
    with pytest.raises(PolicyError) as caught:
        parse_policy(echo_policy_text(), env=ENV)
    (problem,) = caught.value.problems
    assert problem.path == "routes[0].kind"
    assert problem.message.startswith("expected one of chatkit_session, realtime_client_secret")


async def test_a_registered_kind_is_compiled_and_served(echo_kind: type[EchoRoute]) -> None:
    app = create_app(parse_policy(echo_policy_text(), env=ENV))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/echo", headers={"Origin": ALLOWED})
        assert resp.status == 200 and await resp.json() == {"greeting": "BONJOUR"}
        assert resp.headers["RateLimit-Policy"] == '"client_ip_1_per_1h";q=1;w=3600'
        resp = await client.post("/echo", headers={"Origin": ALLOWED})
        assert resp.status == 429  # the shared checks apply: limits…
        resp = await client.post("/echo", headers={"Origin": "https://evil.example"})
        assert resp.status == 403  # …origins…
        resp = await client.get("/echo", headers={"Origin": ALLOWED})
        assert resp.status == 405 and resp.headers["Allow"] == "POST, OPTIONS"  # …methods
        doc = await (await client.get("/openapi.json")).json()
        assert doc["paths"]["/echo"]["post"]["summary"] == "echo (echo)"


def test_a_registered_kind_appears_in_check_openapi_and_schema(
    echo_kind: type[EchoRoute], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", TEST_KEY)
    config = tmp_path / "gateway.yaml"
    config.write_text(echo_policy_text())
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert cli.main(["check", "--config", str(config)]) == 0
    (route,) = yaml.safe_load(out.getvalue())["routes"]
    assert (route["kind"], route["greeting"]) == ("echo", "bonjour")
    assert err.getvalue() == f"{config}: warning: route 'echo': echo routes are for tests\n"
    assert "/echo" in document(parse_policy(echo_policy_text(), env=ENV))["paths"]
    schema = policy_schema()
    assert "EchoRoute" in schema["$defs"]
    assert schema["$defs"]["EchoRoute"]["properties"]["greeting"]["default"] == "hello"


def test_a_kind_that_lacks_a_piece_is_refused_at_registration() -> None:
    @dataclass(frozen=True, kw_only=True, config=STRICT)
    class Halfway(RouteBase):  # neither compiled into a handler nor described in OpenAPI
        kind: Literal["halfway"]

    with pytest.raises(TypeError, match="does not implement: compile, openapi"):
        register_kind(Halfway)
    assert "halfway" not in {k.KIND for k in route_kinds()}


# --- the JSON Schema ----------------------------------------------------------------------


def test_schema_command_prints_the_committed_schema() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["schema"]) == 0
    committed = (ROOT / "config" / "policy.schema.json").read_text()
    assert json.loads(out.getvalue()) == json.loads(committed), (
        "the policy changed: regenerate with `.venv/bin/chatkit-gateway schema "
        "> config/policy.schema.json`"
    )


@pytest.mark.parametrize("policy", ["gateway.yaml", "config/kubernetes/gateway.yaml"])
def test_shipped_policies_name_the_schema_and_pass_it(policy: str) -> None:
    import jsonschema

    path = ROOT / policy
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema_path = (path.parent / first.split("$schema=", 1)[1]).resolve()
    assert schema_path == ROOT / "config" / "policy.schema.json"
    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))] == []
    # And it catches what an editor should flag: a typo, a quoted number.
    bad = yaml.safe_load(path.read_text())
    bad["server"]["porrt"] = 1
    bad["upstream"]["retries"] = "2"
    assert len(list(validator.iter_errors(bad))) == 2


def test_check_without_secret_files_validates_the_production_policy() -> None:
    """The Kubernetes policy reads its key from /run/secrets: CI has no such file."""
    config = ROOT / "config" / "kubernetes" / "gateway.yaml"
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert cli.main(["check", "--config", str(config)]) == 1
    assert "upstream.api_key_file: cannot read secret file" in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert cli.main(["check", "--config", str(config), "--skip-secret-files"]) == 0
    effective = yaml.safe_load(out.getvalue())
    assert effective["upstream"]["api_key_file"] == "/run/secrets/openai/api-key"
    assert "api_key" not in effective["upstream"]
    assert TEST_KEY not in out.getvalue()


def test_a_kind_registered_first_does_not_hide_the_shipped_ones() -> None:
    """A plugin that registers before anything imported gateway.routes (a fresh process)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from typing import Any, Literal
        from pydantic.dataclasses import dataclass
        from gateway.policy import STRICT, RouteBase, UpstreamConfig, register_kind, route_kinds

        @dataclass(frozen=True, kw_only=True, config=STRICT)
        class Early(RouteBase):
            kind: Literal["early"]
            def compile(self, upstream: UpstreamConfig) -> None: return None
            async def serve(self, request: Any) -> Any: return None
            def openapi(self, doc: Any) -> Any: return {}

        assert "gateway.routes" not in sys.modules
        register_kind(Early)
        print(sorted(k.KIND for k in route_kinds()))
    """)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kinds = ["chatkit_agent", "chatkit_proxy", "chatkit_session", "early", "realtime_client_secret"]
    assert done.stdout.strip() == str(kinds)
