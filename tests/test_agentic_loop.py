"""The agent loop over text worlds: memory tools dispatched inside episodes, the methods'
context rules (window vs recorded overflow, rag's automatic memories), bad turns, records that
save, load and render, and `run_benchmark`. Scripted policies drive real worlds (BabyAI, TWC)."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

pytest.importorskip("minigrid", reason="BabyAI needs: pip install minigrid==3.2.0")

from agemem.agentic import LoopSettings, WorldUnavailable, run_benchmark, run_worlds  # noqa: E402
from agemem.agentic.babyai import BabyAIWorld  # noqa: E402
from agemem.agentic.loop import AgentEpisode  # noqa: E402
from agemem.episode import Episode, load_episodes, save_episodes  # noqa: E402
from agemem.eval.methods.base import RunContext  # noqa: E402
from agemem.policy.base import Turn  # noqa: E402
from agemem.show import show_file  # noqa: E402
from agemem.tokens import ApproxTokenCounter  # noqa: E402

COUNTER = ApproxTokenCounter()


def calls(*items: tuple[str, dict]) -> str:
    payload = [{"name": name, "arguments": arguments} for name, arguments in items]
    return f"<think>memory</think><tool_call>{json.dumps(payload)}</tool_call>"


def act(action: str) -> str:
    return f"<think>act</think><answer>{action}</answer>"


class Script:
    """Plays `script(turn_index, context, world)` for one world (a test policy)."""

    def __init__(self, script):
        self.script, self.world, self.turn = script, None, 0

    def make(self, world):
        def factory():
            self.world = world
            return world

        return factory

    def act(self, contexts, tools=None):
        assert len(contexts) == 1
        text = self.script(self.turn, contexts[0], self.world)
        self.turn += 1
        return [Turn(text)]


def play(policy: Script, world, settings: LoopSettings, embedder) -> Episode:
    """One episode of `policy` in `world`."""
    (episode,) = run_worlds(
        [policy.make(world)], policy, settings, embedder=embedder, token_counter=COUNTER
    )
    return episode


def memory_script(turn, context, world):
    last = context[-1]["content"]
    if turn == 0:
        return calls(("Add_memory", {"content": "The target is the red ball."}))
    if turn == 1:
        return calls(("Retrieve_memory", {"query": "red ball target"}))
    if turn == 2:
        memory_id = re.search(r"\[(mem_[0-9a-f]+)\]", last).group(1)
        return calls(("Update_memory", {"memory_id": memory_id, "content": "Go to the red ball."}))
    if turn == 4:  # the first observation is history now (the action of turn 3 moved on)
        first_observation = next(m for m in context if m["content"].startswith("Observation:"))
        return calls(("Filter_context", {"criteria": first_observation["content"]}))
    if turn == 5:
        return act("dance")
    if turn == 7:
        return calls(("Summary_context", {"span": "all"}))
    return act(world.expert_action())


def test_memory_tools_work_inside_the_episode(embedder, tmp_path):
    policy = Script(memory_script)
    settings = LoopSettings("agemem", t_max=4000, max_turns=30)
    episode = play(policy, BabyAIWorld("GoToRedBall", 0), settings, embedder)
    facts = episode.facts
    assert episode.reward == {"success": 1.0, "progress": 1.0}
    assert facts.answers == ["success"] and episode.correct() == [True]
    assert facts.ended_by == "answered" and facts.method == "agemem"
    assert facts.tool_counts() == {
        "Add_memory": 1,
        "Retrieve_memory": 1,
        "Update_memory": 1,
        "Filter_context": 1,
        "Summary_context": 1,
    }
    assert [u.content for u in facts.updates] == ["Go to the red ball."]
    assert facts.retrieved_ids == [facts.adds[0].id]
    assert [m.content for m in facts.final_memories] == ["Go to the red ball."]
    steps = episode.steps
    first, current = steps[0].messages[-1]["content"], steps[4].messages[-1]["content"]
    assert first.startswith("Observation:") and current.startswith("Observation:")
    assert "Removed 1 messages" in steps[4].observations[0].content
    seen = [m["content"] for m in steps[5].messages]
    assert first not in seen and current in seen  # the observation acted on is protected
    assert steps[5].observations[0].error == "rejected"  # "dance" is no BabyAI action
    summarized = [m["content"] for m in steps[8].messages]
    assert summarized[2].startswith("[Summary of earlier context]")
    assert steps[7].messages[-1]["content"] in summarized  # ... from Summary_context too
    assert all(s.stage == 3 for s in steps) and len(steps) == facts.rounds

    path = tmp_path / "babyai.jsonl"
    save_episodes([episode], path)
    assert load_episodes(path) == [episode]
    out = io.StringIO()
    show_file(path, console=Console(file=out, width=120))
    shown = out.getvalue()
    assert "go to the red ball" in shown and "success" in shown and "Update_memory" in shown


def expert_script(turn, context, world):
    return act(world.expert_action())


def test_no_memory_cuts_the_history_while_agemem_records_overflow(embedder):
    results = {}
    for method in ("no-memory", "agemem"):
        policy = Script(expert_script)
        settings = LoopSettings(method, t_max=900, max_turns=40)
        world = BabyAIWorld("PutNextLocal", 1)
        results[method] = play(policy, world, settings, embedder)
    windowed, full = results["no-memory"], results["agemem"]
    assert windowed.reward["success"] == full.reward["success"] == 1.0
    assert not windowed.facts.overflows and windowed.facts.max_tokens <= 900
    assert full.facts.overflows and full.facts.max_tokens > 900
    last = windowed.steps[-1].messages
    assert last[1]["content"].startswith("Your goal:")  # system prompt and goal are kept
    assert len(last) < len(full.steps[-1].messages)


def test_the_window_moves_in_blocks_so_prompts_mostly_extend_the_last_one(embedder):
    policy = Script(lambda turn, context, world: act("turn left"))
    settings = LoopSettings("no-memory", t_max=900, max_turns=30)
    episode = play(policy, BabyAIWorld("GoToLocal", 0), settings, embedder)
    prompts = [step.messages for step in episode.steps]
    trims = sum(b[: len(a)] != a for a, b in zip(prompts, prompts[1:], strict=False))
    assert len(prompts) == 30 and max(s.tokens for s in episode.steps) <= 900
    assert 2 <= trims <= len(prompts) / 4  # a window sliding every turn trims ~20 times here


def test_rag_stores_steps_and_shows_related_memories(embedder):
    policy = Script(expert_script)
    episode = play(
        policy, BabyAIWorld("PutNextLocal", 1), LoopSettings("rag", max_turns=40, top_k=2), embedder
    )
    assert episode.reward["success"] == 1.0 and episode.facts.tool_counts() == {}
    third = episode.steps[2].messages[-1]["content"]
    assert "Related memories:" in third and re.search(r"\[mem_[0-9a-f]+\] .+ -> ", third)
    # every step was offered to the store; near-duplicate steps are stored once
    assert 0 < len(episode.facts.final_memories) <= len(episode.steps)


def test_bad_turns_become_observations_and_the_turn_cap_ends(embedder):
    script = [
        "I will go forward.",  # no tags
        calls(("Add_memory", {"content": "x"})),  # no tools for this method
        "<think>x</think><answer>turn left</answer><answer>turn right</answer>",
        act(""),
    ]
    policy = Script(lambda turn, context, world: script[turn])
    episode = play(
        policy, BabyAIWorld("GoToRedBall", 0), LoopSettings("no-memory", max_turns=4), embedder
    )
    observations = [s.observations[0] for s in episode.steps]
    assert observations[0].error == "format" and "Format error" in observations[0].content
    assert observations[1].error == "rejected" and "No memory tools" in observations[1].content
    assert observations[3].content.startswith("Empty action")
    assert episode.facts.ended_by == "n_max" and episode.facts.answers == ["failure"]
    assert episode.reward == {"success": 0.0, "progress": 0.0}


def test_episode_used_out_of_order_names_the_fix(embedder):
    episode = AgentEpisode(
        BabyAIWorld("GoToRedBall", 0),
        LoopSettings("agemem"),
        embedder=embedder,
        token_counter=COUNTER,
    )
    with pytest.raises(RuntimeError, match="call start"):
        episode.step(Turn(act("turn left")))
    with pytest.raises(ValueError, match="unknown method 'mem0'"):
        LoopSettings("mem0")  # type: ignore[arg-type]


class LookAround:
    def act(self, contexts, tools=None):
        return [Turn(act("look around")) for _ in contexts]


def test_run_benchmark_on_twc(embedder):
    pytest.importorskip("textworld_express")
    ctx = RunContext(LookAround(), embedder, COUNTER, t_max=2000, top_k=2)
    episodes = run_benchmark("twc", "rag", ctx, limit=2)
    assert [e.task_id for e in episodes] == ["twc/test/items1/seed0", "twc/test/items2/seed0"]
    assert all(e.facts.rounds == 30 and e.facts.ended_by == "n_max" for e in episodes)
    assert all(set(e.reward) == {"success", "progress"} for e in episodes)
    assert all(e.family == "twc" and e.facts.method == "rag" for e in episodes)
    with pytest.raises(ValueError, match="unknown benchmark 'webshop'"):
        run_benchmark("webshop", "rag", ctx, limit=1)
    with pytest.raises(ValueError, match="unknown method 'mem0'"):
        run_benchmark("twc", "mem0", ctx, limit=1)


def test_alfworld_without_data_says_what_to_install(monkeypatch, tmp_path, embedder):
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    ctx = RunContext(LookAround(), embedder, COUNTER, t_max=2000)
    with pytest.raises(WorldUnavailable, match="alfworld"):
        run_benchmark("alfworld", "no-memory", ctx, limit=1)


def test_babyai_task_list_is_fixed_and_interleaves_levels():
    from agemem.agentic import TASKS

    first = [make() for make in TASKS["babyai"]()[:3]]
    again = [make() for make in TASKS["babyai"]()[:3]]
    assert (
        [w.task_id for w in first]
        == [w.task_id for w in again]
        == [
            "babyai/GoToRedBall-v0/seed0",
            "babyai/GoToRedBallGrey-v0/seed0",
            "babyai/GoToObj-v0/seed0",
        ]
    )
    for world in first + again:
        world.close()


def test_misconfigured_pddl_interpreter_is_named(monkeypatch):
    from agemem.agentic.pddl import pddl_python

    monkeypatch.setenv("AGEMEM_PDDL_PYTHON", "/nonexistent/python")
    with pytest.raises(WorldUnavailable, match="AGEMEM_PDDL_PYTHON=/nonexistent/python does not"):
        pddl_python()


def test_the_window_holds_t_max_when_every_turn_is_malformed(embedder):
    """A turn that breaks the protocol adds the model's message and a tool error, no user
    message: the window still cuts there (regression: it once cut only at observations)."""
    policy = Script(lambda turn, context, world: "I will go to the ball now.")
    settings = LoopSettings("no-memory", t_max=600, max_turns=30)
    episode = play(policy, BabyAIWorld("GoToLocal", 0), settings, embedder)
    assert episode.facts.rounds == 30 and not episode.facts.overflows
    assert max(step.tokens for step in episode.steps) <= 600
    assert all(step.messages[2]["role"] != "tool" for step in episode.steps)  # whole rounds
