"""Bad input: every public entry point raises a ValueError subclass naming expected vs received."""

import numpy as np
import pytest
import scipy.sparse as sp

import pgtheory as pg

MDP = pg.random_mdp(0, 3, 2, gamma=0.9)
PI = np.full((3, 2), 0.5)
PARAM = pg.TabularSoftmax(3, 2)
THETA = np.zeros(6)
GOOD_P = MDP.P
GOOD = dict(P=GOOD_P, R=np.zeros((3, 2)), gamma=0.9, mu=np.full(3, 1 / 3))


def mdp_with(**changes):
    return lambda: pg.TabularMDP(**{**GOOD, **changes})


def bad_rows():
    P = GOOD_P.copy()
    P[1, 0, 0] += 0.1
    return P


def neg_P():
    P = GOOD_P.copy()
    P[0, 0] = [1.5, -0.5, 0.0]
    return P


def nan_P():
    P = GOOD_P.copy()
    P[2, 1, 1] = np.nan
    return P


PI_NAN = PI.copy()
PI_NAN[0, 0] = np.nan
BANDIT = pg.two_armed_bandit()
R_TERM = np.array([[0.0, 1.0], [0.0, 0.5]])  # reward in the terminal state 1
ROLL = dict(rewards=np.zeros((4, 2)), values=np.zeros((4, 2)), terminated=np.zeros((4, 2), bool),
            truncated=np.zeros((4, 2), bool), next_values=np.zeros((4, 2)))


def gae_with(**changes):
    kw = {**ROLL, **changes}
    return lambda: pg.gae(kw["rewards"], kw["values"], kw["terminated"], kw["truncated"],
                          kw.get("gamma", 0.9), kw.get("lam", 0.95), next_values=kw["next_values"])


CASES = [
    # (id, callable, exception, fragment of the message that names the problem)
    ("P-wrong-ndim", mdp_with(P=np.ones((3, 2))), pg.InvalidMDPError, "expected 3 dimensions"),
    ("P-not-square", mdp_with(P=np.full((3, 2, 4), 0.25)), pg.InvalidMDPError, "(S, A, S)"),
    ("P-rows-not-stochastic", mdp_with(P=bad_rows()), pg.InvalidMDPError, "summing to 1"),
    ("P-negative", mdp_with(P=neg_P()), pg.InvalidMDPError, "non-negative"),
    ("P-nan", mdp_with(P=nan_P()), pg.InvalidMDPError, "finite"),
    ("P-sparse-bad-shape", mdp_with(P=sp.csr_array(np.eye(5)[:4])), pg.InvalidMDPError,
     "(S*A, S)"),
    ("R-wrong-shape", mdp_with(R=np.zeros((2, 3))), pg.InvalidMDPError, "R: expected shape"),
    ("R-inf", mdp_with(R=np.array([[0, 0], [0, np.inf], [0, 0.0]])), pg.InvalidMDPError,
     "finite"),
    ("gamma-one", mdp_with(gamma=1.0), pg.InvalidMDPError, "[0, 1)"),
    ("gamma-negative", mdp_with(gamma=-0.1), pg.InvalidMDPError, "[0, 1)"),
    ("gamma-not-number", mdp_with(gamma="0.9"), pg.InvalidMDPError, "real number"),
    ("mu-wrong-shape", mdp_with(mu=np.ones(4) / 4), pg.InvalidMDPError, "mu: expected shape"),
    ("mu-not-distribution", mdp_with(mu=np.ones(3)), pg.InvalidMDPError, "summing to 1"),
    ("terminal-not-bool", mdp_with(terminal=np.array([0, 0, 1])), pg.InvalidMDPError, "bool"),
    ("terminal-not-absorbing", mdp_with(terminal=np.array([False, False, True])),
     pg.InvalidMDPError, "absorbing"),
    ("terminal-with-reward", lambda: pg.TabularMDP(P=BANDIT.P, R=R_TERM, gamma=0.9,
                                                   mu=BANDIT.mu, terminal=BANDIT.terminal),
     pg.InvalidMDPError, "zero reward"),
    ("mu-on-terminal", lambda: pg.TabularMDP(P=BANDIT.P, R=BANDIT.R, gamma=0.9,
                                             mu=np.array([0.5, 0.5]), terminal=BANDIT.terminal),
     pg.InvalidMDPError, "no initial mass"),
    ("policy-wrong-shape", lambda: pg.state_values(MDP, np.full((2, 3), 1 / 3)),
     pg.InvalidPolicyError, "expected shape (3, 2)"),
    ("policy-not-stochastic", lambda: pg.state_values(MDP, np.full((3, 2), 0.6)),
     pg.InvalidPolicyError, "summing to 1"),
    ("policy-negative", lambda: pg.advantages(MDP, np.array([[1.2, -0.2]] * 3)),
     pg.InvalidPolicyError, "non-negative"),
    ("policy-nan", lambda: pg.expected_return(MDP, PI_NAN), pg.InvalidPolicyError, "finite"),
    ("policy-1d", lambda: pg.discounted_visitation(MDP, np.ones(6) / 2), pg.InvalidPolicyError,
     "expected 2 dimensions"),
    ("theta-wrong-length", lambda: pg.policy_gradient(MDP, PARAM, np.zeros(5)),
     pg.InvalidArgumentError, "expected shape (6,)"),
    ("theta-nan", lambda: pg.fisher_matrix(MDP, PARAM, np.full(6, np.nan)),
     pg.InvalidArgumentError, "finite"),
    ("param-for-other-mdp", lambda: pg.policy_gradient(MDP, pg.TabularSoftmax(4, 2),
                                                       np.zeros(8)),
     pg.InvalidArgumentError, "to match the MDP"),
    ("direct-zero-prob-score",
     lambda: pg.DirectParameterization(3, 2).score(np.array([1.0, 0, .5, .5, .5, .5])),
     pg.InvalidPolicyError, "pi(a|s) > 0"),
    ("npg-step-size-negative", lambda: pg.npg_step(MDP, PARAM, THETA, -1.0),
     pg.InvalidArgumentError, "positive"),
    ("trpo-backtrack-coef", lambda: pg.trpo_step(MDP, PARAM, THETA, backtrack_coef=1.5),
     pg.InvalidArgumentError, "(0, 1)"),
    ("ppo-clip-zero", lambda: pg.ppo_objective(MDP, PARAM, THETA, THETA, clip_range=0.0),
     pg.InvalidArgumentError, "positive"),
    ("kl-shape-mismatch", lambda: pg.kl_divergence(np.ones(2) / 2, np.ones(3) / 3),
     pg.InvalidPolicyError, "same shape"),
    ("cpi-alpha", lambda: pg.cpi_lower_bound(MDP, PI, PI, 1.5), pg.InvalidArgumentError,
     "[0, 1]"),
    ("time-limit-zero", lambda: pg.on_policy_distribution(MDP, PI, time_limit=0),
     pg.InvalidArgumentError, ">= 1"),
    ("solver-name", lambda: pg.state_values(MDP, PI, solver="cg"), pg.InvalidArgumentError,
     "solver"),
    ("random-mdp-all-terminal", lambda: pg.random_mdp(0, 3, 2, n_terminal=3),
     pg.InvalidArgumentError, "fewer than"),
    ("random-mdp-bad-rng", lambda: pg.random_mdp("seed", 3, 2), pg.InvalidArgumentError,
     "Generator"),
    ("gae-shape-mismatch", gae_with(values=np.zeros((4, 3))), pg.InvalidRolloutError,
     "values: expected shape (4, 2)"),
    ("gae-nan-reward", gae_with(rewards=np.array([[0, 0], [np.nan, 0], [0, 0], [0, 0.0]])),
     pg.InvalidRolloutError, "finite"),
    ("gae-flags-not-bool", gae_with(terminated=np.full((4, 2), 2)), pg.InvalidRolloutError,
     "booleans"),
    ("gae-lambda", gae_with(lam=1.5), pg.InvalidArgumentError, "[0, 1]"),
    ("gae-gamma", gae_with(gamma=1.0), pg.InvalidArgumentError, "[0, 1)"),
    ("gae-empty", gae_with(**{k: v[:0] for k, v in ROLL.items()}), pg.InvalidRolloutError,
     "T = 0"),
    ("expected-gae-values-shape", lambda: pg.expected_gae(MDP, PI, np.zeros(4), lam=0.9),
     pg.InvalidArgumentError, "values: expected shape (3,)"),
    ("expected-gae-horizon", lambda: pg.expected_gae(MDP, PI, np.zeros(3), lam=0.9,
                                                     steps_to_buffer_end=0),
     pg.InvalidArgumentError, ">= 1"),
]


@pytest.mark.parametrize(("call", "exc", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_value_error(call, exc, fragment):
    with pytest.raises(exc) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)
    assert "received" in str(info.value) or "expected" in str(info.value)


def test_param_not_a_parameterization_is_type_error():
    with pytest.raises(TypeError, match="parameterization"):
        pg.policy_gradient(MDP, object(), THETA)


def test_kl_with_unsupported_action_is_inf_not_nan():
    kl = pg.kl_divergence(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert np.isinf(kl) and not np.isnan(kl)


def test_mdp_arrays_are_read_only_copies():
    R = np.zeros((3, 2))
    mdp = pg.TabularMDP(P=GOOD_P, R=R, gamma=0.9, mu=np.full(3, 1 / 3))
    R[0, 0] = 5.0
    assert mdp.R[0, 0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        mdp.R[0, 0] = 1.0


def test_reward_tensor_is_reduced_with_P():
    # source: R[s, a] = sum_s' P[s, a, s'] R[s, a, s']
    R3 = np.random.default_rng(0).normal(size=(3, 2, 3))
    mdp = pg.TabularMDP(P=GOOD_P, R=R3, gamma=0.9, mu=np.full(3, 1 / 3))
    assert np.allclose(mdp.R, (GOOD_P * R3).sum(axis=2), rtol=0, atol=1e-15)
    sparse = pg.TabularMDP(P=sp.csr_array(GOOD_P.reshape(6, 3)), R=R3, gamma=0.9,
                           mu=np.full(3, 1 / 3))
    assert np.allclose(sparse.R, mdp.R, rtol=0, atol=1e-15)
