"""`Memory.add(infer=True)`: fact extraction and the ADD / UPDATE / DELETE / NONE decision.

Most tests talk to a fake OpenAI-compatible server: a small HTTP server on 127.0.0.1, in this
process, that answers `/v1/chat/completions` with scripted JSON chosen from the prompt. It
stands in for a real model server, which lies outside this machine; the requests it records
show what agemem sends (the JSON schema of each step). One test runs the real embedded model,
SmolLM2-135M-Instruct, through the real code path (llama.cpp with the schema); it asserts the
contract (result shape, all-or-nothing, scope), not the quality of what a 135M model extracts.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agemem import Memory
from agemem.memory.facts import DECIDE_INSTRUCTION, EXTRACT_INSTRUCTION
from agemem.memory.sqlite import SQLiteStore

EVENTS = {"ADD", "UPDATE", "DELETE", "NONE"}

Responder = Callable[[dict[str, Any]], Any]  # request body -> content, or (status, error text)


class FakeServer:
    """Answers each chat request with `responder(body)`; keeps every request body."""

    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.requests: list[dict[str, Any]] = []

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(body)
        answer = self.responder(body)
        if isinstance(answer, tuple):
            status, text = answer
            return status, {"error": {"message": text, "type": "invalid_request_error"}}
        message = {"role": "assistant", "content": answer}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return 200, {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def steps(self) -> list[str]:
        return [_step(body) for body in self.requests]


@pytest.fixture
def fake() -> Iterator[Callable[[Responder], tuple[FakeServer, str]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(responder: Responder) -> tuple[FakeServer, str]:
        state = FakeServer(responder)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status, answer = state.handle(body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return state, f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _step(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    return {EXTRACT_INSTRUCTION: "extract", DECIDE_INSTRUCTION: "decide"}[system]


def _user(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


def _shown(body: dict[str, Any]) -> dict[str, str]:
    """The memories a decision prompt shows: text -> its number."""
    return {text: number for number, text in re.findall(r"^\[(\d+)\] (.*)$", _user(body), re.M)}


def _fact(body: dict[str, Any]) -> str:
    return _user(body).rsplit("New fact: ", 1)[1]


def _decision(name: str, **arguments: str) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def scripted(facts: list[str], decide: Callable[[str, dict[str, str]], str]) -> Responder:
    """Extraction answers `facts`; each decision is `decide(fact, shown)`."""

    def respond(body: dict[str, Any]) -> str:
        if _step(body) == "extract":
            return json.dumps({"facts": facts})
        return decide(_fact(body), _shown(body))

    return respond


def _openai(url: str, **extra: Any) -> dict[str, Any]:
    return {"provider": "openai", "config": {"model": "fake", "openai_base_url": url, **extra}}


def _contents(memory: Memory, user: str) -> list[str]:
    return sorted(r["memory"] for r in memory.get_all(user_id=user)["results"])


def _history_size(memory: Memory) -> int:
    store = memory.store
    assert isinstance(store, SQLiteStore)
    return store._conn.execute("SELECT count(*) FROM history").fetchone()[0]


@pytest.fixture
def memory(tmp_path) -> Iterator[Memory]:
    with Memory(tmp_path / "m.db") as memory:
        memory.add("Maya lives in Lisbon.", user_id="maya")
        memory.add("Maya has a cat named Tom.", user_id="maya")
        memory.add("Maya works at a bakery.", user_id="maya")
        memory.add("Bob lives in Lisbon.", user_id="bob")
        yield memory


CONVERSATION = [
    {"role": "user", "content": "I moved to Porto last month. Sadly Tom died. I love green tea."},
    {"role": "assistant", "content": "I'm sorry about Tom. Porto is lovely."},
    {"role": "user", "content": "Still at the bakery, though."},
]


def test_add_update_delete_and_none_decisions(memory, fake):
    facts = ["Maya moved to Porto", "Maya's cat Tom died", "Maya loves green tea", "Maya works"]

    def decide(fact: str, shown: dict[str, str]) -> str:
        if fact == facts[0]:
            return _decision(
                "UPDATE", id=shown["Maya lives in Lisbon."], text="Maya lives in Porto."
            )
        if fact == facts[1]:
            return _decision("DELETE", id=shown["Maya has a cat named Tom."])
        if fact == facts[2]:
            return _decision("ADD", text="Maya loves green tea.")
        return _decision("NONE", id=shown["Maya works at a bakery."])

    server, url = fake(scripted(facts, decide))
    memory.llm = None  # this Memory has none: the call's llm= is used
    result = memory.add(CONVERSATION, user_id="maya", infer=True, llm=_openai(url))
    assert "error" not in result and result["facts"] == facts
    events = [(r["event"], r["memory"], r.get("previous_memory")) for r in result["results"]]
    assert events == [
        ("UPDATE", "Maya lives in Porto.", "Maya lives in Lisbon."),
        ("DELETE", "Maya has a cat named Tom.", None),
        ("ADD", "Maya loves green tea.", None),
        ("NONE", "Maya works at a bakery.", None),
    ]
    assert all(isinstance(r["id"], str) and r["id"].startswith("mem_") for r in result["results"])
    assert _contents(memory, "maya") == [
        "Maya lives in Porto.",
        "Maya loves green tea.",
        "Maya works at a bakery.",
    ]
    assert _contents(memory, "bob") == ["Bob lives in Lisbon."]  # another scope: untouched
    updated = result["results"][0]["id"]
    assert [e["event"] for e in memory.history(updated, user_id="maya")] == ["ADD", "UPDATE"]
    # one extraction of the whole conversation, then the four decisions
    assert server.steps() == ["extract"] + ["decide"] * 4
    assert "user: I moved to Porto" in _user(server.requests[0])
    assert "assistant: I'm sorry about Tom" in _user(server.requests[0])


def test_each_step_asks_for_its_json_schema_and_ids_are_the_shown_numbers(memory, fake):
    server, url = fake(scripted(["Maya moved to Porto"], lambda f, s: _decision("NOOP")))
    memory.add("I moved to Porto.", user_id="maya", infer=True, llm=_openai(url))
    extract, decide = (body["response_format"] for body in server.requests)
    assert extract["type"] == decide["type"] == "json_schema"
    assert extract["json_schema"]["schema"]["properties"]["facts"]["maxItems"] == 10
    schema = decide["json_schema"]["schema"]
    assert schema["properties"]["name"]["enum"] == ["ADD", "UPDATE", "DELETE", "NOOP"]
    shown = len(_shown(server.requests[1]))
    assert shown == 3  # Maya's three memories, not Bob's
    assert schema["properties"]["arguments"]["properties"]["id"]["enum"] == ["0", "1", "2"]
    assert "mem_" not in _user(server.requests[1])  # store ids are never shown


def test_an_empty_scope_offers_only_add_and_noop(tmp_path, fake):
    server, url = fake(scripted(["Ana likes jazz"], lambda f, s: _decision("ADD")))
    with Memory(tmp_path / "m.db", llm=_openai(url)) as memory:
        result = memory.add("I like jazz.", user_id="ana", infer=True)
        assert [(r["event"], r["memory"]) for r in result["results"]] == [("ADD", "Ana likes jazz")]
    schema = server.requests[1]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["name"]["enum"] == ["ADD", "NOOP"]


@pytest.mark.parametrize(
    ("decision", "error"),
    [
        ("I would add it, it is new.", "could not be read"),
        (_decision("MERGE", text="x"), "names 'MERGE', not one of"),
        (_decision("UPDATE", id="7", text="x"), "UPDATE of id '7', which is not one of the 3"),
        (_decision("DELETE", id="mem_1a2b3c4d"), "DELETE of id 'mem_1a2b3c4d', which is not"),
        (_decision("DELETE"), "DELETE of id None"),
    ],
)
def test_an_unusable_decision_stores_nothing_and_says_why(memory, fake, decision, error):
    """The first fact's decision is valid (ADD); the second's is not: the add stores nothing."""

    def decide(fact: str, shown: dict[str, str]) -> str:
        return _decision("ADD") if fact == "Maya loves green tea" else decision

    _, url = fake(scripted(["Maya loves green tea", "Maya moved to Porto"], decide))
    before, history = _contents(memory, "maya"), _history_size(memory)
    result = memory.add(CONVERSATION, user_id="maya", infer=True, llm=_openai(url))
    assert result["results"] == []
    assert result["facts"] == ["Maya loves green tea", "Maya moved to Porto"]
    assert error in result["error"] and "fact 1 ('Maya moved to Porto')" in result["error"]
    assert result["error"].endswith("nothing was stored")
    assert _contents(memory, "maya") == before and _history_size(memory) == history


@pytest.mark.parametrize("output", ["Facts: Porto, tea.", "", '{"memories": ["x"]}', "[1, 2]"])
def test_an_unreadable_extraction_stores_nothing_and_asks_no_decision(memory, fake, output):
    server, url = fake(lambda body: output)
    result = memory.add(CONVERSATION, user_id="maya", infer=True, llm=_openai(url))
    assert result["results"] == [] and result["facts"] is None
    assert "the fact extraction could not be read" in result["error"]
    assert server.steps() == ["extract"]
    assert len(_contents(memory, "maya")) == 3


def test_no_facts_is_no_change(memory, fake):
    server, url = fake(lambda body: '{"facts": []}')
    assert memory.add("noted", user_id="maya", infer=True, llm=_openai(url)) == {
        "results": [],
        "facts": [],
    }
    assert server.steps() == ["extract"]


def test_a_later_decision_on_a_deleted_memory_changes_nothing_more(memory, fake):
    def decide(fact: str, shown: dict[str, str]) -> str:
        number = shown["Maya has a cat named Tom."]
        if fact == "Tom died":
            return _decision("DELETE", id=number)
        return _decision("UPDATE", id=number, text="Maya's cat Tom is old.")

    _, url = fake(scripted(["Tom died", "Tom was old"], decide))
    result = memory.add("Tom was old and died.", user_id="maya", infer=True, llm=_openai(url))
    assert [r["event"] for r in result["results"]] == ["DELETE", "NONE"]
    assert "earlier decision of this add deleted" in result["results"][1]["reason"]
    assert "Maya has a cat named Tom." not in _contents(memory, "maya")


def test_a_server_that_refuses_json_schema_is_asked_again_without_it(tmp_path, fake):
    def respond(body: dict[str, Any]) -> Any:
        if "response_format" in body:
            return 400, "response_format json_schema is not supported"
        return scripted(["Ana likes jazz"], lambda f, s: _decision("ADD"))(body)

    server, url = fake(respond)
    with Memory(tmp_path / "m.db", llm=_openai(url)) as memory:
        first = memory.add("I like jazz.", user_id="ana", infer=True)
        assert [r["event"] for r in first["results"]] == ["ADD"]
        assert memory.llm.json_schema is False  # remembered: later calls skip the format
    assert ["response_format" in body for body in server.requests] == [True, False, False]


def test_from_config_takes_mem0s_llm_section(tmp_path, fake):
    _, url = fake(scripted(["Ana likes jazz"], lambda f, s: _decision("ADD")))
    config = {
        "vector_store": {"provider": "sqlite", "config": {"path": str(tmp_path / "m.db")}},
        "llm": {
            "provider": "openai",
            "config": {"model": "fake", "base_url": url, "api_key": "k", "temperature": 0},
        },
    }
    with Memory.from_config(config) as memory:
        result = memory.add("I like jazz.", user_id="ana", infer=True)
        assert [(r["event"], r["user_id"]) for r in result["results"]] == [("ADD", "ana")]


def test_llm_settings_are_checked_when_given():
    with pytest.raises(ValueError, match="llm.config keys \\['top_k'\\] are not understood"):
        Memory(":memory:", llm={"provider": "openai", "config": {"model": "m", "top_k": 3}})
    with pytest.raises(ValueError, match="backend must be one of"):
        Memory(":memory:", llm={"provider": "agemem", "config": {"backend": "onnx"}})
    with Memory(":memory:") as memory, pytest.raises(ValueError, match="llm= serves infer=True"):
        memory.add("x", user_id="a", llm="smollm2-135m")


def test_the_store_transaction_is_all_or_nothing(tmp_path):
    with Memory(tmp_path / "m.db") as memory:
        kept = memory.add("Maya lives in Lisbon.", user_id="maya")["results"][0]["id"]
        store = memory.store
        with pytest.raises(RuntimeError, match="boom"), store.transaction():
            store.add("Maya likes tea.", scope=memory.store.get(kept).scope)
            store.update(kept, "Maya lives in Porto.")
            store.delete(kept)
            raise RuntimeError("boom")
        assert _contents(memory, "maya") == ["Maya lives in Lisbon."]
        hits = memory.search("Where does Maya live?", user_id="maya")["results"]
        assert [h["memory"] for h in hits] == ["Maya lives in Lisbon."]


@pytest.mark.slow
def test_the_embedded_model_through_the_real_path(tmp_path):
    """SmolLM2-135M-Instruct (the `smollm2-135m` preset) served by llama.cpp with the JSON
    schemas: whatever it extracts, the result has Mem0's shape, an add stores all its decisions
    or none, and only in its own scope."""
    with Memory(tmp_path / "m.db", llm="smollm2-135m") as memory:
        memory.add("Bob lives in Lisbon.", user_id="bob")
        turns = [
            [{"role": "user", "content": "Hi, I'm Maya. I live in Lisbon and I work at a bakery."}],
            [{"role": "user", "content": "I moved to Porto last month, and I adopted a cat."}],
        ]
        for messages in turns:
            before = _contents(memory, "maya")
            result = memory.add(messages, user_id="maya", infer=True)
            assert set(result) <= {"results", "facts", "error"}
            assert result["facts"] is None or all(isinstance(f, str) for f in result["facts"])
            if "error" in result:
                assert result["results"] == [] and _contents(memory, "maya") == before
                continue
            for record in result["results"]:
                assert record["event"] in EVENTS and isinstance(record["memory"], str)
                if record["id"] is not None:
                    assert record["user_id"] == "maya"
            added = sum(r["event"] == "ADD" for r in result["results"])
            deleted = sum(r["event"] == "DELETE" for r in result["results"])
            assert len(_contents(memory, "maya")) == len(before) + added - deleted
        assert memory.llm.running == "llama.cpp"  # constrained by the schema
        assert _contents(memory, "bob") == ["Bob lives in Lisbon."]
