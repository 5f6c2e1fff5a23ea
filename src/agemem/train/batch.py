"""From episodes to training tensors: the step-wise broadcast and the padded, masked batch.

Step-wise GRPO trains on model turns, not on one growing sequence: Summary_context and
Filter_context rewrite the context, so each turn's prompt (the exact context the model saw) is its
own sample. Observations and system messages only ever appear inside later prompts, so masking
every prompt token leaves exactly the generated tokens in the loss.

Where a context only grew (the next prompt starts with this turn's prompt and completion, token
for token), `pack_turns` joins the turns into one sequence: causal attention gives every
generated token the very context it was sampled in, so the loss is the same while the shared
prefix is computed once (an episode of n append-only turns costs one pass, not n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agemem.episode import Episode, StepSample
from agemem.train.grpo_loss import Scale, group_advantages


@dataclass(frozen=True)
class TrainSample:
    """One model turn ready for the loss: the context it saw, what it generated, the sampling
    policy's logprob of each generated token, and its episode's advantage."""

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: list[float]
    advantage: float

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("prompt_ids is empty: the first generated token needs a context")
        if not self.completion_ids:
            raise ValueError("completion_ids is empty: a turn without generated tokens has no loss")
        if len(self.old_logprobs) != len(self.completion_ids):
            raise ValueError(
                f"{len(self.old_logprobs)} old_logprobs for {len(self.completion_ids)} completion"
                " tokens: the sampler must record one logprob per generated token"
            )

    @classmethod
    def from_step(cls, step: StepSample, advantage: float) -> TrainSample:
        return cls(step.prompt_ids, step.completion_ids, step.logprobs, advantage)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def n_generated(self) -> int:
        return len(self.completion_ids)

    def packed(self) -> PackedSample:
        end = self.length
        ids = self.prompt_ids + self.completion_ids
        return PackedSample(ids, [(len(self.prompt_ids), end)], self.old_logprobs, self.advantage)


@dataclass(frozen=True)
class PackedSample:
    """Consecutive turns of one episode in one sequence (`pack_turns`): `spans` are the
    [start, end) ranges of each turn's generated tokens in `ids`, `old_logprobs` theirs in order.
    """

    ids: list[int]
    spans: list[tuple[int, int]]
    old_logprobs: list[float]
    advantage: float

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def n_generated(self) -> int:
        return sum(end - start for start, end in self.spans)


Sample = TrainSample | PackedSample


def pack_turns(samples: Sequence[TrainSample]) -> list[PackedSample]:
    """Join each turn to the sequence before it when its prompt starts with that whole sequence
    and its advantage is the same (module docstring); samples in episode order, as
    `step_samples` gives them. A rewritten context starts a new sequence.

    >>> a = TrainSample([1, 2], [3], [-0.5], 1.0)
    >>> b = TrainSample([1, 2, 3, 9], [4, 5], [-0.1, -0.2], 1.0)
    >>> [(p.ids, p.spans, p.old_logprobs) for p in pack_turns([a, b])]
    [([1, 2, 3, 9, 4, 5], [(2, 3), (4, 6)], [-0.5, -0.1, -0.2])]
    """
    packed: list[PackedSample] = []
    for sample in samples:
        last = packed[-1] if packed else None
        if (
            last is not None
            and last.advantage == sample.advantage
            and sample.prompt_ids[: last.length] == last.ids
        ):
            packed[-1] = PackedSample(
                sample.prompt_ids + sample.completion_ids,
                [*last.spans, (len(sample.prompt_ids), sample.length)],
                last.old_logprobs + sample.old_logprobs,
                sample.advantage,
            )
        else:
            packed.append(sample.packed())
    return packed


def step_samples(
    episodes: Sequence[Episode],
    *,
    reward_key: str = "total",
    scale: Scale = "std",
    eps: float = 1e-4,
) -> list[TrainSample]:
    """One sample per model turn of every episode (all three stages), each carrying its episode's
    group advantage (`group_advantages` over `episode.reward[reward_key]`, grouped by
    `episode.group_id`). `reward_key="total"` is the reward's sum of parts."""
    rewards = []
    for ep in episodes:
        if reward_key not in ep.reward:
            raise ValueError(
                f"episode {ep.task_id!r} (group {ep.group_id!r}) has no reward {reward_key!r}"
                f" (it has {sorted(ep.reward)}); score episodes with a reward_fn before training"
            )
        rewards.append(ep.reward[reward_key])
    advantages = group_advantages(rewards, [ep.group_id for ep in episodes], scale=scale, eps=eps)

    samples = []
    for ep, advantage in zip(episodes, advantages.tolist(), strict=True):
        for step in ep.steps:
            try:
                samples.append(TrainSample.from_step(step, advantage))
            except ValueError as err:
                raise ValueError(
                    f"episode {ep.task_id!r} turn {step.turn}: {err}; sample with a policy that"
                    " returns token ids and logprobs (HFPolicy)"
                ) from None
    return samples


@dataclass
class Batch:
    """Right-padded (batch, seq_len) tensors; per-token ones are aligned to `input_ids`.

    `loss_mask` is 1 exactly on generated tokens; `old_logprobs` and `advantages` hold their values
    there and 0 elsewhere.
    """

    input_ids: torch.Tensor  # long: prompt + completion, then padding
    attention_mask: torch.Tensor  # long: 1 on prompt and completion
    loss_mask: torch.Tensor  # float: 1 on completion tokens
    old_logprobs: torch.Tensor  # float
    advantages: torch.Tensor  # float

    @property
    def n_tokens(self) -> int:
        """Generated tokens in the batch: the token-mean normalizer's share of this batch."""
        return int(self.loss_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in vars(self).values()))


def collate(samples: Sequence[Sample], *, pad_id: int = 0) -> Batch:
    """Pad samples (single turns or packed ones) on the right into one `Batch`. `pad_id` is only
    a filler: padded positions are outside the attention mask, and right padding sits after every
    real token, so no real token attends to it (causal attention) and its value changes no
    log-prob."""
    if not samples:
        raise ValueError("no samples to collate")
    rows = [s.packed() if isinstance(s, TrainSample) else s for s in samples]
    width = max(s.length for s in rows)
    shape = (len(samples), width)
    batch = Batch(
        input_ids=torch.full(shape, pad_id, dtype=torch.long),
        attention_mask=torch.zeros(shape, dtype=torch.long),
        loss_mask=torch.zeros(shape),
        old_logprobs=torch.zeros(shape),
        advantages=torch.zeros(shape),
    )
    for row, s in enumerate(rows):
        batch.input_ids[row, : s.length] = torch.tensor(s.ids)
        batch.attention_mask[row, : s.length] = 1
        generated = torch.cat([torch.arange(start, end) for start, end in s.spans])
        batch.loss_mask[row, generated] = 1.0
        batch.old_logprobs[row, generated] = torch.tensor(s.old_logprobs)
        batch.advantages[row, generated] = s.advantage
    return batch
