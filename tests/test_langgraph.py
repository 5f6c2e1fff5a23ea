"""`MemoryTools.langchain()` run by LangGraph's prebuilt agent (`create_react_agent`) on a scripted
chat model (the model is a fixture outside the code under test; the store, the embedder and the
tools are real). Skipped when langgraph is not installed (`pip install 'agemem[langchain]'
langgraph`)."""

from __future__ import annotations

from typing import Any

import pytest

from agemem import Memory

pytest.importorskip("langgraph.prebuilt")
from langchain_core.language_models.chat_models import BaseChatModel  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage  # noqa: E402
from langchain_core.outputs import ChatGeneration, ChatResult  # noqa: E402
from langgraph.prebuilt import create_react_agent  # noqa: E402


class ScriptedChatModel(BaseChatModel):
    """Replies with the next scripted message; records what it was sent and the tools bound."""

    script: list[AIMessage]
    seen: list[list[BaseMessage]] = []
    bound: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **_: Any) -> ScriptedChatModel:
        self.bound.extend(tool.name for tool in tools)
        return self

    def _generate(self, messages: list[BaseMessage], *_: Any, **__: Any) -> ChatResult:
        self.seen.append(list(messages))
        reply = self.script[len(self.seen) - 1]
        return ChatResult(generations=[ChatGeneration(message=reply)])


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
def test_langgraph_react_agent_runs_the_memory_tools(tmp_path, embedder):
    with Memory(tmp_path / "memory.db", embedder=embedder) as memory:
        memory.add("Bob's locker code is 9981.", user_id="bob")
        model = ScriptedChatModel(
            script=[
                AIMessage(
                    content="",
                    tool_calls=[
                        _call("Add_memory", {"content": "Alice's locker code is 4412."}, "c1"),
                        _call("Delete_memory", {"memory_id": "mem_0"}, "c2"),  # no confirmation
                    ],
                ),
                AIMessage(
                    content="", tool_calls=[_call("Retrieve_memory", {"query": "locker"}, "c3")]
                ),
                AIMessage(content="Your locker code is 4412."),
            ],
            seen=[],
            bound=[],
        )
        agent = create_react_agent(model, memory.tools(user_id="alice").langchain())
        result = agent.invoke({"messages": [("user", "My locker code is 4412. What is it?")]})

        assert model.bound == ["Add_memory", "Update_memory", "Delete_memory", "Retrieve_memory"]
        assert result["messages"][-1].content == "Your locker code is 4412."
        replies = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        assert [(m.tool_call_id, m.status) for m in replies] == [
            ("c1", "success"),
            ("c2", "error"),
            ("c3", "success"),
        ]
        assert replies[0].content.startswith("Added mem_")
        assert "missing required argument 'confirmation'" in replies[1].content
        assert "Alice's locker code is 4412." in replies[2].content
        assert "9981" not in replies[2].content  # the tools see alice's scope only
        # the model's third turn was sent the retrieval result
        assert any("4412" in str(m.content) for m in model.seen[2] if isinstance(m, ToolMessage))
        stored = memory.get_all(user_id="alice")["results"]
        assert [r["memory"] for r in stored] == ["Alice's locker code is 4412."]
        assert memory.get_all(user_id="bob")["results"][0]["memory"] == "Bob's locker code is 9981."
