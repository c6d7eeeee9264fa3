"""Per-state divergences between policies, and their mean / max over states.

KL direction: ``kl_divergence(p, q)`` is ``KL(p || q) = sum_a p(a) log(p(a) / q(a))``. TRPO's
constraint is ``KL(pi_old || pi_new)`` (Schulman et al. 2015, arXiv:1502.05477v5, Sec. 4):
call ``kl_divergence(pi_old, pi_new)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import rel_entr

from pgtheory._validation import DEFAULT_ATOL, as_float_array, check_distribution_rows
from pgtheory.errors import InvalidPolicyError
from pgtheory.evaluation import action_state_weights, check_state_distribution

__all__ = [
    "PolicyDivergence",
    "kl_divergence",
    "policy_divergence",
    "total_variation",
    "weighted_mean",
]


def _pair(p, q, atol: float) -> tuple[np.ndarray, np.ndarray]:
    a = as_float_array(p, "p", error=InvalidPolicyError)
    b = as_float_array(q, "q", error=InvalidPolicyError)
    if a.ndim == 0 or a.shape != b.shape:
        raise InvalidPolicyError(f"p, q: expected two arrays of the same shape (..., A), "
                                 f"received {a.shape} and {b.shape}")
    check_distribution_rows(a, "p", atol=atol, error=InvalidPolicyError)
    check_distribution_rows(b, "q", atol=atol, error=InvalidPolicyError)
    return a, b


def kl_divergence(p, q, *, atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Kullback-Leibler divergence ``KL(p || q)`` over the last axis.

    ``KL(p || q) = sum_a p(a) log(p(a) / q(a))`` with ``0 log(0 / q) = 0``.

    Parameters
    ----------
    p, q : array_like, shape (..., A)
        Probability vectors along the last axis (e.g. policies of shape (S, A)).
    atol : float
        Tolerance for the rows summing to 1.

    Returns
    -------
    ndarray, shape (...)
        In nats. ``inf`` where ``p(a) > 0 = q(a)`` for some ``a`` (``p`` not absolutely
        continuous with respect to ``q``); never NaN.

    Raises
    ------
    InvalidPolicyError
        Shapes differ, NaN/inf, negative entries, rows not summing to 1.

    References
    ----------
    Cover & Thomas (2006), Elements of Information Theory, 2nd ed., Sec. 2.3.
    """
    a, b = _pair(p, q, atol)
    return rel_entr(a, b).sum(axis=-1)


def total_variation(p, q, *, atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Total-variation distance ``TV(p, q) = (1/2) sum_a |p(a) - q(a)|`` over the last axis.

    Returns
    -------
    ndarray, shape (...)
        In [0, 1].

    Raises
    ------
    InvalidPolicyError
        As :func:`kl_divergence`.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Sec. 3 (``D_TV``, with the 1/2).
    """
    a, b = _pair(p, q, atol)
    return 0.5 * np.abs(a - b).sum(axis=-1)


def weighted_mean(weights: np.ndarray, values: np.ndarray) -> float:
    """``sum_s w(s) x(s)`` over states with ``w(s) > 0`` (so ``0 * inf`` is 0, not NaN)."""
    mask = weights > 0
    return float(np.sum(weights[mask] * values[mask]))


@dataclasses.dataclass(frozen=True)
class PolicyDivergence:
    """KL and TV between two policies, per state and aggregated.

    Attributes
    ----------
    kl, tv : ndarray, shape (S,)
        ``KL(pi(.|s) || pi_new(.|s))`` (nats) and ``TV`` per state.
    mean_kl, mean_tv : float
        Averages under the state weights (default: ``d_pi`` of the first policy, over
        non-terminal states).
    max_kl, max_tv : float
        Maxima over non-terminal states (TRPO's ``D^max``).
    """

    kl: np.ndarray
    tv: np.ndarray
    mean_kl: float
    mean_tv: float
    max_kl: float
    max_tv: float


def policy_divergence(mdp, pi, pi_new, *, state_distribution=None,
                      atol: float = DEFAULT_ATOL) -> PolicyDivergence:
    """Per-state KL and TV between ``pi`` and ``pi_new``; mean under a state distribution, max.

    Parameters
    ----------
    mdp : TabularMDP
    pi, pi_new : array_like, shape (S, A)
        Old and new policies; the KL is ``KL(pi || pi_new)``.
    state_distribution : array_like, shape (S,), optional
        Weights for the means. Default: ``d_pi`` (normalized discounted visitation of ``pi``)
        restricted to non-terminal states, the weighting of TRPO's ``mean KL`` constraint.

    Returns
    -------
    PolicyDivergence

    Raises
    ------
    InvalidPolicyError
        As :func:`kl_divergence`.
    InvalidArgumentError
        ``state_distribution`` of the wrong shape or negative.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Sec. 3-4 (``D_KL^max``, ``mean KL``);
    Achiam et al. (2017), arXiv:1705.10528, Corollary 1 (expected TV under ``d_pi``).
    """
    p = mdp.check_policy(pi, atol=atol)
    q = mdp.check_policy(pi_new, name="pi_new", atol=atol)
    w = (action_state_weights(mdp, p) if state_distribution is None
         else check_state_distribution(mdp, state_distribution))
    kl = rel_entr(p, q).sum(axis=-1)
    tv = 0.5 * np.abs(p - q).sum(axis=-1)
    live = ~mdp.terminal
    return PolicyDivergence(kl=kl, tv=tv, mean_kl=weighted_mean(w, kl), mean_tv=float(w @ tv),
                            max_kl=float(kl[live].max()), max_tv=float(tv[live].max()))
