"""Embedders. The two shipped builds of all-MiniLM-L6-v2 run for real, offline: the reference one
(sentence-transformers, the `embedder` fixture) and the library's int8 ONNX one. `OpenAIEmbedder`
talks to a remote paid API, so its HTTP endpoint is replaced by `httpx2.MockTransport` (the
transport library of the installed `openai` SDK): the SDK and our code run for real, only the
server's answers are scripted."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import numpy as np
import openai
import pytest

from agemem.memory.embed import (
    LIBRARY_EMBEDDER,
    MINILM_TOKENIZER,
    REFERENCE_EMBEDDER,
    Embedder,
    OpenAIEmbedder,
    default_model_path,
    library_embedder,
)

# Texts of the kinds a memory holds, an empty one and one past the 256-token limit included.
TEXTS = [
    "Maya lives in Lisbon.",
    "Where does Maya live?",
    "Meeting with Bob on Tuesday at 3pm",
    "Meeting with Bob on Monday at 3pm",
    "Flight AF1234 leaves CDG at 07:15.",
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "I like green tea, and hiking in the Alps with my dog Rex.",
    "Ünïcödé tëxt, 日本語のテキスト, emoji 🎉",
    "noted",
    "",
    "a long note " * 150,
]

# ---- the reference embedder: sentence-transformers -------------------------------------------


def test_reference_embedder_shape_and_normalisation(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.name == REFERENCE_EMBEDDER == "all-MiniLM-L6-v2" and embedder.dim == 384
    vectors = embedder.embed(["The cat sat on the mat.", "Quarterly revenue grew 4%.", ""])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_reference_embedder_puts_similar_sentences_closer(embedder):
    a, b, c = embedder.embed(
        [
            "Alice lives in Paris.",
            "Alice's home is in Paris, France.",
            "The stock market fell sharply on Monday.",
        ]
    )
    assert a @ b > 0.7 > 0.2 > a @ c


def test_reference_embedder_is_deterministic_and_batch_independent(embedder):
    one = embedder.embed(["Bob likes sushi."])[0]
    many = embedder.embed(["Something else entirely.", "Bob likes sushi."])[1]
    np.testing.assert_allclose(one, many, atol=1e-5)


# ---- the library's embedder: int8 ONNX, no torch -----------------------------------------------


def test_library_embedder_shape_normalisation_and_batch_independence():
    onnx = library_embedder()
    assert isinstance(onnx, Embedder)
    assert onnx.name == LIBRARY_EMBEDDER and onnx.dim == 384
    vectors = onnx.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert onnx.embed([]).shape == (0, 384)
    alone = np.stack([onnx.embed([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, vectors, atol=1e-5)  # padding never leaks into a vector


def test_library_embedder_agrees_with_the_reference_one(embedder):
    onnx, reference = library_embedder().embed(TEXTS), embedder.embed(TEXTS)
    cosines = np.sum(onnx * reference, axis=1)
    assert cosines.min() > 0.99, cosines
    # the similarities a search ranks by move by less than 0.02
    assert np.abs(onnx @ onnx.T - reference @ reference.T).max() < 0.02


def test_library_embedder_puts_similar_sentences_closer():
    a, b, c = library_embedder().embed(
        [
            "Alice lives in Paris.",
            "Alice's home is in Paris, France.",
            "The stock market fell sharply on Monday.",
        ]
    )
    assert a @ b > 0.7 > 0.2 > a @ c


def test_library_tokenizer_is_the_model_packages_file():
    shipped = Path(default_model_path()) / "tokenizer.json"
    assert MINILM_TOKENIZER.read_bytes() == shipped.read_bytes()


# ---- OpenAIEmbedder against a scripted server --------------------------------------------------


class ScriptedServer:
    """Answers /v1/embeddings like an OpenAI-compatible server: un-normalised vectors, data
    listed in reverse order (clients must sort by `index`)."""

    def __init__(self, dim: int = 8, drop_one: bool = False, status: int = 200) -> None:
        self.dim, self.drop_one, self.status = dim, drop_one, status
        self.requests: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/embeddings"
        body = json.loads(request.content)
        self.requests.append(body)
        if self.status != 200:
            return httpx2.Response(self.status, json={"error": {"message": "overloaded"}})
        dim = body.get("dimensions", self.dim)
        data = [
            {"object": "embedding", "index": i, "embedding": self.vector(text, dim)}
            for i, text in enumerate(body["input"])
        ]
        if self.drop_one:
            data = data[1:]
        return httpx2.Response(
            200,
            json={
                "object": "list",
                "model": body["model"],
                "data": data[::-1],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            },
        )

    @staticmethod
    def vector(text: str, dim: int) -> list[float]:
        return (np.random.default_rng(len(text)).random(dim) * 5 + 1).tolist()


def _embedder(server: ScriptedServer, **kwargs) -> OpenAIEmbedder:
    client = httpx2.Client(transport=httpx2.MockTransport(server))
    return OpenAIEmbedder(
        "text-embedding-test",
        base_url="http://embeddings.test/v1",
        api_key="test",
        http_client=client,
        max_retries=0,
        **kwargs,
    )


def test_openai_embedder_batches_orders_and_normalises():
    server = ScriptedServer()
    emb = _embedder(server, batch_size=2)
    texts = ["a", "bb", "ccc", "dddd", ""]
    vectors = emb.embed(texts)
    assert [r["input"] for r in server.requests] == [["a", "bb"], ["ccc", "dddd"], [" "]]
    assert all(r["model"] == "text-embedding-test" for r in server.requests)
    assert all(r["encoding_format"] == "float" for r in server.requests)
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    for text, vec in zip(texts, vectors, strict=True):
        raw = np.array(ScriptedServer.vector(text or " ", 8))
        np.testing.assert_allclose(vec, raw / np.linalg.norm(raw), rtol=1e-5)
    assert emb.name == "text-embedding-test" and isinstance(emb, Embedder)


def test_openai_embedder_dimension_is_asked_once_or_given():
    server = ScriptedServer(dim=12)
    probed = _embedder(server)
    assert probed.dim == 12 and probed.dim == 12
    assert len(server.requests) == 1
    assert probed.embed([]).shape == (0, 12)
    fixed = _embedder(server, dimensions=6)
    assert fixed.dim == 6 and len(server.requests) == 1  # no probe needed
    assert fixed.embed(["x"]).shape == (1, 6) and server.requests[-1]["dimensions"] == 6


def test_openai_embedder_rejects_a_short_answer():
    with pytest.raises(ValueError, match="returned 1 embeddings for 2 inputs"):
        _embedder(ScriptedServer(drop_one=True)).embed(["a", "b"])


def test_openai_embedder_surfaces_server_errors():
    with pytest.raises(openai.APIStatusError, match="overloaded"):
        _embedder(ScriptedServer(status=503)).embed(["a"])
    with pytest.raises(ValueError, match="batch_size"):
        OpenAIEmbedder("m", api_key="test", batch_size=0)


# ---- concurrent calls share onnxruntime runs (`Coalescer`) -------------------------------------


def test_concurrent_library_embeds_share_runs_and_return_what_single_calls_return():
    """Calls that arrive while a run is under way are run together, as one batch, and each
    caller gets exactly (bit for bit) the rows a call of its own returns. The first run is held
    until 15 callers wait, so the merging is certain, not timing luck."""
    import threading

    from agemem.memory.embed import Coalescer

    onnx = library_embedder()
    texts = [[t] for t in TEXTS] + [TEXTS[:3], [], TEXTS[5:9], ["Where does Maya live?"] * 2]
    expected = [onnx.embed(t) for t in texts]  # each call alone
    started, release = threading.Event(), threading.Event()

    def held_embed(batch: list[str]) -> np.ndarray:  # the real embedder; the first run waits
        started.set()
        release.wait(30)
        return onnx.embed(batch)

    coalescer = Coalescer(held_embed, lanes=1)
    got: dict[int, np.ndarray] = {}

    def caller(i: int) -> None:
        got[i] = coalescer(texts[i])

    first = threading.Thread(target=caller, args=(0,))
    first.start()
    assert started.wait(30)
    rest = [threading.Thread(target=caller, args=(i,)) for i in range(1, len(texts))]
    for thread in rest:
        thread.start()
    while len(coalescer._waiting) < len(rest):  # every other caller queued behind the first run
        threading.Event().wait(0.005)
    release.set()
    for thread in [first, *rest]:
        thread.join(30)
    assert coalescer.calls == len(texts) and coalescer.runs == 2  # the first, then all the rest
    for i, rows in enumerate(expected):
        assert got[i].shape == rows.shape and np.array_equal(got[i], rows), texts[i]


def test_a_failing_call_fails_alone_when_calls_share_a_run():
    """A run that raises is retried call by call: the bad call gets its own error, the others
    their rows."""
    import threading

    from agemem.memory.embed import Coalescer

    onnx = library_embedder()
    started, release = threading.Event(), threading.Event()

    def held_embed(batch: list) -> np.ndarray:
        if not started.is_set():
            started.set()
            release.wait(30)
        return onnx.embed(batch)

    coalescer = Coalescer(held_embed, lanes=1)
    got: dict[str, object] = {}

    def caller(name: str, batch: list) -> None:
        try:
            got[name] = coalescer(batch)
        except Exception as err:  # noqa: BLE001
            got[name] = err

    calls = {"first": ["noted"], "good": ["Maya lives in Lisbon."], "bad": [None]}
    threads = {n: threading.Thread(target=caller, args=(n, b)) for n, b in calls.items()}
    threads["first"].start()
    assert started.wait(30)
    threads["good"].start()
    threads["bad"].start()
    while len(coalescer._waiting) < 2:
        threading.Event().wait(0.005)
    release.set()
    for thread in threads.values():
        thread.join(30)
    assert isinstance(got["bad"], Exception)
    assert np.array_equal(got["good"], onnx.embed(["Maya lives in Lisbon."]))
    assert np.array_equal(got["first"], onnx.embed(["noted"]))
    assert coalescer.runs == 2 and coalescer._running == 0 and not coalescer._waiting
