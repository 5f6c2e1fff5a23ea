"""Two runs on the same questions, compared question by question: a gain, or noise?

A difference of a few F1 points between two methods on a few dozen questions can be luck.
Pairing by question removes the questions' own difficulty from the comparison: `paired(a, b)`
takes the per-question scores of run `a` and run `b` (`run_scores`: keyed by task id and
question index), keeps the questions both runs hold, and reports

- `mean_a`, `mean_b`, `diff` (= `mean_a - mean_b`) over those questions;
- `ci_low`, `ci_high`: a 95% percentile-bootstrap interval of `diff` (`scipy.stats.bootstrap`,
  10,000 resamples of the questions, seeded, so a report is reproducible);
- `wins`, `losses`, `ties`: questions where `a` scored higher, lower, the same;
- `p_sign`: the two-sided exact sign test on the untied questions (`scipy.stats.binomtest`):
  the chance of a split at least this uneven if neither method were better.

>>> a = {("t1", 0): {"f1": 1.0}, ("t2", 0): {"f1": 0.5}, ("t3", 0): {"f1": 0.0}}
>>> b = {("t1", 0): {"f1": 0.0}, ("t2", 0): {"f1": 0.5}, ("t4", 0): {"f1": 1.0}}
>>> r = paired(a, b, "f1")
>>> (r.n, r.diff, r.wins, r.losses, r.ties, r.p_sign)
(2, 0.5, 1, 0, 1, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agemem.eval.metrics import question_scores
from agemem.eval.report import ReportError, load_results
from agemem.eval.runner import EPISODES, finished_episodes

Scores = Mapping[tuple[str, int], Mapping[str, float | None]]


class PairedError(ReportError):
    """Runs that cannot be paired; the message names the fix."""


@dataclass(frozen=True)
class PairedResult:
    metric: str
    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    p_sign: float


def run_scores(directory: str | Path) -> dict[tuple[str, int], dict[str, float | None]]:
    """Every question's scores in a run directory written by `agemem eval --out`."""
    path = Path(directory) / EPISODES
    if not path.is_file():
        raise PairedError(f"{directory} has no {EPISODES}; pass a directory of `agemem eval`")
    return {
        (episode.task_id, i): scores
        for episode in finished_episodes(path, repair=False)
        for i, scores in enumerate(question_scores(episode))
    }


def paired(
    a: Scores, b: Scores, metric: str = "f1", *, resamples: int = 10_000, seed: int = 0
) -> PairedResult:
    """`a` against `b` on the questions both hold (module docstring)."""
    from scipy.stats import binomtest, bootstrap

    keys = [k for k in a if k in b and None not in (a[k].get(metric), b[k].get(metric))]
    if not keys:
        raise PairedError(f"no question has a {metric!r} score in both runs")
    x = np.array([a[k][metric] for k in keys], dtype=float)
    y = np.array([b[k][metric] for k in keys], dtype=float)
    d = x - y
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    if np.ptp(d) == 0:  # every difference the same: the interval is that value
        low = high = float(d[0])
    else:
        ci = bootstrap(
            (d,), np.mean, n_resamples=resamples, method="percentile", rng=seed
        ).confidence_interval
        low, high = float(ci.low), float(ci.high)
    p = binomtest(wins, wins + losses).pvalue if wins + losses else 1.0
    return PairedResult(
        metric=metric,
        n=len(keys),
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        wins=wins,
        losses=losses,
        ties=len(keys) - wins - losses,
        p_sign=float(p),
    )


def pair_runs(
    dirs: Sequence[str | Path], against: str | Path
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], PairedResult, PairedResult]]]:
    """`against`'s results, and (results with `dir`, F1 result, EM result) for every other run
    in `dirs` on its benchmark, each paired with it by question."""
    base = load_results(against)
    base_scores = run_scores(against)
    rows = []
    for directory in dirs:
        run = load_results(directory)
        if (
            run["benchmark"] != base["benchmark"]
            or Path(directory).resolve() == Path(against).resolve()
        ):
            continue
        scores = run_scores(directory)
        rows.append(
            (
                {**run, "dir": str(directory)},
                paired(scores, base_scores, "f1"),
                paired(scores, base_scores, "em"),
            )
        )
    if not rows:
        raise PairedError(f"no other run of {base['benchmark']} to pair with {against}")
    return base, rows
