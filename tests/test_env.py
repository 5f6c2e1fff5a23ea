"""AgeMem and AtomMem episodes on real components: a private SQLite store per episode, the real
embedder, the real context and tools, and turns written in the agent's protocol (by the test or
by the scripted policies)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from agemem.env import (
    PRESETS,
    AtomMemEnv,
    EnvConfig,
    EnvConfigError,
    EnvError,
    MemoryEnv,
    alias_vocabulary,
    read_atommem_prompt,
    read_context,
    run_episodes,
    system_prompt,
)
from agemem.env.embed_cache import cached
from agemem.env.oracle import PERFECT, Oracle
from agemem.policy.base import Turn
from agemem.policy.hf import HFPolicy
from agemem.policy.scripted import call, emit
from agemem.policy.tiny import build_tiny
from agemem.tasks import ContextMessage, Question, Task, load_tasks
from agemem.tasks.synthetic import synthetic_vocabulary

PASS = Turn("<think>ok</think><tool_call>[]</tool_call>")
TASK = Task(
    id="t1",
    family="custom",
    contextual=[
        ContextMessage("Ana lives in Paris."),
        ContextMessage("Ana moved to Rome."),
    ],
    distractors=["Bo plays golf every Sunday.", "The weather in Oslo is cold."],
    questions=[Question("Where does Ana live?", ("Rome",))],
)


def turn(*calls, think: str = "t") -> Turn:
    return emit(think, list(calls))


@pytest.fixture
def env(embedder):
    config = PRESETS["paper"].with_(id_space=9)
    env = MemoryEnv(config, embedder=cached(embedder), seed=1)
    yield env
    env.close()


def last_user(messages) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


# ---- stage rules ---------------------------------------------------------------------------


def test_stage1_shows_each_message_with_the_memories_retrieved_for_it(env):
    first = env.reset(TASK)
    assert first[0]["role"] == "system" and last_user(first).startswith("Ana lives in Paris.")
    assert "Related memories: none" in last_user(first)
    second = env.step(turn(call("Add_memory", content="Ana lives in Paris."))).context
    view = read_context(second)
    added = env.episode().facts.adds[0]
    assert added.id in alias_vocabulary(9)
    assert view.stage == 1 and view.incoming == "Ana moved to Rome."
    assert view.related == [(added.id, "Ana lives in Paris.")]
    assert env.episode().facts.auto_retrieved_ids == [added.id]


def test_update_through_a_shown_id_and_stage2_resets_the_context_but_keeps_the_store(env):
    env.reset(TASK)
    env.step(turn(call("Add_memory", content="Ana lives in Paris.")))
    shown_id = read_context(env.context).related[0][0]
    stage2 = env.step(
        turn(call("Update_memory", memory_id=shown_id, content="Ana lives in Rome."))
    ).context
    assert env.stage == 2
    assert [m["role"] for m in stage2] == ["system", "user"]
    assert stage2[1]["content"] == "Bo plays golf every Sunday."
    facts = env.episode().facts
    assert [(u.id, u.old_content, u.content) for u in facts.updates] == [
        (shown_id, "Ana lives in Paris.", "Ana lives in Rome.")
    ]
    env.step(PASS)
    env.step(PASS)  # -> stage 3
    after = env.step(turn(call("Retrieve_memory", query="Where does Ana live?"))).context
    assert "Ana lives in Rome." in after[-1]["content"] and shown_id in after[-1]["content"]
    assert env.episode().facts.retrieved_ids == [shown_id]


def test_each_stage_runs_only_its_tools(env):
    env.reset(TASK)
    refused = env.step(turn(call("Retrieve_memory", query="Ana"), call("Add_memory", content="x")))
    assert "not available in stage 1" in refused.info["observations"][0]
    assert refused.info["observations"][1].startswith("Added")  # the allowed call still ran
    env.step(PASS)
    stage2 = env.step(turn(call("Add_memory", content="Bo plays golf.")))
    assert "not available in stage 2" in stage2.info["observations"][0]
    env.step(PASS)
    stage3 = env.step(turn(call("Delete_memory", memory_id="mem_1", confirmation=True)))
    assert (
        "Tools allowed now: Retrieve_memory, Summary_context, Filter_context"
        in (stage3.info["observations"][0])
    )
    facts = env.episode().facts
    assert [c.error for c in facts.calls if not c.ok] == ["rejected"] * 3
    assert [m.content for m in facts.adds] == ["x"] and facts.deletes == []


def test_stage3_question_is_protected_from_filter_and_summary(env):
    env.reset(TASK)
    for _ in range(4):
        env.step(PASS)
    assert read_context(env.context).question == "Where does Ana live?"
    env.step(turn(call("Filter_context", criteria="Where does Ana live?")))
    env.step(turn(call("Summary_context", span="all")))
    questions = [m for m in env.context if m["content"] == "Question: Where does Ana live?"]
    assert len(questions) == 1
    result = env.step(Turn("<think>done</think><answer>Rome</answer>"))
    assert result.done and env.episode().correct() == [True]
    facts = env.episode().facts
    assert (
        facts.ended_by == "answered" and facts.tokens_at_answer[0] == env.episode().steps[-1].tokens
    )


def test_answers_and_format_errors_before_stage3_change_nothing(env):
    env.reset(TASK)
    early = env.step(Turn("<think>x</think><answer>Rome</answer>"))
    assert "There is no question yet" in early.info["observations"][0]
    broken = env.step(Turn('<tool_call>[{"name": "Add_memory", "arguments": {"content": "a",}}]'))
    assert "Format error" in broken.info["observations"][0]
    facts = env.episode().facts
    assert facts.format_errors == 1 and facts.adds == [] and facts.answers == [None]
    with pytest.raises(EnvError, match="reset"):
        MemoryEnv(PRESETS["paper"]).step(PASS)


# ---- caps and budget -----------------------------------------------------------------------


class Silent:
    """A real policy that never answers: it lets every message pass."""

    def act(self, contexts, tools=None):
        return [PASS for _ in contexts]


def test_stage3_cap_ends_the_episode_unanswered(embedder):
    config = PRESETS["paper"].with_(stage3_max_turns=2)
    (episode,) = run_episodes(Silent(), [TASK], config, progress=False, embedder=embedder)
    facts = episode.facts
    assert facts.rounds == 2 + 2 + 2 and facts.ended_by == "turn_cap"
    assert facts.answers == [None] and not facts.answered and episode.correct() == [False]


def test_n_max_caps_the_whole_episode(embedder):
    config = PRESETS["paper"].with_(n_max=3)
    (episode,) = run_episodes(Silent(), [TASK], config, progress=False, embedder=embedder)
    assert episode.facts.rounds == 3 and episode.facts.ended_by == "n_max"
    assert [s.stage for s in episode.steps] == [1, 1, 2] and episode.facts.answers == [None]


def test_overflow_is_recorded_in_budget_stages_only(embedder):
    tight = PRESETS["paper"].with_(t_max=6, budget_excludes_system=True, stage3_max_turns=1)
    (episode,) = run_episodes(Silent(), [TASK], tight, progress=False, embedder=embedder)
    events = episode.facts.overflows
    assert events and {e.stage for e in events} == {2, 3}
    assert all(e.tokens > episode.facts.t_max for e in events)
    assert episode.facts.t_max == 6 + episode.facts.system_tokens
    (roomy,) = run_episodes(Silent(), [TASK], PRESETS["paper"], progress=False, embedder=embedder)
    assert roomy.facts.overflows == [] and not roomy.facts.overflowed


def test_a_sliding_window_keeps_the_latest_messages_within_budget(embedder):
    """`over_budget="drop_oldest"` with the conversation kept (no stage-1 window, no reset at
    stage 2): the no-memory baseline's context. The oldest messages go first, never the
    question, and no overflow is ever recorded."""
    window = PRESETS["paper"].with_(
        t_max=30,
        budget_excludes_system=True,
        keep_stage12_turns=False,
        stage1_window=None,
        stage2_reset=False,
        over_budget="drop_oldest",
        stage3_max_turns=1,
    )
    (episode,) = run_episodes(Silent(), [TASK], window, progress=False, embedder=embedder)
    assert episode.facts.overflows == [] and episode.facts.max_tokens <= episode.facts.t_max
    texts = [[m["content"] for m in s.messages if m["role"] == "user"] for s in episode.steps]
    assert texts[2][0].startswith("Ana lives in Paris.")  # stage 2 still holds stage 1
    stage3 = texts[-1]
    assert stage3[-1] == "Question: Where does Ana live?"
    assert "The weather in Oslo is cold." in stage3
    assert not any(t.startswith("Ana lives in Paris.") for t in stage3)  # dropped first
    # the same budget without the window: AgeMem's rule records the overflow
    record = window.with_(over_budget="record")
    (kept,) = run_episodes(Silent(), [TASK], record, progress=False, embedder=embedder)
    assert kept.facts.overflowed


def test_synthetic_preset_budget_comes_from_the_task(embedder):
    task = load_tasks("synthetic", limit=1)[0]
    env = MemoryEnv(PRESETS["synthetic"], embedder=cached(embedder))
    env.reset(task)
    facts = env.episode().facts
    assert (
        facts.t_max
        == task.metadata["t_max"] + PRESETS["synthetic"].t_max_margin + facts.system_tokens
    )
    assert env.context[0]["content"] == system_prompt(compact=True)
    env.close()
    with pytest.raises(EnvConfigError, match="metadata"):
        MemoryEnv(PRESETS["synthetic"], embedder=embedder).reset(TASK)


def test_config_errors_name_the_field():
    with pytest.raises(EnvConfigError, match="stage3_max_turns"):
        EnvConfig(stage3_max_turns=0)
    with pytest.raises(EnvConfigError, match="choose one of"):
        EnvConfig.preset("nope")
    with pytest.raises(EnvConfigError, match="AtomMemEnv"):
        MemoryEnv(PRESETS["atommem"])


# ---- the driver and a real model -----------------------------------------------------------


class Recording:
    """A pass-through policy that keeps every turn the wrapped policy returned."""

    def __init__(self, inner):
        self.inner, self.turns, self.batch_sizes = inner, [], []
        self.tokenizer = inner.tokenizer

    def act(self, contexts, tools=None):
        turns = self.inner.act(contexts, tools)
        self.turns += turns
        self.batch_sizes.append(len(contexts))
        return turns


def test_batched_episodes_record_exactly_what_the_model_returned(embedder):
    tasks = load_tasks("synthetic", limit=1) + load_tasks("synthetic", limit=1, preset="easy")
    model, tokenizer = build_tiny(
        synthetic_vocabulary() + [system_prompt(compact=True)], memory_ids=alias_vocabulary(9)
    )
    policy = Recording(HFPolicy(model, tokenizer, max_new_tokens=12, seed=0))
    config = PRESETS["synthetic"].with_(stage3_max_turns=1)
    episodes = run_episodes(policy, tasks, config, k=2, progress=False, embedder=embedder)
    assert [e.group_id for e in episodes] == [f"{tasks[0].id}@0"] * 2 + [f"{tasks[1].id}@1"] * 2
    lengths = [len(e.steps) for e in episodes]
    assert lengths[0] > lengths[2]  # the easy tasks finish first; the batch shrinks
    assert policy.batch_sizes[0] == 4 and policy.batch_sizes[-1] == 2
    recorded = {tuple(s.completion_ids): s for e in episodes for s in e.steps}
    for t in policy.turns:
        step = recorded[tuple(t.completion_ids)]
        assert step.text == t.text and step.logprobs == t.logprobs
        assert step.prompt_ids == t.prompt_ids and step.finish_reason == t.finish_reason
    first = episodes[0].steps[0]
    assert first.prompt_ids == policy.inner.encode_prompt(first.messages)
    assert first.tokens == tokenizer_count(tokenizer, first.messages)  # the model's own count


def tokenizer_count(tokenizer, messages) -> int:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    return len(ids)


def test_native_tools_offer_each_stage_its_own_schemas(embedder):
    config = PRESETS["paper"].with_(native_tools=True)

    class Native(Oracle):
        seen: list = []

        def act_on(self, views, tools=None):
            Native.seen.append(sorted(t["function"]["name"] for t in tools))
            return super().act_on(views, tools)

    tasks = [load_tasks("synthetic", limit=1)[0]]
    (episode,) = run_episodes(Native(), tasks, config, progress=False, embedder=embedder)
    assert Native.seen[0] == ["Add_memory", "Delete_memory", "Update_memory"]
    assert Native.seen[-1] == ["Filter_context", "Retrieve_memory", "Summary_context"]
    assert episode.correct() == [episode.facts.answers[0] == tasks[0].answer]
    assert any(s.actions.format == "openai" and s.actions.tool_calls for s in episode.steps)
    assert episode.facts.failed_counts() == {}


# ---- every family, end to end, with the oracle ---------------------------------------------


def small_locomo() -> Task:
    task = load_tasks("locomo", limit=1)[0]
    head = task.contextual[:25]
    ids = {m.id for m in head}
    questions = [q for q in task.questions if set(q.evidence) <= ids][:2]
    return dataclasses.replace(task, contextual=head, questions=questions)


@pytest.mark.parametrize(
    ("family", "config"),
    [
        ("synthetic", PRESETS["synthetic"]),
        ("hotpotqa", PRESETS["paper"]),
        ("hotpotqa-long", PRESETS["paper"]),
        ("locomo", PRESETS["paper"]),
    ],
)
def test_oracle_runs_every_family_end_to_end(family, config, embedder):
    if family == "locomo":
        tasks = [small_locomo()]
    elif family == "hotpotqa-long":
        tasks = load_tasks(
            family, limit=1, n_docs=6, group_size=2, question_paragraphs="supporting"
        )
    else:
        tasks = load_tasks(family, split="test", limit=1)
    oracle = Oracle(rates=PERFECT)
    (episode,) = run_episodes(oracle, tasks, config, progress=False, embedder=embedder)
    assert episode.family == family and episode.facts.answered
    assert all(episode.correct()) and episode.facts.failed_counts() == {}
    assert {s.stage for s in episode.steps} >= {1, 3}
    assert episode.facts.adds and episode.facts.retrieved_ids


def test_atommem_episode_reads_chunks_and_answers_boxed(embedder):
    tasks = load_tasks(
        "hotpotqa-long", limit=1, n_docs=6, group_size=2, question_paragraphs="supporting"
    )
    config = PRESETS["atommem"].with_(chunk_tokens=200, chunk_overlap=20)
    (episode,) = run_episodes(Oracle(), tasks, config, progress=False, embedder=embedder)
    facts = episode.facts
    reading = [s for s in episode.steps if s.stage == 1]
    assert facts.chunks_read == facts.chunks_total == len(reading) > 1
    assert [s.chunk for s in reading] == list(range(len(reading)))
    answering = [s for s in episode.steps if s.stage == 2]
    assert [s.question for s in answering] == [0, 1]
    assert all("\\boxed{" in s.text for s in answering) and episode.correct() == [True, True]
    assert facts.adds and facts.scratchpad and facts.tool_counts()["read"] == len(reading)
    view = read_atommem_prompt(reading[-1].messages[-1]["content"])
    assert view.questions == [q.text for q in tasks[0].questions] and view.chunk
    assert "Memory 1: " in reading[-1].messages[-1]["content"]  # retrieved by the read query
    with pytest.raises(EnvConfigError, match="MemoryEnv"):
        AtomMemEnv(PRESETS["paper"])


def test_atommem_unboxed_answer_leaves_the_question_open(embedder):
    tasks = load_tasks(
        "hotpotqa-long", limit=1, n_docs=6, group_size=1, question_paragraphs="supporting"
    )
    env = AtomMemEnv(PRESETS["atommem"], embedder=cached(embedder))
    env.reset(tasks[0])
    assert env.step(Turn("<update_memory>reading</update_memory>")).done is False
    assert env.stage == 2  # one chunk of the default 4,096 tokens holds the whole input
    result = env.step(Turn("<final_answer>yes</final_answer>"))
    assert result.done and "No \\boxed{} answer" in result.info["observations"][0]
    assert env.episode().facts.answers == [None]
    env.close()


def test_each_question_starts_from_the_context_stage3_began_with(embedder):
    """Independent questions do not carry each other's turns (LoCoMo's 152 would outgrow any
    window); `carry_questions=True` keeps them."""
    questions = [Question("Where does Ana live?", ("Rome",)), Question("Bo's sport?", ("golf",))]
    two = dataclasses.replace(TASK, questions=questions)
    contexts = {}
    for carry in (False, True):
        config = PRESETS["paper"].with_(id_space=9, carry_questions=carry)
        with contextlib.closing(MemoryEnv(config, embedder=cached(embedder), seed=1)) as env:
            env.reset(two)
            for _ in range(4):
                env.step(PASS)
            first = list(env.context)
            env.step(turn(call("Retrieve_memory", query="Ana")))
            result = env.step(Turn("<think>done</think><answer>Rome</answer>"))
            contexts[carry] = result.context
    assert contexts[False] == [*first[:-1], {"role": "user", "content": "Question: Bo's sport?"}]
    # carried: the Retrieve turn and its observation, the answer turn, then the next question
    assert contexts[True][: len(first)] == first and len(contexts[True]) == len(first) + 4
