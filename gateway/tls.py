"""HTTPS on the gateway's own listener (`server.tls`), with certificates that rotate.

cert-manager and certbot replace the files before they expire: the new pair must serve
without a restart or a dropped connection. The listener's SSLContext is fixed when the
socket opens, so its SNI callback (run for every ClientHello, server name or not) hands
each handshake to the context of the pair in force. The files are compared by content
every few seconds, as reload.py does for the policy; a new pair is loaded into a fresh
context and swapped in whole, so a pair caught half-written (the new certificate, the old
key) or a bad file is refused, logged, and the old pair keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("gateway.tls")


class TlsFiles(Protocol):
    """server.tls in the policy (policy/sections.py's TlsConfig)."""

    @property
    def cert_file(self) -> str: ...

    @property
    def key_file(self) -> str: ...


class TlsError(ValueError):
    """A certificate and key that cannot serve; `key` names the policy key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context for the pair: TLS 1.2 or later, HTTP/1.1 offered by ALPN."""
    for key, path in (("cert_file", cert_file), ("key_file", key_file)):
        try:
            Path(path).read_bytes()
        except OSError as exc:
            raise TlsError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsError("key_file", f"{key_file} is not the key of {cert_file}") from None
        reason = exc.reason or str(exc)
        raise TlsError(
            "cert_file", f"cannot load {cert_file} with {key_file} as PEM ({reason})"
        ) from None
    return context


def _digest(tls: TlsFiles) -> bytes | None:
    sha = hashlib.sha256(f"{tls.cert_file}\0{tls.key_file}\0".encode())
    try:
        sha.update(Path(tls.cert_file).read_bytes())
        sha.update(Path(tls.key_file).read_bytes())
    except OSError:
        return None
    return sha.digest()


class ListenerTls:
    """The listener's SSLContext, handing each handshake to the pair in force."""

    __slots__ = ("_current", "_digest", "context")

    def __init__(self, tls: TlsFiles) -> None:
        self._current = server_context(tls.cert_file, tls.key_file)
        self._digest = _digest(tls)
        self.context = server_context(tls.cert_file, tls.key_file)
        self.context.sni_callback = self._select

    def _select(self, conn: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self._current

    async def watch(self, tls: Callable[[], TlsFiles | None], interval: float = 2.0) -> None:
        """Load the pair of the policy in force (reloads included) whenever its files change."""
        while True:
            await asyncio.sleep(interval)
            files = tls()
            digest = None if files is None else _digest(files)
            if files is None or digest is None or digest == self._digest:
                continue
            self._digest = digest  # tried once per content: a refusal is not logged every tick
            try:
                self._current = server_context(files.cert_file, files.key_file)
            except TlsError as exc:
                log.error(
                    "tls certificate refused, the old one keeps serving",
                    extra={"detail": f"server.tls.{exc.key}: {exc}"},
                )
            else:
                log.info("tls certificate loaded", extra={"detail": files.cert_file})
