"""The OpenAPI 3.1 document: valid, true to the policy, and true to a live gateway.

schemathesis generates requests for every documented operation from the document the
gateway serves, sends them to a real `serve` process, and checks every answer against the
document: documented status, content type, headers and body schema, and no 5xx.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from gateway import errors, openapi
from gateway.reload import apply_policy
from tests.conftest import ALLOWED, TEST_KEY, make_policy
from tests.support.processes import ROOT, SCRIPT, base_env, free_port, json_lines, write_policy

pytestmark = pytest.mark.slow

SESSION = "/api/chatkit/session"
REALTIME = "/api/realtime/secret"
LOTS = [{"key": "client_ip", "requests": 10**9, "per": "1h"}]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OAS31 = OPENAPI_31_VALIDATOR  # the OpenAPI 3.1 meta-schema, as schemathesis loads it


def policy_routes(target: str) -> list[dict[str, Any]]:
    common = {"allowed_origins": [ALLOWED], "rate_limits": LOTS}
    return [
        {"name": "site", "path": SESSION, "kind": "chatkit_session", "workflow_id": "wf_test",
         **common},
        {"name": "voice", "path": REALTIME, "kind": "realtime_client_secret", **common},
        {"name": "chat", "path": "/chatkit", "kind": "chatkit_proxy", "target": target, **common},
    ]  # fmt: skip


def test_shipped_document_is_valid_openapi_31() -> None:
    shipped = json.loads((ROOT / "gateway" / "openapi.json").read_text())
    OAS31.validate(shipped)
    assert shipped["openapi"].startswith("3.1")
    assert set(shipped["components"]["pathItems"]) == {
        "chatkit_session", "realtime_client_secret", "chatkit_proxy", "chatkit_proxy_below",
        "chatkit_agent", "chatkit_agent_attachment",
    }  # fmt: skip


def documented_codes(doc: dict[str, Any]) -> set[str]:
    return {
        code
        for response in doc["components"]["responses"].values()
        for media in response.get("content", {}).values()
        for code in media["schema"]["properties"]["error"]["properties"]["code"]["enum"]
    }


def test_the_document_follows_the_policy_and_documents_every_error_code() -> None:
    policy = make_policy(
        routes=policy_routes("http://backend.internal/chatkit"), metrics={"path": "/prom"}
    )
    doc = openapi.document(policy)
    OAS31.validate(doc)
    assert set(doc["paths"]) == {
        "/healthz", "/readyz", "/prom", "/openapi.json", SESSION, REALTIME, "/chatkit",
        "/chatkit/{rest}",
    }  # fmt: skip
    post = doc["paths"][SESSION]["post"]
    origin = next(p for p in post["parameters"] if p.get("name") == "Origin")
    assert origin["required"] and origin["schema"]["examples"] == [ALLOWED]
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()
           if isinstance(op, dict) and "operationId" in op]  # fmt: skip
    assert len(ids) == len(set(ids))
    # Every code the gateway can answer with is documented (499 and 500 never reach a client).
    raised = {cls.code for cls in vars(errors).values()
              if isinstance(cls, type) and issubclass(cls, errors.GatewayError)}  # fmt: skip
    assert documented_codes(doc) == raised - {"internal_error", "client_closed"}


async def test_served_on_the_ops_side_to_any_origin_and_reloaded(gateway: Any) -> None:
    client = await gateway()
    resp = await client.get("/openapi.json", headers={"Origin": "https://docs.example"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://docs.example"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert set((await resp.json())["paths"]) >= {SESSION, REALTIME, "/metrics"}
    ask = {"Origin": "https://docs.example", "Access-Control-Request-Method": "GET"}
    preflight = await client.options("/openapi.json", headers=ask)
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://docs.example"
    refused = await client.options("/openapi.json", headers={"Origin": "https://docs.example"})
    assert refused.status == 403 and (await refused.json())["error"]["code"] == "origin_not_allowed"
    # A reload that moves a route is reflected at once.
    moved = make_policy(routes=[{**policy_routes("http://b/chatkit")[0], "path": "/v2/session"}])
    apply_policy(client.server.app, moved)
    paths = set((await (await client.get("/openapi.json")).json())["paths"])
    assert "/v2/session" in paths and SESSION not in paths


class _Backend(BaseHTTPRequestHandler):
    """A healthy ChatKit server: every POST read and answered 200 JSON."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"data": [], "has_more": false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = free_port()
    target = f"http://127.0.0.1:{backend.server_address[1]}/chatkit"
    config = write_policy(
        tmp_path_factory.mktemp("openapi") / "gateway.yaml", port=port, routes=policy_routes(target)
    )
    log = tmp_path_factory.mktemp("logs") / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", "--config", str(config), "--stub-upstream"],
            env=base_env(OPENAI_API_KEY=TEST_KEY),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        backend.shutdown()
    records = json_lines(log.read_text())
    assert not [r for r in records if r["level"] in ("error", "critical")], records[-5:]


def exercise(
    operation: Any, mode: GenerationMode, live: str, session: requests.Session
) -> set[int]:
    """Run one operation's generated cases against the live gateway; the statuses seen."""
    statuses: set[int] = set()

    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), allowed=st.booleans())
    def run(case: Any, allowed: bool) -> None:
        if allowed:  # half of them from the page's own origin, to get past the check
            case.headers = {**(case.headers or {}), "Origin": ALLOWED}
        response = case.call_and_validate(base_url=live, session=session, checks=CHECKS, timeout=10)
        statuses.add(response.status_code)

    run()
    return statuses


def test_every_documented_answer_matches_the_document(live: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    # Every documented operation but the document itself, which schemathesis leaves out.
    documented = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method in ("get", "post", "options")
    }
    assert {op.label for op in operations} == documented - {"GET /openapi.json"}
    seen: dict[str, set[int]] = {}
    for operation in operations:
        seen[operation.label] = exercise(operation, GenerationMode.POSITIVE, live, session)
        if operation.body:  # nothing to negate in plain string headers
            seen[operation.label] |= exercise(operation, GenerationMode.NEGATIVE, live, session)
    assert 200 in seen[f"POST {SESSION}"] and 200 in seen["POST /chatkit"], seen
    assert {200, 204, 400, 403} <= set().union(*seen.values()), seen


def test_unlisted_paths_and_methods_answer_as_the_document_says(live: str) -> None:
    doc = requests.get(f"{live}/openapi.json", timeout=5).json()
    responses = doc["components"]["responses"]
    cases = [
        ("GET", "/wp-login.php", 404, "NotFound"),
        ("DELETE", SESSION, 405, "MethodNotAllowed"),
        ("GET", "/chatkit/x", 405, "MethodNotAllowed"),
        ("POST", "/healthz", 405, "MethodNotAllowed"),
    ]
    for method, path, status, name in cases:
        resp = requests.request(method, f"{live}{path}", headers={"Origin": ALLOWED}, timeout=5)
        assert resp.status_code == status
        documented = responses[name]
        schema = documented["content"]["application/json"]["schema"]
        jsonschema_rs.validate(schema, resp.json())
        for header, spec in documented["headers"].items():
            spec = doc["components"]["headers"][header] if "$ref" in spec else spec
            if spec.get("required"):
                assert header in resp.headers, (path, header)
