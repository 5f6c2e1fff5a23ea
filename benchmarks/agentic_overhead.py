"""Steps per second of each text-world wrapper against its raw environment (the overhead ratio).

Both sides play the same actions in the same order: BabyAI cycles its primitive actions, TWC
takes the k-th valid action, ScienceWorld replays its gold path, PDDL cycles the applicable
actions. Only steps are timed (resets are not). After a warm-up run (the Java simulators JIT),
raw and wrapper are timed in alternation `ROUNDS` times and the best rate of each side is kept,
since the machine is shared and its load moves between rounds.

The wrapper's extra work is the text rendering, the action parsing and checks, and for PDDL a
JSON round trip to the pddlgym subprocess plus the applicable-action list it computes at every
step (its raw side steps pddlgym in-process, in the server; `raw_with_applicable_steps_per_s`
adds that listing to the raw side). An environment that cannot run here is reported with the
reason instead of numbers.

    python benchmarks/agentic_overhead.py --json benchmarks/results/agentic_overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

from agemem.agentic.world import TextWorld, WorldUnavailable

ROUNDS = 3
BABYAI_CYCLE = (2, 0, 2, 2, 1, 3, 2, 5, 1, 4)  # forward, left, ..., pickup, toggle, drop


Chooser = Callable[[int, tuple[str, ...]], str]  # (step index, valid actions) -> action
Rate = Callable[[int], float]  # steps -> steps per second


def _compare(raw: Rate, wrapper: Rate, steps: int) -> dict[str, float]:
    """Warm up on the same world (the JVM's JIT), then time raw and wrapper in alternation."""
    raw(max(10, steps // 4))
    rounds = [(raw(steps), wrapper(steps)) for _ in range(ROUNDS)]
    return {"raw": max(r for r, _ in rounds), "wrapper": max(w for _, w in rounds)}


def _wrapper_rate(world: TextWorld, choose: Chooser) -> Rate:
    def rate(steps: int) -> float:
        state = world.reset()
        elapsed = 0.0
        for i in range(steps):
            if state.done:
                state = world.reset()
            action = choose(i, state.admissible)
            start = time.perf_counter()
            state = world.step(action)
            elapsed += time.perf_counter() - start
        return steps / elapsed

    return rate


def babyai(steps: int) -> dict[str, float]:
    from agemem.agentic.babyai import ACTIONS, BabyAIWorld

    world = BabyAIWorld("GoToLocal", 0)
    env = world.env

    def raw(n: int) -> float:
        env.reset(seed=0)
        elapsed = 0.0
        for i in range(n):
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(BABYAI_CYCLE[i % len(BABYAI_CYCLE)])
            elapsed += time.perf_counter() - start
            if terminated or truncated:
                env.reset(seed=0)
        return n / elapsed

    names = {index: name for name, index in ACTIONS.items()}
    cycle = [names[a] for a in BABYAI_CYCLE]
    try:
        return _compare(raw, _wrapper_rate(world, lambda i, _: cycle[i % len(cycle)]), steps)
    finally:
        world.close()


def twc(steps: int) -> dict[str, float]:
    from agemem.agentic.twc import TWCWorld

    world = TWCWorld(seed=0, items=3)
    env = world.env

    def reset() -> dict[str, Any]:
        return env.reset(seed=0, gameFold="test", generateGoldPath=True)[1]

    def raw(n: int) -> float:
        infos, elapsed = reset(), 0.0
        for i in range(n):
            valid = sorted(infos["validActions"])
            start = time.perf_counter()
            _, _, done, infos = env.step(valid[i % len(valid)])
            elapsed += time.perf_counter() - start
            if done:
                infos = reset()
        return n / elapsed

    try:
        return _compare(raw, _wrapper_rate(world, lambda i, valid: valid[i % len(valid)]), steps)
    finally:
        world.close()


def scienceworld(steps: int) -> dict[str, float]:
    from agemem.agentic.scienceworld import ScienceWorldWorld

    world = ScienceWorldWorld("find-living-thing", 1)
    world.reset()
    gold = list(world._gold)
    env = world.env

    def replay(reset: Callable[[], object], step: Callable[[str], object], n: int) -> float:
        elapsed, done = 0.0, 0
        while done < n:
            reset()
            for action in gold[: n - done]:
                start = time.perf_counter()
                step(action)
                elapsed += time.perf_counter() - start
                done += 1
        return n / elapsed

    def raw_reset() -> None:
        env.load("find-living-thing", 1, "easy")
        env.reset()

    try:
        return _compare(
            lambda n: replay(raw_reset, env.step, n),
            lambda n: replay(world.reset, world.step, n),
            steps,
        )
    finally:
        world.close()


def pddl(steps: int) -> dict[str, float]:
    from agemem.agentic.pddl import PDDLWorld

    world = PDDLWorld("blocks", 0)
    listing: list[float] = []

    def raw(n: int) -> float:
        rates = world.raw_steps_per_second(n)
        listing.append(rates["steps_with_applicable_per_s"])
        return rates["steps_per_s"]

    try:
        rates = _compare(raw, _wrapper_rate(world, lambda i, valid: valid[i % len(valid)]), steps)
    finally:
        world.close()
    return {**rates, "raw_with_applicable": max(listing)}


MEASURES: dict[str, tuple[Callable[[int], dict[str, float]], int]] = {
    "babyai": (babyai, 2000),
    "twc": (twc, 500),
    "scienceworld": (scienceworld, 60),
    "pddl": (pddl, 300),
}


def measure(scale: float = 1.0) -> dict[str, Any]:
    """Raw and wrapper steps/s per environment, their ratio (raw / wrapper: 1.0 is no
    overhead), and the machine's load; `scale` multiplies the default step counts."""
    results: dict[str, Any] = {
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "environments": {},
    }
    for name, (run, steps) in MEASURES.items():
        n = max(10, int(steps * scale))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints while sampling
                rates = run(n)
        except WorldUnavailable as err:
            results["environments"][name] = {"unavailable": str(err)}
            continue
        results["environments"][name] = {
            "steps": n,
            "raw_steps_per_s": round(rates["raw"], 1),
            "wrapper_steps_per_s": round(rates["wrapper"], 1),
            "overhead_ratio": round(rates["raw"] / rates["wrapper"], 2),
        }
        if "raw_with_applicable" in rates:
            results["environments"][name]["raw_with_applicable_steps_per_s"] = round(
                rates["raw_with_applicable"], 1
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the step counts")
    args = parser.parse_args()
    results = measure(args.scale)
    for name, row in results["environments"].items():
        if "unavailable" in row:
            print(f"{name:13s} unavailable: {row['unavailable']}")
        else:
            print(
                f"{name:13s} raw {row['raw_steps_per_s']:>9.1f}/s  wrapper "
                f"{row['wrapper_steps_per_s']:>9.1f}/s  ratio {row['overhead_ratio']:.2f}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
