"""Given-the-batch check of TRPO steps: the actor step against the batch's damped natural
gradient (Fisher from the oracle's closed-form KL by autograd; conjugate gradient replayed by
:func:`pgtheory.references.conjugate_gradient`), its length and the batch KL of the accepted
step (re-exported by :mod:`pgtheory.oracles.batch`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from pgtheory.oracles.batch_common import (
    LAYER,
    is_finite,
    normalize_advantages,
    parameter_roles,
    to_numpy,
)
from pgtheory.oracles.defects import DEFECTS
from pgtheory.oracles.protocol import Iteration, parameters_set
from pgtheory.oracles.results import CheckResult

from pgtheory import references as ref

__all__ = ["CG_START_DRAWS", "CG_START_MARGIN", "batch_fisher", "cg_replay",
           "cg_start_tolerance", "check_trpo_steps", "closed_form_kl"]


def _torch():
    import torch

    return torch


def _flat_params(values: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([to_numpy(values[n]).ravel() for n in names])


_LOG_2PI = math.log(2 * math.pi)


def _base(dist):
    torch = _torch()
    while isinstance(dist, torch.distributions.Independent):
        dist = dist.base_dist
    return dist


def _policy_family(dist, act) -> str:
    """``"categorical"``, ``"gaussian"`` (diagonal) or ``""`` (no closed form in the oracle).

    torch's Categorical and Normal (or Independent Normal), subclasses included, are
    recognized by type. Any other distribution counts as a diagonal Gaussian when it exposes
    ``mean`` and ``stddev`` and its log-density at the batch's actions is the diagonal-Gaussian
    density with those parameters (:func:`_gaussian_log_density`, within 1e-4): its family is
    identified by what it computes, its KL is then the oracle's.
    """
    torch = _torch()
    base = _base(dist)
    if isinstance(base, torch.distributions.Categorical):
        return "categorical"
    if isinstance(base, torch.distributions.Normal):
        return "gaussian"
    try:
        with torch.no_grad():
            mean, std = dist.mean, dist.stddev
            lp = dist.log_prob(act)
            ref = _gaussian_log_density(act, mean, std)
        if lp.shape == ref.shape and torch.allclose(lp.double(), ref.double(), rtol=1e-4,
                                                    atol=1e-4):
            return "gaussian"
    except Exception:  # no mean / stddev, or shapes that are not a diagonal Gaussian's
        pass
    return ""


def _gaussian_log_density(act, mean, std):
    """Diagonal-Gaussian log-density summed over the non-batch dimensions, shape (B,)."""
    torch = _torch()
    mean, std, act = torch.broadcast_tensors(mean, std, act.to(mean.dtype))
    z = (act - mean) / std
    per = -0.5 * z**2 - torch.log(std) - 0.5 * _LOG_2PI
    return per.reshape(per.shape[0], -1).sum(-1)


def _policy_parameters(dist, family: str) -> tuple:
    """``(log-probabilities (B, A),)`` or ``(mean, std)`` broadcast to (B, ...) of ``dist``."""
    torch = _torch()
    base = _base(dist)
    if family == "categorical":
        return (torch.log_softmax(base.logits, -1),)
    if isinstance(base, torch.distributions.Normal):
        return tuple(torch.broadcast_tensors(base.loc, base.scale))
    return tuple(torch.broadcast_tensors(dist.mean, dist.stddev))


def closed_form_kl(family: str, p: tuple, q: tuple, *, defect: str = ""):
    """Per-sample ``KL(p || q)`` in nats from the parameters of :func:`_policy_parameters`.

    Categorical: ``sum_a p_a (log p_a - log q_a)`` (Cover & Thomas 2006, Eq. (2.26));
    diagonal Gaussian: ``sum_i [log(s2_i / s1_i) + (s1_i^2 + (m1_i - m2_i)^2) / (2 s2_i^2) -
    1/2]`` (the closed form for normals, Kullback 1959; pat-coady/trpo #25 is the defect
    without the square on the std ratio). Written here, never taken from
    ``torch.distributions.kl_divergence``, which dispatches to whatever KL the implementation
    registered for its distribution classes.

    A torch mirror of :func:`pgtheory.references.categorical_kl` and
    :func:`pgtheory.references.gaussian_kl` (autograd builds the Fisher from it, so it cannot be
    the numpy reference; ``tests/test_references.py`` holds the two equal). ``defect`` is a
    registry name: ``"gaussian_kl_no_square"`` applies that entry's switches
    (``square_std_ratio=False``: ``s1 / s2`` where its square belongs), only to name that
    defect in a failure.

    Returns
    -------
    Tensor, shape (B,)
    """
    torch = _torch()
    if family == "categorical":
        (lp,), (lq,) = p, q
        return (lp.exp() * (lp - lq)).sum(-1)
    (m1, s1), (m2, s2) = p, q
    switches = dict(DEFECTS[defect].switches) if defect else {}
    var_ratio = s1**2 / s2**2 if switches.get("square_std_ratio", True) else s1 / s2
    per = torch.log(s2) - torch.log(s1) + 0.5 * (var_ratio + (m1 - m2) ** 2 / s2**2) - 0.5
    return per.reshape(per.shape[0], -1).sum(-1)


def _kl_reference(old, act, defect: str = "") -> tuple[Callable, str]:
    """``(kl(new, reverse=False) -> (B,), description)`` against the fixed distribution
    ``old``: the oracle's closed form when the family is known, else torch's registry."""
    torch = _torch()
    family = _policy_family(old, act)
    if not family:
        def registry_kl(new, reverse=False):
            return (torch.distributions.kl_divergence(new, old) if reverse
                    else torch.distributions.kl_divergence(old, new))
        return registry_kl, (f"KL from torch.distributions.kl_divergence ({type(old).__name__} "
                             f"has no closed form in the oracle, so a KL registered by the "
                             f"target is trusted)")
    p_old = tuple(x.detach() for x in _policy_parameters(old, family))

    def kl(new, reverse=False):
        p_new = _policy_parameters(new, family)
        return closed_form_kl(family, p_new, p_old, defect=defect) if reverse else \
            closed_form_kl(family, p_old, p_new, defect=defect)
    return kl, (f"the oracle's closed-form {family} KL" if not defect or family == "gaussian"
                else "")


def batch_fisher(agent, params: dict, names: list[str], obs, act, logp_old,
                 adv, *, explicit: bool = True,
                 kl_defect: str = "") -> tuple[Any, np.ndarray, Callable, Callable]:
    """``F`` (Hessian of the batch mean KL) and ``g`` (surrogate gradient) at ``params``.

    The KL is the oracle's own closed form (:func:`closed_form_kl`) from the policy's
    parameters (logits, or mean and std) at ``obs``, never ``torch.distributions.kl_divergence``
    or another method the target could have overridden or registered: a wrong KL in the
    implementation (its Fisher-vector product, its line search) then shows as a wrong step
    instead of cancelling out. Only for a distribution family without a closed form here is
    the torch registry used (``kl_at.source`` says which). ``g`` differentiates the
    implementation's ``log_prob`` (the density is the policy's definition; it is checked by
    the policy-head checks).

    Parameters
    ----------
    agent
        A protocol agent (its parameters are restored afterwards).
    params : dict
        Parameter values to evaluate at (the collection parameters).
    names : list of str
        Actor parameter names, in the order of the flat vectors.
    obs, act, logp_old, adv : torch.Tensor, leading shape (B,)
    explicit : bool
        Build ``F`` as a matrix (d double-backward passes), or return the Fisher-vector product
        ``v -> F v`` (one double-backward pass per call; for large actors).
    kl_defect : str
        A registry name, ``"gaussian_kl_no_square"``: build everything from the defective
        Gaussian KL instead (to name that defect in a failure; ``kl_at.source`` is then "" for a
        non-Gaussian policy).

    Returns
    -------
    F : ndarray, shape (d, d), or callable ndarray (d,) -> ndarray (d,)
        Symmetrized, built row by row with double backward (d = actor parameter count); the
        product form when ``explicit`` is False.
    g : ndarray, shape (d,)
    kl_at, surrogate_at : callable
        Batch mean ``KL(pi_params || pi_theta)`` (nats; ``kl_at(theta, reverse=True)`` gives
        ``KL(pi_theta || pi_params)``) and ``mean(ratio A)`` at a flat actor vector theta of
        shape (d,). ``kl_at.source`` (str) names the KL used.

    Raises
    ------
    KeyError
        A name not among the agent's parameters.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, App. C (the Fisher as the KL Hessian);
    Cover & Thomas (2006), Eq. (2.26); Kullback (1959) (Gaussian KL).
    """
    torch = _torch()
    with parameters_set(agent, params):
        named = agent.named_parameters()
        plist = [named[n] for n in names]
        with torch.no_grad():
            old = agent.distribution(obs)
        kl_of, kl_source = _kl_reference(old, act, kl_defect)
        dist = agent.distribution(obs)
        surr = (torch.exp(dist.log_prob(act) - logp_old) * adv).mean()
        g = np.concatenate([to_numpy(x).ravel() for x in torch.autograd.grad(surr, plist)])
        if explicit:
            kl = kl_of(agent.distribution(obs)).mean()
            gk = torch.cat([x.reshape(-1) for x in torch.autograd.grad(kl, plist,
                                                                       create_graph=True)])
            F = np.zeros((gk.numel(), gk.numel()))
            for i in range(gk.numel()):
                row = torch.autograd.grad(gk[i], plist, retain_graph=True, allow_unused=True)
                F[i] = np.concatenate([to_numpy(x).ravel() if x is not None else np.zeros(p.numel())
                                       for x, p in zip(row, plist, strict=True)])
            F = 0.5 * (F + F.T)

    def fisher_vector_product(v: np.ndarray) -> np.ndarray:
        with parameters_set(agent, params):
            live = [agent.named_parameters()[n] for n in names]
            kl = kl_of(agent.distribution(obs)).mean()
            gk = torch.autograd.grad(kl, live, create_graph=True)
            vt = torch.as_tensor(v, dtype=gk[0].dtype, device=gk[0].device)
            gv = torch.cat([x.reshape(-1) for x in gk]) @ vt
            hv = torch.autograd.grad(gv, live, allow_unused=True)
        return np.concatenate([to_numpy(x).ravel() if x is not None else np.zeros(p.numel())
                               for x, p in zip(hv, live, strict=True)])

    if not explicit:
        F = fisher_vector_product

    def evaluate(flat: np.ndarray, reverse: bool = False) -> tuple[float, float]:
        vals = dict(params)
        off = 0
        for n in names:
            size = params[n].numel()
            vals[n] = torch.as_tensor(flat[off:off + size]).reshape(params[n].shape).to(
                params[n].dtype)
            off += size
        with parameters_set(agent, vals), torch.no_grad():
            d = agent.distribution(obs)
            kl_v = float(kl_of(d, reverse=reverse).mean())
            s_v = float((torch.exp(d.log_prob(act) - logp_old) * adv).mean())
        return kl_v, s_v

    def kl_at(flat: np.ndarray, reverse: bool = False) -> float:
        return evaluate(flat, reverse)[0]

    kl_at.source = kl_source  # type: ignore[attr-defined]
    return F, g, kl_at, (lambda f: evaluate(f)[1])


#: Float32 CG replays of :func:`cg_start_tolerance`, and the factor on the widest angle they
#: show (the band must hold the implementation's own run with room to spare).
CG_START_DRAWS, CG_START_MARGIN = 32, 4.0


def cg_replay(matvec: Callable, b: np.ndarray, n_iters: int, *, x0: np.ndarray | None = None,
              residual_tol: float = 0.0, dtype=np.float64) -> np.ndarray:
    """Conjugate gradient as sb3-contrib writes it: from ``x0``, at most ``n_iters`` iterations,
    stopping once the squared residual is below the absolute ``residual_tol``.

    :func:`pgtheory.references.conjugate_gradient` with that stopping rule; with ``x0 = 0``,
    ``residual_tol = 0`` and float64 this is the textbook CG (Nocedal & Wright 2006, Alg.
    5.2). ``dtype=np.float32`` rounds every vector operation as a float32 torch implementation
    does (``matvec``'s output is rounded too). Shapes: ``b`` (d,), returns (d,) float64.
    """
    return ref.conjugate_gradient(matvec, b, n_iters, x0=x0, residual_tol=residual_tol,
                                  dtype=dtype).x


def _reference_cg(matvec: Callable, b: np.ndarray, n_iters: int) -> np.ndarray:
    """The float64 CG iterate from 0 that the TRPO check replays when the target declares
    ``cg_iters`` and no absolute residual rule: :func:`pgtheory.references.conjugate_gradient`
    stopping once the squared residual is 1e-24 of the initial one (the rule of
    :func:`pgtheory.oracles.components.check_conjugate_gradient`)."""
    return ref.conjugate_gradient(matvec, b, n_iters, relative_tol=1e-24).x


def cg_start_tolerance(matvec: Callable, b: np.ndarray, n_iters: int, x: np.ndarray, *,
                       scale: float, residual_tol: float, seed: int = 0) -> float:
    """Direction tolerance for a truncated CG run in float32 (from a random start when
    ``scale > 0``), against its float64 replay ``x`` from 0.

    ``CG_START_MARGIN * max_i (1 - cos(x_i, x))`` over :data:`CG_START_DRAWS` float32 replays
    :func:`cg_replay` (starts ``x0 ~ scale N(0, I)``; with ``scale = 0`` one replay). A few
    truncated CG iterations amplify float32 rounding (and a random start) by the system's
    condition number: sb3-contrib's 7-iteration CG on a damped Fisher of condition 224 gave
    steps at cos 0.99896 to the float64 replay and 0.99999 to its own float32 replay. A wrong
    direction (the vanilla gradient, a wrong Fisher) lies far outside this band unless the
    rounding itself dominates, which the band then measures.
    """
    rng = np.random.default_rng([7_717, seed])
    worst = 0.0
    nx = float(np.linalg.norm(x))
    for _ in range(CG_START_DRAWS if scale > 0 else 1):
        x0 = scale * rng.standard_normal(b.shape) if scale > 0 else None
        xi = cg_replay(matvec, b, n_iters, x0=x0, residual_tol=residual_tol,
                       dtype=np.float32)
        cos = float(xi @ x) / max(float(np.linalg.norm(xi)) * nx, 1e-300)
        worst = max(worst, 1.0 - cos)
    return min(CG_START_MARGIN * worst, 1.0)


def check_trpo_steps(agent, iterations: list[Iteration], *, hp: dict, direction_tol: float = 1e-3,
                     length_tol: float = 2e-2, max_params: int = 4096) -> CheckResult:
    """Each TRPO actor step against the batch's natural gradient, step length and KL bound.

    With ``F`` the Hessian of the batch mean KL at the collection parameters (exact, autograd
    of the oracle's closed-form KL, :func:`batch_fisher`, so that a wrong KL in the
    implementation does not cancel out),
    ``g`` the surrogate gradient, ``lambda`` = ``cg_damping`` and ``x = (F + lambda I)^{-1} g``
    (or, when the target declares ``cg_iters``, the ``cg_iters``-th conjugate-gradient iterate
    for that system, replayed in float64 with exact Fisher-vector products, which also covers
    actors too large for an explicit ``F``):

    * direction: ``cos(step, x) >= 1 - direction_tol``;
    * length: ``step = beta c^j x`` for an integer ``j >= 0``, ``beta = sqrt(2 delta /
      x^T (F + lambda I) x)``, ``c`` = ``line_search_shrinking_factor``; also accepted when the
      step's own quadratic form is ``1/2 d^T (F + lambda I) d = delta c^(2j)``: a float32 CG
      on an ill-conditioned Fisher (Hopper late in training, ``pgtheory scale``) matches the
      float64 replay's direction to 1e-3 but its ``x^T (F + lambda I) x`` only to about 1%,
      which moves ``beta`` by more than ``length_tol``;
    * a target declaring ``line_search=False`` (the natural policy gradient, Kakade 2001) must
      take the full step (``j = 0``); its KL equals delta only to second order, so neither the
      KL bound nor surrogate improvement is asserted for it;
    * the accepted step has batch mean KL <= delta and improves the surrogate; a rejected step
      (no move) is wrong when the full step was acceptable. Both KL directions are accepted:
      TRPO constrains ``KL(pi_old || pi_new)``, sb3-contrib's line search tests
      ``KL(pi_new || pi_old)``; the two share the quadratic model ``1/2 d^T F d`` and differ only
      at third order (the catalogue lists the reversal, ``kl_direction_reversed``, but it
      cannot be told apart at one step, so it is not asserted here).

    Returns
    -------
    CheckResult
        Skipped for actors with more than ``max_params`` parameters when no ``cg_iters`` is
        declared (the exact solve needs the explicit F).

    Raises
    ------
    Nothing for a faulty implementation.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Sec. 6, App. C; the TRPO entries of
    :mod:`pgtheory.oracles.defects`.
    """
    torch = _torch()
    name = "given_the_batch.trpo_step"
    delta = float(hp["max_kl"])
    lam = float(hp.get("cg_damping", 0.0) or 0.0)
    shrink = float(hp.get("line_search_shrinking_factor", 0.5))
    cg_iters = hp.get("cg_iters")
    line_search = bool(hp.get("line_search", True))
    cg_x0_scale = float(hp.get("cg_x0_scale", 0.0) or 0.0)
    cg_res_tol = float(hp.get("cg_residual_tol", 0.0) or 0.0)
    widest = 0.0
    accepted = rejected = unidentifiable = 0
    max_dev = 0.0
    kl_source = ""
    for k, it in enumerate(iterations):
        r = it.rollout
        obs = torch.as_tensor(r.flat("observations"))
        roles = parameter_roles(agent, obs[:8])
        names = [n for n, role in roles.items() if role == "actor"]
        n_par = sum(it.parameters_at_collection[n].numel() for n in names)
        explicit = n_par <= max_params
        if not explicit and cg_iters is None:
            return CheckResult(name, LAYER, "skip", f"<= {max_params} actor parameters",
                               str(n_par), "the actor is too large for an explicit Fisher and "
                               "the target declares no cg_iters (a truncated CG could be "
                               "replayed with Fisher-vector products)")
        act = torch.as_tensor(r.flat("actions"))
        logp_old = torch.as_tensor(r.flat("log_probs"))
        adv = torch.as_tensor(r.flat("advantages"))
        sub = getattr(it, "actor_indices", None)
        if sub is None and r.valid is not None:  # next-step autoreset slots: no transition
            sub = np.flatnonzero(r.valid_mask().ravel())
        elif sub is not None and r.valid is not None:
            sub = np.asarray(sub, dtype=np.int64)
            sub = sub[r.valid_mask().ravel()[sub]]
        if sub is not None:  # the actor step used a subsample (sb3-contrib sub_sampling_factor)
            sel = torch.as_tensor(np.asarray(sub, dtype=np.int64))
            obs, act, logp_old, adv = obs[sel], act[sel], logp_old[sel], adv[sel]
        if hp.get("normalize_advantage"):
            adv = normalize_advantages(adv, "ddof1")
        fisher_args = (agent, it.parameters_at_collection, names, obs, act, logp_old, adv)
        F, g, kl_at, surr_at = batch_fisher(*fisher_args, explicit=explicit)
        kl_source = kl_at.source

        def natural_direction(F, g=g, explicit=explicit):
            """``(F + lambda I)^-1 g`` (or the replayed CG iterate) and its matvec."""
            if explicit:
                matvec = (F + lam * np.eye(F.shape[0])).__matmul__
            else:
                matvec = (lambda u, F=F: F(u) + lam * u)  # noqa: E731
            if cg_iters is not None:  # the implementation's truncated CG, replayed in float64
                if cg_res_tol > 0:  # its absolute stopping rule
                    return cg_replay(matvec, g, int(cg_iters), residual_tol=cg_res_tol), matvec
                return _reference_cg(matvec, g, int(cg_iters)), matvec
            return np.linalg.lstsq(F + lam * np.eye(F.shape[0]), g, rcond=None)[0], matvec

        theta0 = _flat_params(it.parameters_at_collection, names)
        step = _flat_params(it.parameters_after, names) - theta0
        x, matvec = natural_direction(F)
        xHx = float(x @ matvec(x))
        if not is_finite(step):
            return CheckResult(name, LAYER, "fail", "finite step", "NaN/inf",
                               f"iteration {k}: the actor step contains NaN or inf")
        if xHx <= 0 or np.linalg.norm(g) < 1e-10:
            continue
        beta = math.sqrt(2 * delta / xHx)
        s0 = surr_at(theta0)
        if np.linalg.norm(step) == 0.0:
            full = theta0 + beta * x
            if (max(kl_at(full), kl_at(full, reverse=True)) <= delta * (1 - 1e-3)
                    and surr_at(full) > s0 + 1e-7):
                return CheckResult(name, LAYER, "fail", "an accepted step", "no step",
                                   f"iteration {k}: no step was taken although the full step "
                                   f"(batch KL {kl_at(full):.3g} <= delta {delta}) improves "
                                   f"the surrogate: "
                                   f"{DEFECTS['line_search_never_accepts'].label}")
            rejected += 1
            continue
        cos = float(step @ x) / (np.linalg.norm(step) * np.linalg.norm(x))
        dir_tol = direction_tol
        if cg_iters is not None and cos < 1 - direction_tol:
            # a truncated float32 CG (from a random x0 where declared: sb3-contrib 1e-4 N(0, I))
            # is the float64 replay only up to rounding amplified by the condition number:
            # the band is measured by float32 replays
            dir_tol = max(direction_tol, cg_start_tolerance(
                matvec, g, int(cg_iters), x, scale=cg_x0_scale, residual_tol=cg_res_tol,
                seed=k))
            cos_gx = float(g @ x) / (np.linalg.norm(g) * np.linalg.norm(x))
            if cos_gx >= 1 - dir_tol and cos >= 1 - dir_tol:
                # the rounding band also holds the vanilla gradient: at this conditioning the
                # step's direction cannot tell F^-1 g from g; this iteration is not judged
                unidentifiable += 1
                continue
        if cos < 1 - dir_tol:
            cos_g = float(step @ g) / (np.linalg.norm(step) * np.linalg.norm(g))
            why = (f"reproduced by: {DEFECTS['cg_skipped'].label}" if cos_g > 1 - direction_tol
                   else f"reproduced by: {DEFECTS['trpo_step_against_gradient'].label}"
                   if cos < -1 + direction_tol else "no known defect reproduces it")
            if why.startswith("no known") and "gaussian" in kl_source:
                x_bad = natural_direction(batch_fisher(*fisher_args, explicit=explicit,
                                                       kl_defect="gaussian_kl_no_square")[0])[0]
                if float(step @ x_bad) >= (1 - direction_tol) * float(
                        np.linalg.norm(step) * np.linalg.norm(x_bad)):
                    why = ("reproduced by: a Fisher built from the "
                           f"{DEFECTS['gaussian_kl_no_square'].label}")
            return CheckResult(name, LAYER, "fail", "cos(step, F^-1 g) = 1", f"{cos:.6f}",
                               f"iteration {k}: the actor step is not along the batch's "
                               f"damped natural gradient (F + {lam} I)^-1 g; {why}",
                               tolerance=dir_tol)
        if dir_tol > direction_tol:
            widest = max(widest, dir_tol)
        c = float(step @ x) / float(x @ x)
        if c <= 0:  # within a wide rounding band a step may not project positively on x
            unidentifiable += 1
            continue
        j = math.log(c / beta) / math.log(shrink)
        dev = abs(j - round(j))
        # the step's own length: 1/2 d^T (F + lambda I) d = delta c^(2j) for an integer j
        j_self = 0.5 * math.log(float(step @ matvec(step)) / (2 * delta)) / math.log(shrink)
        if (round(j) < 0 or dev > length_tol) and abs(j_self - round(j_self)) <= length_tol \
                and round(j_self) >= 0:
            j, dev = j_self, abs(j_self - round(j_self))
        if round(j) < 0 or dev > length_tol:
            j2 = math.log(c / (beta / math.sqrt(2))) / math.log(shrink)
            j2_self = j_self + 0.5 * math.log(2) / math.log(shrink)
            halved = any(abs(v - round(v)) <= length_tol and round(v) >= 0 for v in (j2, j2_self))
            why = (f"reproduced by: {DEFECTS['trpo_no_factor_two'].label}" if halved else
                   "longer than the trust-region full step" if j < 0 else
                   "not a backtracking fraction of the full step")
            return CheckResult(name, LAYER, "fail", f"beta * {shrink}^j, beta = {beta:.4g}",
                               f"{c:.4g}", f"iteration {k}: step length {c:.4g} x is not "
                               f"beta c^j (j = {j:.3f}); {why}", tolerance=length_tol)
        max_dev = max(max_dev, dev)
        if not line_search:  # natural policy gradient: the full step, KL = delta to 2nd order
            if round(j) != 0:
                return CheckResult(name, LAYER, "fail", f"the full step beta = {beta:.4g}",
                                   f"{c:.4g}", f"iteration {k}: the target declares no line "
                                   f"search, yet the step is beta c^{round(j)}",
                                   tolerance=length_tol)
            accepted += 1
            continue
        theta1 = theta0 + step
        kl1 = min(kl_at(theta1), kl_at(theta1, reverse=True))
        if kl1 > delta * (1 + 1e-3) + 1e-7:
            return CheckResult(name, LAYER, "fail", f"batch KL <= {delta}", f"{kl1:.4g}",
                               f"iteration {k}: the accepted step has batch KL {kl1:.4g} > "
                               f"delta: {DEFECTS['line_search_ignores_kl'].label}")
        if surr_at(theta1) < s0 - 1e-7:
            return CheckResult(name, LAYER, "fail", "surrogate improvement >= 0",
                               f"{surr_at(theta1) - s0:.3g}",
                               f"iteration {k}: the accepted step decreases the surrogate")
        accepted += 1
    if accepted + rejected == 0 and unidentifiable:
        return CheckResult(name, LAYER, "inconclusive", "a TRPO step along F^-1 g",
                           "not identifiable", f"{unidentifiable} step(s): the float32 "
                           f"rounding band of the truncated CG also holds the vanilla "
                           f"gradient, so the direction cannot be judged at this "
                           f"conditioning", tolerance=direction_tol)
    if accepted + rejected == 0:
        return CheckResult(name, LAYER, "skip", "a TRPO step", "none",
                           "no iteration had a non-zero surrogate gradient")
    return CheckResult(name, LAYER, "pass", "natural-gradient step within delta", "consistent",
                       f"{accepted} accepted steps along (F + {lam} I)^-1 g with length "
                       f"beta c^j (max |j - round(j)| {max_dev:.2g}) and batch KL <= {delta}; "
                       f"{rejected} correctly rejected; Fisher and KL from {kl_source}"
                       + (f"; {unidentifiable} step(s) not judged (rounding band holds the "
                          f"vanilla gradient)" if unidentifiable else "")
                       + (f"; direction tolerance widened to {widest:.2g} by float32 replays "
                          f"of the truncated CG" + (f" from random starts (scale "
                                                    f"{cg_x0_scale:g})" if cg_x0_scale else "")
                          if widest else ""),
                       tolerance=direction_tol)
