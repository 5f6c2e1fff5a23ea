"""`agemem demo`: the walk on a real store, and its refusal to replace a file it did not make."""

from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from agemem.cli import app
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope

runner = CliRunner()


def _contents(path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT content FROM memories ORDER BY rowid")]
    finally:
        conn.close()


def test_demo_refuses_to_replace_an_existing_store(tmp_path, embedder):
    path = tmp_path / "precious.db"
    with SQLiteStore(path, embedder) as store:
        store.add("Alice's passport number is X1234567.", scope=Scope(user_id="alice"))
    before = path.read_bytes()

    result = runner.invoke(app, ["demo", "--path", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(path) in lines[0] and "--overwrite" in lines[0]
    assert path.read_bytes() == before
    assert _contents(path) == ["Alice's passport number is X1234567."]

    folder = tmp_path / "a-folder"
    folder.mkdir()
    result = runner.invoke(app, ["demo", "--path", str(folder), "--overwrite"])
    assert result.exit_code == 1 and "is a directory" in result.output
    assert folder.is_dir()


def test_demo_overwrite_replaces_and_a_new_path_is_created(tmp_path, embedder):
    path = tmp_path / "old.db"
    with SQLiteStore(path, embedder) as store:
        store.add("An old entry the demo may replace.", scope=Scope(user_id="alice"))
    result = runner.invoke(app, ["demo", "--path", str(path), "--overwrite"])
    assert result.exit_code == 0, result.output
    contents = _contents(path)
    assert "An old entry the demo may replace." not in contents
    assert any("Porto" in c for c in contents)  # the demo's corrected entry

    fresh = tmp_path / "new" / "demo.db"
    result = runner.invoke(app, ["demo", "--path", str(fresh)])
    assert result.exit_code == 0, result.output
    assert any("Porto" in c for c in _contents(fresh))
