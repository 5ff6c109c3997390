"""A policy file as data for pydantic, with the line of every key, so each problem has one.

PyYAML's `compose` keeps the position of each node. `read_document` turns the node tree
into dicts, lists and scalars (an unquoted scalar as a `Scalar`: its text and its YAML
type), replaces `${VAR}` and `${VAR:-default}` from the environment, and records what
YAML allows but a policy does not (repeated keys, merge keys, recursive aliases) as
problems of its own, so that one `check` run reports everything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .problems import Loc, PolicyError, Problem, key_path
from .types import Scalar

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_VALUES = 50_000  # a policy is hundreds; an alias bomb is millions
_MAX_DEPTH = 32


@dataclass(slots=True)
class Document:
    data: object
    lines: dict[Loc, int] = field(default_factory=dict)  # key line (items: their own line)
    # Interpolated values as a problem may show them: `${VAR}` where the environment gave
    # the text (it may be a secret), the default where the file did.
    shown: dict[Loc, tuple[str, str]] = field(default_factory=dict)
    problems: dict[Loc, Problem] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of `loc`, or of the nearest key above it that the file has."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return 1


class _Reader:
    __slots__ = ("doc", "env", "file", "values")

    def __init__(self, file: str, env: Mapping[str, str], doc: Document) -> None:
        self.file, self.env, self.doc, self.values = file, env, doc, 0

    def problem(self, loc: Loc, line: int, message: str) -> None:
        self.doc.problems.setdefault(loc, Problem(self.file, line, key_path(loc), message))

    def value(self, node: yaml.Node, loc: Loc, stack: tuple[yaml.Node, ...]) -> object:
        line = node.start_mark.line + 1
        self.values += 1
        if self.values > _MAX_VALUES or len(stack) > _MAX_DEPTH:
            self.problem(loc, line, f"too large (at most {_MAX_VALUES} values, {_MAX_DEPTH} deep)")
            return None
        if any(node is seen for seen in stack):
            self.problem(loc, line, "an alias refers to the value that contains it")
            return None
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, loc, (*stack, node))
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                self.doc.lines.setdefault((*loc, i), item.start_mark.line + 1)
                out.append(self.value(item, (*loc, i), (*stack, node)))
            return out
        assert isinstance(node, yaml.ScalarNode)
        if node.tag == "tag:yaml.org,2002:null":
            return None
        return self.scalar(node, loc, line)

    def mapping(self, node: yaml.MappingNode, loc: Loc, stack: tuple[yaml.Node, ...]) -> object:
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problem(loc, key_line, "keys must be strings")
                continue
            here = (*loc, key)
            if key == "<<":
                self.problem(
                    here, key_line, "YAML merge keys (<<) are not supported; write the keys out"
                )
                continue
            if key in out:
                self.problem(here, key_line, "key given twice")
                continue
            self.doc.lines[here] = key_line
            out[key] = self.value(value_node, here, stack)
        return out

    def scalar(self, node: yaml.ScalarNode, loc: Loc, line: int) -> object:
        text = str(node.value)
        if "${" in text:
            try:
                text, shown = self.interpolate(text)
            except KeyError as missing:
                self.problem(loc, line, f"environment variable {missing.args[0]} is not set")
                return None
            if shown != text:
                self.doc.shown[loc] = (text, shown)
        if node.style is not None:  # quoted or a block scalar: text, whatever it looks like
            return text
        out = Scalar(text)
        out.typed = _yaml_type(text)
        return out

    def interpolate(self, template: str) -> tuple[str, str]:
        """The value, and how a problem may show it (environment parts as `${VAR}`); a
        variable neither set nor given a default raises KeyError."""

        def value(match: re.Match[str]) -> str:
            given = self.env.get(match.group(1))
            if given is None and match.group(2) is None:
                raise KeyError(match.group(1))
            return match.group(2) if given is None else given

        def shown(match: re.Match[str]) -> str:
            given = self.env.get(match.group(1))
            return match.group(2) if given is None else f"${{{match.group(1)}}}"

        return _ENV_REF.sub(value, template), _ENV_REF.sub(shown, template)


def _yaml_type(text: str) -> object:
    """What YAML would make of `text` written unquoted: a number, a bool, or the text.
    Dates and non-finite numbers stay text (no policy value is one)."""
    if not text:
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value if isinstance(value, bool | int | float | str) else text


def read_document(file: str, source: str, env: Mapping[str, str]) -> Document:
    """The document's data; a YAML syntax error raises PolicyError with its line."""
    root = compose_file(Path(file), source)
    doc = Document(None)
    doc.data = {} if root is None else _Reader(file, env, doc).value(root, (), ())
    return doc


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
