"""The one answer prompt and answer reader of every baseline that answers from text it was shown
(no-memory, full-context, rag, mem0-style, a-mem-style).

The methods differ in what they show (a transcript, retrieved messages, extracted memories), never
in how they ask or how the reply is read, so a difference in score is a difference in memory, not
in prompting. The wording is ours: the papers' answer prompts are written for LoCoMo with
GPT-4o-mini; this one asks for the short answers that exact match and token F1 score.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from agemem.memory.facts import chat
from agemem.policy.base import Message
from agemem.summarize import strip_think

ANSWER_INSTRUCTION = (
    "Answer the question using the information below. Reply with the answer only, in as few "
    "words as possible."
)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.DOTALL)
_LEAD_IN = re.compile(r"^(?:the )?answer\b[^:]{0,60}:\s*", re.IGNORECASE)  # "The answer ... is:"


def answer_messages(question: str, items: Sequence[str], header: str) -> list[Message]:
    """The answer chat: the instruction, then `items` (one per line, under `header`) and the
    question.

    >>> answer_messages("Who?", ["Ann met Bo."], "Memories")[1]["content"]
    'Memories:\\n- Ann met Bo.\\n\\nQuestion: Who?'
    """
    shown = "\n".join(f"- {item}" for item in items) or "(nothing)"
    return chat(ANSWER_INSTRUCTION, f"{header}:\n{shown}\n\nQuestion: {question}")


def read_answer(text: str) -> str | None:
    """The answer in a reply: inside `<answer>` if the model used it, else the first non-empty
    line, without `<think>`, an "Answer:" lead-in or quotes; None when nothing is left (the
    question counts as unanswered).

    >>> read_answer("<think>rome, I think</think>\\nAnswer: Rome\\nBecause...")
    'Rome'
    >>> read_answer('The answer to the question is: "Gus likes red."')
    'Gus likes red.'
    >>> read_answer("<answer> tea</answer>"), read_answer("  \\n")
    ('tea', None)
    """
    text = strip_think(text)
    tagged = _ANSWER_TAG.search(text)
    if tagged:
        text = tagged.group(1)
    for line in text.splitlines():
        line = _LEAD_IN.sub("", line.strip()).strip().strip('"').strip()
        if line:
            return line
    return None
