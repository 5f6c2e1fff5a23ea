"""What training rollouts are generated with beyond the policy: the cap on episodes per
`generate` call, and the reward's LLM judge and Summary_context's summarizer behind
OpenAI-compatible endpoints (a real llama.cpp server on the shipped SmolLM2 GGUF)."""

from __future__ import annotations

import pytest
from servers import llama_server

from agemem.env import EnvConfig, run_episodes
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.policy.models import PRESETS, load_model, package_file
from agemem.policy.scripted import StoreEverythingPolicy
from agemem.rewards import RewardConfig, reward_fn
from agemem.summarize import LLMSummarizer
from agemem.tasks.synthetic import generate_tasks
from agemem.train.config import ConfigError, Endpoint, load_config
from agemem.train.grpo import endpoint_services, rollout, run_grpo


class Recording:
    """A policy that records how many contexts each `act` call got, acting as `inner` does."""

    def __init__(self, inner: StoreEverythingPolicy) -> None:
        self.inner, self.sizes = inner, []

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        self.sizes.append(len(contexts))
        return self.inner.act(contexts, tools)


def test_max_batch_caps_the_contexts_of_each_call_and_changes_no_episode(embedder):
    tasks = generate_tasks("train", limit=3, seed=3)
    env = EnvConfig.preset("synthetic")
    runs = {}
    for cap in (None, 4):
        policy = Recording(StoreEverythingPolicy())
        episodes = run_episodes(policy, tasks, env, k=2, progress=False, embedder=embedder,
                                max_batch=cap)  # fmt: skip
        runs[cap] = policy.sizes, [[s.text for s in e.steps] for e in episodes]
    (all_sizes, uncapped), (capped_sizes, capped) = runs[None], runs[4]
    assert max(all_sizes) == 6 and max(capped_sizes) == 4  # 3 tasks x 2 episodes, then <= 4
    assert sum(capped_sizes) == sum(all_sizes)  # every context once, in more calls
    assert capped == uncapped


def test_a_judged_reward_needs_a_judge_and_vllm_needs_its_servers(tmp_path):
    base = [f"run.out_dir={tmp_path}", "run.progress=false"]
    judged = load_config("quickstart", [*base, "reward.overrides={task_metric: judge}"], "grpo")
    with pytest.raises(ConfigError, match="grades with an LLM judge: set judge.base_url"):
        run_grpo(judged)
    vllm = load_config("quickstart", [*base, "rollout=vllm"], "grpo")
    with pytest.raises(ConfigError, match="needs one server per process"):
        run_grpo(vllm)


@pytest.fixture(scope="module")
def endpoint():
    gguf = package_file(PRESETS["smollm2-135m"].source)
    with llama_server(gguf, n_parallel=2, threads=1, timeout=600) as url:
        yield url


def test_the_judge_and_summarizer_endpoints_serve_rollouts(endpoint, embedder):
    judge, summarizer = endpoint_services(
        Endpoint(base_url=endpoint, model="smollm2"),
        Endpoint(base_url=endpoint, model="smollm2", max_tokens=48),
    )
    assert isinstance(summarizer, LLMSummarizer)
    summary = summarizer.summarize([{"role": "user", "content": "Ada moved to Paris in 2019."}])
    assert summary.strip()
    tasks = generate_tasks("train", limit=1, seed=5)
    # the scripted policy answers every question, so the judge grades each answer
    (episode,) = run_episodes(
        StoreEverythingPolicy(), tasks, EnvConfig.preset("synthetic"), progress=False,
        embedder=embedder, summarizer=summarizer,
        reward_fn=reward_fn(tasks, RewardConfig.preset("agemem"), judge=judge),
    )  # fmt: skip
    assert all(answer is not None for answer in episode.facts.answers)
    assert episode.reward["task"] == episode.reward["task_judge"]  # task_metric "auto": the judge
    # the trainer's rollout hands the judge to the reward the same way
    model, tokenizer = load_model("tiny")
    episodes = rollout(
        model, tokenizer, tasks, EnvConfig.preset("synthetic").with_(n_max=2),
        RewardConfig.preset("agemem"), k=2, temperature=1.0, max_new_tokens=8, seed=0,
        embedder=embedder, max_batch=1, judge=judge, summarizer=summarizer,
    )  # fmt: skip
    assert len(episodes) == 2 and all("task_judge" in e.reward for e in episodes)
