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
    with SQLiteStore(target) as store:  # built by the CLI: its recorded embedder
        assert [m.content for m in store.get_all()] == ["Maya lives in Porto."]


def test_bad_paths_give_one_line_errors(tmp_path):
    missing = runner.invoke(app, ["store", "stats", str(tmp_path / "nope.db")])
    assert missing.exit_code == 1 and "no store at" in missing.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": 3}\n')
    failed = runner.invoke(app, ["store", "import", str(tmp_path / "c.db"), str(bad)])
    assert failed.exit_code == 1 and "line 1" in failed.output


def test_store_commands_take_a_file_or_a_postgres_url(tmp_path, store_at):
    """`--store` and the PATH argument accept a postgresql:// URL as they accept a file (kept
    whole: no Path() turning postgresql:// into postgresql:/)."""
    from agemem.memory.postgres import redacted

    store = store_at(tmp_path, "cli.db")
    added = runner.invoke(app, ["store", "add", "Maya lives in Porto.", "--store", store,
                                "--user", "alice"])  # fmt: skip
    assert added.exit_code == 0 and added.output.startswith("added "), added.output
    found = runner.invoke(app, ["store", "search", "Where does Maya live?", "--store", store,
                                "--user", "alice", "--json"])  # fmt: skip
    assert found.exit_code == 0, found.output
    assert "Maya lives in Porto." in found.output
    stats = runner.invoke(app, ["store", "stats", store])
    assert stats.exit_code == 0, stats.output
    assert stats.output.startswith(f"{redacted(store)}: 1 entries"), stats.output
    assert "user alice: 1" in stats.output
    dump = tmp_path / "dump.jsonl"
    exported = runner.invoke(app, ["store", "export", store, "--out", str(dump)])
    assert exported.exit_code == 0 and "exported 1 entries" in exported.output
    copy = store_at(tmp_path, "copy.db")
    imported = runner.invoke(app, ["store", "import", copy, str(dump)])
    assert imported.exit_code == 0, imported.output
    deleted = runner.invoke(app, ["store", "delete", added.output.split()[1], "--store", copy,
                                  "--user", "alice"])  # fmt: skip
    assert deleted.exit_code == 0 and "Maya lives in Porto." in deleted.output


def test_an_unknown_store_url_is_one_line_error():
    failed = runner.invoke(app, ["store", "search", "x", "--store", "mysql://db/x", "--all"])
    assert failed.exit_code == 1 and "unknown store URL" in failed.output
