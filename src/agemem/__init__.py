"""agemem: LLM agents that manage their own long- and short-term memory."""

__version__ = "0.1.0"
