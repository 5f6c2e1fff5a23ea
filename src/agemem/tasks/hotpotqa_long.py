"""AtomMem's long-context HotpotQA: several questions answered from one pool of documents.

Built the way AtomMem's public data script builds it (RUCBM/AtomMem,
taskutils/script/processing_multiquery.py), on our HotpotQA train/test split:
- questions are taken in file order (or shuffled by `seed`) and cut into consecutive groups whose
  size is 1 with probability 0.5, else uniform in 2..10 (`group_size` fixes it instead);
- each question brings all of its HotpotQA paragraphs (`question_paragraphs="all"`, as AtomMem)
  or only its supporting ones (`"supporting"`); random paragraphs of the same split fill the pool
  up to `n_docs` (AtomMem evaluates 200 / 400 / 800), and the pool is shuffled;
- a document is "<title>\\n<text>"; `long_context()` renders the pool as AtomMem's prompt does
  ("Document i:\\n<document>", blank lines between).
Documents in a pool have distinct titles (a title is the document's id and a question's evidence).
The random choices use `seed` (None: 42, AtomMem's default) and the task's index, so the first
k tasks are the same whatever `limit` is.

The agent reads the long input in chunks (`chunk_text`; AtomMem: 4K tokens, 100-token overlap).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

from agemem.tasks.base import ContextMessage, Question, Task, TaskError, TaskSource
from agemem.tasks.hotpotqa import (
    SPLITS,
    display_title,
    gold_sentences,
    paragraph_text,
    split_records,
)

ATOMMEM_SEED = 42
MAX_GROUP = 10  # AtomMem groups 1..10 questions per sample
P_SINGLE = 0.5  # ... one question with probability 0.5, else uniform over 2..10


def load_hotpotqa_long(
    split: str = "train",
    limit: int | None = None,
    seed: int | None = None,
    n_docs: int = 200,
    group_size: int | None = None,
    question_paragraphs: Literal["all", "supporting"] = "all",
    path: str | Path | None = None,
) -> list[Task]:
    """The first `limit` multi-question tasks of `split`, each with a pool of `n_docs` documents."""
    if not isinstance(n_docs, int) or n_docs < 1:
        raise TaskError(f"n_docs must be a positive int (AtomMem: 200/400/800), got {n_docs!r}")
    if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
        raise TaskError(f"group_size must be >= 1 or None (AtomMem's 1..10), got {group_size!r}")
    if question_paragraphs not in ("all", "supporting"):
        raise TaskError("question_paragraphs must be 'all' (AtomMem) or 'supporting'")
    path = Path(path) if path else None
    records = split_records(split, path)
    rng = random.Random(ATOMMEM_SEED if seed is None else seed)
    if seed is not None:
        rng.shuffle(records)
    label = "file" if seed is None else seed
    groups = _groups(rng, len(records), group_size)[:limit]
    pool = _pool(split, path)
    if len(pool[0]) < n_docs:
        raise TaskError(f"split {split!r} has only {len(pool[0])} documents; lower n_docs")
    return [
        _task(
            [records[i] for i in group],
            random.Random(f"{label}:{k}"),
            n_docs,
            question_paragraphs,
            pool,
            f"hotpotqa-long-{split}-{n_docs}-{label}-{k}",
        )
        for k, group in enumerate(groups)
    ]


def _groups(rng: random.Random, n: int, group_size: int | None) -> list[range]:
    """Consecutive index ranges covering 0..n-1 (the last one may be shorter)."""
    groups, start = [], 0
    while start < n:
        size = group_size or (1 if rng.random() < P_SINGLE else rng.randint(2, MAX_GROUP))
        groups.append(range(start, min(start + size, n)))
        start += size
    return groups


@cache
def _pool(split: str, path: Path | None) -> tuple[tuple[str, ...], dict[str, str]]:
    """Every paragraph of the split's questions as title -> document (first text per title)."""
    documents: dict[str, str] = {}
    for record in split_records(split, path):
        for title, sentences in record["context"]:
            documents.setdefault(title, _document(title, sentences))
    return tuple(documents), documents


def _document(title: str, sentences: list[str]) -> str:
    return f"{display_title(title)}\n{paragraph_text(sentences)}"


def _task(
    records: list[dict[str, Any]],
    rng: random.Random,
    n_docs: int,
    question_paragraphs: str,
    pool: tuple[tuple[str, ...], dict[str, str]],
    task_id: str,
) -> Task:
    own = _question_documents(records, question_paragraphs)
    if len(own) > n_docs:
        raise TaskError(f"{len(own)} question documents exceed n_docs={n_docs}; raise n_docs")
    titles, documents = pool
    wanted = n_docs - len(own)
    # Drawing n_docs titles leaves >= `wanted` after removing the group's own ones.
    filler = [t for t in rng.sample(titles, n_docs) if t not in own][:wanted]
    pool_docs = [(t, own[t]) for t in own] + [(t, documents[t]) for t in filler]
    rng.shuffle(pool_docs)
    return Task(
        id=task_id,
        family="hotpotqa-long",
        contextual=[ContextMessage(doc, id=title) for title, doc in pool_docs],
        distractors=[],
        questions=[
            Question(
                text=r["question"],
                answers=(r["answer"],),
                category=r["type"],
                evidence=tuple(dict.fromkeys(t for t, _ in r["supporting_facts"])),
            )
            for r in records
        ],
        supporting_facts=[text for r in records for _, _, text in gold_sentences(r)[0]],
        metadata={
            "question_ids": [r["_id"] for r in records],
            "n_docs": n_docs,
            "question_paragraphs": question_paragraphs,
        },
    )


def _question_documents(records: list[dict[str, Any]], which: str) -> dict[str, str]:
    """title -> document for the group's own paragraphs (supporting ones, or all ten)."""
    own: dict[str, str] = {}
    for r in records:
        supporting = {t for t, _ in r["supporting_facts"]}
        for title, sentences in r["context"]:
            if which == "all" or title in supporting:
                own.setdefault(title, _document(title, sentences))
    return own


def long_context(task: Task) -> str:
    """The pool as one text, in AtomMem's prompt format."""
    return "\n\n".join(
        f"Document {i}:\n{m.content}" for i, m in enumerate(task.contextual, start=1)
    )


def whitespace_tokens(text: str) -> int:
    """Default token count: whitespace-separated words (a tokenizer-free stand-in; BPE tokenizers
    give ~1.3x more for English). Pass a real tokenizer's count for exact budgets."""
    return len(text.split())


def chunk_text(
    text: str,
    chunk_tokens: int = 4096,
    overlap: int = 100,
    count_tokens: Callable[[str], int] = whitespace_tokens,
) -> list[str]:
    """Split `text` at whitespace into chunks of at most `chunk_tokens` tokens, each chunk
    starting with the last <= `overlap` tokens of the one before (AtomMem: 4096 and 100; a single
    word longer than `chunk_tokens` becomes a chunk of its own). Tokens are counted per word
    (with its trailing whitespace) by `count_tokens`."""
    if not 0 <= overlap < chunk_tokens:
        raise TaskError(f"need 0 <= overlap < chunk_tokens, got {overlap} and {chunk_tokens}")
    words = [m.span() for m in re.finditer(r"\S+\s*", text)]
    sizes = [count_tokens(text[a:b]) for a, b in words]
    chunks, start = [], 0
    while start < len(words):
        end, total = start, 0
        while end < len(words) and (end == start or total + sizes[end] <= chunk_tokens):
            total += sizes[end]
            end += 1
        chunks.append(text[words[start][0] : words[end - 1][1]].rstrip())
        if end == len(words):
            break
        start = _overlap_start(sizes, start, end, overlap)
    return chunks


def _overlap_start(sizes: list[int], start: int, end: int, overlap: int) -> int:
    """First word of the next chunk: back from `end` while the tail fits in `overlap` tokens,
    never back to `start` (every chunk must advance)."""
    new, total = end, 0
    while new - 1 > start and total + sizes[new - 1] <= overlap:
        total += sizes[new - 1]
        new -= 1
    return new


SOURCE = TaskSource("hotpotqa-long", SPLITS, load_hotpotqa_long)
