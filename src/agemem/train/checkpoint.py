"""Models and trainer state on disk: loading a model to train, and checkpoints that resume exactly.

A checkpoint directory `step-000010/` holds
- `model/`: the weights as `save_pretrained` writes them (the full model, or the LoRA adapter)
  plus the tokenizer, so a full-model checkpoint loads anywhere a model path is accepted;
- `trainer.pt`: optimizer and scheduler state and the step;
- `rng-<rank>.pt`: each process's Python, NumPy and torch RNG states;
- `state.json`: step, the last metrics and the run's config (written last: a directory without it
  is an interrupted save and is ignored).
It is written under a temporary name and renamed into place, so a crash never leaves half a
checkpoint behind.
"""

from __future__ import annotations

import json
import random
import shutil
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agemem.policy.models import PRESETS as MODEL_PRESETS
from agemem.policy.models import load_model
from agemem.policy.tiny import build_tiny
from agemem.train.config import ConfigError, ModelSettings

CHECKPOINT_PREFIX = "step-"
_LOOP = "{% for message in messages %}"
_NO_SYSTEM_LOOP = "{% for message in messages if message['role'] != 'system' %}"


# ---- models ------------------------------------------------------------------------------------


def load_for_training(
    settings: ModelSettings,
    *,
    corpus: Sequence[str] = (),
    memory_ids: Iterable[str] = (),
    adapter: str | Path | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """(model in train mode, tokenizer) as `settings` describe.

    `tiny` is built from `corpus` (the texts whose words it must know) and `memory_ids` (single
    tokens for the env's short ids). With `lora`, the model is wrapped in peft adapters, fresh or
    loaded from `adapter` (a checkpoint's `model/` directory).
    """
    if settings.name == "tiny":
        shape = settings.tiny_shape
        model, tokenizer = build_tiny(
            corpus,
            seed=settings.init_seed,
            memory_ids=memory_ids,
            layers=shape.layers,
            hidden=shape.hidden,
            heads=shape.heads,
            ffn=shape.ffn,
        )
        rescale_init(model, settings.init_std)
    else:
        model, tokenizer = load_model(settings.name)
    if not settings.system_prompt:
        tokenizer.chat_template = without_system(tokenizer.chat_template, settings.name)
    if settings.gradient_checkpointing:
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    if settings.lora is not None:
        model = _with_lora(model, settings, adapter)
    elif adapter is not None:
        raise ConfigError(f"{adapter} is a LoRA adapter but model.lora is not set")
    return model.train(), tokenizer


def rescale_init(model: torch.nn.Module, std: float, built_with: float = 0.02) -> None:
    """Scale a freshly built model's normal-initialised weights (linear layers, embeddings)
    from `built_with` (transformers' Llama default) to `std`; norms keep their ones."""
    if std == built_with:
        return
    weights = {
        id(m.weight): m.weight
        for m in model.modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Embedding)
    }
    with torch.no_grad():
        for weight in weights.values():  # once each: tied embeddings are one tensor
            weight.mul_(std / built_with)


def generation_length(settings: ModelSettings) -> int:
    """`max_new_tokens`, else the preset's generation default, else 256 (HFPolicy's)."""
    if settings.max_new_tokens is not None:
        return settings.max_new_tokens
    preset = MODEL_PRESETS.get(settings.name)
    return preset.generation.max_new_tokens if preset else 256


def without_system(template: str | None, name: str) -> str:
    """The chat template with system messages left out (idempotent)."""
    if template and _NO_SYSTEM_LOOP in template:
        return template
    if not template or _LOOP not in template:
        raise ConfigError(
            f"model {name!r}: model.system_prompt=false needs a chat template that loops "
            f"`{_LOOP}` (the tiny model's does); set model.system_prompt=true for this model"
        )
    return template.replace(_LOOP, _NO_SYSTEM_LOOP, 1)


def _with_lora(
    model: PreTrainedModel, settings: ModelSettings, adapter: str | Path | None
) -> PeftModel:
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` alias; nothing to act on
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        if adapter is not None:
            return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        lora = settings.lora
        assert lora is not None
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config)


def save_model(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, path: str | Path, *, merged: bool
) -> Path:
    """`save_pretrained` of the model (LoRA: the adapter, or the merged full model with
    `merged`) and its tokenizer into `path`."""
    path = Path(path)
    if merged and isinstance(model, PeftModel):
        base = _merged_copy(model)
        base.save_pretrained(path)
    else:
        model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_final(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """A run's end: the merged model at `out_dir/final` (it loads anywhere a model path is
    accepted, and the next stage starts from it) and, under LoRA, the adapter alone at
    `out_dir/final-adapter` (what `agemem export-policy` ships)."""
    final = save_model(model, tokenizer, out_dir / "final", merged=True)
    if isinstance(model, PeftModel):
        save_model(model, tokenizer, out_dir / "final-adapter", merged=False)
    return final


def _merged_copy(model: PeftModel) -> PreTrainedModel:
    """The base model with the adapters folded in, leaving `model` itself untouched."""
    import copy

    return copy.deepcopy(model).merge_and_unload()


# ---- trainer state -----------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    trainer: dict[str, Any],
    state: dict[str, Any],
    is_main: bool = True,
    rank: int = 0,
) -> Path:
    """Write one checkpoint (see the module docstring). `trainer`: optimizer/scheduler state and
    the step (`torch.save`d); `state`: JSON-able step, metrics, config. Under several processes
    every rank calls this (each writes its RNG file); the main one writes the rest."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, tokenizer, tmp / "model", merged=False)
        torch.save(trainer, tmp / "trainer.pt")
    _barrier()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    _barrier()
    if is_main:
        (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str), "utf-8")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    _barrier()
    return path


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def resume_point(resume: bool | str, out_dir: str | Path) -> Path | None:
    """The checkpoint a run resumes from: None for `resume=False` (or True with nothing saved
    yet: a fresh start), the latest under `out_dir` for True, else the directory given."""
    if resume is False:
        return None
    if resume is True:
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not (path / "state.json").is_file():
        raise ConfigError(f"resume={resume!r} is not a checkpoint directory (no state.json)")
    return path


def load_resumable(
    settings: ModelSettings, resume_from: Path | None, **options: Any
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The model to train: as `settings` say, or with the checkpoint's weights when resuming
    (its adapter under LoRA, else its full model and tokenizer). `options` go to
    `load_for_training` for a fresh start (the tiny model's corpus and ids)."""
    if resume_from is None:
        return load_for_training(settings, **options)
    if settings.lora is not None:
        return load_for_training(settings, adapter=resume_from / "model", **options)
    return load_for_training(settings.model_copy(update={"name": str(resume_from / "model")}))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint of the highest step under `out_dir`, or None."""
    root = Path(out_dir) / "checkpoints"
    found = sorted(root.glob(f"{CHECKPOINT_PREFIX}[0-9]*")) if root.is_dir() else []
    complete = [p for p in found if (p / "state.json").is_file() and p.suffix != ".tmp"]
    return complete[-1] if complete else None


def load_checkpoint(path: str | Path, rank: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer state for `torch.load`ed optimizer/scheduler/step, state.json) of a checkpoint,
    after restoring this rank's RNG states (rank 0's when the checkpoint has fewer ranks)."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint (no state.json); pass a step-* directory "
            "under <out_dir>/checkpoints or resume=true to take the latest"
        )
    state = json.loads((path / "state.json").read_text("utf-8"))
    trainer = torch.load(path / "trainer.pt", weights_only=False)  # our own file
    rng_file = path / f"rng-{rank}.pt"
    set_rng_state(
        torch.load(rng_file if rng_file.is_file() else path / "rng-0.pt", weights_only=False)
    )
    return trainer, state
