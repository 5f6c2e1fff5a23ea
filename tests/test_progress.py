"""`LoggedProgress`: plain lines with an ETA where rich cannot redraw (log files)."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from agemem.progress import LoggedProgress


def test_updates_minutes_apart_log_lines_with_an_eta():
    """A resumed eval: 8 of 24 questions saved, then batches of 8 every 5 minutes."""
    clock = [0.0]
    log = StringIO()
    with LoggedProgress(console=Console(file=log), get_time=lambda: clock[0]) as bar:
        job = bar.add_task("hotpotqa / rag", total=24, unit="questions")
        bar.update(job, completed=8)  # what an earlier run saved
        for _ in range(2):
            clock[0] += 300.0
            bar.advance(job, 8)
    lines = log.getvalue().splitlines()
    assert lines[0] == "hotpotqa / rag: 8/24 questions, 0:00:00 elapsed, ETA -:--:--"
    # Wall-clock throttling (LOG_EVERY_S) lets only the finishing update through here.
    assert lines[1] == "hotpotqa / rag: 24/24 questions, 0:10:00 elapsed, ETA 0:00:00"


def test_the_eta_comes_from_the_speed_since_the_resume():
    clock = [0.0]
    log = StringIO()
    bar = LoggedProgress(console=Console(file=log), get_time=lambda: clock[0], log_every_s=0)
    with bar:
        job = bar.add_task("eval", total=24, unit="questions")
        bar.update(job, completed=8)
        clock[0] += 300.0
        bar.advance(job, 8)  # 8 questions per 5 minutes, 8 to go
    assert "eval: 16/24 questions, 0:05:00 elapsed, ETA 0:05:00" in log.getvalue()
