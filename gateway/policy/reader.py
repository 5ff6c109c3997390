"""A line-aware view of a YAML document, so every policy problem names file, line and key path.

PyYAML's `compose` keeps the position of each node; `Field` walks those nodes, interpolates
`${VAR}` from the environment and records problems instead of raising, so one `check` run
reports all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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


@dataclass(slots=True)
class Context:
    file: str
    env: Mapping[str, str]
    problems: list[Problem] = field(default_factory=list)


class Invalid(Exception):
    """Raised inside a field reader; `Field.read` turns it into a recorded problem."""


class Field:
    """One YAML node at a key path."""

    __slots__ = ("ctx", "node", "path")

    def __init__(self, ctx: Context, node: yaml.Node | None, path: str) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path

    @property
    def line(self) -> int:
        return self.node.start_mark.line + 1 if self.node is not None else 1

    @property
    def present(self) -> bool:
        return self.node is not None and not _is_null(self.node)

    def problem(self, message: str, line: int | None = None) -> None:
        self.ctx.problems.append(
            Problem(self.ctx.file, line or self.line, self.path or "(top)", message)
        )

    def child(self, node: yaml.Node | None, key: str) -> Field:
        path = f"{self.path}.{key}" if self.path else key
        return Field(self.ctx, node, path)

    # -- containers -------------------------------------------------------

    def mapping(self, allowed: frozenset[str] | set[str]) -> dict[str, Field]:
        """Children by key; unknown or repeated keys are problems."""
        if not self.present:
            return {}
        assert self.node is not None
        if not isinstance(self.node, yaml.MappingNode):
            self.problem(f"expected a mapping, got {_kind(self.node)}")
            return {}
        out: dict[str, Field] = {}
        for key_node, value_node in self.node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problem("keys must be strings", key_node.start_mark.line + 1)
                continue
            child = self.child(value_node, key)
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                child.problem(
                    f"unknown key (expected one of: {hint})", key_node.start_mark.line + 1
                )
            elif key in out:
                child.problem("key given twice", key_node.start_mark.line + 1)
            else:
                out[key] = child
        return out

    def items(self) -> Iterator[Field]:
        if not self.present:
            return
        assert self.node is not None
        if not isinstance(self.node, yaml.SequenceNode):
            self.problem(f"expected a list, got {_kind(self.node)}")
            return
        for i, node in enumerate(self.node.value):
            yield Field(self.ctx, node, f"{self.path}[{i}]")

    # -- scalars ----------------------------------------------------------

    def scalar(self) -> str:
        """The scalar's text with `${VAR}` and `${VAR:-default}` replaced."""
        if self.node is None or not isinstance(self.node, yaml.ScalarNode):
            raise Invalid(f"expected a single value, got {_kind(self.node)}")
        text = str(self.node.value)
        if "${" not in text:
            return text

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.ctx.env.get(name)
            if value is None:
                if default is None:
                    raise Invalid(f"environment variable {name} is not set")
                return default
            return value

        return _ENV_REF.sub(substitute, text)

    def is_plain(self) -> bool:
        """True for an unquoted scalar, whose YAML type (int, bool) is meaningful."""
        return isinstance(self.node, yaml.ScalarNode) and self.node.style is None

    def python_value(self) -> object:
        """The node as plain Python data (for pass-through objects), with interpolation."""
        node = self.node
        if node is None or _is_null(node):
            return None
        if isinstance(node, yaml.MappingNode):
            return {str(k.value): self.child(v, str(k.value)).python_value() for k, v in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [f.python_value() for f in self.items()]
        text = self.scalar()
        if not self.is_plain():
            return text
        return yaml.safe_load(text) if text else text


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: yaml.Node | None) -> str:
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


def compose_file(path: Path, text: str) -> yaml.Node | None:
    """The document's node tree; a YAML syntax error becomes a PolicyError with its line."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PolicyError(
            [Problem(str(path), line, "(yaml)", f"{exc.problem or exc.context}")]
        ) from None
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(str(path), 1, "(yaml)", str(exc))]) from None
