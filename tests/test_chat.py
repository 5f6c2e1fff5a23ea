"""`agemem chat` driven by a real scripted agent, on a real SQLite store file and the real
embedder: through the library, then through the command line with stdin."""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agemem.chat import ChatSession, run_chat
from agemem.cli import app
from agemem.env.embed_cache import cached
from agemem.memory.sqlite import SQLiteStore
from agemem.policy.base import Turn
from agemem.policy.scripted import StoreEverythingPolicy, call, emit


def session(store, embedder, policy=None, **options) -> ChatSession:
    return ChatSession(
        policy or StoreEverythingPolicy(), store, user="ann", embedder=cached(embedder), **options
    )


def test_messages_go_through_the_memory_tools_and_persist(tmp_path, embedder):
    path = tmp_path / "memory.db"
    with SQLiteStore(path, cached(embedder)) as store:
        chat = session(store, embedder)
        first = chat.send("My sister Maya lives in Porto.")
        assert first.answer == "I don't know."  # nothing else stored yet
        assert first.steps[0].observations[0].startswith("Added mem_")
        assert "My sister Maya lives in Porto." in first.steps[0].observations[1]
        chat.reset()
        assert [m["role"] for m in chat.messages] == ["system"]
        second = chat.send("Where does Maya live?")
        assert second.answer == "My sister Maya lives in Porto."
        assert {m.content for m in chat.memories()} == {
            "My sister Maya lives in Porto.",
            "Where does Maya live?",
        }
        tool_messages = [m for m in chat.messages if m["role"] == "tool"]
        assert [m["name"] for m in tool_messages] == ["Add_memory", "Retrieve_memory"]
    with SQLiteStore(path, cached(embedder)) as store:  # a later session, same file
        again = session(store, embedder)
        assert len(again.memories()) == 2
        assert session(store, embedder).store.count() == 2
        other_user = ChatSession(
            StoreEverythingPolicy(), store, user="bob", embedder=cached(embedder)
        )
        assert other_user.memories() == []


class Rambling:
    """A real policy that never finishes: every turn is a malformed call."""

    def act(self, contexts, tools=None):
        return [Turn("<tool_call>[{oops}]</tool_call>") for _ in contexts]


def test_turn_cap_and_commands(tmp_path, embedder):
    with SQLiteStore(tmp_path / "m.db", cached(embedder)) as store:
        chat = session(store, embedder, policy=Rambling(), max_turns=2)
        reply = chat.send("hello")
        assert reply.answer is None and len(reply.steps) == 2
        assert "not valid JSON" in reply.steps[0].observations[0]
        lines = iter(["/memories", "/nope", "hi", "/reset", "/quit", "never read"])
        console = Console(record=True, width=100, color_system=None)
        run_chat(chat, lambda: next(lines), console)
        out = console.export_text()
        assert "0 memories" in out and "unknown command /nope" in out
        assert "no answer after 2 turns" in out and "conversation reset" in out
        assert next(lines) == "never read"


def test_cli_chat_reads_stdin_until_end_of_input(tmp_path):
    store = tmp_path / "cli.db"
    args = ["chat", "--store", str(store), "--user", "ann", "--scripted", "store-everything"]
    runner = CliRunner()
    first = runner.invoke(app, args, input="Ana lives in Rome.\n/memories\n")
    assert first.exit_code == 0, first.output
    assert "agent: I don't know." in first.output and "Ana lives in Rome." in first.output
    second = runner.invoke(app, args, input="Where does Ana live?\n/quit\n")
    assert second.exit_code == 0 and "agent: Ana lives in Rome." in second.output
    bad = runner.invoke(app, ["chat", "--store", str(store), "--scripted", "oracle"])
    assert bad.exit_code == 1 and "unknown scripted agent" in bad.output


def test_chat_reads_a_store_the_library_wrote(tmp_path):
    """One store for `Memory` and `agemem chat`: chat opens it with the embedder it records."""
    from agemem import Memory

    store = tmp_path / "shared.db"
    with Memory(store) as memory:
        memory.add("Bea works in Oslo.", user_id="bea")
    args = ["chat", "--store", str(store), "--user", "bea", "--scripted", "store-everything"]
    result = CliRunner().invoke(app, args, input="/memories\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "Bea works in Oslo." in result.output


class Updater:
    """A real policy that stores a fact, then corrects it through the id it was shown."""

    def act(self, contexts, tools=None):
        (context,) = contexts
        observations = [m["content"] for m in context if m["role"] == "tool"]
        if not observations:
            return [emit("store", [call("Add_memory", content="Ana lives in Paris.")])]
        if len(observations) == 1:
            shown = observations[0].split()[1].rstrip(":")
            update = call("Update_memory", memory_id=shown, content="Ana lives in Rome.")
            return [emit("correct", [update])]
        return [emit("done", answer="ok")]


def test_the_model_sees_short_ids_and_updates_through_them(tmp_path, embedder):
    with SQLiteStore(tmp_path / "m.db", cached(embedder)) as store:
        chat = session(store, embedder, policy=Updater())
        reply = chat.send("Ana moved to Rome.")
        added, updated = (step.observations[0] for step in reply.steps[:2])
        shown = added.split()[1].rstrip(":")
        assert re.fullmatch(r"mem_[1-9]", shown) and added == f"Added {shown}: Ana lives in Paris."
        assert updated == f"Updated {shown}: 'Ana lives in Paris.' -> 'Ana lives in Rome.'"
        (item,) = chat.memories()
        assert item.content == "Ana lives in Rome." and re.fullmatch(r"mem_[0-9a-f]{8}", item.id)
        assert chat.aliases.real(shown) == item.id
        assert item.id not in "".join(m["content"] or "" for m in chat.messages)


def test_episodes_layout_runs_each_message_as_a_trained_policys_episode(tmp_path, embedder):
    """Each message is stage 1 (shown with its related memories; Add/Update/Delete) then a
    question (retrieve, answer), over the persistent store; a later session answers from it."""
    path = tmp_path / "memory.db"
    with SQLiteStore(path, cached(embedder)) as store:
        chat = session(store, embedder, layout="episodes")
        first = chat.send("My sister Maya lives in Porto.")
        stage1 = first.steps[0]
        assert stage1.observations[0].startswith("Added mem_")
        assert [m.content for m in chat.memories()] == ["My sister Maya lives in Porto."]
        assert "Retrieve_memory" in first.steps[1].text and first.answer is not None
    with SQLiteStore(path, cached(embedder)) as store:  # a new session on the same file
        chat = session(store, embedder, layout="episodes")
        reply = chat.send("Where does Maya live?")
        assert reply.answer == "My sister Maya lives in Porto."
        assert chat.messages[1]["content"] == "Question: Where does Maya live?"
        assert "My sister Maya lives in Porto." in reply.steps[-2].observations[0]
    try:
        session(store, embedder, layout="threads")
    except ValueError as err:
        assert "unknown layout 'threads'" in str(err)
    else:
        raise AssertionError("an unknown layout must be refused")


def test_the_shipped_policy_answers_a_new_session_from_memory(tmp_path, embedder):
    """The shipped trained SmolLM2 policy in a real chat: told a fact in one session, asked in
    a new session over the same store file, its answer comes from the memory it stored."""
    from agemem.chat import chat_policy
    from agemem.env.driver import policy_token_counter
    from agemem.policy.models import TRAINED_DIR

    if not (TRAINED_DIR / "smollm2-135m-agemem" / "adapters.json").is_file():
        pytest.skip("no trained policy ships in this copy (agemem export-policy writes it)")
    policy = chat_policy("smollm2-135m-agemem", None, None, None, temperature=0.0)
    path, counter = tmp_path / "memory.db", policy_token_counter(policy)

    def chat(store):
        return session(store, embedder, policy=policy, layout="episodes", token_counter=counter)

    with SQLiteStore(path, cached(embedder)) as store:
        chat(store).send("My sister Maya moved to Lisbon last spring.")
        stored = [m.content for m in chat(store).memories()]
        assert any("Lisbon" in m for m in stored), stored
    with SQLiteStore(path, cached(embedder)) as store:  # a new session, the same file
        reply = chat(store).send("Which city does my sister Maya live in?")
        retrieved = [o for step in reply.steps for o in step.observations if "Lisbon" in o]
        assert retrieved, "the answer turn saw no memory of the fact"
        assert reply.answer is not None and "Lisbon" in reply.answer
