"""Episode records: JSONL round trips of real episodes, and clear errors for bad lines."""

from __future__ import annotations

import json

import pytest

from agemem.env import PRESETS, run_episodes
from agemem.env.oracle import Oracle
from agemem.episode import (
    Episode,
    EpisodeFileError,
    exact_match,
    load_episodes,
    save_episodes,
)
from agemem.tasks import load_tasks


@pytest.fixture(scope="module")
def episodes(embedder):
    tasks = load_tasks("synthetic", limit=2)
    oracle = Oracle(seed=3)
    runs = run_episodes(oracle, tasks, PRESETS["synthetic"], progress=False, embedder=embedder)
    # Token ids and logprobs as a model backend would fill them, to round-trip them too.
    for step in runs[0].steps:
        step.prompt_ids = list(range(10 + step.turn))
        step.completion_ids = [7, 8, 9]
        step.logprobs = [-0.5, -1.25, -0.125]
    runs[0].reward = {"total": 0.75, "task": 1.0}
    return runs


def test_jsonl_round_trip_restores_every_step_exactly(episodes, tmp_path):
    path = tmp_path / "runs" / "episodes.jsonl"
    assert save_episodes(episodes, path) == 2
    assert load_episodes(path) == episodes
    assert len(path.read_text().splitlines()) == 2
    save_episodes(episodes[:1], path, append=True)
    assert len(load_episodes(path)) == 3


def test_steps_store_contexts_as_deltas(episodes):
    line = json.loads(episodes[0].to_line())
    naive = sum(len(json.dumps(s.messages)) for s in episodes[0].steps)
    stored = sum(len(json.dumps(s["messages_new"])) for s in line["steps"])
    assert stored < naive / 3
    assert line["steps"][1]["messages_shared"] >= 1  # the system prompt at least


def good_line(episodes) -> dict:
    return json.loads(episodes[0].to_line())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not JSON"),
        (lambda d: json.dumps([1, 2]), "expected a JSON object"),
        (lambda d: json.dumps({**d, "format": 99}), "not an agemem episode"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "task_id"}), "task_id"),
        (lambda d: json.dumps({**d, "facts": {**d["facts"], "rounds": "many"}}), "facts.rounds"),
        (
            lambda d: json.dumps({**d, "steps": [{**d["steps"][0], "messages_shared": 5}]}),
            "messages_shared=5 but the previous step has 0",
        ),
        (
            lambda d: json.dumps({**d, "steps": [{**d["steps"][0], "prompt_ids_new": None}]}),
            "prompt_ids_shared (int) and prompt_ids_new (list) are required",
        ),
    ],
)
def test_a_bad_line_is_a_one_line_error_naming_the_line(episodes, tmp_path, mutate, message):
    path = tmp_path / "bad.jsonl"
    good = episodes[0].to_line()
    path.write_text(f"{good}\n\n{mutate(good_line(episodes))}\n")
    with pytest.raises(EpisodeFileError) as err:
        load_episodes(path)
    text = str(err.value)
    assert text.startswith(f"{path}:3: ") and message in text and "\n" not in text


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(EpisodeFileError, match="save_episodes"):
        load_episodes(tmp_path / "none.jsonl")


def test_correct_uses_squad_normalisation(episodes):
    episode = episodes[0].model_copy(deep=True)
    gold = episode.facts.questions[0].answers[0]
    episode.facts.answers = [f"The {gold.upper()}."]
    assert episode.correct() == [True]
    episode.facts.answers = [None]
    assert episode.correct() == [False]
    assert exact_match("an apple", ["Apple"]) and not exact_match("apples", ["apple"])


def test_steps_record_parsed_actions_and_observations(episodes):
    step = next(s for s in episodes[1].steps if s.actions.tool_calls)
    call = step.actions.tool_calls[0]
    assert f'"name": "{call.name}"' in step.text and step.actions.think in step.text
    assert len(step.observations) == len(step.actions.tool_calls)
    assert step.observations[0].name == call.name and step.observations[0].error is None
    assert Episode.from_line(episodes[1].to_line()) == episodes[1]
