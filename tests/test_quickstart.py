"""`agemem quickstart` end to end at a small scale: the real tiny model, SFT, GRPO, the real env,
reward and store, the scripted and model-read baselines, the report files. Nothing is mocked;
the scale (a 2-layer model, a few steps, 6 held-out tasks) keeps it under a minute."""

from __future__ import annotations

import json

import pytest

from agemem.quickstart import METHODS, run_quickstart

SMALL = [
    "sft.n_tasks=24",
    "sft.steps=30",
    "sft.batch_size=32",
    "sft.micro_batch_size=32",
    "sft.model.tiny_shape={layers: 2, hidden: 64, heads: 2, ffn: 128}",
    "sft.eval.n_tasks=0",
    "sft.run.progress=false",
    "sft.run.threads=1",  # two test workers share the 2 cores
    "grpo.steps=2",
    "grpo.tasks_per_step=2",
    "grpo.k=2",
    "grpo.curriculum=[]",
    "grpo.run.progress=false",
    "grpo.run.threads=1",
    "grpo.run.save_every=1",
    "grpo.eval.n_tasks=6",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, embedder):
    out = tmp_path_factory.mktemp("quickstart")
    return out, run_quickstart(out, SMALL, seeds=2, embedder=embedder)


def test_report_has_before_and_after_for_every_method(run):
    out, report = run
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    for when in ("before", "after"):
        assert set(report[when]) == set(METHODS)
        for method in METHODS:
            assert 0.0 <= report[when][method]["score"] <= 1.0
    assert report["grpo_steps"] == 2 and report["wall_s"] > 0 and report["peak_rss_mb"] > 0
    # two GRPO seeds from one SFT checkpoint: `after` is their mean
    first, second = (run["agemem"]["score"] for run in report["after_by_seed"])
    assert report["after"]["agemem"]["score"] == pytest.approx((first + second) / 2)
    assert [run["seed"] for run in report["after_by_seed"]] == [0, 1]
    assert (out / "grpo-seed1" / "final" / "config.json").is_file()
    # no-memory cannot answer after stage 2 reset its context: by construction it scores 0
    assert report["after"]["no-memory"]["score"] == 0.0


def test_report_files_and_plots(run):
    out, report = run
    markdown = (out / "report.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in markdown
    assert "| 1 |" in markdown  # the per-seed table
    for figure in ("learning_curves.png", "tool_mix.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![learning_curves](learning_curves.png)" in markdown


def test_running_again_resumes_instead_of_retraining(run, embedder):
    out, first = run
    again = run_quickstart(out, SMALL, seeds=2, embedder=embedder)
    assert again["grpo_steps"] == 2  # the finished run is not trained further
    assert again["before"]["agemem"] == first["before"]["agemem"]  # read back from metrics
