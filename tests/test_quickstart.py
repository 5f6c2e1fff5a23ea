"""`agemem quickstart` end to end at a small scale: the real tiny model, SFT, GRPO, the real env,
reward and store, the model-read baselines, the report files. Nothing is mocked; the scale (a
2-layer model, a few steps, 6 held-out tasks) keeps it under a minute. A model trained for a
few steps reads nothing, so that the baselines can score is checked with a reader written
here: one that answers with the value the context last states for the asked fact."""

from __future__ import annotations

import json
import re

import pytest

from agemem.env import PRESETS
from agemem.policy.scripted import emit
from agemem.policy.tiny import tiny_token_counter
from agemem.quickstart import METHODS, baseline_envs, baseline_scores, run_quickstart
from agemem.rewards import RewardConfig
from agemem.tasks import load_tasks
from agemem.tasks.synthetic import ATTRIBUTES
from agemem.train.config import load_config

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
    # the baselines are read by the model, sampled and greedy, and their window keeps them
    # within the budget: they never overflow
    for when in ("before", "after"):
        for method in ("no-memory", "rag"):
            for mode in ("sampled", "greedy"):
                assert report[when][method][mode]["overflow"] == 0.0


def test_grpo_trains_on_the_composite_reward_with_kl(run):
    """The preset's reward and KL are what the run used: the `agemem` composite reward (every
    part logged) and a KL term to the SFT reference."""
    out, report = run
    grpo = load_config("quickstart").grpo
    assert grpo.reward.preset == "agemem" and grpo.reward.key == "total" and grpo.beta > 0
    assert report["config"]["grpo"]["reward"] == grpo.reward.model_dump(mode="json")
    assert report["config"]["grpo"]["beta"] == grpo.beta
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "rollout/reward/total" in row]
    reward = RewardConfig.preset("agemem").with_(**grpo.reward.overrides)
    for row in steps:
        parts = {k: row[f"rollout/reward/{k}"] for k in ("task", "context", "memory", "penalty")}
        total = (
            reward.w_task * parts["task"]
            + reward.w_context * parts["context"]
            + reward.w_memory * parts["memory"]
            + parts["penalty"]
        )
        assert row["rollout/reward/total"] == pytest.approx(total)
        assert "rollout/reward/memory_storage_precision" in row and "update/kl" in row


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


class Reader:
    """Answers a synthetic question with the value its context last states for the asked fact
    (user messages and tool results alike); a turn without one retrieves. A reader that can
    read, to show what the baselines' contexts hold."""

    def act(self, contexts, tools=None):
        return [self._turn(messages) for messages in contexts]

    def _turn(self, messages):
        question = messages[-1]["content"] if messages[-1]["role"] == "user" else None
        asked = next(
            m["content"].removeprefix("Question: ")
            for m in reversed(messages)
            if m["role"] == "user" and m["content"].startswith("Question: ")
        )
        for attribute in ATTRIBUTES:
            head, _, tail = attribute.question.partition("{name}")
            if asked.startswith(head) and asked.endswith(tail):
                name = asked[len(head) : len(asked) - len(tail)]
                pattern = re.escape(attribute.statement.format(name=name, value="VALUE"))
                found = re.findall(pattern.replace("VALUE", r"(\w+)"), _text(messages))
                if found:
                    return emit("it says", answer=found[-1])
        if question is not None:  # nothing in the context yet: look it up
            return emit("look it up", [{"name": "Retrieve_memory", "arguments": {"query": asked}}])
        return emit("no idea", answer="I don't know.")


def _text(messages):
    return "\n".join(m["content"] or "" for m in messages if m["role"] in ("user", "tool"))


def test_baselines_can_score_within_the_budget(embedder):
    """Both baselines on real tasks, env, store and tiny token counts: read by a reader that can
    read, each answers some questions right, and the window keeps every context within T_max."""
    tasks = load_tasks("synthetic", split="test", limit=12)
    env = PRESETS["synthetic"]
    envs = baseline_envs(env)
    assert envs["no-memory"].stage1_window is None and not envs["no-memory"].stage2_reset
    assert {e.over_budget for e in envs.values()} == {"drop_oldest"}
    assert envs["rag"].with_(over_budget="record") == env  # otherwise the agent's env
    scores = baseline_scores(
        lambda temperature: Reader(),
        tasks,
        env,
        RewardConfig.preset("agemem"),
        {"sampled": 1.0},
        embedder=embedder,
        token_counter=tiny_token_counter(),
    )
    for method in ("no-memory", "rag"):
        assert scores[method]["score"] > 0
        assert scores[method]["sampled"]["overflow"] == 0.0
    assert scores["no-memory"]["sampled"]["tools"]["Add_memory"] == 0  # no store
    assert scores["rag"]["sampled"]["tools"]["Add_memory"] > 0
