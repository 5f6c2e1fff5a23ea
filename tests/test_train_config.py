"""Training configs: presets, files in three formats, overrides, and errors that name the field."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from agemem.tasks import TaskError, load_tasks
from agemem.train.config import (
    PRESETS,
    ConfigError,
    GRPOConfig,
    PipelineConfig,
    apply_overrides,
    load_config,
)
from agemem.train.curriculum import (
    Phase,
    env_config,
    load_split,
    mix_counts,
    phase_at,
    progressive,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "train"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_file_is_its_preset(name):
    """configs/train/<preset>.toml is the editable copy of the preset: they must not drift."""
    assert load_config(CONFIGS / f"{name}.toml") == load_config(name)


def test_yaml_and_json_files_load_like_toml(tmp_path):
    data = {"grpo": {"steps": 7, "optim": {"lr": 0.001}, "model": {"lora": {"r": 4}}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    from_yaml, from_json = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.json")
    assert from_yaml == from_json
    assert from_yaml.grpo.steps == 7 and from_yaml.grpo.model.lora.r == 4
    assert from_yaml.grpo.optim.grad_clip == 1.0  # the section's other fields keep defaults
    assert from_yaml.sft == PipelineConfig().sft


def test_overrides_use_dotted_keys_and_yaml_values():
    config = load_config(
        "quickstart",
        ["grpo.k=4", "grpo.model.lora={r: 8, alpha: 16}", "grpo.resume=true", "sft.min_reward=0.5"],
    )
    assert config.grpo.k == 4 and config.grpo.model.lora.alpha == 16
    assert config.grpo.resume is True and config.sft.min_reward == 0.5
    assert config.grpo.beta == load_config("quickstart").grpo.beta  # untouched fields stay
    grpo = load_config("quickstart", ["steps=2"], kind="grpo")
    assert isinstance(grpo, GRPOConfig) and grpo.steps == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.stepz=3"], "grpo.stepz"),
        (["grpo.k=1"], "grpo.k"),
        (["grpo.optim.lr=-1"], "grpo.optim.lr"),
        (["grpo"], "not key=value"),
        (["grpo.steps.x=1"], "is a value"),
    ],
)
def test_bad_settings_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("quickstart", overrides)


def test_precision_is_fp32_or_bf16_autocast():
    assert load_config("quickstart").grpo.run.precision == "fp32"  # the default
    config = load_config("quickstart", ["sft.run.precision=bf16-autocast"])
    assert config.sft.run.precision == "bf16-autocast" and config.grpo.run.precision == "fp32"
    with pytest.raises(ConfigError) as err:
        load_config("quickstart", ["grpo.run.precision=bf16"])
    message = str(err.value)
    assert "grpo.run.precision" in message and "bf16-autocast" in message
    assert "\n" not in message


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "c.ini").write_text("x=1")
    with pytest.raises(ConfigError, match="unknown config format"):
        load_config(tmp_path / "c.ini")
    (tmp_path / "c.toml").write_text("[grpo\nsteps = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")


def test_apply_overrides_leaves_the_input_alone():
    data = {"a": {"b": 1}}
    assert apply_overrides(data, ["a.b=2", "a.c=x"]) == {"a": {"b": 2, "c": "x"}}
    assert data == {"a": {"b": 1}}


def test_curriculum_phases_follow_each_other_and_shape_tasks_and_env():
    phases = progressive(30)
    assert [p.steps for p in phases] == [10, 10, 10]
    assert [phase_at(phases, s)[1].name for s in (0, 9, 10, 29, 99)] == [
        "memory", "memory", "context", "integrated", "integrated",
    ]  # fmt: skip
    assert phase_at([], 5) == (0, None)
    memory, context = phases[0], phases[1]
    assert env_config("synthetic", {}, memory).t_max_margin == 1000
    assert env_config("synthetic", {"budget_stages": [3]}).budget_stages == (3,)
    options = {"preset": "default", **context.tasks}
    (task,) = load_split("synthetic", options, "train", 1, seed=0)
    assert len(task.distractors) == 8 and task.metadata["t_max"] == 76
    with pytest.raises(ValueError):
        Phase(name="x", steps=0)


def test_cli_reports_a_bad_override_in_one_line():
    from typer.testing import CliRunner

    from agemem.cli import app

    result = CliRunner().invoke(app, ["train", "--set", "grpo.stepz=3"])
    assert result.exit_code == 2
    assert "grpo.stepz" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["sft", "--preset", "nope.toml"])
    assert result.exit_code == 2 and "no such config file" in result.output


def test_a_mix_draws_each_source_by_its_weight_and_keeps_the_test_splits_apart():
    parts = [
        {"source": "hotpotqa", "weight": 0.6},
        {"source": "locomo", "weight": 0.25},
        {"source": "synthetic", "weight": 0.15, "options": {"preset": "default"}},
    ]
    tasks = load_split("mix", {"parts": parts}, "train", 40, seed=3)
    families = Counter(t.family for t in tasks)
    assert families == {"hotpotqa": 24, "locomo": 10, "synthetic": 6}
    assert tasks == load_split("mix", {"parts": parts}, "train", 40, seed=3)  # reproducible
    assert [t.family for t in tasks] != sorted(t.family for t in tasks)  # shuffled together
    assert all(t.metadata.get("sample_id") != "conv-26" for t in tasks)  # LoCoMo's test
    test_ids = {t.id for t in load_tasks("hotpotqa", split="test")}
    assert not test_ids & {t.id for t in tasks}
    assert mix_counts([1, 1, 1], 4) == [2, 1, 1]
    with pytest.raises(TaskError, match="parts"):
        load_split("mix", {"sources": parts}, "train", 4)
    with pytest.raises(TaskError, match="weight"):
        load_split("mix", {"parts": [{"source": "hotpotqa", "weight": 0}]}, "train", 4)


def test_smollm2_atommem_trains_on_the_env_its_benchmark_runs_and_never_on_its_test_split():
    """The AtomMem preset's env is the one `agemem eval --benchmark hotpotqa-long` builds (its
    budget, chunks and top-k), and its training pools hold no test question."""
    from agemem.eval.benchmarks import get_benchmark
    from agemem.eval.methods.agent import atommem_config

    config = load_config("smollm2-atommem")
    spec = get_benchmark("hotpotqa-long")
    for stage in (config.sft, config.grpo):
        trained = env_config(stage.env.preset, stage.env.overrides)
        assert trained == atommem_config(spec.t_max, top_k=5)  # eval's default --top-k
        assert stage.reward.preset == "atommem" and stage.tasks.source == "hotpotqa-long"
    train = load_split("hotpotqa-long", config.sft.tasks.options, "train", 40)
    test = load_tasks("hotpotqa-long", split="test", limit=40, n_docs=200)
    asked = {q for t in test for q in t.metadata["question_ids"]}
    assert asked and not asked & {q for t in train for q in t.metadata["question_ids"]}
