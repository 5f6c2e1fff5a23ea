"""mem0-style: the decided operations change the real SQLite store as decided, bad model output
becomes failed calls, and a real small model runs it end to end.

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
from agemem.eval.methods.answering import ANSWER_INSTRUCTION
from agemem.eval.methods.base import EvalMethod, RunContext
from agemem.eval.methods.lockstep import run_lockstep
from agemem.eval.methods.mem0 import EXTRACT_INSTRUCTION, Mem0StyleMethod
from agemem.eval.methods.pipeline import EVIDENCE_KEY, retrieved_evidence
from agemem.memory.sqlite import SQLiteStore
from agemem.policy.base import Message, Turn
from agemem.tasks.base import ContextMessage, Question, Task
from agemem.tokens import ApproxTokenCounter

Rule = Callable[[str, str], str]  # (system instruction, user content) -> model output


class ScriptedLLM:
    """Stands in for the model: `rule` picks each output from the prompt; every batch is kept."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.batches: list[list[list[Message]]] = []

    def act(self, contexts: list[list[Message]], tools: object = None) -> list[Turn]:
        self.batches.append(contexts)
        return [Turn(text=self.rule(c[0]["content"], c[-1]["content"])) for c in contexts]


def new_message(user: str) -> str:
    return user.split("New message: ", 1)[1]


def new_fact(user: str) -> str:
    return user.split("New fact: ", 1)[1]


def shown_id(user: str, words: str) -> str:
    """The id the prompt shows for the stored memory containing `words`."""
    match = re.search(rf"^\[(\d+)\] [^\n]*{re.escape(words)}", user, re.MULTILINE)
    assert match, f"{words!r} is not among the shown memories:\n{user}"
    return match.group(1)


def call(name: str, **arguments: str) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def first_memory(user: str) -> str:
    return user.split("Memories:\n- ", 1)[1].split("\n", 1)[0]


def task(*messages: str, question: str = "where does ana live ?", answer: str = "rome") -> Task:
    return Task(
        id="t1",
        family="custom",
        contextual=[ContextMessage(text, id=f"m{i + 1}") for i, text in enumerate(messages)],
        distractors=[],
        questions=[Question(question, (answer,), evidence=("m2",))],
    )


def context(policy: ScriptedLLM, embedder, t_max: int = 4000, top_k: int = 5) -> RunContext:
    return RunContext(
        policy=policy,
        embedder=embedder,
        token_counter=ApproxTokenCounter(),
        t_max=t_max,
        top_k=top_k,
    )


def test_add_update_delete_noop_change_the_store_as_decided(embedder, tmp_path):
    def rule(system: str, user: str) -> str:
        if system.startswith("Extract"):
            return json.dumps({"facts": [new_message(user)]})
        if system.startswith("Answer"):
            return f"Answer: {first_memory(user)}"
        fact = new_fact(user)
        if fact.startswith("ana moved"):
            return call("UPDATE", id=shown_id(user, "ana lives in paris"), text="ana lives in rome")
        if fact.startswith("ben gave"):
            return call("DELETE", id=shown_id(user, "ben has a cat"))
        if fact.startswith("the weather"):
            return call("NOOP")
        return call("ADD", text=fact)

    path = tmp_path / "mem0.db"
    data = task(
        "ana lives in paris", "ana moved to rome", "ben has a cat", "ben gave away his cat",
        "the weather is nice",
    )  # fmt: skip
    method = Mem0StyleMethod(store_path=path)
    assert isinstance(method, EvalMethod)
    (episode,) = method.run([data], context(ScriptedLLM(rule), embedder))

    facts = episode.facts
    assert facts.tool_counts() == {
        "mem0/ADD": 2,
        "mem0/UPDATE": 1,
        "mem0/DELETE": 1,
        "mem0/NOOP": 1,
    }
    assert [m.content for m in facts.final_memories] == ["ana lives in rome"]
    assert [(u.old_content, u.content) for u in facts.updates] == [
        ("ana lives in paris", "ana lives in rome")
    ]
    assert [d.old_content for d in facts.deletes] == ["ben has a cat"]
    with SQLiteStore(path, embedder=embedder) as store:  # the file holds what the episode says
        (item,) = store.get_all()
        assert item.metadata[EVIDENCE_KEY] == ["m1", "m2"]  # the update merged its evidence
    assert facts.answers == ["ana lives in rome"]
    assert facts.retrieved_ids == [item.id]
    assert retrieved_evidence(episode) == [["m1", "m2"]]
    # one extraction and one decision per message, then the answer
    assert len(episode.steps) == 11 and facts.rounds == 11
    answer_step = episode.steps[-1]
    assert answer_step.stage == 3 and answer_step.question == 0
    assert facts.tokens_at_answer == [answer_step.tokens]
    assert answer_step.tokens == ApproxTokenCounter().count_messages(answer_step.messages)
    assert facts.seconds[0] > 0 and facts.format_errors == 0
    assert Episode.from_line(episode.to_line()) == episode


def test_malformed_output_becomes_failed_calls_and_changes_nothing(embedder):
    def rule(system: str, user: str) -> str:
        if system.startswith("Extract"):
            message = new_message(user)
            if message == "gibberish":
                return "I think the facts are: none really"
            if message == "wrong shape":
                return '{"name": "ADD", "arguments": {}}'  # JSON, but not the facts asked for
            return json.dumps({"facts": ["ana lives in paris"] if message == "m1" else [message]})
        if system.startswith("Answer"):
            return "<think>no idea</think>"
        fact = new_fact(user)
        return {
            "ana lives in paris": call("ADD"),  # no text: the fact itself is stored
            "unreadable": "I would update the memory.",
            "truncated": '{"name": "UPDATE", "arguments": {"id": ',  # repaired: an empty id
            "merge": call("MERGE", id="0"),
            "bad id": call("UPDATE", id="7", text="x"),
        }[fact]

    data = task("m1", "gibberish", "wrong shape", "unreadable", "truncated", "merge", "bad id")
    (episode,) = Mem0StyleMethod().run([data], context(ScriptedLLM(rule), embedder))

    facts = episode.facts
    assert [m.content for m in facts.final_memories] == ["ana lives in paris"]
    assert facts.tool_counts() == {"mem0/ADD": 1}
    assert [(c.name, c.error) for c in facts.calls if not c.ok] == [
        ("mem0/extract", "parse"),
        ("mem0/extract", "parse"),
        ("mem0/decide", "parse"),
        ("mem0/UPDATE", "arguments"),
        ("mem0/decide", "unknown_tool"),
        ("mem0/UPDATE", "arguments"),
    ]
    assert facts.answers == [None]  # an empty reply is no answer
    unreadable = [s for s in episode.steps if s.actions.issues]
    assert len(unreadable) == facts.format_errors == 3
    assert "no facts extracted" in unreadable[0].actions.issues[0].message
    assert (
        'with "facts", got one with "name", "arguments"' in unreadable[1].actions.issues[0].message
    )
    assert "left unchanged" in unreadable[2].actions.issues[0].message


def test_update_of_an_entry_deleted_by_the_same_message_is_refused(embedder):
    def rule(system: str, user: str) -> str:
        if system.startswith("Extract"):
            message = new_message(user)
            return json.dumps({"facts": ["gone", "again"] if message == "two" else [message]})
        if system.startswith("Answer"):
            return "paris"
        fact = new_fact(user)
        if fact == "gone":
            return call("DELETE", id="0")
        if fact == "again":
            return call("UPDATE", id="0", text="ana lives in lima")
        return call("ADD", text=fact)

    (episode,) = Mem0StyleMethod().run(
        [task("ana lives in paris", "two")], context(ScriptedLLM(rule), embedder)
    )
    facts = episode.facts
    assert facts.final_memories == []
    assert [(c.name, c.error) for c in facts.calls] == [
        ("mem0/ADD", None),
        ("mem0/DELETE", None),
        ("mem0/UPDATE", "rejected"),
    ]


def test_summary_window_and_budget(embedder):
    seen: list[str] = []

    def rule(system: str, user: str) -> str:
        if system.startswith("Summarize"):
            return "SUMMARY-OF-" + str(len(seen))
        if system.startswith("Extract"):
            seen.append(user)
            return json.dumps({"facts": [new_message(user)]})
        if system.startswith("Answer"):
            return "x"
        return call("ADD", text=new_fact(user))

    method = Mem0StyleMethod(recent_messages=2, summary_every=2)
    (episode,) = method.run(
        [task("one one", "two two", "three three", "four four")],
        context(ScriptedLLM(rule), embedder),
    )
    assert "Summary: (none yet)" in seen[0]
    assert "Recent messages:\n- one one\n- two two\n\nNew message: three three" in seen[2]
    assert "Summary: SUMMARY-OF-2" in seen[2]
    assert len([s for s in episode.steps if s.messages[0]["content"].startswith("Summarize")]) == 2

    # a budget that holds the question but no memory: the memories are dropped, not the question
    question_only = ApproxTokenCounter().count_messages(episode.steps[-1].messages)
    small = context(ScriptedLLM(rule), embedder, t_max=question_only - 10)
    (tight,) = Mem0StyleMethod().run([task("one one", "two two")], small)
    answer = tight.steps[-1]
    assert "(nothing)" in answer.messages[-1]["content"]
    assert tight.facts.retrieved_ids == []
    assert [o.turn for o in tight.facts.overflows] == [
        s.turn for s in tight.steps if s.tokens > small.t_max
    ]


def test_model_calls_are_batched_across_tasks(embedder):
    def rule(system: str, user: str) -> str:
        if system.startswith("Extract"):
            return json.dumps({"facts": []})
        return "x"

    policy = ScriptedLLM(rule)
    tasks = [task("a b"), task("c d"), task("e f")]
    Mem0StyleMethod(batch_size=2).run(tasks, context(policy, embedder))
    # round 1: three extractions in batches of 2 and 1; round 2: three answers, the same
    assert [len(b) for b in policy.batches] == [2, 1, 2, 1]


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="recent_messages must be a positive integer"):
        Mem0StyleMethod(recent_messages=0)
    with pytest.raises(ValueError, match="batch_size"):
        run_lockstep(ScriptedLLM(lambda s, u: ""), [], batch_size=0)


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
    episodes = Mem0StyleMethod().run(tasks, ctx)

    assert [e.task_id for e in episodes] == [t.id for t in tasks]
    for episode, data in zip(episodes, tasks, strict=True):
        facts = episode.facts
        n_messages = len(data.contextual) + len(data.distractors)
        kinds = [s.messages[0]["content"] for s in episode.steps]
        assert kinds.count(EXTRACT_INSTRUCTION) == n_messages  # one extraction per message
        assert kinds.count(ANSWER_INSTRUCTION) == len(data.questions)
        assert facts.method == "mem0-style" and len(facts.answers) == len(data.questions)
        assert all(s.completion_ids and s.tokens > 0 for s in episode.steps)
        assert {s.stage for s in episode.steps} == {1, 2, 3}
        assert all(t is not None for t in facts.tokens_at_answer)
        assert len(facts.seconds) == len(data.questions)
        every_call = facts.tool_counts() | facts.failed_counts()
        assert all(isinstance(v, int) for v in every_call.values())
        assert Episode.from_line(episode.to_line()) == episode
