"""Hypothesis strategies for policy-gradient testing, in the style of hypothesis.extra.numpy.

Plural nouns, keyword-only arguments; invalid arguments raise
:class:`hypothesis.errors.InvalidArgument` when the strategy is drawn from. Each docstring says
what the drawn values guarantee and what failing examples shrink towards.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it


import numpy as np
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from pgtheory.oracles.rollouts import RolloutBatch, simulate_rollout

import pgtheory as pg

__all__ = [
    "RolloutBatch",
    "lqr_models",
    "policies",
    "rollout_batches",
    "softmax_parameters",
    "tabular_mdps",
]

_WEIGHT = st.integers(0, 8)


def _check_range(lo, hi, name: str, *, minimum: int) -> None:
    for v, n in ((lo, f"min_{name}"), (hi, f"max_{name}")):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise InvalidArgument(f"{n}={v!r}: expected an integer >= {minimum}")
    if lo > hi:
        raise InvalidArgument(f"min_{name}={lo} must not exceed max_{name}={hi}")


def _stochastic_rows(draw, n_rows: int, n_cols: int, *, max_support: int | None = None):
    """Rows of integer weights normalized to sum 1; shrink towards all mass on column 0."""
    out = np.zeros((n_rows, n_cols))
    for i in range(n_rows):
        w = np.array(draw(st.lists(_WEIGHT, min_size=n_cols, max_size=n_cols)), dtype=float)
        if max_support is not None and max_support < n_cols:
            keep = np.argsort(-w, kind="stable")[:max_support]
            mask = np.zeros(n_cols, bool)
            mask[keep] = True
            w = np.where(mask, w, 0.0)
        if w.sum() == 0:
            w[0] = 1.0
        out[i] = w / w.sum()
    return out


@st.composite
def tabular_mdps(draw, *, min_states: int = 1, max_states: int = 6, min_actions: int = 1,
                 max_actions: int = 4, min_gamma: float = 0.0, max_gamma: float = 0.99,
                 allow_terminal: bool = True, max_successors: int | None = None,
                 reward_scale: float = 1.0):
    """Finite MDPs as :class:`pgtheory.TabularMDP`.

    Guarantees: ``min_states <= S <= max_states``, ``min_actions <= A <= max_actions``,
    ``min_gamma <= gamma <= max_gamma < 1``, rows of ``P`` are distributions with at most
    ``max_successors`` non-zero entries (sparse transitions), rewards in
    ``[-reward_scale, reward_scale]`` on a grid of eighths, terminal states (when allowed) are
    absorbing with zero reward and no initial mass, and at least one state is non-terminal.

    Shrinks towards: one state, one action, gamma = ``min_gamma``, every transition to
    state 0, zero rewards, no terminal states, ``mu`` on state 0.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing gives a pgtheory.TabularMDP.

    References
    ----------
    Conventions of ``hypothesis.extra.numpy`` (Hypothesis documentation); pgtheory's array
    conventions (:mod:`pgtheory.mdp`).

    Raises
    ------
    InvalidArgument
        Sizes out of order or below 1; gammas outside [0, 1) or out of order;
        ``max_successors < 1``; ``reward_scale`` not positive.
    """
    _check_range(min_states, max_states, "states", minimum=1)
    _check_range(min_actions, max_actions, "actions", minimum=1)
    if not (0.0 <= min_gamma <= max_gamma < 1.0):
        raise InvalidArgument(f"min_gamma={min_gamma}, max_gamma={max_gamma}: expected "
                              f"0 <= min_gamma <= max_gamma < 1")
    if max_successors is not None and (not isinstance(max_successors, int) or max_successors < 1):
        raise InvalidArgument(f"max_successors={max_successors!r}: expected an integer >= 1")
    if not reward_scale > 0:
        raise InvalidArgument(f"reward_scale={reward_scale!r}: expected a positive number")
    S = draw(st.integers(min_states, max_states))
    A = draw(st.integers(min_actions, max_actions))
    n_term = draw(st.integers(0, S - 1)) if (allow_terminal and S > 1) else 0
    gamma = draw(st.floats(min_gamma, max_gamma, allow_nan=False))
    n_live = S - n_term
    P = np.zeros((S, A, S))
    P[:n_live] = _stochastic_rows(draw, n_live * A, S, max_support=max_successors).reshape(
        n_live, A, S)
    for s in range(n_live, S):
        P[s, :, s] = 1.0
    R = np.zeros((S, A))
    R[:n_live] = np.array(draw(st.lists(st.integers(-8, 8), min_size=n_live * A,
                                        max_size=n_live * A))).reshape(n_live, A)
    R *= reward_scale / 8.0
    mu = np.zeros(S)
    mu[:n_live] = _stochastic_rows(draw, 1, n_live)[0]
    terminal = np.zeros(S, bool)
    terminal[n_live:] = True
    return pg.TabularMDP(P=P, R=R, gamma=gamma, mu=mu, terminal=terminal)


@st.composite
def policies(draw, *, n_states: int, n_actions: int, min_prob: float = 0.0):
    """Row-stochastic policies ``pi[s, a]`` of shape (n_states, n_actions).

    Guarantees every probability is ``>= min_prob`` (mixing with the uniform policy).
    Shrinks towards the deterministic policy "always action 0" (mixed with ``min_prob``).

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing gives a ndarray, shape (n_states, n_actions).

    References
    ----------
    Conventions of ``hypothesis.extra.numpy`` (Hypothesis documentation); pgtheory's array
    conventions (:mod:`pgtheory.mdp`).

    Raises
    ------
    InvalidArgument
        Sizes below 1, or ``min_prob`` outside ``[0, 1 / n_actions]``.
    """
    _check_range(n_states, n_states, "states", minimum=1)
    _check_range(n_actions, n_actions, "actions", minimum=1)
    if not (0.0 <= min_prob <= 1.0 / n_actions):
        raise InvalidArgument(f"min_prob={min_prob!r}: expected a value in [0, 1/n_actions]")
    pi = _stochastic_rows(draw, n_states, n_actions)
    return (1.0 - n_actions * min_prob) * pi + min_prob


@st.composite
def softmax_parameters(draw, *, n_states: int, n_actions: int, max_abs: float = 4.0):
    """Flat logits for :class:`pgtheory.TabularSoftmax`, length ``n_states * n_actions``,
    entries in ``[-max_abs, max_abs]``. Shrinks towards all zeros (the uniform policy).

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing gives a ndarray, shape (n_states * n_actions,).

    References
    ----------
    Conventions of ``hypothesis.extra.numpy`` (Hypothesis documentation); pgtheory's array
    conventions (:mod:`pgtheory.mdp`).

    Raises
    ------
    InvalidArgument
        Sizes below 1 or ``max_abs`` not positive.
    """
    _check_range(n_states, n_states, "states", minimum=1)
    _check_range(n_actions, n_actions, "actions", minimum=1)
    if not max_abs > 0:
        raise InvalidArgument(f"max_abs={max_abs!r}: expected a positive number")
    vals = draw(st.lists(st.floats(-max_abs, max_abs, allow_nan=False),
                         min_size=n_states * n_actions, max_size=n_states * n_actions))
    return np.array(vals)


@st.composite
def rollout_batches(draw, *, mdp: pg.TabularMDP, policy, min_steps: int = 1,
                    max_steps: int = 16, min_envs: int = 1, max_envs: int = 4,
                    time_limit: int | None = None):
    """Rollouts of ``policy`` in ``mdp`` as :class:`RolloutBatch` (time-major ``(T, N)``).

    Guarantees gymnasium 1.x flag semantics: ``terminated`` when entering a terminal state,
    ``truncated`` at the time limit (never both), resets from ``mu`` after either, and
    ``next_states`` holding the final state of an ended episode.

    Shrinks towards: T = ``min_steps``, N = ``min_envs``, simulation seed 0.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing gives a RolloutBatch.

    References
    ----------
    Conventions of ``hypothesis.extra.numpy`` (Hypothesis documentation); pgtheory's array
    conventions (:mod:`pgtheory.mdp`).

    Raises
    ------
    InvalidArgument
        Sizes out of order or below 1, ``time_limit`` below 1, or a policy of the wrong shape.
    """
    _check_range(min_steps, max_steps, "steps", minimum=1)
    _check_range(min_envs, max_envs, "envs", minimum=1)
    if time_limit is not None and (not isinstance(time_limit, int) or time_limit < 1):
        raise InvalidArgument(f"time_limit={time_limit!r}: expected None or an integer >= 1")
    pi = np.asarray(policy, dtype=float)
    if pi.shape != (mdp.n_states, mdp.n_actions):
        raise InvalidArgument(f"policy: expected shape {(mdp.n_states, mdp.n_actions)}, "
                              f"received {pi.shape}")
    T = draw(st.integers(min_steps, max_steps))
    N = draw(st.integers(min_envs, max_envs))
    seed = draw(st.integers(0, 2**32 - 1))
    return simulate_rollout(mdp, pi, num_steps=T, num_envs=N, time_limit=time_limit,
                            rng=np.random.default_rng(seed))


@st.composite
def lqr_models(draw, *, min_state_dim: int = 1, max_state_dim: int = 4,
               min_action_dim: int = 1, max_action_dim: int = 3, min_gamma: float = 0.5,
               max_gamma: float = 0.99):
    """Discounted LQR models (:class:`pgtheory.lqr.LQRModel`) for which ``K = 0`` is
    stabilizing (``A`` has spectral radius 0.9).

    Guarantees symmetric PSD ``Q``, ``W``, ``Sigma0`` and PD ``R``. Shrinks towards the
    smallest dimensions, gamma = ``min_gamma`` and generator seed 0.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Drawing gives a pgtheory.lqr.LQRModel.

    References
    ----------
    Conventions of ``hypothesis.extra.numpy`` (Hypothesis documentation); pgtheory's array
    conventions (:mod:`pgtheory.mdp`).

    Raises
    ------
    InvalidArgument
        Dimensions out of order or below 1; gammas outside [0, 1) or out of order.
    """
    from pgtheory.lqr import LQRModel

    _check_range(min_state_dim, max_state_dim, "state_dim", minimum=1)
    _check_range(min_action_dim, max_action_dim, "action_dim", minimum=1)
    if not (0.0 <= min_gamma <= max_gamma < 1.0):
        raise InvalidArgument(f"min_gamma={min_gamma}, max_gamma={max_gamma}: expected "
                              f"0 <= min_gamma <= max_gamma < 1")
    n = draw(st.integers(min_state_dim, max_state_dim))
    m = draw(st.integers(min_action_dim, max_action_dim))
    gamma = draw(st.floats(min_gamma, max_gamma, allow_nan=False))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.normal(size=(n, n))
    A *= 0.9 / max(np.abs(np.linalg.eigvals(A)).max(), 1e-9)
    M, N_, L, S0 = (rng.normal(size=(k, k)) for k in (n, m, n, n))
    return LQRModel(A=A, B=rng.normal(size=(n, m)), Q=M.T @ M + 0.1 * np.eye(n),
                    R=N_.T @ N_ + np.eye(m), W=0.1 * L.T @ L, Sigma0=S0.T @ S0 + 0.1 * np.eye(n),
                    gamma=gamma)
