"""Token counters against a real Hugging Face tokenizer (all-MiniLM-L6-v2's WordPiece, offline)."""

from __future__ import annotations

import copy

import pytest
from transformers import AutoTokenizer

from agemem.memory.embed import default_model_path
from agemem.tokens import (
    ApproxTokenCounter,
    HFTokenCounter,
    TokenCounter,
    message_text,
    render_messages,
)

CHAT = [
    {"role": "system", "content": "You are a careful assistant."},
    {"role": "user", "content": "Where was Scott Derrickson born?"},
    {"role": "assistant", "content": "He was born in Denver, Colorado, on July 16, 1966."},
]

# A short template in the shape of ChatML, so the template path is exercised without any download.
TEMPLATE = "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture
def templated(tokenizer):
    """A copy of the tokenizer with a chat template (the module fixture stays template-free)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def test_both_counters_satisfy_the_protocol(tokenizer):
    assert isinstance(HFTokenCounter(tokenizer), TokenCounter)
    assert isinstance(ApproxTokenCounter(), TokenCounter)


def test_hf_count_text_matches_known_wordpiece_splits(tokenizer):
    counter = HFTokenCounter(tokenizer)
    assert counter.count_text("hello world") == 2
    assert counter.count_text("Tokenization") == 2  # token ##ization
    assert counter.count_text("") == 0


def test_hf_count_text_matches_the_tokenizer_without_special_tokens(tokenizer):
    text = "Ed Wood is a 1994 American biographical period comedy-drama film by Tim Burton."
    assert HFTokenCounter(tokenizer).count_text(text) == len(tokenizer.tokenize(text))
    assert len(tokenizer(text)["input_ids"]) == len(tokenizer.tokenize(text)) + 2  # CLS, SEP


def test_without_template_messages_are_counted_as_their_rendering(tokenizer):
    assert not tokenizer.chat_template
    expected = len(tokenizer.tokenize(render_messages(CHAT)))
    assert HFTokenCounter(tokenizer).count_messages(CHAT) == expected


def test_with_template_messages_are_counted_through_it(templated):
    # "[user] hello world " -> [ user ] hello world
    assert (
        HFTokenCounter(templated).count_messages([{"role": "user", "content": "hello world"}]) == 5
    )
    rendered = templated.apply_chat_template(CHAT, tokenize=False)
    assert HFTokenCounter(templated).count_messages(CHAT) == len(templated.tokenize(rendered))


def test_template_changes_the_count(tokenizer, templated):
    assert HFTokenCounter(templated).count_messages(CHAT) != HFTokenCounter(
        tokenizer
    ).count_messages(CHAT)


def test_empty_chat_counts_zero(templated):
    assert HFTokenCounter(templated).count_messages([]) == 0


def test_tool_calls_are_part_of_the_text():
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    message = {"role": "assistant", "content": None, "tool_calls": call}
    assert '"name": "f"' in message_text(message)
    assert ApproxTokenCounter().count_messages([message]) > 2


def test_approx_counts_digits_singly_and_splits_long_words():
    counter = ApproxTokenCounter()
    assert counter.count_text("hello, world") == 3
    assert counter.count_text("1966") == 4
    assert counter.count_text("internationalization") == 3  # 20 letters: 8 + 8 + 4
    assert counter.count_text("snake_case") == 3


def test_approx_is_within_a_fifth_of_the_real_tokenizer(tokenizer):
    text = render_messages(CHAT * 20)
    real = HFTokenCounter(tokenizer).count_text(text)
    assert abs(ApproxTokenCounter().count_text(text) - real) <= 0.2 * real
