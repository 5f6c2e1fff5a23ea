"""`AtomMemEnv`: AtomMem's loop over a long input read in chunks.

The task's contextual messages are joined into the long input (`long_context`: "Document i: ...")
and cut by `chunk_text` (AtomMem: 4,096-token chunks, 100-token overlap), counting with the
policy's tokenizer when the env has it. Each step's prompt is rebuilt from scratch: the questions,
the scratchpad, the current query, the top-k entries retrieved for it ("Memory i: ..."), the
feedback of the previous step's failed operations (ours: the model should see what went wrong;
successful operations show through the memories and scratchpad), and the chunk. The model runs
any number of operations per step (create / read / update / delete / scratchpad).

After the last chunk (or `max_chunk_steps` chunks; the rest is not read), one step per question
asks for its answer as `<final_answer>\\boxed{...}</final_answer>`. The memories shown for that
step are retrieved with the question's text (ours: an answering step cannot issue a `read`).
An answer without `\\boxed{}`, or a step with operations, leaves the question unanswered. Every
prompt is checked against the budget (`EnvConfig.t_max`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agemem.env.base import EpisodeEnv
from agemem.env.config import PRESETS, EnvConfig
from agemem.env.record import EnvError, Recorder, StepResult, View, memory_snapshot
from agemem.episode import EpisodeFacts, GoldQuestion
from agemem.memory.embed import Embedder
from agemem.memory.store import MemoryStore
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.tasks.base import Task
from agemem.tasks.hotpotqa_long import chunk_text, long_context
from agemem.tokens import TokenCounter
from agemem.tools.atommem import ATOMMEM_SYSTEM_PROMPT, ATOMMEM_TOOLS, AtomMemState, begin_step
from agemem.tools.parse import ATOMMEM_ANSWER_TAG, ToolCall, extract_boxed, parse_turn
from agemem.tools.registry import ToolResult

_WRITES = {"create", "update", "delete"}
QUESTIONS_HEADER = "Questions:"
CHUNK_HEADER = "Chunk {i} of {n}:"
ANSWER_HEADER = "All chunks have been read. Answer question {i}: {text}"
ANSWER_FORMAT = f"Write <{ATOMMEM_ANSWER_TAG}>\\boxed{{answer}}</{ATOMMEM_ANSWER_TAG}>."
_EMPTY = "(empty)"


def atommem_prompt(
    questions: list[str],
    scratchpad: str,
    query: str,
    memories: str,
    body: str,
    feedback: Sequence[str] = (),
) -> str:
    """One step's prompt; `body` is the chunk section or the answer request."""
    listed = "\n".join(f"{i}. {q}" for i, q in enumerate(questions, 1))
    parts = [
        f"{QUESTIONS_HEADER}\n{listed}",
        f"Scratchpad:\n{scratchpad or _EMPTY}",
        f"Current query: {query or _EMPTY}",
        f"Memories:\n{memories}",
    ]
    if feedback:
        parts.append("Feedback on your last operations:\n" + "\n".join(feedback))
    parts.append(body)
    return "\n\n".join(parts)


@dataclass
class AtomView:
    """An AtomMem prompt read back: the questions, and either the chunk or the question asked."""

    questions: list[str] = field(default_factory=list)
    chunk: str | None = None
    answering: int | None = None  # 0-based index of the question to answer


def read_atommem_prompt(text: str) -> AtomView:
    """The inverse of `atommem_prompt` for the parts scripted policies need."""
    view = AtomView()
    head, _, rest = text.partition(f"{QUESTIONS_HEADER}\n")
    listed = rest.split("\n\n", 1)[0]
    view.questions = [line.split(". ", 1)[1] for line in listed.splitlines() if ". " in line]
    marker = "\n\nAll chunks have been read. Answer question "
    if marker in text:
        view.answering = int(text.rsplit(marker, 1)[1].split(":", 1)[0]) - 1
        return view
    for section in text.split("\n\n"):
        if section.startswith("Chunk ") and " of " in section.split("\n", 1)[0]:
            view.chunk = text[text.index(section) :].split("\n", 1)[1]
            break
    return view


class AtomMemEnv(EpisodeEnv):
    """One AtomMem episode at a time, with the same `reset` / `step` contract as `MemoryEnv`."""

    method = "atommem"
    other_env = "MemoryEnv"

    def __init__(
        self,
        config: EnvConfig = PRESETS["atommem"],
        *,
        store: MemoryStore | None = None,
        embedder: Embedder | None = None,
        token_counter: TokenCounter | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            config, store=store, embedder=embedder, token_counter=token_counter, seed=seed
        )
        self._answering: int | None = None

    @property
    def stage(self) -> int:
        """1 while reading chunks, 2 while answering."""
        return 1 if self._answering is None else 2

    def tools(self) -> list[ToolSpec] | None:
        if not self.config.native_tools or self._answering is not None:
            return None
        return ATOMMEM_TOOLS.openai_tools()

    def reset(self, task: Task) -> list[Message]:
        self.close()
        self._task = task
        self._store = self._given_store or self._new_store()
        self._state = AtomMemState(
            self._store, top_k=self.config.atommem_top_k, search_mode=self.config.search_mode
        )
        chunks = chunk_text(
            long_context(task),
            self.config.chunk_tokens,
            self.config.chunk_overlap,
            self._counter.count_text,
        )
        self._chunks = chunks[: self.config.max_chunk_steps]
        self._chunk, self._answering = 0, None if self._chunks else 0
        self._feedback: list[str] = []
        self._recorder = Recorder(
            EpisodeFacts(
                method="atommem",
                questions=[
                    GoldQuestion(text=q.text, answers=list(q.answers), category=q.category)
                    for q in task.questions
                ],
                answers=[None] * len(task.questions),
                tokens_at_answer=[None] * len(task.questions),
                t_max=self.config.budget_for(task),
                chunks_total=len(chunks),
                chunks_read=0,
            )
        )
        self.done = False
        return self._show()

    def step(self, turn: Turn) -> StepResult:
        if self.done:
            raise EnvError("the episode is over (or was never started): call reset(task)")
        parsed = parse_turn(turn, "openai" if turn.tool_calls is not None else "atommem")
        stage = self.stage
        view_tokens = self._recorder.view.tokens if self._recorder.view else 0
        if not parsed.ok:
            results = ATOMMEM_TOOLS.run(parsed, self._state)
            for result in results:
                self._recorder.call(stage, result)
        elif self._answering is None and parsed.answer is not None:
            results = [
                ToolResult(
                    "",
                    "",
                    "Answer only when asked, after the last chunk; this answer was ignored.",
                    "rejected",
                )
            ]
        elif self._answering is None:
            results = [self._run_call(call) for call in parsed.tool_calls]
        else:
            results = self._answer(parsed.answer if not parsed.tool_calls else None, view_tokens)
        self._recorder.step(turn, parsed, results)
        self._feedback = [r.content for r in results if not r.ok]
        self._advance()
        info = {
            "stage": stage,
            "answer": parsed.answer,
            "observations": [r.content for r in results],
        }
        if self.done:
            self._recorder.final_memories(memory_snapshot(self._store, self._state.scope), str)
            self._recorder.facts.scratchpad = self._state.scratchpad
            return StepResult([], True, info)
        return StepResult(self._show(), False, info)

    # ---- internals -----------------------------------------------------------------------
    def _show(self) -> list[Message]:
        task = self._task
        assert task is not None
        questions = [q.text for q in task.questions]
        if self._answering is None:
            body = (
                CHUNK_HEADER.format(i=self._chunk + 1, n=len(self._chunks))
                + "\n"
                + self._chunks[self._chunk]
            )
        else:
            self._state.query = questions[self._answering]
            body = (
                ANSWER_HEADER.format(i=self._answering + 1, text=questions[self._answering])
                + "\n"
                + ANSWER_FORMAT
            )
        step_view = begin_step(self._state)
        prompt = atommem_prompt(
            questions,
            step_view.scratchpad,
            step_view.query,
            step_view.memories,
            body,
            self._feedback,
        )
        messages = [
            {"role": "system", "content": ATOMMEM_SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        view = View(
            messages,
            self._counter.count_messages(messages),
            self.stage,
            question=self._answering,
            chunk=self._chunk if self._answering is None else None,
            task=task,
            related=[(str(i), content) for i, content in enumerate(step_view.shown, 1)],
            chunk_text=self._chunks[self._chunk] if self._answering is None else None,
            scratchpad=self._state.scratchpad,
            method="atommem",
        )
        self._recorder.show(view, budget_checked=True)
        return messages

    def _run_call(self, call: ToolCall) -> ToolResult:
        writes = call.name in _WRITES
        before = memory_snapshot(self._store, self._state.scope) if writes else {}
        (result,) = ATOMMEM_TOOLS.dispatch([call], self._state)
        if writes and result.ok:
            after = memory_snapshot(self._store, self._state.scope)
            self._recorder.memory_changes(1, before, after, str)
        self._recorder.call(1, result)
        return result

    def _answer(self, answer: str | None, tokens: int) -> list[ToolResult]:
        facts, index = self._recorder.facts, self._answering
        assert index is not None
        boxed = extract_boxed(answer) if answer is not None else None
        if boxed is None:
            return [
                ToolResult(
                    "",
                    "",
                    f"No \\boxed{{}} answer: question {index + 1} stays unanswered.",
                    "rejected",
                )
            ]
        facts.answers[index], facts.tokens_at_answer[index] = boxed, tokens
        return []

    def _advance(self) -> None:
        task = self._task
        assert task is not None
        facts = self._recorder.facts
        if self._answering is None:
            self._chunk += 1
            facts.chunks_read = self._chunk
            if self._chunk >= len(self._chunks):
                self._answering = 0
            return
        last = self._answering + 1 >= len(task.questions)
        if last:
            self.done = True
            facts.ended_by = "answered" if facts.answers[-1] is not None else "turn_cap"
        else:
            self._answering += 1
