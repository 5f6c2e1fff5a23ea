"""`agemem bench grpo-step`: one real GRPO step on AgeMem HotpotQA episodes, path by path.

A step is what `agemem train --preset smollm2-hotpotqa` runs: 4 HotpotQA training tasks x 4
rollouts in the `compact` env (Filter and Summary offered in stages 2 and 3), AgeMem's composite
reward, group advantages, and one update with the KL to the adapters-off reference. The model is
the shipped SFT policy (`smollm2-135m-agemem-sft`, what that preset's GRPO starts from, so the
episodes are those training sees: tool calls that run, memories stored, answers given; a base
model that writes no valid call makes episodes of a different length and content). Each path is
a set of trainer settings, run in its own process (so its peak memory is its own), one after the
other in the same run, from the same model, tasks and seed:

- `old`: the trainer as it was: rollouts by `HFPolicy` in lockstep, float32 everywhere, every
  row's prompt run whole, the sampler's logprobs as the old ones;
- `new`: rollouts by the llama.cpp server (the current weights handed over, the episodes
  streamed to its slots), bf16 autocast for the training forward passes, each micro-batch's
  shared prompt prefix run once (policy and reference passes), old log-probs recomputed by the
  first pass.

Reported per path: `step_s`, `rollout_s`, `logprob_s` (the reference passes; the old log-probs
cost nothing on either path: the sampler's, or the first pass's own), `update_s` (the whole
update, reference passes included), generated tokens per second in the rollout and trained per
second in the update, `peak_rss_mb` (the largest resident memory of the trainer and its child
processes together, the llama.cpp server on the new path, sampled every 0.2 s; each process's own
peak is reported too: `trainer_peak_rss_mb`, `server_peak_rss_mb`), and the step's reward. The
machine's load is recorded before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
from typing import Any

import psutil

PATHS: dict[str, list[str]] = {
    "old": ["run.precision=fp32", "run.share_prefix=false", "old_logprobs=sampler"],
    "new": [
        "rollout=llama.cpp",
        "run.precision=bf16-autocast",
        "run.share_prefix=true",
        "old_logprobs=recompute",
    ],
}
STEP = [  # one step of 4 HotpotQA tasks x 4 rollouts from the shipped SFT policy, nothing else
    "model.name=smollm2-135m-agemem-sft",
    "tasks={source: hotpotqa, options: {}}",
    "env.preset=compact",
    "reward.preset=agemem",
    "tasks_per_step=4",
    "k=4",
    "steps=1",
    "curriculum=[]",
    "eval.n_tasks=0",
    "run.save_every=0",
    "run.progress=false",
    "run.tensorboard=false",
    "resume=false",
]


def one_path(preset: str, path: str, overrides: list[str]) -> dict[str, Any]:
    """Run one GRPO step with `path`'s settings in this process; its measurements."""
    from agemem.train.config import load_config
    from agemem.train.grpo import run_grpo

    with tempfile.TemporaryDirectory() as out, TreePeak() as tree:
        settings = [*STEP, f"run.out_dir={out}", *PATHS[path], *overrides]
        config = load_config(preset, settings, kind="grpo")
        metrics = run_grpo(config).metrics
    trainer_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    server_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # llama.cpp's
    return {
        "step_s": round(metrics["step_s"], 1),
        "rollout_s": round(metrics["rollout_s"], 1),
        "logprob_s": round(metrics.get("update/reference_s", 0.0), 1),
        "update_s": round(metrics["update_s"], 1),
        "rollout_tokens_per_s": round(metrics["rollout/tokens_per_s"], 2),
        "update_tokens_per_s": round(metrics["update/tokens_per_s"], 2),
        "generated_tokens": metrics["rollout/generated_tokens"],
        "forward_tokens": metrics["update/forward_tokens"],
        "turns": metrics["rollout/turns"],
        "reward_mean": round(metrics["rollout/reward_mean"], 4),
        "peak_rss_mb": round(tree.peak / 2**20, 1),
        "trainer_peak_rss_mb": round(trainer_mb, 1),
        "server_peak_rss_mb": round(server_mb, 1),
        "settings": PATHS[path] + overrides,
    }


class TreePeak:
    """The largest sum of resident memory of this process and its descendants, sampled every
    `interval` seconds in a thread while the block runs (`peak`, bytes)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak = interval, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while True:
            total = 0
            for process in [me, *me.children(recursive=True)]:
                # a child may exit between the listing and the read
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak = max(self.peak, total)
            if self._done.wait(self.interval):
                return


def run_grpo_step_bench(
    preset: str, paths: list[str], overrides: list[str] | None = None
) -> dict[str, Any]:
    """Every path of `paths` in its own process, in order; {"old": {...}, "new": {...}, ...}."""
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise ValueError(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    for path in paths:
        command = [sys.executable, "-m", "agemem.bench.grpo_step", preset, path]
        done = subprocess.run(
            command + list(overrides or []), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"path {path!r} failed: {last}")
        results[path] = json.loads(done.stdout.strip().splitlines()[-1])
    if "old" in results and "new" in results:
        results["speedup"] = round(results["old"]["step_s"] / results["new"]["step_s"], 2)
    results["load_after"] = os.getloadavg()
    results["preset"] = preset
    results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    return results


if __name__ == "__main__":
    print(json.dumps(one_path(sys.argv[1], sys.argv[2], sys.argv[3:])))
