"""ScienceWorld (Java simulator) through the text wrapper: the package's gold sequence solves a
task as text, unparsable input and task resets are refused, and a failed task ends at progress 0."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("scienceworld", reason="ScienceWorld needs: pip install scienceworld==1.2.3")
if shutil.which("java") is None:
    pytest.skip("ScienceWorld runs on Java 17", allow_module_level=True)

from agemem.agentic.scienceworld import NO_MATCH, ScienceWorldWorld  # noqa: E402
from agemem.agentic.world import ENDED_NOTE, run_expert  # noqa: E402


@pytest.fixture(scope="module")
def world():
    world = ScienceWorldWorld("find-living-thing", 1)
    yield world
    world.close()


def test_gold_sequence_solves_through_the_wrapper(world):
    run = run_expert(world)
    assert run.final.success and run.final.done and run.final.progress == 1.0
    assert run.all_valid and len(run.actions) >= 5
    assert world.step("look around").observation == ENDED_NOTE


def test_first_state_has_goal_templates_and_inventory(world):
    first = world.reset()
    assert first.goal.startswith("Your task is to find a(n) living thing")
    assert "focus on OBJ" in first.admissible and "reset task" not in first.admissible
    assert "In your inventory" in first.observation
    assert 0.0 <= first.progress < 0.2 and not first.done  # some tasks score a few points at start


def test_bad_input_is_refused_without_a_step(world):
    world.reset()
    garbled = world.step("xyzzy plugh")
    assert not garbled.valid and garbled.observation == f"{NO_MATCH} ('xyzzy plugh')"
    reset = world.step("Reset task")
    assert not reset.valid and "Restarting the task is not allowed" in reset.observation
    assert world.expert_action() == world._gold[0]  # still on the gold path


def test_failing_the_task_ends_it_with_zero_progress(world):
    world.reset()
    failed = world.step("focus on agent")  # focusing on the wrong thing fails the task
    assert failed.done and not failed.success and failed.progress == 0.0


def test_unknown_task_lists_the_tasks():
    with pytest.raises(ValueError, match="unknown ScienceWorld task 'levitate'; tasks: boil"):
        ScienceWorldWorld("levitate")
