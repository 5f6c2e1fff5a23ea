"""Reports people read: markdown tables in the papers' layout, and PNG plots.

`merge_runs(dirs)` reads each run's `results.json`; `markdown_table(results)` renders
- the main table, methods x benchmarks (AgeMem's Table 2 layout: ALFWorld-like `twc`,
  SciWorld, PDDL, BabyAI, HotpotQA last, then their average): each QA cell is `EM / F1` in %,
  `judge / EM / F1` when a judge graded the run; interactive cells are `success / progress`;
- a detail table per QA run: questions, memory quality, evidence recall, prompt tokens per
  question (the answering prompt, and all model calls), latency p50/p95; and one per
  interactive run: episodes, success, progress, turns, world actions, the share of them the
  world rejected, the share of malformed turns, prompt tokens per turn and per episode;
- tool calls per episode by operation (AgeMem's Table 3 layout);
- LoCoMo-style per-category scores where runs have categories.
`write_plots` draws score vs prompt tokens per question and the tool-call mix per method
(matplotlib, the optional `plot` extra).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from agemem.eval.benchmarks import BENCHMARKS
from agemem.eval.methods import METHODS

RESULTS = "results.json"


class ReportError(ValueError):
    """A run directory that cannot be reported; the message names the fix."""


def load_results(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / RESULTS
    if not path.is_file():
        raise ReportError(
            f"{directory} has no {RESULTS}; pass a directory written by `agemem eval --out`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not JSON ({err.msg}); rerun `agemem eval` into it") from None
    if not isinstance(data, dict) or not {"benchmark", "method", "metrics"} <= data.keys():
        raise ReportError(f"{path} is not an agemem results file; rerun `agemem eval` into it")
    return data


def merge_runs(directories: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Every run's results, ordered by method then benchmark (registry order)."""
    if not directories:
        raise ReportError("no run directories given; pass one or more `agemem eval --out` dirs")
    runs = [load_results(d) for d in directories]
    return sorted(
        runs, key=lambda r: (_order(r["method"], METHODS), _order(r["benchmark"], BENCHMARKS))
    )


def _order(name: str, registry: dict[str, Any]) -> tuple[int, str]:
    names = list(registry)
    return (names.index(name) if name in names else len(names), name)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def score_cell(metrics: dict[str, Any]) -> str:
    """`EM / F1` (or `judge / EM / F1`, or `success / progress`) in %.

    >>> score_cell({"em": 0.25, "f1": 0.5})
    '25.0 / 50.0'
    """
    if "em" not in metrics:
        return f"{_pct(metrics.get('success'))} / {_pct(metrics.get('progress'))}"
    cell = f"{_pct(metrics['em'])} / {_pct(metrics['f1'])}"
    return f"{_pct(metrics['judge'])} / {cell}" if "judge" in metrics else cell


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _label(run: dict[str, Any]) -> str:
    model = run.get("model")
    return f"{run['method']} ({model_name(model)})" if model else run["method"]


def model_name(model: str) -> str:
    """A preset as is; a checkpoint directory by its path under `runs/` (else its last three
    parts), since its own name is often just `final`.

    >>> model_name("smollm2-135m"), model_name("/tmp/x/runs/quickstart/grpo/final")
    ('smollm2-135m', 'quickstart/grpo/final')
    >>> model_name("/data/ckpt/my-run/final")
    'ckpt/my-run/final'
    """
    parts = Path(model).parts
    if "runs" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("runs") :])
    return "/".join(parts[-3:])


# AgeMem's Table 2 columns: ALFWorld (`twc`, or `alfworld` with its data), SciWorld, PDDL,
# BabyAI, HotpotQA, then their average; our other benchmarks go first.
PAPER_COLUMNS = ("twc", "alfworld", "scienceworld", "pddl", "babyai", "hotpotqa")
PAPER_BENCHMARKS = 5


def main_table(runs: list[dict[str, Any]]) -> str:
    """Methods x benchmarks; `avg` (of `headline_score`) for rows that have all five of AgeMem's
    benchmarks, as its table averages them."""
    benchmarks = sorted({r["benchmark"] for r in runs}, key=_column)
    cells: dict[str, dict[str, str]] = {}
    scores: dict[str, list[float]] = {}
    for run in runs:
        label = _label(run)
        cells.setdefault(label, {})[run["benchmark"]] = score_cell(run["metrics"])
        score = headline_score(run["metrics"])
        if run["benchmark"] in PAPER_COLUMNS and score is not None:
            scores.setdefault(label, []).append(score)
    header = ["method", *benchmarks]
    rows = [[label, *(row.get(b, "") for b in benchmarks)] for label, row in cells.items()]
    if sum(b in PAPER_COLUMNS for b in benchmarks) >= PAPER_BENCHMARKS:
        header.append("avg")
        for row in rows:
            paper = scores.get(row[0], [])
            full = len(paper) >= PAPER_BENCHMARKS
            row.append(_pct(sum(paper) / len(paper)) if full else "")
    return _table(header, rows)


def _column(benchmark: str) -> tuple[int, str]:
    names = [b for b in BENCHMARKS if b not in PAPER_COLUMNS] + list(PAPER_COLUMNS)
    return (names.index(benchmark) if benchmark in names else -1, benchmark)


def headline_score(metrics: dict[str, Any]) -> float | None:
    """One number per run, for the average and the plots: the judge's score where a judge graded
    (AgeMem's HotpotQA metric), else token F1 (EM hides a small model's partial answers); for
    worlds AgentBoard's progress rate (a solved world counts 1, so success is inside it).

    >>> headline_score({"em": 0.0, "f1": 0.25}), headline_score({"success": 0, "progress": 0.5})
    (0.25, 0.5)
    """
    return metrics.get("judge", metrics.get("f1", metrics.get("progress")))


def _interactive(benchmark: str) -> bool:
    spec = BENCHMARKS.get(benchmark)
    return spec is not None and spec.interactive


def world_table(runs: list[dict[str, Any]]) -> str:
    header = [
        "benchmark", "method", "episodes", "success", "progress", "turns", "actions",
        "invalid actions", "format errors", "prompt tokens/turn", "model tokens/episode",
        "failed calls",
    ]  # fmt: skip
    rows = []
    for run in runs:
        m = run["metrics"]
        rows.append(
            [
                run["benchmark"],
                _label(run),
                str(run["n"]),
                _pct(m.get("success")),
                _pct(m.get("progress")),
                _num(m.get("turns"), 1),
                _num(m.get("actions_per_episode"), 1),
                _pct(m.get("invalid_action_rate")),
                _pct(m.get("format_error_rate")),
                _num(m.get("prompt_tokens_mean")),
                _num(m.get("model_tokens_per_episode")),
                _num(m.get("failed_calls"), 2),
            ]  # fmt: skip
        )
    return _table(header, rows)


def detail_table(runs: list[dict[str, Any]]) -> str:
    header = [
        "benchmark", "method", "tasks", "questions", "EM", "F1", "judge", "memory quality",
        "evidence recall", "prompt tokens/q", "model tokens/q", "latency p50 s", "p95 s",
    ]  # fmt: skip
    rows = []
    for run in runs:
        m = run["metrics"]
        rows.append(
            [
                run["benchmark"],
                _label(run),
                str(run["n"]),
                str(m.get("n_questions", "-")),
                _pct(m.get("em")),
                _pct(m.get("f1")),
                _pct(m.get("judge")),
                _pct(m.get("memory_quality")),
                _pct(m.get("evidence_recall")),
                _num(m.get("prompt_tokens_mean")),
                _num(m.get("model_tokens_per_question")),
                _num(m.get("latency_p50_s"), 2),
                _num(m.get("latency_p95_s"), 2),
            ]  # fmt: skip
        )
    return _table(header, rows)


def tool_table(runs: list[dict[str, Any]]) -> str | None:
    names = sorted({n for r in runs for n in r["metrics"].get("tool_calls", {})})
    if not names:
        return None
    rows = [
        [
            r["benchmark"],
            _label(r),
            *(_num(r["metrics"]["tool_calls"].get(n, 0.0), 2) for n in names),
        ]
        for r in runs
    ]
    return _table(["benchmark", "method", *names], rows)


def category_table(runs: list[dict[str, Any]]) -> str | None:
    with_categories = [r for r in runs if r["metrics"].get("by_category")]
    if not with_categories:
        return None
    categories = sorted({c for r in with_categories for c in r["metrics"]["by_category"]})
    rows = []
    for run in with_categories:
        by = run["metrics"]["by_category"]
        rows.append(
            [
                run["benchmark"],
                _label(run),
                *(score_cell(by[c]) if c in by else "" for c in categories),
            ]
        )
    return _table(["benchmark", "method", *categories], rows)


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """All tables of the module docstring, as one markdown text."""
    judged = any("judge" in r["metrics"] for r in runs)
    unit = "judge / EM / F1" if judged else "EM / F1"
    parts = [f"Scores in % ({unit}; interactive: success / progress).", "", main_table(runs)]
    qa = [r for r in runs if not _interactive(r["benchmark"])]
    worlds = [r for r in runs if _interactive(r["benchmark"])]
    if qa:
        parts += ["", "Details (tokens per question; latency in seconds per question).", ""]
        parts.append(detail_table(qa))
    if worlds:
        parts += ["", "Interactive worlds (success and progress in %; means per episode).", ""]
        parts.append(world_table(worlds))
    tools = tool_table(runs)
    if tools:
        parts += ["", "Memory operations per episode (calls that ran).", "", tools]
    categories = category_table(runs)
    if categories:
        parts += ["", f"Per question category ({unit}).", "", categories]
    return "\n".join(parts)


def paired_table(against: dict[str, Any], rows: list[tuple[dict[str, Any], Any, Any]]) -> str:
    """Each run paired with `against` by question (`agemem.eval.paired`): `rows` holds (run,
    its F1 result, its EM result); differences in points with their 95% bootstrap intervals."""

    def diff(r: Any) -> str:
        return f"{100 * r.diff:+.1f} [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]"

    body = [
        [
            _label(run),
            str(f1.n),
            f"{_pct(f1.mean_a)} / {_pct(f1.mean_b)}",
            diff(f1),
            diff(em),
            f"{f1.wins} / {f1.losses} / {f1.ties}",
            f"{f1.p_sign:.3f}",
        ]
        for run, f1, em in rows
    ]
    header = ["method", "questions", "F1 (it / against)", "F1 difference [95% CI]"]
    header += ["EM difference [95% CI]", "better / worse / equal (F1)", "sign test p"]
    text = (
        f"Paired by question against {_label(against)} on {against['benchmark']}: differences "
        "in points, 95% bootstrap intervals, two-sided sign test on the questions that differ.\n\n"
        + _table(header, body)
    )
    return text + "".join(f"\n\n{line}" for line in seed_summary(rows))


def seed_summary(rows: list[tuple[dict[str, Any], Any, Any]]) -> list[str]:
    """A line per method that several runs share (seeds of one recipe): the mean, sample
    standard deviation and range of their paired differences, in points.

    >>> from types import SimpleNamespace as R
    >>> runs = [({"method": "agemem"}, R(diff=d, n=200), R(diff=d / 2)) for d in (0.07, 0.03, 0.05)]
    >>> seed_summary(runs)
    ['agemem, 3 runs: F1 difference +5.0 on average (sd 2.0, from +3.0 to +7.0); EM +2.5 (sd 1.0).']
    """
    by_method: dict[str, list[tuple[float, float]]] = {}
    for run, f1, em in rows:
        by_method.setdefault(run["method"], []).append((100 * f1.diff, 100 * em.diff))
    lines = []
    for method, diffs in by_method.items():
        if len(diffs) < 2:
            continue
        f1s, ems = zip(*diffs, strict=True)
        lines.append(
            f"{method}, {len(diffs)} runs: F1 difference {mean(f1s):+.1f} on average "
            f"(sd {stdev(f1s):.1f}, from {min(f1s):+.1f} to {max(f1s):+.1f}); "
            f"EM {mean(ems):+.1f} (sd {stdev(ems):.1f})."
        )
    return lines


def write_plots(runs: list[dict[str, Any]], out: str | Path) -> list[Path]:
    """`score_vs_tokens.png` and `tool_calls.png` under `out`; needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ReportError(
            "plots need matplotlib: pip install 'agemem[plot]' (or pass --no-plots)"
        ) from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_score_plot(plt, runs, out / "score_vs_tokens.png")]
    if tool_table(runs):
        paths.append(_tool_plot(plt, runs, out / "tool_calls.png"))
    return paths


def _score_plot(plt: Any, runs: list[dict[str, Any]], path: Path) -> Path:
    """One panel per benchmark; each method label keeps its colour and marker in every panel,
    and one legend names them (annotations next to points overlap when scores tie)."""
    benchmarks = sorted({r["benchmark"] for r in runs}, key=_column)
    labels = list(dict.fromkeys(_label(r) for r in runs))
    colours = plt.get_cmap("tab20").colors
    styles = {
        label: (colours[i % len(colours)], "osD^v<>ph*"[i % 10]) for i, label in enumerate(labels)
    }
    fig, axes = plt.subplots(
        1, len(benchmarks), figsize=(3.6 * len(benchmarks) + 3, 4), squeeze=False
    )
    for ax, benchmark in zip(axes[0], benchmarks, strict=True):
        for run in (r for r in runs if r["benchmark"] == benchmark):
            x, y = run["metrics"].get("prompt_tokens_mean"), headline_score(run["metrics"])
            if x is None or y is None:
                continue
            colour, marker = styles[_label(run)]
            ax.scatter([x], [100 * y], color=colour, marker=marker, s=45, label=_label(run))
        ax.set_xscale("log")
        ax.set_title(benchmark, fontsize=9)
        unit = "turn" if _interactive(benchmark) else "question"
        ax.set_xlabel(f"prompt tokens per {unit}", fontsize=8)
        ax.set_ylim(-4, 104)
    axes[0][0].set_ylabel("score % (judge, else F1; interactive: progress)")
    handles = {}  # label -> handle, once per label across panels
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="center left",
        bbox_to_anchor=(1, 0.5),
        fontsize=7,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _tool_plot(plt: Any, runs: list[dict[str, Any]], path: Path) -> Path:
    names = sorted({n for r in runs for n in r["metrics"].get("tool_calls", {})})
    labels = [f"{_label(r)}\n{r['benchmark']}" for r in runs]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(runs)), 4.5))
    bottom = [0.0] * len(runs)
    for name in names:
        values = [r["metrics"].get("tool_calls", {}).get(name, 0.0) for r in runs]
        ax.bar(labels, values, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("calls per episode")
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
