"""AgeMem's composite reward: every part computed from an `Episode`'s facts and logged apart.

`R = w_task*R_task + w_context*R_context + w_memory*R_memory + penalties`; `compute_reward`
returns each part, each sub-part and `total` (what the trainer reads). Choices the paper leaves
open are ours and written down here:

R_task (one score per question, averaged: LoCoMo and AtomMem ask several per episode)
- `em`: SQuAD exact match; `f1`: SQuAD token F1 (lower case, no punctuation or articles, single
  spaces; max over the gold aliases); `judge`: an LLM's 0-1 grade through any `Policy`, with the
  fixed `JUDGE_PROMPT` (an unparsable reply scores 0 and logs a warning). An unanswered question
  scores `no_answer` (paper: -1). `task_metric="auto"` uses the judge when one is given, else F1.
R_context (mean of three)
- compression `max(0, 1 - T_used/T_max)`, T_used the context of the step that answered (or last
  saw) each question. Both sides exclude the system prompt: it is fixed, not the agent's to
  compress (the paper does not say; with its 8,192-token window the readings barely differ).
- preventive: 1 if a Summary/Filter call ran before the first overflow (any time when none
  happened), else 0. A call made on seeing the overflow is a reaction, not prevention. We read the
  paper as rewarding the call itself: its Filter use rose after RL (0.02 -> 0.31 per episode) on
  HotpotQA contexts (~2,100 tokens) that rarely reach 8,192, which a "1 without overflow" rule
  would not have encouraged; and that rule gave a never-retrieving no-memory policy the full
  score on the synthetic curriculum (measured: preventive 1.0 for no-memory, 0.92 for the oracle).
- preservation: the share of the query's key entities still in the answering context, verbatim
  or inside a summary, in the user and tool messages other than the question itself (the env
  protects the question, and the agent's own calls quote it, so counting those would always
  give 1). Key entities (`key_entities`): capitalised words not starting a sentence, numbers, and
  the task's known entity names (synthetic tasks are lowercase). A query with none scores 1.
  The paper's "1 if they survive" is the all-or-nothing case of this share.
R_memory (mean of three)
- storage: how well what the agent stored matches the supporting facts. An entry is good when it
  has token F1 >= `overlap_threshold` with some supporting fact (`storage_judge="overlap"`),
  cosine >= `cosine_threshold` (`"embedding"`), or an LLM grade >= `llm_threshold` given q and
  A_q (`"llm"`); without supporting facts, when it contains a gold answer. A supporting fact is
  covered when some entry matches it by the same overlap or cosine rule (an LLM judge grades
  entries only; coverage then uses overlap). `storage_score="f1"` (ours, the default): the
  entries are the final memories (what the store holds at the end, so a corrected or deleted
  entry no longer counts), precision is the share of them that are good, recall the share of
  supporting facts covered, and storage their F1: storing everything gets full recall but low
  precision, storing nothing 0. `"precision"` (the paper's wording): the share of stage-1 adds
  that are good. Both are logged (`memory_storage_precision`, `memory_storage_recall`). No entry
  scores 0.
- maintenance: when the task says which facts were corrected (synthetic `metadata["facts"]`),
  the share of corrected facts whose stale entry was updated or deleted, i.e. maintenance done
  when it mattered; otherwise the paper's rule, 1 if any update or delete ran.
- relevance: over the entries the agent's own retrievals returned, the share that match a
  supporting fact by token overlap (`relevance="support"`) or the mean clipped cosine to the
  question (`"cosine"`). No retrieval scores 0.
Penalties (added as they are, all <= 0)
- rounds: once, when the episode was cut at N_max (our env stops there, so "rounds > N_max" is
  reaching the cap with questions left); overflow: once per episode (paper: -0.5);
  format: per turn with a fatal format error (ours, none in the paper); stale: per corrected fact
  whose final memory holds a stale value or lacks the latest (ours: 0 in "agemem", -0.25 in
  "synthetic").

On an interactive world (`world_reward`, GRPO on BabyAI, ScienceWorld, PDDL, TWC) the same
composite reads the world's record: R_task is the world's progress rate at the end (1 on
success); R_context is compression at the last turn and preventive management (a world has no
question whose entities must survive); R_memory is 0, since a world has no supporting facts to
score the store against; the penalties are the same (rounds: the episode used every turn of the
world's cap).

Retrieved entries are read from the episode record (`EpisodeFacts.retrieved`: the contents the
agent's own Retrieve_memory calls returned), never from the rendered observations.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal, NoReturn, get_args

import numpy as np
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from agemem.env.render import CHAT_PREFIX, QUESTION_PREFIX
from agemem.episode import (
    Episode,
    EpisodeFacts,
    GoldQuestion,
    StepSample,
    exact_match,
    normalize_answer,
)
from agemem.memory.embed import Embedder
from agemem.policy.base import Policy
from agemem.summarize import strip_think
from agemem.tasks.base import Task

logger = logging.getLogger(__name__)

TaskMetric = Literal["auto", "em", "f1", "judge"]
StorageJudge = Literal["overlap", "embedding", "llm"]
StorageScore = Literal["f1", "precision"]
Relevance = Literal["support", "cosine"]
CONTEXT_TOOLS = ("Summary_context", "Filter_context")
Reward = dict[str, float]


class RewardError(ValueError):
    """A reward cannot be computed as asked; the message names the problem and the fix."""


@dataclass(frozen=True)
class RewardConfig:
    """Weights, scores and penalties of the reward (module docstring: what each part measures).

    Default = the "agemem" preset. The paper states both 1/3 and 1.0 for the three weights; 1/3
    is the default because it keeps the weighted parts in [-1/3, 1], on the scale of the -1/-0.5
    penalties they are meant to sit beside (with 1.0 each, context and memory could outweigh the
    answer 2 to 1). `with_(w_task=1.0, w_context=1.0, w_memory=1.0)` gives the other reading.
    """

    name: str = "agemem"
    w_task: float = 1 / 3
    w_context: float = 1 / 3
    w_memory: float = 1 / 3
    task_metric: TaskMetric = "auto"
    no_answer: float = -1.0
    storage_judge: StorageJudge = "overlap"
    storage_score: StorageScore = "f1"
    overlap_threshold: float = 0.5  # ours: about half the words of a fact, both ways
    cosine_threshold: float = 0.7  # ours, for all-MiniLM-L6-v2 cosines
    llm_threshold: float = 0.5
    relevance: Relevance = "support"
    rounds_penalty: float = -1.0
    overflow_penalty: float = -0.5
    format_penalty: float = 0.0
    stale_penalty: float = 0.0
    judge_batch: int = 16  # judge prompts per `act` call

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float | int) and not math.isfinite(value):
                _invalid(f"{f.name} must be finite, got {value}")
        for name, choices in (
            ("task_metric", TaskMetric),
            ("storage_judge", StorageJudge),
            ("storage_score", StorageScore),
            ("relevance", Relevance),
        ):
            if getattr(self, name) not in get_args(choices):
                _invalid(f"{name} must be one of {get_args(choices)}, got {getattr(self, name)!r}")
        for name in ("overlap_threshold", "cosine_threshold", "llm_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _invalid(f"{name} must be in [0, 1], got {getattr(self, name)}")
        penalties = ("no_answer", "rounds_penalty", "overflow_penalty", "format_penalty")
        for name in (*penalties, "stale_penalty"):
            if getattr(self, name) > 0:
                _invalid(f"{name} is a penalty: give a value <= 0, got {getattr(self, name)}")
        if self.judge_batch < 1:
            _invalid(f"judge_batch must be >= 1, got {self.judge_batch}")

    def with_(self, **changes: Any) -> RewardConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> RewardConfig:
        if name not in PRESETS:
            raise RewardError(f"unknown reward preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]


def _invalid(problem: str) -> NoReturn:
    raise RewardError(f"invalid RewardConfig: {problem}")


PRESETS: dict[str, RewardConfig] = {
    # The paper's reward: three parts at 1/3 each (see RewardConfig), its two penalties.
    "agemem": RewardConfig(),
    # The paper's ablation baseline: the answer score alone, no penalty.
    "task-only": RewardConfig(
        name="task-only", w_context=0.0, w_memory=0.0, w_task=1.0,
        rounds_penalty=0.0, overflow_penalty=0.0,
    ),
    # Exact match, -0.25 per corrected fact whose memory is stale or lacks the latest value,
    # -0.1 per turn with a fatal format error (ours), the round and overflow penalties. The
    # quickstart trained on it without KL before it took the composite reward: +55 to +57
    # points of held-out sampled success in 50 GRPO steps, 3 seeds
    # (benchmarks/results/quickstart-3-seeds/). `smollm2-135m` trains on it.
    "synthetic": RewardConfig(
        name="synthetic", w_task=1.0, w_context=0.0, w_memory=0.0, task_metric="em",
        format_penalty=-0.1, stale_penalty=-0.25,
    ),
    # AtomMem's reward: the exact match of the boxed answers, averaged over the episode's
    # questions; an unanswered question scores 0 (AtomMem has no penalty).
    "atommem": RewardConfig(
        name="atommem", w_task=1.0, w_context=0.0, w_memory=0.0, task_metric="em",
        no_answer=0.0, rounds_penalty=0.0, overflow_penalty=0.0,
    ),
}  # fmt: skip


# ---- public API ----------------------------------------------------------------------------


def compute_reward(
    episode: Episode,
    task: Task,
    config: RewardConfig | str = "agemem",
    judge: Policy | None = None,
    embedder: Embedder | None = None,
) -> Reward:
    """Every part of one episode's reward, and `total`.

    Keys: `task` (+ `task_em`, `task_f1`, `task_judge` when a judge is given), `context`
    (+ `context_compression`, `context_preventive`, `context_preservation`), `memory`
    (+ `memory_storage`, `memory_storage_precision`, `memory_storage_recall`,
    `memory_maintenance`, `memory_relevance`), `penalty_rounds`,
    `penalty_overflow`, `penalty_format`, `penalty_stale`, `penalty` (their sum), `total`.
    """
    if episode.task_id != task.id:
        raise RewardError(f"episode of task {episode.task_id!r} scored against task {task.id!r}")
    return compute_rewards([episode], [task], config, judge, embedder)[0]


def compute_rewards(
    episodes: Sequence[Episode],
    tasks: Iterable[Task],
    config: RewardConfig | str = "agemem",
    judge: Policy | None = None,
    embedder: Embedder | None = None,
) -> list[Reward]:
    """`compute_reward` for many episodes, matched to `tasks` by id; the judge gets its prompts
    in batches of `config.judge_batch` across episodes."""
    config = RewardConfig.preset(config) if isinstance(config, str) else config
    _check_resources(config, judge, embedder)
    by_id = {task.id: task for task in tasks}
    missing = sorted({e.task_id for e in episodes} - set(by_id))
    if missing:
        raise RewardError(f"no task given for episodes of {missing}; pass those tasks too")
    grades = {}
    if judge is not None:
        prompts = [p for e in episodes for p in _judge_prompts(e.facts, config)]
        grades = _grade(judge, prompts, config.judge_batch)
    judged = judge is not None
    return [_reward(e, by_id[e.task_id], config, grades, embedder, judged) for e in episodes]


def reward_fn(
    tasks: Iterable[Task],
    config: RewardConfig | str = "agemem",
    judge: Policy | None = None,
    embedder: Embedder | None = None,
) -> Callable[[Episode], Reward]:
    """A `run_episodes(reward_fn=...)` callback scoring each episode against its task."""
    by_id = {task.id: task for task in tasks}

    def score(episode: Episode) -> Reward:
        if episode.task_id not in by_id:
            raise RewardError(f"no task {episode.task_id!r} among those given to reward_fn")
        return compute_reward(episode, by_id[episode.task_id], config, judge, embedder)

    return score


def _check_resources(config: RewardConfig, judge: Policy | None, embedder: Embedder | None) -> None:
    if judge is None and config.task_metric == "judge":
        raise RewardError("task_metric='judge' needs judge=<Policy>; or use 'f1' / 'em'")
    if judge is None and config.storage_judge == "llm":
        raise RewardError("storage_judge='llm' needs judge=<Policy>; or use 'overlap'")
    if embedder is None and config.storage_judge == "embedding":
        raise RewardError("storage_judge='embedding' needs embedder=<Embedder>; or use 'overlap'")
    if embedder is None and config.relevance == "cosine":
        raise RewardError("relevance='cosine' needs embedder=<Embedder>; or use 'support'")


def _reward(
    episode: Episode,
    task: Task,
    config: RewardConfig,
    grades: dict[str, float],
    embedder: Embedder | None,
    judged: bool,
) -> Reward:
    facts = episode.facts
    parts = _task_parts(facts, config, grades if judged else None)
    parts |= _context_parts(episode, task)
    parts |= _memory_parts(episode, task, config, grades, embedder)
    parts |= _penalties(facts, stale_facts(episode, task), config)
    parts["total"] = (
        config.w_task * parts["task"]
        + config.w_context * parts["context"]
        + config.w_memory * parts["memory"]
        + parts["penalty"]
    )
    return parts


def world_reward(episode: Episode, config: RewardConfig | str = "agemem") -> Reward:
    """Every part of an interactive world's episode's reward and `total` (module docstring);
    the episode's `reward` must hold the world's `progress` (`AgentEpisode.episode` sets it).

    Keys: `task` (= `task_progress`), `task_success`, `context` (+ `context_compression`,
    `context_preventive`), `memory` (0), the four penalties, `penalty`, `total`."""
    config = RewardConfig.preset(config) if isinstance(config, str) else config
    if "progress" not in episode.reward:
        raise RewardError(
            f"episode {episode.task_id!r} has no world progress in its reward "
            f"({sorted(episode.reward)}): score episodes of agemem.agentic worlds"
        )
    facts = episode.facts
    progress = float(episode.reward["progress"])
    last = episode.steps[-1].tokens if episode.steps else facts.system_tokens
    room = max(facts.t_max - facts.system_tokens, 1)
    context = {
        "context_compression": max(0.0, 1 - (last - facts.system_tokens) / room),
        "context_preventive": _preventive(facts),
    }
    parts: Reward = {
        "task": progress,
        "task_progress": progress,
        "task_success": float(episode.reward.get("success", 0.0)),
        "context": _mean(list(context.values())),
        **context,
        "memory": 0.0,
        **_penalties(facts, 0, config),
    }
    parts["total"] = (
        config.w_task * parts["task"] + config.w_context * parts["context"] + parts["penalty"]
    )
    return parts


# ---- R_task ----------------------------------------------------------------------------------


def token_f1(answer: str, golds: Iterable[str]) -> float:
    """SQuAD token F1 of `answer` against the best of `golds` (0 when nothing overlaps).

    >>> round(token_f1("the Eiffel Tower, Paris", ["Eiffel Tower"]), 3)
    0.8
    """
    tokens = normalize_answer(answer).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        common = sum((Counter(tokens) & Counter(gold_tokens)).values())
        if common:
            precision, recall = common / len(tokens), common / len(gold_tokens)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _task_parts(
    facts: EpisodeFacts, config: RewardConfig, grades: dict[str, float] | None
) -> Reward:
    pairs = list(zip(facts.answers, facts.questions, strict=True))

    def mean(score: Callable[[str, GoldQuestion], float]) -> float:
        return _mean([config.no_answer if a is None else score(a, q) for a, q in pairs])

    parts = {
        "task_em": mean(lambda a, q: float(exact_match(a, q.answers))),
        "task_f1": mean(lambda a, q: token_f1(a, q.answers)),
    }
    if grades is not None:
        parts["task_judge"] = mean(lambda a, q: grades[_judge_prompt(q, a)])
    metric = config.task_metric
    if metric == "auto":
        metric = "judge" if grades is not None else "f1"
    return {"task": parts[f"task_{metric}"], **parts}


# ---- LLM judge ---------------------------------------------------------------------------------

# Fixed prompts (ours; the paper names an LLM judge but prints no prompt).
JUDGE_PROMPT = (
    "Grade an answer against the gold answer.\n"
    "Question: {question}\nGold answer(s): {gold}\nAnswer: {answer}\n"
    "Reply with one number from 0 to 1: 1 if the answer means the same as a gold answer, 0 if "
    "it is wrong, a value in between if it is partly right. Reply with the number only."
)
STORAGE_PROMPT = (
    "Rate a memory entry an assistant stored while reading a conversation.\n"
    "Later question(s): {question}\nGold answer(s): {gold}\nMemory entry: {memory}\n"
    "Reply with one number from 0 to 1: how useful and reusable this entry is for answering "
    "(1: it states a needed fact clearly, 0: irrelevant). Reply with the number only."
)
_GRADE = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?|\.\d+)\s*(%|/\s*(\d+(?:\.\d+)?))?")


def parse_grade(text: str) -> float | None:
    """The first number of a judge's reply (outside `<think>`) as a grade in [0, 1], reading
    "80%" and "8/10" as 0.8; None when there is no number or it is out of range.

    >>> [parse_grade(t) for t in ("0.8", "Score: 8/10.", "100%", "1", "7", "correct")]
    [0.8, 0.8, 1.0, 1.0, None, None]
    """
    match = _GRADE.search(strip_think(text))
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) == "%":
        value /= 100
    elif match.group(3) is not None:
        denominator = float(match.group(3))
        value = value / denominator if denominator else math.inf
    return value if 0.0 <= value <= 1.0 else None


def _judge_prompt(question: GoldQuestion, answer: str) -> str:
    return JUDGE_PROMPT.format(question=question.text, gold=_golds(question), answer=answer)


def _storage_prompt(facts: EpisodeFacts, memory: str) -> str:
    questions = " | ".join(q.text for q in facts.questions)
    golds = " | ".join(_golds(q) for q in facts.questions)
    return STORAGE_PROMPT.format(question=questions, gold=golds, memory=memory)


def _golds(question: GoldQuestion) -> str:
    return " / ".join(question.answers)


def _judge_prompts(facts: EpisodeFacts, config: RewardConfig) -> list[str]:
    """What a judge grades: every answer, and every stage-1 add with `storage_judge="llm"`."""
    prompts = [
        _judge_prompt(q, a)
        for a, q in zip(facts.answers, facts.questions, strict=True)
        if a is not None
    ]
    if config.storage_judge == "llm":
        prompts += [_storage_prompt(facts, text) for text in _stored(facts, config)]
    return prompts


def _grade(judge: Policy, prompts: list[str], batch: int) -> dict[str, float]:
    """One grade per distinct prompt; an unparsable reply counts 0 with a warning."""
    unique = list(dict.fromkeys(prompts))
    grades: dict[str, float] = {}
    for start in range(0, len(unique), batch):
        chunk = unique[start : start + batch]
        turns = judge.act([[{"role": "user", "content": p}] for p in chunk])
        if len(turns) != len(chunk):
            raise RewardError(
                f"the judge returned {len(turns)} turns for {len(chunk)} prompts; "
                "a Policy must return one turn per context"
            )
        for prompt, turn in zip(chunk, turns, strict=True):
            grade = parse_grade(turn.text)
            if grade is None:
                logger.warning("judge reply %r holds no grade in [0, 1]; scored 0", turn.text[:80])
            grades[prompt] = grade or 0.0
    return grades


# ---- R_context ---------------------------------------------------------------------------------


def _last_steps(episode: Episode) -> list[StepSample | None]:
    """Per question, the last step that worked on it (the answering step when answered)."""
    last: list[StepSample | None] = [None] * len(episode.facts.questions)
    for step in episode.steps:
        if step.question is not None and 0 <= step.question < len(last):
            last[step.question] = step
    return last


def _context_parts(episode: Episode, task: Task) -> Reward:
    facts = episode.facts
    steps = _last_steps(episode)
    room = max(facts.t_max - facts.system_tokens, 1)
    compression = [
        max(0.0, 1 - (s.tokens - facts.system_tokens) / room) if s else 0.0 for s in steps
    ]
    names = {c.entity for c in _fact_history(task)}
    preservation = [
        _preserved(s, q.text, facts, names) if s else 0.0
        for s, q in zip(steps, facts.questions, strict=True)
    ]
    parts = {
        "context_compression": _mean(compression),
        "context_preventive": _preventive(facts),
        "context_preservation": _mean(preservation),
    }
    return {"context": _mean(list(parts.values())), **parts}


def _preventive(facts: EpisodeFacts) -> float:
    first = facts.overflows[0].turn if facts.overflows else math.inf
    return float(any(c.ok and c.name in CONTEXT_TOOLS and c.turn < first for c in facts.calls))


_TOKEN = re.compile(r"\w+(?:[-']\w+)*")


def key_entities(query: str, names: Iterable[str] = ()) -> list[str]:
    """The words of `query` that name what it is about: capitalised words that do not start a
    sentence, numbers, and any of `names` (known entity names, for lowercase tasks).

    >>> key_entities("Were Scott Derrickson and Ed Wood born before 1950?")
    ['Scott', 'Derrickson', 'Ed', 'Wood', '1950']
    >>> key_entities("where does ana live ?", names=["ana", "ben"])
    ['ana']
    """
    known = {n.lower() for n in names}
    keys = []
    for match in _TOKEN.finditer(query):
        word, before = match.group(), query[: match.start()].rstrip()
        starts_sentence = not before or before[-1] in ".?!"
        capitalised = word[0].isupper() and not starts_sentence
        if capitalised or any(ch.isdigit() for ch in word) or word.lower() in known:
            keys.append(word)
    return list(dict.fromkeys(keys))


def _preserved(step: StepSample, query: str, facts: EpisodeFacts, names: set[str]) -> float:
    keys = key_entities(query, names)
    if not keys:
        return 1.0
    questions = {p + q.text for q in facts.questions for p in (QUESTION_PREFIX, CHAT_PREFIX)}
    text = "\n".join(
        str(m.get("content") or "")
        for m in step.messages
        if m.get("role") in ("user", "tool") and m.get("content") not in questions
    )
    found = [re.search(rf"(?<!\w){re.escape(k)}(?!\w)", text, re.IGNORECASE) for k in keys]
    return sum(f is not None for f in found) / len(keys)


# ---- R_memory ----------------------------------------------------------------------------------


def _memory_parts(
    episode: Episode,
    task: Task,
    config: RewardConfig,
    grades: dict[str, float],
    embedder: Embedder | None,
) -> Reward:
    precision, recall = _storage(episode.facts, task, config, grades, embedder)
    storage = precision
    if config.storage_score == "f1":
        storage = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    parts = {
        "memory_storage": storage,
        "memory_maintenance": _maintenance(episode.facts, task),
        "memory_relevance": _relevance(episode, task, config, embedder),
    }
    return {
        "memory": _mean(list(parts.values())),
        **parts,
        "memory_storage_precision": precision,
        "memory_storage_recall": recall,
    }


def _stored(facts: EpisodeFacts, config: RewardConfig) -> list[str]:
    """The entries storage is scored on: the final memories ("f1"), or the stage-1 adds."""
    if config.storage_score == "f1":
        return [m.content for m in facts.final_memories]
    return [op.content for op in facts.adds if op.stage == 1 and op.content]


def _storage(
    facts: EpisodeFacts,
    task: Task,
    config: RewardConfig,
    grades: dict[str, float],
    embedder: Embedder | None,
) -> tuple[float, float]:
    """(precision, recall) of the stored entries against the supporting facts."""
    stored = _stored(facts, config)
    if not stored:
        return 0.0, 0.0
    if config.storage_judge == "embedding" and task.supporting_facts:
        assert embedder is not None  # _check_resources
        close = embedder.embed(stored) @ embedder.embed(task.supporting_facts).T
        good = close >= config.cosine_threshold
        return float(good.any(axis=1).mean()), float(good.any(axis=0).mean())
    if config.storage_judge == "llm":
        good = [grades[_storage_prompt(facts, s)] >= config.llm_threshold for s in stored]
    else:
        good = _supported(stored, task, config.overlap_threshold)
    return sum(good) / len(stored), _covered(stored, task, config.overlap_threshold)


def _covered(stored: list[str], task: Task, threshold: float) -> float:
    """The share of supporting facts some stored entry matches (token F1 >= `threshold`); without
    supporting facts, the share of gold answers some entry contains."""
    if task.supporting_facts:
        hits = [
            any(token_f1(s, [fact]) >= threshold for s in stored) for fact in task.supporting_facts
        ]
    else:
        golds = [a for q in task.questions for a in q.answers if normalize_answer(a)]
        hits = [any(_contains(s, g) for s in stored) for g in golds]
    return sum(hits) / len(hits) if hits else 0.0


def _supported(texts: list[str], task: Task, threshold: float) -> list[bool]:
    """Token F1 >= `threshold` with some supporting fact; without supporting facts, the text
    contains a gold answer."""
    if task.supporting_facts:
        return [token_f1(t, task.supporting_facts) >= threshold for t in texts]
    golds = [normalize_answer(a) for q in task.questions for a in q.answers]
    return [any(_contains(t, g) for g in golds if g) for t in texts]


def _contains(text: str, phrase: str) -> bool:
    """`phrase` (normalised) appears in `text` as whole words."""
    return f" {normalize_answer(phrase)} " in f" {normalize_answer(text)} "


def _maintenance(facts: EpisodeFacts, task: Task) -> float:
    corrections = [c for c in _fact_history(task) if len(c.values) > 1]
    if not corrections:
        return float(bool(facts.updates or facts.deletes))
    touched = [op.old_content or "" for op in facts.updates + facts.deletes]
    fixed = [any(c.holds_stale(text) for text in touched) for c in corrections]
    return sum(fixed) / len(corrections)


def retrieved_entries(episode: Episode) -> list[tuple[int | None, str]]:
    """(question index, content) of each entry the agent's own Retrieve_memory calls returned."""
    return [(r.question, r.content) for r in episode.facts.retrieved]


def _relevance(
    episode: Episode, task: Task, config: RewardConfig, embedder: Embedder | None
) -> float:
    entries = retrieved_entries(episode)
    if not entries:
        return 0.0
    texts = [content for _, content in entries]
    if config.relevance == "support":
        return _mean([float(s) for s in _supported(texts, task, config.overlap_threshold)])
    assert embedder is not None  # _check_resources
    questions = episode.facts.questions
    queries = [questions[q].text if q is not None else questions[0].text for q, _ in entries]
    cosines = np.einsum("ij,ij->i", embedder.embed(texts), embedder.embed(queries))
    return float(np.clip(cosines, 0.0, 1.0).mean())


# ---- synthetic corrections ---------------------------------------------------------------------


class _FactMeta(BaseModel):
    """One fact of a synthetic task's `metadata["facts"]`: its values in order, the last is the
    latest (tasks/synthetic.py)."""

    entity: str
    values: list[str] = Field(min_length=1)

    def _holds(self, text: str, values: Iterable[str]) -> bool:
        return _contains(text, self.entity) and any(_contains(text, v) for v in values)

    def holds_stale(self, text: str) -> bool:
        return self._holds(text, {v for v in self.values[:-1] if v != self.values[-1]})

    def holds_latest(self, text: str) -> bool:
        return self._holds(text, [self.values[-1]])


_FACTS = TypeAdapter(list[_FactMeta])


def _fact_history(task: Task) -> list[_FactMeta]:
    """The task's facts with their value history (synthetic tasks); [] for other tasks."""
    if "facts" not in task.metadata:
        return []
    try:
        return _FACTS.validate_python(task.metadata["facts"])
    except ValidationError as err:
        raise RewardError(
            f"task {task.id!r}: metadata['facts'] must be a list of {{entity, values}} as "
            f"tasks/synthetic.py writes ({err.error_count()} problem(s))"
        ) from None


def stale_facts(episode: Episode, task: Task) -> int:
    """How many corrected facts end with a stale value in memory, or without the latest. An entry
    holds a value when it names the entity and the value as whole words (any phrasing)."""
    memories = [m.content for m in episode.facts.final_memories]
    return sum(
        any(f.holds_stale(m) for m in memories) or not any(f.holds_latest(m) for m in memories)
        for f in _fact_history(task)
        if len(f.values) > 1
    )


# ---- penalties ---------------------------------------------------------------------------------


def _penalties(facts: EpisodeFacts, stale: int, config: RewardConfig) -> Reward:
    over_cap = facts.ended_by == "n_max" or (facts.n_max is not None and facts.rounds > facts.n_max)
    errors = facts.format_errors
    parts = {  # each "if" keeps -0.0 out of the logs
        "penalty_rounds": config.rounds_penalty if over_cap else 0.0,
        "penalty_overflow": config.overflow_penalty if facts.overflowed else 0.0,
        "penalty_format": config.format_penalty * errors if errors else 0.0,
        "penalty_stale": config.stale_penalty * stale if stale else 0.0,
    }
    return {"penalty": sum(parts.values()), **parts}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
