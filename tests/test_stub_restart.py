"""The stub model's item ids are unique across restarts and replicas (issue 20 item 11):
a stored thread continued by a new process answers normally."""

from __future__ import annotations

from typing import Any

from tests.support.agent_client import add, chat, create, events_of, text_of, thread_id_of


async def test_a_thread_continued_after_a_restart_gets_a_normal_answer(agent: Any) -> None:
    first, _ = await agent(stub=True)
    events = await events_of(await chat(first, create("the first question")))
    thread = thread_id_of(events)
    assert "the first question" in text_of(events)
    await first.close()  # the process ends; its threads stay in the SQLite file

    second, _ = await agent(stub=True)  # a new app on the same store: a restart
    events = await events_of(await chat(second, add(thread, "the second question")))
    assert [e for e in events if e["type"] == "error"] == []
    assert "the second question" in text_of(events)
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["type"] == "assistant_message"

    body = {"type": "threads.get_by_id", "params": {"thread_id": thread}}
    items = (await (await chat(second, body)).json())["items"]["data"]
    answers = [i for i in items if i["type"] == "assistant_message"]
    assert len(answers) == 2  # both answers kept, the first not overwritten
    assert len({i["id"] for i in items}) == len(items)
