"""HFPolicy on real models: the tiny in-process Llama for exactness, SmolLM2-135M for one short
check on a real chat model (its checkpoint is converted once per machine, then cached)."""

from __future__ import annotations

import copy

import pytest
import torch

from agemem.policy.base import Policy
from agemem.policy.hf import HFPolicy
from agemem.policy.models import load_model
from agemem.policy.tiny import build_tiny
from agemem.train import TrainSample, collate, token_logprobs

CORPUS = [
    "Alice lives in Paris. Bob moved to Rome last year. Where does Alice live?",
    "Remember this: the meeting is on Monday at noon.",
]
SYSTEM = "Remember this: Alice lives in Paris. Bob moved to Rome last year. " * 3
# One shared system prompt, then user turns of different lengths: the prefix cache serves the
# system prompt and pads between it and each suffix.
SHARED_CONTEXTS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    for question in ("Where does Alice live?", "Bob?", "Remember this: where does Bob live now?")
]
CONTEXTS = [
    [{"role": "user", "content": "Where does Alice live?"}],
    [
        {"role": "system", "content": "Remember this: the meeting is on Monday."},
        {"role": "user", "content": "Bob moved to Rome last year. Where does Bob live?"},
    ],
    [{"role": "user", "content": "Alice?"}],
]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(CORPUS, seed=0)


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def first_stop(tokenizer, ids: list[int], stops: list[str]) -> list[int]:
    """The shortest prefix of `ids` whose text contains a stop string (all of `ids` if none)."""
    for end in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:end]) for s in stops):
            return ids[:end]
    return ids


def assert_logprobs_match_forward_pass(policy: HFPolicy, turns, tolerance: float) -> None:
    for turn in turns:
        assert turn.completion_ids and len(turn.logprobs) == len(turn.completion_ids)
        recomputed = policy.logprobs_of(turn.prompt_ids, turn.completion_ids)
        worst = max(abs(a - b) for a, b in zip(turn.logprobs, recomputed, strict=True))
        assert worst < tolerance, worst


def test_sampled_logprobs_equal_a_separate_forward_pass(tiny):
    """Sampling tempers and truncates the logits (temperature, top-k, top-p); the recorded
    logprobs are the tempered, untruncated distribution's, i.e. what a plain forward pass over
    the same tokens gives at the policy's temperature."""
    policy = HFPolicy(*tiny, max_new_tokens=24, temperature=0.7, top_k=20, top_p=0.9, seed=3)
    turns = policy.act(CONTEXTS)
    assert isinstance(policy, Policy)
    assert [t.prompt_ids for t in turns] == [policy.encode_prompt(c) for c in CONTEXTS]
    assert_logprobs_match_forward_pass(policy, turns, tolerance=1e-4)


@pytest.mark.parametrize("temperature", [0.7, 1.0, 0.0])
def test_recorded_logprobs_are_the_trainers_at_the_sampling_temperature(tiny, temperature):
    """The importance ratio's old logprob is the trainer's log-prob of the same token:
    `token_logprobs` at the sampling temperature, one forward pass over prompt + completion, as
    TRL divides its logits by the temperature in both places. Top-k/top-p truncation stays out
    of it; greedy (0) records the raw logits', the trainer's temperature 1. At 0.7 the recorded
    logprobs were the raw ones before (off by up to 0.46 nats here), which this check tells
    apart: the raw log-probs differ by more than 1e-2."""
    policy = HFPolicy(
        *tiny, max_new_tokens=16, temperature=temperature, top_k=20, top_p=0.9, seed=3
    )
    turns = policy.act(CONTEXTS)
    batch = collate([TrainSample(t.prompt_ids, t.completion_ids, t.logprobs, 0.0) for t in turns])
    args = (policy.model, batch.input_ids, batch.attention_mask, batch.loss_mask)
    with torch.no_grad():
        trainer = token_logprobs(*args, temperature=temperature or 1.0)
        raw = token_logprobs(*args)
    mask = batch.loss_mask.bool()
    recorded = batch.old_logprobs[mask]
    assert mask.sum() > 10
    assert (recorded - trainer[mask]).abs().max().item() < 1e-4
    if temperature in (0.0, 1.0):
        assert (recorded - raw[mask]).abs().max().item() < 1e-4
    else:
        assert (recorded - raw[mask]).abs().max().item() > 1e-2


def test_same_seed_same_samples(tiny):
    first = HFPolicy(*tiny, max_new_tokens=16, seed=7).act(CONTEXTS)
    again = HFPolicy(*tiny, max_new_tokens=16, seed=7).act(CONTEXTS)
    other = HFPolicy(*tiny, max_new_tokens=16, seed=8).act(CONTEXTS)
    assert [t.completion_ids for t in first] == [t.completion_ids for t in again]
    assert [t.completion_ids for t in first] != [t.completion_ids for t in other]


def test_left_padded_batch_gives_the_unbatched_greedy_completions(tiny):
    policy = HFPolicy(*tiny, max_new_tokens=20, temperature=0, stop=())
    batched = policy.act(CONTEXTS)
    assert len({len(t.prompt_ids) for t in batched}) == len(CONTEXTS)  # padding really happens
    for context, turn in zip(CONTEXTS, batched, strict=True):
        alone = policy.act([context])[0]
        assert turn.completion_ids == alone.completion_ids
        assert turn.text == alone.text


def test_each_sequence_stops_at_its_own_first_stop_string(tiny):
    model, tok = tiny
    free = HFPolicy(model, tok, max_new_tokens=20, temperature=0, stop=()).act(CONTEXTS)
    assert all(t.finish_reason == "length" and len(t.completion_ids) == 20 for t in free)
    # A stop string that this untrained model emits early in the first completion.
    stops = [tok.decode(free[0].completion_ids[2]).strip(), "</answer>"]
    stopped = HFPolicy(model, tok, max_new_tokens=20, temperature=0, stop=stops).act(CONTEXTS)
    for long, short in zip(free, stopped, strict=True):
        expected = first_stop(tok, long.completion_ids, stops)
        assert short.completion_ids == expected
        assert short.finish_reason == ("stop" if len(expected) < 20 else "length")
        assert any(s in short.text for s in stops) == (short.finish_reason == "stop")
    assert len(stopped[0].completion_ids) <= 3


def test_tools_reach_a_template_that_renders_them(tiny):
    model, _ = tiny
    _, tok = build_tiny(CORPUS, seed=0)  # a fresh tokenizer: the fixture's keeps its template
    tok.chat_template = (
        "{% if tools %}{{ tools[0]['function']['name'] }}\n{% endif %}"
        "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    )
    tools = [{"type": "function", "function": {"name": "Alice", "parameters": {}}}]
    policy = HFPolicy(model, tok, max_new_tokens=2)
    with_tools = tok.decode(policy.encode_prompt(CONTEXTS[0], tools))
    assert with_tools == "Alice\nWhere does Alice live?\n"
    assert tok.decode(policy.encode_prompt(CONTEXTS[0])) == "Where does Alice live?\n"


def test_bad_input_is_a_clear_error(tiny):
    policy = HFPolicy(*tiny, max_new_tokens=2)
    assert policy.act([]) == []
    with pytest.raises(ValueError, match="context 1 must be a non-empty list"):
        policy.act([CONTEXTS[0], []])
    with pytest.raises(ValueError, match="without a role"):
        policy.act([[{"content": "hi"}]])
    with pytest.raises(ValueError, match="at least one token"):
        policy.logprobs_of([], [5])
    for bad in ({"top_p": 0.0}, {"temperature": -1.0}, {"max_new_tokens": 0}, {"top_k": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HFPolicy(*tiny, **bad)


def test_smollm2_batched_turns_are_exact(smollm2):
    model, tok = smollm2
    policy = HFPolicy(model, tok, max_new_tokens=12, temperature=1.0, seed=0)
    turns = policy.act(CONTEXTS[:2])
    assert_logprobs_match_forward_pass(policy, turns, tolerance=2e-4)
    for turn in turns:
        assert turn.text == tok.decode(turn.completion_ids, skip_special_tokens=True)
        if turn.finish_reason == "length":
            assert len(turn.completion_ids) == 12
        else:
            assert turn.completion_ids[-1] == tok.eos_token_id or "</" in turn.text


def test_smollm2_stop_string_spanning_tokens(smollm2):
    model, tok = smollm2
    context = [{"role": "user", "content": "What is the capital of France?"}]
    free = HFPolicy(model, tok, max_new_tokens=10, temperature=0, stop=()).act([context])[0]
    ids = free.completion_ids
    stop = tok.decode(ids[:5])[-1] + tok.decode(ids[5:7])  # ends inside token 7, starts in 5
    stopped = HFPolicy(model, tok, max_new_tokens=10, temperature=0, stop=[stop]).act([context])
    assert stopped[0].completion_ids == first_stop(tok, ids, [stop])
    assert stopped[0].finish_reason == "stop" and stop in stopped[0].text


def common_length(*prompts: list[int]) -> int:
    shortest = min(map(len, prompts))
    return next((i for i in range(shortest) if len({p[i] for p in prompts}) > 1), shortest)


def split_prompts(policy: HFPolicy, contexts) -> tuple[int, int]:
    """(length of the token prefix common to the contexts' prompts, tokens after it over all
    prompts): what a batch computes when that prefix is not cached / already cached."""
    prompts = [policy.encode_prompt(c) for c in contexts]
    shared = common_length(*prompts)
    assert len({len(p) - shared for p in prompts}) == len(prompts)  # suffixes differ in length
    return shared, sum(len(p) - shared for p in prompts)


def test_prefix_cached_logprobs_equal_a_forward_pass(tiny):
    policy = HFPolicy(*tiny, max_new_tokens=16, temperature=1.0, seed=1)
    turns = policy.act(SHARED_CONTEXTS)
    assert policy.stats.computed_tokens < policy.stats.prompt_tokens / 2  # the prefix was shared
    assert_logprobs_match_forward_pass(policy, turns, tolerance=1e-4)


def test_prefix_cache_changes_no_greedy_output(tiny):
    on = HFPolicy(*tiny, max_new_tokens=20, temperature=0, stop=())
    off = HFPolicy(*tiny, max_new_tokens=20, temperature=0, stop=(), prefix_cache=False)
    for contexts in (SHARED_CONTEXTS, CONTEXTS, SHARED_CONTEXTS[:1]):
        cached, plain = on.act(contexts), off.act(contexts)
        assert [t.completion_ids for t in cached] == [t.completion_ids for t in plain]
        for a, b in zip(cached, plain, strict=True):
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
    assert off.stats.computed_tokens == off.stats.prompt_tokens
    assert on.stats.cached_share > 0


def test_prefix_is_reused_across_calls_and_rebuilt_when_it_changes(tiny):
    policy = HFPolicy(*tiny, max_new_tokens=4, temperature=0, row_cache_tokens=0)
    policy.act(SHARED_CONTEXTS)
    shared, suffixes = split_prompts(policy, SHARED_CONTEXTS)
    assert policy.stats.computed_tokens == shared + suffixes  # the prefix once, for all rows
    before = policy.stats.computed_tokens
    policy.act(SHARED_CONTEXTS[1:])  # same system prompt: only the suffixes are computed
    assert policy.stats.computed_tokens - before == split_prompts(policy, SHARED_CONTEXTS[1:])[1]
    other = [[{"role": "system", "content": "Bob?"}, *c[1:]] for c in SHARED_CONTEXTS]
    before = policy.stats.computed_tokens
    turns = policy.act(other)  # the kept prefix no longer fits: cropped, then extended
    new_shared, new_suffixes = split_prompts(policy, other)
    kept = common_length(*(policy.encode_prompt(c) for c in (other[0], SHARED_CONTEXTS[1])))
    assert policy.stats.computed_tokens - before == new_shared - kept + new_suffixes
    plain = HFPolicy(*tiny, max_new_tokens=4, temperature=0, prefix_cache=False).act(other)
    assert [t.completion_ids for t in turns] == [t.completion_ids for t in plain]


def next_turns(contexts, turns, observations):
    """Each context continued by its turn and a new user message, as an episode's next prompt."""
    return [
        [*c, {"role": "assistant", "content": t.text}, {"role": "user", "content": o}]
        for c, t, o in zip(contexts, turns, observations, strict=True)
    ]


def test_row_cache_computes_only_the_new_tokens_of_each_episode(tiny):
    """Second turns extend each row's first prompt by different lengths: only the tokens past
    what each row shares with its earlier prompt are computed, and nothing changes."""
    on = HFPolicy(*tiny, max_new_tokens=6, temperature=0, stop=())
    off = HFPolicy(*tiny, max_new_tokens=6, temperature=0, stop=(), prefix_cache=False)
    first = on.act(SHARED_CONTEXTS)
    second = next_turns(SHARED_CONTEXTS, first, ["Rome.", "Alice lives in Paris now?", "Bob"])
    before = on.stats.computed_tokens
    cached = on.act(second[::-1])  # another row order: rows are matched by content
    prompts = [on.encode_prompt(c) for c in second[::-1]]
    earlier = [t.prompt_ids for t in first[::-1]]
    new = sum(len(p) - common_length(p, e) for p, e in zip(prompts, earlier, strict=True))
    assert on.stats.computed_tokens - before == new
    assert new < sum(map(len, prompts)) / 4
    plain = off.act(second[::-1])
    assert [t.completion_ids for t in cached] == [t.completion_ids for t in plain]
    assert_logprobs_match_forward_pass(on, cached, tolerance=1e-4)


def test_row_cache_stays_within_its_token_budget(tiny):
    prompts = [HFPolicy(*tiny).encode_prompt(c) for c in SHARED_CONTEXTS]
    budget = sum(map(len, prompts)) - 1  # one prompt too few fits
    policy = HFPolicy(*tiny, max_new_tokens=4, temperature=0, row_cache_tokens=budget)
    policy.act(SHARED_CONTEXTS)
    before = policy.stats.computed_tokens
    policy.act(SHARED_CONTEXTS)  # two rows served from the row cache, one from the prefix
    shared = common_length(*prompts)
    assert policy.stats.computed_tokens - before == 2 + len(prompts[0]) - shared
    with pytest.raises(ValueError, match="row_cache_tokens"):
        HFPolicy(*tiny, row_cache_tokens=-1)


def test_prefix_is_rebuilt_after_an_in_place_weight_update(tiny):
    """A policy kept across an optimizer step must not serve KV computed with the old weights."""
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    policy = HFPolicy(model, tok, max_new_tokens=12, temperature=1.0, seed=2)
    policy.act(SHARED_CONTEXTS)
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight.mul_(3.0)
    turns = policy.act(SHARED_CONTEXTS)
    assert_logprobs_match_forward_pass(policy, turns, tolerance=1e-4)


def test_smollm2_prefix_cache_is_exact(smollm2):
    model, tok = smollm2
    on = HFPolicy(model, tok, max_new_tokens=8, temperature=1.0, seed=0)
    turns = on.act(SHARED_CONTEXTS)
    assert on.stats.computed_tokens < on.stats.prompt_tokens / 2
    assert_logprobs_match_forward_pass(on, turns, tolerance=2e-4)
    greedy = HFPolicy(model, tok, max_new_tokens=8, temperature=0, stop=())
    plain = HFPolicy(model, tok, max_new_tokens=8, temperature=0, stop=(), prefix_cache=False)
    cached = greedy.act(SHARED_CONTEXTS)
    assert [t.completion_ids for t in cached] == [
        t.completion_ids for t in plain.act(SHARED_CONTEXTS)
    ]
    second = next_turns(SHARED_CONTEXTS, turns, ["Rome.", "And Alice?", "Bob lives in Rome."])
    before = on.stats.computed_tokens
    turns = on.act(second)  # each row continues from its own first prompt
    assert on.stats.computed_tokens - before < on.stats.prompt_tokens / 4
    assert_logprobs_match_forward_pass(on, turns, tolerance=2e-4)


def test_a_sliding_window_model_decodes_a_padded_batch_exactly(tiny):
    """Sliding-window layers drop old tokens, so such models skip the prefix cache and prefill
    one left-padded batch; every row still gets a plain forward pass's logprobs."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tiny[1]), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    torch.manual_seed(0)
    policy = HFPolicy(MistralForCausalLM(config), tiny[1], max_new_tokens=6, stop=(), seed=3)
    assert not policy.prefix_cache
    turns = policy.act(CONTEXTS)
    assert policy.stats.computed_tokens == policy.stats.prompt_tokens
    assert_logprobs_match_forward_pass(policy, turns, tolerance=1e-4)
