"""OpenAIPolicy against a real llama.cpp server (xllamacpp serving the SmolLM2 GGUF on
127.0.0.1), plus the failure modes a client meets: dead port, wrong path, slow server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from servers import free_port, llama_server

from agemem.policy.hf import HFPolicy
from agemem.policy.models import PRESETS, load_model, package_file
from agemem.policy.openai import OpenAIPolicy, ServerError

CONTEXTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "List three fruits."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi!"}],
]


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    with llama_server(package_file(PRESETS["smollm2-135m"].source)) as url:
        yield url


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def test_server_turns_carry_text_ids_and_logprobs(server_url, smollm2):
    _, tok = smollm2
    policy = OpenAIPolicy(server_url, "smollm2", temperature=0, max_tokens=12, concurrency=3)
    turns = policy.act(CONTEXTS)
    assert len(turns) == len(CONTEXTS)
    for turn in turns:
        assert turn.text and turn.finish_reason in ("stop", "length")
        assert len(turn.completion_ids) == len(turn.logprobs) > 0
        assert all(lp <= 0 for lp in turn.logprobs)
        assert tok.decode(turn.completion_ids, skip_special_tokens=True) == turn.text
        assert turn.prompt_ids == []  # llama.cpp does not return prompt ids
        assert turn.finish_reason == "stop" or len(turn.completion_ids) == 12


def test_server_logprobs_agree_with_the_converted_checkpoint(server_url, smollm2):
    """Same weights, two runtimes: llama.cpp computes with the Q4_1 weights and 8-bit activations,
    transformers with the dequantized fp32 weights, so they agree up to quantization noise; a wrong
    conversion or chat template would be off by whole nats."""
    hf = HFPolicy(*smollm2, max_new_tokens=1)
    served = OpenAIPolicy(server_url, "smollm2", temperature=0, max_tokens=16).act(CONTEXTS[:1])[0]
    recomputed = hf.logprobs_of(hf.encode_prompt(CONTEXTS[0]), served.completion_ids)
    gaps = [abs(a - b) for a, b in zip(served.logprobs, recomputed, strict=True)]
    assert sum(gaps) / len(gaps) < 0.25, gaps  # measured: mean 0.067, max 0.28


def test_logprobs_can_be_turned_off(server_url):
    turn = OpenAIPolicy(server_url, "smollm2", max_tokens=4, logprobs=False).act(CONTEXTS[:1])[0]
    assert turn.text and turn.logprobs == [] and turn.completion_ids == []


def test_dead_port_fails_clearly_after_the_configured_retries():
    attempts: list[str] = []
    client = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: attempts.append(r.url)]})
    url = f"http://127.0.0.1:{free_port()}/v1"
    policy = OpenAIPolicy(url, "m", max_retries=2, timeout=5, http_client=client)
    with pytest.raises(ServerError) as err:
        policy.act(CONTEXTS[:1])
    assert len(attempts) == 3
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot connect to {url} (")
    assert "retried 2x); start the server or fix base_url" in message


def test_wrong_path_is_a_404_error_naming_the_fix(server_url):
    url = server_url.replace("/v1", "/v9")
    with pytest.raises(ServerError, match="answered 404 for model 'smollm2'.*usually /v1"):
        OpenAIPolicy(url, "smollm2", max_retries=0).act(CONTEXTS[:1])


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with a vLLM-shaped completion (token ids, parsed tool calls), after
    an optional delay. Stands in for vLLM, which cannot run on this CPU machine."""

    delay = 0.0
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "prompt_token_ids": [1, 2, 3],
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "token_ids": [7, 8],
                "logprobs": {
                    "content": [
                        {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []},
                        {"token": "b", "logprob": -1.5, "bytes": [98], "top_logprobs": []},
                    ]
                },
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "Add_memory", "arguments": '{"content": "x"}'},
                        }
                    ],
                },
            }
        ],
    }

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.delay)
        payload = json.dumps(self.body).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting, as the timeout test intends

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[tuple[str, type[_Canned]]]:
    handler = type("Handler", (_Canned,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    server.shutdown()
    server.server_close()


def test_vllm_token_ids_and_tool_calls_are_passed_back(canned):
    url, _ = canned
    turn = OpenAIPolicy(url, "m", max_retries=0).act(CONTEXTS[:1])[0]
    assert turn.text == "" and turn.finish_reason == "tool_calls"
    assert turn.prompt_ids == [1, 2, 3] and turn.completion_ids == [7, 8]
    assert turn.logprobs == [-0.5, -1.5]
    assert turn.tool_calls[0]["function"] == {"name": "Add_memory", "arguments": '{"content": "x"}'}


def test_slow_server_times_out_clearly(canned):
    url, handler = canned
    handler.delay = 1.0
    policy = OpenAIPolicy(url, "m", timeout=0.2, max_retries=1)
    with pytest.raises(ServerError, match=r"no answer within 0.2 s \(retried 1x\); raise timeout"):
        policy.act(CONTEXTS[:1])
