"""Exact-law rollouts on a finite MDP, for the checks that compare sampled estimates with exact
expectations (numpy only; the Hypothesis strategies of :mod:`pgtheory.oracles.strategies` draw
from the same simulator).

Gymnasium 1.x semantics: an episode that ends at step ``t`` (terminated or truncated by the time
limit) restarts from ``mu`` at ``t + 1``, and ``next_states[t]`` is the true final state.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import pgtheory as pg

__all__ = ["RolloutBatch", "simulate_rollout"]


@dataclasses.dataclass(frozen=True)
class RolloutBatch:
    """A time-major rollout of N parallel environments for T steps (gymnasium 1.x semantics).

    Attributes
    ----------
    states, actions : ndarray of int, shape (T, N)
        ``s_t`` and ``a_t``.
    rewards : ndarray, shape (T, N)
        ``R[s_t, a_t]``.
    next_states : ndarray of int, shape (T, N)
        The true ``s_{t+1}``: the final state where the episode ended at ``t``.
    terminated, truncated : ndarray of bool, shape (T, N)
    steps_to_time_limit : ndarray of int, shape (T, N)
        Steps left before the time limit, counting step ``t`` (0 when there is no limit).
    bootstrap_states : ndarray of int, shape (N,)
        ``s_T``, the state after the buffer (for the last bootstrap).
    valid : ndarray of bool, shape (T, N), or None
        False at next-step autoreset slots (the step after an episode end that only resets
        the env; see :attr:`pgtheory.oracles.protocol.Rollout.valid`); None: every slot is a
        transition (same-step autoreset, what :func:`simulate_rollout` produces).
    """

    states: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_states: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    steps_to_time_limit: np.ndarray
    bootstrap_states: np.ndarray
    valid: np.ndarray | None = None


def simulate_rollout(mdp: pg.TabularMDP, pi: np.ndarray, *, num_steps: int, num_envs: int,
                     time_limit: int | None, rng: np.random.Generator,
                     reset_slots: bool = False) -> RolloutBatch:
    """Simulate a :class:`RolloutBatch` of ``num_envs`` environments for ``num_steps`` steps.

    Args:
        mdp: the finite MDP (its ``mu`` draws each reset; terminal states end an episode).
        pi: policy ``pi[s, a]``, shape (S, A), row-stochastic (not re-validated).
        num_steps, num_envs: T and N.
        time_limit: steps after which a live episode is truncated, or None.
        rng: the generator every draw comes from (reproducible given its seed).
        reset_slots: gymnasium's next-step autoreset: the slot after an episode end only
            resets its env (state: the final state, action 0, reward 0, next state: the draw
            from ``mu``, both flags False) and is marked False in ``valid``.

    Returns:
        A :class:`RolloutBatch` with arrays of shape (T, N) and ``bootstrap_states`` of shape (N,).
    """
    T, N, S = num_steps, num_envs, mdp.n_states
    P = mdp.dense_P()
    shape = (T, N)
    states, actions, nxt = (np.zeros(shape, int) for _ in range(3))
    rewards = np.zeros(shape)
    term, trunc = np.zeros(shape, bool), np.zeros(shape, bool)
    left = np.zeros(shape, int)
    s = rng.choice(S, size=N, p=mdp.mu)
    age = np.zeros(N, int)
    valid = np.ones(shape, bool)
    resetting = np.zeros(N, bool)
    for t in range(T):
        for n in range(N):
            if resetting[n]:  # next-step autoreset: this slot only resets the env
                s2 = rng.choice(S, p=mdp.mu)
                states[t, n], nxt[t, n], valid[t, n] = s[n], s2, False
                left[t, n] = time_limit or 0
                s[n], resetting[n] = s2, False
                continue
            a = rng.choice(mdp.n_actions, p=pi[s[n]])
            s2 = rng.choice(S, p=P[s[n], a])
            states[t, n], actions[t, n], nxt[t, n] = s[n], a, s2
            rewards[t, n] = mdp.R[s[n], a]
            age[n] += 1
            term[t, n] = bool(mdp.terminal[s2])
            if time_limit is not None:
                left[t, n] = time_limit - age[n] + 1
                trunc[t, n] = (not term[t, n]) and age[n] >= time_limit
            if (term[t, n] or trunc[t, n]) and reset_slots:
                s[n], age[n], resetting[n] = s2, 0, True
            elif term[t, n] or trunc[t, n]:
                s[n], age[n] = rng.choice(S, p=mdp.mu), 0
            else:
                s[n] = s2
    return RolloutBatch(states, actions, rewards, nxt, term, trunc, left, s.copy(),
                        valid=valid if reset_slots else None)
