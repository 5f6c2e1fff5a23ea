"""`a-mem-style`: A-Mem's Zettelkasten memory (Xu et al., 2025, arXiv 2502.12110) on our store,
embedder and policy.

Per incoming message (stage 1 messages, then stage 2 distractors, the stream every method sees):
1. Note construction: the model writes keywords K, tags G and a one-sentence context X for the
   message c (its time and speaker lead the text when the source has them). The note is stored
   as the text `c / keywords / tags / context`, so its embedding encodes all four parts as the
   paper's e = f_enc(concat(c, K, G, X)); the parts are also kept apart in the metadata.
2. Link generation: the k nearest notes (cosine over those embeddings, found before the new note
   is stored) are shown with small integer ids and the model names the ones to link to.
3. Memory evolution: shown the new note and the same neighbours, the model rewrites the context
   and tags of the neighbours the new note refines; each rewritten note is stored again (and so
   re-embedded).
Stage 3: the top-k notes for the question (`RunContext.top_k`, dense cosine) and then the notes
they link to (at most k more, best-ranked notes' links first, as A-Mem's implementation caps
them) go to the model with the question, and it answers.

Choices of ours, where the paper leaves them open: k = 5 neighbours (`neighbours`; A-Mem's
implementation uses 5); a link is stored on both notes, since the paper groups linked notes in
one "box" that is reached from any of its notes (the implementation keeps it on the new note
only); evolution is one call for all neighbours, as in the implementation, rather than the
paper's one call per neighbour; link generation and evolution are separate calls (the paper's
two prompts; the implementation merges them into one), sent in the same batch; the prompts are
ours, shorter than A-Mem's, for small models.

Fallbacks, each recorded as a failed `CallRecord`: an unreadable analysis (`a-mem/analyze`, error
`parse`) stores the note with its text only (empty keywords and tags, no context), as A-Mem's
implementation falls back to empty attributes; an unreadable link or evolution output
(`a-mem/link` / `a-mem/evolve`, `parse`) links or changes nothing; an id that names no shown
neighbour is skipped (`arguments`).

Every note's metadata holds the id of the contextual message it records
(`pipeline.EVIDENCE_KEY`), so retrieved notes map back to evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agemem.episode import CallAction, Observation
from agemem.eval.methods.base import RunContext
from agemem.eval.methods.lockstep import Job, Reply
from agemem.eval.methods.pipeline import (
    EVIDENCE_KEY,
    Build,
    EpisodeLog,
    Incoming,
    PipelineMethod,
    Prompt,
    Steps,
    answer_questions,
    check_positive,
    fit_prompt,
    message_stream,
    parsed,
)
from agemem.memory.facts import chat, numbered
from agemem.memory.llm_json import (
    JsonReadError,
    index_field,
    read_object,
    string_list,
    text_field,
)
from agemem.memory.store import MemoryItem, MemoryStore, Scope
from agemem.policy.base import Message
from agemem.tasks.base import Task

ANALYZE_INSTRUCTION = (
    "Analyse the note below. Reply with JSON only: "
    '{"keywords": ["..."], "tags": ["..."], "context": "..."}. '
    "keywords: the most important specific terms of the note (nouns, verbs, key concepts), most "
    "important first, at least three, not the speaker's name or the time. tags: at least three "
    "broad categories for the note (domain, type, theme). context: one sentence on the note's "
    "topic, key points and purpose."
)
LINK_INSTRUCTION = (
    "A new note joins the memory. Decide which existing notes it should be linked to: notes "
    "about the same people, things, events or topics. Reply with JSON only: "
    '{"links": [<ids of the notes to link>]}, or {"links": []} to link none.'
)
EVOLVE_INSTRUCTION = (
    "A new note joins the memory. Update the context and tags of the existing notes whose "
    "meaning the new note changes or refines; leave the others out. Reply with JSON only: "
    '{"updates": [{"id": <note id>, "context": "<new one-sentence context>", '
    '"tags": ["..."]}]}, or {"updates": []} to change nothing.'
)


@dataclass
class Note:
    """A-Mem's note: content c, keywords K, tags G, context X, links L (store ids)."""

    text: str
    keywords: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    context: str = ""
    links: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The stored (and embedded) text: the content, then its non-empty attributes.

        >>> Note("ana moved to rome", ["ana", "rome"], ["travel"], "Ana's new home.").render()
        "ana moved to rome\\nkeywords: ana, rome\\ntags: travel\\ncontext: Ana's new home."
        """
        parts = [
            self.text,
            f"keywords: {', '.join(self.keywords)}" if self.keywords else "",
            f"tags: {', '.join(self.tags)}" if self.tags else "",
            f"context: {self.context}" if self.context else "",
        ]
        return "\n".join(p for p in parts if p)

    def metadata(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "keywords": self.keywords,
            "tags": self.tags,
            "context": self.context,
            "links": self.links,
            EVIDENCE_KEY: self.evidence,
        }

    @classmethod
    def of(cls, item: MemoryItem) -> Note:
        meta = item.metadata
        return cls(
            text=str(meta.get("text", item.content)),
            keywords=string_list(meta, "keywords"),
            tags=string_list(meta, "tags"),
            context=text_field(meta, "context") or "",
            links=string_list(meta, "links"),
            evidence=string_list(meta, EVIDENCE_KEY),
        )


class AMemStyleMethod(PipelineMethod):
    """A-Mem's note construction, link generation, memory evolution and link-following retrieval
    (module docstring: what is the paper's, what is ours).

    `neighbours` (k) is how many nearest notes link generation and evolution consider;
    `evolve=False` skips memory evolution; `batch_size` caps the prompts per `policy.act` call
    (calls are batched across the tasks of a run); `store_path` is the SQLite file (None: a
    private in-memory database).
    """

    name = "a-mem-style"

    def __init__(
        self,
        *,
        neighbours: int = 5,
        evolve: bool = True,
        batch_size: int = 8,
        store_path: str | Path | None = None,
    ) -> None:
        self.neighbours = check_positive("neighbours", neighbours)
        self.evolve = bool(evolve)
        self.batch_size = check_positive("batch_size", batch_size)
        self.store_path = store_path

    def steps(
        self, ctx: RunContext, task: Task, store: MemoryStore, scope: Scope, log: EpisodeLog
    ) -> Steps:
        return _Run(self, ctx, store, scope, log).steps(task)


class _Run:
    """One task's pipeline over its scope of the store."""

    def __init__(
        self,
        method: AMemStyleMethod,
        ctx: RunContext,
        store: MemoryStore,
        scope: Scope,
        log: EpisodeLog,
    ) -> None:
        self.m, self.ctx, self.store, self.scope, self.log = method, ctx, store, scope, log

    def steps(self, task: Task) -> Steps:
        for incoming in message_stream(task):
            item, neighbours = yield from self._construct(incoming)
            if neighbours:
                yield from self._link_and_evolve(incoming, item, neighbours)
        yield from answer_questions(
            task, self.log, self._retrieve, self.ctx.token_counter, self.ctx.t_max
        )

    def _fit(self, build: Build, n: int) -> Prompt:
        return fit_prompt(build, n, self.ctx.token_counter, self.ctx.t_max)

    def _search(self, text: str, top_k: int, vector: np.ndarray | None = None) -> list[MemoryItem]:
        if not self.store.count(scope=self.scope):
            return []
        return self.store.search(
            text, top_k=top_k, mode="dense", scope=self.scope, query_embedding=vector
        )

    # ---- note construction -----------------------------------------------------------------
    def _construct(self, incoming: Incoming) -> Job[tuple[MemoryItem, list[MemoryItem]]]:
        prompt = self._fit(lambda _: chat(ANALYZE_INSTRUCTION, f"Note: {incoming.text}"), 0)
        (reply,) = yield [prompt.messages]
        turn, stage, problem = self.log.next_turn, incoming.stage, None
        note = Note(incoming.text, evidence=[incoming.source_id] if incoming.source_id else [])
        try:
            obj = read_object(reply.turn.text, ["keywords", "tags", "context"])
            note.keywords, note.tags = string_list(obj, "keywords"), string_list(obj, "tags")
            note.context = text_field(obj, "context") or ""
        except JsonReadError as err:
            problem = f"{err}; the note is stored with its text only"
            self.log.call(turn, stage, "a-mem/analyze", "parse")
        text = note.render()
        vector = self.ctx.embedder.embed([text])[0]  # once, for the search and the store
        neighbours = self._search(text, self.m.neighbours, vector)
        item = self.store.add(
            text, metadata=note.metadata(), scope=self.scope, embedding=vector, dedupe=False
        ).item
        self.log.call(turn, stage, "a-mem/note")
        self.log.added(turn, stage, item)
        observation = Observation(call_id="note", name="a-mem/note", content=f"Added {item.id}")
        self.log.step(stage, prompt, reply, parsed("json", problem=problem), [observation])
        return item, neighbours

    # ---- link generation and memory evolution ----------------------------------------------
    def _link_and_evolve(
        self, incoming: Incoming, item: MemoryItem, neighbours: list[MemoryItem]
    ) -> Steps:
        link = self._fit(self._prompt(LINK_INSTRUCTION, item, neighbours), len(neighbours))
        prompts = [link]
        if self.m.evolve:
            evolve = self._fit(self._prompt(EVOLVE_INSTRUCTION, item, neighbours), len(neighbours))
            prompts.append(evolve)
        replies = yield [p.messages for p in prompts]
        self._link(incoming.stage, item, neighbours[: link.items], link, replies[0])
        if self.m.evolve:
            self._evolve(incoming.stage, neighbours[: prompts[1].items], prompts[1], replies[1])

    @staticmethod
    def _prompt(instruction: str, item: MemoryItem, neighbours: list[MemoryItem]) -> Build:
        def build(k: int) -> list[Message]:
            existing = numbered([n.content for n in neighbours[:k]]) or "none"
            return chat(instruction, f"New note:\n{item.content}\n\nExisting notes:\n{existing}")

        return build

    def _read(
        self, stage: int, name: str, key: str, prompt: Prompt, reply: Reply
    ) -> dict[str, Any] | None:
        """The output's JSON object (holding `key`), or None after recording it as a failed
        `name` call."""
        try:
            return read_object(reply.turn.text, [key])
        except JsonReadError as err:
            self.log.call(self.log.next_turn, stage, name, "parse")
            problem = f"{err}; nothing changed"
            self.log.step(stage, prompt, reply, parsed("json", problem=problem))
            return None

    def _link(
        self, stage: int, item: MemoryItem, shown: list[MemoryItem], prompt: Prompt, reply: Reply
    ) -> None:
        obj = self._read(stage, "a-mem/link", "links", prompt, reply)
        if obj is None:
            return
        turn, chosen, calls, done = self.log.next_turn, [], [], []
        for raw in obj.get("links") if isinstance(obj.get("links"), list) else []:
            index = index_field(raw, len(shown))
            calls.append(CallAction(id=f"link{len(calls)}", name="link", arguments={"id": raw}))
            if index is None:
                self.log.call(turn, stage, "a-mem/link", "arguments")
                done.append(f"{raw!r} names no shown note (0 to {len(shown) - 1})")
            elif shown[index].id not in chosen:
                chosen.append(shown[index].id)
        for other in chosen:
            self._connect(item.id, other)
            self._connect(other, item.id)
            self.log.call(turn, stage, "a-mem/link")
            done.append(f"Linked {item.id} <-> {other}")
        content = "; ".join(done) or "no links"
        observation = Observation(call_id="link", name="a-mem/link", content=content)
        self.log.step(stage, prompt, reply, parsed("json", calls=calls), [observation])

    def _connect(self, source: str, target: str) -> None:
        """Add `target` to the links of `source` (metadata only: its embedding is unchanged)."""
        note = Note.of(self.store.get(source))
        if target not in note.links:
            note.links.append(target)
            self.store.update(source, metadata=note.metadata())

    def _evolve(self, stage: int, shown: list[MemoryItem], prompt: Prompt, reply: Reply) -> None:
        obj = self._read(stage, "a-mem/evolve", "updates", prompt, reply)
        if obj is None:
            return
        turn, calls, done = self.log.next_turn, [], []
        updates = obj.get("updates") if isinstance(obj.get("updates"), list) else []
        for update in (u for u in updates if isinstance(u, dict)):
            calls.append(CallAction(id=f"evolve{len(calls)}", name="evolve", arguments=update))
            index = index_field(update.get("id", update.get("note")), len(shown))
            if index is None:
                self.log.call(turn, stage, "a-mem/evolve", "arguments")
                done.append(f"{update.get('id')!r} names no shown note (0 to {len(shown) - 1})")
                continue
            done.append(self._rewrite(turn, stage, shown[index].id, update))
        content = "; ".join(done) or "no changes"
        observation = Observation(call_id="evolve", name="a-mem/evolve", content=content)
        self.log.step(stage, prompt, reply, parsed("json", calls=calls), [observation])

    def _rewrite(self, turn: int, stage: int, memory_id: str, update: dict[str, Any]) -> str:
        """Give a neighbour the new context and tags (kept where the update has none)."""
        old = self.store.get(memory_id)  # notes are never deleted: a shown one still exists
        note = Note.of(old)
        note.context = text_field(update, "context") or note.context
        note.tags = string_list(update, "tags") or note.tags
        if note.render() == old.content:
            return f"{memory_id} unchanged"
        new = self.store.update(memory_id, note.render(), metadata=note.metadata())
        self.log.call(turn, stage, "a-mem/evolve")
        self.log.updated(turn, stage, old, new)
        return f"Evolved {memory_id}"

    # ---- retrieval -------------------------------------------------------------------------
    def _retrieve(self, question: str) -> list[MemoryItem]:
        """Top-k notes, then the notes they link to (at most k more, best notes' links first)."""
        top = self._search(question, self.ctx.top_k)
        seen = {item.id for item in top}
        linked: list[MemoryItem] = []
        for item in top:
            for link in Note.of(item).links:
                if link not in seen and len(linked) < self.ctx.top_k:
                    linked.append(self.store.get(link))  # links name stored notes only
                    seen.add(link)
        return top + linked
