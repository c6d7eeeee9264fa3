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
    Where the function is not differentiable at the probed resolution (ReLU kinks) the
    finite differences are inconsistent with themselves; such probes are repeated at smaller
    steps and, failing that, excluded -- never failed (inconclusive when too few remain).
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
error ``O(h^2)`` for smooth ``f``; e.g. torch.autograd.gradcheck (which requires
differentiability at the probed point).
"""

from __future__ import annotations

import numpy as np
from pgtheory.oracles.protocol import Rollout, parameters_set, snapshot
from pgtheory.oracles.results import CheckResult

__all__ = ["GAUSSIAN_NAMES", "SAMPLING_BOUND", "check_action_sampling", "check_gaussian_density",
           "check_log_prob_gradient",
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


def _gaussian(agent, obs: np.ndarray, dist=None):
    """(mean, std) as float64 arrays (B, m), or None when the head exposes neither; ``dist``:
    ``agent.distribution(obs)`` when the caller has already built it."""
    import torch

    with torch.no_grad():
        if dist is None:
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
        ``stddev`` (shapes (B, m)); a head known not to be Gaussian (a Beta, a squashed
        Gaussian: see ``_known_non_gaussian``) is skipped, since standardizing its draws does
        not give N(0, 1).
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
    import torch
    from scipy import stats

    name = "given_the_batch.action_sampling"
    obs, act = _flat_samples(rollouts)
    with parameters_set(agent, parameters):
        with torch.no_grad():
            dist = agent.distribution(torch.as_tensor(obs, dtype=torch.float32))
        law = _known_non_gaussian(dist)
        ms = None if law else _gaussian(agent, obs, dist)
    if law:
        return CheckResult(name, LAYER, "skip", "a Gaussian head", law,
                           f"the policy distribution is a {law}, whose mean and stddev do not "
                           f"make its draws N(0, 1) after standardizing: the test does not "
                           f"apply")
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
                            atol: float = 5e-3, refinements: int = 2,
                            kink_factor: float = 3.0, min_verified: float = 1.0
                            ) -> CheckResult:
    """Autograd derivatives of the weighted log-density against finite differences.

    For ``f(theta) = sum_i u_i log pi_theta(a_i | s_i)`` over ``n_samples`` stored samples
    (the first of the stored samples; ``u_i ~ N(0, 1)``: unweighted, the score's mean zero
    would leave nothing to compare) and a random unit direction ``v`` per parameter tensor,
    the check evaluates ``f`` at the five points ``theta + k (h/2) v``, ``k = -2..2``, and
    compares the autograd derivative ``d = grad f . v`` with the central difference at step
    ``h/2``, ``D = (f(theta + h/2 v) - f(theta - h/2 v)) / h``. The per-sample log-densities
    are summed in float64; ``atol`` (at ``h = step``; scaled by ``step / h`` at smaller steps)
    covers float32 rounding in ``log pi`` and ``rtol`` the ``O(h^2)`` truncation error.

    **Where the function is not differentiable.** Central differences agree with the
    derivative only where ``f`` is smooth over the probed interval; a ReLU network's ``f``
    has kinks (a hidden unit's pre-activation crossing zero for one sample) along nearly
    every direction, and a kink inside ``[-h, h]`` moves ``D`` off ``d`` by up to half the
    jump in slope. The same five points measure this: the four chord slopes
    ``s_j = (f_{j+1} - f_j) / (h/2)`` of a smooth function lie on a line up to
    ``O(h^2 f''')`` and the central differences at ``h`` and ``h/2`` agree up to the same
    order, so the *roughness* ``r = max(|second differences of s|, |D_h - D_{h/2}|)`` is
    at the rounding floor (measured at most 0.023 on SB3 tanh networks at ``h = 0.01``),
    while a kink shows in it: one kink of slope jump ``c`` at ``t`` in ``(0, h/2)`` moves
    ``D`` by ``c (1/2 - t/h)`` and the first second difference of the slopes by
    ``c (1 - 2t/h)``, twice that (a kink in ``(h/2, h)`` moves ``D`` not at all). Kinks can
    hide from one resolution -- two opposite jumps at ``+-t``, ``t << h``, move ``D`` by
    about ``c`` and the slopes by only ``2ct/h`` -- but not from all: the probe is repeated
    at ``h/4`` and ``h/16``, and such a narrow dip is seen at the finer step (or lies outside
    it). Rule per direction, at steps ``h = step, step/4, ...`` (``refinements`` further
    steps, default 2):

    * ``|d - D| <= rtol * max(|d|, |D|) + atol`` at some step: verified (the earlier
      mismatches were kinks);
    * ``|d - D|`` above the tolerance and above ``kink_factor * r`` (default 3: a single
      kink gives ``r >= 2 |d - D|``) at *every* step: the function is smooth where probed
      and autograd disagrees with it at every resolution: **fail** (a parameter detached
      from the graph gives ``d = 0`` against a clearly non-zero, step-consistent ``D``);
    * otherwise: not differentiable where probed at these resolutions: excluded.

    A tensor the density does not depend on (``d`` and every ``f`` difference zero, such as
    the critic's parameters) is not counted. The verdict is **fail** on any disagreement,
    **pass** when at least ``min_verified`` (default all) of the tensors the density depends
    on were verified, and **inconclusive** when fewer remain, naming the excluded ones (never
    evidence of a defect; but an excluded tensor is not verified either: a ``.detach()`` on a
    ReLU layer whose probes all straddle kinks would hide there, so a partial verification is
    not reported as a pass).

    Returns
    -------
    CheckResult
        Fails naming the parameter with the largest discrepancy.

    References
    ----------
    Finite-difference gradient checking and its failure at non-differentiable points:
    torch.autograd.gradcheck (documented as requiring differentiable inputs); Nocedal &
    Wright (2006), *Numerical Optimization*, 2nd ed., Sec. 8.1 (central differences, error
    ``O(h^2)`` for smooth functions; finite differences at kinks); chord-slope second
    differences as a smoothness test: the divided differences of Burden & Faires,
    *Numerical Analysis*, Sec. 3.3.
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

    worst = (0.0, "", 0.0, 0.0, 0.0, step)  # (|d - D| / allowed, name, d, D, roughness, h)
    verified: list[str] = []
    refined = 0  # verified at a step below ``step`` (the first probe crossed a kink)
    excluded: list[tuple[str, float, float, float, float]] = []  # name, d, D, r, h
    with parameters_set(agent, parameters) as live:
        names = list(live)
        params = [live[n] for n in names]
        grads = torch.autograd.grad(f(), params, allow_unused=True)
        for n, p, g in zip(names, params, grads, strict=True):
            v = torch.as_tensor(rng.standard_normal(tuple(p.shape)), dtype=p.dtype)
            v = v / v.norm()
            ad = 0.0 if g is None else float((g.double() * v.double()).sum())
            base = p.detach().clone()
            h = step
            smooth_mismatch = []  # per step: (|d - D| / allowed, D, roughness, h)
            for attempt in range(refinements + 1):
                fs = []
                with torch.no_grad():
                    for k in (-2, -1, 0, 1, 2):
                        p.copy_(base + k * (h / 2) * v)
                        fs.append(float(f()))
                    p.copy_(base)
                fs_a = np.array(fs)
                fd = (fs_a[3] - fs_a[1]) / h
                if not (np.isfinite(ad) and np.all(np.isfinite(fs_a))):
                    return CheckResult(name, LAYER, "fail", "finite derivatives", "non-finite",
                                       f"parameter {n}: autograd {ad}, log-density values "
                                       f"{fs}")
                if attempt == 0 and ad == 0.0 and not np.any(np.diff(fs_a)):
                    break  # the density does not depend on this tensor
                slopes = np.diff(fs_a) / (h / 2)
                rough = max(float(np.abs(np.diff(slopes, 2)).max()),
                            abs((fs_a[4] - fs_a[0]) / (2 * h) - fd))
                err = abs(ad - fd)
                allowed = rtol * max(abs(ad), abs(fd)) + atol * step / h
                if err <= allowed:
                    verified.append(n)
                    refined += attempt > 0
                    break
                if err > kink_factor * rough:
                    smooth_mismatch.append((err / allowed, fd, rough, h))
                if attempt == refinements:
                    if len(smooth_mismatch) == refinements + 1:  # confirmed at every step
                        first = smooth_mismatch[0]
                        if first[0] > worst[0]:
                            worst = (first[0], n, ad, first[1], first[2], first[3])
                    else:
                        excluded.append((n, ad, fd, rough, h))
                h /= 4
    if worst[0] > 0:
        _, n, ad, fd, rough, h = worst
        why = (f"parameter {n}: autograd derivative {ad:.6g} along a random direction, central "
               f"difference {fd:.6g} at step {h:g} where the log-density is smooth (roughness "
               f"{rough:.3g}, under 1/{kink_factor:g} of the discrepancy), confirmed at "
               f"{refinements} smaller steps")
        if abs(ad) <= atol < abs(fd):
            why += ("; reproduced by: the parameter is detached from the autograd graph "
                    "(the density depends on it, the gradient does not reach it)")
        return CheckResult(name, LAYER, "fail", f"{fd:.6g}", f"{ad:.6g}", why, tolerance=rtol)
    dependent = len(verified) + len(excluded)
    skipped = ""
    if refined:
        skipped = (f"; {refined} of them at a smaller step (the probe at step {step:g} was "
                   f"not smooth: e.g. ReLU kinks)")
    if excluded:
        skipped += ("; excluded as not differentiable where probed (finite differences "
                   "inconsistent down to the smallest step): " + ", ".join(
                       f"{n} (autograd {d:.4g}, central difference {D:.4g}, roughness "
                       f"{r:.3g} at step {h:g})" for n, d, D, r, h in excluded))
    if dependent == 0 or len(verified) < min_verified * dependent:
        return CheckResult(name, LAYER, "inconclusive",
                           f"at least {min_verified:.0%} of {dependent} tensors verified",
                           f"{len(verified)} verified",
                           f"only {len(verified)} of the {dependent} parameter tensors the "
                           f"log-density depends on could be compared with finite differences"
                           f"{skipped}", tolerance=rtol)
    return CheckResult(name, LAYER, "pass", "finite differences", "matched",
                       f"autograd derivatives of the log-density match central finite "
                       f"differences for {len(verified)} of the {dependent} parameter tensors "
                       f"it depends on ({obs.shape[0]} samples){skipped}", tolerance=rtol)


#: Names a distribution class may carry for the closed-form density check to apply (torch's
#: ``Normal``, ``Independent(Normal)``, ``MultivariateNormal`` and custom diagonal-Gaussian heads
#: such as ``DiagGaussian``); other laws with a ``mean`` and ``stddev`` (Beta, squashed
#: Gaussians) are not diagonal Gaussians and are skipped.
GAUSSIAN_NAMES = ("Normal", "Gaussian")


def _is_gaussian(dist) -> bool:
    import torch

    base = dist.base_dist if isinstance(dist, torch.distributions.Independent) else dist
    return any(k in type(base).__name__ for k in GAUSSIAN_NAMES) and not any(
        k in type(base).__name__ for k in ("Squashed", "Tanh", "LogNormal", "HalfNormal"))


def _known_non_gaussian(dist) -> str:
    """The class name of a head known not to be Gaussian, or ``""``.

    Known: a ``torch.distributions`` law (inside ``Independent`` too) other than ``Normal``
    and the multivariate normals (``Beta``, ``Gamma``, ``TransformedDistribution`` for
    squashed heads, ...), and any class whose name says squashed, tanh or Beta. A head of the
    user's own class is taken at its word (its ``mean`` and ``stddev``), so that custom
    Gaussian heads stay tested.
    """
    import torch

    base = dist.base_dist if isinstance(dist, torch.distributions.Independent) else dist
    cls = type(base)
    gaussian = (torch.distributions.Normal, torch.distributions.MultivariateNormal,
                torch.distributions.LowRankMultivariateNormal)
    builtin = cls.__module__.startswith("torch.distributions")
    if (builtin and not isinstance(base, gaussian)) or any(
            k in cls.__name__ for k in ("Squashed", "Tanh", "Beta")):
        return cls.__name__
    return ""


def _mean_over_dims(what: str, ratio: float, m: int, catalogue: str,
                    consequence: str = "") -> str:
    """The diagnosis of a head's value that is ``1/m`` of the closed form, or ``""``."""
    if not abs(ratio - 1.0 / m) < 0.02:
        return ""
    return (f"; the head returns the per-dimension mean of the {what} (ratio {ratio:.3f} = "
            f"1/{m}) instead of its sum over the {m} action dimensions{consequence} "
            f"[catalogue: {catalogue}]")


def check_gaussian_density(agent, rollouts: list[Rollout], parameters: dict, *,
                           rtol: float = 1e-4, atol: float = 1e-3) -> CheckResult:
    """The head's joint log-density, and its entropy's gradient, against the diagonal Gaussian.

    On stored samples ``(s_i, a_i)`` with ``m >= 2`` action dimensions (the two-actuator
    double integrator), from the head's own ``mean`` and ``stddev`` at ``s_i``:

    * **log-density**: ``log pi(a | s) = sum_j [-(a_j - mu_j)^2 / (2 sigma_j^2) - log sigma_j]
      + c``, which the protocol's ``log_prob`` (shape (B,)) must return, up to one constant
      ``c`` for all samples (the normalizer ``-m log(2 pi) / 2``; omitting it changes no ratio
      and no gradient, so it is reported, not failed). A per-dimension mean of it
      (``log_prob / m``) is the density of no policy: PPO's ratio becomes the geometric mean of
      the per-dimension ratios (clipping then acts on the wrong quantity), KL estimates shrink
      by ``m``, and every policy-gradient estimate is scaled by ``1/m``.
    * **entropy gradient**, when the head exposes ``entropy()`` of shape (B,) (a joint
      entropy; per-dimension entropies of shape (B, m), as torch's ``Normal`` gives, are not
      compared): ``grad_theta sum_i H_i`` against ``grad_theta sum_i sum_j log sigma_j(s_i)``,
      both by autograd through the head, since ``H = sum_j log sigma_j + m (1 + log 2 pi)/2``.
      Comparing gradients rather than values ignores the additive constant (harmless) and sees
      a mean over dimensions, which divides the entropy bonus by ``m``.

    With one action dimension sum and mean coincide, so these defects need ``m >= 2``.
    Deterministic: float32 heads agree with the float64 closed forms within
    ``rtol * |ref| + atol`` (defaults 1e-4 and 1e-3, per sample for the log-density, on the
    gradient's norm for the entropy; a per-dimension mean misses by ``(1 - 1/m) |ref|``).

    Parameters
    ----------
    agent
        A protocol agent whose ``distribution(obs)`` is a diagonal Gaussian exposing ``mean``
        and ``stddev`` (shapes (B, m)).
    rollouts : list of Rollout
        Stored observations and actions (T, N, m).
    parameters : dict
        The parameters to evaluate the head at (name -> tensor).
    rtol, atol : float
        Tolerances (see above).

    Returns
    -------
    CheckResult
        ``fail`` naming the quantity, the ratio of the head's value to the closed form and the
        diagnosis; ``skip`` for a head that exposes no mean/stddev or is not a diagonal
        Gaussian; ``error`` when ``log_prob`` does not have the protocol's shape (B,) (a
        protocol violation, not a defect verdict).

    References
    ----------
    Diagonal-Gaussian density and differential entropy: Cover & Thomas (2006), *Elements of
    Information Theory*, 2nd ed., Theorem 8.4.1 (``h = 1/2 log((2 pi e)^m det Sigma)``). The
    per-dimension mean as a recorded defect: Stable-Baselines3 changelog 0.3.0 (entropy);
    ``docs/bugs.md`` (catalogue entries ``gaussian_log_prob_averaged``,
    ``gaussian_entropy_not_summed``).
    """
    import torch

    name = "given_the_batch.gaussian_density"
    obs, act = _flat_samples(rollouts)
    obs_t = torch.as_tensor(obs, dtype=torch.float32)
    with parameters_set(agent, parameters) as live:
        with torch.no_grad():
            dist = agent.distribution(obs_t)
        if not _is_gaussian(dist):
            return CheckResult(name, LAYER, "skip", "a diagonal-Gaussian head",
                               type(dist).__name__,
                               f"the policy distribution is a {type(dist).__name__}, not a "
                               f"diagonal Gaussian: the closed forms do not apply")
        ms = _gaussian(agent, obs)
        if ms is None:
            return CheckResult(name, LAYER, "skip", "a Gaussian head", "no mean/stddev",
                               "the policy distribution exposes no mean and stddev")
        mean, std = ms
        B, m = mean.shape
        a = act.astype(np.float64).reshape(B, m)
        with torch.no_grad():
            lp = dist.log_prob(torch.as_tensor(a, dtype=torch.float32))
        lp = lp.detach().cpu().double().numpy()
        if lp.shape != (B,):
            return CheckResult(name, LAYER, "error", f"log_prob shape ({B},)", str(lp.shape),
                               f"distribution(obs).log_prob(actions) has shape {lp.shape}; "
                               f"the protocol expects the joint log-density, shape ({B},) "
                               f"(the sum over the {m} action dimensions)")
        # entropy gradient against the gradient of sum log sigma, both through the head
        ent_note = "entropy not exposed"
        g_ent = g_ref = None
        params = list(live.values())
        d = agent.distribution(obs_t)
        try:
            ent = d.entropy()
        except (NotImplementedError, AttributeError):
            ent = None
        if ent is not None and tuple(ent.shape) != (B,):
            ent_note = f"entropy of shape {tuple(ent.shape)} (per dimension) not compared"
        elif ent is not None:
            log_sigma = torch.log(d.stddev).reshape(B, -1).sum()
            if not (ent.requires_grad and log_sigma.requires_grad):
                ent_note = "entropy does not depend on the parameters"
            else:
                g_ent = torch.autograd.grad(ent.sum(), params, allow_unused=True,
                                            retain_graph=True)
                g_ref = torch.autograd.grad(log_sigma, params, allow_unused=True)
                ent_note = "entropy gradient compared"
    z = (a - mean) / std
    ref_lp = np.sum(-0.5 * z * z - np.log(std), axis=1)
    if not np.all(np.isfinite(lp)):
        return CheckResult(name, LAYER, "fail", "finite log-density", "non-finite",
                           f"the head's log-density is NaN or infinite for "
                           f"{int(np.sum(~np.isfinite(lp)))} of {B} samples")
    offset = float(np.median(lp - ref_lp))
    full = ref_lp - 0.5 * m * np.log(2 * np.pi)
    err = np.abs(lp - ref_lp - offset)
    allowed = rtol * np.abs(full) + atol
    if np.any(err > allowed):
        i = int(np.argmax(err / allowed))
        ratio = float(np.sum(lp * full) / np.sum(full * full))
        why = _mean_over_dims("log-density", ratio, m, "gaussian_log_prob_averaged")
        return CheckResult(name, LAYER, "fail", "log-density = diagonal-Gaussian closed form",
                           f"ratio {ratio:.3f}",
                           f"{int(np.sum(err > allowed))} of {B} samples differ beyond one "
                           f"common constant; sample {i}: head {lp[i]:.5g}, closed form "
                           f"{full[i]:.5g}, allowed {allowed[i]:.2g} (after the common "
                           f"offset){why}")
    if g_ent is not None:
        def flat(grads) -> torch.Tensor:
            return torch.cat([(g if g is not None else torch.zeros_like(p)).double().flatten()
                              for g, p in zip(grads, params, strict=True)])

        ge, gr = flat(g_ent), flat(g_ref)
        gap = float((ge - gr).norm())
        ref_norm = float(gr.norm())
        if not np.isfinite(gap) or gap > rtol * ref_norm + atol * np.sqrt(B):
            ratio = float(ge @ gr / (gr @ gr)) if ref_norm > 0 else float("nan")
            why = _mean_over_dims("entropy", ratio, m, "gaussian_entropy_not_summed",
                                  f": the entropy bonus is divided by {m}")
            return CheckResult(name, LAYER, "fail", "grad H = grad sum log sigma",
                               f"ratio {ratio:.3f}",
                               f"the gradient of the head's entropy over {B} samples differs "
                               f"from that of sum_j log sigma_j by {gap:.3g} (norm "
                               f"{ref_norm:.3g}){why}")
    const = offset - (-0.5 * m * np.log(2 * np.pi))
    note = (f"; log_prob differs from the normalized density by the constant {const:+.4g} "
            f"for every sample (the normalizer omitted?), which changes no ratio or gradient"
            if abs(const) > atol else "")
    return CheckResult(name, LAYER, "pass", "closed forms", f"{m} action dims",
                       f"log-density of {B} stored samples within {rtol:g} |ref| + {atol:g} of "
                       f"the diagonal-Gaussian closed form over {m} action dimensions; "
                       f"{ent_note}{note}")
