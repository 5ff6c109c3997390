"""The image recipe, checked as text: no Docker engine runs here, so these are the promises
an operator relies on (multi-stage, non-root, exec form, health check, nothing extra)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_multi_stage_with_a_slim_final_image() -> None:
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) >= 2
    assert "slim" in froms[-1]
    final = " ".join(rest for _, rest in final_stage())
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, f"{tool} in the final stage"


def test_runs_as_a_non_root_user() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_entrypoint_is_exec_form_so_sigterm_reaches_the_gateway() -> None:
    [entry] = [rest for word, rest in final_stage() if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["chatkit-gateway"]
    [cmd] = [rest for word, rest in final_stage() if word == "CMD"]
    args = json.loads(cmd)
    assert args[0] == "serve" and "--config" in args


def test_healthcheck_probes_healthz() -> None:
    [check] = [rest for word, rest in final_stage() if word == "HEALTHCHECK"]
    assert "/healthz" in check and "CMD" in check


def test_dockerignore_keeps_secrets_and_clutter_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests"):
        assert entry in ignored


def test_the_policy_is_mounted_not_baked_in() -> None:
    """The default command serves /etc/chatkit-gateway/gateway.yaml only once one is mounted
    (the demo policy's OPENAI_API_KEY made it exit 2 in every container); `make image-test`
    runs it both ways."""
    [cmd] = [rest for word, rest in final_stage() if word == "CMD"]
    assert "/etc/chatkit-gateway/gateway.yaml" in json.loads(cmd)
    copies = [rest for word, rest in final_stage() if word == "COPY"]
    assert not [c for c in copies if c.endswith("/etc/chatkit-gateway/gateway.yaml")]
    assert any(c.endswith("/usr/share/chatkit-gateway/gateway.example.yaml") for c in copies)
