"""BabyAI through the text wrapper: minigrid's bot solves levels by text actions, bad actions
become observations, and progress follows the mission's clauses."""

from __future__ import annotations

import pytest

pytest.importorskip("minigrid", reason="BabyAI needs: pip install minigrid==3.2.0")

from agemem.agentic.babyai import ACTIONS, BabyAIWorld  # noqa: E402
from agemem.agentic.world import ENDED_NOTE, run_expert  # noqa: E402


@pytest.mark.parametrize(("level", "seed"), [("GoToRedBall", 0), ("PutNextLocal", 1)])
def test_expert_solves_through_text_actions(level, seed):
    world = BabyAIWorld(level, seed)
    run = run_expert(world)
    world.close()
    assert run.final.success and run.final.done and run.final.progress == 1.0
    assert run.all_valid and set(run.actions) <= set(ACTIONS)


def test_goal_reached_is_described_in_words():
    world = BabyAIWorld("GoToRedBall", 0)
    first = world.reset()
    assert first.goal == "go to the red ball"
    assert "red ball" in first.observation and "steps ahead" in first.observation
    run = run_expert(world)
    assert "Directly in front of you is a red ball." in run.final.observation


def test_progress_counts_the_mission_clauses():
    world = BabyAIWorld("GoToSeq", 1)  # "go to a red door and go to a purple door"
    state = world.reset()
    seen = {state.progress}
    while not state.done:
        state = world.step(world.expert_action())
        seen.add(state.progress)
    assert state.success and seen == {0.0, 0.5, 1.0}


def test_bad_actions_are_observations_not_errors():
    world = BabyAIWorld("GoToSeq", 1)  # starts facing a wall
    world.reset()
    position = tuple(world.raw.agent_pos)
    unknown = world.step("fly to the moon")
    assert not unknown.valid and "Unknown action" in unknown.observation
    assert "turn left, turn right, move forward" in unknown.observation
    empty = world.step("   ")
    assert not empty.valid and "Empty action" in empty.observation
    blocked = world.step("Move forward.")  # normalised; the wall does not move
    assert "You cannot move forward: a wall is in the way." in blocked.observation
    assert tuple(world.raw.agent_pos) == position
    assert world.step("drop").observation.startswith("You cannot drop: you carry nothing.")
    assert world.step(None).observation.startswith("Empty action")  # type: ignore[arg-type]


def test_steps_after_the_end_do_nothing():
    world = BabyAIWorld("GoToRedBall", 0)
    run = run_expert(world)
    after = world.step("move forward")
    assert after.observation == ENDED_NOTE and after.done and after.success and not after.valid
    assert world.expert_action() is None and run.final.success


def test_unknown_level_names_the_levels():
    with pytest.raises(ValueError, match="unknown BabyAI level 'NoSuchLevel'; levels: .*GoTo"):
        BabyAIWorld("NoSuchLevel")


def test_expert_copes_with_refused_and_off_plan_actions():
    world = BabyAIWorld("PutNextLocal", 1)
    world.reset()
    first = world.expert_action()
    assert world.expert_action() == first  # asking twice does not replan
    world.step("fly")  # refused: nothing was played
    assert world.expert_action() == first
    world.step("turn left")
    world.step("turn left")  # off the bot's plan; it replans from what was played
    state = world.state
    for _ in range(100):
        if state.done:
            break
        state = world.step(world.expert_action())
    assert state.success
