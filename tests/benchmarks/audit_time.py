"""Wall time of ``pgtheory audit`` per target, full and ``--quick``, beside plain training.

Usage: ``python tests/benchmarks/audit_time.py [--repeats N]`` (``make bench-audit``).

Each audit runs as the command a user types (a fresh ``pgtheory audit TARGET --no-progress``
process, imports included), timed with ``time.perf_counter``; the median over ``--repeats`` runs
is printed. The peer in the same run is the library itself: ``model.learn`` for 10,000 env steps
on the same oracle env in the same kind of fresh process, the cost of the training that the
audit's own runs resemble. The ratio says how many such trainings one audit costs. Targets:
``sb3:PPO``, ``sb3:A2C``, ``sb3-contrib:TRPO``, the example PPO and the project's own
``ppo``, ``a2c``, ``trpo``, ``reinforce`` (``--targets`` selects a subset). The issue's budget: at
most 120 s per audit (aim 60 s), ``--quick`` under 20 s, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TARGETS = {"sb3:PPO": "PPO", "sb3:A2C": "A2C", "sb3-contrib:TRPO": "TRPO", "example-ppo": None,
           "ppo": None, "a2c": None, "trpo": None, "reinforce": None}

LEARN = """
import gymnasium as gym
from pgtheory.oracles.envs import TabularEnv
from pgtheory.oracles.sb3 import builtin_factory
from pgtheory.oracles.suite import oracle_mdp
env = gym.wrappers.TimeLimit(TabularEnv(oracle_mdp(0.99, 0)), 6)
builtin_factory({name!r})(env).learn(10_000)
"""


def _timed(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, capture_output=True, text=True).returncode
    return time.perf_counter() - t0, rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--targets", help="comma-separated subset of " + ", ".join(TARGETS))
    args = parser.parse_args()
    chosen = args.targets.split(",") if args.targets else list(TARGETS)
    exe = [sys.executable, "-m", "pgtheory.cli", "audit"]
    print(f"{'target':<18} {'audit':>8} {'--quick':>8} {'exit':>5} {'learn 10k':>10} "
          f"{'audit / learn':>14}")
    for target, cls in ((t, TARGETS.get(t)) for t in chosen):
        full = [_timed([*exe, target, "--no-progress"]) for _ in range(args.repeats)]
        quick = [_timed([*exe, target, "--quick", "--no-progress"]) for _ in range(args.repeats)]
        t_full = statistics.median(t for t, _ in full)
        t_quick = statistics.median(t for t, _ in quick)
        rcs = {rc for _, rc in full + quick}
        if cls is None:
            learn, ratio = "-", "-"
        else:
            t_learn = statistics.median(
                _timed([sys.executable, "-c", LEARN.format(name=cls)])[0]
                for _ in range(args.repeats))
            learn, ratio = f"{t_learn:.1f} s", f"{t_full / t_learn:.1f}x"
        print(f"{target:<18} {t_full:7.1f}s {t_quick:7.1f}s {','.join(map(str, sorted(rcs))):>5} "
              f"{learn:>10} {ratio:>14}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
