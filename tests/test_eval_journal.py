"""`TurnJournal` with the real tiny model: what a resumed batch replays, where it stops
replaying, and what it does with a journal of another batch or a line cut short."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from agemem.eval.journal import TurnJournal
from agemem.policy.hf import HFPolicy


class CountingPolicy:
    """The tiny model, counting the contexts it is asked about."""

    def __init__(self) -> None:
        self.model = HFPolicy.from_pretrained("tiny", max_new_tokens=6, temperature=0)
        self.calls = 0

    def act(self, contexts, tools=None):
        self.calls += len(contexts)
        return self.model.act(contexts, tools)


@pytest.fixture(scope="module")
def policy() -> CountingPolicy:
    return CountingPolicy()


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_resumed_batch_is_answered_from_the_journal_until_its_calls_differ(policy, tmp_path):
    path = tmp_path / "journal.jsonl"
    first = TurnJournal(policy, path)
    first.begin("batch 0")
    a = first.act([chat("ann has a red box"), chat("bob has a cat")])
    first.act([chat("where is the box")])
    first.close()
    before = policy.calls

    resumed = TurnJournal(policy, path)
    resumed.begin("batch 0")
    assert [asdict(t) for t in resumed.act([chat("ann has a red box"), chat("bob has a cat")])] == [
        asdict(t) for t in a
    ]
    assert policy.calls == before and resumed.replayed == 2 and resumed.replayed_seconds > 0
    resumed.act([chat("where is the cat")])  # not what was journaled next: the model answers
    assert policy.calls == before + 1
    resumed.close()
    assert path.read_text().count("\n") == 3  # header, the replayed call, the new one

    again = TurnJournal(policy, path)
    again.begin("batch 0")
    again.act([chat("ann has a red box"), chat("bob has a cat")])
    again.act([chat("where is the cat")])
    assert policy.calls == before + 1 and again.replayed == 3


def test_another_batch_or_a_cut_line_is_not_replayed(policy, tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = TurnJournal(policy, path)
    journal.begin("batch 0")
    journal.act([chat("one")])
    journal.act([chat("two")])
    journal.close()
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:20])  # killed mid-write
    journal.begin("batch 0")
    assert path.read_bytes() == b"\n".join(lines[:2]) + b"\n"  # the cut line is dropped
    before = policy.calls
    journal.act([chat("one")])
    journal.act([chat("two")])
    assert policy.calls == before + 1 and journal.replayed == 1

    journal.begin("batch 1")  # the next batch starts a fresh journal
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"batch": "batch 1"}]
    journal.finish()
    assert not path.exists()
