"""`agemem bench serve`: the HTTP server under load, and under faults.

The bench starts the real server (`agemem serve`, a subprocess on 127.0.0.1, one fresh key
store and key) over a fresh store: a directory of SQLite files, or a throwaway Postgres +
pgvector (`LocalPostgres`). It first adds `seed` entries, then, at each concurrency level, runs
a closed loop of that many asyncio clients (httpx, one connection each) until `requests`
requests are answered: a mix of `POST /memories` (one new text, infer off), `POST /search`
(top 10, hybrid) and `PUT /memories/{id}` (a known entry), by default 20 / 70 / 10, each for one
of `users` user ids. It reports per level and operation: requests, errors, p50 / p95 / p99
latency, throughput; and the machine load (the clients share the machine with the server).

`--faults` adds the fault runs (`run_fault`), each at concurrency `FAULT_CONCURRENCY`:
- `server_kill`: SIGKILL the server a third of the way through, start it again on the same
  port; clients keep going (a refused connection counts as an error, not an acknowledgement);
- `postgres_kill` (Postgres only): SIGKILL the database server, keep it down
  `DB_DOWN_S` seconds, start it again; the HTTP server must answer 503 at once meanwhile (not
  hang), and answer 2xx again once the database is back.
Then the store itself is read (not through the server): every write the server acknowledged
(2xx) must be there (an added entry by id and text, an update by its history event), and the
store must pass its integrity check (SQLite: `PRAGMA integrity_check`; Postgres: the entries
agree with their ADD events, and the id index finds every row). Writes whose answer never
arrived may or may not be there; they are counted apart.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.console import Console
from rich.table import Table

Backend = Literal["sqlite", "postgres"]
TENANT = "bench"
LEVELS = (1, 8, 32)
MIX = {"add": 0.2, "search": 0.7, "update": 0.1}
FAULT_CONCURRENCY = 8
DB_DOWN_S = 2.0  # how long the database server stays down in `postgres_kill`
REQUEST_TIMEOUT_S = 30.0  # a request unanswered this long counts as a hang
TARGET_SEARCH_P95_MS = 50.0  # issue 21's target, at 32 clients
_NAMES = ("ana", "ben", "chloe", "dev", "emma", "farid", "gita", "hugo", "ines", "jon")
_VERBS = ("visited", "bought", "painted", "fixed", "sold", "borrowed", "found", "lost")
_THINGS = ("bicycle", "piano", "garden", "kayak", "camera", "laptop", "violin", "tent", "boat")
_PLACES = ("Lisbon", "Porto", "Oslo", "Kyoto", "Lima", "Dakar", "Quito", "Hanoi", "Perth")


# ---- the server process ---------------------------------------------------------------------


def _free_port() -> int:
    from agemem.memory.pglocal import _free_port

    return _free_port()


class ServerProcess:
    """`agemem serve` as a subprocess on 127.0.0.1:`port`, its output appended to `log`."""

    def __init__(self, store: str, keys: Path, log: Path, env: dict[str, str] | None = None):
        self.store, self.keys, self.log, self.env = store, keys, log, env
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 180) -> float:
        """Start the server and wait until `/health` answers; returns the seconds it took."""
        import httpx2

        args = [
            sys.executable, "-m", "agemem.cli", "serve", "--store", self.store,
            "--keys", str(self.keys), "--port", str(self.port), "--log-level", "warning",
        ]  # fmt: skip
        began = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        self.starts += 1
        while True:
            with suppress(httpx2.TransportError):
                if httpx2.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return time.monotonic() - began
            if self.proc.poll() is not None or time.monotonic() - began > timeout:
                self.stop()
                raise RuntimeError(f"agemem serve did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def cpu_seconds(self) -> float | None:
        """CPU time the server process has used (all its threads), from /proc; None elsewhere."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (AttributeError, OSError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tracebacks(self) -> int:
        return self.log.read_text(errors="replace").count("Traceback") if self.log.exists() else 0


@dataclass
class Deployment:
    """A fresh store, key store and key, and the server over them (see `deployment`)."""

    backend: Backend
    store: str  # the --store argument: a directory, or a postgresql:// URL
    server: ServerProcess
    key: str
    postgres: Any = None  # the LocalPostgres of a postgres deployment

    def tenant_store(self) -> str:
        """Where the bench tenant's entries are: its SQLite file, or its Postgres schema."""
        from agemem.serve.tenants import open_tenants

        tenants = open_tenants(self.store)
        if self.backend == "sqlite":
            return str(tenants.path(TENANT))
        return tenants.schema(TENANT)


@contextmanager
def deployment(backend: Backend, folder: Path, env: dict[str, str] | None = None):
    """Start a fresh deployment in `folder` (a LocalPostgres too for "postgres"); stop it all
    at the end."""
    from agemem.serve.keys import KeyStore

    keys_path = folder / "keys.db"
    key_store = KeyStore(keys_path, create=True)
    key = key_store.create(TENANT).token
    key_store.close()
    postgres = None
    if backend == "postgres":
        from agemem.memory.pglocal import LocalPostgres

        # a folder of its own: the server runs as `nobody` when started as root
        postgres = LocalPostgres(tempfile.mkdtemp(prefix="agemem-pg-")).start()
        store = postgres.url
    else:
        store = str(folder / "store")
    server = ServerProcess(store, keys_path, folder / "server.log", env)
    try:
        server.start()
        yield Deployment(backend, store, server, key, postgres)
    finally:
        server.stop()
        if postgres is not None:
            postgres.close()


# ---- the workload ---------------------------------------------------------------------------


@dataclass
class Result:
    op: str
    status: int | None  # None: no answer (refused, reset, timed out)
    seconds: float
    ended: float  # time.monotonic() at the end


@dataclass
class Workload:
    """Draws requests and remembers what the server acknowledged."""

    users: int = 10
    mix: dict[str, float] = field(default_factory=lambda: dict(MIX))
    seed: int = 0
    ids: list[str] = field(default_factory=list)  # known entries (targets of updates)
    acked_adds: dict[str, str] = field(default_factory=dict)  # id -> text
    acked_updates: list[tuple[str, str]] = field(default_factory=list)  # (id, new text)
    unanswered_adds: list[str] = field(default_factory=list)  # texts sent, no 2xx
    unanswered_updates: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.serial = 0

    def text(self) -> str:
        self.serial += 1
        r = self.rng
        return (
            f"{r.choice(_NAMES).title()} {r.choice(_VERBS)} a {r.choice(_THINGS)} in "
            f"{r.choice(_PLACES)} (note {self.serial})."
        )

    def user(self) -> str:
        return f"user{self.rng.randrange(self.users)}"

    def request(self) -> tuple[str, str, str, dict[str, Any]]:
        """(operation, method, path, JSON body) of the next request."""
        ops, weights = zip(*self.mix.items(), strict=True)
        op = self.rng.choices(ops, weights)[0]
        if op == "update" and not self.ids:
            op = "add"
        if op == "add":
            body = {"messages": self.text(), "user_id": self.user(), "infer": False}
            return op, "POST", "/memories", body
        if op == "update":
            return op, "PUT", f"/memories/{self.rng.choice(self.ids)}", {"text": self.text()}
        r = self.rng
        query = f"What {r.choice(_THINGS)} did {r.choice(_NAMES)} get in {r.choice(_PLACES)}?"
        return op, "POST", "/search", {"query": query, "user_id": self.user(), "limit": 10}

    def record(self, op: str, path: str, body: dict[str, Any], status: int | None, answer: Any):
        acked = status is not None and 200 <= status < 300
        if op == "add":
            if acked:
                for result in answer["results"]:
                    self.acked_adds[result["id"]] = result["memory"]
                    self.ids.append(result["id"])
            else:
                texts = body["messages"]
                self.unanswered_adds += [texts] if isinstance(texts, str) else texts
        elif op == "update":
            pair = (path.rsplit("/", 1)[1], body["text"])
            (self.acked_updates if acked else self.unanswered_updates).append(pair)


async def _drive(
    url: str,
    key: str,
    workload: Workload,
    concurrency: int,
    done: Callable[[Counter[str]], bool],
    counts: Counter[str] | None = None,
) -> list[Result]:
    """`concurrency` clients, each sending one request after another, until `done(counts)`
    (`counts`: "sent" and "ok", the requests sent and those answered 2xx so far)."""
    import httpx2

    results: list[Result] = []
    counts = Counter() if counts is None else counts
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"}

    async def client(http: httpx2.AsyncClient) -> None:
        while not done(counts):
            op, method, path, body = workload.request()
            counts["sent"] += 1
            start = time.monotonic()
            status, answer = None, None
            try:
                response = await http.request(method, path, json=body)
                status = response.status_code
                if 200 <= status < 300:
                    answer = response.json()
            except httpx2.TransportError:
                pass  # no answer: refused while the server is down, reset when it dies
            end = time.monotonic()
            workload.record(op, path, body, status, answer)
            counts["ok"] += answer is not None
            results.append(Result(op, status, end - start, end))
            if status is None or status >= 500:
                await asyncio.sleep(0.2)  # a client backs off a little before retrying

    async with httpx2.AsyncClient(
        base_url=url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    return results


def _seed(url: str, key: str, workload: Workload, n: int, batch: int = 50) -> None:
    """`n` entries, `batch` per request (a conversation of user messages: one entry each)."""
    import httpx2

    with httpx2.Client(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300
    ) as http:
        for start in range(0, n, batch):
            messages = [
                {"role": "user", "content": workload.text()} for _ in range(min(batch, n - start))
            ]
            body = {"messages": messages, "user_id": workload.user(), "infer": False}
            response = http.post("/memories", json=body)
            response.raise_for_status()
            workload.record("add", "/memories", body, response.status_code, response.json())


# ---- statistics -----------------------------------------------------------------------------


def _latencies(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    ms = np.asarray(seconds) * 1e3
    return {f"p{p}_ms": float(np.percentile(ms, p)) for p in (50, 95, 99)}


def summarize(results: list[Result], seconds: float) -> dict[str, Any]:
    """Throughput, errors and latency percentiles, overall and per operation."""
    ops: dict[str, Any] = {}
    for op in MIX:
        mine = [r for r in results if r.op == op]
        ok = [r.seconds for r in mine if r.status is not None and 200 <= r.status < 300]
        ops[op] = {
            "requests": len(mine),
            "errors": len(mine) - len(ok),
            "per_s": len(ok) / seconds if seconds else 0.0,
            **_latencies(ok),
        }
    statuses = Counter("none" if r.status is None else str(r.status) for r in results)
    ok_total = sum(op["requests"] - op["errors"] for op in ops.values())
    return {
        "requests": len(results),
        "seconds": seconds,
        "throughput_rps": ok_total / seconds if seconds else 0.0,
        "errors": len(results) - ok_total,
        "statuses": dict(sorted(statuses.items())),
        "ops": ops,
    }


# ---- verification ---------------------------------------------------------------------------


def _stored_sqlite(path: str) -> tuple[dict[str, str], set[tuple[str, str]], str]:
    """Entries (id -> text), UPDATE events (id, new text), and the integrity check's answer."""
    from agemem.memory.storefile import StoreFileError, check_store_file

    try:
        check_store_file(path, integrity="full")
        integrity = "ok"
    except StoreFileError as err:
        integrity = str(err)
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        entries = dict(conn.execute("SELECT id, content FROM memories"))
        updates = set(
            conn.execute("SELECT memory_id, new_content FROM history WHERE event = 'UPDATE'")
        )
        adds = conn.execute("SELECT count(*) FROM history WHERE event = 'ADD'").fetchone()[0]
    finally:
        conn.close()
    if integrity == "ok" and adds != len(entries):
        integrity = f"{len(entries)} entries but {adds} ADD events"
    return entries, updates, integrity


def _stored_postgres(url: str, schema: str) -> tuple[dict[str, str], set[tuple[str, str]], str]:
    """As `_stored_sqlite`; the check: one ADD event per entry, and a lookup of every id through
    the unique index (sequential scans off) finds every row."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        entries = dict(conn.execute("SELECT id, content FROM memories").fetchall())
        updates = set(
            conn.execute(
                "SELECT memory_id, new_content FROM history WHERE event = 'UPDATE'"
            ).fetchall()
        )
        adds = conn.execute("SELECT count(*) FROM history WHERE event = 'ADD'").fetchone()[0]
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            conn.execute("SET LOCAL enable_bitmapscan = off")
            by_index = conn.execute(
                "SELECT count(*) FROM memories WHERE id = ANY(%s)", (list(entries),)
            ).fetchone()[0]
    problems = []
    if adds != len(entries):
        problems.append(f"{len(entries)} entries but {adds} ADD events")
    if by_index != len(entries):
        problems.append(f"the id index finds {by_index} of {len(entries)} entries")
    return entries, updates, "; ".join(problems) or "ok"


def verify(deploy: Deployment, workload: Workload) -> dict[str, Any]:
    """Every acknowledged write in the store (read directly, not through the server)."""
    where = deploy.tenant_store()
    if deploy.backend == "sqlite":
        entries, updates, integrity = _stored_sqlite(where)
    else:
        entries, updates, integrity = _stored_postgres(deploy.postgres.url, where)
    adds_present = sum(entries.get(i) is not None for i in workload.acked_adds)
    updates_present = sum(pair in updates for pair in workload.acked_updates)
    texts = set(entries.values())
    return {
        "acked_adds": len(workload.acked_adds),
        "acked_adds_present": adds_present,
        "acked_updates": len(workload.acked_updates),
        "acked_updates_present": updates_present,
        "unanswered_adds": len(workload.unanswered_adds),
        "unanswered_adds_present": sum(t in texts for t in workload.unanswered_adds),
        "unanswered_updates": len(workload.unanswered_updates),
        "unanswered_updates_present": sum(p in updates for p in workload.unanswered_updates),
        "entries": len(entries),
        "integrity": integrity,
        "all_acked_present": adds_present == len(workload.acked_adds)
        and updates_present == len(workload.acked_updates),
    }


# ---- runs -----------------------------------------------------------------------------------


def run_level(
    deploy: Deployment, workload: Workload, concurrency: int, requests: int
) -> dict[str, Any]:
    """One closed-loop run of `requests` requests at `concurrency`."""
    load_start = os.getloadavg()[0]
    server_cpu, client_cpu = deploy.server.cpu_seconds(), time.process_time()
    began = time.monotonic()
    results = asyncio.run(
        _drive(
            deploy.server.url,
            deploy.key,
            workload,
            concurrency,
            lambda counts: counts["sent"] >= requests,
        )
    )
    summary = summarize(results, time.monotonic() - began)
    server_end = deploy.server.cpu_seconds()
    return {
        "concurrency": concurrency,
        **summary,
        # CPU seconds per request: the server's (all threads), and this process's (the clients)
        "server_cpu_ms_per_request": None
        if server_cpu is None or server_end is None
        else (server_end - server_cpu) * 1e3 / len(results),
        "client_cpu_ms_per_request": (time.process_time() - client_cpu) * 1e3 / len(results),
        "load_avg_1m_start": load_start,
        "load_avg_1m_end": os.getloadavg()[0],
    }


Fault = Literal["server_kill", "postgres_kill"]


def run_fault(
    deploy: Deployment, workload: Workload, fault: Fault, requests: int
) -> dict[str, Any]:
    """Load at `FAULT_CONCURRENCY` while `fault` happens a third of the way in; the run ends
    once `requests` requests have been answered 2xx. Returns the run's numbers, what happened
    during the fault, and `verify`'s counts."""
    if fault == "postgres_kill" and deploy.postgres is None:
        raise ValueError("postgres_kill needs the postgres backend")
    timeline: dict[str, float] = {}
    failure: list[BaseException] = []
    counts: Counter[str] = Counter()

    def inject() -> None:
        try:
            while counts["ok"] < requests // 3:
                time.sleep(0.02)
            timeline["fault"] = time.monotonic()
            if fault == "server_kill":
                deploy.server.kill()
                timeline["restart"] = time.monotonic()
                deploy.server.start()
            else:
                deploy.postgres.kill()
                time.sleep(DB_DOWN_S)
                timeline["restart"] = time.monotonic()
                deploy.postgres.start()
            timeline["back"] = time.monotonic()
        except BaseException as err:  # reported by the run, which then stops
            failure.append(err)

    injector = threading.Thread(target=inject, daemon=True)
    began = time.monotonic()
    injector.start()
    results = asyncio.run(
        _drive(
            deploy.server.url,
            deploy.key,
            workload,
            FAULT_CONCURRENCY,
            lambda counts: counts["ok"] >= requests or bool(failure),
            counts,
        )
    )
    injector.join()
    if failure:
        raise RuntimeError(f"{fault}: the fault could not be run: {failure[0]}") from failure[0]
    summary = summarize(results, time.monotonic() - began)
    during = [r for r in results if timeline["fault"] <= r.ended <= timeline["back"]]
    after = [
        r.ended - timeline["back"]
        for r in results
        if r.ended > timeline["back"] and r.status is not None and 200 <= r.status < 300
    ]
    outage = {
        "answers": dict(
            sorted(Counter("none" if r.status is None else str(r.status) for r in during).items())
        ),
        "slowest_answer_s": max((r.seconds for r in during if r.status is not None), default=0),
        "down_s": timeline["back"] - timeline["fault"],
        "first_2xx_after_restart_s": min(after, default=None),
    }
    return {
        "fault": fault,
        "concurrency": FAULT_CONCURRENCY,
        **summary,
        "outage": outage,
        "server_tracebacks": deploy.server.tracebacks(),
        "store": verify(deploy, workload),
    }


def _machine() -> dict[str, Any]:
    from agemem.bench.store import _machine as store_machine

    return {**store_machine(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def run_serve_bench(
    backend: Backend,
    *,
    levels: tuple[int, ...] = LEVELS,
    requests: int = 1000,
    seed_entries: int = 1000,
    users: int = 10,
    faults: bool = False,
    fault_requests: int = 400,
    seed: int = 0,
    console: Console | None = None,
) -> dict[str, Any]:
    """The load runs (and with `faults`, the fault runs) over a fresh deployment; prints a line
    per run and a table; returns JSON-able results (see the module docstring)."""
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"backend must be sqlite or postgres, got {backend!r}")
    if requests < 1 or seed_entries < 0 or users < 1 or any(c < 1 for c in levels):
        raise ValueError("requests, users and levels must be >= 1, seed_entries >= 0")
    console = console or Console()
    machine = _machine()
    workload = Workload(users=users, seed=seed)
    out: dict[str, Any] = {
        "backend": backend,
        "config": {
            "levels": list(levels),
            "requests_per_level": requests,
            "seed_entries": seed_entries,
            "users": users,
            "mix": MIX,
            "search": "hybrid, top 10",
            "infer": False,
        },
        "machine": machine,
    }
    with (
        tempfile.TemporaryDirectory(prefix="agemem-bench-serve-") as tmp,
        deployment(backend, Path(tmp)) as deploy,
    ):
        began = time.monotonic()
        _seed(deploy.server.url, deploy.key, workload, seed_entries)
        console.print(
            f"{backend}: server up, {seed_entries} entries seeded in "
            f"{time.monotonic() - began:.1f} s"
        )
        run_level(deploy, workload, 1, min(20, requests))  # warm-up, not reported
        out["levels"] = []
        for concurrency in levels:
            level = run_level(deploy, workload, concurrency, requests)
            out["levels"].append(level)
            console.print(_level_line(backend, level))
        if faults:
            out["faults"] = []
            kinds: list[Fault] = ["server_kill"]
            if backend == "postgres":
                kinds.append("postgres_kill")
            for fault in kinds:
                result = run_fault(deploy, workload, fault, fault_requests)
                out["faults"].append(result)
                console.print(_fault_line(backend, result))
        out["server_tracebacks"] = deploy.server.tracebacks()
        out["store"] = verify(deploy, workload)
    machine["load_avg_1m_end"] = os.getloadavg()[0]
    at_32 = next((lv for lv in out["levels"] if lv["concurrency"] == 32), None)
    if at_32 is not None:
        p95 = at_32["ops"]["search"]["p95_ms"]
        out["target"] = {
            "search_p95_ms_at_32": p95,
            "limit_ms": TARGET_SEARCH_P95_MS,
            "errors_at_32": at_32["errors"],
            "met": p95 is not None and p95 < TARGET_SEARCH_P95_MS and at_32["errors"] == 0,
        }
    console.print(table(out))
    return out


def _level_line(backend: str, level: dict[str, Any]) -> str:
    search = level["ops"]["search"]
    return (
        f"{backend} c={level['concurrency']}: {level['requests']} requests in "
        f"{level['seconds']:.1f} s, {level['throughput_rps']:.0f}/s, search p50/p95 "
        f"{_ms(search['p50_ms'])}/{_ms(search['p95_ms'])} ms, errors {level['errors']}, "
        f"load {level['load_avg_1m_end']:.1f}"
    )


def _fault_line(backend: str, result: dict[str, Any]) -> str:
    store, outage = result["store"], result["outage"]
    return (
        f"{backend} {result['fault']}: acknowledged adds {store['acked_adds_present']}/"
        f"{store['acked_adds']} present, updates {store['acked_updates_present']}/"
        f"{store['acked_updates']}; integrity {store['integrity']}; during the outage "
        f"{outage['answers']}, slowest answer {outage['slowest_answer_s']:.2f} s"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(out: dict[str, Any]) -> Table:
    """Per level: throughput, then p50 / p95 / p99 per operation, then errors."""
    grid = Table(title=f"agemem serve, {out['backend']}: latency ms p50 / p95 / p99")
    for column in ("clients", "req/s", *MIX, "errors", "load"):
        grid.add_column(column, justify="right")
    for level in out["levels"]:
        cells = ["/".join(_ms(level["ops"][op][f"p{p}_ms"]) for p in (50, 95, 99)) for op in MIX]
        grid.add_row(
            str(level["concurrency"]),
            f"{level['throughput_rps']:.0f}",
            *cells,
            str(level["errors"]),
            f"{level['load_avg_1m_end']:.1f}",
        )
    return grid
