"""Step-wise GRPO objective: advantages, log-prob shift, loss, loss mask, gradient accumulation.

Everything runs on real torch; the model is a real tiny random Llama (`build_tiny`) or, for the
shift test, a one-layer bigram net whose next-token distribution can be written down by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from agemem.episode import Episode, EpisodeFacts, ParsedActions, StepSample
from agemem.policy.tiny import build_tiny
from agemem.train import (
    TrainSample,
    collate,
    group_advantages,
    grpo_loss,
    pack_turns,
    step_samples,
    token_logprobs,
)
from agemem.train.grpo_loss import MIN_SHARED_PREFIX, shared_prefix_length
from agemem.train.loop import micro_batches


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one torch thread is ~50x faster than two on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- advantages --------------------------------------------------------------------------------


def test_group_advantages_by_hand() -> None:
    rewards = [1.0, 2.0, 0.0, 0.3, 0.5, 0.3, 0.3]
    groups = ["a", "b", "a", "c", "a", "c", "c"]  # interleaved on purpose
    adv = group_advantages(rewards, groups).tolist()
    # group a = [1, 0, 0.5]: mean 0.5, deviations (0.5, -0.5, 0),
    # sample variance (0.25 + 0.25 + 0) / (3 - 1) = 0.25 -> std 0.5 (population std would be 0.408)
    a = 0.5 / (0.5 + 1e-4)
    assert adv[0] == pytest.approx(a, abs=1e-6)
    assert adv[2] == pytest.approx(-a, abs=1e-6)
    assert adv[4] == 0.0
    assert adv[1] == 0.0  # group b has one episode
    assert adv[3] == adv[5] == adv[6] == 0.0  # group c: all rewards equal, exactly 0

    # eps is added to the std: 0.5 / (0.5 + 0.5) = 0.5
    wide = group_advantages([1.0, 0.0, 0.5], ["a"] * 3, eps=0.5).tolist()
    assert wide == pytest.approx([0.5, -0.5, 0.0], abs=1e-7)

    # two episodes: mean 0, sample std sqrt((1 + 1) / 1) = sqrt(2)
    pair = group_advantages([1.0, -1.0], ["x", "x"]).tolist()
    assert pair == pytest.approx([1 / (math.sqrt(2) + 1e-4), -1 / (math.sqrt(2) + 1e-4)], abs=1e-6)


def test_group_advantages_mean_only() -> None:
    # AtomMem: r - mean, no division. Group a mean 0.5; group b mean (4 + 1) / 2 = 2.5.
    adv = group_advantages([1.0, 4.0, 0.0, 1.0], ["a", "b", "a", "b"], scale="none").tolist()
    assert adv == pytest.approx([0.5, 1.5, -0.5, -1.5])


@pytest.mark.parametrize(
    ("rewards", "groups", "kwargs", "message"),
    [
        ([1.0, 0.0], ["a"], {}, "one group id per reward"),
        ([1.0, float("nan")], ["a", "a"], {}, "finite"),
        ([1.0, 0.0], ["a", "a"], {"scale": "batch"}, "scale"),
        ([1.0, 0.0], ["a", "a"], {"eps": 0.0}, "eps"),
    ],
)
def test_group_advantages_rejects_bad_input(rewards, groups, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards, groups, **kwargs)


# ---- log-probs: the shift ----------------------------------------------------------------------


class Bigram(nn.Module):
    """Logits at position t depend on token t only: a table lookup, so the right answer is known.
    It takes a causal LM's call (`use_cache` has nothing to cache here)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool):
        return SimpleNamespace(logits=self.table[input_ids])


def test_token_logprobs_shift_by_hand() -> None:
    # vocabulary of 3; the row of token i holds the logits of the token that follows i
    table = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ids = torch.tensor([[0, 2, 1]])
    lp = token_logprobs(Bigram(table), ids, torch.ones_like(ids))
    lse0 = math.log(1 + math.e + math.e**2)  # logsumexp of row 0
    lse2 = math.log(2 + math.e**3)  # logsumexp of row 2
    # position 0 predicts nothing; position 1 holds log p(2 | 0) = 2 - lse0 (row 0, column 2);
    # position 2 holds log p(1 | 2) = 0 - lse2. An unshifted version would read row 2 at position 1.
    assert lp.tolist()[0] == pytest.approx([0.0, 2.0 - lse0, 0.0 - lse2], abs=1e-6)


def test_token_logprobs_at_a_temperature_by_hand() -> None:
    """Temperature T divides the logits before the log-softmax, on the full pass and on `only`
    alike; T=1 is the raw model's; T <= 0 defines no distribution."""
    table = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ids = torch.tensor([[0, 2, 1]])
    mask = torch.ones_like(ids)
    expected = [0.0, 4.0 - math.log(1 + math.e**2 + math.e**4), 0.0 - math.log(2 + math.e**6)]
    assert token_logprobs(Bigram(table), ids, mask, temperature=0.5).tolist()[0] == pytest.approx(
        expected, abs=1e-6
    )
    assert torch.equal(
        token_logprobs(Bigram(table), ids, mask, temperature=1.0),
        token_logprobs(Bigram(table), ids, mask),
    )
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs(Bigram(table), ids, mask, temperature=0.0)

    model, tok = build_tiny(["a b c d e f g 0 1 2"], seed=0, layers=2, hidden=32, ffn=64)
    batch = collate(pack_turns(_append_only_turns(tok, 1.0)))
    on = batch.loss_mask.bool()
    with torch.no_grad():
        full = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.7)
        only = token_logprobs(
            model, batch.input_ids, batch.attention_mask, batch.loss_mask, temperature=0.7
        )
    assert torch.allclose(only[on], full[on], atol=1e-6)


def test_token_logprobs_match_one_prefix_at_a_time() -> None:
    """On a right-padded batch, each value equals the definition: one forward pass on the prefix."""
    model, _ = build_tiny(["one two three four five"], seed=0, layers=2, hidden=32, ffn=64)
    samples = [
        TrainSample([5, 6, 7], [8, 9], [0.0, 0.0], 1.0),
        TrainSample([5], [10, 11, 12, 13], [0.0] * 4, 1.0),
    ]
    batch = collate(samples, pad_id=3)
    with torch.no_grad():
        lp = token_logprobs(model, batch.input_ids, batch.attention_mask)
        for row, sample in enumerate(samples):
            seq = sample.prompt_ids + sample.completion_ids
            for t in range(len(sample.prompt_ids), len(seq)):
                logits = model(input_ids=torch.tensor([seq[:t]])).logits[0, -1]
                expected = torch.log_softmax(logits, -1)[seq[t]]
                assert lp[row, t].item() == pytest.approx(expected.item(), abs=1e-5)


def test_token_logprobs_on_generated_positions_only() -> None:
    """`only=loss_mask` projects just the generated positions onto the vocabulary: the same values
    and the same gradient as the full pass, exactly 0 elsewhere."""
    model, tok = build_tiny(["a b c d e f g 0 1 2"], seed=0, layers=2, hidden=32, ffn=64)
    batch = collate(pack_turns(_append_only_turns(tok, 1.0)) + _random_samples(len(tok), 3, 5))
    mask = batch.loss_mask.bool()

    def grad_of(lp: torch.Tensor) -> torch.Tensor:
        model.zero_grad()
        (lp * batch.loss_mask * torch.linspace(0.5, 1.5, lp.shape[1])).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = token_logprobs(model, batch.input_ids, batch.attention_mask)
    only = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    assert torch.allclose(only[mask], full[mask], atol=1e-6)
    assert (only[~mask] == 0).all()
    assert torch.allclose(grad_of(only), grad_of(full), atol=1e-6, rtol=1e-4)

    with pytest.raises(ValueError, match="position 0"):
        token_logprobs(model, batch.input_ids, batch.attention_mask, torch.ones_like(mask))


def test_a_shared_prefix_computed_once_gives_the_values_and_gradient_of_the_whole_batch() -> None:
    """Rows that start alike (a system prompt) run that prefix once: same log-probs and gradient
    as each row run whole, padding and temperature included."""
    model, tok = build_tiny(["a b c d e f g 0 1 2"], seed=0, layers=2, hidden=32, ffn=64)
    system = list(range(4, 4 + MIN_SHARED_PREFIX + 3))
    samples = [
        TrainSample(system + [7, 8], [9, 10, 11], [0.0] * 3, 1.0),
        TrainSample(system + [12], [13], [0.0], -1.0),
        TrainSample(system + [7, 14, 15, 16], [17, 18], [0.0] * 2, 0.5),
    ]
    batch = collate(samples, pad_id=0)
    mask = batch.loss_mask.bool()
    keep = torch.nn.functional.pad(mask[:, 1:], (0, 1))
    assert shared_prefix_length(batch.input_ids, batch.attention_mask, keep) == len(system)

    def run(share: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        lp = token_logprobs(
            model, batch.input_ids, batch.attention_mask, batch.loss_mask, 0.7, share_prefix=share
        )
        (lp * batch.loss_mask * torch.linspace(0.5, 1.5, lp.shape[1])).sum().backward()
        return lp.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])

    whole, shared = run(False), run(True)
    assert torch.allclose(shared[0], whole[0], atol=1e-5)
    assert torch.allclose(shared[1], whole[1], atol=1e-6, rtol=1e-4)
    # what cannot be shared: one row, a short prefix, a kept logit inside the prefix
    one = collate(samples[:1])
    assert (
        shared_prefix_length(one.input_ids, one.attention_mask, keep[:1, : one.input_ids.shape[1]])
        == 0
    )
    short = collate([TrainSample([4, 5], [6], [0.0], 1.0), TrainSample([4, 5, 7], [6], [0.0], 1.0)])
    no_keep = torch.zeros_like(short.input_ids, dtype=torch.bool)
    assert shared_prefix_length(short.input_ids, short.attention_mask, no_keep) == 0
    early = keep.clone()
    early[1, MIN_SHARED_PREFIX + 1] = True
    assert (
        shared_prefix_length(batch.input_ids, batch.attention_mask, early) == MIN_SHARED_PREFIX + 1
    )


def test_micro_batches_cap_rows_and_padded_tokens() -> None:
    samples = [TrainSample([1] * n, [2], [0.0], 1.0) for n in (9, 1, 4, 2, 30, 3)]  # lengths n+1
    by_rows = micro_batches(samples, 4)
    assert [[s.length for s in c] for c in by_rows] == [[2, 3, 4, 5], [10, 31]]
    # at most 10 padded tokens (rows x longest): a 31-token row still goes, alone
    capped = micro_batches(samples, 4, max_tokens=10)
    assert [[s.length for s in c] for c in capped] == [[2, 3], [4, 5], [10], [31]]
    assert sorted(s.length for c in capped for s in c) == sorted(s.length for s in samples)


# ---- the loss by hand --------------------------------------------------------------------------

RATIOS_1, RATIOS_2 = [1.5, 0.9, 0.5], [0.5, 1.5]  # sequence 1: A = +2; sequence 2: A = -0.5
OLD_1, OLD_2 = [-1.0, -2.0, -0.5], [-1.5, -3.0]


def _hand_example() -> dict[str, torch.Tensor]:
    """Two sequences, width 6: sequence 1 = 2 prompt tokens + 3 generated + 1 pad; sequence 2 =
    1 prompt token + 2 generated + 3 pads. Off-mask positions hold junk that must not leak in
    (ref - logp = 130 there would overflow exp() to inf, and inf * 0 = nan)."""
    junk_lp, junk_old, junk_ref = -30.0, 0.0, 100.0
    logprobs = torch.full((2, 6), junk_lp)
    old = torch.full((2, 6), junk_old)
    mask = torch.zeros(2, 6)
    adv = torch.zeros(2, 6)
    for row, start, ratios, olds, a in [
        (0, 2, RATIOS_1, OLD_1, 2.0),
        (1, 1, RATIOS_2, OLD_2, -0.5),
    ]:
        for j, (r, o) in enumerate(zip(ratios, olds, strict=True)):
            old[row, start + j] = o
            logprobs[row, start + j] = o + math.log(r)  # so that exp(logp - old) = r
            mask[row, start + j] = 1.0
            adv[row, start + j] = a
    ref = torch.where(mask.bool(), old, junk_ref)  # ref = old: ref - logp = -ln r
    return {"logprobs": logprobs, "old": old, "ref": ref, "adv": adv, "mask": mask}


def test_loss_by_hand() -> None:
    ex = _hand_example()
    logprobs = ex["logprobs"].requires_grad_()
    loss, metrics = grpo_loss(logprobs, ex["old"], ex["ref"], ex["adv"], ex["mask"])

    # policy term -min(r * A, clip(r, 0.8, 1.28) * A) per token:
    #   A = +2:   r 1.5 -> -min(3.0, 2.56) = -2.56 (high clip binds); r 0.9 -> -1.8;
    #             r 0.5 -> -min(1.0, 1.6) = -1.0 (the low clip never binds for A > 0)
    #   A = -0.5: r 0.5 -> -min(-0.25, -0.4) = 0.4 (low clip binds);
    #             r 1.5 -> -min(-0.75, -0.64) = 0.75
    policy = [-2.56, -1.8, -1.0, 0.4, 0.75]
    # k3 with ref - logp = -ln r: exp(-ln r) + ln r - 1 = 1/r + ln r - 1
    kl = [1 / r + math.log(r) - 1 for r in RATIOS_1 + RATIOS_2]
    per_token = [p + 0.1 * k for p, k in zip(policy, kl, strict=True)]
    assert loss.item() == pytest.approx(sum(per_token) / 5, abs=1e-6)  # token-mean, ~ -0.82673

    assert metrics["clip_high"] == pytest.approx(1 / 5)
    assert metrics["clip_low"] == pytest.approx(1 / 5)
    assert metrics["ratio"] == pytest.approx(sum(RATIOS_1 + RATIOS_2) / 5)
    assert metrics["kl"] == pytest.approx(sum(kl) / 5, abs=1e-6)
    assert metrics["entropy"] == pytest.approx(-float((logprobs.detach() * ex["mask"]).sum()) / 5)
    assert metrics["tokens"] == 5

    # gradient d loss / d logp per token, / 5: a binding clip stops the policy gradient;
    # unclipped: -r * A; KL: d/dlogp (e^(ref-logp) - (ref-logp) - 1) = 1 - e^(ref-logp) = 1 - 1/r
    loss.backward()
    grad = logprobs.grad
    assert grad[0, 2].item() == pytest.approx(0.1 * (1 - 1 / 1.5) / 5, abs=1e-6)  # clipped
    assert grad[0, 3].item() == pytest.approx((-0.9 * 2 + 0.1 * (1 - 1 / 0.9)) / 5, abs=1e-6)
    assert grad[1, 1].item() == pytest.approx(0.1 * (1 - 1 / 0.5) / 5, abs=1e-6)  # clipped
    assert grad[1, 2].item() == pytest.approx((1.5 * 0.5 + 0.1 * (1 - 1 / 1.5)) / 5, abs=1e-6)
    assert torch.all(grad[ex["mask"] == 0] == 0)


def test_loss_sequence_mean_and_no_kl_by_hand() -> None:
    ex = _hand_example()
    kl = [1 / r + math.log(r) - 1 for r in RATIOS_1 + RATIOS_2]
    seq1 = (-2.56 - 1.8 - 1.0 + 0.1 * sum(kl[:3])) / 3
    seq2 = (0.4 + 0.75 + 0.1 * sum(kl[3:])) / 2
    loss, _ = grpo_loss(
        ex["logprobs"], ex["old"], ex["ref"], ex["adv"], ex["mask"], aggregation="sequence-mean"
    )
    assert loss.item() == pytest.approx((seq1 + seq2) / 2, abs=1e-6)

    # no reference model, beta 0: the policy term alone; symmetric clip 0.2 now clips 1.5 to 1.2
    loss, metrics = grpo_loss(
        ex["logprobs"], ex["old"], None, ex["adv"], ex["mask"], beta=0.0, clip_high=0.2
    )
    assert loss.item() == pytest.approx((-2.4 - 1.8 - 1.0 + 0.4 + 0.75) / 5, abs=1e-6)
    assert "kl" not in metrics


def test_loss_rejects_bad_input() -> None:
    ex = _hand_example()
    with pytest.raises(ValueError, match="ref_logprobs is None"):
        grpo_loss(ex["logprobs"], ex["old"], None, ex["adv"], ex["mask"])
    with pytest.raises(ValueError, match="advantages has shape"):
        grpo_loss(ex["logprobs"], ex["old"], ex["ref"], ex["adv"][:, 0], ex["mask"])
    with pytest.raises(ValueError, match="no generated token"):
        grpo_loss(ex["logprobs"], ex["old"], ex["ref"], ex["adv"], torch.zeros(2, 6))
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(ex["logprobs"], ex["old"], ex["ref"], ex["adv"], ex["mask"], aggregation="sum")
    with pytest.raises(ValueError, match="clip_low"):
        grpo_loss(ex["logprobs"], ex["old"], ex["ref"], ex["adv"], ex["mask"], clip_low=1.0)


# ---- from episodes to the masked batch ---------------------------------------------------------


def _step(turn: int, stage: int, prompt: list[int], completion: list[int], lps: list[float]):
    return StepSample(
        turn=turn,
        stage=stage,
        messages=[{"role": "user", "content": "..."}],
        text="...",
        actions=ParsedActions(format="agemem"),
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=lps,
        tokens=len(prompt),
    )


def _episode(task_id: str, reward: float, steps: list[StepSample]) -> Episode:
    facts = EpisodeFacts(method="agemem", questions=[], answers=[], tokens_at_answer=[], t_max=64)
    return Episode(
        task_id=task_id, group_id="g", family="test", steps=steps, facts=facts,
        reward={"total": reward},
    )  # fmt: skip


def test_loss_mask_token_by_token() -> None:
    # episode A, two turns: the second prompt repeats the first turn's output (10, 11) and adds an
    # observation (20, 21); episode B, one longer turn. Same group, rewards 1 and 0.
    a = _episode(
        "A",
        1.0,
        [
            _step(0, 1, [1, 2, 3], [10, 11], [-0.1, -0.2]),
            _step(1, 3, [1, 2, 3, 10, 11, 20, 21], [12], [-0.3]),
        ],
    )
    b = _episode("B", 0.0, [_step(0, 1, [1, 2, 3], [13, 14, 15, 16], [-0.4, -0.5, -0.6, -0.7])])
    batch = collate(step_samples([a, b]), pad_id=99)

    assert batch.input_ids.tolist() == [
        [1, 2, 3, 10, 11, 99, 99, 99],
        [1, 2, 3, 10, 11, 20, 21, 12],
        [1, 2, 3, 13, 14, 15, 16, 99],
    ]
    assert batch.attention_mask.tolist() == [
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 0],
    ]
    # only what the model generated in that turn; the earlier output and the observation are prompt
    assert batch.loss_mask.tolist() == [
        [0, 0, 0, 1, 1, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 1, 1, 1, 1, 0],
    ]
    expected_old = [
        [0, 0, 0, -0.1, -0.2, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, -0.3],
        [0, 0, 0, -0.4, -0.5, -0.6, -0.7, 0],
    ]
    torch.testing.assert_close(batch.old_logprobs, torch.tensor(expected_old))
    # rewards (1, 0): mean 0.5, sample std sqrt((0.25 + 0.25) / 1) = sqrt(0.5); both turns of A
    # carry the same advantage
    adv = 0.5 / (math.sqrt(0.5) + 1e-4)
    expected_adv = [
        [0, 0, 0, adv, adv, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, adv],
        [0, 0, 0, -adv, -adv, -adv, -adv, 0],
    ]
    torch.testing.assert_close(batch.advantages, torch.tensor(expected_adv))
    assert batch.n_tokens == 7


def test_step_samples_reject_unusable_episodes() -> None:
    no_ids = _episode("A", 1.0, [_step(0, 1, [1, 2], [], [])])
    with pytest.raises(ValueError, match="'A' turn 0: completion_ids is empty"):
        step_samples([no_ids])
    short = _episode("B", 1.0, [_step(0, 1, [1, 2], [5, 6], [-0.1])])
    with pytest.raises(ValueError, match="1 old_logprobs for 2 completion tokens"):
        step_samples([short])
    with pytest.raises(ValueError, match="no reward 'judge'"):
        step_samples([no_ids], reward_key="judge")
    with pytest.raises(ValueError, match="no samples"):
        collate([])


# ---- gradient accumulation ---------------------------------------------------------------------


def _random_samples(vocab: int, n: int, seed: int) -> list[TrainSample]:
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        p, c = (int(x) for x in torch.randint(1, 9, (2,), generator=gen))
        ids = torch.randint(4, vocab, (p + c,), generator=gen).tolist()
        samples.append(TrainSample(ids[:p], ids[p:], [0.0] * c, 1.5 if i % 2 else -1.0))
    return samples


def _with_old_logprobs(model: nn.Module, samples: list[TrainSample]) -> list[TrainSample]:
    """The sampling policy = the model, shifted by noise so that ratios leave the clip range."""
    gen = torch.Generator().manual_seed(7)
    out = []
    for s in samples:
        b = collate([s])
        with torch.no_grad():
            lp = token_logprobs(model, b.input_ids, b.attention_mask)[b.loss_mask.bool()]
        noise = (torch.rand(lp.shape, generator=gen) - 0.5) * 0.8
        out.append(TrainSample(s.prompt_ids, s.completion_ids, (lp + noise).tolist(), s.advantage))
    return out


def _grads(model: nn.Module, ref: nn.Module, batches, normalizer, aggregation) -> torch.Tensor:
    model.zero_grad()
    for batch in batches:
        logp = token_logprobs(model, batch.input_ids, batch.attention_mask)
        with torch.no_grad():
            ref_lp = token_logprobs(ref, batch.input_ids, batch.attention_mask)
        loss, _ = grpo_loss(
            logp, batch.old_logprobs, ref_lp, batch.advantages, batch.loss_mask,
            aggregation=aggregation, normalizer=normalizer(batch),
        )  # fmt: skip
        loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("aggregation", ["token-mean", "sequence-mean"])
def test_gradient_accumulation_equals_one_big_batch(aggregation) -> None:
    model, tok = build_tiny(["a b c d e f g"], seed=0, layers=2, hidden=32, ffn=64)
    ref, _ = build_tiny(["a b c d e f g"], seed=1, layers=2, hidden=32, ffn=64)
    samples = _with_old_logprobs(model, _random_samples(len(tok), 6, seed=3))
    whole = collate(samples)
    micro = [collate(samples[:2]), collate(samples[2:])]  # 2 + 4 turns, different token counts

    big = _grads(model, ref, [whole], lambda b: None, aggregation)
    if aggregation == "token-mean":
        total = sum(b.n_tokens for b in micro)
        accumulated = _grads(model, ref, micro, lambda b: total, aggregation)
    else:
        accumulated = _grads(model, ref, micro, lambda b: len(samples), aggregation)
    assert torch.allclose(accumulated, big, atol=1e-6, rtol=1e-4)

    # negative control: averaging each micro-batch by its own count, then halving, is different
    naive = _grads(model, ref, micro, lambda b: None, aggregation) / 2
    assert not torch.allclose(naive, big, atol=1e-5, rtol=1e-3)


# ---- packing append-only turns -----------------------------------------------------------------


def _append_only_turns(tok, advantage: float) -> list[TrainSample]:
    """Three turns of one conversation rendered by the chat template: each prompt is the one
    before, its completion and a tool observation (an append-only context)."""

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    messages = [{"role": "user", "content": "a b c"}]
    samples = []
    for i, text in enumerate(["d e", "f g a", "b"]):
        prompt = ids(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        completion = ids(text + "<|im_end|>")
        samples.append(TrainSample(prompt, completion, [0.0] * len(completion), advantage))
        messages += [{"role": "assistant", "content": text}, {"role": "tool", "content": f"{i}"}]
    return samples


def test_packed_turns_give_the_loss_and_gradient_of_separate_turns() -> None:
    model, tok = build_tiny(["a b c d e f g 0 1 2"], seed=0, layers=2, hidden=32, ffn=64)
    ref, _ = build_tiny(["a b c d e f g 0 1 2"], seed=1, layers=2, hidden=32, ffn=64)
    samples = _with_old_logprobs(
        model, _append_only_turns(tok, 1.5) + _append_only_turns(tok, -0.5)
    )
    packed = pack_turns(samples)
    assert [len(p.spans) for p in packed] == [3, 3]  # one row per conversation
    assert sum(p.length for p in packed) < sum(s.length for s in samples)
    # every generated token keeps its position and value in the packed row
    batch = collate(packed)
    assert batch.n_tokens == sum(s.n_generated for s in samples)

    separate = _grads(model, ref, [collate(samples)], lambda b: None, "token-mean")
    together = _grads(model, ref, [batch], lambda b: None, "token-mean")
    assert torch.allclose(together, separate, atol=1e-6, rtol=1e-4)


def test_turns_are_not_packed_across_a_rewritten_context_or_another_advantage() -> None:
    _, tok = build_tiny(["a b c d e f g 0 1 2"], seed=0, layers=2, hidden=32, ffn=64)
    turns = _append_only_turns(tok, 1.0)
    last, second = turns[2], turns[1]
    summarised = last.prompt_ids[:3] + last.prompt_ids[5:]  # earlier tokens rewritten
    rewritten = TrainSample(summarised, last.completion_ids, last.old_logprobs, 1.0)
    other = TrainSample(second.prompt_ids, second.completion_ids, second.old_logprobs, 2.0)
    assert [len(p.spans) for p in pack_turns([turns[0], turns[1], rewritten])] == [2, 1]
    assert [len(p.spans) for p in pack_turns([turns[0], other])] == [1, 1]
