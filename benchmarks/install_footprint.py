"""What `pip install agemem` costs: the environment's size, the import time of `agemem`, and the
time a first `Memory` takes to store and find one entry (the embedder's load included).

Run it with any Python on virtual environments that have agemem installed, e.g. fresh core
installs (no extras) of two commits, built the way scripts/setup.sh builds .venv:

    python3 -m venv /tmp/core && /tmp/core/bin/pip install -c constraints.txt .
    python3 benchmarks/install_footprint.py before=/tmp/old after=/tmp/core \\
        --json benchmarks/results/install_footprint.json

Each LABEL=VENV is one entry of the JSON file (other labels are kept). The environments are
timed in alternation, `--repeat` fresh processes each, so a shared machine's load falls on all of
them alike; the file records the load (`uptime`) before and after, and both the median and the
minimum of each time (the minimum is the least disturbed run). CPU seconds (user + system of the
process) are recorded beside wall seconds: on a busy machine they move much less.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEAVY = ("torch", "transformers", "sentence_transformers", "accelerate", "peft", "onnxruntime")

# Prints the distributions of the venv with their installed size (bytes of their RECORD files).
_DISTS = """
import importlib.metadata as md, json, os
out = []
for d in md.distributions():
    size = 0
    for f in d.files or ():
        p = d.locate_file(f)
        if os.path.isfile(p) and not os.path.islink(p):
            size += os.path.getsize(p)
    out.append((d.metadata["Name"], d.version, size))
print(json.dumps(out))
"""

_MODULES = """
import json, sys
from agemem import Memory
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""

_FIRST_USE = """
import sys, time
t0 = time.perf_counter()
from agemem import Memory
memory = Memory(sys.argv[1])
memory.add("Maya lives in Lisbon.", user_id="maya")
hits = memory.search("Where does Maya live?", user_id="maya")["results"]
assert hits and hits[0]["memory"] == "Maya lives in Lisbon.", hits
print(time.perf_counter() - t0, memory.store.embedder.name)
memory.close()
"""


def _python(venv: Path) -> str:
    return str(venv / "bin" / "python")


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [_python(venv), *args], capture_output=True, text=True, check=True, env=env
    )


def tree_bytes(root: Path) -> int:
    """Apparent size of every regular file under `root` (what `du -sb` counts, links skipped)."""
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def import_time_us(venv: Path) -> int:
    """`python -X importtime -c "import agemem"`: the cumulative microseconds of `agemem`."""
    stderr = _run(venv, "-X", "importtime", "-c", "import agemem").stderr
    rows = [line.split("|") for line in stderr.splitlines() if line.startswith("import time:")]
    return next(int(r[1]) for r in reversed(rows) if r[2].strip() == "agemem")


def wall_and_cpu_s(venv: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system: what the process itself did, the part that a
    busy machine's load does not inflate much) and stdout of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    stdout = _run(venv, *args).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, stdout


def static_facts(venv: Path) -> dict[str, Any]:
    dists = json.loads(_run(venv, "-c", _DISTS).stdout)
    versions = {name.lower(): version for name, version, _ in dists}
    biggest = sorted(dists, key=lambda d: -d[2])[:8]
    return {
        "env_mb": round(tree_bytes(venv) / 2**20, 1),
        "distributions": len(dists),
        "torch": versions.get("torch"),
        "largest_distributions_mb": {n: round(s / 2**20, 1) for n, _, s in biggest},
        "heavy_modules_after_import": json.loads(
            _run(venv, "-c", _MODULES.format(heavy=HEAVY)).stdout
        ),
    }


def one_round(venv: Path, store: Path) -> dict[str, float | str]:
    """One fresh process of each kind: import timings, then a first Memory on a new file."""
    _, first_cpu, stdout = wall_and_cpu_s(venv, "-c", _FIRST_USE, str(store))
    seconds, embedder = stdout.split()
    import_wall, import_cpu, _ = wall_and_cpu_s(venv, "-c", "import agemem")
    startup_wall, startup_cpu, _ = wall_and_cpu_s(venv, "-c", "pass")
    return {
        "import_agemem_importtime_ms": import_time_us(venv) / 1000,
        "import_agemem_wall_s": import_wall,
        "import_agemem_cpu_s": import_cpu,
        "python_startup_wall_s": startup_wall,
        "python_startup_cpu_s": startup_cpu,
        "first_memory_add_and_search_s": float(seconds),
        "first_memory_process_cpu_s": first_cpu,
        "embedder": embedder,
    }


def measure(venvs: dict[str, Path], repeat: int) -> dict[str, dict[str, Any]]:
    out = {label: static_facts(venv) for label, venv in venvs.items()}
    for venv in venvs.values():
        _run(venv, "-c", "import agemem")  # compile any missing .pyc once, as later runs find
    rounds: dict[str, list[dict[str, float | str]]] = {label: [] for label in venvs}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeat):
            for label, venv in venvs.items():
                rounds[label].append(one_round(venv, Path(tmp) / f"{label}-{i}.db"))
    for label, runs in rounds.items():
        out[label]["embedder"] = runs[0]["embedder"]
        for key in [k for k in runs[0] if k != "embedder"]:
            values = [float(r[key]) for r in runs]
            digits = 1 if key.endswith("_ms") else 3
            out[label][key] = round(statistics.median(values), digits)
            stem, unit = key.rsplit("_", 1)
            out[label][f"{stem}_min_{unit}"] = round(min(values), digits)
        out[label]["repeat"] = repeat
    return out


def machine() -> dict[str, Any]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "uptime": uptime,
        "load_avg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("envs", nargs="+", help="LABEL=VENV: a virtual environment with agemem")
    parser.add_argument("--note", action="append", default=[], help="LABEL=what it is")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", type=Path, help="file to add the entries to")
    args = parser.parse_args()
    venvs = {label: Path(path) for label, path in (e.split("=", 1) for e in args.envs)}
    notes = dict(n.split("=", 1) for n in args.note)
    start = machine()
    results = measure(venvs, args.repeat)
    start["uptime_end"] = machine()["uptime"]
    entries = {
        label: {"note": notes.get(label, ""), "venv": str(venvs[label]), "machine": start, **r}
        for label, r in results.items()
    }
    print(json.dumps(entries, indent=2))
    if args.json:
        data = json.loads(args.json.read_text()) if args.json.exists() else {}
        data.update(entries)
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
