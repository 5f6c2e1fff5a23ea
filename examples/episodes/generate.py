"""Regenerate the example episodes in this folder (one per task family, a few KB each).

    .venv/bin/python examples/episodes/generate.py

Every episode is a real run: real store, embedder, context and tools. The oracle writes the
trajectories (`OracleRates`' deliberately imperfect defaults on synthetic tasks), plus one synthetic
episode by the untrained `tiny` model, which shows what a policy looks like before SFT.
LoCoMo's first conversation is cut to its first 12 turns and three of the questions they
answer, to keep the file small. View any of them with `agemem show examples/episodes/<file>`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agemem.env import PRESETS, alias_vocabulary, run_episodes, system_prompt
from agemem.env.oracle import Oracle
from agemem.episode import save_episodes
from agemem.policy.hf import HFPolicy
from agemem.policy.tiny import build_tiny
from agemem.tasks import Task, load_tasks
from agemem.tasks.synthetic import synthetic_vocabulary

HERE = Path(__file__).parent


def smallest(tasks: list[Task]) -> Task:
    return min(tasks, key=lambda t: len(t.to_json()))


def small_locomo() -> Task:
    task = load_tasks("locomo", limit=1)[0]
    head = task.contextual[:12]
    ids = {m.id for m in head}
    questions = [q for q in task.questions if set(q.evidence) <= ids][:3]
    return dataclasses.replace(task, contextual=head, questions=questions)


def main() -> None:
    synthetic = load_tasks("synthetic", split="test", limit=20)
    oracle = Oracle(seed=0)
    episodes = run_episodes(oracle, synthetic, PRESETS["synthetic"], progress=False)
    shown = next(e for e in episodes if e.facts.updates and e.facts.deletes)
    save_episodes([shown], HERE / "synthetic-oracle.jsonl")

    model, tokenizer = build_tiny(
        synthetic_vocabulary() + [system_prompt(compact=True)],
        memory_ids=alias_vocabulary(9, spaces=2),
    )
    tiny = HFPolicy(model, tokenizer, max_new_tokens=24, seed=0)
    save_episodes(
        run_episodes(tiny, synthetic[:1], PRESETS["synthetic"], progress=False),
        HERE / "synthetic-tiny-untrained.jsonl",
    )

    hotpotqa = [smallest(load_tasks("hotpotqa", split="test", limit=20))]
    save_episodes(
        run_episodes(Oracle(), hotpotqa, PRESETS["paper"], progress=False),
        HERE / "hotpotqa-oracle.jsonl",
    )

    locomo = [small_locomo()]
    save_episodes(
        run_episodes(Oracle(), locomo, PRESETS["paper"], progress=False),
        HERE / "locomo-oracle.jsonl",
    )

    long = load_tasks(
        "hotpotqa-long",
        split="test",
        limit=1,
        n_docs=4,
        group_size=2,
        question_paragraphs="supporting",
    )
    atommem = PRESETS["atommem"].with_(chunk_tokens=300, chunk_overlap=30)
    save_episodes(
        run_episodes(Oracle(), long, atommem, progress=False),
        HERE / "hotpotqa-long-atommem-oracle.jsonl",
    )


if __name__ == "__main__":
    main()
