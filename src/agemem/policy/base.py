"""The policy interface: a batch of contexts in, a batch of turns out.

Every model backend (Hugging Face, OpenAI-compatible server, scripted) implements `Policy`, so the
episode driver, the trainer and helpers such as `LLMSummarizer` never care which one they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]  # OpenAI chat format: {"role": ..., "content": ..., ...}
ToolSpec = dict[str, Any]  # OpenAI function-tool schema: {"type": "function", "function": {...}}


@dataclass
class Turn:
    """One model output. Token ids and logprobs are filled by backends that can provide them."""

    text: str
    prompt_ids: list[int] = field(default_factory=list)
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # one per completion token
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI `tool_calls` a server parsed
    finish_reason: str | None = None


@runtime_checkable
class Policy(Protocol):
    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        """Generate one turn for each context (same order)."""
        ...
