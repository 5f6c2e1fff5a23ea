"""Progress bars that also show in log files.

Rich draws nothing until the end when its console is not a terminal (a `nohup` log, a CI job),
so a run of hours would look dead there. `LoggedProgress` is a rich `Progress` that, on such a
console, also prints one plain line per task update: the first, then at most one every
`LOG_EVERY_S` seconds, and always the update that finishes the task. A task's `note` field
(e.g. "812 model calls") goes into the line after the count.

>>> from io import StringIO
>>> from rich.console import Console
>>> log = StringIO()
>>> with LoggedProgress(console=Console(file=log), log_every_s=0) as bar:
...     job = bar.add_task("eval", total=4, unit="questions")
...     bar.advance(job, 2)
>>> log.getvalue().splitlines()[0].startswith("eval: 2/4 questions, 0:00:00 elapsed, ETA ")
True
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from rich.progress import Progress, TaskID

LOG_EVERY_S = 30.0  # a line per half minute: readable in a log of an hours-long run
# Rich estimates speed over its last 30 s, so updates minutes apart (a batch of 8 HotpotQA
# questions takes 4-8 min on a CPU) leave no ETA; an hour's window averages them instead.
SPEED_WINDOW_S = 3600.0


class LoggedProgress(Progress):
    """A rich `Progress` that writes plain lines where it cannot redraw (see the module)."""

    def __init__(self, *columns: Any, log_every_s: float = LOG_EVERY_S, **kwargs: Any) -> None:
        kwargs.setdefault("speed_estimate_period", SPEED_WINDOW_S)
        super().__init__(*columns, **kwargs)
        self.log_every_s = log_every_s
        self._logged_at: dict[TaskID, float] = {}

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._log_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log_line(task_id)

    def _log_line(self, task_id: TaskID) -> None:
        if self.disable or self.console.is_interactive:
            return
        task = self._tasks[task_id]
        now = time.monotonic()
        last = self._logged_at.get(task_id)
        if last is not None and not task.finished and now - last < self.log_every_s:
            return
        self._logged_at[task_id] = now
        unit = task.fields.get("unit")
        done = f"{task.completed:.0f}/{task.total:.0f}" if task.total else f"{task.completed:.0f}"
        line = f"{task.description}: {done}{f' {unit}' if unit else ''}"
        if note := task.fields.get("note"):
            line += f", {note}"
        line += f", {_clock(task.elapsed)} elapsed, ETA {_clock(task.time_remaining)}"
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def _clock(seconds: float | None) -> str:
    return "-:--:--" if seconds is None else str(timedelta(seconds=int(seconds)))
