"""Policy gradients, Fisher matrices, natural gradients, NPG/TRPO/PPO against independent routes."""

import numpy as np
import pytest
from helpers import fd_gradient, fd_hessian, mdps, rel_err, thetas
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import rel_entr

import pgtheory as pg


def linear_param(mdp, seed, d=3):
    feats = np.random.default_rng(seed).normal(size=(mdp.n_states, mdp.n_actions, d))
    return pg.LinearSoftmax(feats)


def J_of(mdp, param):
    return lambda th: pg.expected_return(mdp, param.probs(th))


@st.composite
def problems(draw, kind="tabular", gamma_max=0.99):
    mdp = draw(mdps(gamma_max=gamma_max))
    if kind == "tabular":
        param = pg.TabularSoftmax(mdp.n_states, mdp.n_actions)
    else:
        param = linear_param(mdp, draw(st.integers(0, 1000)))
    theta = draw(thetas(param.n_params, scale=1.0))
    return mdp, param, theta


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@given(data=st.data())
def test_policy_gradient_matches_finite_differences(kind, data):
    # source: five-point finite differences of J (O(h^4) truncation, h = 1e-3)
    mdp, param, theta = data.draw(problems(kind))
    g = pg.policy_gradient(mdp, param, theta)
    assert rel_err(g, fd_gradient(J_of(mdp, param), theta)) < 1e-8


@given(mdps())
def test_direct_policy_gradient_along_the_simplex(mdp):
    # source: the directional derivative of J(pi + t v) at t = 0 for per-state zero-sum v,
    # by finite differences; and the closed form dJ/dpi(a|s) = d(s) Q(s, a) / (1 - gamma)
    rng = np.random.default_rng(0)
    pi = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    param = pg.DirectParameterization(mdp.n_states, mdp.n_actions)
    g = pg.policy_gradient(mdp, param, pi.ravel())
    d, q = pg.discounted_visitation(mdp, pi), pg.action_values(mdp, pi)
    assert rel_err(g, (d[:, None] * q / (1 - mdp.gamma)).ravel()) < 1e-9
    v = rng.normal(size=pi.shape)
    v -= v.mean(axis=1, keepdims=True)
    v *= 0.1 * pi.min() / max(np.abs(v).max(), 1e-300)  # keep pi + t v inside the simplex
    fd = fd_gradient(lambda t: pg.expected_return(mdp, pi + t[0] * v), np.zeros(1), h=1e-2)
    assert fd[0] == pytest.approx(g @ v.ravel(), rel=1e-7, abs=1e-9)


@given(problems("tabular"))
def test_tabular_softmax_gradient_closed_form(case):
    # source: Agarwal et al. (2021), Sec. 4: dJ/dtheta[s, a] = d(s) pi(a|s) A(s, a) / (1 - gamma)
    mdp, param, theta = case
    pi = param.probs(theta)
    expect = pg.discounted_visitation(mdp, pi)[:, None] * pi * pg.advantages(mdp, pi)
    assert rel_err(pg.policy_gradient(mdp, param, theta), expect.ravel() / (1 - mdp.gamma)) < 1e-9


def mean_kl_fn(mdp, param, theta):
    """theta' -> E_{s ~ w}[KL(pi_theta || pi_theta')] with w frozen at theta."""
    pi = param.probs(theta)
    w = pg.action_state_weights(mdp, pi)
    return lambda th: float(w @ rel_entr(pi, param.probs(th)).sum(axis=1))


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@given(data=st.data())
def test_fisher_equals_kl_hessian(kind, data):
    # source: identity F = E[-Hess log pi] = Hessian of the mean KL (Amari 1998); the first
    # comparison is between two code paths (scores vs second derivatives), the second
    # against finite differences of the mean KL itself
    mdp, param, theta = data.draw(problems(kind, gamma_max=0.9))
    F = pg.fisher_matrix(mdp, param, theta)
    H = pg.kl_hessian(mdp, param, theta)
    assert rel_err(F, H) < 1e-9
    assert np.allclose(F, F.T)
    assert np.linalg.eigvalsh(F).min() > -1e-12
    if param.n_params <= 12:
        fd = fd_hessian(mean_kl_fn(mdp, param, theta), theta, h=1e-2)
        assert rel_err(fd, F) < 1e-6


@given(problems("tabular"))
def test_tabular_natural_gradient_is_centred_advantage(case):
    # source: Agarwal et al. (2021), Lemma 5.1: F^+ grad J = A / (1 - gamma) up to per-state
    # constants; the pseudo-inverse picks the per-state centred (minimum-norm) version
    mdp, param, theta = case
    pi = param.probs(theta)
    A = pg.advantages(mdp, pi)
    w = pg.action_state_weights(mdp, pi)
    expect = (A - A.mean(axis=1, keepdims=True)) / (1 - mdp.gamma)
    expect[w <= 1e-12 * w.max()] = 0.0
    got = pg.natural_gradient(mdp, param, theta).reshape(pi.shape)
    mask = w > 1e-6 * w.max()
    assert rel_err(got[mask], expect[mask]) < 1e-7


@given(problems("tabular"), st.sampled_from([0.1, 1.0, 5.0]))
def test_npg_step_is_soft_policy_iteration(case, eta):
    # source: Agarwal et al. (2021), Lemma 5.1: pi_new ∝ pi exp(eta A / (1 - gamma))
    mdp, param, theta = case
    pi = param.probs(theta)
    w = pg.action_state_weights(mdp, pi)
    mask = w > 1e-6 * max(w.max(), 1e-300)
    new = param.probs(pg.npg_step(mdp, param, theta, eta))
    logits = np.log(pi) + eta * pg.advantages(mdp, pi) / (1 - mdp.gamma)
    expect = np.exp(logits - logits.max(axis=1, keepdims=True))
    expect /= expect.sum(axis=1, keepdims=True)
    assert rel_err(new[mask], expect[mask]) < 1e-7


@given(problems("linear"))
def test_linear_natural_gradient_solves_fisher_system(case):
    # source: definition of the pseudo-inverse solution; grad J lies in range(F) because
    # grad J = E[score * Q] / (1 - gamma) and range(F) = span of the weighted scores
    mdp, param, theta = case
    F = pg.fisher_matrix(mdp, param, theta)
    g = pg.policy_gradient(mdp, param, theta)
    x = pg.natural_gradient(mdp, param, theta)
    assert rel_err(F @ x, g) < 1e-7 * max(1.0, np.abs(x).max())


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@given(data=st.data(), delta=st.sampled_from([1e-3, 1e-2, 0.1]))
def test_trpo_step_respects_trust_region(kind, data, delta):
    # source: TRPO Appendix C: the full step satisfies (1/2) s^T F s = delta; the line search
    # accepts only KL <= delta with positive surrogate improvement
    mdp, param, theta = data.draw(problems(kind, gamma_max=0.9))
    res = pg.trpo_step(mdp, param, theta, max_kl=delta)
    g = pg.policy_gradient(mdp, param, theta)
    if np.abs(g).max() < 1e-9:
        return
    F = pg.fisher_matrix(mdp, param, theta)
    assert 0.5 * res.full_step @ F @ res.full_step == pytest.approx(delta, rel=1e-7)
    if res.accepted:
        assert res.mean_kl <= delta
        assert res.surrogate_improvement > 0
        new = param.probs(res.theta)
        assert res.mean_kl == pytest.approx(
            pg.policy_divergence(mdp, param.probs(theta), new).mean_kl, rel=1e-10)
    else:
        assert np.array_equal(res.theta, theta)


def test_trpo_quadratic_model_is_second_order_accurate():
    # source: KL = (1/2) s^T F s + O(|s|^3): the relative error shrinks linearly with |s|,
    # i.e. by ~10x per 100x smaller delta
    mdp = pg.random_mdp(1, 5, 3, gamma=0.9)
    param = pg.TabularSoftmax(5, 3)
    theta = np.random.default_rng(1).normal(size=15)
    errs = []
    for delta in (1e-2, 1e-4, 1e-6):
        res = pg.trpo_step(mdp, param, theta, max_kl=delta)
        assert res.accepted and res.step_fraction == 1.0
        errs.append(abs(res.mean_kl - res.quadratic_kl) / res.quadratic_kl)
    assert errs[1] < errs[0] / 5 and errs[2] < errs[1] / 5


@given(problems("tabular"))
def test_ppo_objective_at_old_policy(case):
    # source: PPO (arXiv:1707.06347v2) Eq. (7) at r = 1: L = E[A] = 0 and the gradient is the
    # vanilla policy gradient E_{w x pi}[A grad log pi] = (1 - gamma) grad J when w = d
    mdp, param, theta = case
    out = pg.ppo_objective(mdp, param, theta, theta)
    assert abs(out.value) < 1e-9 * max(1.0, np.abs(pg.advantages(mdp, param.probs(theta))).max())
    assert out.clip_fraction == 0.0
    expect = (1 - mdp.gamma) * pg.policy_gradient(mdp, param, theta)
    assert rel_err(out.gradient, expect) < 1e-9


@pytest.mark.parametrize("kind", ["tabular", "linear"])
@given(data=st.data())
def test_ppo_gradient_matches_finite_differences(kind, data):
    # source: five-point finite differences of the exact objective away from theta_old (the
    # objective is piecewise smooth; examples whose ratios lie within 1e-4 of a clip
    # boundary are skipped since the derivative jumps there)
    mdp, param, theta_old = data.draw(problems(kind, gamma_max=0.9))
    theta = theta_old + data.draw(thetas(param.n_params, scale=0.3))
    r = param.probs(theta) / param.probs(theta_old)
    if np.min(np.abs(np.abs(r - 1) - 0.2)) < 1e-2:
        return
    f = lambda th: pg.ppo_objective(mdp, param, th, theta_old).value  # noqa: E731
    got = pg.ppo_objective(mdp, param, theta, theta_old).gradient
    assert rel_err(got, fd_gradient(f, theta, h=1e-5)) < 1e-7


def test_ppo_clipping_zeroes_gradient_outside_the_range():
    # source: PPO Eq. (7) case table (proofs issue, theorem 9): with A > 0 and r > 1 + eps the
    # min picks the constant clipped term
    mdp = pg.two_armed_bandit((0.0, 1.0), gamma=0.5)
    param = pg.sigmoid_policy(2)
    old = np.array([0.0])  # pi(1) = 0.5, A(0, 1) = +0.5, A(0, 0) = -0.5
    new = np.array([2.0])  # pi(1) = 0.88: r1 = 1.76 > 1.2 (clipped); r0 = 0.24 < 0.8 (clipped)
    out = pg.ppo_objective(mdp, param, new, old, clip_range=0.2)
    assert out.gradient[0] == 0.0
    assert out.clip_fraction == pytest.approx(1.0)
    # value: w(0) = 1 - gamma = 0.5; 0.5 * [0.5 * 1.2 * 0.5 + 0.5 * 0.8 * (-0.5)] = 0.05
    assert out.value == pytest.approx(0.05, rel=1e-12)


@pytest.mark.parametrize("kind", ["tabular", "linear"])
def test_sparse_fisher_equals_dense(kind):
    # source: the same matrix in two storage formats
    mdp = pg.random_mdp(4, 6, 3, gamma=0.9, n_terminal=1)
    param = pg.TabularSoftmax(6, 3) if kind == "tabular" else linear_param(mdp, 0)
    theta = np.random.default_rng(4).normal(size=param.n_params)
    F = pg.fisher_matrix(mdp, param, theta)
    Fs = pg.fisher_matrix(mdp, param, theta, sparse=True)
    assert type(Fs).__name__ == "csr_array"
    assert np.array_equal(Fs.toarray(), F)
