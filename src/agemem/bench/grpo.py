"""`agemem bench grpo`: training throughput of our GRPO update against TRL's `GRPOTrainer`.

Both sides train the same model (two copies of the same weights) on the same turns of the same
append-only episodes with the same objective (clip 0.2/0.28, k3 KL with beta 0.1 to a frozen
reference, token-mean = TRL's "dapo", log-probs at temperature 1.0, TRL's default), in
micro-batches of `micro_batch_size` rows, then one AdamW step. TRL gets each turn as its own
row (left-padded prompt, right-padded completion: what its `_generate_and_score_completions`
hands to `_compute_loss`) and computes the reference log-probs with its own
`_get_per_token_logps_and_entropies`; ours packs the turns of each append-only stretch into one
row (`pack_turns`), so a shared prefix is computed once.

Episodes, the synthetic oracle's, one case each (`EPISODES`):
- `append-only`: an env that keeps every turn in the context (stage-1 history, its outputs and
  observations), with no Filter/Summary, so each stage's contexts only grow: the case packing
  was made for;
- `agemem`: the `synthetic` env the tiny model trains in (one stage-1 message per prompt, the
  oracle's Filter_context and Summary_context calls in stage 2 rewriting the context), so few
  turns extend the one before and most rows stand alone.
The turns are tokenised as SFT does. Rewards are random per episode (the update's cost does not
depend on them). Throughput is generated (trained) tokens per second, the same tokens on both
sides; the sides alternate (ours, TRL, TRL, ours, ...) so load changes weigh on both alike. The
machine's load average is recorded before and after each case.
"""

from __future__ import annotations

import os
import platform
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from agemem.env import PRESETS, run_episodes
from agemem.env.oracle import Oracle, OracleRates
from agemem.policy.hf import HFPolicy
from agemem.policy.models import load_model
from agemem.policy.tiny import build_tiny
from agemem.tasks import load_tasks
from agemem.tokens import HFTokenCounter
from agemem.train.batch import TrainSample, collate, pack_turns
from agemem.train.grpo_loss import group_advantages, grpo_loss, token_logprobs
from agemem.train.loop import micro_batches
from agemem.train.sft import sft_samples

CLIP_LOW, CLIP_HIGH, BETA = 0.2, 0.28, 0.1
TEMPERATURE = 1.0  # old, policy and reference log-probs are all taken at it, on both sides
APPEND_ONLY = PRESETS["synthetic"].with_(keep_stage12_turns=True, stage1_window=None)
NO_CONTEXT_TOOLS = OracleRates(stage2_filter=0.0, stage2_summary=0.0)
EPISODES = {  # case -> (env, oracle behaviour)
    "append-only": (APPEND_ONLY, NO_CONTEXT_TOOLS),
    "agemem": (PRESETS["synthetic"], OracleRates()),
}


def bench_samples(
    preset: str, n_tasks: int, k: int, seed: int, episodes: str = "append-only"
) -> tuple[Any, Any, list[TrainSample]]:
    """(model, tokenizer, turns): `k` oracle episodes of the `episodes` case for each of
    `n_tasks` synthetic tasks."""
    env, rates = EPISODES[episodes]
    tasks = load_tasks("synthetic", split="train", limit=n_tasks)
    if preset == "tiny":
        corpus = [m.content for t in tasks for m in t.contextual] + [
            d for t in tasks for d in t.distractors
        ]
        model, tokenizer = build_tiny(corpus, seed=seed)
    else:
        model, tokenizer = load_model(preset)
    rolled = run_episodes(
        Oracle(rates=rates, seed=seed),
        tasks,
        env,
        k=k,
        progress=False,
        token_counter=HFTokenCounter(tokenizer),
        seed=seed,
    )
    rng = random.Random(seed)
    rewards = [rng.random() for _ in rolled]
    advantages = group_advantages(rewards, [e.group_id for e in rolled]).tolist()
    policy = HFPolicy(model, tokenizer, temperature=TEMPERATURE)
    samples = []
    for episode, advantage in zip(rolled, advantages, strict=True):
        for turn in sft_samples([episode], policy):
            old = policy.logprobs_of(turn.prompt_ids, turn.completion_ids)
            samples.append(TrainSample(turn.prompt_ids, turn.completion_ids, old, advantage))
    return model, tokenizer, samples


def ours_step(
    model: Any, ref: Any, optimizer: Any, samples: Sequence[TrainSample], rows: int
) -> None:
    """One update as `agemem.train.grpo.grpo_update` makes it: packed rows, micro-batches,
    backward of each with the whole step's token count as the normaliser, one optimizer step."""
    normalizer = float(sum(s.n_generated for s in samples))
    for chunk in micro_batches(pack_turns(samples), rows):
        batch = collate(chunk)
        args = (batch.input_ids, batch.attention_mask, batch.loss_mask, TEMPERATURE)
        logp = token_logprobs(model, *args)
        with torch.no_grad():
            ref_logp = token_logprobs(ref, *args)
        loss, _ = grpo_loss(
            logp, batch.old_logprobs, ref_logp, batch.advantages, batch.loss_mask,
            clip_low=CLIP_LOW, clip_high=CLIP_HIGH, beta=BETA, normalizer=normalizer,
        )  # fmt: skip
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def trl_trainer(model_dir: str, tokenizer: Any, rows: int, accumulation: int) -> Any:
    """A real `trl.GRPOTrainer` on the saved model with our objective's settings (bf16 autocast
    and TRL's ratio-weighted KL switched off: we compute the plain k3 KL in float32)."""
    import datasets
    import trl
    from transformers import AutoModelForCausalLM

    # TRL's config sets a deprecated transformers argument itself; nothing the user can change
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    config = trl.GRPOConfig(
        output_dir=f"{model_dir}/trl",
        loss_type="dapo",
        epsilon=CLIP_LOW,
        epsilon_high=CLIP_HIGH,
        beta=BETA,
        temperature=TEMPERATURE,
        per_device_train_batch_size=rows,
        gradient_accumulation_steps=accumulation,
        num_generations=2,
        use_cpu=True,
        bf16=False,
        use_bias_correction_kl=False,
        report_to="none",
    )
    return trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=config,
        train_dataset=datasets.Dataset.from_dict({"prompt": ["x"] * (2 * rows)}),
        processing_class=tokenizer,
    )


def fresh_copy(model_dir: str) -> Any:
    """The saved model loaded anew. Not `copy.deepcopy(trainer.model)`: accelerate wraps the
    trainer's model's `forward`, and a deep copy would keep calling the original's."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir)


def trl_inputs(trainer: Any, samples: Sequence[TrainSample], pad_id: int, n_items: int) -> dict:
    """What TRL's `_generate_and_score_completions` hands to `_compute_loss` for these turns."""
    width_p = max(len(s.prompt_ids) for s in samples)
    width_c = max(len(s.completion_ids) for s in samples)
    prompt_ids = torch.full((len(samples), width_p), pad_id)
    prompt_mask = torch.zeros(len(samples), width_p, dtype=torch.long)
    completion_ids = torch.full((len(samples), width_c), pad_id)
    completion_mask = torch.zeros(len(samples), width_c, dtype=torch.long)
    old = torch.zeros(len(samples), width_c)
    for row, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        prompt_ids[row, width_p - p :] = torch.tensor(s.prompt_ids)  # left padding
        prompt_mask[row, width_p - p :] = 1
        completion_ids[row, :c] = torch.tensor(s.completion_ids)  # right padding
        completion_mask[row, :c] = 1
        old[row, :c] = torch.tensor(s.old_logprobs)
    with torch.no_grad():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.ref_model,
            torch.cat([prompt_ids, completion_ids], 1),
            torch.cat([prompt_mask, completion_mask], 1),
            width_c,
        )
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([s.advantage for s in samples]),
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": torch.tensor(n_items),
    }


def trl_step(
    trainer: Any, optimizer: Any, samples: Sequence[TrainSample], rows: int, pad_id: int
) -> None:
    """One update through TRL's loss: each turn a row, micro-batches of `rows`, one step."""
    n_items = sum(s.n_generated for s in samples)
    # TRL's "dapo" divides by num_items_in_batch x current / steps_per_generation: equal
    # factors make the divisor this whole update's token count, as ours
    trainer.current_gradient_accumulation_steps = trainer.args.steps_per_generation
    for chunk in micro_batches(samples, rows):
        loss = trainer._compute_loss(trainer.model, trl_inputs(trainer, chunk, pad_id, n_items))
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_grpo_bench(
    preset: str = "tiny",
    *,
    n_tasks: int = 8,
    k: int = 4,
    micro_batch_size: int = 16,
    repeats: int = 3,
    seed: int = 0,
    episodes: Sequence[str] = tuple(EPISODES),
) -> dict[str, Any]:
    """Each case of `episodes` measured in turn: {"preset", "cases": {case: ...}, "machine"}."""
    unknown = [e for e in episodes if e not in EPISODES]
    if unknown or not episodes:
        raise ValueError(f"unknown episodes case(s) {unknown}; choose from {', '.join(EPISODES)}")
    cases = {
        case: _one_case(preset, n_tasks, k, micro_batch_size, repeats, seed, case)
        for case in episodes
    }
    import trl

    return {
        "preset": preset,
        "cases": cases,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "trl": trl.__version__,
            "threads": torch.get_num_threads(),
        },
    }


def _one_case(
    preset: str, n_tasks: int, k: int, micro_batch_size: int, repeats: int, seed: int, case: str
) -> dict[str, Any]:
    """Median seconds per update on each side over `repeats` alternated updates, as tokens/s."""
    load_before = os.getloadavg()
    model, tokenizer, samples = bench_samples(preset, n_tasks, k, seed, case)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        trainer = trl_trainer(tmp, tokenizer, micro_batch_size, 1)
        trainer.model.train()
        ours, ref = fresh_copy(tmp).train(), fresh_copy(tmp).eval()
        ours_opt = torch.optim.AdamW(ours.parameters(), lr=1e-6)
        trl_opt = torch.optim.AdamW(trainer.model.parameters(), lr=1e-6)
        times: dict[str, list[float]] = {"ours": [], "trl": []}
        for i in range(repeats):
            order = ("ours", "trl") if i % 2 == 0 else ("trl", "ours")
            for side in order:
                start = time.perf_counter()
                if side == "ours":
                    ours_step(ours, ref, ours_opt, samples, micro_batch_size)
                else:
                    trl_step(trainer, trl_opt, samples, micro_batch_size, pad_id)
                times[side].append(time.perf_counter() - start)
    tokens = sum(s.n_generated for s in samples)
    median = {side: sorted(t)[len(t) // 2] for side, t in times.items()}
    return {
        "turns": len(samples),
        "packed_rows": len(pack_turns(samples)),
        "generated_tokens": tokens,
        "prompt_tokens": sum(len(s.prompt_ids) for s in samples),
        "micro_batch_size": micro_batch_size,
        "repeats": repeats,
        "ours_s": round(median["ours"], 3),
        "trl_s": round(median["trl"], 3),
        "ours_tokens_per_s": round(tokens / median["ours"], 1),
        "trl_tokens_per_s": round(tokens / median["trl"], 1),
        "ratio": round(median["trl"] / median["ours"], 3),
        "seconds": {side: [round(t, 3) for t in ts] for side, ts in times.items()},
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
