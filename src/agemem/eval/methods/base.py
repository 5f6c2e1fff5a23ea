"""What every evaluated method implements, so they share one model, store and embedder.

A method turns tasks into `Episode` records (one per task) through a `RunContext`. Whatever it
does inside (an agent in `MemoryEnv`, a retrieval pipeline, an LLM that extracts facts), it
records what the metrics read:

- `facts.answers` and `facts.tokens_at_answer` (prompt tokens of the call that answered);
- `facts.calls`: one `CallRecord` per memory operation, named by the method's own operation
  (`Add_memory`, `Retrieve_memory`, `mem0/UPDATE`, `a-mem/link`...), for the tool-call tables;
- `facts.retrieved_ids`: store ids of what was retrieved for the answer, and in `steps` the
  exact prompts and outputs of the model calls, so `agemem show` replays any method;
- `facts.final_memories`: the store at the end (memory quality against gold facts);
- `facts.seconds`: wall time per question (latency percentiles).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agemem.env.config import EnvConfig
from agemem.episode import Episode
from agemem.memory.embed import Embedder
from agemem.policy.base import Policy
from agemem.tasks import Task
from agemem.tokens import TokenCounter


@dataclass
class RunContext:
    """What a method runs with: the policy answers and makes any LLM call the method needs."""

    policy: Policy
    embedder: Embedder
    token_counter: TokenCounter
    t_max: int  # the context budget in tokens (prompts are cut to it where a method truncates)
    top_k: int = 5  # memories retrieved per query (ours; AgeMem does not state one)
    seed: int = 0
    progress: bool = True
    batch_size: int = 8  # contexts per `policy.act` call where the method can batch
    model_context: int | None = None  # the model's window in tokens (full-context fills it)
    # AgeMem-style agents keep only the last N stage-1 messages in context (None: all, as in the
    # paper). Long conversations (LoCoMo: ~400-700 turns) would otherwise outgrow the window.
    stage1_window: int | None = None
    env: EnvConfig | None = None  # agent methods' episode rules (None: the paper preset at t_max)


@runtime_checkable
class EvalMethod(Protocol):
    name: str

    def run(self, tasks: Sequence[Task], ctx: RunContext) -> list[Episode]:
        """One episode per task, in task order."""
        ...
