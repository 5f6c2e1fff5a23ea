"""SFT warm start on real oracle episodes with the real tiny model (no mocks).

The module fixture runs `run_sft` once: a small tiny model (2 layers) on 24 oracle episodes of
the synthetic curriculum for 40 steps, about 15 s on 2 cores.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from agemem.env import EnvConfig, run_episodes
from agemem.env.oracle import Oracle
from agemem.policy.hf import HFPolicy
from agemem.rewards import reward_fn
from agemem.tasks.synthetic import generate_tasks
from agemem.train.checkpoint import load_for_training
from agemem.train.config import ModelSettings, load_config
from agemem.train.loop import micro_batches
from agemem.train.metrics import read_metrics
from agemem.train.sft import keep_episodes, run_sft, sft_loss, sft_samples


def small_sft_config(out_dir, **changes):
    overrides = [
        f"run.out_dir={out_dir}",
        "run.progress=false",
        "run.threads=1",  # two test workers share the 2 cores
        "n_tasks=24",
        "steps=40",
        "batch_size=32",
        "micro_batch_size=16",
        "model.tiny_shape={layers: 2, hidden: 64, heads: 2, ffn: 128}",
        "eval.n_tasks=0",
        *[f"{k}={v}" for k, v in changes.items()],
    ]
    return load_config("quickstart", overrides, kind="sft")


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, embedder):
    out = tmp_path_factory.mktemp("sft")
    return run_sft(small_sft_config(out), embedder=embedder), out


def test_sft_loss_decreases_on_oracle_data(sft_run):
    result, out = sft_run
    losses = [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 40 and result.steps == 40 and not result.interrupted
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert result.data["kept"] == result.data["episodes"] == 24  # min_reward=None keeps all
    # the final model loads as any checkpoint does, with the tokenizer's template
    model, tokenizer = load_for_training(ModelSettings(name=str(result.final_dir)))
    assert "system" in tokenizer.chat_template  # the filter that leaves system messages out
    assert sum(p.numel() for p in model.parameters()) > 0


def test_agemem_plot_draws_the_sft_loss_and_names_a_bad_directory(sft_run, tmp_path):
    from typer.testing import CliRunner

    from agemem.cli import app

    _, out = sft_run
    result = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    png = tmp_path / "sft_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert not (tmp_path / "learning_curves.png").exists()  # no rollouts in an SFT run
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "none")])
    assert result.exit_code == 1 and "metrics.jsonl does not exist" in result.output
    # a metrics file itself, under a label of its own
    args = ["plot", str(out / "metrics.jsonl"), "--label", "warm start", "--out", str(tmp_path)]
    png.unlink()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(app, [*args, "--label", "one too many"])
    assert result.exit_code == 1 and "2 --label for 1 runs" in result.output


def test_samples_mask_prompt_tokens_and_loss_is_completion_nll(sft_run, embedder):
    result, _ = sft_run
    model, tokenizer = load_for_training(ModelSettings(name=str(result.final_dir)))
    policy = HFPolicy(model, tokenizer)
    tasks = generate_tasks("train", limit=1)
    (episode,) = run_episodes(
        Oracle(), tasks, EnvConfig.preset("synthetic"), progress=False,
        embedder=embedder,
    )  # fmt: skip
    samples = sft_samples([episode], policy)
    assert len(samples) == len(episode.steps)
    for sample, step in zip(samples, episode.steps, strict=True):
        assert sample.prompt_ids == policy.encode_prompt(step.messages)
        assert sample.completion_ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(sample.completion_ids[:-1]) == step.text
        assert "system" not in tokenizer.decode(sample.prompt_ids)  # left out by the template

    # The loss is the mean NLL of the completion tokens alone: computed here independently by
    # HFPolicy's own scorer on (prompt, completion) pairs.
    chunk = samples[:4]
    tokens = sum(len(s.completion_ids) for s in chunk)
    with torch.no_grad():
        loss, metrics = sft_loss(model, chunk, float(tokens), tokenizer.pad_token_id)
    expected = -sum(sum(policy.logprobs_of(s.prompt_ids, s.completion_ids)) for s in chunk)
    assert math.isclose(float(loss), expected / tokens, rel_tol=1e-4)
    assert metrics["tokens"] == tokens


def test_gradient_checkpointing_and_token_capped_micro_batches_keep_the_gradient(sft_run, embedder):
    """Recomputed activations and micro-batches cut by padded tokens change memory, not the
    gradient of the step's loss."""
    result, _ = sft_run
    tasks = generate_tasks("train", limit=2)
    episodes = run_episodes(
        Oracle(), tasks, EnvConfig.preset("synthetic"), progress=False,
        embedder=embedder,
    )  # fmt: skip

    def gradient(checkpointing: bool, max_tokens: int | None) -> torch.Tensor:
        settings = ModelSettings(name=str(result.final_dir), gradient_checkpointing=checkpointing)
        model, tokenizer = load_for_training(settings)
        samples = sft_samples(episodes, HFPolicy(model, tokenizer))
        model.train()
        total = float(sum(s.n_generated for s in samples))
        chunks = micro_batches(samples, 64, max_tokens)
        for chunk in chunks:
            sft_loss(model, chunk, total, tokenizer.pad_token_id)[0].backward()
        assert model.is_activation_checkpointing == checkpointing
        assert len(chunks) > 1 if max_tokens else len(chunks) == 1
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    plain = gradient(False, None)
    assert torch.allclose(gradient(True, None), plain, atol=1e-6, rtol=1e-4)
    assert torch.allclose(gradient(False, 512), plain, atol=1e-6, rtol=1e-4)


def test_keep_episodes_filters_by_reward(embedder):
    tasks = generate_tasks("train", limit=6)
    episodes = run_episodes(
        Oracle(seed=1), tasks, EnvConfig.preset("synthetic"), progress=False,
        embedder=embedder, reward_fn=reward_fn(tasks, "synthetic"),
    )  # fmt: skip
    kept = keep_episodes(episodes, 0.5)
    assert kept == [e for e in episodes if e.reward["total"] >= 0.5]
    assert keep_episodes(episodes, None) == episodes
    for e in episodes:
        e.reward = {}
    with pytest.raises(ValueError, match="min_reward=None"):
        keep_episodes(episodes, 0.5)


def test_sft_refuses_data_with_nothing_kept(tmp_path, embedder):
    config = small_sft_config(tmp_path, min_reward=5.0, steps=1, n_tasks=2)
    with pytest.raises(ValueError, match="lower min_reward"):
        run_sft(config, embedder=embedder)


def test_a_resumed_sft_run_takes_the_very_next_steps(tmp_path, embedder):
    """Stopped after step 3 (its checkpoint kept), resumed: the same weights and losses as the
    run that went through, because a step's batch depends on the step alone."""
    changes = {"steps": 6, "run.save_every": 3, "batch_size": 8, "n_tasks": 8}
    whole = run_sft(small_sft_config(tmp_path / "whole", **changes), embedder=embedder)
    resumed_dir = tmp_path / "resumed"
    (resumed_dir / "checkpoints").mkdir(parents=True)
    step3 = tmp_path / "whole" / "checkpoints" / "step-000003"
    shutil.copytree(step3, resumed_dir / "checkpoints" / step3.name)
    resumed = run_sft(small_sft_config(resumed_dir, resume="true", **changes), embedder=embedder)
    assert resumed.steps == 6 and not resumed.interrupted
    losses = [list(read_metrics(d / "metrics.jsonl")) for d in (tmp_path / "whole", resumed_dir)]
    assert [r["loss"] for r in losses[1]] == pytest.approx([r["loss"] for r in losses[0][3:]])
    a, _ = load_for_training(ModelSettings(name=str(whole.final_dir)))
    b, _ = load_for_training(ModelSettings(name=str(resumed.final_dir)))
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name


def test_answer_rows_are_drawn_answer_weight_times_per_pass(tmp_path, embedder):
    result = run_sft(
        small_sft_config(tmp_path, steps=1, n_tasks=8, answer_weight=3), embedder=embedder
    )
    # 8 synthetic episodes, one answer each: two extra copies of each answer row per pass
    assert result.data["pool"] == result.data["rows"] + 2 * 8
