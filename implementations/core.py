"""The shared core of the implementations: pure torch functions, each validated by an oracle.

Every function here is what the algorithm files call, and every one has a component check in
:mod:`pgtheory.oracles.components` (``pgtheory.implementations.targets`` exposes them to the oracles
under the keys of :data:`pgtheory.oracles.protocol.COMPONENT_KEYS`). Nothing here holds state.

Conventions: rollouts are time-major tensors of shape ``(T, N)``; ``next_values[t]`` is the
critic's value of the true next observation ``s_{t+1}`` (the final observation where an
episode ended); ``terminated`` and ``truncated`` are gymnasium's flags (boolean or 0/1). Reward
units throughout; KL and entropy in nats.

Policy heads: :class:`DiagGaussian` (continuous actions; log-density and entropy summed over
action dimensions) and :class:`CategoricalLogits` (discrete actions) are torch distributions whose
``log_prob``, ``entropy`` and KL (registered with :func:`torch.distributions.kl_divergence`) are
the functions of this module, so the component checks test the code paths training runs.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch.distributions import Categorical, Distribution, constraints, register_kl

__all__ = ["CategoricalLogits", "DiagGaussian", "backtracking_line_search", "categorical_entropy",
           "categorical_kl", "clipped_surrogate_loss", "clipped_value_loss",
           "conjugate_gradient", "discounted_returns", "gae", "gaussian_entropy", "gaussian_kl",
           "gaussian_log_prob", "kl_k1", "kl_k2", "kl_k3", "kl_penalty_loss", "normalize",
           "policy_gradient_loss", "value_loss"]

_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------- advantages and returns
def gae(rewards, values, terminated, truncated, gamma: float, lam: float, *,
        next_values) -> torch.Tensor:
    """Generalized advantage estimation on a time-major buffer.

    Argument order: the one of :func:`pgtheory.references.gae` (and :func:`pgtheory.gae`), with
    the bootstrap values by keyword.

    ``delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)`` and
    ``A_t = delta_t + gamma lam (1 - terminated_t)(1 - truncated_t) A_{t+1}``, with
    ``A_T = 0`` past the buffer end. A truncated step therefore bootstraps from the value of its
    final observation and a terminated one does not; the recursion never crosses an episode end.

    Parameters
    ----------
    rewards, values : tensor or array, shape (T, N)
        Reward units.
    terminated, truncated : tensor or array of bool, shape (T, N)
    gamma : float
        Discount in [0, 1].
    lam : float
        GAE lambda in [0, 1].
    next_values : tensor or array, shape (T, N), keyword-only
        ``V(s_{t+1})`` of the true next observation (the final one where an episode ended).

    Returns
    -------
    Tensor, shape (T, N)
        The dtype of ``rewards`` (float64 for numpy input).

    Raises
    ------
    ValueError
        The five arrays do not share one 2-D shape.

    References
    ----------
    Schulman et al. (2016), "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv:1506.02438v6, Eq. (16); catalogue entries done_flags_shifted,
    truncation_as_termination (docs/bugs.md).
    """
    r, v, nv, term, trunc = _buffer(rewards, values, next_values, terminated, truncated)
    live = 1.0 - term
    delta = r + gamma * live * nv - v
    carry = gamma * lam * live * (1.0 - trunc)
    if not (delta.requires_grad or carry.requires_grad) and delta.dtype in (torch.float32,
                                                                           torch.float64):
        # The same recursion in numpy (the same float operations, bit-identical result):
        # one (N,) step costs about 1 us there against about 7 us as torch ops.
        d, c = delta.cpu().numpy(), carry.cpu().numpy()
        out = np.zeros_like(d)
        acc_np = np.zeros_like(d[0])
        for t in range(d.shape[0] - 1, -1, -1):
            acc_np = d[t] + c[t] * acc_np
            out[t] = acc_np
        return torch.from_numpy(out).to(delta.device)
    adv = torch.zeros_like(delta)
    acc = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        acc = delta[t] + carry[t] * acc
        adv[t] = acc
    return adv


def discounted_returns(rewards, terminated, truncated, gamma: float, *,
                       next_values) -> torch.Tensor:
    """Monte Carlo reward-to-go, bootstrapped where the buffer cannot see the episode's end.

    Argument order: the one of :func:`pgtheory.references.discounted_returns`.

    ``G_t = r_t + gamma (1 - terminated_t) [truncated_t V(s_{t+1}) + (1 - truncated_t)
    G_{t+1}]`` with ``G_{T-1}`` bootstrapping from ``V(s_T)`` at the buffer end (pass zeros in
    ``next_values`` for pure Monte Carlo returns without a critic). Equal to :func:`gae` with
    ``lam = 1`` plus the values.

    Parameters
    ----------
    rewards : tensor or array, shape (T, N)
    terminated, truncated : tensor or array of bool, shape (T, N)
    gamma : float
    next_values : tensor or array, shape (T, N), keyword-only

    Returns
    -------
    Tensor, shape (T, N)

    Raises
    ------
    ValueError
        The arrays do not share one 2-D shape.

    References
    ----------
    Williams (1992), Machine Learning 8, "Simple statistical gradient-following algorithms",
    Sec. 4 (REINFORCE); Sutton & Barto (2018), Eq. (3.8).
    """
    r, nv, _, term, trunc = _buffer(rewards, next_values, next_values, terminated, truncated)
    live = 1.0 - term
    out = torch.zeros_like(r)
    acc = nv[-1] * 0
    for t in range(r.shape[0] - 1, -1, -1):
        tail = acc if t < r.shape[0] - 1 else nv[t]
        follow = trunc[t] * nv[t] + (1.0 - trunc[t]) * tail
        acc = r[t] + gamma * live[t] * follow
        out[t] = acc
    return out


def _buffer(rewards, a, b, terminated, truncated):
    r = torch.as_tensor(rewards)
    if not torch.is_floating_point(r):
        r = r.double()
    a, b = (torch.as_tensor(x).to(r.dtype) for x in (a, b))
    term, trunc = (torch.as_tensor(x).to(r.dtype) for x in (terminated, truncated))
    shapes = {tuple(x.shape) for x in (r, a, b, term, trunc)}
    if len(shapes) != 1 or r.ndim != 2:
        raise ValueError(f"expected rewards, values, next_values, terminated, truncated of one "
                         f"shape (T, N); received shapes {sorted(shapes)}")
    return r, a, b, term, trunc


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / (std + eps)`` with the unbiased standard deviation; unchanged if < 2 items.

    Shapes: any; returns the same shape. Raises nothing. A single-sample minibatch would give
    NaN (std of one number), a known PPO defect (catalogue: normalize_single_sample_nan),
    hence the guard.
    Source: Andrychowicz et al. (2021), arXiv:2006.05990v1, Sec. 3.5 (advantage normalization).
    """
    if x.numel() < 2:
        return x
    return (x - x.mean()) / (x.std() + eps)


# ---------------------------------------------------------------------------- losses
def policy_gradient_loss(logp: torch.Tensor, advantages: torch.Tensor,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
    """The likelihood-ratio loss ``-mean(w_t A_t log pi(a_t | s_t))`` (to minimize).

    Parameters
    ----------
    logp, advantages : Tensor, shape (B,)
        ``advantages`` are treated as constants.
    weights : Tensor, shape (B,), optional
        Per-sample weights (``gamma^t`` for the exact discounted gradient); 1 if omitted.

    Returns
    -------
    Tensor, scalar

    Raises
    ------
    RuntimeError
        Mismatched shapes (torch broadcasting).

    References
    ----------
    Williams (1992), Sec. 4; Sutton et al. (2000), NeurIPS, Thm. 1; Nota & Thomas (2020),
    arXiv:1906.07073v2 (the gamma^t weighting).
    """
    adv = advantages.detach() if weights is None else advantages.detach() * weights
    return -(adv * logp).mean()


def clipped_surrogate_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                           clip_range: float) -> torch.Tensor:
    """PPO's clipped surrogate, negated: ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``.

    Parameters
    ----------
    logp, logp_old, advantages : Tensor, shape (B,)
        Log-probabilities under the current and the collecting policy; advantages.
    clip_range : float
        ``eps > 0``.

    Returns
    -------
    Tensor, scalar

    Raises
    ------
    RuntimeError
        Mismatched shapes.

    References
    ----------
    Schulman et al. (2017), "Proximal Policy Optimization Algorithms", arXiv:1707.06347v2,
    Eq. (7).
    """
    ratio = torch.exp(logp - logp_old)
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return -torch.min(ratio * advantages, clipped * advantages).mean()


def kl_penalty_loss(logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                    kl: torch.Tensor, beta: float) -> torch.Tensor:
    """PPO's adaptive-KL-penalty objective, negated: ``-mean(r A - beta KL)``.

    Parameters
    ----------
    logp, logp_old, advantages : Tensor, shape (B,)
    kl : Tensor, shape (B,)
        ``KL(pi_old(.|s) || pi(.|s))`` per sample (exact, from the distributions).
    beta : float
        Penalty coefficient (adapted between updates by the caller).

    Returns
    -------
    Tensor, scalar

    References
    ----------
    Schulman et al. (2017), arXiv:1707.06347v2, Eq. (8) and the adaptation rule below it.
    """
    return -(torch.exp(logp - logp_old) * advantages - beta * kl).mean()


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """``0.5 mean((V - R)^2)``. Shapes (B,); returns a scalar. Source: Mnih et al. (2016),
    arXiv:1602.01783v2, Algorithm S3 (squared TD error)."""
    return 0.5 * ((values - returns.detach()) ** 2).mean()


def clipped_value_loss(values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor,
                       clip_range: float) -> torch.Tensor:
    """PPO's clipped value loss ``0.5 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps)
    - R)^2))``.

    Shapes (B,); ``clip_range`` eps > 0 (value units). Returns a scalar.

    References
    ----------
    OpenAI baselines ppo2 (``vf_loss``); Engstrom et al. (2020), arXiv:2005.12729v1, Sec. 3
    (value clipping as a code-level optimization).
    """
    clipped = values_old + torch.clamp(values - values_old, -clip_range, clip_range)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


# ------------------------------------------------------------------- KL estimators
def kl_k1(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``-log r`` with ``r = p(x)/q(x)``, ``x ~ q``: unbiased for ``KL(q || p)``, high variance.
    Shapes (B,). Source: J. Schulman, "Approximating KL Divergence" (2020, blog note)."""
    return logq - logp


def kl_k2(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``(log r)^2 / 2``: biased, low variance (same source as :func:`kl_k1`)."""
    return 0.5 * (logp - logq) ** 2


def kl_k3(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``(r - 1) - log r``: unbiased and non-negative (same source as :func:`kl_k1`); the PPO
    early-stopping estimator."""
    log_r = logp - logq
    return torch.expm1(log_r) - log_r


# ------------------------------------------------------------------ distributions
def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-sum_a p_a log p_a`` with ``p = softmax(logits)``; logits (B, A) -> (B,) nats.
    Raises nothing (log_softmax keeps it finite). Source: Cover & Thomas (2006), Eq. (2.1)."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def categorical_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(p || q) = sum_a p_a (log p_a - log q_a)``; logits (B, A) -> (B,) nats.
    Raises RuntimeError on mismatched shapes. Source: Cover & Thomas (2006), Eq. (2.26)."""
    logp, logq = torch.log_softmax(logits_p, -1), torch.log_softmax(logits_q, -1)
    return (logp.exp() * (logp - logq)).sum(-1)


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor,
                      log_std: torch.Tensor) -> torch.Tensor:
    """Diagonal-Gaussian log-density, **summed** over the m action dimensions.

    ``actions, mean, log_std``: (B, m) (``log_std`` broadcasts). Returns (B,) in nats.
    Averaging instead of summing over dimensions is a known defect (it rescales the gradient
    per dimension count and breaks the ratio; catalogue: gaussian_log_prob_averaged). Raises
    RuntimeError on shapes that do not broadcast. Source: the product of m univariate normal
    densities (Bishop 2006, Eq. 2.43 with a diagonal covariance).
    """
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * _LOG_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor) -> torch.Tensor:
    """``sum_i (log sigma_i + (1 + log 2 pi) / 2)``; (B, m) -> (B,) nats. Raises nothing.
    Source: Cover & Thomas (2006), Eq. (8.34) with a diagonal covariance."""
    return (log_std + 0.5 * (1.0 + _LOG_2PI)).sum(-1)


def gaussian_kl(mean1: torch.Tensor, log_std1: torch.Tensor, mean2: torch.Tensor,
                log_std2: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean1, std1^2) || N(mean2, std2^2))`` for diagonal Gaussians, summed over dims.

    Inputs (B, m); returns (B,) nats:
    ``sum_i [log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2]``. Raises RuntimeError on
    shapes that do not broadcast. Source: the closed form for normals (e.g. Kullback 1959;
    pat-coady/trpo #25 is the missing-square defect).
    """
    var_ratio = torch.exp(2 * (log_std1 - log_std2))
    mahal = ((mean1 - mean2) * torch.exp(-log_std2)) ** 2
    return (log_std2 - log_std1 + 0.5 * (var_ratio + mahal) - 0.5).sum(-1)


class DiagGaussian(Distribution):
    """Diagonal Gaussian policy head: ``a ~ N(mean, diag(exp(log_std))^2)``.

    ``mean`` (B, m) and ``log_std`` (m,) or (B, m). ``log_prob`` and ``entropy`` return (B,)
    (sums over action dimensions, :func:`gaussian_log_prob`, :func:`gaussian_entropy`); the KL
    registered for a pair is :func:`gaussian_kl`. ``mode`` is the mean (deterministic
    evaluation).
    """

    arg_constraints: ClassVar[dict] = {"mean": constraints.real, "log_std": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor) -> None:
        self.mean_ = mean
        self.log_std = log_std + torch.zeros_like(mean)  # a new tensor, not a view
        super().__init__(mean.shape[:-1], mean.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_

    @property
    def mode(self) -> torch.Tensor:
        return self.mean_

    @property
    def stddev(self) -> torch.Tensor:
        return self.log_std.exp()

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.mean_.dtype, device=self.mean_.device)
        return self.mean_ + eps * self.stddev

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(value, self.mean_, self.log_std)

    def entropy(self) -> torch.Tensor:
        return gaussian_entropy(self.log_std)


class CategoricalLogits(Categorical):
    """Categorical policy head from logits; entropy and KL are this module's functions.
    ``mode`` is the argmax action."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__(logits=logits, validate_args=False)

    def entropy(self) -> torch.Tensor:
        return categorical_entropy(self.logits)


@register_kl(DiagGaussian, DiagGaussian)
def _kl_gaussian(p: DiagGaussian, q: DiagGaussian) -> torch.Tensor:
    return gaussian_kl(p.mean_, p.log_std, q.mean_, q.log_std)


@register_kl(CategoricalLogits, CategoricalLogits)
def _kl_categorical(p: CategoricalLogits, q: CategoricalLogits) -> torch.Tensor:
    return categorical_kl(p.logits, q.logits)


# ------------------------------------------------------------------- TRPO solvers
def conjugate_gradient(matvec: Callable, b, n_iters: int, residual_tol: float = 1e-10):
    """``n_iters`` conjugate-gradient iterations from ``x0 = 0`` for ``A x = b``.

    Parameters
    ----------
    matvec : callable
        ``v -> A v`` for a symmetric positive-definite ``A`` (a damped Fisher-vector product).
    b : Tensor or ndarray, shape (d,)
    n_iters : int
        At most this many iterations; stops early once ``||r||^2 < residual_tol``.

    Returns
    -------
    Same type as ``b``, shape (d,)

    Raises
    ------
    Nothing; a singular ``A`` gives inf/NaN (``p^T A p = 0``), which the caller checks.

    References
    ----------
    Nocedal & Wright (2006), Numerical Optimization, Algorithm 5.2; Schulman et al. (2015),
    arXiv:1502.05477v5, App. C.
    """
    x = b * 0
    r, p = b * 1, b * 1
    rr = r @ r
    for _ in range(n_iters):
        if rr < residual_tol:
            break
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def backtracking_line_search(objective: Callable, kl: Callable, x0, full_step, max_kl: float,
                             backtrack_coef: float, max_backtracks: int):
    """The first ``x0 + c^k full_step``, ``k = 0..max_backtracks``, with ``kl <= max_kl`` and
    ``objective`` above ``objective(x0)``; ``x0`` if none.

    Parameters
    ----------
    objective, kl : callable
        Parameter vector (shape (d,)) -> float (surrogate; KL in nats).
    x0, full_step : Tensor or ndarray, shape (d,)
    max_kl : float
        delta.
    backtrack_coef : float
        c in (0, 1).
    max_backtracks : int

    Returns
    -------
    Same type as ``x0``, shape (d,)

    References
    ----------
    Schulman et al. (2015), "Trust Region Policy Optimization", arXiv:1502.05477v5, App. C.
    """
    f0 = objective(x0)
    for k in range(max_backtracks + 1):
        x = x0 + backtrack_coef**k * full_step
        if kl(x) <= max_kl and objective(x) > f0:
            return x
    return x0
