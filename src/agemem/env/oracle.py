"""The oracle: an expert that knows each task's gold and writes good trajectories (SFT data).

It is not a `Policy`: a policy maps contexts to turns and reads only what a model reads. The
oracle reads the environment's record of the pending turn (`env.view`: the task, the stage-1
message on show with its id and the memories shown with it, the stage-2 note, the question, what
its own retrievals returned) and writes its turn in the exact text protocol a model is trained
on. `run_episodes` and `drive` take it wherever they take a policy (`Expert`).

Behaviour, by task family:
- synthetic: deliberately imperfect, with the probabilities of `OracleRates` (defaults below;
  `PERFECT` for none): SFT should teach every tool's mechanics while leaving the strategy to RL
  (measured on this curriculum: with a perfect oracle the SFT policy has nothing left to learn,
  and with a large id space it never learned to copy ids). It answers from what its retrieval
  returned, so a stale duplicate it chose to keep can make it wrong.
- every other family (HotpotQA, LoCoMo, chat-like tasks): stage 1 stores each piece of evidence
  (`store_evidence`) and, with `store_other`, a message that is not evidence (HotpotQA: the bare
  sentence under its title; others: the message as the agent reads it); stage 2 filters each
  note with `stage2_filter`; stage 3 retrieves with the question, then answers the gold answer.
- AtomMem episodes: on each chunk it deletes the shown entries that hold no evidence (they
  turned out irrelevant), creates an entry "<title>: <sentence>" for each supporting sentence
  in the chunk and, with `atommem_decoy`, one for another sentence of an evidence document
  (the kind of plausible store a reader makes before it knows better; a later step that shows
  it deletes it), rewrites the scratchpad as one line per question with the evidence
  documents found so far, and sets the query to the first question still missing evidence;
  it answers the gold answer, boxed.

`decisions` logs each random choice as (task id, what, choice), e.g.
("synthetic-default-3", "correction ana/city", "update"), so rates can be checked. Every draw
comes from the oracle's own seeded stream: a run is reproducible for the same calls in order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from agemem.env.record import View
from agemem.policy.base import ToolSpec, Turn
from agemem.policy.scripted import call, emit
from agemem.summarize import split_sentences
from agemem.tasks.base import ContextMessage, Question, Task, incoming_text
from agemem.tasks.hotpotqa import display_title
from agemem.tasks.synthetic import ATTRIBUTES, CHIT_CHAT, Attribute

CRITERIA_WORDS = 20  # words of a note's first sentence in the oracle's Filter criteria (ours)


class OracleError(LookupError):
    """The oracle cannot act on a view (no task in it, or a message the task does not hold)."""


@dataclass(frozen=True)
class OracleRates:
    """How the oracle behaves.

    Synthetic tasks (the defaults were measured to leave RL room on that curriculum: oracle
    success ~48%): on a correction a duplicate Add, an Update of the old entry, or Delete + Add
    (the three shares sum to 1); chit-chat is stored with `store_chitchat`; each stage-2 note is
    filtered with `stage2_filter`, triggers Summary_context("all") with `stage2_summary`, else
    passes.
    Other families (ours): evidence is stored with `store_evidence` (1.0), any other stage-1
    message with `store_other` (0.25: the agent cannot know the question in stage 1, so a policy
    imitating a perfect oracle would learn to store almost nothing it is unsure of; a few stored
    non-evidence messages teach the mechanics on every kind of message and leave the precision
    of what to store to RL's memory reward), and stage-2 notes are filtered with
    `stage2_filter_other` (0.75).
    AtomMem (ours): on a chunk with evidence, one other sentence of an evidence document is
    stored with `atommem_decoy` (0.2), so that SFT shows Delete on entries that turned out
    irrelevant.
    """

    correction_duplicate: float = 0.55
    correction_update: float = 0.35
    correction_delete_add: float = 0.10
    store_chitchat: float = 0.80
    stage2_filter: float = 0.35
    stage2_summary: float = 0.10
    store_evidence: float = 1.0
    store_other: float = 0.25
    stage2_filter_other: float = 0.75
    atommem_decoy: float = 0.2

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
    store_evidence=1.0, store_other=0.0, stage2_filter_other=1.0, atommem_decoy=0.0,
)  # fmt: skip


class Oracle:
    """Gold-informed trajectories (see the module docstring)."""

    def __init__(self, rates: OracleRates = OracleRates(), seed: int = 0) -> None:
        self.rates = rates
        self._rng = random.Random(seed)
        self.decisions: list[tuple[str, str, str]] = []

    def act_on(self, views: Sequence[View], tools: list[ToolSpec] | None = None) -> list[Turn]:
        return [self._turn(view, tools is not None) for view in views]

    # ---- dispatch by method and stage --------------------------------------------------------
    def _turn(self, view: View, native: bool) -> Turn:
        task = view.task
        if task is None:
            raise OracleError("the view carries no task: the oracle acts on env.view records")
        if view.method == "atommem":
            return self._atommem(task, view)
        synthetic = task.family == "synthetic"
        if view.stage == 1:
            stage1 = self._synthetic_stage1 if synthetic else self._evidence_stage1
            return stage1(task, view, native)
        if view.stage == 2:
            return self._stage2(task, view, synthetic, native)
        return self._stage3(task, view, synthetic, native)

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

    def _chance(self, task: Task, what: str, p: float, yes: str, no: str) -> bool:
        return self._choose(task, what, [(yes, p), (no, 1 - p)]) == yes

    # ---- synthetic ---------------------------------------------------------------------------
    def _synthetic_stage1(self, task: Task, view: View, native: bool) -> Turn:
        message = _incoming(view)
        text, rates = incoming_text(message), self.rates
        if text in CHIT_CHAT:
            if not self._chance(task, "chit-chat", rates.store_chitchat, "store", "skip"):
                return emit("small talk", native=native)
            return emit("small talk, keep it", [call("Add_memory", content=text)], native=native)
        attribute, entity, values, k = _synthetic_fact(task, text)
        new = attribute.statement.format(name=entity, value=values[k])
        if k == 0:
            return emit(
                f"a new fact about {entity}", [call("Add_memory", content=new)], native=native
            )
        old = attribute.statement.format(name=entity, value=values[k - 1])
        old_id = next((i for i, shown in view.related if shown == old), None)
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

    def _stage2(self, task: Task, view: View, synthetic: bool, native: bool) -> Turn:
        rates, note = self.rates, view.note or ""
        if synthetic:
            options = [
                ("filter", rates.stage2_filter),
                ("summary", rates.stage2_summary),
                ("nothing", 1 - rates.stage2_filter - rates.stage2_summary),
            ]
            choice = self._choose(task, "stage2", options)
            criteria = note
        else:
            p = rates.stage2_filter_other
            choice = "filter" if self._chance(task, "stage2", p, "filter", "nothing") else ""
            criteria = _criteria(note)
        if choice == "filter":
            return emit(
                "not needed later: drop it",
                [call("Filter_context", criteria=criteria)],
                native=native,
            )
        if choice == "summary":
            return emit("shorten the context", [call("Summary_context", span="all")], native=native)
        return emit("a note", native=native)

    # ---- other families ----------------------------------------------------------------------
    def _evidence_stage1(self, task: Task, view: View, native: bool) -> Turn:
        message = _incoming(view)
        evidence = message.id is not None and message.id in _evidence(task)
        p = self.rates.store_evidence if evidence else self.rates.store_other
        what = "evidence" if evidence else "other"
        if not self._chance(task, what, p, "store", "skip"):
            return emit("not needed later", native=native)
        content = memory_text(task, message)
        return emit("worth keeping", [call("Add_memory", content=content)], native=native)

    def _stage3(self, task: Task, view: View, synthetic: bool, native: bool) -> Turn:
        if view.question is None:
            raise OracleError(f"task {task.id!r}: a stage-3 view without a question")
        question = task.questions[view.question]
        if not view.retrieve_calls:
            top_k = {"top_k": 2} if synthetic else {}
            return emit(
                "look it up", [call("Retrieve_memory", query=question.text, **top_k)], native=native
            )
        if not synthetic:
            return emit("the memories answer it", answer=question.answers[0], native=native)
        attribute, entity = _asked(task, question.text)
        pattern = _statement_pattern(attribute, entity)
        values = [m.group(1) for r in view.retrieved if (m := pattern.search(r.content))]
        answer = values[0] if values else "unknown"
        return emit(f"memory says {answer}", answer=answer, native=native)

    # ---- AtomMem -----------------------------------------------------------------------------
    def _atommem(self, task: Task, view: View) -> Turn:
        if view.chunk_text is None:
            gold = task.questions[view.question or 0].answers[0]
            return Turn(
                text=f"<think>from memory</think><final_answer>\\boxed{{{gold}}}</final_answer>"
            )
        evidence = set(task.supporting_facts)
        ops = [
            f"<delete_memory>Memory {index}</delete_memory>"
            for index, content in view.related
            if not any(fact in content for fact in evidence)
        ]
        found = [(title, s) for title, s in _titled_evidence(task) if s in view.chunk_text]
        entries = [f"{title}: {s}" for title, s in found]
        decoys = [
            f"{title}: {s}"
            for title in dict.fromkeys(title for title, _ in found)
            for s in _document_sentences(task, title)
            if s not in evidence and s in view.chunk_text
        ]
        if decoys and self._chance(task, "atommem decoy", self.rates.atommem_decoy, "yes", "no"):
            entries.append(self._rng.choice(decoys))
        ops += [f"<add_memory>{e}</add_memory>" for e in entries]
        titles = {title for title, _ in found}
        pad = _scratchpad_titles(task, view.scratchpad or "", titles)
        missing = [q for q, got in zip(task.questions, pad, strict=True) if _shown(q) - got]
        query = (missing or task.questions)[0].text
        note = f"evidence from {', '.join(sorted(titles))}." if titles else "no evidence here."
        return Turn(
            text=f"<think>Chunk {(view.chunk or 0) + 1}: {note}</think>{''.join(ops)}"
            f"<update_query>{query}</update_query>"
            f"<update_memory>{_render_scratchpad(task, pad)}</update_memory>"
        )


# ---- helpers -------------------------------------------------------------------------------


def memory_text(task: Task, message: ContextMessage) -> str:
    """What the oracle stores for a stage-1 message: HotpotQA's bare sentence under its title
    (without the casual framing), any other message as the agent reads it."""
    sentences = task.metadata.get("sentences", {})
    if task.family == "hotpotqa" and message.id in sentences:
        return f"{display_title(message.id.rsplit('#', 1)[0])}: {sentences[message.id]}"
    return incoming_text(message)


def _incoming(view: View) -> ContextMessage:
    if view.incoming is None:
        raise OracleError("a stage-1 view without the message on show")
    return view.incoming


def _evidence(task: Task) -> set[str]:
    return {e for q in task.questions for e in q.evidence}


def _titled_evidence(task: Task) -> list[tuple[str, str]]:
    """(document title as shown, sentence) for each supporting sentence of an AtomMem task."""
    titled = []
    for s in dict.fromkeys(task.supporting_facts):
        holder = next((m for m in task.contextual if s in m.content), None)
        if holder is not None:
            titled.append((holder.content.split("\n", 1)[0], s))
    return titled


def _document_sentences(task: Task, title: str) -> list[str]:
    """The sentences of the document shown under `title` (the first line is the title)."""
    for m in task.contextual:
        head, _, body = m.content.partition("\n")
        if head == title:
            return split_sentences(body)
    return []


_NONE_YET = "nothing yet"


def _scratchpad_titles(task: Task, scratchpad: str, new: set[str]) -> list[set[str]]:
    """Per question, the evidence documents found so far: those the oracle's own scratchpad
    lines ("Q<i>: title; title") list, plus the question's evidence among `new`."""
    before: dict[str, set[str]] = {}
    for line in scratchpad.splitlines():
        label, _, rest = line.partition(": ")
        if rest and rest != _NONE_YET:
            before[label] = set(rest.split("; "))
    return [before.get(f"Q{i}", set()) | (new & _shown(q)) for i, q in enumerate(task.questions, 1)]


def _shown(question: Question) -> set[str]:
    return {display_title(t) for t in question.evidence}


def _render_scratchpad(task: Task, found: list[set[str]]) -> str:
    return "\n".join(
        f"Q{i}: {'; '.join(sorted(titles)) or _NONE_YET}" for i, titles in enumerate(found, 1)
    )


def _synthetic_facts(task: Task) -> list[tuple[Attribute, str, list[str]]]:
    by_name = {a.name: a for a in ATTRIBUTES}
    return [(by_name[f["attribute"]], f["entity"], f["values"]) for f in task.metadata["facts"]]


def _synthetic_fact(task: Task, text: str) -> tuple[Attribute, str, list[str], int]:
    """Which fact (and which of its values) a stage-1 message states."""
    for attribute, entity, values in _synthetic_facts(task):
        for k, value in enumerate(values):
            if text.endswith(attribute.statement.format(name=entity, value=value)):
                return attribute, entity, values, k
    raise OracleError(f"message {text!r} states no fact of task {task.id!r}")


def _asked(task: Task, question: str) -> tuple[Attribute, str]:
    for attribute, entity, _ in _synthetic_facts(task):
        if attribute.question.format(name=entity) == question:
            return attribute, entity
    raise OracleError(f"question {question!r} asks about no fact of task {task.id!r}")


def _statement_pattern(attribute: Attribute, entity: str) -> re.Pattern[str]:
    template = re.escape(attribute.statement).replace(re.escape("{name}"), re.escape(entity))
    return re.compile(template.replace(re.escape("{value}"), r"(\w+)") + "$")


def _criteria(text: str) -> str:
    """A Filter_context criteria that matches one distractor: its title and the first
    `CRITERIA_WORDS` words of its first sentence (measured on 400 HotpotQA distractor
    paragraphs with the bundled embedder: cosine >= 0.6 to the paragraph for 93.5%, against
    94.3% with the whole first sentence, 89% with 12 words and 73% with the title alone)."""
    title, sep, body = text.partition(": ")
    sentences = split_sentences(body if sep else text)
    first = " ".join((sentences[0] if sentences else text).split()[:CRITERIA_WORDS])
    return f"{title}: {first}" if sep else first
