"""`run_metrics` and the report tables against values computed by hand."""

from __future__ import annotations

import pytest

from agemem.episode import (
    CallRecord,
    Episode,
    EpisodeFacts,
    GoldQuestion,
    ParsedActions,
    StepSample,
    StoredMemory,
)
from agemem.eval.metrics import judge_episodes, run_metrics
from agemem.eval.report import markdown_table, score_cell
from agemem.policy.base import Turn
from agemem.tasks import ContextMessage, Question, Task


def _task(task_id: str, family: str = "hotpotqa", **kw) -> Task:
    questions = kw.pop("questions", [Question("q?", ("Rome",))])
    return Task(task_id, family, kw.pop("contextual", []), [], questions, **kw)


def _episode(task: Task, answers, tokens, seconds, method="rag", **facts) -> Episode:
    steps = facts.pop("steps", [])
    return Episode(
        task_id=task.id,
        group_id=task.id,
        family=task.family,
        steps=steps,
        facts=EpisodeFacts(
            method=method,
            questions=[
                GoldQuestion(text=q.text, answers=list(q.answers), category=q.category)
                for q in task.questions
            ],
            answers=answers,
            tokens_at_answer=tokens,
            t_max=100,
            seconds=seconds,
            **facts,
        ),
    )


def _step(question: int, content: str, tokens: int) -> StepSample:
    return StepSample(
        turn=0,
        stage=3,
        messages=[{"role": "user", "content": content}],
        text="",
        actions=ParsedActions(format="plain"),
        tokens=tokens,
        question=question,
    )


def test_scores_tokens_latency_and_tool_calls_match_hand_computed_values():
    a = _task("a", supporting_facts=["Ana lives in Rome.", "Italy has a long coast."])
    b = _task("b", questions=[Question("q1?", ("red car",)), Question("q2?", ("blue",))])
    call = CallRecord(turn=0, stage=1, name="Add_memory", ok=True)
    episodes = [
        _episode(
            a, ["rome"], [100], [1.0],
            calls=[call, call, CallRecord(turn=0, stage=1, name="Add_memory", ok=False)],
            final_memories=[
                StoredMemory(id="1", content="Ana lives in Rome"),  # F1 0.89 with fact 1
                StoredMemory(id="2", content="the weather is nice"),  # supports nothing
            ],
        ),
        _episode(
            b, ["the red", None], [300, None], [2.0, 3.0],
            steps=[_step(0, "y", 40), _step(1, "x", 50)], format_errors=1,
        ),
    ]  # fmt: skip
    m = run_metrics(episodes, [a, b])
    assert m["n_questions"] == 3
    assert m["em"] == pytest.approx(1 / 3)  # "rome" right; "the red" != "red car"; None
    # F1: 1.0, then "red" vs "red car": P=1, R=1/2 -> 2/3, then 0.
    assert m["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert m["answered"] == pytest.approx(2 / 3)
    # Unanswered q2 counts the last prompt that worked on it (50 tokens).
    assert m["prompt_tokens_mean"] == pytest.approx((100 + 300 + 50) / 3)
    assert m["model_tokens_per_question"] == pytest.approx((40 + 50) / 3)
    assert m["format_error_rate"] == pytest.approx(1 / 2)  # 1 bad turn of the run's 2
    assert m["latency_p50_s"] == pytest.approx(2.0)
    assert m["latency_p95_s"] == pytest.approx(2.0 + 0.9 * 1.0)  # linear interpolation
    assert m["tool_calls"] == {"Add_memory": 1.0}  # 2 calls that ran over 2 episodes
    assert m["failed_calls"] == pytest.approx(0.5)
    # Memory quality: episode a 1 of 2 memories supported, episode b has no supporting facts.
    assert m["memory_quality"] == pytest.approx(0.5)
    assert m["memory_recall"] == pytest.approx(0.5)
    assert m["success"] == pytest.approx(0.5)  # a: all right; b: not


def test_locomo_categories_and_evidence_recall():
    turns = [
        ContextMessage("I adopted a puppy named Max last week", id="D1:1"),
        ContextMessage("We went hiking in the Alps in June", id="D1:2"),
        ContextMessage("My sister works as a nurse", id="D1:3"),
    ]
    task = _task(
        "c",
        family="locomo",
        contextual=turns,
        questions=[
            Question("dog?", ("Max",), category="single-hop", evidence=("D1:1",)),
            Question("when?", ("June",), category="temporal", evidence=("D1:2", "D1:3")),
        ],
    )
    steps = [
        _step(0, "Retrieved:\n[mem] adopted a puppy named Max\nunrelated line", 10),
        _step(1, "Retrieved:\nWe went hiking in the Alps in June", 20),
    ]
    m = run_metrics([_episode(task, ["Max", "July"], [10, 20], [0.1, 0.1], steps=steps)], [task])
    # q0: its one evidence turn found (F1 0.8 with a paraphrase); q1: one of two found.
    assert m["evidence_recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["by_category"]["single-hop"] == {"n": 1, "em": 1.0, "f1": 1.0, "answered": 1.0}
    assert m["by_category"]["temporal"]["em"] == 0.0


def test_storeless_methods_get_no_memory_quality_and_stored_nothing_scores_zero():
    task = _task("a", supporting_facts=["Ana lives in Rome."])
    assert "memory_quality" not in run_metrics(
        [_episode(task, ["x"], [1], [0.1], method="no-memory")], [task]
    )
    m = run_metrics([_episode(task, ["x"], [1], [0.1], method="agemem-norl")], [task])
    assert m["memory_quality"] == 0.0


class _ContainsJudge:
    """Stands in for an LLM judge on a server (outside the machine): grades 1 when the prompt's
    answer line contains the gold answer, else 0.0, and "?" (unparsable) for an empty answer."""

    def act(self, contexts, tools=None):
        out = []
        for messages in contexts:
            lines = dict(
                line.split(": ", 1) for line in messages[0]["content"].splitlines() if ": " in line
            )
            answer, gold = lines["Answer"], lines["Gold answer(s)"]
            out.append(Turn("?" if not answer else str(float(gold.lower() in answer.lower()))))
        return out


def test_judge_scores_per_question_and_category_tables_show_it():
    task = _task(
        "j",
        questions=[
            Question("a?", ("Rome",), category="x"),
            Question("b?", ("Oslo",), category="y"),
        ],
    )
    episode = _episode(task, ["in Rome", ""], [1, 1], [0.1, 0.1])
    judge_episodes([episode], _ContainsJudge(), batch=1)
    assert episode.reward["judge"] == pytest.approx(0.5)  # 1.0 and an unparsable reply (0)
    m = run_metrics([episode], [task])
    assert m["judge"] == pytest.approx(0.5)
    assert m["by_category"]["x"]["judge"] == 1.0
    run = {"benchmark": "hotpotqa", "method": "rag", "model": "m", "n": 1, "metrics": m}
    text = markdown_table([run])
    assert "judge / EM / F1" in text and "| rag (m) | 50.0 / 0.0 / 33.3 |" in text


def test_interactive_cells_show_success_and_progress():
    assert score_cell({"success": 0.5, "progress": 0.75}) == "50.0 / 75.0"


def test_interactive_runs_report_agentboard_metrics_and_tokens_per_turn():
    """Worlds have no tasks: success and progress come from the rewards, tokens from the turns."""
    world = _task("babyai/GoToRedBall-v0/seed0", "babyai", questions=[Question("go", ("x",))])
    won = _episode(world, ["success"], [None], [], steps=[_step(0, "a", 100), _step(0, "b", 300)])
    lost = _episode(world, ["failure"], [None], [], steps=[_step(0, "c", 200)])
    won.reward, lost.reward = {"success": 1.0, "progress": 1.0}, {"success": 0.0, "progress": 0.5}
    m = run_metrics([won, lost], [])
    assert m["success"] == 0.5 and m["progress"] == 0.75
    assert m["turns"] == 1.5 and m["prompt_tokens_mean"] == 200.0
    assert m["model_tokens_per_episode"] == 300.0
    assert "em" not in m and "f1" not in m
    run = {"benchmark": "babyai", "method": "no-memory", "model": "m", "n": 2, "metrics": m}
    text = markdown_table([run])
    assert "| no-memory (m) | 50.0 / 75.0 |" in text and "prompt tokens/q" not in text
    # no world action in these records: 0 actions, none rejected, no malformed turn
    assert (
        "| babyai | no-memory (m) | 2 | 50.0 | 75.0 | 1.5 | 0.0 | 0.0 | 0.0 | 200 | 300 | 0.00 |"
        in text
    )
