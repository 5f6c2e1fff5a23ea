"""`agemem serve` as a real process on 127.0.0.1: Mem0's REST paths, keys and tenants, the probes
of issue 21 (cross-tenant and cross-user reads and writes, missing / wrong / revoked keys, bad
input), and MCP over streamable HTTP with the SDK's own client, same keys."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from serving import MCP_TOOLS, Server, agemem, agemem_server, call, create_key

from agemem.serve import MAX_BODY_BYTES, MAX_LIMIT

pytestmark = pytest.mark.slow
SECRET = "Alice's locker code is 7421."  # what no other tenant or user may ever see


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request, tmp_path_factory) -> Any:
    """One server, three tenants: acme (holds alice's secret), globex (the prober), gone (its
    keys get revoked). On SQLite files, and on a database of its own on the test session's
    Postgres server (the keys in a file beside, as `--keys` puts them)."""
    folder = tmp_path_factory.mktemp("serve")
    store: Any = folder / "store"
    extra: tuple[str, ...] = ()
    if request.param == "postgres":
        store = _fresh_database(request.getfixturevalue("postgres_url"))
        extra = ("--keys", str(folder / "keys.db"))
    keys = {tenant: create_key(store, tenant, *extra) for tenant in ("acme", "globex", "gone")}
    with agemem_server(store, *extra) as server:
        yield server, keys


def _fresh_database(url: str) -> str:
    import uuid

    import psycopg

    name = f"serve_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + f"/{name}"


def _stored(server: Server, tenant: str) -> list[tuple[str, str]]:
    """(id, content) of every entry in `tenant`'s store, read from the files or the database
    directly, not through the server."""
    if isinstance(server.store, str):
        import psycopg

        with psycopg.connect(server.store) as conn:
            return conn.execute(f"SELECT id, content FROM tenant_{tenant}.memories").fetchall()
    with sqlite3.connect(server.store / "tenants" / f"{tenant}.db") as db:
        return db.execute("SELECT id, content FROM memories").fetchall()


def _add(client: httpx2.Client, text: str, **scope: str) -> dict[str, Any]:
    response = client.post("/memories", json={"messages": text, **scope})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def _snapshot(server: Server, key: str, **scope: str) -> list[Any]:
    """Every entry of a scope with its history, as the owner's key reads it."""
    with server.client(key) as client:
        items = client.get("/memories", params={**scope, "limit": MAX_LIMIT}).json()["results"]
        return [(item, client.get(f"/memories/{item['id']}/history").json()) for item in items]


def test_rest_round_trip_in_mem0_shapes(served):
    server, keys = served
    with server.client(keys["acme"]) as client:
        conversation = [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "I moved to Porto last spring."},
            {"role": "assistant", "content": "Porto is lovely."},
        ]
        added = client.post(
            "/memories",
            json={"messages": conversation, "user_id": "carol", "metadata": {"src": "chat"}},
        ).json()["results"]
        assert [r["event"] for r in added] == ["ADD", "ADD"]  # the system prompt is not stored
        assert added[0]["memory"] == "I moved to Porto last spring."
        assert added[0]["metadata"] == {"src": "chat", "role": "user"}
        first = added[0]["id"]

        found = client.post(
            "/search", json={"query": "Where does carol live?", "user_id": "carol", "limit": 1}
        ).json()
        assert [r["id"] for r in found["results"]] == [first]
        filtered = client.post(
            "/search",
            json={"query": "Porto", "user_id": "carol", "filters": {"role": "assistant"}},
        ).json()["results"]
        assert [r["memory"] for r in filtered] == ["Porto is lovely."]

        assert client.get(f"/memories/{first}").json()["memory"] == added[0]["memory"]
        assert client.get(f"/memories/{first}", params={"user_id": "dave"}).status_code == 404
        updated = client.put(f"/memories/{first}", json={"text": "I live in Braga now."}).json()
        assert updated["result"]["memory"] == "I live in Braga now."
        assert client.delete(f"/memories/{first}").json() == {
            "message": "Memory deleted successfully"
        }
        events = client.get(f"/memories/{first}/history").json()
        assert [e["event"] for e in events] == ["ADD", "UPDATE", "DELETE"]
        assert client.get(f"/memories/{first}").status_code == 404

        deleted = client.delete("/memories", params={"user_id": "carol"}).json()
        assert deleted["deleted"] == 1
        assert client.get("/memories", params={"user_id": "carol"}).json() == {"results": []}
        assert client.get("/health").json() == {"status": "ok"}
    docs = httpx2.get(f"{server.url}/openapi.json").json()
    for path in ("/memories", "/memories/{memory_id}", "/memories/{memory_id}/history"):
        assert path in docs["paths"]
    assert {"/search", "/reset"} <= set(docs["paths"])


def test_cross_tenant_and_cross_user_probes_are_refused(served):
    server, keys = served
    with server.client(keys["acme"]) as acme:
        secret = _add(acme, SECRET, user_id="alice")
        _add(acme, "Alice prefers window seats.", user_id="alice", agent_id="travel")
    before = _snapshot(server, keys["acme"], user_id="alice")
    memory_id = secret["id"]
    answers: list[tuple[str, int, int, str]] = []  # probe, expected, got, body
    everyone = {"OR": [{"user_id": {"ne": "nobody"}}, {"user_id": "alice"}]}

    def probe(client: httpx2.Client, who: str, scope: dict[str, str]) -> None:
        by_id = f"/memories/{memory_id}"
        query = {"query": "locker code", **scope}
        every_user = {**query, "filters": everyone}
        probes = [
            ("read", 404, client.get(by_id, params=scope)),
            ("history", 404, client.get(f"{by_id}/history", params=scope)),
            ("update", 404, client.put(by_id, params=scope, json={"text": "pwned"})),
            ("delete", 404, client.delete(by_id, params=scope)),
        ]
        if scope:
            probes += [
                ("search", 200, client.post("/search", json=query)),
                ("search, every user", 200, client.post("/search", json=every_user)),
                ("list", 200, client.get("/memories", params=scope)),
            ]
        for name, expected, response in probes:
            answers.append(
                (f"{who} {scope}: {name}", expected, response.status_code, response.text)
            )
            if expected == 200:
                assert response.json() == {"results": []}

    with server.client(keys["globex"]) as globex:  # another tenant, by id, scope and filter
        probe(globex, "globex", {})
        probe(globex, "globex", {"user_id": "alice"})
        for name, response in (
            ("delete alice's scope", globex.delete("/memories", params={"user_id": "alice"})),
            ("reset", globex.post("/reset")),
        ):
            answers.append((f"globex: {name}", 200, response.status_code, response.text))
    with server.client(keys["acme"]) as acme:  # another user of the same tenant
        probe(acme, "acme", {"user_id": "bob"})
    wrong = [a for a in answers if a[1] != a[2]]
    leaks = [a for a in answers if "7421" in a[3] or "window seats" in a[3]]
    assert len(answers) == 20 and wrong == [] and leaks == []
    assert _snapshot(server, keys["acme"], user_id="alice") == before  # nothing changed


def test_missing_wrong_and_revoked_keys_get_401(served):
    server, keys = served
    with server.client(keys["gone"]) as gone:
        kept = _add(gone, "Gone's only memory.", user_id="g")
    acme_before = _snapshot(server, keys["acme"], user_id="alice")
    key_id = keys["acme"].split("_")[1]
    forged = f"agm_{key_id}_{'A' * 43}"  # a real key id with a wrong secret
    other = create_key(server.store, "acme", *server.key_args)
    store = ("--store", str(server.store), *server.key_args)
    agemem("keys", "revoke", other.split("_")[1], *store)
    agemem("keys", "revoke", "--tenant", "gone", *store)
    headers = {
        "no header": {},
        "empty bearer": {"Authorization": "Bearer"},
        "basic scheme": {"Authorization": f"Basic {keys['acme']}"},
        "unknown key": {"Authorization": "Bearer agm_000000000000_nope"},
        "not a key": {"Authorization": "Bearer hello"},
        "wrong secret": {"Authorization": f"Bearer {forged}"},
        "revoked key": {"Authorization": f"Bearer {other}"},
        "deleted tenant's key": {"Authorization": f"Bearer {keys['gone']}"},
    }
    requests = [
        ("POST", "/memories", {"messages": "x", "user_id": "alice"}),
        ("GET", "/memories?user_id=alice", None),
        ("GET", f"/memories/{kept['id']}", None),
        ("PUT", f"/memories/{kept['id']}", {"text": "pwned"}),
        ("DELETE", f"/memories/{kept['id']}", None),
        ("GET", f"/memories/{kept['id']}/history", None),
        ("DELETE", "/memories?user_id=alice", None),
        ("POST", "/search", {"query": "code", "user_id": "alice"}),
        ("POST", "/reset", None),
        ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    ]
    answers = []
    for name, header in headers.items():
        for method, path, body in requests:
            response = httpx2.request(method, server.url + path, json=body, headers=header)
            answers.append((name, method, path, response.status_code, response.json()))
    assert {a[3] for a in answers} == {401}, [a for a in answers if a[3] != 401]
    assert all("key" in a[4]["detail"] for a in answers)
    assert _snapshot(server, keys["acme"], user_id="alice") == acme_before
    assert _stored(server, "gone") == [(kept["id"], kept["memory"])]  # still there


def test_bad_input_is_answered_4xx_and_changes_nothing(served):
    server, keys = served
    with server.client(keys["acme"]) as client:
        kept = _add(client, "Bad input must not touch this.", user_id="erin")
    before = _snapshot(server, keys["acme"], user_id="erin")
    json_headers = {"Content-Type": "application/json"}
    big = json.dumps({"messages": "a" * MAX_BODY_BYTES, "user_id": "erin"})

    def chunks():
        yield b'{"messages": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"a" * 65536
        yield b'", "user_id": "erin"}'

    def add(**body: Any) -> dict[str, Any]:
        return {"json": {"messages": "x", "user_id": "erin", **body}}

    def search(**body: Any) -> dict[str, Any]:
        return {"json": {"query": "x", "user_id": "erin", **body}}

    by_id = f"/memories/{kept['id']}"
    probes: list[tuple[str, str, str, dict[str, Any], int]] = [
        ("bad JSON", "POST", "/memories", {"content": b'{"messages": "x",'}, 400),
        ("bad JSON (search)", "POST", "/search", {"content": b"{query: x}"}, 400),
        ("not JSON", "POST", "/search", {"content": b"query=x", "ctype": "text/plain"}, 415),
        ("a list body", "POST", "/memories", {"json": ["x"]}, 422),
        ("no body", "POST", "/search", {}, 422),
        ("messages a number", "POST", "/memories", add(messages=5), 422),
        ("user_id a list", "POST", "/memories", add(user_id=["erin"]), 422),
        ("user_id empty", "POST", "/memories", add(user_id=""), 422),
        ("user_id too long", "POST", "/memories", add(user_id="u" * 300), 422),
        ("metadata a list", "POST", "/memories", add(metadata=[1]), 422),
        ("message without content", "POST", "/memories", add(messages=[{"role": "user"}]), 422),
        ("infer true", "POST", "/memories", add(infer=True), 422),
        ("no scope", "POST", "/memories", {"json": {"messages": "x"}}, 400),
        ("oversized body", "POST", "/memories", {"content": big.encode()}, 413),
        ("oversized chunked body", "POST", "/memories", {"content": chunks()}, 413),
        ("oversized update", "PUT", by_id, {"content": big.encode()}, 413),
        ("query a number", "POST", "/search", search(query=5), 422),
        ("empty query", "POST", "/search", search(query=""), 422),
        ("limit a string", "POST", "/search", search(limit="5"), 422),
        ("huge limit", "POST", "/search", search(limit=10**12), 422),
        ("zero limit", "POST", "/search", search(limit=0), 422),
        ("huge limit (list)", "GET", f"/memories?user_id=erin&limit={MAX_LIMIT + 1}", {}, 422),
        ("negative limit (list)", "GET", "/memories?user_id=erin&limit=-1", {}, 422),
        ("limit not a number", "GET", "/memories?user_id=erin&limit=lots", {}, 422),
        ("unknown filter operator", "POST", "/search", search(filters={"k": {"regex": "."}}), 422),
        ("filter list too long", "POST", "/search", search(filters={"k": {"in": [0] * 5000}}), 422),
        ("unknown mode", "POST", "/search", search(mode="magic"), 422),
        ("threshold over 1", "POST", "/search", search(threshold=2), 422),
        ("threshold a string", "POST", "/search", search(threshold="high"), 422),
        ("search without scope", "POST", "/search", {"json": {"query": "x"}}, 400),
        ("list without scope", "GET", "/memories", {}, 400),
        ("delete without scope", "DELETE", "/memories", {}, 400),
        ("update without text", "PUT", by_id, {"json": {"metadata": {}}}, 422),
        ("update text a number", "PUT", by_id, {"json": {"text": 1}}, 422),
        ("unknown id: read", "GET", "/memories/mem_00000000", {}, 404),
        ("unknown id: update", "PUT", "/memories/mem_00000000", {"json": {"text": "x"}}, 404),
        ("unknown id: delete", "DELETE", "/memories/mem_00000000", {}, 404),
        ("unknown id: history", "GET", "/memories/mem_00000000/history", {}, 404),
        ("id too long", "GET", "/memories/" + "m" * 300, {}, 422),
        ("unknown path", "GET", "/memorys", {}, 404),
        ("wrong method", "PATCH", "/memories", {}, 405),
    ]
    wrong = []
    with server.client(keys["acme"]) as client:
        for name, method, path, options, expected in probes:
            headers = {"Content-Type": options.pop("ctype")} if "ctype" in options else {}
            if "content" in options and not headers:
                headers = json_headers
            response = client.request(method, path, headers=headers, **options)
            detail = response.json().get("detail") if response.content else None
            if response.status_code != expected or not isinstance(detail, str) or not detail:
                wrong.append((name, response.status_code, response.text[:300]))
    assert wrong == []
    assert _snapshot(server, keys["acme"], user_id="erin") == before


def _mcp(server: Server, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=60)
    return http, Client(streamable_http_client(f"{server.url}/mcp", http_client=http))


def test_mcp_over_streamable_http_with_the_sdk_client(served):
    server, keys = served
    ids: list[str] = []

    async def session() -> None:
        http, mcp = _mcp(server, keys["acme"])
        async with http, mcp as client:
            assert {t.name for t in (await client.list_tools()).tools} == MCP_TOOLS
            error, added = await call(
                client, "add_memory", text="Frank's dog is called Rex.", user_id="frank"
            )
            assert not error and added["results"][0]["event"] == "ADD"
            ids.append(memory_id := added["results"][0]["id"])
            error, found = await call(client, "search_memories", query="dog name", user_id="frank")
            assert [r["id"] for r in found["results"]] == [memory_id]
            error, _ = await call(client, "update_memory", memory_id=memory_id, text="Rex is 3.")
            assert not error
            error, events = await call(client, "memory_history", memory_id=memory_id)
            assert [e["event"] for e in events["results"]] == ["ADD", "UPDATE"]
            error, listed = await call(client, "list_memories", user_id="frank")
            assert [r["memory"] for r in listed["results"]] == ["Rex is 3."]
            error, message = await call(client, "search_memories", query="dog")
            assert error and "needs a scope" in message
            error, message = await call(
                client, "search_memories", query="dog", user_id="frank", limit=MAX_LIMIT + 1
            )
            assert error and "limit" in message
            error, _ = await call(client, "delete_memory", memory_id=memory_id)
            assert not error
            error, message = await call(client, "delete_memory", memory_id=memory_id)
            assert error and message.endswith(f"no memory with id {memory_id!r}")

    anyio.run(session)
    with server.client(keys["acme"]) as rest:  # the REST side sees what MCP did
        events = rest.get(f"/memories/{ids[0]}/history").json()
        assert [e["event"] for e in events] == ["ADD", "UPDATE", "DELETE"]


def test_mcp_cross_tenant_and_key_probes_are_refused(served):
    server, keys = served
    with server.client(keys["acme"]) as acme:
        secret = _add(acme, SECRET, user_id="alice")
    before = _snapshot(server, keys["acme"], user_id="alice")
    memory_id = secret["id"]
    answers: list[tuple[str, bool, Any]] = []

    async def probes() -> None:
        http, mcp = _mcp(server, keys["globex"])
        async with http, mcp as client:
            for tool, arguments in (
                ("update_memory", {"memory_id": memory_id, "text": "pwned"}),
                ("delete_memory", {"memory_id": memory_id}),
                ("memory_history", {"memory_id": memory_id}),
                ("update_memory", {"memory_id": memory_id, "text": "pwned", "user_id": "alice"}),
                ("delete_memory", {"memory_id": memory_id, "user_id": "alice"}),
                ("memory_history", {"memory_id": memory_id, "user_id": "alice"}),
                ("search_memories", {"query": "locker code", "user_id": "alice"}),
                ("list_memories", {"user_id": "alice"}),
            ):
                answers.append((tool, *await call(client, tool, **arguments)))

    anyio.run(probes)
    leaks = [a for a in answers if "7421" in json.dumps(a[2])]
    by_id = [a for a in answers if a[0] in ("update_memory", "delete_memory", "memory_history")]
    not_found = f"no memory with id {memory_id!r}"
    assert all(error and message.endswith(not_found) for _, error, message in by_id), by_id
    assert [a[2] for a in answers if a[0] in ("search_memories", "list_memories")] == [
        {"results": []},
        {"results": []},
    ]
    assert leaks == []

    async def without_a_valid_key(key: str | None) -> str:
        http, mcp = _mcp(server, key)
        try:
            async with http, mcp as client:
                await client.list_tools()
        except Exception as exc:  # the SDK surfaces the 401 as a failed connection
            return f"{type(exc).__name__}: {exc}"
        return "connected"

    for key in (None, "agm_000000000000_nope", keys["gone"] + "x"):
        assert anyio.run(without_a_valid_key, key) != "connected"
        response = httpx2.post(
            f"{server.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )
        assert response.status_code == 401
    assert _snapshot(server, keys["acme"], user_id="alice") == before


def test_server_refuses_to_start_without_keys_and_no_auth_is_loopback(tmp_path):
    refused = agemem("serve", "--store", str(tmp_path / "empty"), check=False)
    assert refused.returncode == 2
    assert "no key store" in refused.stderr and "--no-auth" in refused.stderr
    exposed = agemem("serve", "--no-auth", "--host", "0.0.0.0", check=False)
    assert exposed.returncode == 2 and "127.0.0.1 only" in exposed.stderr
    with (
        agemem_server(tmp_path / "local", "--no-auth") as server,
        server.client() as client,  # no key: the local tenant
    ):
        _add(client, "Local note.", user_id="me")
        assert len(client.get("/memories", params={"user_id": "me"}).json()["results"]) == 1
    assert (tmp_path / "local" / "tenants" / "local.db").exists()
