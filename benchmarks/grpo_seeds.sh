#!/usr/bin/env bash
# More GRPO seeds of the shipped policy's recipe: each seed trains `smollm2-hotpotqa`'s GRPO
# stage from the shipped SFT policy (smollm2-135m-agemem-sft) for STEPS steps with llama.cpp
# rollouts, exactly as the shipped seed-0 policy was trained (6 steps), exports the GRPO adapter
# over the SFT policy (`agemem export-policy --grpo-only`), and evaluates it on compare.sh's
# 200 HotpotQA test questions with the same settings as the shipped policy's row (greedy,
# llama.cpp). Then `agemem report` compares every seed with agemem-sft question by question.
#
# Resumable: a seed whose policy was exported skips training; a stopped training resumes from
# its last checkpoint (every 2 steps, under runs/); the evaluation resumes from its journal.
# Time on the 2 idle cores: ~35 min of training and ~2 h of evaluation per seed.
#
# Knobs: SEEDS="1 2" (seed 0 is the shipped policy), STEPS=6, LIMIT=200,
#        OUT=benchmarks/results/smollm2-agemem/grpo-seeds, THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
AGEMEM=.venv/bin/agemem
OUT=${OUT:-benchmarks/results/smollm2-agemem/grpo-seeds}
export OMP_NUM_THREADS=${THREADS:-2}
SFT_RUN=benchmarks/results/smollm2-agemem/hotpotqa-200/hotpotqa/agemem-sft
for seed in ${SEEDS:-1 2}; do
  run=runs/smollm2-hotpotqa-grpo-seed$seed dir=$OUT/seed-$seed
  mkdir -p "$dir"
  if [[ ! -f $dir/policy/adapters.json ]]; then
    echo "== seed $seed: GRPO (${STEPS:-6} steps) in $run"
    "$AGEMEM" train --preset smollm2-hotpotqa --set grpo.model.name=smollm2-135m-agemem-sft \
      --set grpo.rollout=llama.cpp --set grpo.eval.before=false --set grpo.eval.n_tasks=0 \
      --set grpo.steps="${STEPS:-6}" --set grpo.run.seed="$seed" --set grpo.run.out_dir="$run" \
      --set grpo.run.progress=false --set grpo.resume=true >> "$dir/train.log" 2>&1
    cp "$run/metrics.jsonl" "$dir/grpo-metrics.jsonl"
    "$AGEMEM" export-policy --grpo-only --grpo "$run/final-adapter" \
      --base smollm2-135m-agemem-sft --out "$dir/policy"
  fi
  echo "== seed $seed: HotpotQA, ${LIMIT:-200} questions"
  "$AGEMEM" eval --benchmark hotpotqa --method agemem --policy "$dir/policy" --backend llama.cpp \
    --limit "${LIMIT:-200}" --out "$dir/hotpotqa" >> "$dir/eval.log" 2>&1
done
runs=("$SFT_RUN" benchmarks/results/smollm2-agemem/hotpotqa-200/hotpotqa/agemem)
for dir in "$OUT"/seed-*/hotpotqa; do [[ -f $dir/results.json ]] && runs+=("$dir"); done
"$AGEMEM" report "${runs[@]}" --against "$SFT_RUN" --out "$OUT"
