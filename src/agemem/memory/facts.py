"""Mem0's two model steps, shared by `Memory.add(infer=True)` (`agemem.memory.infer`) and the
`mem0-style` evaluation baseline (`agemem.eval.methods.mem0`): the prompts, the JSON schemas that
constrain a server's output, and the lenient readers of what the model wrote.

1. Extraction: the model lists the facts worth remembering in a new message (`{"facts": [...]}`),
   given a summary and recent messages for context (`extraction_messages`, `read_facts`).
2. Decision: for one fact, the most similar stored memories are shown numbered from 0 (small
   integers, not store ids: small models copy them reliably, and a model cannot name an entry it
   was not shown), and the model calls one operation, ADD, UPDATE, DELETE or NOOP, as
   `{"name": "UPDATE", "arguments": {"id": "0", "text": "..."}}` (`decision_messages`,
   `read_decision`). Mem0's implementation calls NOOP "NONE"; both are read.

The prompts are the baseline's (its published numbers were measured with them); they are shorter
than Mem0's few-shot ones, which would not fit a small model's context beside the memories.

>>> read_facts('Sure: {"facts": ["Ana lives in Rome", "Ana lives in Rome"]}')
['Ana lives in Rome']
>>> d = read_decision('{"name": "update", "arguments": {"id": "[1]", "text": "Ana lives in Oslo"}}')
>>> d.name, d.index(2), d.index(1), d.text("fallback")
('UPDATE', 1, None, 'Ana lives in Oslo')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agemem.memory.llm_json import index_field, read_object, string_list, text_field
from agemem.policy.base import Message

OPERATIONS = ("ADD", "UPDATE", "DELETE", "NOOP")
FACT_MAX_CHARS = 300  # longest fact a constrained server may write (a memory: twice that)

EXTRACT_INSTRUCTION = (
    "Extract the facts worth remembering from the new message: personal details, preferences, "
    "plans, events, names, places, dates and numbers. Use the summary and the recent messages "
    "only to understand the new message. Write each fact as one short sentence that stands on "
    'its own. Reply with JSON only: {"facts": ["...", "..."]}, or {"facts": []} when the new '
    "message holds no such fact."
)

DECIDE_INSTRUCTION = (
    "You keep a memory store up to date. Compare the new fact with the stored memories and call "
    "exactly one operation:\n"
    'ADD: the fact is new. Arguments: {"text": "<the fact>"}.\n'
    "UPDATE: the fact changes or adds to a stored memory. Arguments: "
    '{"id": "<its id>", "text": "<the memory rewritten with the fact>"}.\n'
    'DELETE: the fact contradicts a stored memory. Arguments: {"id": "<its id>"}.\n'
    "NOOP: the stored memories already hold the fact. Arguments: {}.\n"
    'Reply with JSON only, e.g. {"name": "ADD", "arguments": {"text": "..."}}.'
)


def chat(instruction: str, content: str) -> list[Message]:
    """A two-message chat: the instruction as system message, then the content."""
    return [{"role": "system", "content": instruction}, {"role": "user", "content": content}]


def numbered(texts: Sequence[str]) -> str:
    """Items as `[0] text` lines: small indices instead of store ids, which small models copy
    reliably (Mem0's implementation maps its UUIDs to integers for the same reason)."""
    return "\n".join(f"[{i}] {text}" for i, text in enumerate(texts))


# ---- 1. extraction --------------------------------------------------------------------------


def extraction_messages(new: str, recent: Sequence[str] = (), summary: str = "") -> list[Message]:
    """The extraction prompt for `new`, with the `recent` messages and the `summary` as context."""
    listed = "\n".join(f"- {text}" for text in recent) or "(none)"
    return chat(
        EXTRACT_INSTRUCTION,
        f"Summary: {summary or '(none yet)'}\n\nRecent messages:\n{listed}\n\nNew message: {new}",
    )


def facts_schema(max_facts: int) -> dict[str, Any]:
    """The JSON schema of an extraction answer (for servers that constrain their output)."""
    fact = {"type": "string", "minLength": 1, "maxLength": FACT_MAX_CHARS}
    facts = {"type": "array", "items": fact, "maxItems": max_facts}
    return _object({"facts": facts})


def read_facts(text: str) -> list[str]:
    """The facts of an extraction answer, each once, in order; raises `JsonReadError` when the
    output holds no `{"facts": ...}` object."""
    return list(dict.fromkeys(string_list(read_object(text, ["facts"]), "facts")))


# ---- 2. decision ----------------------------------------------------------------------------


def decision_messages(fact: str, stored: Sequence[str]) -> list[Message]:
    """The decision prompt: the `stored` memories numbered from 0, then the new fact."""
    return chat(
        DECIDE_INSTRUCTION, f"Stored memories:\n{numbered(stored) or 'none'}\n\nNew fact: {fact}"
    )


def decision_schema(shown: int) -> dict[str, Any]:
    """The JSON schema of a decision against `shown` memories: `id` is one of their numbers
    (without memories shown, UPDATE and DELETE are not offered)."""
    names = OPERATIONS if shown else ("ADD", "NOOP")
    text = {"type": "string", "minLength": 1, "maxLength": 2 * FACT_MAX_CHARS}
    arguments: dict[str, Any] = {"text": text}
    if shown:
        arguments["id"] = {"type": "string", "enum": [str(i) for i in range(shown)]}
    arguments_schema = {"type": "object", "properties": arguments, "additionalProperties": False}
    return _object({"name": {"type": "string", "enum": list(names)}, "arguments": arguments_schema})


@dataclass(frozen=True)
class Decision:
    """One decision as the model wrote it: `name` upper-cased ("NONE" read as "NOOP"; it may be
    none of `OPERATIONS`, which the caller refuses) and its `arguments`."""

    name: str
    arguments: dict[str, Any]

    def text(self, fact: str) -> str:
        """The text to store: the decision's, else the fact itself (the information the
        decision is about)."""
        return text_field(self.arguments, "text", "content", "memory") or fact

    def index(self, shown: int) -> int | None:
        """The shown memory the decision names (0 to `shown` - 1), or None when it names none
        of them: an id the model invented is no index."""
        return index_field(self.arguments.get("id", self.arguments.get("memory_id")), shown)


def read_decision(text: str) -> Decision:
    """The decision in a model's output; raises `JsonReadError` when it holds no JSON object."""
    obj = read_object(text)
    name = (text_field(obj, "name", "operation", "event") or "").upper()
    name = "NOOP" if name == "NONE" else name  # Mem0's implementation calls it NONE
    arguments = obj.get("arguments")
    return Decision(name, arguments if isinstance(arguments, dict) else obj)


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
