"""Reference advantage estimators on rollouts, and the exact expectation of GAE on an MDP.

Rollout conventions (time-major, gymnasium 1.x)
-----------------------------------------------
Arrays have shape ``(T,)`` or ``(T, N)`` (T steps of N parallel environments). At step ``t``
the agent acts in ``s_t`` and receives ``rewards[t]``; the environment reports
``terminated[t]`` (``s_{t+1}`` is terminal: no bootstrap) and ``truncated[t]`` (time limit:
bootstrap from the value of the *final observation* ``s_{t+1}``). ``next_values[t]`` is the
critic's value of the true next state ``s_{t+1}``: the next observation in the same episode,
the final observation when the episode ended at ``t`` (gymnasium's ``final_obs``), and the
observation after the buffer for ``t = T - 1``. It is ignored where ``terminated[t]`` (pass 0
there). When both flags are set, termination wins. The lambda-trace is cut at every episode
end (either flag) and at the end of the buffer.

``delta_t = r_t + gamma (1 - terminated_t) next_values_t - values_t``
``A_t = delta_t + gamma lam (1 - terminated_t)(1 - truncated_t) A_{t+1}``, ``A_T = 0``.
"""

from __future__ import annotations

import numpy as np

from pgtheory import references
from pgtheory._validation import (
    DEFAULT_ATOL,
    as_float_array,
    check_positive_int,
    check_unit_interval,
)
from pgtheory.errors import InvalidArgumentError
from pgtheory.mdp import TabularMDP

__all__ = ["discounted_returns", "expected_gae", "gae", "lambda_returns"]


def gae(rewards, values, terminated, truncated, gamma: float, lam: float, *,
        next_values) -> np.ndarray:
    """Generalized advantage estimation on a time-major rollout (reference implementation).

    ``A_t = sum_l (gamma lam)^l delta_{t+l}`` up to the first episode end or the end of the
    buffer, with ``delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)`` (see the
    module docstring for the exact recursion and flag semantics). The one implementation is
    :func:`pgtheory.references.gae`; this is its public form without the defect switches.

    Parameters
    ----------
    rewards : array_like, shape (T,) or (T, N)
        ``r_t``, reward for acting in ``s_t``.
    values : array_like, same shape
        ``V(s_t)``.
    terminated, truncated : array_like of bool, same shape
        gymnasium flags of step ``t``.
    gamma : float
        Discount in [0, 1).
    lam : float
        GAE lambda in [0, 1].
    next_values : array_like, same shape, keyword-only
        ``V(s_{t+1})`` of the true next state (final observation at episode ends; the
        observation after the buffer at ``t = T - 1``).

    Returns
    -------
    ndarray, same shape as ``rewards``
        Advantage estimates (reward units).

    Raises
    ------
    InvalidRolloutError
        Shapes differ, NaN/inf, non-boolean flags, T = 0.
    InvalidArgumentError
        ``gamma`` outside [0, 1) or ``lam`` outside [0, 1].

    References
    ----------
    Schulman, Moritz, Levine, Jordan & Abbeel (2016), "High-dimensional continuous control
    using generalized advantage estimation", ICLR, arXiv:1506.02438v6, Eqs. (11)-(16).
    """
    return references.gae(rewards, values, terminated, truncated, gamma, lam,
                          next_values=next_values)


def discounted_returns(rewards, terminated, truncated, gamma: float, *,
                       next_values) -> np.ndarray:
    """Bootstrapped discounted returns (reward-to-go) on a time-major rollout.

    ``G_t = r_t + gamma (1 - terminated_t) X_t`` with ``X_t = next_values_t`` where the episode
    was truncated at ``t`` or ``t = T - 1``, and ``X_t = G_{t+1}`` otherwise. Equals
    ``gae(..., lam=1) + values`` for any ``values``. Implemented once, in
    :func:`pgtheory.references.discounted_returns`.

    Parameters
    ----------
    rewards, terminated, truncated, next_values
        As :func:`gae`.
    gamma : float

    Returns
    -------
    ndarray, same shape as ``rewards``

    Raises
    ------
    InvalidRolloutError, InvalidArgumentError
        As :func:`gae`.

    References
    ----------
    Sutton & Barto (2018), Eq. (3.9) (return), Sec. 7.1 (bootstrapped n-step return).
    """
    return references.discounted_returns(rewards, terminated, truncated, gamma,
                                         next_values=next_values)


def lambda_returns(rewards, terminated, truncated, gamma: float, lam: float, *,
                   next_values) -> np.ndarray:
    """TD(lambda) returns on a time-major rollout.

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lam) V(s_{t+1}) + lam G_{t+1}]``, with the
    bracket replaced by ``V(s_{t+1})`` where the trace is cut (truncation, end of buffer).
    Equals ``gae(...) + values`` on rollouts as collected (``next_values[t] == values[t + 1]``
    inside episodes). Implemented once, in :func:`pgtheory.references.lambda_returns`.

    Returns
    -------
    ndarray, same shape as ``rewards``

    Raises
    ------
    InvalidRolloutError, InvalidArgumentError
        As :func:`gae`.

    References
    ----------
    Sutton & Barto (2018), Eq. (12.3) and its recursive form; Schulman et al. (2016),
    arXiv:1506.02438v6, Sec. 3.
    """
    return references.lambda_returns(rewards, terminated, truncated, gamma, lam,
                                     next_values=next_values)


def expected_gae(mdp: TabularMDP, pi, values, *, lam: float,
                 steps_to_buffer_end: int | None = None,
                 steps_to_time_limit: int | None = None,
                 atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Exact conditional expectation ``E[A_hat_t | s_t = s, a_t = a]`` of the GAE estimator.

    The estimator is the one of :func:`gae` with critic ``values`` (any array, not only
    ``V_pi``), rolled out in ``mdp`` under ``pi``, with the MDP's gamma. The trace covers
    ``h = min(k, m)`` steps, where ``k = steps_to_buffer_end`` counts the steps left in the
    rollout buffer including step ``t`` and ``m = steps_to_time_limit`` those left before the
    time limit including step ``t``; in both cases the last step bootstraps from
    ``values[s_{t+h}]``. Entering a terminal state ends the trace with no bootstrap.

    With ``dbar(s, a) = R[s, a] + gamma sum_s' Phat[s, a, s'] values[s'] - values[s]``
    (``Phat`` = ``P`` without transitions into terminal states):
    ``x_1 = dbar``, ``x_j = dbar + gamma lam Phat (pi . x_{j-1})``; the result is ``x_h``,
    or the fixed point ``(I - gamma lam Phat_pi)^{-1}`` form when ``h`` is infinite.

    Properties (tested): with ``values = V_pi`` the result is ``A_pi`` for every ``lam`` and
    ``h``; with ``lam = 1`` and no horizon it is ``Q_pi - values``; with ``lam = 0`` it is the
    expected TD error.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    values : array_like, shape (S,)
        The critic ``V_hat(s)``; entries of terminal states are never used.
    lam : float
        In [0, 1].
    steps_to_buffer_end, steps_to_time_limit : int, optional
        ``k >= 1`` and ``m >= 1``; None means unlimited.

    Returns
    -------
    ndarray, shape (S, A)
        Reward units. Rows of terminal states are 0 (no action is taken there).

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.
    InvalidArgumentError
        ``values`` of the wrong shape or non-finite; ``lam`` or horizons out of range.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Sec. 3 (GAE; its bias for a critic other than
    ``V_pi``, Eqs. (16)-(18)); the finite-horizon form is derived in the module docstring.
    """
    from pgtheory.evaluation import solve_bellman

    p = mdp.check_policy(pi, atol=atol)
    lm = check_unit_interval(lam, "lam")
    v = as_float_array(values, "values", ndim=1)
    if v.shape != (mdp.n_states,):
        raise InvalidArgumentError(f"values: expected shape {(mdp.n_states,)}, received "
                                   f"{v.shape}")
    horizons = [check_positive_int(h, name) for h, name in
                ((steps_to_buffer_end, "steps_to_buffer_end"),
                 (steps_to_time_limit, "steps_to_time_limit")) if h is not None]
    h = min(horizons) if horizons else None
    live = (~mdp.terminal).astype(np.float64)
    v_live = v * live
    g = mdp.gamma
    dbar = mdp.R + g * mdp.next_state_expectation(v_live) - v[:, None]
    dbar[mdp.terminal] = 0.0

    def cont(y: np.ndarray) -> np.ndarray:  # (Phat y)[s, a]
        out = mdp.next_state_expectation(y * live)
        out[mdp.terminal] = 0.0
        return out

    if h is None:
        if lm == 0.0:
            return dbar
        P_pi = mdp.transition_matrix(p)
        if hasattr(P_pi, "tocsr"):
            import scipy.sparse as sp
            D = sp.diags_array(live)
            Phat_pi = (D @ P_pi @ D).tocsr()
        else:
            Phat_pi = P_pi * live[:, None] * live[None, :]
        y = solve_bellman(mdp, Phat_pi, np.einsum("sa,sa->s", p, dbar), discount=g * lm)
        return dbar + g * lm * cont(y)
    x = dbar.copy()
    for _ in range(h - 1):
        x = dbar + g * lm * cont(np.einsum("sa,sa->s", p, x))
    return x
