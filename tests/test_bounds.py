"""Performance difference lemma, surrogate, and the TRPO / CPI / CPO lower bounds."""

import numpy as np
import pytest
from helpers import fd_gradient, mdp_and_policies, rel_err
from hypothesis import given
from hypothesis import strategies as st

import pgtheory as pg


@given(mdp_and_policies(n_policies=2))
def test_performance_difference_three_forms_agree(case):
    # source: Kakade & Langford (2002) Lemma 6.1; the four numbers come from different solves
    mdp, pi, pi_new = case
    pdl = pg.performance_difference(mdp, pi, pi_new)
    scale = max(1.0, abs(pg.expected_return(mdp, pi)))
    for form in (pdl.trajectory_form, pdl.rho_form, pdl.d_form):
        assert abs(form - pdl.difference) < 1e-9 * scale


@given(mdp_and_policies(n_policies=1))
def test_surrogate_matches_return_to_first_order(case):
    # source: TRPO Sec. 2: L_pi(pi) = J(pi) and grad L = grad J at pi (finite differences of
    # theta -> L_pi(pi_theta) against the exact policy gradient)
    mdp, pi = case
    param = pg.TabularSoftmax(mdp.n_states, mdp.n_actions)
    theta = np.log(pi).ravel()
    assert pg.surrogate(mdp, pi, pi) == pytest.approx(pg.expected_return(mdp, pi), rel=1e-10,
                                                      abs=1e-10)
    L = lambda th: pg.surrogate(mdp, pi, param.probs(th))  # noqa: E731
    assert rel_err(fd_gradient(L, theta), pg.policy_gradient(mdp, param, theta)) < 1e-8


def perturbed(pi, rng, scale):
    logits = np.log(pi) + scale * rng.normal(size=pi.shape)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@given(mdp_and_policies(n_policies=1), st.integers(0, 2**31), st.sampled_from([0.01, 0.3, 3.0]))
def test_trpo_bounds_hold(case, seed, scale):
    # source: TRPO Theorem 1 and Eq. (9): both bounds are lower bounds on J(pi_new), and the
    # KL form is weaker than the TV form since TV^2 <= KL (Pollard)
    mdp, pi = case
    new = perturbed(pi, np.random.default_rng(seed), scale)
    b = pg.trpo_lower_bound(mdp, pi, new)
    slack = 1e-9 * max(1.0, abs(b.expected_return))
    assert b.expected_return >= b.tv_bound - slack
    assert b.tv_bound >= b.kl_bound - slack
    assert b.max_tv**2 <= b.max_kl + 1e-15


@given(mdp_and_policies(n_policies=2), st.sampled_from([0.01, 0.1, 0.5, 1.0]))
def test_cpi_bound_holds(case, alpha):
    # source: Kakade & Langford (2002) Theorem 4.1 (converted to unnormalized values); TRPO
    # Eq. (6) is the weaker form obtained from 1 - gamma(1 - alpha) >= 1 - gamma
    mdp, pi, pi_prime = case
    b = pg.cpi_lower_bound(mdp, pi, pi_prime, alpha)
    slack = 1e-9 * max(1.0, abs(b.expected_return))
    assert b.expected_return >= b.bound - slack
    assert b.bound >= b.simplified_bound - slack
    assert rel_err(b.mixture, (1 - alpha) * pi + alpha * pi_prime) < 1e-15


@given(mdp_and_policies(n_policies=1), st.integers(0, 2**31), st.sampled_from([0.01, 0.3, 3.0]))
def test_cpo_bound_holds(case, seed, scale):
    # source: Achiam et al. (2017) Corollary 1
    mdp, pi = case
    new = perturbed(pi, np.random.default_rng(seed), scale)
    b = pg.cpo_lower_bound(mdp, pi, new)
    assert b.expected_return >= b.bound - 1e-9 * max(1.0, abs(b.expected_return))


def test_bounds_are_tight_for_identical_policies():
    # source: with pi_new = pi every penalty is 0 and L = J
    mdp = pg.random_mdp(2, 4, 3, gamma=0.9)
    pi = np.full((4, 3), 1 / 3)
    j = pg.expected_return(mdp, pi)
    b = pg.trpo_lower_bound(mdp, pi, pi)
    assert b.tv_bound == pytest.approx(j, rel=1e-12) and b.kl_bound == pytest.approx(j, rel=1e-12)
    assert pg.cpo_lower_bound(mdp, pi, pi).bound == pytest.approx(j, rel=1e-12)
    assert pg.cpi_lower_bound(mdp, pi, pi, 0.5).bound == pytest.approx(j, rel=1e-12)


def test_kl_divergence_conventions():
    # source: KL definition; 0 log 0 = 0; support mismatch gives inf, never NaN
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    q = np.array([[0.25, 0.75, 0.0], [0.5, 0.0, 0.5]])
    kl = pg.kl_divergence(p, q)
    assert kl[0] == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), rel=1e-14)
    assert kl[1] == pytest.approx(np.log(2), rel=1e-14)
    assert np.isinf(pg.kl_divergence(q, p)[1])
    assert pg.total_variation(p, q)[1] == pytest.approx(0.5)


def test_mean_kl_ignores_zero_weight_states_with_infinite_kl():
    # source: regression (found by the thorough profile): w(s) = 0 at a state whose KL is inf
    # must contribute 0, not 0 * inf = NaN
    mdp = pg.two_armed_bandit(gamma=0.9)
    pi = np.array([[0.5, 0.5], [0.5, 0.5]])
    new = np.array([[0.25, 0.75], [1.0, 0.0]])  # KL at the terminal state 1 is inf
    div = pg.policy_divergence(mdp, pi, new)
    assert np.isinf(div.kl[1])
    assert div.mean_kl == pytest.approx(0.1 * (0.5 * np.log(2) + 0.5 * np.log(2 / 3)), rel=1e-12)
