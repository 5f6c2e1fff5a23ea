"""Episodes: AgeMem's three-stage `MemoryEnv`, AtomMem's chunked `AtomMemEnv`, their config,
and `run_episodes`, the batched driver that turns tasks and a policy into `Episode` records."""

from agemem.env.agemem import (
    QUESTION_PREFIX,
    ContextView,
    MemoryEnv,
    incoming_text,
    read_context,
    stage1_message,
    system_prompt,
)
from agemem.env.aliases import IdAliases, alias_vocabulary
from agemem.env.atommem import AtomMemEnv, AtomView, atommem_prompt, read_atommem_prompt
from agemem.env.config import PRESETS, EnvConfig, EnvConfigError
from agemem.env.driver import make_env, policy_token_counter, run_episodes
from agemem.env.record import EnvError, StepResult

__all__ = [
    "PRESETS",
    "QUESTION_PREFIX",
    "AtomMemEnv",
    "AtomView",
    "ContextView",
    "EnvConfig",
    "EnvConfigError",
    "EnvError",
    "IdAliases",
    "MemoryEnv",
    "StepResult",
    "alias_vocabulary",
    "atommem_prompt",
    "incoming_text",
    "make_env",
    "policy_token_counter",
    "read_atommem_prompt",
    "read_context",
    "run_episodes",
    "stage1_message",
    "system_prompt",
]
