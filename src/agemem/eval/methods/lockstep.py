"""Run one pipeline per task in lockstep, so that the model calls of all tasks go out together.

A pipeline is a generator: it yields the prompts it needs answered now (a list of chats, possibly
empty) and receives one `Reply` per prompt, in order; its return value is its result. Written this
way, each task's logic reads top to bottom, while `run_lockstep` gathers the pending prompts of
every task into batches of `batch_size` for one `policy.act` call each: on CPU a batch of 8
generates several times the tokens per second of a single stream (docs/DESIGN.md).

>>> from agemem.policy.base import Turn
>>> class Echo:
...     def act(self, contexts, tools=None):
...         return [Turn(text=c[-1]["content"].upper()) for c in contexts]
>>> def job(word):
...     (reply,) = yield [[{"role": "user", "content": word}]]
...     return reply.turn.text
>>> run_lockstep(Echo(), [job("a"), job("b")])
['A', 'B']
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agemem.policy.base import Message, Policy, Turn

T = TypeVar("T")


@dataclass(frozen=True)
class Reply:
    """The model's turn for one prompt, and this prompt's share of the batched call's wall time
    (the call's seconds divided by the prompts in it): the latency a question is charged."""

    turn: Turn
    seconds: float


Job = Generator[list[list[Message]], list[Reply], T]


def run_lockstep(policy: Policy, jobs: Sequence[Job[T]], *, batch_size: int = 8) -> list[T]:
    """Drive every job to completion; their results, in job order."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    results: dict[int, T] = {}
    waiting: dict[int, list[list[Message]]] = {}
    for i in range(len(jobs)):
        _advance(jobs, i, None, waiting, results)
    while waiting:
        order = [(i, prompt) for i, prompts in sorted(waiting.items()) for prompt in prompts]
        replies = _act(policy, [prompt for _, prompt in order], batch_size)
        by_job: dict[int, list[Reply]] = {i: [] for i in waiting}
        for (i, _), reply in zip(order, replies, strict=True):
            by_job[i].append(reply)
        for i, answered in by_job.items():
            _advance(jobs, i, answered, waiting, results)
    return [results[i] for i in range(len(jobs))]


def _advance(
    jobs: Sequence[Job[T]],
    i: int,
    replies: list[Reply] | None,
    waiting: dict[int, list[list[Message]]],
    results: dict[int, T],
) -> None:
    """Resume job `i` with its replies until it asks for prompts (kept in `waiting`) or ends."""
    waiting.pop(i, None)
    try:
        prompts = jobs[i].send(replies)  # type: ignore[arg-type]  # None starts a generator
        while not prompts:  # nothing to ask this round: resume it at once
            prompts = jobs[i].send([])
    except StopIteration as stop:
        results[i] = stop.value
        return
    waiting[i] = prompts


def _act(policy: Policy, prompts: list[list[Message]], batch_size: int) -> list[Reply]:
    replies: list[Reply] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        began = time.perf_counter()
        turns = policy.act(batch)
        elapsed = time.perf_counter() - began
        if len(turns) != len(batch):
            raise RuntimeError(
                f"{type(policy).__name__}.act returned {len(turns)} turns for {len(batch)} "
                "contexts; a Policy must return exactly one turn per context"
            )
        replies += [Reply(turn, elapsed / len(batch)) for turn in turns]
    return replies
