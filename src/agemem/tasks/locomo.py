"""LoCoMo (Maharana et al., ACL 2024; CC BY-NC 4.0): ten long two-person conversations.

Splits (conversation 1, `conv-26`, is held out: no training or SFT set ever holds its turns):
- `test`: conversation 1 as one task: stage 1 is every turn of every session, the questions are
  its QA (152 of categories 1-4);
- `all`: the ten conversations, one task each, in that shape (evaluation of untrained methods);
- `train`: conversations 2-10 cut into short tasks, one per question with evidence: stage 1 is
  each evidence turn with up to `neighbours` turns on each side in its session (merged, in
  conversation order), so most stage-1 turns are chit-chat around the evidence and what the agent
  stores matters; stage 2 is `n_distractors` turns drawn from the conversation's other sessions
  (same speakers, not evidence for the question), shown as the agent reads stage-1 messages;
  stage 3 is the question. A question whose stage 1 would exceed `max_stage1` turns (22 of
  1,408, multi-hop questions with evidence spread over many sessions) is left out.

Path: the `path` argument, else the `AGEMEM_LOCOMO` environment variable, else
`../shared/data/locomo/locomo10.json` next to the repository. The file is not in any package: get
it from the authors' repository, snap-research/LoCoMo, `data/locomo10.json`.

Format (locomo10.json): a list of {sample_id, conversation, qa, ...}; `conversation` holds
`speaker_a`, `speaker_b`, `session_<n>` (turns: speaker, dia_id `D<n>:<turn>`, text, optional
`blip_caption` of a shared photo) and `session_<n>_date_time` ("1:56 pm on 8 May, 2023");
`qa` items: question, answer (str or int), evidence (dialogue ids), category 1..5.

Choices made here:
- a turn's content is its text, plus " [shares <caption>]" when it shared a photo (questions ask
  about photos; LoCoMo's own prompts append the caption the same way);
- category 5 (adversarial) questions have no answer in the conversation: their gold answer is
  `NOT_MENTIONED` (LoCoMo scores them as the option "Not mentioned in the conversation"); the
  baited wrong answer goes to `Question.adversarial_answer`; two of them also carry an `answer`
  ("No"), accepted as well;
- evidence ids are normalised ("D:11:26" -> "D11:26", "D30:05" -> "D30:5", lists in one string
  split); 3 of 2,815 references name no turn ("D", "D10:19" in conv-42, "D4:36" in conv-47) and are
  dropped, listed in the task's metadata under `unresolved_evidence`.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agemem.tasks.base import (
    ContextMessage,
    Question,
    Task,
    TaskDataMissing,
    TaskError,
    TaskSource,
    incoming_text,
    select,
)

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
DEFAULT_CATEGORIES = (1, 2, 3, 4)  # adversarial (5) is opt-in, as in Mem0's LoCoMo numbers
SPLITS = ("test", "train", "all")
TEST_CONVERSATIONS = 1  # the file's first conversation is the test split
NEIGHBOURS = 4  # training tasks: turns kept on each side of an evidence turn (ours)
N_DISTRACTORS = 4  # training tasks: stage-2 turns from other sessions (ours)
MAX_STAGE1 = 40  # training tasks: longest stage 1 kept, in turns (ours)
NOT_MENTIONED = "Not mentioned in the conversation"
ENV_VAR = "AGEMEM_LOCOMO"
# src/agemem/tasks/locomo.py -> the repository root is parents[3]; shared/ sits beside it.
DEFAULT_PATH = Path(__file__).resolve().parents[3].parent / "shared/data/locomo/locomo10.json"
_SOURCE_HINT = "get it from snap-research/LoCoMo (data/locomo10.json)"


@dataclass(frozen=True)
class LocomoTurn:
    """One dialogue turn, as the retrieval benchmark indexes it."""

    conversation_id: str
    dia_id: str  # "D<session>:<turn>"
    session: int
    speaker: str
    text: str
    date: str  # the session's date and time, as LoCoMo writes it


def locomo_path(path: str | Path | None = None) -> Path:
    """The file to read: argument, else $AGEMEM_LOCOMO, else the shared default."""
    chosen = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)
    if not chosen.is_file():
        raise TaskDataMissing(
            f"LoCoMo file {chosen} not found; {_SOURCE_HINT} and pass its path or set ${ENV_VAR}"
        )
    return chosen


@cache
def _read(path: Path) -> tuple[dict[str, Any], ...]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path} is not LoCoMo JSON ({e}); {_SOURCE_HINT}") from None
    if not isinstance(data, list) or not all("conversation" in c and "qa" in c for c in data):
        raise TaskError(f"{path} is not locomo10.json (a list of conversations); {_SOURCE_HINT}")
    return tuple(data)


def read_locomo(path: str | Path | None = None) -> tuple[dict[str, Any], ...]:
    """The raw conversations (cached per file)."""
    return _read(locomo_path(path).resolve())


def _turns(sample: dict[str, Any]) -> list[LocomoTurn]:
    conversation = sample["conversation"]
    sessions = sorted(
        int(m.group(1)) for key in conversation if (m := re.fullmatch(r"session_(\d+)", key))
    )
    return [
        LocomoTurn(
            conversation_id=sample["sample_id"],
            dia_id=turn["dia_id"],
            session=n,
            speaker=turn["speaker"],
            text=_turn_text(turn),
            date=conversation[f"session_{n}_date_time"],
        )
        for n in sessions
        for turn in conversation[f"session_{n}"]
    ]


def _message(turn: LocomoTurn) -> ContextMessage:
    return ContextMessage(turn.text, speaker=turn.speaker, timestamp=turn.date, id=turn.dia_id)


def _turn_text(turn: dict[str, Any]) -> str:
    caption = turn.get("blip_caption")
    return f"{turn['text']} [shares {caption}]" if caption else turn["text"]


def locomo_turns(path: str | Path | None = None) -> list[LocomoTurn]:
    """Every turn of every conversation, in order, with its dialogue id, speaker and date."""
    return [turn for sample in read_locomo(path) for turn in _turns(sample)]


def normalize_evidence(reference: str) -> list[str]:
    """Dialogue ids in one evidence string, repaired ("D:11:26" -> ["D11:26"])."""
    return [f"D{int(s)}:{int(t)}" for s, t in re.findall(r"D:?(\d+):(\d+)", reference)]


def _question(qa: dict[str, Any], known: set[str], unresolved: list[str]) -> Question:
    evidence = []
    for reference in qa["evidence"]:
        ids = [i for i in normalize_evidence(reference) if i in known]
        if not ids:
            unresolved.append(reference)
        evidence += ids
    if qa["category"] == 5:
        answers = (NOT_MENTIONED, *([str(qa["answer"])] if "answer" in qa else []))
    else:
        answers = (str(qa["answer"]),)
    return Question(
        text=qa["question"],
        answers=answers,
        category=CATEGORIES[qa["category"]],
        evidence=tuple(dict.fromkeys(evidence)),
        adversarial_answer=qa.get("adversarial_answer"),
    )


def to_task(sample: dict[str, Any], categories: tuple[int, ...] = DEFAULT_CATEGORIES) -> Task:
    """One conversation as a task: all turns in stage 1, its questions of `categories`."""
    turns = _turns(sample)
    text_of = {t.dia_id: t.text for t in turns}
    known, unresolved = set(text_of), []
    questions = [
        _question(qa, known, unresolved) for qa in sample["qa"] if qa["category"] in categories
    ]
    evidence = dict.fromkeys(e for q in questions for e in q.evidence)
    conversation = sample["conversation"]
    return Task(
        id=f"locomo-{sample['sample_id']}",
        family="locomo",
        contextual=[_message(t) for t in turns],
        distractors=[],
        questions=questions,
        supporting_facts=[text_of[e] for e in evidence],
        metadata={
            "sample_id": sample["sample_id"],
            "speakers": [conversation["speaker_a"], conversation["speaker_b"]],
            "categories": list(categories),
            "unresolved_evidence": unresolved,
        },
    )


def train_tasks(
    sample: dict[str, Any],
    categories: tuple[int, ...] = DEFAULT_CATEGORIES,
    neighbours: int = NEIGHBOURS,
    n_distractors: int = N_DISTRACTORS,
    max_stage1: int = MAX_STAGE1,
) -> list[Task]:
    """One short task per question of `categories` with evidence (the `train` split's shape)."""
    whole = to_task(sample, categories)
    turns = _turns(sample)
    position = {t.dia_id: i for i, t in enumerate(turns)}
    tasks = []
    for number, question in enumerate(whole.questions):
        if not question.evidence:
            continue
        kept: set[int] = set()
        for evidence in question.evidence:
            at = position[evidence]
            session = turns[at].session
            kept.update(
                i
                for i in range(at - neighbours, at + neighbours + 1)
                if 0 <= i < len(turns) and turns[i].session == session
            )
        if len(kept) > max_stage1:
            continue
        sessions = {turns[i].session for i in kept}
        rng = random.Random(f"{sample['sample_id']}/{number}")
        others = [t for t in turns if t.session not in sessions]
        picked = sorted(rng.sample(range(len(others)), min(n_distractors, len(others))))
        tasks.append(
            Task(
                id=f"locomo-{sample['sample_id']}-q{number}",
                family="locomo",
                contextual=[whole.contextual[i] for i in sorted(kept)],
                distractors=[incoming_text(_message(others[i])) for i in picked],
                questions=[question],
                supporting_facts=[turns[position[e]].text for e in question.evidence],
                metadata={
                    "sample_id": sample["sample_id"],
                    "speakers": whole.metadata["speakers"],
                    "categories": list(categories),
                    "question_index": number,
                },
            )
        )
    return tasks


def load_locomo(
    split: str = "test",
    limit: int | None = None,
    seed: int | None = None,
    path: str | Path | None = None,
    categories: tuple[int, ...] | list[int] = DEFAULT_CATEGORIES,
    neighbours: int = NEIGHBOURS,
    n_distractors: int = N_DISTRACTORS,
) -> list[Task]:
    """The tasks of `split` (module docstring) in file order, or shuffled by `seed`; a
    conversation with no question in `categories` is left out. `neighbours` and `n_distractors`
    shape the `train` split's tasks."""
    if split not in SPLITS:
        raise TaskError(f"unknown LoCoMo split {split!r}; use one of {SPLITS}")
    categories = tuple(categories)
    if not categories or not set(categories) <= set(CATEGORIES):
        raise TaskError(f"categories must be a non-empty subset of {sorted(CATEGORIES)}")
    for name, value in (("neighbours", neighbours), ("n_distractors", n_distractors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TaskError(f"{name} must be a non-negative int, got {value!r}")
    samples = list(read_locomo(path))
    if split == "test":
        samples = samples[:TEST_CONVERSATIONS]
    elif split == "train":
        samples = samples[TEST_CONVERSATIONS:]
    samples = [s for s in samples if any(qa["category"] in categories for qa in s["qa"])]
    if split == "train":
        tasks = [t for s in samples for t in train_tasks(s, categories, neighbours, n_distractors)]
        return select(tasks, limit, seed)
    return [to_task(s, categories) for s in select(samples, limit, seed)]


SOURCE = TaskSource("locomo", SPLITS, load_locomo)
