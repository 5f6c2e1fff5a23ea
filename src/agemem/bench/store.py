"""`agemem bench store`: throughput, latency and recall of `SQLiteStore` on synthetic data.

For each size the bench builds a fresh store in a temporary directory from precomputed vectors
(no model runs, so the numbers are the store's own), then measures:
- `add_per_s`: `add_many` in batches of 1,000 with dedupe off (SQLite rows, FTS5, history);
- `index_build_s`: the first catch-up of the in-memory index (bulk load, plus building and
  saving the HNSW graph above the exact-scan threshold), reported apart from search latency;
- `reopen_s`: the same catch-up in a second handle on the file (another process would pay
  this): bulk load plus the saved graph;
- dense and hybrid search latency through `store.search` (top 10), and a scope-filtered dense
  search (one user of ten);
- an exact NumPy brute-force search over the same vectors in the same run, the ground truth of
  `recall_at_10` (and of `filtered_recall_at_10`).

Synthetic vectors (`synthetic_corpus`) imitate all-MiniLM-L6-v2 sentence embeddings: clustered,
anisotropic, with most variance in a minority of directions, unit norm. Calibration against
MiniLM embeddings of 4,000 HotpotQA sentences and 200 questions, generator at n = 4,000:

| statistic | MiniLM | generator |
|---|---|---|
| cosine of random pairs (mean +- sd) | 0.043 +- 0.091 | 0.040 +- 0.129 |
| cosine to 1st / 10th nearest neighbour | 0.56 / 0.37 | 0.58 / 0.37 |
| query: cosine to 1st / 10th nearest | 0.46 / 0.36 | 0.51 / 0.37 |
| norm of the mean vector | 0.21 | 0.20 |
| principal components for 50 / 90 / 95 % of variance | 48 / 184 / 227 | 31 / 221 / 285 |

Queries are fresh draws near a stored entry's "fact" cluster, never copies of stored vectors.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from agemem.memory.sqlite import ANY_SCOPE, SQLiteStore
from agemem.memory.store import NewMemory, Scope

DIM = 384  # all-MiniLM-L6-v2, the default embedder
ADD_BATCH = 1_000
N_USERS = 10  # entries are spread over this many user scopes for the filtered search
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


@dataclass(frozen=True)
class SyntheticCorpus:
    vectors: np.ndarray  # (n, dim) unit float32
    texts: list[str]
    queries: np.ndarray  # (n_queries, dim) unit float32
    query_texts: list[str]


def _word(i: int) -> str:
    """A pronounceable pseudo-word for every integer (3 syllables, base 70)."""
    b = len(_SYLLABLES)
    return "".join(_SYLLABLES[(i // b**p) % b] for p in (2, 1, 0))


def synthetic_corpus(
    n: int,
    n_queries: int,
    *,
    dim: int = DIM,
    seed: int = 0,
    entries_per_topic: int = 100,
    entries_per_fact: int = 4,
) -> SyntheticCorpus:
    """Clustered unit vectors with matching short texts (see the module docstring).

    Generator: a covariance with a power-law spectrum (variance of direction i ~ i^-0.85) in a
    random orthonormal basis. Topics are draws from it; facts mix a topic (weight 0.4) with a
    fresh draw; an entry mixes its fact (0.7) with noise; a query mixes a fact (0.7) with 1.4x
    more noise (a question is further from the fact than restatements are). A shared direction
    of norm 0.2 makes all vectors mildly similar, as sentence embeddings are. Texts name the
    topic and fact words, so BM25 and dense retrieval agree on what is relevant.
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spread = np.arange(1, dim + 1) ** -0.425
    spread /= np.sqrt((spread**2).sum())

    def draw(m: int) -> np.ndarray:
        return (rng.standard_normal((m, dim)) * spread) @ basis.T

    n_topics = max(1, n // entries_per_topic)
    n_facts = max(1, n // entries_per_fact)
    topic_of_fact = rng.integers(0, n_topics, n_facts)
    facts = 0.4 * draw(n_topics)[topic_of_fact] + np.sqrt(1 - 0.4**2) * draw(n_facts)
    mean = rng.standard_normal(dim)
    mean *= 0.2 / np.linalg.norm(mean)

    def entries(m: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        fact = rng.integers(0, n_facts, m)
        v = 0.7 * facts[fact] + np.sqrt(1 - 0.7**2) * noise * draw(m)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v = v * np.sqrt(1 - 0.2**2) + mean
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), fact

    vectors, vec_facts = entries(n, 1.0)
    queries, query_facts = entries(n_queries, 1.4)

    def topic_word(f: int, j: int) -> str:
        return _word(int(topic_of_fact[f]) * 6 + j)

    def fact_word(f: int, j: int) -> str:
        return _word(100_000 + (f * 2 + j) % 20_000)  # a 20k-word vocabulary, reused

    def filler(k: int) -> list[str]:  # Zipf-like common words
        return [_word(300_000 + min(int(z), 200)) for z in rng.zipf(1.5, k)]

    texts = [
        " ".join([topic_word(f, rng.integers(6)), topic_word(f, rng.integers(6)),
                  fact_word(f, 0), fact_word(f, 1), *filler(3)])
        for f in vec_facts.tolist()
    ]  # fmt: skip
    query_texts = [
        " ".join([topic_word(f, rng.integers(6)), fact_word(f, rng.integers(2)), *filler(1)])
        for f in query_facts.tolist()
    ]
    return SyntheticCorpus(vectors, texts, queries, query_texts)


class PrecomputedOnly:
    """The embedder of a bench store: every vector is supplied, nothing is embedded."""

    name = "bench-synthetic"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise RuntimeError("the store bench passes every embedding explicitly")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def _brute_force(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k. Single-threaded einsum, like the store's exact path: a multi-threaded BLAS
    matvec stalls 4-8 ms whenever the machine's other cores are busy (see vector_index)."""
    scores = np.einsum("ij,j->i", vectors, query)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def _recall(found: list[set[int]], truth: list[np.ndarray]) -> float:
    return float(
        np.mean([len(f & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def _fill(store: SQLiteStore, corpus: SyntheticCorpus, users: list[str], progress: Progress):
    """Insert the corpus with `add_many` in batches; returns the ids in order and the seconds."""
    n = len(corpus.texts)
    task = progress.add_task(f"n={n:,}: add", total=n)
    ids: list[str] = []
    start = time.perf_counter()
    for lo in range(0, n, ADD_BATCH):
        batch = [
            NewMemory(corpus.texts[i], scope=Scope(user_id=users[i]), embedding=corpus.vectors[i])
            for i in range(lo, min(n, lo + ADD_BATCH))
        ]
        ids += [r.item.id for r in store.add_many(batch, dedupe=False)]
        progress.advance(task, len(batch))
    return ids, time.perf_counter() - start


def _timed(progress: Progress, label: str, n_queries: int, run: Callable[[int], Any]):
    """Run `run(j)` for every query; returns the seconds each took and what each returned."""
    task = progress.add_task(label, total=n_queries)
    times, found = [], []
    for j in range(n_queries):
        start = time.perf_counter()
        found.append(run(j))
        times.append(time.perf_counter() - start)
        progress.advance(task)
    return times, found


def _bench_size(n: int, n_queries: int, seed: int, progress: Progress) -> dict[str, Any]:
    corpus = synthetic_corpus(n, n_queries, seed=seed)
    users = [f"user{i % N_USERS}" for i in range(n)]
    one_user = Scope(user_id=users[0])
    user_rows = np.flatnonzero(np.array(users) == users[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        with SQLiteStore(path, PrecomputedOnly(DIM)) as store:
            ids, add_s = _fill(store, corpus, users, progress)
            row_of = {memory_id: i for i, memory_id in enumerate(ids)}
            start = time.perf_counter()
            store.refresh_index()
            build_s = time.perf_counter() - start
            start = time.perf_counter()
            with SQLiteStore(path, PrecomputedOnly(DIM)) as reopened:
                reopened.refresh_index()  # what another process pays: load + the saved graph
            reopen_s = time.perf_counter() - start

            def search(mode: str, scope: Scope = ANY_SCOPE) -> Callable[[int], set[int]]:
                def run(j: int) -> set[int]:
                    hits = store.search(
                        corpus.query_texts[j], top_k=10, mode=mode, scope=scope,
                        query_embedding=corpus.queries[j],
                    )  # fmt: skip
                    return {row_of[h.id] for h in hits}

                return run

            for j in range(min(10, n_queries)):  # warm caches before timing
                search("hybrid")(j)
            label = f"n={n:,}: "
            dense_t, dense_found = _timed(progress, label + "dense", n_queries, search("dense"))
            hybrid_t, _ = _timed(progress, label + "hybrid", n_queries, search("hybrid"))
            filtered_t, filtered_found = _timed(
                progress, label + "filtered", n_queries, search("dense", one_user)
            )
            uses_ann = store.vector_index.uses_ann
        db_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
    brute_t, truth = _timed(
        progress, label + "brute force", n_queries,
        lambda j: _brute_force(corpus.vectors, corpus.queries[j], 10),
    )  # fmt: skip
    filtered_truth = [
        user_rows[_brute_force(corpus.vectors[user_rows], q, 10)] for q in corpus.queries
    ]
    timings = {"search": dense_t, "hybrid": hybrid_t, "filtered": filtered_t, "bruteforce": brute_t}
    return {
        "n": n,
        "add_per_s": n / add_s,
        "index_build_s": build_s,
        "reopen_s": reopen_s,
        "index": "hnsw-int8+rerank" if uses_ann else "exact",
        **{f"{name}_{p}_ms": v for name, t in timings.items() for p, v in _percentiles(t).items()},
        "recall_at_10": _recall(dense_found, truth),
        "filtered_recall_at_10": _recall(filtered_found, filtered_truth),
        "db_mb": db_mb,
    }


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        # The CPU may be shared: read latencies with the load average (start and end).
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sqlite": sqlite3.sqlite_version,
        "usearch": version("usearch"),
    }


_ROWS = [  # (label, key, format); "ms" rows show p50 / p95
    ("add_many rows/s", "add_per_s", "{:,.0f}"),
    ("index", "index", "{}"),
    ("index build s", "index_build_s", "{:.1f}"),
    ("reopen + load s", "reopen_s", "{:.1f}"),
    ("dense search ms", "search", "ms"),
    ("hybrid search ms", "hybrid", "ms"),
    ("filtered dense ms", "filtered", "ms"),
    ("brute force ms", "bruteforce", "ms"),
    ("recall@10", "recall_at_10", "{:.3f}"),
    ("filtered recall@10", "filtered_recall_at_10", "{:.3f}"),
    ("file MB", "db_mb", "{:.0f}"),
]


def _table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="SQLiteStore, 384-d, top 10; latencies p50 / p95")
    table.add_column("")
    for r in results:
        table.add_column(f"n = {r['n']:,}", justify="right")
    for label, key, fmt in _ROWS:
        if fmt == "ms":
            cells = [f"{r[key + '_p50_ms']:.2f} / {r[key + '_p95_ms']:.2f}" for r in results]
        else:
            cells = [fmt.format(r[key]) for r in results]
        table.add_row(label, *cells)
    return table


def run_store_bench(sizes: list[int], n_queries: int = 200, seed: int = 0) -> dict[str, Any]:
    """Benchmark fresh stores of each size; print a table and return the results as JSON-able
    data: `{"results": [{"n", "add_per_s", "search_p50_ms", ...}], "machine": {...}}`."""
    if not sizes or any(n < 10 * N_USERS for n in sizes) or n_queries < 1:
        raise ValueError(
            f"sizes must be a non-empty list of sizes >= {10 * N_USERS}, n_queries >= 1"
        )
    console = Console()
    machine = _machine()
    with Progress(console=console, transient=True) as progress:
        results = [_bench_size(n, n_queries, seed, progress) for n in sizes]
    machine["load_avg_1m_end"] = os.getloadavg()[0]
    console.print(_table(results))
    return {"results": results, "machine": machine}
