"""pgtheory against values lambdified from the symbolic derivations in proofs/.

The symbolic 2-state, 2-action MDP of pgtheory.proofs.mdp_theorems gives exact expressions for V,
rho, A, J and dJ/dtheta; pgtheory.proofs.estimator_theorems gives GAE as a polynomial in rewards and
values; pgtheory.proofs.distribution_theorems gives the k3 estimator. Evaluated at random points
they are reference values for five pgtheory functions, so the numerics and the algebra check each
other.
"""

import numpy as np
import pytest
import sympy as sp
from helpers import rel_err
from pgtheory.proofs.distribution_theorems import KL_ESTIMATORS
from pgtheory.proofs.estimator_theorems import gae_reference
from pgtheory.proofs.mdp_theorems import symbolic_quantities

import pgtheory as pg

SYM = symbolic_quantities()
NAMES = [str(s) for s in SYM["symbols"]]
FUNCS = {k: sp.lambdify(SYM["symbols"], SYM[k], "numpy") for k in ("V", "rho", "A", "J",
                                                                       "J_new", "grad")}


def random_point(seed):
    rng = np.random.default_rng(seed)
    vals = dict(gamma=rng.uniform(0.1, 0.99), m=rng.uniform(0.05, 0.95))
    for s in range(2):
        for a in range(2):
            vals[f"p{s}{a}"] = rng.uniform(0.05, 0.95)
            vals[f"r{s}{a}"] = rng.normal()
            vals[f"f{s}{a}"] = rng.normal()
        vals[f"x{s}"] = rng.uniform(0.05, 0.95)
        vals[f"y{s}"] = rng.uniform(0.05, 0.95)
    args = [vals[n] for n in NAMES]
    P = np.zeros((2, 2, 2))
    for s in range(2):
        for a in range(2):
            P[s, a] = [vals[f"p{s}{a}"], 1 - vals[f"p{s}{a}"]]
    R = np.array([[vals["r00"], vals["r01"]], [vals["r10"], vals["r11"]]])
    mdp = pg.TabularMDP(P=P, R=R, gamma=vals["gamma"], mu=np.array([vals["m"], 1 - vals["m"]]))
    pi = np.array([[vals["x0"], 1 - vals["x0"]], [vals["x1"], 1 - vals["x1"]]])
    pi_new = np.array([[vals["y0"], 1 - vals["y0"]], [vals["y1"], 1 - vals["y1"]]])
    return args, mdp, pi, pi_new


@pytest.mark.parametrize("seed", range(5), ids=lambda s: f"seed={s}")
def test_pgtheory_matches_symbolic_mdp(seed):
    args, mdp, pi, pi_new = random_point(seed)
    assert rel_err(pg.state_values(mdp, pi), np.array(FUNCS["V"](*args))) < 1e-12
    assert rel_err(pg.discounted_visitation(mdp, pi, normalized=False),
                   np.array(FUNCS["rho"](*args))) < 1e-12
    assert rel_err(pg.advantages(mdp, pi), np.array(FUNCS["A"](*args))) < 1e-12
    pdl = pg.performance_difference(mdp, pi, pi_new)
    assert pdl.rho_form == pytest.approx(FUNCS["J_new"](*args) - FUNCS["J"](*args), rel=1e-10,
                                         abs=1e-12)
    param = pg.TabularSoftmax(2, 2)
    theta = np.log(pi).ravel()
    assert rel_err(pg.policy_gradient(mdp, param, theta),
                   np.array(FUNCS["grad"](*args)).ravel()) < 1e-12


@pytest.mark.parametrize("T", [1, 3, 5], ids=lambda t: f"T={t}")
def test_gae_matches_symbolic_sum_of_td_errors(T):
    (gamma, lam, r, V), expr = gae_reference(T)
    f = sp.lambdify((gamma, lam, *r, *V), expr, "numpy")
    rng = np.random.default_rng(T)
    g, lm = 0.93, 0.71
    rew, vals = rng.normal(size=T), rng.normal(size=T + 1)
    # a T-step rollout without episode ends; next_values = V(s_{t+1}), bootstrap V_T
    got = pg.gae(rew, vals[:T], np.zeros(T, bool), np.zeros(T, bool), g, lm,
                 next_values=vals[1:])
    assert got[0] == pytest.approx(f(g, lm, *rew, *vals), rel=1e-13, abs=1e-13)


def test_k3_estimator_expectation_is_pgtheory_kl():
    # proofs theorem kl_estimators: E_q[k3(p/q)] = KL(q || p)
    k3 = sp.lambdify(sp.Symbol("r"), KL_ESTIMATORS["k3"](sp.Symbol("r")), "numpy")
    rng = np.random.default_rng(0)
    for _ in range(5):
        q, p = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
        assert float(np.sum(q * k3(p / q))) == pytest.approx(float(pg.kl_divergence(q, p)),
                                                             rel=1e-12)
