"""Closed forms of pgtheory.lqr for affine-Gaussian policies ``N(-K x + k, D)`` and time limits,
against independent routes: vectorized Monte Carlo simulation of the model (seeded; tolerance
5 standard errors of the Monte Carlo mean, so a correct formula fails with probability below
6e-7 per comparison), Gauss-Hermite quadrature of the Bellman equation, the zero-bias functions
and the symbolic Gaussian KL of ``pgtheory.proofs``.

Every Monte Carlo test also shows its power: the same comparison rejects a plausible wrong
formula (the bias ignored, the cross term dropped, the phase ignored)."""

import numpy as np
import pytest
import sympy as sp
from pgtheory.proofs.distribution_theorems import gaussian_kl_closed_form
from test_lqr import random_problem

import pgtheory.lqr as lqr
from pgtheory.errors import InvalidArgumentError

Z = 5.0  # standard errors allowed in every Monte Carlo comparison


def affine_problem(seed, n=None, m=None, gamma=None):
    model, K, ls = random_problem(seed, n=n, m=m, gamma=gamma)
    k = np.random.default_rng(seed + 1).normal(size=model.n_action)
    return model, K, ls, k


def simulate(model, K, ls, k, steps, n_paths, seed, x0=None):
    """States (steps + 1, n_paths, n) and rewards (steps, n_paths) of the affine policy."""
    rng = np.random.default_rng(seed)
    n = model.n_state
    x = (rng.multivariate_normal(np.zeros(n), model.Sigma0, size=n_paths) if x0 is None
         else np.broadcast_to(x0, (n_paths, n)).copy())
    Ks, lss, ks = (np.broadcast_to(K, (steps, *np.shape(K)[-2:])),
                   np.broadcast_to(ls, (steps, model.n_action)),
                   np.broadcast_to(k, (steps, model.n_action)))
    xs, rs = [x], []
    for t in range(steps):
        u = -x @ Ks[t].T + ks[t] + np.exp(lss[t]) * rng.normal(size=(n_paths, model.n_action))
        rs.append(-(np.einsum("bi,ij,bj->b", x, model.Q, x)
                    + np.einsum("bi,ij,bj->b", u, model.R, u)))
        w = rng.multivariate_normal(np.zeros(n), model.W, size=n_paths)
        x = x @ model.A.T + u @ model.B.T + w
        xs.append(x)
    return np.array(xs), np.array(rs)


def within(estimate_samples, exact):
    """|mean - exact| <= Z * standard error, componentwise; returns the z-scores."""
    s = np.asarray(estimate_samples, dtype=float)
    se = s.std(axis=0, ddof=1) / np.sqrt(len(s)) + 1e-15
    return np.abs(s.mean(axis=0) - exact) / se


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_state_moments_against_monte_carlo(seed):
    model, K, ls, k = affine_problem(seed, gamma=0.9)
    law = lqr.state_moments(model, K, ls, 6, bias=k)
    xs, _ = simulate(model, K, ls, k, 6, 40_000, seed)
    for t in (1, 3, 6):
        assert within(xs[t], law.mean[t]).max() < Z
        outer = np.einsum("bi,bj->bij", xs[t], xs[t])
        assert within(outer, law.second_moment[t]).max() < Z
    # power: the zero-bias law is rejected
    assert within(xs[3], lqr.state_moments(model, K, ls, 6).mean[3]).max() > Z


def test_state_moments_time_varying_policy():
    # source: the recursion with a per-step policy equals stepping the stationary one piecewise
    model, K, ls, k = affine_problem(4, n=3, m=2, gamma=0.9)
    K2, k2 = 0.5 * K, -k
    Ks, ks = np.stack([K, K, K2, K2]), np.stack([k, k, k2, k2])
    law = lqr.state_moments(model, Ks, ls, 4, bias=ks)
    xs, _ = simulate(model, Ks, ls, ks, 4, 40_000, 7)
    assert within(xs[4], law.mean[4]).max() < Z
    assert within(np.einsum("bi,bj->bij", xs[4], xs[4]), law.second_moment[4]).max() < Z
    assert within(xs[4], lqr.state_moments(model, K, ls, 4, bias=k).mean[4]).max() > Z


@pytest.mark.parametrize("seed", [0, 5, 9])
def test_finite_horizon_return_against_monte_carlo(seed):
    model, K, ls, k = affine_problem(seed)
    T = 8
    J = lqr.finite_horizon_return(model, K, ls, T, bias=k)
    _, rs = simulate(model, K, ls, k, T, 40_000, seed + 100)
    G = (model.gamma ** np.arange(T)) @ rs
    assert within(G, J) < Z
    # the backward values give the same J (two independent recursions)
    V0 = lqr.finite_horizon_values(model, K, ls, T, bias=k)[0]
    assert -(np.trace(V0.P @ model.Sigma0) + V0.c) == pytest.approx(J, rel=1e-10)
    assert within(G, lqr.finite_horizon_return(model, K, ls, T)) > Z  # power


@pytest.mark.parametrize("seed", [1, 3])
def test_finite_horizon_values_against_monte_carlo(seed):
    # source: V_t(x) is the mean discounted return of the T - t remaining steps from x
    model, K, ls, k = affine_problem(seed, gamma=0.9)
    T, t = 6, 2
    x0 = np.random.default_rng(seed).normal(size=model.n_state)
    V = lqr.finite_horizon_values(model, K, ls, T, bias=k)
    _, rs = simulate(model, K, ls, k, T - t, 40_000, seed + 200, x0=x0)
    G = (model.gamma ** np.arange(T - t)) @ rs
    assert within(G, V[t](x0)) < Z
    assert V[T](x0) == 0.0
    wrong = lqr.QuadraticValue(V[t].P, V[t].c)  # the linear term dropped
    assert within(G, wrong(x0)) > Z or abs(V[t].p @ x0) < 1e-3


@pytest.mark.parametrize("seed", range(6))
def test_affine_value_satisfies_bellman_by_quadrature(seed):
    # source: V(x) = E[r(x, u) + gamma V(x')], the expectation over u and w by Gauss-Hermite
    # quadrature (exact for quadratics with 3 nodes per dimension)
    model, K, ls, k = affine_problem(seed, m=1)
    V = lqr.value_function(model, K, ls, bias=k)
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    x = np.random.default_rng(seed).normal(size=(5, model.n_state))
    sigma = np.exp(ls[0])
    u = (-(x @ K.T) + k)[:, None, :] + sigma * nodes[None, :, None]  # (5, 3, 1)
    r = -(np.einsum("bi,ij,bj->b", x, model.Q, x)[:, None] + model.R[0, 0] * u[..., 0] ** 2)
    nxt = (x @ model.A.T)[:, None, :] + u @ model.B.T  # mean of x' given x, u
    future = V(nxt) - np.trace(V.P @ model.W)  # E_w V(x' + w) = V(x') - tr(P W)
    rhs = (r + model.gamma * future) @ weights
    assert np.max(np.abs(rhs - V(x))) < 1e-9 * max(1.0, np.abs(V(x)).max())
    wrong = lqr.value_function(model, K, ls)  # the bias ignored
    assert np.max(np.abs(rhs - wrong(x))) > 1e-6


@pytest.mark.parametrize("seed", range(6))
def test_affine_advantage_has_zero_mean_under_the_policy(seed):
    # source: E_{u ~ pi(.|x)}[A(x, u)] = 0 for the affine policy, by Gauss-Hermite quadrature
    # over u (exact for the quadratic integrand with 3 nodes)
    model, K, ls, k = affine_problem(seed, m=1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    x = np.random.default_rng(seed).normal(size=(4, model.n_state))
    u = (-(x @ K.T) + k)[:, None, :] + np.exp(ls[0]) * nodes[None, :, None]
    xs = np.repeat(x[:, None, :], 3, axis=1)
    A = lqr.advantages(model, K, ls, xs, u, bias=k)
    scale = max(1.0, np.abs(lqr.value_function(model, K, ls, bias=k)(x)).max())
    assert np.max(np.abs(A @ weights)) < 1e-9 * scale
    wrong = lqr.advantages(model, K, ls, xs, u)  # the bias ignored in Q and V
    assert np.max(np.abs(wrong @ weights)) > 1e-6 * scale
    z = np.zeros(1)
    assert np.allclose(lqr.action_values(model, K, ls, xs, u, bias=z),
                       lqr.action_values(model, K, ls, xs, u), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_finite_horizon_values_converge_to_discounted(seed):
    # source: V_0 of a horizon T tends to V (the discounted infinite-horizon value) as T grows
    # for a loop stable under the discount (the gap is O(gamma^T rho^T))
    model, K, ls, k = affine_problem(seed, gamma=0.5)
    V = lqr.value_function(model, K, ls, bias=k)
    V0 = lqr.finite_horizon_values(model, K, ls, 400, bias=k)[0]
    assert np.allclose(V0.P, V.P, rtol=1e-9, atol=1e-12)
    assert np.allclose(V0.p, V.p, rtol=1e-9, atol=1e-12)
    assert V0.c == pytest.approx(V.c, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_zero_bias_reproduces_the_linear_forms(seed):
    model, K, ls = random_problem(seed)
    z = np.zeros(model.n_action)
    V, V_b = lqr.value_function(model, K, ls), lqr.value_function(model, K, ls, bias=z)
    assert np.array_equal(V.P, V_b.P) and V.c == pytest.approx(V_b.c, rel=1e-12)
    assert np.all(V_b.p == 0)
    assert lqr.expected_return(model, K, ls, bias=z) == pytest.approx(
        lqr.expected_return(model, K, ls), rel=1e-12)
    assert lqr.finite_horizon_return(model, K, ls, 7, bias=z) == lqr.finite_horizon_return(
        model, K, ls, 7)
    # finite horizon against the linear form of the module docstring, summed directly
    law = lqr.state_moments(model, K, ls, 6)
    assert np.all(law.mean == 0)
    D = np.diag(np.exp(2 * ls))
    M = model.Q + K.T @ model.R @ K
    J = -sum(model.gamma**t * (np.trace(M @ law.covariance[t]) + np.trace(model.R @ D))
             for t in range(7))
    assert lqr.finite_horizon_return(model, K, ls, 7) == pytest.approx(J, rel=1e-10)
    K2, l2 = K + 0.1, ls - 0.2
    assert lqr.kl_divergence(model, K, ls, K2, l2, bias=z, bias_new=z,
                             state_mean=np.ones(model.n_state)) == pytest.approx(
        lqr.kl_divergence(model, K, ls, K2, l2), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_affine_expected_return_against_monte_carlo(seed):
    # source: the discounted return simulated for 200 steps (gamma 0.5: truncation 1e-60)
    model, K, ls, k = affine_problem(seed, gamma=0.5)
    k = 3.0 * k  # a bias large enough for the power check below
    _, rs = simulate(model, K, ls, k, 200, 20_000, seed + 300)
    G = (0.5 ** np.arange(200)) @ rs
    assert within(G, lqr.expected_return(model, K, ls, bias=k)) < Z
    assert within(G, lqr.expected_return(model, K, ls)) > Z


@pytest.mark.parametrize("seed", [0, 2, 6])
def test_affine_kl_against_sampled_states_and_the_symbolic_kl(seed):
    # sources: proofs theorem gaussian_kl (the per-state KL of diagonal Gaussians, sympy,
    # lambdified) averaged over Monte Carlo states of the buffer law; the closed form needs
    # only the state mean and second moment
    model, K, ls, k = affine_problem(seed, n=2, m=2, gamma=0.9)
    rng = np.random.default_rng(seed)
    K2, l2, k2 = K + 0.2 * rng.normal(size=K.shape), ls + 0.1, k + 0.3 * rng.normal(size=2)
    s1, s2, m1, m2 = sp.symbols("s1 s2 m1 m2", real=True)
    f = sp.lambdify((s1, s2, m1, m2), gaussian_kl_closed_form(s1, s2, m1, m2), "numpy")
    phases = np.array([0, 3, 5])
    T, L = 6, 10
    xs, _ = simulate(model, K, ls, k, T - 1, 20_000, seed + 400)
    elapsed = (phases[None, :] + np.arange(L)[:, None]) % T
    idx = rng.choice(elapsed.ravel(), size=20_000)  # a uniform buffer position per path
    x = xs[idx, np.arange(20_000)]
    mean1, mean2 = -x @ K.T + k, -x @ K2.T + k2
    per_state = sum(f(np.exp(ls[i]), np.exp(l2[i]), mean1[:, i], mean2[:, i]) for i in range(2))
    mu, S = lqr.buffer_state_moments(model, K, ls, time_limit=T, num_steps=L, phases=phases,
                                     bias=k)
    exact = lqr.kl_divergence(model, K, ls, K2, l2, state_second_moment_=S, bias=k,
                              bias_new=k2, state_mean=mu)
    assert within(per_state, exact) < Z
    # power: the phases ignored (every env starting a fresh episode at the buffer start)
    mu0, S0 = lqr.buffer_state_moments(model, K, ls, time_limit=T, num_steps=L,
                                       phases=np.zeros(3, int), bias=k)
    wrong = lqr.kl_divergence(model, K, ls, K2, l2, state_second_moment_=S0, bias=k,
                              bias_new=k2, state_mean=mu0)
    no_cross = lqr.kl_divergence(model, K, ls, K2, l2, state_second_moment_=S, bias=k,
                                 bias_new=k2)  # the 2 h^T D^-1 G mu term dropped
    assert within(per_state, wrong) > Z or within(per_state, no_cross) > Z


def test_buffer_state_moments_against_simulated_buffers():
    # source: a simulated buffer of continuous collection (episodes cut by the time limit,
    # buffer start in mid-episode) averaged over positions
    model, K, ls, k = affine_problem(8, n=2, m=1, gamma=0.9)
    T, L, phases = 5, 7, np.array([0, 2, 4])
    n_buf = 20_000
    xs, _ = simulate(model, K, ls, k, T - 1, n_buf * 3, 11)
    xs = xs.reshape(T, n_buf, 3, model.n_state)
    elapsed = (phases[None, :] + np.arange(L)[:, None]) % T  # (L, 3)
    # each buffer's positions use independent episodes (the mixture law is per position)
    per_buffer = np.stack([xs[elapsed[:, j], :, j] for j in range(3)], axis=1)  # (L, 3, B, n)
    mean_b = per_buffer.mean(axis=(0, 1))
    second_b = np.einsum("ljbi,ljbk->bik", per_buffer, per_buffer) / (L * 3)
    mu, S = lqr.buffer_state_moments(model, K, ls, time_limit=T, num_steps=L, phases=phases,
                                     bias=k)
    assert within(mean_b, mu).max() < Z
    assert within(second_b, S).max() < Z


def test_bad_input():
    model, K, ls, _ = affine_problem(0, n=2, m=1)
    with pytest.raises(InvalidArgumentError, match="bias: expected shape"):
        lqr.value_function(model, K, ls, bias=np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="phases"):
        lqr.buffer_state_moments(model, K, ls, time_limit=4, num_steps=3, phases=[4])
    with pytest.raises(InvalidArgumentError, match="K: expected shape"):
        lqr.state_moments(model, np.zeros((3, 2, 2)), ls, 3)
    with pytest.raises(InvalidArgumentError, match="state_mean"):
        lqr.kl_divergence(model, K, ls, K, ls, state_second_moment_=np.eye(2),
                          state_mean=np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="steps"):
        lqr.state_moments(model, K, ls, -1)
