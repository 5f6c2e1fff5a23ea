"""GRPO on the interactive worlds: the worlds' reward (AgeMem's composite on the world's
progress), the step's training worlds, rollout statistics, and one real GRPO step of SmolLM2
on BabyAI. Real worlds, the real embedder, the real model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("minigrid", reason="BabyAI needs: pip install minigrid==3.2.0")

from agemem.agentic.babyai import BabyAIWorld  # noqa: E402
from agemem.agentic.benchmarks import TASKS  # noqa: E402
from agemem.agentic.expert import expert_episode  # noqa: E402
from agemem.agentic.loop import LoopSettings, run_worlds  # noqa: E402
from agemem.eval.metrics import run_metrics  # noqa: E402
from agemem.eval.report import world_table  # noqa: E402
from agemem.policy.base import Turn  # noqa: E402
from agemem.rewards import RewardConfig, RewardError, world_reward  # noqa: E402
from agemem.tokens import ApproxTokenCounter  # noqa: E402
from agemem.train.config import ConfigError, load_config  # noqa: E402
from agemem.train.grpo import run_grpo  # noqa: E402
from agemem.train.worlds import WorldTasks, step_worlds, world_stats  # noqa: E402

COUNTER = ApproxTokenCounter()
AGEMEM = RewardConfig.preset("agemem")


class Actions:
    """A test policy: plays `texts` in order, one world at a time."""

    def __init__(self, *texts: str):
        self.texts, self.turn = texts, 0

    def act(self, contexts, tools=None):
        assert len(contexts) == 1
        text = self.texts[min(self.turn, len(self.texts) - 1)]
        self.turn += 1
        return [Turn(text)]


def _act(action: str) -> str:
    return f"<think>act</think><answer>{action}</answer>"


def _play(policy: Actions, max_turns: int, embedder):
    """One BabyAI training world (GoToRedBall, seed 1000) played by `policy`."""
    (episode,) = run_worlds(
        [lambda: BabyAIWorld("GoToRedBall", 1000)],
        policy,
        LoopSettings("agemem", t_max=2048, max_turns=max_turns),
        embedder=embedder,
        token_counter=COUNTER,
    )
    return episode


def test_a_solved_world_scores_its_progress_and_context(embedder):
    settings = LoopSettings("agemem", t_max=2048, max_turns=40)
    world = BabyAIWorld("GoToRedBall", 1000)
    try:
        episode = expert_episode(world, settings, embedder=embedder, token_counter=COUNTER)
    finally:
        world.close()
    parts = world_reward(episode, AGEMEM)
    assert parts["task"] == parts["task_progress"] == parts["task_success"] == 1.0
    assert parts["memory"] == 0.0 and parts["penalty"] == 0.0
    assert 0.0 < parts["context_compression"] < 1.0  # the last turn used part of T_max
    assert parts["context_preventive"] == 0.0  # no Summary or Filter: none was needed
    assert parts["context"] == pytest.approx(parts["context_compression"] / 2)
    assert parts["total"] == pytest.approx(AGEMEM.w_task + AGEMEM.w_context * parts["context"])


def test_a_world_run_out_of_turns_takes_the_rounds_penalty_and_stats_count_rejections(embedder):
    episode = _play(Actions(_act("dance"), _act("turn left"), "no tags at all"), 3, embedder)
    parts = world_reward(episode, AGEMEM)
    assert episode.facts.ended_by == "n_max"
    assert parts["task"] == 0.0 and parts["penalty_rounds"] == AGEMEM.rounds_penalty
    assert parts["total"] == pytest.approx(AGEMEM.w_context * parts["context"] - 1.0)
    episode.reward |= parts
    stats = world_stats([episode])
    assert stats["invalid_actions"] == 0.5  # "dance" rejected, "turn left" taken
    assert stats["format_errors"] == 1.0 and stats["turns"] == 3.0
    assert stats["reward/total"] == parts["total"]
    metrics = run_metrics([episode], [])  # what `agemem eval` reports for a world run
    assert metrics["invalid_action_rate"] == 0.5 and metrics["actions_per_episode"] == 2.0
    table = world_table([{"benchmark": "babyai", "method": "agemem", "n": 1, "metrics": metrics}])
    header, _, row = table.splitlines()
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert cells["invalid actions"] == "50.0" and cells["format errors"] == "33.3"


def test_world_reward_needs_a_world_episode(embedder):
    episode = _play(Actions(_act("turn left")), 1, embedder)
    episode.reward = {}
    with pytest.raises(RewardError, match="no world progress"):
        world_reward(episode, AGEMEM)


def test_a_step_draws_training_worlds_reproducibly():
    spec = WorldTasks.from_options({"benchmarks": ["babyai", "twc"], "pool": 6})
    first = step_worlds(spec, 4, seed=7)
    assert [(b, w.args, w.keywords) for b, w in first] == [
        (b, w.args, w.keywords) for b, w in step_worlds(spec, 4, seed=7)
    ]
    evaluated = {(f.func, f.args, tuple(sorted(f.keywords.items()))) for f in TASKS["babyai"]()}
    for benchmark, world in first:
        assert benchmark in ("babyai", "twc")
        assert (world.func, world.args, tuple(sorted(world.keywords.items()))) not in evaluated
    assert len(step_worlds(spec, 20, seed=1)) == 20  # more than the pool: drawn with replacement


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "benchmarks"),
        ({"benchmarks": ["alfworld"]}, "benchmarks"),
        ({"benchmarks": ["babyai"], "method": "rag2"}, "method"),
        ({"benchmarks": ["babyai"], "pool": 0}, "pool"),
        ({"benchmarks": ["babyai"], "max_turns": "3"}, "max_turns"),
        ({"benchmarks": ["babyai"], "seeds": [1]}, "unknown"),
    ],
)
def test_bad_world_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        WorldTasks.from_options(options)


def test_grpo_on_the_worlds_refuses_an_in_run_evaluation():
    config = load_config("smollm2-worlds", ["grpo.eval.n_tasks=4"]).grpo
    with pytest.raises(ConfigError, match="agemem eval --benchmark babyai"):
        run_grpo(config)


def test_one_grpo_step_of_smollm2_on_babyai(tmp_path, embedder):
    """Two sampled episodes of one training world (two turns each), scored by the worlds'
    reward, one update of the LoRA adapters against the adapters-off reference."""
    config = load_config(
        "smollm2-worlds",
        [
            "grpo.model.name=smollm2-135m",
            "grpo.model.max_new_tokens=24",
            'grpo.tasks.options={benchmarks: ["babyai"], pool: 2, max_turns: 2}',
            "grpo.steps=1",
            "grpo.tasks_per_step=1",
            "grpo.k=2",
            "grpo.rollout=hf",
            "grpo.eval.before=false",
            "grpo.run.progress=false",
            f"grpo.run.out_dir={tmp_path}",
        ],
    ).grpo
    result = run_grpo(config, embedder=embedder)
    assert result.steps == 1 and (tmp_path / "final").is_dir()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    [metrics] = [m for m in map(json.loads, lines) if "rollout/turns" in m]
    assert 2 <= metrics["rollout/turns"] <= 4  # two episodes of at most two model turns
    for key in ("progress", "success", "invalid_actions", "reward/total", "reward/task_progress"):
        assert f"rollout/{key}" in metrics
    assert metrics["rollout/generated_tokens"] > 0 and metrics["update_s"] > 0
