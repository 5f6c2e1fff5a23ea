"""The HTTP server: Mem0's REST paths and bodies over one tenant's `Memory` per request, and the
MCP server (streamable HTTP) at `/mcp`, behind one bearer-key check.

Paths (as Mem0's server has them): `POST /memories`, `GET /memories`, `GET/PUT/DELETE
/memories/{id}`, `GET /memories/{id}/history`, `DELETE /memories` (one scope), `POST /search`,
`POST /reset` (the caller's tenant), plus `GET /health` and the OpenAPI docs at `/docs`.
`/health`, `/docs` and `/openapi.json` are public; every other path needs
`Authorization: Bearer KEY`, and acts in that key's tenant only.

Errors are JSON, `{"detail": "what is wrong"}`: 400 bad JSON or no scope named, 401 missing,
unknown or revoked key, 404 unknown path or an id the tenant's store does not have (another
tenant's ids included: the answer is the same), 405 wrong method, 413 body over the limit, 415
a body that is not JSON, 422 wrong types, out-of-range values or an invalid filter. 503 (with
`Retry-After`) while the store's database server cannot be reached; the next request reconnects.
A 500 means a server fault, never a client mistake.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agemem.api import Memory, ScopeRequired
from agemem.memory.store import StoreUnavailable
from agemem.serve import DEFAULT_TENANT, MAX_BODY_BYTES, MAX_ID_CHARS, MAX_LIMIT, ops
from agemem.serve.keys import KeyStore
from agemem.serve.mcp_server import build_mcp
from agemem.serve.tenants import TenantStores

log = logging.getLogger("agemem.serve")

TENANT_KEY = "agemem.tenant"  # the ASGI scope key the auth layer sets for the routes and MCP
PUBLIC_PATHS = frozenset({"/", "/health", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
MCP_PATH = "/mcp"

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
Text = Annotated[str, StringConstraints(min_length=1)]


# ---- request bodies -------------------------------------------------------------------------


class _Body(BaseModel):
    # strict: "5" is not a number and 5 is not a string; unknown keys are ignored, as Mem0 does
    model_config = ConfigDict(strict=True)


class ScopeFields(_Body):
    user_id: Id | None = None
    agent_id: Id | None = None
    run_id: Id | None = None

    def scope(self) -> dict[str, str]:
        return ops.scope_args(self.user_id, self.agent_id, self.run_id, None)


class ChatMessage(_Body):
    role: str = Field(description="user or assistant (other roles are not stored)")
    content: str


class MemoryCreate(ScopeFields):
    messages: Text | list[ChatMessage] = Field(
        description="A text, or a conversation whose user and assistant messages are stored as "
        "said, one entry each."
    )
    metadata: dict[str, Any] | None = None
    infer: bool = Field(
        False,
        description="Mem0's LLM fact extraction. Not offered: entries are stored as said "
        "(the agent decides what to keep); true is refused with 422.",
    )


class SearchRequest(ScopeFields):
    query: Text
    filters: dict[str, Any] | None = Field(
        None, description="Mem0's filter grammar over metadata and the scope columns."
    )
    limit: int = Field(5, ge=1, le=MAX_LIMIT)
    threshold: float | None = Field(
        None, ge=0, le=1, description="Keep only results at least this similar (cosine)."
    )
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"


class MemoryUpdate(_Body):
    text: Text
    metadata: dict[str, Any] | None = None


# ---- ASGI layers ----------------------------------------------------------------------------


def _json(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BearerAuth:
    """Every non-public request carries `Authorization: Bearer KEY` for an active key; the key's
    tenant goes into the ASGI scope. Without a key store (`--no-auth`) every request is the
    local tenant's."""

    def __init__(self, app: ASGIApp, keys: KeyStore | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if self.keys is None:
            scope[TENANT_KEY] = DEFAULT_TENANT
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            problem = "missing API key: send the header 'Authorization: Bearer KEY'"
        else:
            tenant = self.keys.verify(token.strip())
            if tenant is not None:
                scope[TENANT_KEY] = tenant
                await self.app(scope, receive, send)
                return
            problem = "invalid API key (unknown or revoked)"
        response = _json(401, problem, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 and one that is not JSON with 415,
    before any route reads it (the body is read here, at most `max_bytes` of it, and handed
    on)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        kind = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if kind and not (kind.endswith("/json") or kind.endswith("+json")):
            response = _json(
                415, f"send the body as JSON (Content-Type: application/json), not {kind}"
            )
            await response(scope, receive, send)
            return
        too_big = _json(413, f"request body over the limit of {self.max_bytes} bytes")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await too_big(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---- errors ---------------------------------------------------------------------------------


@contextmanager
def client_errors() -> Iterator[None]:
    """The `Memory` API's answers to a caller's mistakes, as HTTP errors."""
    try:
        yield
    except ScopeRequired as exc:
        raise _HTTPError(400, str(exc)) from None
    except ValueError as exc:  # a bad filter, run_id/session_id clash, out-of-range value
        raise _HTTPError(422, str(exc)) from None


def named(scope: dict[str, str]) -> dict[str, str]:
    """A scope a call must name (Mem0's server: 400 without one)."""
    if not scope:
        raise _HTTPError(400, "at least one of user_id, agent_id, run_id is required")
    return scope


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            return 400, f"request body is not valid JSON{': ' + reason if reason else ''}"
    parts = []
    for error in errors[:10]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return 422, "; ".join(parts)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _json(*_validation_message(exc))

    @app.exception_handler(_HTTPError)
    async def http_error(_: Request, exc: _HTTPError) -> JSONResponse:
        return _json(exc.status, exc.detail)

    @app.exception_handler(ops.NotFound)
    async def not_found(_: Request, exc: ops.NotFound) -> JSONResponse:
        return _json(404, str(exc))

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _json(
            503,
            "the store's database server is unavailable; retry shortly",
            {"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _json(500, "internal server error")


# ---- routes ---------------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, description="A key from: agemem keys create --tenant NAME")


def memory_for(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Memory:
    """The `Memory` of the request's tenant (set by `BearerAuth`)."""
    return request.app.state.tenants.open(request.scope[TENANT_KEY])


ScopeQuery = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_CHARS)]
PathId = Annotated[str, Path(max_length=MAX_ID_CHARS)]
Tenant = Annotated[Memory, Depends(memory_for)]


def query_scope(
    user_id: ScopeQuery = None, agent_id: ScopeQuery = None, run_id: ScopeQuery = None
) -> dict[str, str]:
    return ops.scope_args(user_id, agent_id, run_id, None)


QueryScope = Annotated[dict[str, str], Depends(query_scope)]
router = APIRouter()


@router.get("/", include_in_schema=False)
def home() -> RedirectResponse:
    return RedirectResponse("/docs")


@router.get("/health", summary="Liveness (no key needed)")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/memories", summary="Store memories")
def add_memory(body: MemoryCreate, memory: Tenant) -> dict[str, Any]:
    if body.infer:
        raise _HTTPError(
            422,
            "infer=true (LLM fact extraction) is not offered: agemem stores each user and "
            "assistant message as said; send infer=false or leave it out",
        )
    messages = body.messages
    if not isinstance(messages, str):
        messages = [m.model_dump() for m in messages]
    with client_errors():
        return memory.add(messages, metadata=body.metadata, **named(body.scope()))


@router.get("/memories", summary="List a scope's memories, oldest first")
def get_all(
    memory: Tenant, scope: QueryScope, limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100
) -> dict[str, Any]:
    with client_errors():
        return memory.get_all(limit=limit, **named(scope))


@router.get("/memories/{memory_id}", summary="Get a memory")
def get_memory(memory_id: PathId, memory: Tenant, scope: QueryScope) -> dict[str, Any]:
    with client_errors():
        return ops.get(memory, memory_id, scope)


@router.put("/memories/{memory_id}", summary="Update a memory's text (and metadata)")
def update_memory(
    memory_id: PathId, body: MemoryUpdate, memory: Tenant, scope: QueryScope
) -> dict[str, Any]:
    with client_errors(), ops.lookup(memory_id):
        record = memory.update(
            memory_id, body.text, metadata=body.metadata, **ops.by_id_args(scope)
        )
    return {"message": "Memory updated successfully!", "result": record}


@router.get("/memories/{memory_id}/history", summary="A memory's ADD/UPDATE/DELETE events")
def history(memory_id: PathId, memory: Tenant, scope: QueryScope) -> list[dict[str, Any]]:
    with client_errors(), ops.lookup(memory_id):
        return memory.history(memory_id, **ops.by_id_args(scope))


@router.delete("/memories/{memory_id}", summary="Delete a memory")
def delete_memory(memory_id: PathId, memory: Tenant, scope: QueryScope) -> dict[str, Any]:
    with client_errors(), ops.lookup(memory_id):
        memory.delete(memory_id, **ops.by_id_args(scope))
    return {"message": "Memory deleted successfully"}


@router.delete("/memories", summary="Delete every memory of a scope")
def delete_all(memory: Tenant, scope: QueryScope) -> dict[str, Any]:
    with client_errors():
        return memory.delete_all(**named(scope))


@router.post("/search", summary="Search a scope's memories")
def search(body: SearchRequest, memory: Tenant) -> dict[str, Any]:
    with client_errors():
        return memory.search(
            body.query,
            filters=body.filters,
            limit=body.limit,
            threshold=body.threshold,
            mode=body.mode,
            **named(body.scope()),
        )


@router.post("/reset", summary="Delete every memory of the key's tenant")
def reset(memory: Tenant) -> dict[str, str]:
    memory.reset()
    return {"message": "All memories reset"}


# ---- the app --------------------------------------------------------------------------------


def create_app(
    tenants: TenantStores,
    keys: KeyStore | None,
    *,
    host: str = "127.0.0.1",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> ASGIApp:
    """The server as one ASGI app: auth, then the body limit, then FastAPI (REST and `/mcp`).
    `keys=None` serves the local tenant without keys (`--no-auth`, loopback only)."""

    def mcp_memory_for(ctx: Context) -> Memory:
        request = ctx.request_context.request
        tenant = getattr(request, "scope", {}).get(TENANT_KEY)
        if tenant is None:  # unreachable behind BearerAuth; refuse rather than guess
            raise PermissionError("no tenant for this request")
        return tenants.open(tenant)

    mcp = build_mcp(mcp_memory_for)
    mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=True,  # each request stands alone: its key, its tenant
        json_response=True,
        max_request_body_size=max_body_bytes,
        host=host,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp.session_manager.run():
            yield

    app = FastAPI(
        title="agemem",
        summary="Long-term memory for agents: Mem0's REST API, and MCP at /mcp.",
        version="1",
        lifespan=lifespan,
    )
    app.state.tenants = tenants
    _install_errors(app)
    app.include_router(router)
    app.router.routes.append(Route(MCP_PATH, StreamableHTTPASGIApp(mcp.session_manager)))
    return BearerAuth(BodyLimit(app, max_body_bytes), keys)
