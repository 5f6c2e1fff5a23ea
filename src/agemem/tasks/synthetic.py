"""A seeded curriculum of small memory tasks in which Update/Delete decide the answer.

Stage 1 states facts about a few people ("ana lives in paris .") in a casual framing, mixed with
chit-chat, and later corrects some of them ("update : ana lives in rome ."). Stage 2 brings notes
about *other* people with the same attributes (semantically related, never about stage-1 people).
Stage 3 asks about a corrected fact, so the gold answer is the latest value: an agent that stored
the correction as a duplicate instead of updating has two conflicting entries.

Every text is lowercase words and punctuation separated by single spaces, so `text.split()` is
its tokenization, and every word comes from a closed vocabulary (`synthetic_vocabulary()`, under
250 words) that a tiny word-level model can embed.

Splits: task seeds 0 .. 999,999,999 are `train`, 1,000,000,000 .. 1,999,999,999 are `test`
(`SPLIT_SEEDS`). Seeds are disjoint; with a closed vocabulary two seeds can still, rarely, draw the
same task content (see the module's test for the measured rate).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from agemem.tasks.base import ContextMessage, Question, Task, TaskError, TaskSource

SPLIT_SEEDS = {"train": range(0, 1_000_000_000), "test": range(1_000_000_000, 2_000_000_000)}

NAMES = (
    "ana", "ben", "cara", "dan", "eva", "finn", "gus", "hana",
    "ivan", "jade", "kai", "lena", "max", "nora", "omar", "pia",
)  # fmt: skip


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: how it is stated, how it is asked, and the values it can take."""

    name: str
    statement: str  # "{name}" and "{value}" slots
    question: str  # "{name}" slot
    values: tuple[str, ...]


ATTRIBUTES = (
    Attribute("city", "{name} lives in {value} .", "where does {name} live ?",
              ("paris", "rome", "tokyo", "lima", "oslo", "cairo", "delhi", "berlin")),
    Attribute("job", "{name} works as a {value} .", "what does {name} work as ?",
              ("doctor", "teacher", "pilot", "baker", "farmer", "lawyer", "nurse", "painter")),
    Attribute("pet", "{name} has a pet {value} .", "what pet does {name} have ?",
              ("cat", "dog", "parrot", "rabbit", "horse", "goat", "turtle", "hamster")),
    Attribute("color", "{name} likes the color {value} .", "what color does {name} like ?",
              ("red", "blue", "green", "yellow", "purple", "orange", "black", "white")),
    Attribute("sport", "{name} plays {value} .", "what sport does {name} play ?",
              ("tennis", "chess", "golf", "soccer", "hockey", "rugby", "cricket", "volleyball")),
    Attribute("drink", "{name} drinks {value} every day .", "what does {name} drink every day ?",
              ("tea", "coffee", "milk", "juice", "water", "cocoa", "soda", "lemonade")),
    Attribute("food", "{name} loves eating {value} .", "what food does {name} love eating ?",
              ("pizza", "pasta", "sushi", "tacos", "curry", "soup", "salad", "noodles")),
)  # fmt: skip

# Framings. A message is "<prefix> <statement>"; the empty prefix states the fact plainly.
FACT_PREFIXES = ("", "by the way ,", "fun fact :", "oh and", "did you know ?")
CORRECTION_PREFIXES = ("update :", "correction :", "that changed :", "news , now")
DISTRACTOR_PREFIXES = ("note :", "i heard that", "someone told me", "fyi ,")
CHIT_CHAT = (
    "the weather is nice today .",
    "i watched a movie last night .",
    "traffic was bad this morning .",
    "i am a bit tired today .",
    "lunch was great .",
    "my phone battery died again .",
    "how was your weekend ?",
    "i need more sleep .",
    "the train was late again .",
    "what a long week !",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Curriculum knobs. `t_max` is a context-budget hint for the environment (tokens), stored in
    each task's metadata; presets scale it as 12 + 8 per distractor note, which gives the
    default 44: with the `synthetic` env preset's 86-token margin, stage 2 overflows unless the
    agent filters (the oracle's token counts are in `agemem.env.config`'s `synthetic` preset).
    (Measured over 500 tasks: stage-2 notes plus the question average 22 / 38 / 69 words for
    easy / default / hard, before any system text or model turns.)"""

    name: str = "custom"
    n_entities: int = 2
    n_facts: int = 3
    n_corrections: int = 2
    n_chit_chat: int = 2
    n_distractors: int = 4
    n_questions: int = 1
    t_max: int = 44

    def __post_init__(self) -> None:
        _check(self.n_entities >= 1, "n_entities must be >= 1")
        _check(
            self.n_entities <= self.n_facts <= self.n_entities * len(ATTRIBUTES),
            f"n_facts must be between n_entities and n_entities * {len(ATTRIBUTES)} attributes",
        )
        _check(0 <= self.n_corrections <= self.n_facts, "n_corrections must be in 0..n_facts")
        _check(1 <= self.n_questions <= self.n_facts, "n_questions must be in 1..n_facts")
        _check(
            0 <= self.n_chit_chat <= len(CHIT_CHAT), f"n_chit_chat must be in 0..{len(CHIT_CHAT)}"
        )
        _check(self.n_distractors >= 0, "n_distractors must be >= 0")
        _check(
            self.n_entities + (self.n_distractors > 0) <= len(NAMES),
            f"n_entities must leave a name for distractors ({len(NAMES)} names in all)",
        )
        _check(self.t_max >= 1, "t_max must be >= 1")

    @classmethod
    def preset(cls, name: str) -> SyntheticConfig:
        if name not in PRESETS:
            raise TaskError(f"unknown synthetic preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise TaskError(f"invalid SyntheticConfig: {problem}")


PRESETS = {
    "easy": SyntheticConfig("easy", n_entities=1, n_facts=2, n_corrections=1, n_chit_chat=1,
                            n_distractors=2, t_max=28),
    # The shape `agemem quickstart` trains on (README, "What the quickstart recipe learned").
    "default": SyntheticConfig("default"),
    "hard": SyntheticConfig("hard", n_entities=3, n_facts=6, n_corrections=4, n_chit_chat=4,
                            n_distractors=8, t_max=76),
}  # fmt: skip


@dataclass(eq=False)  # compared by identity: the generator tracks each fact through stage 1
class _Fact:
    entity: str
    attribute: Attribute
    values: list[str]  # first the stated value, then each correction; the last is the gold answer
    latest_message: int = -1  # index of the message that states values[-1]

    def statement(self, value: str) -> str:
        return self.attribute.statement.format(name=self.entity, value=value)


def generate_task(seed: int, config: SyntheticConfig | str = "default") -> Task:
    """The task for `seed` (same seed and config, same task)."""
    if isinstance(config, str):
        config = SyntheticConfig.preset(config)
    rng = random.Random(seed)
    entities = rng.sample(NAMES, config.n_entities)
    facts = _draw_facts(rng, entities, config)
    corrected = rng.sample(facts, config.n_corrections)
    messages = _stage_one(rng, facts, corrected, config.n_chit_chat)
    asked = _asked(rng, facts, corrected, config.n_questions)
    return Task(
        id=f"synthetic-{config.name}-{seed}",
        family="synthetic",
        contextual=[ContextMessage(text, id=f"m{i + 1}") for i, text in enumerate(messages)],
        distractors=_distractors(rng, entities, facts, config.n_distractors),
        questions=[
            Question(
                text=f.attribute.question.format(name=f.entity),
                answers=(f.values[-1],),
                category="updated" if len(f.values) > 1 else "static",
                evidence=(f"m{f.latest_message + 1}",),
            )
            for f in asked
        ],
        supporting_facts=[f.statement(f.values[-1]) for f in facts],
        metadata={
            "seed": seed,
            "config": asdict(config),
            "t_max": config.t_max,
            "facts": [
                {"entity": f.entity, "attribute": f.attribute.name, "values": f.values}
                for f in facts
            ],
        },
    )


def _draw_facts(rng: random.Random, entities: list[str], config: SyntheticConfig) -> list[_Fact]:
    """One attribute per entity first (everyone gets a fact), the rest on free (entity, attr)."""
    slots = [(e, a) for e in entities for a in ATTRIBUTES]
    chosen = [(e, rng.choice(ATTRIBUTES)) for e in entities]
    free = [s for s in slots if s not in chosen]
    chosen += rng.sample(free, config.n_facts - len(entities))
    rng.shuffle(chosen)
    return [_Fact(e, a, [rng.choice(a.values)]) for e, a in chosen]


def _stage_one(
    rng: random.Random, facts: list[_Fact], corrected: list[_Fact], n_chit_chat: int
) -> list[str]:
    """Facts in random order; each correction somewhere after its fact; chit-chat anywhere.
    Renders the messages and appends each correction's new value to its fact."""
    events: list[tuple[str, Any]] = [("fact", f) for f in facts]
    for f in corrected:
        after = events.index(("fact", f)) + 1
        events.insert(rng.randint(after, len(events)), ("correction", f))
    for text in rng.sample(CHIT_CHAT, n_chit_chat):
        events.insert(rng.randint(0, len(events)), ("chat", text))
    messages = []
    for kind, item in events:
        if kind == "chat":
            messages.append(item)
            continue
        if kind == "correction":
            old = item.values[-1]
            item.values.append(rng.choice([v for v in item.attribute.values if v != old]))
        prefixes = FACT_PREFIXES if kind == "fact" else CORRECTION_PREFIXES
        item.latest_message = len(messages)
        messages.append(_framed(rng.choice(prefixes), item.statement(item.values[-1])))
    return messages


def _asked(rng: random.Random, facts: list[_Fact], corrected: list[_Fact], n: int) -> list[_Fact]:
    """Corrected facts first (they make Update matter), then the others."""
    rest = [f for f in facts if f not in corrected]
    return (rng.sample(corrected, len(corrected)) + rng.sample(rest, len(rest)))[:n]


def _distractors(rng: random.Random, entities: list[str], facts: list[_Fact], n: int) -> list[str]:
    """Notes on other people with the attributes stage 1 used: related, but never the answer."""
    others = [name for name in NAMES if name not in entities]
    attributes = [f.attribute for f in facts]
    notes = []
    for _ in range(n):
        attribute = rng.choice(attributes)
        statement = attribute.statement.format(
            name=rng.choice(others), value=rng.choice(attribute.values)
        )
        notes.append(_framed(rng.choice(DISTRACTOR_PREFIXES), statement))
    return notes


def _framed(prefix: str, statement: str) -> str:
    return f"{prefix} {statement}" if prefix else statement


def synthetic_vocabulary() -> list[str]:
    """Every word the generator can emit, sorted (a word-level tokenizer's base vocabulary)."""
    texts = [*FACT_PREFIXES, *CORRECTION_PREFIXES, *DISTRACTOR_PREFIXES, *CHIT_CHAT, *NAMES]
    for a in ATTRIBUTES:
        texts += [a.statement, a.question, *a.values]
    words = {w for text in texts for w in text.split()}
    return sorted(w for w in words if not w.startswith("{"))


def generate_tasks(
    split: str = "train",
    limit: int | None = None,
    seed: int | None = None,
    preset: str = "default",
    config: SyntheticConfig | None = None,
) -> list[Task]:
    """`limit` tasks from `split`'s seed range: its first seeds (`seed=None`) or a sample drawn
    with `seed`. `config` overrides `preset`."""
    if limit is None:
        raise TaskError("the synthetic source is unbounded: pass limit=N")
    if split not in SPLIT_SEEDS:
        raise TaskError(f"unknown synthetic split {split!r}; use one of {sorted(SPLIT_SEEDS)}")
    seeds = SPLIT_SEEDS[split]
    chosen = seeds[:limit] if seed is None else random.Random(seed).sample(seeds, limit)
    cfg = config or SyntheticConfig.preset(preset)
    return [generate_task(s, cfg) for s in chosen]


SOURCE = TaskSource("synthetic", ("train", "test"), generate_tasks)
