"""The step-wise GRPO trainer on the real tiny model, the real env and the real reward.

The module fixture warm-starts a small tiny model (2 layers) by `run_sft` on oracle episodes for
40 steps (~15 s): it then follows the protocol partly, so rollouts of one task differ in reward
and advantages are not all zero. Steps use 2 tasks x 4 rollouts. Nothing is mocked; the
2-process test starts real processes with `accelerate launch` (gloo on CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from agemem.env import EnvConfig
from agemem.policy.models import load_model
from agemem.rewards import RewardConfig
from agemem.tasks.synthetic import generate_tasks
from agemem.train import group_advantages, step_samples
from agemem.train.checkpoint import checkpoint_dir, latest_checkpoint
from agemem.train.config import load_config
from agemem.train.grpo import rollout, run_grpo
from agemem.train.metrics import read_metrics
from agemem.train.plots import plot_runs
from agemem.train.sft import run_sft

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory, embedder) -> Path:
    out = tmp_path_factory.mktemp("sft")
    config = load_config(
        "quickstart",
        [
            f"run.out_dir={out}",
            "run.progress=false",
            "run.threads=1",  # two test workers share the 2 cores
            "n_tasks=24",
            "steps=40",
            "batch_size=32",
            "micro_batch_size=16",
            "model.tiny_shape={layers: 2, hidden: 64, heads: 2, ffn: 128}",
            "eval.n_tasks=0",
        ],
        kind="sft",
    )
    return run_sft(config, embedder=embedder).final_dir


def grpo_config(start_dir: Path, out_dir: Path, *overrides: str):
    return load_config(
        "quickstart",
        [
            f"model.name={start_dir}",
            f"run.out_dir={out_dir}",
            "run.progress=false",
            "run.threads=1",
            "run.save_every=0",
            "model.max_new_tokens=48",
            "tasks_per_step=2",
            "k=4",
            "micro_batch_size=32",
            "eval.n_tasks=0",
            *overrides,
        ],
        kind="grpo",
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_advantages_reach_every_turn_of_their_episode(start_dir, embedder):
    model, tokenizer = load_model(start_dir)
    tasks = generate_tasks("train", limit=2, seed=7)
    episodes = rollout(
        model, tokenizer, tasks, EnvConfig.preset("synthetic"), RewardConfig.preset("synthetic"),
        k=3, temperature=1.0, max_new_tokens=48, seed=0, embedder=embedder,
    )  # fmt: skip
    assert [e.group_id for e in episodes] == [f"{tasks[0].id}@0"] * 3 + [f"{tasks[1].id}@1"] * 3
    for i, episode in enumerate(episodes):  # distinct rewards in each group, whatever was sampled
        episode.reward["total"] = float(i % 3) * (1 + i)
    expected = group_advantages(
        [e.reward["total"] for e in episodes], [e.group_id for e in episodes]
    )
    assert (expected != 0).all()

    samples = step_samples(episodes)
    assert len(samples) == sum(len(e.steps) for e in episodes)
    position = 0
    for episode, advantage in zip(episodes, expected.tolist(), strict=True):
        assert {e.stage for e in [episode.steps[0], episode.steps[-1]]} == {1, 3}  # all stages
        for step in episode.steps:
            sample = samples[position]
            assert sample.advantage == pytest.approx(advantage)
            assert sample.prompt_ids == step.prompt_ids  # the exact context the model saw
            assert sample.completion_ids == step.completion_ids
            assert sample.old_logprobs == step.logprobs
            position += 1


def test_one_step_changes_the_weights_and_logs_every_metric(start_dir, tmp_path, embedder):
    out = tmp_path / "grpo"
    config = grpo_config(start_dir, out, "steps=1", "beta=0.1", "eval.n_tasks=2")
    before = weights(load_model(start_dir)[0])
    result = run_grpo(config, embedder=embedder)

    after = weights(result.model)
    assert result.steps == 1 and not result.interrupted
    assert any(not torch.equal(before[k], after[k]) for k in before)
    records = list(read_metrics(out / "metrics.jsonl"))
    step1 = next(r for r in records if r["step"] == 1 and "update/loss" in r)
    for key in (
        "update/loss", "update/kl", "update/ratio", "update/clip_low", "update/clip_high",
        "update/entropy", "update/grad_norm", "update/lr", "update/tokens",
        "update/trained_turns", "rollout/reward_mean", "rollout/reward_std",
        "rollout/flat_groups", "rollout/success", "rollout/em", "rollout/overflow",
        "rollout/stale", "rollout/tools/Update_memory", "rollout/tools/Filter_context",
        "rollout/reward/penalty_stale", "rollout/turns", "rollout/generated_tokens",
        "rollout_s", "update_s", "step_s", "phase", "update/forward_tokens",
        "rollout/tokens_per_s", "update/tokens_per_s",
    ):  # fmt: skip
        assert key in step1, key
    generated = step1["rollout/generated_tokens"]
    assert step1["update/tokens"] == generated  # one pass over every generated token
    assert step1["rollout/tokens_per_s"] == pytest.approx(generated / step1["rollout_s"])
    assert step1["update/tokens_per_s"] == pytest.approx(generated / step1["update_s"])
    assert step1["update/forward_tokens"] > generated  # the prompts go through the model too
    assert step1["rollout/flat_groups"] < 1.0  # some advantage was not zero
    assert step1["update/grad_norm"] > 0 and step1["update/lr"] == pytest.approx(config.optim.lr)
    assert step1["update/kl"] >= 0
    evals = [r for r in records if "eval/sampled/success" in r]
    assert [r["step"] for r in evals] == [0, 1]  # before and after training
    assert result.eval_before and result.eval_after
    assert (out / "final" / "model.safetensors").is_file()
    assert any((out / "tensorboard").iterdir())


def test_resume_reproduces_the_next_step(start_dir, tmp_path, embedder):
    straight = run_grpo(grpo_config(start_dir, tmp_path / "a", "steps=2"), embedder=embedder)
    first = run_grpo(grpo_config(start_dir, tmp_path / "b", "steps=1"), embedder=embedder)
    saved = latest_checkpoint(tmp_path / "b")
    assert saved == checkpoint_dir(tmp_path / "b", 1)
    for name in ("model/model.safetensors", "trainer.pt", "rng-0.pt", "state.json"):
        assert (saved / name).is_file(), name
    trainer = torch.load(saved / "trainer.pt", weights_only=False)
    assert trainer["step"] == 1 and trainer["optimizer"]["state"]  # Adam moments are saved
    assert json.loads((saved / "state.json").read_text())["metrics"]["update/loss"] is not None

    resumed = run_grpo(
        grpo_config(start_dir, tmp_path / "b", "steps=2", "resume=true"), embedder=embedder
    )
    assert resumed.steps == 2
    a, b = weights(straight.model), weights(resumed.model)
    assert not all(torch.equal(weights(first.model)[k], b[k]) for k in b)  # it did train
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics["rollout/reward_mean"] == straight.metrics["rollout/reward_mean"]
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert steps == [1, 2]
    runs = {"a": list(read_metrics(tmp_path / "a" / "metrics.jsonl")), "b": []}
    written = plot_runs(runs, tmp_path / "plots")  # `agemem plot`: a GRPO run's curves
    assert [p.name for p in written] == ["learning_curves.png", "tool_mix.png"]


def test_ctrl_c_finishes_the_step_saves_and_returns(start_dir, tmp_path, embedder):
    out = tmp_path / "stop"
    metrics = out / "metrics.jsonl"

    def interrupt_after_first_step() -> None:
        while not (metrics.is_file() and metrics.read_text().strip()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_after_first_step, daemon=True)
    watcher.start()
    result = run_grpo(grpo_config(start_dir, out, "steps=30"), embedder=embedder)
    watcher.join(timeout=5)
    assert result.interrupted and 1 <= result.steps < 30
    assert latest_checkpoint(out) == checkpoint_dir(out, result.steps)
    assert (out / "final" / "model.safetensors").is_file()


def test_lora_trains_adapters_only_with_adapters_off_reference(start_dir, tmp_path, embedder):
    config = grpo_config(
        start_dir, tmp_path / "lora", "steps=1", "beta=0.1", "model.lora={r: 4, alpha: 8}"
    )
    base = weights(load_model(start_dir)[0])
    result = run_grpo(config, embedder=embedder)
    assert isinstance(result.model, PeftModel)
    trained = result.model.get_base_model().state_dict()
    frozen = {k: v for k, v in trained.items() if "lora_" not in k}
    assert all(torch.equal(base[k.replace(".base_layer", "")], v) for k, v in frozen.items())
    assert result.metrics["update/kl"] >= 0 and result.metrics["update/grad_norm"] > 0
    merged = weights(load_model(result.final_dir)[0])
    assert any(not torch.equal(base[k], merged[k]) for k in base)


# The `paper` preset's code path on the tiny model: LoRA, gradient checkpointing, a cap on
# episodes per generate call, and the held-out evaluation (before and after the step) split
# across the processes.
DDP_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path
    import torch.distributed as dist
    from agemem.train.config import load_config
    from agemem.train.grpo import run_grpo

    start, out = sys.argv[1], Path(sys.argv[2])
    config = load_config("quickstart", [
        f"model.name={start}", f"run.out_dir={out}", "run.progress=false", "run.threads=1",
        "model.max_new_tokens=48", "steps=1", "tasks_per_step=2", "k=4",
        "model.lora={r: 4, alpha: 8}", "model.gradient_checkpointing=true", "generate_batch=3",
        "eval.n_tasks=4", "eval.greedy=false", "eval.before=true",
    ], kind="grpo")
    result = run_grpo(config)
    digest = hashlib.sha256()
    for name, tensor in sorted(result.model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().numpy().tobytes())
    rank = dist.get_rank()
    (out / f"hash-{rank}.txt").write_text(digest.hexdigest())
    scores = {"before": result.eval_before, "after": result.eval_after}
    (out / f"eval-{rank}.json").write_text(json.dumps(scores))
    """
)


def test_two_processes_hold_identical_weights(start_dir, tmp_path):
    script = tmp_path / "ddp_step.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    # `--multi_gpu` selects accelerate's torchrun launcher; without a GPU, Accelerator runs the
    # processes as MULTI_CPU with the gloo backend (`--cpu` alone starts one process unless
    # mpirun is configured).
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2",
               "--main_process_port", "29561", str(script), str(start_dir), str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    hashes = [(out / f"hash-{rank}.txt").read_text() for rank in (0, 1)]
    assert hashes[0] == hashes[1]
    start_hash = hashlib.sha256()
    for name, tensor in sorted(load_model(start_dir)[0].state_dict().items()):
        start_hash.update(name.encode() + tensor.numpy().tobytes())
    assert hashes[0] != start_hash.hexdigest()  # the step did change the weights
    records = list(read_metrics(out / "metrics.jsonl"))
    # the step's metrics once, by the main process, between the evaluations before and after
    assert [r["step"] for r in records] == [0, 1, 1]
    assert "rollout/turns" in records[1] and records[1]["rollout/turns"] > 0
    evals = [json.loads((out / f"eval-{rank}.json").read_text()) for rank in (0, 1)]
    for when in ("before", "after"):
        scores = [{k: v for k, v in e[when].items() if k != "sampled/seconds"} for e in evals]
        assert scores[0] == scores[1]  # both ranks return the scores over all 4 tasks
        assert scores[0]["sampled/episodes"] == 4 and scores[0]["sampled/ranks"] == 2
    assert records[0]["eval/sampled/ranks"] == 2


@pytest.mark.parametrize("precision", ["fp32", "bf16-autocast"])
def test_recomputed_old_logprobs_make_the_first_pass_on_policy(
    start_dir, tmp_path, embedder, precision
):
    """The first pass's own log-probs are its old ones (TRL's and verl's way): ratio exactly 1,
    whatever the sampler's forward was (bf16 autocast in training, fp32 in the rollout); with
    the sampler's logprobs the bf16 pass starts away from 1. A second epoch moves off 1."""
    out = tmp_path / precision
    common = ("steps=1", "beta=0.1", f"run.precision={precision}")
    first = run_grpo(grpo_config(start_dir, out / "r", *common), embedder=embedder)
    (row,) = [r for r in read_metrics(out / "r" / "metrics.jsonl") if "update/ratio" in r]
    assert row["update/ratio"] == 1.0 and row["update/clip_low"] == row["update/clip_high"] == 0
    assert first.steps == 1
    two = grpo_config(start_dir, out / "e", *common, "ppo_epochs=2")
    run_grpo(two, embedder=embedder)
    (row,) = [r for r in read_metrics(out / "e" / "metrics.jsonl") if "update/ratio" in r]
    assert row["update/ratio"] != 1.0  # the mean over both epochs: the second moved
    sampler = grpo_config(start_dir, out / "s", *common, "old_logprobs=sampler")
    run_grpo(sampler, embedder=embedder)
    (row,) = [r for r in read_metrics(out / "s" / "metrics.jsonl") if "update/ratio" in r]
    if precision == "fp32":
        assert row["update/ratio"] == pytest.approx(1.0, abs=1e-4)
    else:
        assert row["update/ratio"] != 1.0  # bf16 training forward against fp32 sampling
