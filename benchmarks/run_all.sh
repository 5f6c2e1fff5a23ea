#!/usr/bin/env bash
# Runs every benchmark and rewrites benchmarks/results/ (about 80 minutes on 2 idle cores; the
# GRPO step bench alone takes ~36: one step of the old trainer, one of the new).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
.venv/bin/agemem bench store --n 100000 --json "$out/bench_store.json"
.venv/bin/agemem bench locomo-retrieval --json "$out/locomo_retrieval.json"
.venv/bin/agemem bench rollout --preset smollm2-135m --json "$out/rollout.json"
.venv/bin/agemem bench grpo --threads 1 --tasks 4 --k 2 --json "$out/bench_grpo.json"
.venv/bin/agemem bench grpo-step --paths old,new --json "$out/grpo_step.json"
.venv/bin/python benchmarks/rollout_streaming.py --json "$out/rollout_streaming.json"
.venv/bin/python benchmarks/llama_lora_merged.py --json "$out/llama_lora_merged.json"
.venv/bin/agemem bench serve --store sqlite --faults --json "$out/serve_sqlite.json"
.venv/bin/agemem bench serve --store postgres --faults --json "$out/serve_postgres.json"
