"""One real GRPO step whose rollouts go through the llama.cpp server (`rollout="llama.cpp"`):
SmolLM2 with a fresh LoRA (the `smollm2-135m` preset), 1 synthetic task x 2 rollouts, 16 new
tokens per turn, at most 3 turns per episode. Nothing is mocked."""

from __future__ import annotations

import math

import pytest

from agemem.train.config import ConfigError, load_config
from agemem.train.grpo import run_grpo


def grpo_config(out_dir, *overrides: str):
    return load_config(
        "smollm2-135m",
        [
            f"run.out_dir={out_dir}",
            "run.progress=false",
            "run.threads=1",
            "run.save_every=0",
            "steps=1",
            "tasks_per_step=1",
            "k=2",
            "model.max_new_tokens=16",
            "env.overrides.n_max=3",
            "eval.n_tasks=0",
            "rollout=llama.cpp",
            *overrides,
        ],
        kind="grpo",
    )


def test_a_grpo_step_rolls_out_through_the_llama_cpp_server(tmp_path, embedder):
    result = run_grpo(grpo_config(tmp_path), embedder=embedder)
    metrics = result.metrics
    assert result.steps == 1 and not result.interrupted
    assert metrics["rollout/generated_tokens"] > 0 and metrics["rollout/turns"] >= 2
    assert 0 < metrics["rollout/sync_s"] < metrics["rollout_s"]
    assert math.isfinite(metrics["update/loss"])
    server_dir = tmp_path / "rollout-server"
    assert "listening on http://127.0.0.1" in (server_dir / "server.log").read_text()
    assert not list(server_dir.glob("*.gguf"))  # the adapter files go with the server


def test_llama_cpp_rollouts_need_recomputed_old_logprobs(tmp_path):
    config = grpo_config(tmp_path, "old_logprobs=sampler")
    with pytest.raises(ConfigError, match='rollout="llama.cpp" records no logprobs'):
        run_grpo(config)
