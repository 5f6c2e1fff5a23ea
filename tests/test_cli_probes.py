"""The real `agemem` CLI, in subprocesses, on real bad files: every unreadable store, export
target, import source, episode file or run file is answered with one line on stderr that names
the file, a non-zero exit status and no traceback. Also `--version`, `store export --out -`,
`store search|add|delete` and the one default store the library and the CLI share."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import NewMemory, Scope

AGEMEM = str(Path(sys.executable).with_name("agemem"))


def run(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "AGEMEM_STORE"}
    environ.update(HOME=str(home), **env)
    return subprocess.run(
        [AGEMEM, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=environ,
        timeout=600,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory, embedder) -> Path:
    """A good store of 300 entries (several pages), and the bad files made from it."""
    d = tmp_path_factory.mktemp("probes")
    good = d / "good.db"
    vector = embedder.embed(["a fact"])[0]
    with SQLiteStore(good, embedder) as store:
        store.add_many(
            [
                NewMemory(f"fact {i}: box {i % 13}", scope=Scope(f"u{i % 2}"), embedding=vector)
                for i in range(300)
            ]
        )
    with sqlite3.connect(good) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = good.read_bytes()
    (d / "random.db").write_bytes(os.urandom(8192))
    (d / "text.db").write_text("hello, not a database\n")
    (d / "truncated.db").write_bytes(data[: len(data) // 3])
    with sqlite3.connect(d / "foreign.db") as conn:
        conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'x')")
    with sqlite3.connect(good) as conn:  # damaged index pages: the table pages stay readable
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'memories_scope'"
        ).fetchone()[0]
    damaged = bytearray(data)
    offset = (root - 1) * page
    damaged[offset + 8 : offset + page] = os.urandom(page - 8)
    (d / "badindex.db").write_bytes(bytes(damaged))
    (d / "adir").mkdir()
    (d / "binary.jsonl").write_bytes(b"\xb1\xff" + os.urandom(1000))
    (d / "export.jsonl").write_text(json.dumps({"content": "Maya lives in Porto."}) + "\n")
    (d / "binary.episodes").write_bytes(b"\x80\x81" + os.urandom(500))
    (d / "deep.episodes").write_text("[" * 100_000 + "\n")
    (d / "garbage-run").mkdir()
    (d / "garbage-run" / "run.json").write_bytes(b"\x00garbage{{")
    (d / "home").mkdir()
    return d


# One probe per kind of bad file and command (each is a subprocess that imports agemem).
PROBES = [
    *[
        (["store", "stats", "{d}/" + f], f)
        for f in ["random.db", "text.db", "truncated.db", "foreign.db", "badindex.db", "adir"]
    ],
    (["store", "export", "{d}/random.db", "--out", "{d}/out.jsonl"], "random.db"),
    (["store", "export", "{d}/badindex.db", "--out", "{d}/out.jsonl"], "badindex.db"),
    (["store", "export", "{d}/good.db", "--out", "{d}/no-folder/x.jsonl"], "no-folder"),
    (["store", "export", "{d}/good.db", "--out", "{d}/adir"], "adir"),
    (["store", "import", "{d}/truncated.db", "{d}/export.jsonl"], "truncated.db"),
    (["store", "import", "{d}/foreign.db", "{d}/export.jsonl"], "foreign.db"),
    (["store", "import", "{d}/adir", "{d}/export.jsonl"], "adir"),
    (["store", "import", "{d}/new.db", "{d}/binary.jsonl"], "binary.jsonl"),
    (["chat", "--store", "{d}/random.db", "--scripted", "no-memory"], "random.db"),
    (["chat", "--store", "{d}/foreign.db", "--scripted", "no-memory"], "foreign.db"),
    (["store", "search", "box", "--store", "{d}/truncated.db", "--user", "u1"], "truncated.db"),
    (["store", "add", "a fact", "--store", "{d}/foreign.db", "--user", "u1"], "foreign.db"),
    (["store", "delete", "mem_00000000", "--store", "{d}/adir", "--user", "u1"], "adir"),
    (["show", "{d}/binary.episodes"], "binary.episodes"),
    (["show", "{d}/deep.episodes"], "deep.episodes"),
    (
        [
            "eval",
            "--benchmark",
            "synthetic",
            "--method",
            "no-memory",
            "--out",
            "{d}/garbage-run",
            "--limit",
            "1",
            "--no-progress",
        ],
        "garbage-run/run.json",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("args", "named"), PROBES, ids=[" ".join(a[:2]) + " " + n for a, n in PROBES]
)
def test_a_bad_file_gets_one_line_naming_it(files, args, named):
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    result = run(*(a.format(d=files) for a in args), home=files / "home")
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named in lines[0]
    after = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k in before} == before  # nothing was written
    assert not (files / "out.jsonl").exists()


def test_damaged_index_pages_used_to_pass_stats(files):
    """Reading every row works (the table pages are intact): only the integrity check fails."""
    with sqlite3.connect(files / "badindex.db") as conn:
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == 300
    result = run("store", "stats", str(files / "badindex.db"), home=files / "home")
    assert "damaged SQLite file" in result.stderr and "integrity_check" in result.stderr


def test_version(files):
    from importlib.metadata import version

    result = run("--version", home=files / "home")
    assert result.returncode == 0 and result.stdout.strip() == f"agemem {version('agemem')}"


def test_export_to_standard_output(files):
    result = run("store", "export", str(files / "good.db"), "--out", "-", home=files / "home")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 300 and records[0]["content"] == "fact 0: box 0"
    assert result.stderr.strip() == "exported 300 entries to standard output"
    assert not Path("-").exists()


def test_search_add_delete_are_scoped_and_share_the_default_store(files, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    added = run("store", "add", "Maya lives in Porto.", "--user", "alice", home=home)
    assert added.returncode == 0, added.stderr
    memory_id = added.stdout.split()[-1]
    default = home / ".agemem" / "memory.db"
    assert default.is_file()

    unscoped = run("store", "search", "Where does Maya live?", home=home)
    assert unscoped.returncode == 1 and "needs a scope: pass --user, --agent or --run" in (
        unscoped.stderr
    )
    found = run("store", "search", "Where does Maya live?", "--user", "alice", home=home)
    assert found.returncode == 0 and memory_id in found.stdout and "Porto" in found.stdout
    other = run("store", "search", "Maya", "--user", "bob", "--json", home=home)
    assert other.returncode == 0 and other.stdout == ""
    every = run("store", "search", "Maya", "--all", "--json", home=home)
    assert json.loads(every.stdout.splitlines()[0])["id"] == memory_id

    # the library's default is the same file
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("AGEMEM_STORE", raising=False)
    from agemem.api import Memory

    memory = Memory()
    try:
        assert Path(memory.store.path) == default
        assert memory.get(memory_id, user_id="alice")["memory"] == "Maya lives in Porto."
    finally:
        memory.close()

    wrong_scope = run("store", "delete", memory_id, "--user", "bob", home=home)
    assert wrong_scope.returncode == 1 and memory_id in wrong_scope.stderr
    deleted = run("store", "delete", memory_id, "--user", "alice", home=home)
    assert deleted.returncode == 0 and "deleted" in deleted.stdout

    override = tmp_path / "elsewhere.db"
    moved = run("store", "add", "x", "--all", home=home, AGEMEM_STORE=str(override))
    assert moved.returncode == 0 and override.is_file()


def test_export_replaces_a_file_whole(files, tmp_path):
    out = tmp_path / "dump.jsonl"
    out.write_text("old\n")
    result = run("store", "export", str(files / "good.db"), "--out", str(out), home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 300
    assert [p.name for p in tmp_path.iterdir()] == ["dump.jsonl"]  # no temporary file left
