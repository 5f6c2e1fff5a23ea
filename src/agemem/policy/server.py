"""Rollouts through an inference server that takes the trainer's weights (TRL hands vLLM its
weights every step; this is the same shape): `WeightSyncPolicy` is a `Policy` with
`sync_weights(model)`, implemented by `LlamaCppPolicy` (llama.cpp on CPU, here) and
`agemem.policy.vllm.VLLMPolicy` (vLLM on GPU).

`LlamaCppPolicy` runs an `xllamacpp.Server` (prebuilt llama.cpp) in a child process
(`agemem.policy.llama_process`) with `n_parallel` slots, continuous batching and prompt caching,
and sends each context's token ids to its `/completion` endpoint, all of a batch at once:

- Prompt ids are the trainer's own tokenization (the tokenizer's chat template with the
  generation prompt, as `HFPolicy.encode_prompt`), sent as a list of ids, so the server never
  tokenizes. Completion ids are the server's `tokens`: every sampled token, the end-of-turn token
  and a stop string's tokens included (llama.cpp cuts a stop string out of `content` but keeps its
  tokens; checked in tests/test_policy_server.py), and the text is their decoding, as in HFPolicy.
- Sampling: `temperature` (0 = greedy) with only top-k / top-p truncation (off by default, as in
  HFPolicy): llama.cpp's penalties, min-p and the rest are left out of its sampler chain. Each
  request carries a seed drawn from the policy's seeded stream; continuous batching changes the
  batch a row is computed in, so a rerun is not bit-for-bit the same.
- Logprobs: none. `Turn.logprobs` holds NaN, one per completion token (a turn keeps its shape),
  because GRPO recomputes the old log-probabilities itself (`old_logprobs="recompute"`, which
  `rollout="llama.cpp"` requires): llama.cpp's would be the untempered distribution of the
  quantized model, and it drops those of a stop string's tokens.
- Stops: llama.cpp ends a turn at any end-of-generation token of the GGUF (SmolLM2: ids 0, 2, 4),
  HFPolicy at the tokenizer's and generation config's EOS (2); the other two are all but never
  sampled.

`sync_weights(model)`: llama.cpp cannot reload an adapter or weights into a running server
(`/lora-adapters` only sets the scales of the adapters it started with), so each sync writes GGUF
files (`agemem.policy.gguf_export`) and restarts the server on them; a sync with unchanged weights
does nothing. What is written depends on `lora`, for a model with LoRA adapters:
- `lora="merged"` (default): the base with the adapters merged in, one whole GGUF (`weights`,
  q8_0 by default) each sync. llama.cpp then runs plain matmuls: measured on 8 HotpotQA episodes
  of the SFT policy with a rank-16 adapter (8 slots, 2 cores; `benchmarks/llama_lora_merged.py`),
  61.3 and 50.7 generated tokens/s merged against 37.9 and 37.4 with the adapter applied at run
  time (1.36-1.62x), for a sync of ~5 s instead of ~0.7 s.
- `lora="runtime"`: the adapter alone each sync (float32, 20 MB at rank 16), beside a base
  written once per run: the shipped Q4_1 file itself when the trainer's base is exactly it
  (`matches_gguf`, checked once per run; the `smollm2-135m` GRPO preset), else a whole GGUF of
  the base (an SFT-merged base: `smollm2-hotpotqa`'s GRPO; frozen under LoRA).
A model without LoRA (full fine-tuning): the whole model, each sync (the shipped file when it is
exactly the base).
Measured on 2 busy cores (load average ~7), SmolLM2-135M, 4 slots: a LoRA sync (rank 16) 0.6-0.7 s,
0.1 s of it writing the adapter and the rest the restart; checking the base against the shipped
file once ~6 s (4 s of it reading the GGUF's vocabulary); writing a whole q8_0 model 4-7 s.

Threads: the child runs llama.cpp's OpenMP threads with `OMP_WAIT_POLICY=PASSIVE` (unless the
caller set it): its default spin-wait made a server start take 4-15 s instead of 0.7 s on cores
that other processes share, threads spinning at a barrier while the thread they wait for is
descheduled.

One server per process: under several training processes each rolls out its share with its own.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gguf
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from agemem.policy import llama_process
from agemem.policy.base import Message, ToolSpec, Turn
from agemem.policy.gguf_export import (
    WeightType,
    matches_gguf,
    read_gguf,
    write_lora,
    write_model,
)
from agemem.policy.hf import DEFAULT_STOP, HFPolicy, _check_context
from agemem.policy.openai import ServerError


@dataclass(frozen=True)
class SyncTimes:
    """What the last `sync_weights` did: `kind` names what it wrote ("lora": the adapter,
    "model": the whole model, "model+lora", "merged": the model with its adapters merged in,
    "base": nothing, the base file served as is,
    "unchanged": nothing at all, the server already had these weights), `write_s` the seconds
    spent writing files, `load_s` those the server took to load them (a llama.cpp restart)."""

    kind: str = "none"
    write_s: float = 0.0
    load_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.write_s + self.load_s


class WeightSyncPolicy(ABC):
    """A `Policy` served by an inference engine that samples from the trainer's current weights:
    `sync_weights(model)` before each step's rollouts, `act` as any policy, `close` at the end
    (also a context manager). `reseed` restarts the sampling stream (GRPO seeds each step);
    `last_sync` says what the last sync did and cost."""

    tokenizer: PreTrainedTokenizerBase  # the trainer's: prompts are its chat template's ids
    concurrency: int  # requests the server computes at once (what `run_episodes` streams)
    last_sync: SyncTimes = SyncTimes()

    @abstractmethod
    def act(
        self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None
    ) -> list[Turn]: ...

    @abstractmethod
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Serve `model`'s current weights (a PeftModel or a plain model) from now on."""

    @abstractmethod
    def reseed(self, seed: int) -> None:
        """Sample from now on as a fresh policy with this seed would."""

    @abstractmethod
    def close(self) -> None:
        """Stop the server and free what it holds; the policy cannot act afterwards."""

    def release(self) -> None:  # noqa: B027 (optional: a default that does nothing)
        """Free what the server holds until the next `sync_weights` (called after a step's
        rollouts, so the update does not share the machine's memory with it). By default
        nothing: a server outside this process keeps its memory."""

    def encode_prompt(
        self, messages: list[Message], tools: list[ToolSpec] | None = None
    ) -> list[int]:
        """The trainer's prompt ids: the chat template with the assistant generation prompt
        (exactly `HFPolicy.encode_prompt`)."""
        ids = self.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=True, return_dict=False
        )
        return list(ids)

    def _prompts(
        self, contexts: list[list[Message]], tools: list[ToolSpec] | None
    ) -> list[list[int]]:
        if not contexts:
            raise ValueError("act needs at least one context, got an empty list")
        for index, messages in enumerate(contexts):
            _check_context(index, messages)
        return [self.encode_prompt(messages, tools) for messages in contexts]

    def __enter__(self) -> WeightSyncPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LlamaCppPolicy(WeightSyncPolicy):
    """A llama.cpp server on 127.0.0.1 sampling from the trainer's weights (module docstring).

    `base_gguf`: a GGUF of the model's architecture (SmolLM2: the shipped Q4_1 file), served as
    the base when the trainer's base weights are exactly its own, else the template (metadata,
    tokenizer) of the GGUF written from them in `weights` ("q8_0", "f16" or "f32"). `lora`: a
    LoRA model's adapters merged into each sync's GGUF, or served beside the base (module
    docstring). Defaults
    (ours): 16 slots of 4,096 tokens each (prompt + completion; 1.5 GB of KV cache for SmolLM2),
    as many threads as cores, and HFPolicy's sampling defaults (temperature 1.0, no truncation,
    256 new tokens, stop at `</tool_call>` / `</answer>`). Files and the server's log go to
    `work_dir` (a temporary directory by default, removed by `close`). `timeout`: seconds one
    completion may take, 1 hour: every slot shares the cores, so 16 prompts of 4,096 tokens on 2
    busy cores took over 10 minutes each (LoCoMo full-context); a server that dies is noticed at
    once (its socket closes), so the timeout only has to catch a hung one.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        base_gguf: str | Path,
        *,
        n_parallel: int = 16,
        context: int = 4096,
        threads: int | None = None,
        max_new_tokens: int = 256,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        stop: Sequence[str] = DEFAULT_STOP,
        weights: WeightType = "q8_0",
        lora: Literal["merged", "runtime"] = "merged",
        work_dir: str | Path | None = None,
        timeout: float = 3600.0,
        start_timeout: float = 120.0,
    ) -> None:
        if n_parallel < 1 or context < 2:
            raise ValueError(f"need n_parallel >= 1 and context >= 2, got {n_parallel}, {context}")
        if max_new_tokens < 1 or max_new_tokens >= context:
            raise ValueError(f"max_new_tokens must be in [1, context), got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
        if lora not in ("merged", "runtime"):
            raise ValueError(f"lora must be 'merged' or 'runtime', got {lora!r}")
        if importlib.util.find_spec("xllamacpp") is None:
            raise ServerError(
                "LlamaCppPolicy needs xllamacpp (prebuilt llama.cpp): pip install xllamacpp"
            )
        self.base_gguf = Path(base_gguf)
        if not self.base_gguf.is_file():
            raise FileNotFoundError(f"base GGUF {self.base_gguf} does not exist")
        self.tokenizer = tokenizer
        self.n_parallel = self.concurrency = n_parallel
        self.context = context
        self.threads = threads or os.cpu_count() or 1
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.stop = list(stop)
        self.weights = weights
        self.lora = lora
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="agemem-llama-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "server.log"
        self._rng = random.Random(seed)
        self._template: gguf.GGUFReader | None = None  # the base GGUF, opened on first use
        self._served: _Weights | None = None  # the weights the server has
        self._base: tuple[_Weights, Path] | None = None  # the base weights and their file
        self._files = 0
        self._closed = False
        self._server = _Server()
        self._finalizer = weakref.finalize(self, _Server.stop, self._server)
        self.last_sync = SyncTimes()

    @property
    def url(self) -> str:
        """The server's base URL (http://127.0.0.1:PORT); empty before the first sync."""
        return self._server.url

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Write `model`'s weights as GGUF (module docstring: which files, by case) and restart
        the server on them; nothing when the server already has these weights."""
        self._check_open()
        version = _Weights(model.parameters())
        if self._served is not None and self._served.same(version) and self._server.alive():
            self.last_sync = SyncTimes("unchanged")
            return
        start = time.perf_counter()
        written, lora = [], None
        if isinstance(model, PeftModel) and self.lora == "merged":
            path = self._next_file("merged")
            self._base = (
                version,
                write_model(model, path, self._template_gguf(), self.weights, merge_lora=True),
            )
            written.append("merged")
        else:
            base_params = (p for n, p in model.named_parameters() if ".lora_" not in n)
            base_version = _Weights(base_params) if isinstance(model, PeftModel) else version
            if self._base is None or not self._base[0].same(base_version):
                self._base = (base_version, self._base_file(model))
                if self._base[1] != self.base_gguf:
                    written.append("model")
            if isinstance(model, PeftModel):
                lora = write_lora(model, self._next_file("adapter"))
                written.append("lora")
        exported = time.perf_counter()
        self._served = None
        self._server.start(
            self._base[1],
            lora,
            n_parallel=self.n_parallel,
            context=self.context,
            threads=self.threads,
            log_path=self.log_path,
            timeout=self.start_timeout,
        )
        self._served = version
        kind = "+".join(written) or "base"
        self.last_sync = SyncTimes(kind, exported - start, time.perf_counter() - exported)
        self._remove_stale_files()

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        self._check_open()
        prompts = self._prompts(contexts, tools)
        for index, prompt in enumerate(prompts):
            if len(prompt) + self.max_new_tokens > self.context:
                raise ValueError(
                    f"context {index} has {len(prompt)} prompt tokens: with max_new_tokens="
                    f"{self.max_new_tokens} it exceeds the {self.context} tokens of a slot"
                )
        if not self._server.alive():
            raise ServerError(self._server.why_down(self.log_path))
        seeds = [self._rng.getrandbits(32) for _ in prompts]
        with ThreadPoolExecutor(max_workers=min(self.n_parallel, len(prompts))) as pool:
            return list(pool.map(self._complete, prompts, seeds))

    def release(self) -> None:
        """Stop the server (its KV cache: 16 slots x 8,192 tokens hold 4.6 GB RSS for SmolLM2)
        until the next `sync_weights`, which restarts it anyway when the weights changed."""
        self._check_open()
        self._server.stop()

    def close(self) -> None:
        """Stop the server and delete the GGUF files written (the whole `work_dir` when it is a
        temporary one; a given `work_dir` keeps the server's log)."""
        self._finalizer()
        self._closed, self._served, self._base = True, None, None
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        else:
            self._remove_stale_files()

    def _check_open(self) -> None:
        if self._closed:
            raise ServerError("this LlamaCppPolicy is closed: make a new one")

    def _complete(self, prompt: list[int], seed: int) -> Turn:
        body = {
            "prompt": prompt,
            "n_predict": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "samplers": ["top_k", "top_p", "temperature"],
            "stop": self.stop,
            "seed": seed,
            "cache_prompt": True,
            "return_tokens": True,
        }
        answer = self._server.post("/completion", body, self.timeout, self.log_path)
        ids = [int(t) for t in answer["tokens"]]
        return Turn(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_ids=list(prompt),
            completion_ids=ids,
            logprobs=[math.nan] * len(ids),
            finish_reason="length" if answer.get("stop_type") == "limit" else "stop",
        )

    def _base_file(self, model: torch.nn.Module) -> Path:
        """The GGUF of the model's base weights: `base_gguf` when they are exactly its own, else
        one written from them."""
        template = self._template_gguf()
        if matches_gguf(model, template):
            return self.base_gguf
        return write_model(model, self._next_file("model"), template, self.weights)

    def _template_gguf(self) -> gguf.GGUFReader:
        """The base GGUF, opened once (reading SmolLM2's vocabulary costs seconds)."""
        if self._template is None:
            self._template = read_gguf(self.base_gguf)
        return self._template

    def _next_file(self, stem: str) -> Path:
        """A new file name: the running server may still map the previous file."""
        self._files += 1
        return self.work_dir / f"{stem}-{self._files}.gguf"

    def _remove_stale_files(self) -> None:
        """Files the server does not use (it serves `self._base` and the newest adapter)."""
        keep = {self._base[1] if self._base else None, self._server.lora if self._served else None}
        for path in self.work_dir.glob("*.gguf"):
            if path not in keep:
                path.unlink(missing_ok=True)


def serve_hf_policy(
    policy: HFPolicy, *, n_parallel: int, context: int, seed: int = 0
) -> LlamaCppPolicy:
    """A llama.cpp server that samples as `policy` does: its tokenizer, turn length, temperature,
    truncation and stop strings, and its model's current weights (synced once, here). The base
    GGUF is the shipped SmolLM2 file, so only SmolLM2-architecture models can be served;
    another raises `ExportError`, a missing xllamacpp `ServerError`."""
    from agemem.policy.models import PRESETS, package_file

    server = LlamaCppPolicy(
        policy.tokenizer,
        package_file(PRESETS["smollm2-135m"].source),
        n_parallel=n_parallel,
        context=context,
        max_new_tokens=policy.max_new_tokens,
        temperature=policy.temperature,
        top_p=policy.top_p,
        top_k=policy.top_k,
        stop=policy.stop,
        seed=seed,
    )
    try:
        server.sync_weights(policy.model)
    except BaseException:
        server.close()
        raise
    return server


class _Server:
    """The child process running llama.cpp, and the HTTP calls to it."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.lora: Path | None = None

    def start(
        self,
        model: Path,
        lora: Path | None,
        *,
        n_parallel: int,
        context: int,
        threads: int,
        log_path: Path,
        timeout: float,
    ) -> None:
        self.stop()
        port = _free_port()
        settings = {
            "model": str(model),
            "lora": str(lora) if lora else None,
            "port": port,
            "n_parallel": n_parallel,
            "n_ctx": context,
            "threads": threads,
            "parent": os.getpid(),
        }
        env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, llama_process.__file__, json.dumps(settings)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.url, self.lora = f"http://127.0.0.1:{port}", lora
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None:
                raise ServerError(self.why_down(log_path))
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"llama.cpp server did not start within {timeout:g} s; log: {log_path}"
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def why_down(self, log_path: Path) -> str:
        if self.process is None:
            return (
                "no llama.cpp server running (none started yet, or released): "
                "call sync_weights(model) first"
            )
        last = _last_line(log_path)
        return (
            f"llama.cpp server exited (code {self.process.poll()}): {last or 'no output'}; "
            f"log: {log_path}"
        )

    def post(self, path: str, body: dict[str, Any], timeout: float, log_path: Path) -> Any:
        state = "" if self.alive() else "; its process has exited"
        return post_json(
            self.url + path, body, timeout, f"llama.cpp server{state} (log: {log_path})"
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False  # not listening yet, or 503 while the model loads


def post_json(url: str, body: dict[str, Any], timeout: float, what: str) -> Any:
    """POST `body` as JSON and return the JSON (or text) answer; errors name `what` answered."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as err:
        detail = " ".join(err.read().decode(errors="replace").split())[:300]
        raise ServerError(f"{what} rejected {url} ({err.code}): {detail}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ServerError(f"{what} did not answer {url} ({reason})") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Weights:
    """Which tensors, in which state: two snapshots are the same when they hold the very same
    parameter objects (weak references: a freed model's memory may be reused by another's) at
    the same storage and version counter (torch bumps it on every in-place write, such as an
    optimizer step)."""

    def __init__(self, params: Iterable[torch.Tensor]) -> None:
        params = list(params)
        self.refs = [weakref.ref(p) for p in params]
        self.states = [(p.data_ptr(), p._version) for p in params]

    def same(self, other: _Weights) -> bool:
        return self.states == other.states and all(
            a() is not None and a() is b() for a, b in zip(self.refs, other.refs, strict=True)
        )


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""
