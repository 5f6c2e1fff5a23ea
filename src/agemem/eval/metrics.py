"""The papers' metrics over a run's episodes (`run_metrics`), and the LLM judge (`judge_episodes`).

Per question (the unit LoCoMo and Mem0 report; a task may hold several):
- `em`, `f1`: SQuAD exact match and token F1 against the gold answers (unanswered: 0);
- `judge`: the LLM judge's 0-1 grade with `agemem.rewards.JUDGE_PROMPT` (unanswered or
  unparsable: 0), only when a judge graded the run (`judge_episodes`);
- `prompt_tokens_mean`: tokens of the prompt that produced the answer (Mem0's "tokens per
  question"; unanswered: the last prompt about the question); `model_tokens_per_question`:
  all prompt tokens the method's model calls read, memory operations included, over the
  questions (the compute bill);
- `latency_p50_s` / `latency_p95_s`: percentiles of `EpisodeFacts.seconds`;
- `evidence_recall` (LoCoMo, whose questions name their evidence turns): the share of a
  question's evidence turns found in the prompt that answered it, a message counting as
  found when some line of that prompt has token F1 >= 0.5 with it (so facts a method rewrote in
  its own words count too); `by_category`: `n`, `em`, `f1` (and `judge`) per question category.
Per model turn: `format_error_rate`, the share of turns whose output had a fatal format issue
(nothing of it ran; every run with model turns reports it). Per episode (means): `tool_calls`
by operation name (calls that ran), `failed_calls`;
`memory_quality` (tasks with supporting facts but LoCoMo's, methods with a store): the share
of the final memories that state a supporting fact (token F1 >= 0.5,
`RewardConfig.overlap_threshold`), 0 without memories, AgeMem's storage-quality reading;
`memory_recall`: the share of supporting facts some final memory states. From
`agemem.train.evaluate.episode_stats`: `success` (every question right, no overflow),
`overflow`, `format_errors`, `turns`. Interactive episodes (no tasks: `tasks` is empty):
`success` and `progress` from their rewards (AgentBoard's), `turns` per episode,
`actions_per_episode` (turns that were world actions, not memory calls or malformed turns) and
`invalid_action_rate` (the share of those actions the world rejected), and
`prompt_tokens_mean`, the mean prompt the model acted from per turn (their counterpart of
tokens per question), with `model_tokens_per_episode` for the bill.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from statistics import fmean
from typing import Any

import numpy as np

from agemem.agentic.loop import action_counts
from agemem.episode import Episode, StepSample, exact_match
from agemem.eval.methods import STORELESS
from agemem.policy.base import Policy
from agemem.rewards import JUDGE_PROMPT, RewardConfig, parse_grade, token_f1
from agemem.tasks.base import Task
from agemem.tokens import message_text
from agemem.train.evaluate import episode_stats

OVERLAP = RewardConfig().overlap_threshold  # 0.5, shared with AgeMem's storage reward
JUDGE_KEY = "judge/{}"  # per-question grade in Episode.reward


def judge_episodes(episodes: Sequence[Episode], judge: Policy, batch: int = 16) -> None:
    """Grade every answer with `judge`; writes `reward["judge/<i>"]` and `reward["judge"]`."""
    jobs = [
        (episode, i, JUDGE_PROMPT.format(question=q.text, gold=" / ".join(q.answers), answer=a))
        for episode in episodes
        for i, (a, q) in enumerate(zip(episode.facts.answers, episode.facts.questions, strict=True))
        if a is not None
    ]
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        turns = judge.act([[{"role": "user", "content": prompt}] for _, _, prompt in chunk])
        for (episode, i, _), turn in zip(chunk, turns, strict=True):
            episode.reward[JUDGE_KEY.format(i)] = parse_grade(turn.text) or 0.0
    for episode in episodes:
        grades = [episode.reward.get(JUDGE_KEY.format(i), 0.0) for i in range(_n(episode))]
        episode.reward["judge"] = fmean(grades) if grades else 0.0


def run_metrics(episodes: Sequence[Episode], tasks: Sequence[Task]) -> dict[str, Any]:
    """Every metric of the module docstring that applies to these episodes."""
    if not episodes:
        raise ValueError("no episodes to score: run the method first")
    by_id = {task.id: task for task in tasks}
    out: dict[str, Any] = {}
    if not tasks:
        out |= _interactive_metrics(episodes)
    elif any(_n(e) for e in episodes):
        out |= _question_metrics(episodes, by_id)
        stats = episode_stats(episodes, [by_id[e.task_id] for e in episodes])
        out |= {k: stats[k] for k in ("success", "overflow", "format_errors", "turns")}
    for key in ("success", "progress"):
        values = [e.reward[key] for e in episodes if key in e.reward]
        if values:
            out[key] = fmean(values)
    out |= _memory_metrics(episodes, by_id)
    out["tool_calls"] = _per_episode(
        Counter(c.name for e in episodes for c in e.facts.calls if c.ok), len(episodes)
    )
    out["failed_calls"] = sum(not c.ok for e in episodes for c in e.facts.calls) / len(episodes)
    turns = sum(len(e.steps) for e in episodes)
    if turns:
        out["format_error_rate"] = sum(e.facts.format_errors for e in episodes) / turns
    return out


def _interactive_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    steps = [s for e in episodes for s in e.steps]
    counts = [action_counts(e) for e in episodes]
    rejected, actions = sum(r for r, _ in counts), sum(n for _, n in counts)
    return {
        "turns": len(steps) / len(episodes),
        "actions_per_episode": actions / len(episodes),
        "invalid_action_rate": rejected / actions if actions else 0.0,
        "prompt_tokens_mean": fmean(s.tokens for s in steps) if steps else 0.0,
        "model_tokens_per_episode": sum(s.tokens for s in steps) / len(episodes),
    }


def _n(episode: Episode) -> int:
    return len(episode.facts.questions)


def _per_episode(counts: Counter[str], n: int) -> dict[str, float]:
    return {name: counts[name] / n for name in sorted(counts)}


def _question_metrics(episodes: Sequence[Episode], by_id: dict[str, Task]) -> dict[str, Any]:
    rows = [row for e in episodes for row in _question_rows(e, by_id[e.task_id])]
    out: dict[str, Any] = {"n_questions": len(rows)}
    out |= _means(rows)
    tokens = [r["tokens"] for r in rows if r["tokens"] is not None]
    out["prompt_tokens_mean"] = fmean(tokens) if tokens else None
    out["model_tokens_per_question"] = sum(s.tokens for e in episodes for s in e.steps) / len(rows)
    seconds = [r["seconds"] for r in rows if r["seconds"] is not None]
    if seconds:
        out["latency_p50_s"] = float(np.percentile(seconds, 50))
        out["latency_p95_s"] = float(np.percentile(seconds, 95))
    recall = [r["evidence_recall"] for r in rows if r["evidence_recall"] is not None]
    if recall:
        out["evidence_recall"] = fmean(recall)
    categories: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["category"] is not None:
            categories[row["category"]].append(row)
    if categories:
        out["by_category"] = {c: {"n": len(r), **_means(r)} for c, r in sorted(categories.items())}
    return out


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {
        "em": fmean(r["em"] for r in rows),
        "f1": fmean(r["f1"] for r in rows),
        "answered": fmean(r["answered"] for r in rows),
    }
    judged = [r["judge"] for r in rows if r["judge"] is not None]
    if judged:
        out["judge"] = fmean(judged)
    return out


def question_scores(episode: Episode) -> list[dict[str, float | None]]:
    """Each question's `em`, `f1` and `judge` (None when no judge graded the run), in order."""
    facts = episode.facts
    judged = "judge" in episode.reward
    return [
        {
            "em": float(answer is not None and exact_match(answer, gold.answers)),
            "f1": token_f1(answer, gold.answers) if answer is not None else 0.0,
            "judge": episode.reward.get(JUDGE_KEY.format(i), 0.0) if judged else None,
        }
        for i, (answer, gold) in enumerate(zip(facts.answers, facts.questions, strict=True))
    ]


def _question_rows(episode: Episode, task: Task) -> list[dict[str, Any]]:
    facts = episode.facts
    answering = _answering_steps(episode)
    rows = []
    scores = question_scores(episode)
    for i, (answer, gold) in enumerate(zip(facts.answers, facts.questions, strict=True)):
        seconds = facts.seconds[i] if i < len(facts.seconds) else None
        rows.append(
            {
                **scores[i],
                "answered": float(answer is not None),
                "tokens": _prompt_tokens(facts.tokens_at_answer[i], answering.get(i)),
                "seconds": seconds,
                "category": gold.category,
                "evidence_recall": _evidence_recall(task, i, answering.get(i)),
            }
        )
    return rows


def _prompt_tokens(at_answer: int | None, step: StepSample | None) -> int | None:
    """The answering prompt's tokens; unanswered, the last prompt that worked on the question."""
    return at_answer if at_answer is not None else (step.tokens if step else None)


def _answering_steps(episode: Episode) -> dict[int, StepSample]:
    """Per question, the last step that worked on it."""
    return {s.question: s for s in episode.steps if s.question is not None}


def _evidence_recall(task: Task, index: int, step: StepSample | None) -> float | None:
    if index >= len(task.questions):
        return None
    text_of = {m.id: m.content for m in task.contextual if m.id is not None}
    evidence = [text_of[e] for e in task.questions[index].evidence if e in text_of]
    if not evidence or task.family != "locomo":
        return None  # HotpotQA's evidence is its stage-1 input itself: memory_* measures it
    if step is None:
        return 0.0
    lines = [line for m in step.messages for line in message_text(m).splitlines() if line.strip()]
    return fmean(float(any(token_f1(line, [e]) >= OVERLAP for line in lines)) for e in evidence)


def _memory_metrics(episodes: Sequence[Episode], by_id: dict[str, Task]) -> dict[str, float]:
    scored = [
        e
        for e in episodes
        if e.task_id in by_id
        and by_id[e.task_id].supporting_facts
        and e.facts.method not in STORELESS
    ]
    if not scored:
        return {}
    precision, recall = [], []
    for episode in scored:
        facts = by_id[episode.task_id].supporting_facts
        memories = [m.content for m in episode.facts.final_memories]
        precision.append(
            fmean(token_f1(m, facts) >= OVERLAP for m in memories) if memories else 0.0
        )
        recall.append(
            fmean(float(token_f1(f, memories) >= OVERLAP) for f in facts) if memories else 0.0
        )
    return {"memory_quality": fmean(precision), "memory_recall": fmean(recall)}
