"""One short episode of the real embedded model (SmolLM2-135M) in a text world with the memory
tools: whatever it writes, the episode runs, records token ids and logprobs, saves, loads back
and renders with `agemem show`."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

pytest.importorskip("minigrid", reason="BabyAI needs: pip install minigrid==3.2.0")

from agemem.agentic import LoopSettings, run_worlds  # noqa: E402
from agemem.agentic.babyai import BabyAIWorld  # noqa: E402
from agemem.episode import load_episodes, save_episodes  # noqa: E402
from agemem.policy.hf import HFPolicy  # noqa: E402
from agemem.policy.models import ModelNotAvailable  # noqa: E402
from agemem.show import show_file  # noqa: E402
from agemem.tokens import HFTokenCounter  # noqa: E402


@pytest.fixture(scope="module")
def policy():
    try:
        return HFPolicy.from_pretrained("smollm2-135m", max_new_tokens=24, seed=0)
    except ModelNotAvailable as err:
        pytest.skip(str(err))


def test_smollm2_plays_a_short_episode_that_saves_and_shows(policy, embedder, tmp_path):
    settings = LoopSettings("agemem", t_max=2048, max_turns=3)
    (episode,) = run_worlds(
        [lambda: BabyAIWorld("GoToRedBall", 0)],
        policy,
        settings,
        embedder=embedder,
        token_counter=HFTokenCounter(policy.tokenizer),
    )
    assert 1 <= len(episode.steps) <= 3 and episode.facts.ended_by in ("answered", "n_max")
    step = episode.steps[0]
    assert step.completion_ids and len(step.logprobs) == len(step.completion_ids)
    assert step.prompt_ids and step.observations  # every turn got an observation
    assert set(episode.reward) == {"success", "progress"}

    path = tmp_path / "smollm2_babyai.jsonl"
    save_episodes([episode], path)
    assert load_episodes(path) == [episode]
    out = io.StringIO()
    show_file(path, console=Console(file=out, width=120))
    assert "babyai/GoToRedBall-v0/seed0" in out.getvalue()
