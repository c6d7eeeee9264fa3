"""update_level.critic: a fitted critic against the exact V of the final policy."""

from __future__ import annotations

import numpy as np
import pytest
from pgtheory.oracles.envs import probe_mdp
from pgtheory.oracles.update import check_critic

import pgtheory as pg

MDP = pg.random_mdp(np.random.default_rng(3), 6, 2, gamma=0.9, n_terminal=1)
PI = np.full((6, 2), 0.5)


def test_exact_critic_passes_and_small_errors_are_tolerated() -> None:
    v = pg.state_values(MDP, PI)  # the exact target (independent of the check's own call)
    assert check_critic(MDP, PI, v).verdict == "pass"
    scale = np.abs(v[~MDP.terminal.astype(bool)]).max()
    assert check_critic(MDP, PI, v + 0.05 * scale).verdict == "pass"


def test_seeded_defects_fail() -> None:
    v = pg.state_values(MDP, PI)
    half = check_critic(MDP, PI, v / 2)  # critic regressed on A = G - V: V_phi -> V / 2
    assert half.verdict == "fail" and "advantage" in half.explanation
    wrong_gamma = pg.state_values(pg.TabularMDP(P=MDP.P, R=MDP.R, gamma=0.5, mu=MDP.mu,
                                                terminal=MDP.terminal), PI)
    assert check_critic(MDP, PI, wrong_gamma).verdict == "fail"
    nan = check_critic(MDP, PI, np.full(6, np.nan))
    assert nan.verdict == "fail" and "non-finite" in nan.explanation


def test_unvisited_states_are_ignored() -> None:
    mdp = probe_mdp(5)
    pi = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]])
    v = pg.state_values(mdp, pi).copy()
    v[2] = 123.0  # the terminal state: never a regression target
    assert check_critic(mdp, pi, v).verdict == "pass"


def test_window_averages_out_iterate_noise_but_not_a_wrong_target() -> None:
    """The last iterate 12% off (a2c seed 27 before the window) passes once averaged with
    the iterates around it; a critic that regresses on the advantage fails averaged too."""
    v = pg.state_values(MDP, PI)
    scale = np.abs(v[~MDP.terminal.astype(bool)]).max()
    noise = np.random.default_rng(0).normal(0.0, 0.03 * scale, size=(20, 6))
    noise[-1] = 0.12 * scale
    noise -= noise.mean(axis=0)  # zero-mean fluctuation around the target
    noisy = v + noise
    assert check_critic(MDP, PI, noisy[-1]).verdict == "fail"  # last iterate alone
    pis = np.repeat(PI[None], 20, axis=0)
    averaged = check_critic(MDP, pis, noisy)
    assert averaged.verdict == "pass" and "last 20 updates" in averaged.explanation
    half = check_critic(MDP, pis, noisy / 2)
    assert half.verdict == "fail" and "advantage" in half.explanation


def test_window_shapes_must_match() -> None:
    pis = np.repeat(PI[None], 3, axis=0)
    with pytest.raises(ValueError, match=r"expected shape \(3, 6\)"):
        check_critic(MDP, pis, np.zeros((2, 6)))
