"""`agemem show` on the example episodes (real runs, saved in examples/episodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from agemem.cli import app
from agemem.episode import load_episodes, save_episodes
from agemem.show import render_episode, show_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "episodes"
FILES = sorted(EXAMPLES.glob("*.jsonl"))


def rendered(path: Path, **options) -> str:
    console = Console(record=True, width=120, color_system=None)
    show_file(path, console=console, **options)
    return console.export_text()


AGENTIC = {"babyai", "pddl", "scienceworld", "twc"}


def test_there_is_an_example_per_family():
    families = {load_episodes(f)[0].family for f in FILES}
    assert families == {"synthetic", "hotpotqa", "hotpotqa-long", "locomo"} | AGENTIC
    assert any("tiny" in f.name for f in FILES)
    assert all(f.stat().st_size < 64_000 for f in FILES)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_each_example_renders_stages_outputs_answers_and_facts(path):
    episode = load_episodes(path)[0]
    text = rendered(path)
    assert episode.task_id in text
    names = ["stage 1: memory construction", "stage 3: question"]
    if episode.facts.method == "atommem":
        names = ["stage 1: reading chunks", "stage 2: answering"]
    if episode.family in AGENTIC:  # one interactive stage, shown by number
        names = ["stage 3"]
    assert all(name in text for name in names)
    assert f"turn {len(episode.steps) - 1} " in text and "model: " in text
    for question in episode.facts.questions:
        assert question.text[:40] in text and question.answers[0][:20] in text
    assert "facts" in text and f"rounds           │ {episode.facts.rounds}" in text


def test_new_context_is_shown_once_and_rewrites_are_flagged():
    path = EXAMPLES / "synthetic-oracle.jsonl"
    episode = load_episodes(path)[0]
    text = rendered(path)
    first_user = episode.steps[0].messages[1]["content"].splitlines()[0]
    assert text.count(first_user) == 1  # not repeated at every later turn
    assert "context rewritten" in text  # the stage-2 reset


def test_index_for_several_episodes_and_episode_choice(tmp_path):
    episodes = [load_episodes(f)[0] for f in FILES[:2]]
    path = tmp_path / "two.jsonl"
    save_episodes(episodes, path)
    index = rendered(path)
    assert "2 episodes" in index and "--episode" in index and "stage 1" not in index
    assert episodes[1].task_id in rendered(path, episode=1)
    with pytest.raises(IndexError, match="holds 2 episode"):
        show_file(path, 5, console=Console(record=True))


def test_full_shows_long_messages_whole():
    path = EXAMPLES / "hotpotqa-oracle.jsonl"
    episode = load_episodes(path)[0]
    console = Console(record=True, width=200, color_system=None)
    render_episode(episode, console, full=True)
    assert "more characters]" not in console.export_text()
    assert "more characters]" in rendered(path)


def test_cli_show_and_its_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(app, ["show", str(EXAMPLES / "synthetic-oracle.jsonl")])
    assert ok.exit_code == 0 and "stage 2: context under distractors" in ok.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": 1}\n')
    failed = runner.invoke(app, ["show", str(bad)])
    assert failed.exit_code == 1 and f"{bad}:1:" in failed.output
    missing = runner.invoke(
        app, ["show", str(EXAMPLES / "synthetic-oracle.jsonl"), "--episode", "3"]
    )
    assert missing.exit_code == 1 and "holds 1 episode(s)" in missing.output
