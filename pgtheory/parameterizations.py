"""Policy parameterizations: ``probs(theta)`` -> ``pi[s, a]`` and ``score(theta)``.

Every parameterization exposes

* ``n_states``, ``n_actions``, ``n_params``;
* ``probs(theta)``: ndarray (S, A), row-stochastic;
* ``score(theta)``: ndarray (S, A, n_params), ``grad_theta log pi_theta(a | s)``;
* ``expected_neg_log_prob_hessian(theta, weights)``: ndarray (n_params, n_params),
  ``sum_s w(s) sum_a pi(a|s) (-grad^2_theta log pi_theta(a|s))``, computed from second
  derivatives (not from scores), so that :func:`pgtheory.kl_hessian` is an independent route
  to the Fisher matrix.

``theta`` is always a flat float64 vector of length ``n_params``.
"""

from __future__ import annotations

import numpy as np

from pgtheory._validation import (
    DEFAULT_ATOL,
    as_float_array,
    check_distribution_rows,
    check_positive_int,
)
from pgtheory.errors import InvalidArgumentError, InvalidPolicyError

__all__ = ["DirectParameterization", "LinearSoftmax", "TabularSoftmax", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, shifted by the row maximum for stability."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _Base:
    n_states: int
    n_actions: int
    n_params: int
    #: True when sum_a pi(a|s) score(s, a) = 0 (baseline invariance), so that the policy
    #: gradient may use advantages instead of action values.
    baseline_invariant: bool = True

    def check_theta(self, theta) -> np.ndarray:
        """Validate ``theta``: a finite vector of length ``n_params``.

        Raises
        ------
        InvalidArgumentError
        """
        t = as_float_array(theta, "theta", ndim=1)
        if t.shape != (self.n_params,):
            raise InvalidArgumentError(f"theta: expected shape ({self.n_params},) for "
                                       f"{type(self).__name__}, received {t.shape}")
        return t

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_states={self.n_states}, n_actions={self.n_actions}, "
                f"n_params={self.n_params})")


class TabularSoftmax(_Base):
    """Tabular softmax policy ``pi_theta(a|s) = exp(theta[s, a]) / sum_b exp(theta[s, b])``.

    ``theta`` is flat, length ``S * A``, row-major over ``(s, a)`` (``theta.reshape(S, A)``
    are the logits).

    Parameters
    ----------
    n_states, n_actions : int

    References
    ----------
    Agarwal et al. (2021), "On the theory of policy gradient methods: optimality,
    approximation, and distribution shift", JMLR 22(98), arXiv:1908.00261, Sec. 2 and Sec. 4
    (softmax parameterization).
    """

    def __init__(self, n_states: int, n_actions: int) -> None:
        self.n_states = check_positive_int(n_states, "n_states")
        self.n_actions = check_positive_int(n_actions, "n_actions")
        self.n_params = self.n_states * self.n_actions

    def probs(self, theta) -> np.ndarray:
        """``pi[s, a]``, shape (S, A)."""
        t = self.check_theta(theta)
        return softmax(t.reshape(self.n_states, self.n_actions))

    def score_blocks(self, theta) -> np.ndarray:
        """Non-zero part of the score: ``e_a - pi[s, :]`` for each (s, a), shape (S, A, A).

        ``score(theta)[s, a, s * A : (s + 1) * A] == score_blocks(theta)[s, a]``; the rest
        of the score is zero.
        """
        pi = self.probs(theta)
        return np.eye(self.n_actions)[None, :, :] - pi[:, None, :]

    def score(self, theta) -> np.ndarray:
        """``grad log pi(a|s)``, shape (S, A, S*A): ``delta_{s s'} (delta_{a a'} - pi(a'|s))``.

        Dense: memory is ``8 S^2 A^2`` bytes; prefer :meth:`score_blocks` for large S.
        """
        S, A = self.n_states, self.n_actions
        blocks = self.score_blocks(theta)
        out = np.zeros((S, A, S, A))
        out[np.arange(S), :, np.arange(S), :] = blocks
        return out.reshape(S, A, S * A)

    def fisher_blocks(self, theta, weights: np.ndarray) -> np.ndarray:
        """Per-state Fisher blocks ``w(s) (diag pi_s - pi_s pi_s^T)``, shape (S, A, A)."""
        pi = self.probs(theta)
        eye = np.eye(self.n_actions)
        blocks = np.einsum("sa,ab->sab", pi, eye) - pi[:, :, None] * pi[:, None, :]
        return weights[:, None, None] * blocks

    def expected_neg_log_prob_hessian(self, theta, weights: np.ndarray) -> np.ndarray:
        """``sum_s w(s) sum_a pi(a|s) (-grad^2 log pi(a|s))``, shape (S*A, S*A).

        For softmax logits ``z``, ``-grad_z^2 log pi(a) = diag(pi) - pi pi^T`` for every ``a``.
        """
        S, A = self.n_states, self.n_actions
        pi = self.probs(theta)
        out = np.zeros((S, A, S, A))
        idx = np.arange(S)
        hess = -np.einsum("sa,sb->sab", pi, pi)
        hess[:, np.arange(A), np.arange(A)] += pi
        out[idx, :, idx, :] = weights[:, None, None] * hess
        return out.reshape(S * A, S * A)


class LinearSoftmax(_Base):
    """Log-linear policy ``pi_theta(a|s) ∝ exp(phi[s, a, :] . theta)``.

    Parameters
    ----------
    features : ndarray, shape (S, A, d)
        State-action features ``phi``; ``n_params = d``.

    Raises
    ------
    InvalidArgumentError
        Features not 3-D or not finite.

    References
    ----------
    Agarwal et al. (2021), arXiv:1908.00261, Sec. 6 (log-linear policies); Sutton et al.
    (2000), NeurIPS, Sec. 3 (compatible features).
    """

    def __init__(self, features) -> None:
        phi = as_float_array(features, "features", ndim=3)
        if 0 in phi.shape:
            raise InvalidArgumentError(f"features: expected shape (S, A, d) with all sizes >= 1, "
                                       f"received {phi.shape}")
        self.features = phi
        self.features.flags.writeable = False
        self.n_states, self.n_actions, self.n_params = phi.shape

    def probs(self, theta) -> np.ndarray:
        """``pi[s, a]``, shape (S, A)."""
        t = self.check_theta(theta)
        return softmax(self.features @ t)

    def score(self, theta) -> np.ndarray:
        """``phi[s, a] - sum_b pi(b|s) phi[s, b]``, shape (S, A, d)."""
        pi = self.probs(theta)
        mean = np.einsum("sb,sbd->sd", pi, self.features)
        return self.features - mean[:, None, :]

    def expected_neg_log_prob_hessian(self, theta, weights: np.ndarray) -> np.ndarray:
        """``sum_s w(s) Phi_s^T (diag pi_s - pi_s pi_s^T) Phi_s``, shape (d, d)."""
        pi = self.probs(theta)
        phi = self.features
        second = np.einsum("s,sa,sad,sae->de", weights, pi, phi, phi)
        mean = np.einsum("sa,sad->sd", pi, phi)
        return second - np.einsum("s,sd,se->de", weights, mean, mean)


class DirectParameterization(_Base):
    """Direct (simplex) parameterization ``pi_theta(a|s) = theta[s * A + a]``.

    ``theta`` must lie on the product of simplices. The score ``e_{s,a} / pi(a|s)`` and the
    gradients are with respect to the unconstrained coordinates, so the policy gradient is
    ``dJ / dpi(a|s) = d_pi(s) Q_pi(s, a) / (1 - gamma)`` (not an advantage: the baseline
    identity ``sum_a grad pi(a|s) = 0`` does not hold for these coordinates). Only
    directional derivatives along the simplex (per-state zero-sum directions) are meaningful
    for policies.

    Parameters
    ----------
    n_states, n_actions : int
    atol : float
        Tolerance for ``theta`` rows summing to 1.

    References
    ----------
    Agarwal et al. (2021), arXiv:1908.00261, Sec. 3 (direct parameterization).
    """

    baseline_invariant = False

    def __init__(self, n_states: int, n_actions: int, *, atol: float = DEFAULT_ATOL) -> None:
        self.n_states = check_positive_int(n_states, "n_states")
        self.n_actions = check_positive_int(n_actions, "n_actions")
        self.n_params = self.n_states * self.n_actions
        self.atol = atol

    def probs(self, theta) -> np.ndarray:
        """``theta.reshape(S, A)``, validated to be row-stochastic.

        Raises
        ------
        InvalidPolicyError
            ``theta`` is not on the product of simplices.
        """
        t = self.check_theta(theta).reshape(self.n_states, self.n_actions)
        check_distribution_rows(t, "theta (direct parameterization)", atol=self.atol,
                                error=InvalidPolicyError)
        return t

    def _positive_probs(self, theta) -> np.ndarray:
        pi = self.probs(theta)
        if np.any(pi <= 0):
            s, a = (int(i) for i in np.argwhere(pi <= 0)[0])
            raise InvalidPolicyError(
                f"theta: the direct score 1/pi(a|s) needs pi(a|s) > 0, received pi({a}|{s}) = "
                f"{pi[s, a]!r}")
        return pi

    def score(self, theta) -> np.ndarray:
        """``e_{s,a} / pi(a|s)``, shape (S, A, S*A).

        Raises
        ------
        InvalidPolicyError
            A zero probability (the score is infinite there).
        """
        S, A = self.n_states, self.n_actions
        pi = self._positive_probs(theta)
        out = np.zeros((S, A, S * A))
        s_idx, a_idx = np.meshgrid(np.arange(S), np.arange(A), indexing="ij")
        out[s_idx, a_idx, s_idx * A + a_idx] = 1.0 / pi
        return out

    def expected_neg_log_prob_hessian(self, theta, weights: np.ndarray) -> np.ndarray:
        """``diag(w(s) / pi(a|s))``: ``-d^2 log pi(a|s) / dpi(a|s)^2 = 1 / pi(a|s)^2``."""
        pi = self._positive_probs(theta)
        return np.diag((weights[:, None] / pi).ravel())
