"""`agemem report`: runs merged into the papers' layout, with PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agemem.eval.cli import report_command


def _run(root: Path, benchmark: str, method: str, em: float, calls: dict[str, float]) -> Path:
    directory = root / benchmark / method
    directory.mkdir(parents=True)
    metrics = {"em": em, "f1": em + 0.1, "prompt_tokens_mean": 100 + 1000 * em, "tool_calls": calls}
    results = {"benchmark": benchmark, "method": method, "model": "m", "n": 2, "metrics": metrics}
    (directory / "results.json").write_text(json.dumps(results))
    return directory


def test_report_merges_runs_methods_by_benchmarks_with_plots(tmp_path):
    pytest.importorskip("matplotlib")
    dirs = [
        _run(tmp_path, "locomo", "rag", 0.25, {"rag/retrieve": 150.0}),
        _run(tmp_path, "hotpotqa", "rag", 0.5, {"rag/retrieve": 1.0}),
        _run(tmp_path, "hotpotqa", "no-memory", 0.1, {}),
    ]
    app = typer.Typer()
    app.command()(report_command)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, [*map(str, dirs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    # Methods in registry order as rows, benchmarks as columns, EM / F1 in %.
    assert "| method | hotpotqa | locomo |" in text
    assert "| no-memory (m) | 10.0 / 20.0 |  |" in text
    assert "| rag (m) | 50.0 / 60.0 | 25.0 / 35.0 |" in text
    assert "| hotpotqa | no-memory (m) | 0.00 |" in text  # tool table: no call is 0
    assert len(json.loads((out / "results.json").read_text())) == 3
    for name in ("score_vs_tokens.png", "tool_calls.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
