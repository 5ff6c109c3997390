"""Every command the READMEs tell a user to run is run by a test.

The shell code blocks (```sh, ```bash, ```shell, ```console) of README.md and
examples/chatkit_server/README.md are read command by command. Each command must be in
COMMANDS, naming the test that runs it, or saying why it cannot run here (a Kubernetes
cluster, a measurement of minutes) and which test runs the part of it that can. A command
added to a README without an entry fails `test_every_readme_command_is_in_the_table`; an
entry naming a test that no longer exists fails `test_every_named_test_exists`.

The commands no other test runs are run below, as the README writes them: `make check`,
the `check` command from the venv, the example ChatKit server, the `curl` lines against a
real `make run`, and what of the Kubernetes commands needs no cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.processes import ROOT, base_env, free_port
from tests.test_make_run import knowledge_pages

README = ROOT / "README.md"
EXAMPLE_README = ROOT / "examples" / "chatkit_server" / "README.md"
READMES = (README, EXAMPLE_README)
SHELL_FENCES = {"sh", "bash", "shell", "console"}
K8S = ROOT / "config" / "kubernetes"

HERE = "tests/test_readme.py"
MAKE_RUN = "tests/test_make_run.py::test_make_run_serves_and_stops_on_sigint"
TRY_IT = f"{HERE}::test_readme_curl_commands_against_make_run"
MAKE_CHECK = f"{HERE}::test_make_check_masks_secrets_and_picks_the_stub_without_a_key"
VENV_CHECK = f"{HERE}::test_check_from_the_venv_as_the_readme_writes_it"
OWN_POLICY = f"{HERE}::test_own_policy_check_and_serve_as_the_readme_writes_them"
OWN_CHECK = ".venv/bin/chatkit-gateway check --config my-gateway.yaml"
OWN_SERVE = ".venv/bin/chatkit-gateway serve --config my-gateway.yaml --stub-upstream"
EXAMPLE = f"{HERE}::test_example_chatkit_server_as_the_readme_runs_it"
MAKE_TARGETS = f"{HERE}::test_make_targets_in_the_readmes_exist"
K8S_NAMES = f"{HERE}::test_kubernetes_commands_match_the_manifests"
K8S_OFFLINE = f"{HERE}::test_kubernetes_commands_without_a_cluster"
K8S_IMAGE = "tests/test_manifests.py::test_readme_image_is_the_one_the_kustomization_deploys"
K8S_STORE_SECRET = "tests/test_manifests.py::test_readme_store_secret_matches_the_manifests"
K8S_CHAT = "tests/test_manifests.py::test_readme_chat_through_the_production_policy"
RUNBOOK_SED = "tests/test_prometheus_rules.py::test_readme_sed_sets_every_runbook_url"

CLUSTER = "needs a Kubernetes cluster"
K8S_CHECK = (
    ".venv/bin/chatkit-gateway check --config config/kubernetes/gateway.yaml --skip-secret-files"
)
VPS_MOUNTS = (
    "tests/test_image.py::test_docker_run_and_compose_mount_what_the_image_and_policy_expect"
)
TOKEN_CURL = (
    "curl -si -X POST http://127.0.0.1:8080/api/chatkit/session -H 'Origin: http://localhost:8000'"
)
AGENT_CURL = (
    "curl -sN http://127.0.0.1:8080/chatkit/assistant -H 'Origin: http://localhost:8000' "
    "-H 'X-Device-Id: readme-device-0123456789' -d "
    """'{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","""
    """"text":"How do I rotate the OpenAI API key?"}],"attachments":[],"inference_options":{}}}}'"""
)

AGENT_AS = (
    "http://127.0.0.1:8080/chatkit/assistant -H 'Origin: http://localhost:8000' "
    "-H 'X-Device-Id: readme-device-0123456789'"
)
LIST_CURL = (
    f"THREAD=$(curl -s {AGENT_AS} -d "
    """'{"type":"threads.list","params":{"limit":5,"order":"desc"}}' | .venv/bin/python -c """
    """'import json, sys; print(json.load(sys.stdin)["data"][0]["id"])')"""
)
FOLLOW_UP_CURL = (
    f"curl -sN {AGENT_AS} -d "
    """'{"type":"threads.add_user_message","params":{"thread_id":"'"$THREAD"'","input":"""
    """{"content":[{"type":"input_text","text":"And on a single server?"}],"attachments":[],"""
    """"inference_options":{}}}}'"""
)
GET_CURL = (
    f"curl -s {AGENT_AS} -d "
    """'{"type":"threads.get_by_id","params":{"thread_id":"'"$THREAD"'"}}'"""
)


@dataclass(frozen=True)
class Runs:
    """A test runs this command (`how`: what it changes, e.g. a port)."""

    test: str
    how: str = ""


@dataclass(frozen=True)
class NotHere:
    """Cannot run in the test suite; `partly` runs what of it can."""

    reason: str
    partly: str | None = None


# Normalised command (comments stripped, continuations joined, runs of blanks as one) →
# the test that runs it.
COMMANDS: dict[str, Runs | NotHere] = {
    # Two commands
    "make run": Runs(MAKE_RUN),
    "make test": NotHere(
        "it is the test suite, this file included: CI runs it", partly=MAKE_TARGETS
    ),
    "DEMO_PORT=8005 make run": Runs(TRY_IT, "GATEWAY_PORT, DEMO_PORT, CHATKIT_DEMO_BACKEND_PORT"),
    "curl -s http://127.0.0.1:8080/": Runs(TRY_IT, "ports of that make run"),
    TOKEN_CURL: Runs(TRY_IT, "ports of that make run"),
    "curl -sN http://127.0.0.1:8080/chatkit -H 'Origin: http://localhost:8000' -d "
    """'{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","""
    """"text":"hello"}],"attachments":[],"inference_options":{}}}}'""": Runs(
        TRY_IT, "ports of that make run"
    ),
    # Checking a policy
    AGENT_CURL: Runs(TRY_IT, "ports of that make run"),
    LIST_CURL: Runs(TRY_IT, "ports of that make run; THREAD kept for the next commands"),
    FOLLOW_UP_CURL: Runs(TRY_IT, "ports of that make run"),
    GET_CURL: Runs(TRY_IT, "ports of that make run"),
    # Your site's pages as knowledge
    ".venv/bin/chatkit-gateway ingest --config gateway.yaml": Runs(
        "tests/test_knowledge_serve.py::test_readme_ingest_command_on_make_runs_policy",
        "make run's demo server on a free port, a temporary store, a stand-in OPENAI_API_KEY",
    ),
    # What visitors asked, and what they thought of it
    **{
        key: Runs(
            "tests/test_conversations_export.py::test_readme_conversations_commands_on_make_runs_policy",
            "make run's policy with --stub-upstream, free ports, a temporary store; the CSV to tmp",
        )
        for key in (
            ".venv/bin/chatkit-gateway conversations --config gateway.yaml --route assistant"
            " --since 7d" + rest
            for rest in ("", " --format csv --output /tmp/last-week.csv", " --summary")
        )
    },
    "make check": Runs(MAKE_CHECK),
    ".venv/bin/chatkit-gateway check --config gateway.yaml --stub-upstream": Runs(VENV_CHECK),
    OWN_CHECK: Runs(OWN_POLICY, "the README's policy in a temporary directory"),
    OWN_SERVE: Runs(OWN_POLICY, "that policy with a temporary store and server.port added"),
    ".venv/bin/chatkit-gateway check --config gateway.yaml --online": Runs(
        "tests/test_model_watch.py::test_check_online_as_the_readme_writes_it",
        "gateway.yaml's upstream.base_url pointed at the fake OpenAI, a stand-in key",
    ),
    # The example ChatKit server (README and examples/chatkit_server/README.md)
    "export CHATKIT_BACKEND_KEY=$(openssl rand -hex 24)": Runs(EXAMPLE),
    "export CHATKIT_PUBLIC_URL=http://localhost:8080/chatkit": Runs(EXAMPLE),
    ".venv/bin/python examples/chatkit_server/server.py --port 8002": Runs(EXAMPLE, "a free port"),
    # One server, no Kubernetes
    "docker build -t chatkit-gateway:0.1.0 .": NotHere(
        "needs a Docker engine; make image-test builds this Dockerfile with buildah",
        partly="tests/test_dockerfile.py::test_the_policy_is_mounted_not_baked_in",
    ),
    "sudo install -d -o 10001 -g 10001 /srv/chatkit-gateway/tls": NotHere(
        "a directory of the server's, as root", partly=VPS_MOUNTS
    ),
    "sudo certbot certonly --standalone -d chat.example.org --deploy-hook 'install -m 600 "
    '-o 10001 -g 10001 "$RENEWED_LINEAGE/fullchain.pem" "$RENEWED_LINEAGE/privkey.pem" '
    "/srv/chatkit-gateway/tls/'": NotHere(
        "needs a public DNS name and Let's Encrypt; the rotation it causes is tested",
        partly="tests/test_tls.py::test_https_with_rotation_seen_by_new_connections",
    ),
    "docker run -d --name chatkit-gateway --restart unless-stopped --ulimit nofile=8192:8192 "
    "-p 443:8443 -p 127.0.0.1:8081:8081 "
    '-v "$PWD/examples/compose/gateway.yaml:/etc/chatkit-gateway/gateway.yaml:ro" '
    "-v /srv/chatkit-gateway/tls:/etc/chatkit-gateway/tls:ro "
    '-v "$PWD/openai-api-key.txt:/run/secrets/openai-api-key:ro" '
    "-v chatkit-threads:/var/lib/chatkit-gateway chatkit-gateway:0.1.0": NotHere(
        "needs a Docker engine; make image-test runs the image with these mounts (buildah)",
        partly=VPS_MOUNTS,
    ),
    # Deploying on Kubernetes
    "docker build -t registry.example.com/chatkit-gateway:0.1.0 . && "
    "docker push registry.example.com/chatkit-gateway:0.1.0": NotHere(
        "needs a Docker engine and a registry", partly=K8S_IMAGE
    ),
    "kubectl kustomize config/kubernetes": Runs(K8S_OFFLINE),
    K8S_CHECK: Runs(f"{HERE}::test_kubernetes_policy_checks_before_applying"),
    "kubectl create namespace chatkit": NotHere(CLUSTER, partly=K8S_OFFLINE),
    "kubectl -n chatkit create secret generic chatkit-gateway-openai "
    "--from-file=api-key=./openai-api-key.txt": NotHere(CLUSTER, partly=K8S_OFFLINE),
    "POSTGRES_PASSWORD=$(openssl rand -hex 24)": Runs(K8S_STORE_SECRET),
    "kubectl -n chatkit create secret generic chatkit-gateway-store "
    "--from-literal=url=postgresql://chatkit:$POSTGRES_PASSWORD@"
    "chatkit-gateway-postgres:5432/chatkit "
    "--from-literal=postgres-password=$POSTGRES_PASSWORD "
    "--from-literal=user-id-secret=$(openssl rand -hex 32)": NotHere(
        CLUSTER, partly=K8S_STORE_SECRET
    ),
    "kubectl -n chatkit apply -k config/kubernetes": NotHere(CLUSTER, partly=K8S_OFFLINE),
    "kubectl -n chatkit rollout status deployment/chatkit-gateway": NotHere(
        CLUSTER, partly=K8S_NAMES
    ),
    "kubectl -n chatkit port-forward service/chatkit-gateway 8080:80 8081:8081 &": NotHere(
        CLUSTER, partly=K8S_NAMES
    ),
    "curl -s localhost:8081/readyz && curl -s localhost:8081/metrics | grep "
    "chatkit_gateway_build_info": Runs(TRY_IT, "against make run's gateway, not a port-forward"),
    "curl -sN localhost:8080/chatkit/assistant -H 'Origin: https://example.org' "
    "-H 'X-Device-Id: readme-0123456789abcdef' -H 'Content-Type: application/json' -d "
    """'{"type":"threads.create","params":{"input":{"content":[{"type":"input_text","""
    """"text":"What is this site about?"}],"attachments":[],"inference_options":{}}}}'""": Runs(
        K8S_CHAT,
        "the production policy served locally with --stub-upstream and SQLite, on its own "
        "ports instead of a port-forward",
    ),
    "kubectl apply -k deploy/production": NotHere(CLUSTER, partly=K8S_OFFLINE),
    "kubectl -n chatkit create secret generic chatkit-gateway-openai "
    "--from-file=api-key=./new-key.txt --dry-run=client -o yaml | kubectl apply -f -": NotHere(
        CLUSTER, partly=K8S_OFFLINE
    ),
    "kubectl -n chatkit rollout restart deployment/chatkit-gateway": NotHere(
        CLUSTER, partly=K8S_NAMES
    ),
    # Metrics, alerts and the dashboard
    "promtool check rules config/prometheus/rules.yml": Runs(
        "tests/test_prometheus_rules.py::test_promtool_check_rules"
    ),
    "promtool test rules config/prometheus/rules.test.yml": Runs(
        "tests/test_prometheus_rules.py::test_promtool_unit_tests"
    ),
    "sed -i 's|https://github.com/example/chatkit-gateway/blob/main/README.md|"
    "https://git.example.com/you/chatkit-gateway/blob/main/README.md|' "
    "config/prometheus/rules.yml config/prometheus/rules.test.yml "
    "config/kubernetes/prometheusrule.yaml": Runs(RUNBOOK_SED, "on a copy of config/"),
    # Performance
    "make bench": NotHere(
        "minutes of measurement on pinned cores, with wrk; figures are measured, never "
        "asserted (docs/BENCHMARKS.md)",
        partly=MAKE_TARGETS,
    ),
}

# Commands that no test can run even in part: keep this list short.
NEVER_RUN_AT_MOST = 0
NOT_HERE_AT_MOST = 16  # a Kubernetes cluster, a Docker engine, a public DNS name


# --------------------------------------------------------------------------- reading READMEs


@dataclass(frozen=True)
class Command:
    text: str  # what the shell reads: continuations joined, comment stripped
    source: str  # file:line

    @property
    def key(self) -> str:
        return " ".join(self.text.split())


def strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` outside quotes, after a blank)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_blocks(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line of the block's first line, language, lines) of every fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\S*)", lines[i])
        if fence:
            start, body = i + 2, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            yield start, fence.group(1).lower(), body
        i += 1


def commands_in(path: Path) -> list[Command]:
    found = []
    for start, lang, body in shell_blocks(path):
        if lang not in SHELL_FENCES:
            continue
        i = 0
        while i < len(body):
            line, first = body[i], i
            if lang == "console":
                if not line.lstrip().startswith("$ "):
                    i += 1
                    continue
                line = line.lstrip()[2:]
            while line.rstrip().endswith("\\") and i + 1 < len(body):
                i += 1
                line = line.rstrip()[:-1] + body[i]
            i += 1
            text = strip_comment(line).strip()
            if text:
                found.append(Command(text, f"{path.relative_to(ROOT)}:{start + first}"))
    return found


def all_commands() -> list[Command]:
    return [c for path in READMES for c in commands_in(path)]


def readme_command(key: str) -> Command:
    for command in all_commands():
        if command.key == key:
            return command
    raise AssertionError(f"no README command {key!r} any more: update {HERE}")


def commands_run_by(test: str) -> list[Command]:
    seen: dict[str, Command] = {}
    for command in all_commands():
        entry = COMMANDS.get(command.key)
        if isinstance(entry, Runs) and entry.test == test:
            seen.setdefault(command.key, command)
    return list(seen.values())


def clean_env(**extra: str) -> dict[str, str]:
    """No OpenAI key, and not a sub-make of `make test`."""
    env = base_env(**extra)
    for name in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(name, None)
    return env


# --------------------------------------------------------------------------- the table


def test_the_readmes_have_shell_commands() -> None:
    keys = {c.key for c in all_commands()}
    assert {"make run", "make test", "make check"} <= keys, sorted(keys)
    assert any("examples/chatkit_server/server.py" in c.key for c in commands_in(EXAMPLE_README))


def test_strip_comment_keeps_quoted_hashes() -> None:
    assert strip_comment("make run    # starts it") == "make run"
    assert strip_comment("echo '# not a comment' # one") == "echo '# not a comment'"
    assert strip_comment("curl http://x/#frag") == "curl http://x/#frag"


def test_every_readme_command_is_in_the_table() -> None:
    missing = [c for c in all_commands() if c.key not in COMMANDS]
    assert not missing, (
        "README commands no test runs. Add each to COMMANDS in "
        f"{HERE} with the test that runs it (or why it cannot run here), or fix the README:\n"
        + "\n".join(f"  {c.source}: {c.key}" for c in missing)
    )


def test_every_table_entry_is_still_in_a_readme() -> None:
    keys = {c.key for c in all_commands()}
    stale = [key for key in COMMANDS if key not in keys]
    assert not stale, "COMMANDS entries no README has any more (remove them):\n" + "\n".join(
        f"  {key}" for key in stale
    )


def test_every_named_test_exists() -> None:
    named = {e.test for e in COMMANDS.values() if isinstance(e, Runs)}
    named |= {e.partly for e in COMMANDS.values() if isinstance(e, NotHere) and e.partly}
    problems = []
    for test_id in sorted(named):
        file, _, name = test_id.partition("::")
        name = name.split("[")[0]
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{test_id}: no file {file}")
        elif not re.search(rf"^(async )?def {re.escape(name)}\(", path.read_text(), re.M):
            problems.append(f"{test_id}: {file} has no `def {name}(`")
    assert not problems, "\n".join(problems)


def test_few_commands_cannot_run_here() -> None:
    not_here = {k: e for k, e in COMMANDS.items() if isinstance(e, NotHere)}
    never = [k for k, e in not_here.items() if e.partly is None]
    assert all(e.reason for e in not_here.values())
    assert len(never) <= NEVER_RUN_AT_MOST, f"commands no test runs even in part: {never}"
    assert len(not_here) <= NOT_HERE_AT_MOST, f"{len(not_here)} commands cannot run here"


# --------------------------------------------------------------------------- links, first screen


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors (fenced blocks left out)."""
    text = re.sub(r"^\s*```.*?^\s*```", "", markdown, flags=re.M | re.S)
    found = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


@pytest.mark.parametrize(
    "doc",
    [README, EXAMPLE_README, ROOT / "docs" / "DESIGN.md", ROOT / "docs" / "BENCHMARKS.md"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    text = re.sub(r"^\s*```.*?^\s*```", "", doc.read_text(), flags=re.M | re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists():
            broken.append(f"{target}: no {path.relative_to(ROOT)}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_first_screen_says_what_to_do_now_that_agent_builder_is_gone() -> None:
    first_screen = "\n".join(README.read_text().splitlines()[:30])
    for needed in (
        "2026-11-30",
        "chatkit_proxy",
        "(#migrating-from-agent-builder)",
        "`chatkit_agent`",
        "No backend of your own?",
    ):
        assert needed in first_screen, needed
    assert "not available yet" not in first_screen  # chatkit_agent is here
    # Agent Builder's shutdown is past (models still announce theirs: the model watch).
    assert not re.search(r"Agent Builder (shuts|will shut) down", README.read_text())


# --------------------------------------------------------------------------- SQLite URLs

# The relative SQLite URLs that are meant: make run's store in the checkout, the default,
# and the README's one explanation of the form.
RELATIVE_SQLITE_MEANT = {
    "sqlite:///.chatkit-gateway/threads.db}",  # gateway.yaml's value for make run
    "sqlite:///chatkit-gateway-threads.db`,",  # the documented default
    "sqlite:///`",  # "`sqlite:///` and then the file's path"
    "sqlite:///var/lib/…`",  # "with three … writes `./var/lib/…`"
}


def test_sqlite_urls_in_examples_are_absolute() -> None:
    """A newcomer's `sqlite:///var/lib/…` wrote ./var/lib/… into the clone: examples use
    four slashes, and the README explains the form once."""
    files = [README, ROOT / "gateway.yaml", *ROOT.glob("config/**/*.y*ml")]
    files += [*ROOT.glob("examples/**/*.y*ml"), *ROOT.glob("examples/**/*.md")]
    relative = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for url in re.findall(r"sqlite:///(?!/)\S*", line)
        if url not in RELATIVE_SQLITE_MEANT
    ]
    assert not relative, "\n".join(relative)
    assert README.read_text().count("so an absolute path makes **four** slashes") == 1


# --------------------------------------------------------------------------- make targets


def test_make_targets_in_the_readmes_exist() -> None:
    """`make -n`: each make target a README names exists (the run itself is elsewhere)."""
    targets = set()
    for command in all_commands():
        words = [w for w in shlex.split(command.text) if not re.match(r"^[A-Z_]+=", w)]
        if words[:1] == ["make"]:
            targets.update(words[1:])
    assert {"run", "test", "check", "bench"} <= targets, targets
    for target in sorted(targets):
        done = subprocess.run(
            ["make", "-n", target], cwd=ROOT, env=clean_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, f"make -n {target}:\n{done.stdout}{done.stderr}"


def readme_section(heading: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ")[0]
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(heading) + 2 :], re.M)
    return text[start : start + len(heading) + 2 + (following.start() if following else 0)]


def test_make_run_section_in_step_with_the_makefile_and_the_banner() -> None:
    """The extras `make run` installs, and its banner's pages in the order it prints them."""
    section = readme_section("### `make run`")
    installed = re.search(r"RUN_STAMP\).*?pip install --quiet -e '\.\[([\w,]+)\]'",
                          (ROOT / "Makefile").read_text(), re.S)  # fmt: skip
    assert installed, "Makefile: no pip install for make run"
    for extra in installed[1].split(","):
        assert f"`{extra}`" in section, f"README's make run section does not name {extra!r}"
    assert section.index("agent.html") < section.index("proxy.html")

    script = (ROOT / "scripts" / "run.sh").read_text()
    printed = [p.replace("${query}", "") for p in
               re.findall(r"http://localhost:\$\{demo_port\}/(\S*)", script)]  # fmt: skip
    demo = readme_section("## Demo pages")
    banner = next(b for _, _, b in shell_blocks(README) if "  Ctrl-C stops them all." in b)
    shown = re.findall(r"http://localhost:8000/(\S*)", "\n".join(banner))
    assert shown == printed, (shown, printed)
    assert printed[0] == "agent.html", printed
    assert "\n".join(banner) in demo


# --------------------------------------------------------------------------- make check, check


@pytest.mark.slow
def test_make_check_masks_secrets_and_picks_the_stub_without_a_key() -> None:
    readme_command("make check")
    done = subprocess.run(
        ["make", "check"], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check --config gateway.yaml --stub-upstream" in done.stdout  # what make ran
    effective = yaml.safe_load(done.stdout[done.stdout.index("server:") :])
    assert effective["upstream"]["api_key"] == ""
    kinds = {route["kind"] for route in effective["routes"]}
    assert "chatkit_proxy" in kinds, kinds
    if "chatkit_session" in kinds:  # the README: `check` warns about it
        assert "warning" in done.stderr and "chatkit_session" in done.stderr, done.stderr

    key = "sk-readme-" + os.urandom(12).hex()
    keyed = subprocess.run(
        ["make", "check"],
        cwd=ROOT,
        env=clean_env(OPENAI_API_KEY=key),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert keyed.returncode == 0, keyed.stdout + keyed.stderr
    assert "--stub-upstream" not in keyed.stdout
    assert re.search(r"^  api_key: '\*\*\*'$", keyed.stdout, re.M), keyed.stdout
    assert key not in keyed.stdout + keyed.stderr
    assert key[10:] not in keyed.stdout + keyed.stderr


@pytest.mark.slow
def test_check_from_the_venv_as_the_readme_writes_it() -> None:
    command = readme_command(
        ".venv/bin/chatkit-gateway check --config gateway.yaml --stub-upstream"
    )
    argv = shlex.split(command.text)
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert yaml.safe_load(done.stdout)["routes"]
    # The README: without a key and without --stub-upstream, check fails (token routes).
    argv.remove("--stub-upstream")
    keyless = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert keyless.returncode != 0
    assert "upstream.api_key" in keyless.stderr, keyless.stderr
    # Why, for the route at hand (the first that calls OpenAI), not "token routes".
    assert "route 'assistant' (chatkit_agent) calls OpenAI's Responses API" in keyless.stderr
    assert "token routes" not in keyless.stderr


def migration_policy() -> str:
    """The README's step-1 policy (only `routes:`), as a reader saves it."""
    for _, lang, body in shell_blocks(README):
        text = "\n".join(body)
        if lang == "yaml" and text.startswith("routes:") and "kind: chatkit_agent" in text:
            return text + "\n"
    raise AssertionError("README: no `routes:`-only chatkit_agent policy in a yaml block")


@pytest.mark.slow
async def test_own_policy_check_and_serve_as_the_readme_writes_them(tmp_path: Path) -> None:
    """`check` names the route that needs the key and why; `serve` listens on 0.0.0.0."""
    policy = migration_policy()
    store = re.search(r"url: (sqlite:////\S+)", policy)
    assert store, "the README's SQLite URL is absolute (four slashes)"
    port = free_port()
    policy = policy.replace(store[1], f"sqlite:///{tmp_path / 'threads.db'}")
    (tmp_path / "my-gateway.yaml").write_text(policy + f"server: {{port: {port}}}\n")
    binary = str(ROOT / ".venv" / "bin" / "chatkit-gateway")

    check = shlex.split(readme_command(OWN_CHECK).text)
    done = subprocess.run(
        [binary, *check[1:]], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode != 0, done.stdout
    assert re.search(
        r"^my-gateway\.yaml:\d+: upstream\.api_key: an OpenAI API key is required: route "
        r"'assistant' \(chatkit_agent\) calls OpenAI's Responses API",
        done.stderr,
        re.M,
    ), done.stderr

    serve = shlex.split(readme_command(OWN_SERVE).text)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            binary, *serve[1:], cwd=tmp_path, env=clean_env(), stdout=out, stderr=out
        )
    try:
        await wait_listening(port, proc, log)
        assert f"http://0.0.0.0:{port} routes=assistant:/chatkit/assistant" in log.read_text()
        body = {
            "type": "threads.create",
            "params": {
                "input": {
                    "content": [{"type": "input_text", "text": "What is this site about?"}],
                    "attachments": [],
                    "inference_options": {},
                }
            },
        }
        headers = {"Origin": "https://example.org", "X-Device-Id": "readme-own-0123456789"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            url = f"http://127.0.0.1:{port}/chatkit/assistant"
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert "thread.created" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- example server


def example_block(path: Path) -> list[Command]:
    """The commands of the block that starts the example server."""
    for start, lang, body in shell_blocks(path):
        if lang in SHELL_FENCES and any("examples/chatkit_server/server.py" in b for b in body):
            return [
                c
                for c in commands_in(path)
                if start <= int(c.source.split(":")[-1]) < start + len(body)
            ]
    raise AssertionError(f"{path}: no block starts examples/chatkit_server/server.py")


async def wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 60  # importing the ChatKit SDK takes seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.returncode is None, f"exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"never listened on {port}:\n{log.read_text()}"
        await asyncio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
async def test_example_chatkit_server_as_the_readme_runs_it(readme: Path, tmp_path: Path) -> None:
    commands = example_block(readme)
    *setup, start = [c.text for c in commands]
    assert all(c.startswith("export ") for c in setup), setup
    assert re.search(r"--port 8002\b", start), start
    port = free_port()
    script = "\n".join(
        [
            "set -eu",
            *setup,
            'printf "%s\\n" "$CHATKIT_BACKEND_KEY" >&3',  # so the test can send it
            "exec " + re.sub(r"--port 8002\b", f"--port {port}", start) + " 3>&-",
        ]
    )
    log, key_file = tmp_path / "server.log", tmp_path / "key"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            f"exec 3>{shlex.quote(str(key_file))}\n{script}",
            cwd=ROOT,
            env=clean_env(),  # no OPENAI_API_KEY: echo mode
            stdout=out,
            stderr=out,
        )
    try:
        await wait_listening(port, proc, log)
        key = key_file.read_text().strip()
        assert re.fullmatch(r"[0-9a-f]{48}", key), key
        url = f"http://127.0.0.1:{port}/chatkit"
        body = {"type": "threads.list", "params": {}}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            as_gateway = {"X-Backend-Key": key, "X-ChatKit-User": "u_readme"}
            async with http.post(url, json=body, headers=as_gateway) as resp:
                assert resp.status == 200, await resp.text()
                listed = await resp.json(content_type=None)
            assert listed["data"] == [] and listed["has_more"] is False, listed
            async with http.post(url, json=body) as resp:  # not from the gateway
                assert resp.status == 401
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0, log.read_text()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# --------------------------------------------------------------------------- curl on make run


def _index(out: str, demo: int) -> None:
    index = json.loads(out)
    assert isinstance(index, dict), index
    for needed in ("/api/chatkit/session", "/chatkit", "/openapi.json", "/healthz", "/metrics"):
        assert needed in out, (needed, index)
    assert "README" in out, index


def _token(out: str, demo: int) -> None:
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200"), out
    assert f"access-control-allow-origin: http://localhost:{demo}" in head.lower(), head
    assert json.loads(body)["client_secret"].startswith("ek_stub_"), body


def _stream(out: str, demo: int) -> None:
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert events and events[0]["type"] == "thread.created", out
    deltas = [
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated" and "delta" in e.get("update", {})
    ]
    assert len(deltas) > 1 and "hello" in "".join(deltas), out


def _agent(out: str, demo: int) -> None:
    """The stub model through the agent route: it searches this project's docs (knowledge),
    streams the best passage and cites its page as a link to the demo server's copy."""
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "thread.created", out
    deltas = [e for e in events if "delta" in e.get("update", {})]
    assert len(deltas) > 1, out
    assert {"type": "progress_update", "icon": "search", "text": "Searching the site…"} in events
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    sources = [a["source"] for a in done[-1]["content"][0]["annotations"]]
    assert sources[0]["type"] == "url", out
    assert sources[0]["url"].startswith(f"http://localhost:{demo}/project/"), out


def _thread_id(out: str, demo: int) -> None:
    """What THREAD holds: the id of the thread AGENT_CURL created."""
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,}", out), out


def _follow_up(out: str, demo: int) -> None:
    """A second turn in the same thread: no new thread, a streamed answer with a source."""
    events = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert events and not any(e["type"] == "thread.created" for e in events), out
    assert any(e["type"] == "thread.item.added" for e in events), out
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["type"] == "assistant_message" and done[-1]["content"][0]["text"], out


def _thread(out: str, demo: int) -> None:
    """The thread and its items: both questions and both answers, in order."""
    thread = json.loads(out)
    items = thread["items"]["data"]
    questions = [
        part["text"] for i in items if i["type"] == "user_message" for part in i["content"]
    ]
    assert questions == ["How do I rotate the OpenAI API key?", "And on a single server?"], out
    assert [i["type"] for i in items].count("assistant_message") == 2, out


def _ready(out: str, demo: int) -> None:
    assert '"status": "ok"' in out, out
    assert re.search(r'^chatkit_gateway_build_info\{.*upstream="stub".*\} 1', out, re.M), out


EXPECTED: dict[str, Callable[[str, int], None]] = {
    "curl -s http://127.0.0.1:8080/": _index,
    TOKEN_CURL: _token,
    AGENT_CURL: _agent,
    LIST_CURL: _thread_id,
    FOLLOW_UP_CURL: _follow_up,
    GET_CURL: _thread,
    next(k for k in COMMANDS if k.startswith("curl -sN http://127.0.0.1:8080/chatkit")): _stream,
    next(k for k in COMMANDS if k.startswith("curl -s localhost:8081/readyz")): _ready,
}


async def switching_over_check(gw: int, demo: int) -> None:
    """The "Switching over" step 1: the inline curl, sent to make run's `chat` route (the
    demo backend behind chatkit_proxy), answers that device's threads as JSON."""
    section = readme_section("#### Switching over")
    line = re.search(r"`(curl -N [^`]+)`", section)
    assert line and "-H 'X-Device-Id: " in line[1], section
    local = line[1].replace("https://example.org/chatkit", f"http://127.0.0.1:{gw}/chatkit")
    local = local.replace("'Origin: https://example.org'", f"'Origin: http://localhost:{demo}'")
    assert str(gw) in local and str(demo) in local, local
    done = await asyncio.to_thread(
        subprocess.run,
        [*shlex.split(local), "-s", "-w", "\n%{http_code}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "200", done.stdout
    assert json.loads(body)["data"] == [], body  # a new device: no threads yet


def on_ports(command: str, gw: int, demo: int) -> str:
    # The ops port (8081 in Kubernetes) is the gateway's own port under `make run`.
    command = re.sub(r"\b(127\.0\.0\.1|localhost):808[01]\b", rf"\g<1>:{gw}", command)
    return re.sub(r"\b(127\.0\.0\.1|localhost):8000\b", rf"\g<1>:{demo}", command)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_readme_curl_commands_against_make_run(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing under CI")
        pytest.skip("curl is not installed")
    curls = [c for c in commands_run_by(TRY_IT) if not c.key.endswith("make run")]
    unexpected = [c.key for c in curls if c.key not in EXPECTED]
    assert not unexpected, f"no expectation in EXPECTED for {unexpected}"
    readme_command("DEMO_PORT=8005 make run")
    gw, demo, backend = free_port(), free_port(), free_port()
    env = clean_env(
        GATEWAY_PORT=str(gw),
        DEMO_PORT=str(demo),
        CHATKIT_DEMO_BACKEND_PORT=str(backend),
        CHATKIT_STORE_URL=f"sqlite:///{tmp_path / 'threads.db'}",  # not the checkout's
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "make", "run", cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops them all" not in log.read_text():
            assert proc.returncode is None, f"make run exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"make run never got ready:\n{log.read_text()}"
            await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http:  # the docs ingested (a second or so)
            await knowledge_pages(http, gw)
        kept: dict[str, str] = {}  # NAME=$(…) lines: the value, for the commands after
        for command in curls:
            local = on_ports(command.text, gw, demo)
            assigned = re.match(r"^([A-Z_]+)=\$\(", command.text)
            if assigned:
                local += f'; printf %s "${assigned[1]}"'
            done = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-c", f"set -o pipefail; {local}"],
                cwd=ROOT,
                env={**os.environ, **kept},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, f"{command.source}: {local}\n{done.stdout}{done.stderr}"
            EXPECTED[command.key](done.stdout, demo)
            if assigned:
                kept[assigned[1]] = done.stdout
        await switching_over_check(gw, demo)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        stop_by = time.monotonic() + 15
        while _group_alive(proc.pid) and time.monotonic() < stop_by:
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


# --------------------------------------------------------------------------- Kubernetes


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and "metadata" in d]
    return docs


def test_kubernetes_commands_match_the_manifests() -> None:
    """The names the README's kubectl lines use are the manifests' names."""
    by_kind: dict[str, dict[str, Any]] = {}
    for doc in manifests():
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for key in COMMANDS:
        for kind, name in re.findall(r"\b(deployment|service)/([\w-]+)", key):
            assert name in by_kind[kind.capitalize()], (key, name)
    service = by_kind["Service"]["chatkit-gateway"]
    forward = readme_command(
        "kubectl -n chatkit port-forward service/chatkit-gateway 8080:80 8081:8081 &"
    )
    assert {80, 8081} <= {p["port"] for p in service["spec"]["ports"]}, forward
    deployment = by_kind["Deployment"]["chatkit-gateway"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secret = volumes["openai"]["secret"]
    assert secret["secretName"] == "chatkit-gateway-openai"
    assert [i["key"] for i in secret["items"]] == ["api-key"]


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is missing under CI (the machine image ships it)")
        pytest.skip("kubectl is not installed (the cluster-free parts need only its client)")
    return found


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{argv}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_kubernetes_commands_without_a_cluster(tmp_path: Path) -> None:
    """What of the deploy commands needs no cluster: render, and create with --dry-run."""
    binary = kubectl()
    dry = ["--dry-run=client", "-o", "yaml"]

    rendered = run(shlex.split(readme_command("kubectl kustomize config/kubernetes").text), ROOT)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(rendered) if d}
    assert ("Deployment", "chatkit-gateway") in kinds, kinds
    assert any(kind == "ConfigMap" for kind, _ in kinds), kinds

    namespace = yaml.safe_load(
        run([*shlex.split(readme_command("kubectl create namespace chatkit").text), *dry], ROOT)
    )
    assert namespace["kind"] == "Namespace"

    (tmp_path / "openai-api-key.txt").write_text("sk-placeholder\n")
    create = readme_command(
        "kubectl -n chatkit create secret generic chatkit-gateway-openai "
        "--from-file=api-key=./openai-api-key.txt"
    )
    secret = yaml.safe_load(run([*shlex.split(create.text), *dry], tmp_path))
    deployment = next(d for d in manifests() if d["kind"] == "Deployment")
    volume = next(
        v["secret"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v
    )
    assert secret["metadata"]["name"] == volume["secretName"]
    assert set(secret["data"]) == {i["key"] for i in volume["items"]}
    assert secret["metadata"]["namespace"] == namespace["metadata"]["name"]

    (tmp_path / "new-key.txt").write_text("sk-placeholder-2\n")
    rotate = next(c for c in all_commands() if "new-key.txt" in c.text)
    before_apply = rotate.text.split("|")[0]
    rotated = yaml.safe_load(run(shlex.split(before_apply), tmp_path))
    assert rotated["metadata"]["name"] == volume["secretName"]
    assert set(rotated["data"]) == set(secret["data"])

    apply = readme_command("kubectl -n chatkit apply -k config/kubernetes")
    assert shlex.split(apply.text)[-1] == "config/kubernetes"  # the directory rendered above

    # The README's overlay, in a copy of the tree so its relative paths hold.
    readme_command("kubectl apply -k deploy/production")
    overlay_text = next(
        "\n".join(body)
        for _, lang, body in shell_blocks(README)
        if lang == "yaml" and "# deploy/production/kustomization.yaml" in body[0]
    )
    shutil.copytree(ROOT / "config", tmp_path / "config")
    overlay = tmp_path / "deploy" / "production"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(overlay_text)
    docs = [d for d in yaml.safe_load_all(run([binary, "kustomize", str(overlay)], tmp_path)) if d]
    assert {d["metadata"].get("namespace") for d in docs} == {"chatkit"}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "chatkit-gateway-redis") in names, names


def test_kubernetes_policy_checks_before_applying() -> None:
    """The README's check of the cluster's policy passes here, where its secret files are
    not; without the flag, those files are what fails. Its comments cite shipped docs."""
    argv = shlex.split(readme_command(K8S_CHECK).text)
    done = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    policy = yaml.safe_load(done.stdout)
    assert [r["name"] for r in policy["routes"]] == ["assistant"], policy["routes"]
    argv.remove("--skip-secret-files")
    strict = subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True)
    assert strict.returncode != 0
    assert "cannot read secret file" in strict.stderr, strict.stderr

    comments = (K8S / "gateway.yaml").read_text()
    assert "SPEC" not in comments  # the repository does not ship one
    assert K8S_CHECK.removeprefix(".venv/bin/chatkit-gateway ") in comments
    headings = {"policy-reference", "migrating-from-agent-builder", "your-sites-pages-as-knowledge"}
    assert headings <= anchors(README.read_text())
    for heading in ('"Policy reference"', '"Migrating from Agent Builder"', "as knowledge"):
        assert heading in comments, heading
