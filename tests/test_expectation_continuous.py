"""The continuous in-expectation layer (LQR): closed forms against Monte Carlo, the check on
simulated buffers with seeded defects, and the suite rows on real targets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pgtheory.oracles import expectation_continuous as ec
from pgtheory.oracles.update_continuous import AffinePolicy

import pgtheory.lqr as lqr

# the double integrator with a unit action cost (0.1 in the suite's), so that the action cost
# is a visible part of the advantage
MODEL = dataclasses.replace(lqr.double_integrator(gamma=0.97), R=np.array([[1.0]]))
POLICY = AffinePolicy(K=np.array([[0.4, 0.7]]), bias=np.array([0.3]),
                      log_sigma=np.array([-0.4]))
CRITIC = ec.QuadraticCritic(H=np.array([[-0.8, 0.1], [0.1, -0.3]]), h=np.array([0.5, -0.2]),
                            h0=-1.5)


def _act(x, rng, pol=POLICY):
    mean = x @ (-pol.K.T) + pol.bias
    return mean + np.exp(pol.log_sigma) * rng.standard_normal(mean.shape)


def _step(x, u, rng, model=MODEL):
    w = rng.multivariate_normal(np.zeros(model.n_state), model.W, size=len(x))
    r = -(np.einsum("bi,ij,bj->b", x, model.Q, x) + np.einsum("bi,ij,bj->b", u, model.R, u))
    return x @ model.A.T + u @ model.B.T + w, r


def test_expected_gae_matches_monte_carlo_from_a_fixed_state():
    """f_j(y) against the mean of 200,000 simulated j-step GAE traces from y (4 standard
    errors); a recursion without the lambda factor is rejected by the same average."""
    rng = np.random.default_rng(0)
    lam, j, n = 0.9, 4, 200_000
    y = np.array([0.7, -0.4])
    f = ec.expected_gae_lqr(MODEL, POLICY, CRITIC, lam, j)
    x = np.tile(y, (n, 1))
    total = np.zeros(n)
    for step in range(j):
        u = _act(x, rng)
        x2, r = _step(x, u, rng)
        total += (MODEL.gamma * lam) ** step * (r + MODEL.gamma * CRITIC(x2) - CRITIC(x))
        x = x2
    se = total.std() / np.sqrt(n)
    assert abs(total.mean() - float(f[j](y[None])[0])) < 4 * se
    wrong = ec.expected_gae_lqr(MODEL, POLICY, CRITIC, 1.0, j)  # lambda left out
    assert abs(total.mean() - float(wrong[j](y[None])[0])) > 10 * se


def test_expected_gae_of_the_exact_value_is_zero():
    """With lambda = 1 and the exact finite-horizon value as critic... the one-step TD error of
    the exact infinite-horizon value has mean zero: f_j = 0 for V_pi (Bellman equation)."""
    v = lqr.value_function(MODEL, POLICY.K, POLICY.log_sigma, bias=POLICY.bias)
    critic = ec.QuadraticCritic(-v.P, -v.p, -float(v.c))
    f = ec.expected_gae_lqr(MODEL, POLICY, critic, 0.95, 5)
    ys = np.random.default_rng(1).normal(size=(10, 2))
    for q in f:
        np.testing.assert_allclose(q(ys), 0.0, atol=1e-9)
    # a critic off V_pi is not
    assert np.abs(ec.expected_gae_lqr(MODEL, POLICY, CRITIC, 0.95, 2)[2](ys)).max() > 0.1


def test_quadratic_critic_is_read_exactly_and_a_tanh_network_is_refused():
    got = ec.quadratic_critic(CRITIC, 2)
    np.testing.assert_allclose(got.H, CRITIC.H, atol=1e-10)
    np.testing.assert_allclose(got.h, CRITIC.h, atol=1e-10)
    assert got.h0 == pytest.approx(CRITIC.h0)
    affine = ec.quadratic_critic(lambda x: x @ np.array([1.0, -2.0]) + 3.0, 2)
    np.testing.assert_allclose(affine.H, 0.0, atol=1e-10)
    w = np.random.default_rng(2).normal(size=(2, 8))
    with pytest.raises(ec.NotQuadraticError, match="not a quadratic"):
        ec.quadratic_critic(lambda x: np.tanh(x @ w).sum(axis=1), 2)
    with pytest.raises(ec.NotQuadraticError, match="not finite"):
        ec.quadratic_critic(lambda x: np.full(len(x), np.nan), 2)


def test_hotelling_is_calibrated_and_sees_a_shift():
    rng = np.random.default_rng(3)
    ps = np.array([ec.hotelling_p_value(rng.standard_normal((150, 3))) for _ in range(400)])
    assert 0.02 < np.mean(ps < 0.1) < 0.18  # 0.1 expected; 400 draws: sd 0.015
    shifted = rng.standard_normal((150, 3)) + np.array([0.0, 0.4, 0.0])
    assert ec.hotelling_p_value(shifted) < 1e-3
    assert ec.hotelling_p_value(np.ones((20, 2))) == 0.0  # a sure bias
    assert ec.hotelling_p_value(np.zeros((20, 2))) == 1.0


def simulate(n_buffers, *, T=16, N=4, time_limit=6, lam=0.9, seed=0, defect=None):
    """Buffers of the affine policy on MODEL collected from fresh resets (same-step autoreset),
    with GAE under CRITIC as a correct implementation computes it, or with ``defect``."""
    rng = np.random.default_rng(seed)
    g = MODEL.gamma
    out = []
    for _ in range(n_buffers):
        x = rng.multivariate_normal(np.zeros(2), MODEL.Sigma0, size=N)
        e = np.zeros(N, int)
        obs, nxt, act, rew, trunc, resets = (np.zeros((T, N, 2)), np.zeros((T, N, 2)),
                                             np.zeros((T, N, 1)), np.zeros((T, N)),
                                             np.zeros((T, N), bool), np.zeros((T, N, 2)))
        for t in range(T):
            u = _act(x, rng)
            x2, r = _step(x, u, rng)
            obs[t], nxt[t], act[t], rew[t] = x, x2, u, r
            trunc[t] = e == time_limit - 1
            reset = rng.multivariate_normal(np.zeros(2), MODEL.Sigma0, size=N)
            resets[t] = reset
            x = np.where(trunc[t][:, None], reset, x2)
            e = np.where(trunc[t], 0, e + 1)
        if defect == "rewards_plus_one":
            rew = rew + 1.0
        if defect == "action_cost_dropped":  # rewards stored without -u'Ru
            rew = rew + np.einsum("tni,ij,tnj->tn", act, MODEL.R, act)
        boot = CRITIC(nxt)
        if defect == "no_bootstrap_at_truncation":
            boot = np.where(trunc, 0.0, boot)
        if defect == "bootstrap_from_reset_obs":  # the reset state recorded as next state
            nxt = np.where(trunc[..., None], resets, nxt)
            boot = CRITIC(nxt)
        delta = rew + g * boot - CRITIC(obs)
        adv = np.zeros((T, N))
        last = np.zeros(N)
        lam_used = 1.0 if defect == "lambda_one" else lam
        for t in range(T - 1, -1, -1):
            last = delta[t] + g * lam_used * np.where(trunc[t], 0.0, last)
            adv[t] = last
        out.append({"observations": obs, "next_observations": nxt, "actions": act,
                    "truncated": trunc, "valid": None, "estimates": adv})
    return out


def _check(bufs, lam=0.9, **kw):
    samples = ec.ContinuousSamples.from_buffers(bufs)
    return ec.check_continuous_advantages(MODEL, lam, samples, CRITIC, policy=POLICY,
                                          critic=CRITIC, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_gae_passes_on_simulated_buffers(seed):
    r = _check(simulate(60, seed=seed))
    assert r.verdict == "pass", r.explanation
    assert "groups" in r.explanation  # the statistical part ran


def test_the_last_buffer_row_is_cut_when_the_time_limit_is_not_a_divisor():
    bufs = simulate(2, T=16, time_limit=6)
    s = ec.ContinuousSamples.from_buffers(bufs)
    n = 4 * 16
    k, m = s.steps_to_buffer_end[:16], s.steps_to_time_limit[:16]  # env 0 of buffer 0
    np.testing.assert_array_equal(k, np.arange(16, 0, -1))
    np.testing.assert_array_equal(m[:6], np.arange(6, 0, -1))  # first episode: 6 steps
    assert np.all(m[12:] > k[12:])  # the third episode is cut by the buffer end
    assert len(s.estimates) == 2 * n
    assert len(np.unique(s.units)) == 2 * 4 * 3  # three episodes per env column


@pytest.mark.parametrize("defect", ["no_bootstrap_at_truncation", "rewards_plus_one"])
def test_defects_visible_in_the_exact_samples_fail_without_statistics(defect):
    r = _check(simulate(5, defect=defect))
    assert r.verdict == "fail" and "no randomness is left" in r.explanation
    # the exact part alone (a non-affine policy) finds them too
    samples = ec.ContinuousSamples.from_buffers(simulate(5, defect=defect))
    r = ec.check_continuous_advantages(MODEL, 0.9, samples, CRITIC, not_exact="an MLP")
    assert r.verdict == "fail"


def test_correct_gae_passes_the_exact_part_when_the_closed_form_is_not_applicable():
    samples = ec.ContinuousSamples.from_buffers(simulate(5))
    r = ec.check_continuous_advantages(MODEL, 0.9, samples, CRITIC, not_exact="an MLP policy")
    assert r.verdict == "pass" and "were not tested (an MLP policy)" in r.explanation


@pytest.mark.parametrize("defect", ["bootstrap_from_reset_obs", "lambda_one"])
def test_defects_that_only_bias_the_multi_step_samples_fail_the_statistical_part(defect):
    """A rollout that records the reset state as the truncated step's next state and bootstraps
    from it is consistent at that step (the exact samples pass); the bias is in the earlier
    steps' traces, whose expectation the oracle propagates through the true dynamics. GAE
    without its lambda is exact after one step too."""
    r = _check(simulate(200, defect=defect, seed=4))
    assert r.verdict == "fail", r.explanation


def test_next_step_reset_slots_are_left_out():
    bufs = simulate(3)
    for b in bufs:
        b["valid"] = np.ones_like(b["truncated"])
        b["valid"][3] = False  # pretend row 3 were reset slots
    s = ec.ContinuousSamples.from_buffers(bufs)
    assert len(s.estimates) == 3 * 15 * 4


def test_non_finite_estimates_fail():
    bufs = simulate(2)
    bufs[0]["estimates"][0, 0] = np.nan
    r = _check(bufs)
    assert r.verdict == "fail" and "non-finite" in r.explanation


# ------------------------------------------------------------------ the suite's rows
torch = pytest.importorskip("torch")


def _rows(t, seed=0):
    from pgtheory.oracles import suite
    from pgtheory.oracles.audit import audit_config

    return suite.continuous_expectation_checks(t, audit_config(seed, True))


@pytest.mark.parametrize("algo", ["ppo", "trpo", "a2c", "reinforce"])
def test_linear_targets_pass_with_the_statistical_part(algo):
    from pgtheory.implementations.targets import target

    out = _rows(target(algo, hidden_sizes=()))
    assert set(out) == {"in_expectation.advantages@lqr", "in_expectation.returns@lqr",
                        "in_expectation.policy_gradient@lqr"}
    for n in ("in_expectation.advantages@lqr", "in_expectation.returns@lqr"):
        assert out[n].verdict == "pass" and "groups" in out[n].explanation, out[n].explanation
    g = out["in_expectation.policy_gradient@lqr"]
    assert g.verdict == "pass" and "gradient estimates" in g.explanation, g.explanation


def test_mlp_targets_are_checked_on_the_exact_samples_only():
    from pgtheory.implementations.targets import target

    out = _rows(target("ppo"))
    r = out["in_expectation.advantages@lqr"]
    assert r.verdict == "pass" and "not affine" in r.explanation
    assert out["in_expectation.policy_gradient@lqr"].verdict == "skip"


@pytest.mark.parametrize("mutant", ["next_step_autoreset", "truncation_bootstrap_reset_obs"])
def test_continuous_only_mutants_are_killed_by_the_in_expectation_rows(mutant):
    from pgtheory.lab import mutants as M

    m = M.MUTANTS[mutant]
    with M.applied(m):
        out = _rows(M.make_target(m, continuous=True))
    r = out["in_expectation.advantages@lqr"]
    assert r.verdict == "fail", r.explanation
    if mutant == "next_step_autoreset":
        assert "[catalogue: next_step_autoreset]" in r.explanation


# ------------------------------------------------------------------ policy gradient
def _score_gradient(buf, ent_coef=0.0):
    """-(1/(T N)) sum [A grad log pi + c grad H] in (vec M, k, log_sigma) for POLICY."""
    x, u, adv = buf["observations"], buf["actions"], buf["estimates"]
    T, N = adv.shape
    M, k, ls = -POLICY.K, POLICY.bias, POLICY.log_sigma
    eps = (u - (x @ M.T + k)) / np.exp(ls)  # (T, N, m)
    z = eps / np.exp(ls)
    gM = np.einsum("tn,tni,tnj->ij", adv, z, x)
    gk = np.einsum("tn,tni->i", adv, z)
    gs = np.einsum("tn,tni->i", adv, eps ** 2 - 1) + ent_coef * T * N
    return -np.concatenate([gM.ravel(), gk, gs]) / (T * N)


def _structure(buf):
    from pgtheory.oracles.update_continuous import steps_since_reset

    e = steps_since_reset([buf["truncated"]], time_limit=6)[0]
    return e, ec.trace_horizons(buf["truncated"])[0]


@pytest.mark.parametrize("lam,ent_coef", [(0.9, 0.0), (1.0, 0.05)])
def test_expected_policy_gradient_matches_monte_carlo(lam, ent_coef):
    """The closed form against the mean of the score-function estimator over 3,000 simulated
    buffers (4 standard errors per coordinate); advantages of rewards stored without the action
    cost move the mean off it. (Defects that shift the advantage by a nearly state-independent
    amount, such as a missing bootstrap with this critic, barely bias the gradient: a constant
    baseline leaves it unbiased.)"""
    bufs = simulate(3000, lam=lam, seed=7)
    X = np.array([_score_gradient(b, ent_coef) for b in bufs])
    e, hz = _structure(bufs[0])
    mu = ec.expected_policy_gradient_lqr(MODEL, POLICY, CRITIC, lam, e, hz, ent_coef=ent_coef)
    se = X.std(axis=0) / np.sqrt(len(X))
    assert np.all(np.abs(X.mean(axis=0) - mu) < 4 * se), (X.mean(axis=0), mu, se)
    if ent_coef == 0:
        wrong = np.array([_score_gradient(b) for b in simulate(
            3000, lam=lam, seed=8, defect="action_cost_dropped")])
        assert np.any(np.abs(wrong.mean(axis=0) - mu) > 6 * se)


def test_trace_horizons_follow_the_flags():
    trunc = np.zeros((8, 2), bool)
    trunc[2, 0] = trunc[5, 0] = True
    valid = np.ones((8, 2), bool)
    valid[3, 1] = False
    trunc[2, 1] = True
    h, by = ec.trace_horizons(trunc, valid)
    np.testing.assert_array_equal(h[:, 0], [3, 2, 1, 3, 2, 1, 2, 1])
    np.testing.assert_array_equal(by[:, 0], [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(h[4:, 1], [4, 3, 2, 1])


def test_the_gradient_row_reads_a_detached_log_std_without_crashing():
    """A log-std that no parameter moves gives a zero row of the Jacobian, not an exception
    (the policy-head row names the detachment)."""
    from pgtheory.lab import mutants as M

    m = M.MUTANTS["log_std_detached"]
    with M.applied(m):
        r = _rows(M.make_target(m, continuous=True))["in_expectation.policy_gradient@lqr"]
    assert r.verdict in ("pass", "fail", "inconclusive"), r.explanation


# ------------------------------------------------------------------ environment gate
def _with_rewards(bufs):
    for b in bufs:
        x, u = b["observations"], b["actions"]
        b["rewards"] = -(np.einsum("tni,ij,tnj->tn", x, MODEL.Q, x)
                         + np.einsum("tni,ij,tnj->tn", u, MODEL.R, u))
    return bufs


def test_the_environment_gate_accepts_the_environments_own_transitions():
    assert ec.environment_mismatch(MODEL, _with_rewards(simulate(20))) == ("", "")


def test_the_environment_gate_refuses_normalized_observations_and_scaled_rewards():
    """What a CleanRL-style NormalizeObservation / NormalizeReward wrapper does to the stored
    data: the rows must become inconclusive, not fail."""
    bufs = _with_rewards(simulate(5))
    for b in bufs:
        b["observations"] = (b["observations"] - 0.3) / 1.7
        b["next_observations"] = (b["next_observations"] - 0.3) / 1.7
    reason, _ = ec.environment_mismatch(MODEL, bufs)
    assert "do not follow the LQR dynamics" in reason
    bufs = _with_rewards(simulate(5))
    for b in bufs:
        b["rewards"] = b["rewards"] / 3.0
    reason, _ = ec.environment_mismatch(MODEL, bufs)
    assert "reward-scaling" in reason


def test_a_reset_observation_stored_at_truncations_is_a_note_not_a_block():
    bufs = _with_rewards(simulate(5, defect="bootstrap_from_reset_obs"))
    reason, note = ec.environment_mismatch(MODEL, bufs)
    assert reason == "" and "episode ends" in note


def test_the_continuous_kill_matrix_marks_mutants_only_the_new_layers_catch():
    from pgtheory.lab import mutants as M

    m = M.MUTANTS["truncation_bootstrap_reset_obs"]
    only_new = M.KillResult(m, [("in_expectation.advantages@lqr", "in_expectation")], 1.0)
    also_batch = M.KillResult(m, [("in_expectation.advantages@lqr", "in_expectation"),
                                  ("given_the_batch.advantages@lqr", "given_the_batch")], 1.0)
    assert M.only_by_continuous_layers(only_new)
    assert not M.only_by_continuous_layers(also_batch)
    table = M.format_matrix([only_new, also_batch], continuous=True)
    assert "only by the new layers" in table and table.count("**yes**") == 1
    head, rule, *rows = table.splitlines()
    assert head.count("|") == rule.count("|") == rows[0].count("|") == 8
    t = M.make_target(m, continuous=True)
    assert t.action_kinds == ("continuous",) and t.components == {}


def test_an_exception_while_reading_the_agent_is_an_error_row_not_a_crash(monkeypatch):
    from pgtheory.implementations.targets import target

    def boom(*args, **kwargs):
        raise RuntimeError("critic exploded")

    monkeypatch.setattr(ec, "quadratic_critic", boom)
    out = _rows(target("a2c", hidden_sizes=()))
    assert {r.verdict for r in out.values()} == {"error"}
    assert all("critic exploded" in r.explanation for r in out.values())


def test_the_reset_observation_stored_as_final_fails_an_mlp_target_too():
    """The exact samples cannot see it (the stored next state is the reset state the value was
    bootstrapped from), the closed forms do not apply to an MLP; the transitions at episode
    ends, off the dynamics while those inside episodes follow them, do."""
    from pgtheory.implementations.targets import target
    from pgtheory.lab import mutants as M

    with M.applied(M.MUTANTS["truncation_bootstrap_reset_obs"]):
        out = _rows(target("trpo"))
    for n in ("in_expectation.advantages@lqr", "in_expectation.returns@lqr"):
        assert out[n].verdict == "fail", out[n].explanation
        assert "episode ends" in out[n].explanation


@pytest.mark.slow
def test_first_stage_calibration_on_simulated_correct_gae():
    """The rate measured in docs/checks.md: 300 seeds of 60 simulated buffers of correct GAE,
    fraction of Holm-adjusted p-values below 0.05 and 0.01 (printed; run with -s). Asserted
    loosely (at most twice the nominal rate) so that only a gross miscalibration fails."""
    ps = np.array([_check(simulate(60, seed=1000 + s), alpha=0.05).p_value for s in range(300)])
    print(f"p < 0.05: {np.mean(ps < 0.05):.3f}, p < 0.01: {np.mean(ps < 0.01):.3f}")
    assert np.mean(ps < 0.05) < 0.10 and np.mean(ps < 0.01) < 0.03


def test_the_tabular_rows_are_inconclusive_for_rescaled_rewards_not_failed():
    """The same gate on the tabular oracle: rewards a loop rescaled (a reward-normalization
    wrapper, passed to record_batch) are not R(s, a); a next-step reset slot's reward 0 at an
    episode end does not block the checks (it is a defect they find)."""
    import dataclasses as dc

    from pgtheory.oracles import suite
    from pgtheory.oracles.rollouts import simulate_rollout

    mdp = suite.oracle_mdp(0.9, 0)
    pi = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)
    rng = np.random.default_rng(0)
    bufs = [simulate_rollout(mdp, pi, num_steps=16, num_envs=4, time_limit=6, rng=rng)
            for _ in range(3)]
    assert suite._tabular_reward_mismatch(mdp, bufs) == ""
    scaled = [dc.replace(b, rewards=b.rewards / 2.5) for b in bufs]
    assert "reward-scaling" in suite._tabular_reward_mismatch(mdp, scaled)
    # rewards stored one step late: not a rescaling, so the checks run (and fail)
    late = [dc.replace(b, rewards=np.concatenate([np.zeros_like(b.rewards[:1]),
                                                  b.rewards[:-1]])) for b in bufs]
    assert suite._tabular_reward_mismatch(mdp, late) == ""
    slots = [simulate_rollout(mdp, pi, num_steps=16, num_envs=4, time_limit=6, rng=rng,
                              reset_slots=True) for _ in range(3)]
    as_transitions = [dc.replace(b, valid=None) for b in slots]  # reset slots not marked
    assert suite._tabular_reward_mismatch(mdp, as_transitions) == ""
