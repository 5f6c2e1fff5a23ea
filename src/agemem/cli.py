"""The `agemem` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer

from agemem.eval.cli import eval_command, report_command
from agemem.serve.cli import register as register_serve

app = typer.Typer(
    help="agemem: LLM agents that manage their own long- and short-term memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print numbers and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.command("eval")(eval_command)
app.command("report")(report_command)
store_app = typer.Typer(
    help="Inspect, search, change, export and import a memory store file.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"agemem {version('agemem')}")
        except PackageNotFoundError:  # a source tree that was never installed
            from agemem import __version__

            typer.echo(f"agemem {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """agemem: LLM agents that manage their own long- and short-term memory."""


register_serve(app)  # serve, mcp, keys


def _write_json(payload: dict, path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    typer.echo(f"wrote {path}")


@bench_app.command("store")
def bench_store(
    n: Annotated[
        int, typer.Option(help="Largest store size; 10k is always measured too.")
    ] = 100_000,
    queries: Annotated[int, typer.Option(help="Search queries per size.")] = 200,
    seed: int = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Add throughput and search latency of the SQLite store beside exact NumPy search."""
    from agemem.bench.store import run_store_bench

    if n < 1:
        raise typer.BadParameter("--n must be a positive number of entries, e.g. --n 100000")
    sizes = sorted({min(n, 10_000), n})
    _write_json(run_store_bench(sizes, n_queries=queries, seed=seed), json_path)


@bench_app.command("serve")
def bench_serve(
    store: Annotated[
        str, typer.Option(help="Backend: sqlite (a fresh directory) or postgres (LocalPostgres).")
    ] = "sqlite",
    requests: Annotated[int, typer.Option(help="Requests per concurrency level.")] = 1000,
    levels: Annotated[str, typer.Option(help="Concurrent clients, comma-separated.")] = "1,8,32",
    seed_entries: Annotated[int, typer.Option(help="Entries added before the runs.")] = 1000,
    faults: Annotated[
        bool, typer.Option("--faults", help="Also kill -9 the server (and Postgres) under load.")
    ] = False,
    fault_requests: Annotated[
        int, typer.Option(help="Requests answered 2xx in each fault run.")
    ] = 400,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """The HTTP server under load: mixed add/search/update (20/70/10, infer off) at each
    concurrency level; latency percentiles, throughput, errors, machine load."""
    import shlex
    import sys

    from agemem.bench.serve import run_serve_bench

    if store not in ("sqlite", "postgres"):
        raise typer.BadParameter("--store is sqlite or postgres")
    try:
        counts = tuple(int(c) for c in levels.split(","))
    except ValueError:
        raise typer.BadParameter("--levels: comma-separated numbers, e.g. 1,8,32") from None
    if requests < 1 or fault_requests < 3 or seed_entries < 0 or min(counts) < 1:
        raise typer.BadParameter(
            "--requests and --levels must be >= 1, --fault-requests >= 3, --seed-entries >= 0"
        )
    payload = run_serve_bench(
        store,  # type: ignore[arg-type]
        levels=counts,
        requests=requests,
        seed_entries=seed_entries,
        faults=faults,
        fault_requests=fault_requests,
    )
    payload["command"] = shlex.join(["agemem", *sys.argv[1:]])
    _write_json(payload, json_path)


@bench_app.command("locomo-retrieval")
def bench_locomo_retrieval(
    data: Annotated[Path | None, typer.Option(help="Path to locomo10.json.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Evidence recall@5/@10 on LoCoMo for BM25, dense and hybrid retrieval."""
    from agemem.bench.locomo_retrieval import run_locomo_retrieval

    _write_json(run_locomo_retrieval(data), json_path)


@bench_app.command("rollout")
def bench_rollout(
    preset: Annotated[str, typer.Option(help="Model preset or checkpoint directory.")] = (
        "smollm2-135m"
    ),
    tasks: Annotated[int, typer.Option(help="Synthetic test tasks run on each side.")] = 8,
    batch: Annotated[int, typer.Option(help="Episodes per batched act call.")] = 8,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per model turn.")] = 32,
    n_max: Annotated[int, typer.Option(help="Turn cap per episode.")] = 6,
    seed: int = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Generated tokens/s and episodes/min, batched episodes against one at a time."""
    from agemem.bench.rollout import run_rollout_bench

    if tasks < 1 or batch < 1 or max_new_tokens < 1 or n_max < 1:
        raise typer.BadParameter("--tasks, --batch, --max-new-tokens and --n-max must be >= 1")
    payload = run_rollout_bench(
        preset, n_tasks=tasks, batch=batch, max_new_tokens=max_new_tokens, n_max=n_max, seed=seed
    )
    typer.echo(json.dumps({k: v for k, v in payload.items() if not isinstance(v, dict)}))
    _write_json(payload, json_path)


@bench_app.command("grpo")
def bench_grpo(
    preset: Annotated[str, typer.Option(help="tiny, or a model preset / checkpoint dir.")] = (
        "tiny"
    ),
    tasks: Annotated[int, typer.Option(help="Synthetic tasks (k episodes each).")] = 8,
    k: Annotated[int, typer.Option(help="Episodes per task.")] = 4,
    micro_batch_size: Annotated[int, typer.Option(help="Rows per forward/backward.")] = 16,
    repeats: Annotated[int, typer.Option(help="Updates timed on each side (median).")] = 3,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's).")] = None,
    seed: int = 0,
    episodes: Annotated[
        str, typer.Option(help="Comma-separated cases: append-only, agemem.")
    ] = "append-only,agemem",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Training tokens/s of our GRPO update against TRL's GRPOTrainer, same episodes: the
    append-only case and the AgeMem env with Filter and Summary."""
    import torch

    from agemem.bench.grpo import EPISODES, run_grpo_bench

    if min(tasks, k, micro_batch_size, repeats) < 1:
        raise typer.BadParameter("--tasks, --k, --micro-batch-size and --repeats must be >= 1")
    cases = episodes.split(",")
    if unknown := [c for c in cases if c not in EPISODES]:
        raise typer.BadParameter(f"unknown case(s) {unknown}; choose from {', '.join(EPISODES)}")
    if threads:
        torch.set_num_threads(threads)
    payload = run_grpo_bench(
        preset,
        n_tasks=tasks,
        k=k,
        micro_batch_size=micro_batch_size,
        repeats=repeats,
        seed=seed,
        episodes=cases,
    )
    for case, result in payload["cases"].items():
        typer.echo(
            json.dumps({"case": case, **{k: v for k, v in result.items() if k != "seconds"}})
        )
    _write_json(payload, json_path)


@bench_app.command("grpo-step")
def bench_grpo_step(
    preset: Annotated[str, typer.Option(help="Training config preset or file.")] = (
        "smollm2-hotpotqa"
    ),
    paths: Annotated[str, typer.Option(help="Comma-separated paths: old, new.")] = "old,new",
    overrides: Overrides = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """One GRPO step (4 HotpotQA tasks x 4 rollouts from the shipped SFT policy) per trainer
    path, side by side; --set overrides the grpo section (e.g. model.name=runs/my-sft/final)."""
    from agemem.bench.grpo_step import run_grpo_step_bench

    try:
        payload = run_grpo_step_bench(preset, paths.split(","), overrides)
    except (ValueError, RuntimeError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({k: v for k, v in payload.items() if k in ("speedup", "preset")}))
    _write_json(payload, json_path)


@app.command()
def show(
    path: Annotated[Path, typer.Argument(help="Episode JSONL file.")],
    episode: Annotated[
        int | None, typer.Option(help="Which episode (0-based); default: the index.")
    ] = None,
    full: Annotated[bool, typer.Option(help="Do not shorten long messages.")] = False,
) -> None:
    """Render recorded episodes: each turn's new context, output and observations; the facts."""
    from agemem.episode import EpisodeFileError
    from agemem.show import show_file

    try:
        show_file(path, episode, full=full)
    except (EpisodeFileError, IndexError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@app.command()
def chat(
    store: Annotated[
        Path | None,
        typer.Option(
            help="Memory store file, kept between sessions [default: ~/.agemem/memory.db, "
            "or $AGEMEM_STORE; the library's default too]"
        ),
    ] = None,
    user: Annotated[str | None, typer.Option(help="Whose memories (default: login name).")] = (
        None
    ),
    model: Annotated[
        str,
        typer.Option(
            help="Preset or checkpoint dir (default: the shipped trained SmolLM2 policy); with "
            "--base-url the server's model."
        ),
    ] = "smollm2-135m-agemem",
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Key for --base-url.")] = None,
    scripted: Annotated[
        str | None,
        typer.Option(help="A scripted agent instead of a model: store-everything, no-memory."),
    ] = None,
    max_turns: Annotated[int, typer.Option(help="Agent turns per message.")] = 6,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 0.3,
    layout: Annotated[
        str | None,
        typer.Option(
            help="conversation (one running chat, all tools) or episodes (each message as the "
            "trained policy's episode) [default: episodes for the shipped policy]"
        ),
    ] = None,
) -> None:
    """Chat with the agent; it stores, updates and retrieves memories as it answers."""
    from agemem.chat import open_chat
    from agemem.memory.storefile import check_store_file, default_store_path
    from agemem.policy.models import ModelNotAvailable

    store = store or default_store_path()
    with _store_errors(store):
        check_store_file(store, must_exist=False)  # before a model is loaded
    try:
        with _store_errors(store, os_errors=False):  # a server's OSError is not the store's
            open_chat(
                store=store,
                user=user,
                model=model,
                base_url=base_url,
                api_key=api_key,
                scripted=scripted,
                max_turns=max_turns,
                temperature=temperature,
                layout=layout,
            )
    except (ValueError, ModelNotAvailable) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@app.command()
def demo(
    path: Annotated[
        Path | None,
        typer.Option(
            help="Store file to create (default: runs/demo/memory.db, the demo's own, recreated "
            "on every run). An existing file is replaced only with --overwrite."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the file at --path if it exists.")
    ] = False,
) -> None:
    """A short walk through AgeMem's three stages on a real store and context."""
    from agemem.demo import DEFAULT_PATH, run_demo

    try:
        run_demo(path or DEFAULT_PATH, overwrite=overwrite or path is None)
    except (FileExistsError, IsADirectoryError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Config override key=value, e.g. --set grpo.steps=20."),
]


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option(help="Run directory (runs are resumed).")] = Path(
        "runs/quickstart"
    ),
    seeds: Annotated[int, typer.Option(min=1, help="GRPO runs from the one SFT checkpoint.")] = 1,
    overrides: Overrides = None,
) -> None:
    """SFT + step-wise GRPO of the tiny model on synthetic tasks, evaluated before and after
    beside no-memory and RAG baselines; writes report.{json,md} and plots under --out."""
    from agemem.quickstart import run_quickstart

    with _config_errors():
        run_quickstart(out, overrides, seeds=seeds)


@app.command()
def sft(
    preset: Annotated[str, typer.Option(help="Config preset or file (.toml/.yaml/.json).")] = (
        "quickstart"
    ),
    overrides: Overrides = None,
) -> None:
    """SFT warm start (the config's sft section) on oracle or saved trajectories."""
    from agemem.train.config import load_config
    from agemem.train.sft import run_sft

    with _config_errors():
        result = run_sft(load_config(preset, overrides, kind="pipeline").sft)
    typer.echo(json.dumps({"final": str(result.final_dir), "steps": result.steps, **result.eval}))


@app.command()
def train(
    preset: Annotated[str, typer.Option(help="Config preset or file (.toml/.yaml/.json).")] = (
        "quickstart"
    ),
    overrides: Overrides = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the memory plan for grpo.hardware (episodes per generate call, KV "
            "cache, tokens per step) and refuse a config that cannot fit; train nothing.",
        ),
    ] = False,
) -> None:
    """Step-wise GRPO (the config's grpo section); resumes with --set grpo.resume=true."""
    from agemem.train.config import load_config
    from agemem.train.grpo import run_grpo

    with _config_errors():
        config = load_config(preset, overrides, kind="pipeline")
        if dry_run:
            from agemem.train.plan import dry_run as plan

            plan(config, typer.echo)
            return
        result = run_grpo(config.grpo)
    summary = {"final": str(result.final_dir), "steps": result.steps}
    typer.echo(json.dumps(summary | {f"after/{k}": v for k, v in result.eval_after.items()}))


@app.command()
def plot(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Training run directories (their metrics.jsonl), or metrics files."),
    ],
    out: Annotated[Path, typer.Option(help="Where the PNG files go.")] = Path("."),
    label: Annotated[
        list[str] | None,
        typer.Option(help="A legend label per run, in order (default: the paths as given)."),
    ] = None,
) -> None:
    """Plot training runs: the SFT loss, GRPO's learning curves and tool-call mix."""
    from agemem.train.metrics import read_metrics
    from agemem.train.plots import plot_runs

    if label and len(label) != len(runs):
        _fail(f"{len(label)} --label for {len(runs)} runs: give one per run, in order")
    records = {}
    for i, run in enumerate(runs):
        path = run if run.is_file() else run / "metrics.jsonl"
        if not path.is_file():
            _fail(f"{path} does not exist (is {run} a training run directory?)")
        try:
            records[label[i] if label else str(run)] = list(read_metrics(path))
        except (ValueError, UnicodeDecodeError) as err:
            _fail(f"{path} is not a metrics file: {err}")
    written = plot_runs(records, out)
    if not written:
        _fail("no SFT loss or GRPO rollout records in these runs")
    for path in written:
        typer.echo(f"wrote {path}")


REPRODUCE = (
    "agemem sft --preset smollm2-hotpotqa && agemem train --preset smollm2-hotpotqa && "
    "agemem export-policy"
)
REPRODUCE_SFT = "agemem sft --preset smollm2-hotpotqa && agemem export-policy --sft-only"


@app.command("export-policy")
def export_policy_command(
    sft_adapter: Annotated[
        Path, typer.Option("--sft", help="The SFT run's LoRA adapter directory.")
    ] = Path("runs/smollm2-hotpotqa/sft/final-adapter"),
    grpo_adapter: Annotated[
        Path | None,
        typer.Option("--grpo", help="The GRPO run's adapter (trained on the merged SFT model)."),
    ] = Path("runs/smollm2-hotpotqa/grpo/final-adapter"),
    sft_only: Annotated[bool, typer.Option(help="Ship the SFT adapter alone.")] = False,
    grpo_only: Annotated[
        bool,
        typer.Option(
            help="Ship the GRPO adapter alone, over --base: a GRPO run started from a shipped "
            "policy (--base smollm2-135m-agemem-sft)."
        ),
    ] = False,
    base: Annotated[str, typer.Option(help="The model preset the adapters apply to.")] = (
        "smollm2-135m"
    ),
    out: Annotated[Path | None, typer.Option(help="Policy directory to write.")] = None,
) -> None:
    """Ship trained adapters as a policy (default: the `smollm2-135m-agemem` preset's files)."""
    from agemem.policy.adapters import PolicyFilesError, export_policy
    from agemem.policy.models import TRAINED_DIR

    if sft_only and grpo_only:
        typer.echo("error: --sft-only and --grpo-only exclude each other", err=True)
        raise typer.Exit(2)
    if grpo_only and (grpo_adapter is None or out is None):
        typer.echo("error: --grpo-only needs --grpo DIR and --out DIR", err=True)
        raise typer.Exit(2)
    adapters = [] if grpo_only else [("sft", sft_adapter)]
    if not sft_only and grpo_adapter is not None:
        adapters.append(("grpo", grpo_adapter))
    target = out or TRAINED_DIR / "smollm2-135m-agemem"
    if grpo_only:
        command = f"agemem train (from {base}) && agemem export-policy --grpo-only --base {base}"
    else:
        command = REPRODUCE_SFT if len(adapters) == 1 else REPRODUCE
    try:
        written = export_policy(adapters, target, base=base, command=command)
    except PolicyFilesError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    size = sum(f.stat().st_size for f in written.rglob("*") if f.is_file())
    typer.echo(f"wrote {written} ({', '.join(n for n, _ in adapters)}; {size / 1e6:.1f} MB)")


@contextmanager
def _config_errors() -> Iterator[None]:
    """Config, data and task errors as one line naming the problem (no traceback)."""
    from agemem.tasks import TaskError
    from agemem.train.config import ConfigError

    try:
        yield
    except (ConfigError, TaskError, FileNotFoundError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt as err:
        typer.echo(f"stopped: {err}" if str(err) else "stopped", err=True)
        raise typer.Exit(130) from None


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _store_errors(path: Path | str, *, os_errors: bool = True) -> Iterator[None]:
    """The one error path for a store file that cannot be used: one line on stderr naming the
    file and the fix, exit status 1, no traceback (`check_store_file` catches most cases before
    anything is loaded; this catches what only shows once the store is read or written)."""
    import sqlite3

    from agemem.memory.store import StoreError

    try:
        yield
    except StoreError as err:  # its message names the file (or the id) and the fix
        _fail(str(err))
    except sqlite3.DatabaseError as err:
        _fail(
            f"{path} is a damaged SQLite file ({err}); restore it from a backup or an "
            "`agemem store export`, or pass another store"
        )
    except OSError as err:
        if not os_errors:
            raise
        where = err.filename or path
        _fail(f"cannot use {where} ({err.strerror or err}); check the path and its permissions")


def _shown(location: str) -> str:
    """A store location as messages show it: a URL without its password."""
    from agemem.memory.postgres import redacted

    return redacted(location)


def _check_location(location: str, **checks: Any) -> None:
    """`check_store_file` for a file; a postgresql:// URL is checked by opening it."""
    from agemem.memory.storefile import check_store_file, is_store_url

    if not is_store_url(location):
        check_store_file(location, **checks)


@contextmanager
def _open_store(
    location: str, *, must_exist: bool = True, integrity: Literal["quick", "full"] = "quick"
) -> Iterator[Any]:
    """The store at `location` (a file, checked first by `check_store_file`, or a
    postgresql:// URL); errors while it is open go through `_store_errors`."""
    from agemem.memory.storefile import open_store

    with _store_errors(_shown(location)):
        _check_location(location, must_exist=must_exist, integrity=integrity)
        with open_store(location) as store:
            yield store


StoreLocation = Annotated[
    str, typer.Argument(help="Store file, or postgresql://USER@HOST/DB?schema=NAME", metavar="PATH")
]
StorePath = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store file or postgresql:// URL [default: ~/.agemem/memory.db, or $AGEMEM_STORE]",
    ),
]
ScopeUser = Annotated[str | None, typer.Option("--user", help="The user's memories.")]
ScopeAgent = Annotated[str | None, typer.Option("--agent", help="The agent's memories.")]
ScopeRun = Annotated[str | None, typer.Option("--run", help="The run's (session's) memories.")]
ScopeAll = Annotated[
    bool, typer.Option("--all", help="Act on every scope (no --user/--agent/--run).")
]


@contextmanager
def _memory(store: str | None, *, must_exist: bool) -> Iterator[Any]:
    """The `Memory` library over the store (the default file when `store` is None)."""
    from agemem.api import Memory
    from agemem.memory.storefile import default_store_path

    location = store or str(default_store_path())
    with _store_errors(_shown(location)):
        _check_location(location, must_exist=must_exist)
        memory = Memory(location)
        try:
            yield memory
        finally:
            memory.close()


def _scope(command: str, user: str | None, agent: str | None, run: str | None, every: bool):
    """Keyword arguments of a scoped `Memory` call: the library's scope rule, as flags."""
    if every and (user or agent or run):
        _fail(f"store {command}: pass --user/--agent/--run or --all, not both")
    if not (every or user or agent or run):
        _fail(
            f"store {command} needs a scope: pass --user, --agent or --run, or --all to act on "
            "every scope"
        )
    return {"user_id": user, "agent_id": agent, "run_id": run, "unscoped": every}


@store_app.command("stats")
def store_stats(path: StoreLocation) -> None:
    """Entries per user, the embedder, and the file size (after SQLite's integrity check)."""
    from collections import Counter

    from agemem.memory.storefile import is_store_url

    with _open_store(path, integrity="full") as store:
        users = Counter(item.scope.user_id for item in store.get_all())
        size = "" if is_store_url(path) else f", {Path(path).stat().st_size / 1e6:.1f} MB"
        typer.echo(f"{_shown(path)}: {store.count()} entries, embedder {store.embedder.name}{size}")
        for user, n in users.most_common():
            typer.echo(f"  user {user or '(none)'}: {n}")


@store_app.command("export")
def store_export(
    path: StoreLocation,
    out: Annotated[Path, typer.Option(help="JSONL file to write; - for standard output.")],
    user: Annotated[str | None, typer.Option(help="Only this user's entries.")] = None,
) -> None:
    """Write entries (with embeddings and scopes) as JSON Lines; a file is replaced whole."""
    import os
    import shutil
    import sys
    import tempfile

    from agemem.memory.store import Scope

    to_stdout = str(out) == "-"
    if not to_stdout:
        if out.is_dir():
            _fail(f"--out {out} is a directory; pass a file path, e.g. {out / 'memories.jsonl'}")
        if not out.parent.is_dir():
            _fail(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    folder = None if to_stdout else out.parent
    with (
        _open_store(path, integrity="full") as store,
        tempfile.TemporaryDirectory(dir=folder, prefix=".agemem-export-") as tmp,
    ):
        written = Path(tmp) / "export.jsonl"
        n = store.export_jsonl(written, scope=Scope(user_id=user))
        if to_stdout:
            with written.open(encoding="utf-8") as f:
                shutil.copyfileobj(f, sys.stdout)
        else:
            with _store_errors(out):
                os.replace(written, out)
    typer.echo(f"exported {n} entries to {'standard output' if to_stdout else out}", err=to_stdout)


@store_app.command("import")
def store_import(path: StoreLocation, source: Path) -> None:
    """Add the entries of a JSONL export to a store (created if missing); all or nothing."""
    if not source.is_file():
        what = "a directory" if source.is_dir() else "no file"
        _fail(f"{source} is {what}; pass a JSONL file written by `agemem store export`")
    with _open_store(path, must_exist=False) as store:
        try:
            n = store.import_jsonl(source)
        except UnicodeDecodeError as err:
            _fail(
                f"{source} is not a JSONL export (not UTF-8 text: byte {err.start}); pass a "
                "file written by `agemem store export`"
            )
        except ValueError as err:
            _fail(str(err) if str(source) in str(err) else f"{source}: {err}")
    typer.echo(f"imported {n} entries into {_shown(path)}")


@store_app.command("search")
def store_search(
    query: str,
    store: StorePath = None,
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    every: ScopeAll = False,
    limit: Annotated[int, typer.Option(min=1, help="How many entries.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The entries of a scope that best match QUERY (hybrid BM25 + vector search)."""
    scope = _scope("search", user, agent, run, every)
    with _memory(store, must_exist=True) as memory:
        hits = memory.search(query, limit=limit, **scope)["results"]
    for hit in hits:
        if as_json:
            typer.echo(json.dumps(hit, ensure_ascii=False))
        else:
            owner = ", ".join(
                f"{k} {hit[k]}" for k in ("user_id", "agent_id", "run_id") if k in hit
            )
            typer.echo(f"{hit['id']}  {hit.get('score', 0):.2f}  {hit['memory']}  ({owner})")
    if not hits and not as_json:
        typer.echo("no entries match", err=True)


@store_app.command("add")
def store_add(
    content: str,
    store: StorePath = None,
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    every: ScopeAll = False,
    metadata: Annotated[
        str | None, typer.Option(help='A JSON object, e.g. \'{"source": "cli"}\'.')
    ] = None,
) -> None:
    """Store CONTENT verbatim in a scope (--all: in no scope); prints the entry's id."""
    scope = _scope("add", user, agent, run, every)
    meta = None
    if metadata is not None:
        try:
            meta = json.loads(metadata)
        except ValueError as err:
            _fail(f'--metadata is not JSON ({err}); pass an object like \'{{"source": "cli"}}\'')
        if not isinstance(meta, dict):
            _fail('--metadata must be a JSON object, e.g. \'{"source": "cli"}\'')
    with _memory(store, must_exist=False) as memory:
        try:
            [result] = memory.add(content, metadata=meta, infer=False, **scope)["results"]
        except ValueError as err:
            _fail(str(err))
    if result["event"] == "ADD":
        typer.echo(f"added {result['id']}")
    else:
        typer.echo(f"{result['event'].lower()}: {result['id']} already holds this text")


@store_app.command("delete")
def store_delete(
    memory_id: str,
    store: StorePath = None,
    user: ScopeUser = None,
    agent: ScopeAgent = None,
    run: ScopeRun = None,
    every: ScopeAll = False,
) -> None:
    """Delete the entry MEMORY_ID, if it is in the scope; its history stays."""
    scope = _scope("delete", user, agent, run, every)
    with _memory(store, must_exist=True) as memory:
        deleted = memory.delete(memory_id, **scope)
    typer.echo(f"deleted {deleted['id']}: {deleted['memory']}")


if __name__ == "__main__":
    app()
