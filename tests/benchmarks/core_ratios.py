"""Exact core against LAPACK, in one run: J + policy gradient + Fisher + natural gradient.

Times, for tabular softmax on ``pg.random_mdp(0, S, A, gamma)`` (default S = 1000, A = 10,
gamma = 0.99, Fisher returned block-sparse):

(a) the four quantities from one ``pg.evaluate`` object (one LU factorization of
    ``I - gamma P_pi``, built inside the timing);
(b) the four separate functions ``expected_return``, ``policy_gradient``, ``fisher_matrix``,
    ``natural_gradient`` (each builds and factorizes its own system);
(c) the LAPACK calls the quantities cannot avoid, on the same prepared matrix:
    ``scipy.linalg.lu_factor`` once and ``lu_solve`` twice (``V``: ``trans=0``; ``rho``:
    ``trans=1``).

The three are timed round-robin (a, b, c, a, b, c, ...) so that load from other processes hits
them alike, and each is summarised by its minimum over the rounds (the least disturbed one; the
machine this was written on is shared). Writes every round's time to a JSON file and prints
the ratios (a)/(c) and (b)/(a). Run::

    OMP_NUM_THREADS=1 .venv/bin/python tests/benchmarks/core_ratios.py \
        --out docs/benchmarks/core-ratios.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import scipy
import scipy.linalg as sla

import pgtheory as pg


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(S: int, A: int, gamma: float):
    mdp = pg.random_mdp(0, S, A, gamma=gamma)
    param = pg.TabularSoftmax(S, A)
    theta = np.random.default_rng(0).normal(size=S * A)
    return mdp, param, theta


def with_object(mdp, param, theta):
    ev = pg.evaluate(mdp, param, theta)
    return (ev.expected_return(), ev.policy_gradient(), ev.fisher_matrix(sparse=True),
            ev.natural_gradient())


def separate(mdp, param, theta):
    return (pg.expected_return(mdp, param.probs(theta)), pg.policy_gradient(mdp, param, theta),
            pg.fisher_matrix(mdp, param, theta, sparse=True),
            pg.natural_gradient(mdp, param, theta))


def lapack(M, r_pi, mu):
    lu = sla.lu_factor(M, check_finite=False)
    return (sla.lu_solve(lu, r_pi, check_finite=False),
            sla.lu_solve(lu, mu, trans=1, check_finite=False))


def same_results(x, y) -> bool:
    return all(np.array_equal(a.toarray() if hasattr(a, "toarray") else a,
                              b.toarray() if hasattr(b, "toarray") else b)
               for a, b in zip(x, y, strict=True))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--states", type=int, default=1000)
    ap.add_argument("--actions", type=int, default=10)
    ap.add_argument("--gamma", type=float, default=0.99)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--out", default=".benchmarks/core-ratios.json")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.states < 1 or args.actions < 1:
        print("core_ratios: expected positive --rounds, --states and --actions", file=sys.stderr)
        return 2

    mdp, param, theta = build(args.states, args.actions, args.gamma)
    pi = param.probs(theta)
    M = np.eye(args.states) - mdp.gamma * mdp.transition_matrix(pi)
    r_pi = mdp.policy_reward(pi)
    # the same numbers both ways, and the same V and rho as the bare LAPACK calls
    a_out, b_out = with_object(mdp, param, theta), separate(mdp, param, theta)
    if not same_results(a_out, b_out):
        print("core_ratios: the object and the functions disagree", file=sys.stderr)
        return 1
    v, rho = lapack(M, r_pi, mdp.mu)
    ev = pg.evaluate(mdp, param, theta)
    if not (np.allclose(ev.state_values(), v, rtol=1e-10, atol=1e-10)
            and np.allclose(ev.discounted_visitation(False), np.maximum(rho, 0.0), rtol=1e-10,
                            atol=1e-12)):
        print("core_ratios: V or rho differ from the bare LAPACK solves", file=sys.stderr)
        return 1

    runs = {"object": lambda: with_object(mdp, param, theta),
            "separate": lambda: separate(mdp, param, theta),
            "lapack": lambda: lapack(M, r_pi, mdp.mu)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for f in runs.values():  # warm-up
        f()
    for _ in range(args.rounds):
        for k, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    ratios = {"object_over_lapack": best["object"] / best["lapack"],
              "separate_over_object": best["separate"] / best["object"]}
    record = {
        "what": "J + policy gradient + Fisher (block-sparse) + natural gradient, tabular softmax",
        "problem": {"generator": "pg.random_mdp(0, S, A, gamma)", "S": args.states,
                    "A": args.actions, "gamma": args.gamma, "theta": "normal(0, 1), seed 0"},
        "datetime_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_name(),
                    "logical_cpus": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "scipy": scipy.__version__,
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "load_average_1_5_15": list(os.getloadavg())},
        "rounds": args.rounds, "order": "round-robin object, separate, lapack",
        "summary": "minimum over rounds (seconds)", "min_s": best, "median_s": median,
        "ratios_of_minima": ratios, "times_s": times,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(record, fh, indent=1)
    print(f"S = {args.states}, A = {args.actions}, gamma = {args.gamma}; minimum (median) of "
          f"{args.rounds} interleaved rounds; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    names = {"object": "(a) one pg.evaluate object",
             "separate": "(b) four separate functions",
             "lapack": "(c) LAPACK: lu_factor + 2 lu_solve"}
    for k, name in names.items():
        print(f"{name:<40}{best[k] * 1e3:>8.1f} ms ({median[k] * 1e3:.1f} ms)")
    print(f"{'(a) / (c)':<40}{ratios['object_over_lapack']:>8.2f}")
    print(f"{'(b) / (a)':<40}{ratios['separate_over_object']:>8.2f}")
    print(f"raw times: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
