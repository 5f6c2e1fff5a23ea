"""LlamaCppPolicy against a real llama.cpp server (xllamacpp) serving the shipped SmolLM2 GGUF
and the trainer's LoRA weights, compared with the trainer's own model (HFPolicy over the same
torch weights). Nothing is mocked.

Greedy agreement, the tolerance: llama.cpp computes with the Q4_1 weights, 8-bit activations and
a float16 KV cache, transformers with the dequantized float32 weights, so they agree up to that
noise, and greedy turns part where the trainer's model is near a tie. So each greedy server turn
is scored by the trainer's model, teacher-forced along the turn: at each token, how many nats
the server's token is below the model's own greedy choice (0 where they agree). Measured over 8
random LoRAs (std 0.05 on B) x 4 prompts x 24 tokens: mean 0.000-0.017 nats, max 0.67 (1.7 once
in a dozen runs); the base alone 0.009 / 0.47; a server that missed the sync (serving the base
to a LoRA model) 0.16-0.54 mean, 2.4-9.7 max. Tolerance: mean <= `MEAN_GAP` (0.06), every token
<= `MAX_GAP` (2.5). Token for token, the turns agree up to their first near tie (printed).
"""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from agemem.policy.hf import HFPolicy
from agemem.policy.models import PRESETS, load_model, package_file
from agemem.policy.openai import ServerError
from agemem.policy.server import LlamaCppPolicy

GGUF = package_file(PRESETS["smollm2-135m"].source)
MEAN_GAP, MAX_GAP = 0.06, 2.5  # nats (module docstring)
CONTEXTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "List three fruits."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
]
NEW_TOKENS = 24


def with_lora(model: torch.nn.Module, seed: int, std: float = 0.05) -> PeftModel:
    """`model` with a rank-16 all-linear LoRA whose B matrices are random (peft starts them at
    zero, which would change nothing)."""
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(seed)  # peft draws the A matrices from torch's global generator
    peft = get_peft_model(model, config)
    perturb(peft, seed, std)
    return peft


def perturb(peft: PeftModel, seed: int, std: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def greedy_agreement(server_turns, model, tokenizer) -> list[int]:
    """How many first tokens each greedy server turn shares with the trainer model's greedy
    turn, after asserting the tolerance (module docstring) on the server's turns."""
    gaps = []
    for turn in server_turns:
        ids = torch.tensor([turn.prompt_ids + turn.completion_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(turn.prompt_ids) - 1 : -1].float()
        logprobs = torch.log_softmax(logits, -1)
        taken = logprobs.gather(-1, torch.tensor(turn.completion_ids)[:, None]).squeeze(-1)
        gaps += (logprobs.max(-1).values - taken).tolist()
    assert sum(gaps) / len(gaps) <= MEAN_GAP and max(gaps) <= MAX_GAP, gaps
    hf = HFPolicy(model, tokenizer, temperature=0, max_new_tokens=NEW_TOKENS)
    agreed = []
    for turn, ours in zip(server_turns, hf.act(CONTEXTS), strict=True):
        a, b = turn.completion_ids, ours.completion_ids
        same = [x == y for x, y in zip(a, b, strict=False)]
        agreed.append(same.index(False) if False in same else len(same))
    return agreed


@pytest.fixture(scope="module")
def base():
    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def policy(base):
    _, tokenizer = base
    with LlamaCppPolicy(
        tokenizer,
        GGUF,
        n_parallel=4,
        context=1024,
        temperature=0,
        max_new_tokens=NEW_TOKENS,
        lora="runtime",
    ) as served:
        yield served


def test_merged_lora_syncs_follow_the_trainer_model_and_leave_it_untouched(base):
    """`lora="merged"` (the default): each sync writes the base with the adapter merged in, one
    q8_0 GGUF; the served turns follow the LoRA model within the module's tolerance, and the
    trainer's weights, adapters included, are exactly what they were."""
    model, tokenizer = load_model("smollm2-135m")
    peft = with_lora(model, seed=0)
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    with LlamaCppPolicy(
        tokenizer, GGUF, n_parallel=4, context=1024, temperature=0, max_new_tokens=NEW_TOKENS
    ) as policy:
        policy.sync_weights(peft)
        assert policy.last_sync.kind == "merged"
        print("merged", greedy_agreement(policy.act(CONTEXTS), peft, tokenizer))
        perturb(peft, seed=5, std=0.05)
        changed = {n: p.detach().clone() for n, p in peft.named_parameters()}
        policy.sync_weights(peft)
        assert policy.last_sync.kind == "merged"
        print("merged2", greedy_agreement(policy.act(CONTEXTS), peft, tokenizer))
    after = dict(peft.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in changed.items())
    assert all(torch.equal(after[n], p) for n, p in before.items() if "lora_B" not in n)


def test_greedy_turns_follow_the_trainer_model_after_a_lora_sync(policy):
    model, tokenizer = load_model("smollm2-135m")
    peft = with_lora(model, seed=0)
    policy.sync_weights(peft)
    assert policy.last_sync.kind == "lora"  # the shipped file serves the base as it is
    agreed = greedy_agreement(policy.act(CONTEXTS), peft, tokenizer)
    print("lora", agreed)


def test_prompt_ids_are_the_trainers_and_completion_ids_decode_to_the_text(policy, base):
    model, tokenizer = base
    policy.sync_weights(model)
    hf = HFPolicy(model, tokenizer)
    turns = policy.act(CONTEXTS)
    for turn, messages in zip(turns, CONTEXTS, strict=True):
        assert turn.prompt_ids == hf.encode_prompt(messages)
        assert turn.text == tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
        assert len(turn.logprobs) == len(turn.completion_ids)  # NaN: the trainer recomputes
        assert turn.finish_reason in ("stop", "length")


def test_a_stop_string_ends_the_turn_and_its_tokens_stay_in_the_completion(policy, base):
    """The stop string is taken from the turn's own greedy text, so the turn with it must be
    exactly that turn cut after the token that completes the stop string."""
    model, tokenizer = base
    policy.sync_weights(model)
    free = policy.act(CONTEXTS[1:2])[0]
    ids = free.completion_ids
    stop = tokenizer.decode(ids[5:7])  # two tokens in the middle of the turn
    end = next(i for i in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:i]))
    saved = policy.stop
    policy.stop = [stop]
    try:
        cut = policy.act(CONTEXTS[1:2])[0]
    finally:
        policy.stop = saved
    assert cut.completion_ids == ids[:end]
    assert cut.text.endswith(stop.rstrip()) and cut.finish_reason == "stop"


def test_a_weight_change_changes_the_served_turns(policy):
    model, tokenizer = load_model("smollm2-135m")
    policy.sync_weights(model)
    before = [t.completion_ids for t in policy.act(CONTEXTS)]
    peft = with_lora(model, seed=1, std=0.02)
    policy.sync_weights(peft)
    changed = [t.completion_ids for t in policy.act(CONTEXTS)]
    assert changed != before
    policy.sync_weights(peft)
    assert policy.last_sync.kind == "unchanged"
    perturb(peft, seed=1, std=0.0)  # B = 0: the adapter adds exactly nothing
    policy.sync_weights(peft)
    assert policy.last_sync.kind == "lora"
    assert [t.completion_ids for t in policy.act(CONTEXTS)] == before


def test_an_sft_merged_base_is_written_once_and_served_with_the_adapter(policy):
    """GRPO from an SFT model: the base (SmolLM2 with a LoRA merged in) is no longer the shipped
    file, so it is written as a GGUF (q8_0) once; later syncs write only the adapter."""
    model, tokenizer = load_model("smollm2-135m")
    sft = with_lora(model, seed=2).merge_and_unload()
    peft = with_lora(sft, seed=3)
    policy.sync_weights(peft)
    assert policy.last_sync.kind == "model+lora"
    agreed = greedy_agreement(policy.act(CONTEXTS), peft, tokenizer)
    print("sft", agreed)
    perturb(peft, seed=4, std=0.05)
    policy.sync_weights(peft)
    assert policy.last_sync.kind == "lora"
    print("sft2", greedy_agreement(policy.act(CONTEXTS), peft, tokenizer))


def test_a_released_server_frees_its_process_and_the_next_sync_restarts_it(base):
    model, tokenizer = base
    with LlamaCppPolicy(
        tokenizer, GGUF, n_parallel=2, context=256, temperature=0, max_new_tokens=8
    ) as policy:
        policy.sync_weights(model)
        first = policy.act(CONTEXTS[:1])[0].completion_ids
        process = policy._server.process
        policy.release()
        assert process.poll() is not None  # the server process is gone, its memory freed
        with pytest.raises(ServerError, match=r"released\): call sync_weights\(model\) first"):
            policy.act(CONTEXTS[:1])
        policy.sync_weights(model)  # the same weights: restarted all the same
        assert policy.last_sync.kind == "base"
        assert policy.act(CONTEXTS[:1])[0].completion_ids == first


def test_bad_input_and_a_dead_server_fail_clearly(base):
    model, tokenizer = base
    with pytest.raises(FileNotFoundError, match="base GGUF .* does not exist"):
        LlamaCppPolicy(tokenizer, "/nonexistent.gguf")
    with LlamaCppPolicy(tokenizer, GGUF, n_parallel=2, context=256, max_new_tokens=8) as policy:
        with pytest.raises(ServerError, match=r"call sync_weights\(model\) first"):
            policy.act(CONTEXTS[:1])
        policy.sync_weights(model)
        with pytest.raises(ValueError, match="at least one context, got an empty list"):
            policy.act([])
        with pytest.raises(ValueError, match="context 0 must be a non-empty list"):
            policy.act([[]])
        long = [{"role": "user", "content": "word " * 300}]
        with pytest.raises(ValueError, match="exceeds the 256 tokens of a slot"):
            policy.act([long])
        policy._server.process.kill()
        policy._server.process.wait()
        with pytest.raises(ServerError, match=r"llama.cpp server exited \(code -9\)"):
            policy.act(CONTEXTS[:1])
    with pytest.raises(ServerError, match="closed"):
        policy.act(CONTEXTS[:1])


def test_the_server_stops_when_the_process_that_started_it_is_killed(tmp_path):
    """A trainer or eval run killed outright (no close, no finalizer) leaves no llama.cpp
    server behind: the child stops with its parent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = f"""
import sys, time
from agemem.policy.models import load_model
from agemem.policy.server import LlamaCppPolicy
model, tokenizer = load_model("smollm2-135m")
policy = LlamaCppPolicy(tokenizer, {str(GGUF)!r}, n_parallel=1, context=256,
                        max_new_tokens=4, work_dir={str(tmp_path)!r})
policy.sync_weights(model)
print(policy._server.process.pid, flush=True)
time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # the server runs
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.2)
        assert not _alive(child), "the llama.cpp server outlived the process that started it"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie, already exited and waiting for its reaper, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
