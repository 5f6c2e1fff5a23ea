"""Step-wise GRPO: the trainer loop, top to bottom.

One step:
1. Tasks: `tasks_per_step` training tasks drawn for this step (the curriculum's phase decides
   their knobs and the env's); under several processes each rolls out its share.
2. Rollouts: `k` episodes per task with the current policy (`HFPolicy` at `temperature`, 1.0 by
   default; or, with `rollout="llama.cpp"` / `"vllm"`, an inference server handed the current
   weights first), batched through `run_episodes` in `generate` calls of at most
   `generate_batch` episodes; each episode is scored by the reward (`reward.key`; with a
   `judge` endpoint, an LLM grades the answers), Summary_context by the `summarizer` endpoint
   when one is set.
3. Advantages: each episode's reward against its group's (the k rollouts of its task), broadcast
   to every model turn of the episode (`step_samples`): one sample per turn, its prompt the exact
   context the model saw, its loss on the generated tokens only.
4. Update: `ppo_epochs` passes over the step's samples in micro-batches; the clipped-ratio loss
   with a k3 KL to the frozen reference (`grpo_loss`), token-mean over the whole step's generated
   tokens (the normaliser is the step's total, so micro-batching changes no gradient); AdamW,
   gradient clipping. The policy's and the reference's log-probs are both taken at the sampling
   temperature, the distribution the rollout recorded its logprobs in (TRL does the same).
5. Bookkeeping: metrics (JSONL, TensorBoard), held-out evaluation (every process its share of
   the tasks), checkpoints.

The reference model is the starting policy: a frozen copy for full fine-tuning, the same model
with its adapters switched off under LoRA; none when beta is 0. With beta 0, a turn whose
advantage is 0 adds exactly nothing to the loss, so it is not run through the model (its tokens
still count in the normaliser): the gradient is the one of the full batch.

Everything random in a step (its tasks, the sampling, the env's id aliases) is seeded from
(run seed, step, rank), so a run resumed from a checkpoint takes the very next step the
uninterrupted run would have taken.
"""

from __future__ import annotations

import contextlib
import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean, pstdev
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from peft import PeftModel

from agemem.env import EnvConfig, run_episodes
from agemem.env.embed_cache import cached
from agemem.episode import Episode
from agemem.memory.embed import Embedder, library_embedder
from agemem.policy.base import Policy
from agemem.policy.hf import HFPolicy
from agemem.policy.models import PRESETS as MODEL_PRESETS
from agemem.policy.models import package_file
from agemem.policy.openai import OpenAIPolicy
from agemem.policy.server import LlamaCppPolicy, WeightSyncPolicy
from agemem.progress import LoggedProgress
from agemem.rewards import RewardConfig, reward_fn
from agemem.summarize import LLMSummarizer, Summarizer
from agemem.tasks import Task
from agemem.tokens import HFTokenCounter
from agemem.train.batch import Batch, Sample, TrainSample, collate, pack_turns, step_samples
from agemem.train.checkpoint import (
    checkpoint_dir,
    generation_length,
    load_checkpoint,
    load_for_training,
    load_resumable,
    resume_point,
    save_checkpoint,
    save_final,
)
from agemem.train.config import ConfigError, Endpoint, GRPOConfig
from agemem.train.curriculum import env_config, load_split, phase_at, step_seed, task_options
from agemem.train.evaluate import Rollouts, episode_stats, held_out_on_every_rank
from agemem.train.grpo_loss import grpo_loss, token_logprobs
from agemem.train.loop import (
    StopRequest,
    accumulate,
    autocast_for,
    global_count,
    make_optimizer,
    micro_batches,
    optimizer_step,
    prefix_sharing,
    setup,
    weighted_mean,
)
from agemem.train.metrics import MetricsWriter, truncate_after
from agemem.train.worlds import (
    WORLD_BATCH,
    WORLDS,
    WorldTasks,
    step_worlds,
    world_rollout,
    world_stats,
)


@dataclass
class GRPOResult:
    final_dir: Path
    steps: int  # optimizer steps done in all (including those before a resume)
    interrupted: bool
    metrics: dict[str, Any]  # the last step's
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    model: torch.nn.Module | None = None  # this process's trained model (unwrapped)


def run_grpo(config: GRPOConfig, *, embedder: Embedder | None = None) -> GRPOResult:
    """Train as `config` says. Writes `metrics.jsonl`, `checkpoints/step-*` (every
    `run.save_every` steps, at the end and on Ctrl-C) and `final/` (the full model and
    tokenizer) under `run.out_dir`."""
    accelerator = setup(config.run)
    _check(config, accelerator)
    out = Path(config.run.out_dir)
    reward = RewardConfig.preset(config.reward.preset).with_(**config.reward.overrides)
    resume_from = resume_point(config.resume, config.run.out_dir)

    if config.tasks.source == WORLDS and embedder is None:
        embedder = cached(library_embedder())  # every world episode's store and context
    model, tokenizer = load_resumable(config.model, resume_from)
    reference = _reference(config, model, resume_from)
    optimizer, scheduler = make_optimizer(model, config.optim, config.steps * config.ppo_epochs)
    model, optimizer = accelerator.prepare(model, optimizer)
    step, last = 0, {}
    if resume_from is not None:
        trainer, state = load_checkpoint(resume_from, accelerator.process_index)
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        step, last = trainer["step"], state.get("metrics", {})

    main = accelerator.is_main_process
    writer = _writer(config, out, step) if main else None
    judge, summarizer = endpoint_services(config.judge, config.summarizer)
    services = Rollouts(config.generate_batch, judge, summarizer)
    evaluate = _evaluator(config, accelerator, model, tokenizer, reward, embedder, services)
    before = evaluate(step, writer) if step == 0 and config.eval.before else {}

    server = _rollout_server(config, accelerator, model, tokenizer)
    run = _Run(
        config,
        accelerator,
        model,
        reference,
        tokenizer,
        optimizer,
        scheduler,
        reward,
        embedder,
        server,
        judge,
        summarizer,
        WorldTasks.from_options(config.tasks.options) if config.tasks.source == WORLDS else None,
    )
    stopped = False
    closing = contextlib.closing(server) if server else contextlib.nullcontext()
    progress = LoggedProgress(disable=not (config.run.progress and main))
    with StopRequest() as stop, progress as bar, closing:
        job = bar.add_task("GRPO", total=config.steps, completed=step)
        while step < config.steps:
            last = _train_step(run, step)
            step += 1
            bar.update(job, completed=step, description=_describe(last))
            if writer and (step % config.run.log_every == 0 or step == config.steps):
                writer.write(step, last)
            if config.eval.every and step % config.eval.every == 0 and step < config.steps:
                evaluate(step, writer)
            stopped = stop.agreed(accelerator)
            every = config.run.save_every
            if stopped or step == config.steps or (every and step % every == 0):
                _checkpoint(run, step, last)
            if stopped:
                break

    final = out / "final"
    unwrapped = accelerator.unwrap_model(model)
    if main:
        save_final(unwrapped, tokenizer, out)
    after = {} if stopped else evaluate(step, writer)
    if writer:
        writer.close()
    accelerator.wait_for_everyone()
    return GRPOResult(final, step, stopped, last, before, after, unwrapped)


# ---- one step ----------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every step of one run uses."""

    config: GRPOConfig
    accelerator: Accelerator
    model: torch.nn.Module  # as prepared by the accelerator (DDP-wrapped under several processes)
    reference: torch.nn.Module | str | None
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    reward: RewardConfig
    embedder: Embedder | None
    server: WeightSyncPolicy | None  # rollout="llama.cpp"/"vllm": the rollouts' server
    judge: Policy | None = None  # the reward's LLM judge (`config.judge`)
    summarizer: Summarizer | None = None  # Summary_context's (`config.summarizer`)
    worlds: WorldTasks | None = None  # tasks.source="worlds": which worlds (`train.worlds`)


def _train_step(run: _Run, step: int) -> dict[str, Any]:
    config, accelerator, model = run.config, run.accelerator, run.model
    start = time.perf_counter()
    phase_index, phase = phase_at(config.curriculum, step)
    rollout_seed = step_seed(config.run.seed, step, 1 + accelerator.process_index)
    if run.worlds is not None:
        # 1-2. this step's worlds (this process's share), k sampled episodes of each
        worlds = step_worlds(run.worlds, config.tasks_per_step, step_seed(config.run.seed, step))
        policy = sampling_policy(
            accelerator.unwrap_model(model),
            run.tokenizer,
            run.server,
            config.temperature,
            generation_length(config.model),
            rollout_seed,
        )
        episodes = world_rollout(
            policy,
            run.worlds,
            worlds[accelerator.process_index :: accelerator.num_processes],
            run.reward,
            k=config.k,
            embedder=run.embedder,
            token_counter=HFTokenCounter(run.tokenizer),
            max_batch=config.generate_batch or WORLD_BATCH,
        )
        stats = world_stats(episodes)
    else:
        # 1. this step's tasks, in the phase's shape; this process's share
        env = env_config(config.env.preset, config.env.overrides, phase)
        tasks = load_split(
            config.tasks.source,
            task_options(config.tasks.options, phase),
            "train",
            config.tasks_per_step,
            seed=step_seed(config.run.seed, step),
        )
        mine = tasks[accelerator.process_index :: accelerator.num_processes]

        # 2. k rollouts per task with the current policy
        episodes = rollout(
            accelerator.unwrap_model(model),
            run.tokenizer,
            mine,
            env,
            run.reward,
            k=config.k,
            temperature=config.temperature,
            max_new_tokens=generation_length(config.model),
            seed=rollout_seed,
            embedder=run.embedder,
            server=run.server,
            max_batch=config.generate_batch,
            judge=run.judge,
            summarizer=run.summarizer,
        )
        stats = episode_stats(episodes, mine)
    if run.server:
        run.server.release()  # its memory back for the update; the next sync restarts it
    rollout_s = time.perf_counter() - start

    # 3. group advantages, broadcast to every turn
    samples = step_samples(
        episodes,
        reward_key=config.reward.key,
        scale=config.advantage_scale,
        eps=config.advantage_eps,
    )

    # 4. the policy update
    model.train()
    update = grpo_update(run, samples)

    # 5. what happened, over all processes
    rollouts = _gathered_stats(accelerator, episodes, stats, samples, config.reward.key)
    update_s = time.perf_counter() - start - rollout_s
    generated = sum(s.n_generated for s in samples)
    return {
        "phase": phase.name if phase else "default",
        "phase_index": phase_index,
        **rollouts,
        **update,
        "rollout_s": rollout_s,
        # the weights handed to the rollout server (files written, server restarted): part of
        # rollout_s
        **({"rollout/sync_s": run.server.last_sync.total_s} if run.server else {}),
        "update_s": update_s,
        "step_s": time.perf_counter() - start,
        # throughput of this process's share (generated tokens sampled / trained per second)
        "rollout/tokens_per_s": generated / rollout_s,
        "update/tokens_per_s": generated * config.ppo_epochs / update_s,
    }


def rollout(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Sequence[Task],
    env: EnvConfig,
    reward: RewardConfig,
    *,
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    embedder: Embedder | None = None,
    server: WeightSyncPolicy | None = None,
    max_batch: int | None = None,
    judge: Policy | None = None,
    summarizer: Summarizer | None = None,
) -> list[Episode]:
    """`k` scored episodes per task, sampled from `model` (left in eval mode): by an `HFPolicy`
    over it, in lockstep with at most `max_batch` episodes per `act` call, or by `server` (built
    with these sampling settings), handed `model`'s weights and reseeded first, the episodes
    streamed to it (`run_episodes(in_flight=...)`: at most `max_batch` and the server's
    concurrency at once). `judge` grades the answers for the reward, `summarizer` serves
    Summary_context (None: the env's default)."""
    policy = sampling_policy(model, tokenizer, server, temperature, max_new_tokens, seed)
    in_flight = None
    if server is not None:
        in_flight = min(server.concurrency, max_batch or server.concurrency)
    return run_episodes(
        policy,
        tasks,
        env,
        k=k,
        progress=False,
        embedder=embedder,
        seed=seed,
        reward_fn=reward_fn(tasks, reward, judge=judge),
        summarizer=summarizer,
        max_batch=max_batch,
        in_flight=in_flight,
    )


def sampling_policy(
    model: torch.nn.Module,
    tokenizer: Any,
    server: WeightSyncPolicy | None,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> HFPolicy | WeightSyncPolicy:
    """What samples a step's rollouts: an `HFPolicy` over `model`, or `server` handed
    `model`'s weights and reseeded."""
    if server is None:
        return HFPolicy(
            model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed
        )
    server.sync_weights(model)
    server.reseed(seed)
    return server


def grpo_update(run: _Run, samples: Sequence[TrainSample]) -> dict[str, float]:
    """`ppo_epochs` optimizer steps over `samples` (this process's turns of the step)."""
    config, accelerator, model = run.config, run.accelerator, run.model
    pad_id = run.tokenizer.pad_token_id or 0
    token_mean = config.aggregation == "token-mean"
    count = sum(len(s.completion_ids) for s in samples) if token_mean else len(samples)
    normalizer = global_count(accelerator, count) / accelerator.num_processes
    trained = list(samples)
    if config.beta == 0:
        # Advantage 0 and no KL: the turn's loss is exactly 0. One such turn is kept when
        # nothing else is left, so that every process joins the gradient all-reduce.
        trained = [s for s in samples if s.advantage != 0] or trained[:1]
    # token-mean weighs every generated token alike, so turns sharing a prefix can share a row
    rows_in = pack_turns(trained) if token_mean else trained

    recompute = config.old_logprobs == "recompute"
    olds: list[torch.Tensor] = []  # the first pass's log-probs per micro-batch ("recompute")

    def loss_of(chunk: list[Sample]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate(chunk, pad_id=pad_id).to(accelerator.device)
        index = len(losses) % len(chunks)
        old = olds[index] if recompute and len(olds) > index else None
        loss, metrics, logp = batch_loss(run, batch, normalizer, old, recompute)
        if recompute and old is None:
            olds.append(logp)
        losses.append(float(loss.detach()))
        return loss, metrics

    rows: list[dict[str, float]] = []
    losses: list[float] = []  # each micro-batch's share of the step's loss
    chunks = micro_batches(rows_in, config.micro_batch_size, config.micro_batch_tokens)
    for _ in range(config.ppo_epochs):
        step_rows = accumulate(accelerator, model, chunks, loss_of)
        stepped = optimizer_step(
            accelerator, model, run.optimizer, run.scheduler, config.optim.grad_clip
        )
        rows += [{**r, **stepped} for r in step_rows]
    rows = gather_object(rows) if accelerator.num_processes > 1 else rows
    reference_s = sum(r.pop("reference_s", 0.0) for r in rows)
    metrics = weighted_mean(rows)
    # the reference model's passes (KL), over every process's micro-batches: part of update_s
    metrics["reference_s"] = reference_s / accelerator.num_processes
    # DDP averages the processes' gradients: the step's loss is their losses' mean
    summed = global_count(accelerator, sum(losses)) / accelerator.num_processes
    metrics["loss"] = summed / config.ppo_epochs
    metrics["trained_turns"] = global_count(accelerator, len(trained))
    metrics["trained_rows"] = global_count(accelerator, len(rows_in))
    # every token through the model (prompts included), per pass
    metrics["forward_tokens"] = global_count(accelerator, sum(r.length for r in rows_in))
    return {f"update/{k}": v for k, v in metrics.items()}


def batch_loss(
    run: _Run,
    batch: Batch,
    normalizer: float,
    old: torch.Tensor | None = None,
    recompute: bool = False,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """The GRPO loss, metrics and (detached) policy log-probs of one collated micro-batch,
    `normalizer` its divisor. Old log-probs: `old` when given, else with `recompute` this pass's
    own log-probs, detached (the first pass of a step: ratio 1, the on-policy gradient), else the
    sampler's (`batch.old_logprobs`). The policy's and the reference's forward passes run under
    the run's precision (`autocast_for`); their log-probs and the loss are float32 either way."""
    config = run.config
    share = prefix_sharing(config.run, config.model)
    with autocast_for(config.run.precision, batch.input_ids.device):
        logp = token_logprobs(
            run.model,
            batch.input_ids,
            batch.attention_mask,
            batch.loss_mask,
            config.temperature,
            share_prefix=share,
        )
        start = time.perf_counter()
        ref = _reference_logprobs(run, batch) if config.beta else None
        reference_s = time.perf_counter() - start
    if old is None:
        old = logp.detach() if recompute else batch.old_logprobs
    loss, metrics = grpo_loss(
        logp,
        old,
        ref,
        batch.advantages,
        batch.loss_mask,
        clip_low=config.clip_low,
        clip_high=config.clip_high,
        beta=config.beta,
        aggregation=config.aggregation,
        normalizer=normalizer,
    )
    return loss, {**metrics, "reference_s": reference_s}, logp.detach()


def _reference_logprobs(run: _Run, batch: Batch) -> torch.Tensor:
    """The frozen reference's log-probs of the batch's generated tokens, at the sampling
    temperature like the policy's."""
    args = (batch.input_ids, batch.attention_mask, batch.loss_mask, run.config.temperature)
    share = prefix_sharing(run.config.run, run.config.model)
    with torch.no_grad():
        if run.reference == "adapters-off":
            peft_model = run.accelerator.unwrap_model(run.model)
            with peft_model.disable_adapter():
                return token_logprobs(peft_model, *args, share_prefix=share)
        assert isinstance(run.reference, torch.nn.Module)
        return token_logprobs(run.reference, *args, share_prefix=share)


def _gathered_stats(
    accelerator: Accelerator,
    episodes: Sequence[Episode],
    stats: dict[str, float],
    samples: Sequence[TrainSample],
    key: str,
) -> dict[str, float]:
    """Rollout statistics over every process's episodes (`stats`: this process's means)."""
    rewards = [ep.reward[key] for ep in episodes]
    groups: dict[str, list[float]] = {}
    for ep, r in zip(episodes, rewards, strict=True):
        groups.setdefault(ep.group_id, []).append(r)
    local = {
        "n": float(len(episodes)),
        "stats": stats,
        "rewards": rewards,
        "flat_groups": float(sum(len(set(g)) == 1 for g in groups.values())),
        "groups": float(len(groups)),
        "turns": float(len(samples)),
        "tokens": float(sum(len(s.completion_ids) for s in samples)),
    }
    parts = gather_object([local]) if accelerator.num_processes > 1 else [local]
    n = sum(p["n"] for p in parts)
    all_rewards = [r for p in parts for r in p["rewards"]]
    keys = dict.fromkeys(k for p in parts for k in p["stats"])
    stats = {k: sum(p["stats"].get(k, 0.0) * p["n"] for p in parts) / n for k in keys}
    return {
        **{f"rollout/{k}": v for k, v in stats.items()},
        "rollout/reward_mean": fmean(all_rewards),
        "rollout/reward_std": pstdev(all_rewards),
        "rollout/flat_groups": sum(p["flat_groups"] for p in parts)
        / sum(p["groups"] for p in parts),
        "rollout/turns": sum(p["turns"] for p in parts),
        "rollout/generated_tokens": sum(p["tokens"] for p in parts),
    }


def _describe(metrics: dict[str, Any]) -> str:
    reward = metrics.get("rollout/reward_mean", 0.0)
    success = metrics.get("rollout/success", 0.0)
    return f"GRPO reward {reward:+.2f} success {success:.2f}"


# ---- setup -------------------------------------------------------------------------------------


def _check(config: GRPOConfig, accelerator: Accelerator) -> None:
    if config.tasks.source == WORLDS:
        try:
            WorldTasks.from_options(config.tasks.options)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if config.eval.n_tasks:
            raise ConfigError(
                "GRPO on the worlds evaluates with `agemem eval --benchmark babyai --method "
                "agemem --policy DIR` after the run: set eval.n_tasks=0"
            )
    if config.model.name == "tiny":
        raise ConfigError(
            "GRPO needs a model that knows the protocol: run SFT first and set model.name to "
            "its final/ directory (e.g. runs/quickstart/sft/final)"
        )
    if config.tasks_per_step < accelerator.num_processes:
        raise ConfigError(
            f"tasks_per_step={config.tasks_per_step} leaves some of the "
            f"{accelerator.num_processes} processes without a task; raise it"
        )
    if config.rollout != "hf" and config.old_logprobs != "recompute":
        raise ConfigError(
            f'rollout="{config.rollout}" records no logprobs: set old_logprobs="recompute" '
            "(the default)"
        )
    urls = config.rollout_server.base_urls
    if config.rollout == "vllm" and len(urls) < accelerator.num_processes:
        raise ConfigError(
            f'rollout="vllm" needs one server per process: rollout_server.base_urls has '
            f"{len(urls)} for {accelerator.num_processes} processes "
            '(e.g. rollout_server.base_urls=["http://localhost:8000"])'
        )
    reward = RewardConfig.preset(config.reward.preset).with_(**config.reward.overrides)
    if config.judge is None and (reward.task_metric == "judge" or reward.storage_judge == "llm"):
        raise ConfigError(
            f"reward {reward.name!r} grades with an LLM judge: set judge.base_url and "
            "judge.model (an OpenAI-compatible server)"
        )


def _reference(
    config: GRPOConfig, model: torch.nn.Module, resume_from: Path | None
) -> torch.nn.Module | str | None:
    """The KL anchor: the starting policy (see the module docstring)."""
    if config.beta == 0:
        return None
    if isinstance(model, PeftModel):
        return "adapters-off"
    if resume_from is None:
        frozen = copy.deepcopy(model)
    else:
        frozen, _ = load_for_training(config.model)  # the start, not the checkpoint
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen.eval()


def _rollout_server(
    config: GRPOConfig, accelerator: Accelerator, model: torch.nn.Module, tokenizer: Any
) -> WeightSyncPolicy | None:
    """The llama.cpp server of `rollout="llama.cpp"` (None for "hf"), one per process: a slot per
    episode of this process's share, up to 16, each as long as the model's context window (a
    prompt beyond it fails clearly instead of being cut), its base the shipped SmolLM2 GGUF
    (served as is when the trainer's base is exactly it, else the template of the base's export).
    It starts at the first step's sync; its log goes to `<out_dir>/rollout-server/`."""
    if config.rollout == "hf":
        return None
    if config.rollout == "vllm":
        return _vllm_server(config, accelerator, tokenizer)
    episodes = -(-config.tasks_per_step // accelerator.num_processes) * config.k
    window = accelerator.unwrap_model(model).config.max_position_embeddings
    rank = f"-{accelerator.process_index}" if accelerator.num_processes > 1 else ""
    return LlamaCppPolicy(
        tokenizer,
        package_file(MODEL_PRESETS["smollm2-135m"].source),
        n_parallel=min(16, episodes),
        context=window,
        max_new_tokens=generation_length(config.model),
        temperature=config.temperature,
        seed=config.run.seed,
        work_dir=Path(config.run.out_dir) / f"rollout-server{rank}",
    )


def _vllm_server(config: GRPOConfig, accelerator: Accelerator, tokenizer: Any) -> WeightSyncPolicy:
    """This process's vLLM server of `rollout="vllm"` (`rollout_server.base_urls[rank]`), its
    adapters written under `rollout_server.adapter_dir` (default `<out_dir>/rollout-adapters`),
    one subdirectory per process."""
    from agemem.policy.vllm import VLLMPolicy  # only its HTTP client: no vLLM install needed

    settings, rank = config.rollout_server, accelerator.process_index
    root = Path(settings.adapter_dir or Path(config.run.out_dir) / "rollout-adapters")
    return VLLMPolicy(
        tokenizer,
        settings.base_urls[rank],
        adapter_dir=root / f"rank-{rank}",
        max_new_tokens=generation_length(config.model),
        temperature=config.temperature,
        seed=config.run.seed,
        concurrency=settings.concurrency,
        timeout=settings.timeout_s,
    )


# what each role writes: a grade is one number; LLMSummarizer asks for at most 200 words
_ENDPOINT_TOKENS = {"judge": 8, "summarizer": 400}


def endpoint_policy(endpoint: Endpoint, role: str) -> OpenAIPolicy:
    """The `OpenAIPolicy` an `Endpoint` describes, for `role` ("judge" or "summarizer": its
    default response length)."""
    return OpenAIPolicy(
        endpoint.base_url,
        endpoint.model,
        api_key=os.environ.get(endpoint.api_key_env),
        timeout=endpoint.timeout_s,
        temperature=endpoint.temperature,
        max_tokens=endpoint.max_tokens or _ENDPOINT_TOKENS[role],
        logprobs=False,
        concurrency=endpoint.concurrency,
    )


def endpoint_services(
    judge: Endpoint | None, summarizer: Endpoint | None
) -> tuple[Policy | None, Summarizer | None]:
    """(the reward's judge, Summary_context's summarizer) over their endpoints (None: unset)."""
    return (
        endpoint_policy(judge, "judge") if judge else None,
        LLMSummarizer(endpoint_policy(summarizer, "summarizer")) if summarizer else None,
    )


def _writer(config: GRPOConfig, out: Path, step: int) -> MetricsWriter:
    if step:
        truncate_after(out / "metrics.jsonl", step)  # the resumed run writes later steps again
    return MetricsWriter(out, tensorboard=config.run.tensorboard)


def _evaluator(
    config: GRPOConfig,
    accelerator: Accelerator,
    model: torch.nn.Module,
    tokenizer: Any,
    reward: RewardConfig,
    embedder: Embedder | None,
    services: Rollouts,
) -> Any:
    """A function (step, writer) -> held-out scores in the run's base env, without curriculum
    changes: every process runs its share of the tasks (`held_out_on_every_rank`) and gets the
    scores over all of them; the main process writes them."""
    env = env_config(config.env.preset, config.env.overrides)

    def evaluate(step: int, writer: MetricsWriter | None) -> dict[str, float]:
        scores = held_out_on_every_rank(
            accelerator,
            model,
            tokenizer,
            config.tasks,
            config.eval,
            env,
            reward,
            max_new_tokens=generation_length(config.model),
            embedder=embedder,
            rollouts=services,
        )
        if writer and scores:
            writer.write(step, {f"eval/{k}": v for k, v in scores.items()})
        accelerator.wait_for_everyone()
        return scores

    return evaluate


def _checkpoint(run: _Run, step: int, metrics: dict[str, Any]) -> Path:
    return save_checkpoint(
        checkpoint_dir(run.config.run.out_dir, step),
        model=run.accelerator.unwrap_model(run.model),
        tokenizer=run.tokenizer,
        trainer={
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "step": step,
        },
        state={"step": step, "metrics": metrics, "config": run.config.model_dump(mode="json")},
        is_main=run.accelerator.is_main_process,
        rank=run.accelerator.process_index,
    )
