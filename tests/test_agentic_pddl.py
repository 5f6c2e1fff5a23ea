"""PDDL (pddlgym, in its own environment behind a subprocess) through the text wrapper: the A*
expert solves blocks problems as text actions, bad actions become observations, progress counts
goal literals."""

from __future__ import annotations

import pytest

from agemem.agentic.world import WorldUnavailable, run_expert

try:
    from agemem.agentic.pddl import PDDLWorld, pddl_python

    pddl_python()
except WorldUnavailable as err:
    pytest.skip(str(err), allow_module_level=True)


def test_expert_solves_blocks_through_text_actions():
    world = PDDLWorld("blocks", 3)
    run = run_expert(world, max_steps=40)
    world.close()
    assert run.final.success and run.final.progress == 1.0 and run.all_valid
    assert all(a.startswith(("pickup(", "putdown(", "stack(", "unstack(")) for a in run.actions)


def test_state_goal_and_admissible_in_words():
    world = PDDLWorld("blocks", 0)
    first = world.reset()
    assert first.goal == "Reach a state where on(a, b) and on(b, c) and on(d, e) and on(e, f)"
    assert "ontable(a)" in first.observation and first.admissible[0] == "pickup(a)"
    after = world.step("pickup a")  # the other spelling of pickup(a)
    assert after.valid and "holding(a)" in after.observation
    stacked = world.step("(stack a b)")
    assert stacked.valid and stacked.progress == 0.25  # one of four goal literals holds
    world.close()


def test_bad_actions_are_observations():
    world = PDDLWorld("blocks", 0)
    world.reset()
    unknown = world.step("teleport(a)")
    assert not unknown.valid and unknown.observation.startswith("Unknown action ('teleport(a)')")
    assert "Valid actions: pickup(a), pickup(b)" in unknown.observation
    blocked = world.step("stack(a, b)")  # the hand is empty
    assert not blocked.valid and "preconditions do not hold" in blocked.observation
    assert not world.step("pickup(a, b, c)").valid and not world.step("((").valid
    assert world.step("pickup(a)").valid
    world.close()
    with pytest.raises(RuntimeError, match="closed"):
        world.step("pickup(b)")


def test_unknown_domain_and_problem_are_named():
    with pytest.raises(ValueError, match="no pddlgym environment PDDLEnvNosuchTest-v0"):
        PDDLWorld("nosuch", 0)
    with pytest.raises(ValueError, match="has problems 0..4; got 9"):
        PDDLWorld("blocks", 9)
