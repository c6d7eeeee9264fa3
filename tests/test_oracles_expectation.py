"""Layer 3 (in expectation): advantage estimates against the exact GAE expectation.

Correct estimators pass; defective ones fail (power); the family-wise false-positive rate,
stated as alpha = 0.01, is measured over 200 seeds (slow test)."""

import numpy as np
import pytest
from pgtheory.oracles.expectation import check_advantage_expectation, holm, samples_from_rollouts
from pgtheory.oracles.strategies import simulate_rollout

import pgtheory as pg

MDP = pg.random_mdp(3, 4, 2, gamma=0.9, n_terminal=1)
PI = np.array([[0.4, 0.6]] * 4)
V = np.random.default_rng(0).normal(size=4)  # an arbitrary critic: the expectation is exact
LAM = 0.9


def gae_on(b, *, trunc_as_term=False, end_bootstrap=True, shift=False, lam=LAM,
           dtype=np.float64):
    term, trunc = b.terminated.copy(), b.truncated.copy()
    if shift:
        term = np.concatenate([np.zeros_like(term[:1]), term[:-1]])
        trunc = np.concatenate([np.zeros_like(trunc[:1]), trunc[:-1]])
    if trunc_as_term:
        term, trunc = term | trunc, np.zeros_like(trunc)
    if not end_bootstrap:
        term[-1] = True
        trunc[-1] = False
    adv = pg.gae(b.rewards, V[b.states], term, trunc & ~term, MDP.gamma, lam,
                 next_values=V[b.next_states])
    return adv.astype(dtype)


def run_check(seed, n_units=200, **defect):
    rng = np.random.default_rng(seed)
    batches = [simulate_rollout(MDP, PI, num_steps=12, num_envs=1, time_limit=5, rng=rng)
               for _ in range(n_units)]
    samples = samples_from_rollouts(batches, [gae_on(b, **defect) for b in batches])
    return check_advantage_expectation(MDP, PI, V, LAM, samples)


def test_correct_estimator_passes():
    res = run_check(0)
    assert res.passed, str(res)
    assert res.layer == "in_expectation" and res.p_value is not None


def test_float32_rounding_is_not_a_defect():
    assert run_check(1, dtype=np.float32).passed


@pytest.mark.parametrize(("defect", "named"), [
    (dict(trunc_as_term=True), "time limit"),
    (dict(end_bootstrap=False), "buffer end"),
    (dict(shift=True), "advantage estimate"),
], ids=["truncation-as-termination", "no-buffer-end-bootstrap", "done-flag-shifted"])
def test_defective_estimators_fail(defect, named):
    res = run_check(0, **defect)
    assert res.verdict == "fail" and named in res.explanation, str(res)


def test_holm_adjustment():
    # source: Holm (1979) by hand: sorted p (0.01, 0.03, 0.04) -> (3 * 0.01, max(0.03,
    # 2 * 0.03), max(0.06, 1 * 0.04)) = (0.03, 0.06, 0.06), returned in input order
    assert np.allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_nan_estimates_fail_and_few_units_do_not_test():
    rng = np.random.default_rng(0)
    batches = [simulate_rollout(MDP, PI, num_steps=6, num_envs=1, time_limit=5, rng=rng)
               for _ in range(3)]
    advs = [gae_on(b) for b in batches]
    advs[1][2, 0] = np.nan
    assert check_advantage_expectation(MDP, PI, V, LAM,
                                       samples_from_rollouts(batches, advs)).verdict == "fail"
    advs[1][2, 0] = 0.0 if np.isnan(advs[1][2, 0]) else advs[1][2, 0]
    few = check_advantage_expectation(MDP, PI, V, LAM, samples_from_rollouts(
        batches, [gae_on(b) for b in batches]))
    assert few.verdict in ("pass", "skip") and "too few" in few.explanation
    with pytest.raises(ValueError, match="one array per batch"):
        samples_from_rollouts(batches, advs[:2])


@pytest.mark.slow
def test_false_positive_rate_and_power_measured():
    # stated: family-wise false-positive rate alpha = 0.01. Measured over 200 seeds; with a
    # true rate of 0.01, P(Binomial(200, 0.01) >= 7) = 0.005, so more than 6 alarms means the
    # stated rate does not hold. Power: the two bootstrap defects must be caught in >= 45/50.
    alarms = sum(not run_check(10_000 + s).passed for s in range(200))
    assert alarms <= 6, f"{alarms}/200 false alarms at alpha = 0.01"
    for defect in (dict(trunc_as_term=True), dict(end_bootstrap=False)):
        caught = sum(run_check(20_000 + s, **defect).verdict == "fail" for s in range(50))
        assert caught >= 45, f"{defect}: caught {caught}/50"
