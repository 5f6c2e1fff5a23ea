"""Scripted policies: the heuristics baselines compare against, and the helpers that write turns
in AgeMem's tag protocol (`call`, `emit`). Both policies implement `Policy` and read only the
contexts they are given, as a model would. (The gold-informed oracle that writes SFT data reads
the environment's records instead: `agemem.env.oracle`.)

- `StoreEverythingPolicy`: adds every stage-1 message (and every chat message), never manages the
  context, retrieves the question and answers with the best entry, or lets a `reader` model
  answer from the retrieved entries (RAG with that model).
- `NoMemoryPolicy`: lets everything pass and answers from the context alone: the message sharing
  the most words with the question, or a `reader` model's answer (a chat model's no-memory
  baseline, under an env that keeps the conversation in a window).

Scripted turns carry no token ids or logprobs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agemem.env.render import read_context
from agemem.policy.base import Message, Policy, ToolSpec, Turn
from agemem.tools.parse import parse_turn

_RETRIEVED = re.compile(r"^\[(\S+)\] (.*?)(?: \(score [^)]*\))?$", re.MULTILINE)
_WORD = re.compile(r"\w+")


# ---- turn rendering --------------------------------------------------------------------------


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def emit(
    think: str,
    calls: list[dict[str, Any]] | None = None,
    answer: str | None = None,
    native: bool = False,
) -> Turn:
    """A turn in AgeMem's tag protocol (or as OpenAI tool calls when `native`).

    The answer follows a space (answers are stripped when read): with a word-level tokenizer
    (the tiny model's) a word then has the same token as in the retrieved entries and the think
    text, so answering is copying. Measured: without the space, an SFT tiny model wrote
    "<think>memory says orange</think><answer>white</answer>" (held-out EM 0.135, greedy)."""
    if answer is not None:
        return Turn(text=f"<think>{think}</think><answer> {answer}</answer>")
    calls = calls or []
    if native and not calls:
        return Turn(text=f"<think>{think}</think>ok")  # a reply without calls lets a message pass
    if native:
        tool_calls = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
            }
            for i, c in enumerate(calls)
        ]
        return Turn(text=f"<think>{think}</think>", tool_calls=tool_calls)
    payload = json.dumps(calls, ensure_ascii=False)
    return Turn(text=f"<think>{think}</think><tool_call>{payload}</tool_call>")


def retrieved(after: list[Message]) -> list[tuple[str, str]] | None:
    """The (id, content) entries of the last Retrieve_memory observation in `after`, or None."""
    for message in reversed(after):
        if message["role"] == "tool" and message.get("name") == "Retrieve_memory":
            return _RETRIEVED.findall(message.get("content") or "")
    return None


def _overlap(a: str, b: str) -> int:
    return len(set(_WORD.findall(a.lower())) & set(_WORD.findall(b.lower())))


# ---- heuristics ------------------------------------------------------------------------------


class StoreEverythingPolicy:
    """Add every message, never manage the context, retrieve the question, answer with the best
    retrieved entry (in a chat: the best entry other than the message itself).

    With a `reader` (any `Policy`, e.g. the trained model) this is RAG with that model: the
    memory work stays scripted, and the answer turn, whose context ends with the retrieved
    entries, is the reader's. A reader turn that is not an answer counts as "I don't know."
    (static RAG: the reader gets no tools)."""

    def __init__(self, reader: Policy | None = None) -> None:
        self.reader = reader

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        turns = [self._turn(messages, tools is not None) for messages in contexts]
        reading = [i for i, turn in enumerate(turns) if turn is None]
        if self.reader is not None and reading:
            read = self.reader.act([contexts[i] for i in reading])
            for i, turn in zip(reading, read, strict=True):
                answered = parse_turn(turn).answer is not None
                turns[i] = turn if answered else emit("no answer", answer="I don't know.")
        return [turn for turn in turns if turn is not None]  # every slot is filled by now

    def _turn(self, messages: list[Message], native: bool) -> Turn | None:
        view = read_context(messages)
        if view.stage == 1:
            return emit("store it", [call("Add_memory", content=view.incoming)], native=native)
        if view.stage == 2:
            return emit("keep going", native=native)
        found = retrieved(view.after)
        if found is None:
            query = view.question or ""
            calls = [call("Retrieve_memory", query=query)]
            if view.chat:
                calls.insert(0, call("Add_memory", content=query))
            return emit("look it up", calls, native=native)
        if self.reader is not None:
            return None  # the reader answers
        best = [content for _, content in found if content != view.question]
        return emit("best match", answer=best[0] if best else "I don't know.", native=native)


class NoMemoryPolicy:
    """Never touch memory; answer with the context message sharing most words with the
    question ("I don't know." when none shares any).

    With a `reader` (any `Policy`, e.g. the trained model) the stage-3 turns are the reader's:
    it answers from whatever the context still holds, its own memory tools finding an empty
    store. Under an env that keeps the conversation in a window of the latest messages
    (`EnvConfig(stage1_window=None, stage2_reset=False, over_budget="drop_oldest")`) this is
    the no-memory baseline of a chat model: the window is all it remembers."""

    def __init__(self, reader: Policy | None = None) -> None:
        self.reader = reader

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        if self.reader is None:
            return [self._turn(messages, tools is not None) for messages in contexts]
        turns: list[Turn | None] = [
            None if read_context(m).stage == 3 else emit("nothing to do", native=tools is not None)
            for m in contexts
        ]
        reading = [i for i, turn in enumerate(turns) if turn is None]
        if reading:
            read = self.reader.act([contexts[i] for i in reading], tools)
            for i, turn in zip(reading, read, strict=True):
                turns[i] = turn
        return [turn for turn in turns if turn is not None]

    def _turn(self, messages: list[Message], native: bool) -> Turn:
        view = read_context(messages)
        if view.stage != 3:
            return emit("nothing to do", native=native)
        question = view.question or ""
        candidates = [
            m.get("content") or ""
            for m in messages
            if m["role"] == "user" and read_context([m]).stage != 3
        ]
        best = max(candidates, key=lambda text: _overlap(text, question), default="")
        answer = best if best and _overlap(best, question) else "I don't know."
        return emit("answer from the context", answer=answer, native=native)
