"""The agent's site search and its citations (SPEC §9), through the real route over HTTP:
the Agents SDK's function-tool loop against the fake Responses API, the real SQLite index
in the route's store, ChatKit's events as the widget reads them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from gateway.agent.store_schema import open_engine
from gateway.knowledge.model import Page, Passage
from gateway.knowledge.sql_index import open_index
from gateway.knowledge.tool import MAX_OUTPUT, TOOL_NAME, UNAVAILABLE
from tests.support.agent_client import (
    chat,
    create,
    events_of,
    sample,
    sqlite_url,
    text_of,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses, FunctionCall, Script

SITE = "https://docs.example.org/"
SEARCHES = "chatkit_gateway_knowledge_searches_total"
PAGES = [
    Page(
        url=SITE + "install",
        title="Installing Widgetry",
        text_hash="h1",
        passages=(
            Passage(
                "Installing > From source",
                SITE + "install#from-source",
                "Build Widgetry from source with make and a C compiler, then run make install.",
            ),
            Passage(
                "Installing > Packages",
                SITE + "install#packages",
                "Debian packages of Widgetry are built every night from the main branch.",
            ),
        ),
    ),
    Page(
        url=SITE + "config",
        title="Configuring Widgetry",
        text_hash="h2",
        passages=(
            Passage(
                "Configuration file",
                SITE + "config#file",
                "The file widgetry.toml sets the port, the log level and the nightly packages.",
            ),
        ),
    ),
]


async def fill(tmp_path: Path, pages: list[Page] = PAGES) -> None:
    """The route's store (the agent fixture's) with an ingested index of `pages`."""
    engine = open_engine(sqlite_url(tmp_path), timeout=5.0, pool_size=1)
    try:
        index = await open_index(engine)
        build = await index.begin("assistant")
        for page in pages:
            await build.put(page)
        await build.commit()
    finally:
        await engine.dispose()


def knowledge(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    folder = tmp_path / "site"
    folder.mkdir(exist_ok=True)
    return {"sources": [{"path": str(folder), "base_url": SITE}], **extra}


def search(query: str) -> Script:
    return Script(function_calls=[FunctionCall(TOOL_NAME, {"query": query})])


def tool_outputs(model: FakeResponses) -> list[str]:
    """What the search returned to the model, each search in order."""
    return [str(o["output"]) for o in model.requests[-1].function_outputs]


def answer_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    done = [
        e["item"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    return dict(done[-1]["content"][0])


def url_sources(content: dict[str, Any]) -> list[tuple[int, str, str]]:
    return [
        (a["index"], a["source"]["url"], a["source"]["title"])
        for a in content["annotations"]
        if a["source"]["type"] == "url"
    ]


async def test_search_gives_numbered_passages_and_citations_link_to_the_pages(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    await fill(tmp_path)
    client, metrics = await agent(knowledge=knowledge(tmp_path, max_results=2))
    answer = "Run make install [1]. Nightly packages exist too [2]; see also [7] and [x]."
    model.script(search("widgetry build from source with make"), Script(text=answer))
    resp = await chat(client, create("How do I build Widgetry from source?"))
    assert resp.status == 200
    events = await events_of(resp)

    assert {"type": "progress_update", "icon": "search", "text": "Searching the site…"} in events
    first = model.requests[0]
    assert {t["type"] for t in first.tools} == {"file_search", "function"}  # beside it
    (tool,) = [t for t in first.tools if t["type"] == "function"]
    assert tool["name"] == TOOL_NAME and tool["parameters"]["required"] == ["query"]
    assert first.instructions.startswith("You answer questions about example.org.")
    assert "[1]" in first.instructions and TOOL_NAME in first.instructions
    assert len(model.requests) == 2  # the tool's output went back in a second call

    (output,) = tool_outputs(model)
    blocks = output.split("\n\n")
    assert len(blocks) == 2  # max_results
    assert blocks[0].startswith(
        "[1] Installing Widgetry\nURL: https://docs.example.org/install#from-source\n"
        "Section: Installing > From source\nBuild Widgetry from source with make"
    )
    assert blocks[1].startswith("[2] ")
    second_url = blocks[1].split("\n")[1].removeprefix("URL: ")
    second_title = blocks[1].split("\n")[0][4:]

    assert text_of(events) == answer
    content = answer_of(events)
    assert content["text"] == answer
    assert url_sources(content) == [
        (answer.index("[1]"), SITE + "install#from-source", "Installing Widgetry"),
        (answer.index("[2]"), second_url, second_title),
    ]  # [7] names no passage: left alone
    # The hosted file search's own citation is kept beside them.
    assert [a["source"]["type"] for a in content["annotations"]].count("file") == 1

    # Saved so: the thread shows the links after a reload.
    thread_id = thread_id_of(events)
    listed = await chat(client, {"type": "items.list", "params": {"thread_id": thread_id}})
    items = (await listed.json())["data"]
    (saved,) = [i for i in items if i["type"] == "assistant_message"]
    assert saved["content"][0]["annotations"] == content["annotations"]
    assert sample(metrics, SEARCHES, route="assistant") == 1


async def test_a_second_search_goes_on_numbering(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    await fill(tmp_path)
    client, metrics = await agent(knowledge=knowledge(tmp_path, max_results=1))
    model.script(
        search("build from source"),
        search("configuration file port"),
        Script(text="Build it [1] and set the port [2]."),
    )
    resp = await chat(client, create("How do I build and configure it?"))
    events = await events_of(resp)
    first, second = tool_outputs(model)
    assert first.startswith("[1] Installing Widgetry\n")
    assert second.startswith("[2] Configuring Widgetry\nURL: https://docs.example.org/config#file")
    progress = [e for e in events if e.get("text") == "Searching the site…"]
    assert len(progress) == 2
    text = "Build it [1] and set the port [2]."
    assert url_sources(answer_of(events)) == [
        (text.index("[1]"), SITE + "install#from-source", "Installing Widgetry"),
        (text.index("[2]"), SITE + "config#file", "Configuring Widgetry"),
    ]
    assert sample(metrics, SEARCHES, route="assistant") == 2

    # The next turn numbers from [1] again.
    model.script(search("nightly packages"), Script(text="Nightly [1]."))
    resp = await chat(client, create("Are there packages?"))
    events = await events_of(resp)
    (output,) = tool_outputs(model)
    assert output.startswith("[1] ")
    assert len(url_sources(answer_of(events))) == 1


async def test_hostile_queries_are_safe(agent: Any, model: FakeResponses, tmp_path: Path) -> None:
    await fill(tmp_path)
    client, _ = await agent(knowledge=knowledge(tmp_path))
    hostile = [
        "make " * 40_000,  # 200 kB
        'NEAR(make "source") OR title:* AND -- ^"',
        "'; DROP TABLE ckgw_knowledge_pages; -- make",
        "\x00 make \u202e (((",
        "{}[]*:^\"'",
    ]
    model.script(*[search(q) for q in hostile], Script(text="Done [1]."))
    resp = await chat(client, create("make"))
    assert resp.status == 200
    events = await events_of(resp)
    assert not [e for e in events if e["type"] == "error"]
    outputs = tool_outputs(model)
    assert len(outputs) == len(hostile)
    for output in outputs:
        assert output != UNAVAILABLE and len(output) <= MAX_OUTPUT
    assert outputs[0].startswith("[1] Installing Widgetry")  # the huge one still searched
    # The tables are intact: a plain search still finds the page.
    model.script(search("widgetry.toml"), Script(text="There [1]."))
    events = await events_of(await chat(client, create("config?")))
    (output,) = tool_outputs(model)
    assert output.startswith("[1] Configuring Widgetry")


async def test_a_failed_search_is_a_line_to_the_model_not_a_failed_turn(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    await fill(tmp_path)
    client, metrics = await agent(knowledge=knowledge(tmp_path))
    model.script(search("make"), Script(text="Make [1]."))
    await events_of(await chat(client, create("How do I build it?")))  # the index opened
    with sqlite3.connect(tmp_path / "threads.db") as db:  # and broken under it
        db.execute("DROP TABLE ckgw_knowledge_fts")
    model.script(search("make"), Script(text="I could not search the site just now."))
    resp = await chat(client, create("How do I build it?"))
    assert resp.status == 200
    events = await events_of(resp)
    assert tool_outputs(model) == [UNAVAILABLE]
    assert not [e for e in events if e["type"] == "error"]
    assert text_of(events) == "I could not search the site just now."
    assert not url_sources(answer_of(events))
    assert sample(metrics, SEARCHES, route="assistant") == 2


async def test_a_bad_tool_call_gets_a_hint(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    await fill(tmp_path)
    client, metrics = await agent(knowledge=knowledge(tmp_path))
    model.script(
        Script(function_calls=[FunctionCall(TOOL_NAME, "not json")]),
        Script(text="Sorry."),
    )
    events = await events_of(await chat(client, create("hi")))
    (output,) = tool_outputs(model)
    assert '{"query":' in output
    assert text_of(events) == "Sorry."
    assert sample(metrics, SEARCHES, route="assistant") == 0


async def test_no_knowledge_no_tool(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    await events_of(await chat(client, create("hi")))
    assert [t["type"] for t in model.requests[0].tools] == ["file_search"]
    assert TOOL_NAME not in model.requests[0].instructions


async def test_stub_model_searches_and_cites_the_best_passage(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    await fill(tmp_path)
    client, metrics = await agent(stub=True, knowledge=knowledge(tmp_path))
    resp = await chat(client, create("How do I build Widgetry from source with make?"))
    assert resp.status == 200
    events = await events_of(resp)
    assert {"type": "progress_update", "icon": "search", "text": "Searching the site…"} in events
    text = text_of(events)
    assert text.startswith("From the site's page “Installing Widgetry”: Build Widgetry")
    assert text.endswith("[1].")  # a full stop after the citation
    assert url_sources(answer_of(events)) == [
        (text.index("[1]"), SITE + "install#from-source", "Installing Widgetry")
    ]
    assert model.requests == []  # offline
    assert sample(metrics, SEARCHES, route="assistant") == 1


def test_instructions_and_output_are_bounded() -> None:
    from gateway.knowledge.model import Hit
    from gateway.knowledge.tool import MAX_PASSAGE, render

    hits = [Hit("T" * 1000, f"{SITE}{n}", "H" * 1000, "word " * 10_000, 1.0) for n in range(50)]
    output, shown = render(hits, 3)
    assert len(output) <= MAX_OUTPUT and output.startswith("[3] ")
    assert 1 <= len(shown) < 50
    assert all(len(block) < MAX_PASSAGE + 1000 for block in output.split("\n\n"))
    assert json.dumps(output)  # plain text
