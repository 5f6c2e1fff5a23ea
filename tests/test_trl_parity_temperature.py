"""Parity with TRL 1.16 at a sampling temperature other than 1: `GRPOTrainer(temperature=0.7)`
divides the logits by 0.7 in the policy's log-probs (its fused LM head) and in the reference's
(`_get_per_token_logps_and_entropies`); ours does the same through `token_logprobs(...,
temperature=0.7)`, so the loss and its gradient are TRL's.

TRL is driven as in `test_trl_parity.py` (a real trainer around a tiny random Llama saved to a
temporary directory; bf16 autocast and the ratio-weighted KL switched off; the policy perturbed so
that it differs from the reference), on four (prompt, completion) turns of one group. The
sampler's logprobs are the reference's at 0.7 plus noise in +-0.4, so both clip sides bind.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from agemem.bench.grpo import trl_inputs
from agemem.policy.tiny import build_tiny
from agemem.train import TrainSample, collate, group_advantages, grpo_loss, token_logprobs

trl = pytest.importorskip("trl", reason="pip install -c constraints.txt trl peft accelerate")
datasets = pytest.importorskip("datasets")
# raised inside transformers when TRL builds its config; nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated")

TEMPERATURE = 0.7
EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.1
PROMPTS = ["Alice lives in Paris. Where does Alice live?", "Bob works in Rome. Where is Bob?"]
COMPLETIONS = ["<answer> Paris </answer>", "<answer> Rome </answer> ok"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread is ~50x faster than two on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trainer_and_tokenizer(tmp_path_factory):
    model, tok = build_tiny(PROMPTS + COMPLETIONS, seed=0, layers=2, hidden=32, heads=2, ffn=64)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    config = trl.GRPOConfig(
        output_dir=str(path / "out"),
        loss_type="dapo",
        epsilon=EPS_LOW,
        epsilon_high=EPS_HIGH,
        beta=BETA,
        temperature=TEMPERATURE,
        per_device_train_batch_size=4,
        num_generations=2,
        use_cpu=True,
        bf16=False,
        use_bias_correction_kl=False,
        report_to="none",
    )
    trainer = trl.GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=config,
        train_dataset=datasets.Dataset.from_dict({"prompt": ["x"] * 4}),
        processing_class=tok,
    )
    with torch.no_grad():  # the policy after some updates: it now differs from the reference
        gen = torch.Generator().manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer, tok


def _samples(trainer, tok) -> list[TrainSample]:
    """Four turns (each prompt with each completion) of one group of two episodes."""
    advantages = group_advantages([1.0, 0.25], ["g", "g"]).tolist()
    gen = torch.Generator().manual_seed(2)
    samples = []
    for i, (prompt, completion) in enumerate((p, c) for p in PROMPTS for c in COMPLETIONS):
        prompt_ids = tok(prompt, add_special_tokens=False).input_ids
        completion_ids = tok(completion + "<|im_end|>", add_special_tokens=False).input_ids
        n = len(completion_ids)
        row = collate([TrainSample(prompt_ids, completion_ids, [0.0] * n, 0.0)])
        with torch.no_grad():
            lp = token_logprobs(
                trainer.ref_model, row.input_ids, row.attention_mask, temperature=TEMPERATURE
            )
        old = lp[row.loss_mask.bool()] + (torch.rand(n, generator=gen) - 0.5) * 0.8
        samples.append(TrainSample(prompt_ids, completion_ids, old.tolist(), advantages[i // 2]))
    return samples


def test_loss_and_gradient_equal_trl_at_temperature_0_7(trainer_and_tokenizer) -> None:
    trainer, tok = trainer_and_tokenizer
    samples = _samples(trainer, tok)
    n_items = sum(len(s.completion_ids) for s in samples)

    batch = collate(samples)
    args = (batch.input_ids, batch.attention_mask, batch.loss_mask, TEMPERATURE)
    logp = token_logprobs(trainer.model, *args)
    with torch.no_grad():
        ref = token_logprobs(trainer.ref_model, *args)
    ours, metrics = grpo_loss(
        logp, batch.old_logprobs, ref, batch.advantages, batch.loss_mask,
        clip_low=EPS_LOW, clip_high=EPS_HIGH, beta=BETA,
    )  # fmt: skip
    ours.backward()
    ours_grad = _grads(trainer.model)
    theirs = trainer._compute_loss(trainer.model, trl_inputs(trainer, samples, 0, n_items))
    theirs.backward()
    theirs_grad = _grads(trainer.model)

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert (ours_grad - theirs_grad).abs().max().item() < 1e-5
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["kl"] == pytest.approx(logged["kl"], abs=1e-6)
    assert metrics["clip_low"] > 0 and metrics["clip_high"] > 0 and metrics["kl"] > 1e-4
    # at temperature 1 ours would be another loss: the check tells the two apart
    at_one = token_logprobs(trainer.model, *args[:3])
    assert (at_one - logp).abs().max().item() > 1e-2


def _grads(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return grads
