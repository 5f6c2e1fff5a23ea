"""The step-wise GRPO objective: group advantages, per-token log-probs and the clipped loss.

Read top to bottom, this is the whole math of one policy update:

1. `group_advantages`: each episode's terminal reward becomes an advantage relative to the other
   episodes of its group (the K rollouts of one task).
2. Step-wise broadcast (`agemem.train.batch.step_samples`): every model turn of the episode is its
   own training sample carrying that same advantage.
3. `token_logprobs`: log pi_theta of each generated token under the model being trained, at the
   sampling temperature (the distribution the rollout drew the token from).
4. `grpo_loss`: PPO-style clipped importance ratio times the advantage, plus beta * KL to a frozen
   reference model, averaged over the generated tokens.

All per-token tensors are (batch, seq_len) and aligned to `input_ids` positions: column t holds the
value for the token `input_ids[:, t]`; `loss_mask` is 1 exactly on the generated tokens.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import torch
from torch import nn

Scale = Literal["std", "none"]
Aggregation = Literal["token-mean", "sequence-mean"]


# ---- 1. advantages ---------------------------------------------------------------------------


def group_advantages(
    rewards: Sequence[float] | torch.Tensor,
    group_ids: Sequence[Hashable],
    *,
    scale: Scale = "std",
    eps: float = 1e-4,
) -> torch.Tensor:
    """GRPO advantage of each episode within its group, as a float32 tensor (one per reward).

    scale="std" (AgeMem, standard GRPO): (r - mean_group) / (std_group + eps), std with K-1
    (the sample std, as the paper writes it). scale="none" (AtomMem, Dr. GRPO): r - mean_group.
    eps=1e-4 is ours (the papers do not give it): TRL's value, and the quickstart's
    (README, "What the quickstart recipe learned"); it only matters for near-equal rewards. A
    group of one episode, or one whose rewards are all equal, carries no comparison and gets 0.

    >>> group_advantages([1.0, 0.0, 2.0, 2.0], ["a", "a", "b", "b"], scale="none").tolist()
    [0.5, -0.5, 0.0, 0.0]
    """
    r = torch.as_tensor(rewards, dtype=torch.float64)
    if r.ndim != 1 or r.numel() != len(group_ids):
        raise ValueError(
            f"need one group id per reward: got {tuple(r.shape)} rewards and {len(group_ids)} ids"
        )
    if not torch.isfinite(r).all():
        raise ValueError(f"rewards must be finite, got {r.tolist()}; fix the reward function")
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it keeps the division finite), got {eps}")

    members: dict[Hashable, list[int]] = {}
    for i, gid in enumerate(group_ids):
        members.setdefault(gid, []).append(i)
    advantages = torch.zeros_like(r)
    for idx in members.values():
        group = r[idx]
        if len(idx) == 1 or bool((group == group[0]).all()):
            continue  # nothing to compare against: advantage 0
        centred = group - group.mean()
        if scale == "std":
            centred = centred / (group.std(correction=1) + eps)
        advantages[idx] = centred
    return advantages.float()


# ---- 3. log-probs of the generated tokens ------------------------------------------------------


def token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    only: torch.Tensor | None = None,
    temperature: float = 1.0,
    *,
    share_prefix: bool = True,
) -> torch.Tensor:
    """log pi(input_ids[:, t] | input_ids[:, :t]) for every position t, shape (batch, seq_len).

    The logits at position t predict token t+1, so they are shifted one step right; position 0
    predicts nothing and holds 0 (it is never a generated token). Log-probs are those of
    `softmax(logits / temperature)` in float32: the sampling temperature's distribution, the one
    `HFPolicy` records sampling logprobs in, so the importance ratio compares like with like.
    GRPO passes its sampling temperature for the policy and the reference alike (as TRL does);
    SFT keeps 1.0, the raw model. Right padding needs no position ids.
    Differentiable: call it under `torch.no_grad()` for the old or reference policy.

    `only` (a (batch, seq_len) mask, e.g. `loss_mask`): compute just those positions and leave 0
    elsewhere. The vocabulary projection then runs on the generated tokens alone (transformers'
    boolean `logits_to_keep`): with SmolLM2's 49k-word vocabulary, full logits of 8 rows of 2,000
    tokens take 3 GB per float32 copy, and the loss's backward holds several copies.

    `share_prefix` (with `only`): the rows of a batch start with the same tokens (the chat
    template's header and the system prompt, ~190 of a ~400-token SmolLM2 turn in the `compact`
    env), so that shared prefix runs through the model once, for one row, and its keys and values
    are repeated for the others; the rest of each row attends to them at its true positions.
    The result equals the batch run whole (up to float rounding), gradients included: the
    repeated prefix sums its rows' gradients as separate copies would. Used when the prefix is at
    least `MIN_SHARED_PREFIX` tokens and no requested position lies in it.
    """
    if input_ids.shape != attention_mask.shape or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)}"
            " must be the same (batch, seq_len) shape"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to define a distribution, got {temperature}")
    if only is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        logits = logits.logits[:, :-1]
        picked = _picked(logits, input_ids[:, 1:], temperature)
        return nn.functional.pad(picked, (1, 0))
    wanted = only.bool()
    if wanted[:, 0].any():
        raise ValueError("position 0 has no preceding logit: `only` must be False there")
    keep = nn.functional.pad(wanted[:, 1:], (0, 1))  # the logit at t-1 predicts token t
    shared = shared_prefix_length(input_ids, attention_mask, keep) if share_prefix else 0
    if shared:
        logits = _logits_after_prefix(model, input_ids, attention_mask, keep, shared)
    else:
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False
        ).logits
    picked = _picked(logits, input_ids[wanted], temperature)  # both in row-major order
    return torch.zeros(input_ids.shape, dtype=picked.dtype, device=picked.device).masked_scatter(
        wanted, picked
    )


MIN_SHARED_PREFIX = 16  # tokens; below this the second call costs more than it saves (ours)


def shared_prefix_length(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor
) -> int:
    """How many leading tokens every row shares and may compute once: real tokens (mask 1) equal
    in every row, before the first position whose logit is kept; 0 when that is fewer than
    `MIN_SHARED_PREFIX` tokens or there is one row."""
    if input_ids.shape[0] < 2:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0) & ~keep.any(0)
    differs = (~same).nonzero()
    length = int(differs[0]) if len(differs) else input_ids.shape[1] - 1
    return length if length >= MIN_SHARED_PREFIX else 0


def _logits_after_prefix(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep: torch.Tensor,
    shared: int,
) -> torch.Tensor:
    """The kept logits of the batch, its first `shared` tokens run once for all rows."""
    cache = model(input_ids=input_ids[:1, :shared], use_cache=True).cache
    cache.batch_repeat_interleave(input_ids.shape[0])
    width = input_ids.shape[1]
    positions = torch.arange(shared, width, device=input_ids.device).expand(input_ids.shape[0], -1)
    return model(
        input_ids=input_ids[:, shared:],
        attention_mask=attention_mask,
        position_ids=positions,
        cache=cache,
        logits_to_keep=keep[:, shared:],
        use_cache=True,
    ).logits


def _picked(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """log_softmax(logits / temperature) in float32 at `targets`, without materialising the full
    log_softmax tensor; at temperature 1 no scaled copy of the logits is made."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


# ---- 4. the loss -------------------------------------------------------------------------------


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    beta: float = 0.1,
    aggregation: Aggregation = "token-mean",
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The step-wise GRPO loss (to minimise) and its metrics.

    Per generated token, with ratio = exp(logprobs - old_logprobs):
        -min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A)
        + beta * (exp(ref - logp) - (ref - logp) - 1)          # k3 estimator of KL(pi || ref)

    Defaults: clip 0.2 / 0.28 is AtomMem's (DAPO's clip-higher; AgeMem states no clipping);
    beta 0.1 is AgeMem's (AtomMem uses 0.001). `ref_logprobs=None` means no KL term and needs
    beta=0, so a forgotten reference model is an error rather than a silently different objective.

    aggregation="token-mean" (default; DAPO, TRL's "dapo"): the sum over all generated tokens
    divided by their number, so every token weighs the same whatever its turn's length.
    "sequence-mean" (original GRPO, TRL's "grpo"): each turn's tokens are averaged first, then the
    turns. `normalizer` is what the sum is divided by: the generated tokens (token-mean) or the
    sequences (sequence-mean) of the whole optimizer step. Pass that total when accumulating
    gradients over micro-batches and the summed gradient equals the one-big-batch gradient; the
    default (None) is this batch's own count.

    Metrics, over this batch's generated tokens: ratio (mean), clip_low / clip_high (share of
    tokens whose clipped side is binding), kl (mean k3; with a reference model), entropy (mean
    -logprob of the sampled tokens: a Monte Carlo estimate of the policy entropy, exact in
    expectation while on-policy), tokens (count, to weight metrics across micro-batches).
    """
    _check_loss_inputs(logprobs, old_logprobs, ref_logprobs, advantages, loss_mask)
    _check_loss_settings(clip_low, clip_high, beta, ref_logprobs, aggregation)
    mask = loss_mask.to(logprobs.dtype)
    on = mask.bool()  # off-mask values (prompt, padding) may be anything: keep them out of exp()

    ratio = torch.exp(torch.where(on, logprobs - old_logprobs, 0.0))
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    kl = None
    if ref_logprobs is not None:
        ref_gap = torch.where(on, ref_logprobs - logprobs, 0.0)
        kl = torch.exp(ref_gap) - ref_gap - 1.0
        per_token = per_token + beta * kl

    if aggregation == "token-mean":
        count = mask.sum() if normalizer is None else normalizer
        loss = (per_token * mask).sum() / _positive(count, "generated tokens")
    else:
        per_sequence = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        count = mask.shape[0] if normalizer is None else normalizer
        loss = per_sequence.sum() / _positive(count, "sequences")
    return loss, _metrics(logprobs, ratio, kl, advantages, mask, clip_low, clip_high)


def _positive(count: float | torch.Tensor, what: str) -> float | torch.Tensor:
    if float(count) <= 0:
        raise ValueError(
            f"nothing to average: {what} = {float(count)}; the loss_mask has no generated token"
            " (or pass the optimizer step's total as normalizer)"
        )
    return count


@torch.no_grad()
def _metrics(
    logprobs: torch.Tensor,
    ratio: torch.Tensor,
    kl: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> dict[str, float]:
    n = mask.sum().clamp(min=1.0)

    def mean(x: torch.Tensor) -> float:
        return float((x.to(mask.dtype) * mask).sum() / n)

    metrics = {
        "ratio": mean(ratio),
        "clip_low": mean((ratio < 1.0 - clip_low) & (advantages < 0)),
        "clip_high": mean((ratio > 1.0 + clip_high) & (advantages > 0)),
        "entropy": mean(-logprobs),
        "tokens": float(mask.sum()),
    }
    if kl is not None:
        metrics["kl"] = mean(kl)
    return metrics


def _check_loss_inputs(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
) -> None:
    named = {"old_logprobs": old_logprobs, "advantages": advantages, "loss_mask": loss_mask}
    if ref_logprobs is not None:
        named["ref_logprobs"] = ref_logprobs
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs must be (batch, seq_len), got {tuple(logprobs.shape)}")
    for name, tensor in named.items():
        if tensor.shape != logprobs.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but logprobs has {tuple(logprobs.shape)};"
                " every per-token tensor is aligned to input_ids (see agemem.train.batch.collate)"
            )


def _check_loss_settings(
    clip_low: float,
    clip_high: float,
    beta: float,
    ref_logprobs: torch.Tensor | None,
    aggregation: str,
) -> None:
    if not 0.0 <= clip_low < 1.0 or clip_high < 0.0:
        raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {clip_low}, {clip_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if ref_logprobs is None and beta != 0:
        raise ValueError(
            f"beta={beta} weighs a KL term but ref_logprobs is None: pass the frozen reference"
            " model's token_logprobs, or beta=0 to train without KL"
        )
    if aggregation not in ("token-mean", "sequence-mean"):
        raise ValueError(
            f"aggregation must be 'token-mean' or 'sequence-mean', got {aggregation!r}"
        )
