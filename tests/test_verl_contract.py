"""The verl integration's contract (`agemem.integrations.verl`): verl's own agent-loop API
(registry, `hydra.utils.instantiate`, `AgentLoopBase.run`, `AgentLoopOutput`, the V1 trainer's
multi-row GRPO advantages) driven through a whole seeded episode on a real local model, the rows
compared with agemem's own GRPO rollout of the same episode: see tests/verl_contract.py.

verl 0.9 pins transformers < 5.11, so the contract runs in the verl environment (`.venv/verl`,
built by scripts/setup.sh; `AGEMEM_VERL_PYTHON` names another interpreter), as a subprocess;
skipped where there is none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tests" / "verl_contract.py"

pytestmark = pytest.mark.slow


def verl_python() -> Path | None:
    """`$AGEMEM_VERL_PYTHON`, else `<this venv>/verl/bin/python` (scripts/setup.sh's layout)."""
    explicit = os.environ.get("AGEMEM_VERL_PYTHON")
    if explicit:
        return Path(explicit)
    beside = Path(sys.prefix) / "verl" / "bin" / "python"
    return beside if beside.is_file() else None


def run_contract(tmp_path: Path, *args: str) -> dict:
    python = verl_python()
    if python is None:
        pytest.skip(
            "no verl environment: scripts/setup.sh builds .venv/verl (verl 0.9 pins "
            "transformers < 5.11); or set AGEMEM_VERL_PYTHON"
        )
    out = tmp_path / "contract.json"
    done = subprocess.run(
        [str(python), str(SCRIPT), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=REPO,
    )
    assert out.is_file(), (
        f"the contract did not finish (exit {done.returncode}):\n{done.stderr[-4000:]}"
    )
    summary = json.loads(out.read_text())
    assert summary["problems"] == [], summary
    assert done.returncode == 0, done.stderr[-4000:]
    return summary


def test_agemem_agent_loop_rows_match_the_grpo_rollout(tmp_path):
    # SmolLM2-135M-agemem, a synthetic task, 2 seeded episodes (about 2.5 minutes on 2 cores)
    summary = run_contract(tmp_path)
    assert summary["agent_loop"] == "AgeMemAgentLoop"
    assert len(summary["turns"]) == 2 and min(summary["turns"]) > 3
    assert all(stages == [1, 2, 3] for stages in summary["stages"])  # the three stages
    # two different rewards in the group: the advantages compared are not all 0
    assert len(set(summary["rewards"])) == 2
    assert len(summary["advantages_verl"]) == 2 and 0.0 not in summary["advantages_verl"]
    assert all(summary["self_check_catches"].values())  # the comparison can fail


def test_atommem_agent_loop_rows_match_the_grpo_rollout(tmp_path):
    # the same model on AtomMem's chunked episode; task seed 1: the two episodes' rewards differ
    summary = run_contract(tmp_path, "--agent", "atommem", "--env", "atommem", "--task-seed", "1")
    assert summary["agent_loop"] == "AtomMemAgentLoop"
    assert len(summary["turns"]) == 2 and min(summary["turns"]) >= 2
    assert len(set(summary["rewards"])) == 2
    assert all(summary["self_check_catches"].values())
