"""The README's library example runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_library_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = python_blocks()[0]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "Maya" in printed
    memory = namespace["memory"]
    events = [e["event"] for e in memory.history(namespace["top"], user_id="alice")]
    assert events[-1] == "UPDATE"
    assert memory.get(namespace["top"], user_id="bob") is None  # the scope rule holds
    assert (tmp_path / "memory.db").exists()
