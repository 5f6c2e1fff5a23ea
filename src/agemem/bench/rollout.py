"""`agemem bench rollout`: generation throughput of batched episodes against one at a time.

Same policy, same tasks, same env settings, in one run: the tasks in batches of `batch` (one
`policy.act` call per step across a batch's live episodes) and each task alone, in the order
batched, sequential, sequential, batched, so that a change in the machine's load during the run
weighs on both sides alike. Reported: generated tokens per second and episodes per minute on
each side (totals over both of its passes), and the speedup. Sampling makes the two sides
generate different texts, so token counts differ a little; the rates are what compare. The
defaults keep the run to a few minutes on 2 idle CPU cores: synthetic tasks, the `synthetic`
env preset, 32 new tokens per turn and at most 6 turns per episode. Prompt processing is part
of the time on both sides (the same prompts on each); the policy's prefix cache serves the
prompts' shared prefix on both. Each side also reports the share of prompt tokens the cache
served and the policy's prefill and decode seconds (the rest is the env: tools, embeddings).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import torch

from agemem.env import PRESETS, EnvConfig, run_episodes
from agemem.episode import Episode
from agemem.policy.hf import GenerationStats, HFPolicy
from agemem.tasks import Task, load_tasks

Run = tuple[list[Episode], float, GenerationStats]


def _run(policy: HFPolicy, batches: Sequence[Sequence[Task]], config: EnvConfig) -> Run:
    policy.stats = GenerationStats()
    start = time.perf_counter()
    episodes: list[Episode] = []
    for batch in batches:
        episodes += run_episodes(policy, batch, config, progress=False)
    return episodes, time.perf_counter() - start, policy.stats


def _totals(runs: list[Run]) -> dict[str, Any]:
    episodes = [e for run, _, _ in runs for e in run]
    seconds = sum(s for _, s, _ in runs)
    stats = [g for _, _, g in runs]
    prompt_tokens = sum(g.prompt_tokens for g in stats)
    steps = [s for e in episodes for s in e.steps]
    generated = sum(len(s.completion_ids) for s in steps)
    return {
        "episodes": len(episodes),
        "turns": len(steps),
        "generated_tokens": generated,
        "prompt_tokens": sum(len(s.prompt_ids) for s in steps),
        "prompt_cache_share": round(1 - sum(g.computed_tokens for g in stats) / prompt_tokens, 3),
        "prefill_s": round(sum(g.prefill_s for g in stats), 3),
        "decode_s": round(sum(g.decode_s for g in stats), 3),
        "seconds": round(seconds, 3),
        "tokens_per_s": round(generated / seconds, 2),
        "episodes_per_min": round(60 * len(episodes) / seconds, 3),
    }


def run_rollout_bench(
    preset: str = "smollm2-135m",
    *,
    n_tasks: int = 8,
    batch: int = 8,
    max_new_tokens: int = 32,
    n_max: int = 6,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure both sides on `n_tasks` synthetic test tasks and return the JSON payload."""
    if n_tasks < 1 or batch < 1:
        raise ValueError("n_tasks and batch must be >= 1")
    load_at_start = os.getloadavg()
    policy = HFPolicy.from_pretrained(preset, max_new_tokens=max_new_tokens, seed=seed)
    tasks = load_tasks("synthetic", split="test", limit=n_tasks)
    config = PRESETS["synthetic"].with_(n_max=n_max)
    run_episodes(policy, tasks[:1], config.with_(n_max=1), progress=False)  # warm-up
    batches = [tasks[i : i + batch] for i in range(0, n_tasks, batch)]
    singles = [[task] for task in tasks]
    first_b, first_s = _run(policy, batches, config), _run(policy, singles, config)
    second_s, second_b = _run(policy, singles, config), _run(policy, batches, config)
    batched, sequential = _totals([first_b, second_b]), _totals([first_s, second_s])
    return {
        "preset": preset,
        "tasks": n_tasks,
        "batch": batch,
        "max_new_tokens": max_new_tokens,
        "n_max": n_max,
        "env_preset": "synthetic",
        "batched_tokens_per_s": batched["tokens_per_s"],
        "sequential_tokens_per_s": sequential["tokens_per_s"],
        "speedup": round(batched["tokens_per_s"] / sequential["tokens_per_s"], 3),
        "episodes_per_min": batched["episodes_per_min"],
        "sequential_episodes_per_min": sequential["episodes_per_min"],
        "prompt_cache_share": batched["prompt_cache_share"],
        "sequential_prompt_cache_share": sequential["prompt_cache_share"],
        "batched": batched,
        "sequential": sequential,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
    }
