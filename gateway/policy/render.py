"""The effective policy as YAML for `check`: defaults filled in, secrets masked.

It is the validator's own serialisation (each type says how it is shown: durations as
`1h`, secrets as `***`, a Redis URL with its password masked, a secret file by its path),
so a new key appears in `check` without a line here.
"""

from __future__ import annotations

from typing import Any

import yaml

from .document import Policy, policy_adapter


def effective_policy(policy: Policy) -> str:
    """YAML that `check` prints; it is itself a valid policy (with the secrets masked)."""
    data = policy_adapter().dump_python(policy, mode="json", by_alias=True)
    data["routes"] = [
        {"name": r["name"], "path": r["path"], "kind": r["kind"], **r} for r in data["routes"]
    ]
    return yaml.safe_dump(_one_secret_source(data), sort_keys=False, default_flow_style=False)


def _one_secret_source(value: Any) -> Any:
    """`x_file: path` shown instead of the `x` read from it; an absent `x_file` left out."""
    if isinstance(value, list):
        return [_one_secret_source(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _one_secret_source(v) for k, v in value.items()}
    for key in [k for k in out if k.endswith("_file")]:
        if out[key] is None:
            del out[key]
        else:
            out.pop(key.removesuffix("_file"), None)
    return out


def policy_warnings(policy: Policy) -> list[str]:
    """What `check` and `serve` say about a valid policy that may still not do what is meant."""
    return [warning for route in policy.routes for warning in route.warnings()]
