"""`OpenAIPolicy`: a `Policy` over any OpenAI-compatible chat server (vLLM, SGLang, llama.cpp,
hosted APIs) through the `openai` SDK, one request per context, sent concurrently.

What a server returns beyond text varies, and the turn carries what it got:
- per-token logprobs when the server returns them, else `[]`;
- completion token ids from vLLM's `choices[].token_ids` (ask with
  `extra_body={"return_token_ids": True}`) or llama.cpp's per-logprob `id`, else `[]`;
- prompt token ids from vLLM's `prompt_token_ids`, else `[]`;
- `tool_calls` when the server parsed them (OpenAI function-calling format).

No stop strings by default: servers cut a matched stop string out of the text, and llama.cpp
also drops the logprobs of the tokens around it, so text, ids and logprobs would disagree.
Chat models end their turn with their own end-of-turn token instead.

Retries and backoff are the SDK's (exponential from 0.5 s, capped at 8 s, with jitter; it honours
`Retry-After`); they cover connection errors, timeouts, 408/409/429 and 5xx answers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from openai import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    NotFoundError,
    OpenAI,
    omit,
)

from agemem.policy.base import Message, ToolSpec, Turn


class ServerError(RuntimeError):
    """The server could not be used; the message names the problem and the fix."""


class OpenAIPolicy:
    """Defaults (ours): temperature 1.0 for exploration, 2,048 response tokens (AgeMem's limit),
    8 requests in flight, 120 s per request, 3 retries. Local servers need no key: without
    `api_key` and `OPENAI_API_KEY` a placeholder is sent."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 3,
        temperature: float = 1.0,
        max_tokens: int = 2048,
        top_p: float | None = None,
        logprobs: bool = True,
        stop: Sequence[str] | None = None,
        concurrency: int = 8,
        extra_body: dict[str, Any] | None = None,
        http_client: Any = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.client = OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "no-key",
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )
        self._request: dict[str, Any] = {
            "model": model,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "top_p": omit if top_p is None else top_p,
            "stop": list(stop) if stop else omit,
            "logprobs": logprobs,
            # One alternative is the least a server accepts: llama.cpp reads 0 as "no logprobs"
            # and sends 20 alternatives per token when the field is absent.
            "top_logprobs": 1 if logprobs else omit,
            "extra_body": extra_body,
        }

    def act(
        self,
        contexts: list[list[Message]],
        tools: list[ToolSpec] | None = None,
        *,
        response_formats: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[Turn]:
        """One turn per context. `response_formats`: one OpenAI `response_format` per context
        (e.g. `{"type": "json_schema", ...}`, which constrains the output on servers that
        support it), or None."""
        if not contexts:
            return []
        formats = list(response_formats) if response_formats is not None else [None] * len(contexts)
        if len(formats) != len(contexts):
            raise ValueError(f"{len(formats)} response formats for {len(contexts)} contexts")
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(contexts))) as pool:
            return list(pool.map(lambda c, f: self._complete(c, tools, f), contexts, formats))

    def _complete(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None,
        response_format: dict[str, Any] | None = None,
    ) -> Turn:
        try:
            response = self.client.chat.completions.create(
                messages=messages,
                tools=tools or omit,
                response_format=response_format or omit,
                **self._request,
            )
        except APITimeoutError as err:
            raise ServerError(
                f"{self.base_url} gave no answer within {self.timeout:g} s "
                f"(retried {self.max_retries}x); raise timeout or check the server's load"
            ) from err
        except APIConnectionError as err:
            raise ServerError(
                f"cannot connect to {self.base_url} ({err.__cause__ or err}; "
                f"retried {self.max_retries}x); start the server or fix base_url"
            ) from err
        except NotFoundError as err:
            raise ServerError(
                f"{self.base_url} answered 404 for model {self.model!r}: the server does not serve "
                "that model (see GET /models), or base_url lacks the API prefix (usually /v1)"
            ) from err
        except APIStatusError as err:
            detail = " ".join(str(err.message).split())
            raise ServerError(
                f"{self.base_url} rejected the request ({err.status_code}): {detail}"
            ) from err
        return _turn(response)


def _turn(response: Any) -> Turn:
    choice = response.choices[0]
    message = choice.message
    tokens = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    return Turn(
        text=message.content or "",
        prompt_ids=list(_extra(response).get("prompt_token_ids") or []),
        completion_ids=_completion_ids(choice, tokens),
        logprobs=[t.logprob for t in tokens],
        tool_calls=[c.model_dump() for c in message.tool_calls] if message.tool_calls else None,
        finish_reason=choice.finish_reason,
    )


def _completion_ids(choice: Any, tokens: list[Any]) -> list[int]:
    ids = _extra(choice).get("token_ids")  # vLLM with return_token_ids
    if ids:
        return list(ids)
    if tokens and all("id" in _extra(t) for t in tokens):  # llama.cpp
        return [int(_extra(t)["id"]) for t in tokens]
    return []


def _extra(obj: Any) -> dict[str, Any]:
    """Fields a server added beyond the OpenAI schema (kept by the SDK's models)."""
    return getattr(obj, "model_extra", None) or {}
