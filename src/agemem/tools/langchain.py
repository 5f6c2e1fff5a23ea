"""AgeMem's tools as LangChain tools, for LangChain agents and LangGraph (`agemem[langchain]`).

Each tool is a `StructuredTool` whose argument schema is the registry's JSON schema (the one the
OpenAI schemas use), so LangChain passes the model's arguments through unchanged and the registry
validates them: a bad call comes back as a `ToolMessage` with ``status="error"`` and the same text
`MemoryTools.execute` gives (it names the problem and the correct signature), and changes nothing.

    from langgraph.prebuilt import create_react_agent
    agent = create_react_agent(model, memory.tools(user_id="alice").langchain())

langchain-core is imported when the tools are built, so agemem itself does not need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agemem.tools.parse import ToolCall

if TYPE_CHECKING:
    from langchain_core.tools import BaseTool

    from agemem.api import MemoryTools


def langchain_tools(tools: MemoryTools) -> list[BaseTool]:
    """One `StructuredTool` per tool of `tools`, acting on its store, scope and context."""
    try:
        from langchain_core.tools import StructuredTool, ToolException
    except ImportError:
        raise ImportError(
            "MemoryTools.langchain() needs langchain-core: pip install 'agemem[langchain]'"
        ) from None

    def run(name: str, arguments: dict[str, Any]) -> str:
        (result,) = tools.toolset.dispatch([ToolCall(name, arguments)], tools.state)
        if not result.ok:
            raise ToolException(result.content)  # a ToolMessage with status="error"
        return result.content

    return [
        StructuredTool(
            name=tool.name,
            description=tool.description,
            args_schema=tool.parameters(),
            func=lambda _name=tool.name, **arguments: run(_name, arguments),
            handle_tool_error=True,
        )
        for tool in tools.toolset
    ]
