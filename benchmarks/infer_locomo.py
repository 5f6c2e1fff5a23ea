"""`Memory.add(infer=True)` with the embedded model against `infer=False` on LoCoMo conversation 1.

Each turn of the conversation (its first `--messages` turns; all 419 by default) is added as one
message, `[time] Speaker: text`, to a fresh store in one scope, once with `infer=False` (stored as
said) and once with `infer=True` (facts extracted and decided by the model, `--model`, default
the embedded SmolLM2-135M-Instruct). Every entry carries the id of the turn it came from
(`dia_id` metadata; an UPDATE keeps the id of the entry it rewrites).

Reported per mode: memories stored, the events of the adds, the adds that stored nothing
(`error`), seconds per message (the model's load is timed apart), and the evidence recall of
`search`: for each question of categories 1-4 with evidence among the turns added, the share of
those evidence turns that the top `--top-k` results of `search(question)` come from. The load
of the machine (`os.getloadavg`, `uptime`) is recorded before and after, since it moves the
timings.

    python benchmarks/infer_locomo.py --messages 60 --json benchmarks/results/infer_locomo.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agemem import Memory
from agemem.memory.infer import EmbeddedFactModel, resolve_llm
from agemem.tasks.base import incoming_text
from agemem.tasks.locomo import read_locomo, to_task

SCOPE = "conv-26"


def load() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {"loadavg": list(os.getloadavg()), "uptime": uptime.strip(), "cpus": os.cpu_count()}


def run(mode: str, turns: list[Any], questions: list[Any], model: str, top_k: int) -> dict:
    infer = mode == "infer"
    with tempfile.TemporaryDirectory() as folder:
        llm = resolve_llm(model) if infer else None
        with Memory(Path(folder) / "m.db", llm=llm) as memory:
            load_s = 0.0
            if isinstance(llm, EmbeddedFactModel):
                start = time.perf_counter()
                llm.load()
                load_s = time.perf_counter() - start
            seconds, events, errors, facts = [], Counter(), [], 0
            for turn in turns:
                start = time.perf_counter()
                result = memory.add(
                    incoming_text(turn), user_id=SCOPE, metadata={"dia_id": turn.id}, infer=infer
                )
                seconds.append(time.perf_counter() - start)
                events.update(r["event"] for r in result["results"])
                facts += len(result.get("facts") or [])
                if "error" in result:
                    errors.append({"dia_id": turn.id, "error": result["error"][:300]})
            stored = memory.get_all(user_id=SCOPE, limit=100_000)["results"]
            recalls = []
            for question in questions:
                hits = memory.search(question.text, user_id=SCOPE, limit=top_k)["results"]
                found = {h["metadata"].get("dia_id") for h in hits}
                recalls.append(len(found & question.evidence_in) / len(question.evidence_in))
            sample = [r["memory"] for r in stored[:8]]
            backend = getattr(llm, "running", "") if infer else ""
    return {
        "mode": mode,
        "model": model if infer else None,
        "backend": backend or None,
        "model_load_s": round(load_s, 1),
        "messages": len(turns),
        "memories_stored": len(stored),
        "facts_extracted": facts if infer else None,
        "events": dict(events),
        "adds_that_stored_nothing": len(errors),
        "errors_sample": errors[:5],
        "seconds_per_message": {
            "mean": round(statistics.fmean(seconds), 3),
            "median": round(statistics.median(seconds), 3),
            "max": round(max(seconds), 3),
        },
        f"evidence_recall_at_{top_k}": round(statistics.fmean(recalls), 4) if recalls else None,
        "memories_sample": sample,
    }


class _Scored:
    def __init__(self, text: str, evidence_in: set[str]) -> None:
        self.text, self.evidence_in = text, evidence_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=None, help="first N turns (default all)")
    parser.add_argument("--model", default="smollm2-135m", help="the embedded preset")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--data", default=None, help="locomo10.json (default: the loader's)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    task = to_task(read_locomo(args.data)[0])  # conversation 1, categories 1-4
    turns = task.contextual[: args.messages]
    added = {t.id for t in turns}
    questions = [
        _Scored(q.text, set(q.evidence) & added) for q in task.questions if set(q.evidence) & added
    ]
    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "conversation": task.id,
        "messages": len(turns),
        "questions_scored": len(questions),
        "questions_total": len(task.questions),
        "top_k": args.top_k,
        "load_before": load(),
    }
    report["runs"] = [
        run(m, turns, questions, args.model, args.top_k) for m in ("verbatim", "infer")
    ]
    report["load_after"] = load()
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
