"""Episodes: AgeMem's three-stage `MemoryEnv`, AtomMem's chunked `AtomMemEnv`, their config,
and `run_episodes`, the batched driver that turns tasks and a policy into `Episode` records."""

from agemem.env.agemem import MemoryEnv
from agemem.env.aliases import IdAliases, alias_vocabulary
from agemem.env.atommem import AtomMemEnv, AtomView, atommem_prompt, read_atommem_prompt
from agemem.env.config import PRESETS, EnvConfig, EnvConfigError
from agemem.env.driver import make_env, policy_token_counter, run_episodes
from agemem.env.embed_cache import CachingEmbedder, cached
from agemem.env.record import EnvError, StepResult
from agemem.env.render import (
    CHAT_PREFIX,
    QUESTION_PREFIX,
    ContextView,
    read_context,
    stage1_message,
    system_prompt,
    turn_messages,
)
from agemem.tasks.base import incoming_text

__all__ = [
    "CHAT_PREFIX",
    "PRESETS",
    "QUESTION_PREFIX",
    "AtomMemEnv",
    "AtomView",
    "CachingEmbedder",
    "ContextView",
    "EnvConfig",
    "EnvConfigError",
    "EnvError",
    "IdAliases",
    "MemoryEnv",
    "StepResult",
    "alias_vocabulary",
    "atommem_prompt",
    "cached",
    "incoming_text",
    "make_env",
    "policy_token_counter",
    "read_atommem_prompt",
    "read_context",
    "run_episodes",
    "stage1_message",
    "system_prompt",
    "turn_messages",
]
