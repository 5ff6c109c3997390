"""The self-hosted ChatKit server protocol (openai-chatkit `types.py`): its request types.

One POST endpoint, a JSON body `{"type": …, "params": …}`; the streaming types answer with
Server-Sent Events, the others with JSON.
"""

from __future__ import annotations

CHATKIT_STREAMING_TYPES = frozenset(
    {
        "threads.create",
        "threads.add_user_message",
        "threads.add_client_tool_output",
        "threads.add_structured_input",
        "threads.retry_after_item",
        "threads.custom_action",
    }
)
CHATKIT_TYPES = CHATKIT_STREAMING_TYPES | {
    "threads.get_by_id",
    "threads.list",
    "threads.update",
    "threads.delete",
    "threads.sync_custom_action",
    "items.list",
    "items.feedback",
    "attachments.create",
    "attachments.delete",
    "input.transcribe",
}
