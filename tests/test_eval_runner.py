"""`agemem eval` end to end: every method of ours on real questions with real models (the
in-process `tiny` model where only the plumbing is under test, SmolLM2-135M where the answers
matter), resume after a killed process, and one-line errors through the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from servers import free_port
from typer.testing import CliRunner

from agemem.env import policy_token_counter
from agemem.eval.cli import eval_command, report_command
from agemem.eval.methods.base import RunContext
from agemem.eval.methods.prompted import FullContextMethod
from agemem.eval.runner import EvalSettings, finished_episodes, run_eval
from agemem.policy.hf import HFPolicy
from agemem.tasks import ContextMessage, Question, Task

OURS = ("no-memory", "full-context", "rag", "agemem-norl", "agemem-rag", "atommem")


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    app.command("report")(report_command)
    return app


@pytest.mark.parametrize("method", OURS)
def test_each_method_runs_hotpotqa_questions_end_to_end(method, tmp_path):
    settings = EvalSettings("hotpotqa", method, policy="tiny", limit=2, max_new_tokens=6, t_max=512)
    results = run_eval(settings, tmp_path, progress=False)
    episodes = finished_episodes(tmp_path / "episodes.jsonl")
    assert [e.facts.method for e in episodes] == [method, method]
    assert results["n"] == 2 and results["metrics"]["n_questions"] == 2
    m = results["metrics"]
    assert 0.0 <= m["f1"] <= 1.0 and m["model_tokens_per_question"] > 0
    assert m["latency_p95_s"] >= m["latency_p50_s"] > 0
    assert all(e.steps for e in episodes)  # every model call is recorded for `agemem show`
    if method in ("no-memory", "full-context", "rag"):
        assert m["answered"] == 1.0 and m["prompt_tokens_mean"] > 0
    if method == "no-memory":  # the budget cuts HotpotQA's ~1,500-token transcript
        assert all(s.tokens <= 512 for e in episodes for s in e.steps)
    if method == "rag":
        assert m["tool_calls"] == {"rag/retrieve": 1.0} and "memory_quality" in m
    assert json.loads((tmp_path / "results.json").read_text())["method"] == method


def test_smollm2_answers_synthetic_questions_from_the_transcript(tmp_path):
    """The real small model reads the facts it is given: F1 above zero, tokens as measured."""
    settings = EvalSettings("synthetic", "no-memory", limit=4, batch_size=4)
    m = run_eval(settings, tmp_path, progress=False)["metrics"]
    assert m["f1"] > 0.1
    assert 100 < m["prompt_tokens_mean"] <= 256  # the synthetic budget


def test_the_llama_cpp_backend_serves_the_same_model_and_stops_its_server(tmp_path):
    """The same greedy run on both backends: llama.cpp serves SmolLM2's weights (the shipped
    GGUF), so its answers score like torch's; the server is gone when the run ends."""

    def run(backend: str) -> dict:
        settings = EvalSettings("synthetic", "no-memory", limit=4, batch_size=4, backend=backend)
        return run_eval(settings, tmp_path / backend, progress=False)

    before = _children()
    served, torch_run = run("llama.cpp"), run("torch")
    assert served["settings"]["backend"] == "llama.cpp" and "backend" not in torch_run["settings"]
    assert abs(served["metrics"]["f1"] - torch_run["metrics"]["f1"]) <= 0.25
    assert served["metrics"]["f1"] > 0.1
    assert _children() <= before  # no llama.cpp process left behind


def _children() -> set[int]:
    """This process's live children (Linux /proc)."""
    mine, found = str(os.getpid()), set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if fields[1] == mine and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def test_oracle_memory_stores_only_the_evidence_and_smollm2_answers_from_it(tmp_path):
    """The ceiling row: the oracle's memory work, the real small model's answers."""
    settings = EvalSettings("hotpotqa", "oracle-memory", limit=3, batch_size=3)
    m = run_eval(settings, tmp_path, progress=False)["metrics"]
    assert m["memory_quality"] == m["memory_recall"] == 1.0  # exactly the supporting facts
    assert m["answered"] == 1.0 and m["format_error_rate"] == 0.0
    assert m["tool_calls"]["Retrieve_memory"] == 1.0 and m["tool_calls"]["Filter_context"] > 0
    episodes = finished_episodes(tmp_path / "episodes.jsonl")
    answers = [e.facts.answers[0] for e in episodes]
    assert all(a and a != "I don't know." for a in answers)  # read from SmolLM2's replies


def test_rag_on_a_locomo_conversation_reports_categories_and_evidence_recall(tmp_path):
    settings = EvalSettings(
        "locomo",
        "rag",
        policy="tiny",
        limit=1,
        max_new_tokens=2,
        batch_size=64,
        options={"categories": (2, 3)},
    )
    m = run_eval(settings, tmp_path, progress=False)["metrics"]
    assert set(m["by_category"]) == {"temporal", "open-domain"}
    assert m["n_questions"] == sum(c["n"] for c in m["by_category"].values()) > 20
    assert 0.2 < m["evidence_recall"] < 1.0  # top-5 hybrid search finds some evidence


def test_full_context_cuts_a_conversation_once_and_reuses_its_kv_across_questions(embedder):
    """All of a task's questions see the same transcript, cut for the longest question, so the
    policy's prefix cache computes the transcript's KV once: on LoCoMo with SmolLM2 one 8k-token
    prefill, not one per question (a cut per question split conversation 1 in two)."""
    policy = HFPolicy.from_pretrained("tiny", max_new_tokens=2, temperature=0)
    ctx = RunContext(policy, embedder, policy_token_counter(policy), t_max=512, model_context=512)
    lines = [ContextMessage(f"note {i}: ann moved the red box to room {i}.") for i in range(60)]
    questions = [Question("where?", ("room 59",)), Question("where " + "is it " * 40, ("x",))]
    task = Task("t", "custom", lines, [], questions * 4)
    episode = FullContextMethod().run([task], ctx)[0]
    shown = {s.messages[-1]["content"].rsplit("\n\nQuestion: ", 1)[0] for s in episode.steps}
    assert len(shown) == 1  # one cut for every question
    assert "room 59" in shown.pop() and len(episode.steps) == 8
    assert max(s.tokens for s in episode.steps) <= 512 - FullContextMethod().reserve
    assert policy.stats.cached_share > 0.6


def _kill_when(path: Path, lines: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file() and path.read_text().count("\n") >= lines:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        time.sleep(0.05)
    raise AssertionError("the run ended before it could be killed; make it longer")


def _table(directory: Path) -> dict:
    """A run's metrics without its wall times (those differ between any two runs)."""
    metrics = json.loads((directory / "results.json").read_text())["metrics"]
    return {k: v for k, v in metrics.items() if not k.startswith("latency")}


def _tiny_run(limit: int, batch_size: int) -> tuple[list[str], EvalSettings, dict[str, str]]:
    """A short run of the tiny policy as agemem-norl on synthetic tasks: its `agemem eval`
    command line (without --out), the same run's settings (for the uninterrupted run in this
    process) and a one-thread environment for its processes."""
    settings = EvalSettings(
        "synthetic", "agemem-norl", policy="tiny", limit=limit, batch_size=batch_size,
        max_new_tokens=12,
    )  # fmt: skip
    command = [
        sys.executable, "-m", "agemem.eval", "eval", "--benchmark", settings.benchmark,
        "--method", settings.method, "--policy", "tiny", "--limit", str(limit),
        "--batch-size", str(batch_size), "--max-new-tokens", str(settings.max_new_tokens),
    ]  # fmt: skip
    return command, settings, {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_killed_run_resumes_to_the_same_table(tmp_path):
    command, settings, env = _tiny_run(limit=4, batch_size=1)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen([*command, "--no-progress", "--out", str(killed)], env=env)
    _kill_when(killed / "episodes.jsonl", 2, process)
    with (killed / "episodes.jsonl").open("a") as f:
        f.write('{"task_id": "cut sh')  # as if killed in the middle of a write
    saved = len(finished_episodes(killed / "episodes.jsonl"))
    assert 2 <= saved < 4
    resumed = subprocess.run(
        [*command, "--out", str(killed)], env=env, check=True, capture_output=True, text=True
    )
    # Piped output is not a terminal: the bar prints plain lines, from the resume point to the end.
    assert f"synthetic / agemem-norl: {saved}/4 questions, " in resumed.stdout
    # The last line also counts the resumed run's model calls (its liveness within a batch).
    assert re.search(
        r"synthetic / agemem-norl: 4/4 questions, [1-9]\d* model calls, ", resumed.stdout
    )
    run_eval(settings, whole, progress=False)  # the uninterrupted run, in this process

    assert _table(killed) == _table(whole)
    assert len(finished_episodes(killed / "episodes.jsonl")) == 4


def test_a_run_killed_inside_its_batch_asks_the_model_only_what_it_had_not(tmp_path):
    """Episodes are saved per batch; the journal keeps the calls of the batch being run, so a
    run killed inside it (one LoCoMo conversation is one batch of hours) replays them and
    ends with the episodes of an uninterrupted run."""
    command, settings, env = _tiny_run(limit=4, batch_size=4)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen([*command, "--no-progress", "--out", str(killed)], env=env)
    _kill_when(killed / "journal.jsonl", 4, process)
    assert not finished_episodes(killed / "episodes.jsonl")  # the batch had not ended
    journaled = (killed / "journal.jsonl").read_text().count("\n") - 1  # whole calls, no header
    resumed = subprocess.run(
        [*command, "--out", str(killed)], env=env, check=True, capture_output=True, text=True
    )
    replayed = re.findall(
        r"4/4 questions, [\d,]+ model calls \(([\d,]+) replayed\)", resumed.stdout
    )
    assert replayed and int(replayed[-1].replace(",", "")) >= journaled >= 3
    assert not (killed / "journal.jsonl").exists()  # removed once every batch is saved
    run_eval(settings, whole, progress=False)

    def untimed(directory: Path) -> list[str]:
        """Episodes without wall times, and without logprobs: those differ in their last float
        bits between processes."""
        episodes = finished_episodes(directory / "episodes.jsonl")
        for episode in episodes:
            episode.facts.seconds = []
            for step in episode.steps:
                step.logprobs = []
        return [e.to_line() for e in episodes]

    assert untimed(killed) == untimed(whole)


def test_shards_run_side_by_side_and_gather_to_the_table_of_one_run(tmp_path):
    """Two processes split a run's batches (one task each here, the first already in DIR); the
    run without --shard then gathers their episodes, asks the model nothing, and writes the
    table of the run in one process."""
    command, settings, env = _tiny_run(limit=5, batch_size=1)
    command.append("--no-progress")
    sharded, whole = tmp_path / "sharded", tmp_path / "whole"
    subprocess.run([*command, "--limit", "1", "--out", str(sharded)], env=env, check=True)
    shards = [
        subprocess.Popen([*command, "--shard", f"{i}/2", "--out", str(sharded)], env=env)
        for i in range(2)
    ]
    assert [shard.wait() for shard in shards] == [0, 0]
    ids = {
        i: [
            e.task_id
            for e in finished_episodes(sharded / "shards" / f"{i}-of-2" / "episodes.jsonl")
        ]
        for i in range(2)
    }
    first = finished_episodes(sharded / "episodes.jsonl")[0].task_id
    run_eval(settings, whole, progress=False)
    order = [e.task_id for e in finished_episodes(whole / "episodes.jsonl")]
    assert first == order[0] and ids == {0: order[2::2], 1: order[1::2]}
    saved = {
        e.to_line()
        for path in [sharded / "episodes.jsonl", *sharded.glob("shards/*/episodes.jsonl")]
        for e in finished_episodes(path)
    }
    run_eval(settings, sharded, progress=False)
    gathered = finished_episodes(sharded / "episodes.jsonl")
    assert {e.to_line() for e in gathered} == saved and len(gathered) == 5  # none asked again

    assert _table(sharded) == _table(whole)
    shard_results = json.loads((sharded / "shards" / "1-of-2" / "results.json").read_text())
    assert shard_results["n"] == 2  # a shard's directory is a run of its own tasks


def test_an_interactive_run_resumes_from_its_saved_batches(tmp_path):
    """BabyAI plays in batches of 8 worlds: a run stopped after its first batch (limit 8, then
    extended to 10) plays only the last two worlds and ends with the table of a run in one go."""
    pytest.importorskip("minigrid")
    settings = dict(policy="tiny", max_new_tokens=8)
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    run_eval(EvalSettings("babyai", "no-memory", limit=8, **settings), resumed, progress=False)
    first = (resumed / "episodes.jsonl").read_text()
    run_eval(EvalSettings("babyai", "no-memory", limit=10, **settings), resumed, progress=False)
    assert (resumed / "episodes.jsonl").read_text().startswith(first)  # the 8 were kept
    run_eval(EvalSettings("babyai", "no-memory", limit=10, **settings), whole, progress=False)
    episodes = finished_episodes(resumed / "episodes.jsonl")
    assert [e.task_id for e in episodes] == [
        e.task_id for e in finished_episodes(whole / "episodes.jsonl")
    ]
    assert len({e.task_id for e in episodes}) == 10

    assert _table(resumed) == _table(whole)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "nope", "--method", "rag"], "unknown benchmark 'nope'; choose one of"),
        (["--benchmark", "hotpotqa", "--method", "nope"], "unknown method 'nope'; choose one of"),
        (
            ["--benchmark", "hotpotqa", "--method", "agemem", "--policy", "smollm2-135m"],
            "pass --policy CHECKPOINT_DIR",
        ),
        (["--benchmark", "hotpotqa", "--method", "rag", "--limit", "0"], "--limit must be >= 1"),
        (["--benchmark", "hotpotqa", "--method", "rag", "--shard", "2/2"], "needs 0 <= I < N"),
        (["--benchmark", "hotpotqa", "--method", "rag", "--shard", "half"], "--shard takes I/N"),
        (
            [
                "--benchmark",
                "synthetic",
                "--method",
                "rag",
                "--policy",
                "tiny",
                "--limit",
                "1",
                "--shard",
                "1/2",
            ],
            "shard 1/2 has no batch of tasks; use fewer shards",
        ),  # fmt: skip
        (["--benchmark", "babyai", "--method", "rag"], "agemem.agentic"),
        (["--benchmark", "alfworld", "--method", "rag"], "alfworld-download"),
        (
            ["--benchmark", "hotpotqa", "--method", "rag", "--policy", "no-such-model"],
            "cannot load model 'no-such-model'",
        ),
        (["--benchmark", "hotpotqa", "--method", "rag", "--backend", "gpu"], "unknown backend"),
        (
            [
                "--benchmark",
                "synthetic",
                "--method",
                "rag",
                "--limit",
                "1",
                "--no-progress",
                "--model",
                "m",
                "--base-url",
                f"http://127.0.0.1:{free_port()}/v1",
            ],
            "start the server or fix base_url; finished questions are kept, rerun the command",
        ),  # a model server that is down (or killed midway): one line, the run resumable
        (
            [
                "--benchmark",
                "synthetic",
                "--method",
                "rag",
                "--policy",
                "tiny",
                "--backend",
                "llama.cpp",
            ],
            "--backend llama.cpp cannot serve 'tiny'",
        ),  # fmt: skip
    ],
)
def test_user_errors_are_one_line(args, message, tmp_path, monkeypatch):
    if "babyai" in args and _agentic_present():
        pytest.skip("agemem.agentic is installed here")
    if "alfworld" in args:
        if not _agentic_present():
            pytest.skip("agemem.agentic is not installed here")
        monkeypatch.delenv("ALFWORLD_DATA", raising=False)  # this machine has no ALFWorld games
    result = CliRunner().invoke(_app(), ["eval", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert message in result.output and result.output.count("\n") == 1


def _agentic_present() -> bool:
    try:
        from agemem.agentic import run_benchmark  # noqa: F401
    except ImportError:
        return False
    return True


def test_missing_data_changed_settings_and_bad_dirs_name_the_fix(tmp_path, monkeypatch):
    app, runner = _app(), CliRunner()
    monkeypatch.setenv("AGEMEM_LOCOMO", str(tmp_path / "absent.json"))
    result = runner.invoke(app, ["eval", "--benchmark", "locomo", "--method", "rag",
                                 "--policy", "tiny", "--out", str(tmp_path / "l")])  # fmt: skip
    assert result.exit_code == 1 and "snap-research/LoCoMo" in result.output
    base = ["eval", "--benchmark", "synthetic", "--method", "rag", "--policy", "tiny",
            "--limit", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "s")]  # fmt: skip
    assert runner.invoke(app, base).exit_code == 0
    result = runner.invoke(app, [*base, "--top-k", "3"])
    assert result.exit_code == 1 and "holds a run with top_k=5, not 3" in result.output
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, [*base[:-1], str(tmp_path / "file")])
    assert result.exit_code == 1 and "is a file; pass a directory" in result.output
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "has no results.json" in result.output
