"""`run_eval`: one method on one benchmark, resumable, into one directory.

`DIR/run.json` records what the run is (benchmark, method, model, settings); a later call with
other settings is refused rather than mixed in. Episodes are appended to `DIR/episodes.jsonl` as
each batch of tasks finishes, so a killed run continues where it stopped: finished task ids are
skipped (a line cut short by the kill is dropped), and the batch it was in replays the model
calls `DIR/journal.jsonl` kept of it (`agemem.eval.journal`) before the model takes over, so
even a single long task (a LoCoMo conversation) resumes. Tasks go to the method in fixed batches of
`batch_size` (batch k is always tasks k*B .. k*B+B-1), so a resumed run asks the same batches as
an uninterrupted one; with greedy decoding (the default, `temperature=0`: evaluation should not
depend on a sampling stream) both give the same episodes. At the end `DIR/results.json` and
`DIR/results.md` are written from every episode of the requested tasks.

A run can be split over processes (or machines sharing DIR) with `Shard`: shard I of N runs
the batches k with k % N == I into DIR/shards/I-of-N/ (itself a run directory of those tasks),
skipping tasks DIR already holds; the same command without a shard then gathers every shard's
episodes into DIR, runs whatever no shard finished, and writes the table.

Interactive benchmarks go to `agemem.agentic.run_benchmark` in its fixed batches of worlds; each
finished batch is appended the same way, and a resumed run skips the episodes already saved.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agemem.episode import Episode
from agemem.eval.benchmarks import (
    BenchmarkError,
    BenchmarkSpec,
    agentic,
    get_benchmark,
    load_benchmark,
)
from agemem.eval.journal import TurnJournal
from agemem.eval.methods import METHODS, TRAINED_ONLY, make_method
from agemem.eval.methods.base import EvalMethod, RunContext
from agemem.eval.metrics import judge_episodes, run_metrics
from agemem.policy.base import Message, Policy, ToolSpec, Turn
from agemem.progress import LoggedProgress
from agemem.tasks import Task

EPISODES = "episodes.jsonl"
RUN = "run.json"
RESULTS = "results.json"
JOURNAL = "journal.jsonl"
SHARDS = "shards"
DEFAULT_MAX_NEW_TOKENS = 64  # for methods that do not say (ours)
BACKENDS = ("torch", "llama.cpp")


class EvalError(ValueError):
    """A run that cannot go ahead as asked; the one-line message names the fix."""


@dataclass(frozen=True)
class EvalSettings:
    """What defines a run. `None` fields take the benchmark's or the method's default."""

    benchmark: str
    method: str
    policy: str | None = "smollm2-135m"  # preset name or checkpoint directory
    base_url: str | None = None  # OpenAI-compatible server instead of a local model
    model: str | None = None  # the server's model name
    # A local model runs in torch ("torch": HFPolicy) or is served by llama.cpp ("llama.cpp":
    # the same weights written as GGUF, q8_0 for a fine-tuned base, one slot per episode of a
    # batch; SmolLM2-architecture models only). Ours: greedy turns match torch's on most
    # contexts, not all (quantized weights), so compare methods run on the same backend.
    backend: str = "torch"
    limit: int | None = None
    t_max: int | None = None
    batch_size: int | None = None
    max_new_tokens: int | None = None
    top_k: int = 5
    temperature: float = 0.0
    seed: int = 0
    judge: str | None = None  # preset or checkpoint directory of an LLM judge
    judge_base_url: str | None = None
    judge_model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # task-source options

    def identity(self) -> dict[str, Any]:
        """Everything but `limit`: a run may be extended to more tasks, never changed. The
        backend only when not torch, so that runs written before it was a setting resume."""
        skip = {"limit"} | ({"backend"} if self.backend == "torch" else set())
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass(frozen=True)
class Shard:
    """Part `index` of `count` of a run (0-based): every count-th batch of tasks, from batch
    `index` on. Whole batches, so that each task meets the same batch as in one process."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N`, as `agemem eval --shard` takes it."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise EvalError(f"--shard takes I/N (e.g. 0/2 and 1/2), got {text!r}") from None
        if not 0 <= index < count:
            raise EvalError(f"--shard I/N needs 0 <= I < N, got {text!r}")
        return cls(index, count)

    def directory(self, out: Path) -> Path:
        return out / SHARDS / f"{self.index}-of-{self.count}"

    def tasks(self, tasks: Sequence[Task], batch_size: int) -> list[Task]:
        """This shard's batches, in order; only the run's last batch may be short, so they
        split back into the same batches."""
        starts = range(self.index * batch_size, len(tasks), self.count * batch_size)
        return [task for start in starts for task in tasks[start : start + batch_size]]


def run_eval(
    settings: EvalSettings, out: str | Path, *, progress: bool = True, shard: Shard | None = None
) -> dict[str, Any]:
    """Run (or finish) `settings` into `out` (with `shard`, that part of it into
    `shard.directory(out)`); returns the results written to results.json there."""
    spec = get_benchmark(settings.benchmark)
    method = _method(settings)
    out = _prepare(Path(out), settings)
    if spec.interactive:
        if shard is not None:
            raise EvalError(f"--shard splits the QA benchmarks; run {spec.name} without it")
        tasks: list[Task] = []
        episodes = _run_interactive(spec, settings, out, progress)
    else:
        tasks = load_benchmark(spec, settings.limit, settings.options)
        if not tasks:
            raise EvalError(f"{spec.name} gave no tasks; raise --limit")
        earlier = finished_episodes(out / EPISODES, repair=shard is None)
        if shard is None:
            _gather_shards(out, settings, earlier)
            earlier = []  # the run's own file: _run_tasks reads it
        else:
            tasks = shard.tasks(tasks, _batch_size(spec, settings))
            if not tasks:
                raise EvalError(
                    f"shard {shard.index}/{shard.count} has no batch of tasks; use fewer shards"
                )
            out = _prepare(shard.directory(out), settings)
        episodes = _run_tasks(spec, method, settings, tasks, out, progress, earlier)
    results = {
        "benchmark": spec.name,
        "method": settings.method,
        "model": settings.model or settings.policy,
        "n": len(episodes),
        "metrics": run_metrics(episodes, tasks),
        "settings": settings.identity() | {"limit": settings.limit},
        "machine": _machine(),
    }
    (out / RESULTS).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    from agemem.eval.report import markdown_table

    (out / "results.md").write_text(markdown_table([results]) + "\n", encoding="utf-8")
    return results


# The model a method runs when none is named: the shipped trained policies for the trained
# rows, the embedded base model for every other method.
DEFAULT_POLICIES = {"agemem": "smollm2-135m-agemem", "agemem-sft": "smollm2-135m-agemem-sft"}


def default_policy(method: str) -> str:
    """The model `agemem eval --method METHOD` runs without --policy."""
    return DEFAULT_POLICIES.get(method, "smollm2-135m")


def _method(settings: EvalSettings) -> EvalMethod:
    if settings.method not in METHODS:
        raise EvalError(f"unknown method {settings.method!r}; choose one of {', '.join(METHODS)}")
    from agemem.policy.models import PRESETS

    shipped = settings.policy in PRESETS and PRESETS[settings.policy].kind == "policy"
    trained = (
        settings.base_url is not None
        or shipped
        or (settings.policy is not None and Path(settings.policy).is_dir())
    )
    if settings.method in TRAINED_ONLY and not trained:
        raise EvalError(
            f"{settings.method} evaluates a trained policy: pass --policy CHECKPOINT_DIR or a "
            "shipped one (smollm2-135m-agemem); agemem-norl runs the base model"
        )
    return make_method(settings.method)


def _prepare(out: Path, settings: EvalSettings) -> Path:
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} is a file; pass a directory (one per benchmark and method)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvalError(
            f"cannot create --out {out} ({err.strerror}); pass a writable directory"
        ) from None
    run_file, identity = out / RUN, settings.identity()
    if run_file.is_file():
        try:
            recorded = json.loads(run_file.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
            recorded = err
        if not isinstance(recorded, dict):
            raise EvalError(
                f"{run_file} is not a run file (a JSON object written by agemem eval); delete "
                "it to start this run over, or pass another --out"
            )
        changed = [k for k in identity if recorded.get(k) != identity[k]]
        if changed:
            k = changed[0]
            raise EvalError(
                f"{out} holds a run with {k}={recorded.get(k)!r}, not {identity[k]!r}; pass "
                "another --out, or the same settings to resume it"
            )
    else:  # whole or not at all: shards starting together read each other's
        written = run_file.with_name(f".{RUN}.{os.getpid()}")
        written.write_text(json.dumps(identity, indent=1) + "\n", encoding="utf-8")
        os.replace(written, run_file)
    return out


def _gather_shards(out: Path, settings: EvalSettings, episodes: Sequence[Episode]) -> None:
    """Append to DIR's episodes those of its shards it lacks (a shard still running keeps its
    file: its last line may be half written, so it is read, not repaired)."""
    have = {e.task_id for e in episodes}
    for directory in sorted((out / SHARDS).glob("*-of-*")):
        _prepare(directory, settings)  # refuses a shard of other settings
        new = [
            e
            for e in finished_episodes(directory / EPISODES, repair=False)
            if e.task_id not in have
        ]
        if new:
            _append(out / EPISODES, new)
        have |= {e.task_id for e in new}


def finished_episodes(path: Path, *, repair: bool = True) -> list[Episode]:
    """The episodes of a (maybe interrupted) run file. A last line cut short is skipped and,
    with `repair`, removed from the file (not for a file another process may be writing)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]  # the line being written when the run was killed
        if repair:
            path.write_bytes(data)
    episodes = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        try:
            episodes.append(Episode.from_line(line))
        except ValueError as err:
            raise EvalError(
                f"{path}:{number}: {err}; delete that line (or the file, to rerun all)"
            ) from None
    return episodes


def _append(path: Path, episodes: Sequence[Episode]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(e.to_line() + "\n" for e in episodes))
        f.flush()
        os.fsync(f.fileno())


def _run_tasks(
    spec: BenchmarkSpec,
    method: EvalMethod,
    settings: EvalSettings,
    tasks: list[Task],
    out: Path,
    progress: bool,
    earlier: Sequence[Episode] = (),
) -> list[Episode]:
    """`tasks` in batches into `out`, skipping those `out` or `earlier` (a shard's whole run)
    already holds; the episodes of `tasks`, in order."""
    path = out / EPISODES
    done = {e.task_id: e for e in [*earlier, *finished_episodes(path)]}
    batch = _batch_size(spec, settings)
    batches = [tasks[i : i + batch] for i in range(0, len(tasks), batch)]
    pending = [[t for t in b if t.id not in done] for b in batches]
    pending = [b for b in pending if b]
    if pending:
        ctx = _context(spec, method, settings)
        judge = _judge(settings)
        total = sum(len(t.questions) for t in tasks)
        with _closing(ctx.policy), _bar(progress) as bar:
            name = f"{spec.name} / {method.name}"
            if out.parent.name == SHARDS:
                name += f" [shard {out.name}]"
            job = bar.add_task(name, total=total, unit="questions", note="")
            bar.update(job, completed=sum(len(t.questions) for t in tasks if t.id in done))
            journal = TurnJournal(ctx.policy, out / JOURNAL)
            ctx = replace(ctx, policy=CountedCalls(journal, bar, job))
            for chunk in pending:
                journal.begin(" ".join(t.id for t in chunk))
                episodes = method.run(chunk, ctx)
                _charge_replayed(episodes, journal.replayed_seconds)
                if judge is not None:
                    judge_episodes(episodes, judge)
                _append(path, episodes)
                done |= {e.task_id: e for e in episodes}
                bar.advance(job, sum(len(t.questions) for t in chunk))
            journal.finish()
    return [done[t.id] for t in tasks]


@contextlib.contextmanager
def _closing(policy: Policy) -> Iterator[None]:
    """Stops a server-backed policy (llama.cpp) when the run ends, however it ends."""
    try:
        yield
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()


def _batch_size(spec: BenchmarkSpec, settings: EvalSettings) -> int:
    return settings.batch_size or spec.batch_size


def _charge_replayed(episodes: Sequence[Episode], seconds: float) -> None:
    """Add the wall time of the calls replayed from the journal, shared equally by the batch's
    questions: exact for the agent methods (they share a batch's time equally anyway), for the
    pipelines it moves time between the questions of one resumed batch."""
    share = seconds / max(sum(len(e.facts.seconds) for e in episodes), 1)
    for episode in episodes:
        episode.facts.seconds = [s + share for s in episode.facts.seconds]


@dataclass
class CountedCalls:
    """The run's policy, counting its model calls on the progress bar (`note`): results are
    saved per batch of tasks, and one LoCoMo conversation is one task of hundreds of calls, so
    without it a run's log would show nothing for most of an hour."""

    policy: TurnJournal
    bar: LoggedProgress
    job: TaskID
    calls: int = 0

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        turns = self.policy.act(contexts, tools)
        self.calls += len(contexts)
        replayed = f" ({self.policy.replayed:,} replayed)" if self.policy.replayed else ""
        self.bar.update(self.job, note=f"{self.calls:,} model calls{replayed}")
        return turns


def _bar(enabled: bool) -> LoggedProgress:
    return LoggedProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def _run_interactive(
    spec: BenchmarkSpec, settings: EvalSettings, out: Path, progress: bool
) -> list[Episode]:
    """Worlds in batches (`agemem.agentic.BATCH`), each batch's episodes appended as it ends;
    a resumed run skips the episodes already in the file (always whole batches, in task order)."""
    worlds = agentic()
    path = out / EPISODES
    done = finished_episodes(path)
    try:
        total = worlds.task_count(spec.name, settings.limit)
    except (ValueError, RuntimeError) as err:  # RuntimeError: a world's package or data is missing
        raise EvalError(f"{spec.name}: {err}") from None
    if len(done) >= total:
        return done[:total]
    ctx = _context(spec, None, settings)
    with _closing(ctx.policy), _bar(progress) as bar:
        job = bar.add_task(
            f"{spec.name} / {settings.method}",
            total=total,
            completed=len(done),
            unit="episodes",
            note="",
        )
        journal = TurnJournal(ctx.policy, out / JOURNAL)
        ctx = replace(ctx, policy=CountedCalls(journal, bar, job))
        saved = len(done)

        def save(episodes: list[Episode]) -> None:
            nonlocal saved
            _charge_replayed(episodes, journal.replayed_seconds)
            _append(path, episodes)
            bar.advance(job, len(episodes))
            saved += len(episodes)
            journal.begin(f"worlds from {saved}")

        journal.begin(f"worlds from {saved}")
        try:
            new = worlds.run_benchmark(
                spec.name, settings.method, ctx, settings.limit, skip=len(done), on_batch=save
            )
        except (ValueError, RuntimeError, OSError) as err:  # e.g. a world that cannot run here
            raise EvalError(f"{spec.name}: {str(err).splitlines()[0]}") from None
        journal.finish()
    return done + new


def _context(spec: BenchmarkSpec, method: EvalMethod | None, settings: EvalSettings) -> RunContext:
    from agemem.env import PRESETS, policy_token_counter
    from agemem.memory.embed import reference_embedder

    hint = getattr(method, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    batch_size = _batch_size(spec, settings)
    policy, window = _policy(settings, settings.max_new_tokens or hint, batch_size)
    t_max = settings.t_max or spec.t_max
    env = PRESETS[spec.env_preset].with_(**spec.env_overrides)
    return RunContext(
        policy=policy,
        embedder=reference_embedder(),
        token_counter=policy_token_counter(policy),
        t_max=t_max,
        top_k=settings.top_k,
        seed=settings.seed,
        progress=False,
        batch_size=batch_size,
        model_context=window,
        stage1_window=spec.stage1_window,
        env=env if env.t_max is None else env.with_(t_max=t_max),
    )


def _policy(settings: EvalSettings, max_new_tokens: int, slots: int) -> tuple[Policy, int | None]:
    """The policy (`slots` episodes at once on a llama.cpp backend), and its window in tokens
    (None when unknown: a server)."""
    if settings.backend not in BACKENDS:
        raise EvalError(f"unknown backend {settings.backend!r}; choose from {', '.join(BACKENDS)}")
    if settings.base_url and settings.backend != "torch":
        raise EvalError("--backend applies to a local model; drop it with --base-url")
    if settings.base_url:
        return _server(
            settings.base_url, settings.model, settings.temperature, max_new_tokens
        ), None
    if not settings.policy:
        raise EvalError("no model: pass --policy PRESET_OR_DIR or --base-url URL --model NAME")
    policy, window = _local(settings.policy, settings.temperature, max_new_tokens, settings.seed)
    if settings.backend == "torch":
        return policy, window
    from agemem.policy.gguf_export import ExportError
    from agemem.policy.openai import ServerError
    from agemem.policy.server import serve_hf_policy

    try:
        served = serve_hf_policy(
            policy, n_parallel=slots, context=window or 4096, seed=settings.seed
        )
    except (ExportError, ServerError) as err:
        raise EvalError(f"--backend llama.cpp cannot serve {settings.policy!r}: {err}") from None
    return served, window


def _server(url: str, model: str | None, temperature: float, max_new_tokens: int) -> Policy:
    from agemem.policy.openai import OpenAIPolicy

    if not model:
        raise EvalError(f"--base-url {url} needs --model NAME (the model the server serves)")
    return OpenAIPolicy(url, model, temperature=temperature, max_tokens=max_new_tokens)


def _local(
    name: str, temperature: float, max_new_tokens: int, seed: int
) -> tuple[Policy, int | None]:
    import torch

    from agemem.policy.hf import HFPolicy
    from agemem.policy.models import PRESETS, ModelNotAvailable

    path = Path(name)
    if (path / "state.json").is_file() and (path / "model").is_dir():
        path = path / "model"  # a trainer checkpoint directory: its model
    try:
        policy = HFPolicy.from_pretrained(
            name if name in PRESETS else path,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
    except (ModelNotAvailable, OSError, ValueError) as err:
        raise EvalError(f"cannot load model {name!r}: {str(err).splitlines()[0]}") from None
    window = PRESETS[name].max_context if name in PRESETS else None
    window = window or getattr(policy.model.config, "max_position_embeddings", None)
    return policy, window


def _judge(settings: EvalSettings) -> Policy | None:
    """The judge grades with greedy decoding and a few tokens (a number is all it writes)."""
    if settings.judge_base_url:
        return _server(settings.judge_base_url, settings.judge_model, 0.0, 8)
    if settings.judge:
        return _local(settings.judge, 0.0, 8, settings.seed)[0]
    return None


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


__all__ = ["BenchmarkError", "EvalError", "EvalSettings", "finished_episodes", "run_eval"]
