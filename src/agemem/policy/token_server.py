"""`TokenServerPolicy`: a `Policy` over an asynchronous token-in, token-out generate call, the
interface of verl's rollout server manager (`LLMServerClient.generate`): `await
server.generate(request_id, prompt_ids=[...], sampling_params={...})` returns an object with
`token_ids`, `log_probs` (or None) and `stop_reason`.

The policy knows nothing of verl or of any environment: it turns each context into the trainer's
prompt ids (the tokenizer's chat template with the generation prompt, as `HFPolicy`), sends them,
and makes a `Turn` of the answer, its text the decoding of the sampled ids (as `HFPolicy`).

`act` is synchronous, as the episode driver calls it, while the server manager lives on an
event loop (verl's agent-loop worker's): `act` is meant for a thread other than that loop's,
and each request runs on `loop` (`asyncio.run_coroutine_threadsafe`), all of a call's contexts at
once. Every request of one policy object carries its `request_id`, so a server manager with
sticky sessions sends an episode's turns to one server (its prefix cache).

Sampling: the caller's `sampling_params` (verl's: temperature, top_p, top_k, logprobs...) plus
the turn's length (`max_tokens`) and the AgeMem stop strings, kept in the output
(`include_stop_str_in_output`, vLLM's spelling), as `HFPolicy` and `VLLMPolicy` stop.
Logprobs: the server's when it returns them, else NaN per token (GRPO recomputes them).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase

from agemem.policy.base import Message, ToolSpec, Turn
from agemem.policy.hf import DEFAULT_STOP, HFPolicy, _check_context


class TokenServer(Protocol):
    """What `TokenServerPolicy` calls: verl's `LLMServerClient.generate`."""

    async def generate(
        self, request_id: str, *, prompt_ids: list[int], sampling_params: dict[str, Any]
    ) -> Any: ...


class TokenServerPolicy:
    """A `Policy` whose turns come from `server.generate` on `loop` (module docstring)."""

    encode_prompt = HFPolicy.encode_prompt  # the same prompt ids as every local policy

    def __init__(
        self,
        server: TokenServer,
        tokenizer: PreTrainedTokenizerBase,
        loop: asyncio.AbstractEventLoop,
        *,
        request_id: str,
        sampling_params: dict[str, Any] | None = None,
        max_new_tokens: int = 256,
        stop: Sequence[str] = DEFAULT_STOP,
        timeout: float | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.server = server
        self.tokenizer = tokenizer  # the driver counts tokens with it (`policy_token_counter`)
        self.loop = loop
        self.request_id = request_id
        self.sampling_params = {
            **(sampling_params or {}),
            "max_tokens": max_new_tokens,
            "stop": list(stop),
            "include_stop_str_in_output": True,
        }
        self.timeout = timeout

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        if not contexts:
            raise ValueError("act needs at least one context, got an empty list")
        for index, messages in enumerate(contexts):
            _check_context(index, messages)
        prompts = [self.encode_prompt(messages, tools) for messages in contexts]
        futures = [
            asyncio.run_coroutine_threadsafe(self._generate(prompt), self.loop)
            for prompt in prompts
        ]
        return [future.result(self.timeout) for future in futures]

    async def _generate(self, prompt: list[int]) -> Turn:
        output = await self.server.generate(
            self.request_id, prompt_ids=list(prompt), sampling_params=dict(self.sampling_params)
        )
        ids = list(output.token_ids)
        logprobs = output.log_probs
        return Turn(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_ids=list(prompt),
            completion_ids=ids,
            logprobs=list(logprobs) if logprobs is not None else [math.nan] * len(ids),
            finish_reason=output.stop_reason,
        )
