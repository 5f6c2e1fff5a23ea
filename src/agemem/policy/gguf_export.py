"""The trainer's weights as GGUF files for llama.cpp: a LoRA adapter, or a whole model.

Written with the `gguf` package the way llama.cpp's `convert_lora_to_gguf.py` and
`convert_hf_to_gguf.py` write them, for Llama-architecture models (SmolLM2):

- `write_lora`: peft's LoRA tensors (`get_peft_model_state_dict`) as `blk.{i}.attn_q.weight.lora_a`
  / `.lora_b` and so on, float32, with `general.type=adapter`, `adapter.type=lora` and
  `adapter.lora.alpha` (llama.cpp scales each pair by alpha / rank, peft's `lora_alpha / r`; under
  rsLoRA, alpha / sqrt(rank), the alpha written is `lora_alpha * sqrt(r)`). llama.cpp's Llama
  rotary embedding wants the query and key rows interleaved per head (`_permute`, as
  `convert_hf_to_gguf.py` does), so their `lora_b`, whose rows are the output rows, is permuted.
  Measured: SmolLM2-135M rank 16 all-linear, 4.9M parameters, 20 MB, written in ~0.1 s.
- `write_model`: every weight of a model (a PeftModel's base weights, adapters left out or
  merged in: `merge_lora`), its
  metadata (hyper-parameters, tokenizer, chat template) copied from a template GGUF of the same
  architecture: the shipped SmolLM2 file. Types: "q8_0" (default: what runs fastest here, see
  `agemem.policy.server`), "f16" or "f32"; norms stay float32.
- `matches_gguf`: whether a model's weights are exactly a GGUF's, dequantized (the trainer's
  SmolLM2 is the shipped Q4_1 file dequantized by transformers, so llama.cpp can serve that file
  as the base instead of an export).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import gguf
import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict

WeightType = Literal["q8_0", "f16", "f32"]
Template = str | Path | gguf.GGUFReader

_TYPES: dict[str, tuple[gguf.GGMLQuantizationType, gguf.LlamaFileType]] = {
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
}


class ExportError(ValueError):
    """The model cannot be written as llama.cpp GGUF; the message says why."""


def write_lora(model: PeftModel, path: str | Path) -> Path:
    """The active LoRA adapter of `model` as a llama.cpp GGUF adapter at `path`."""
    config = model.peft_config[model.active_adapter]
    if getattr(config, "use_dora", False) or config.rank_pattern or config.alpha_pattern:
        raise ExportError("llama.cpp adapters take one alpha and no DoRA: plain LoRA only")
    alpha = config.lora_alpha * (math.sqrt(config.r) if config.use_rslora else 1.0)
    base = _base(model)
    names = _names(base)
    tensors: dict[str, np.ndarray] = {}
    for key, tensor in get_peft_model_state_dict(model).items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise ExportError(f"{key}: not a LoRA matrix (only linear-layer LoRA is exported)")
        data = tensor.detach().float().cpu()
        if kind == "B.weight":
            data = _permuted(module, data, base.config)
        suffix = "lora_a" if kind == "A.weight" else "lora_b"
        tensors[f"{names.get_name(module)}.weight.{suffix}"] = data.numpy()
    if not tensors:
        raise ExportError("the model has no LoRA weights to export")
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    _finish(writer)
    return Path(path)


def write_model(
    model: torch.nn.Module,
    path: str | Path,
    template: Template,
    weights: WeightType = "q8_0",
    *,
    merge_lora: bool = False,
) -> Path:
    """All of `model`'s weights as a GGUF at `path`, with the metadata of `template`, a GGUF of
    the same architecture and shape. A PeftModel gives its base weights, adapters left out, or
    with `merge_lora` each adapted weight plus its active adapters' deltas (peft's
    `get_delta_weight`, computed apart: the model itself is not touched)."""
    qtype, file_type = _TYPES[weights]
    reader = read_gguf(template)
    expected = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    tensors = dict(_gguf_tensors(model, merge_lora=merge_lora))
    missing = sorted(set(expected) - set(tensors))
    wrong = [n for n, t in tensors.items() if n in expected and t.shape != expected[n]]
    if missing or wrong:
        raise ExportError(
            f"the model does not fit the template GGUF {Path(reader.data.filename).name}: "
            f"missing {missing[:3]}, other shapes {wrong[:3]}"
        )
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type)
    writer.add_file_type(file_type)
    for name in expected:  # the template's order
        data = tensors[name]
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    _finish(writer)
    return Path(path)


def matches_gguf(model: torch.nn.Module, path: Template) -> bool:
    """Whether every weight of the GGUF `path`, dequantized, equals `model`'s (a PeftModel: its
    base's) exactly, and the model has no weight the file lacks."""
    reader = read_gguf(path)
    tensors = dict(_gguf_tensors(model))
    if set(tensors) != {t.name for t in reader.tensors}:
        return False
    return all(
        np.array_equal(gguf.quants.dequantize(t.data, t.tensor_type), tensors[t.name])
        for t in reader.tensors
    )


def read_gguf(path: Template) -> gguf.GGUFReader:
    """A reader of the GGUF at `path` (a reader passes through: opening SmolLM2's file costs ~4 s
    on 2 busy cores, its 49k-token vocabulary, so callers that use it often keep one)."""
    return path if isinstance(path, gguf.GGUFReader) else gguf.GGUFReader(str(path))


def _gguf_tensors(
    model: torch.nn.Module, *, merge_lora: bool = False
) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array in llama.cpp's layout) of every weight of the model or, for a
    PeftModel, of its base model (the `base_layer` weights, adapters left out unless
    `merge_lora` adds their deltas)."""
    base = _base(model)
    names = _names(base)
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    for key, tensor in base.state_dict().items():
        if ".lora_" in key or (tied and key == "lm_head.weight"):
            continue
        module = key.removesuffix(".weight").replace(".base_layer", "")
        name = names.get_name(module)
        if name is None or not key.endswith(".weight"):
            raise ExportError(f"{key}: no llama.cpp tensor for it (Llama-architecture models only)")
        weight = tensor.detach().float().cpu()
        if merge_lora and ".base_layer" in key:
            layer = base.get_submodule(module)
            with torch.no_grad():
                for adapter in layer.active_adapters:
                    weight = weight + layer.get_delta_weight(adapter).float().cpu()
        yield f"{name}.weight", _permuted(module, weight, base.config).numpy()


def _base(model: torch.nn.Module) -> torch.nn.Module:
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type != "llama":
        raise ExportError(f"GGUF export handles Llama-architecture models, not {model_type!r}")
    return base


def _names(base: torch.nn.Module) -> gguf.TensorNameMap:
    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, base.config.num_hidden_layers)


def _permuted(module: str, rows: torch.Tensor, config: object) -> torch.Tensor:
    """Query/key output rows in llama.cpp's rotary layout (`LlamaModel.permute` of
    `convert_hf_to_gguf.py`): each head's two rotary halves interleaved. Other modules as is."""
    heads = getattr(config, "num_attention_heads", 0)
    if module.endswith("self_attn.k_proj"):
        heads = getattr(config, "num_key_value_heads", None) or heads
    elif not module.endswith("self_attn.q_proj"):
        return rows
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
