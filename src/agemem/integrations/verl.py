"""verl agent loops that run AgeMem's and AtomMem's episodes: `pip install "agemem[verl]"`.

Two loops are registered with verl's agent-loop registry when this module is imported (name it in
`actor_rollout_ref.rollout.agent.agent_loop_config_path`, see `configs/verl/`):

- `agemem`: AgeMem's three-stage `MemoryEnv` (env preset `paper` by default);
- `atommem`: AtomMem's chunked `AtomMemEnv` (env preset `atommem`).

Each dataset row is one task (`prepare`, below, writes the rows): its `extra_info` carries the
task as JSON and a seed. `run` plays one whole episode with agemem's own episode driver
(`run_episodes`, one task, one rollout), so the env keeps its private store and context for the
episode exactly as in agemem's trainer, with the same tool schemas (the env's stage tools). The
policy is `TokenServerPolicy` over verl's server manager (token ids in, token ids out), called from
a worker thread while the server manager's requests run on the agent loop's event loop. The
episode is scored by agemem's reward (`agemem.rewards.reward_fn`, from the episode's records).

Output: one `AgentLoopOutput` per model turn, in episode order, as step-wise GRPO trains: the
prompt is the exact context that turn saw (Summary_context and Filter_context rewrite it, so turns
are not one growing sequence), the response the turn's generated ids, all of them in the loss
(`response_mask` all 1), the logprobs the server's, and every row carries the episode's reward
(`reward_score`, with its parts in `extra_fields["reward_extra_info"]`). verl's V1 trainer
(`trainer.use_v1=true`, the default in verl 0.9) stores the rows of a session as
`{uid}_{session}_{index}` and, for GRPO, normalises the last row's reward within its prompt's
group and broadcasts that advantage to every row of the session
(`compute_advantage_for_multi_trajectories`): agemem's `step_samples`. verl's older trainer
(`trainer.use_v1=false`) pads one output per episode and cannot take a list.

Seeds: the row's `extra_info.seed` plus the session index (verl's rollout `n`) seeds the env's
id aliases and store ids as `run_episodes(seed=...)` does, so session 0 of a row replays
`run_episodes(policy, [task], seed=seed)` exactly (the contract test,
`tests/verl_contract.py`, checks it against agemem's GRPO rollout).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopBase,
    AgentLoopMetrics,
    AgentLoopOutput,
    register,
)

from agemem.env import EnvConfig, run_episodes
from agemem.env.embed_cache import cached
from agemem.episode import Episode
from agemem.memory.embed import Embedder, default_embedder
from agemem.policy.token_server import TokenServerPolicy
from agemem.rewards import RewardConfig, reward_fn
from agemem.tasks import Task

# Episodes of one worker process run in these threads (each waits on its server requests); the
# agent loops' event loop stays free. verl's default executor would cap them at cores + 4.
_EPISODE_THREADS = 256
_executor: ThreadPoolExecutor | None = None
_shared: Embedder | None = None
_lock = threading.Lock()


class _SerialEmbedder:
    """One process-wide embedder (the envs' reference embedder, cached), one call at a time:
    the episodes' threads share it."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = cached(inner)
        self.name, self.dim = inner.name, inner.dim
        self._lock = threading.Lock()

    def embed(self, texts: Any) -> np.ndarray:
        with self._lock:
            return self.inner.embed(texts)


def shared_embedder() -> Embedder:
    """This process's embedder for the envs (loaded at the first episode)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = _SerialEmbedder(default_embedder())
        return _shared


def _episode_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_EPISODE_THREADS, thread_name_prefix="agemem-episode")
        return _executor


@register("agemem")
class AgeMemAgentLoop(AgentLoopBase):
    """One AgeMem episode per dataset row (module docstring). Settings (keys of the agent loop's
    entry in `agent_loop_config_path`, besides `name` and `_target_`): `env` (an env preset),
    `env_overrides`, `reward` (a reward preset), `reward_overrides`, `reward_key` (the reward part
    GRPO trains on; `total`), `max_new_tokens` (one turn's; default `rollout.response_length`)."""

    default_env = "paper"

    def __init__(
        self,
        *args: Any,
        env: str | None = None,
        env_overrides: dict[str, Any] | None = None,
        reward: str = "agemem",
        reward_overrides: dict[str, Any] | None = None,
        reward_key: str = "total",
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.env = EnvConfig.preset(env or self.default_env).with_(**dict(env_overrides or {}))
        self.reward = RewardConfig.preset(reward).with_(**dict(reward_overrides or {}))
        self.reward_key = reward_key
        self.max_new_tokens = int(max_new_tokens or self.rollout_config.response_length)

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> list[AgentLoopOutput]:
        info = dict(kwargs.get("extra_info") or {})
        if "task" not in info:
            raise ValueError(
                "the row's extra_info has no 'task': write the dataset with "
                "`python -m agemem.integrations.verl prepare` (one task per row)"
            )
        task = Task.from_json(info["task"])
        seed = int(info.get("seed", 0)) + int(kwargs.get("session_id", 0))
        loop = asyncio.get_running_loop()
        policy = TokenServerPolicy(
            self.server_manager,
            self.tokenizer,
            loop,
            request_id=uuid4().hex,
            sampling_params=sampling_params,
            max_new_tokens=self.max_new_tokens,
        )
        start = time.perf_counter()
        episodes = await loop.run_in_executor(
            _episode_executor(),
            partial(
                run_episodes,
                policy,
                [task],
                self.env,
                k=1,
                progress=False,
                embedder=shared_embedder(),
                seed=seed,
                reward_fn=reward_fn([task], self.reward),
            ),
        )
        return episode_outputs(episodes[0], self.reward_key, time.perf_counter() - start)


@register("atommem")
class AtomMemAgentLoop(AgeMemAgentLoop):
    """AtomMem's chunked episode (`AtomMemEnv`), otherwise as `AgeMemAgentLoop`."""

    default_env = "atommem"


def episode_outputs(
    episode: Episode, reward_key: str, seconds: float = 0.0
) -> list[AgentLoopOutput]:
    """One output per model turn of a scored episode (module docstring); turns without generated
    tokens carry no loss and are left out."""
    if reward_key not in episode.reward:
        raise ValueError(
            f"episode {episode.task_id!r} has no reward {reward_key!r} (it has "
            f"{sorted(episode.reward)})"
        )
    score = float(episode.reward[reward_key])
    parts = {key: float(value) for key, value in episode.reward.items()}
    steps = [step for step in episode.steps if step.completion_ids]
    outputs = []
    for index, step in enumerate(steps):
        logprobs = step.logprobs if all(math.isfinite(x) for x in step.logprobs) else None
        last = index == len(steps) - 1
        outputs.append(
            AgentLoopOutput(
                prompt_ids=list(step.prompt_ids),
                response_ids=list(step.completion_ids),
                response_mask=[1] * len(step.completion_ids),
                response_logprobs=list(logprobs) if logprobs else None,
                reward_score=score,
                num_turns=len(step.messages) + 1,  # the context's messages and this turn
                metrics=AgentLoopMetrics(generate_sequences=seconds if last else 0.0),
                extra_fields={
                    "reward_extra_info": parts,
                    "turn": step.turn,
                    "stage": step.stage,
                    "turns": len(steps),
                },
            )
        )
    return outputs


# ---- the dataset ----------------------------------------------------------------------------


def task_rows(tasks: list[Task], agent_name: str = "agemem", seed: int = 0) -> list[dict[str, Any]]:
    """verl dataset rows, one per task: `prompt` (verl's dataset needs a chat prompt; the env
    builds the real context, this one only names the task), `agent_name`, `data_source`, and
    `extra_info` = {index, seed (seed + index), task (JSON)}."""
    return [
        {
            "data_source": f"agemem/{task.family}",
            "agent_name": agent_name,
            "prompt": [{"role": "user", "content": f"AgeMem episode {task.id}"}],
            "extra_info": {"index": i, "seed": seed + i, "task": task.to_json()},
        }
        for i, task in enumerate(tasks)
    ]


def prepare(argv: list[str] | None = None) -> Path:
    """`python -m agemem.integrations.verl prepare --source hotpotqa --split train --limit 2000
    --out data/agemem/hotpotqa-train.parquet`: a task source's split as verl rows (parquet)."""
    parser = argparse.ArgumentParser(prog="python -m agemem.integrations.verl prepare")
    parser.add_argument("--source", default="hotpotqa")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agent", default="agemem", choices=["agemem", "atommem"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import pandas as pd

    from agemem.train.curriculum import load_split

    tasks = load_split(args.source, {}, args.split, args.limit, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(task_rows(tasks, args.agent, args.seed)).to_parquet(args.out)
    print(f"{len(tasks)} {args.source} {args.split} tasks -> {args.out}")
    return args.out


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] != ["prepare"]:
        raise SystemExit("usage: python -m agemem.integrations.verl prepare --out FILE [options]")
    prepare(sys.argv[2:])
