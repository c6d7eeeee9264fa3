"""Measure pgtheory's numerical agreement at gamma = 0.99 and 0.999 (``make accuracy``).

For 50 random MDPs (S = 8, A = 3, dense; continuing, and with 2 terminal states) and random
softmax policies it
reports the worst relative disagreement (relative to max(1, |reference|)) of:
the three performance-difference forms vs J(pi') - J(pi); Fisher vs KL Hessian; the policy
gradient vs five-point finite differences (h = 1e-3); V vs the Bellman residual.
"""

import sys

import numpy as np

sys.path.insert(0, "tests")
from helpers import fd_gradient, rel_err

import pgtheory as pg


def measure(gamma: float, n_terminal: int, n: int = 50) -> dict[str, float]:
    worst = dict(pdl=0.0, fisher_vs_kl_hessian=0.0, gradient_vs_fd=0.0, bellman_residual=0.0)
    for seed in range(n):
        mdp = pg.random_mdp(seed, 8, 3, gamma=gamma, n_terminal=n_terminal)
        param = pg.TabularSoftmax(8, 3)
        rng = np.random.default_rng(seed)
        th, th2 = rng.normal(size=24), rng.normal(size=24)
        pi, pi2 = param.probs(th), param.probs(th2)
        pdl = pg.performance_difference(mdp, pi, pi2)
        scale = max(1.0, abs(pdl.difference))
        for f in (pdl.trajectory_form, pdl.rho_form, pdl.d_form):
            worst["pdl"] = max(worst["pdl"], abs(f - pdl.difference) / scale)
        worst["fisher_vs_kl_hessian"] = max(worst["fisher_vs_kl_hessian"], rel_err(
            pg.fisher_matrix(mdp, param, th), pg.kl_hessian(mdp, param, th)))
        g = pg.policy_gradient(mdp, param, th)
        fd = fd_gradient(lambda t, m=mdp, p=param: pg.expected_return(m, p.probs(t)), th)
        worst["gradient_vs_fd"] = max(worst["gradient_vs_fd"], rel_err(g, fd))
        v = pg.state_values(mdp, pi)
        resid = v - (pi * mdp.R).sum(1) - gamma * np.einsum("sa,sat,t->s", pi, mdp.P, v)
        worst["bellman_residual"] = max(worst["bellman_residual"],
                                        float(np.abs(resid).max() / max(1.0, np.abs(v).max())))
    return worst


if __name__ == "__main__":
    for n_terminal in (0, 2):
        for gamma in (0.99, 0.999):
            worst = measure(gamma, n_terminal)
            print(f"gamma = {gamma}, {n_terminal} terminal states: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
