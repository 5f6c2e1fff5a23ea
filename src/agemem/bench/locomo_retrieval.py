"""Evidence recall of LoCoMo retrieval: BM25 only, dense only and hybrid, on one store.

Every turn of each conversation is stored as a memory in that conversation's scope, as
`"[<session date>] <speaker>: <text>"` (the date makes temporal questions answerable from the
entry alone). Every question of categories 1-4 retrieves top-10 within its conversation; recall@k
is the share of its gold `evidence` dialogue ids among the first k entries, averaged over questions.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

from agemem.memory.embed import reference_embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import NewMemory, Scope
from agemem.tasks.base import Task
from agemem.tasks.locomo import load_locomo

MODES = ("bm25", "dense", "hybrid")
KS = (5, 10)


def turn_memories(task: Task) -> list[NewMemory]:
    scope = Scope(user_id=task.id)
    return [
        NewMemory(
            content=f"[{m.timestamp}] {m.speaker}: {m.content}",
            metadata={"dia_id": m.id},
            scope=scope,
        )
        for m in task.contextual
    ]


def evidence_recall(retrieved: list[str], evidence: tuple[str, ...], k: int) -> float:
    gold = set(evidence)
    return len(gold.intersection(retrieved[:k])) / len(gold)


def run_locomo_retrieval(path: str | Path | None = None) -> dict:
    """Index LoCoMo, retrieve for every question, print and return recall@5/@10 per mode."""
    console = Console()
    tasks = load_locomo(path=path)
    embedder = reference_embedder()
    sums = {mode: dict.fromkeys(KS, 0.0) for mode in MODES}
    n_questions = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "locomo.db", embedder=embedder)
        for task in track(tasks, description="indexing + retrieving", console=console):
            store.add_many(turn_memories(task), dedupe=False)
            questions = [q for q in task.questions if q.evidence]
            vectors = embedder.embed([q.text for q in questions])
            for question, vector in zip(questions, vectors, strict=True):
                n_questions += 1
                for mode in MODES:
                    hits = store.search(
                        question.text,
                        top_k=max(KS),
                        mode=mode,
                        scope=Scope(user_id=task.id),
                        query_embedding=vector,
                    )
                    ids = [hit.metadata["dia_id"] for hit in hits]
                    for k in KS:
                        sums[mode][k] += evidence_recall(ids, question.evidence, k)
        store.close()
    methods = {
        mode: {f"recall_at_{k}": total / n_questions for k, total in sums[mode].items()}
        | {"questions": n_questions}
        for mode in MODES
    }
    _print_table(console, methods)
    return {
        "benchmark": "locomo-retrieval",
        "conversations": len(tasks),
        "embedder": embedder.name,
        "wall_s": round(time.perf_counter() - started, 1),
        "methods": methods,
    }


def _print_table(console: Console, methods: dict) -> None:
    table = Table(title="LoCoMo evidence recall (categories 1-4)")
    for column in ("method", "recall@5", "recall@10", "questions"):
        table.add_column(column)
    for mode, row in methods.items():
        table.add_row(
            mode, f"{row['recall_at_5']:.3f}", f"{row['recall_at_10']:.3f}", str(row["questions"])
        )
    console.print(table)
