"""`agemem eval` and `agemem report` as plain typer-compatible functions (registered by
`agemem.cli`). Every user error is one line on stderr and exit status 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from agemem.eval.methods import METHODS


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1) from None


def eval_command(
    benchmark: Annotated[
        str,
        typer.Option(help="synthetic, hotpotqa, hotpotqa-long, locomo, babyai, scienceworld, ..."),
    ],
    method: Annotated[str, typer.Option(help=f"One of: {', '.join(METHODS)}.")],
    out: Annotated[Path, typer.Option(help="Run directory (one per benchmark and method).")],
    policy: Annotated[
        str | None,
        typer.Option(
            help="Model preset or checkpoint directory [default: the shipped trained policy "
            "for agemem (smollm2-135m-agemem) and agemem-sft (smollm2-135m-agemem-sft), the "
            "base smollm2-135m for every other method]"
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible server instead of a local model.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The server's model name.")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="torch, or llama.cpp: the local model's weights served by a llama.cpp server "
            "(q8_0; SmolLM2 models), several times faster on CPU."
        ),
    ] = "torch",
    limit: Annotated[int | None, typer.Option(help="First N tasks (default: all).")] = None,
    t_max: Annotated[
        int | None, typer.Option(help="Context budget in tokens (default: the benchmark's).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Contexts per model call.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per model turn.")] = None,
    top_k: Annotated[int, typer.Option(help="Memories retrieved per query.")] = 5,
    temperature: Annotated[float, typer.Option(help="0: greedy (reproducible).")] = 0.0,
    seed: int = 0,
    judge: Annotated[
        str | None, typer.Option(help="LLM judge: model preset or checkpoint directory.")
    ] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="LLM judge on a server.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="The judge server's model.")] = None,
    categories: Annotated[
        str | None, typer.Option(help="LoCoMo question categories, e.g. 1,2,3,4,5.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with an ETA.")] = True,
    shard: Annotated[
        str | None,
        typer.Option(
            help="I/N: run part I of N (0-based) into OUT/shards/I-of-N, beside the others; "
            "then the same command without --shard gathers them into OUT."
        ),
    ] = None,
) -> None:
    """Run one method on one benchmark into --out (resumable), then write results.json/.md."""
    from agemem.eval.runner import EvalSettings, Shard, default_policy, run_eval
    from agemem.policy.openai import ServerError

    for name, value in (("limit", limit), ("t-max", t_max), ("batch-size", batch_size),
                        ("max-new-tokens", max_new_tokens), ("top-k", top_k)):  # fmt: skip
        if value is not None and value < 1:
            _fail(ValueError(f"--{name} must be >= 1, got {value}"))
    options = {}
    if categories is not None:
        try:
            options["categories"] = tuple(int(c) for c in categories.split(","))
        except ValueError:
            _fail(ValueError(f"--categories takes numbers like 1,2,3,4, got {categories!r}"))
    settings = EvalSettings(
        benchmark=benchmark,
        method=method,
        policy=None if base_url else policy or default_policy(method),
        base_url=base_url,
        model=model,
        backend=backend,
        limit=limit,
        t_max=t_max,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        top_k=top_k,
        temperature=temperature,
        seed=seed,
        judge=judge,
        judge_base_url=judge_base_url,
        judge_model=judge_model,
        options=options,
    )
    try:
        part = None if shard is None else Shard.parse(shard)
        results = run_eval(settings, out, progress=progress, shard=part)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    except ServerError as err:  # e.g. the model server was killed: what ran is journaled
        _fail(ServerError(f"{err}; finished questions are kept, rerun the command to resume"))
    written = out if part is None else part.directory(out)
    typer.echo((written / "results.md").read_text(encoding="utf-8"))
    typer.echo(f"wrote {written / 'results.json'} ({results['n']} tasks)")


def report_command(
    dirs: Annotated[list[Path], typer.Argument(help="Run directories written by agemem eval.")],
    out: Annotated[
        Path | None, typer.Option(help="Write report.md, results.json and plots here.")
    ] = None,
    plots: Annotated[bool, typer.Option(help="Draw PNG plots (needs matplotlib).")] = True,
    against: Annotated[
        Path | None,
        typer.Option(
            help="A run directory (e.g. rag's) to compare every run of its benchmark with, "
            "question by question (paired.json under --out)."
        ),
    ] = None,
) -> None:
    """Merge runs into one table (methods x benchmarks), with plots."""
    from dataclasses import asdict

    from agemem.eval.report import (
        ReportError,
        markdown_table,
        merge_runs,
        paired_table,
        write_plots,
    )

    try:
        runs = merge_runs(dirs)
        text = markdown_table(runs)
        comparisons: list[dict] = []
        if against is not None:
            from agemem.eval.paired import pair_runs  # scipy, and torch through the metrics

            base, rows = pair_runs(dirs, against)
            text += "\n\n" + paired_table(base, rows)
            comparisons = [
                {"run": run["dir"], "against": str(against), "f1": asdict(f1), "em": asdict(em)}
                for run, f1, em in rows
            ]
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "report.md").write_text(text + "\n", encoding="utf-8")
            (out / "results.json").write_text(json.dumps(runs, indent=1) + "\n", encoding="utf-8")
            if comparisons:
                (out / "paired.json").write_text(json.dumps(comparisons, indent=1) + "\n")
            written = write_plots(runs, out) if plots else []
    except (ReportError, OSError) as err:
        _fail(err)
    typer.echo(text)
    if out is not None:
        typer.echo(f"wrote {out / 'report.md'}" + "".join(f", {p}" for p in written))
