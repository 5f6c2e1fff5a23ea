"""Scripted policies driving real episodes (real store, embedder, context and tools)."""

from __future__ import annotations

from collections import Counter

import pytest

from agemem.env import PRESETS, MemoryEnv, run_episodes
from agemem.env.embed_cache import cached
from agemem.env.oracle import PERFECT, Oracle, OracleError, OracleRates
from agemem.env.record import Expert, View
from agemem.policy.base import Policy
from agemem.policy.scripted import NoMemoryPolicy, StoreEverythingPolicy
from agemem.policy.tiny import tiny_token_counter
from agemem.tasks import load_tasks
from agemem.tasks.hotpotqa import display_title
from agemem.tasks.hotpotqa_long import chunk_text, long_context
from agemem.tasks.synthetic import ATTRIBUTES
from agemem.tokens import ApproxTokenCounter

SYNTHETIC = PRESETS["synthetic"]


def strategy(task, episode) -> str:
    """How the episode's facts say the asked fact's correction was stored."""
    question = task.questions[0]
    (fact,) = [
        f
        for f in task.metadata["facts"]
        if f["values"][-1] == question.answers[0]
        and f["entity"] in question.text
        and len(f["values"]) > 1
    ]
    template = next(a.statement for a in ATTRIBUTES if a.name == fact["attribute"])
    old, new = (template.format(name=fact["entity"], value=v) for v in fact["values"][-2:])
    if any((u.old_content, u.content) == (old, new) for u in episode.facts.updates):
        return "update"
    if any(d.old_content == old for d in episode.facts.deletes):
        return "delete_add"
    return "duplicate"


def within(share: float, p: float, n: int) -> bool:
    """`share` is within 4 standard deviations of a binomial rate `p` over `n` draws."""
    return abs(share - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 1e-9


def test_default_oracle_keeps_its_configured_rates(embedder):
    tasks = load_tasks("synthetic", limit=8)  # x5 rollouts: independent draws, shared embeddings
    oracle = Oracle(seed=0)
    assert isinstance(oracle, Expert) and not isinstance(oracle, Policy)
    episodes = run_episodes(oracle, tasks, SYNTHETIC, k=5, progress=False, embedder=embedder)
    rates = OracleRates()
    drawn: dict[str, Counter] = {
        "correction": Counter(),
        "chit-chat": Counter(),
        "stage2": Counter(),
    }
    for _, what, choice in oracle.decisions:
        drawn[what.split(" ")[0]][choice.removesuffix(" (no id)")] += 1
    expected = {
        "correction": {
            "duplicate": rates.correction_duplicate,
            "update": rates.correction_update,
            "delete_add": rates.correction_delete_add,
        },
        "chit-chat": {"store": rates.store_chitchat},
        "stage2": {"filter": rates.stage2_filter, "summary": rates.stage2_summary},
    }
    for what, shares in expected.items():
        n = sum(drawn[what].values())
        assert n == {"correction": 80, "chit-chat": 80, "stage2": 160}[what]
        for choice, p in shares.items():
            assert within(drawn[what][choice] / n, p, n), (what, choice, drawn[what])
    # The strategy decides the answer: a correction applied in place is always answered right;
    # a duplicate leaves it to the retrieval order.
    outcomes = Counter((strategy(tasks[i // 5], e), e.correct()[0]) for i, e in enumerate(episodes))
    assert outcomes[("update", False)] == outcomes[("delete_add", False)] == 0
    assert outcomes[("update", True)] and outcomes[("duplicate", True)] < sum(
        n for (s, _), n in outcomes.items() if s == "duplicate"
    )
    in_place = outcomes[("update", True)] + outcomes[("delete_add", True)]
    success = sum(e.correct()[0] for e in episodes) / len(episodes)
    assert in_place / 40 <= success <= (in_place + outcomes[("duplicate", True)]) / 40
    assert any(e.facts.updates for e in episodes) and any(e.facts.deletes for e in episodes)
    assert sum(e.facts.overflowed for e in episodes) > 0  # doing nothing in stage 2 overflows


def test_perfect_oracle_always_answers_right_and_never_overflows(embedder):
    tasks = load_tasks("synthetic", split="test", limit=12)
    oracle = Oracle(rates=PERFECT)
    counter = tiny_token_counter()  # the budget the synthetic preset is calibrated with
    episodes = run_episodes(
        oracle, tasks, SYNTHETIC, progress=False, embedder=embedder, token_counter=counter
    )
    assert all(e.correct() == [True] for e in episodes)
    assert not any(e.facts.overflowed for e in episodes)
    assert {c for _, _, c in oracle.decisions} == {"update", "skip", "filter"}
    assert all(len(e.facts.updates) == 2 and not e.facts.failed_counts() for e in episodes)


def test_oracle_rates_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        OracleRates(correction_duplicate=0.5, correction_update=0.1, correction_delete_add=0.1)
    with pytest.raises(ValueError, match="store_chitchat"):
        OracleRates(store_chitchat=1.5)


def test_oracle_reads_the_env_record_not_the_rendered_context(embedder):
    task = load_tasks("synthetic", limit=1)[0]
    env = MemoryEnv(SYNTHETIC, embedder=cached(embedder))
    context = env.reset(task)
    view = env.view
    assert view.task is task and view.incoming == task.contextual[0] and view.stage == 1
    assert "<tool_call>" in Oracle().act_on([view])[0].text
    # the same messages without the record: the oracle does not guess from text
    with pytest.raises(OracleError, match="no task"):
        Oracle().act_on([View(context, view.tokens, 1)])
    env.close()


def test_store_everything_adds_every_message_and_answers_with_an_entry(embedder):
    tasks = load_tasks("synthetic", limit=3)
    episodes = run_episodes(
        StoreEverythingPolicy(), tasks, SYNTHETIC, progress=False, embedder=embedder
    )
    for task, episode in zip(tasks, episodes, strict=True):
        facts = episode.facts
        stored = {m.content for m in facts.final_memories}
        assert facts.tool_counts().get("Add_memory", 0) == len(task.contextual)
        assert "Filter_context" not in facts.tool_counts() and facts.answers[0] in stored


def test_no_memory_never_touches_memory_and_answers_from_the_context(embedder):
    tasks = load_tasks("synthetic", limit=3)
    episodes = run_episodes(NoMemoryPolicy(), tasks, SYNTHETIC, progress=False, embedder=embedder)
    for task, episode in zip(tasks, episodes, strict=True):
        assert episode.facts.calls == [] and episode.facts.final_memories == []
        assert episode.facts.answers[0] in [*task.distractors, "I don't know."]


# ---- AtomMem -------------------------------------------------------------------------------


def atommem_pool(group_size: int = 3):
    """One long-context HotpotQA task small enough to read in a few chunks."""
    return load_tasks(
        "hotpotqa-long", limit=1, n_docs=12, group_size=group_size, question_paragraphs="supporting"
    )


ATOM_SMALL = PRESETS["atommem"].with_(chunk_tokens=150, chunk_overlap=20, atommem_top_k=5)


def test_atommem_oracle_stores_the_titled_evidence_and_keeps_a_scratchpad_line_per_question(
    embedder,
):
    tasks = atommem_pool()
    (task,) = tasks
    (episode,) = run_episodes(
        Oracle(rates=PERFECT), tasks, ATOM_SMALL, progress=False, embedder=embedder
    )
    facts = episode.facts
    assert facts.chunks_read == facts.chunks_total > 2 and all(episode.correct())
    stored = [m.content for m in facts.final_memories]
    # every supporting sentence a chunk holds whole, under its document's title, nothing else
    chunks = chunk_text(long_context(task), 150, 20, ApproxTokenCounter().count_text)
    whole = {s for s in task.supporting_facts if any(s in c for c in chunks)}
    assert len(whole) >= len(set(task.supporting_facts)) - 2
    assert sorted(s.split(": ", 1)[1] for s in stored) == sorted(whole)
    titles = {m.content.split("\n", 1)[0] for m in task.contextual}
    assert all(s.split(": ", 1)[0] in titles for s in stored)
    assert not facts.deletes and facts.tool_counts()["read"] == facts.chunks_total
    stored_titles = {s.split(": ", 1)[0] for s in stored}
    lines = facts.scratchpad.splitlines()
    assert len(lines) == len(task.questions)
    for i, (line, question) in enumerate(zip(lines, task.questions, strict=True), 1):
        found = set(line.removeprefix(f"Q{i}: ").split("; "))
        assert found == stored_titles & {display_title(t) for t in question.evidence}
        assert found, "each question's evidence is found in at least one document"


def test_atommem_oracle_deletes_a_stored_decoy_when_a_later_step_shows_it(embedder):
    tasks = atommem_pool(group_size=4)
    oracle = Oracle(rates=OracleRates(atommem_decoy=1.0), seed=1)
    (episode,) = run_episodes(oracle, tasks, ATOM_SMALL, progress=False, embedder=embedder)
    evidence = set(tasks[0].supporting_facts)
    decoys = [a.content for a in episode.facts.adds if a.content.split(": ", 1)[1] not in evidence]
    assert decoys and ("atommem decoy" in {d[1] for d in oracle.decisions})
    assert episode.facts.deletes, "a decoy shown by a later step is deleted"
    assert {d.old_content for d in episode.facts.deletes} <= set(decoys)
    assert episode.facts.failed_counts() == {} and all(episode.correct())
