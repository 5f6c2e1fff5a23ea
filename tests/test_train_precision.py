"""`run.precision="bf16-autocast"`: the training losses' forward passes under bfloat16 autocast
stay close to float32 on a real model (SmolLM2-135M with LoRA r16, the CPU preset's setting).

Four turns (146 tokens, 85 generated); torch seeded before the LoRA A init, the B matrices drawn
with std 0.02, so the policy differs from its adapters-off reference (KL ~0.03). GRPO runs at its
defaults (temperature 1.0, beta 0.1, clip 0.2/0.28) and on-policy, as its default single pass
is: the sampler's logprobs are the float32 model's.

Measured over eight seeds: the GRPO loss within 1.03% (relative) of float32, gradient cosine
>= 0.998; the SFT loss within 0.23%, cosine >= 0.9995. Tolerances: loss 2e-2 (GRPO) and 1e-2
(SFT) relative, cosine 0.99 (GRPO) and 0.999 (SFT). Per-token log-probs are off by 0.03 nats on
average, 0.13 at most; at temperature 0.7 the errors grow by 1/0.7 and a token may land on the
other side of a clip bound (GRPO loss within 2.8%, cosine down to 0.984), so this check stays at
the default temperature.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from agemem.train.batch import TrainSample, collate
from agemem.train.checkpoint import load_for_training
from agemem.train.config import GRPOConfig, LoraSettings, ModelSettings, RunSettings
from agemem.train.grpo import _Run, batch_loss
from agemem.train.grpo_loss import token_logprobs
from agemem.train.loop import autocast_for
from agemem.train.sft import sft_loss

TURNS = [
    (
        "Remember this: Alice lives in Paris and Bob moved to Rome last year."
        " Where does Alice live?",
        '<tool_call>[{"name": "Retrieve_memory", "arguments": {"query": "Alice"}}]</tool_call>',
    ),
    (
        "The meeting is on Monday at noon in room 4. Carol brings the slides. When is the meeting?",
        "<answer> Monday at noon </answer>",
    ),
    (
        "Store the fact that the capital of Australia is Canberra, not Sydney.",
        '<tool_call>[{"name": "Add_memory", "arguments": {"content": "The capital of Australia is'
        ' Canberra"}}]</tool_call>',
    ),
    ("Who brings the slides?", "<answer> Carol brings the slides </answer>"),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lora_model():
    torch.manual_seed(0)  # peft draws the LoRA A matrices from torch's global generator
    model, tok = load_for_training(ModelSettings(name="smollm2-135m", lora=LoraSettings(r=16)))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model, tok


@pytest.fixture(scope="module")
def samples(lora_model) -> list[TrainSample]:
    """The turns with the float32 model's logprobs as the sampler's, advantages +1, -1, +1, -1."""
    model, tok = lora_model
    out = []
    for i, (prompt, completion) in enumerate(TURNS):
        p = tok(prompt, add_special_tokens=False).input_ids
        c = tok(completion, add_special_tokens=False).input_ids
        row = collate([TrainSample(p, c, [0.0] * len(c), 0.0)])
        with torch.no_grad():
            lp = token_logprobs(model, row.input_ids, row.attention_mask, row.loss_mask)
        out.append(TrainSample(p, c, lp[row.loss_mask.bool()].tolist(), 1.0 - 2 * (i % 2)))
    return out


def _grads(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    model.zero_grad()
    return grads.double()


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def test_bf16_autocast_grpo_loss_and_gradient_are_close_to_fp32(lora_model, samples):
    model, tok = lora_model
    batch = collate(samples)
    tokens = float(batch.loss_mask.sum())
    results = {}
    for precision in ("fp32", "bf16-autocast"):
        config = GRPOConfig(run=RunSettings(precision=precision))
        run = _Run(config, Accelerator(cpu=True), model, "adapters-off", tok, *[None] * 5)
        loss, metrics, _ = batch_loss(run, batch, tokens)
        loss.backward()
        results[precision] = loss.item(), _grads(model), metrics
    (fp32, fp32_grad, metrics), (bf16, bf16_grad, _) = results.values()
    assert config.temperature == 1.0 and config.beta > 0
    assert metrics["kl"] > 0.01 and loss.dtype == torch.float32
    assert bf16 != fp32  # autocast really ran
    assert abs(bf16 - fp32) / abs(fp32) < 2e-2
    assert _cosine(bf16_grad, fp32_grad) > 0.99


def test_bf16_autocast_sft_loss_and_gradient_are_close_to_fp32(lora_model, samples):
    model, tok = lora_model
    tokens = float(sum(s.n_generated for s in samples))
    results = {}
    for precision in ("fp32", "bf16-autocast"):
        loss, _ = sft_loss(model, samples, tokens, tok.pad_token_id, precision)
        loss.backward()
        results[precision] = loss.item(), _grads(model)
    (fp32, fp32_grad), (bf16, bf16_grad) = results.values()
    assert bf16 != fp32
    assert abs(bf16 - fp32) / abs(fp32) < 1e-2
    assert _cosine(bf16_grad, fp32_grad) > 0.999


def test_autocast_for_turns_bf16_on_only_when_asked():
    with autocast_for("fp32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    with autocast_for("bf16-autocast", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert out.dtype == torch.bfloat16
