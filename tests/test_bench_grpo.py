"""`agemem bench grpo`: our update and TRL's GRPOTrainer train the same objective on the same
episodes, append-only ones and the AgeMem env's with Filter and Summary (real tiny model, real
env and oracle, real TRL); the bench reports both sides for each case."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

pytest.importorskip("trl", reason="pip install 'agemem[train]'")

from agemem.bench.grpo import (
    bench_samples,
    fresh_copy,
    ours_step,
    run_grpo_bench,
    trl_step,
    trl_trainer,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("episodes", ["append-only", "agemem"])
def test_one_update_moves_the_weights_as_trls_does(tmp_path, episodes) -> None:
    model, tok, samples = bench_samples("tiny", n_tasks=1, k=2, seed=0, episodes=episodes)
    # the two rollouts of the task may coincide, and group advantages sum to 0: give the first
    # episode's turns +1 and the second's -0.5 so the gradient cannot cancel
    half = len(samples) // 2
    samples = [replace(s, advantage=1.0 if i < half else -0.5) for i, s in enumerate(samples)]
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    trainer = trl_trainer(str(tmp_path), tok, rows=8, accumulation=1)
    trainer.model.train()
    ours, ref = fresh_copy(str(tmp_path)).train(), fresh_copy(str(tmp_path)).eval()
    start = [p.detach().clone() for p in ours.parameters()]
    # plain SGD: the step is the gradient itself (Adam's first step would hide its scale)
    ours_step(ours, ref, torch.optim.SGD(ours.parameters(), lr=1.0), samples, 8)
    theirs = torch.optim.SGD(trainer.model.parameters(), lr=1.0)
    trl_step(trainer, theirs, samples, 8, tok.pad_token_id)
    moved = max((p - s).abs().max().item() for p, s in zip(ours.parameters(), start, strict=True))
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(ours.parameters(), trainer.model.parameters(), strict=True)
    )
    assert moved > 1e-4  # the update did something
    assert diff < 1e-5 * max(1.0, moved)


def test_bench_reports_both_sides_on_the_same_tokens_for_each_case() -> None:
    payload = run_grpo_bench("tiny", n_tasks=1, k=2, micro_batch_size=8, repeats=1)
    append_only, agemem = payload["cases"]["append-only"], payload["cases"]["agemem"]
    assert append_only["packed_rows"] < append_only["turns"]  # append-only turns share rows
    # Filter/Summary rewrite the context and stage 1 shows one message: fewer turns share a row
    assert (
        agemem["packed_rows"] / agemem["turns"] > append_only["packed_rows"] / append_only["turns"]
    )
    for result in (append_only, agemem):
        assert result["ours_tokens_per_s"] > 0 and result["trl_tokens_per_s"] > 0
        expected = result["trl_s"] / result["ours_s"]
        assert result["ratio"] == pytest.approx(expected, rel=0.01)
        assert len(result["load_before"]) == 3 and len(result["load_after"]) == 3


def test_grpo_step_bench_refuses_an_unknown_path_in_one_line():
    from typer.testing import CliRunner

    from agemem.cli import app

    result = CliRunner().invoke(app, ["bench", "grpo-step", "--paths", "old,fast"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unknown path(s) ['fast']; choose from old, new"
