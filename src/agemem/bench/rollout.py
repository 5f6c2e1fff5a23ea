"""`agemem bench rollout`: generation throughput of batched episodes against one at a time, and
against a llama.cpp server sampling from the same weights.

Same policy, same tasks, same env settings, in one run: the tasks in batches of `batch` (one
`policy.act` call per step across a batch's live episodes), each task alone, and the batches
through `LlamaCppPolicy` (`batch` slots, the weights handed over by one `sync_weights`; the
shipped Q4_1 file for the base SmolLM2), in the order batched, sequential, llama.cpp, llama.cpp,
sequential, batched, so that a change in the machine's load during the run weighs on all sides
alike. The llama.cpp side is skipped (with the reason) for a model it cannot serve. Reported:
generated tokens per second and episodes per minute on each side (totals over both of its
passes), and the speedups. Sampling makes the sides generate different texts, so token counts
differ a little; the rates are what compare. The defaults keep the run to a few minutes on 2
idle CPU cores: synthetic tasks, the `synthetic` env preset, 32 new tokens per turn and at most
6 turns per episode. Prompt processing is part of the time on every side (the same prompts on
each); the policy's prefix cache serves the prompts' shared prefix on both HF sides. Those also
report the share of prompt tokens the cache served and the policy's prefill and decode seconds
(the rest is the env: tools, embeddings); the llama.cpp side reports neither (the server keeps
its own prompt cache).
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
from agemem.policy.base import Policy
from agemem.policy.gguf_export import ExportError
from agemem.policy.hf import GenerationStats, HFPolicy
from agemem.policy.openai import ServerError
from agemem.policy.server import LlamaCppPolicy, serve_hf_policy
from agemem.tasks import Task, load_tasks

Run = tuple[list[Episode], float, GenerationStats]


def _run(policy: Policy, batches: Sequence[Sequence[Task]], config: EnvConfig) -> Run:
    stats = GenerationStats()
    if isinstance(policy, HFPolicy):
        policy.stats = stats
    start = time.perf_counter()
    episodes: list[Episode] = []
    for batch in batches:
        episodes += run_episodes(policy, batch, config, progress=False)
    return episodes, time.perf_counter() - start, stats


def _totals(runs: list[Run]) -> dict[str, Any]:
    episodes = [e for run, _, _ in runs for e in run]
    seconds = sum(s for _, s, _ in runs)
    stats = [g for _, _, g in runs]
    prompt_tokens = sum(g.prompt_tokens for g in stats)  # 0: not an HFPolicy, no stats kept
    steps = [s for e in episodes for s in e.steps]
    generated = sum(len(s.completion_ids) for s in steps)
    return {
        "episodes": len(episodes),
        "turns": len(steps),
        "generated_tokens": generated,
        "prompt_tokens": sum(len(s.prompt_ids) for s in steps),
        "prompt_cache_share": (
            round(1 - sum(g.computed_tokens for g in stats) / prompt_tokens, 3)
            if prompt_tokens
            else None
        ),
        "prefill_s": round(sum(g.prefill_s for g in stats), 3) if prompt_tokens else None,
        "decode_s": round(sum(g.decode_s for g in stats), 3) if prompt_tokens else None,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(generated / seconds, 2),
        "episodes_per_min": round(60 * len(episodes) / seconds, 3),
    }


def _server(
    policy: HFPolicy, batch: int, seed: int, warm_up: Sequence[Task], config: EnvConfig
) -> tuple[LlamaCppPolicy | None, dict[str, Any]]:
    """A llama.cpp server with `policy`'s weights and sampling settings, warmed up like the HF
    policy, and what its sync cost; or None and why it cannot serve this model."""
    try:
        start = time.perf_counter()
        server = serve_hf_policy(policy, n_parallel=batch, context=2048, seed=seed)
        sync = {"sync_kind": server.last_sync.kind, "sync_s": round(time.perf_counter() - start, 3)}
    except (ServerError, ExportError) as err:
        return None, {"skipped": str(err)}
    run_episodes(server, warm_up, config.with_(n_max=1), progress=False)
    return server, sync


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
    server, llama_cpp = _server(policy, batch, seed, tasks[:1], config)
    first_b, first_s = _run(policy, batches, config), _run(policy, singles, config)
    if server is not None:
        with server:
            runs = [_run(server, batches, config), _run(server, batches, config)]
        llama_cpp = {**_totals(runs), **llama_cpp}
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
        "llama_cpp_tokens_per_s": llama_cpp.get("tokens_per_s"),
        "llama_cpp_speedup": (
            round(llama_cpp["tokens_per_s"] / batched["tokens_per_s"], 3)
            if "tokens_per_s" in llama_cpp
            else None
        ),
        "batched": batched,
        "sequential": sequential,
        "llama_cpp": llama_cpp,
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
    }
