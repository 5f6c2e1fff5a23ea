"""The `agemem` command line. Each command is a thin shell over a library function."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="agemem: LLM agents that manage their own long- and short-term memory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print numbers and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


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


@bench_app.command("locomo-retrieval")
def bench_locomo_retrieval(
    data: Annotated[Path | None, typer.Option(help="Path to locomo10.json.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Evidence recall@5/@10 on LoCoMo for BM25, dense and hybrid retrieval."""
    from agemem.bench.locomo_retrieval import run_locomo_retrieval

    _write_json(run_locomo_retrieval(data), json_path)


@app.command()
def demo(
    path: Annotated[Path, typer.Option(help="Store file (recreated).")] = Path(
        "runs/demo/memory.db"
    ),
) -> None:
    """A short walk through AgeMem's three stages on a real store and context."""
    from agemem.demo import run_demo

    run_demo(path)


if __name__ == "__main__":
    app()
