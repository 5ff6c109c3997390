"""Every problem of a policy file as `file:line: key.path: what is wrong`, all in one run."""

from __future__ import annotations

import re
from dataclasses import dataclass

# A key that can stand in a dotted path as it is; others are quoted (see `key_path`).
_PLAIN_KEY = re.compile(r"[^\s.\[\]\"]+")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class PolicyError(Exception):
    """Every problem found in one policy file."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def key_path(loc: Loc) -> str:
    """`routes[0].rate_limits[1].per`; a key with spaces, dots or brackets as `["odd key"]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            quoted = "".join(
                c if c.isprintable() and not c.isspace() else f"\\u{ord(c):04x}" for c in part
            ).replace('"', "\\u0022")
            out += f'["{quoted}"]'
    return out or "(top)"
