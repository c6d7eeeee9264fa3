"""Policy evaluation, visitation and policy iteration against independent computations."""

import numpy as np
import pytest
from helpers import mdp_and_policies, mdps, rel_err
from hypothesis import given

import pgtheory as pg


def truncated_series_values(mdp, pi, horizon):
    """Independent route: V = sum_{t < H} gamma^t P_pi^t r_pi (Neumann series, dense)."""
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    r = np.einsum("sa,sa->s", pi, mdp.R)
    v, term = np.zeros_like(r), r.copy()
    for _ in range(horizon):
        v += term
        term = mdp.gamma * P_pi @ term
    return v


@given(mdp_and_policies(gamma_max=0.9))
def test_state_values_equal_neumann_series(case):
    # source: V_pi = sum_t gamma^t P_pi^t r_pi; with gamma <= 0.9, 400 terms leave < 0.9^400
    mdp, pi = case
    assert rel_err(pg.state_values(mdp, pi), truncated_series_values(mdp, pi, 400)) < 1e-10


@given(mdp_and_policies())
def test_bellman_equations_hold(case):
    # source: Bellman expectation equations (Sutton & Barto 2018, Sec. 3.5)
    mdp, pi = case
    v, q, a = pg.state_values(mdp, pi), pg.action_values(mdp, pi), pg.advantages(mdp, pi)
    assert rel_err(v, (pi * q).sum(axis=1)) < 1e-9
    assert rel_err(q, mdp.R + mdp.gamma * mdp.P @ v) < 1e-9
    assert rel_err(a, q - v[:, None]) < 1e-9
    assert np.max(np.abs((pi * a).sum(axis=1))) < 1e-9 * max(1.0, np.abs(q).max())
    assert np.all(v[mdp.terminal] == 0.0)
    assert pg.expected_return(mdp, pi) == pytest.approx(mdp.mu @ v, rel=1e-12, abs=1e-12)


@given(mdp_and_policies())
def test_visitation_conventions_and_identity(case):
    # sources: rho sums to 1/(1-gamma) and d = (1-gamma) rho (definitions);
    # J = sum_s rho(s) r_pi(s) (swap of sums in E[sum_t gamma^t r_t])
    mdp, pi = case
    rho = pg.discounted_visitation(mdp, pi, normalized=False)
    d = pg.discounted_visitation(mdp, pi)
    assert rho.sum() == pytest.approx(1.0 / (1.0 - mdp.gamma), rel=1e-10)
    assert d.sum() == pytest.approx(1.0, rel=1e-10)
    assert rel_err(d, (1.0 - mdp.gamma) * rho) < 1e-12
    assert pg.expected_return(mdp, pi) == pytest.approx(
        rho @ (pi * mdp.R).sum(axis=1), rel=1e-9, abs=1e-9)


def test_visitation_matches_forward_propagation():
    # source: rho = sum_t gamma^t (P_pi^T)^t mu, summed directly for 2000 steps at gamma 0.9
    mdp = pg.random_mdp(3, 7, 3, gamma=0.9, n_terminal=2)
    pi = np.full((7, 3), 1 / 3)
    P_pi = np.einsum("sa,sat->st", pi, mdp.P)
    x, rho = mdp.mu.copy(), np.zeros(7)
    for t in range(2000):
        rho += 0.9**t * x
        x = P_pi.T @ x
    assert rel_err(pg.discounted_visitation(mdp, pi, normalized=False), rho) < 1e-12


def simulate_state_counts(mdp, pi, n_steps, rng, time_limit=None):
    """Monte Carlo: fraction of environment steps spent in each state with resets."""
    S = mdp.n_states
    counts = np.zeros(S)
    s = rng.choice(S, p=mdp.mu)
    t = 0
    for _ in range(n_steps):
        counts[s] += 1
        a = rng.choice(mdp.n_actions, p=pi[s])
        s = rng.choice(S, p=mdp.P[s, a])
        t += 1
        if mdp.terminal[s] or (time_limit is not None and t >= time_limit):
            s, t = rng.choice(S, p=mdp.mu), 0
    return counts / n_steps


@pytest.mark.parametrize("time_limit", [None, 3], ids=["no-time-limit", "time-limit-3"])
def test_on_policy_distribution_matches_simulation(time_limit):
    # source: Monte Carlo with a fixed seed. The per-state frequency of a Markov chain has
    # standard error <= ~sqrt(tau p (1-p) / n); with n = 200k and short episodes (<= ~10
    # steps) a 0.01 absolute tolerance is > 5 standard errors.
    mdp = pg.random_mdp(11, 5, 2, gamma=0.9, n_terminal=1)
    pi = np.array([[0.3, 0.7]] * 5)
    eta = pg.on_policy_distribution(mdp, pi, time_limit=time_limit)
    freq = simulate_state_counts(mdp, pi, 200_000, np.random.default_rng(0), time_limit)
    assert np.max(np.abs(eta - freq)) < 0.01
    assert eta[mdp.terminal].sum() == 0.0


def test_on_policy_distribution_differs_from_discounted_visitation():
    # source: in the two-armed bandit only state 0 is ever acted in, while d puts gamma on
    # the absorbing terminal state: d = (1 - gamma, gamma), eta = (1, 0)
    mdp = pg.two_armed_bandit(gamma=0.9)
    pi = np.full((2, 2), 0.5)
    assert np.allclose(pg.on_policy_distribution(mdp, pi), [1.0, 0.0])
    assert np.allclose(pg.discounted_visitation(mdp, pi), [0.1, 0.9])


def test_on_policy_distribution_continuing_needs_time_limit():
    mdp = pg.chain(4)
    pi = np.full((4, 2), 0.5)
    with pytest.raises(pg.SolverError, match="time_limit"):
        pg.on_policy_distribution(mdp, pi)
    # with a limit of 1 step only start states are seen: eta = mu
    assert np.allclose(pg.on_policy_distribution(mdp, pi, time_limit=1), mdp.mu)


def value_iteration(mdp, n_iter=3000):
    """Independent route to V*: Bellman optimality iterations (contraction at gamma)."""
    v = np.zeros(mdp.n_states)
    for _ in range(n_iter):
        v = (mdp.R + mdp.gamma * mdp.P @ v).max(axis=1)
    return v


@given(mdps(gamma_max=0.9))
def test_policy_iteration_matches_value_iteration(mdp):
    # source: value iteration error <= gamma^n max|R| / (1 - gamma) -> 0.9^3000 ~ 1e-137
    res = pg.policy_iteration(mdp)
    assert res.converged
    assert rel_err(res.state_values, value_iteration(mdp)) < 1e-9
    assert np.all(res.policy.sum(axis=1) == 1.0)


def test_sparse_and_dense_models_agree():
    # source: the same model stored two ways must give the same numbers
    dense = pg.random_mdp(5, 30, 3, gamma=0.95, n_successors=4, n_terminal=3)
    import scipy.sparse as sp
    sparse = pg.TabularMDP(P=sp.csr_array(dense.P.reshape(90, 30)), R=dense.R, gamma=0.95,
                           mu=dense.mu, terminal=dense.terminal)
    pi = np.random.default_rng(0).dirichlet(np.ones(3), size=30)
    for solver in ("iterative", "direct"):
        assert rel_err(pg.state_values(sparse, pi, solver=solver),
                       pg.state_values(dense, pi)) < 1e-10
        assert rel_err(pg.discounted_visitation(sparse, pi, solver=solver),
                       pg.discounted_visitation(dense, pi)) < 1e-10
    assert rel_err(pg.advantages(sparse, pi), pg.advantages(dense, pi)) < 1e-10
    for tl in (None, 7):
        assert rel_err(pg.on_policy_distribution(sparse, pi, time_limit=tl),
                       pg.on_policy_distribution(dense, pi, time_limit=tl)) < 1e-10
    assert rel_err(pg.policy_iteration(sparse).state_values,
                   pg.policy_iteration(dense).state_values) < 1e-10


def test_sparse_evaluation_at_100k_states():
    # source: Bellman residual of the returned solution (the defining equation)
    mdp = pg.random_mdp(0, 100_000, 4, gamma=0.99, n_successors=3, sparse=True)
    pi = np.full((100_000, 4), 0.25)
    v = pg.state_values(mdp, pi)
    P_pi = mdp.transition_matrix(pi)
    resid = v - mdp.policy_reward(pi) - 0.99 * (P_pi @ v)
    assert np.max(np.abs(resid)) < 1e-8 * max(1.0, np.abs(v).max())
    d = pg.discounted_visitation(mdp, pi)
    assert d.sum() == pytest.approx(1.0, rel=1e-9)
