"""GAE, discounted and lambda-returns on rollouts; the exact expectation of GAE on an MDP."""

import itertools

import numpy as np
import pytest
from helpers import mdp_and_policies, rel_err
from hypothesis import given
from hypothesis import strategies as st

import pgtheory as pg


@st.composite
def rollouts(draw):
    """Time-major (T, N) rollouts with random flags; shrinks to T = N = 1, no flags."""
    T, N = draw(st.integers(1, 12)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p_term, p_trunc = draw(st.sampled_from([0.0, 0.2])), draw(st.sampled_from([0.0, 0.2]))
    values = rng.normal(size=(T, N))
    term, trunc = rng.random((T, N)) < p_term, rng.random((T, N)) < p_trunc
    # as collected: inside an episode V(s_{t+1}) is the next row's value; at episode ends and
    # at the buffer end it is the value of the final observation (any number)
    next_values = rng.normal(size=(T, N))
    inside = ~(term | trunc)[:-1]
    next_values[:-1][inside] = values[1:][inside]
    return dict(rewards=rng.normal(size=(T, N)), values=values, next_values=next_values,
                terminated=term, truncated=trunc)


def naive_gae(r, v, nv, term, trunc, gamma, lam):
    """Independent route: A_t = sum_l (gamma lam)^l delta_{t+l}, summed forward until the first
    episode end (inclusive) or the end of the buffer (GAE paper, Eq. (16) with cut traces)."""
    T = r.shape[0]
    delta = r + gamma * (1 - term) * nv - v
    out = np.zeros_like(r)
    for t in range(T):
        for n in range(r.shape[1]):
            acc, coef = 0.0, 1.0
            for k in range(t, T):
                acc += coef * delta[k, n]
                if term[k, n] or trunc[k, n]:
                    break
                coef *= gamma * lam
            out[t, n] = acc
    return out


@given(rollouts(), st.sampled_from([0.0, 0.9, 0.99]), st.sampled_from([0.0, 0.5, 0.95, 1.0]))
def test_gae_matches_forward_sum(ro, gamma, lam):
    got = pg.gae(ro["rewards"], ro["values"], ro["terminated"], ro["truncated"], gamma, lam,
                 next_values=ro["next_values"])
    expect = naive_gae(ro["rewards"], ro["values"], ro["next_values"], ro["terminated"],
                       ro["truncated"], gamma, lam)
    assert rel_err(got, expect) < 1e-12


@given(rollouts(), st.sampled_from([0.0, 0.9, 0.99]))
def test_gae_special_cases_and_return_identities(ro, gamma):
    # sources: GAE paper Eqs. (17)-(18): lam = 0 is the TD error; lam = 1 is the return minus
    # the baseline; in general A + V is the lambda-return (Sutton & Barto 2018, Sec. 12.1)
    r, v, nv = ro["rewards"], ro["values"], ro["next_values"]
    term, trunc = ro["terminated"], ro["truncated"]
    td = r + gamma * (1 - term) * nv - v
    assert rel_err(pg.gae(r, v, term, trunc, gamma, 0.0, next_values=nv), td) < 1e-12
    ret = pg.discounted_returns(r, term, trunc, gamma, next_values=nv)
    assert rel_err(pg.gae(r, v, term, trunc, gamma, 1.0, next_values=nv) + v, ret) < 1e-12
    for lam in (0.3, 0.95):
        lr = pg.lambda_returns(r, term, trunc, gamma, lam, next_values=nv)
        assert rel_err(pg.gae(r, v, term, trunc, gamma, lam, next_values=nv) + v, lr) < 1e-12


def test_gae_hand_computed_episode_boundaries():
    # source: by hand, gamma = 0.5, lam = 1, T = 4, one env. Step 1 is truncated (bootstrap
    # from the final observation's value 10), step 3 is terminated (no bootstrap; its
    # next_values entry 99 must be ignored).
    r = np.array([1.0, 2.0, 3.0, 4.0])
    v = np.zeros(4)
    nv = np.array([0.0, 10.0, 0.0, 99.0])  # V(s_1) = V(s_3) = 0 = values[1], values[3]
    term = np.array([False, False, False, True])
    trunc = np.array([False, True, False, False])
    # A_1 = 2 + 0.5 * 10 = 7;  A_0 = 1 + 0.5 * A_1 = 4.5
    # A_3 = 4;                 A_2 = 3 + 0.5 * A_3 = 5
    got = pg.gae(r, v, term, trunc, 0.5, 1.0, next_values=nv)
    assert np.allclose(got, [4.5, 7.0, 5.0, 4.0], rtol=0, atol=1e-15)
    # both flags: termination wins (no bootstrap)
    got2 = pg.gae(r, v, term, trunc | term, 0.5, 1.0, next_values=nv)
    assert got2[3] == 4.0


def enumerate_expected_gae(mdp, pi, values, lam, h):
    """Exact E[A_hat_0 | s_0, a_0] by enumerating every trajectory of at most h steps and
    running the reference pg.gae on each (an independent route to expected_gae)."""
    S, A = mdp.n_states, mdp.n_actions
    out = np.zeros((S, A))
    for s0, a0 in itertools.product(range(S), range(A)):
        if mdp.terminal[s0]:
            continue
        total = 0.0
        # a path: (s0, a0, s1, a1, ..., s_k); stops at a terminal state or after h steps
        stack = [([s0], [a0], 1.0)]
        while stack:
            states, actions, prob = stack.pop()
            s, a = states[-1], actions[-1]
            for s_next in range(S):
                p = prob * mdp.P[s, a, s_next]
                if p == 0.0:
                    continue
                ended = bool(mdp.terminal[s_next])
                if ended or len(actions) == h:
                    T = len(actions)
                    rew = np.array([mdp.R[x, y] for x, y in zip(states, actions, strict=True)])
                    vals = values[np.array(states)]
                    nxt = np.append(values[np.array(states[1:], dtype=int)], values[s_next])
                    term = np.zeros(T, bool)
                    term[-1] = ended
                    trunc = np.zeros(T, bool)
                    trunc[-1] = not ended  # time limit (or buffer end: same bootstrap)
                    adv = pg.gae(rew, vals, term, trunc, mdp.gamma, lam, next_values=nxt)
                    total += p * adv[0]
                else:
                    for a_next in range(A):
                        if pi[s_next, a_next] > 0:
                            stack.append(([*states, s_next], [*actions, a_next],
                                          p * pi[s_next, a_next]))
        out[s0, a0] = total
    return out


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed={s}")
@pytest.mark.parametrize("h", [1, 2, 4], ids=lambda h: f"h={h}")
def test_expected_gae_equals_trajectory_enumeration(seed, h):
    rng = np.random.default_rng(seed)
    mdp = pg.random_mdp(seed, 4, 2, gamma=0.9, n_terminal=1, n_successors=3)
    pi = rng.dirichlet(np.ones(2), size=4)
    values = rng.normal(size=4)
    for lam in (0.0, 0.7, 1.0):
        exact = enumerate_expected_gae(mdp, pi, values, lam, h)
        got = pg.expected_gae(mdp, pi, values, lam=lam, steps_to_time_limit=h)
        assert rel_err(got, exact) < 1e-12
        got_k = pg.expected_gae(mdp, pi, values, lam=lam, steps_to_buffer_end=h,
                                steps_to_time_limit=h + 5)
        assert rel_err(got_k, exact) < 1e-12


@given(mdp_and_policies(), st.sampled_from([0.0, 0.5, 0.95, 1.0]),
       st.sampled_from([None, 1, 3, 50]))
def test_expected_gae_is_unbiased_with_the_true_critic(case, lam, horizon):
    # source: with values = V_pi every expected TD error after the first is 0 and the first is
    # A_pi (GAE paper, Proposition 1 / Sec. 3), for every lambda and horizon
    mdp, pi = case
    v = pg.state_values(mdp, pi)
    A = pg.advantages(mdp, pi)
    A[mdp.terminal] = 0.0
    got = pg.expected_gae(mdp, pi, v, lam=lam, steps_to_buffer_end=horizon)
    assert rel_err(got, A) < 1e-9


@given(mdp_and_policies(gamma_max=0.9))
def test_expected_gae_lambda_one_and_infinite_horizon(case):
    # source: lam = 1, no horizon: E[sum_t gamma^t r_t | s, a] - values(s) = Q_pi - values;
    # and the infinite-horizon solve equals a long finite horizon ((gamma lam)^h -> 0)
    mdp, pi = case
    values = np.random.default_rng(0).normal(size=mdp.n_states)
    Q = pg.action_values(mdp, pi)
    expect = Q - values[:, None]
    expect[mdp.terminal] = 0.0
    assert rel_err(pg.expected_gae(mdp, pi, values, lam=1.0), expect) < 1e-9
    inf = pg.expected_gae(mdp, pi, values, lam=0.8)
    assert rel_err(pg.expected_gae(mdp, pi, values, lam=0.8, steps_to_time_limit=400), inf) < 1e-10
