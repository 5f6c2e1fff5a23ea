"""Memory tools: model output parsing, the typed tool registry, AgeMem's and AtomMem's tool sets."""

from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState, agemem_system_prompt
from agemem.tools.atommem import (
    ATOMMEM_SYSTEM_PROMPT,
    ATOMMEM_TOOLS,
    AtomMemState,
    StepView,
    begin_step,
    render_memories,
)
from agemem.tools.parse import (
    FormatIssue,
    ParsedTurn,
    ToolCall,
    extract_boxed,
    parse_agemem,
    parse_atommem,
    parse_hermes,
    parse_openai,
    parse_turn,
)
from agemem.tools.registry import Tool, ToolArgs, ToolError, ToolResult, ToolSet, ToolStats

__all__ = [
    "AGEMEM_TOOLS",
    "ATOMMEM_SYSTEM_PROMPT",
    "ATOMMEM_TOOLS",
    "AgentMemoryState",
    "AtomMemState",
    "FormatIssue",
    "ParsedTurn",
    "StepView",
    "Tool",
    "ToolArgs",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolSet",
    "ToolStats",
    "agemem_system_prompt",
    "begin_step",
    "extract_boxed",
    "parse_agemem",
    "parse_atommem",
    "parse_hermes",
    "parse_openai",
    "parse_turn",
    "render_memories",
]
