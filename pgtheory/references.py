"""One reference per sample-level formula of policy-gradient code, in float64 numpy.

Every oracle that judges an implementation's GAE, returns, losses, distribution quantities,
KL estimators, conjugate gradient or line search computes its expected value here, and nowhere
else. Keyword-only switches named in a function's ``Other Parameters`` reproduce known defects
(the defect registry :mod:`pgtheory.oracles.defects` uses them to name a defect that matches an
implementation's output); their defaults are the correct formula.

Argument order for rollouts (the one order of the project, also of
:mod:`pgtheory.implementations.core`): ``gae(rewards, values, terminated, truncated, gamma,
lam, *, next_values)`` and ``discounted_returns(rewards, terminated, truncated, gamma, *,
next_values)`` / ``lambda_returns(rewards, terminated, truncated, gamma, lam, *,
next_values)``: the arrays of the step first, the flags, the scalars, and the bootstrap
values by keyword (they are the easiest to pass wrongly: the final observation's value at a
truncation, not the reset observation's).

Rollout conventions (time-major, gymnasium 1.x): arrays of shape ``(T,)`` or ``(T, N)``; at
step ``t`` the agent acts in ``s_t`` and receives ``rewards[t]``; ``terminated[t]`` means
``s_{t+1}`` is terminal (no bootstrap); ``truncated[t]`` means the time limit ended the episode
(bootstrap from the value of the final observation); ``next_values[t] = V(s_{t+1})`` of the true
next state (the final observation where the episode ended, the observation after the buffer at
``t = T - 1``), ignored where ``terminated[t]``. Termination wins when both flags are set.

Losses are to be minimized and return the scalar mean over the batch; each has a ``*_gradient``
twin giving the exact derivative in the per-sample input (``log_probs`` or ``values``), from
which a caller obtains parameter gradients by the chain rule (e.g. ``torch.autograd.grad(logp,
params, grad_outputs=g)``). At kinks (ties of min/max, clip boundaries) the derivative is the
derivative of the selected branch, and at an exact tie of min/max the mean of both branches'
derivatives (torch's convention; it matters where a branch is a copy of the other, e.g. a value
clip that does not act).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp

from pgtheory._validation import as_float_array, check_gamma, check_unit_interval
from pgtheory.errors import InvalidArgumentError, InvalidRolloutError

__all__ = [
    "ConjugateGradientResult",
    "LineSearchResult",
    "backtracking_line_search",
    "categorical_entropy",
    "categorical_kl",
    "categorical_log_prob",
    "clipped_surrogate_loss",
    "clipped_surrogate_loss_gradient",
    "conjugate_gradient",
    "discounted_returns",
    "gae",
    "gaussian_entropy",
    "gaussian_kl",
    "gaussian_log_prob",
    "kl_estimator",
    "lambda_returns",
    "policy_gradient_loss",
    "policy_gradient_loss_gradient",
    "value_loss",
    "value_loss_gradient",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


# ------------------------------------------------------------------ rollouts
def _flags(x, name: str, shape) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != shape:
        raise InvalidRolloutError(f"{name}: expected shape {shape} (same as rewards), "
                                  f"received {arr.shape}")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isin(arr, (0, 1))):
        raise InvalidRolloutError(f"{name}: expected booleans (or 0/1), received dtype "
                                  f"{arr.dtype} with values {np.unique(arr)[:5]}")
    return arr.astype(bool)


def _rollout(rewards, terminated, truncated, next_values, values=None):
    r = as_float_array(rewards, "rewards", ndim=(1, 2), error=InvalidRolloutError)
    if r.shape[0] == 0:
        raise InvalidRolloutError("rewards: expected at least one time step, received T = 0")
    term = _flags(terminated, "terminated", r.shape)
    trunc = _flags(truncated, "truncated", r.shape)
    nv = as_float_array(next_values, "next_values", error=InvalidRolloutError)
    if nv.shape != r.shape:
        raise InvalidRolloutError(f"next_values: expected shape {r.shape} (same as rewards), "
                                  f"received {nv.shape}")
    v = None
    if values is not None:
        v = as_float_array(values, "values", error=InvalidRolloutError)
        if v.shape != r.shape:
            raise InvalidRolloutError(f"values: expected shape {r.shape} (same as rewards), "
                                      f"received {v.shape}")
    return r, term, trunc, nv, v


def _real(x, name: str) -> float:
    try:
        out = float(x)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name}: expected a real number, received {x!r}") from None
    if not np.isfinite(out):
        raise InvalidArgumentError(f"{name}: expected a finite number, received {out}")
    return out


def gae(rewards, values, terminated, truncated, gamma: float, lam: float, *, next_values,
        td_discount: float | None = None, trace_decay: float | None = None,
        cut_trace_at_truncation: bool = True) -> np.ndarray:
    """Generalized advantage estimation on a time-major rollout.

    ``delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)``,
    ``A_t = delta_t + gamma lam (1 - terminated_t)(1 - truncated_t) A_{t+1}``, ``A_T = 0``:
    ``A_t = sum_l (gamma lam)^l delta_{t+l}`` up to the first episode end or the buffer end.

    Parameters
    ----------
    rewards : array_like, shape (T,) or (T, N)
        ``r_t``, reward for acting in ``s_t``.
    values : array_like, same shape
        ``V(s_t)``.
    terminated, truncated : array_like of bool (or 0/1), same shape
        gymnasium flags of step ``t``.
    gamma : float
        Discount in [0, 1).
    lam : float
        GAE lambda in [0, 1].
    next_values : array_like, same shape, keyword-only
        ``V(s_{t+1})`` of the true next state (see the module docstring).

    Other Parameters
    ----------------
    td_discount : float, optional
        Discount used inside ``delta_t`` (default ``gamma``; 1 models "gamma missing from the
        TD error").
    trace_decay : float, optional
        Per-step decay of the trace (default ``gamma * lam``; ``lam`` models "lambda^l
        instead of (gamma lambda)^l").
    cut_trace_at_truncation : bool
        False models a trace that leaks across time-limit truncations.

    Returns
    -------
    ndarray, float64, same shape as ``rewards``
        Advantage estimates (reward units).

    Raises
    ------
    InvalidRolloutError
        Shapes differ, NaN/inf, non-boolean flags, T = 0.
    InvalidArgumentError
        ``gamma`` outside [0, 1), ``lam`` outside [0, 1], a non-finite switch.

    References
    ----------
    Schulman, Moritz, Levine, Jordan & Abbeel (2016), "High-dimensional continuous control
    using generalized advantage estimation", ICLR, arXiv:1506.02438v6, Eqs. (11)-(16).
    """
    g = check_gamma(gamma)
    lm = check_unit_interval(lam, "lam")
    r, term, trunc, nv, v = _rollout(rewards, terminated, truncated, next_values, values)
    if v is None:
        raise InvalidRolloutError("values: expected an array of V(s_t), received None")
    g_td = g if td_discount is None else _real(td_discount, "td_discount")
    decay = g * lm if trace_decay is None else _real(trace_decay, "trace_decay")
    live = 1.0 - term
    cont = live * (1.0 - trunc) if cut_trace_at_truncation else live
    delta = r + g_td * live * nv - v
    adv = np.empty_like(r)
    acc = np.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        acc = delta[t] + decay * cont[t] * acc
        adv[t] = acc
    return adv


def lambda_returns(rewards, terminated, truncated, gamma: float, lam: float, *,
                   next_values) -> np.ndarray:
    """TD(lambda) returns on a time-major rollout.

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lam) V(s_{t+1}) + lam G_{t+1}]``, with the
    bracket replaced by ``V(s_{t+1})`` where the trace is cut (truncation at ``t``, ``t = T -
    1``). Equals ``gae(...) + values`` on rollouts as collected (``next_values[t] ==
    values[t + 1]`` inside episodes).

    Parameters
    ----------
    rewards, terminated, truncated, next_values
        As :func:`gae`.
    gamma : float
        In [0, 1).
    lam : float
        In [0, 1].

    Returns
    -------
    ndarray, float64, same shape as ``rewards``

    Raises
    ------
    InvalidRolloutError, InvalidArgumentError
        As :func:`gae`.

    References
    ----------
    Sutton & Barto (2018), "Reinforcement Learning: An Introduction", 2nd ed., Eq. (12.3) and
    its recursive form; Schulman et al. (2016), arXiv:1506.02438v6, Sec. 3.
    """
    g = check_gamma(gamma)
    lm = check_unit_interval(lam, "lam")
    r, term, trunc, nv, _ = _rollout(rewards, terminated, truncated, next_values)
    out = np.empty_like(r)
    nxt = nv[-1]
    T = r.shape[0]
    for t in range(T - 1, -1, -1):
        tail = nv[t] if t == T - 1 else np.where(trunc[t], nv[t], (1.0 - lm) * nv[t] + lm * nxt)
        out[t] = r[t] + g * (1.0 - term[t]) * tail
        nxt = out[t]
    return out


def discounted_returns(rewards, terminated, truncated, gamma: float, *,
                       next_values) -> np.ndarray:
    """Bootstrapped discounted returns (reward-to-go) on a time-major rollout.

    ``G_t = r_t + gamma (1 - terminated_t) X_t`` with ``X_t = next_values_t`` where the episode
    was truncated at ``t`` or ``t = T - 1``, and ``X_t = G_{t+1}`` otherwise; that is
    :func:`lambda_returns` with ``lam = 1`` (and ``gae(..., lam=1) + values``).

    Parameters
    ----------
    rewards, terminated, truncated, next_values
        As :func:`gae` (zeros in ``next_values`` give pure Monte Carlo returns).
    gamma : float
        In [0, 1).

    Returns
    -------
    ndarray, float64, same shape as ``rewards``

    Raises
    ------
    InvalidRolloutError, InvalidArgumentError
        As :func:`gae`.

    References
    ----------
    Sutton & Barto (2018), Eq. (3.9) (return), Sec. 7.1 (bootstrapped n-step return).
    """
    return lambda_returns(rewards, terminated, truncated, gamma, 1.0, next_values=next_values)


# -------------------------------------------------------------------- losses
def _batch(x, name: str) -> np.ndarray:
    arr = as_float_array(x, name, ndim=1)
    if arr.size == 0:
        raise InvalidArgumentError(f"{name}: expected at least one sample, received 0")
    return arr


def _same_shape(first: np.ndarray, **others: np.ndarray) -> None:
    for name, arr in others.items():
        if arr.shape != first.shape:
            raise InvalidArgumentError(f"{name}: expected shape {first.shape}, received "
                                       f"{arr.shape}")


def _choice(x, name: str, allowed: tuple[str, ...]) -> str:
    if x not in allowed:
        raise InvalidArgumentError(f"{name}: expected one of {allowed}, received {x!r}")
    return x


def _surrogate_terms(log_probs, old_log_probs, advantages, clip_range, combine, ratio_form,
                     clip_target):
    """Per-sample objective ``o_i`` (to maximize) and ``d o_i / d log_probs_i``."""
    lp = _batch(log_probs, "log_probs")
    lo_ = _batch(old_log_probs, "old_log_probs")
    a = _batch(advantages, "advantages")
    _same_shape(lp, old_log_probs=lo_, advantages=a)
    eps = _real(clip_range, "clip_range")
    if eps <= 0:
        raise InvalidArgumentError(f"clip_range: expected > 0, received {eps}")
    _choice(combine, "combine", ("min", "max"))
    _choice(ratio_form, "ratio_form", ("ratio", "inverted", "log"))
    _choice(clip_target, "clip_target", ("ratio", "advantage", "none"))
    if ratio_form == "inverted":
        r = np.exp(lo_ - lp)
        dr = -r
    else:
        r = np.exp(lp - lo_)
        dr = r
    if ratio_form == "log":  # log r in the unclipped term only: min(log(r) A, clip(r) A)
        u, du = (lp - lo_) * a, a.copy()
    else:
        u, du = r * a, dr * a
    if clip_target == "ratio":
        inside = (r >= 1 - eps) & (r <= 1 + eps)
        c, dc = np.clip(r, 1 - eps, 1 + eps) * a, np.where(inside, dr * a, 0.0)
    elif clip_target == "advantage":
        ca = np.clip(a, 1 - eps, 1 + eps)
        c, dc = r * ca, dr * ca
    else:
        c, dc = r * a, dr * a
    return _pick(u, du, c, dc, combine)


def _pick(u, du, c, dc, combine):
    """``min``/``max`` of two branches and its derivative; at an exact tie the mean of the two
    branches' derivatives (the convention of ``torch.minimum``/``torch.maximum``)."""
    first = u < c if combine == "min" else u > c
    value = np.where(first, u, c)
    grad = np.where(u == c, 0.5 * (du + dc), np.where(first, du, dc))
    return value, grad


def clipped_surrogate_loss(log_probs, old_log_probs, advantages, clip_range: float, *,
                           combine: str = "min", ratio_form: str = "ratio",
                           clip_target: str = "ratio") -> float:
    """PPO's clipped surrogate, negated to be minimized.

    ``L = -mean_i min(r_i A_i, clip(r_i, 1 - eps, 1 + eps) A_i)``, ``r_i = exp(log_probs_i -
    old_log_probs_i)``. CleanRL's ``max(-r A, -clip(r) A)`` and baselines' ``exp(old_neglogp -
    neglogp)`` are the same function.

    Parameters
    ----------
    log_probs, old_log_probs : array_like, shape (B,)
        ``log pi_theta(a_i | s_i)`` and the stored ``log pi_old(a_i | s_i)`` (nats).
    advantages : array_like, shape (B,)
    clip_range : float
        ``eps > 0``.

    Other Parameters
    ----------------
    combine : {"min", "max"}
        "max" models min and max swapped.
    ratio_form : {"ratio", "inverted", "log"}
        "inverted": ``r = pi_old / pi``; "log": ``log r`` in the unclipped term.
    clip_target : {"ratio", "advantage", "none"}
        "advantage": ``r clip(A)``; "none": clipping never acts.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        Shapes differ, non-finite input, empty batch, ``clip_range <= 0``, an unknown switch.

    References
    ----------
    Schulman, Wolski, Dhariwal, Radford & Klimov (2017), "Proximal policy optimization
    algorithms", arXiv:1707.06347v2, Eq. (7).
    """
    o, _ = _surrogate_terms(log_probs, old_log_probs, advantages, clip_range, combine,
                            ratio_form, clip_target)
    return float(-o.mean())


def clipped_surrogate_loss_gradient(log_probs, old_log_probs, advantages, clip_range: float, *,
                                    combine: str = "min", ratio_form: str = "ratio",
                                    clip_target: str = "ratio") -> np.ndarray:
    """``d L / d log_probs`` of :func:`clipped_surrogate_loss`, shape (B,), float64.

    ``-r_i A_i / B`` where the unclipped term is selected (or the clip does not act), else 0.
    Parameters, switches and errors as :func:`clipped_surrogate_loss`.

    References
    ----------
    Schulman et al. (2017), arXiv:1707.06347v2, Eq. (7); proofs theorem ppo_clip_gradient.
    """
    o, do = _surrogate_terms(log_probs, old_log_probs, advantages, clip_range, combine,
                             ratio_form, clip_target)
    return -do / o.size


def policy_gradient_loss(log_probs, advantages) -> float:
    """The score-function loss ``L = -mean_i A_i log pi(a_i | s_i)`` (A2C, REINFORCE).

    Parameters
    ----------
    log_probs, advantages : array_like, shape (B,)

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        Shapes differ, non-finite input, empty batch.

    References
    ----------
    Williams (1992), Machine Learning 8, Sec. 4; Mnih et al. (2016), arXiv:1602.01783v2,
    Algorithm S3.
    """
    lp, a = _batch(log_probs, "log_probs"), _batch(advantages, "advantages")
    _same_shape(lp, advantages=a)
    return float(-(a * lp).mean())


def policy_gradient_loss_gradient(log_probs, advantages) -> np.ndarray:
    """``d L / d log_probs = -A / B`` of :func:`policy_gradient_loss`, shape (B,), float64."""
    lp, a = _batch(log_probs, "log_probs"), _batch(advantages, "advantages")
    _same_shape(lp, advantages=a)
    return -a / a.size


def _value_terms(values, values_old, returns, clip_range, form, combine, clip_bounds,
                 clipped_branch_gradient):
    v, R = _batch(values, "values"), _batch(returns, "returns")
    _same_shape(v, returns=R)
    _choice(form, "form", ("squared", "clipped_prediction", "max"))
    _choice(combine, "combine", ("max", "min"))
    _choice(clip_bounds, "clip_bounds", ("ordered", "reversed"))
    sq, dsq = (v - R) ** 2, 2.0 * (v - R)
    if form == "squared":
        return sq, dsq
    if values_old is None or clip_range is None:
        raise InvalidArgumentError(f"form={form!r}: expected values_old and clip_range, "
                                   f"received None")
    vo = _batch(values_old, "values_old")
    _same_shape(v, values_old=vo)
    eps = _real(clip_range, "clip_range")
    lo, hi = (eps, -eps) if clip_bounds == "reversed" else (-eps, eps)
    d = v - vo
    clipped = np.minimum(np.maximum(d, lo), hi)  # torch.clamp order: max with lo, then min
    acts = (d >= lo) & (d <= hi) if clipped_branch_gradient else np.zeros(d.shape, bool)
    v_clip = vo + clipped
    cl, dcl = (v_clip - R) ** 2, np.where(acts, 2.0 * (v_clip - R), 0.0)
    if form == "clipped_prediction":
        return cl, dcl
    return _pick(sq, dsq, cl, dcl, combine)


def value_loss(values, values_old, returns, clip_range: float | None = None, *,
               form: str = "max", combine: str = "max", clip_bounds: str = "ordered",
               clipped_branch_gradient: bool = True) -> float:
    """The critic loss of PPO and A2C in each mainstream form, times 1/2, mean over the batch.

    With ``V_clip = V_old + clip(V - V_old, -eps, eps)``:

    * ``form="squared"``: ``0.5 mean (V - R)^2`` (A2C; PPO without value clipping);
    * ``form="clipped_prediction"``: ``0.5 mean (V_clip - R)^2`` (Stable-Baselines3
      ``ppo/ppo.py``: ``F.mse_loss(returns, values_pred)``);
    * ``form="max"``: ``0.5 mean max((V - R)^2, (V_clip - R)^2)`` (OpenAI baselines
      ``ppo2/model.py``; CleanRL ``ppo.py`` with ``clip_vloss``).

    The 1/2 (and any positive factor such as ``vf_coef``) is a convention.

    Parameters
    ----------
    values : array_like, shape (B,)
        Current predictions ``V(s_i)``.
    values_old : array_like, shape (B,), or None
        Predictions stored at collection (unused by ``form="squared"``).
    returns : array_like, shape (B,)
        Targets ``R_i``.
    clip_range : float, optional
        ``eps``; required unless ``form="squared"``.

    Other Parameters
    ----------------
    form : {"squared", "clipped_prediction", "max"}
    combine : {"max", "min"}
        "min" models the lost pessimistic bound (``form="max"`` only).
    clip_bounds : {"ordered", "reversed"}
        "reversed" models ``clip(x, eps, -eps)``.
    clipped_branch_gradient : bool
        False models a clipped branch built so that its gradient vanishes.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        Shapes differ, non-finite input, empty batch, a clipped form without ``values_old`` or
        ``clip_range``, an unknown switch.

    References
    ----------
    Engstrom et al. (2020), "Implementation matters in deep policy gradients",
    arXiv:2005.12729v1, Sec. 3 (value function clipping); Andrychowicz et al. (2021),
    arXiv:2006.05990v1, Sec. 3.
    """
    per, _ = _value_terms(values, values_old, returns, clip_range, form, combine, clip_bounds,
                          clipped_branch_gradient)
    return float(0.5 * per.mean())


def value_loss_gradient(values, values_old, returns, clip_range: float | None = None, *,
                        form: str = "max", combine: str = "max", clip_bounds: str = "ordered",
                        clipped_branch_gradient: bool = True) -> np.ndarray:
    """``d L / d values`` of :func:`value_loss`, shape (B,), float64; same parameters."""
    per, dper = _value_terms(values, values_old, returns, clip_range, form, combine,
                             clip_bounds, clipped_branch_gradient)
    return 0.5 * dper / per.size


# ------------------------------------------------------------ distributions
def _logits(x, name: str) -> np.ndarray:
    arr = as_float_array(x, name)
    if arr.ndim < 1 or arr.shape[-1] < 1:
        raise InvalidArgumentError(f"{name}: expected shape (..., A) with A >= 1, received "
                                   f"{arr.shape}")
    return arr - logsumexp(arr, axis=-1, keepdims=True)


def categorical_log_prob(logits, actions) -> np.ndarray:
    """``log softmax(logits)[a]``: log-probability of integer actions, shape (...,).

    Parameters
    ----------
    logits : array_like, shape (..., A)
        Unnormalized log-probabilities.
    actions : array_like of int, shape (...,)
        In ``0 .. A - 1``.

    Raises
    ------
    InvalidArgumentError
        Non-finite logits, actions out of range or of the wrong shape.

    References
    ----------
    Cover & Thomas (2006), "Elements of Information Theory", 2nd ed., Sec. 2.1.
    """
    lp = _logits(logits, "logits")
    a = np.asarray(actions)
    if a.shape != lp.shape[:-1] or not np.issubdtype(a.dtype, np.integer):
        raise InvalidArgumentError(f"actions: expected integers of shape {lp.shape[:-1]}, "
                                   f"received {a.dtype} of shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= lp.shape[-1]):
        raise InvalidArgumentError(f"actions: expected values in [0, {lp.shape[-1] - 1}], "
                                   f"received [{a.min()}, {a.max()}]")
    return np.take_along_axis(lp, a[..., None], axis=-1)[..., 0]


def categorical_entropy(logits) -> np.ndarray:
    """``H(p) = -sum_a p_a log p_a`` (nats), ``p = softmax(logits)``; shape (..., A) -> (...,).

    Raises
    ------
    InvalidArgumentError
        Non-finite logits or a 0-d input.

    References
    ----------
    Cover & Thomas (2006), Eq. (2.1).
    """
    lp = _logits(logits, "logits")
    return -(np.exp(lp) * lp).sum(-1)


def categorical_kl(logits_p, logits_q) -> np.ndarray:
    """``KL(p || q) = sum_a p_a (log p_a - log q_a)`` (nats) from logits; (..., A) -> (...,).

    Raises
    ------
    InvalidArgumentError
        Non-finite logits or shapes that differ.

    References
    ----------
    Cover & Thomas (2006), Eq. (2.26).
    """
    lp, lq = _logits(logits_p, "logits_p"), _logits(logits_q, "logits_q")
    _same_shape(lp, logits_q=lq)
    return (np.exp(lp) * (lp - lq)).sum(-1)


def _gauss(mean, log_std, names=("mean", "log_std")):
    m = as_float_array(mean, names[0])
    ls = as_float_array(log_std, names[1])
    try:
        m, ls = np.broadcast_arrays(m, ls)
    except ValueError:
        raise InvalidArgumentError(f"{names[1]}: expected a shape broadcastable to "
                                   f"{m.shape}, received {ls.shape}") from None
    if m.ndim < 1:
        raise InvalidArgumentError(f"{names[0]}: expected shape (..., m), received {m.shape}")
    return m, ls


def gaussian_log_prob(actions, mean, log_std, *, reduce: str = "sum",
                      log_std_is_log_var: bool = False, constant: bool = True) -> np.ndarray:
    """Diagonal-Gaussian log-density summed over the action dimensions (last axis).

    ``log N(x; m, diag(s^2)) = sum_i [-(x_i - m_i)^2 / (2 s_i^2) - log s_i - log(2 pi) / 2]``,
    ``s = exp(log_std)``.

    Parameters
    ----------
    actions, mean, log_std : array_like, shape (..., m), broadcastable

    Other Parameters
    ----------------
    reduce : {"sum", "mean"}
        "mean" models averaging over the action dimensions.
    log_std_is_log_var : bool
        True models log-std treated as log-variance.
    constant : bool
        False models the missing ``-log(2 pi) / 2``.

    Returns
    -------
    ndarray, shape (...,)

    Raises
    ------
    InvalidArgumentError
        Non-finite input, shapes that do not broadcast, an unknown ``reduce``.

    References
    ----------
    Bishop (2006), "Pattern Recognition and Machine Learning", Eq. (2.43); proofs quantity
    gaussian_log_prob.
    """
    m, ls = _gauss(mean, log_std)
    x = as_float_array(actions, "actions")
    _choice(reduce, "reduce", ("sum", "mean"))
    log_s = 0.5 * ls if log_std_is_log_var else ls
    per = -0.5 * ((x - m) / np.exp(log_s)) ** 2 - log_s
    if constant:
        per = per - 0.5 * _LOG_2PI
    return per.sum(-1) if reduce == "sum" else per.mean(-1)


def gaussian_entropy(log_std, *, reduce: str = "sum", constant: bool = True) -> np.ndarray:
    """Entropy of a diagonal Gaussian, ``sum_i [log s_i + (1 + log 2 pi) / 2]`` (nats).

    Parameters
    ----------
    log_std : array_like, shape (..., m)

    Other Parameters
    ----------------
    reduce : {"sum", "mean"}
        "mean" models an entropy not summed over the action dimensions.
    constant : bool
        False models the missing ``(1 + log 2 pi) / 2``.

    Returns
    -------
    ndarray, shape (...,)

    Raises
    ------
    InvalidArgumentError
        Non-finite input, a 0-d input, an unknown ``reduce``.

    References
    ----------
    Cover & Thomas (2006), Theorem 8.4.1; proofs quantity gaussian_entropy.
    """
    ls = as_float_array(log_std, "log_std")
    if ls.ndim < 1:
        raise InvalidArgumentError(f"log_std: expected shape (..., m), received {ls.shape}")
    _choice(reduce, "reduce", ("sum", "mean"))
    per = ls + (0.5 * (1.0 + _LOG_2PI) if constant else 0.0)
    return per.sum(-1) if reduce == "sum" else per.mean(-1)


def gaussian_kl(mean1, log_std1, mean2, log_std2, *,
                square_std_ratio: bool = True) -> np.ndarray:
    """``KL(N(m1, diag s1^2) || N(m2, diag s2^2))`` in closed form, summed over the last axis.

    ``sum_i [log(s2_i / s1_i) + (s1_i^2 + (m1_i - m2_i)^2) / (2 s2_i^2) - 1/2]``, with ``s =
    exp(log_std)``. Inputs broadcast.

    Parameters
    ----------
    mean1, log_std1, mean2, log_std2 : array_like, shape (..., m)

    Other Parameters
    ----------------
    square_std_ratio : bool
        False models ``s1 / s2`` where ``(s1 / s2)^2`` belongs (catalogue entry
        ``gaussian_kl_no_square``).

    Returns
    -------
    ndarray, shape (...,)
        Nats, >= 0.

    Raises
    ------
    InvalidArgumentError
        Non-finite input or shapes that do not broadcast.

    References
    ----------
    Kullback (1959), "Information Theory and Statistics"; e.g. Schulman et al. (2015),
    arXiv:1502.05477v5, App. C; proofs theorem gaussian_kl.
    """
    m1, l1 = _gauss(mean1, log_std1, ("mean1", "log_std1"))
    m2, l2 = _gauss(mean2, log_std2, ("mean2", "log_std2"))
    try:
        m1, l1, m2, l2 = np.broadcast_arrays(m1, l1, m2, l2)
    except ValueError:
        raise InvalidArgumentError(f"mean2: expected a shape broadcastable to {m1.shape}, "
                                   f"received {m2.shape}") from None
    ratio = np.exp(l1 - l2)
    term = ratio**2 if square_std_ratio else ratio
    return (l2 - l1 + 0.5 * (term + ((m1 - m2) * np.exp(-l2)) ** 2) - 0.5).sum(-1)


def kl_estimator(log_p, log_q, kind: str) -> np.ndarray:
    """Per-sample estimators of ``KL(q || p)`` from samples ``x ~ q``.

    With ``log r = log p(x) - log q(x)``: ``k1 = -log r`` (unbiased, can be negative),
    ``k2 = (log r)^2 / 2`` (biased, low variance), ``k3 = (r - 1) - log r`` (unbiased, >= 0).

    Parameters
    ----------
    log_p, log_q : array_like, same shape
        ``log p(x)``, ``log q(x)`` at the samples (nats).
    kind : {"k1", "k2", "k3"}

    Returns
    -------
    ndarray, same shape

    Raises
    ------
    InvalidArgumentError
        Shapes differ, non-finite input, unknown ``kind``.

    References
    ----------
    Schulman (2020), "Approximating KL divergence", blog note (joschu.net/blog/kl-approx.html);
    proofs theorem kl_estimators.
    """
    lp, lq = as_float_array(log_p, "log_p"), as_float_array(log_q, "log_q")
    _same_shape(lp, log_q=lq)
    _choice(kind, "kind", ("k1", "k2", "k3"))
    lr = lp - lq
    if kind == "k1":
        return -lr
    if kind == "k2":
        return 0.5 * lr**2
    return np.expm1(lr) - lr


# ------------------------------------------------------------- TRPO machinery
@dataclasses.dataclass(frozen=True)
class ConjugateGradientResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes
    ----------
    x : ndarray, shape (d,), float64
        The last iterate.
    n_iter : int
        Iterations performed (matrix-vector products after the initial residual).
    residual : float
        ``||b - A x||^2`` as the recursion tracks it (squared, in the computation dtype).
    converged : bool
        True when a stopping rule fired before ``n_iters`` iterations.
    message : str
    """

    x: np.ndarray
    n_iter: int
    residual: float
    converged: bool
    message: str


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b, n_iters: int, *,
                       x0=None, residual_tol: float = 0.0, relative_tol: float = 0.0,
                       dtype=np.float64) -> ConjugateGradientResult:
    """At most ``n_iters`` conjugate-gradient iterations for ``A x = b``, ``A`` SPD.

    ``r_0 = b - A x_0``, ``p_0 = r_0``; ``alpha_k = r_k^T r_k / p_k^T A p_k``, ``x_{k+1} = x_k +
    alpha_k p_k``, ``r_{k+1} = r_k - alpha_k A p_k``, ``p_{k+1} = r_{k+1} + (r_{k+1}^T r_{k+1} /
    r_k^T r_k) p_k``. Before each iteration it stops when ``r^T r < residual_tol`` (absolute,
    the rule of sb3-contrib's ``conjugate_gradient_solver``), when ``r^T r <= relative_tol *
    r_0^T r_0``, or when ``r^T r = 0``; it stops early, unconverged, on a breakdown
    ``p^T A p = 0`` (``A p = 0``, or a product that underflows in float32), where the next step
    would divide by zero. From ``x_0 = 0`` the k-th iterate is unique (the
    minimizer of the A-norm error over the k-th Krylov space), so it can be compared exactly.

    Parameters
    ----------
    matvec : callable, ndarray (d,) float64 -> ndarray (d,)
        ``v -> A v``.
    b : array_like, shape (d,)
    n_iters : int
        ``>= 0``.
    x0 : array_like, shape (d,), optional
        Start (default 0).
    residual_tol, relative_tol : float
        Stopping rules on the squared residual (see above); 0 disables them.
    dtype : numpy dtype
        Computation dtype; ``np.float32`` rounds every vector operation (and ``matvec``'s
        output) as a float32 implementation does.

    Returns
    -------
    ConjugateGradientResult
        ``x`` in float64.

    Raises
    ------
    InvalidArgumentError
        ``b`` not 1-D or non-finite, ``x0`` of another shape, ``n_iters < 0``, negative tolerances.

    References
    ----------
    Hestenes & Stiefel (1952), J. Res. NBS 49(6); Nocedal & Wright (2006), "Numerical
    Optimization", 2nd ed., Algorithm 5.2; Schulman et al. (2015), arXiv:1502.05477v5, App. C.
    """
    bb = as_float_array(b, "b", ndim=1)
    if isinstance(n_iters, bool) or int(n_iters) != n_iters or n_iters < 0:
        raise InvalidArgumentError(f"n_iters: expected an integer >= 0, received {n_iters!r}")
    if residual_tol < 0 or relative_tol < 0:
        raise InvalidArgumentError(f"residual_tol, relative_tol: expected >= 0, received "
                                   f"{residual_tol}, {relative_tol}")

    def mv(v):
        return np.asarray(matvec(v.astype(np.float64)), dtype=dtype)

    bb = bb.astype(dtype)
    if x0 is None:
        x = np.zeros_like(bb)
        r = bb.copy()
    else:
        x = as_float_array(x0, "x0", ndim=1).astype(dtype)
        if x.shape != bb.shape:
            raise InvalidArgumentError(f"x0: expected shape {bb.shape}, received {x.shape}")
        r = bb - mv(x)
    p = r.copy()
    rr = r @ r
    rr0 = rr
    for k in range(int(n_iters)):
        if rr < residual_tol or rr <= relative_tol * rr0 or rr == 0.0:
            return ConjugateGradientResult(x.astype(np.float64), k, float(rr), True,
                                           f"residual below tolerance after {k} iterations")
        Ap = mv(p)
        pAp = p @ Ap
        if pAp == 0.0:  # breakdown: A p = 0, or p^T A p underflowed (a subnormal residual)
            return ConjugateGradientResult(
                x.astype(np.float64), k, float(rr), False,
                f"breakdown after {k} iterations: p^T A p = 0 at residual {float(rr):.3g}")
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p, rr = r + (rr_new / rr) * p, rr_new
    return ConjugateGradientResult(x.astype(np.float64), int(n_iters), float(rr), False,
                                   f"stopped after n_iters = {int(n_iters)} iterations")


@dataclasses.dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    Attributes
    ----------
    x : ndarray, shape (d,)
        The accepted point, or ``x0`` when none was accepted.
    accepted : bool
    n_backtracks : int
        ``k`` of the accepted point ``x0 + c^k full_step`` (``max_backtracks + 1`` if none).
    """

    x: np.ndarray
    accepted: bool
    n_backtracks: int


def backtracking_line_search(objective: Callable, kl: Callable, x0, full_step, max_kl: float,
                             backtrack_coef: float, max_backtracks: int, *,
                             check_kl: bool = True, require_improvement: bool = True,
                             never_accept: bool = False) -> LineSearchResult:
    """TRPO's backtracking line search.

    The first ``x = x0 + c^k full_step``, ``k = 0 .. max_backtracks``, with ``kl(x) <= max_kl``
    and ``objective(x) > objective(x0)``; else ``x0``.

    Parameters
    ----------
    objective, kl : callable, ndarray (d,) -> float
        Surrogate (to maximize) and mean KL (nats) at a parameter vector.
    x0, full_step : array_like, shape (d,)
    max_kl : float
        ``delta``.
    backtrack_coef : float
        ``c`` in (0, 1).
    max_backtracks : int
        ``>= 0``.

    Other Parameters
    ----------------
    check_kl : bool
        False models a search that accepts without checking the KL.
    require_improvement : bool
        False models a search that accepts without checking the objective.
    never_accept : bool
        True models a search that never accepts.

    Returns
    -------
    LineSearchResult

    Raises
    ------
    InvalidArgumentError
        ``x0`` and ``full_step`` of different shapes, ``backtrack_coef`` outside (0, 1),
        ``max_backtracks < 0``.

    References
    ----------
    Schulman et al. (2015), "Trust region policy optimization", arXiv:1502.05477v5, App. C.
    """
    x0 = np.asarray(x0, dtype=np.float64)
    step = np.asarray(full_step, dtype=np.float64)
    if x0.shape != step.shape:
        raise InvalidArgumentError(f"full_step: expected shape {x0.shape}, received "
                                   f"{step.shape}")
    c = _real(backtrack_coef, "backtrack_coef")
    if not 0.0 < c < 1.0:
        raise InvalidArgumentError(f"backtrack_coef: expected a value in (0, 1), received {c}")
    if int(max_backtracks) != max_backtracks or max_backtracks < 0:
        raise InvalidArgumentError(f"max_backtracks: expected an integer >= 0, received "
                                   f"{max_backtracks!r}")
    if not never_accept:
        f0 = objective(x0)
        for k in range(int(max_backtracks) + 1):
            x = x0 + c**k * step
            if (not check_kl or kl(x) <= max_kl) and (not require_improvement
                                                       or objective(x) > f0):
                return LineSearchResult(x, True, k)
    return LineSearchResult(x0.copy(), False, int(max_backtracks) + 1)
