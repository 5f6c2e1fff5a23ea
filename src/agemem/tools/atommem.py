"""AtomMem's atomic memory operations over the entries retrieved for a step, plus the scratchpad.

Each step's prompt is rebuilt from scratch: the scratchpad (always visible, rewritten whole), the
current query, and the top-k entries retrieved for it, numbered "Memory 1..k" (`begin_step`). The
model then runs any number of operations; `update` and `delete` name an entry by that number, and
`read` sets the query used by the NEXT step's retrieval. The same operations are tag actions
(`parse.parse_atommem`, tags in `parse.ATOMMEM_TAGS`) and function tools (`ATOMMEM_TOOLS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field

from agemem.memory.store import MemoryItem, MemoryNotFound, MemoryStore, Scope, SearchMode
from agemem.tools.parse import ATOMMEM_ANSWER_TAG, ATOMMEM_TAGS
from agemem.tools.registry import NonEmptyStr, Tool, ToolArgs, ToolError, ToolSet, ToolStats

DEFAULT_TOP_K = 6  # AtomMem shows the top-6 retrieved entries each step
NO_MEMORY = "No previous memory"  # what AtomMem's prompt shows when nothing was retrieved

_TOOL = {op: tag for tag, op in ATOMMEM_TAGS.items()}  # operation name -> its tag


@dataclass
class AtomMemState:
    """The memory an AtomMem agent sees and edits.

    `query` starts empty and an empty query retrieves nothing (AtomMem's prompt: no memory until
    the model gives a query). `search_mode` defaults to "dense": AtomMem retrieves by embedding.
    """

    store: MemoryStore
    scope: Scope = field(default_factory=Scope)
    top_k: int = DEFAULT_TOP_K
    search_mode: SearchMode = "dense"
    scratchpad: str = ""
    query: str = ""
    shown: list[str] = field(default_factory=list)  # ids shown this step: shown[i - 1] = Memory i
    stats: ToolStats = field(default_factory=ToolStats)


@dataclass(frozen=True)
class StepView:
    """The memory pieces of one step's prompt."""

    scratchpad: str
    query: str
    memories: str  # "Memory 1: ...\nMemory 2: ..." or NO_MEMORY
    shown: tuple[str, ...] = ()  # the contents of Memory 1..k


def render_memories(items: list[MemoryItem]) -> str:
    """
    >>> render_memories([MemoryItem("mem_1", "Ann likes tea"), MemoryItem("mem_2", "Bo is 7")])
    'Memory 1: Ann likes tea\\nMemory 2: Bo is 7'
    >>> render_memories([])
    'No previous memory'
    """
    return "\n".join(f"Memory {i}: {item.content}" for i, item in enumerate(items, 1)) or NO_MEMORY


def begin_step(state: AtomMemState) -> StepView:
    """Retrieve the top-k for the current query, number them for this step, render the pieces."""
    items = (
        state.store.search(
            state.query, top_k=state.top_k, mode=state.search_mode, scope=state.scope
        )
        if state.query.strip()
        else []
    )
    state.shown = [item.id for item in items]
    return StepView(
        state.scratchpad, state.query, render_memories(items), tuple(i.content for i in items)
    )


# --- operations -----------------------------------------------------------------------------

_INDEX_HELP = 'i of "Memory i" in this step\'s memory list'


class CreateArgs(ToolArgs):
    content: NonEmptyStr = Field(description="a new entry: facts only, self-contained")


class ReadArgs(ToolArgs):
    query: NonEmptyStr = Field(description="keywords; next step's memories will match it")


class UpdateArgs(ToolArgs):
    index: int = Field(ge=1, description=_INDEX_HELP)
    content: NonEmptyStr = Field(description="the entry's new content")


class DeleteArgs(ToolArgs):
    index: int = Field(ge=1, description=_INDEX_HELP)


class ScratchpadArgs(ToolArgs):
    content: str = Field(description="the whole new scratchpad (it replaces the old one)")


def _shown_item(state: AtomMemState, index: int) -> MemoryItem:
    if not state.shown:
        raise ToolError(f"there is no Memory {index}: no memory is shown this step.")
    if index > len(state.shown):
        raise ToolError(f"there is no Memory {index}; this step shows Memory 1-{len(state.shown)}.")
    try:
        return state.store.get(state.shown[index - 1])
    except MemoryNotFound:
        raise ToolError(f"Memory {index} was already deleted in this step.") from None


def create(state: AtomMemState, args: CreateArgs) -> str:
    result = state.store.add(args.content, scope=state.scope)
    if result.added:
        return f"Created: {result.item.content}"
    existing = result.duplicate_of or result.item
    if result.event == "UPDATE":  # the store's dedupe mode "near"
        return f"Updated a near-duplicate instead: {existing.content!r} -> {result.item.content!r}"
    return f"Not created: a near-duplicate is already stored: {existing.content!r}."


def read(state: AtomMemState, args: ReadArgs) -> str:
    state.query = args.query
    return f"Query set to {args.query!r}; the next step shows the memories matching it."


def update(state: AtomMemState, args: UpdateArgs) -> str:
    old = _shown_item(state, args.index)
    new = state.store.update(old.id, args.content)
    return f"Memory {args.index} updated: {old.content!r} -> {new.content!r}"


def delete(state: AtomMemState, args: DeleteArgs) -> str:
    item = _shown_item(state, args.index)
    state.store.delete(item.id)
    return f"Memory {args.index} deleted: {item.content!r}"


def scratchpad(state: AtomMemState, args: ScratchpadArgs) -> str:
    state.scratchpad = args.content
    return "Scratchpad rewritten."


ATOMMEM_TOOLS: ToolSet[AtomMemState] = ToolSet(
    [
        Tool("create", "Add a new memory entry.", CreateArgs, create),
        Tool(
            "read",
            "Set the query that retrieves the memories shown next step.",
            ReadArgs,
            read,
        ),
        Tool(
            "update",
            "Rewrite Memory i of this step's memory list.",
            UpdateArgs,
            update,
        ),
        Tool(
            "delete",
            "Delete Memory i of this step's memory list.",
            DeleteArgs,
            delete,
        ),
        Tool(
            "scratchpad",
            "Rewrite the always-visible scratchpad.",
            ScratchpadArgs,
            scratchpad,
        ),
    ]
)


def _tag(op: str, inner: str) -> str:
    return f"<{_TOOL[op]}>{inner}</{_TOOL[op]}>"


# Our wording of AtomMem's instructions (the public prompt is longer and task-specific).
ATOMMEM_SYSTEM_PROMPT = f"""\
You read a long input piece by piece and manage your memory to answer questions about it.
Your scratchpad is always shown to you: rewrite it whole with {_tag("scratchpad", "...")}
at every step, keeping the task state and the key facts for each question.
Your long-term memory is a vector store that you edit with atomic operations, several per step:
{_tag("read", "keywords")} sets the query; the memories matching it are shown next step.
{_tag("create", "a fact")} stores a new entry.
{_tag("update", "Memory i: new text")} rewrites entry i of the memories shown now.
{_tag("delete", "Memory i")} deletes entry i (delete duplicates).
When asked for the answer, write <{ATOMMEM_ANSWER_TAG}>\\boxed{{answer}}</{ATOMMEM_ANSWER_TAG}> \
and no operation in that step."""
