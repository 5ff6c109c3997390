"""The fake OpenAI's models: ``GET /v1/models`` and ``GET /v1/models/{id}``, and the models
that are gone (SPEC §10), for ``FakeResponses`` (tests/support/fake_responses.py).

Each model is the ``openai`` SDK's own ``Model`` type, dumped as the SDK would read it:

    fake.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")  # or unix seconds (an int)
    fake.models.retire("gpt-4.1-sunset")  # /models/{id}: 404, /responses: 400 model_not_found
    fake.models.fail_status = 503      # /models answers this while set (None: normally)

A model not in the catalogue is a 404 ``model_not_found`` from ``/models/{id}``, as at
OpenAI. ``/v1/responses`` refuses only retired models (``gone_status``: 400 as the Responses
API answers, or 404), so a test's odd model names still answer. Look-ups are kept in
``fake.models.requests`` (paths), apart from ``fake.requests``, so a test counting model
calls does not count the gateway's model watch.
"""

from __future__ import annotations

from typing import Any

from openai.types import Model

from tests.support.fake_openai import _default_fault_payload

DEFAULT_MODELS = ("gpt-6.1-terra", "gpt-6.1-terra-mini")
_CREATED = 1_780_000_000


def _not_found(model: str) -> dict[str, Any]:
    return {
        "message": f"The model '{model}' does not exist or you do not have access to it.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


class ModelCatalogue:
    """What the fake serves; tests change it while the gateway runs."""

    def __init__(self, served: tuple[str, ...] = DEFAULT_MODELS) -> None:
        self.served: dict[str, dict[str, Any]] = {}
        self.gone: set[str] = set()
        self.gone_status = 400
        self.fail_status: int | None = None
        self.requests: list[str] = []
        for name in served:
            self.add(name)

    def add(self, model: str, *, shutdown_date: str | int | None = None) -> None:
        """Serve `model` (again), with a shutdown date (``"YYYY-MM-DD"`` as OpenAI sends it,
        or unix seconds, which an SDK reads as given) or none."""
        dumped = Model(
            id=model, created=_CREATED, object="model", owned_by="system",
            shutdown_date=shutdown_date if isinstance(shutdown_date, str) else None,
        ).model_dump(mode="json")  # fmt: skip
        if isinstance(shutdown_date, int):
            dumped["shutdown_date"] = shutdown_date
        self.served[model] = dumped
        self.gone.discard(model)

    def retire(self, model: str) -> None:
        self.served.pop(model, None)
        self.gone.add(model)

    def answer(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        """The status and JSON body for a request below /v1/models."""
        self.requests.append(path)
        if self.fail_status is not None:
            return self.fail_status, _default_fault_payload(self.fail_status)
        if method != "GET":
            return 405, {"error": _error(f"Invalid method for {path}: {method}")}
        if path.rstrip("/") == "/v1/models":
            data = [self.served[name] for name in sorted(self.served)]
            return 200, {"object": "list", "data": data}
        name = path.removeprefix("/v1/models/")
        if name in self.served:
            return 200, self.served[name]
        return 404, {"error": _not_found(name)}

    def refusal(self, model: str) -> tuple[int, dict[str, Any]] | None:
        """The error /v1/responses answers for a retired model, else None."""
        if model not in self.gone:
            return None
        error = _not_found(model)
        error["message"] = f"The requested model '{model}' does not exist."
        return self.gone_status, error


def _error(message: str) -> dict[str, Any]:
    return {"message": message, "type": "invalid_request_error", "param": None, "code": None}
