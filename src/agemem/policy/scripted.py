"""Scripted policies: an oracle that writes good trajectories (SFT data) and the heuristics
baselines compare against. All implement `Policy` and read only the contexts they are given.

- `OraclePolicy(tasks)`: knows the gold of the tasks it is given (or `bind`s later) and finds
  which task a context belongs to by its text (every stage shows some of the task's messages, the
  question or, for AtomMem, the question list). On synthetic tasks it is deliberately imperfect,
  with the probabilities of `OracleRates` (docs/LEARNABILITY.md's by default, `PERFECT` for
  none): SFT should teach every tool's mechanics while leaving strategy to RL. It answers
  synthetic questions from what its retrieval returned, so a stale duplicate it chose to keep can
  make it wrong. On other families it stores the gold evidence, filters every distractor,
  retrieves and answers the gold answer; under AtomMem it stores the supporting sentences found in
  each chunk and answers the gold answer, boxed.
- `StoreEverythingPolicy`: adds every stage-1 message (and every chat message), never manages the
  context, retrieves the question and answers with the best entry, or lets a `reader` model
  answer from the retrieved entries (RAG with that model).
- `NoMemoryPolicy`: lets everything pass and answers from the context alone: the message sharing
  the most words with the question.

Scripted turns carry no token ids or logprobs. Each call to `act` draws from the policy's own
seeded random stream, so a run is reproducible for the same calls in the same order.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from agemem.env.atommem import read_atommem_prompt
from agemem.env.render import ContextView, incoming_text, read_context
from agemem.policy.base import Message, Policy, ToolSpec, Turn
from agemem.summarize import split_sentences
from agemem.tasks.base import Task
from agemem.tasks.hotpotqa import display_title
from agemem.tasks.synthetic import ATTRIBUTES, CHIT_CHAT, Attribute
from agemem.tools.atommem import ATOMMEM_SYSTEM_PROMPT
from agemem.tools.parse import parse_turn

_RETRIEVED = re.compile(r"^\[(\S+)\] (.*?)(?: \(score [^)]*\))?$", re.MULTILINE)
_ADDED = re.compile(r"^Added (\S+): (.*)$", re.MULTILINE)
_WORD = re.compile(r"\w+")


class TaskNotBound(LookupError):
    """The oracle was given a context of a task it does not know; bind the task first."""


@dataclass(frozen=True)
class OracleRates:
    """How the synthetic oracle behaves (defaults: docs/LEARNABILITY.md, oracle success ~48%).

    On a correction: a duplicate Add, an Update of the old entry, or Delete + Add (the three
    shares sum to 1). Chit-chat is stored with `store_chitchat`. Each stage-2 note is filtered
    with `stage2_filter`, triggers Summary_context("all") with `stage2_summary`, else passes.
    """

    correction_duplicate: float = 0.55
    correction_update: float = 0.35
    correction_delete_add: float = 0.10
    store_chitchat: float = 0.80
    stage2_filter: float = 0.35
    stage2_summary: float = 0.10

    def __post_init__(self) -> None:
        shares = (self.correction_duplicate, self.correction_update, self.correction_delete_add)
        for name, p in vars(self).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"OracleRates.{name} must be a probability in [0, 1], got {p}")
        if abs(sum(shares) - 1.0) > 1e-9:
            raise ValueError(f"the three correction shares must sum to 1, got {sum(shares)}")
        if self.stage2_filter + self.stage2_summary > 1.0:
            raise ValueError("stage2_filter + stage2_summary must be <= 1")


PERFECT = OracleRates(
    correction_duplicate=0.0, correction_update=1.0, correction_delete_add=0.0,
    store_chitchat=0.0, stage2_filter=1.0, stage2_summary=0.0,
)  # fmt: skip


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
    question ("I don't know." when none shares any)."""

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        return [self._turn(messages, tools is not None) for messages in contexts]

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


# ---- the oracle ------------------------------------------------------------------------------


@dataclass
class _Bound:
    task: Task
    evidence: set[str] = field(default_factory=set)  # contextual ids some question needs
    by_text: dict[str, int] = field(default_factory=dict)  # incoming text -> contextual index


def _statement_pattern(attribute: Attribute, entity: str) -> re.Pattern[str]:
    template = re.escape(attribute.statement).replace(re.escape("{name}"), re.escape(entity))
    return re.compile(template.replace(re.escape("{value}"), r"(\w+)") + "$")


class OraclePolicy:
    """Gold-informed trajectories for the tasks it knows (see the module docstring).

    `decisions` logs each random choice as (task id, what, choice), e.g.
    ("synthetic-default-3", "correction ana/city", "update"), so rates can be checked.
    """

    def __init__(
        self, tasks: Iterable[Task] = (), rates: OracleRates = OracleRates(), seed: int = 0
    ) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self._tasks: list[_Bound] = []
        self._index: dict[str, set[int]] = {}
        self.decisions: list[tuple[str, str, str]] = []
        self.bind(tasks)

    def bind(self, tasks: Iterable[Task]) -> None:
        """Make these tasks' gold available (tasks already bound stay)."""
        for task in tasks:
            position = len(self._tasks)
            bound = _Bound(task, {e for q in task.questions for e in q.evidence})
            texts = [q.text for q in task.questions] + list(task.distractors)
            for i, message in enumerate(task.contextual):
                bound.by_text[incoming_text(message)] = i
                texts.append(incoming_text(message))
            for text in texts:
                self._index.setdefault(text, set()).add(position)
            self._tasks.append(bound)

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        return [self._turn(messages, tools is not None) for messages in contexts]

    # ---- dispatch by method and stage ------------------------------------------------------
    def _turn(self, messages: list[Message], native: bool) -> Turn:
        if messages and messages[0].get("content") == ATOMMEM_SYSTEM_PROMPT:
            return self._atommem(messages[-1].get("content") or "")
        view = read_context(messages)
        bound = self._match(_probes(messages))
        synthetic = bound.task.family == "synthetic"
        if view.stage == 1:
            stage1 = self._synthetic_stage1 if synthetic else self._evidence_stage1
            return stage1(bound, view, messages, native)
        if view.stage == 2:
            return (
                self._synthetic_stage2(bound, view, native)
                if synthetic
                else emit(
                    "an unrelated note: drop it",
                    [call("Filter_context", criteria=_criteria(view.incoming))],
                    native=native,
                )
            )
        return self._stage3(bound, view, synthetic, native)

    def _match(self, probes: list[str]) -> _Bound:
        candidates: set[int] | None = None
        for probe in probes:
            hits = self._index.get(probe)
            if hits:
                candidates = hits if candidates is None else candidates & hits
        if not candidates:
            raise TaskNotBound(
                "this context matches no task the oracle knows; pass the tasks "
                "to OraclePolicy(tasks) or call bind(tasks) before running them"
            )
        return self._tasks[min(candidates)]

    def _choose(
        self, task: Task, what: str, options: list[tuple[str, float]], feasible: bool = True
    ) -> str:
        """Draw one option; logged as "<option> (no id)" when it needs an id the oracle cannot
        see (`feasible` False): it then falls back to the first option."""
        r, total = self._rng.random(), 0.0
        choice = options[-1][0]
        for name, p in options:
            total += p
            if r < total:
                choice = name
                break
        if not feasible and choice != options[0][0]:
            self.decisions.append((task.id, what, f"{choice} (no id)"))
            return options[0][0]
        self.decisions.append((task.id, what, choice))
        return choice

    # ---- synthetic ---------------------------------------------------------------------------
    def _synthetic_stage1(
        self, bound: _Bound, view: ContextView, messages: list[Message], native: bool
    ) -> Turn:
        task, text, rates = bound.task, view.incoming, self.rates
        if text in CHIT_CHAT:
            choice = self._choose(
                task,
                "chit-chat",
                [("store", rates.store_chitchat), ("skip", 1 - rates.store_chitchat)],
            )
            if choice == "skip":
                return emit("small talk", native=native)
            return emit("small talk, keep it", [call("Add_memory", content=text)], native=native)
        attribute, entity, values, k = _synthetic_fact(task, text)
        new = attribute.statement.format(name=entity, value=values[k])
        if k == 0:
            return emit(
                f"a new fact about {entity}", [call("Add_memory", content=new)], native=native
            )
        old = attribute.statement.format(name=entity, value=values[k - 1])
        old_id = _known_id(old, view, messages)
        choice = self._choose(
            task,
            f"correction {entity}/{attribute.name}",
            [
                ("duplicate", rates.correction_duplicate),
                ("update", rates.correction_update),
                ("delete_add", rates.correction_delete_add),
            ],
            feasible=old_id is not None,
        )
        if choice == "update":
            return emit(
                f"{old_id} is out of date",
                [call("Update_memory", memory_id=old_id, content=new)],
                native=native,
            )
        if choice == "delete_add":
            return emit(
                f"{old_id} is out of date",
                [
                    call("Delete_memory", memory_id=old_id, confirmation=True),
                    call("Add_memory", content=new),
                ],
                native=native,
            )
        return emit(f"news about {entity}", [call("Add_memory", content=new)], native=native)

    def _synthetic_stage2(self, bound: _Bound, view: ContextView, native: bool) -> Turn:
        rates = self.rates
        choice = self._choose(
            bound.task,
            "stage2",
            [
                ("filter", rates.stage2_filter),
                ("summary", rates.stage2_summary),
                ("nothing", 1 - rates.stage2_filter - rates.stage2_summary),
            ],
        )
        if choice == "filter":
            return emit(
                "not about my people",
                [call("Filter_context", criteria=view.incoming)],
                native=native,
            )
        if choice == "summary":
            return emit("shorten the context", [call("Summary_context", span="all")], native=native)
        return emit("a note", native=native)

    # ---- other families ----------------------------------------------------------------------
    def _evidence_stage1(
        self, bound: _Bound, view: ContextView, messages: list[Message], native: bool
    ) -> Turn:
        index = bound.by_text.get(view.incoming)
        if index is None or bound.task.contextual[index].id not in bound.evidence:
            return emit("not needed later", native=native)
        content = _memory_text(bound.task, index, view.incoming)
        return emit(
            "evidence for the question", [call("Add_memory", content=content)], native=native
        )

    def _stage3(self, bound: _Bound, view: ContextView, synthetic: bool, native: bool) -> Turn:
        question = next(q for q in bound.task.questions if q.text == view.question)
        found = retrieved(view.after)
        if found is None:
            top_k = {"top_k": 2} if synthetic else {}
            return emit(
                "look it up", [call("Retrieve_memory", query=question.text, **top_k)], native=native
            )
        if not synthetic:
            return emit("the memories answer it", answer=question.answers[0], native=native)
        attribute, entity = _asked(bound.task, question.text)
        pattern = _statement_pattern(attribute, entity)
        values = [m.group(1) for _, content in found if (m := pattern.search(content))]
        answer = values[0] if values else "unknown"
        return emit(f"memory says {answer}", answer=answer, native=native)

    # ---- AtomMem -----------------------------------------------------------------------------
    def _atommem(self, prompt: str) -> Turn:
        view = read_atommem_prompt(prompt)
        bound = self._match(view.questions)
        task = bound.task
        if view.answering is not None:
            gold = task.questions[view.answering].answers[0]
            return Turn(
                text=f"<think>from memory</think><final_answer>\\boxed{{{gold}}}</final_answer>"
            )
        found = [s for s in task.supporting_facts if s in (view.chunk or "")]
        ops = "".join(f"<add_memory>{s}</add_memory>" for s in found)
        query = " ".join(view.questions)
        note = f"{len(found)} supporting sentences in this chunk." if found else "Nothing here."
        return Turn(
            text=f"<think>{note}</think>{ops}<update_query>{query}</update_query>"
            f"<update_memory>Looking for: {query} Last chunk: {note}"
            "</update_memory>"
        )


# ---- oracle helpers --------------------------------------------------------------------------


def _probes(messages: list[Message]) -> list[str]:
    """The texts of a context that can identify its task: every incoming message and question."""
    probes = []
    for message in messages:
        if message["role"] != "user":
            continue
        content = message.get("content") or ""
        view = read_context([message])
        probes.append(view.question if view.stage == 3 else view.incoming or content)
    return probes


def _synthetic_facts(task: Task) -> list[tuple[Attribute, str, list[str]]]:
    by_name = {a.name: a for a in ATTRIBUTES}
    return [(by_name[f["attribute"]], f["entity"], f["values"]) for f in task.metadata["facts"]]


def _synthetic_fact(task: Task, text: str) -> tuple[Attribute, str, list[str], int]:
    """Which fact (and which of its values) a stage-1 message states."""
    for attribute, entity, values in _synthetic_facts(task):
        for k, value in enumerate(values):
            if text.endswith(attribute.statement.format(name=entity, value=value)):
                return attribute, entity, values, k
    raise TaskNotBound(f"message {text!r} states no fact of task {task.id!r}")


def _asked(task: Task, question: str) -> tuple[Attribute, str]:
    for attribute, entity, _ in _synthetic_facts(task):
        if attribute.question.format(name=entity) == question:
            return attribute, entity
    raise TaskNotBound(f"question {question!r} asks about no fact of task {task.id!r}")


def _known_id(content: str, view: ContextView, messages: list[Message]) -> str | None:
    """The id of the entry holding `content`: from the memories shown with the message, else
    from an earlier Add observation still in the context."""
    for memory_id, shown in view.related:
        if shown == content:
            return memory_id
    for message in messages:
        if message["role"] == "tool":
            for memory_id, added in _ADDED.findall(message.get("content") or ""):
                if added == content:
                    return memory_id
    return None


def _memory_text(task: Task, index: int, incoming: str) -> str:
    """What the oracle stores for a piece of evidence: HotpotQA's sentence under its title
    (without the casual framing), any other message as the agent read it."""
    message = task.contextual[index]
    if task.family == "hotpotqa" and message.id and "#" in message.id:
        return f"{display_title(message.id.rsplit('#', 1)[0])}: {task.supporting_facts[index]}"
    return incoming


def _criteria(text: str) -> str:
    """A Filter_context criteria that matches one distractor: its title and first sentence
    (measured on HotpotQA distractors: median cosine 0.86 to the whole paragraph)."""
    title, sep, body = text.partition(": ")
    sentences = split_sentences(body if sep else text)
    first = sentences[0] if sentences else text
    return f"{title}: {first}" if sep else first
