"""A line-aware view of a YAML document, so every policy problem names file, line and key path.

PyYAML's `compose` keeps the position of each node; `Field` walks those nodes, interpolates
`${VAR}` from the environment and records problems instead of raising, so one `check` run
reports all of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A key that can stand in a dotted path as it is; others are quoted (see `_segment`).
_PLAIN_KEY = re.compile(r"[^\s.\[\]\"]+")
# Pass-through objects (state variables, realtime session) stay small and finite.
_MAX_VALUES = 10_000
_MAX_DEPTH = 32


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


@dataclass(slots=True)
class _Budget:
    values: int = 0
    exceeded: bool = False


class Invalid(Exception):
    """Raised inside a field reader; `Field.read` turns it into a recorded problem."""


class Field:
    """One YAML node at a key path."""

    __slots__ = ("ctx", "key_line", "node", "path")

    def __init__(
        self, ctx: Context, node: yaml.Node | None, path: str, key_line: int | None = None
    ) -> None:
        self.ctx = ctx
        self.node = node
        self.path = path
        self.key_line = key_line

    @property
    def line(self) -> int:
        """The line of the key that names this value (else of the value itself)."""
        if self.key_line is not None:
            return self.key_line
        return self.node.start_mark.line + 1 if self.node is not None else 1

    @property
    def present(self) -> bool:
        return self.node is not None and not _is_null(self.node)

    def problem(self, message: str, line: int | None = None) -> None:
        message = " ".join(self._redact(message).splitlines())  # one problem, one line
        self.ctx.problems.append(
            Problem(self.ctx.file, line or self.line, self.path or "(top)", message)
        )

    def _redact(self, message: str) -> str:
        """Show `${VAR}` rather than its value: a misplaced secret must not reach a log."""
        node = self.node
        if not isinstance(node, yaml.ScalarNode) or "${" not in str(node.value):
            return message
        raw = str(node.value).strip()
        try:
            value = self.scalar()
        except Invalid:
            return message
        # Short values (ports, counts) are no secrets and help more shown than hidden.
        variants = {v for v in (value, value.strip(), value.strip().lower()) if len(v) >= 8}
        for variant in sorted(variants - {raw}, key=len, reverse=True):
            message = message.replace(variant, raw)
        return message

    def child(self, node: yaml.Node | None, key: str, key_line: int | None = None) -> Field:
        segment = _segment(key)
        path = f"{self.path}{segment}" if self.path else segment.lstrip(".")
        return Field(self.ctx, node, path, key_line)

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
            key_line = key_node.start_mark.line + 1
            child = self.child(value_node, key, key_line)
            if key == "<<" and key not in allowed:
                child.problem("YAML merge keys (<<) are not supported; write the keys out")
            elif key not in allowed:
                hint = ", ".join(sorted(allowed))
                child.problem(f"unknown key (expected one of: {hint})")
            elif key in out:
                child.problem("key given twice")
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
        """The node as JSON-ready data (for pass-through objects), with interpolation.

        Never raises: a bad part (missing variable, recursive alias, absurd size) is
        recorded as a problem and left out.
        """
        return self._plain_data([], _Budget())

    def _plain_data(self, stack: list[yaml.Node], budget: _Budget) -> object:
        node = self.node
        if node is None or _is_null(node):
            return None
        budget.values += 1
        if budget.values > _MAX_VALUES or len(stack) > _MAX_DEPTH:
            if not budget.exceeded:
                budget.exceeded = True
                self.problem(f"too large (at most {_MAX_VALUES} values, {_MAX_DEPTH} levels deep)")
            return None
        if any(node is seen for seen in stack):
            self.problem("an alias refers to the value that contains it")
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[str, object] = {}
            for k, v in node.value:
                if not isinstance(k, yaml.ScalarNode):
                    self.problem("keys must be strings", k.start_mark.line + 1)
                    continue
                child = self.child(v, str(k.value), k.start_mark.line + 1)
                out[str(k.value)] = child._plain_data([*stack, node], budget)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [f._plain_data([*stack, node], budget) for f in self.items()]
        try:
            text = self.scalar()
        except Invalid as exc:
            self.problem(str(exc))
            return None
        if not self.is_plain() or not text:
            return text
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        # Dates, non-finite floats and interpolated structures stay text: the value is
        # sent upstream as JSON.
        if isinstance(value, float) and not math.isfinite(value):
            return text
        return value if isinstance(value, str | int | float | bool) else text


def _segment(key: str) -> str:
    """`.key`, or `["odd key"]` for a key with spaces, dots or brackets (paths have no spaces)."""
    if _PLAIN_KEY.fullmatch(key):
        return f".{key}"
    quoted = "".join(
        c if c.isprintable() and not c.isspace() else f"\\u{ord(c):04x}" for c in key
    ).replace('"', "\\u0022")
    return f'["{quoted}"]'


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


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses absurd nesting early, with the line, instead of recursing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self._depth >= _MAX_DEPTH * 2:
            event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
            raise _TooDeep(getattr(event.start_mark, "line", 0) + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose_file(path: Path, text: str) -> yaml.Node | None:
    """The document's node tree; a YAML syntax error becomes a PolicyError with its line."""
    last_line = max(1, len(text.splitlines()))

    def fail(line: int, message: str) -> PolicyError:
        # A mark at the very end of the text sits past the last line; name the last line.
        line = min(max(line, 1), last_line)
        return PolicyError([Problem(str(path), line, "(yaml)", " ".join(message.split()))])

    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise fail(line, ", ".join(m for m in (exc.context, exc.problem) if m)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        char = exc.character
        what = f"#x{char:04x}" if isinstance(char, int) else repr(char)
        raise fail(line, f"unacceptable character {what}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise fail(1, str(exc)) from None
    except _TooDeep as exc:
        raise fail(exc.line, f"nested too deeply (more than {_MAX_DEPTH * 2} levels)") from None
    except RecursionError:
        raise fail(1, "nested too deeply") from None
