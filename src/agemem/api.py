"""`Memory`: the library API for people who just want memory, in the shape Mem0 users know.

Results are plain dicts (`{"results": [...]}` with a `memory` field holding the text), so code
written against Mem0's `Memory` needs few changes. `Memory.tools()` hands the AgeMem tool set,
bound to one scope, to any OpenAI-compatible chat call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agemem.context import Context
from agemem.memory.embed import Embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import (
    DEFAULT_MEMORY_TYPE,
    AddResult,
    MemoryItem,
    MemoryNotFound,
    NewMemory,
    Scope,
    SearchMode,
)
from agemem.policy.base import Message, ToolSpec
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState
from agemem.tools.parse import parse_openai
from agemem.tools.registry import ToolSet

LTM_TOOLS = ("Add_memory", "Update_memory", "Delete_memory", "Retrieve_memory")
STORED_ROLES = ("user", "assistant")  # what `add(messages)` keeps: the conversation, not prompts


def _record(item: MemoryItem) -> dict[str, Any]:
    """An entry as Mem0 shapes it: the text under `memory`."""
    record = item.to_dict()
    record["memory"] = record.pop("content")
    return record


def _added(result: AddResult) -> dict[str, Any]:
    record = _record(result.item)
    if result.added:
        record["event"] = "ADD"
    else:  # a near-duplicate: nothing stored; say what it matched
        record["event"] = "NONE"
        record["similarity"] = result.similarity
    return record


@dataclass
class MemoryTools:
    """AgeMem's tools bound to a store, a scope and a context, for OpenAI-style tool calling."""

    state: AgentMemoryState
    toolset: ToolSet[AgentMemoryState]

    @property
    def schemas(self) -> list[ToolSpec]:
        """Pass as `tools=` to `chat.completions.create`."""
        return self.toolset.openai_tools()

    @property
    def context(self) -> Context:
        """The messages Summary_context / Filter_context act on (when those tools are enabled)."""
        return self.state.context

    def execute(self, message: Any) -> list[Message]:
        """Run the tool calls of an assistant message; one `tool` message answers each call.

        `message` is a dict or an OpenAI SDK message object. Invalid calls are answered with an
        error text the model can act on; they change nothing.
        """
        if hasattr(message, "model_dump"):
            message = message.model_dump(exclude_none=True)
        turn = parse_openai(message)
        return [result.to_message() for result in self.toolset.run(turn, self.state)]


class Memory:
    """Long-term memory in one SQLite file, scoped by user / agent / session.

    >>> import tempfile, os
    >>> memory = Memory(path=os.path.join(tempfile.mkdtemp(), "memory.db"))
    >>> memory.add("Maya lives in Lisbon.", user_id="alice")["results"][0]["event"]
    'ADD'
    >>> memory.search("Where does Maya live?", user_id="alice")["results"][0]["memory"]
    'Maya lives in Lisbon.'
    >>> memory.search("Where does Maya live?", user_id="bob")["results"]
    []
    >>> memory.close()
    """

    def __init__(
        self,
        path: str | Path = "agemem.db",
        *,
        embedder: Embedder | None = None,
        search: str = "balanced",
        dedupe_threshold: float | None = None,
    ) -> None:
        options: dict[str, Any] = {"search": search}
        if dedupe_threshold is not None:
            options["dedupe_threshold"] = dedupe_threshold
        self.store = SQLiteStore(path, embedder, **options)

    def add(
        self,
        messages: str | Sequence[Message],
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        memory_type: str = DEFAULT_MEMORY_TYPE,
    ) -> dict[str, Any]:
        """Store a text, or each user/assistant message of a conversation, as it is said."""
        scope = Scope(user_id, agent_id, session_id)
        entries = [
            NewMemory(text, {**(metadata or {}), **extra}, memory_type, scope)
            for text, extra in self._texts(messages)
        ]
        return {"results": [_added(r) for r in self.store.add_many(entries)]}

    @staticmethod
    def _texts(messages: str | Sequence[Message]) -> list[tuple[str, dict[str, Any]]]:
        if isinstance(messages, str):
            return [(messages, {})]
        return [
            (m["content"], {"role": m["role"]})
            for m in messages
            if m.get("role") in STORED_ROLES and isinstance(m.get("content"), str) and m["content"]
        ]

    def search(
        self,
        query: str,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        limit: int = 5,
        filters: dict[str, Any] | None = None,
        mode: SearchMode = "hybrid",
    ) -> dict[str, Any]:
        """Best `limit` entries in the scope, by hybrid (BM25 + vector) rank unless `mode` says."""
        hits = self.store.search(
            query,
            top_k=limit,
            mode=mode,
            scope=Scope(user_id, agent_id, session_id),
            filters=filters,
        )
        return {"results": [_record(hit) for hit in hits]}

    def get(self, memory_id: str) -> dict[str, Any] | None:
        try:
            return _record(self.store.get(memory_id))
        except MemoryNotFound:
            return None

    def get_all(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        filters: dict[str, Any] | None = None,
        limit: int = 100,
    ) -> dict[str, Any]:
        items = self.store.get_all(
            scope=Scope(user_id, agent_id, session_id), filters=filters, limit=limit
        )
        return {"results": [_record(item) for item in items]}

    def update(
        self, memory_id: str, data: str, *, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Replace an entry's text (and metadata, when given); raises `MemoryNotFound`."""
        return _record(self.store.update(memory_id, data, metadata=metadata))

    def delete(self, memory_id: str) -> dict[str, Any]:
        """Remove an entry; raises `MemoryNotFound`. Its history stays readable."""
        return _record(self.store.delete(memory_id))

    def history(self, memory_id: str) -> list[dict[str, Any]]:
        return [vars(event).copy() for event in self.store.history(memory_id)]

    def reset(self) -> None:
        """Delete every entry of every scope."""
        self.store.reset()

    def tools(
        self,
        *,
        user_id: str | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        context: Context | None = None,
    ) -> MemoryTools:
        """The tool set for one scope.

        Without `context` the model gets the four store tools (Add / Update / Delete /
        Retrieve). With a `Context` it also gets Summary_context and Filter_context, which then
        edit that context: use `tools.context.messages` as the conversation you send.
        """
        toolset = AGEMEM_TOOLS if context is not None else AGEMEM_TOOLS.select(*LTM_TOOLS)
        state = AgentMemoryState(
            store=self.store,
            context=context if context is not None else Context(),
            scope=Scope(user_id, agent_id, session_id),
        )
        return MemoryTools(state, toolset)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
