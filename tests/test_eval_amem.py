"""a-mem-style: notes, links and evolution land in the real SQLite store, retrieval follows the
links, bad model output becomes failed calls, and a real small model runs it end to end.

The logic tests drive the method with `ScriptedLLM`, a Policy that answers each prompt with a
fixed output chosen from the prompt's text. It stands in for the language model, which is
outside the code under test; store, embedder, token counting and episode records are real.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from agemem.episode import Episode
from agemem.eval.methods.amem import (
    ANALYZE_INSTRUCTION,
    EVOLVE_INSTRUCTION,
    LINK_INSTRUCTION,
    AMemStyleMethod,
)
from agemem.eval.methods.answering import ANSWER_INSTRUCTION
from agemem.eval.methods.base import EvalMethod, RunContext
from agemem.eval.methods.pipeline import EVIDENCE_KEY, retrieved_evidence
from agemem.memory.sqlite import SQLiteStore
from agemem.policy.base import Message, Turn
from agemem.tasks.base import ContextMessage, Question, Task
from agemem.tokens import ApproxTokenCounter

Rule = Callable[[str, str], str]  # (system instruction, user content) -> model output


class ScriptedLLM:
    """Stands in for the model: `rule` picks each output from the prompt's text."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def act(self, contexts: list[list[Message]], tools: object = None) -> list[Turn]:
        return [Turn(text=self.rule(c[0]["content"], c[-1]["content"])) for c in contexts]


def new_note(user: str) -> str:
    """The new note's message text (its first line) in a link or evolution prompt."""
    return user.split("New note:\n", 1)[1].split("\n", 1)[0]


def shown_id(user: str, words: str) -> int:
    match = re.search(rf"^\[(\d+)\] {re.escape(words)}", user, re.MULTILINE)
    assert match, f"{words!r} is not among the shown notes:\n{user}"
    return int(match.group(1))


def task(*messages: str, distractors: tuple[str, ...] = (), question: str) -> Task:
    return Task(
        id="t1",
        family="custom",
        contextual=[ContextMessage(text, id=f"m{i + 1}") for i, text in enumerate(messages)],
        distractors=list(distractors),
        questions=[Question(question, ("x",))],
    )


def context(policy: ScriptedLLM, embedder, top_k: int = 5) -> RunContext:
    return RunContext(
        policy=policy,
        embedder=embedder,
        token_counter=ApproxTokenCounter(),
        t_max=4000,
        top_k=top_k,
    )


def analysis(user: str) -> str:
    words = user.removeprefix("Note: ").split()
    return json.dumps({"keywords": words[:3], "tags": ["people"], "context": f"About {words[0]}."})


def test_notes_links_and_evolution_land_in_the_store(embedder, tmp_path):
    def rule(system: str, user: str) -> str:
        if system == ANALYZE_INSTRUCTION:
            return analysis(user)
        if system == LINK_INSTRUCTION:  # link the new note to the shown notes on its person
            person = new_note(user).split()[0]
            same = [n for n in NOTES if n.startswith(person) and f"] {n}" in user]
            return json.dumps({"links": [shown_id(user, n) for n in same]})
        if system == EVOLVE_INSTRUCTION:
            if new_note(user) != "ana adopted a dog":
                return json.dumps({"updates": []})
            index = shown_id(user, "ana lives in rome")
            return json.dumps({"updates": [{"id": index, "context": "Ana, dog owner in Rome."}]})
        return "rome"

    NOTES = ["ana lives in rome", "ben plays chess", "ana adopted a dog"]  # noqa: N806
    path = tmp_path / "amem.db"
    method = AMemStyleMethod(store_path=path)
    assert isinstance(method, EvalMethod)
    data = task(*NOTES, distractors=("the weather is nice",), question="where does ana live ?")
    (episode,) = method.run([data], context(ScriptedLLM(rule), embedder))

    facts = episode.facts
    assert facts.tool_counts() == {"a-mem/note": 4, "a-mem/link": 1, "a-mem/evolve": 1}
    with SQLiteStore(path, embedder=embedder) as store:
        notes = {item.metadata["text"]: item for item in store.get_all()}
    rome, dog = notes["ana lives in rome"], notes["ana adopted a dog"]
    assert rome.metadata["links"] == [dog.id] and dog.metadata["links"] == [rome.id]
    assert notes["ben plays chess"].metadata["links"] == []
    assert rome.metadata["context"] == "Ana, dog owner in Rome."  # evolved
    assert rome.content.splitlines() == [
        "ana lives in rome",
        "keywords: ana, lives, in",
        "tags: people",
        "context: Ana, dog owner in Rome.",
    ]
    assert [(u.id, u.content) for u in facts.updates] == [(rome.id, rome.content)]
    assert notes["the weather is nice"].metadata[EVIDENCE_KEY] == []  # a distractor
    assert dog.metadata[EVIDENCE_KEY] == ["m3"]
    # 4 analyses, then link + evolution for each of the 3 notes that had neighbours, 1 answer
    assert len(episode.steps) == 4 + 2 * 3 + 1
    assert {m.content for m in facts.final_memories} == {n.content for n in notes.values()}
    assert Episode.from_line(episode.to_line()) == episode


def test_retrieval_follows_links(embedder):
    def rule(system: str, user: str) -> str:
        if system == ANALYZE_INSTRUCTION:
            return analysis(user)
        if system == LINK_INSTRUCTION:
            note = new_note(user)
            if note == "the parcel arrived on friday":
                return json.dumps({"links": [shown_id(user, "ana ordered a red bicycle")]})
            return json.dumps({"links": []})
        if system == EVOLVE_INSTRUCTION:
            return json.dumps({"updates": []})
        return "a red bicycle"

    data = task(
        "ana ordered a red bicycle",
        "ben bakes bread every morning",
        "the parcel arrived on friday",
        question="when did the parcel arrive ?",
    )
    (episode,) = AMemStyleMethod().run([data], context(ScriptedLLM(rule), embedder, top_k=1))
    answer = episode.steps[-1]
    assert answer.messages[0]["content"] == ANSWER_INSTRUCTION
    shown = answer.messages[-1]["content"]
    # top-1 is the parcel note; the bicycle note comes only through the link
    assert "the parcel arrived" in shown and "ana ordered a red bicycle" in shown
    assert shown.index("the parcel arrived") < shown.index("ana ordered a red bicycle")
    assert "ben bakes bread" not in shown
    assert retrieved_evidence(episode) == [["m3", "m1"]]
    assert len(episode.facts.retrieved_ids) == 2

    def no_links(system: str, user: str) -> str:
        return '{"links": []}' if system == LINK_INSTRUCTION else rule(system, user)

    ctx = context(ScriptedLLM(no_links), embedder, top_k=1)
    (without,) = AMemStyleMethod(evolve=False).run([data], ctx)
    assert retrieved_evidence(without) == [["m3"]]  # no link, nothing followed
    assert not any(s.messages[0]["content"] == EVOLVE_INSTRUCTION for s in without.steps)


def test_malformed_output_becomes_failed_calls_and_changes_nothing(embedder):
    def rule(system: str, user: str) -> str:
        if system == ANALYZE_INSTRUCTION:
            return "keywords are ana and rome" if "second" in user else analysis(user)
        if system == LINK_INSTRUCTION:
            return "link them all" if "second" in new_note(user) else '{"links": [9, "0"]}'
        if system == EVOLVE_INSTRUCTION:
            if "second" in new_note(user):
                return '{"updates": [{"id": 5, "context": "nope"}]}'
            if "third" in new_note(user):
                return "<think>hmm</think>"
            return '{"links": [0]}'  # JSON, but not the updates asked for
        return ""

    data = task("first ana note", "second ana note", "third ana note", "fourth", question="who ?")
    (episode,) = AMemStyleMethod().run([data], context(ScriptedLLM(rule), embedder))

    facts = episode.facts
    assert facts.tool_counts() == {"a-mem/note": 4, "a-mem/link": 2}
    assert [(c.name, c.error) for c in facts.calls if not c.ok] == [
        ("a-mem/analyze", "parse"),  # the second note is stored with its text only
        ("a-mem/link", "parse"),
        ("a-mem/evolve", "arguments"),  # id 5 names no shown note
        ("a-mem/link", "arguments"),  # third note: id 9 refused, "0" linked
        ("a-mem/evolve", "parse"),  # nothing left after <think>
        ("a-mem/link", "arguments"),  # fourth note: the same
        ("a-mem/evolve", "parse"),  # an object without "updates"
    ]
    second = next(m for m in facts.final_memories if m.content.startswith("second"))
    assert second.content == "second ana note"
    assert facts.updates == [] and facts.answers == [None]
    assert facts.format_errors == 4


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="neighbours must be a positive integer"):
        AMemStyleMethod(neighbours=0)


def test_end_to_end_with_a_real_small_model(embedder):
    from agemem.policy.hf import HFPolicy
    from agemem.tasks import load_tasks
    from agemem.tokens import HFTokenCounter

    policy = HFPolicy.from_pretrained("tiny", max_new_tokens=24, seed=0)
    tasks = load_tasks("synthetic", split="test", limit=2)
    ctx = RunContext(
        policy=policy,
        embedder=embedder,
        token_counter=HFTokenCounter(policy.tokenizer),
        t_max=1024,
    )
    episodes = AMemStyleMethod().run(tasks, ctx)

    assert [e.task_id for e in episodes] == [t.id for t in tasks]
    for episode, data in zip(episodes, tasks, strict=True):
        facts = episode.facts
        n_messages = len(data.contextual) + len(data.distractors)
        # every message becomes a note, whatever the model wrote
        assert facts.tool_counts()["a-mem/note"] == len(facts.final_memories) == n_messages
        kinds = [s.messages[0]["content"] for s in episode.steps]
        assert kinds.count(ANALYZE_INSTRUCTION) == n_messages
        assert kinds.count(LINK_INSTRUCTION) == n_messages - 1  # all but the first have neighbours
        assert kinds.count(ANSWER_INSTRUCTION) == len(data.questions)
        assert facts.method == "a-mem-style" and len(facts.answers) == len(data.questions)
        assert all(s.completion_ids and s.tokens > 0 for s in episode.steps)
        assert all(t is not None for t in facts.tokens_at_answer)
        assert Episode.from_line(episode.to_line()) == episode
