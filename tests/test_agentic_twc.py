"""TWC (textworld-express) through the text wrapper: the gold path solves games as text, refused
actions cost no game move, and progress is the game's score."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("textworld_express", reason="TWC needs: pip install textworld-express==1.1.0")
if shutil.which("java") is None:
    pytest.skip("TWC runs on Java", allow_module_level=True)

from agemem.agentic.twc import TWCWorld  # noqa: E402
from agemem.agentic.world import ENDED_NOTE, run_expert  # noqa: E402


@pytest.fixture
def world():
    world = TWCWorld(seed=1, items=3)
    yield world
    world.close()


def test_gold_path_solves_with_rising_progress(world):
    state = world.reset()
    assert state.goal.startswith("Your task is to pick up objects")
    progress = [state.progress]
    while (action := world.expert_action()) is not None:
        state = world.step(action)
        assert state.valid, state.observation
        progress.append(state.progress)
    assert state.done and state.success and progress[-1] == 1.0
    assert progress == sorted(progress) and 0.0 < progress[len(progress) // 2] < 1.0


def test_refused_action_changes_nothing_and_expert_goes_on(world):
    first = world.reset()
    refused = world.step("dance on the table")
    assert not refused.valid
    assert "That action is not possible now ('dance on the table')" in refused.observation
    assert "Valid actions: " in refused.observation and "look around" in refused.observation
    assert refused.admissible == first.admissible and refused.progress == 0.0
    assert world.env.step("inventory")[3]["numMoves"] == 1  # the refused action was not played
    run_from_here = []
    while (action := world.expert_action()) is not None:
        run_from_here.append(world.step(action))
    assert run_from_here[-1].success


def test_steps_after_the_end_do_nothing():
    world = TWCWorld(seed=2, items=1)
    run = run_expert(world)
    assert run.final.success and run.all_valid and len(run.actions) >= 2
    assert world.step("look around").observation == ENDED_NOTE
    world.close()
    world.close()  # twice is fine


def test_bad_fold_is_named():
    with pytest.raises(ValueError, match="fold must be one of"):
        TWCWorld(fold="holdout")
