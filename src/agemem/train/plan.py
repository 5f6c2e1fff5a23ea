"""`agemem train --dry-run`: whether a GRPO config fits its hardware, before anything loads.

Every number comes from the model's `config.json` (layers, KV heads, head dim, hidden and MLP
sizes, vocabulary, dtype) and the config; no weights are read. Where the config comes from: a
checkpoint directory's own file; for a hub preset (`qwen2.5-7b-instruct`) the copy shipped in
`agemem/policy/architectures/` (no hub access needed); for the shipped SmolLM2 the converted
checkpoint's file (`agemem.policy.models.resolve_preset`); for GRPO's start that SFT has not
written yet, SFT's model.

Per training process (one per GPU), in bytes:
- weights: parameters x dtype size (a frozen copy again for a full-model KL reference);
- trainable state: LoRA's adapters in float32 (peft keeps them there) with their gradient and
  AdamW's two moments, 16 bytes a parameter; full fine-tuning, 3 more copies of the weights;
- rollout KV cache (`HFPolicy`): episodes per `generate` call x tokens per row x KV bytes per
  token (2 x layers x KV heads x head dim x dtype size; HFPolicy allocates each call's cache for
  its longest possible turn), plus the prefix/row cache it keeps between calls (16,384 tokens).
  A row is the prompt budget (the env's `t_max`, else the model's window) plus the response
  (`max_new_tokens`); a context over the budget is an overflow the reward penalises, so rows
  are assumed within it. With `rollout="llama.cpp"` the cache is the server's (f16, its slots
  as long as the window); with `"vllm"` it lives on the vLLM servers and is printed apart;
- update activations of one micro-batch of T padded tokens (T: `micro_batch_tokens`, else
  `micro_batch_size` rows): with gradient checkpointing, each layer's input (layers x T x
  hidden x dtype size) and one layer's working set; without, every layer's. A layer's working
  set is 34 x T x hidden bytes in 16-bit (Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models", without the attention-score term that SDPA
  avoids; scaled by the dtype size over 2); measured on SmolLM2 with LoRA: ~1.4 MB a token
  (README), this estimate 1.2 MB. Plus the vocabulary projection of the generated tokens (at
  most T): the logits in the model's dtype, their float32 log-softmax and its gradient.
Peak = weights + trainable state + the larger of rollout and update (the rollout's cache is
freed before the update). A configuration is refused when the peak passes 90% of the device's
memory (ours: the rest is for the CUDA context, allocator fragmentation and what the estimate
leaves out).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agemem.policy.models import PRESETS as MODEL_PRESETS
from agemem.train.config import ConfigError, GRPOConfig, PipelineConfig

ARCHITECTURES = Path(__file__).resolve().parents[1] / "policy" / "architectures"
HEADROOM = 0.9  # share of a device's memory a plan may use (module docstring)
ROW_CACHE_TOKENS = 16_384  # HFPolicy's default row_cache_tokens
GIB = 1024**3
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """The numbers of a decoder-only Llama/Qwen2-style model that its memory depends on."""

    source: str  # where the config was read
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    window: int  # max_position_embeddings
    tied: bool
    attention_bias: bool
    dtype: str

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str, dtype: str | None = None) -> Any:
        heads = config["num_attention_heads"]
        hidden = config["hidden_size"]
        bias = config.get("attention_bias", config.get("model_type") == "qwen2")
        dtype = dtype or config.get("dtype") or config.get("torch_dtype") or "float32"
        if dtype not in _DTYPE_BYTES:
            raise ConfigError(f"{source}: dtype {dtype!r} is not one of {sorted(_DTYPE_BYTES)}")
        return cls(
            source=source,
            layers=config["num_hidden_layers"],
            hidden=hidden,
            heads=heads,
            kv_heads=config.get("num_key_value_heads", heads),
            head_dim=config.get("head_dim") or hidden // heads,
            intermediate=config["intermediate_size"],
            vocab=config["vocab_size"],
            window=config["max_position_embeddings"],
            tied=bool(config.get("tie_word_embeddings", False)),
            attention_bias=bool(bias),
            dtype=dtype,
        )

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    def kv_bytes_per_token(self, dtype_bytes: int | None = None) -> int:
        """Keys and values of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * (dtype_bytes or self.dtype_bytes)

    def _shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    def parameters(self) -> int:
        shapes = self._shapes()
        linear = sum(a * b for a, b in shapes.values())
        bias = (shapes["q_proj"][1] + 2 * shapes["k_proj"][1]) if self.attention_bias else 0
        per_layer = linear + bias + 2 * self.hidden  # two RMSNorms
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + self.hidden  # final norm

    def lora_parameters(self, rank: int, targets: Sequence[str] | str) -> int:
        """Adapter parameters of rank `rank` on `targets` ("all-linear": every linear layer of
        the decoder, the LM head excepted, as peft does)."""
        names = _LORA_TARGETS if targets == "all-linear" else targets
        shapes = self._shapes()
        unknown = [n for n in names if n not in shapes]
        if unknown:
            raise ConfigError(f"model.lora.target_modules: no layers named {unknown} to plan for")
        return self.layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)


def architecture(name: str, fallback: str | None = None) -> Architecture:
    """The architecture of a model preset or checkpoint directory (module docstring); `fallback`
    (a preset or directory) when `name` is a directory not written yet (GRPO's SFT start)."""
    path = Path(name)
    if (path / "adapter_config.json").is_file():
        adapter = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        return architecture(adapter["base_model_name_or_path"])
    if (path / "config.json").is_file():
        return Architecture.from_config(_read(path / "config.json"), str(path))
    preset = MODEL_PRESETS.get(name)
    if preset is None:
        if fallback is not None:
            return architecture(fallback)
        raise ConfigError(f"model {name!r}: no config.json there and not a model preset")
    if preset.kind == "hub":
        shipped = ARCHITECTURES / f"{name}.json"
        if not shipped.is_file():
            raise ConfigError(f"model {name!r}: no architecture file {shipped} to plan with")
        source = f"{name} (agemem/policy/architectures/{shipped.name})"
        return Architecture.from_config(_read(shipped), source, preset.dtype)
    if preset.kind == "policy":
        from agemem.policy.adapters import PolicyManifest
        from agemem.policy.models import TRAINED_DIR

        return architecture(PolicyManifest.read(TRAINED_DIR / preset.source).base)
    if preset.kind == "in_process":
        raise ConfigError("the tiny model is built from its corpus: it has no config to plan with")
    from agemem.policy.models import resolve_preset

    config = resolve_preset(name) / "config.json"
    return Architecture.from_config(_read(config), str(config), preset.dtype)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Plan:
    """What one training process holds at its peak (module docstring); bytes unless named."""

    model: Architecture
    devices: int
    device_memory: int
    device: str  # "GPU" or "CPU"
    episodes_per_step: int
    rollouts_per_device: int
    eval_per_device: int
    per_call: int  # episodes per generate call (rollouts or evaluation, the larger)
    row_tokens: int
    prompt_budget: int
    max_new_tokens: int
    turns_per_episode: int | None  # upper bound over the first step's tasks (None: unknown)
    weights: int
    trainable_params: int
    trainable_state: int
    rollout_kv: int
    cache_kv: int
    server_kv: int  # on the vLLM servers (not this process's)
    micro_tokens: int
    update: int

    @property
    def rollout(self) -> int:
        return self.rollout_kv + self.cache_kv

    @property
    def peak(self) -> int:
        return self.weights + self.trainable_state + max(self.rollout, self.update)

    @property
    def fits(self) -> bool:
        return self.peak <= HEADROOM * self.device_memory

    def lines(self) -> list[str]:
        m, per_token = self.model, self.model.kv_bytes_per_token()
        turns = self.turns_per_episode
        generated = (
            f"{self.episodes_per_step * turns * self.max_new_tokens:,}"
            if turns
            else "unknown (no tasks to count turns on)"
        )
        server = (
            f"; on each vLLM server {_gib(self.server_kv)} of KV cache for its process's episodes"
            if self.server_kv
            else ""
        )
        return [
            f"hardware: {self.devices} {self.device}(s) of {_gib(self.device_memory)}",
            f"model: {m.source}: {m.parameters() / 1e9:.2f}B parameters, {m.dtype}, "
            f"{m.layers} layers, {m.kv_heads} KV heads x {m.head_dim} dims "
            f"-> {per_token / 1024:.1f} KiB of KV cache per token",
            f"episodes per step: {self.episodes_per_step} ({self.rollouts_per_device} per "
            f"{self.device}); held-out evaluation: {self.eval_per_device} per {self.device}",
            f"episodes per generate call: {self.per_call}",
            f"tokens per row: {self.row_tokens:,} (prompt budget {self.prompt_budget:,} + "
            f"response {self.max_new_tokens:,}); per generate call: "
            f"{self.per_call * self.row_tokens:,}",
            f"tokens per step: generated <= {generated}"
            + (f" ({turns} turns per episode at most)" if turns else "")
            + f"; per update micro-batch <= {self.micro_tokens:,}",
            f"peak KV cache per {self.device}: {_gib(self.rollout)} ({self.per_call} rows: "
            f"{_gib(self.rollout_kv)}, prefix/row cache {_gib(self.cache_kv)}){server}",
            f"weights {_gib(self.weights)}, trainable state {_gib(self.trainable_state)} "
            f"({self.trainable_params / 1e6:,.1f}M parameters), update activations "
            f"{_gib(self.update)}",
            f"peak per {self.device}: {_gib(self.peak)} of {_gib(self.device_memory)} "
            f"({self.peak / self.device_memory:.0%}; limit {HEADROOM:.0%}): "
            + ("fits" if self.fits else "does NOT fit"),
        ]

    def refusal(self) -> str:
        """The one-line error for a plan that does not fit."""
        return (
            f"this config needs ~{_gib(self.peak)} per {self.device} (weights "
            f"{_gib(self.weights)}, KV cache {_gib(self.rollout)}, update {_gib(self.update)}) "
            f"but {HEADROOM:.0%} of {_gib(self.device_memory)} is the limit: lower "
            "generate_batch, micro_batch_tokens or model.max_new_tokens, or use more devices"
        )


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def plan_grpo(config: GRPOConfig, start: str | None = None) -> Plan:
    """The memory plan of `config` on `config.hardware` (module docstring). `start`: the model
    to read when `config.model.name` is a directory not written yet (SFT's model)."""
    arch = architecture(config.model.name, fallback=start)
    from agemem.train.checkpoint import generation_length

    devices = config.hardware.gpus
    memory, device = _device_memory(config.hardware.memory_gb)
    response = generation_length(config.model)
    env, turns = _turn_bound(config)
    budget = env.t_max if env.t_max is not None else arch.window
    row = budget + response
    share = math.ceil(config.tasks_per_step / devices) * config.k
    evals = math.ceil(config.eval.n_tasks / devices)
    cap = config.generate_batch or max(share, evals)
    per_call = max(min(share, cap), min(evals, cap))
    per_token = arch.kv_bytes_per_token()
    rollout_kv = cache_kv = server_kv = 0
    if config.rollout == "hf":
        rollout_kv, cache_kv = per_call * row * per_token, ROW_CACHE_TOKENS * per_token
    elif config.rollout == "llama.cpp":  # its f16 cache: min(16, share) slots of the window
        rollout_kv = min(16, share) * arch.window * arch.kv_bytes_per_token(2)
    else:
        server_kv = share * row * per_token
    if config.rollout != "hf" and config.eval.n_tasks:  # evaluation samples with HFPolicy
        rollout_kv = max(rollout_kv, min(evals, cap) * row * per_token)
        cache_kv = ROW_CACHE_TOKENS * per_token
    lora = config.model.lora
    if lora is not None:
        trainable = arch.lora_parameters(lora.r, lora.target_modules)
        state = 16 * trainable
        weights = arch.parameters() * arch.dtype_bytes
    else:
        trainable = arch.parameters()
        state = 3 * trainable * arch.dtype_bytes
        weights = trainable * arch.dtype_bytes * (2 if config.beta else 1)
    micro = config.micro_batch_tokens or config.micro_batch_size * row
    return Plan(
        model=arch,
        devices=devices,
        device_memory=memory,
        device=device,
        episodes_per_step=config.tasks_per_step * config.k,
        rollouts_per_device=share,
        eval_per_device=evals,
        per_call=per_call,
        row_tokens=row,
        prompt_budget=budget,
        max_new_tokens=response,
        turns_per_episode=turns,
        weights=weights,
        trainable_params=trainable,
        trainable_state=state,
        rollout_kv=rollout_kv,
        cache_kv=cache_kv,
        server_kv=server_kv,
        micro_tokens=micro,
        update=update_bytes(arch, micro, config.model.gradient_checkpointing),
    )


def update_bytes(arch: Architecture, tokens: int, checkpointing: bool) -> int:
    """Activations of one micro-batch of `tokens` padded tokens (module docstring)."""
    layer = 34 * tokens * arch.hidden * arch.dtype_bytes // 2
    if checkpointing:
        activations = arch.layers * tokens * arch.hidden * arch.dtype_bytes + layer
    else:
        activations = arch.layers * layer
    logits = tokens * arch.vocab * (arch.dtype_bytes + 4 + 4)
    return activations + logits


def _device_memory(memory_gb: float | None) -> tuple[int, str]:
    """(bytes per device, "GPU" or "CPU"): as configured (a GPU's), else the first CUDA
    device's, else this machine's RAM."""
    if memory_gb is not None:
        return int(memory_gb * GIB), "GPU"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory, "GPU"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "CPU"


def _turn_bound(config: GRPOConfig) -> tuple[Any, int | None]:
    """(the first step's env, the most turns an episode of the first step's tasks can take:
    one per stage-1 message and per distractor, `stage3_max_turns` per question, `n_max` at
    most; None for AtomMem or when the tasks cannot be loaded here)."""
    from agemem.tasks import TaskError
    from agemem.train.curriculum import env_config, load_split, phase_at, step_seed, task_options

    _, phase = phase_at(config.curriculum, 0)
    env = env_config(config.env.preset, config.env.overrides, phase)
    if env.method != "agemem":
        return env, None
    try:
        tasks = load_split(
            config.tasks.source,
            task_options(config.tasks.options, phase),
            "train",
            config.tasks_per_step,
            seed=step_seed(config.run.seed, 0),
        )
    except (TaskError, OSError):
        return env, None
    turns = max(
        len(t.contextual) + len(t.distractors) + len(t.questions) * env.stage3_max_turns
        for t in tasks
    )
    return env, min(turns, env.n_max) if env.n_max is not None else turns


def dry_run(config: PipelineConfig, echo: Callable[[str], Any] = print) -> Plan:
    """`agemem train --dry-run`: the GRPO stage's plan, each line to `echo`; then a
    `ConfigError` with the one-line `Plan.refusal` when it does not fit. GRPO's model, when it
    is a directory not written yet (SFT's `final/`), is planned as SFT's model."""
    plan = plan_grpo(config.grpo, start=config.sft.model.name)
    for line in plan.lines():
        echo(line)
    if not plan.fits:
        raise ConfigError(plan.refusal())
    return plan
