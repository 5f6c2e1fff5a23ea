"""Memory as a service: a REST server (Mem0's paths and bodies) and an MCP server, with API keys
and tenants on by default.

- `agemem.serve.tenants`: where each tenant's memories live (the tenant model, below).
- `agemem.serve.keys`: API keys; only a SHA-256 hash of each key is stored.
- `agemem.serve.app`: the FastAPI app (REST routes, bearer auth, size limits, JSON errors), with
  the MCP server mounted at `/mcp` (streamable HTTP).
- `agemem.serve.mcp_server`: the MCP tools, shared by `agemem mcp` (stdio) and `/mcp`.
- `agemem.serve.cli`: `agemem serve`, `agemem mcp`, `agemem keys create|list|revoke`.

Tenant model: a tenant is a store. Every tenant has its own `MemoryStore` (for SQLite, the file
`tenants/<tenant>.db` under the server's store directory), and a request reaches a store only
through the tenant its key names. The user / agent / run scopes of the `Memory` API live inside
that store, unchanged. Isolation therefore does not rest on every query carrying the right
condition: no query, filter (`OR`, `NOT`, `ne` on `user_id`...), id or reset issued with one
tenant's key can name another tenant's rows, because they are in another store. An id from
another tenant is an id the store does not have (404, the same answer as an id that never
existed). Tenant names are restricted to `[a-z0-9_-]` (lower case only, so that two names never
map to one file on a case-insensitive file system).

A second backend slots in behind `TenantStores.open(tenant)`: it hands back the tenant's `Memory`
(for Postgres, one schema per tenant in one database, the same split as one file per tenant), and
the routes, keys and MCP tools stay as they are.

Limits (documented in the README and on `/docs`): request bodies up to `MAX_BODY_BYTES` (413
above; `agemem serve --max-body-bytes`), `limit` up to `MAX_LIMIT` results (422 above), scope ids
up to `MAX_ID_CHARS` characters.

Importing `agemem` does not import this package; it needs the `serve` extra (FastAPI, uvicorn,
mcp): `pip install 'agemem[serve]'`.
"""

MAX_BODY_BYTES = 1 << 20  # 1 MiB per request body
MAX_LIMIT = 1000  # results per search / list call
MAX_ID_CHARS = 256  # user_id, agent_id, run_id, memory id
DEFAULT_TENANT = "local"  # the tenant of `agemem serve --no-auth` and of `agemem mcp` by default
