"""An in-memory index over unit vectors: exact NumPy scans for small sets, usearch HNSW above.

The SQLite file stays the source of truth; every process holds one `VectorIndex` and keeps it in
step with the file (see `SQLiteStore`). Keys are the store's integer rowids.

Exact scans use `np.einsum` (one thread, SIMD) rather than a BLAS matrix-vector product: on a
machine whose cores are busy (an LLM policy running next to the store, other processes) a
multi-threaded BLAS call waits a scheduler tick for its helper thread, 4-8 ms per search however
small the matrix; einsum's cost stays proportional to the rows. Measured on this project's
2-core machine (384-d clustered unit vectors resembling MiniLM sentence embeddings, see
`agemem.bench.store`), exact scan p50: 0.28 ms at 5k rows, 0.58 ms at 10k, 1.2 ms at 20k,
3.7 ms at 50k, 6.4 ms at 100k. Hence `exact_threshold = 20_000`: below it an exact scan costs no
more than a graph search (~1.5 ms, below) and is perfectly accurate; above it, it grows past it.

The HNSW graph stores int8 vectors (4x less memory than float32, faster distance kernels), each
row divided by its largest absolute component before quantizing so that it uses the whole int8
range (cosine does not change under scaling). The graph returns `rerank` candidates which are
then re-scored exactly with the float32 rows; the re-scoring repairs the order errors that int8
introduces. Recall@10 against an exact scan on 100k bench vectors (200 queries; p50 of the graph
search on the shared, loaded 2-core machine, so read latencies as rough):

| connectivity | expansion_search | candidates | recall@10 | p50 |
|---|---|---|---|---|
| 16 | 256 | 10 (no rerank) | 0.86 | 1.3 ms |
| 16 | 512 | 50 | 0.96 | 2.5 ms |
| 32 | 96 | 50 | 0.89 | 0.9 ms |
| 32 | 128 | 50 | 0.92 | 1.2 ms |
| 32 | 192 | 50 | 0.95 | 1.6-1.9 ms |
| 32 | 256 | 50 | 0.97 | 1.6-2.9 ms |

float32 graphs (same data) reach 0.96 only at connectivity 16 / expansion_search 512 (5.4 ms),
and re-scoring cannot help them (their distances are already exact). Defaults: connectivity 32,
expansion_add 128, expansion_search 256, rerank 50: recall 0.97, the first setting with margin
above 0.95.

Building the graph is the slow part: ~1-1.5k inserts/s on 2 busy cores (70-140 s at 100k). The
store therefore saves a built graph in its file and a process opening a large store restores it
(`load(graph=...)`, ~3 s at 100k) and replays the changes made since, instead of rebuilding.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from usearch.index import Index

Keys = np.ndarray  # int64 keys, shape (n,)
Scores = np.ndarray  # float32 cosine similarities, shape (n,), best first


@dataclass(frozen=True)
class VectorIndexConfig:
    """When to use which search path, and the HNSW parameters (see the module docstring).

    `filtered_exact_max`: a filtered search whose allowed set has at most this many rows scans
    exactly those rows; 5,000 keeps the cost of listing the allowed rowids from SQLite (~1 ms)
    and gathering their vectors below an ANN search.
    `filter_margin`: a larger filtered search asks the graph for enough candidates that about
    `filter_margin * k` of them should pass the filter (fetch = margin * k * n / allowed).
    `max_ann_fetch`: beyond this many candidates a graph search costs more than an exact scan of
    the allowed rows, so the exact scan is used instead.
    """

    exact_threshold: int = 20_000
    connectivity: int = 32
    expansion_add: int = 128
    expansion_search: int = 256
    rerank: int = 50
    filtered_exact_max: int = 5_000
    filter_margin: float = 2.0
    max_ann_fetch: int = 2_000

    def __post_init__(self) -> None:
        for name in ("exact_threshold", "connectivity", "expansion_add", "expansion_search"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rerank < 1 or self.max_ann_fetch < 1 or self.filter_margin < 1:
            raise ValueError("rerank and max_ann_fetch must be >= 1, filter_margin >= 1")


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` largest scores, best first."""
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _dot(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row-wise dot products, single-threaded (see the module docstring)."""
    return np.einsum("ij,j->i", matrix, query)


def _int8_range(vectors: np.ndarray) -> np.ndarray:
    """Scale each row so its largest component is +-1: usearch maps [-1, 1] onto int8."""
    return vectors / np.abs(vectors).max(axis=-1, keepdims=True)


@cache
def _usearch_index() -> type[Index]:
    """usearch's `Index`, imported when a graph is first needed (exact scans never need it).

    On Linux the system libstdc++ is made global first: usearch's module carries its own static
    copy and exports its symbols, and onnxruntime (the library embedder) imported after it then
    crashes in libstdc++'s locale set-up. Bound to the system copy, both load in any order."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    from usearch.index import Index

    return Index


class VectorIndex:
    """Unit vectors keyed by integers; cosine top-k, exact or approximate."""

    def __init__(self, dim: int, config: VectorIndexConfig | None = None) -> None:
        self.dim = dim
        self.config = config or VectorIndexConfig()
        self._keys = np.zeros(0, dtype=np.int64)
        self._vecs = np.zeros((0, dim), dtype=np.float32)
        self._n = 0
        self._slot: dict[int, int] = {}
        self._hnsw: Index | None = None
        self.unsaved_changes = 0  # graph edits since it was built or restored (for the store)

    def __len__(self) -> int:
        return self._n

    def __contains__(self, key: int) -> bool:
        return key in self._slot

    @property
    def uses_ann(self) -> bool:
        """Whether unfiltered searches go through the HNSW graph."""
        return self._n >= self.config.exact_threshold

    # ---- maintenance -------------------------------------------------------------------------

    def load(
        self,
        keys: Keys,
        vectors: np.ndarray,
        *,
        graph: bytes | None = None,
        changed: Keys | None = None,
    ) -> None:
        """Replace the whole content (a full reload from the store file).

        `graph`: a saved graph (`graph_bytes`) of an earlier state of the same entries, reused
        instead of rebuilding (minutes at 100k rows on 2 cores) and brought up to date here:
        keys it lacks are added, keys now gone are removed, and `changed` keys (entries
        updated since) are re-inserted.
        """
        self._keys = np.asarray(keys, dtype=np.int64).copy()
        self._vecs = np.array(vectors, dtype=np.float32).reshape(
            -1, self.dim
        )  # a copy: edited in place
        self._n = len(self._keys)
        self._slot = {int(k): i for i, k in enumerate(self._keys)}
        self._hnsw = None
        if graph is not None and self.uses_ann:
            self._hnsw = self._restore(graph, np.asarray(changed if changed is not None else []))

    def _restore(self, graph: bytes, changed: np.ndarray) -> Index:
        restored = _usearch_index().restore(graph)
        restored.expansion_add = self.config.expansion_add
        restored.expansion_search = self.config.expansion_search
        current = self._keys.astype(np.uint64)
        held = np.asarray(restored.keys[:], dtype=np.uint64)  # one call: iterating is O(n^2)
        changed = np.intersect1d(changed.astype(np.uint64), current)
        stale = np.union1d(np.setdiff1d(held, current), np.intersect1d(changed, held))
        if len(stale):
            restored.remove(stale)
        fresh = np.union1d(np.setdiff1d(current, held), changed)
        if len(fresh):
            slots = np.array([self._slot[int(k)] for k in fresh], dtype=np.int64)
            restored.add(fresh, _int8_range(self._vecs[slots]))
        self.unsaved_changes = len(stale) + len(fresh)
        return restored

    def graph_bytes(self) -> bytes | None:
        """The HNSW graph serialised (None when there is none), for `load(graph=...)`."""
        if self._hnsw is None:
            return None
        self.unsaved_changes = 0
        return bytes(self._hnsw.save())

    def upsert(self, keys: Keys, vectors: np.ndarray) -> None:
        """Insert new keys, overwrite the vectors of known ones."""
        keys = np.asarray(keys, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self._hnsw is not None:
            known = np.array([k for k in keys.tolist() if k in self._slot], dtype=np.uint64)
            if len(known):
                self._hnsw.remove(known)
        for key, vec in zip(keys.tolist(), vectors, strict=True):
            slot = self._slot.get(key)
            if slot is None:
                slot = self._append_slot(key)
            self._vecs[slot] = vec
        if self._hnsw is not None and len(keys):
            self._hnsw.add(keys.astype(np.uint64), _int8_range(vectors))
            self.unsaved_changes += len(keys)

    def remove(self, keys: Keys) -> None:
        """Drop keys; unknown ones are ignored (already gone)."""
        present = [k for k in np.asarray(keys, dtype=np.int64).tolist() if k in self._slot]
        for key in present:
            slot = self._slot.pop(key)
            last = self._n - 1
            if slot != last:  # move the last row into the hole
                moved = int(self._keys[last])
                self._keys[slot] = moved
                self._vecs[slot] = self._vecs[last]
                self._slot[moved] = slot
            self._n = last
        if self._hnsw is not None and present:
            self._hnsw.remove(np.array(present, dtype=np.uint64))
            self.unsaved_changes += len(present)

    def _append_slot(self, key: int) -> int:
        if self._n == len(self._keys):  # grow geometrically
            capacity = max(16, 2 * len(self._keys))
            self._keys = np.resize(self._keys, capacity)
            grown = np.zeros((capacity, self.dim), dtype=np.float32)
            grown[: self._n] = self._vecs[: self._n]
            self._vecs = grown
        slot = self._n
        self._keys[slot] = key
        self._slot[key] = slot
        self._n += 1
        return slot

    def _graph(self) -> Index:
        """The HNSW graph, built on first need from the current rows."""
        if self._hnsw is None:
            cfg = self.config
            graph = _usearch_index()(
                ndim=self.dim,
                metric="cos",
                dtype="i8",
                connectivity=cfg.connectivity,
                expansion_add=cfg.expansion_add,
                expansion_search=cfg.expansion_search,
            )
            if self._n:
                graph.add(
                    self._keys[: self._n].astype(np.uint64), _int8_range(self._vecs[: self._n])
                )
            self._hnsw = graph
            self.unsaved_changes = self._n
        return self._hnsw

    def prepare(self) -> None:
        """Build the graph now if the size calls for one (otherwise the first search does)."""
        if self.uses_ann:
            self._graph()
        else:
            self._hnsw = None  # shrunk below the threshold: exact scans again

    # ---- search ------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int) -> tuple[Keys, Scores]:
        """Top `k` over everything: exact below `exact_threshold`, HNSW + exact rerank above."""
        self.prepare()
        if self._hnsw is None:
            scores = _dot(self._vecs[: self._n], query)
            top = _top_k(scores, k)
            return self._keys[top], scores[top]
        keys, scores = self._ann(query, max(k, self.config.rerank))
        return keys[:k], scores[:k]

    def search_among(self, query: np.ndarray, k: int, keys: Keys) -> tuple[Keys, Scores]:
        """Exact top `k` over the given keys only (unknown keys are skipped)."""
        slots = np.fromiter(
            (s for s in map(self._slot.get, np.asarray(keys).tolist()) if s is not None),
            dtype=np.int64,
        )
        scores = _dot(self._vecs[slots], query)
        top = _top_k(scores, k)
        return self._keys[slots[top]], scores[top]

    def search_filtered(
        self,
        query: np.ndarray,
        k: int,
        *,
        n_allowed: int,
        keep: Callable[[Keys], np.ndarray],
        allowed_keys: Callable[[], Keys],
    ) -> tuple[Keys, Scores]:
        """Top `k` among the `n_allowed` keys a filter admits.

        Small allowed sets are scanned exactly (`allowed_keys()` lists them). Larger ones
        oversample the graph in proportion to how selective the filter is and keep the hits
        `keep(keys)` (a boolean mask) admits; if fewer than `k` survive, scan exactly after all.
        """
        if n_allowed <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        cfg = self.config
        self.prepare()
        if self._hnsw is not None and n_allowed > cfg.filtered_exact_max:
            fetch = math.ceil(cfg.filter_margin * k * self._n / n_allowed)
            if fetch <= cfg.max_ann_fetch:
                keys, scores = self._ann(query, max(fetch, cfg.rerank))
                mask = keep(keys)
                keys, scores = keys[mask], scores[mask]
                if len(keys) >= min(k, n_allowed):
                    return keys[:k], scores[:k]
        return self.search_among(query, k, allowed_keys())

    def _ann(self, query: np.ndarray, count: int) -> tuple[Keys, Scores]:
        """`count` graph candidates, re-scored exactly and sorted best first."""
        found = self._graph().search(_int8_range(query), count).keys.astype(np.int64)
        slots = np.fromiter((self._slot[k] for k in found.tolist()), dtype=np.int64)
        scores = _dot(self._vecs[slots], query)
        order = np.argsort(-scores, kind="stable")
        return found[order], scores[order]
