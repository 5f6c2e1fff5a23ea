"""`agemem store stats|export|import` on a real store file."""

from __future__ import annotations

from typer.testing import CliRunner

from agemem.cli import app
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope

runner = CliRunner()


def test_export_then_import_into_a_new_file(tmp_path, embedder):
    source = tmp_path / "a.db"
    with SQLiteStore(source, embedder) as store:
        store.add("Maya lives in Porto.", scope=Scope(user_id="alice"))
        store.add("Bob plays chess.", scope=Scope(user_id="bob"))

    stats = runner.invoke(app, ["store", "stats", str(source)])
    assert stats.exit_code == 0, stats.output
    assert "2 entries" in stats.output and "user alice: 1" in stats.output

    dump = tmp_path / "alice.jsonl"
    exported = runner.invoke(
        app, ["store", "export", str(source), "--out", str(dump), "--user", "alice"]
    )
    assert exported.exit_code == 0 and "exported 1 entries" in exported.output

    target = tmp_path / "b.db"
    imported = runner.invoke(app, ["store", "import", str(target), str(dump)])
    assert imported.exit_code == 0, imported.output
    with SQLiteStore(target, embedder) as store:
        assert [m.content for m in store.get_all()] == ["Maya lives in Porto."]


def test_bad_paths_give_one_line_errors(tmp_path):
    missing = runner.invoke(app, ["store", "stats", str(tmp_path / "nope.db")])
    assert missing.exit_code == 1 and "no store at" in missing.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": 3}\n')
    failed = runner.invoke(app, ["store", "import", str(tmp_path / "c.db"), str(bad)])
    assert failed.exit_code == 1 and "line 1" in failed.output
