"""Parity with TRL 1.16: our step-wise GRPO loss equals `GRPOTrainer`'s on the same tokens.

How TRL is driven. A real `GRPOTrainer` is built around a tiny random Llama (`build_tiny`, saved
to a temporary directory and loaded back so that TRL can build its reference model from that local
path; nothing is downloaded), with `GRPOConfig(loss_type=..., epsilon=0.2, epsilon_high=0.28,
beta=0.1)`. Its `_compute_loss(model, inputs)`, which `compute_loss` delegates to on every training
step, gets the inputs dict `_generate_and_score_completions` would build for our turns: left-padded
`prompt_ids` / `prompt_mask`, right-padded `completion_ids` / `completion_mask`, one advantage per
sequence, `old_per_token_logps` (the sampler's logprobs), `ref_per_token_logps` (from TRL's own
`_get_per_token_logps_and_entropies` on its reference model) and `num_items_in_batch` (generated
tokens in the whole generation batch). TRL computes the policy log-probs itself, through its fused
LM head; we compute ours with `token_logprobs` on right-padded rows. The model is in train mode and
`current_gradient_accumulation_steps` holds the accumulation window, as `Trainer`'s loop sets it.
Two TRL defaults are switched off to compare the same objective: `bf16` (autocast; we compute in
float32) and `use_bias_correction_kl` (TRL 1.16 multiplies each token's k3 KL by the importance
ratio pi/pi_old; ours, as AgeMem's objective states it, is plain k3).
The policy weights are perturbed after the trainer is built, so policy and reference differ
(KL > 0), and the sampler's logprobs are the reference's plus noise, so tokens are clipped on both
sides.

TRL 1.16's loss types (`loss_type`): "dapo" (its default: sum over the generated tokens of the whole
accumulated batch divided by their number) is our "token-mean", including under gradient
accumulation; "grpo" (mean over each sequence's tokens, then over sequences) is our
"sequence-mean"; "bnpo" (token mean of each micro-batch; ours only without accumulation);
"dr_grpo" (sum / (sequences * max_completion_length)); "cispo", "sapo", "luspo" and "vespo"
are other objectives. We check "dapo" and "grpo".

The turns: a group of two append-only episodes (each turn's prompt is the previous prompt, the
previous completion and a tool observation, rendered by the tiny tokenizer's chat template),
three turns each, with advantages from `group_advantages`.
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

CORPUS = [
    "You manage memory. Alice lives in Paris. Bob works in Rome. Where does Alice live?",
    '<tool_call>[{"name": "Add_memory", "arguments": {"content": "Alice lives in Paris"}}]',
    "</tool_call> stored mem_1 <answer> Paris </answer> ok",
]
COMPLETIONS = [  # episode -> turns
    [
        '<tool_call>[{"name": "Add_memory", "arguments": {"content": "Alice lives in Paris"}}]'
        "</tool_call>",
        "<answer> Paris </answer>",
        "<answer> Rome </answer>",
    ],
    ["<answer> Rome </answer>", "ok", '<tool_call>[{"name": "Add_memory"}]</tool_call>'],
]
REWARDS = [1.0, 0.25]
EPS_LOW, EPS_HIGH, BETA = 0.2, 0.28, 0.1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread is ~50x faster than two on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = build_tiny(CORPUS, seed=0, layers=2, hidden=32, heads=2, ffn=64)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path)
    return path, tok


def _episode_turns(tok) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of every turn; each prompt extends the previous one."""
    turns = []
    for completions in COMPLETIONS:
        messages = [
            {"role": "system", "content": "You manage memory."},
            {"role": "user", "content": "Alice lives in Paris. Where does Alice live?"},
        ]
        for i, text in enumerate(completions):
            prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            turns.append((_ids(tok, prompt), _ids(tok, text + "<|im_end|>")))
            messages += [
                {"role": "assistant", "content": text},
                {"role": "tool", "content": f"stored mem_{i}"},
            ]
    return turns


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False).input_ids


def _trainer(tiny, loss_type: str, grad_accum: int):
    tiny_dir, tok = tiny
    config = trl.GRPOConfig(
        output_dir=str(tiny_dir / "out"),
        loss_type=loss_type,
        epsilon=EPS_LOW,
        epsilon_high=EPS_HIGH,
        beta=BETA,
        per_device_train_batch_size=6 // grad_accum,
        gradient_accumulation_steps=grad_accum,
        num_generations=2,
        use_cpu=True,
        bf16=False,  # TRL's default runs the forward under bf16 autocast; we compare in float32
        use_bias_correction_kl=False,  # TRL's default weighs the KL by the ratio; ours: plain k3
        report_to="none",
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=config,
        train_dataset=datasets.Dataset.from_dict({"prompt": ["x"] * 6}),
        processing_class=tok,
    )
    with torch.no_grad():  # the policy after some updates: it now differs from the reference
        gen = torch.Generator().manual_seed(1)
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = grad_accum
    return trainer


def _samples(trainer, tok) -> list[TrainSample]:
    """Our turns, with the sampler's logprobs = the reference model's plus noise in +-0.4."""
    turns = _episode_turns(tok)
    advantages = group_advantages(REWARDS, ["g", "g"]).tolist()
    gen = torch.Generator().manual_seed(2)
    samples = []
    for i, (prompt, completion) in enumerate(turns):
        row = collate([TrainSample(prompt, completion, [0.0] * len(completion), 0.0)])
        with torch.no_grad():
            lp = token_logprobs(trainer.ref_model, row.input_ids, row.attention_mask)
        old = lp[row.loss_mask.bool()] + (torch.rand(len(completion), generator=gen) - 0.5) * 0.8
        samples.append(TrainSample(prompt, completion, old.tolist(), advantages[i // 3]))
    return samples


def _ours(trainer, samples, aggregation, normalizer=None):
    batch = collate(samples)
    logp = token_logprobs(trainer.model, batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        ref = token_logprobs(trainer.ref_model, batch.input_ids, batch.attention_mask)
    return grpo_loss(
        logp, batch.old_logprobs, ref, batch.advantages, batch.loss_mask,
        clip_low=EPS_LOW, clip_high=EPS_HIGH, beta=BETA, aggregation=aggregation,
        normalizer=normalizer,
    )  # fmt: skip


def _grads(model) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    return grads


@pytest.mark.parametrize(
    ("aggregation", "loss_type"), [("token-mean", "dapo"), ("sequence-mean", "grpo")]
)
def test_loss_and_gradient_equal_trl(tiny, aggregation, loss_type) -> None:
    trainer = _trainer(tiny, loss_type, 1)
    samples = _samples(trainer, tiny[1])
    n_items = sum(len(s.completion_ids) for s in samples)

    ours, metrics = _ours(trainer, samples, aggregation)
    ours.backward()
    ours_grad = _grads(trainer.model)
    theirs = trainer._compute_loss(trainer.model, trl_inputs(trainer, samples, 0, n_items))
    theirs.backward()
    theirs_grad = _grads(trainer.model)

    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
    assert (ours_grad - theirs_grad).abs().max().item() < 1e-5
    logged = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["kl"] == pytest.approx(logged["kl"], abs=1e-6)
    assert metrics["clip_low"] == pytest.approx(logged["clip_ratio/low_mean"], abs=1e-6)
    assert metrics["clip_high"] == pytest.approx(logged["clip_ratio/high_mean"], abs=1e-6)
    # the example exercises both clip sides and the KL term
    assert metrics["clip_low"] > 0 and metrics["clip_high"] > 0 and metrics["kl"] > 1e-4


def test_gradient_accumulation_equals_trl_dapo(tiny) -> None:
    """Two micro-batches of three turns (uneven token counts): TRL "dapo" divides each by the
    whole window's token count, as our `normalizer`; both sum to the one-big-batch loss."""
    trainer = _trainer(tiny, "dapo", 2)
    samples = _samples(trainer, tiny[1])
    micro = [samples[:3], samples[3:]]
    n_items = sum(len(s.completion_ids) for s in samples)

    whole, _ = _ours(trainer, samples, "token-mean")
    ours = sum(_ours(trainer, m, "token-mean", normalizer=n_items)[0] for m in micro)
    theirs = sum(
        trainer._compute_loss(trainer.model, trl_inputs(trainer, m, 0, n_items)) for m in micro
    )
    assert ours.item() == pytest.approx(whole.item(), abs=1e-6)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-5)
