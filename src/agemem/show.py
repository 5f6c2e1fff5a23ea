"""`agemem show`: episodes from a JSONL file, readable in a terminal.

For each model turn: a header when the stage changes, what the model was given that is new
since its previous turn (or a note that Summary/Filter rewrote the context), its raw output, and
the observations. Then each answer against the gold answers, and the facts the reward reads.
A file with several episodes and no `--episode` shows one line per episode.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from agemem.episode import Episode, StepSample, load_episodes
from agemem.policy.base import Message
from agemem.tokens import message_text

STAGE_NAMES = {
    "agemem": {1: "memory construction", 2: "context under distractors", 3: "question"},
    "atommem": {1: "reading chunks", 2: "answering"},
}
PREVIEW_CHARS = 600  # per message, unless full=True
ROLE_STYLES = {"system": "dim", "user": "cyan", "assistant": "green", "tool": "yellow"}


def _clip(text: str, full: bool) -> str:
    if full or len(text) <= PREVIEW_CHARS:
        return text
    return f"{text[:PREVIEW_CHARS]}... [{len(text) - PREVIEW_CHARS} more characters]"


def _message(message: Message, full: bool, by_section: bool = False) -> Text:
    """One message; `by_section` clips each blank-line-separated section on its own (AtomMem's
    rebuilt prompts, whose chunk comes last)."""
    who = message["role"] + (f" ({message['name']})" if message.get("name") else "")
    text = Text(f"{who}: ", style=f"bold {ROLE_STYLES.get(message['role'], '')}")
    body = message_text(message)
    sections = body.split("\n\n") if by_section else [body]
    text.append("\n\n".join(_clip(section, full) for section in sections))
    return text


def _new_messages(
    step: StepSample, previous: StepSample | None, rebuilt: bool
) -> tuple[list[Message], str]:
    """The messages added since the previous turn, and a note when the context was rewritten.
    `rebuilt`: every prompt is built afresh (AtomMem), so show its last message whole."""
    if previous is None:
        return step.messages, ""
    if rebuilt:
        return step.messages[-1:], ""
    shared = 0
    for old, new in zip(previous.messages, step.messages, strict=False):
        if old != new:
            break
        shared += 1
    new = step.messages[shared:]
    echo = [("assistant", previous.text)] + [("tool", o.content) for o in previous.observations]
    if [(m["role"], m.get("content")) for m in new[: len(echo)]] == echo:
        new = new[len(echo) :]  # the previous turn's own output and observations, shown there
    note = ""
    if shared < len(previous.messages):
        note = (
            f"context rewritten: the first {shared} of the previous {len(previous.messages)}"
            f" messages remain; now {len(step.messages)} messages"
        )
    return new, note


def _step_panel(step: StepSample, previous: StepSample | None, rebuilt: bool, full: bool) -> Panel:
    new, note = _new_messages(step, previous, rebuilt)
    parts: list = []
    if note:
        parts.append(Text(note, style="magenta"))
    parts += [_message(m, full, by_section=rebuilt) for m in new]
    parts.append(Text("model: ", style="bold green") + Text(_clip(step.text, full)))
    for obs in step.observations:
        style = "red" if obs.error else "yellow"
        label = f"-> {obs.name or 'env'}" + (f" [{obs.error}]" if obs.error else "")
        parts.append(Text(f"{label}: ", style=f"bold {style}") + Text(_clip(obs.content, full)))
    extra = f", {len(step.completion_ids)} completion tokens" if step.completion_ids else ""
    title = f"turn {step.turn} · {step.tokens} context tokens{extra}"
    return Panel(Group(*parts), title=title, title_align="left")


def _answers_table(episode: Episode) -> Table:
    table = Table(title="answers", show_lines=False)
    for column in ("#", "question", "answer", "gold", "ok"):
        table.add_column(column)
    facts = episode.facts
    for i, (q, answer, ok) in enumerate(
        zip(facts.questions, facts.answers, episode.correct(), strict=True)
    ):
        mark = "[green]yes[/]" if ok else "[red]no[/]"
        shown = "[dim](none)[/]" if answer is None else escape(answer)
        table.add_row(str(i + 1), escape(q.text), shown, escape(" | ".join(q.answers)), mark)
    return table


def _facts_table(episode: Episode) -> Table:
    f = episode.facts
    table = Table(title="facts", show_header=False)
    table.add_column("fact", style="bold")
    table.add_column("value")
    rows = [
        ("rounds", f"{f.rounds}" + (f" (N_max {f.n_max})" if f.n_max else "")),
        ("ended by", str(f.ended_by)),
        (
            "budget",
            f"{f.t_max} tokens (system prompt {f.system_tokens}); largest context {f.max_tokens}",
        ),
        ("overflows", ", ".join(f"turn {o.turn} ({o.tokens})" for o in f.overflows) or "none"),
        ("tokens at answer", ", ".join(str(t) for t in f.tokens_at_answer)),
        ("tool calls", ", ".join(f"{k} {v}" for k, v in sorted(f.tool_counts().items())) or "none"),
        (
            "refused calls",
            ", ".join(f"{k} {v}" for k, v in sorted(f.failed_counts().items())) or "none",
        ),
        ("format errors", str(f.format_errors)),
        ("adds", "; ".join(f"{a.id}: {a.content}" for a in f.adds) or "none"),
        (
            "updates",
            "; ".join(f"{u.id}: {u.old_content} -> {u.content}" for u in f.updates) or "none",
        ),
        ("deletes", "; ".join(f"{d.id}: {d.old_content}" for d in f.deletes) or "none"),
        ("retrieved", ", ".join(f.retrieved_ids) or "none"),
        ("final memories", "; ".join(f"{m.id}: {m.content}" for m in f.final_memories) or "none"),
    ]
    if f.chunks_total is not None:
        rows.append(("chunks read", f"{f.chunks_read} of {f.chunks_total}"))
    if episode.reward:
        rows.append(("reward", ", ".join(f"{k} {v:.3f}" for k, v in episode.reward.items())))
    for name, value in rows:
        table.add_row(name, escape(_clip(value, False)))
    return table


def render_episode(episode: Episode, console: Console, *, full: bool = False) -> None:
    names = STAGE_NAMES.get(episode.facts.method, {})  # baselines: stages shown by number
    console.print(
        Rule(
            f"[bold]{escape(episode.task_id)}[/] · {episode.family} · "
            f"{episode.facts.method} · group {escape(episode.group_id)}"
        )
    )
    stage, previous = None, None
    for step in episode.steps:
        if step.stage != stage:
            stage = step.stage
            title = f"stage {stage}: {names[stage]}" if stage in names else f"stage {stage}"
            console.print(Rule(title, style="blue"))
        console.print(_step_panel(step, previous, episode.facts.method == "atommem", full))
        previous = step
    console.print(_answers_table(episode))
    console.print(_facts_table(episode))


def render_index(episodes: list[Episode], console: Console) -> None:
    table = Table(title=f"{len(episodes)} episodes (agemem show FILE --episode i for one)")
    for column in ("i", "task", "family", "group", "turns", "answered", "correct", "overflow"):
        table.add_column(column)
    for i, e in enumerate(episodes):
        correct = e.correct()
        table.add_row(
            str(i),
            escape(e.task_id),
            e.family,
            escape(e.group_id),
            str(len(e.steps)),
            "yes" if e.facts.answered else "no",
            f"{sum(correct)}/{len(correct)}",
            "yes" if e.facts.overflowed else "no",
        )
    console.print(table)


def show_file(
    path: str | Path,
    episode: int | None = None,
    *,
    full: bool = False,
    console: Console | None = None,
) -> None:
    """Render one episode of `path` (the only one, or `episode`), else the index."""
    console = console or Console()
    episodes = load_episodes(path)
    if episode is None and len(episodes) == 1:
        episode = 0
    if episode is None:
        render_index(episodes, console)
        return
    if not -len(episodes) <= episode < len(episodes):
        raise IndexError(
            f"{path} holds {len(episodes)} episode(s), 0..{len(episodes) - 1}; "
            f"got --episode {episode}"
        )
    render_episode(episodes[episode], console, full=full)
