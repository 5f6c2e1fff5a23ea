#!/usr/bin/env bash
# Every method on synthetic (held-out seeds), hotpotqa (test split) and locomo (conversation 1,
# the test split), and the interactive worlds' methods (no-memory, rag, agemem-norl; agemem with
# POLICY) on babyai, twc, pddl and scienceworld (one batch of worlds each), with SmolLM2-135M,
# greedy decoding; then one merged table and plots. On hotpotqa and locomo the trained rows run
# the shipped policies by default (agemem: smollm2-135m-agemem, SFT + GRPO; agemem-sft:
# smollm2-135m-agemem-sft) and oracle-memory the oracle's memory with SmolLM2 answering:
# $OUT/report.md, $OUT/results.json, $OUT/score_vs_tokens.png, $OUT/tool_calls.png.
# Resumable: rerun the same command after an interruption; finished tasks are skipped and a task
# stopped midway replays the model calls its run journaled (agemem.eval.journal).
#
# Knobs (environment variables):
#   OUT=runs/compare      where the runs and the report go
#   LIMIT=N               cap every benchmark at N tasks (a quick check; LoCoMo's 1 stays 1)
#   WORLDS=N              worlds per interactive benchmark (default: one batch, 8; ScienceWorld 4)
#   BENCHMARKS, METHODS   space-separated subsets (default: all below)
#   TRAINED_QA            the rows of shipped policies and the oracle on hotpotqa and locomo
#   POLICY=DIR            a trained checkpoint for the `agemem` rows where no policy ships
#                         (synthetic and the worlds: e.g. the quickstart's)
#   BASE_POLICY=DIR       the checkpoint RL started from (e.g. its SFT stage): adds agemem-norl
#                         rows for it in $OUT/<benchmark>/agemem-norl-base, the same tools
#                         without RL for a trained policy whose base is not SmolLM2
#   THREADS=2             torch threads per process (the machine's cores)
#   BACKEND=torch         how local models run on the QA benchmarks: torch, or llama.cpp (the
#                         same weights served by llama.cpp, q8_0; every row alike, so the rows
#                         stay comparable; `agemem eval --backend`)
#   SHARDS=1              processes per QA run (`agemem eval --shard I/N`), gathered into one
#                         run when all end. On the 2-core reference machine, HotpotQA
#                         a-mem-style: SHARDS=2 THREADS=1 made 50 model calls per minute,
#                         one process with THREADS=2 30
#   AGEMEM=".venv/bin/agemem"   the command (e.g. ".venv/bin/python -m agemem.eval")
# Time on 2 CPU cores: about 16 hours in full, from the measured per-run times (README, "Wall
# time"; the LLM-pipeline baselines and the agents on HotpotQA take 1-2 hours each, a-mem-style
# on HotpotQA ~4.5); with a GPU (`HFPolicy` moves to CUDA by itself) minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a AGEMEM <<< "${AGEMEM:-.venv/bin/agemem}"
OUT=${OUT:-runs/compare}
export OMP_NUM_THREADS=${THREADS:-2}
BENCHMARKS=${BENCHMARKS:-"synthetic hotpotqa locomo babyai twc pddl scienceworld"}
METHODS=${METHODS:-"no-memory full-context rag mem0-style a-mem-style agemem-norl agemem-rag atommem"}
TRAINED_QA=${TRAINED_QA:-"oracle-memory agemem-sft agemem"}  # on hotpotqa and locomo (shipped)
WORLD_METHODS="no-memory rag agemem-norl"  # what agemem.agentic runs (plus agemem)
declare -A TASKS=([synthetic]=30 [hotpotqa]=200 [locomo]=1 [babyai]=${WORLDS:-8}
  [twc]=${WORLDS:-8} [pddl]=${WORLDS:-8} [scienceworld]=${WORLDS:-4})

run() {  # benchmark method [extra args...]
  local b=$1 m=$2 n=${TASKS[$1]} dir=$2
  shift 2
  if [[ "${1:-}" == --policy && $m == agemem-norl ]]; then dir=agemem-norl-base; fi
  if [[ -n "${LIMIT:-}" && "$LIMIT" -lt "$n" ]]; then n=$LIMIT; fi
  echo "== $b / $dir ($n tasks)"
  local args=(eval --benchmark "$b" --method "$m" --limit "$n" --out "$OUT/$b/$dir" "$@")
  if [[ ! $b =~ ^(babyai|twc|pddl|scienceworld)$ ]]; then args+=(--backend "${BACKEND:-torch}"); fi
  local log="$OUT/$b.$dir.log"  # appended: a resumed run keeps the log of the runs before it
  if [[ ${SHARDS:-1} -gt 1 && ! $b =~ ^(babyai|twc|pddl|scienceworld)$ ]]; then
    local pids=() i
    for ((i = 0; i < SHARDS; i++)); do
      "${AGEMEM[@]}" "${args[@]}" --shard "$i/$SHARDS" >> "$log" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
  fi
  "${AGEMEM[@]}" "${args[@]}" >> "$log"  # gathers the shards (or runs it all) into one table
}

mkdir -p "$OUT"
for b in $BENCHMARKS; do
  for m in $METHODS; do
    if [[ $b =~ ^(babyai|twc|pddl|scienceworld)$ && " $WORLD_METHODS " != *" $m "* ]]; then
      continue  # a text-only baseline: no interactive version
    fi
    run "$b" "$m"
  done
  if [[ $b =~ ^(hotpotqa|locomo)$ ]]; then
    for m in $TRAINED_QA; do run "$b" "$m"; done
  elif [[ -n "${POLICY:-}" ]]; then run "$b" agemem --policy "$POLICY"; fi
  if [[ -n "${BASE_POLICY:-}" ]]; then run "$b" agemem-norl --policy "$BASE_POLICY"; fi
done
dirs=()
for b in $BENCHMARKS; do
  for d in "$OUT/$b"/*/; do [[ -f "$d/results.json" ]] && dirs+=("$d"); done
done
"${AGEMEM[@]}" report "${dirs[@]}" --out "$OUT"
echo "machine: $(nproc --all) cores, $(uname -sm), OMP_NUM_THREADS=$OMP_NUM_THREADS"
