"""`run_episodes(in_flight=N)`: episodes streamed to a policy one context per call, as a
server with continuous batching takes them. The envs, store, embedder and driver are real; the
policy is a small rule-based one whose calls take different times, so turns come back out of
order."""

from __future__ import annotations

import threading
import time
import zlib

import pytest

from agemem.env import PRESETS, run_episodes
from agemem.env.oracle import Oracle
from agemem.policy.scripted import call, emit
from agemem.tasks import ContextMessage, Question, Task


def _task(i: int) -> Task:
    return Task(
        id=f"t{i}",
        family="custom",
        contextual=[
            ContextMessage(f"Ana{i} lives in Paris."),
            ContextMessage(f"Ana{i} moved to Rome."),
        ],
        distractors=[f"Bo{i} plays golf every Sunday.", "The weather in Oslo is cold."],
        questions=[Question(f"Where does Ana{i} live?", ("Rome",))],
    )


TASKS = [_task(i) for i in range(3)]


class Rules:
    """Stores every incoming message, answers a question with "Rome"; a call sleeps 5-24 ms
    by its context's hash. Counts the calls in flight and the contexts per call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0
        self.batch_sizes: list[int] = []

    def act(self, contexts, tools=None):
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.batch_sizes.append(len(contexts))
        try:
            turns = []
            for messages in contexts:
                last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
                time.sleep((5 + zlib.crc32(last.encode()) % 20) / 1000)
                if "?" in last:
                    turns.append(emit("recall", [call("Retrieve_memory", query=last)], "Rome"))
                else:
                    turns.append(emit("keep", [call("Add_memory", content=last[-60:])]))
            return turns
        finally:
            with self.lock:
                self.in_flight -= 1


def _digest(episodes):
    return [
        (e.group_id, [(s.text, [o.model_dump() for o in s.observations]) for s in e.steps])
        for e in episodes
    ]


def test_streamed_episodes_equal_lockstep_ones_and_keep_within_in_flight(embedder):
    config = PRESETS["paper"].with_(stage3_max_turns=2)
    lockstep = run_episodes(Rules(), TASKS, config, k=2, progress=False, embedder=embedder)
    policy = Rules()
    streamed = run_episodes(
        policy, TASKS, config, k=2, progress=False, embedder=embedder, in_flight=4
    )
    assert _digest(streamed) == _digest(lockstep)  # same episodes, in slot order
    assert [e.facts.answers for e in streamed] == [e.facts.answers for e in lockstep]
    assert any(a == "Rome" for e in streamed for a in e.facts.answers)
    assert set(policy.batch_sizes) == {1}  # one context per request
    assert 2 <= policy.most_in_flight <= 4  # 6 episodes, at most 4 requests at once


def test_a_failing_request_surfaces_instead_of_hanging(embedder):
    class Breaks(Rules):
        def act(self, contexts, tools=None):
            if len(self.batch_sizes) >= 5:
                raise RuntimeError("server went away")
            return super().act(contexts, tools)

    with pytest.raises(RuntimeError, match="server went away"):
        run_episodes(
            Breaks(), TASKS, PRESETS["paper"], progress=False, embedder=embedder, in_flight=2
        )


def test_in_flight_needs_a_policy_and_a_positive_count(embedder):
    with pytest.raises(ValueError, match="needs a Policy"):
        run_episodes(Oracle(), TASKS, PRESETS["paper"], progress=False, in_flight=2)
    with pytest.raises(ValueError, match="in_flight must be >= 1"):
        run_episodes(Rules(), TASKS, PRESETS["paper"], progress=False, in_flight=0)
