"""The `tiny` preset: a ~1M-parameter Llama-architecture model and a word-level tokenizer, both
built in-process from the caller's corpus (no download), randomly initialised and meant to be
trained by SFT then GRPO on the synthetic curriculum within minutes on 2 CPU cores.

The tokenizer is a real `PreTrainedTokenizerFast` (save/load, chat template, batching all work as
for any Hugging Face model). Pieces are words (`\\w+`) and single punctuation marks, each with an
optional leading space folded in (GPT-2 style), plus every other whitespace character on its own,
so `decode(encode(text)) == text` for any text whose words are in the vocabulary, JSON included.
The protocol tags, the memory ids and the JSON skeleton of every tool call (`call_fragments`)
are single tokens.

>>> model, tok = build_tiny(["Paris is the capital of France."], seed=0)
>>> ids = tok("<answer> Paris</answer>", add_special_tokens=False).input_ids
>>> len(ids), tok.decode(ids)
(3, '<answer> Paris</answer>')
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from agemem.tokens import HFTokenCounter

PROTOCOL_TAGS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>")
PAD, UNK, IM_START, IM_END = "<pad>", "<unk>", "<|im_start|>", "<|im_end|>"
ROLES = ("system", "user", "assistant", "tool")

# A word or one punctuation mark, each with an optional leading space; any other whitespace
# character is a piece of its own. Folding the space into the next piece keeps sequences as short
# as a plain word split while decoding stays exact (the decoder just concatenates pieces).
PIECE_PATTERN = r" ?\w+| ?[^\w\s]|\s"

# ChatML-like, as SmolLM2 and Qwen use; no default system prompt. Tools are not rendered: the
# tiny model's context is small, and the environment's system prompt describes the tools.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def call_fragments(tools: Iterable[tuple[str, Iterable[str]]]) -> tuple[str, ...]:
    """The JSON every call of these (tool name, argument names) repeats, as `json.dumps` writes
    it: `{"name": "T", "arguments": {` per tool, `"a": ` per argument, and `}}`.

    Made single tokens, they cut a call such as Add_memory's from ~20 skeleton tokens to 4, so
    completions are about half as long (measured on the synthetic oracle: mean completion 32 ->
    see `tests/test_models.py`) and each training step costs less.

    >>> call_fragments([("Add_memory", ["content"])])
    ('{"name": "Add_memory", "arguments": {', '"content": ', '}}')
    """
    out: dict[str, None] = {}
    for name, args in tools:
        out[f'{{"name": "{name}", "arguments": {{'] = None
        out.update((f'"{arg}": ', None) for arg in args)
    return (*out, "}}")


def agemem_call_fragments() -> tuple[str, ...]:
    """`call_fragments` of the six AgeMem tools."""
    from agemem.tools.agemem import AGEMEM_TOOLS

    return call_fragments((t.name, t.parameters()["properties"]) for t in AGEMEM_TOOLS)


def _pieces(texts: Iterable[str]) -> set[str]:
    split = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    found: set[str] = set()
    for text in texts:
        found.update(piece for piece, _ in split.pre_tokenize_str(text))
    return found


def _with_space_variants(pieces: Iterable[str]) -> set[str]:
    """Both `x` and ` x` for every word or mark, so a word seen only mid-sentence still encodes
    at the start of a message (and the other way round)."""
    out: set[str] = set()
    for piece in pieces:
        if piece.isspace():
            out.add(piece)
        else:
            bare = piece.removeprefix(" ")
            out.update((bare, " " + bare))
    return out


def build_word_tokenizer(
    corpus_texts: Iterable[str],
    memory_ids: Iterable[str] = (),
    tags: Iterable[str] = PROTOCOL_TAGS,
) -> PreTrainedTokenizerFast:
    """A word/punctuation `PreTrainedTokenizerFast` whose vocabulary is the corpus's pieces, every
    ASCII punctuation mark, the digits, the chat roles and `memory_ids` (each a single token; the
    env shows ids from a small space, `EnvConfig.id_space`). `tags` become single
    tokens wherever they occur (AgeMem's by default; pass AtomMem's `<add_memory>`... instead).
    Ids are assigned in sorted order, so the same corpus always gives the same tokenizer.
    Unknown words map to `<unk>`.
    """
    base = set(string.punctuation) | set(string.digits) | set(ROLES) | set(memory_ids)
    words = _with_space_variants(_pieces(corpus_texts) | base) | {" ", "\n", "\t"}
    specials = [PAD, UNK, IM_START, IM_END]
    vocab = {token: i for i, token in enumerate(specials + sorted(words - set(specials)))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    # Not special: `decode(..., skip_special_tokens=True)` must keep the protocol tags.
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in tags])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=IM_START,
        eos_token=IM_END,
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_token_counter() -> HFTokenCounter:
    """Counts tokens as every `tiny` model does (one per word piece, tag and call fragment,
    whatever the vocabulary), for scripted policies on budgets calibrated with the tiny model
    (the `synthetic` env preset)."""
    return HFTokenCounter(build_word_tokenizer((), tags=PROTOCOL_TAGS + agemem_call_fragments()))


def build_tiny(
    corpus_texts: Sequence[str] = (),
    seed: int = 0,
    *,
    memory_ids: Iterable[str] = (),
    tags: Iterable[str] | None = None,
    layers: int = 4,
    hidden: int = 128,
    heads: int = 4,
    ffn: int = 512,
    max_context: int = 1024,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised Llama (defaults: 4 layers, hidden 128, 4 heads, FFN 512, tied
    embeddings; ~0.9M parameters with a ~250-word vocabulary, the shape the quickstart trains:
    README, "What the quickstart recipe learned") and its tokenizer. `seed` fixes the weights
    without touching the global RNG. `max_context` (our default 1,024) bounds the rotary
    positions the model is meant for; the synthetic episodes stay well under it. `tags` (single
    tokens) default to AgeMem's protocol tags and `agemem_call_fragments()`."""
    if tags is None:
        tags = PROTOCOL_TAGS + agemem_call_fragments()
    tokenizer = build_word_tokenizer(corpus_texts, memory_ids, tags)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_context,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer
