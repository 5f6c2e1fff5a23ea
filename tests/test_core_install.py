"""The core install (`pip install agemem`, no extras): importing agemem loads no torch, a store
records the embedder that wrote it and refuses another, and a store whose embedder's packages are
missing says what to install. Real embedders, real SQLite files; the missing packages are made
missing in a subprocess (an import of them fails there as it does without them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agemem import Memory
from agemem.memory.embed import LIBRARY_EMBEDDER, REFERENCE_EMBEDDER, library_embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import EmbedderMismatch

HEAVY = ("torch", "transformers", "sentence_transformers", "accelerate", "peft", "gguf")
BLOCK = "import sys\nfor m in {mods!r}: sys.modules[m] = None\n"  # `import m` now fails


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


@pytest.mark.parametrize("statement", ["import agemem", "from agemem import Memory"])
def test_importing_agemem_loads_no_torch(statement):
    done = _python(f"{statement}\nimport sys\nprint(sorted(set({HEAVY!r}) & set(sys.modules)))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_memory_runs_without_the_training_packages(tmp_path):
    """Store, find and summarise with torch and sentence-transformers unimportable."""
    code = BLOCK.format(mods=HEAVY) + (
        "from agemem import Memory\n"
        "from agemem.context import Context\n"
        f"m = Memory({str(tmp_path / 'core.db')!r})\n"
        "m.add('Maya lives in Lisbon.', user_id='maya')\n"
        "hit = m.search('Where does Maya live?', user_id='maya')['results'][0]\n"
        "assert hit['memory'] == 'Maya lives in Lisbon.', hit\n"
        "tools = m.tools(user_id='maya', context=Context(t_max=200))\n"
        "print(m.store.embedder.name)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == LIBRARY_EMBEDDER


def test_a_new_store_records_the_library_embedder_and_reopens_with_it(tmp_path):
    path = tmp_path / "m.db"
    with Memory(path) as memory:
        assert memory.store.embedder.name == LIBRARY_EMBEDDER
        memory.add("Maya lives in Lisbon.", user_id="maya")
    with SQLiteStore(path) as store:  # no embedder given: the one the file records
        assert store.embedder is library_embedder()
        assert store.search("Where does Maya live?", top_k=1)[0].content == "Maya lives in Lisbon."


def test_a_store_refuses_the_other_build_of_the_model(tmp_path, embedder):
    onnx_store, reference_store = tmp_path / "onnx.db", tmp_path / "reference.db"
    SQLiteStore(onnx_store).close()
    SQLiteStore(reference_store, embedder).close()
    with pytest.raises(EmbedderMismatch) as refused:
        SQLiteStore(onnx_store, embedder)
    message = str(refused.value)
    assert "\n" not in message
    assert f"built with embedder {LIBRARY_EMBEDDER!r}" in message
    assert f"opened with {REFERENCE_EMBEDDER!r}" in message
    with pytest.raises(EmbedderMismatch, match=f"built with embedder {REFERENCE_EMBEDDER!r}"):
        Memory(reference_store, embedder=library_embedder())
    with SQLiteStore(reference_store) as reopened:  # no embedder given: the one the file records
        assert reopened.embedder.name == REFERENCE_EMBEDDER


def test_a_reference_store_without_sentence_transformers_says_what_to_install(tmp_path, embedder):
    path = tmp_path / "reference.db"
    SQLiteStore(path, embedder).close()
    code = BLOCK.format(mods=HEAVY) + f"from agemem import Memory\nMemory({str(path)!r})\n"
    done = _python(code)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (  # a StoreError: the CLI answers it in one line
        f"agemem.memory.backend.StoreEmbedderUnavailable: {path} was written by embedder "
        f"{REFERENCE_EMBEDDER!r}, the only one that can read it; embedder {REFERENCE_EMBEDDER!r} "
        "runs on sentence-transformers (torch), which this install lacks: "
        "pip install 'agemem[eval]'"
    )


def test_the_vector_graph_and_the_library_embedder_load_in_either_order():
    """usearch (the HNSW graph of large stores) carries a static libstdc++ that crashed
    onnxruntime when it was imported first."""
    graph_first = (
        "from agemem.memory.vector_index import _usearch_index\n_usearch_index()\n"
        "from agemem.memory.embed import OnnxEmbedder\nprint(OnnxEmbedder().embed(['x']).shape)"
    )
    embedder_first = (
        "from agemem.memory.embed import OnnxEmbedder\nvectors = OnnxEmbedder().embed(['x'])\n"
        "from agemem.memory.vector_index import VectorIndex, VectorIndexConfig\n"
        "index = VectorIndex(384, VectorIndexConfig(exact_threshold=1))\n"
        "index.upsert([7], vectors)\nprint(index.search(vectors[0], 1)[0])"
    )
    for code in (graph_first, embedder_first):
        done = _python(code)
        assert done.returncode == 0, (code, done.returncode, done.stderr[-2000:])
        assert done.stdout.strip() in ("(1, 384)", "[7]")


def test_the_cli_answers_a_reference_store_in_a_core_install_in_one_line(tmp_path, embedder):
    path = tmp_path / "reference.db"
    SQLiteStore(path, embedder).close()
    code = BLOCK.format(mods=HEAVY) + (
        "import sys\nfrom agemem.cli import app\n"
        f"sys.argv = ['agemem', 'store', 'stats', {str(path)!r}]\napp()\n"
    )
    done = _python(code)
    assert done.returncode == 1, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "pip install 'agemem[eval]'" in lines[0]
