"""pgtheory.oracles.strategies and .envs: guarantees, shrinking, bad arguments, exact dynamics."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import find, given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pgtheory.oracles import strategies as ost

import pgtheory as pg
from pgtheory import oracles


@given(st.data())
def test_strategy_guarantees(data):
    mdp = data.draw(ost.tabular_mdps(min_states=2, max_states=5, max_actions=3,
                                     max_successors=2, min_gamma=0.5, max_gamma=0.9))
    assert 2 <= mdp.n_states <= 5 and 1 <= mdp.n_actions <= 3 and 0.5 <= mdp.gamma <= 0.9
    assert np.all((mdp.P > 0).sum(axis=2)[~mdp.terminal] <= 2)
    assert (~mdp.terminal).any()
    pi = data.draw(ost.policies(n_states=mdp.n_states, n_actions=mdp.n_actions, min_prob=0.1))
    assert np.allclose(pi.sum(axis=1), 1.0) and pi.min() >= 0.1 - 1e-12
    theta = data.draw(ost.softmax_parameters(n_states=mdp.n_states, n_actions=mdp.n_actions))
    assert theta.shape == (mdp.n_states * mdp.n_actions,) and np.abs(theta).max() <= 4.0
    b = data.draw(ost.rollout_batches(mdp=mdp, policy=pi, time_limit=3, max_steps=10))
    assert not np.any(b.terminated & b.truncated)
    assert np.all(mdp.terminal[b.next_states] == b.terminated)
    assert np.all((b.steps_to_time_limit >= 1) & (b.steps_to_time_limit <= 3))
    assert np.all(b.truncated == ((b.steps_to_time_limit == 1) & ~b.terminated))
    assert np.array_equal(b.rewards, mdp.R[b.states, b.actions])
    # inside an episode the next row starts where this one ended; after an end it restarts
    cont = ~(b.terminated | b.truncated)[:-1]
    assert np.array_equal(b.states[1:][cont], b.next_states[:-1][cont])
    model = data.draw(ost.lqr_models(max_state_dim=3))
    assert np.abs(np.linalg.eigvals(model.A)).max() < 1.0


def test_shrinking_targets():
    # documented shrink targets: the smallest MDP with zero rewards, gamma = min_gamma
    mdp = find(ost.tabular_mdps(), lambda m: True)
    assert (mdp.n_states, mdp.n_actions, mdp.gamma) == (1, 1, 0.0)
    assert np.all(mdp.R == 0) and mdp.P[0, 0, 0] == 1.0
    pi = find(ost.policies(n_states=2, n_actions=3), lambda p: True)
    assert np.array_equal(pi, np.array([[1.0, 0, 0], [1.0, 0, 0]]))
    assert np.all(find(ost.softmax_parameters(n_states=2, n_actions=2), lambda t: True) == 0)


@pytest.mark.parametrize("strategy", [
    lambda: ost.tabular_mdps(min_states=3, max_states=2),
    lambda: ost.tabular_mdps(max_gamma=1.0),
    lambda: ost.tabular_mdps(max_successors=0),
    lambda: ost.policies(n_states=2, n_actions=2, min_prob=0.9),
    lambda: ost.softmax_parameters(n_states=0, n_actions=2),
    lambda: ost.rollout_batches(mdp=pg.chain(3), policy=np.ones((2, 2)) / 2),
    lambda: ost.rollout_batches(mdp=pg.chain(3), policy=np.ones((3, 2)) / 2, time_limit=0),
    lambda: ost.lqr_models(min_state_dim=0),
], ids=["states-order", "gamma-one", "successors-zero", "min-prob", "zero-states",
        "policy-shape", "time-limit", "lqr-dims"])
def test_invalid_arguments_raise_at_draw_time(strategy):
    s = strategy()  # building the strategy is lazy and must not raise

    @given(s)
    def draw(_):
        pass

    with pytest.raises(InvalidArgument):
        draw()


def test_tabular_env_passes_gymnasium_checker():
    for obs in ("onehot", "discrete"):
        check_env(oracles.TabularEnv(pg.random_mdp(0, 5, 3, n_terminal=1), observation=obs),
                  skip_render_check=True)


def test_tabular_env_follows_the_model_exactly():
    # source: with one-hot transition rows the next state is determined: the env must follow
    # argmax P[s, a], pay R[s, a] for acting in s, and terminate exactly on terminal states
    rng = np.random.default_rng(0)
    S, A = 6, 3
    P = np.zeros((S, A, S))
    P[np.arange(S)[:, None], np.arange(A)[None, :], rng.integers(0, S, size=(S, A))] = 1.0
    P[5] = 0.0
    P[5, :, 5] = 1.0
    R = rng.normal(size=(S, A))
    R[5] = 0.0
    mdp = pg.TabularMDP(P=P, R=R, gamma=0.9, mu=np.r_[np.full(5, 0.2), 0.0],
                        terminal=np.r_[np.zeros(5, bool), True])
    env = oracles.TabularEnv(mdp, observation="discrete")
    s, _ = env.reset(seed=3)
    for _ in range(200):
        a = int(rng.integers(A))
        s2, r, term, trunc, _ = env.step(a)
        assert s2 == int(np.argmax(P[s, a])) and r == R[s, a] and not trunc
        assert term == bool(mdp.terminal[s2])
        s = env.reset()[0] if term else s2


def test_time_limit_truncates_without_terminating():
    mdp = pg.chain(4)  # continuing: never terminates
    env = gym.make("pgtheory/Tabular-v0", mdp=mdp, max_episode_steps=5)
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    assert np.array_equal(a, b)
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(5)]
    assert flags == [(False, False)] * 4 + [(False, True)]


def test_probe_solutions_match_closed_forms():
    # sources: PROBE_DESCRIPTIONS (A. Jones 2021), by hand with gamma = 0.9
    g = 0.9
    assert np.allclose(oracles.probe_solution(1, gamma=g).state_values, [1, 0])
    assert np.allclose(oracles.probe_solution(2, gamma=g).state_values, [-1, 1, 0])
    assert np.allclose(oracles.probe_solution(3, gamma=g).state_values, [g, 1, 0])
    s4 = oracles.probe_solution(4, gamma=g)
    assert np.allclose(s4.action_values[0], [-1, 1]) and s4.policy[0, 1] == 1.0
    s5 = oracles.probe_solution(5, gamma=g)
    assert s5.policy[0, 0] == 1.0 and s5.policy[1, 1] == 1.0
    assert np.allclose(s5.state_values[:2], [1, 1])
    for k in range(1, 6):
        env = gym.make(f"pgtheory/Probe{k}-v0")
        obs, _ = env.reset(seed=0)
        assert obs.shape == (oracles.probe_mdp(k).n_states,)


def test_env_bad_input():
    with pytest.raises(TypeError, match="TabularMDP"):
        oracles.TabularEnv("chain")
    with pytest.raises(ValueError, match="observation"):
        oracles.TabularEnv(pg.chain(3), observation="pixels")
    env = oracles.TabularEnv(pg.chain(3))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action: expected an integer in \[0, 2\)"):
        env.step(5)
    with pytest.raises(ValueError, match="probe number"):
        oracles.probe_mdp(6)
