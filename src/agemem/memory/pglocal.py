"""A throwaway local Postgres server with pgvector, for tests and benchmarks.

The binaries come from the `pgserver` package (Postgres 16 with pgvector, installed by pip with
the `postgres` extra's test tools: ``pip install 'agemem[dev]'``). `LocalPostgres` runs
`initdb` into a folder, then starts the server listening on 127.0.0.1 at a free port and on a
Unix socket in that folder; `url` is a `postgresql://` URL for it. Started as root, the server
runs as the unprivileged `nobody` (Postgres refuses to run as root).

    with LocalPostgres(tmp_dir) as pg:
        store = PostgresStore(pg.url, embedder)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def _bin_dir() -> Path:
    """pgserver's binaries, found without importing it (its import creates runtime folders)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no local Postgres binaries: pip install pgserver")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A Postgres cluster in `folder` (created by `initdb` on first start; trust auth, user
    `postgres`); `start`, `stop` (fast shutdown), `kill` (SIGKILL: a crash) and `close`."""

    def __init__(self, folder: str | Path, port: int | None = None) -> None:
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.port = port or _free_port()
        self.bin = _bin_dir()
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as_user = {"user": "nobody", "group": "nogroup", "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            **self._as_user,
        )
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> LocalPostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            shutil.chown(self.folder, "nobody", "nogroup")
            self.folder.chmod(0o755)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8",
            )  # fmt: skip
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        deadline = time.monotonic() + 30
        while True:
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                    "-o", options, "-w", "-t", "60", "start",
                )  # fmt: skip
                return self
            except RuntimeError:
                # after `kill`, the dead postmaster's backends hold its shared memory until
                # they notice and exit (a second or two): retry until then
                if not (self.data / "postmaster.pid").exists() or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _postmaster(self) -> int | None:
        """The running postmaster's pid (None when there is none: stopped, or killed)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().split()[0])
        return pid if _alive(pid) else None

    def stop(self) -> None:
        if self._postmaster() is not None:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends (as a crash of the machine would) and wait
        until they are gone, so no open connection answers afterwards; `start` recovers from
        the WAL."""
        pid = self._postmaster()
        if pid is None:
            return
        family = [pid, *_children(pid)]
        for member in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, 9)
        deadline = time.monotonic() + 10
        while any(_alive(member) for member in family) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc: trust the signal check
    return state != "Z"


def _children(pid: int) -> list[int]:
    """The direct children of `pid` (Postgres' backends of a postmaster), from /proc."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found
