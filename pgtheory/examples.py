"""Named textbook MDPs with known closed forms.

* :func:`two_armed_bandit` with :func:`sigmoid_policy`: ``J(theta) = sigma(theta) r_1 +
  (1 - sigma(theta)) r_0``; ``dJ/dtheta = sigma (1 - sigma)(r_1 - r_0)``; the natural
  gradient is ``(r_1 - r_0) / (1 - gamma)``.
* :func:`chain`: ``V*(i) = max(gamma^(n-1-i) r_goal, gamma^i r_trap) / (1 - gamma)``.
* :func:`short_corridor` with :func:`sigmoid_policy`: Sutton & Barto (2018), Example 13.1;
  undiscounted ``J(p) = (2p - 4) / (p (1 - p))`` (the limit gamma -> 1), maximized at
  ``p* = 2 - sqrt(2)``.
* :func:`gridworld`: deterministic moves (``slip = 0``) give
  ``V*(s) = gamma^(dist(s, goal) - 1) r_goal`` (Manhattan distance).
"""

from __future__ import annotations

import numpy as np

from pgtheory._validation import check_positive_int, check_unit_interval
from pgtheory.errors import InvalidArgumentError
from pgtheory.mdp import TabularMDP
from pgtheory.parameterizations import LinearSoftmax

__all__ = ["chain", "gridworld", "short_corridor", "sigmoid_policy", "two_armed_bandit"]


def sigmoid_policy(n_states: int) -> LinearSoftmax:
    """State-aliased two-action policy ``pi(1|s) = sigma(theta)`` in every state (one param).

    A :class:`~pgtheory.LinearSoftmax` with ``phi[s, 0] = 0`` and ``phi[s, 1] = 1``; used by
    :func:`two_armed_bandit` and :func:`short_corridor`.

    Returns
    -------
    LinearSoftmax
        ``n_params = 1``; requires a two-action MDP.

    Raises
    ------
    InvalidArgumentError
        ``n_states`` not a positive integer.

    References
    ----------
    Sutton & Barto (2018), Example 13.1 (state-aliased policy with one probability).
    """
    S = check_positive_int(n_states, "n_states")
    phi = np.zeros((S, 2, 1))
    phi[:, 1, 0] = 1.0
    return LinearSoftmax(phi)


def two_armed_bandit(rewards=(0.0, 1.0), *, gamma: float = 0.9) -> TabularMDP:
    """One-step two-armed bandit: state 0 (play), state 1 (terminal).

    Action ``a`` in state 0 pays ``rewards[a]`` and ends the episode.

    Returns
    -------
    TabularMDP
        S = 2, A = 2, ``mu = (1, 0)``.

    Raises
    ------
    InvalidArgumentError
        ``rewards`` not two finite numbers. InvalidMDPError: ``gamma`` outside [0, 1).

    References
    ----------
    Sutton & Barto (2018), Sec. 2.8 (gradient bandit with a softmax/sigmoid preference).
    """
    r = np.asarray(rewards, dtype=float)
    if r.shape != (2,) or not np.all(np.isfinite(r)):
        raise InvalidArgumentError(f"rewards: expected two finite numbers, received {rewards!r}")
    P = np.zeros((2, 2, 2))
    P[:, :, 1] = 1.0
    R = np.zeros((2, 2))
    R[0] = r
    return TabularMDP(P=P, R=R, gamma=gamma, mu=np.array([1.0, 0.0]),
                      terminal=np.array([False, True]))


def chain(n_states: int = 5, *, gamma: float = 0.9, goal_reward: float = 1.0,
          trap_reward: float = 0.1) -> TabularMDP:
    """Deterministic chain: actions 0 = left, 1 = right; walls at both ends.

    "left" in state 0 pays ``trap_reward`` (and stays); "right" in state ``n - 1`` pays
    ``goal_reward`` (and stays); every other move pays 0. ``mu`` is uniform. Continuing task.

    Returns
    -------
    TabularMDP
        S = ``n_states``, A = 2.

    Raises
    ------
    InvalidArgumentError
        ``n_states < 2``. InvalidMDPError: ``gamma`` outside [0, 1) or non-finite rewards.

    References
    ----------
    A deterministic variant of the chain of Strens (2000), "A Bayesian framework for
    reinforcement learning", ICML (small reward at one end, large at the other).
    """
    n = check_positive_int(n_states, "n_states", minimum=2)
    P = np.zeros((n, 2, n))
    for s in range(n):
        P[s, 0, max(s - 1, 0)] = 1.0
        P[s, 1, min(s + 1, n - 1)] = 1.0
    R = np.zeros((n, 2))
    R[0, 0] = trap_reward
    R[n - 1, 1] = goal_reward
    return TabularMDP(P=P, R=R, gamma=gamma, mu=np.full(n, 1.0 / n))


def short_corridor(*, gamma: float = 0.99) -> TabularMDP:
    """Short corridor with switched actions (Sutton & Barto 2018, Example 13.1).

    States 0 (start), 1 (actions reversed), 2, and 3 (terminal goal); actions 0 = left,
    1 = right; reward -1 per step. In 0, left stays and right goes to 1; in 1, right goes
    to 0 and left to 2; in 2, left goes to 1 and right to the goal. Use with
    :func:`sigmoid_policy` (all states look alike).

    Returns
    -------
    TabularMDP
        S = 4, A = 2, ``mu = (1, 0, 0, 0)``.

    Raises
    ------
    InvalidMDPError
        ``gamma`` outside [0, 1) (the book's undiscounted J is the limit gamma -> 1).

    References
    ----------
    Sutton & Barto (2018), Reinforcement Learning: An Introduction, 2nd ed., Example 13.1.
    """
    P = np.zeros((4, 2, 4))
    P[0, 0, 0] = P[0, 1, 1] = 1.0
    P[1, 1, 0] = P[1, 0, 2] = 1.0
    P[2, 0, 1] = P[2, 1, 3] = 1.0
    P[3, :, 3] = 1.0
    R = -np.ones((4, 2))
    R[3] = 0.0
    return TabularMDP(P=P, R=R, gamma=gamma, mu=np.array([1.0, 0, 0, 0]),
                      terminal=np.array([False, False, False, True]))


_MOVES = np.array([(0, -1), (1, 0), (0, 1), (-1, 0)])  # up, right, down, left as (dx, dy)


def gridworld(width: int = 4, height: int = 4, *, gamma: float = 0.9, slip: float = 0.0,
              goal_reward: float = 1.0, step_reward: float = 0.0) -> TabularMDP:
    """Grid with a terminal goal in the bottom-right corner.

    State ``s = y * width + x``. Entering the goal cell ``(width - 1, height - 1)`` ends the
    episode: the goal cell is the (absorbing) terminal state.
    Actions 0..3 = up, right, down, left; moves into walls stay. With probability ``slip`` the
    move is replaced by one of the four chosen uniformly. Each step pays ``step_reward``, plus
    ``goal_reward`` when it enters the goal. ``mu`` is uniform over non-goal cells.

    Returns
    -------
    TabularMDP
        S = width * height, A = 4.

    Raises
    ------
    InvalidArgumentError
        Sizes not positive integers, fewer than 2 cells, ``slip`` outside [0, 1].

    References
    ----------
    Sutton & Barto (2018), Example 4.1 (gridworld with a terminal corner).
    """
    w = check_positive_int(width, "width")
    h = check_positive_int(height, "height")
    if w * h < 2:
        raise InvalidArgumentError(f"width * height: expected at least 2 cells, received {w * h}")
    sl = check_unit_interval(slip, "slip")
    S = w * h
    goal = S - 1
    det = np.zeros((S, 4, S))
    for s in range(S):
        x, y = s % w, s // w
        for a, (dx, dy) in enumerate(_MOVES):
            nx, ny = min(max(x + dx, 0), w - 1), min(max(y + dy, 0), h - 1)
            det[s, a, ny * w + nx] = 1.0
    P = (1.0 - sl) * det + sl * det.mean(axis=1, keepdims=True)
    P[goal] = 0.0
    P[goal, :, goal] = 1.0
    R = step_reward + goal_reward * P[:, :, goal]
    R[goal] = 0.0
    mu = np.full(S, 1.0 / (S - 1))
    mu[goal] = 0.0
    terminal = np.zeros(S, dtype=bool)
    terminal[goal] = True
    return TabularMDP(P=P, R=R, gamma=gamma, mu=mu, terminal=terminal)
