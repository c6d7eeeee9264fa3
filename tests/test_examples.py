"""Named MDPs against their closed forms."""

import numpy as np
import pytest
import scipy.optimize as so
import sympy as sym
from helpers import rel_err

import pgtheory as pg


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("theta", [-2.0, 0.0, 0.7], ids=["theta=-2", "theta=0", "theta=0.7"])
def test_sigmoid_bandit_closed_forms(theta):
    # source: J = s r1 + (1 - s) r0 with s = sigmoid(theta); dJ/dtheta = s(1-s)(r1-r0);
    # F = d(0) s(1-s) with d(0) = 1 - gamma (state 0 is visited once, at t = 0), so the
    # natural gradient is (r1 - r0) / (1 - gamma)
    r0, r1, gamma = 0.3, 1.5, 0.8
    mdp = pg.two_armed_bandit((r0, r1), gamma=gamma)
    param = pg.sigmoid_policy(2)
    th = np.array([theta])
    s = sigmoid(theta)
    assert pg.expected_return(mdp, param.probs(th)) == pytest.approx(s * r1 + (1 - s) * r0,
                                                                      rel=1e-13)
    assert pg.policy_gradient(mdp, param, th)[0] == pytest.approx(s * (1 - s) * (r1 - r0),
                                                                   rel=1e-12)
    assert pg.fisher_matrix(mdp, param, th)[0, 0] == pytest.approx((1 - gamma) * s * (1 - s),
                                                                    rel=1e-12)
    assert pg.natural_gradient(mdp, param, th)[0] == pytest.approx((r1 - r0) / (1 - gamma),
                                                                    rel=1e-10)


def short_corridor_symbolic():
    """Discounted J(p) of the short corridor, solved from its Bellman equations by sympy."""
    p, g = sym.symbols("p gamma", positive=True)
    v0, v1, v2 = sym.symbols("v0 v1 v2")
    sol = sym.solve([sym.Eq(v0, -1 + g * (p * v1 + (1 - p) * v0)),
                     sym.Eq(v1, -1 + g * (p * v0 + (1 - p) * v2)),
                     sym.Eq(v2, -1 + g * (1 - p) * v1)], [v0, v1, v2], dict=True)[0]
    return p, g, sym.simplify(sol[v0])


def test_short_corridor_matches_symbolic_bellman_solution():
    # source: sympy solve of the three Bellman equations (independent of pgtheory's solver)
    p, g, j = short_corridor_symbolic()
    f = sym.lambdify((p, g), j)
    param = pg.sigmoid_policy(4)
    for gamma in (0.5, 0.9, 0.99):
        mdp = pg.short_corridor(gamma=gamma)
        for theta in (-1.0, 0.2, 1.3):
            prob = sigmoid(theta)
            got = pg.expected_return(mdp, param.probs(np.array([theta])))
            assert got == pytest.approx(f(prob, gamma), rel=1e-11)


def test_short_corridor_undiscounted_limit_is_sutton_barto_formula():
    # source: Sutton & Barto (2018), Example 13.1: J(p) = (2p - 4) / (p (1 - p)); checked
    # symbolically as the gamma -> 1 limit of the sympy solution, and numerically for
    # pgtheory at gamma = 1 - 1e-9 (the difference is O(1 - gamma) times E[length^2]).
    p, g, j = short_corridor_symbolic()
    assert sym.simplify(j.subs(g, 1) - (2 * p - 4) / (p * (1 - p))) == 0
    param = pg.sigmoid_policy(4)
    mdp = pg.short_corridor(gamma=1 - 1e-9)
    for prob in (0.2, 0.5, 2 - np.sqrt(2), 0.8):
        theta = np.array([np.log(prob / (1 - prob))])
        got = pg.expected_return(mdp, param.probs(theta))
        assert got == pytest.approx((2 * prob - 4) / (prob * (1 - prob)), rel=1e-6)


def test_short_corridor_optimum():
    # source: Sutton & Barto (2018), Example 13.1: p* = 2 - sqrt(2) ~ 0.586 (gamma -> 1)
    param = pg.sigmoid_policy(4)
    mdp = pg.short_corridor(gamma=1 - 1e-9)

    def neg_j(theta):
        return -pg.expected_return(mdp, param.probs(np.array([theta])))

    res = so.minimize_scalar(neg_j, bracket=(-1.0, 1.0), tol=1e-10)
    assert sigmoid(res.x) == pytest.approx(2 - np.sqrt(2), abs=1e-4)
    # and the exact policy gradient vanishes there
    assert abs(pg.policy_gradient(mdp, param, np.array([res.x]))[0]) < 1e-4


@pytest.mark.parametrize("n", [2, 5, 9], ids=lambda n: f"n={n}")
def test_chain_optimal_values(n):
    # source: from state i the best plan walks straight to one end and stays there:
    # V*(i) = max(gamma^(n-1-i) r_goal, gamma^i r_trap) / (1 - gamma)
    gamma = 0.9
    mdp = pg.chain(n, gamma=gamma, goal_reward=1.0, trap_reward=0.1)
    i = np.arange(n)
    expect = np.maximum(gamma ** (n - 1 - i), 0.1 * gamma**i) / (1 - gamma)
    assert rel_err(pg.policy_iteration(mdp).state_values, expect) < 1e-12


def test_gridworld_optimal_values():
    # source: deterministic moves: the goal is entered after Manhattan-distance steps, the
    # reward 1 arrives on the last of them, so V*(s) = gamma^(dist - 1)
    w, h, gamma = 4, 3, 0.9
    mdp = pg.gridworld(w, h, gamma=gamma)
    x, y = np.arange(w * h) % w, np.arange(w * h) // w
    dist = (w - 1 - x) + (h - 1 - y)
    expect = np.where(dist > 0, gamma ** (dist - 1.0), 0.0)
    assert rel_err(pg.policy_iteration(mdp).state_values, expect) < 1e-12


def test_gridworld_slip_rows_are_distributions():
    mdp = pg.gridworld(3, 3, slip=0.3)
    assert np.allclose(mdp.P.sum(axis=2), 1.0)
    assert mdp.terminal.sum() == 1
