"""VLLMPolicy's requests against a fake vLLM server (http.server in a thread, answering as vLLM's
OpenAI-compatible server does): no GPU here, so this checks the contract, not vLLM. The model is
the tiny one with a LoRA; the adapter files the fake server is pointed to are read back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from servers import free_port

from agemem.policy.hf import HFPolicy
from agemem.policy.models import load_model
from agemem.policy.openai import ServerError
from agemem.policy.vllm import VLLMPolicy

CONTEXTS = [
    [{"role": "user", "content": "hello there"}],
    [{"role": "user", "content": "what is stored"}],
]
COMPLETION = [5, 6, 7]


class FakeVLLM(BaseHTTPRequestHandler):
    """Records every request; answers as vLLM does (completions echo the prompt ids)."""

    requests: list[tuple[str, dict]] = []
    fail: dict[str, tuple[int, str]] = {}  # path -> (status, body) to answer instead
    prompt_ids: list[int] | None = None  # what /v1/completions reports (default: the prompt)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        if self.path in self.fail:
            status, text = self.fail[self.path]
            self._send(status, text.encode(), "text/plain")
        elif self.path == "/v1/completions":
            choice = {
                "index": 0,
                "text": "abc",
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": COMPLETION,
                "prompt_token_ids": self.prompt_ids or body["prompt"],
            }
            answer = {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}
            self._send(200, json.dumps(answer).encode(), "application/json")
        else:  # the LoRA endpoints answer plain text
            self._send(200, b"Success: LoRA adapter loaded.", "text/plain")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake() -> Iterator[str]:
    FakeVLLM.requests, FakeVLLM.fail, FakeVLLM.prompt_ids = [], {}, None
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeVLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def peft_tiny():
    model, tokenizer = load_model("tiny")
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, config), tokenizer


def test_sync_loads_each_adapter_under_a_new_name_then_unloads_the_old(fake, peft_tiny, tmp_path):
    model, tokenizer = peft_tiny
    policy = VLLMPolicy(tokenizer, fake, adapter_dir=tmp_path)
    policy.sync_weights(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    policy.sync_weights(model)
    assert FakeVLLM.requests == [
        (
            "/v1/load_lora_adapter",
            {"lora_name": "agemem-1", "lora_path": str(tmp_path / "agemem-1")},
        ),
        (
            "/v1/load_lora_adapter",
            {"lora_name": "agemem-2", "lora_path": str(tmp_path / "agemem-2")},
        ),
        ("/v1/unload_lora_adapter", {"lora_name": "agemem-1"}),
    ]
    assert not (tmp_path / "agemem-1").exists()
    saved = load_file(tmp_path / "agemem-2" / "adapter_model.safetensors")
    b_matrices = [v for k, v in saved.items() if "lora_B" in k]
    assert b_matrices and all((v == 0.5).all() for v in b_matrices)  # the current weights
    assert json.loads((tmp_path / "agemem-2" / "adapter_config.json").read_text())["r"] == 4
    policy.close()
    assert FakeVLLM.requests[-1] == ("/v1/unload_lora_adapter", {"lora_name": "agemem-2"})


def test_act_sends_the_trainers_prompt_ids_and_sampling_settings(fake, peft_tiny):
    model, tokenizer = peft_tiny
    policy = VLLMPolicy(tokenizer, fake, max_new_tokens=12, temperature=0.7, top_p=0.9, seed=3)
    policy.sync_weights(model)
    turns = policy.act(CONTEXTS)
    completions = [body for path, body in FakeVLLM.requests if path == "/v1/completions"]
    hf = HFPolicy(model, tokenizer)
    assert sorted(b["prompt"] for b in completions) == sorted(hf.encode_prompt(c) for c in CONTEXTS)
    for body in completions:
        assert body["model"] == "agemem-1"
        assert body["max_tokens"] == 12 and body["temperature"] == 0.7 and body["top_p"] == 0.9
        assert body["top_k"] == -1  # off, in vLLM's spelling
        assert body["stop"] == ["</tool_call>", "</answer>"]
        assert body["include_stop_str_in_output"] is True and body["return_token_ids"] is True
    assert len({b["seed"] for b in completions}) == 2
    for turn, messages in zip(turns, CONTEXTS, strict=True):
        assert turn.prompt_ids == hf.encode_prompt(messages)
        assert turn.completion_ids == COMPLETION
        assert turn.text == tokenizer.decode(COMPLETION, skip_special_tokens=True)
        assert len(turn.logprobs) == 3 and turn.finish_reason == "stop"
    seeds = sorted(b["seed"] for b in completions)
    policy.reseed(3)
    policy.act(CONTEXTS)
    again = [b["seed"] for p, b in FakeVLLM.requests if p == "/v1/completions"][2:]
    assert sorted(again) == seeds  # the same stream


def test_bad_input_and_bad_answers_fail_clearly(fake, peft_tiny):
    model, tokenizer = peft_tiny
    policy = VLLMPolicy(tokenizer, fake)
    with pytest.raises(ServerError, match=r"call sync_weights\(model\) first"):
        policy.act(CONTEXTS)
    with pytest.raises(ValueError, match="LoRA adapters only"):
        policy.sync_weights(model.get_base_model())
    FakeVLLM.fail = {"/v1/load_lora_adapter": (400, "The lora adapter 'x' has already been loaded")}
    with pytest.raises(ServerError, match=r"rejected .*/v1/load_lora_adapter \(400\): The lora"):
        policy.sync_weights(model)
    FakeVLLM.fail = {}
    policy.sync_weights(model)
    with pytest.raises(ValueError, match="at least one context, got an empty list"):
        policy.act([])
    FakeVLLM.prompt_ids = [1, 2]
    with pytest.raises(ServerError, match="changed the prompt ids"):
        policy.act(CONTEXTS[:1])


def test_a_dead_server_fails_clearly(peft_tiny, tmp_path: Path):
    model, tokenizer = peft_tiny
    url = f"http://127.0.0.1:{free_port()}"
    policy = VLLMPolicy(tokenizer, url, adapter_dir=tmp_path, timeout=5)
    with pytest.raises(ServerError, match=f"vLLM at {url} did not answer .*load_lora_adapter"):
        policy.sync_weights(model)
