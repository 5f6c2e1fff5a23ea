"""`agemem report`: runs merged into the papers' layout, with PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from agemem.eval.cli import report_command
from agemem.eval.report import main_table


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
    assert "| method | locomo | hotpotqa |" in text  # AgeMem's benchmarks last, as in its table
    assert "| no-memory (m) |  | 10.0 / 20.0 |" in text
    assert "| rag (m) | 25.0 / 35.0 | 50.0 / 60.0 |" in text
    assert "| hotpotqa | no-memory (m) | 0.00 |" in text  # tool table: no call is 0
    assert len(json.loads((out / "results.json").read_text())) == 3
    for name in ("score_vs_tokens.png", "tool_calls.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _world(root: Path, benchmark: str, method: str, success: float, progress: float) -> dict:
    metrics = {"success": success, "progress": progress, "prompt_tokens_mean": 700.0}
    return {"benchmark": benchmark, "method": method, "model": "m", "n": 8, "metrics": metrics}


def test_the_five_benchmark_table_follows_agemem_and_averages_full_rows(tmp_path):
    runs = [
        json.loads((_run(tmp_path, "hotpotqa", "rag", 0.5, {}) / "results.json").read_text()),
        json.loads((_run(tmp_path, "synthetic", "rag", 0.0, {}) / "results.json").read_text()),
        _world(tmp_path, "babyai", "rag", 0.25, 0.25),
        _world(tmp_path, "pddl", "rag", 0.0, 0.5),
        _world(tmp_path, "scienceworld", "rag", 0.0, 0.3),
        _world(tmp_path, "twc", "rag", 0.0, 0.15),
        _world(tmp_path, "twc", "no-memory", 0.0, 0.1),
    ]
    table = main_table(runs)
    assert "| method | synthetic | twc | scienceworld | pddl | babyai | hotpotqa | avg |" in table
    # avg of F1 for HotpotQA and progress for the worlds: (60 + 25 + 50 + 30 + 15) / 5 = 36
    assert "| rag (m) | 0.0 / 10.0 | 0.0 / 15.0 | 0.0 / 30.0 | 0.0 / 50.0 | 25.0 / 25.0 |" in table
    assert table.splitlines()[2].endswith("| 50.0 / 60.0 | 36.0 |")
    assert "| no-memory (m) |  | 0.0 / 10.0 |  |  |  |  |  |" in table  # no average of one
