"""API keys and tenants: only a hash is stored, `agemem keys create|list|revoke`, tenant names,
and the core install never importing the server's packages."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys

import pytest
from serving import ENV, agemem, create_key

from agemem.serve.keys import KeyStore, hash_key
from agemem.serve.tenants import InvalidTenant, SQLiteTenants, check_tenant, open_tenants


def test_only_the_hash_of_a_key_is_stored(tmp_path):
    path = tmp_path / "keys.db"
    with_keys = KeyStore(path)
    new = with_keys.create("acme")
    with_keys.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert new.token.encode() not in raw
    secret = new.token.split("_", 2)[2]
    assert secret.encode() not in raw
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT key_id, tenant, key_hash FROM api_keys").fetchall() == [
            (new.key_id, "acme", hash_key(new.token))
        ]


def test_verify_revoke_and_tenant_revocation(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    a1, a2, b = keys.create("acme"), keys.create("acme"), keys.create("bravo")
    assert [keys.verify(k.token) for k in (a1, a2, b)] == ["acme", "acme", "bravo"]
    for wrong in ("", "agm", "agm__", f"agm_{a1.key_id}_", a1.token[:-1], a1.token + "A"):
        assert keys.verify(wrong) is None
    forged = f"agm_{a1.key_id}_{b.token.split('_', 2)[2]}"  # a real id with another secret
    assert keys.verify(forged) is None
    assert keys.revoke(a1.key_id) == 1 and keys.revoke(a1.key_id) == 0
    assert keys.verify(a1.token) is None and keys.verify(a2.token) == "acme"
    assert keys.revoke(tenant="acme") == 1 and keys.verify(a2.token) is None
    assert keys.verify(b.token) == "bravo" and keys.active_count() == 1
    listed = sorted((k.tenant, k.active) for k in keys.list())
    assert listed == [("acme", False), ("acme", False), ("bravo", True)]
    with pytest.raises(ValueError, match="not both"):
        keys.revoke(a1.key_id, tenant="acme")
    with pytest.raises(InvalidTenant):
        keys.create("Acme")
    keys.close()
    with pytest.raises(FileNotFoundError):
        KeyStore(tmp_path / "missing.db", create=False)


@pytest.mark.parametrize("name", ["", "Acme", "../x", "a/b", "a.b", ".x", "-x", "a" * 64, "é"])
def test_tenant_names_are_safe_file_names(name):
    with pytest.raises(InvalidTenant):
        check_tenant(name)


def test_tenant_stores_are_one_file_each(tmp_path):
    tenants = SQLiteTenants(tmp_path / "server")
    assert tenants.path("acme") == tmp_path / "server" / "tenants" / "acme.db"
    assert tenants.default_keys_path() == tmp_path / "server" / "keys.db"
    with pytest.raises(ValueError, match="not supported; give a directory"):
        open_tenants("mysql://localhost/agemem")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        open_tenants(tmp_path / "file")


def test_postgres_tenants_are_one_schema_each(postgres_url, embedder, monkeypatch):
    """Two tenants with the same user id on one database: neither sees the other's entries."""
    import agemem.serve.tenants as tenants_module

    real = tenants_module.Memory

    def memory(url):
        return real(url, embedder=embedder)

    monkeypatch.setattr(tenants_module, "Memory", memory)
    tenants = open_tenants(postgres_url)
    assert tenants.schema("acme") == "tenant_acme"
    long = tenants.schema("a" * 63)
    assert len(long) == 63 and long != tenants.schema("a" * 62 + "b")
    try:
        a, b = tenants.open("acme"), tenants.open("globex")
        added = a.add("Acme's vault code is 1234.", user_id="u1")["results"][0]
        assert b.search("vault code", user_id="u1")["results"] == []
        assert b.get(added["id"], user_id="u1") is None
        assert a.search("vault code", user_id="u1")["results"][0]["id"] == added["id"]
    finally:
        tenants.close()


@pytest.mark.slow
def test_keys_cli_prints_the_key_once_as_the_last_line(tmp_path):
    store = tmp_path / "server"
    key = create_key(store, "acme")
    keys = KeyStore(store / "keys.db", create=False)
    assert keys.verify(key) == "acme"
    listed = agemem("keys", "list", "--store", str(store)).stdout
    key_id = key.split("_")[1]
    assert key_id in listed and "acme" in listed and "active" in listed
    assert key.split("_", 2)[2] not in listed
    other = tmp_path / "elsewhere.db"  # --keys: a key store apart from the memory store
    elsewhere = agemem("keys", "create", "--tenant", "bravo", "--keys", str(other))
    assert KeyStore(other).verify(elsewhere.stdout.splitlines()[-1]) == "bravo"
    assert agemem("keys", "revoke", key_id, "--store", str(store)).stdout.startswith("revoked 1")
    assert keys.verify(key) is None
    again = agemem("keys", "revoke", key_id, "--store", str(store), check=False)
    assert again.returncode == 2 and "no active key" in again.stderr
    bad = agemem("keys", "create", "--tenant", "Bad/Name", "--store", str(store), check=False)
    assert bad.returncode == 2 and "tenant names" in bad.stderr
    missing = agemem("keys", "list", "--store", str(tmp_path / "none"), check=False)
    assert missing.returncode == 2 and "no key store" in missing.stderr


def test_the_core_never_imports_the_server_packages():
    code = (
        "import sys, agemem, agemem.api, agemem.cli, agemem.serve.cli;"
        "loaded = {'fastapi', 'mcp', 'uvicorn', 'starlette'} & set(sys.modules);"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_serve_never_prints_the_store_urls_password(tmp_path):
    from servers import free_port, http_process
    from serving import AGEMEM

    url = "postgresql://agemem:s3cret-pw@127.0.0.1:9/memories"  # never connected to here
    refused = agemem("serve", "--store", url, "--keys", str(tmp_path / "none.db"), check=False)
    assert refused.returncode == 2 and "no key store" in refused.stderr
    keys = KeyStore(tmp_path / "keys.db")
    keys.create("acme")
    keys.close()
    port = free_port()
    args = [AGEMEM, "serve", "--store", url, "--keys", str(tmp_path / "keys.db"),
            "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with http_process(args, f"http://127.0.0.1:{port}", name="serve", timeout=180, env=ENV) as (
        _,
        log,
    ):
        log.seek(0)
        started = log.read().decode()
    assert "store postgresql://agemem:***@127.0.0.1:9/memories" in started, started
    assert "s3cret" not in started + refused.stderr
