"""Expert episodes in the worlds (SFT data for the trained world agent): the scripted expert's
actions in the agent's text protocol with memory operations that keep a long interaction within
`T_max`, played on training worlds that no evaluation list holds. Real worlds (BabyAI, TWC;
ScienceWorld and PDDL for the task lists), the real embedder and SmolLM2's tokenizer."""

from __future__ import annotations

import inspect
import re
from functools import partial

import pytest

pytest.importorskip("minigrid", reason="BabyAI needs: pip install minigrid==3.2.0")

from agemem.agentic.babyai import BabyAIWorld  # noqa: E402
from agemem.agentic.benchmarks import TASKS, train_tasks  # noqa: E402
from agemem.agentic.expert import expert_episode, training_episodes  # noqa: E402
from agemem.agentic.loop import LoopSettings  # noqa: E402
from agemem.agentic.world import WorldUnavailable  # noqa: E402
from agemem.eval.benchmarks import WORLD_T_MAX  # noqa: E402
from agemem.policy.models import resolve_preset  # noqa: E402
from agemem.tokens import HFTokenCounter  # noqa: E402


@pytest.fixture(scope="module")
def smollm2_counter():
    """Token counts of the model the worlds' agent is trained on."""
    from transformers import AutoTokenizer

    return HFTokenCounter(AutoTokenizer.from_pretrained(resolve_preset("smollm2-135m")))


def _identity(factory: partial) -> tuple:
    """The world a factory makes: its class and every constructor argument, defaults filled."""
    bound = inspect.signature(factory.func).bind(*factory.args, **factory.keywords)
    bound.apply_defaults()
    return factory.func.__name__, tuple(sorted(bound.arguments.items()))


@pytest.mark.parametrize("benchmark", ["babyai", "twc", "pddl", "scienceworld"])
def test_training_worlds_are_never_evaluation_worlds(benchmark):
    try:
        evaluated = {_identity(f) for f in TASKS[benchmark]()}
        trained = [_identity(f) for f in train_tasks(benchmark, 10_000)]
    except WorldUnavailable as err:
        pytest.skip(str(err))
    assert trained and len(set(trained)) == len(trained)
    assert not evaluated & set(trained)
    assert [_identity(f) for f in train_tasks(benchmark, 3)] == trained[:3]  # a prefix


def test_the_expert_manages_a_long_episode_within_t_max(embedder, smollm2_counter):
    """PutNextLocal (seed 1001) takes the expert 20 actions; at the worlds' T_max it has to store
    its progress and summarize, retrieves its notes, and reaches the goal without a malformed
    turn or an overflow."""
    settings = LoopSettings("agemem", t_max=WORLD_T_MAX, max_turns=40)
    world = BabyAIWorld("PutNextLocal", 1001)
    try:
        episode = expert_episode(world, settings, embedder=embedder, token_counter=smollm2_counter)
    finally:
        world.close()
    facts = episode.facts
    assert episode.reward == {"success": 1.0, "progress": 1.0}
    assert not facts.overflows and facts.max_tokens <= WORLD_T_MAX
    counts = facts.tool_counts()
    assert counts["Summary_context"] >= 2 and counts["Add_memory"] == counts["Summary_context"] + 1
    assert counts.get("Retrieve_memory", 0) >= 1
    assert not any(step.actions.issues for step in episode.steps)  # no format error
    assert len(facts.final_memories) == counts["Add_memory"]
    for step in episode.steps:  # an observation ends with the context's size, as shown
        last = step.messages[-1]["content"]
        if last.startswith("Observation:"):
            shown = int(
                re.search(r"Context: ([\d,]+) of 2,048 tokens\.$", last)[1].replace(",", "")
            )
            assert 0 < step.tokens - shown <= 24  # all but the line itself (~18 tokens)
    for step in episode.steps:  # the observation acted on is always in view
        assert step.messages[-1]["content"].startswith("Observation:") or any(
            m["content"].startswith("Observation:") for m in step.messages[2:]
        )


def test_without_tools_the_expert_only_acts(embedder, smollm2_counter):
    settings = LoopSettings("no-memory", t_max=1024, max_turns=40)
    world = BabyAIWorld("GoToRedBall", 1000)
    try:
        episode = expert_episode(world, settings, embedder=embedder, token_counter=smollm2_counter)
    finally:
        world.close()
    assert episode.reward["success"] == 1.0 and not episode.facts.tool_counts()
    assert all(step.actions.answer for step in episode.steps)


def test_training_episodes_follow_the_evaluation_rules(embedder, smollm2_counter):
    try:
        episodes = training_episodes(
            ["babyai", "twc"], 4, "agemem", embedder=embedder, token_counter=smollm2_counter
        )
    except WorldUnavailable as err:
        pytest.skip(str(err))
    assert len(episodes) == 4
    assert [ep.task_id.split("/")[0] for ep in episodes] == ["babyai"] * 2 + ["twc"] * 2
    assert all(ep.facts.t_max == 2048 for ep in episodes)  # `agemem eval`'s worlds budget
    assert all(ep.reward["success"] == 1.0 for ep in episodes)
