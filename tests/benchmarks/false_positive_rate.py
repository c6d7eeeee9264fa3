"""Measure the false-positive rate of the Monte Carlo checks (``make fpr``).

Each statistical test in the suite runs with one fixed seed (so CI is deterministic). This
script reruns the *same check code* with fresh seeds on the correct implementation and counts
failures, reporting a Clopper-Pearson 95% interval. Usage:
``python tests/benchmarks/false_positive_rate.py [n_seeds]``.
"""

import sys
import time

import gymnasium as gym
import numpy as np
from scipy.stats import beta

sys.path.insert(0, "tests")
import pgtheory.oracles.envs  # registers pgtheory/LinearQuadratic-v0
import test_evaluation as t_eval
import test_lqr as t_lqr

import pgtheory as pg
import pgtheory.lqr as lqr


def on_policy_check(seed: int, time_limit) -> bool:
    mdp = pg.random_mdp(11, 5, 2, gamma=0.9, n_terminal=1)
    pi = np.array([[0.3, 0.7]] * 5)
    eta = pg.on_policy_distribution(mdp, pi, time_limit=time_limit)
    freq = t_eval.simulate_state_counts(mdp, pi, 200_000, np.random.default_rng(seed), time_limit)
    return bool(np.max(np.abs(eta - freq)) < 0.01)


def lqr_finite_horizon_check(seed: int) -> bool:
    model, K, ls = t_lqr.random_problem(7, n=2, m=1, gamma=0.9)
    env = gym.make("pgtheory/LinearQuadratic-v0", model=model, max_episode_steps=20)
    G = t_lqr.rollout_returns(env, K, ls, 2000, seed=seed * 10_000)
    se = G.std(ddof=1) / np.sqrt(G.size)
    return bool(abs(G.mean() - lqr.finite_horizon_return(model, K, ls, 20)) < 4 * se)


def lqr_value_check(seed: int) -> bool:
    model, K, ls = t_lqr.random_problem(8, n=2, m=1, gamma=0.9)
    x0 = np.array([0.5, -0.3])
    env = gym.make("pgtheory/LinearQuadratic-v0", model=model, max_episode_steps=150)
    G = t_lqr.rollout_returns(env, K, ls, 600, seed=seed * 10_000, start=x0)
    se = G.std(ddof=1) / np.sqrt(G.size)
    return bool(abs(G.mean() - lqr.value_function(model, K, ls)(x0)) < 4 * se)


CHECKS = {
    "on_policy_distribution MC (no time limit)": lambda s: on_policy_check(s, None),
    "on_policy_distribution MC (time limit 3)": lambda s: on_policy_check(s, 3),
    "LQR env MC vs finite-horizon return (4 SE)": lqr_finite_horizon_check,
    "LQR env MC vs V(x0) (4 SE)": lqr_value_check,
}


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else beta.ppf(0.025, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(0.975, k + 1, n - k)
    return float(lo), float(hi)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    for name, check in CHECKS.items():
        t0 = time.perf_counter()
        fails = sum(not check(1000 + s) for s in range(n))
        lo, hi = clopper_pearson(fails, n)
        print(f"{name}: {fails}/{n} false alarms, 95% CI [{lo:.3f}, {hi:.3f}] "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
