"""A route's agent settings turned into the Agents SDK's objects, once per policy."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from agents import FileSearchTool, Tool, WebSearchTool
from agents.model_settings import ModelSettings
from openai.types.shared import Reasoning

from .config import AgentConfig, AttachmentsConfig
from .config import FileSearchTool as FileSearchConfig

if TYPE_CHECKING:
    from ..knowledge.config import KnowledgeConfig


@dataclasses.dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    model: str
    instructions: str | None
    tools: tuple[Tool, ...]
    model_settings: ModelSettings
    history_items: int
    attachments: AttachmentsConfig | None
    # The site search (SPEC §9): the runtime adds its tool, bound to the store's index.
    knowledge: KnowledgeConfig | None = None


def agent_spec(
    config: AgentConfig,
    attachments: AttachmentsConfig | None,
    knowledge: KnowledgeConfig | None = None,
) -> AgentSpec:
    tools: list[Tool] = []
    for tool in config.tools:
        if isinstance(tool, FileSearchConfig):
            tools.append(
                FileSearchTool(
                    vector_store_ids=list(tool.vector_store_ids),
                    max_num_results=tool.max_num_results,
                )
            )
        else:
            domains = list(tool.allowed_domains)
            tools.append(WebSearchTool(filters={"allowed_domains": domains} if domains else None))
    s = config.model_settings
    effort = s.reasoning_effort
    settings = ModelSettings(
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_output_tokens,
        reasoning=Reasoning(effort=effort.value) if effort is not None else None,
        store=False,  # the gateway keeps the thread; nothing to keep at OpenAI
    )
    instructions = config.prompt
    if knowledge is not None:  # how to search the site and cite its pages
        from ..knowledge.tool import INSTRUCTIONS

        instructions = f"{instructions}\n\n{INSTRUCTIONS}" if instructions else INSTRUCTIONS
    return AgentSpec(
        name=config.name,
        model=config.model,
        instructions=instructions,
        tools=tuple(tools),
        model_settings=settings,
        history_items=config.history_items,
        attachments=attachments,
        knowledge=knowledge,
    )
