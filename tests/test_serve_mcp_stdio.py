"""`agemem mcp` over stdio, started as a subprocess by the MCP SDK's own client: the README's
Claude Desktop / Cursor configuration as written, and a key's tenant as the only one reached."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from serving import AGEMEM, ENV, MCP_TOOLS, agemem, call, create_key

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_mcp_config() -> dict[str, Any]:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(), flags=re.DOTALL)
    configs = [json.loads(b) for b in blocks if '"mcpServers"' in b]
    assert len(configs) == 1, "the README shows one MCP client configuration"
    return configs[0]["mcpServers"]["agemem"]


def _stdio(args: list[str], **env: str) -> Client:
    return Client(StdioServerParameters(command=AGEMEM, args=args, env={**ENV, **env}))


def test_readme_mcp_config_runs_over_stdio(tmp_path):
    entry = readme_mcp_config()
    assert entry["command"] == "agemem"  # the console script; here, this environment's
    args = list(entry["args"])
    args[args.index("--store") + 1] = str(tmp_path / "server")

    async def session() -> dict[str, Any]:
        async with _stdio(args) as client:
            assert {t.name for t in (await client.list_tools()).tools} == MCP_TOOLS
            error, added = await call(client, "add_memory", text="My sister is called Ines.")
            assert not error, added
            error, found = await call(client, "search_memories", query="sister's name")
            assert not error, found
            return found

    found = anyio.run(session)
    assert [r["memory"] for r in found["results"]] == ["My sister is called Ines."]
    assert found["results"][0]["user_id"] == "me"  # the config's --user-id
    assert (tmp_path / "server" / "tenants" / "local.db").exists()


def test_stdio_reaches_only_the_keys_tenant(tmp_path):
    store = tmp_path / "server"
    acme, globex = create_key(store, "acme"), create_key(store, "globex")
    base = ["mcp", "--store", str(store)]

    async def write() -> str:
        async with _stdio(base, AGEMEM_API_KEY=acme) as client:
            error, added = await call(client, "add_memory", text="Vault code 9911.", user_id="al")
            assert not error, added
            return added["results"][0]["id"]

    memory_id = anyio.run(write)
    answers: list[tuple[str, bool, Any]] = []

    async def probe() -> None:
        async with _stdio(base, AGEMEM_API_KEY=globex) as client:
            for tool, arguments in (
                ("search_memories", {"query": "vault code", "user_id": "al"}),
                ("list_memories", {"user_id": "al"}),
                ("update_memory", {"memory_id": memory_id, "text": "pwned"}),
                ("delete_memory", {"memory_id": memory_id}),
                ("memory_history", {"memory_id": memory_id}),
            ):
                answers.append((tool, *await call(client, tool, **arguments)))
            agemem("keys", "revoke", globex.split("_")[1], "--store", str(store))
            answers.append(("after revoke", *await call(client, "list_memories", user_id="al")))

    anyio.run(probe)
    assert answers[0][1:] == (False, {"results": []})
    assert answers[1][1:] == (False, {"results": []})
    for _, error, message in answers[2:5]:
        assert error and message.endswith(f"no memory with id {memory_id!r}")
    assert answers[5][1] and "revoked" in answers[5][2]
    assert "9911" not in json.dumps(answers)
    with sqlite3.connect(store / "tenants" / "acme.db") as db:
        assert db.execute("SELECT id, content FROM memories").fetchall() == [
            (memory_id, "Vault code 9911.")
        ]
        events = db.execute("SELECT event FROM history WHERE memory_id = ?", (memory_id,))
        assert [e for (e,) in events] == ["ADD"]


def test_stdio_refuses_a_bad_key_or_tenant(tmp_path):
    store = str(tmp_path / "server")
    create_key(Path(store), "acme")
    bad_key = agemem("mcp", "--store", store, "--key", "agm_000000000000_x", check=False)
    assert bad_key.returncode == 2 and "invalid API key" in bad_key.stderr
    bad_tenant = agemem("mcp", "--store", store, "--tenant", "../acme", check=False)
    assert bad_tenant.returncode == 2 and "tenant names" in bad_tenant.stderr
