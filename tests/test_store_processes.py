"""SQLiteStore across real processes sharing one file, with the real embedder.

Child processes run with one torch thread (OMP_NUM_THREADS=1 / torch.set_num_threads(1)): two
processes on a 2-core machine each asking for two threads would spend their time waiting on
each other, not testing the store.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope

pytestmark = pytest.mark.slow

N_ADDS = 200
SHARED_FACTS = [
    "The team offsite is in Lisbon in September.",
    "Mia's cat is called Pepper.",
    "The VPN certificate expires on 12 March.",
    "Our bank's support line closes at 6pm.",
    "Tom drinks his coffee without sugar.",
    "The staging server runs Ubuntu 22.04.",
    "Lena is learning to play the cello.",
    "The parking garage is under the library.",
]

WRITE = """
import json, sys
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope
u1 = Scope(user_id="u1")
with SQLiteStore(sys.argv[1]) as s:
    key = s.add("The spare key is under the blue flowerpot.", scope=u1).item
    bday = s.add("Grandma's birthday is on the 4th of July.", scope=u1).item
    s.update(bday.id, "Grandma's birthday is on the 5th of July.")
    temp = s.add("A temporary reminder about parcels.", scope=u1).item
    s.delete(temp.id)
    print(json.dumps([key.id, bday.id, temp.id]))
"""

READ = """
import json, sys
from agemem.memory.sqlite import SQLiteStore
with SQLiteStore(sys.argv[1]) as s:
    hit = s.search("where is the spare key?", top_k=1)[0]
    events = [e.event for e in s.history(sys.argv[2])]
    print(json.dumps({"hit": hit.id, "count": s.count(), "events": events}))
"""


def _python(code: str, *args: str) -> object:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_entries_persist_across_processes(tmp_path, embedder):
    path = str(tmp_path / "shared.db")
    with SQLiteStore(path, embedder) as here:
        assert here.search("spare key") == []  # this process's index is loaded, and empty
        key_id, bday_id, temp_id = _python(WRITE, path)
        # written by another process: picked up from the history change feed
        hits = here.search("when is grandma's birthday", top_k=3, scope=Scope(user_id="u1"))
        assert hits[0].id == bday_id and "5th of July" in hits[0].content
        assert temp_id not in {h.id for h in here.search("parcels reminder", top_k=5)}
    seen = _python(READ, path, bday_id)
    assert seen == {"hit": key_id, "count": 2, "events": ["ADD", "UPDATE"]}


def _writer(path: str, worker: str, barrier) -> None:
    import torch

    torch.set_num_threads(1)
    with SQLiteStore(path) as store:
        notes = [f"Worker {worker} logged event number {i}." for i in range(N_ADDS)]
        vectors = store.embedder.embed(notes)  # embedded up front: the race is about writing
        barrier.wait()  # start writing together
        for note, vec in zip(notes, vectors, strict=True):
            store.add(note, embedding=vec, dedupe=False)  # one transaction each
        for fact in SHARED_FACTS:  # both add the same facts: dedupe must keep one of each
            store.add(fact)


def test_two_processes_writing_at_once_lose_nothing(tmp_path, embedder):
    path = str(tmp_path / "shared.db")
    SQLiteStore(path, embedder).close()  # create the file before the race
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_writer, args=(path, w, barrier)) for w in ("A", "B")]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=300)
    assert [p.exitcode for p in workers] == [0, 0]

    with SQLiteStore(path, embedder) as store:
        contents = [m.content for m in store.get_all()]
        assert len(contents) == 2 * N_ADDS + len(SHARED_FACTS)
        for worker in ("A", "B"):
            expected = {f"Worker {worker} logged event number {i}." for i in range(N_ADDS)}
            assert expected <= set(contents)
        assert sorted(c for c in contents if c in SHARED_FACTS) == sorted(SHARED_FACTS)
        for item in store.get_all():
            assert [(e.event, e.new_content) for e in store.history(item.id)] == [
                ("ADD", item.content)
            ]
        hit = store.search("which instrument is Lena learning", top_k=1)[0]
        assert hit.content == "Lena is learning to play the cello."
