"""The verl contract, run by tests/test_verl_contract.py in the verl environment (`.venv/verl`):
`python tests/verl_contract.py --json OUT`.

The same seeded episodes are played twice on one real local model:
1. by agemem's own GRPO rollout (`agemem.train.grpo.rollout`, an `HFPolicy`), one episode per
   seed, their turns turned into training samples by `step_samples` (both episodes in one group);
2. by verl: the `agemem` agent loop (`agemem.integrations.verl`) of the example config
   (configs/verl/: composed by hydra, its agent-loop file loaded as verl's worker loads it, on
   this run's env and turn length), instantiated with `hydra.utils.instantiate` as verl's
   agent-loop worker does, `await loop.run(sampling_params, **row)` on the row that `prepare`
   writes and verl's `RLHFDataset` reads back, one session per seed. Its server manager is the
   one stand-in: a subclass of verl's `LLMServerClient` whose `generate` (verl's signature,
   checked) answers from the same local model (`HFPolicy.generate` on the prompt ids, seeded
   as agemem's rollout) instead of GPU servers.

Compared, turn by turn: the rows (one per model turn, in order), prompt ids (the exact context),
response ids, response masks (every generated token in the loss), logprobs, rewards (every row
the episode's, with its parts); the same rows as verl's V1 trainer stores them
(`AgentLoopOutput.as_dict`: prompts, responses, response_mask, rm_scores, rollout_log_probs);
the prompt ids and sampling params that reached the server manager; and the GRPO advantages:
verl's (`compute_advantage_for_multi_trajectories` over the rows as the trainer keys them,
`{uid}_{session}_{index}`) against agemem's (`step_samples` at verl's eps). A self-check shows
that the comparison fails on rows with one token, one mask bit, one reward or one row changed.
Exit status 0 when everything matches, 1 otherwise; the JSON says what was compared.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import inspect
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopOutput,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)
from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import AdvantageEstimator
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.import_utils import resolve_config_path
from verl.workers.rollout.llm_server import LLMServerClient
from verl.workers.rollout.replica import TokenOutput

import agemem.integrations.verl as integration
from agemem.env import EnvConfig
from agemem.episode import Episode
from agemem.memory.embed import reference_embedder
from agemem.policy.hf import HFPolicy
from agemem.policy.models import load_model
from agemem.rewards import RewardConfig
from agemem.tasks import Task
from agemem.train.batch import TrainSample, step_samples
from agemem.train.grpo import rollout

VERL_GRPO_EPS = 1e-6  # compute_grpo_outcome_advantage's epsilon
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "verl"
EXAMPLE = "agemem-qwen2.5-7b-hotpotqa"


class LocalHFServerManager(LLMServerClient):
    """verl's server manager interface over the local model: the only stand-in (it replaces the
    GPU inference servers). Each request is one `HFPolicy.generate` call on the prompt ids, so a
    policy seeded as agemem's rollout samples the same stream; the sampling params must be the
    policy's (temperature, max_tokens, stop strings), else the request fails."""

    def __init__(self, config: Any, policy: HFPolicy) -> None:
        super().__init__(config, load_balancer_handle=None)
        self.policy = policy
        self.requests: list[dict[str, Any]] = []

    async def generate(
        self,
        request_id,
        *,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TokenOutput:
        policy = self.policy
        wanted = {
            "temperature": policy.temperature,
            "max_tokens": policy.max_new_tokens,
            "stop": list(policy.stop),
        }
        got = {key: sampling_params.get(key) for key in wanted}
        if got != wanted:
            raise ValueError(f"sampling params {got} are not the policy's {wanted}")
        self.requests.append(
            {"request_id": request_id, "prompt_ids": list(prompt_ids), "params": sampling_params}
        )
        turn = (await asyncio.to_thread(policy.generate, [list(prompt_ids)]))[0]
        return TokenOutput(
            token_ids=turn.completion_ids,
            log_probs=turn.logprobs,
            stop_reason="completed",
            extra_fields={"global_steps": 0},
        )


def example_config(response_length: int) -> Any:
    """The example trainer config (configs/verl/), composed by hydra as verl's entry point
    composes it, with this run's turn length."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(
            config_name=EXAMPLE, overrides=[f"data.max_response_length={response_length}"]
        )


def agent_loop_entries(config: Any) -> dict[str, Any]:
    """The agent loops of the config's `agent_loop_config_path`, as verl's agent-loop worker
    loads them into its registry."""
    path = resolve_config_path(config.actor_rollout_ref.rollout.agent.agent_loop_config_path)
    return {entry.name: entry for entry in OmegaConf.load(path)}


def check_example(config: Any, entries: dict[str, Any]) -> list[str]:
    """The example config as verl reads it: the rollout section validates as verl's
    `RolloutConfig`, GRPO on the V1 trainer (one row per turn), the agent loops' targets are the
    classes the registry holds."""
    problems = []
    rollout_config = omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
    if rollout_config.n != 8 or rollout_config.agent.default_agent_loop != "agemem":
        problems.append("the example's rollout is not K=8 episodes of the agemem loop")
    if config.algorithm.adv_estimator != "grpo" or not config.trainer.use_v1:
        problems.append("the example does not run GRPO on verl's V1 trainer")
    for name, entry in entries.items():
        if entry._target_ != _agent_loop_registry[name]["_target_"]:
            problems.append(f"agent loop {name}: {entry._target_} is not the registered class")
    return problems


def sampling_params(temperature: float) -> dict[str, Any]:
    """What verl's agent-loop worker hands every agent loop (rollout settings)."""
    return {
        "temperature": temperature,
        "top_p": 1.0,
        "top_k": -1,
        "repetition_penalty": 1.0,
        "logprobs": True,
    }


# ---- the comparison ---------------------------------------------------------------------------


def compare(
    episode: Episode, samples: list[TrainSample], rows: list[AgentLoopOutput], key: str
) -> list[str]:
    """Every difference between agemem's samples of one episode and verl's rows for it."""
    problems: list[str] = []
    if len(rows) != len(samples):
        problems.append(f"{len(rows)} rows for {len(samples)} model turns")
    for i, (sample, row) in enumerate(zip(samples, rows, strict=False)):
        where = f"row {i}"
        if row.prompt_ids != sample.prompt_ids:
            problems.append(f"{where}: prompt ids differ")
        if row.response_ids != sample.completion_ids:
            problems.append(f"{where}: response ids differ")
        if row.response_mask != [1] * len(sample.completion_ids):
            problems.append(f"{where}: response mask is not 1 on every generated token")
        if row.response_logprobs is None or len(row.response_logprobs) != len(sample.old_logprobs):
            problems.append(f"{where}: logprobs missing or of another length")
        elif (
            max(
                (
                    abs(a - b)
                    for a, b in zip(row.response_logprobs, sample.old_logprobs, strict=True)
                ),
                default=0.0,
            )
            > 1e-6
        ):
            problems.append(f"{where}: logprobs differ")
        if row.reward_score != episode.reward[key]:
            problems.append(f"{where}: reward {row.reward_score} != {episode.reward[key]}")
        if row.extra_fields.get("reward_extra_info") != episode.reward:
            problems.append(f"{where}: reward parts differ")
        stored = row.as_dict()  # what verl's V1 trainer puts in its TransferQueue
        if stored["prompts"].tolist() != sample.prompt_ids:
            problems.append(f"{where}: stored prompts differ")
        if stored["responses"].tolist() != sample.completion_ids:
            problems.append(f"{where}: stored responses differ")
        if stored["response_mask"].tolist() != [1] * len(sample.completion_ids):
            problems.append(f"{where}: stored response_mask differs")
        if stored["rollout_log_probs"].tolist() != float32(sample.old_logprobs):
            problems.append(f"{where}: stored rollout_log_probs differ")
        scores = [0.0] * (len(sample.completion_ids) - 1) + [float(episode.reward[key])]
        if stored["rm_scores"].tolist() != float32(scores):
            problems.append(f"{where}: stored rm_scores are not the reward on the last token")
    return problems


def float32(values: list[float]) -> list[float]:
    """The float32 values verl stores."""
    return torch.tensor(values, dtype=torch.float32).tolist()


def verl_advantages(sessions: list[list[AgentLoopOutput]]) -> list[float]:
    """verl's GRPO advantage of each row, as its V1 trainer computes it (one prompt, one
    session per rollout), in session then row order."""
    keys, masks, scores = [], [], []
    for session, rows in enumerate(sessions):
        for index, row in enumerate(rows):
            stored = row.as_dict()
            keys.append(f"uid-0_{session}_{index}")
            masks.append(stored["response_mask"])
            scores.append(stored["rm_scores"])
    width = max(len(m) for m in masks)
    pad = [torch.nn.functional.pad(t, (0, width - len(t))) for t in masks]
    rewards = [torch.nn.functional.pad(t, (0, width - len(t))) for t in scores]
    data = DataProto.from_dict(
        tensors={"response_mask": torch.stack(pad), "token_level_rewards": torch.stack(rewards)},
        non_tensors={"uid": np.array(["uid-0"] * len(keys), dtype=object)},
    )
    out = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator=AdvantageEstimator.GRPO, num_repeat=len(sessions)
    )
    return [float(a[0]) for a in out.batch["advantages"]]


def self_check(episode: Episode, samples: list[TrainSample], rows: list[AgentLoopOutput], key: str):
    """The comparison must fail on rows that differ in one token, one mask bit, one reward, or
    by one row."""
    tampered = []
    changed = copy.deepcopy(rows)
    changed[-1].response_ids[0] += 1
    tampered.append(("a token id", changed))
    changed = copy.deepcopy(rows)
    changed[0].response_mask[-1] = 0
    tampered.append(("a mask bit", changed))
    changed = copy.deepcopy(rows)
    changed[0].reward_score = (changed[0].reward_score or 0.0) + 0.5
    tampered.append(("a reward", changed))
    tampered.append(("a missing row", copy.deepcopy(rows[:-1])))
    return {what: bool(compare(episode, samples, bad, key)) for what, bad in tampered}


# ---- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-agemem")
    parser.add_argument("--env", default="synthetic")
    parser.add_argument("--agent", default="agemem", choices=["agemem", "atommem"])
    parser.add_argument("--reward", default="agemem")
    parser.add_argument("--task-seed", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    model, tokenizer = load_model(args.model)
    env = EnvConfig.preset(args.env)
    reward = RewardConfig.preset(args.reward)
    config = example_config(response_length=args.max_new_tokens)
    key = "total"

    # 0. the dataset: one synthetic task written by `prepare`, read back by verl's dataset
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.parquet"
        integration.prepare(
            ["--source", "synthetic", "--limit", "1", "--seed", str(args.task_seed),
             "--agent", args.agent, "--out", str(path)]
        )  # fmt: skip
        item = RLHFDataset(str(path), tokenizer, config.data)[0]
    row = {k: v for k, v in item.items() if not isinstance(v, torch.Tensor)}
    task = Task.from_json(row["extra_info"]["task"])
    seeds = [row["extra_info"]["seed"] + session for session in range(args.sessions)]

    # 1. agemem's GRPO rollout: one seeded episode per session, all in one GRPO group
    ours = []
    for seed in seeds:
        (episode,) = rollout(
            model, tokenizer, [task], env, reward, k=1, temperature=args.temperature,
            max_new_tokens=args.max_new_tokens, seed=seed, embedder=reference_embedder(),
        )  # fmt: skip
        episode.group_id = "uid-0"
        ours.append(episode)
    samples = step_samples(ours, reward_key=key)
    per_episode, at = [], 0
    for episode in ours:
        per_episode.append(samples[at : at + len(episode.steps)])
        at += len(episode.steps)
    ours_s = time.perf_counter() - start

    # 2. verl: the example's agent loop, one session per seed, on the dataset's row
    entries = agent_loop_entries(config)
    # the example's loop, on this run's env and reward (the example's: paper, agemem)
    entry = OmegaConf.merge(entries[args.agent], {"env": args.env, "reward": args.reward})
    sessions, servers = [], []
    for session, seed in enumerate(seeds):
        server = LocalHFServerManager(
            config,
            HFPolicy(
                model, tokenizer, max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, seed=seed,
            ),
        )  # fmt: skip
        agent_loop = hydra.utils.instantiate(
            config=entry,
            trainer_config=DictConfigWrap(config=config),
            server_manager=server,
            tokenizer=tokenizer,
            processor=None,
            hf_model_type=getattr(model.config, "model_type", None),
            dataset_cls=RLHFDataset,
            data_config=DictConfigWrap(config.data),
            tools=ToolListWrap([]),
        )
        # what verl's V1 agent-loop worker passes: the row's fields but the agent's name, the
        # group's uid, the session and the step
        kwargs = {k: v for k, v in row.items() if k != "agent_name"}
        kwargs.update(uid="uid-0", session_id=session, global_steps=0)
        rows = asyncio.run(agent_loop.run(sampling_params(args.temperature), **kwargs))
        sessions.append(rows)
        servers.append(server)
    verl_s = time.perf_counter() - start - ours_s

    # 3. the comparison
    problems = check_example(config, entries)
    base = set(inspect.signature(LLMServerClient.generate).parameters)
    if not base <= set(inspect.signature(LocalHFServerManager.generate).parameters):
        problems.append("the stand-in's generate does not take verl's generate parameters")
    if (
        type(agent_loop).__name__
        != {"agemem": "AgeMemAgentLoop", "atommem": "AtomMemAgentLoop"}[args.agent]
    ):
        problems.append(f"the registry gave {type(agent_loop).__name__}")
    for session, (episode, mine, rows, server) in enumerate(
        zip(ours, per_episode, sessions, servers, strict=True)
    ):
        found = compare(episode, mine, rows, key)
        problems += [f"session {session}: {p}" for p in found]
        sent = [r["prompt_ids"] for r in server.requests]
        if sent != [s.prompt_ids for s in mine]:
            problems.append(f"session {session}: the server manager got other prompts")
        if any(
            not r["params"].get("include_stop_str_in_output") or r["params"]["top_k"] != -1
            for r in server.requests
        ):
            problems.append(f"session {session}: verl's sampling params were not passed on")
    # GRPO: (r - mean) / (std + eps) per task group, std with K-1, in both; eps is agemem's 1e-4
    # and verl's 1e-6 (it matters when a group's rewards are close), so verl's advantages are
    # checked against agemem's `step_samples` at verl's eps.
    ours_adv = [s.advantage for s in samples]
    expected = [s.advantage for s in step_samples(ours, reward_key=key, eps=VERL_GRPO_EPS)]
    if len(sessions) == 1:
        # A group of one: agemem gives advantage 0 (no comparison), verl's GRPO takes mean 0 and
        # std 1 there, so its advantage is the raw reward. Checked as such.
        expected = [float(ours[0].reward[key]) / (1 + VERL_GRPO_EPS)] * len(ours_adv)
    verl_adv = verl_advantages(sessions)
    # verl holds rewards in float32 (rm_scores): within 1e-4, where two rewards differ by ~5e-4
    adv_close = len(expected) == len(verl_adv) and all(
        math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
        for a, b in zip(expected, verl_adv, strict=True)
    )
    if not adv_close:
        problems.append(f"advantages differ: agemem {expected} verl {verl_adv}")
    failures_caught = self_check(ours[0], per_episode[0], sessions[0], key)
    if not all(failures_caught.values()):
        problems.append(f"the comparison misses a difference: {failures_caught}")

    summary = {
        "model": args.model,
        "env": args.env,
        "agent_loop": type(agent_loop).__name__,
        "task": task.id,
        "seeds": seeds,
        "turns": [len(rows) for rows in sessions],
        "stages": [sorted({r.extra_fields["stage"] for r in rows}) for rows in sessions],
        "generated_tokens": [sum(len(r.response_ids) for r in rows) for rows in sessions],
        "rewards": [episode.reward[key] for episode in ours],
        "advantages_agemem": sorted(set(round(a, 6) for a in ours_adv)),
        "advantages_agemem_at_verl_eps": sorted(set(round(a, 6) for a in expected)),
        "advantages_verl": sorted(set(round(a, 6) for a in verl_adv)),
        "self_check_catches": failures_caught,
        "compared": [
            "rows per episode (one per model turn, in order)",
            "prompt ids",
            "response ids",
            "response masks",
            "logprobs",
            "rewards and reward parts on every row",
            "AgentLoopOutput.as_dict fields (prompts, responses, response_mask, rm_scores)",
            "prompt ids and sampling params at the server manager",
            "GRPO advantages (verl's multi-trajectory GRPO vs agemem's step_samples at eps 1e-6)",
            "the example config as verl composes it (RolloutConfig, GRPO on V1, loop targets)",
        ],
        "agemem_rollout_s": round(ours_s, 1),
        "verl_agent_loop_s": round(verl_s, 1),
        "problems": problems,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
