"""Training metrics: one JSON line per logged step, and TensorBoard events when available.

The JSONL file is the record (appendable, greppable, read back by `read_metrics`); TensorBoard
(`pip install tensorboard`) is a viewer on top. Only the main process should write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:  # optional viewer
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover - depends on the environment
    SummaryWriter = None


class MetricsWriter:
    """Append `{"step": ..., "time": ..., **metrics}` lines to `<out_dir>/metrics.jsonl`
    (and scalars to `<out_dir>/tensorboard/` when `tensorboard` and the package allow)."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = (
            SummaryWriter(str(self.dir / "tensorboard")) if tensorboard and SummaryWriter else None
        )

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        self._file.write(json.dumps(record, default=_plain) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """numpy or torch scalars as numbers, anything else unknown to JSON as text."""
    return value.item() if hasattr(value, "item") else str(value)


def read_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a metrics.jsonl file, in order."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def truncate_after(path: str | Path, step: int) -> None:
    """Drop records past `step` (a resumed run rewrites them, so the file has each step once)."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
