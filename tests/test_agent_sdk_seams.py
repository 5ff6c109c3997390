"""Where the agent route leans on openai-chatkit's own seams, pinned to the installed SDK:
the attachment store is its own object (ChatKitServer's second argument), and
`AgentServer.process` is the SDK's `process` with its parser built once — it calls the
SDK's private `_process_streaming`/`_process_non_streaming`, so a release that changes
`process` must fail here, not in a visitor's conversation."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

import pytest
from chatkit.server import ChatKitServer
from chatkit.store import AttachmentStore, Store
from chatkit.types import ChatKitReq
from pydantic import TypeAdapter

from gateway.agent import chatkit_server
from gateway.agent.attachment_store import SqlAttachmentStore
from gateway.agent.store import SqlStore

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

REFRESH = (
    "openai-chatkit changed ChatKitServer.process: copy its new body into "
    "gateway/agent/chatkit_server.py's AgentServer.process (keeping the one TypeAdapter), "
    "or drop the override"
)


def _body(function: Any) -> list[ast.stmt]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.AsyncFunctionDef)
    return definition.body


class _AsOurs(ast.NodeTransformer):
    """The SDK's `process` as ours reads: no docstring, no log line, the parser named
    `_REQUEST` instead of built per call, `parsed` for `parsed_request`, no `else` after
    a `return`."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if (
            isinstance(func, ast.Subscript)
            and isinstance(func.value, ast.Name)
            and func.value.id == "TypeAdapter"
        ):
            return ast.Name("_REQUEST", ast.Load())
        return self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name("parsed", node.ctx) if node.id == "parsed_request" else node


def _normalized(body: list[ast.stmt]) -> str:
    kept: list[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the docstring
        if (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Attribute)
            and isinstance(stmt.value.func.value, ast.Name)
            and stmt.value.func.value.id == "logger"
        ):
            continue  # the SDK's log line of every request
        if isinstance(stmt, ast.If) and stmt.orelse and isinstance(stmt.body[-1], ast.Return):
            kept.append(ast.If(stmt.test, stmt.body, []))
            kept.extend(stmt.orelse)
            continue
        kept.append(stmt)
    module = ast.Module([_AsOurs().visit(s) for s in kept], type_ignores=[])
    return ast.dump(module)


def test_the_process_override_is_the_installed_sdks_process() -> None:
    ours = _normalized(_body(chatkit_server.AgentServer.process))
    sdks = _normalized(_body(ChatKitServer.process))
    assert ours == sdks, REFRESH
    # and what it names: the SDK's private dispatch, which must still exist
    for name in ("_process_streaming", "_process_non_streaming"):
        assert callable(getattr(ChatKitServer, name, None)), REFRESH
    request = chatkit_server._REQUEST
    assert isinstance(request, TypeAdapter)
    assert request.validate_json(b'{"type": "threads.list", "params": {}}') == TypeAdapter[
        ChatKitReq
    ](ChatKitReq).validate_json(b'{"type": "threads.list", "params": {}}')


def test_the_attachment_store_is_its_own_object() -> None:
    """The SDK's seams: `Store` keeps threads, items and attachment records;
    `AttachmentStore` creates and deletes the files; the server takes them apart."""
    assert issubclass(SqlStore, Store) and not issubclass(SqlStore, AttachmentStore)
    assert issubclass(SqlAttachmentStore, AttachmentStore)
    assert not issubclass(SqlAttachmentStore, Store)
    parameters = list(inspect.signature(ChatKitServer.__init__).parameters)
    assert parameters[1:3] == ["store", "attachment_store"]
