"""Lockstep against streamed rollouts through the llama.cpp server, on real HotpotQA episodes.

The shipped policy (`smollm2-135m-agemem`, its weights written as a q8_0 GGUF and served with
16 slots) runs `--tasks` HotpotQA training tasks x 4 rollouts in the `compact` env at
temperature 1, twice each way, alternated (lockstep, streamed, lockstep, streamed), from one
server:

- lockstep: `run_episodes` sends every live episode's context in one `act` call per step (one
  call per stage group) and waits for the slowest turn of the batch;
- streamed: `run_episodes(in_flight=16)` sends each episode's next context alone as soon as its
  last turn is back; the server's continuous batching mixes them.

Reported per run: seconds, generated tokens, turns, generated tokens per second; the load of the
machine before and after (absolute times move with it; compare the pairs).

    python benchmarks/rollout_streaming.py --json benchmarks/results/rollout_streaming.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from agemem.env import PRESETS, run_episodes
from agemem.policy.hf import HFPolicy
from agemem.policy.server import serve_hf_policy
from agemem.tasks import load_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4, help="HotpotQA train tasks (x 4 rollouts)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    policy = HFPolicy.from_pretrained(
        "smollm2-135m-agemem", max_new_tokens=256, temperature=1.0, seed=0
    )
    tasks = load_tasks("hotpotqa", split="train", limit=args.tasks)
    config = PRESETS["compact"]
    out: dict = {
        "policy": "smollm2-135m-agemem",
        "tasks": args.tasks,
        "k": 4,
        "slots": 16,
        "load_start": os.getloadavg(),
    }
    with serve_hf_policy(policy, n_parallel=16, context=8192, seed=0) as server:
        run_episodes(server, tasks[:1], config.with_(n_max=1), progress=False)  # warm-up
        for mode in ["lockstep", "streamed", "lockstep", "streamed"]:
            server.reseed(1)
            start = time.perf_counter()
            episodes = run_episodes(
                server,
                tasks,
                config,
                k=4,
                progress=False,
                seed=1,
                in_flight=16 if mode == "streamed" else None,
            )
            seconds = time.perf_counter() - start
            generated = sum(len(s.completion_ids) for e in episodes for s in e.steps)
            run = {
                "s": round(seconds, 1),
                "generated_tokens": generated,
                "turns": sum(len(e.steps) for e in episodes),
                "tokens_per_s": round(generated / seconds, 1),
                "load": os.getloadavg(),
            }
            out.setdefault(mode, []).append(run)
            print(mode, run, flush=True)
    out["speedup_per_pair"] = [
        round(a["s"] / b["s"], 2) for a, b in zip(out["lockstep"], out["streamed"], strict=True)
    ]
    out["load_end"] = os.getloadavg()
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
