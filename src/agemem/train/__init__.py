"""Training the memory policy with step-wise GRPO.

- `grpo_loss.py`: the objective: `group_advantages`, `token_logprobs`, `grpo_loss`.
- `batch.py`: episodes -> one `TrainSample` per model turn (`step_samples`) -> padded,
  masked tensors (`collate`).

One update, in order::

    samples = step_samples(episodes)                      # advantage broadcast to every turn
    batch = collate(pack_turns(samples))                  # append-only turns share a row
    logp = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    with torch.no_grad():
        ref = token_logprobs(ref_model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    loss, metrics = grpo_loss(logp, batch.old_logprobs, ref, batch.advantages, batch.loss_mask)
"""

from agemem.train.batch import Batch, PackedSample, TrainSample, collate, pack_turns, step_samples
from agemem.train.grpo_loss import group_advantages, grpo_loss, token_logprobs

__all__ = [
    "Batch",
    "PackedSample",
    "TrainSample",
    "collate",
    "group_advantages",
    "grpo_loss",
    "pack_turns",
    "step_samples",
    "token_logprobs",
]
