"""The methods `agemem eval` compares, all behind one interface (`base.EvalMethod`).

`METHODS` maps each method's name to a factory taking keyword options only; the pipeline
baselines of other modules (`mem0-style`, `a-mem-style`) are imported only when asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from agemem.eval.methods.base import EvalMethod, RunContext


class UnknownMethod(ValueError):
    """A method name that is not registered; the message lists the known ones."""


def _lazy(module: str, attribute: str) -> Callable[..., EvalMethod]:
    def factory(**options: Any) -> EvalMethod:
        return getattr(importlib.import_module(module), attribute)(**options)

    factory.__name__ = attribute
    return factory


_AGENT = "agemem.eval.methods.agent"
_PROMPTED = "agemem.eval.methods.prompted"
METHODS: dict[str, Callable[..., EvalMethod]] = {
    "no-memory": _lazy(_PROMPTED, "NoMemoryMethod"),
    "full-context": _lazy(_PROMPTED, "FullContextMethod"),
    "rag": _lazy(_PROMPTED, "RagMethod"),
    "mem0-style": _lazy("agemem.eval.methods.mem0", "Mem0StyleMethod"),
    "a-mem-style": _lazy("agemem.eval.methods.amem", "AMemStyleMethod"),
    "agemem": _lazy(_AGENT, "AgeMemMethod"),
    "agemem-norl": _lazy(_AGENT, "AgeMemNoRLMethod"),
    "agemem-sft": _lazy(_AGENT, "AgeMemSFTMethod"),
    "oracle-memory": _lazy(_AGENT, "OracleMemoryMethod"),
    "agemem-rag": _lazy(_AGENT, "AgeMemRagMethod"),
    "atommem": _lazy(_AGENT, "AtomMemMethod"),
}
TRAINED_ONLY = ("agemem", "agemem-sft")  # methods that evaluate a trained checkpoint
STORELESS = ("no-memory", "full-context")  # methods without a memory store


def make_method(name: str, **options: Any) -> EvalMethod:
    """The method registered as `name`, built with `options`."""
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name](**options)


__all__ = [
    "METHODS",
    "STORELESS",
    "TRAINED_ONLY",
    "EvalMethod",
    "RunContext",
    "UnknownMethod",
    "make_method",
]
