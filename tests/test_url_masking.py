"""Credentials in URLs (issue 20, item 6): masked wherever a URL is printed or logged —
the password, a user given alone (a token), and query parameters such as `?password=`
and `?sslpassword=` — by `chatkit-gateway check` and at the log boundary."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.logs import redact_secrets
from gateway.policy import secrets_in
from gateway.policy.secrets import mask_url
from tests.conftest import TEST_KEY, make_policy, policy_yaml
from tests.support.agent_client import agent_route
from tests.support.processes import ROOT, base_env

REDIS_PASSWORD = "redis-userinfo-pw-1"
REDIS_QUERY_PASSWORD = "redis-query-pw-2"
PG_PASSWORD = "pg-userinfo-pw-3"
PG_SSL_PASSWORD = "pg-sslpassword-4"
PG_QUERY_PASSWORD = "pg-query-pw-5"
SECRETS = [REDIS_PASSWORD, REDIS_QUERY_PASSWORD, PG_PASSWORD, PG_SSL_PASSWORD, PG_QUERY_PASSWORD]
REDIS_URL = f"redis://gw:{REDIS_PASSWORD}@redis.internal:6379/0?password={REDIS_QUERY_PASSWORD}"
STORE_URL = (
    f"postgresql://gw:{PG_PASSWORD}@db.internal:5432/threads"
    f"?sslmode=verify-full&sslpassword={PG_SSL_PASSWORD}&sslkey=/run/tls/key.pem"
    f"&Password={PG_QUERY_PASSWORD}"
)


def policy_text() -> str:
    return policy_yaml(
        limiter={"backend": "redis", "redis_url": REDIS_URL},
        routes=[agent_route(STORE_URL)],
    )


def test_check_masks_every_credential_of_a_url(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(policy_text())
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(path)],
        env=base_env(OPENAI_API_KEY=TEST_KEY),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for secret in [*SECRETS, TEST_KEY]:
        assert secret not in done.stdout + done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["limiter"]["redis_url"] == (
        "redis://gw:***@redis.internal:6379/0?password=***"
    )
    # What is not a credential stays, so the output still says where the store is.
    assert effective["routes"][0]["store"]["url"] == (
        "postgresql://gw:***@db.internal:5432/threads"
        "?sslmode=verify-full&sslpassword=***&sslkey=/run/tls/key.pem&Password=***"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ghp_token123@git.example/x", "https://***@git.example/x"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("sqlite:///var/lib/threads.db", "sqlite:///var/lib/threads.db"),
        ("sqlite:///x.db?password=abc", "sqlite:///x.db?password=***"),
        ("redis://h/0?token=a;db=1#x", "redis://h/0?token=***;db=1#x"),
        ("https://s3/x?X-Amz-Signature=ab&X-Amz-Credential=cd&v=1",
         "https://s3/x?X-Amz-Signature=***&X-Amz-Credential=***&v=1"),
        ("redis://[::1:6379/0?api_key=k", "redis://[::1:6379/0?api_key=***"),  # malformed host
    ],
)  # fmt: skip
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.fixture
def policy_secrets() -> Iterator[None]:
    """The log boundary given the policy's secrets, as `serve` does at start."""
    redact_secrets(secrets_in(make_policy(policy_text())))
    yield
    redact_secrets(())


def test_logs_never_show_a_url_credential(json_logs: Any, policy_secrets: None) -> None:
    log = logging.getLogger("gateway.test")
    log.warning("store at %s", STORE_URL)  # as written in the policy
    log.warning("store at %s", mask_url(STORE_URL))  # as `check` shows it
    log.warning("redis at %s", REDIS_URL.replace("?", "/?"))  # respelled by a library
    # URLs that are not the policy's: a driver's error naming another DSN, a link.
    log.warning(
        "connect failed",
        extra={"detail": "postgresql://app:other-pw-6@db2/x?sslpassword=other-ssl-7"},
    )
    log.warning("fetched https://site.example/sitemap.xml?access_token=other-token-8&page=2")
    text = "\n".join(json_logs.lines)
    for secret in [*SECRETS, "other-pw-6", "other-ssl-7", "other-token-8"]:
        assert secret not in text, secret
    details = [json.loads(line).get("detail") for line in json_logs.lines]
    assert "postgresql://app:***@db2/x?sslpassword=***" in details
    assert "page=2" in text and "sslmode=verify-full" in text
