#!/usr/bin/env bash
# Runs every benchmark and rewrites benchmarks/results/ (about 10 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
mkdir -p "$out"
.venv/bin/agemem bench store --n 100000 --json "$out/bench_store.json"
.venv/bin/agemem bench locomo-retrieval --json "$out/locomo_retrieval.json"
