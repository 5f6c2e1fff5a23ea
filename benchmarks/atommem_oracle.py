"""What the AtomMem oracle's SFT trajectories look like: one command, JSON out.

    python benchmarks/atommem_oracle.py --tasks 12 \
        --json benchmarks/results/smollm2-atommem/oracle.json

Runs the oracle over the first N training pools of the `smollm2-atommem` preset (its env and
reward, SmolLM2's tokenizer) and reports operations per episode, turn and prompt lengths in
SmolLM2 tokens, rewards and failed calls, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import Counter
from pathlib import Path

from agemem.env import run_episodes
from agemem.env.oracle import Oracle
from agemem.policy.models import load_model
from agemem.rewards import reward_fn
from agemem.tokens import HFTokenCounter
from agemem.train.config import load_config
from agemem.train.curriculum import env_config, load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    sft = load_config("smollm2-atommem").sft
    _, tokenizer = load_model(sft.model.name)
    tasks = load_split(sft.tasks.source, sft.tasks.options, "train", args.tasks)
    episodes = run_episodes(
        Oracle(seed=sft.run.seed),
        tasks,
        env_config(sft.env.preset, sft.env.overrides),
        progress=False,
        token_counter=HFTokenCounter(tokenizer),
        reward_fn=reward_fn(tasks, sft.reward.preset),
    )
    ops: Counter[str] = Counter()
    for episode in episodes:
        ops.update(episode.facts.tool_counts())
    turns = sorted(len(tokenizer.encode(s.text)) for e in episodes for s in e.steps)
    prompts = [s.tokens for e in episodes for s in e.steps]
    result = {
        "episodes": len(episodes),
        "ops_per_episode": {k: v / len(episodes) for k, v in sorted(ops.items())},
        "turn_tokens": {
            "mean": statistics.mean(turns),
            "p95": turns[int(0.95 * len(turns))],
            "max": turns[-1],
        },
        "prompt_tokens_mean": statistics.mean(prompts),
        "reward_mean": statistics.mean(e.reward["total"] for e in episodes),
        "failed_calls": sum(sum(e.facts.failed_counts().values()) for e in episodes),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
