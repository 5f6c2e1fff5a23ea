"""The composite reward on hand-built episodes (real pydantic records, values computed by hand)
and on real episodes of the three-stage env driven by the scripted policies."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agemem.env import PRESETS as ENV_PRESETS
from agemem.env import QUESTION_PREFIX, run_episodes
from agemem.env.oracle import PERFECT, Oracle
from agemem.episode import (
    CallRecord,
    Episode,
    EpisodeFacts,
    GoldQuestion,
    MemoryOp,
    OverflowEvent,
    ParsedActions,
    RetrievedMemory,
    StepSample,
    StoredMemory,
)
from agemem.policy.base import Message, Policy, ToolSpec, Turn
from agemem.policy.scripted import NoMemoryPolicy, StoreEverythingPolicy
from agemem.policy.tiny import tiny_token_counter
from agemem.rewards import (
    PRESETS,
    RewardConfig,
    RewardError,
    compute_reward,
    compute_rewards,
    key_entities,
    parse_grade,
    retrieved_entries,
    reward_fn,
    stale_facts,
    token_f1,
)
from agemem.tasks import load_tasks
from agemem.tasks.base import Question, Task

# ---- builders ------------------------------------------------------------------------------

ANA = Task(
    id="t-ana",
    family="synthetic",
    contextual=[],
    distractors=[],
    questions=[Question("where does ana live ?", ("rome",))],
    supporting_facts=["ana lives in rome .", "ben works as a pilot ."],
    metadata={
        "facts": [
            {"entity": "ana", "attribute": "city", "values": ["paris", "rome"]},
            {"entity": "ben", "attribute": "job", "values": ["pilot"]},
        ]
    },
)


def step(turn: int, stage: int, tokens: int = 0, question: int | None = None, **kw) -> StepSample:
    return StepSample(
        turn=turn,
        stage=stage,
        messages=kw.pop("messages", []),
        text="",
        actions=ParsedActions(format="tags"),
        tokens=tokens,
        question=question,
        **kw,
    )


def episode(task: Task, steps: list[StepSample] | None = None, **facts) -> Episode:
    questions = [GoldQuestion(text=q.text, answers=list(q.answers)) for q in task.questions]
    base = {
        "method": "agemem",
        "questions": questions,
        "answers": [None] * len(questions),
        "tokens_at_answer": [None] * len(questions),
        "t_max": 1000,
    }
    return Episode(
        task_id=task.id,
        group_id=task.id,
        family=task.family,
        steps=steps or [],
        facts=EpisodeFacts(**(base | facts)),
    )


def op(content: str | None, stage: int = 1, old: str | None = None) -> MemoryOp:
    return MemoryOp(turn=0, stage=stage, id="mem_1", content=content, old_content=old)


def stored(*contents: str) -> list[StoredMemory]:
    return [StoredMemory(id=f"mem_{i}", content=c) for i, c in enumerate(contents, start=1)]


def found(*contents: str, question: int = 0) -> list[RetrievedMemory]:
    return [
        RetrievedMemory(turn=0, question=question, id=f"mem_{i}", content=c)
        for i, c in enumerate(contents, start=1)
    ]


class ScriptedJudge:
    """Stands in for a judge model (an LLM through any `Policy`): replies by rule, counts calls."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.batches: list[list[str]] = []

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None):
        prompts = [c[-1]["content"] for c in contexts]
        self.batches.append(prompts)
        return [Turn(text=self.reply(p)) for p in prompts]


# ---- R_task ---------------------------------------------------------------------------------


def test_token_f1_matches_hand_values():
    assert token_f1("the Eiffel Tower, Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert token_f1("New York City", ["NYC", "new york"]) == pytest.approx(0.8)  # best alias
    assert token_f1("A cat.", ["the cat"]) == 1.0
    assert token_f1("", ["cat"]) == token_f1("dog", ["cat"]) == 0.0


def test_task_score_is_the_mean_over_questions_with_minus_one_unanswered():
    task = Task(
        "t-3q",
        "test",
        [],
        [],
        [
            Question("capital of France?", ("Paris",)),
            Question("largest animal?", ("Blue Whale", "whale")),
            Question("who?", ("Ada",)),
        ],
    )
    ep = episode(task, answers=["The Paris.", "big blue whale", None])
    reward = compute_reward(ep, task)
    # EM: 1, 0, -1; F1: 1, 0.8 ("big blue whale" vs "blue whale": P 2/3, R 1), -1.
    assert reward["task_em"] == pytest.approx(0.0)
    assert reward["task_f1"] == pytest.approx(0.8 / 3)
    assert reward["task"] == reward["task_f1"]  # offline default
    assert "task_judge" not in reward
    assert compute_reward(ep, task, RewardConfig(task_metric="em"))["task"] == reward["task_em"]
    assert compute_reward(episode(task), task)["task"] == -1.0


# ---- LLM judge --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "grade"),
    [
        ("0.8", 0.8),
        ("<think>close, but 3 words differ</think> Score: 0.25", 0.25),
        ("8/10", 0.8),
        ("75 %", 0.75),
        ("1", 1.0),
        ("7", None),
        ("-0.5", None),
        ("1/0", None),
        ("looks right to me", None),
    ],
)
def test_parse_grade(text, grade):
    assert parse_grade(text) == (pytest.approx(grade) if grade is not None else None)


def test_llm_judge_grades_every_answer_in_batches():
    judge = ScriptedJudge(lambda prompt: "0.8")
    assert isinstance(judge, Policy)
    ep = episode(ANA, answers=["rome"])
    other = episode(ANA, answers=["paris"])
    rewards = compute_rewards([ep, other, ep], [ANA], RewardConfig(judge_batch=1), judge=judge)
    assert [r["task_judge"] for r in rewards] == [0.8, 0.8, 0.8]
    assert [r["task"] for r in rewards] == [0.8, 0.8, 0.8]  # "auto" picks the judge
    assert [r["task_em"] for r in rewards] == [1.0, 0.0, 1.0]
    assert len(judge.batches) == 2  # two distinct prompts, one per batch
    prompt = judge.batches[0][0]
    assert "where does ana live ?" in prompt and "rome" in prompt


def test_unparsable_judge_reply_scores_zero_with_a_warning(caplog):
    judge = ScriptedJudge(lambda prompt: "The answer seems right.")
    with caplog.at_level(logging.WARNING, logger="agemem.rewards"):
        reward = compute_reward(episode(ANA, answers=["rome"]), ANA, judge=judge)
    assert reward["task_judge"] == reward["task"] == 0.0
    assert "holds no grade" in caplog.text
    # An unanswered question is -1 without asking the judge.
    silent = ScriptedJudge(lambda prompt: "1")
    assert compute_reward(episode(ANA), ANA, judge=silent)["task"] == -1.0
    assert silent.batches == []


def test_llm_storage_judge():
    def reply(prompt: str) -> str:
        memory = prompt.split("Memory entry: ")[1]
        return "0.9" if "ana" in memory.split("\n")[0] else "0.2"

    ep = episode(ANA, final_memories=stored("ana lives in paris .", "lunch was great ."))
    config = RewardConfig(storage_judge="llm", task_metric="f1")
    reward = compute_reward(ep, ANA, config, judge=ScriptedJudge(reply))
    # precision 1/2 by the judge; recall 1/2 by overlap (ana's fact covered, ben's not)
    assert reward["memory_storage_precision"] == reward["memory_storage_recall"] == 0.5
    assert reward["memory_storage"] == 0.5


# ---- R_context --------------------------------------------------------------------------------


def test_compression_excludes_the_system_prompt_and_clips_at_zero():
    task = Task("t-2q", "test", [], [], [Question("a?", ("x",)), Question("b?", ("y",))])
    steps = [step(0, 3, 50, question=0), step(1, 3, 70, question=0), step(2, 3, 130, question=1)]
    ep = episode(task, steps, t_max=110, system_tokens=10)
    # q0: 1 - (70 - 10) / (110 - 10) = 0.4; q1: 1 - 120/100 < 0 -> 0.
    assert compute_reward(ep, task)["context_compression"] == pytest.approx(0.2)
    assert compute_reward(episode(task), task)["context_compression"] == 0.0  # never reached


@pytest.mark.parametrize(
    ("calls", "overflows", "expected"),
    [
        ([], [], 0.0),  # no overflow, but no context management either
        ([("Summary_context", 9, True)], [], 1.0),
        ([("Filter_context", 3, True)], [5], 1.0),
        ([("Summary_context", 3, True)], [5, 6], 1.0),
        ([("Filter_context", 5, True)], [5], 0.0),  # a reaction to the overflow
        ([("Filter_context", 3, False)], [5], 0.0),  # refused
        ([("Retrieve_memory", 3, True)], [5], 0.0),  # not context-reducing
    ],
)
def test_preventive(calls, overflows, expected):
    ep = episode(
        ANA,
        calls=[CallRecord(turn=t, stage=2, name=n, ok=ok) for n, t, ok in calls],
        overflows=[OverflowEvent(turn=t, stage=3, tokens=2000) for t in overflows],
    )
    assert compute_reward(ep, ANA)["context_preventive"] == expected


def test_key_entities():
    assert key_entities("Where did Marie Curie work in 1903? Which lab?") == [
        "Marie",
        "Curie",
        "1903",
    ]
    assert key_entities("where does ana live ?") == []
    assert key_entities("where does ana live ?", names=["ana"]) == ["ana"]


def test_preservation_counts_key_entities_outside_the_question_and_own_calls():
    question = "Where did Marie Curie work in 1903?"
    task = Task("t-curie", "test", [], [], [Question(question, ("Paris",))])
    messages = [
        {"role": "system", "content": "Marie Curie 1903"},
        {"role": "user", "content": "[Summary of earlier context]\nIn 1903 she won a prize."},
        {"role": "user", "content": QUESTION_PREFIX + question},
        {"role": "assistant", "content": '<tool_call>[{"query": "Marie Curie 1903"}]'},
        {"role": "tool", "content": "[mem_1] curie worked in Paris (score 0.70)"},
    ]
    ep = episode(task, [step(0, 3, question=0, messages=messages)])
    assert compute_reward(ep, task)["context_preservation"] == pytest.approx(2 / 3)
    # Synthetic questions are lowercase: the task's entity names are the key entities.
    found = [{"role": "tool", "content": "[mem_2] ana lives in rome ."}]
    assert (
        compute_reward(episode(ANA, [step(0, 3, question=0, messages=found)]), ANA)[
            "context_preservation"
        ]
        == 1.0
    )
    assert compute_reward(episode(ANA, [step(0, 3, question=0)]), ANA)["context_preservation"] == 0


# ---- R_memory ---------------------------------------------------------------------------------


def test_storage_precision_counts_stage1_adds_close_to_a_supporting_fact():
    adds = [
        op("ana lives in paris ."),  # F1 3/4 with "ana lives in rome ."
        op("the weather is nice today ."),
        op("ben works as a pilot ."),
        op("lunch was great .", stage=3),  # not stage 1
    ]
    paper = RewardConfig(storage_score="precision")
    reward = compute_reward(episode(ANA, adds=adds), ANA, paper)
    assert reward["memory_storage"] == pytest.approx(2 / 3)
    strict = paper.with_(overlap_threshold=0.9)
    assert compute_reward(episode(ANA, adds=adds), ANA, strict)["memory_storage"] == 1 / 3
    assert compute_reward(episode(ANA), ANA, paper)["memory_storage"] == 0.0
    # Without supporting facts, an add is good when it contains a gold answer.
    bare = Task("t-bare", "test", [], [], [Question("who?", ("Ada Lovelace",))])
    ep = episode(bare, adds=[op("I met Ada Lovelace."), op("I met Ada.")])
    assert compute_reward(ep, bare, paper)["memory_storage"] == 0.5


@pytest.mark.parametrize(
    ("memories", "precision", "recall"),
    [
        (["ana lives in rome .", "ben works as a pilot ."], 1.0, 1.0),  # the evidence only
        # everything stored: full recall, low precision (what RAG does)
        (["ana lives in rome .", "ben works as a pilot .", "hi !", "nice day .", "ok ."], 0.4, 1.0),
        (["ana lives in rome ."], 1.0, 0.5),  # half the evidence
        (["the weather is nice today ."], 0.0, 0.0),
        ([], 0.0, 0.0),
    ],
)
def test_storage_f1_scores_the_final_memories_by_precision_and_recall(memories, precision, recall):
    reward = compute_reward(episode(ANA, final_memories=stored(*memories)), ANA)
    assert reward["memory_storage_precision"] == pytest.approx(precision)
    assert reward["memory_storage_recall"] == pytest.approx(recall)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert reward["memory_storage"] == pytest.approx(f1)
    # stage-1 adds that were deleted later do not count: only what the store holds at the end
    junk = [op("the weather is nice today .")]
    again = compute_reward(episode(ANA, adds=junk, final_memories=stored(*memories)), ANA)
    assert again["memory_storage"] == reward["memory_storage"]


def test_storage_by_embedding(embedder):
    memories = ["Ana's home city is Rome.", "My phone battery died again."]
    config = RewardConfig(storage_judge="embedding")
    reward = compute_reward(
        episode(ANA, final_memories=stored(*memories)), ANA, config, embedder=embedder
    )
    cos = embedder.embed(memories) @ embedder.embed(ANA.supporting_facts).T
    assert reward["memory_storage_precision"] == (cos.max(axis=1) >= 0.7).mean() == 0.5
    assert reward["memory_storage_recall"] == (cos.max(axis=0) >= 0.7).mean() == 0.5
    assert reward["memory_storage"] == 0.5  # the paraphrase is close, the chit-chat is not


def test_maintenance_when_it_mattered():
    fix = op("ana lives in rome .", old="ana lives in paris .")
    other = op("ben works as a baker .", old="ben works as a pilot .")
    assert compute_reward(episode(ANA, updates=[fix]), ANA)["memory_maintenance"] == 1.0
    assert (
        compute_reward(episode(ANA, deletes=[op(None, old="ana lives in paris .")]), ANA)[
            "memory_maintenance"
        ]
        == 1.0
    )
    assert compute_reward(episode(ANA, updates=[other]), ANA)["memory_maintenance"] == 0.0
    # Without correction metadata: the paper's "any update or delete".
    plain = Task("t-plain", "test", [], [], [Question("q?", ("a",))])
    assert compute_reward(episode(plain, updates=[other]), plain)["memory_maintenance"] == 1.0
    assert compute_reward(episode(plain), plain)["memory_maintenance"] == 0.0


def test_relevance_of_retrieved_entries(embedder):
    ep = episode(ANA, retrieved=found("ana lives in rome .", "lunch was great ."))
    assert retrieved_entries(ep) == [(0, "ana lives in rome ."), (0, "lunch was great .")]
    assert compute_reward(ep, ANA)["memory_relevance"] == 0.5
    cosine = compute_reward(ep, ANA, RewardConfig(relevance="cosine"), embedder=embedder)
    texts = ["ana lives in rome .", "lunch was great ."]
    expected = np.clip(embedder.embed(texts) @ embedder.embed([ANA.query])[0], 0, 1).mean()
    assert cosine["memory_relevance"] == pytest.approx(float(expected), abs=1e-6)
    assert compute_reward(episode(ANA), ANA)["memory_relevance"] == 0.0


# ---- penalties and totals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("memories", "stale"),
    [
        (["ana lives in paris .", "ana lives in rome ."], 1),  # stale duplicate kept
        (["ana lives in rome .", "ben works as a pilot ."], 0),
        (["ana lives in paris, now in rome ."], 1),
        ([], 1),  # lacks the latest
    ],
)
def test_stale_facts(memories, stale):
    final = [StoredMemory(id=f"mem_{i}", content=m) for i, m in enumerate(memories)]
    ep = episode(ANA, final_memories=final)
    assert stale_facts(ep, ANA) == stale
    assert compute_reward(ep, ANA, "synthetic")["penalty_stale"] == -0.25 * stale
    assert compute_reward(ep, ANA)["penalty_stale"] == 0.0  # not part of the paper's reward


def test_penalties():
    over = [OverflowEvent(turn=3, stage=2, tokens=2000), OverflowEvent(turn=4, stage=3, tokens=9)]
    ep = episode(ANA, ended_by="n_max", n_max=12, rounds=12, overflows=over, format_errors=3)
    reward = compute_reward(ep, ANA, "synthetic")
    assert reward["penalty_rounds"] == -1.0
    assert reward["penalty_overflow"] == -0.5  # once per episode
    assert reward["penalty_format"] == pytest.approx(-0.3)
    assert reward["penalty_stale"] == -0.25  # no memory: the latest value is missing
    assert reward["penalty"] == pytest.approx(-2.05)
    assert compute_reward(ep, ANA, "task-only")["penalty"] == 0.0
    done = episode(ANA, ended_by="answered", n_max=12, rounds=12, answers=["rome"])
    assert compute_reward(done, ANA)["penalty_rounds"] == 0.0


def test_total_is_the_weighted_sum_of_the_parts():
    steps = [step(0, 3, 510, question=0)]
    ep = episode(
        ANA,
        steps,
        answers=["Rome"],
        retrieved=found("ana lives in rome ."),
        final_memories=stored("ana lives in paris .", "lunch was great ."),
        overflows=[OverflowEvent(turn=0, stage=3, tokens=1100)],
        system_tokens=10,
    )
    reward = compute_reward(ep, ANA)
    # task 1; context: compression 1 - 500/990, preventive 0, preservation 0 (no message kept);
    # memory: storage 1/2 (precision 1/2, recall 1/2), maintenance 0, relevance 1; penalty -0.5.
    context = (1 - 500 / 990) / 3
    assert reward["context"] == pytest.approx(context)
    assert reward["memory"] == pytest.approx(0.5)
    assert reward["total"] == pytest.approx((1 + context + 0.5) / 3 - 0.5)
    unit = compute_reward(ep, ANA, RewardConfig().with_(w_task=1.0, w_context=1.0, w_memory=1.0))
    assert unit["total"] == pytest.approx(1 + context + 0.5 - 0.5)
    assert compute_reward(ep, ANA, "task-only")["total"] == 1.0
    assert compute_reward(ep, ANA, "synthetic")["total"] == pytest.approx(1 - 0.5 - 0.25)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task_metric": "bleu"}, "task_metric must be one of"),
        ({"overflow_penalty": 0.5}, "overflow_penalty is a penalty"),
        ({"stale_penalty": 0.25}, "stale_penalty is a penalty"),
        ({"overlap_threshold": 1.5}, "overlap_threshold must be in [0, 1]"),
        ({"w_memory": float("nan")}, "w_memory must be finite"),
        ({"judge_batch": 0}, "judge_batch must be >= 1"),
    ],
)
def test_bad_config_is_refused(change, message):
    with pytest.raises(RewardError, match=message.replace("[", r"\[").replace("]", r"\]")):
        RewardConfig().with_(**change)


def test_missing_resources_and_tasks_are_named():
    ep = episode(ANA, answers=["rome"])
    with pytest.raises(RewardError, match="needs judge="):
        compute_reward(ep, ANA, RewardConfig(task_metric="judge"))
    with pytest.raises(RewardError, match="needs embedder="):
        compute_reward(ep, ANA, RewardConfig(relevance="cosine"))
    with pytest.raises(RewardError, match="unknown reward preset"):
        compute_reward(ep, ANA, "paper")
    with pytest.raises(RewardError, match="no task given for episodes of"):
        compute_rewards([ep], [])
    broken = Task("t-ana", "synthetic", [], [], ANA.questions, metadata={"facts": [{"x": 1}]})
    with pytest.raises(RewardError, match="metadata\\['facts'\\]"):
        compute_reward(ep, broken)
    assert set(PRESETS) == {"agemem", "task-only", "synthetic", "atommem"}


def test_atommem_reward_is_the_exact_match_with_no_penalty():
    assert compute_reward(episode(ANA, answers=["rome"]), ANA, "atommem")["total"] == 1.0
    assert compute_reward(episode(ANA, answers=["in rome"]), ANA, "atommem")["total"] == 0.0
    assert compute_reward(episode(ANA, answers=[None]), ANA, "atommem")["total"] == 0.0


# ---- real episodes ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(embedder):
    """Three scripted policies on the same synthetic tasks, through the real env."""
    tasks = load_tasks("synthetic", limit=4)
    config = ENV_PRESETS["synthetic"]
    policies = {
        "perfect": Oracle(rates=PERFECT),
        "store": StoreEverythingPolicy(),
        "none": NoMemoryPolicy(),
    }
    scorer = reward_fn(tasks, "synthetic")
    counter = tiny_token_counter()  # the budget the synthetic preset is calibrated with
    runs = {
        name: run_episodes(
            p,
            tasks,
            config,
            progress=False,
            embedder=embedder,
            reward_fn=scorer,
            token_counter=counter,
        )
        for name, p in policies.items()
    }
    return tasks, runs


def test_real_episodes_score_as_their_strategy_implies(real):
    tasks, runs = real
    perfect = compute_rewards(runs["perfect"], tasks, "synthetic")
    assert [r["total"] for r in perfect] == [1.0] * 4  # right, in budget, memory up to date
    assert [e.reward for e in runs["perfect"]] == perfect  # reward_fn filled the same values
    for r in compute_rewards(runs["store"], tasks, "synthetic"):
        # Two corrections stored as duplicates; a whole stored message as the answer.
        assert r["penalty_stale"] == -0.5 and r["task_em"] == 0.0
    for r in compute_rewards(runs["none"], tasks, "synthetic"):
        assert r["memory"] == 0.0 and r["penalty_stale"] == -0.5
        assert r["context_preservation"] == 0.0  # no note names the asked person


def test_paper_reward_ranks_the_oracle_first(real):
    tasks, runs = real
    mean = {
        name: np.mean([r["total"] for r in compute_rewards(eps, tasks, "agemem")])
        for name, eps in runs.items()
    }
    assert mean["perfect"] > mean["store"] and mean["perfect"] > mean["none"]
