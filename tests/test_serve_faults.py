"""`agemem serve` under load while it, or its Postgres server, is killed with SIGKILL (issue 21):
every write the server acknowledged (2xx) is in the store afterwards, read from the store
itself; the store passes its integrity check; while Postgres is down the server answers 503 at
once, and 2xx again once it is back. Real server processes, real stores, a real Postgres; the
load and the checks are `agemem bench serve --faults`'s own (`agemem.bench.serve`)."""

from __future__ import annotations

import json

import pytest
from serving import ENV, agemem

from agemem.bench.serve import REQUEST_TIMEOUT_S, Workload, deployment, run_fault

pytestmark = pytest.mark.slow
REQUESTS = 45  # answered 2xx per fault run; the fault comes after a third of them


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployed(request, tmp_path_factory):
    """A server over a fresh store with 40 entries, and the workload that remembers every
    acknowledged write."""
    from agemem.bench.serve import _seed

    folder = tmp_path_factory.mktemp(f"faults-{request.param}")
    with deployment(request.param, folder, env=ENV) as deploy:
        workload = Workload(users=4, seed=1)
        _seed(deploy.server.url, deploy.key, workload, 40, batch=20)
        yield deploy, workload


def _check_store(result: dict) -> None:
    store = result["store"]
    assert store["acked_adds"] > 40 and store["acked_updates"] > 0, store
    assert store["acked_adds_present"] == store["acked_adds"], store
    assert store["acked_updates_present"] == store["acked_updates"], store
    assert store["integrity"] == "ok", store
    assert result["server_tracebacks"] == 0


def test_server_killed_under_load_keeps_every_acknowledged_write(deployed):
    deploy, workload = deployed
    result = run_fault(deploy, workload, "server_kill", REQUESTS)
    _check_store(result)
    assert deploy.server.starts == 2
    assert set(result["outage"]["answers"]) <= {"none", "200"}  # refused, never a 5xx
    assert result["outage"]["first_2xx_after_restart_s"] is not None


@pytest.mark.parametrize("deployed", ["postgres"], indirect=True)
def test_postgres_killed_under_load_answers_503_then_recovers(deployed):
    deploy, workload = deployed
    result = run_fault(deploy, workload, "postgres_kill", REQUESTS)
    _check_store(result)
    outage = result["outage"]
    assert outage["answers"].get("503", 0) > 0, outage
    assert set(outage["answers"]) <= {"200", "503"}, outage  # no 500, no unanswered request
    assert outage["slowest_answer_s"] < REQUEST_TIMEOUT_S / 3, outage  # answered, not hung
    assert outage["first_2xx_after_restart_s"] is not None, outage
    assert result["statuses"].keys() <= {"200", "503"}


def test_bench_serve_command_writes_its_json(tmp_path):
    out = tmp_path / "serve.json"
    done = agemem(
        "bench", "serve", "--store", "sqlite", "--levels", "1,2", "--requests", "12",
        "--seed-entries", "10", "--json", str(out), timeout=600,
    )  # fmt: skip
    assert "sqlite c=2: 12 requests" in done.stdout
    payload = json.loads(out.read_text())
    assert [level["concurrency"] for level in payload["levels"]] == [1, 2]
    for level in payload["levels"]:
        assert level["requests"] == 12 and level["errors"] == 0
        assert sum(op["requests"] for op in level["ops"].values()) == 12
        search = level["ops"]["search"]
        assert search["p50_ms"] <= search["p95_ms"] <= search["p99_ms"]
    assert payload["machine"]["cpu_count"] >= 1 and "load_avg_1m" in payload["machine"]
    assert payload["store"]["all_acked_present"] and payload["store"]["integrity"] == "ok"
    assert "target" not in payload  # no 32-client level run


def test_postgres_store_reconnects_after_its_server_restarts():
    """Killed while the store is idle, then restarted: the next call reconnects and succeeds;
    while it is down, a call fails at once with StoreUnavailable (the server's 503)."""
    import tempfile

    from agemem.memory.embed import library_embedder
    from agemem.memory.pglocal import LocalPostgres
    from agemem.memory.postgres import PostgresStore
    from agemem.memory.store import NewMemory, Scope, StoreUnavailable

    with LocalPostgres(tempfile.mkdtemp(prefix="agemem-pg-")) as postgres:
        store = PostgresStore(postgres.url, library_embedder())
        try:
            store.add_many([NewMemory("Maya lives in Porto.", scope=Scope(user_id="maya"))])
            postgres.kill()
            postgres.start()
            assert store.count() == 1  # no call failed: the dead connection is replaced
            postgres.kill()
            for _ in range(2):
                with pytest.raises(StoreUnavailable):
                    store.search("Where does Maya live?", scope=Scope(user_id="maya"))
            postgres.start()
            [hit] = store.search("Where does Maya live?", scope=Scope(user_id="maya"))
            assert hit.content == "Maya lives in Porto."
        finally:
            store.close()
