"""`chatkit-gateway check --online`: the model watch's look-up, once, from the command line.

For CI and for the operator before a deploy (SPEC §10): each model the policy's agent routes
name is asked about with the policy's own key and base URL, and what `serve` would log is
printed, one line each on stderr (stdout keeps the effective policy). The exit status: 1
when a model is not served or could not be asked about (nothing is known, so nothing is
vouched for), 0 when everything is served, shutdown dates or not. Lines carry a status or an
exception's type, never the upstream's words, which may quote the key.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .agent.model_watch import (
    client_for,
    look_up,
    missing_message,
    shutdown_message,
    watched_models,
)
from .policy import Policy


async def check_models(policy: Policy, path: Path) -> int:
    models = watched_models(policy)
    if not models:
        print(f"{path}: online: no chatkit_agent route, no model to ask about", file=sys.stderr)
        return 0
    client = client_for(policy.upstream)
    status = 0
    try:
        for route, names in models.items():
            for name in names:
                found = await look_up(client, name)
                if found.served is None:
                    status = 1
                    line = (
                        f"error: could not ask the upstream about model {name} (route {route}): "
                        f"{found.failure}"
                    )
                elif not found.served:
                    status, line = 1, f"error: {missing_message(route, name)}"
                elif found.shutdown is not None:
                    line = f"warning: {shutdown_message(route, name, found.shutdown)}"
                else:
                    line = f"ok: model {name} of route {route} is served, no shutdown date"
                print(f"{path}: {line}", file=sys.stderr)
    finally:
        await client.close()
    return status
