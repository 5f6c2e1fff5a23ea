"""How AgeMem episodes look to the agent, and how to read a context back.

Stage-1 messages carry the memories the system retrieved for them (`stage1_message`); stage-3
questions start with `QUESTION_PREFIX`, chat messages with `CHAT_PREFIX`; `read_context` recovers
the stage and the current message from any context these produced (scripted policies use it).
The system prompt is AgeMem's protocol and tool documentation plus a guide to the stages, or a
compact form for small models trained from scratch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agemem.policy.base import Message, Turn
from agemem.tools.agemem import AGEMEM_TOOLS, agemem_system_prompt
from agemem.tools.registry import ToolResult

RELATED_HEADER = "Related memories:"
NO_RELATED = f"{RELATED_HEADER} none"
QUESTION_PREFIX = "Question: "
CHAT_PREFIX = "User: "  # how `agemem chat` shows the user's messages; read like a question
PASS_TAGS = "<tool_call>[]</tool_call>"
_RELATED_LINE = re.compile(r"^\[(\S+)\] (.*)$")

_STAGE_GUIDE = """\
The task runs in three stages.
Stage 1: messages arrive one at a time, each followed by the memories related to it. Store what \
a later question may need with Add_memory, correct stored entries with Update_memory or \
Delete_memory, or let the message pass {pass_hint}.
Stage 2: the conversation restarts and notes arrive one at a time; many are irrelevant. Keep the \
context lean with Filter_context or Summary_context, or let a note pass {pass_hint}.
Stage 3: a message starting with "{question}" asks about what you stored. Use Retrieve_memory, \
manage the context if needed, then answer."""


_COMPACT_PROTOCOL = """\
Reply <think>...</think> then <tool_call>[{{"name": ..., "arguments": {{...}}}}]</tool_call> or \
<answer>...</answer>. Tools: {tools}."""
_COMPACT_STAGES = """\
 Stage 1: store facts; {pass_tags} lets a message pass. Stage 2: drop irrelevant notes. \
Stage 3: retrieve, then answer."""


def system_prompt(native_tools: bool = False, compact: bool = False) -> str:
    """AgeMem's protocol and tools, then how the three stages look.

    `compact` keeps only the protocol tags and the tool signatures (about a third of the full
    prompt's tokens), for small models trained from scratch, which learn the protocol from
    examples rather than from instructions.
    """
    if compact:
        return compact_protocol() + _COMPACT_STAGES.format(pass_tags=PASS_TAGS)
    pass_hint = "by replying without a tool call" if native_tools else f"with {PASS_TAGS}"
    guide = _STAGE_GUIDE.format(pass_hint=pass_hint, question=QUESTION_PREFIX.strip())
    return f"{agemem_system_prompt(AGEMEM_TOOLS, native_tools=native_tools)}\n\n{guide}"


def compact_protocol() -> str:
    """The reply tags and the six tools' signatures in one paragraph: the compact prompt's
    head, shared with the worlds' compact prompt (`agemem.agentic.loop`)."""
    return _COMPACT_PROTOCOL.format(tools="; ".join(t.signature() for t in AGEMEM_TOOLS))


def turn_messages(turn: Turn, results: list[ToolResult]) -> list[Message]:
    """The model's message (with its native `tool_calls`, if any) and one tool message per
    observation: what a turn adds to the context."""
    message: Message = {"role": "assistant", "content": turn.text}
    if turn.tool_calls:
        message["tool_calls"] = turn.tool_calls
    return [message, *(result.to_message() for result in results)]


def stage1_message(text: str, related: list[tuple[str, str]]) -> str:
    """An incoming message with the memories retrieved for it, as `(id, content)` pairs.

    >>> print(stage1_message("ana lives in rome .", [("mem_3", "ana lives in paris .")]))
    ana lives in rome .
    <BLANKLINE>
    Related memories:
    [mem_3] ana lives in paris .
    """
    if not related:
        return f"{text}\n\n{NO_RELATED}"
    lines = "\n".join(f"[{memory_id}] {content}" for memory_id, content in related)
    return f"{text}\n\n{RELATED_HEADER}\n{lines}"


@dataclass
class ContextView:
    """A context read back by stage: what scripted policies (and humans) need from it.

    `incoming` is the latest stage-1/2 message without its memory block; `related` the memories
    shown with it; `question` the current question (stage 3) and `after` the messages since it.
    """

    stage: int
    incoming: str = ""
    related: list[tuple[str, str]] = field(default_factory=list)
    question: str | None = None
    after: list[Message] = field(default_factory=list)
    chat: bool = False  # the "question" is a chat message (`CHAT_PREFIX`)


def read_context(messages: list[Message]) -> ContextView:
    """Which stage a context is in, and its current message (the inverse of the rendering)."""
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    for i in reversed(users):
        content = messages[i].get("content") or ""
        for prefix in (QUESTION_PREFIX, CHAT_PREFIX):
            if content.startswith(prefix):
                return ContextView(
                    3,
                    question=content[len(prefix) :],
                    after=messages[i + 1 :],
                    chat=prefix == CHAT_PREFIX,
                )
    if not users:
        return ContextView(1)
    content = messages[users[-1]].get("content") or ""
    text, sep, block = content.rpartition(f"\n\n{RELATED_HEADER}")
    if not sep:
        return ContextView(2, incoming=content)
    related = [m.groups() for line in block.splitlines() if (m := _RELATED_LINE.match(line))]
    return ContextView(1, incoming=text, related=[(a, b) for a, b in related])
