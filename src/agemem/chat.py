"""`agemem chat`: talk to the agent; it manages a persistent memory while it answers.

Two layouts of a user message (`ChatSession(layout=...)`):
- `"conversation"`: one running conversation; each message starts a stage-3-style turn loop
  with all six tools: the agent's calls run against the store and the context, their
  observations go back to it, until it answers or `max_turns` turns pass. For models that
  follow instructions (a chat model behind an API).
- `"episodes"`: each message is one AgeMem episode in the shape a policy was trained on
  (`MemoryEnv` under the `compact` env over the persistent store): first a stage-1 turn, the
  message shown with the memories related to it, where the agent may Add, Update or Delete;
  then the message as a question, where it retrieves and answers in up to `max_turns` turns.
  The default for the shipped trained policies (`smollm2-135m-agemem`), which learned exactly
  that shape.
The store is a SQLite file (one per `--store`), scoped to `--user`, so memories persist across
sessions. Commands: `/memories` lists them, `/reset` starts a fresh conversation (memories are
kept), `/quit` ends (so does end of input).

As in the episodes, the model sees memory ids as short aliases `mem_<n>` (`agemem.env.aliases`,
first space `id_space`, drawn with `seed`), never the store's 8-hex-digit ids: a small model
trained on the episodes can only copy ids of that form. The aliases hold for the whole session
(a `/reset` keeps them, as it keeps the memories); `/memories` lists the store's own ids.
"""

from __future__ import annotations

import dataclasses
import getpass
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agemem.context import DEFAULT_T_MAX, Context
from agemem.env.aliases import DEFAULT_ID_SPACE, IdAliases
from agemem.env.render import CHAT_PREFIX, turn_messages
from agemem.memory.embed import Embedder
from agemem.memory.store import MemoryItem, MemoryStore, Scope
from agemem.policy.base import Message, Policy
from agemem.summarize import Summarizer
from agemem.tokens import TokenCounter
from agemem.tools.agemem import AGEMEM_TOOLS, AgentMemoryState, agemem_system_prompt
from agemem.tools.parse import ParsedTurn, ToolCall, parse_turn
from agemem.tools.registry import ToolResult

DEFAULT_MAX_TURNS = 6  # ours: enough to store, retrieve and answer, with room for one retry
Layout = Literal["conversation", "episodes"]
LAYOUTS: tuple[Layout, ...] = ("conversation", "episodes")
TRAINED_POLICIES = ("smollm2-135m-agemem", "smollm2-135m-agemem-sft")  # chat in "episodes"

_CHAT_GUIDE = f"""\
You are chatting with a user; their messages start with "{CHAT_PREFIX.strip()}". For each one, \
store what is worth remembering about them (or correct what changed), retrieve what you need \
from earlier conversations, then answer."""


def chat_system_prompt(native_tools: bool = False) -> str:
    return f"{agemem_system_prompt(AGEMEM_TOOLS, native_tools=native_tools)}\n\n{_CHAT_GUIDE}"


@dataclass
class AgentStep:
    """One model turn inside a reply: its raw output and what its calls returned."""

    text: str
    observations: list[str] = field(default_factory=list)


@dataclass
class Reply:
    answer: str | None  # None when the turn cap came first
    steps: list[AgentStep]


class ChatSession:
    """The agent loop behind `agemem chat`, usable as a library (`send` a message, get a
    `Reply`). The store is the caller's and stays open."""

    def __init__(
        self,
        policy: Policy,
        store: MemoryStore,
        *,
        user: str,
        max_turns: int = DEFAULT_MAX_TURNS,
        t_max: int = DEFAULT_T_MAX,
        embedder: Embedder | None = None,
        token_counter: TokenCounter | None = None,
        summarizer: Summarizer | None = None,
        native_tools: bool = False,
        id_space: int = DEFAULT_ID_SPACE,
        seed: int = 0,
        layout: Layout = "conversation",
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        self.policy = policy
        self.store = store
        self.scope = Scope(user_id=user)
        self.max_turns = max_turns
        self.native_tools = native_tools
        self.layout = layout
        self.context = Context(t_max, token_counter, embedder, summarizer)
        self.aliases = IdAliases(id_space, random.Random(seed))
        self._episode_env = (
            _EpisodeChat(self, embedder, token_counter, id_space, seed)
            if layout == "episodes"
            else None
        )
        self.reset()

    def reset(self) -> None:
        """A fresh conversation; the memories stay."""
        self.context.reset(keep_system=False)
        prompt = chat_system_prompt(self.native_tools)
        self.context.append({"role": "system", "content": prompt}, protected=True)
        self.state = AgentMemoryState(self.store, self.context, scope=self.scope)

    def memories(self) -> list[MemoryItem]:
        return self.store.get_all(scope=self.scope)

    def send(self, text: str) -> Reply:
        if not text.strip():
            raise ValueError("empty message: type something to say, or /quit")
        if self._episode_env is not None:
            return self._episode_env.send(text.strip())
        self.context.append({"role": "user", "content": CHAT_PREFIX + text.strip()})
        tools = AGEMEM_TOOLS.openai_tools() if self.native_tools else None
        steps: list[AgentStep] = []
        for _ in range(self.max_turns):
            (turn,) = self.policy.act([self.context.messages], tools)
            parsed = parse_turn(turn)
            results = [] if parsed.ok and parsed.answer is not None else self._run(parsed)
            for message in turn_messages(turn, results):
                self.context.append(message)
            steps.append(AgentStep(turn.text, [r.content for r in results]))
            if parsed.ok and parsed.answer is not None:
                return Reply(parsed.answer, steps)
        return Reply(None, steps)

    @property
    def messages(self) -> list[Message]:
        return self.context.messages

    def _run(self, parsed: ParsedTurn) -> list[ToolResult]:
        """The turn's calls with the ids the model wrote mapped to the store's, and their
        observations with the store's ids shown as aliases."""
        calls = [self._real_ids(call) for call in parsed.tool_calls]
        results = AGEMEM_TOOLS.run(dataclasses.replace(parsed, tool_calls=calls), self.state)
        return [
            ToolResult(r.name, r.call_id, self.aliases.shown_text(r.content), r.error)
            for r in results
        ]

    def _real_ids(self, call: ToolCall) -> ToolCall:
        if call.arguments and isinstance(call.arguments.get("memory_id"), str):
            real = self.aliases.real(call.arguments["memory_id"])
            return dataclasses.replace(call, arguments={**call.arguments, "memory_id": real})
        return call


class _EpisodeChat:
    """The `episodes` layout: one `MemoryEnv` episode per message over the session's store."""

    def __init__(
        self,
        session: ChatSession,
        embedder: Embedder | None,
        token_counter: TokenCounter | None,
        id_space: int,
        seed: int,
    ) -> None:
        from agemem.env.config import PRESETS

        self.session = session
        self.config = PRESETS["compact"].with_(
            stage3_max_turns=session.max_turns, id_space=id_space
        )
        self.embedder, self.token_counter, self.seed = embedder, token_counter, seed
        self.sent = 0

    def send(self, text: str) -> Reply:
        from agemem.env.agemem import MemoryEnv
        from agemem.tasks.base import ContextMessage, Question, Task

        session = self.session
        self.sent += 1
        # the question's "gold" answer is a placeholder: nothing in a chat is scored
        task = Task(
            f"chat-{self.sent}", "chat", [ContextMessage(text)], [], [Question(text, ("-",))]
        )
        env = MemoryEnv(
            self.config,
            store=session.store,
            embedder=self.embedder,
            token_counter=self.token_counter,
            scope=session.scope,
            seed=self.seed * 1_000_003 + self.sent,
        )
        context, steps = env.reset(task), []
        while not env.done:
            (turn,) = session.policy.act([context], env.tools())
            result = env.step(turn)
            steps.append(AgentStep(turn.text, result.info["observations"]))
            context = result.context
        session.context.reset(keep_system=False)
        for message in context:
            session.context.append(message)
        return Reply(env.episode().facts.answers[0], steps)


def _memories_table(items: list[MemoryItem]) -> Table:
    table = Table(title=f"{len(items)} memories")
    table.add_column("id")
    table.add_column("content")
    table.add_column("updated")
    for item in items:
        table.add_row(item.id, escape(item.content), item.updated_at[:19])
    return table


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_chat(
    session: ChatSession,
    read: Callable[[], str],
    console: Console,
    *,
    show_steps: bool = True,
) -> None:
    """The terminal loop: read a line, answer it or run a command, until /quit or end of input."""
    console.print(
        "[dim]agemem chat: /memories lists what I remember, /reset starts over "
        "(memories stay), /quit ends.[/]"
    )
    while True:
        try:
            line = read().strip()
        except EOFError:
            break
        if not line:
            continue
        if line == "/quit":
            break
        if line == "/memories":
            console.print(_memories_table(session.memories()))
            continue
        if line == "/reset":
            session.reset()
            console.print("[dim]conversation reset; memories kept[/]")
            continue
        if line.startswith("/"):
            console.print(f"[red]unknown command {escape(line)}[/]: use /memories, /reset, /quit")
            continue
        reply = session.send(line)
        if show_steps:
            for step in reply.steps[:-1] if reply.answer is not None else reply.steps:
                console.print(f"[dim]  model: {escape(_short(step.text))}[/]")
                for observation in step.observations:
                    console.print(f"[dim]  tool: {escape(_short(observation))}[/]")
        if reply.answer is None:
            console.print(f"[red]agent: (no answer after {session.max_turns} turns)[/]")
        else:
            console.print(f"[bold green]agent:[/] {escape(reply.answer)}")


SCRIPTED = ("store-everything", "no-memory")
CHAT_TEMPERATURE = 0.3  # ours: a 135M model wanders at the training temperature of 1.0
CHAT_MAX_NEW_TOKENS = 256


def chat_policy(
    model: str,
    base_url: str | None,
    api_key: str | None,
    scripted: str | None,
    temperature: float = CHAT_TEMPERATURE,
) -> Policy:
    """The agent behind a chat: a scripted one, a server's model, or a local model."""
    if scripted is not None:
        from agemem.policy.scripted import NoMemoryPolicy, StoreEverythingPolicy

        if scripted not in SCRIPTED:
            raise ValueError(f"unknown scripted agent {scripted!r}; choose one of {SCRIPTED}")
        return StoreEverythingPolicy() if scripted == "store-everything" else NoMemoryPolicy()
    if base_url is not None:
        from agemem.policy.openai import OpenAIPolicy

        return OpenAIPolicy(
            base_url, model, api_key, temperature=temperature, max_tokens=CHAT_MAX_NEW_TOKENS
        )
    from agemem.policy.hf import HFPolicy

    return HFPolicy.from_pretrained(
        model, temperature=temperature, max_new_tokens=CHAT_MAX_NEW_TOKENS
    )


def default_layout(model: str, base_url: str | None, scripted: str | None) -> Layout:
    """ "episodes" for a shipped trained policy run locally (its training shape), else
    "conversation"."""
    local = base_url is None and scripted is None
    return "episodes" if local and model in TRAINED_POLICIES else "conversation"


def open_chat(
    *,
    store: Path,
    user: str | None,
    model: str,
    base_url: str | None,
    api_key: str | None,
    scripted: str | None,
    max_turns: int,
    temperature: float,
    layout: Layout | None = None,
    console: Console | None = None,
) -> None:
    """`agemem chat`: build the agent and the store, then run the loop on stdin. `layout`
    None: "episodes" for a shipped trained policy run locally, else "conversation"."""
    from agemem.env.driver import policy_token_counter
    from agemem.env.embed_cache import cached
    from agemem.memory.sqlite import SQLiteStore

    console = console or Console()
    policy = chat_policy(model, base_url, api_key, scripted, temperature)
    store.parent.mkdir(parents=True, exist_ok=True)
    # "reject", as in the env the policy was trained in: a near-duplicate add is refused and the
    # agent is told which entry it matched, to update it itself. The store opens with the
    # embedder it records (a new one with the library's), so chat and `Memory` share one store.
    with SQLiteStore(store, dedupe="reject") as memory:
        embedder = cached(memory.embedder)
        session = ChatSession(
            policy,
            memory,
            user=user or getpass.getuser(),
            max_turns=max_turns,
            embedder=embedder,
            token_counter=policy_token_counter(policy),
            layout=layout or default_layout(model, base_url, scripted),
        )
        console.print(
            f"[dim]memories of user {escape(session.scope.user_id or '')} in "
            f"{escape(str(store))}[/]"
        )
        run_chat(session, lambda: console.input("[bold]you>[/] "), console)
