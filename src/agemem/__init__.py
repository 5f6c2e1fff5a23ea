"""agemem: LLM agents that manage their own long- and short-term memory."""

from agemem.api import AsyncMemory, Memory, MemoryTools

__all__ = ["AsyncMemory", "Memory", "MemoryTools"]
__version__ = "0.1.0"
