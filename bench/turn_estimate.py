"""What pricing a turn for its token budgets costs: the old `json.dumps(history) // 4`
against `turn_cost.input_estimate`, on the worst history the default policy allows
(30 items, 20 MiB of attachments inline as base64, as the converter hands them over).

The old estimate copied the whole input, attachments included, into one more string just
to take its length; the new one counts text lengths where they lie.

Run: .venv/bin/python -m bench.turn_estimate
"""

from __future__ import annotations

import base64
import json
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from gateway.agent.turn_cost import input_estimate

MIB = 1024 * 1024


def history(attachment_bytes: int = 20 * MIB, items: int = 30) -> list[dict[str, Any]]:
    data = base64.b64encode(bytes(attachment_bytes // 2)).decode("ascii")
    out: list[dict[str, Any]] = []
    for i in range(items - 1):
        role = "user" if i % 2 == 0 else "assistant"
        kind = "input_text" if role == "user" else "output_text"
        out.append({"role": role, "content": [{"type": kind, "text": "a question " * 100}]})
    out.append(
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what do these say?"},
                {"type": "input_file", "filename": "a.pdf", "file_data": f"data:a;base64,{data}"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{data}"},
            ],
        }
    )
    return out


def measure(name: str, estimate: Callable[[], int]) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    tokens = estimate()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{name:32} {tokens:>12,} tokens  {seconds * 1000:8.2f} ms  peak +{peak / MIB:7.2f} MiB")


def main() -> None:
    turn = history()
    measure("json.dumps(history) // 4", lambda: len(json.dumps(turn, default=str)) // 4)
    measure("input_estimate (20 MiB sent)", lambda: input_estimate(turn, "x" * 2000, 20 * MIB))


if __name__ == "__main__":
    main()
