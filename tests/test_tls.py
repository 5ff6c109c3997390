"""HTTPS in the gateway (`server.tls`): a real `serve` process, certificates made here by a
test CA, a real TLS client that trusts only that CA. Rotation is what certbot and
cert-manager do: new files in place; new connections get the new certificate (its serial),
open ones keep theirs, a bad pair is refused and the old one keeps serving."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ALLOWED
from tests.support.processes import (
    SCRIPT,
    Gateway,
    base_env,
    free_port,
    poll,
    start_gateway,
    write_policy,
)

_KEY_PEM = serialization.PrivateFormat.PKCS8


class Ca:
    """A certificate authority of the test's own, issuing certificates for 127.0.0.1."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
        self.name = name
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip

    def client(self) -> ssl.SSLContext:
        pem = self.cert.public_bytes(serialization.Encoding.PEM).decode()
        return ssl.create_default_context(cadata=pem)

    def issue(self, directory: Path, cert_file: str = "tls.crt", key_file: str = "tls.key") -> int:
        """A new pair for 127.0.0.1 put in place as a rotation does (rename over); its serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(self.name).public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, _KEY_PEM, serialization.NoEncryption()
        )
        _replace(directory / key_file, key_pem)
        _replace(directory / cert_file, cert.public_bytes(serialization.Encoding.PEM))
        return serial


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _tls_policy(tmp: Path, port: int, ops_port: int, **tls: str) -> Path:
    files = {"cert_file": str(tmp / "tls.crt"), "key_file": str(tmp / "tls.key"), **tls}
    return write_policy(
        tmp / "gateway.yaml", port=port, server={"ops_port": ops_port, "tls": files}
    )


async def _serial(port: int, client: ssl.SSLContext) -> int:
    """The serial of the certificate a new connection is shown (verified against the CA)."""
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


REQUEST = (
    f"POST /api/realtime/secret HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ALLOWED}\r\n"
    "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST.encode())
    status = await asyncio.wait_for(reader.readline(), 10)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    return status


async def test_https_with_rotation_seen_by_new_connections(tmp_path: Path) -> None:
    ca = Ca()
    first = ca.issue(tmp_path)
    port, ops_port = free_port(), free_port()
    config = _tls_policy(tmp_path, port, ops_port)
    gateways: list[Gateway] = []
    gateway = await start_gateway(
        config,
        ops_port,
        "--stub-upstream",
        env=base_env(OPENAI_API_KEY="sk-test-tls"),
        gateways=gateways,
    )
    client = ca.client()
    try:
        assert f"https://127.0.0.1:{port}" in gateway.stdout  # the "listening" line
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        assert await _ask(reader, writer) == b"HTTP/1.1 200 OK\r\n"
        assert await _serial(port, client) == first

        second = ca.issue(tmp_path)  # rotated on disk: picked up without a restart
        await poll(lambda: _is(port, client, second), 15, "the rotated certificate")
        assert "tls certificate loaded" in gateway.stdout
        # The connection opened before the rotation is still served, with its certificate.
        assert await _ask(reader, writer) == b"HTTP/1.1 200 OK\r\n"
        old = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert x509.load_der_x509_certificate(old).serial_number == first
        writer.close()

        # A key that is not the certificate's: refused, the last good pair keeps serving.
        other = tmp_path / "other"
        other.mkdir()
        ca.issue(other)
        _replace(tmp_path / "tls.key", (other / "tls.key").read_bytes())
        await poll(lambda: _said(gateway, "tls certificate refused"), 15, "the refusal")
        assert "is not the key of" in gateway.stdout
        assert await _serial(port, client) == second

        # A reload naming a missing file is refused whole; the old pair keeps serving.
        ca.issue(tmp_path)  # a good pair again, under the old names
        _tls_policy(tmp_path, port, ops_port, cert_file=str(tmp_path / "missing.crt"))
        await poll(lambda: _said(gateway, "reload refused"), 15, "the refused reload")
        assert "server.tls.cert_file: cannot read" in gateway.stdout
        assert await _serial(port, client) != second  # the files' own rotation still seen
    finally:
        for g in gateways:
            await g.kill()


async def _is(port: int, client: ssl.SSLContext, serial: int) -> bool:
    return await _serial(port, client) == serial


async def _said(gateway: Gateway, text: str) -> bool:
    return text in gateway.stdout


def _check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT), "check", "--config", str(config), "--stub-upstream", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=base_env(OPENAI_API_KEY="sk-test-tls"), timeout=60
    )


def _line(config: Path, key: str) -> int:
    lines = config.read_text().splitlines()
    return next(i for i, text in enumerate(lines, 1) if text.strip().startswith(f"{key}:"))


def test_a_bad_pair_is_a_policy_error_with_its_line(tmp_path: Path) -> None:
    ca = Ca()
    ca.issue(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    ca.issue(other)
    config = _tls_policy(tmp_path, 8443, 8081, key_file=str(other / "tls.key"))
    result = _check(config)
    assert result.returncode == 1
    line = _line(config, "key_file")
    assert f"{config}:{line}: server.tls.key_file: " in result.stderr
    assert "is not the key of" in result.stderr

    config = _tls_policy(tmp_path, 8443, 8081, cert_file=str(tmp_path / "nope.crt"))
    result = _check(config)
    assert f"{config}:{_line(config, 'cert_file')}: server.tls.cert_file: cannot read" in (
        result.stderr
    )
    # CI without the production files: --skip-secret-files checks the rest.
    assert _check(config, "--skip-secret-files").returncode == 0

    (tmp_path / "tls.crt").write_text("not a certificate\n")
    result = _check(_tls_policy(tmp_path, 8443, 8081))
    assert "server.tls.cert_file: cannot load" in result.stderr

    # serve refuses to start on it, with the same words.
    serve = subprocess.run(
        [str(SCRIPT), "serve", "--config", str(config), "--stub-upstream"],
        capture_output=True, text=True, env=base_env(OPENAI_API_KEY="sk-test-tls"), timeout=60,
    )  # fmt: skip
    assert serve.returncode == 2
    assert "server.tls.cert_file: cannot load" in serve.stdout
