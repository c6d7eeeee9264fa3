"""Checks of a continuous policy head itself: its gradient and the law of the actions it stores.

The given-the-batch checks compute the canonical losses through the agent's own
``distribution()``, so a defect *inside* the policy head is invisible to them: a log-std
detached from the autograd graph makes the reference gradient zero as well, and actions drawn
from a different law than the density the update uses leave every loss consistent. These two
checks look at the head directly, on the double integrator with a diagonal-Gaussian policy:

``given_the_batch.log_prob_gradient@lqr`` (deterministic)
    The autograd gradient of ``sum_i u_i log pi(a_i | s_i)`` (random weights ``u``) along a
    random direction of every parameter tensor against central finite differences of the same
    function. A parameter the density depends on but autograd does not see (``.detach()``, a
    numpy round trip, ``.data``) has a zero autograd derivative and a non-zero finite difference.
``given_the_batch.action_sampling@lqr`` (statistical)
    The stored actions, standardized by the distribution's mean and standard deviation at their
    observations, ``z = (a - mu(s)) / sigma(s)``, are i.i.d. N(0, 1) for a correct sampler
    whatever the parameters are; a one-sample Kolmogorov-Smirnov test at level
    ``alpha / 3`` (the suite's per-check rate). Actions clipped to the bounds before storing
    put point masses at the bounds; sampling with a wrong scale changes the spread.

Both run on a fresh agent whose parameters are moved by ``+-0.5`` per coordinate (random
signs; the log-std away from its initial 0, where a log-std read as a log-variance gives the
same law) in an LQR environment whose declared action bounds are ``+-1`` (so that actions
fall outside them). The agent's parameters are restored afterwards.

References
----------
Kolmogorov-Smirnov one-sample test: Massey (1951), JASA 46(253):68-78. Finite-difference
gradient checking: the standard central difference ``(f(x + h v) - f(x - h v)) / 2h`` with
error ``O(h^2)``; e.g. torch.autograd.gradcheck.
"""

from __future__ import annotations

import numpy as np

from oracles.protocol import Rollout, parameters_set, snapshot
from oracles.results import CheckResult

__all__ = ["SAMPLING_BOUND", "check_action_sampling", "check_log_prob_gradient",
           "perturbed_parameters"]

LAYER = "given_the_batch"
#: Declared action bound of the LQR environment used by the sampling check.
SAMPLING_BOUND = 1.0
#: Per-coordinate parameter move (random sign) before collecting.
PERTURBATION = 0.5


def perturbed_parameters(named: dict, seed: int, scale: float = PERTURBATION) -> dict:
    """``p + scale * s`` for every parameter, ``s`` a random sign per coordinate (seeded)."""
    import torch

    rng = np.random.default_rng(seed)
    out = {}
    for k, p in snapshot(named).items():
        signs = rng.choice([-1.0, 1.0], size=tuple(p.shape))
        out[k] = p + scale * torch.as_tensor(signs, dtype=p.dtype)
    return out


def _flat_samples(rollouts: list[Rollout]) -> tuple[np.ndarray, np.ndarray]:
    obs = np.concatenate([r.observations.reshape(-1, *r.observations.shape[2:])
                          for r in rollouts])
    act = np.concatenate([r.actions.reshape(r.actions.shape[0] * r.actions.shape[1], -1)
                          for r in rollouts])
    return obs, act


def _gaussian(agent, obs: np.ndarray):
    """(mean, std) as float64 arrays (B, m), or None when the head exposes neither."""
    import torch

    with torch.no_grad():
        dist = agent.distribution(torch.as_tensor(obs, dtype=torch.float32))
        try:
            mean, std = dist.mean, dist.stddev
        except (AttributeError, NotImplementedError):
            return None
    mean = mean.detach().cpu().double().numpy().reshape(obs.shape[0], -1)
    std = std.detach().cpu().double().numpy().reshape(obs.shape[0], -1)
    return mean, std


def check_action_sampling(agent, rollouts: list[Rollout], parameters: dict, *, alpha: float,
                          bound: float | None = SAMPLING_BOUND) -> CheckResult:
    """The stored actions against the law of ``distribution(obs)`` (KS test on ``z``).

    Parameters
    ----------
    agent
        A protocol agent with a diagonal-Gaussian ``distribution`` exposing ``mean`` and
        ``stddev`` (shapes (B, m)).
    rollouts : list of Rollout
        Collected under ``parameters``; ``actions`` (T, N, m) as stored.
    parameters : dict
        The parameters the actions were sampled under (name -> tensor).
    alpha : float
        Level of the test (false-positive rate of this check).
    bound : float or None
        The declared action bound, for the diagnosis of a failure.

    Returns
    -------
    CheckResult
        ``p_value`` from the one-sample Kolmogorov-Smirnov test of all ``z`` components against
        N(0, 1); skipped when the distribution exposes no mean/stddev.

    References
    ----------
    Massey (1951), "The Kolmogorov-Smirnov test for goodness of fit", JASA 46(253):68-78.
    """
    from scipy import stats

    name = "given_the_batch.action_sampling"
    obs, act = _flat_samples(rollouts)
    with parameters_set(agent, parameters):
        ms = _gaussian(agent, obs)
    if ms is None:
        return CheckResult(name, LAYER, "skip", "a Gaussian head", "no mean/stddev",
                           "the policy distribution exposes no mean and stddev")
    mean, std = ms
    act = act.astype(np.float64).reshape(mean.shape)
    z = ((act - mean) / std).ravel()
    if not np.all(np.isfinite(z)):
        return CheckResult(name, LAYER, "fail", "finite actions", "non-finite",
                           f"{int(np.sum(~np.isfinite(z)))} stored actions or standard "
                           f"deviations are NaN or infinite")
    res = stats.kstest(z, "norm")
    p = float(res.pvalue)
    summary = f"z mean {z.mean():+.3f}, std {z.std():.3f}"
    if p >= alpha:
        return CheckResult(name, LAYER, "pass", "z ~ N(0, 1)", summary,
                           f"{z.size} stored action components follow distribution(obs) "
                           f"(KS D = {res.statistic:.4f}, p = {p:.3g} >= {alpha:.3g})",
                           p_value=p)
    at_bound = (float(np.mean(np.isclose(np.abs(act), bound, rtol=0, atol=1e-6)))
                if bound is not None else 0.0)
    if at_bound > 0.01:
        why = (f"{100 * at_bound:.0f}% of the stored actions lie exactly on the action bounds "
               f"+-{bound:g}; reproduced by: the clipped action stored instead of the sampled "
               f"one")
    elif abs(np.log(z.std())) > 0.05:
        why = (f"the stored actions spread {z.std():.3f} times the distribution's standard "
               f"deviation; the sampling law differs from the density the update uses "
               f"(e.g. the log-std read as a log-variance when sampling)")
    else:
        why = "the stored actions do not follow distribution(obs)"
    return CheckResult(name, LAYER, "fail", "z ~ N(0, 1)", summary,
                       f"KS D = {res.statistic:.4f} over {z.size} components, p = {p:.3g} < "
                       f"{alpha:.3g}: {why}", p_value=p)


def check_log_prob_gradient(agent, rollouts: list[Rollout], parameters: dict, *, seed: int,
                            n_samples: int = 1024, step: float = 1e-2, rtol: float = 0.05,
                            atol: float = 5e-3) -> CheckResult:
    """Autograd derivatives of the weighted log-density against central finite differences.

    For ``f(theta) = sum_i u_i log pi_theta(a_i | s_i)`` over ``n_samples`` stored samples
    (the first of the stored samples; ``u_i ~ N(0, 1)``: unweighted, the score's mean zero
    would leave nothing to compare) and a
    random unit direction ``v`` per parameter tensor, compares ``grad f . v`` (autograd) with
    ``(f(theta + h v) - f(theta - h v)) / 2h``. The per-sample log-densities are summed in
    float64; ``atol`` covers float32 rounding in ``log pi`` (about ``sqrt(B) * 1e-7 * |log pi|
    / h``) and ``rtol`` the ``O(h^2)`` truncation error.

    Returns
    -------
    CheckResult
        Fails naming the parameter with the largest discrepancy.
    """
    import torch

    name = "given_the_batch.log_prob_gradient"
    rng = np.random.default_rng(seed)
    obs, act = _flat_samples(rollouts)
    obs, act = obs[:n_samples], act[:n_samples]
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    act_t = torch.as_tensor(act)
    u = torch.as_tensor(rng.standard_normal(obs.shape[0]), dtype=torch.float64)

    def f() -> torch.Tensor:
        return (u * agent.distribution(obs_t).log_prob(act_t).double()).sum()

    worst = (0.0, "", 0.0, 0.0)  # (|ad - fd| / allowed, name, ad, fd)
    checked = 0
    with parameters_set(agent, parameters) as live:
        names = list(live)
        params = [live[n] for n in names]
        grads = torch.autograd.grad(f(), params, allow_unused=True)
        for n, p, g in zip(names, params, grads, strict=True):
            v = torch.as_tensor(rng.standard_normal(tuple(p.shape)), dtype=p.dtype)
            v = v / v.norm()
            ad = 0.0 if g is None else float((g.double() * v.double()).sum())
            base = p.detach().clone()
            with torch.no_grad():
                p.copy_(base + step * v)
                f_plus = float(f())
                p.copy_(base - step * v)
                f_minus = float(f())
                p.copy_(base)
            fd = (f_plus - f_minus) / (2 * step)
            if not (np.isfinite(ad) and np.isfinite(fd)):
                return CheckResult(name, LAYER, "fail", "finite derivatives", "non-finite",
                                   f"parameter {n}: autograd {ad}, finite difference {fd}")
            ratio = abs(ad - fd) / (rtol * max(abs(ad), abs(fd)) + atol)
            if ratio > worst[0]:
                worst = (ratio, n, ad, fd)
            checked += 1
    if worst[0] > 1:
        _, n, ad, fd = worst
        why = (f"parameter {n}: autograd derivative {ad:.6g} along a random direction, finite "
               f"difference {fd:.6g}")
        if abs(ad) <= atol < abs(fd):
            why += ("; reproduced by: the parameter is detached from the autograd graph "
                    "(the density depends on it, the gradient does not reach it)")
        return CheckResult(name, LAYER, "fail", f"{fd:.6g}", f"{ad:.6g}", why, tolerance=rtol)
    return CheckResult(name, LAYER, "pass", "finite differences", "matched",
                       f"autograd derivatives of the log-density match central finite "
                       f"differences for all {checked} parameter tensors ({obs.shape[0]} "
                       f"samples; largest discrepancy {worst[0]:.2f} of the allowed)",
                       tolerance=rtol)
