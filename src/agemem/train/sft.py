"""SFT warm start (AtomMem's recipe): imitate good trajectories, one sample per model turn.

Data: saved episodes (any JSONL from `save_episodes`) or the scripted oracle run on training
tasks. Episodes whose reward (`reward.key`) is below `min_reward` are dropped. Every turn of a
kept episode becomes a sample: the prompt is the exact context the model saw, tokenised as the
policy tokenises it (`HFPolicy.encode_prompt`); the completion is the turn's text plus EOS, and
only completion tokens are in the loss (token mean over the optimizer step).

The `tiny` model is built here, its vocabulary read from a pilot run of the oracle (every message,
observation and output of a few episodes, so tool observations tokenise without `<unk>`) and the
task source's texts; the oracle data is then produced with the tiny tokenizer's token counts.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from agemem.env import EnvConfig, alias_vocabulary, run_episodes, system_prompt
from agemem.env.oracle import Oracle
from agemem.episode import Episode, load_episodes, save_episodes
from agemem.memory.embed import Embedder, library_embedder
from agemem.policy.hf import HFPolicy
from agemem.progress import LoggedProgress
from agemem.rewards import RewardConfig, reward_fn
from agemem.tasks import Task
from agemem.tokens import HFTokenCounter
from agemem.train.batch import PackedSample, Sample, TrainSample, collate, pack_turns
from agemem.train.checkpoint import (
    checkpoint_dir,
    generation_length,
    load_checkpoint,
    load_resumable,
    resume_point,
    save_checkpoint,
    save_final,
)
from agemem.train.config import Precision, SFTConfig
from agemem.train.curriculum import env_config, load_split
from agemem.train.evaluate import Rollouts, held_out_on_every_rank
from agemem.train.grpo_loss import token_logprobs
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
)
from agemem.train.metrics import MetricsWriter, truncate_after
from agemem.train.worlds import WORLDS, WorldTasks

log = logging.getLogger(__name__)
PILOT_TASKS = 32  # oracle episodes read for the tiny vocabulary (observations, outputs)


@dataclass
class SFTResult:
    final_dir: Path
    steps: int
    interrupted: bool
    data: dict[str, float]  # episodes read/kept, samples, tokens
    metrics: dict[str, float]  # the last step's
    eval: dict[str, float] = field(default_factory=dict)


# ---- data --------------------------------------------------------------------------------------


def keep_episodes(
    episodes: Sequence[Episode], min_reward: float | None, key: str = "total"
) -> list[Episode]:
    """Episodes whose `reward[key]` is >= `min_reward` (all when None)."""
    if min_reward is None:
        return list(episodes)
    missing = [ep.task_id for ep in episodes if key not in ep.reward]
    if missing:
        raise ValueError(
            f"{len(missing)} episode(s) have no reward {key!r} (e.g. {missing[0]!r}); score them "
            "with a reward_fn, or set min_reward=None to keep every episode"
        )
    return [ep for ep in episodes if ep.reward[key] >= min_reward]


def sft_samples(episodes: Sequence[Episode], policy: HFPolicy) -> list[TrainSample]:
    """One sample per turn: the policy's prompt ids for the turn's context, the turn's text + EOS.

    Only tag-protocol turns are learnable this way; a turn whose calls came as native tool calls
    (format "openai") has them outside its text, and is an error."""
    tokenizer = policy.tokenizer
    eos = tokenizer.eos_token_id
    samples = []
    for ep in episodes:
        for step in ep.steps:
            if step.actions.format == "openai":
                raise ValueError(
                    f"episode {ep.task_id!r} turn {step.turn} used native tool calls; SFT learns "
                    "the tag protocol: record episodes with EnvConfig(native_tools=False)"
                )
            completion = tokenizer.encode(step.text, add_special_tokens=False)
            completion += [eos] if eos is not None else []
            samples.append(
                TrainSample(
                    prompt_ids=policy.encode_prompt(step.messages),
                    completion_ids=completion,
                    old_logprobs=[0.0] * len(completion),
                    advantage=1.0,
                )
            )
    return samples


def oracle_episodes(
    tasks: Sequence[Task],
    env: EnvConfig,
    reward: RewardConfig,
    *,
    tokenizer: object | None,
    seed: int,
    embedder: Embedder | None,
    progress: bool = False,
) -> list[Episode]:
    """The oracle (`OracleRates`' deliberately imperfect defaults) once over every task,
    rewarded."""
    return run_episodes(
        Oracle(seed=seed),
        tasks,
        env,
        progress=progress,
        embedder=embedder,
        token_counter=HFTokenCounter(tokenizer) if tokenizer is not None else None,
        seed=seed,
        reward_fn=reward_fn(tasks, reward),
    )


def tiny_corpus(
    tasks: Sequence[Task], env: EnvConfig, reward: RewardConfig, embedder: Embedder | None
) -> list[str]:
    """The texts the tiny vocabulary is read from: both system prompts, every task text, and
    every message and output of the oracle on the first `PILOT_TASKS` tasks."""
    texts = [system_prompt(compact=True), system_prompt()]
    for task in tasks:
        texts += [m.content for m in task.contextual] + list(task.distractors)
        texts += [q.text for q in task.questions] + [a for q in task.questions for a in q.answers]
    pilot = oracle_episodes(
        tasks[:PILOT_TASKS], env, reward, tokenizer=None, seed=0, embedder=embedder
    )
    for ep in pilot:
        for step in ep.steps:
            texts += [m.get("content") or "" for m in step.messages] + [step.text]
            texts += [o.content for o in step.observations]
    return texts


# ---- loss --------------------------------------------------------------------------------------


def sft_loss(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    normalizer: float,
    pad_id: int,
    precision: Precision = "fp32",
    share: bool = True,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Summed negative log-likelihood of the completion tokens over `normalizer` (the optimizer
    step's completion tokens): the prompt and padding are outside `loss_mask`. The forward pass
    runs under `precision` (`autocast_for`); the log-probs and the sum are float32 either way.
    `share`: the rows' common prefix runs once (`token_logprobs(share_prefix=...)`)."""
    batch = collate(samples, pad_id=pad_id).to(next(model.parameters()).device)
    with autocast_for(precision, batch.input_ids.device):
        logp = token_logprobs(
            model, batch.input_ids, batch.attention_mask, batch.loss_mask, share_prefix=share
        )
    nll = -(logp * batch.loss_mask).sum()
    tokens = float(batch.loss_mask.sum())
    return nll / normalizer, {"loss": float(nll.detach()) / max(tokens, 1.0), "tokens": tokens}


# ---- the run -----------------------------------------------------------------------------------


def run_sft(config: SFTConfig, *, embedder: Embedder | None = None) -> SFTResult:
    """Train as `config` says; writes `metrics.jsonl`, `final/` (the merged model + tokenizer)
    and, with `save_every`, resumable checkpoints `checkpoints/step-*` under
    `config.run.out_dir` (`resume` takes one up again)."""
    if config.tasks.source == WORLDS and config.eval.n_tasks and config.eval.tasks is None:
        raise ValueError(
            "SFT on the worlds has no held-out evaluation of its own: set sft.eval.n_tasks=0 and "
            "evaluate with `agemem eval --benchmark babyai --method agemem --policy DIR`"
        )
    accelerator = setup(config.run)
    out = Path(config.run.out_dir)
    env = env_config(config.env.preset, config.env.overrides)
    reward = RewardConfig.preset(config.reward.preset).with_(**config.reward.overrides)
    resume_from = resume_point(config.resume, config.run.out_dir)
    model, tokenizer, samples, pool, data = _prepare(config, env, reward, embedder, resume_from)

    model.train()
    optimizer, scheduler = make_optimizer(model, config.optim, config.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    if resume_from is not None:
        trainer, _ = load_checkpoint(resume_from, accelerator.process_index)
        optimizer.load_state_dict(trainer["optimizer"])
        scheduler.load_state_dict(trainer["scheduler"])
        step = trainer["step"]
    main = accelerator.is_main_process
    writer = MetricsWriter(out, tensorboard=config.run.tensorboard) if main else None
    if writer and step:
        truncate_after(out / "metrics.jsonl", step)  # the resumed run writes later steps again
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    metrics: dict[str, float] = {}
    with StopRequest() as stop, LoggedProgress(disable=not (config.run.progress and main)) as bar:
        job = bar.add_task("SFT", total=config.steps, completed=step)
        while step < config.steps:
            picked = batch_at(pool, config.run.seed, step, config.batch_size)
            batch = [samples[i] for i in picked]
            mine = batch[accelerator.process_index :: accelerator.num_processes]
            metrics = sft_step(accelerator, model, optimizer, scheduler, mine, config, pad_id)
            step += 1
            bar.update(job, completed=step, description=f"SFT loss {metrics['loss']:.3f}")
            if writer and (step % config.run.log_every == 0 or step == config.steps):
                writer.write(step, metrics)
            stopped = stop.agreed(accelerator)
            every = config.run.save_every
            if (every and step % every == 0) or (stopped and every):
                save_checkpoint(
                    checkpoint_dir(out, step),
                    model=accelerator.unwrap_model(model),
                    tokenizer=tokenizer,
                    trainer={
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "step": step,
                    },
                    state={"step": step, "metrics": metrics},
                    is_main=main,
                    rank=accelerator.process_index,
                )
            if stopped:
                break

    final = out / "final"
    _save(accelerator, model, tokenizer, out)
    # every process its share of the held-out tasks, the scores over all of them
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
        rollouts=Rollouts(max_batch=config.generate_batch),
    )
    if writer:
        if scores:
            writer.write(step, {f"eval/{k}": v for k, v in scores.items()})
        writer.close()
    accelerator.wait_for_everyone()
    return SFTResult(final, step, step < config.steps, data, metrics, scores)


def _prepare(
    config: SFTConfig,
    env: EnvConfig,
    reward: RewardConfig,
    embedder: Embedder | None,
    resume_from: Path | None,
) -> tuple[torch.nn.Module, Any, list[PackedSample], list[int], dict[str, float]]:
    """The model to train, its tokenizer, the rows, the pool a pass over them shuffles (row
    indices, rows with an answer `answer_weight` times) and a summary of the data."""
    worlds = config.tasks.source == WORLDS
    tiny = config.model.name == "tiny" and resume_from is None
    if worlds and tiny and not config.episodes:
        raise ValueError("the tiny model cannot read the worlds: train a pretrained model on them")
    tasks = (
        []
        if worlds
        else load_split(config.tasks.source, config.tasks.options, "train", config.n_tasks)
    )
    corpus = tiny_corpus(tasks, env, reward, embedder) if tiny else []
    # The aliases of the first two id spaces (mem_1 .. mem_99 from the default 9) are words of the
    # tiny vocabulary, so a grown space never gives unknown tokens for up to 99 entries.
    ids = alias_vocabulary(env.id_space, spaces=2)
    model, tokenizer = load_resumable(config.model, resume_from, corpus=corpus, memory_ids=ids)
    if config.episodes:
        episodes = load_episodes(config.episodes)
    else:
        episodes = _cached_expert_episodes(config, tasks, env, reward, tokenizer, embedder)
    kept = keep_episodes(episodes, config.min_reward, config.reward.key)
    if not kept:
        raise ValueError(
            f"no episode has {config.reward.key} >= {config.min_reward} among {len(episodes)}; "
            "lower min_reward or provide better trajectories"
        )
    samples = sft_samples(kept, HFPolicy(model, tokenizer))  # the policy's prompt encoding
    data = {
        "episodes": float(len(episodes)),
        "kept": float(len(kept)),
        "samples": float(len(samples)),
        "completion_tokens": float(sum(len(s.completion_ids) for s in samples)),
        "prompt_tokens": float(sum(len(s.prompt_ids) for s in samples)),
    }
    packed = pack_turns(samples)  # append-only turns of an episode share one row
    answers = iter([s.answer is not None for ep in kept for s in (x.actions for x in ep.steps)])
    pool = []
    for index, row in enumerate(packed):
        holds_answer = any([next(answers) for _ in row.spans])  # a row packs len(spans) turns
        pool += [index] * (config.answer_weight if holds_answer else 1)
    data["rows"] = float(len(packed))
    data["pool"] = float(len(pool))
    log.info("SFT data: %s", data)
    return model, tokenizer, packed, pool, data


ORACLE_FILE = "oracle-episodes.jsonl"  # under run.out_dir, beside `<name>.key.json`


def _cached_expert_episodes(
    config: SFTConfig,
    tasks: Sequence[Task],
    env: EnvConfig,
    reward: RewardConfig,
    tokenizer: Any,
    embedder: Embedder | None,
) -> list[Episode]:
    """The oracle's episodes (or, for the `worlds` source, the worlds' scripted experts':
    `agemem.agentic.expert`), saved in the run directory and read back by a later run with the
    same data settings (a restart or resume; 1,200 SmolLM2 episodes took ~30 minutes to make on
    2 busy cores). The key is what the episodes depend on: tasks, env, reward, seed, model."""
    path = Path(config.run.out_dir) / ORACLE_FILE
    key_file = path.with_suffix(".key.json")
    key = {
        "tasks": config.tasks.model_dump(mode="json"),
        "n_tasks": config.n_tasks,
        "env": config.env.model_dump(mode="json"),
        "reward": config.reward.model_dump(mode="json"),
        "seed": config.run.seed,
        "model": config.model.name,
    }
    if path.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
        log.info("reusing the oracle's episodes in %s", path)
        return load_episodes(path)
    if config.tasks.source == WORLDS:
        episodes = _world_episodes(config, tokenizer, embedder)
    else:
        episodes = oracle_episodes(
            tasks,
            env,
            reward,
            tokenizer=tokenizer,
            seed=config.run.seed,
            embedder=embedder,
            progress=config.run.progress,
        )
    if config.run.out_dir:
        save_episodes(episodes, path)
        key_file.write_text(json.dumps(key, indent=1), encoding="utf-8")
    return episodes


def _world_episodes(config: SFTConfig, tokenizer: Any, embedder: Embedder | None) -> list[Episode]:
    """The worlds' expert episodes for `config.tasks.options`: `benchmarks` (a list of world
    names) and `method` (default "agemem": the memory tools on)."""
    from agemem.agentic.expert import training_episodes
    from agemem.env.embed_cache import cached

    spec = WorldTasks.from_options(config.tasks.options, grpo=False)
    return training_episodes(
        spec.benchmarks,
        config.n_tasks,
        spec.method,
        embedder=cached(embedder or library_embedder()),
        token_counter=HFTokenCounter(tokenizer),
        progress=config.run.progress,
    )


def sft_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    samples: Sequence[Sample],
    config: SFTConfig,
    pad_id: int,
) -> dict[str, float]:
    """One optimizer step on this process's share of a batch: token mean over all processes."""
    start = time.perf_counter()
    tokens = global_count(accelerator, sum(s.n_generated for s in samples))
    normalizer = tokens / accelerator.num_processes
    chunks = micro_batches(samples, config.micro_batch_size, config.micro_batch_tokens)
    precision, share = config.run.precision, prefix_sharing(config.run, config.model)
    rows = accumulate(
        accelerator,
        model,
        chunks,
        lambda c: sft_loss(model, c, normalizer, pad_id, precision, share),
    )
    return {
        "loss": sum(r["loss"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows),
        **optimizer_step(accelerator, model, optimizer, scheduler, config.optim.grad_clip),
        "tokens": tokens,
        "step_s": time.perf_counter() - start,
    }


def batch_at(pool: Sequence[int], seed: int, step: int, size: int) -> list[int]:
    """The `size` items of 0-based `step` when training walks shuffled passes over `pool` (pass
    p shuffled with the seed (`seed`, p)): a function of the step alone, so a resumed run draws
    exactly what the uninterrupted one would have.

    >>> batch_at([0, 1, 2], seed=0, step=1, size=2) + batch_at([0, 1, 2], seed=0, step=2, size=2)
    [0, 2, 1, 0]
    """
    if not pool:
        raise ValueError("nothing to train on: the pool of rows is empty")
    out: list[int] = []
    position = step * size
    while len(out) < size:
        epoch, offset = divmod(position, len(pool))
        order = random.Random(f"{seed}/{epoch}").sample(list(pool), len(pool))
        take = order[offset : offset + size - len(out)]
        out += take
        position += len(take)
    return out


def _save(accelerator: Accelerator, model: torch.nn.Module, tokenizer: Any, out: Path) -> None:
    if accelerator.is_main_process:
        save_final(accelerator.unwrap_model(model), tokenizer, out)
    accelerator.wait_for_everyone()
