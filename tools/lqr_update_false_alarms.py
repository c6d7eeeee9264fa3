"""False alarms of the update-level LQR checks on correct implementations, over seeds.

For each target (this project's PPO, TRPO, A2C and REINFORCE with linear layers,
Stable-Baselines3 PPO, A2C and sb3-contrib TRPO with ``net_arch=[]``, 128-step buffers for PPO
and TRPO, A2C's own 5) and each
seed, runs what the suite runs for ``update_level.kl@lqr`` (5 recorded iterations, 4 envs x
16 steps), ``update_level.improvement@lqr`` and ``.convergence@lqr`` (a 9,600-step training
run) and ``update_level.critic@lqr`` (a 9,600-step run with the policy held at the Riccati
gain), and counts the verdicts.
Usage: ``python tools/lqr_update_false_alarms.py [--seeds N] [--first-seed S]
[--targets ppo,trpo,...] [--jsonl FILE] [--train-steps N]`` or ``[--campaign
sb3-ppo,ppo,...] [--seeds N] [--first-seed S]``;
prints one line per target and exits 1 when any correct target got a FAIL. With ``--jsonl``, a
(target, seed) already in the file is counted from it, not rerun, so the script resumes; the
file is read again before each run, so processes given the same targets in different orders
share the work (``--targets a2c,reinforce`` in one, ``reinforce,a2c`` in another).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

TARGETS = ("ppo", "trpo", "a2c", "reinforce", "sb3-ppo", "sb3-a2c", "sb3-trpo")
ROWS = ("kl", "improvement", "convergence", "critic")


def make(name: str):
    """The target as the in-expectation script builds it (same linear configurations)."""
    from lqr_expectation_false_alarms import linear_target  # tools/ is sys.path[0]

    return linear_target(name)


def main(argv=None) -> int:
    import torch
    from pgtheory.oracles import suite
    from pgtheory.oracles.envs import lqr_env_fn

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--jsonl", default="", help="append one verdict line per run to this file")
    p.add_argument("--train-steps", type=int, default=suite.SuiteConfig().train_steps,
                   help="env steps of the training runs (default: the audit's)")
    p.add_argument("--campaign", default="", metavar="FAMILIES",
                   help="instead of --targets: the random correct configurations of these "
                        "lab/campaign.py families (comma-separated), configuration i at seed i "
                        "for i in --first-seed .. (+ --seeds - 1), run as the audit runs the "
                        "rows (pgtheory.oracles.suite.continuous_update_checks); the MLP "
                        "configurations skip")
    a = p.parse_args(argv)
    if a.campaign:
        return _campaign(a)
    names = a.targets.split(",")
    unknown = [n for n in names if n not in TARGETS]
    if unknown or a.seeds < 1 or a.train_steps < 1:
        print(f"lqr_update_false_alarms: expected --targets among {TARGETS}, --seeds >= 1 and "
              f"--train-steps >= 1, received {a.targets!r}, {a.seeds}, {a.train_steps}",
              file=sys.stderr)
        return 2
    done = _recorded(a.jsonl)
    any_fail = False
    for name in names:
        tg = make(name)
        counts = {row: collections.Counter() for row in ROWS}
        t0 = time.time()
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            if a.jsonl and (name, seed) not in done:  # another process may have run it since
                done = _recorded(a.jsonl)
            if (name, seed) in done:
                for row in ROWS:
                    counts[row][done[name, seed][row]] += 1
                continue
            t1 = time.time()
            cfg = suite.SuiteConfig(seed=seed, train_steps=a.train_steps)
            agent = tg.make_agent(lqr_env_fn(), seed=seed, num_envs=cfg.num_envs,
                                  num_steps=cfg.num_steps)
            its = [agent.iterate() for _ in range(cfg.n_iterations)]
            results = {"kl": suite._continuous_kl(agent, its, tg.hyperparameters, tg.algorithm)}
            trained = suite.continuous_training_checks(tg, cfg, tg.hyperparameters)
            results.update({row: trained[f"update_level.{row}@lqr"] for row in ROWS[1:]})
            for row, r in results.items():
                counts[row][r.verdict] += 1
                if r.verdict == "fail":
                    any_fail = True
                    print(f"  {name} seed {seed}: {r}")
            if a.jsonl:
                with open(a.jsonl, "a") as fh:
                    fh.write(json.dumps({"target": name, "seed": seed, **{
                        row: r.verdict for row, r in results.items()},
                        "convergence_observed": results["convergence"].observed,
                        "seconds": round(time.time() - t1, 1)}) + "\n")
        print(f"{name}: {a.seeds} seeds, " + ", ".join(
            f"{row}@lqr {dict(counts[row])}" for row in ROWS)
            + f" ({time.time() - t0:.0f} s)", flush=True)
    return 1 if any_fail else 0


def _recorded(path: str) -> dict:
    """The runs already in ``path`` (a missing file: none), keyed by (target, seed), so that
    an interrupted run resumes where it stopped."""
    import pathlib

    done = {}
    if path and pathlib.Path(path).exists():
        for line in pathlib.Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["target"], r["seed"]] = r
    return done


def _campaign(a) -> int:
    from pgtheory.lab.campaign import FAMILIES, resolve_target
    from pgtheory.oracles import suite
    from pgtheory.oracles.audit import audit_config

    families = a.campaign.split(",")
    if any(f not in FAMILIES for f in families) or a.seeds < 1:
        print(f"lqr_update_false_alarms: expected --campaign among {sorted(FAMILIES)} and "
              f"--seeds >= 1, received {a.campaign!r}, {a.seeds}", file=sys.stderr)
        return 2
    any_fail = False
    for fam in families:
        counts = {row: collections.Counter() for row in ROWS}
        for i in range(max(a.first_seed, 1), max(a.first_seed, 1) + a.seeds):
            spec = f"campaign:{fam}:{i}"
            out = suite.continuous_update_checks(resolve_target(spec), audit_config(i))
            results = {row: out[f"update_level.{row}@lqr"] for row in ROWS}
            for row, r in results.items():
                counts[row][r.verdict] += 1
                if r.verdict == "fail":
                    any_fail = True
                    print(f"  {spec}: {r}")
            if a.jsonl:
                with open(a.jsonl, "a") as fh:
                    fh.write(json.dumps({"target": spec, "seed": i, **{
                        row: r.verdict for row, r in results.items()}}) + "\n")
        print(f"campaign {fam}: {a.seeds} configurations, " + ", ".join(
            f"{row}@lqr {dict(counts[row])}" for row in ROWS), flush=True)
    return 1 if any_fail else 0


if __name__ == "__main__":
    sys.exit(main())
