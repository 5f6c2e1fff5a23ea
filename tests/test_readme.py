"""The README's library example runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_library_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    example = python_blocks()[0]
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "Maya" in printed
    memory = namespace["memory"]
    events = [e["event"] for e in memory.history(namespace["top"], user_id="alice")]
    assert events[-1] == "UPDATE"
    assert memory.get(namespace["top"], user_id="bob") is None  # the scope rule holds
    assert (tmp_path / "memory.db").exists()


class _ScriptedClient:
    """`client.chat.completions.create` replying with scripted assistant messages (the model is
    outside the code under test); records the messages each call was sent."""

    def __init__(self, replies: list[dict]) -> None:
        self.replies, self.sent = replies, []
        self.chat = self.completions = self

    def create(self, *, model, messages, tools=None):
        from openai.types.chat import ChatCompletion

        self.sent.append(list(messages))
        reply = self.replies[len(self.sent) - 1]
        return ChatCompletion.model_validate(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop", "message": reply}],
            }
        )


def _block(marker: str) -> str:
    (block,) = [b for b in python_blocks() if marker in b]
    return block


def _run_block(marker: str, replies: list[dict], tmp_path, monkeypatch) -> dict:
    from agemem import Memory

    monkeypatch.chdir(tmp_path)
    client = _ScriptedClient(replies)
    namespace: dict = {"memory": Memory(path="memory.db"), "client": client, "model": "m"}
    exec(compile(_block(marker), "README.md", "exec"), namespace)
    namespace["sent"] = client.sent
    return namespace


def test_native_tool_calling_example_runs_and_sends_a_valid_conversation(tmp_path, monkeypatch):
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "Add_memory", "arguments": '{"content": "Alice lives in Porto."}'},
    }
    replies = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "assistant", "content": "You live in Porto."},
    ]
    ns = _run_block("tools.execute(message)", replies, tmp_path, monkeypatch)
    second = ns["sent"][1]  # what the model saw on its second turn
    assert [m["role"] if isinstance(m, dict) else m.role for m in second] == [
        "user",
        "assistant",
        "tool",
    ]
    assert second[1].tool_calls[0].id == second[2]["tool_call_id"] == "c1"
    stored = ns["memory"].get_all(user_id="alice")["results"]
    assert [r["memory"] for r in stored] == ["Alice lives in Porto."]


def test_text_protocol_example_runs(tmp_path, monkeypatch, capsys):
    replies = [
        {
            "role": "assistant",
            "content": '<think>save</think><tool_call>[{"name": "Add_memory", '
            '"arguments": {"content": "Alice lives in Porto."}}]</tool_call>',
        },
        {"role": "assistant", "content": "<think>done</think><answer>In Porto.</answer>"},
    ]
    ns = _run_block("execute_text", replies, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip() == "In Porto."
    system, _, assistant, observation = ns["sent"][1]
    assert "<tool_call>" in system["content"] and "Add_memory(content: string" in system["content"]
    assert assistant["role"] == "assistant"
    assert observation["role"] == "user" and "Added mem_" in observation["content"]
    assert ns["memory"].get_all(user_id="alice")["results"][0]["memory"] == "Alice lives in Porto."
