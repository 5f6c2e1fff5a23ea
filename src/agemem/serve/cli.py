"""`agemem serve`, `agemem mcp` and `agemem keys`: registered on the main CLI by `register`.

This module imports only typer at import time; FastAPI, uvicorn and mcp load when a command runs
(the `serve` extra), so `import agemem` and `agemem --help` never need them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from agemem.serve import DEFAULT_TENANT, MAX_BODY_BYTES

LOOPBACK = ("127.0.0.1", "localhost")

keys_app = typer.Typer(
    help="API keys: each reaches one tenant's memories; only a hash is stored.",
    no_args_is_help=True,
)

StoreOption = Annotated[
    str,
    typer.Option(
        help="The server's store directory: keys.db and one tenants/<tenant>.db per tenant "
        "(default: ~/.agemem/server)",
        show_default=False,
    ),
]
KeysOption = Annotated[
    Path | None,
    typer.Option("--keys", help="Key store file (default: keys.db in --store)", show_default=False),
]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("mcp")(mcp)
    app.add_typer(keys_app, name="keys")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _shown(store: str) -> str:
    """The store as messages show it: a postgresql:// URL without its password."""
    from agemem.memory.postgres import redacted

    return redacted(store)


def _default_store() -> str:
    from agemem.serve.tenants import DEFAULT_STORE

    return str(DEFAULT_STORE)


def _tenants(store: str | None):  # -> TenantStores
    from agemem.serve.tenants import open_tenants

    try:
        return open_tenants(store or _default_store())
    except ValueError as exc:
        _fail(str(exc))


def _key_store(store: str | None, keys: Path | None, *, create: bool):  # -> KeyStore
    from agemem.serve.keys import KeyStore

    path = keys or _tenants(store).default_keys_path()
    try:
        return KeyStore(path, create=create)
    except FileNotFoundError:
        _fail(
            f"no key store at {path}: create a key first (agemem keys create --tenant NAME"
            f"{' --store ' + _shown(store) if store else ''}), or run with --no-auth for local "
            "use"
        )


def _require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        _fail(f"{exc.name} is not installed: pip install 'agemem[serve]'")


def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0: every interface; keys required).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store: StoreOption = "",
    keys: KeysOption = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help=f"No keys: every request is tenant '{DEFAULT_TENANT}'; binds 127.0.0.1 only.",
        ),
    ] = False,
    max_body_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).")
    ] = MAX_BODY_BYTES,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """The REST API (Mem0's paths, docs at /docs) and the MCP server (streamable HTTP at /mcp),
    every request authenticated by `Authorization: Bearer KEY` and confined to its tenant."""
    _require_serve_extra()
    import uvicorn

    from agemem.serve.app import create_app

    if max_body_bytes < 1:
        raise typer.BadParameter("--max-body-bytes must be >= 1")
    # Requests run in parallel threads, each embedding its own text: one onnxruntime thread per
    # call (its default, a thread per core in every call, makes concurrent calls fight over the
    # cores: 1.7-3x fewer requests/s at 8 clients on 2 cores). $OMP_NUM_THREADS, when set,
    # decides.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    tenants = _tenants(store or None)
    if no_auth:
        if keys is not None:
            _fail("--no-auth and --keys contradict each other; give one")
        if host not in LOOPBACK:
            _fail("--no-auth serves on 127.0.0.1 only; drop --host, or create keys to serve on it")
        host, key_store, auth = "127.0.0.1", None, f"none (--no-auth: tenant '{DEFAULT_TENANT}')"
    else:
        key_store = _key_store(store or None, keys, create=False)
        if key_store.active_count() == 0:
            _fail(
                f"no active key in {key_store.path}: agemem keys create --tenant NAME, or run "
                "with --no-auth for local use"
            )
        auth = f"bearer keys from {key_store.path}"
    root = getattr(tenants, "root", None) or _shown(store)
    print(
        f"agemem serve: http://{host}:{port} (REST docs /docs, MCP /mcp); store {root}; "
        f"auth {auth}",
        file=sys.stderr,
        flush=True,
    )
    app = create_app(tenants, key_store, host=host, max_body_bytes=max_body_bytes)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    finally:
        tenants.close()


def mcp(
    store: StoreOption = "",
    keys: KeysOption = None,
    tenant: Annotated[
        str | None,
        typer.Option(help=f"Tenant whose memories the tools reach (default: {DEFAULT_TENANT})"),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="AGEMEM_API_KEY",
            help="An API key: its tenant instead of --tenant (checked on every call).",
        ),
    ] = None,
    user_id: Annotated[str | None, typer.Option(help="Scope of calls that name none.")] = None,
    agent_id: Annotated[str | None, typer.Option(help="Scope of calls that name none.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Scope of calls that name none.")] = None,
) -> None:
    """The MCP server over stdio, for Claude Desktop, Cursor and any MCP client."""
    _require_serve_extra()
    from agemem.serve import ops
    from agemem.serve.mcp_server import build_mcp
    from agemem.serve.tenants import InvalidTenant, check_tenant

    tenants = _tenants(store or None)
    if key is not None:
        key_store = _key_store(store or None, keys, create=False)
        owner = key_store.verify(key)
        if owner is None:
            _fail("invalid API key (unknown or revoked)")
        if tenant is not None and tenant != owner:
            _fail(f"--tenant {tenant} is not the key's tenant")
        name = owner

        def memory_for(_ctx):  # noqa: ANN001, ANN202
            if key_store.verify(key) != name:
                raise PermissionError("the API key was revoked")
            return tenants.open(name)
    else:
        try:
            name = check_tenant(tenant or DEFAULT_TENANT)
        except InvalidTenant as exc:
            _fail(str(exc))

        def memory_for(_ctx):  # noqa: ANN001, ANN202
            return tenants.open(name)

    default_scope = ops.scope_args(user_id, agent_id, run_id, None)
    try:
        build_mcp(memory_for, default_scope=default_scope).run("stdio")
    finally:
        tenants.close()


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key reaches (a-z, 0-9, _ and -).")],
    store: StoreOption = "",
    keys: KeysOption = None,
) -> None:
    """Create a key for a tenant. The key is printed once, as the last line; only its hash is
    stored."""
    from agemem.serve.tenants import InvalidTenant

    key_store = _key_store(store or None, keys, create=True)
    try:
        new = key_store.create(tenant)
    except InvalidTenant as exc:
        _fail(str(exc))
    typer.echo(f"key {new.key_id} for tenant {new.tenant} (stored as a hash in {key_store.path})")
    typer.echo("keep it now, it is not shown again:")
    typer.echo(new.token)


@keys_app.command("list")
def keys_list(
    store: StoreOption = "",
    keys: KeysOption = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
) -> None:
    """Key ids, tenants, creation and revocation times (never the keys)."""
    key_store = _key_store(store or None, keys, create=False)
    for info in key_store.list(tenant):
        state = "active" if info.active else f"revoked {info.revoked_at}"
        typer.echo(f"{info.key_id}\t{info.tenant}\t{info.created_at}\t{state}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str | None, typer.Argument(help="The key id `keys list` shows.")] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Revoke every key of this tenant instead.")
    ] = None,
    store: StoreOption = "",
    keys: KeysOption = None,
) -> None:
    """Revoke one key, or every key of a tenant; a running server refuses it from its next
    request on."""
    if (key_id is None) == (tenant is None):
        _fail("give a key id or --tenant NAME")
    key_store = _key_store(store or None, keys, create=False)
    revoked = key_store.revoke(key_id, tenant=tenant)
    if revoked == 0:
        _fail(f"no active key {'for tenant ' + tenant if tenant else key_id}")
    typer.echo(f"revoked {revoked} key{'s' if revoked != 1 else ''}")
