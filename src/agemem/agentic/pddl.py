"""PDDL planning problems (pddlgym's domains and problems) as text worlds.

pddlgym 0.0.7 pins `gym` 0.26 and `pillow<10`, which conflict with the main environment, so it
lives in its own virtual environment and runs as one subprocess per interpreter
(`pddl_server.py`, JSON lines), shared by all PDDL worlds; each world is a session in it. Its
domain and problem files ship inside the pddlgym wheel, so nothing is downloaded.

The pddlgym interpreter is, in order: `$AGEMEM_PDDL_PYTHON`; this interpreter when it can
import pddlgym; `<this venv>/pddlgym/bin/python` (the layout CI creates with
`python -m venv .venv/pddlgym && .venv/pddlgym/bin/pip install pddlgym==0.0.7`).

Observation: the true state literals; goal: the goal literals; admissible: the applicable ground
actions, written `stack(a, b)`. Progress is the share of goal literals that hold (AgentBoard);
success is the goal reached. The expert is an A* search in the server (see there).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from agemem.agentic.world import TextWorld, WorldState, WorldUnavailable

SERVER = Path(__file__).with_name("pddl_server.py")
INSTALL = (
    "python -m venv .venv/pddlgym && .venv/pddlgym/bin/pip install pddlgym==0.0.7 "
    "(or set AGEMEM_PDDL_PYTHON to an interpreter that has pddlgym)"
)


def pddl_python() -> str:
    """The interpreter that runs pddlgym (see the module docstring); WorldUnavailable if none."""
    explicit = os.environ.get("AGEMEM_PDDL_PYTHON")
    if explicit:
        if not Path(explicit).is_file():
            raise WorldUnavailable(f"AGEMEM_PDDL_PYTHON={explicit} does not exist; {INSTALL}")
        return explicit
    if importlib.util.find_spec("pddlgym") is not None:
        return sys.executable
    beside = Path(sys.prefix) / "pddlgym" / "bin" / "python"
    if beside.is_file():
        return str(beside)
    raise WorldUnavailable(f"PDDL needs pddlgym in an isolated environment: {INSTALL}")


class PDDLServer:
    """The pddlgym subprocess: one request, one reply, under a lock."""

    def __init__(self, python: str) -> None:
        self.python = python
        self._proc = subprocess.Popen(
            [python, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self._lock = threading.Lock()

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            if self._proc.poll() is not None or self._proc.stdin is None or not self._proc.stdout:
                raise WorldUnavailable(f"the pddlgym server ({self.python}) has exited")
            self._proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise WorldUnavailable(
                f"the pddlgym server ({self.python}) exited without replying; check that "
                f"`{self.python} -c 'import pddlgym'` works"
            )
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise ValueError(f"pddlgym: {reply['error']}")
        return reply

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()


_servers: dict[str, PDDLServer] = {}


def shared_server() -> PDDLServer:
    """The one server of this process for the resolved interpreter (started on first use)."""
    python = pddl_python()
    if python not in _servers:
        _servers[python] = PDDLServer(python)
        atexit.register(_servers[python].close)
    return _servers[python]


class PDDLWorld(TextWorld):
    """One pddlgym problem, e.g. `PDDLWorld("blocks", 0)` (the domain's test problems unless
    `test=False`)."""

    benchmark = "pddl"

    def __init__(self, domain: str, problem: int = 0, *, test: bool = True) -> None:
        super().__init__()
        self._server = shared_server()
        opened = self._server.call("open", domain=domain, problem=problem, test=test)
        self._session: int | None = opened["session"]
        self.domain, self.problem = domain, problem
        self.task_id = f"pddl/{domain}{'_test' if test else ''}/problem{problem}"

    def _reset(self) -> WorldState:
        return _state(self._call("reset"))

    def _step(self, action: str) -> WorldState:
        return _state(self._call("step", action=action))

    def expert_action(self) -> str | None:
        if self.state is None or self.state.done:
            return None
        return self._call("expert")["action"]

    def raw_steps_per_second(self, steps: int = 200) -> dict[str, float]:
        """Raw pddlgym steps per second inside the server (the overhead baseline), without
        (`steps_per_s`) and with (`steps_with_applicable_per_s`) listing applicable actions."""
        return self._call("raw_bench", steps=steps)

    def close(self) -> None:
        if self._session is not None:
            self._call("close")
            self._session = None

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("this PDDL world is closed")
        return self._server.call(op, session=self._session, **fields)


def _state(reply: dict[str, Any]) -> WorldState:
    return WorldState(
        observation=reply["observation"],
        goal=reply["goal"],
        admissible=tuple(reply["admissible"]),
        done=reply["done"],
        success=reply["success"],
        progress=float(reply["progress"]),
        valid=reply["valid"],
    )
