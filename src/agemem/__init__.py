"""agemem: LLM agents that manage their own long- and short-term memory."""

from agemem.api import Memory, MemoryTools

__all__ = ["Memory", "MemoryTools"]
__version__ = "0.1.0"
