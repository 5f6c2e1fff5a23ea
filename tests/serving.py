"""Real `agemem serve` / `agemem keys` processes for the serve tests: the console script of this
environment, run as a subprocess on 127.0.0.1 with a free port."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from servers import free_port, http_process

AGEMEM = str(Path(sys.executable).with_name("agemem"))
# one thread per server process: the tests share the machine with other work
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def agemem(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `agemem ARGS...`; stdout and stderr as text."""
    done = subprocess.run(
        [AGEMEM, *args],
        capture_output=True,
        text=True,
        env=ENV,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"agemem {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return done


def create_key(store: Path | str, tenant: str, *extra: str) -> str:
    """A new key for `tenant`: the last line `agemem keys create` prints (`extra`: more
    options, such as `--keys PATH`)."""
    created = agemem("keys", "create", "--tenant", tenant, "--store", str(store), *extra)
    return created.stdout.splitlines()[-1]


@dataclass
class Server:
    url: str
    store: Path | str  # a directory, or a postgresql:// URL
    proc: subprocess.Popen
    key_args: tuple[str, ...] = ()  # the `--keys PATH` it was started with, if any

    def client(self, key: str | None = None) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.Client(base_url=self.url, headers=headers, timeout=60)


@contextlib.contextmanager
def agemem_server(store: Path | str, *extra: str, timeout: float = 180) -> Iterator[Server]:
    """`agemem serve --store STORE --port P EXTRA...`, up once `/health` answers. A server
    fault (500) is logged with its traceback: the test fails on any."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [AGEMEM, "serve", "--store", str(store), "--port", str(port), "--log-level", "warning"]
    with http_process([*args, *extra], url, name="agemem serve", timeout=timeout, env=ENV) as (
        proc,
        log,
    ):
        keys = (
            tuple(extra[extra.index("--keys") : extra.index("--keys") + 2])
            if "--keys" in extra
            else ()
        )
        yield Server(url, store, proc, keys)
        log.seek(0)
        text = log.read().decode(errors="replace")
    assert "Traceback" not in text, text


MCP_TOOLS = {
    "add_memory",
    "search_memories",
    "list_memories",
    "update_memory",
    "delete_memory",
    "memory_history",
}


async def call(client: Client, tool: str, **arguments: Any) -> tuple[bool, Any]:
    """(is_error, the structured result, or the error's text) of one MCP tool call."""
    result = await client.call_tool(tool, arguments)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return bool(result.is_error), text if result.is_error else result.structured_content
