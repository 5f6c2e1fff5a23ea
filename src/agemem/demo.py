"""`agemem demo`: the memory core at work on the embedded defaults, in one terminal screen.

The agent's outputs here are written out in AgeMem's protocol (they stand in for a model, and are
labelled so), while everything they act on is real: the SQLite store on disk, the bundled
embedder, the context with its token budget, the parser and validated dispatch. The walk follows
AgeMem's three stages: build memory, survive distractors, answer.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from agemem.context import Context
from agemem.memory.embed import library_embedder
from agemem.memory.sqlite import SQLiteStore
from agemem.memory.store import Scope
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState, agemem_system_prompt
from agemem.tools.parse import parse_agemem

BUDGET = 200  # context tokens on top of the system prompt: small, so the budget is visible
DEFAULT_PATH = Path("runs/demo/memory.db")  # the demo's own store, recreated on every run


def _call(name: str, **arguments: object) -> str:
    payload = json.dumps([{"name": name, "arguments": arguments}])
    return f"<think>{name} is the right tool here.</think><tool_call>{payload}</tool_call>"


def _script(correction_id: str) -> list[tuple[str, str, str | None]]:
    """(stage, incoming message or "", scripted model output) in episode order."""
    return [
        (
            "1 build memory",
            "My sister Maya lives in Lisbon and works as a nurse.",
            _call(
                "Add_memory",
                content="Maya (user's sister) lives in Lisbon; nurse.",
                metadata={"source": "user"},
            ),
        ),
        (
            "1 build memory",
            "Oh, and Maya moved to Porto last month.",
            _call("Retrieve_memory", query="Maya lives"),
        ),
        (
            "1 build memory",
            "",
            _call(
                "Update_memory",
                memory_id=correction_id,
                content="Maya (user's sister) lives in Porto since last month; nurse.",
            ),
        ),
        ("1 build memory", "", _call("Delete_memory", memory_id="mem_00000000", confirmation=True)),
        ("2 distractors", "Lisbon's tram 28 is famous among tourists visiting the old town.", None),
        ("2 distractors", "Lisbon has seven hills and many viewpoints over the river Tagus.", None),
        (
            "2 distractors",
            "Lisbon trams were electrified in 1901, replacing horse-drawn cars.",
            _call("Filter_context", criteria="Lisbon trams and sightseeing"),
        ),
        (
            "3 answer",
            "Which city does my sister live in now?",
            _call("Retrieve_memory", query="Where does Maya live?", top_k=1),
        ),
        ("3 answer", "", "<think>The memory says Porto.</think><answer>Porto</answer>"),
    ]


def run_demo(path: Path, *, overwrite: bool = False) -> None:
    """Run the walk on a new store at `path`. An existing file there is replaced only with
    `overwrite` (else `FileExistsError`, before anything is touched)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give --path a file name")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(
            f"{path} already exists and the demo would replace it; pass --overwrite to replace "
            "it, or choose another --path"
        )
    console = Console()
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    embedder = library_embedder()
    store = SQLiteStore(path, embedder, dedupe="reject")  # as in AgeMem's env (see its prompt)
    system = {"role": "system", "content": agemem_system_prompt()}
    context = Context(embedder=embedder)
    context.append(system, protected=True)
    context.t_max = context.tokens() + BUDGET
    state = AgentMemoryState(store=store, context=context, scope=Scope(user_id="demo"))
    console.print(
        Panel.fit(
            f"store: {path} (SQLite)   embedder: {embedder.name}   context budget: {context.t_max}"
            " tokens\nModel outputs are scripted in AgeMem's protocol; the store, context,"
            " parser and tool dispatch are the real ones.",
            title="agemem demo",
        )
    )

    correction_id, stage_now = "", ""
    for stage, incoming, output in _script("{id}"):
        if stage != stage_now and stage.startswith("2"):
            context.reset(keep_system=True)  # AgeMem stage 2: new context, same store
            console.print("[bold cyan]stage 2[/] context reset; the store is kept")
        stage_now = stage
        if incoming:
            context.append({"role": "user", "content": incoming}, protected=stage.startswith("3"))
            console.print(f"[bold cyan]stage {stage}[/] user: {escape(incoming)}")
        if output is None:
            _show_budget(console, context)
            continue
        output = output.replace("{id}", correction_id)
        turn = parse_agemem(output)
        console.print(f"  [magenta]agent (scripted)[/]: {escape(output)}")
        if turn.answer is not None:
            console.print(f"  [bold green]answer:[/] {turn.answer}")
            break
        for result in AGEMEM_TOOLS.run(turn, state):
            style = "green" if result.ok else "red"
            console.print(f"  [{style}]{result.name}[/] -> {escape(result.content)}")
            context.append({"role": "user", "content": result.content})
        if not correction_id and state.retrieved:
            correction_id = state.retrieved[0].id
        _show_budget(console, context)

    entries = store.get_all(scope=state.scope)
    events = [f"{e.event} {e.memory_id}" for item in entries for e in store.history(item.id)]
    console.print(
        Panel.fit(
            "\n".join(f"{item.id}  {item.content}" for item in entries)
            + "\n\nhistory: "
            + ", ".join(events),
            title=f"long-term memory on disk ({path})",
        )
    )
    store.close()


def _show_budget(console: Console, context: Context) -> None:
    flag = "[bold red]OVERFLOW[/]" if context.overflow else "ok"
    console.print(f"  [dim]context: {context.tokens()}/{context.t_max} tokens {flag}[/]")
