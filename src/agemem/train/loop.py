"""The plumbing SFT and GRPO share: process setup, the optimizer, micro-batched backward passes
under `accelerate` (one process or DDP), and stopping cleanly on Ctrl-C.

Under `accelerate launch` with several processes the model is DDP-wrapped by
`Accelerator.prepare`; gradients are all-reduced once per optimizer step (every micro-batch but
the last runs under `no_sync`). DDP averages the ranks' gradients, so a loss normalised by
`global_count(...) / num_processes` gives exactly the gradient of the loss over all ranks' tokens.
"""

from __future__ import annotations

import ctypes
import random
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from types import FrameType
from typing import Any, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from transformers import get_scheduler

from agemem.train.batch import Sample
from agemem.train.config import ModelSettings, OptimSettings, Precision, RunSettings

S = TypeVar("S", bound=Sample)
_M_MMAP_THRESHOLD = -3  # glibc malloc.h


def setup(run: RunSettings) -> Accelerator:
    """Threads, global seeds and the `Accelerator` (CPU when asked or when there is no GPU).

    Threads: measured on this project's 2-core machine with the tiny model (a 64 x 224-token
    forward and backward): 1.8 s on 1 thread, 2.7-5.5 s on 2 while other work shares the cores;
    on the idle machine 2 threads win (quickstart 14 min 7 s against 20 min 41 s), hence
    `threads=2` in the quickstart preset; set `run.threads=1` when the cores are shared."""
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    if run.mmap_threshold_mb:
        return_large_blocks_to_the_os(run.mmap_threshold_mb << 20)
    random.seed(run.seed)
    np.random.seed(run.seed % 2**32)
    torch.manual_seed(run.seed)
    return Accelerator(cpu=run.device == "cpu" or not torch.cuda.is_available())


def return_large_blocks_to_the_os(threshold: int = 1 << 20) -> None:
    """Serve every allocation above `threshold` bytes by its own mmap, unmapped when freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), so the
    activations of a training step soon come from the heap, whose freed pieces are rarely given
    back: measured on SmolLM2 with LoRA, 4 rows x 1,024 tokens, forward and backward twice, peak
    RSS grew from 11.7 to 16.7 GB across the two passes (a real run was killed at 23.9 GB);
    with the threshold fixed it stayed at 7.4 GB. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, threshold)


def make_optimizer(
    model: torch.nn.Module, optim: OptimSettings, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and its learning-rate schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameter")
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay
    )
    name = "constant_with_warmup" if optim.schedule == "constant" else optim.schedule
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=total_steps
    )
    return optimizer, scheduler


def prefix_sharing(run: RunSettings, model: ModelSettings) -> bool:
    """`run.share_prefix`, except under gradient checkpointing: transformers turns the KV cache
    off in a checkpointed model in training mode, and the shared prefix's keys and values are
    that cache (`token_logprobs` would get none back)."""
    return run.share_prefix and not model.gradient_checkpointing


def autocast_for(precision: Precision, device: torch.device) -> AbstractContextManager[object]:
    """The context the training forward passes run in (`RunSettings.precision`): nothing for
    "fp32"; for "bf16-autocast", torch's bfloat16 autocast on `device`'s type, so the matmuls run
    in bf16 while the weights and everything computed outside the context stay float32. Enter it
    around the model calls only: the loss and the backward call go outside."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def micro_batches(samples: Sequence[S], size: int, max_tokens: int | None = None) -> list[list[S]]:
    """Chunks of at most `size` samples and, with `max_tokens`, at most that many padded tokens
    (rows x longest row; a longer row goes alone), sorted by length so each chunk pads little.
    The order and the cut change no gradient: the micro-batch losses are summed over one
    optimizer step. The token cap bounds activation memory, which grows with padded tokens."""
    chunks: list[list[S]] = []
    for sample in sorted(samples, key=lambda s: s.length):
        chunk = chunks[-1] if chunks else None
        fits = chunk is not None and len(chunk) < size
        if fits and max_tokens is not None:
            fits = (len(chunk) + 1) * sample.length <= max_tokens  # sorted: it is the longest
        if fits:
            chunk.append(sample)
        else:
            chunks.append([sample])
    return chunks


def global_count(accelerator: Accelerator, count: float) -> float:
    """`count` summed over all processes."""
    if accelerator.num_processes == 1:
        return float(count)
    total = torch.tensor([float(count)], device=accelerator.device, dtype=torch.float64)
    return float(accelerator.reduce(total, reduction="sum").item())


def accumulate(
    accelerator: Accelerator,
    model: torch.nn.Module,
    chunks: Sequence[Any],
    loss_of: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
) -> list[dict[str, float]]:
    """Backward every chunk's loss into the gradients (synchronised across processes on the
    last chunk only); returns each chunk's metrics. Every process must pass >= 1 chunk."""
    if not chunks:
        raise ValueError("every process needs at least one micro-batch (DDP syncs on the last)")
    metrics = []
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            loss, chunk_metrics = loss_of(chunk)
            accelerator.backward(loss)
        metrics.append(chunk_metrics)
    return metrics


def optimizer_step(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    grad_clip: float,
) -> dict[str, float]:
    """Clip, step, advance the schedule, zero the gradients; the pre-clip norm and the lr used."""
    params = [p for p in model.parameters() if p.requires_grad]
    norm = accelerator.clip_grad_norm_(params, grad_clip)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {"grad_norm": float(norm), "lr": float(lr)}


def weighted_mean(rows: Sequence[dict[str, float]], weight: str = "tokens") -> dict[str, float]:
    """Metrics of several micro-batches as one: means weighted by `weight`, which is summed."""
    total = sum(r.get(weight, 0.0) for r in rows)
    out = {weight: total}
    for key in dict.fromkeys(k for r in rows for k in r if k != weight):
        out[key] = sum(r.get(key, 0.0) * r.get(weight, 0.0) for r in rows) / max(total, 1.0)
    return out


class StopRequest:
    """Ctrl-C handling: the first SIGINT asks the loop to stop after the current step (which then
    checkpoints and returns); a second one interrupts at once. Outside the main thread, where
    handlers cannot be installed, Ctrl-C keeps Python's default behaviour."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)",
            file=sys.stderr,
        )

    def agreed(self, accelerator: Accelerator) -> bool:
        """Whether any process was asked to stop (all processes must call this together)."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
