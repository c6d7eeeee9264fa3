"""False alarms of the continuous in-expectation rows on correct implementations, over seeds.

Runs what the audit runs for ``in_expectation.advantages@lqr``, ``.returns@lqr`` and
``.policy_gradient@lqr``
(:func:`pgtheory.oracles.suite.continuous_expectation_checks`, the audit's configuration) on

* ``linear``: the targets where the rows are exact on every sample (affine-Gaussian policy,
  affine critic): this project's PPO, TRPO, A2C and REINFORCE with ``hidden_sizes=()``,
  Stable-Baselines3 PPO and A2C and sb3-contrib TRPO with ``net_arch=[]``; seeds 0..N-1;
* ``campaign``: the random correct configurations of :mod:`pgtheory.lab.campaign` (network
  sizes including linear, tanh and ReLU, gamma, lambda, rollout sizes, ... drawn over what
  users set), configuration ``i`` at seed ``i``, i = 1..N per family.

Prints the verdict counts per target (and the number of statistically tested runs), writes one
JSON line per run to ``--out`` (default ``docs/benchmarks/lqr_expectation_false_alarms.jsonl``;
a run already there is not repeated, so the script resumes) and exits 1 when any correct target
got a FAIL. Usage::

    python tools/lqr_expectation_false_alarms.py --set linear --seeds 100
    python tools/lqr_expectation_false_alarms.py --set campaign --seeds 30
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import sys
import time

LINEAR = ("ppo", "trpo", "a2c", "reinforce", "sb3-ppo", "sb3-a2c", "sb3-trpo")
OUT = pathlib.Path("docs/benchmarks/lqr_expectation_false_alarms.jsonl")


def linear_target(name: str):
    if name.startswith("sb3-"):
        from pgtheory.oracles.sb3 import SB3Target

        if name == "sb3-ppo":
            from stable_baselines3 import PPO as cls
            kw = dict(n_steps=128, batch_size=32)
        elif name == "sb3-a2c":
            from stable_baselines3 import A2C as cls
            kw = {}
        else:
            from sb3_contrib import TRPO as cls
            kw = dict(n_steps=128, batch_size=32)
        return SB3Target(lambda env: cls("MlpPolicy", env, policy_kwargs=dict(net_arch=[]),
                                         verbose=0, **kw), name=f"{name} net_arch=[]")
    from pgtheory.implementations.targets import target

    return target(name, hidden_sizes=())


def runs(which: str, seeds: int) -> list[tuple[str, int]]:
    if which == "linear":
        return [(f"linear:{t}", s) for t in LINEAR for s in range(seeds)]
    from pgtheory.lab.campaign import FAMILIES

    return [(f"campaign:{f}:{i}", i) for f in FAMILIES for i in range(1, seeds + 1)]


def main(argv=None) -> int:
    import torch
    from pgtheory.lab.campaign import resolve_target
    from pgtheory.oracles import suite
    from pgtheory.oracles.audit import audit_config

    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", choices=("linear", "campaign"), default="linear")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", type=pathlib.Path, default=OUT)
    a = p.parse_args(argv)
    if a.seeds < 1:
        print(f"lqr_expectation_false_alarms: expected --seeds >= 1, received {a.seeds}",
              file=sys.stderr)
        return 2
    done = {}
    if a.out.exists():
        for line in a.out.read_text().splitlines():
            r = json.loads(line)
            done[(r["target"], r["seed"])] = r
    a.out.parent.mkdir(parents=True, exist_ok=True)
    todo = runs(a.set, a.seeds)
    t0 = time.time()
    with a.out.open("a") as fh:
        for i, (spec, seed) in enumerate(todo):
            if (spec, seed) in done:
                continue
            tg = (linear_target(spec.split(":", 1)[1]) if spec.startswith("linear:")
                  else resolve_target(spec))
            t1 = time.time()
            out = suite.continuous_expectation_checks(tg, audit_config(seed))
            rec = {"target": spec, "seed": seed, "seconds": round(time.time() - t1, 2),
                   "results": {n: {"verdict": r.verdict, "p_value": r.p_value,
                                   "statistical": r.verdict != "skip" and (
                                       "gradient estimates" in r.explanation
                                       or ("groups" in r.explanation
                                           and "too few" not in r.explanation)),
                                   "explanation": r.explanation[:400]}
                               for n, r in out.items()}}
            done[(spec, seed)] = rec
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            print(f"[{i + 1}/{len(todo)} {time.time() - t0:.0f} s] {spec} seed {seed}: "
                  + ", ".join(f"{n.split('.')[1]} {r.verdict}" for n, r in out.items()),
                  flush=True)
    by = collections.defaultdict(collections.Counter)
    tested = collections.Counter()
    any_fail = False
    for spec, seed in todo:
        rec = done[(spec, seed)]
        fam = spec.rsplit(":", 1)[0] if spec.startswith("campaign:") else spec
        for n, r in rec["results"].items():
            by[fam][r["verdict"]] += 1
            tested[fam] += bool(r["statistical"])
            if r["verdict"] == "fail":
                any_fail = True
                print(f"  FAIL {spec} seed {seed} {n}: {r['explanation']}")
    for fam, c in by.items():
        print(f"{fam}: {dict(c)} over {sum(c.values())} rows, {tested[fam]} with statistical "
              f"groups tested")
    return 1 if any_fail else 0


if __name__ == "__main__":
    sys.exit(main())
