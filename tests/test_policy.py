"""The policy file: every problem as `file:line: key.path: message` on the right line.

Each invalid example marks the line the problem must be reported on with a `# <-` comment
(a YAML comment, so it does not change the document), and the test checks the file, that
line, the key path and the gist of the message.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy import (
    Backend,
    LimitKey,
    OnBackendError,
    Policy,
    PolicyError,
    Rate,
    Secret,
    effective_policy,
    load_policy,
    parse_policy,
)
from gateway.routes.chatkit_proxy import ChatKitProxyRoute
from gateway.routes.chatkit_session import ChatKitSessionRoute
from gateway.routes.realtime_client_secret import RealtimeClientSecretRoute

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "gateway.yaml"
KEY = "sk-test-policy-0123456789"
ENV = {"OPENAI_API_KEY": KEY}
PROBLEM = re.compile(r"^[^:]+:\d+: \S+: .+")


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def marked_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if "# <-" in line]


def problems(
    text: str, *, env: Mapping[str, str] = ENV, stub: bool = False, file: str = "gw.yaml"
) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, file=file, env=env, stub_upstream=stub)
    found = [str(p) for p in caught.value.problems]
    assert str(caught.value) == "\n".join(found)
    return found


def assert_one_problem(
    text: str, path: str, message: str, *, env: Mapping[str, str] = ENV, stub: bool = False
) -> str:
    """Exactly one problem, on the marked line, at `path`, whose message contains `message`."""
    (line,) = marked_lines(text)
    found = problems(text, env=env, stub=stub)
    assert len(found) == 1, found
    prefix = f"gw.yaml:{line}: {path}: "
    assert found[0].startswith(prefix), (found[0], prefix)
    assert message in found[0][len(prefix) :], found[0]
    return found[0]


ROUTE_HEAD = """\
upstream:
  api_key: sk-test
routes:
"""
SITE = """\
  - name: site
    path: /api/chatkit/session
    kind: chatkit_session
    workflow_id: wf_test
    allowed_origins: [https://example.org]
"""


def with_site(extra: str = "", *, head: str = ROUTE_HEAD, then: str = "") -> str:
    """A valid one-route policy; `extra` lines go into the route, `then` is one more route."""
    text = doc(head) + SITE
    if extra:
        text += textwrap.indent(doc(extra).rstrip("\n") + "\n", "    ")
    if then:
        text += textwrap.indent(doc(then).rstrip("\n") + "\n", "  ")
    return text


def site_with_origins(origins: str) -> str:
    """The site route with its allowed_origins line replaced by `origins` (route-indented)."""
    return with_site(origins).replace("    allowed_origins: [https://example.org]\n", "", 1)


def parse(text: str, *, env: Mapping[str, str] = ENV, stub: bool = False) -> Policy:
    return parse_policy(text, file="gw.yaml", env=env, stub_upstream=stub)


# --- one problem, the right line ------------------------------------------------------------

INVALID = {
    "unknown top-level key": (
        "bogus: 1  # <-\n" + with_site(),
        "bogus",
        "unknown key (expected one of: limiter, metrics, routes, server, upstream)",
    ),
    "unknown nested key": (
        doc("""
            server:
              port: 8080
              porrt: 9090  # <-
            """)
        + with_site(),
        "server.porrt",
        "unknown key",
    ),
    "unknown key in a route": (
        with_site("workflow: wf_other  # <-"),
        "routes[0].workflow",
        "unknown key",
    ),
    "unknown key in a rate limit": (
        with_site("""
            rate_limits:
              - {key: client_ip, requests: 10, per: 1h}
              - {key: client_ip, requests: 10, per: 1m, burst: 5}  # <-
            """),
        "routes[0].rate_limits[1].burst",
        "unknown key (expected one of: key, name, per, requests, types)",
    ),
    "key given twice": (
        with_site("allow_missing_origin: true\nallow_missing_origin: false  # <-"),
        "routes[0].allow_missing_origin",
        "key given twice",
    ),
    "port: abc": (
        "server:\n  port: abc  # <-\n" + with_site(),
        "server.port",
        "expected a whole number, got 'abc'",
    ),
    "port out of range": (
        "server:\n  port: 70000  # <-\n" + with_site(),
        "server.port",
        "must be between 0 and 65535",
    ),
    "retries: -1": (
        with_site(
            head="""\
            upstream:
              api_key: sk-test
              retries: -1  # <-
            routes:
            """
        ),
        "upstream.retries",
        "must be between 0 and 10, got -1",
    ),
    "allow_missing_origin: maybe": (
        with_site("allow_missing_origin: maybe  # <-"),
        "routes[0].allow_missing_origin",
        "expected true or false, got 'maybe'",
    ),
    "a list where a mapping belongs": (
        "server: [1, 2]  # <-\n" + with_site(),
        "server",
        "expected a mapping, got a list",
    ),
    "missing environment variable": (
        with_site(
            head="""\
            upstream:
              api_key: ${NOPE}  # <-
            routes:
            """
        ),
        "upstream.api_key",
        "environment variable NOPE is not set",
    ),
    "api_key and api_key_file": (
        with_site(
            head="""\
            upstream:
              api_key: sk-test
              api_key_file: /etc/hostname  # <-
            routes:
            """
        ),
        "upstream.api_key_file",
        "give either api_key or api_key_file, not both",
    ),
    "CIDR with host bits set": (
        doc("""
            server:
              trusted_proxies:
                - 10.0.0.0/8
                - 10.0.0.1/8  # <-
            """)
        + with_site(),
        "server.trusted_proxies[1]",
        "host bits set",
    ),
    "CIDR that is garbage": (
        "server:\n  trusted_proxies: [192.168.0.0/16, not-a-net]  # <-\n" + with_site(),
        "server.trusted_proxies[1]",
        "bad CIDR 'not-a-net'",
    ),
    "CIDR prefix too long": (
        "server:\n  trusted_proxies: [10.0.0.0/33]  # <-\n" + with_site(),
        "server.trusted_proxies[0]",
        "bad CIDR",
    ),
    "origin with a path": (
        site_with_origins("allowed_origins: [https://example.org/chat]  # <-"),
        "routes[0].allowed_origins[0]",
        "no path",
    ),
    "origin with a trailing slash": (
        site_with_origins("allowed_origins:\n  - https://a.org\n  - https://b.org/  # <-"),
        "routes[0].allowed_origins[1]",
        "drop the trailing '/'",
    ),
    "origin with an ftp scheme": (
        site_with_origins("allowed_origins: [ftp://example.org]  # <-"),
        "routes[0].allowed_origins[0]",
        "expected an origin like https://example.org",
    ),
    "origin with a wildcard": (
        site_with_origins("allowed_origins: ['https://*.example.org']  # <-"),
        "routes[0].allowed_origins[0]",
        "wildcards are not supported",
    ),
    "origin with port 0": (
        site_with_origins("allowed_origins: ['http://localhost:0']  # <-"),
        "routes[0].allowed_origins[0]",
        "bad port",
    ),
    "no origins and missing origins not allowed": (
        doc("""
            upstream: {api_key: sk-test}
            routes:
              - name: site  # <-
                path: /s
                kind: chatkit_session
                workflow_id: wf_test
            """),
        "routes[0].allowed_origins",
        "list at least one origin",
    ),
    "duration 1y": (
        with_site("rate_limits:\n  - {key: client_ip, requests: 1, per: 1y}  # <-"),
        "routes[0].rate_limits[0].per",
        "expected a duration like 30s, 10m, 1h or 1d, got '1y'",
    ),
    "duration 0s": (
        with_site("rate_limits:\n  - {key: client_ip, requests: 1, per: 0s}  # <-"),
        "routes[0].rate_limits[0].per",
        "greater than zero",
    ),
    "duration -5m": (
        with_site("rate_limits:\n  - {key: client_ip, requests: 1, per: -5m}  # <-"),
        "routes[0].rate_limits[0].per",
        "got '-5m'",
    ),
    "rate limit key": (
        with_site("rate_limits:\n  - {key: user_agent, requests: 1, per: 1m}  # <-"),
        "routes[0].rate_limits[0].key",
        "expected one of client_ip, origin, global",
    ),
    "rate limit without requests": (
        with_site("rate_limits:\n  - {key: global, per: 1m}  # <-"),
        "routes[0].rate_limits[0].requests",
        "is required",
    ),
    "max_rate per in a block mapping": (
        with_site(
            head="""\
            upstream:
              api_key: sk-test
              max_rate:  # <-
                requests: 5
            routes:
            """
        ),
        "upstream.max_rate.per",
        "is required",
    ),
    "duplicate route name": (
        with_site(
            then="""
            - name: site  # <-
              path: /other
              kind: chatkit_session
              workflow_id: wf_test
              allowed_origins: [https://example.org]
            """
        ),
        "routes[1].name",
        "route name 'site' is already used (line 4)",
    ),
    "duplicate route path (trailing slash ignored)": (
        with_site(
            then="""
            - name: other
              kind: chatkit_session
              path: /api/chatkit/session/  # <-
              workflow_id: wf_test
              allowed_origins: [https://example.org]
            """
        ),
        "routes[1].path",
        "route path '/api/chatkit/session' is already used (line 5)",
    ),
    "path /metrics": (
        with_site().replace("path: /api/chatkit/session", "path: /metrics  # <-"),
        "routes[0].path",
        "'/metrics' is reserved for operations endpoints",
    ),
    "path /healthz": (
        with_site().replace("path: /api/chatkit/session", "path: /healthz  # <-"),
        "routes[0].path",
        "'/healthz' is reserved",
    ),
    "path equal to a custom metrics path": (
        "metrics: {path: /stats}\n"
        + with_site().replace("path: /api/chatkit/session", "path: /stats  # <-"),
        "routes[0].path",
        "'/stats' is reserved",
    ),
    "chatkit_session without workflow_id": (
        with_site()
        .replace("  - name: site\n", "  - name: site  # <-\n")
        .replace("    workflow_id: wf_test\n", ""),
        "routes[0].workflow_id",
        "is required",
    ),
    "workflow id that is not wf_": (
        with_site().replace("workflow_id: wf_test", "workflow_id: asst_123  # <-"),
        "routes[0].workflow_id",
        "starts with 'wf_'",
    ),
    "chatkit_proxy without target": (
        doc("""
            routes:
              - name: chat  # <-
                path: /chatkit
                kind: chatkit_proxy
                allowed_origins: [https://example.org]
            """),
        "routes[0].target",
        "is required",
    ),
    "workflow_id on a realtime route": (
        doc("""
            upstream: {api_key: sk-test}
            routes:
              - name: voice
                path: /rt
                kind: realtime_client_secret
                workflow_id: wf_test  # <-
                allowed_origins: [https://example.org]
            """),
        "routes[0].workflow_id",
        "not used by routes of kind realtime_client_secret",
    ),
    "target on a session route": (
        with_site("target: http://backend:8000/chatkit  # <-"),
        "routes[0].target",
        "not used by routes of kind chatkit_session",
    ),
    "unknown route kind": (
        with_site().replace("kind: chatkit_session", "kind: chatkit  # <-"),
        "routes[0].kind",
        "expected one of chatkit_session, realtime_client_secret, chatkit_proxy",
    ),
    "types on a token route": (
        with_site(
            "rate_limits:\n  - key: client_ip\n    requests: 1\n    per: 1m\n"
            "    types: [threads.create]  # <-"
        ),
        "routes[0].rate_limits[0].types",
        "types narrows limits of chatkit_proxy, chatkit_agent routes only",
    ),
    "unknown ChatKit type": (
        doc("""
            routes:
              - name: chat
                path: /chatkit
                kind: chatkit_proxy
                target: http://backend:8000/chatkit
                allowed_origins: [https://example.org]
                rate_limits:
                  - key: client_ip
                    requests: 30
                    per: 1h
                    types:
                      - threads.create
                      - threads.explode  # <-
            """),
        "routes[0].rate_limits[0].types[1]",
        "unknown ChatKit request type 'threads.explode'",
    ),
    "workflow_version: latest": (
        with_site("session:\n  workflow_version: latest  # <-"),
        "routes[0].session.workflow_version",
        "leave workflow_version out instead of 'latest'",
    ),
    "session.expires_after_seconds 601": (
        with_site("session:\n  expires_after_seconds: 601  # <-"),
        "routes[0].session.expires_after_seconds",
        "must be between 1 and 600, got 601",
    ),
    "realtime expires_after_seconds 5": (
        doc("""
            upstream: {api_key: sk-test}
            routes:
              - name: voice
                path: /rt
                kind: realtime_client_secret
                allowed_origins: [https://example.org]
                realtime: {expires_after_seconds: 5}  # <-
            """),
        "routes[0].realtime.expires_after_seconds",
        "must be between 10 and 7200",
    ),
    "bad upstream base_url": (
        with_site(
            head="""\
            upstream:
              api_key: sk-test
              base_url: http://[::1  # <-
            routes:
            """
        ),
        "upstream.base_url",
        "expected an http:// or https:// URL",
    ),
    "YAML syntax error": (
        doc("""
            upstream:
              api_key: sk-test
            routes:
              - name: site
                path: /s
               kind: chatkit_session  # <-
            """),
        "(yaml)",
        "expected <block end>",
    ),
    "unclosed flow sequence at the end of the file": (
        site_with_origins("allowed_origins: [https://a.org,  # <-"),
        "(yaml)",
        "but found '<stream end>'",
    ),
    "a tab for indentation": (
        "server:\n\tport: 8080  # <-\n" + with_site(),
        "(yaml)",
        "'\\t'",
    ),
    "a NUL character": (
        with_site("name_x: \x00  # <-"),
        "(yaml)",
        "unacceptable character #x0000",
    ),
    "two documents": (
        with_site() + "---  # <-\nserver: {}\n",
        "(yaml)",
        "expected a single document in the stream, but found another document",
    ),
    "no routes": (
        "upstream: {api_key: sk-test}\nroutes: []  # <-\n",
        "routes",
        "at least one route is required",
    ),
    "api_key required without the stub (no api_key line)": (
        doc("""
            upstream:  # <-
              retries: 1
            routes:
            """)
        + SITE,
        "upstream.api_key",
        "an OpenAI API key is required: route 'site' (chatkit_session) mints ChatKit client "
        "secrets at OpenAI",
    ),
    "api_key required without the stub (empty api_key)": (
        with_site(
            head="""\
            upstream:
              api_key: ${UNSET_KEY:-}  # <-
            routes:
            """
        ),
        "upstream.api_key",
        "unless the gateway runs with --stub-upstream",
    ),
    "a YAML merge key": (
        with_site("<<: {path: /x}  # <-"),
        "routes[0].<<",
        "merge keys (<<) are not supported",
    ),
    "a key with a space in it": (
        "server:\n  max body: 1  # <-\n" + with_site(),
        'server["max\\u0020body"]',
        "unknown key",
    ),
    "a missing variable inside state_variables": (
        with_site("session:\n  state_variables:\n    plan: ${NOPE_PLAN}  # <-"),
        "routes[0].session.state_variables.plan",
        "environment variable NOPE_PLAN is not set",
    ),
    "an alias that contains itself": (
        doc("""
            upstream: {api_key: sk-test}
            routes:
              - name: voice
                path: /rt
                kind: realtime_client_secret
                allowed_origins: [https://example.org]
                realtime:
                  session:
                    type: realtime
                    tools: &loop [*loop]  # <-
            """),
        "routes[0].realtime.session.tools[0]",
        "an alias refers to the value that contains it",
    ),
    "nesting too deep for YAML": (  # refused before PyYAML's recursion gives out
        with_site("session:\n  state_variables: {a: " + "[" * 200 + "]" * 200 + "}  # <-"),
        "(yaml)",
        "nested too deeply",
    ),
}


def test_the_invalid_examples_start_from_a_valid_policy() -> None:
    """So each problem below is the edit's doing, not the template's."""
    policy = parse(with_site())
    assert [r.name for r in policy.routes] == ["site"]
    assert policy.routes[0].allowed_origins == {"https://example.org"}


@pytest.mark.parametrize("case", list(INVALID), ids=list(INVALID))
def test_each_problem_names_file_line_and_key_path(case: str) -> None:
    text, path, message = INVALID[case]
    assert_one_problem(text, path, message)


def test_api_key_required_only_without_the_stub() -> None:
    text = with_site(head="upstream: {}\nroutes:\n")
    assert problems(text)[0].startswith("gw.yaml:1: upstream.api_key: an OpenAI API key")
    assert parse(text, stub=True).stub_upstream is True
    # A gateway with only proxy routes never calls OpenAI, so it needs no key.
    proxy_only = doc("""
        routes:
          - {name: chat, path: /chatkit, kind: chatkit_proxy, target: "http://b:1/chatkit",
             allow_missing_origin: true}
        """)
    assert parse(proxy_only).routes[0].kind == "chatkit_proxy"


def test_env_default_is_used_when_the_variable_is_unset() -> None:
    text = with_site(head="upstream:\n  api_key: ${NOPE:-sk-from-default}\nroutes:\n")
    assert parse(text, env={}).upstream.api_key.reveal() == "sk-from-default"
    assert parse(text, env={"NOPE": "sk-real"}).upstream.api_key.reveal() == "sk-real"
    # A variable inside a longer value is replaced in place; `${VAR:-}` is an empty default.
    text = with_site(
        head="server:\n  host: ${H:-127.0.0.2}\nupstream:\n  api_key: k${SUFFIX:-}\n"
        "  base_url: https://${UP_HOST:-api.openai.com}/v1\nroutes:\n"
    )
    policy = parse(text, env={"UP_HOST": "proxy.internal"})
    assert policy.upstream.base_url == "https://proxy.internal/v1"
    assert policy.server.host == "127.0.0.2"
    assert policy.upstream.api_key.reveal() == "k"


def test_unreadable_api_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for target in (missing, tmp_path):  # a file that is not there, and a directory
        text = with_site(head=f"upstream:\n  api_key_file: {target}  # <-\nroutes:\n")
        found = assert_one_problem(text, "upstream.api_key_file", "cannot read secret file")
        assert str(target) in found


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "openai-api-key"
    secret.write_text(KEY + "\n")
    text = with_site(head=f"upstream:\n  api_key_file: {secret}\nroutes:\n")
    assert parse(text, env={}).upstream.api_key == Secret(KEY)


def test_several_problems_are_reported_at_once_in_line_order() -> None:
    text = doc("""
        server:
          port: abc  # <-
          trusted_proxies: [10.0.0.1/8]  # <-
        upstream:
          api_key: ${NOPE}  # <-
        routes:
          - name: site
            path: /api/chatkit/session
            kind: chatkit_session
            workflow_id: wf_test
            allowed_origins: [https://example.org/]  # <-
            rate_limits:
              - {key: client_ip, requests: 10, per: 1y}  # <-
          - name: site  # <-
            path: /metrics  # <-
            kind: realtime_client_secret
            allowed_origins: [https://example.org]
        bogus: true  # <-
        """)
    found = problems(text)
    assert [int(p.split(":")[1]) for p in found] == marked_lines(text)
    assert [p.split(": ")[1] for p in found] == [
        "server.port",
        "server.trusted_proxies[0]",
        "upstream.api_key",
        "routes[0].allowed_origins[0]",
        "routes[0].rate_limits[0].per",
        "routes[1].name",
        "routes[1].path",
        "bogus",
    ]


def test_problems_have_one_line_each_and_the_documented_shape() -> None:
    for case, (text, _, _) in INVALID.items():
        for problem in problems(text):
            assert PROBLEM.fullmatch(problem), (case, problem)


def test_an_interpolated_secret_never_appears_in_a_problem() -> None:
    """A secret put in the wrong key (`port: ${OPENAI_API_KEY}`) must not be echoed to logs."""
    text = doc("""
        server:
          port: ${OPENAI_API_KEY}  # <-
          host: "  ${OPENAI_API_KEY}  "
        """) + with_site(head="upstream:\n  api_key_file: ${OPENAI_API_KEY}\nroutes:\n")
    text += "    allow_missing_origin: ${OPENAI_API_KEY}\n"
    found = problems(text, env={"OPENAI_API_KEY": "Sk-Secret-Value-123"})
    joined = "\n".join(found)
    assert "Secret-Value" not in joined and "secret-value" not in joined
    assert "gw.yaml:2: server.port: expected a whole number, got '${OPENAI_API_KEY}'" in found


# --- valid policies -------------------------------------------------------------------------


SPEC_COPY = Path(__file__).parent / "data" / "spec_example.yaml"


def spec_example() -> str:
    """The product contract's policy example (its §3), kept with the tests: a user's clone
    has only the project."""
    return SPEC_COPY.read_text().split("\n", 1)[1]


def test_the_spec_example_parses_into_the_right_objects() -> None:
    env = {"OPENAI_API_KEY": KEY, "CHATKIT_WORKFLOW_ID": "wf_spec_123"}
    policy = parse_policy(spec_example(), file="SPEC.md", env=env)

    assert policy.server.host == "0.0.0.0"
    assert policy.server.port == 8080
    assert policy.server.trusted_proxies == ()
    assert policy.server.max_body_bytes == 16384
    assert policy.server.shutdown_grace_seconds == 10

    up = policy.upstream
    assert up.base_url == "https://api.openai.com/v1"
    assert isinstance(up.api_key, Secret) and up.api_key.reveal() == KEY
    assert (up.timeout_seconds, up.retries, up.max_rate) == (10, 2, Rate(50, 1.0))

    assert policy.limiter.backend is Backend.MEMORY
    assert isinstance(policy.limiter.redis_url, Secret)
    assert policy.limiter.redis_url.reveal() == "redis://127.0.0.1:6379/0"
    assert policy.limiter.on_backend_error is OnBackendError.ALLOW
    assert policy.metrics.path == "/metrics"

    site, voice, chat = policy.routes
    assert isinstance(site, ChatKitSessionRoute)
    assert isinstance(voice, RealtimeClientSecretRoute)
    assert isinstance(chat, ChatKitProxyRoute)
    assert (site.name, site.path, site.kind) == (
        "site",
        "/api/chatkit/session",
        "chatkit_session",
    )
    assert site.workflow_id == "wf_spec_123"
    assert site.allowed_origins == {"https://example.org", "http://localhost:8000"}
    assert site.allow_missing_origin is False
    assert [(lim.key, lim.requests, lim.per_seconds, lim.name) for lim in site.rate_limits] == [
        (LimitKey.CLIENT_IP, 100, 3600, "client_ip_100_per_1h"),
        (LimitKey.GLOBAL, 50000, 86400, "global_50000_per_1d"),
    ]
    assert site.session.expires_after_seconds == 600
    assert site.session.max_requests_per_1_minute == 10
    assert site.session.workflow_version is None
    assert site.max_body_bytes == 16384

    assert voice.kind == "realtime_client_secret"
    assert voice.realtime.expires_after_seconds == 600
    assert voice.realtime.session == {"type": "realtime", "model": "gpt-realtime"}
    assert [(lim.requests, lim.per_seconds) for lim in voice.rate_limits] == [(20, 3600)]

    assert chat.kind == "chatkit_proxy"
    assert chat.target == "http://chatkit-backend:8000/chatkit"
    assert chat.max_body_bytes == 10485760
    assert chat.stream_idle_timeout_seconds == 300
    assert chat.max_streams_per_client == 3
    assert [(lim.requests, lim.types) for lim in chat.rate_limits] == [
        (600, None),
        (30, frozenset({"threads.create", "threads.add_user_message"})),
    ]
    assert [lim.name for lim in chat.rate_limits] == ["client_ip_600_per_1h", "client_ip_30_per_1h"]


def test_the_policy_is_frozen() -> None:
    policy = parse(with_site())
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.routes[0].path = "/elsewhere"  # type: ignore[misc]


def test_secrets_never_show_in_repr_or_str() -> None:
    env = {"OPENAI_API_KEY": KEY, "CHATKIT_WORKFLOW_ID": "wf_spec_123"}
    text = spec_example().replace(
        "redis_url: redis://127.0.0.1:6379/0", "redis_url: redis://:redis-pass-999@r:6379/0"
    )
    policy = parse_policy(text, env=env)
    assert policy.limiter.redis_url.reveal() == "redis://:redis-pass-999@r:6379/0"
    for shown in (repr(policy), str(policy), repr(policy.upstream.api_key), f"{policy}"):
        assert KEY not in shown
        assert "redis-pass-999" not in shown
    assert repr(Secret(KEY)) == "Secret('***')"
    assert Secret(KEY) == Secret(KEY) and Secret(KEY) != Secret("other")
    assert not Secret("") and Secret("x")


def test_origins_are_normalised_the_way_browsers_send_them() -> None:
    text = site_with_origins(
        "allowed_origins: ['https://Example.ORG:443', 'http://localhost:80', "
        "'http://127.0.0.1:8000', 'https://[0:0::1]:8443', 'https://bücher.de']"
    )
    origins = parse(text).routes[0].allowed_origins
    assert origins == {
        "https://example.org",
        "http://localhost",
        "http://127.0.0.1:8000",
        "https://[::1]:8443",
        "https://xn--bcher-kva.de",
    }
    # https://a.org:443 and https://a.org are one origin.
    same = site_with_origins("allowed_origins: ['https://a.org:443']")
    assert parse(same).routes[0].allowed_origins == {"https://a.org"}


def test_ipv6_and_ipv4_cidrs_are_accepted() -> None:
    text = "server:\n  trusted_proxies: ['2001:db8::/32', '::1/128', 10.0.0.0/8, 192.0.2.7]\n"
    nets = parse(text + with_site()).server.trusted_proxies
    assert [str(n) for n in nets] == ["2001:db8::/32", "::1/128", "10.0.0.0/8", "192.0.2.7/32"]


def test_durations_in_seconds() -> None:
    text = with_site(
        "rate_limits:\n"
        "  - {key: client_ip, requests: 1, per: 30s}\n"
        "  - {key: origin, requests: 1, per: 10m}\n"
        "  - {key: global, requests: 1, per: 2h}\n"
        "  - {key: global, requests: 1, per: 1d, name: daily}\n"
    )
    limits = parse(text).routes[0].rate_limits
    assert [lim.per_seconds for lim in limits] == [30, 600, 7200, 86400]
    assert [lim.name for lim in limits] == [
        "client_ip_1_per_30s",
        "origin_1_per_10m",
        "global_1_per_2h",
        "daily",
    ]


def test_pass_through_values_are_json_ready() -> None:
    """A date or `.inf` in state_variables would make every upstream request fail to encode."""
    text = with_site(
        "session:\n  state_variables: {day: 2026-01-02, n: 3, big: .inf, on: true, s: '7'}"
    )
    route = parse(text).routes[0]
    assert isinstance(route, ChatKitSessionRoute)
    state = route.session.state_variables
    assert state == {"day": "2026-01-02", "n": 3, "big": ".inf", "on": True, "s": "7"}


def test_shipped_gateway_yaml_parses_with_an_empty_environment_in_stub_mode() -> None:
    policy = load_policy(SHIPPED, env={}, stub_upstream=True)
    assert policy.stub_upstream is True
    assert policy.server.host == "127.0.0.1" and policy.server.port == 8080
    assert {r.name for r in policy.routes} >= {"site", "voice"}
    assert not policy.upstream.api_key
    # Without the stub the empty key is the one problem, on the api_key line.
    with pytest.raises(PolicyError) as caught:
        load_policy(SHIPPED, env={})
    (problem,) = caught.value.problems
    api_key_line = next(
        n for n, line in enumerate(SHIPPED.read_text().splitlines(), 1) if "api_key:" in line
    )
    assert (problem.file, problem.line, problem.path) == (
        str(SHIPPED),
        api_key_line,
        "upstream.api_key",
    )


def test_an_unreadable_policy_file_is_a_problem_too(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "nope.yaml")
    assert PROBLEM.fullmatch(str(caught.value))
    assert str(caught.value).startswith(f"{tmp_path / 'nope.yaml'}:1: ")


def test_check_output_is_itself_a_valid_policy_with_secrets_masked() -> None:
    env = {"OPENAI_API_KEY": KEY, "CHATKIT_WORKFLOW_ID": "wf_spec_123"}
    text = spec_example().replace(
        "redis_url: redis://127.0.0.1:6379/0", "redis_url: redis://u:redis-pass-999@[::1]:6379/0"
    )
    rendered = effective_policy(parse_policy(text, env=env))
    assert KEY not in rendered and "redis-pass-999" not in rendered
    data = yaml.safe_load(rendered)
    assert data["upstream"]["api_key"] == "***"
    assert data["limiter"]["redis_url"] == "redis://u:***@[::1]:6379/0"
    assert data["upstream"]["max_rate"] == {"requests": 50, "per": "1s"}
    assert data["routes"][0]["rate_limits"][0]["per"] == "1h"
    # Feeding it back gives the same effective policy.
    assert effective_policy(parse_policy(rendered, env={})) == rendered


# --- property: any mutation of the shipped file is a Policy or a clean PolicyError --------

SHIPPED_LINES = SHIPPED.read_text().splitlines()
NASTY = [
    "", "~", "null", "-1", "0", "1e9", "abc", "[", "{", "]", "}", "'x", '"x', "&a", "*a",
    "*nope", "&a [*a]", "!!python/object:os.system x", "- a", "a: b", ":", "${", "${X",
    "${NOPE}", "${X:-}", "${X:-d}", "[1, 2]", "{a: 1}", "true", "maybe", "1h", "0s", "1y",
    "-5m", "https://a.org/", "ftp://a.org", "http://[::1", "https://*.a.org",
    "http://a.org:0", "10.0.0.1/8", "::1/128", "? x", "|", ">", "%YAML 1.1", "---", "...",
    "#", "@", "`", "!!binary aGVsbG8=", "2001-12-14", ".inf", "<<: *a", "!!set {a}",
    "!foo bar", "é", "\x00", "\ufeff", "\t", "latest", "/metrics", "wf_x", "a b: c",
    "threads.create", "realtime", "chatkit_proxy", "9" * 40,
]  # fmt: skip

mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.tuples(st.just("duplicate"), st.integers(0, 10**6)),
    st.tuples(st.just("replace"), st.integers(0, 10**6), st.sampled_from(SHIPPED_LINES)),
    st.tuples(
        st.just("scalar"),
        st.integers(0, 10**6),
        st.one_of(st.sampled_from(NASTY), st.text(max_size=12)),
    ),
    st.tuples(st.just("indent"), st.integers(0, 10**6), st.integers(0, 9)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.sampled_from(NASTY)),
)


def mutate(lines: list[str], op: tuple[object, ...]) -> None:
    kind, at = op[0], op[1]
    assert isinstance(at, int)
    i = at % len(lines) if lines else 0
    if not lines:
        lines.append("")
    if kind == "delete":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "replace":
        lines[i] = str(op[2])
    elif kind == "scalar":
        key, colon, _ = lines[i].partition(":")
        lines[i] = f"{key}: {op[2]}" if colon else f"{lines[i]} {op[2]}"
    elif kind == "indent":
        assert isinstance(op[2], int)
        lines[i] = " " * op[2] + lines[i].lstrip()
    else:
        lines.insert(i, str(op[2]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(mutation, min_size=1, max_size=5),
    stub=st.booleans(),
    env=st.sampled_from([{}, ENV]),
)
def test_mutated_policies_parse_or_fail_cleanly(
    ops: list[tuple[object, ...]], stub: bool, env: dict[str, str]
) -> None:
    lines = list(SHIPPED_LINES)
    for op in ops:
        mutate(lines, op)
    text = "\n".join(lines) + "\n"
    try:
        policy = parse_policy(text, file="gateway.yaml", env=env, stub_upstream=stub)
    except PolicyError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert PROBLEM.fullmatch(str(problem)), str(problem)
            assert 1 <= problem.line <= max(1, len(text.splitlines()))
        assert [p.line for p in exc.problems] == sorted(p.line for p in exc.problems)
    else:
        assert isinstance(policy, Policy) and policy.routes
        # A valid policy renders, and the rendering is a valid policy again.
        effective_policy(policy)


# --- strict types, typos, interpolated values in problems --------------------------------


def test_a_quoted_number_is_text_not_a_number() -> None:
    text = with_site(head='upstream:\n  api_key: sk-test\n  retries: "2"  # <-\nroutes:\n')
    found = assert_one_problem(text, "upstream.retries", "expected a whole number")
    assert "quoted" in found
    # Unquoted, or from the environment (which YAML types as if written there), it is one.
    assert parse(text.replace('"2"', "2")).upstream.retries == 2
    env_text = text.replace('"2"', "${RETRIES:-3}")
    assert parse(env_text).upstream.retries == 3
    assert parse(env_text, env={**ENV, "RETRIES": "1"}).upstream.retries == 1


def test_a_typo_gets_a_did_you_mean() -> None:
    text = "server:\n  max_conections: 10  # <-\n" + with_site()
    found = assert_one_problem(text, "server.max_conections", "did you mean max_connections?")
    assert "expected one of:" in found


def test_a_problem_shows_the_default_a_file_wrote_but_not_what_the_environment_gave() -> None:
    text = "server:\n  port: ${PORT:-80x}  # <-\n" + with_site()
    assert_one_problem(text, "server.port", "expected a whole number, got '80x'")
    found = problems(text, env={**ENV, "PORT": "secret-ish-value"})
    assert found == ["gw.yaml:2: server.port: expected a whole number, got '${PORT}'"]


def test_knowledge_source_mistakes_name_the_source_and_its_line(tmp_path: Path) -> None:
    """A knowledge source is told apart by its key (sitemap, crawl, path): its mistakes name
    the source's key, not the union's tag before it."""
    found = problems(
        doc(
            f"""
            routes:
              - name: a
                path: /chat
                kind: chatkit_agent
                allowed_origins: [https://example.org]
                agent: {{model: gpt-6.1-terra}}
                knowledge:
                  sources:
                    - crawl: ftp://example.org/docs/
                    - sitemap: https://user:secret@example.org/sitemap.xml
                    - path: {tmp_path / "missing"}
                      base_url: https://example.org/
                    - {{feed: https://example.org/rss}}
            """
        )
    )
    assert any(
        p.startswith("gw.yaml:9: routes[0].knowledge.sources[0].crawl: expected an http")
        for p in found
    ), found
    assert any(
        p.startswith("gw.yaml:10: routes[0].knowledge.sources[1].sitemap: URL must not carry")
        for p in found
    ), found
    assert any(
        p.startswith("gw.yaml:11: routes[0].knowledge.sources[2].path: ") and "not a folder" in p
        for p in found
    ), found
    assert any(
        p.startswith("gw.yaml:13: routes[0].knowledge.sources[3]: expected one of sitemap:")
        for p in found
    ), found
    assert not any("secret" in p for p in found), found


def test_knowledge_sources_all_invalid_report_only_their_own_mistakes() -> None:
    """Every source invalid leaves none after validation: the sources' errors say why, not a
    `sources` problem about the count (the file lists two)."""
    found = problems(
        doc(
            """
            routes:
              - name: a
                path: /chat
                kind: chatkit_agent
                allowed_origins: [https://example.org]
                agent: {model: gpt-6.1-terra}
                knowledge:
                  sources:
                    - crawl: ftp://example.org/docs/
                    - {feed: https://example.org/rss}
            """
        )
    )
    assert [p.split(": ")[1] for p in found] == [
        "routes[0].knowledge.sources[0].crawl",
        "routes[0].knowledge.sources[1]",
    ], found
