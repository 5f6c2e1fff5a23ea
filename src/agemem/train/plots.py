"""Training plots from a run's `metrics.jsonl`: the SFT loss, GRPO's learning curves and its
tool-call mix (`plot_runs` picks what each run's records hold; `agemem plot` runs it).

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


Runs = dict[str, Sequence[dict[str, Any]]]  # label -> a run's metrics records


STORE_RECALL = "rollout/reward/memory_storage_recall"  # logged by agemem.rewards
STORE_PRECISION = "rollout/reward/memory_storage_precision"


def plot_learning_curves(runs: Runs, path: str | Path) -> Path:
    """Per GRPO step, for each run: rollout reward (left), rollout success and overflow (middle),
    with the held-out evaluations as points; and, where the memory reward scored the store
    against the supporting facts, the store's recall and precision (right)."""
    plt = require_matplotlib()
    memory = any(STORE_RECALL in r for rows in runs.values() for r in rows)
    fig, axes = plt.subplots(1, 3 if memory else 2, figsize=(16 if memory else 11, 4))
    left, right, store = (*axes, None)[:3]
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        left.plot(*_series(rows, "rollout/reward_mean"), color=color, label=label)
        right.plot(*_series(rows, "rollout/success"), color=color, label=f"{label}: success")
        right.plot(*_series(rows, "rollout/overflow"), ":", color=color, label=f"{label}: overflow")
        steps, values = _series(rows, "eval/sampled/success")
        if steps:
            right.plot(steps, values, "o", color=color, label=f"{label}: held-out success")
        if store is not None:
            store.plot(*_series(rows, STORE_RECALL), color=color, label=f"{label}: recall")
            store.plot(
                *_series(rows, STORE_PRECISION), "--", color=color, label=f"{label}: precision"
            )
    left.set(xlabel="GRPO step", ylabel="rollout reward (mean)")
    right.set(xlabel="GRPO step", ylabel="share of episodes", ylim=(-0.02, 1.02))
    if store is not None:
        store.set(xlabel="GRPO step", ylabel="store vs supporting facts", ylim=(-0.02, 1.02))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_sft_loss(runs: Runs, path: str | Path) -> Path:
    """Per SFT step, for each run: the loss (thin) and its 20-step moving mean, with the
    held-out evaluations' success as points on a second axis when the run has them."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    right = None
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        steps, losses = _series(rows, "loss")
        ax.plot(steps, losses, color=color, alpha=0.3, linewidth=0.8)
        means = [sum(losses[max(0, j - 19) : j + 1]) / len(losses[max(0, j - 19) : j + 1])
                 for j in range(len(losses))]  # fmt: skip
        ax.plot(steps, means, color=color, label=f"{label}: loss (20-step mean)")
        eval_steps, success = _series(rows, "eval/success")
        if eval_steps:
            right = right or ax.twinx()
            right.plot(eval_steps, success, "o", color=color, label=f"{label}: held-out success")
    ax.set(xlabel="SFT step", ylabel="loss (weighted token NLL)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    if right is not None:
        right.set(ylabel="held-out success", ylim=(-0.02, 1.02))
        right.legend(fontsize=7, loc="center right")
    return _save(fig, plt, path)


def plot_runs(runs: Runs, out: str | Path) -> list[Path]:
    """Every plot the runs' records allow, into `out`: `sft_loss.png` for SFT runs (a loss, no
    rollouts), `learning_curves.png` and `tool_mix.png` for GRPO runs."""
    out = Path(out)
    grpo = {k: v for k, v in runs.items() if any("rollout/reward_mean" in r for r in v)}
    sft = {k: v for k, v in runs.items() if k not in grpo and any("loss" in r for r in v)}
    written = []
    if sft:
        written.append(plot_sft_loss(sft, out / "sft_loss.png"))
    if grpo:
        written += [
            plot_learning_curves(grpo, out / "learning_curves.png"),
            plot_tool_mix(grpo, out / "tool_mix.png"),
        ]
    return written


def plot_tool_mix(runs: Runs, path: str | Path) -> Path:
    """Tool calls per episode over GRPO steps (rollout means), one panel per tool, one line per
    run."""
    plt = require_matplotlib()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, tool in zip(axes.flat, TOOLS, strict=True):
        for i, (label, rows) in enumerate(runs.items()):
            ax.plot(*_series(rows, f"rollout/tools/{tool}"), color=f"C{i}", label=label)
        ax.set_title(tool, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("GRPO step")
    for ax in axes[:, 0]:
        ax.set_ylabel("calls per episode")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Tool-call mix over training")
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
