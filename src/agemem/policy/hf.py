"""`HFPolicy`: batched sampling from a local Hugging Face causal LM, with the token ids and
per-token logprobs that step-wise GRPO needs.

Generation is a hand-written loop over a KV cache rather than `model.generate`: it gives exact
per-sequence stopping (EOS or a stop string), drops finished rows from the batch and the cache so
long turns do not drag short ones, and records each sampled token's logprob as it goes.

Logprobs are `log_softmax(logits / temperature)`: the log-probability of the token under the
tempered distribution, before top-k or top-p truncation. That is the distribution the trainer's
loss recomputes (`token_logprobs(..., temperature=...)`, as TRL divides the logits by its
temperature both when it records the sampler's logprobs and in the loss), so the importance
ratio's "old" logprob is that of the distribution that sampled the token. Top-k and top-p only
shape sampling: their renormalised distribution is not recorded, since the loss cannot recompute
it differentiably. Greedy decoding (temperature 0) records the raw logits' logprobs.
`completion_logprobs` gives the same numbers from one plain forward pass.

Prefix cache (on by default, because it is exact): a batch's prompts all start with the same
chat-template header and system prompt, and an episode's next prompt is its last prompt plus the
turn and the new observation. The policy keeps the KV of the longest prefix common to the last
batch (one per policy object) and of each row's last prompt (up to `row_cache_tokens` tokens in
all, oldest dropped first). Each prompt is prefilled on its own from the longest kept prefix it
extends, so only its new tokens are computed: prefill is compute-bound, so running it row by
row costs little, while padding every row's new part to the longest would multiply the work.
The rows' KV are then right-aligned in one cache, the padding before them masked out, and
decoded together at their true positions (explicit `position_ids`), so every logit is that of a
plain forward pass over the row's full prompt, up to float rounding. Models with sliding-window
layers, whose cache drops old tokens, do without it and prefill one left-padded batch.

KV buffer: a batch's cache is allocated once for its longest possible turn (`_BufferedLayer`) and
each decoding step writes into it, instead of transformers' default of concatenating the whole
cache at every token, a copy that grows with the batch.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer
from transformers.models.llama import LlamaModel

from agemem.policy.base import Message, ToolSpec, Turn
from agemem.policy.models import PRESETS, load_model
from agemem.tokens import common_prefix_length

# The keyword a model's forward takes its KV cache by: `cache` since transformers renamed
# `past_key_values` (5.11 or so; the old name is a deprecated alias there); verl 0.9's environment
# pins transformers < 5.11, where only `past_key_values` exists.
CACHE_KW = (
    "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
)

# The AgeMem protocol ends a step with a tool call or an answer; stopping there saves the tokens
# a small model would otherwise ramble on with. The stop string is kept in the completion.
DEFAULT_STOP = ("</tool_call>", "</answer>")


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids) for left-padded sequences; positions start at 0
    at each sequence's first real token, so padding changes no logit."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def completion_logprobs(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """log pi(completion token | prompt + earlier completion tokens), one 1-D tensor per pair, from
    one forward pass over the left-padded batch, of the distribution `softmax(logits /
    temperature)` (1.0: the raw model's). Differentiable: the trainer calls it with grad."""
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need one prompt per completion, got {len(prompts)}/{len(completions)}")
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token to condition the completion on")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to define a distribution, got {temperature}")
    device = next(model.parameters()).device
    pairs = [[*p, *c] for p, c in zip(prompts, completions, strict=True)]
    ids, mask, positions = left_pad(pairs, 0, device)
    scored = max(len(c) for c in completions)  # only the tail of the batch predicts completions
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=scored + 1
    ).logits[:, :-1]
    targets = ids[:, ids.shape[1] - scored :]
    token_lp = torch.log_softmax(logits.float() / temperature, -1)
    token_lp = token_lp.gather(-1, targets[..., None]).squeeze(-1)
    return [token_lp[row, scored - len(c) :] for row, c in enumerate(completions)]


@dataclass
class GenerationStats:
    """Where generation work went, summed over `generate` calls: the prompt tokens the prefix
    cache spared the model, and prefill against decode time."""

    prompt_tokens: int = 0  # prompt tokens over all rows
    computed_tokens: int = 0  # prompt tokens run through the model; the rest came from the cache
    prefill_s: float = 0.0  # prompts -> first logits, prefix-cache upkeep included
    decode_s: float = 0.0  # the sampling loop after that

    @property
    def cached_share(self) -> float:
        """Share of prompt tokens served from the prefix cache (0 before any prompt)."""
        return 1 - self.computed_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class _RowKV:
    """One earlier prompt's KV, per layer `(keys, values)` of shape [1, heads, len(ids), dim]."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    weights: tuple[tuple[int, int], ...]


@dataclass
class _PrefixKV:
    """The KV (one row) of a token prefix, and the weights it was computed with."""

    ids: list[int]
    kv: DynamicCache
    weights: tuple[tuple[int, int], ...]


class HFPolicy:
    """A `Policy` over a local transformers model: one batched generation for all contexts.

    Defaults (ours; the papers leave them open): temperature 1.0 and no top-p/top-k truncation,
    so GRPO explores; `temperature=0` decodes greedily. Each turn's logprobs are those of the
    tempered, untruncated distribution (see the module docstring). The seed fixes the sampling
    stream of this policy object: the same calls in the same order give the same turns.
    `prefix_cache` (default on: exact, see the module docstring) reuses the KV of the prompts'
    shared prefix and of each row's earlier prompt, keeping at most `row_cache_tokens` tokens of
    the latter (ours: 16,384, ~0.75 GB for SmolLM2-135M in float32, two batches of 8
    one-thousand-token episodes); `stats` sums the prompt tokens it served and the prefill and
    decode time.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        device: str | torch.device | None = None,
        stop: Sequence[str] = DEFAULT_STOP,
        prefix_cache: bool = True,
        row_cache_tokens: int = 16_384,
    ) -> None:
        _check_settings(max_new_tokens, temperature, top_p, top_k)
        if row_cache_tokens < 0:
            raise ValueError(f"row_cache_tokens must be >= 0 (0 = off), got {row_cache_tokens}")
        self.model = (model.to(device) if device is not None else model).eval()
        self.tokenizer = tokenizer
        self.device = next(self.model.parameters()).device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p, self.top_k = top_p, top_k
        self.stop = tuple(stop)
        self.eos_ids = _eos_ids(self.model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._warpers = LogitsProcessorList()  # truncation on the tempered logits
        if top_k > 0:
            self._warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(top_p))
        self._generator = torch.Generator(self.device).manual_seed(seed)
        self._full_attention = _full_attention_only(self.model)
        self.prefix_cache = prefix_cache and self._full_attention
        self._prefix: _PrefixKV | None = None
        self.row_cache_tokens = row_cache_tokens
        self._rows: list[_RowKV] = []  # least recently used first
        self.stats = GenerationStats()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike[str], *, device: str = "cpu", **settings: Any
    ) -> HFPolicy:
        """A policy over a preset (with the preset's generation defaults) or a checkpoint dir;
        keyword `settings` override the defaults (max_new_tokens, temperature, seed...)."""
        model, tokenizer = load_model(name_or_path, device=device)
        preset = PRESETS.get(str(name_or_path))
        defaults = asdict(preset.generation) if preset else {}
        return cls(model, tokenizer, **{**defaults, **settings})

    def encode_prompt(
        self, messages: list[Message], tools: list[ToolSpec] | None = None
    ) -> list[int]:
        """Token ids of the chat template with the assistant generation prompt. Tools go to the
        template; a template that does not use them ignores them (the environment's system
        prompt then describes the tools)."""
        ids = self.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, return_dict=False
        )
        return list(ids)

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        for index, messages in enumerate(contexts):
            _check_context(index, messages)
        return self.generate([self.encode_prompt(m, tools) for m in contexts])

    def logprobs_of(self, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> list[float]:
        """Per-token logprobs of a completion, recomputed by one forward pass (no grad), in the
        distribution `generate` records: tempered by this policy's temperature (raw if greedy)."""
        with torch.inference_mode():
            return completion_logprobs(
                self.model, [prompt_ids], [completion_ids], self.temperature or 1.0
            )[0].tolist()

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]]) -> list[Turn]:
        """Sample one completion per prompt (token ids), all rows decoded in one batch. Each
        prompt is prefilled on its own from the longest cached prefix it extends: prefill is
        compute-bound, so batching it saves little, while padding every row's new part to the
        longest one (one row that missed the cache) would multiply the work."""
        if not prompts:
            return []
        if any(not p for p in prompts):
            raise ValueError("empty prompt: the chat template produced no tokens")
        start = time.perf_counter()
        if self._full_attention:
            logits, cache, mask, next_pos = self._prefill_rows(prompts)
        else:
            logits, cache, mask, next_pos = self._prefill_padded(prompts)
        self.stats.prompt_tokens += sum(len(p) for p in prompts)
        self.stats.prefill_s += time.perf_counter() - start
        start = time.perf_counter()
        rows = list(range(len(prompts)))  # batch row -> prompt index, shrinks as rows finish
        tokens: list[list[int]] = [[] for _ in prompts]
        logprobs: list[list[float]] = [[] for _ in prompts]
        reasons: list[str] = ["length"] * len(prompts)
        for step in range(self.max_new_tokens):
            if self.temperature > 0:
                logits = logits / self.temperature
            picked = self._sample(logits)
            picked_lp = torch.log_softmax(logits, -1).gather(-1, picked[:, None]).squeeze(-1)
            keep = []
            for row, (index, token, lp) in enumerate(
                zip(rows, picked.tolist(), picked_lp.tolist(), strict=True)
            ):
                tokens[index].append(token)
                logprobs[index].append(lp)
                if self._stopped(tokens[index]):
                    reasons[index] = "stop"
                else:
                    keep.append(row)
            if not keep or step == self.max_new_tokens - 1:
                break
            if len(keep) < len(rows):
                kept = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(kept)
                mask, picked, next_pos = mask[kept], picked[kept], next_pos[kept]
                rows = [rows[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            logits = self._forward(picked[:, None], mask, next_pos, cache)
            next_pos = next_pos + 1
        self.stats.decode_s += time.perf_counter() - start
        return [
            Turn(
                text=self.tokenizer.decode(tokens[i], skip_special_tokens=True),
                prompt_ids=list(prompts[i]),
                completion_ids=tokens[i],
                logprobs=logprobs[i],
                finish_reason=reasons[i],
            )
            for i in range(len(prompts))
        ]

    def _prefill_rows(
        self, prompts: list[list[int]]
    ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """Each prompt from its cached prefix (a kept row, else the batch's shared prefix, else
        nothing), then every row's KV right-aligned in one decoding cache: next-token logits,
        the cache, its attention mask and each row's next position."""
        shared = _shared_prefix(prompts) if self.prefix_cache else []
        sources = self._row_sources(prompts, len(shared))
        needs_shared = shared and any(row is None for row, _ in sources)
        common = self._prefix_kv(shared) if needs_shared else None
        kvs, logits = [], []
        for prompt, (row, n) in zip(prompts, sources, strict=True):
            kv = DynamicCache(config=self.model.config)
            kept = row.layers if row is not None else _layers(common)
            if kept:
                for layer, (keys, values) in zip(kv.layers, kept, strict=True):
                    layer.update(keys[:, :, :n], values[:, :, :n])  # a copy: the kept KV stays
            ids = torch.tensor([prompt[n:]], dtype=torch.long, device=self.device)
            out = self.model(input_ids=ids, **{CACHE_KW: kv}, use_cache=True, logits_to_keep=1)
            logits.append(out.logits[:, -1].float())
            kvs.append(kv)
            self.stats.computed_tokens += len(prompt) - n
        self._keep_rows(prompts, sources, kvs)
        lengths = [len(p) for p in prompts]
        width = max(lengths)
        cache = DynamicCache(config=self.model.config)
        cache.layers = [_BufferedLayer(width + self.max_new_tokens) for _ in cache.layers]
        for index, layer in enumerate(cache.layers):
            layer.update(
                _right_aligned([kv.layers[index].keys for kv in kvs], width),
                _right_aligned([kv.layers[index].values for kv in kvs], width),
            )
        mask = torch.tensor(
            [[0] * (width - n) + [1] * n for n in lengths], dtype=torch.long, device=self.device
        )
        next_pos = torch.tensor(lengths, device=self.device)[:, None]
        return torch.cat(logits), cache, mask, next_pos

    def _prefill_padded(
        self, prompts: list[list[int]]
    ) -> tuple[torch.Tensor, DynamicCache, torch.Tensor, torch.Tensor]:
        """Models with sliding-window layers: one left-padded batch in the model's own cache."""
        ids, mask, positions = left_pad(prompts, self.pad_id, self.device)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, positions, cache)
        self.stats.computed_tokens += sum(len(p) for p in prompts)
        return logits, cache, mask, positions[:, -1:] + 1

    def _row_sources(
        self, prompts: list[list[int]], shared: int
    ) -> list[tuple[_RowKV | None, int]]:
        """Per prompt, the kept row whose prompt shares more than `shared` tokens with it and
        the tokens it shares (one fewer than the prompt at most), or (None, shared)."""
        if not (self.prefix_cache and self.row_cache_tokens):
            return [(None, shared)] * len(prompts)
        weights = _weights_version(self.model)
        if any(row.weights != weights for row in self._rows):
            self._rows = []  # computed with other weights: useless now
        sources: list[tuple[_RowKV | None, int]] = []
        for prompt in prompts:
            best: tuple[_RowKV | None, int] = (None, shared)
            for row in self._rows:
                n = min(common_prefix_length(row.ids, prompt), len(prompt) - 1)
                if n > best[1]:
                    best = (row, n)
            sources.append(best)
        return sources

    def _keep_rows(
        self,
        prompts: list[list[int]],
        sources: list[tuple[_RowKV | None, int]],
        kvs: list[DynamicCache],
    ) -> None:
        """Keep each prompt's KV for the rows' next turns; a kept row that a prompt extended is
        dropped, the prompt's entry holds all of it. Oldest entries go beyond the budget."""
        if not (self.prefix_cache and self.row_cache_tokens):
            return
        used = {id(row) for row, _ in sources if row is not None}
        self._rows = [row for row in self._rows if id(row) not in used]
        weights = _weights_version(self.model)
        for prompt, kv in zip(prompts, kvs, strict=True):
            if len(prompt) <= self.row_cache_tokens:
                self._rows.append(_RowKV(list(prompt), _layers(kv), weights))
        while sum(len(row.ids) for row in self._rows) > self.row_cache_tokens:
            self._rows.pop(0)

    def _prefix_kv(self, ids: list[int]) -> DynamicCache:
        """The one-row KV of `ids`: the kept prefix cropped to what it shares with `ids`, then
        extended by the rest of `ids`; rebuilt from scratch when the weights changed in place."""
        weights = _weights_version(self.model)
        kept, self._prefix = self._prefix, None  # kept again only once consistent with `ids`
        if kept is None or kept.weights != weights:
            kept = _PrefixKV([], DynamicCache(config=self.model.config), weights)
        common = common_prefix_length(kept.ids, ids)
        if common < len(kept.ids):
            kept.kv.crop(common - len(kept.ids))
        if common < len(ids):
            rest = torch.tensor([ids[common:]], dtype=torch.long, device=self.device)
            self.model(input_ids=rest, **{CACHE_KW: kept.kv}, use_cache=True, logits_to_keep=1)
            self.stats.computed_tokens += len(ids) - common
        kept.ids = list(ids)
        self._prefix = kept
        return kept.kv

    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """Raw next-token logits (float32) of every row; only the last position is projected."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            **{CACHE_KW: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of each row from its (already tempered) logits: argmax when greedy,
        else a draw after top-k / top-p truncation."""
        if self.temperature == 0:
            return logits.argmax(-1)
        probs = torch.softmax(self._warpers(None, logits.clone()), -1)
        return torch.multinomial(probs, 1, generator=self._generator).squeeze(-1)

    def _stopped(self, tokens: list[int]) -> bool:
        if tokens[-1] in self.eos_ids:
            return True
        if not self.stop:
            return False
        # A stop string ends in the last few tokens the first time it appears; every token
        # decodes to at least one character, so len(stop) + 1 tokens cover it.
        window = max(len(s) for s in self.stop) + 1
        tail = self.tokenizer.decode(tokens[-window:], skip_special_tokens=False)
        return any(s in tail for s in self.stop)


class _BufferedLayer(DynamicLayer):
    """A full-attention cache layer writing into a buffer allocated once for the whole turn.

    `DynamicLayer` concatenates its whole cache with every new token: a copy of the full KV at
    each decoding step, which grows with the batch (8 rows of 700 tokens: ~100 MB per step on
    SmolLM2) and ate much of batching's gain on CPU. Here each step writes one column in place;
    `keys`/`values` are views of the filled part, so attention sees exactly what it would see.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.filled = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        rows, heads, _, dim = key_states.shape
        self._keys = key_states.new_empty(rows, heads, self.capacity, dim)
        self._values = value_states.new_empty(rows, heads, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV buffer of {self.capacity} tokens cannot take token {end}")
        self._keys[:, :, self.filled : end] = key_states
        self._values[:, :, self.filled : end] = value_states
        self.filled = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys, self._values = self._keys[indices], self._values[indices]
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self.filled]
        self.values = self._values[:, :, : self.filled]


def _layers(cache: DynamicCache | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (keys, values) of a one-row cache; none without a cache."""
    return [] if cache is None else [(layer.keys, layer.values) for layer in cache.layers]


def _right_aligned(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """Stack one-row tensors [1, heads, n, dim] into [rows, heads, width, dim], each ending at
    `width` and zero before (zeros, not garbage: masked keys still enter the matmul)."""
    out = parts[0].new_zeros(len(parts), parts[0].shape[1], width, parts[0].shape[3])
    for index, part in enumerate(parts):
        out[index, :, width - part.shape[2] :] = part[0]
    return out


def _shared_prefix(prompts: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix common to all `prompts`, shorter than each of them, so every
    row still feeds at least one token and gets next-token logits."""
    first = prompts[0]
    length = min(len(p) for p in prompts) - 1
    for other in prompts[1:]:
        length = next((i for i in range(length) if other[i] != first[i]), length)
    return list(first[:length])


def _weights_version(model: PreTrainedModel) -> tuple[tuple[int, int], ...]:
    """Changes whenever a parameter is replaced or modified in place (optimizer steps, loading a
    state dict): torch bumps a tensor's version counter on every in-place write."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def _full_attention_only(model: PreTrainedModel) -> bool:
    """Whether every cache layer keeps all past tokens, as a cropped, reused prefix needs."""
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """The tokenizer's EOS plus the generation config's (chat models often list several)."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    found = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return frozenset(found)


def _check_settings(max_new_tokens: int, temperature: float, top_p: float, top_k: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")


def _check_context(index: int, messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"context {index} must be a non-empty list of chat messages")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(
                f"context {index} has a message without a role: {message!r}; "
                "messages are OpenAI-style dicts {'role': ..., 'content': ...}"
            )
