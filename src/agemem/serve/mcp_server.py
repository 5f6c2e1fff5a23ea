"""The MCP server: tools to add, search, list, update and delete memories, and read an entry's
history, over stdio (`agemem mcp`) or streamable HTTP (`/mcp` on `agemem serve`).

Each tool acts in one tenant's store, the one `memory_for(ctx)` hands back: over stdio the
tenant `agemem mcp` was started for, over HTTP the tenant of the request's bearer key (set by
the server's auth layer; a request without one never reaches a tool). Inside the tenant, tools
take `user_id` / `agent_id` / `run_id`; a server started with a default scope
(`agemem mcp --user-id NAME`) uses it for calls that name none. AgeMem's context tools
(Summary_context, Filter_context) edit a conversation the caller holds, which an MCP client does
not hand over, so they are not offered here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, StringConstraints

from agemem.api import Memory
from agemem.serve import MAX_ID_CHARS, MAX_LIMIT, ops

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
ScopeId = Annotated[Id | None, Field(description="Scope: whose memory (optional with a default)")]
INSTRUCTIONS = (
    "Long-term memory. search_memories before answering from memory; add_memory for a fact worth "
    "keeping, as one short statement; update_memory or delete_memory by the id a search shows."
)


def build_mcp(
    memory_for: Callable[[Context], Memory], *, default_scope: dict[str, str] | None = None
) -> MCPServer:
    """The MCP server over the memories `memory_for(ctx)` hands back for each tool call."""
    server = MCPServer("agemem", instructions=INSTRUCTIONS)

    def scope(user_id: str | None, agent_id: str | None, run_id: str | None) -> dict[str, str]:
        return ops.scope_args(user_id, agent_id, run_id, default_scope)

    @server.tool()
    def add_memory(
        text: Annotated[str, StringConstraints(min_length=1)],
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store one fact in long-term memory. The same text is not stored twice in a scope."""
        with answers():
            return memory_for(ctx).add(text, metadata=metadata, **scope(user_id, agent_id, run_id))

    @server.tool()
    def search_memories(
        query: Annotated[str, StringConstraints(min_length=1)],
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        filters: dict[str, Any] | None = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 5,
        threshold: Annotated[float | None, Field(ge=0, le=1)] = None,
    ) -> dict[str, Any]:
        """The memories most relevant to a query, best first (hybrid BM25 + vector search).
        `filters` uses Mem0's grammar over metadata keys (eq, ne, in, gt, contains, AND/OR);
        `threshold` keeps only results at least that similar (cosine, 0-1)."""
        with answers():
            return memory_for(ctx).search(
                query,
                filters=filters,
                limit=limit,
                threshold=threshold,
                **scope(user_id, agent_id, run_id),
            )

    @server.tool()
    def list_memories(
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 100,
    ) -> dict[str, Any]:
        """A scope's memories, oldest first."""
        with answers():
            return memory_for(ctx).get_all(limit=limit, **scope(user_id, agent_id, run_id))

    @server.tool()
    def update_memory(
        memory_id: Id,
        text: Annotated[str, StringConstraints(min_length=1)],
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Replace a memory's text (and metadata, when given), by the id a search showed."""
        args = ops.by_id_args(scope(user_id, agent_id, run_id))
        with answers(memory_id):
            return memory_for(ctx).update(memory_id, text, metadata=metadata, **args)

    @server.tool()
    def delete_memory(
        memory_id: Id,
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
    ) -> dict[str, Any]:
        """Delete a memory by the id a search showed."""
        args = ops.by_id_args(scope(user_id, agent_id, run_id))
        with answers(memory_id):
            return memory_for(ctx).delete(memory_id, **args)

    @server.tool()
    def memory_history(
        memory_id: Id,
        ctx: Context,
        user_id: ScopeId = None,
        agent_id: ScopeId = None,
        run_id: ScopeId = None,
    ) -> dict[str, Any]:
        """ADD / UPDATE / DELETE events of a memory, oldest first."""
        args = ops.by_id_args(scope(user_id, agent_id, run_id))
        with answers(memory_id):
            return {"results": memory_for(ctx).history(memory_id, **args)}

    return server


@contextmanager
def answers(memory_id: str | None = None) -> Iterator[None]:
    """A caller's mistake (an unknown id, no scope, a bad filter, a revoked key) as a tool error
    whose message the model reads; anything else stays a server fault."""
    try:
        if memory_id is None:
            yield
        else:
            with ops.lookup(memory_id):
                yield
    except (ops.NotFound, ValueError, PermissionError) as exc:
        raise ToolError(str(exc)) from None
