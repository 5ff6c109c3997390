"""Swapping in a new policy while serving: on SIGHUP and when the file changes on disk.

A Kubernetes ConfigMap update replaces a `..data` symlink rather than writing the file,
so the watcher compares the file's *content* (read through the symlink) every few
seconds instead of watching an inode. A policy that fails validation is refused whole:
the old one keeps serving, the problems are logged, and the failure is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

from aiohttp import web

from .compiled_policy import ACTIVE_POLICY, CompiledPolicy
from .limits.enforcement import LIMITER
from .logs import redact_secrets
from .metrics import METRICS
from .policy import Policy, PolicyError, load_policy, secrets_in
from .upstream import UPSTREAM
from .upstream.openai import OpenAIClient
from .upstream.outbound import OUTBOUND

log = logging.getLogger("gateway.reload")


def apply_policy(app: web.Application, policy: Policy) -> list[str]:
    """Install a validated policy; limits whose definition is unchanged keep their counters."""
    holder = app[ACTIVE_POLICY]
    old = holder.current.policy
    compiled = CompiledPolicy.build(policy)
    app[LIMITER].retain(compiled.scopes())
    upstream = app.get(UPSTREAM)
    if isinstance(upstream, OpenAIClient):
        upstream.configure(policy.upstream)
    if OUTBOUND in app:
        app[OUTBOUND].configure(policy.upstream)
    holder.current = compiled
    redact_secrets(secrets_in(policy))
    return describe_changes(old, policy)


def describe_changes(old: Policy, new: Policy) -> list[str]:
    changes: list[str] = []
    old_routes = {r.name: r for r in old.routes}
    new_routes = {r.name: r for r in new.routes}
    changes += [f"route {n} added" for n in new_routes.keys() - old_routes.keys()]
    changes += [f"route {n} removed" for n in old_routes.keys() - new_routes.keys()]
    changes += [
        f"route {n} changed"
        for n in new_routes.keys() & old_routes.keys()
        if new_routes[n] != old_routes[n]
    ]
    for section in ("server", "upstream", "limiter", "metrics"):
        if getattr(old, section) != getattr(new, section):
            changes.append(f"{section} changed")
    # Read once at start (listener, connection pools, the limiter's backend and fallback):
    # a reload records the new values but they apply from the next start.
    restart_only = [
        ("server.host/port", (old.server.host, old.server.port),
         (new.server.host, new.server.port)),
        ("server.max_connections", old.server.max_connections, new.server.max_connections),
        ("server.drain_timeout_seconds", old.server.drain_timeout_seconds,
         new.server.drain_timeout_seconds),
        ("upstream.max_connections", old.upstream.max_connections,
         new.upstream.max_connections),
        ("metrics.path", old.metrics.path, new.metrics.path),
        ("server.ops_port", old.server.ops_port, new.server.ops_port),
        ("server.tls on or off", old.server.tls is None, new.server.tls is None),
        ("limiter", old.limiter, new.limiter),
    ]  # fmt: skip
    for name, before, after in restart_only:
        if before != after:
            changes.append(f"{name} takes effect after a restart")
    return sorted(changes)


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None


class PolicyFile:
    """The served policy's file: reloaded on SIGHUP and when its content changes.

    Both triggers share the digest of the content last tried, so a change that SIGHUP
    already applied (or refused) is not tried, and counted, a second time by the watcher.
    """

    __slots__ = ("app", "digest", "path")

    def __init__(self, app: web.Application, path: Path) -> None:
        self.app = app
        self.path = path
        self.digest = _digest(path)

    def reload(self) -> None:
        """Validate the file and apply it; count and log the result either way."""
        self.digest = _digest(self.path)  # before reading: a later change is seen again
        metrics = self.app[METRICS]
        stub = self.app[ACTIVE_POLICY].current.policy.stub_upstream
        try:
            policy = load_policy(self.path, stub_upstream=stub)
        except PolicyError as exc:
            metrics.config_reloads.labels("failure").inc()
            for problem in exc.problems:
                log.error("reload refused, old policy stays", extra={"detail": str(problem)})
            return
        try:
            changes = apply_policy(self.app, policy)
        except Exception:
            # A bug, not a bad file; the watcher and the SIGHUP handler must survive it.
            metrics.config_reloads.labels("failure").inc()
            log.exception("reload failed, old policy stays")
            return
        metrics.config_reloads.labels("success").inc()
        log.info("policy reloaded", extra={"detail": "; ".join(changes) or "no changes"})

    async def watch(self, interval: float = 2.0) -> None:
        """Reload whenever the file's content changes (symlink swaps included)."""
        while True:
            await asyncio.sleep(interval)
            current = _digest(self.path)
            if current is not None and current != self.digest:
                self.reload()
