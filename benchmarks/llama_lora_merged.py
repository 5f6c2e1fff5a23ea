"""Rollouts through the llama.cpp server with the LoRA adapter applied at run time against merged
into the served GGUF (`LlamaCppPolicy(lora="runtime" | "merged")`).

The shipped SFT policy (`smollm2-135m-agemem-sft`) wrapped in a fresh rank-16 all-linear LoRA
(B drawn small, std 1e-4, so the adapter is not a no-op), `--tasks` HotpotQA train tasks x 4
rollouts in the `compact` env, temperature 1, 8 slots, streamed (`in_flight=8`), alternated
(runtime, merged, runtime, merged), a fresh server each run. Reported per run: seconds, generated
tokens and tokens per second, the sync's kind and seconds, the load average.

    python benchmarks/llama_lora_merged.py --json benchmarks/results/llama_lora_merged.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from agemem.env import PRESETS, run_episodes
from agemem.policy.models import PRESETS as MODELS
from agemem.policy.models import load_model, package_file
from agemem.policy.server import LlamaCppPolicy
from agemem.tasks import load_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2, help="HotpotQA train tasks (x 4 rollouts)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    model, tokenizer = load_model("smollm2-135m-agemem-sft")
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    peft = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 1e-4)
    tasks = load_tasks("hotpotqa", split="train", limit=args.tasks)
    out: dict = {"tasks": args.tasks, "k": 4, "slots": 8, "load_start": os.getloadavg()}
    for mode in ["runtime", "merged", "runtime", "merged"]:
        gguf = package_file(MODELS["smollm2-135m"].source)
        with LlamaCppPolicy(tokenizer, gguf, n_parallel=8, context=8192, lora=mode) as policy:
            policy.sync_weights(peft)
            sync = policy.last_sync
            start = time.perf_counter()
            episodes = run_episodes(
                policy, tasks, PRESETS["compact"], k=4, progress=False, seed=1, in_flight=8
            )
            seconds = time.perf_counter() - start
        generated = sum(len(s.completion_ids) for e in episodes for s in e.steps)
        run = {
            "s": round(seconds, 1),
            "generated_tokens": generated,
            "tokens_per_s": round(generated / seconds, 1),
            "sync": sync.kind,
            "sync_s": round(sync.total_s, 1),
            "load": os.getloadavg(),
        }
        out.setdefault(mode, []).append(run)
        print(mode, run, flush=True)
    out["load_end"] = os.getloadavg()
    out["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
