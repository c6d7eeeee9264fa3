"""Every check above must be able to fail: seeded defects (mutants) that the checks catch.

Each mutant replaces one public function of ``pgtheory`` (via monkeypatch, for the duration
of one test) with a version carrying a defect of the catalogue (docs/bugs.md) or a
classic derivation slip, and lists the property tests that must then fail with an
``AssertionError``. A mutant no listed check catches fails this file.
"""

from __future__ import annotations

import numpy as np
import pgtheory.oracles.envs as oenv
import pytest
import test_advantage_estimation as t_adv
import test_bounds as t_bounds
import test_evaluation as t_eval
import test_examples as t_ex
import test_gradients as t_grad
import test_lqr as t_lqr
import test_oracles_foundation as t_orc
import test_symbolic_references as t_sym

import pgtheory as pg
import pgtheory.evaluation as ev
import pgtheory.lqr as lqr
from pgtheory import oracles

ORIG = {name: getattr(pg, name) for name in pg.__all__}
ORIG_SOLVE = ev.solve_bellman
ORIG_LQR = {name: getattr(lqr, name) for name in lqr.__all__}


def gae_no_truncation_bootstrap(rewards, values, terminated, truncated, gamma, lam, *,
                                next_values):
    # catalogue: truncation_as_termination
    t = np.asarray(terminated) | np.asarray(truncated)
    return ORIG["gae"](rewards, values, t, truncated, gamma, lam, next_values=next_values)


def gae_lambda_without_gamma(rewards, values, terminated, truncated, gamma, lam, *,
                             next_values):
    # catalogue: gae_lambda_power
    r = np.asarray(rewards, float)
    term = np.asarray(terminated, bool)
    cont = (1.0 - term) * (1.0 - np.asarray(truncated, bool))
    delta = r + gamma * (1.0 - term) * np.asarray(next_values) - np.asarray(values)
    adv, acc = np.empty_like(r), np.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        acc = delta[t] + lam * cont[t] * acc
        adv[t] = acc
    return adv


def gae_done_index_shifted(rewards, values, terminated, truncated, gamma, lam, *, next_values):
    # catalogue: done_flags_shifted (the trace cut with the previous step's flag)
    shift = lambda x: np.concatenate([np.zeros_like(np.asarray(x)[:1]), np.asarray(x)[:-1]])  # noqa: E731
    return ORIG["gae"](rewards, values, shift(terminated), shift(truncated), gamma, lam,
                       next_values=next_values)


def solve_transposed(mdp, P_pi, b, *, discount, transpose=False, solver="auto"):
    # derivation slip: P_pi used where P_pi^T belongs (and vice versa)
    return ORIG_SOLVE(mdp, P_pi, b, discount=discount, transpose=not transpose, solver=solver)


def visitation_unnormalized(mdp, pi, *, normalized=True, **kw):
    # convention mix-up: rho returned where d was asked for
    return ORIG["discounted_visitation"](mdp, pi, normalized=False, **kw)


def pg_missing_horizon_factor(mdp, param, theta, **kw):
    # derivation slip: 1/(1 - gamma) dropped from the policy gradient theorem
    return (1.0 - mdp.gamma) * ORIG["policy_gradient"](mdp, param, theta, **kw)


def fisher_uniform_actions(mdp, param, theta):
    # Fisher weighted uniformly over actions instead of by pi
    pi = param.probs(theta)
    w = pg.action_state_weights(mdp, pi)
    psi = param.score(theta)
    return np.einsum("s,san,sam->nm", w / mdp.n_actions, psi, psi)


def natural_gradient_is_vanilla(mdp, param, theta, **kw):
    # catalogue: cg_skipped (step direction not F^-1 g)
    return ORIG["policy_gradient"](mdp, param, theta)


def trpo_no_sqrt(mdp, param, theta, **kw):
    # catalogue: trpo_no_sqrt
    import dataclasses
    res = ORIG["trpo_step"](mdp, param, theta, **kw)
    x = res.natural_gradient
    g = ORIG["policy_gradient"](mdp, param, theta)
    delta = kw.get("max_kl", 0.01)
    gx = float(g @ x)
    full = (2.0 * delta / gx) * x if gx > 0 else res.full_step
    return dataclasses.replace(res, full_step=full)


def ppo_max_instead_of_min(mdp, param, theta, theta_old, **kw):
    # catalogue: value_clip_min (min and max swapped, value side)
    import dataclasses
    res = ORIG["ppo_objective"](mdp, param, theta, theta_old, **kw)
    eps = kw.get("clip_range", 0.2)
    pi, pi_old = param.probs(theta), param.probs(theta_old)
    A = pg.advantages(mdp, pi_old)
    w = pg.action_state_weights(mdp, pi_old)
    r = pi / pi_old
    val = float(np.sum(w[:, None] * pi_old * np.maximum(r * A, np.clip(r, 1 - eps, 1 + eps) * A)))
    return dataclasses.replace(res, value=val)


def kl_reversed(p, q, **kw):
    # catalogue: kl_direction_reversed
    return ORIG["kl_divergence"](q, p, **kw)


def trpo_bound_without_penalty(mdp, pi, pi_new, **kw):
    # bound with the penalty dropped: J >= L is false in general
    import dataclasses
    b = ORIG["trpo_lower_bound"](mdp, pi, pi_new, **kw)
    return dataclasses.replace(b, tv_bound=b.surrogate, kl_bound=b.surrogate)


def expected_gae_horizon_off_by_one(mdp, pi, values, *, lam, steps_to_buffer_end=None,
                                    steps_to_time_limit=None, **kw):
    # done indexing at the buffer end: one step too many before the bootstrap
    bump = lambda h: None if h is None else h + 1  # noqa: E731
    return ORIG["expected_gae"](mdp, pi, values, lam=lam,
                                steps_to_buffer_end=bump(steps_to_buffer_end),
                                steps_to_time_limit=bump(steps_to_time_limit), **kw)


def on_policy_is_discounted(mdp, pi, *, time_limit=None, **kw):
    # Nota & Thomas (2020): the discounted d_pi is not what sampled rollouts see
    return ORIG["discounted_visitation"](mdp, pi)


def policy_iteration_one_round(mdp, **kw):
    return ORIG["policy_iteration"](mdp, max_iter=1)


def pdl_with_old_visitation(mdp, pi, pi_new, **kw):
    # the surrogate's rho_pi in place of rho_{pi_new}
    import dataclasses
    res = ORIG["performance_difference"](mdp, pi, pi_new, **kw)
    sur = ORIG["surrogate"](mdp, pi, pi_new) - ORIG["expected_return"](mdp, pi)
    return dataclasses.replace(res, rho_form=sur)


def lqr_gradient_without_gamma(model, K, log_sigma):
    # derivation slip: R + B^T P B (undiscounted Fazel form) inside the discounted gradient
    P = lqr.value_function(model, K, log_sigma).P
    S = lqr.state_second_moment(model, K, log_sigma, normalized=False)
    H = model.R + model.B.T @ P @ model.B
    EK = H @ K - model.gamma * model.B.T @ P @ model.A
    _, gl = ORIG_LQR["policy_gradient"](model, K, log_sigma)
    return -2.0 * EK @ S, gl


def lqr_kl_without_square(model, K, log_sigma, K_new, log_sigma_new, **kw):
    # catalogue: gaussian_kl_no_square (pat-coady/trpo #25)
    s1, s2 = np.exp(np.asarray(log_sigma)), np.exp(np.asarray(log_sigma_new))
    base = ORIG_LQR["kl_divergence"](model, K, log_sigma, K_new, log_sigma_new, **kw)
    return base - np.sum(s1**2 / (2 * s2**2)) + np.sum(s1 / (2 * s2))


def lqr_fisher_without_precision(model, K, log_sigma, **kw):
    F = ORIG_LQR["fisher_matrix"](model, K, log_sigma, **kw)
    mn = model.n_action * model.n_state
    S = lqr.state_second_moment(model, K, log_sigma)
    F[:mn, :mn] = np.kron(np.eye(model.n_action), S)  # D^{-1} dropped
    return F


def lqr_second_moment_without_noise(model, K, log_sigma, *, normalized=True):
    quiet = lqr.LQRModel(A=model.A, B=model.B, Q=model.Q, R=model.R, W=0 * model.W,
                         Sigma0=model.Sigma0, gamma=model.gamma)
    return ORIG_LQR["state_second_moment"](quiet, K, np.full_like(log_sigma, -30.0),
                                           normalized=normalized)


def lqr_natural_is_vanilla(model, K, log_sigma):
    return ORIG_LQR["policy_gradient"](model, K, log_sigma)


ORIG_PROBE = oenv.probe_mdp


def probe3_reward_first(k, *, gamma=0.9):
    # the discounting probe with its reward on the first step: no discounting left to test
    mdp = ORIG_PROBE(k, gamma=gamma)
    if k != 3:
        return mdp
    R = np.zeros_like(mdp.R)
    R[0, 0] = 1.0
    return pg.TabularMDP(P=mdp.P, R=R, gamma=gamma, mu=mdp.mu, terminal=mdp.terminal)


class EnvRewardFromNextState(oenv.TabularEnv):
    # reward timing slip: R[s_{t+1}, a_t] paid instead of R[s_t, a_t]
    def step(self, action):
        obs, _, term, trunc, info = super().step(action)
        return obs, float(self.mdp.R[info["state"], int(action)]), term, trunc, info


MUTANTS = [
    # (id, [(module, attribute, replacement)], [checks that must fail (callable, kwargs)])
    ("gae-truncation-as-termination", [(pg, "gae", gae_no_truncation_bootstrap)],
     [(t_adv.test_gae_matches_forward_sum, {}),
      (t_adv.test_gae_hand_computed_episode_boundaries, {}),
      (t_adv.test_expected_gae_equals_trajectory_enumeration, dict(seed=0, h=2))]),
    ("gae-lambda-without-gamma", [(pg, "gae", gae_lambda_without_gamma)],
     [(t_adv.test_gae_matches_forward_sum, {}),
      (t_adv.test_gae_special_cases_and_return_identities, {}),
      (t_sym.test_gae_matches_symbolic_sum_of_td_errors, dict(T=3))]),
    ("gae-done-index-shifted", [(pg, "gae", gae_done_index_shifted)],
     [(t_adv.test_gae_matches_forward_sum, {}),
      (t_adv.test_gae_hand_computed_episode_boundaries, {})]),
    ("bellman-solve-transposed", [(ev, "solve_bellman", solve_transposed)],
     [(t_eval.test_state_values_equal_neumann_series, {}),
      (t_eval.test_bellman_equations_hold, {}),
      (t_eval.test_visitation_matches_forward_propagation, {}),
      (t_sym.test_pgtheory_matches_symbolic_mdp, dict(seed=0))]),
    ("visitation-normalization-mixed-up", [(pg, "discounted_visitation", visitation_unnormalized)],
     [(t_eval.test_visitation_conventions_and_identity, {}),
      (t_grad.test_tabular_softmax_gradient_closed_form, {})]),
    ("policy-gradient-missing-1/(1-gamma)", [(pg, "policy_gradient", pg_missing_horizon_factor)],
     [(t_grad.test_policy_gradient_matches_finite_differences, dict(kind="tabular")),
      (t_grad.test_policy_gradient_matches_finite_differences, dict(kind="linear")),
      (t_ex.test_sigmoid_bandit_closed_forms, dict(theta=0.7)),
      (t_bounds.test_surrogate_matches_return_to_first_order, {}),
      (t_sym.test_pgtheory_matches_symbolic_mdp, dict(seed=1))]),
    ("fisher-uniform-over-actions", [(pg, "fisher_matrix", fisher_uniform_actions)],
     [(t_grad.test_fisher_equals_kl_hessian, dict(kind="tabular")),
      (t_grad.test_fisher_equals_kl_hessian, dict(kind="linear"))]),
    ("natural-gradient-is-vanilla", [(pg, "natural_gradient", natural_gradient_is_vanilla)],
     [(t_grad.test_tabular_natural_gradient_is_centred_advantage, {}),
      (t_grad.test_linear_natural_gradient_solves_fisher_system, {})]),
    ("trpo-step-without-sqrt", [(pg, "trpo_step", trpo_no_sqrt)],
     [(t_grad.test_trpo_step_respects_trust_region, dict(kind="tabular"))]),
    ("ppo-max-instead-of-min", [(pg, "ppo_objective", ppo_max_instead_of_min)],
     [(t_grad.test_ppo_gradient_matches_finite_differences, dict(kind="tabular")),
      (t_grad.test_ppo_clipping_zeroes_gradient_outside_the_range, {})]),
    ("kl-direction-reversed", [(pg, "kl_divergence", kl_reversed)],
     [(t_bounds.test_kl_divergence_conventions, {}),
      (t_sym.test_k3_estimator_expectation_is_pgtheory_kl, {})]),
    ("trpo-bound-without-penalty", [(pg, "trpo_lower_bound", trpo_bound_without_penalty)],
     [(t_bounds.test_trpo_bounds_hold, {})]),
    ("expected-gae-horizon-off-by-one", [(pg, "expected_gae", expected_gae_horizon_off_by_one)],
     [(t_adv.test_expected_gae_equals_trajectory_enumeration, dict(seed=1, h=2))]),
    ("on-policy-distribution-is-discounted", [(pg, "on_policy_distribution",
                                               on_policy_is_discounted)],
     [(t_eval.test_on_policy_distribution_matches_simulation, dict(time_limit=3)),
      (t_eval.test_on_policy_distribution_differs_from_discounted_visitation, {})]),
    ("policy-iteration-stops-early", [(pg, "policy_iteration", policy_iteration_one_round)],
     [(t_eval.test_policy_iteration_matches_value_iteration, {}),
      (t_ex.test_chain_optimal_values, dict(n=9))]),
    ("lqr-gradient-without-gamma", [(lqr, "policy_gradient", lqr_gradient_without_gamma)],
     [(t_lqr.test_policy_gradient_matches_finite_differences, {})]),
    ("lqr-gaussian-kl-missing-square", [(lqr, "kl_divergence", lqr_kl_without_square)],
     [(t_lqr.test_kl_matches_symbolic_gaussian_kl, {}),
      (t_lqr.test_fisher_equals_hessian_of_mean_kl, {})]),
    ("lqr-fisher-without-precision", [(lqr, "fisher_matrix", lqr_fisher_without_precision)],
     [(t_lqr.test_fisher_equals_hessian_of_mean_kl, {})]),
    ("lqr-second-moment-without-noise", [(lqr, "state_second_moment",
                                          lqr_second_moment_without_noise)],
     [(t_lqr.test_return_by_three_routes, {})]),
    ("lqr-natural-gradient-is-vanilla", [(lqr, "natural_gradient", lqr_natural_is_vanilla)],
     [(t_lqr.test_natural_gradient_removes_state_covariance, {})]),
    ("probe3-reward-on-first-step", [(oenv, "probe_mdp", probe3_reward_first)],
     [(t_orc.test_probe_solutions_match_closed_forms, {})]),
    ("env-reward-from-next-state", [(oracles, "TabularEnv", EnvRewardFromNextState)],
     [(t_orc.test_tabular_env_follows_the_model_exactly, {})]),
    ("pdl-with-old-visitation", [(pg, "performance_difference", pdl_with_old_visitation)],
     [(t_bounds.test_performance_difference_three_forms_agree, {})]),
]

CASES = [pytest.param(patches, check, kwargs, id=f"{mid}::{check.__name__}"
                      + (f"[{','.join(f'{k}={v}' for k, v in kwargs.items())}]" if kwargs else ""))
         for mid, patches, checks in MUTANTS for check, kwargs in checks]


def _is_assertion(exc: BaseException) -> bool:
    if isinstance(exc, AssertionError):
        return True
    inner = getattr(exc, "exceptions", None)  # ExceptionGroup from Hypothesis
    return bool(inner) and all(_is_assertion(e) for e in inner)


@pytest.mark.parametrize(("patches", "check", "kwargs"), CASES)
def test_seeded_defect_is_caught(monkeypatch, patches, check, kwargs):
    for module, attr, replacement in patches:
        monkeypatch.setattr(module, attr, replacement)
    with pytest.raises(BaseException) as info:
        check(**kwargs)
    assert _is_assertion(info.value), f"the check failed, but not by assertion: {info.value!r}"


def test_checks_pass_without_defects():
    # control: the same calls pass on the unmodified library (otherwise the test above would
    # prove nothing)
    for _, _, checks in MUTANTS:
        for check, kwargs in checks:
            check(**kwargs)
