"""`agemem report --against`: two runs compared question by question (`agemem.eval.paired`)."""

from __future__ import annotations

import json
import shutil
import statistics
from math import comb

import pytest
import typer
from typer.testing import CliRunner

from agemem.eval.cli import report_command
from agemem.eval.paired import PairedError, paired
from agemem.eval.runner import EvalSettings, run_eval


def _scores(values: list[float]) -> dict[tuple[str, int], dict[str, float]]:
    return {(f"task-{i}", 0): {"f1": v, "em": float(v == 1.0)} for i, v in enumerate(values)}


def test_sign_test_and_bootstrap_interval_on_a_known_split():
    # 32 questions: 9 where `a` is better by 0.5, 3 where it is worse by 0.25, 20 equal.
    a = _scores([1.0] * 9 + [0.25] * 3 + [0.5] * 20)
    b = _scores([0.5] * 9 + [0.5] * 3 + [0.5] * 20)
    r = paired(a, b, "f1")
    assert (r.n, r.wins, r.losses, r.ties) == (32, 9, 3, 20)
    assert r.diff == pytest.approx((9 * 0.5 - 3 * 0.25) / 32)
    assert r.mean_a - r.mean_b == pytest.approx(r.diff)
    # Two-sided exact binomial test of 9 successes in 12 at p = 1/2, by hand.
    tail = sum(comb(12, k) for k in range(9, 13)) / 2**12
    assert r.p_sign == pytest.approx(2 * tail)
    assert r.ci_low < r.diff < r.ci_high and r.ci_low > -0.25 and r.ci_high < 0.5
    assert paired(a, b, "f1") == r  # seeded: the same report twice
    # close to the normal approximation's interval, mean +- 1.96 standard errors
    d = [0.5] * 9 + [-0.25] * 3 + [0.0] * 20
    se = statistics.stdev(d) / len(d) ** 0.5
    assert r.ci_low == pytest.approx(r.diff - 1.96 * se, abs=0.02)
    assert r.ci_high == pytest.approx(r.diff + 1.96 * se, abs=0.02)
    # the other way round: every sign flips
    back = paired(b, a, "f1")
    assert (back.wins, back.losses, back.diff) == (3, 9, -r.diff)


def test_identical_differences_give_a_point_interval_and_ties_give_p_one():
    a, b = _scores([1.0, 1.0, 1.0]), _scores([0.0, 0.0, 0.0])
    r = paired(a, b, "em")
    assert (r.diff, r.ci_low, r.ci_high, r.wins) == (1.0, 1.0, 1.0, 3)
    assert r.p_sign == pytest.approx(0.25)  # 3 of 3: 2 * (1/2)^3
    same = paired(a, a, "f1")
    assert (same.ties, same.p_sign, same.diff) == (3, 1.0, 0.0)


def test_only_questions_both_runs_hold_are_paired():
    a = _scores([1.0, 0.0, 0.5])
    b = {k: v for k, v in _scores([0.0, 0.0, 0.0, 1.0]).items() if k != ("task-0", 0)}
    r = paired(a, b, "f1")
    assert r.n == 2 and r.mean_a == 0.25
    with pytest.raises(PairedError, match="no question"):
        paired(_scores([1.0]), {("other", 0): {"f1": 1.0}}, "f1")
    with pytest.raises(PairedError, match="'judge'"):  # a run no judge graded
        paired(_scores([1.0]), _scores([0.0]), "judge")


def test_report_against_a_run_pairs_real_runs_by_question(tmp_path):
    dirs = {}
    for method in ("rag", "no-memory"):
        dirs[method] = tmp_path / method
        settings = EvalSettings(
            "hotpotqa", method, policy="tiny", limit=3, max_new_tokens=6, t_max=512
        )
        run_eval(settings, dirs[method], progress=False)
    app = typer.Typer()
    app.command()(report_command)
    out = tmp_path / "report"
    args = [str(dirs["rag"]), str(dirs["no-memory"]), "--against", str(dirs["rag"])]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "Paired by question against rag (tiny) on hotpotqa" in result.output
    (row,) = json.loads((out / "paired.json").read_text())  # rag is not paired with itself
    assert row["run"] == str(dirs["no-memory"]) and row["against"] == str(dirs["rag"])
    results = {m: json.loads((d / "results.json").read_text()) for m, d in dirs.items()}
    assert row["f1"]["n"] == 3 == results["rag"]["metrics"]["n_questions"]
    # the paired means are the runs' own scores: the same questions, the same metric
    assert row["f1"]["mean_a"] == pytest.approx(results["no-memory"]["metrics"]["f1"])
    assert row["f1"]["mean_b"] == pytest.approx(results["rag"]["metrics"]["f1"])
    assert row["em"]["mean_a"] == pytest.approx(results["no-memory"]["metrics"]["em"])
    # two runs of one method (seeds of a recipe): their differences summarised in one line
    assert "runs: F1 difference" not in result.output  # one run per method: no such line
    shutil.copytree(dirs["no-memory"], tmp_path / "no-memory-again")
    args = [
        str(dirs["no-memory"]),
        str(tmp_path / "no-memory-again"),
        "--against",
        str(dirs["rag"]),
    ]
    twice = CliRunner().invoke(app, args)
    assert twice.exit_code == 0, twice.output
    diff = 100 * (row["f1"]["mean_a"] - row["f1"]["mean_b"])
    assert f"no-memory, 2 runs: F1 difference {diff:+.1f} on average (sd 0.0," in twice.output
    # a directory without episodes: one line, exit 1
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "results.json").write_text((dirs["rag"] / "results.json").read_text())
    bad = CliRunner().invoke(app, [str(dirs["rag"]), "--against", str(tmp_path / "empty")])
    assert bad.exit_code == 1 and "has no episodes.jsonl" in bad.output
