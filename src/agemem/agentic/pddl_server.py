"""PDDL sessions over pddlgym, served as JSON lines on stdin/stdout.

This file runs in the interpreter that has pddlgym (an isolated environment: pddlgym pins
`gym` 0.26 and `pillow<10`, which the main environment must not get), so it imports only the
standard library and pddlgym, never agemem. `agemem.agentic.pddl` starts it as a subprocess.

Request: {"op": ..., "session": int, ...}; reply: {"ok": true, ...} or {"ok": false, "error": ...}.
Ops: `open` (domain, problem, test) -> session; `reset`; `step` (action); `expert`; `close`;
`raw_bench` (steps) -> raw pddlgym steps per second, for the overhead measurement.

Text form (ours): a literal or action is `name(arg1, arg2)` without types; actions are also read
as `name arg1 arg2` or `(name arg1 arg2)`. Progress is the share of goal literals that hold
(AgentBoard's PDDL progress rate). The expert uses the number of
unmet goal literals as heuristic in an A* search (ours; pddlgym ships no planner that runs
offline), replanned whenever the state leaves its plan.
"""

from __future__ import annotations

import heapq
import itertools
import json
import re
import sys
import time
from contextlib import redirect_stdout
from typing import Any

MAX_EXPANSIONS = 50_000  # search budget of the expert per plan
_ACTION = re.compile(r"^\(?\s*([\w-]+)\s*(?:\((.*)\)|(.*?))\s*\)?\s*$")


def _text(literal: Any) -> str:
    args = ", ".join(v.name for v in literal.variables)
    text = f"{literal.predicate.name}({args})"
    return f"not {text}" if getattr(literal, "is_anti", False) else text


def _key(action: Any) -> tuple[str, tuple[str, ...]]:
    return action.predicate.name.lower(), tuple(v.name.lower() for v in action.variables)


def parse_action(text: str) -> tuple[str, tuple[str, ...]] | None:
    """`stack(a, b)`, `stack a b` or `(stack a b)` -> ("stack", ("a", "b"))."""
    match = _ACTION.match(text.strip().lower())
    if match is None:
        return None
    raw = match.group(2) if match.group(2) is not None else (match.group(3) or "")
    args = tuple(a for a in re.split(r"[\s,]+", raw.strip()) if a)
    return match.group(1), args


class Session:
    def __init__(self, domain: str, problem: int, test: bool) -> None:
        import pddlgym

        name = f"PDDLEnv{domain.capitalize()}{'Test' if test else ''}-v0"
        try:
            self.env = pddlgym.make(name).unwrapped
        except Exception as err:  # gym raises its own error types for unknown ids
            raise ValueError(f"no pddlgym environment {name} ({err})") from None
        n = len(self.env.problems)
        if not 0 <= problem < n:
            raise ValueError(f"{name} has problems 0..{n - 1}; got {problem}")
        self.env.fix_problem_index(problem)
        self.name = name
        self.plan: list[Any] = []
        self.expected: Any = None

    # ---- the state in words --------------------------------------------------------------
    def goal_literals(self) -> list[Any]:
        goal = self.state.goal
        return list(goal.literals) if hasattr(goal, "literals") else [goal]

    def holds(self, literal: Any, state: Any) -> bool:
        if getattr(literal, "is_anti", False):
            return literal.inverted_anti not in state.literals
        return literal in state.literals

    def progress(self, state: Any) -> float:
        goals = self.goal_literals()
        return sum(self.holds(g, state) for g in goals) / len(goals) if goals else 0.0

    def applicable(self, state: Any) -> list[Any]:
        space = self.env.action_space
        if self.env._dynamic_action_space:
            candidates = space.all_ground_literals(state)
        else:
            candidates = space.all_ground_literals(state, valid_only=False)
        return sorted((a for a in candidates if self.env._action_valid_test(state, a)), key=_text)

    def view(self, note: str = "", valid: bool = True) -> dict[str, Any]:
        """The state in words; a refusal (`valid=False`) also lists the valid actions."""
        state = self.state
        facts = ", ".join(sorted(_text(lit) for lit in state.literals))
        done = self.env._is_goal_reached(state)
        admissible = [_text(a) for a in self.applicable(state)]
        if not valid:
            note += f"Valid actions: {', '.join(admissible)}. "
        return {
            "observation": f"{note}State: {facts}.".strip(),
            "goal": "Reach a state where " + " and ".join(_text(g) for g in self.goal_literals()),
            "admissible": admissible,
            "done": bool(done),
            "success": bool(done),
            "progress": 1.0 if done else self.progress(state),
            "valid": valid,
        }

    # ---- ops -----------------------------------------------------------------------------
    def reset(self) -> dict[str, Any]:
        self.state, _ = self.env.reset()
        self.plan, self.expected = [], None
        return self.view()

    def step(self, text: str) -> dict[str, Any]:
        parsed = parse_action(text)
        actions = self.applicable(self.state)
        by_key = {_key(a): a for a in actions}
        action = by_key.get(parsed) if parsed else None
        if action is None:
            known = parsed is not None and parsed[0] in self.env.domain.operators
            why = "Its preconditions do not hold now" if known else "Unknown action"
            return self.view(f"{why} ({text!r}); nothing changed. ", valid=False)
        self.state, _, _, _, _ = self.env.step(action)
        return self.view(f"You did {_text(action)}. ")

    def successor(self, state: Any, action: Any) -> Any:
        env = self.env
        nxt = env._get_successor_state(
            state,
            action,
            env.domain,
            inference_mode=env._inference_mode,
            raise_error_on_invalid_action=False,
        )
        return env._handle_derived_literals(nxt)

    def search(self) -> list[Any]:
        start, counter = self.state, itertools.count()
        frontier = [(self.unmet(start), 0, next(counter), start, [])]  # (f = g + h, g, ...)
        seen = {start.literals}
        while frontier and len(seen) < MAX_EXPANSIONS:
            _, depth, _, state, plan = heapq.heappop(frontier)
            if self.env._is_goal_reached(state):
                return plan
            for action in self.applicable(state):
                nxt = self.successor(state, action)
                if nxt.literals not in seen:
                    seen.add(nxt.literals)
                    f = depth + 1 + self.unmet(nxt)
                    item = (f, depth + 1, next(counter), nxt, [*plan, (action, nxt)])
                    heapq.heappush(frontier, item)
        return []

    def unmet(self, state: Any) -> int:
        return sum(not self.holds(g, state) for g in self.goal_literals())

    def expert(self) -> dict[str, Any]:
        if self.env._is_goal_reached(self.state):
            return {"action": None}
        if not self.plan or self.expected != self.state.literals:
            self.plan = self.search()
        if not self.plan:
            return {"action": None}
        action, nxt = self.plan.pop(0)
        self.expected = nxt.literals
        return {"action": _text(action)}

    def raw_bench(self, steps: int) -> dict[str, Any]:
        """Raw pddlgym steps per second, without and with listing the applicable actions
        (what the wrapper does at every step)."""
        self.state, _ = self.env.reset()
        stepping = listing = 0.0
        for i in range(steps):
            start = time.perf_counter()
            actions = self.applicable(self.state)
            listed = time.perf_counter()
            self.state, *_ = self.env.step(actions[i % len(actions)])
            stepping += time.perf_counter() - listed
            listing += listed - start
        return {
            "steps_per_s": steps / stepping,
            "steps_with_applicable_per_s": steps / (stepping + listing),
        }


def serve(stdin: Any, stdout: Any) -> None:
    sessions: dict[int, Session] = {}
    ids = itertools.count()
    for line in stdin:
        try:
            request = json.loads(line)
            reply = {"ok": True, **_handle(request, sessions, ids)}
        except Exception as err:  # every failure is a reply; the client raises it
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        stdout.write(json.dumps(reply) + "\n")
        stdout.flush()


def _handle(request: dict[str, Any], sessions: dict[int, Session], ids: Any) -> dict[str, Any]:
    op = request.get("op")
    if op == "open":
        session_id = next(ids)
        sessions[session_id] = Session(request["domain"], request["problem"], request["test"])
        return {"session": session_id, "name": sessions[session_id].name}
    session = sessions[request["session"]]
    if op == "reset":
        return session.reset()
    if op == "step":
        return session.step(request["action"])
    if op == "expert":
        return session.expert()
    if op == "raw_bench":
        return session.raw_bench(int(request["steps"]))
    if op == "close":
        del sessions[request["session"]]
        return {}
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    protocol = sys.stdout
    with redirect_stdout(sys.stderr):  # pddlgym prints; keep the protocol stream clean
        serve(sys.stdin, protocol)
