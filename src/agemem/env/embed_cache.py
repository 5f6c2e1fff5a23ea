"""A memoizing wrapper around an embedder, for running many episodes.

Episodes embed the same texts over and over: K rollouts of one task see the same messages, and
the synthetic curriculum draws from a closed vocabulary. A text's embedding never changes, so
caching is invisible to the stores and contexts that use it, and it removes most embedder calls
(each costs milliseconds of model time even for one short sentence).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from agemem.memory.embed import Embedder


class CachingEmbedder:
    """`inner` with an LRU cache of up to `max_entries` texts (ours: 100,000, about 150 MB of
    384-d float32 vectors at most). Unseen texts of one call are embedded in one batch.

    >>> class Count:
    ...     name, dim, calls = "count", 2, 0
    ...     def embed(self, texts):
    ...         Count.calls += 1
    ...         return np.ones((len(texts), 2), dtype=np.float32)
    >>> cached = CachingEmbedder(Count())
    >>> _ = cached.embed(["a", "b"]); _ = cached.embed(["b", "a", "a"])
    >>> Count.calls
    1
    """

    def __init__(self, inner: Embedder, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.max_entries = max_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self._cache[text] = vector
        rows = []
        for text in texts:
            self._cache.move_to_end(text)
            rows.append(self._cache[text])
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=True)


@lru_cache(maxsize=8)
def cached(embedder: Embedder) -> CachingEmbedder:
    """One cache per embedder object, kept across calls (identical texts recur between runs)."""
    return embedder if isinstance(embedder, CachingEmbedder) else CachingEmbedder(embedder)
