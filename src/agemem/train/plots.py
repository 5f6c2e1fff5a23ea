"""Training plots from a run's `metrics.jsonl`: learning curves and the tool-call mix.

matplotlib is an optional dependency (the `plot` extra); `require_matplotlib` names the fix
when it is missing. Figures are written with the non-interactive Agg backend, so plotting works
on a machine without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agemem.train.evaluate import TOOLS


def require_matplotlib() -> Any:
    """`matplotlib.pyplot` on the Agg backend, or an ImportError that names the fix."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "plots need matplotlib: pip install 'agemem[plot]' (or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], float(r[key])) for r in rows if key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_learning_curves(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Rollout reward and success per GRPO step (with held-out evaluations as points)."""
    plt = require_matplotlib()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps, reward = _series(rows, "rollout/reward_mean")
    left.plot(steps, reward, label="rollout reward (mean)")
    left.set_xlabel("GRPO step")
    left.set_ylabel("reward")
    left.grid(alpha=0.3)
    left.legend()
    for key, label in (("rollout/success", "rollout success"), ("rollout/overflow", "overflow")):
        steps, values = _series(rows, key)
        right.plot(steps, values, label=label)
    for key, label in (
        ("eval/sampled/success", "held-out (sampled)"),
        ("eval/greedy/success", "held-out (greedy)"),
    ):
        steps, values = _series(rows, key)
        if steps:
            right.plot(steps, values, "o--", label=label)
    right.set_xlabel("GRPO step")
    right.set_ylabel("share of episodes")
    right.set_ylim(-0.02, 1.02)
    right.grid(alpha=0.3)
    right.legend()
    return _save(fig, plt, path)


def plot_tool_mix(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Tool calls per episode over GRPO steps, one line per tool (rollout means)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 4))
    for tool in TOOLS:
        steps, values = _series(rows, f"rollout/tools/{tool}")
        if steps:
            ax.plot(steps, values, label=tool)
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("calls per episode")
    ax.set_title("Tool-call mix over training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
