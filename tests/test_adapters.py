"""Shipped policies: LoRA adapters exported from training runs and merged into their base, on
real peft adapters over the real tiny model (and the command line's one-line errors)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from typer.testing import CliRunner

from agemem.cli import app
from agemem.policy import models
from agemem.policy.adapters import MANIFEST, PolicyFilesError, apply_adapters, export_policy
from agemem.policy.models import ModelNotAvailable, load_model
from agemem.policy.tiny import build_tiny


def trained_adapter(model, seed: int, path):
    """A LoRA adapter with random (nonzero) weights, as training leaves it, saved at `path`."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(model), config)
    peft_model.save_pretrained(path)
    return peft_model.merge_and_unload()


def test_exported_adapters_merge_in_order_into_the_base(tmp_path):
    base, _ = build_tiny(["one two three"], seed=0, layers=2, hidden=32, ffn=64)
    after_sft = trained_adapter(base, 1, tmp_path / "sft-run")
    after_grpo = trained_adapter(after_sft, 2, tmp_path / "grpo-run")  # trained on the merge
    out = export_policy(
        [("sft", tmp_path / "sft-run"), ("grpo", tmp_path / "grpo-run")],
        tmp_path / "policy",
        base="tiny",
        command="how to reproduce",
    )
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == {"base": "tiny", "adapters": ["sft", "grpo"], "command": "how to reproduce"}
    merged = apply_adapters(copy.deepcopy(base), out)
    sft_only = apply_adapters(copy.deepcopy(base), out, only=("sft",))
    for expected, got in ((after_grpo, merged), (after_sft, sft_only)):
        for (name, want), have in zip(
            expected.state_dict().items(), got.state_dict().values(), strict=True
        ):
            # the shipped weights are bfloat16: the merged deltas agree to its precision
            assert torch.allclose(want, have, atol=2e-3, rtol=1e-2), name
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(merged.state_dict()[q], base.state_dict()[q], atol=1e-2)
    with pytest.raises(PolicyFilesError, match="no adapter"):
        apply_adapters(copy.deepcopy(base), out, only=("dpo",))


def test_missing_or_malformed_policies_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(PolicyFilesError, match="not a LoRA adapter"):
        export_policy([("sft", tmp_path)], tmp_path / "policy", base="tiny", command="")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MANIFEST).write_text("{}")
    with pytest.raises(PolicyFilesError, match="not a policy manifest"):
        apply_adapters(build_tiny(["a"])[0], tmp_path / "bad")
    monkeypatch.setattr(models, "TRAINED_DIR", tmp_path / "nothing-shipped")
    with pytest.raises(ModelNotAvailable, match="agemem sft --preset smollm2-hotpotqa"):
        load_model("smollm2-135m-agemem")
    result = CliRunner().invoke(app, ["export-policy", "--sft", str(tmp_path), "--sft-only"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "not a LoRA adapter" in result.output


def test_a_lora_checkpoint_loads_as_its_base_with_the_adapter_merged(tmp_path):
    """A trainer's LoRA checkpoint (`checkpoints/step-N/model`, a peft adapter directory) loads
    as one plain model: the base it names with the adapter merged, as `agemem eval --policy`
    and an export see it."""
    base, tokenizer = load_model("smollm2-135m")
    merged = trained_adapter(base, 3, tmp_path / "model")  # base_model_name_or_path: the cache
    tokenizer.save_pretrained(tmp_path / "model")
    loaded, loaded_tokenizer = load_model(tmp_path / "model")
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    ids = torch.tensor([tokenizer.encode("Where did Annie Morton grow up?")])
    with torch.no_grad():
        want, got = merged(ids).logits, loaded(ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    assert not torch.allclose(got, load_model("smollm2-135m")[0](ids).logits, atol=1e-2)
    assert loaded_tokenizer.chat_template == tokenizer.chat_template
    config = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (tmp_path / "model" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailable, match="base model .* is not here"):
        load_model(tmp_path / "model")


def test_a_policy_directory_over_a_shipped_policy_loads_as_the_whole_stack(tmp_path):
    """GRPO from the shipped SFT policy: the adapter records that policy as its base, so its
    checkpoint loads with the SFT weights under it; exported over the SFT preset
    (`adapters.json` base `smollm2-135m-agemem-sft`), `load_model(DIR)` (`agemem eval --policy
    DIR`) gives the same model as the shipped SFT + GRPO preset."""
    sft, tokenizer = load_model("smollm2-135m-agemem-sft")
    merged = trained_adapter(sft, 4, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "smollm2-135m-agemem-sft"
    tokenizer.save_pretrained(tmp_path / "run")
    ids = torch.tensor([tokenizer.encode("Where did Annie Morton grow up?")])
    with torch.no_grad():
        assert torch.allclose(
            load_model(tmp_path / "run")[0](ids).logits, merged(ids).logits, atol=1e-4
        )

    shipped = models.TRAINED_DIR / "smollm2-135m-agemem" / "grpo"
    out = tmp_path / "seed"
    export = ["export-policy", "--grpo", str(shipped), "--base", "smollm2-135m-agemem-sft"]
    missing_out = CliRunner().invoke(app, [*export, "--grpo-only"])
    assert missing_out.exit_code == 2 and "--grpo-only needs --grpo DIR and --out DIR" in (
        missing_out.output
    )
    result = CliRunner().invoke(app, [*export, "--grpo-only", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["base"] == "smollm2-135m-agemem-sft" and manifest["adapters"] == ["grpo"]
    stacked, _ = load_model(out)
    reference, _ = load_model("smollm2-135m-agemem")
    for (name, want), have in zip(
        reference.state_dict().items(), stacked.state_dict().values(), strict=True
    ):
        assert torch.equal(want, have), name
