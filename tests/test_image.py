"""README's "One server": the `docker run` line and examples/compose/ give the image what it
expects (the paths of the Dockerfile and of the policy), keep the ops port on the host, and
give enough open files. `make image-test` runs the image itself with the same mounts."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import yaml

from tests.support.processes import ROOT, SCRIPT, base_env

COMPOSE = ROOT / "examples" / "compose"
POLICY = yaml.safe_load((COMPOSE / "gateway.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _docker_run() -> list[str]:
    [line] = [
        x for x in (ROOT / "README.md").read_text().splitlines() if x.startswith("docker run ")
    ]
    return shlex.split(line.replace('"$PWD', '"/srv'))


def _flags(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def _expected_targets() -> set[str]:
    tls = POLICY["server"]["tls"]
    [volume] = re.findall(r'VOLUME \["([^"]+)"\]', DOCKERFILE)
    [policy] = re.findall(r'"--config", "([^"]+)"', DOCKERFILE)
    return {
        policy,
        volume,
        POLICY["upstream"]["api_key_file"],
        str(Path(tls["cert_file"]).parent),
        str(Path(tls["key_file"]).parent),
    }


def test_docker_run_and_compose_mount_what_the_image_and_policy_expect() -> None:
    argv = _docker_run()
    run_targets = {v.split(":")[1] for v in _flags(argv, "-v")}
    service = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["gateway"]
    compose_targets = {v.split(":")[1] for v in service["volumes"]} | {
        f"/run/secrets/{name}" for name in service["secrets"]
    }
    assert run_targets == compose_targets == _expected_targets()
    # The policy and the certificates read-only; the threads' volume writable.
    for mounts in (_flags(argv, "-v"), service["volumes"]):
        for mount in mounts:
            assert mount.endswith(":ro") != mount.split(":")[1].startswith("/var/lib/"), mount


def test_https_is_public_and_the_ops_port_stays_on_the_host() -> None:
    server = POLICY["server"]
    service = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["gateway"]
    for ports in (_flags(_docker_run(), "-p"), service["ports"]):
        assert f"443:{server['port']}" in ports
        assert f"127.0.0.1:{server['ops_port']}:{server['ops_port']}" in ports
        assert not [p for p in ports if p.endswith(f":{server['ops_port']}") and p.count(":") < 2]


def test_open_files_cover_max_connections() -> None:
    wanted = POLICY["server"]["max_connections"] + 1024  # what serve asks for (cli.py)
    [ulimit] = _flags(_docker_run(), "--ulimit")
    assert int(ulimit.removeprefix("nofile=").split(":")[0]) >= wanted
    service = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["gateway"]
    assert service["ulimits"]["nofile"]["soft"] >= wanted


def test_the_vps_policy_checks_as_the_readme_says() -> None:
    """`check --skip-secret-files`: everything but the key and certificate files."""
    done = subprocess.run(
        [str(SCRIPT), "check", "--config", str(COMPOSE / "gateway.yaml"), "--skip-secret-files"],
        capture_output=True, text=True, env=base_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tls:" in done.stdout and "/etc/chatkit-gateway/tls/privkey.pem" in done.stdout
