"""Task data: one `Task` shape for every source, loaded by name with `load_tasks`.

Sources: "synthetic" (seeded curriculum), "hotpotqa" (AgeMem's setting), "hotpotqa-long"
(AtomMem's long-context setting), "locomo" (long conversations, evaluation only).
"""

from agemem.tasks.base import (
    ContextMessage,
    Question,
    Task,
    TaskDataMissing,
    TaskError,
    TaskSource,
    available_sources,
    get_source,
    load_tasks,
    register_source,
)

__all__ = [
    "ContextMessage",
    "Question",
    "Task",
    "TaskDataMissing",
    "TaskError",
    "TaskSource",
    "available_sources",
    "get_source",
    "load_tasks",
    "register_source",
]
