"""Hybrid retrieval settings and rank fusion.

A hybrid search runs two retrievers over the same store (BM25 over FTS5, dense cosine over the
vector index), takes a pool of candidates from each, and fuses the two rankings with weighted
reciprocal rank fusion (RRF, Cormack, Clarke & Buettcher, SIGIR 2009):

    score(d) = sum over retrievers r of  w_r / (rrf_k + rank_r(d))      (rank starts at 1)

RRF needs no score calibration between BM25 (unbounded) and cosine ([-1, 1]), which is why it is
the default fusion of most hybrid stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SearchConfig:
    """How a hybrid search gathers and fuses candidates.

    Defaults and why:
    - `rrf_k = 10`: smaller than the RRF paper's 60 (tuned there for TREC runs 1000 deep, and the
      default of Elasticsearch/OpenSearch/Weaviate). An agent asks for the top 3-10, so the head of
      each ranking must count. Measured on LoCoMo evidence recall@10 (`agemem bench
      locomo-retrieval`, 1,536 questions; BM25 alone 0.601, dense alone 0.499): rrf_k=60 gives
      0.601 (no better than BM25), 20 gives 0.628, 10 gives 0.650, 5 gives 0.647.
    - `pool = 50`: candidates taken from each retriever before fusion. At rank 50 an entry still
      earns 1/110 against 1/61 for a first place, so it can be lifted by the other retriever;
      deeper pools add latency (each candidate is fetched) and change the top 10 only rarely.
    - `dense_weight = bm25_weight = 1.0`: neither retriever is trusted more by default; the
      presets below tilt them.
    - `max_term_matches = 2_000`: BM25 through FTS5 scores every entry a query term matches,
      ~1 us per match (measured at 100k entries: 15 ms for queries carrying a word found in 77%
      of entries, 0.15 ms without it). Query terms matching more entries than this are left out
      of the BM25 query (all are kept if all are that common): their IDF is low (at 2% of 100k
      entries, ln(50) against ~ln(10^4) for a rare word), so they barely move the ranking.
    """

    rrf_k: float = 10.0
    pool: int = 50
    dense_weight: float = 1.0
    bm25_weight: float = 1.0
    max_term_matches: int = 2_000

    def __post_init__(self) -> None:
        if self.rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {self.rrf_k}")
        if self.pool < 1 or self.max_term_matches < 1:
            raise ValueError(f"pool and max_term_matches must be >= 1: {self}")
        if self.dense_weight < 0 or self.bm25_weight < 0:
            raise ValueError("dense_weight and bm25_weight must be >= 0")

    def pool_for(self, top_k: int) -> int:
        """Candidates per retriever for a request of `top_k` (never fewer than `top_k`)."""
        return max(self.pool, top_k)


SEARCH_PRESETS: dict[str, SearchConfig] = {
    # The documented defaults above.
    "balanced": SearchConfig(),
    # Short keyword-style queries over notes (names, ids, numbers): exact words matter more.
    "keyword": SearchConfig(bm25_weight=2.0),
    # Paraphrased, conversational queries: meaning matters more than shared words.
    "semantic": SearchConfig(dense_weight=2.0),
    # Latency-bound callers (the agent's automatic retrieval on every turn): a smaller pool.
    "fast": SearchConfig(pool=20),
}


def resolve_search_config(config: SearchConfig | str) -> SearchConfig:
    """A `SearchConfig` as given, or the preset of that name."""
    if isinstance(config, SearchConfig):
        return config
    try:
        return SEARCH_PRESETS[config]
    except KeyError:
        raise ValueError(
            f"unknown search preset {config!r}; choose one of {sorted(SEARCH_PRESETS)} "
            "or pass a SearchConfig"
        ) from None


def rrf_fuse(
    rankings: Sequence[Sequence[int]], weights: Sequence[float], rrf_k: float
) -> list[tuple[int, float]]:
    """Fuse best-first rankings of keys into one best-first list of `(key, score)`.

    >>> rrf_fuse([[1, 2, 3], [3, 1]], weights=[1.0, 1.0], rrf_k=60)[0][0]
    1
    """
    if len(rankings) != len(weights):
        raise ValueError("rrf_fuse needs one weight per ranking")
    scores: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (rrf_k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
