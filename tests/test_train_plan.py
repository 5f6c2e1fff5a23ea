"""`agemem train --dry-run`: the memory plan's numbers against the real SmolLM2 (parameters,
LoRA parameters, KV cache bytes measured on a forward pass) and Qwen2.5-7B's published size, the
`paper` preset's plan on 8 x 80 GB, and the one-line refusal of a config that cannot fit."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from typer.testing import CliRunner

from agemem.cli import app
from agemem.policy.models import load_model
from agemem.train.config import ConfigError, load_config
from agemem.train.plan import GIB, architecture, dry_run, plan_grpo


def test_qwen_7b_numbers_come_from_its_config():
    qwen = architecture("qwen2.5-7b-instruct")
    assert qwen.parameters() == 7_615_616_512  # Qwen2.5-7B-Instruct's published count
    assert qwen.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2  # 56 KiB in bf16
    # LoRA r64 on every linear layer: r x (in + out) per projection, 28 layers
    per_layer = 64 * ((3584 + 3584) * 2 + (3584 + 512) * 2 + (3584 + 18944) * 2 + 18944 + 3584)
    assert qwen.lora_parameters(64, "all-linear") == 28 * per_layer


def test_smollm2_plan_matches_the_real_model():
    """Parameters, LoRA parameters and KV cache bytes per token of the shipped SmolLM2, as the
    plan computes them from its config.json, against the loaded model."""
    arch = architecture("smollm2-135m")
    model, _ = load_model("smollm2-135m")
    assert arch.parameters() == sum(p.numel() for p in model.parameters())
    ids = torch.arange(1, 33)[None]
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    kv = sum(
        t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)
    )
    assert arch.kv_bytes_per_token() == kv / ids.shape[1]
    lora = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert arch.lora_parameters(16, "all-linear") == trainable


def test_the_paper_preset_fits_8_gpus_of_80_gb():
    config = load_config("paper")
    plan = plan_grpo(config.grpo, start=config.sft.model.name)  # GRPO's start is SFT's model
    assert plan.devices == 8 and plan.device_memory == 80 * GIB
    assert plan.rollouts_per_device == 16 and plan.eval_per_device == 25
    assert plan.per_call == 16 and plan.row_tokens == 8192 + 2048
    assert plan.rollout_kv == 16 * 10_240 * 57_344
    assert plan.fits and plan.peak < 0.6 * 80 * GIB
    lines: list[str] = []
    dry_run(config, lines.append)
    assert "episodes per generate call: 16" in lines
    assert lines[-1].endswith(": fits")


def test_a_config_that_cannot_fit_is_refused_in_one_line():
    # evaluation on one GPU, uncapped: 200 rows of 10,240 tokens of KV cache at once
    config = load_config("paper", ["grpo.hardware.gpus=1", "grpo.generate_batch=null"])
    with pytest.raises(ConfigError, match=r"needs ~\d+\.\d\d GiB per GPU"):
        dry_run(config, lambda line: None)
    result = CliRunner().invoke(
        app,
        ["train", "--preset", "paper", "--dry-run", "--set", "grpo.hardware.memory_gb=24"],
    )
    assert result.exit_code == 2
    error = result.stderr.strip()
    assert error.startswith("error: this config needs") and "\n" not in error
    assert "does NOT fit" in result.stdout
