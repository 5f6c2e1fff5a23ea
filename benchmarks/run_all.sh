#!/usr/bin/env bash
# Runs every benchmark and rewrites benchmarks/results/ (about 20 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
.venv/bin/agemem bench store --n 100000 --json "$out/bench_store.json"
.venv/bin/agemem bench locomo-retrieval --json "$out/locomo_retrieval.json"
.venv/bin/agemem bench rollout --preset smollm2-135m --json "$out/rollout.json"
.venv/bin/agemem bench grpo --threads 1 --json "$out/bench_grpo.json"
.venv/bin/agemem bench serve --store sqlite --faults --json "$out/serve_sqlite.json"
.venv/bin/agemem bench serve --store postgres --faults --json "$out/serve_postgres.json"
