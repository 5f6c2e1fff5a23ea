"""`VLLMPolicy`: the `WeightSyncPolicy` of a vLLM server on a GPU, for LoRA training: each
`sync_weights` hands the server the trainer's current adapter through vLLM's runtime LoRA API.

The server (started by the user, not by this class) serves the trainer's base weights with LoRA
and runtime adapter updates enabled; for `smollm2-hotpotqa`'s GRPO the base is SFT's `final/`
(the SFT adapter merged in), which vLLM loads as it is:

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve runs/smollm2-hotpotqa/sft/final \\
        --enable-lora --max-lora-rank 16 --max-loras 2

- `sync_weights(model)`: `model.save_pretrained` writes the adapter (peft's own format, which vLLM
  reads) into `adapter_dir` (a directory the server can read: same machine or shared storage)
  under a new name per sync, `POST /v1/load_lora_adapter {"lora_name", "lora_path"}` loads it,
  then `POST /v1/unload_lora_adapter` drops the previous one, so a request never meets a
  half-replaced adapter. Full-weight models are refused: vLLM takes those through its NCCL / CUDA
  IPC weight-transfer engine (`--weight-transfer-config`, docs.vllm.ai "Weight Transfer"), a
  process-group handshake with the trainer's GPU, not a file.
- `act`: one `POST /v1/completions` per context, `concurrency` at once, with the trainer's
  prompt ids as the prompt (vLLM takes a list of ids and adds no special token), the adapter's
  name as the model, and `return_token_ids` (vLLM >= 0.10.2) so the answer carries the sampled
  ids; `include_stop_str_in_output` keeps a stop string's tokens in them, as in HFPolicy. The
  prompt ids vLLM reports are checked against the ones sent.
- Sampling as `LlamaCppPolicy`'s: temperature, top-p, top-k (-1: off, vLLM's spelling), a seed per
  request from the policy's stream; logprobs are NaN (GRPO recomputes them).

Contract-tested only (tests/test_policy_vllm.py, a fake HTTP server): no GPU here.
"""

from __future__ import annotations

import math
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from agemem.policy.base import Message, ToolSpec, Turn
from agemem.policy.hf import DEFAULT_STOP
from agemem.policy.openai import ServerError
from agemem.policy.server import SyncTimes, WeightSyncPolicy, post_json


class VLLMPolicy(WeightSyncPolicy):
    """A vLLM server at `base_url` (http://host:port, no /v1) sampling from the trainer's LoRA
    weights (module docstring). Defaults as `LlamaCppPolicy`'s: temperature 1.0, no truncation,
    256 new tokens, stop at `</tool_call>` / `</answer>`, 16 requests in flight."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        base_url: str,
        *,
        adapter_dir: str | Path | None = None,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        stop: Sequence[str] = DEFAULT_STOP,
        concurrency: int = 16,
        timeout: float = 600.0,
    ) -> None:
        if concurrency < 1 or max_new_tokens < 1:
            raise ValueError("concurrency and max_new_tokens must be >= 1")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
        self.tokenizer = tokenizer
        self.base_url = base_url.rstrip("/")
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.stop = list(stop)
        self.concurrency = concurrency
        self.timeout = timeout
        self._own_dir = adapter_dir is None
        self.adapter_dir = Path(adapter_dir or tempfile.mkdtemp(prefix="agemem-vllm-"))
        self.adapter_dir.mkdir(parents=True, exist_ok=True)
        self._rng = random.Random(seed)
        self._syncs = 0
        self.adapter: str | None = None  # the name of the adapter the server samples from

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def sync_weights(self, model: torch.nn.Module) -> None:
        if not isinstance(model, PeftModel):
            raise ValueError(
                "VLLMPolicy syncs LoRA adapters only; a full-weight model goes through vLLM's "
                "NCCL/IPC weight transfer (--weight-transfer-config), not implemented here"
            )
        start = time.perf_counter()
        self._syncs += 1
        name = f"agemem-{self._syncs}"
        path = self.adapter_dir / name
        model.save_pretrained(path)
        written = time.perf_counter()
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        previous, self.adapter = self.adapter, name
        if previous is not None:
            self._drop(previous)
        self.last_sync = SyncTimes("lora", written - start, time.perf_counter() - written)

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        prompts = self._prompts(contexts, tools)
        if self.adapter is None:
            raise ServerError("no adapter on the vLLM server yet: call sync_weights(model) first")
        seeds = [self._rng.getrandbits(32) for _ in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(self._complete, prompts, seeds))

    def close(self) -> None:
        if self.adapter is not None:
            self._drop(self.adapter)
            self.adapter = None
        if self._own_dir:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)

    def _complete(self, prompt: list[int], seed: int) -> Turn:
        body = {
            "model": self.adapter,
            "prompt": prompt,
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or -1,
            "seed": seed,
            "stop": self.stop,
            "include_stop_str_in_output": True,
            "return_token_ids": True,
        }
        choice = self._post("/v1/completions", body)["choices"][0]
        reported = choice.get("prompt_token_ids")
        if reported not in (None, prompt):
            raise ServerError(
                f"vLLM at {self.base_url} changed the prompt ids ({len(reported)} tokens for the "
                f"{len(prompt)} sent): the server must not add special tokens"
            )
        ids = choice.get("token_ids")
        if ids is None:
            raise ServerError(
                f"vLLM at {self.base_url} returned no token_ids: it needs return_token_ids "
                "(vLLM >= 0.10.2)"
            )
        return Turn(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_ids=list(prompt),
            completion_ids=list(ids),
            logprobs=[math.nan] * len(ids),
            finish_reason=choice.get("finish_reason"),
        )

    def _drop(self, name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": name})
        shutil.rmtree(self.adapter_dir / name, ignore_errors=True)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return post_json(self.base_url + path, body, self.timeout, f"vLLM at {self.base_url}")
