"""Layer 2, given the batch: what an implementation applied on its own batch, recomputed exactly.

Every check takes the agent and the :class:`~pgtheory.oracles.protocol.Iteration` records it
produced and recomputes, with autograd on the agent's *own* network at the *recorded* parameters and
on the *same* samples, what the update should have been. No MDP model is needed, so these checks
run on any environment (MuJoCo included). Deterministic: tolerances absorb float32 rounding.

* :func:`check_batch_advantages` -- stored advantages against GAE recomputed from the stored
  rewards and flags and the critic at collection time (bootstrapping from the final
  observation on truncation, never on termination).
* :func:`check_batch_returns` -- stored critic targets against advantages + values.
* :func:`check_policy_gradients` -- every recorded optimizer step's actor gradient against the
  gradient of the canonical policy loss (PPO clipped surrogate or ``-mean(A log pi)``, plus
  the entropy bonus) on that minibatch, equal up to a positive scalar (gradient-norm clipping,
  sum vs mean), under every advantage normalization correct libraries use
  (:data:`ADVANTAGE_NORMALIZATIONS`); reports which variant matched.
* :func:`check_value_gradients` -- the critic's gradient against the value losses correct
  libraries use (:data:`VALUE_LOSS_VARIANTS`: squared error; with value clipping,
  Stable-Baselines3's clipped prediction or the PPO2/CleanRL max form); reports which matched.
* :func:`check_trpo_steps` -- the actor step against ``(F + lambda I)^{-1} g`` with ``F`` the
  batch Fisher (Hessian of the mean KL, built by autograd from the oracle's own closed-form
  KL, :func:`closed_form_kl`, not from a KL the implementation registered), its length against
  ``beta c^j`` with ``beta = sqrt(2 delta / x^T (F + lambda I) x)``, the batch KL of the
  accepted step against delta, and the surrogate improvement.

Every expected value is computed by :mod:`pgtheory.references` (losses through their exact
derivative in the log-probabilities or values, chained through the agent's network by autograd);
failure messages name the registry entry of :mod:`pgtheory.oracles.defects` that reproduces
the recorded quantity (``[catalogue: NAME]``).

References: Schulman et al. (2015), arXiv:1502.05477v5, Sec. 6 and App. C; Schulman et al.
(2016), arXiv:1506.02438v6, Eq. (16); Schulman et al. (2017), arXiv:1707.06347v2, Eqs. (7), (9).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pgtheory.oracles.defects import DEFECTS, tried_by
from pgtheory.oracles.protocol import Iteration, Update, parameters_set
from pgtheory.oracles.results import CheckResult

from pgtheory import references as ref

__all__ = ["ADVANTAGE_NORMALIZATIONS", "VALUE_LOSS_VARIANTS", "batch_fisher",
           "canonical_actor_gradient", "check_batch_advantages", "check_batch_returns",
           "check_policy_gradients", "check_trpo_steps", "check_value_gradients",
           "closed_form_kl", "parameter_roles", "parameters_set"]

LAYER = "given_the_batch"


def _torch():
    import torch

    return torch


def parameter_roles(agent, observations) -> dict[str, str]:
    """Classify parameters as ``actor``, ``critic`` or ``shared`` by autograd dependence.

    A parameter is an actor parameter when the log-probabilities depend on it, a critic
    parameter when the values do, shared when both do.

    Returns
    -------
    dict[str, str]
        Parameter name -> role (parameters that neither depends on are absent).

    Raises
    ------
    Nothing: an agent without ``value`` has no critic parameters.
    """
    torch = _torch()
    named = agent.named_parameters()
    names = list(named)
    obs = torch.as_tensor(observations)
    dist = agent.distribution(obs)
    lp = dist.log_prob(dist.sample()).sum()
    ga = torch.autograd.grad(lp, [named[n] for n in names], allow_unused=True)
    gc: tuple = (None,) * len(names)
    if callable(getattr(agent, "value", None)):
        gc = torch.autograd.grad(agent.value(obs).sum(), [named[n] for n in names],
                                 allow_unused=True)
    roles = {}
    for n, a, c in zip(names, ga, gc, strict=True):
        if a is not None and c is not None:
            roles[n] = "shared"
        elif a is not None:
            roles[n] = "actor"
        elif c is not None:
            roles[n] = "critic"
    return roles


def _recorded(it: Iteration, names: list[str]) -> Iterator[tuple[int, Update, np.ndarray]]:
    """``(j, update, flat applied gradient over names)`` for updates that moved ``names``."""
    for j, up in enumerate(it.updates):
        if any(n in up.gradients for n in names) and len(up.indices):
            yield (j if up.index is None else up.index), up, _flat(up.gradients, names)


def _finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


# ------------------------------------------------------------------ advantages
def _critic_values(agent, iteration: Iteration) -> tuple[np.ndarray, np.ndarray] | None:
    torch = _torch()
    if not callable(getattr(agent, "value", None)):
        return None
    r = iteration.rollout
    T, N = r.shape
    with parameters_set(agent, iteration.parameters_at_collection), torch.no_grad():
        v = _np(agent.value(torch.as_tensor(r.flat("observations")))).reshape(T, N)
        nv = _np(agent.value(torch.as_tensor(r.flat("next_observations")))).reshape(T, N)
    return v, nv


#: Rounding allowance of a float32 GAE per unit of summed magnitude (4 x float32 machine
#: epsilon: each TD error ``r + gamma V' - V`` rounds three times, the recursion once).
FLOAT32_GAE_ROUNDING = 4 * float(np.finfo(np.float32).eps)


def check_batch_advantages(agent, iterations: list[Iteration], *, gamma: float,
                           gae_lambda: float = 1.0, rtol: float = 1e-4,
                           atol: float = 1e-4) -> CheckResult:
    """Stored advantages against GAE recomputed on the same rollout with the same critic.

    Parameters
    ----------
    agent
        A protocol agent (``value`` optional: without it the baseline is 0 and the estimate is
        the reward-to-go).
    iterations : list of Iteration
    gamma, gae_lambda : float
        The implementation's declared discount and lambda.
    rtol, atol : float
        Tolerance (reward units), to which a float32 rounding allowance is added per sample:
        ``FLOAT32_GAE_ROUNDING * sum_k (gamma lam)^k (|r| + |V| + gamma |V'|)_{t+k}`` over the
        same episode (each TD error rounds relative to the magnitudes it is computed from;
        on MuJoCo, values of several hundred make this the dominant term, about 1e-3, while on
        the oracle environments it is below 1e-4).

    Returns
    -------
    CheckResult
        On failure the explanation names the defect class that reproduces the stored
        advantages (from :data:`pgtheory.oracles.components.GAE_VARIANTS`, plus bootstrapping from
        the reset observation), or says that none does.

    Raises
    ------
    Nothing for a faulty implementation: its exceptions and NaN are reported as failures.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16); :func:`pgtheory.gae`.
    """
    name = "given_the_batch.advantages"
    checked = 0
    for k, it in enumerate(iterations):
        r = it.rollout
        if not _finite(r.advantages):
            return CheckResult(name, LAYER, "fail", "finite advantages", "NaN/inf",
                               f"iteration {k}: the stored advantages contain NaN or inf")
        try:
            vals = _critic_values(agent, it)
        except Exception as exc:
            return CheckResult(name, LAYER, "fail", "critic values", type(exc).__name__,
                               f"the agent's value() raised {exc!r}")
        T, N = r.shape
        v, nv = vals if vals is not None else (np.zeros((T, N)), np.zeros((T, N)))
        if r.values is not None and vals is not None and not np.allclose(
                r.values, v, rtol=rtol, atol=atol):
            i = np.unravel_index(np.argmax(np.abs(r.values - v)), v.shape)
            return CheckResult(name, LAYER, "fail", f"{v[i]:.6g}", f"{r.values[i]:.6g}",
                               f"iteration {k}: the stored values are not the critic's values "
                               f"at collection time (step {i[0]}, env {i[1]}): values computed "
                               f"after an update, or for the wrong observations")
        inputs = dict(rewards=np.asarray(r.rewards, float), values=v, next_values=nv,
                      terminated=np.asarray(r.terminated, bool),
                      truncated=np.asarray(r.truncated, bool), gamma=gamma, lam=gae_lambda)
        want = ref.gae(**inputs)
        term = inputs["terminated"]
        scale = ref.gae(np.abs(inputs["rewards"]) + np.abs(v)
                       + gamma * np.where(term, 0.0, np.abs(nv)), np.zeros_like(v), term,
                       inputs["truncated"], gamma, gae_lambda, next_values=np.zeros_like(v))
        allowed = atol + FLOAT32_GAE_ROUNDING * scale

        def close(a, b, allowed=allowed) -> bool:
            return bool(np.all(np.abs(a - b) <= allowed + rtol * np.abs(b)))

        got = np.asarray(r.advantages, float)
        checked += got.size
        if close(got, want):
            continue
        why = "no known defect reproduces them"
        for d in tried_by(name, "gae"):
            try:
                if close(got, d.applied_to(ref.gae)(**inputs)):
                    why = f"reproduced by: {d.label}"
                    break
            except Exception:  # a variant that does not apply to these inputs
                continue
        i = np.unravel_index(np.argmax(np.abs(got - want)), got.shape)
        return CheckResult(name, LAYER, "fail", f"{want[i]:.6g}", f"{got[i]:.6g}",
                           f"iteration {k}: stored advantages differ from GAE recomputed on the "
                           f"same batch (worst at step {i[0]}, env {i[1]}); {why}",
                           tolerance=rtol)
    if not checked:
        return CheckResult(name, LAYER, "skip", "a recorded rollout", "none",
                           "no iterations were recorded")
    return CheckResult(name, LAYER, "pass", "GAE of the batch", "equal",
                       f"{checked} stored advantages equal GAE recomputed from the batch "
                       f"(gamma {gamma}, lambda {gae_lambda}, bootstrap on truncation only)",
                       tolerance=rtol)


def check_batch_returns(iterations: list[Iteration], *, rtol: float = 1e-4,
                        atol: float = 1e-4) -> CheckResult:
    """Stored critic targets against ``advantages + values`` (the lambda-return).

    Returns
    -------
    CheckResult
        Skipped when the rollout has no values or returns.

    Raises
    ------
    Nothing for a faulty implementation.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Sec. 5 (the lambda-return as value target).
    """
    name = "given_the_batch.returns"
    n = 0
    for k, it in enumerate(iterations):
        r = it.rollout
        if r.returns is None or r.values is None:
            return CheckResult(name, LAYER, "skip", "values and returns", "not recorded",
                               "the rollout records no critic values or targets")
        want = np.asarray(r.advantages, float) + np.asarray(r.values, float)
        got = np.asarray(r.returns, float)
        if not _finite(got) or not np.allclose(got, want, rtol=rtol, atol=atol):
            norm = (r.advantages - r.advantages.mean()) / (r.advantages.std() + 1e-8) + r.values
            why = (f"reproduced by: {DEFECTS['value_targets_normalized'].label}"
                   if np.allclose(got, norm, rtol=rtol, atol=atol) else
                   "the targets are not advantages + values")
            i = np.unravel_index(np.nanargmax(np.abs(got - want)), got.shape)
            return CheckResult(name, LAYER, "fail", f"{want[i]:.6g}", f"{got[i]:.6g}",
                               f"iteration {k}: value targets differ from advantages + values "
                               f"at step {i[0]}, env {i[1]}; {why}", tolerance=rtol)
        n += got.size
    return CheckResult(name, LAYER, "pass", "advantages + values", "equal",
                       f"{n} value targets equal advantages + values", tolerance=rtol)


# ------------------------------------------------------------------ gradients
def episode_steps(terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray:
    """Steps since the episode began (T, N), for a buffer whose first row follows resets.

    Targets declaring ``gamma_t_weighting`` collect every buffer from fresh resets (see
    :data:`pgtheory.oracles.protocol.HYPERPARAMETERS`), so the count is known from the flags alone.
    """
    T, N = terminated.shape
    e = np.zeros((T, N), int)
    for t in range(1, T):
        e[t] = np.where(terminated[t - 1] | truncated[t - 1], 0, e[t - 1] + 1)
    return e


#: Advantage normalizations that correct libraries apply before the policy loss, each
#: ``key: (domain, ddof, eps_form, eps, label)``. ``domain``: "minibatch" normalizes each
#: optimizer step's minibatch, "batch" the whole rollout once before it is split (one
#: minibatch, as in A2C and TRPO, makes the two the same); ``ddof`` 1 is torch's default
#: (unbiased) std, 0 numpy's (biased); ``eps_form`` "outside" is ``(A - mean) / (std + eps)``,
#: "inside" ``(A - mean) / sqrt(var + eps)``, "max" ``(A - mean) / max(std, eps)``. Sources:
#: Stable-Baselines3 2.x ``ppo/ppo.py`` (``train``: per minibatch, ``advantages.std() + 1e-8``)
#: and ``a2c/a2c.py`` (one batch); CleanRL ``ppo.py`` (``norm_adv``: per minibatch, torch std
#: + 1e-8); OpenAI baselines ``ppo2/model.py`` (per minibatch, numpy std + 1e-8); Spinning Up
#: ``ppo.py`` (``PPOBuffer.get``: whole buffer, biased std from ``mpi_statistics_scalar``, no
#: eps, equal to the biased "+ 1e-8" form within the tolerance unless the std is below
#: 1e-5); rl_games ``a2c_common.py`` and sb3-contrib ``trpo/trpo.py`` (whole batch, torch std +
#: 1e-8); RLlib ``standardized`` (whole train batch, ``max(std, 1e-4)``, numpy std). A wrong
#: epsilon or ddof changes the normalized advantages only by a positive factor, which is visible
#: only next to an entropy bonus (it changes their relative weight) or for a tiny std.
ADVANTAGE_NORMALIZATIONS: dict[str, tuple[str, int, str, float, str]] = {
    "none": ("", 0, "", 0.0, "no advantage normalization"),
    "ddof1": ("minibatch", 1, "outside", 1e-8,
              "unbiased std + 1e-8: Stable-Baselines3 ppo.py, CleanRL ppo.py"),
    "ddof0": ("minibatch", 0, "outside", 1e-8, "biased std + 1e-8: OpenAI baselines ppo2"),
    "ddof1_inside": ("minibatch", 1, "inside", 1e-8, "sqrt(unbiased var + 1e-8)"),
    "ddof0_inside": ("minibatch", 0, "inside", 1e-8, "sqrt(biased var + 1e-8)"),
    "batch_ddof1": ("batch", 1, "outside", 1e-8,
                    "unbiased std + 1e-8: rl_games, sb3-contrib TRPO, Stable-Baselines3 A2C"),
    "batch_ddof0": ("batch", 0, "outside", 1e-8, "biased std (+ 1e-8): Spinning Up ppo.py"),
    "batch_ddof0_max": ("batch", 0, "max", 1e-4, "max(biased std, 1e-4): RLlib standardized"),
    "batch_ddof1_inside": ("batch", 1, "inside", 1e-8, "sqrt(unbiased var + 1e-8)"),
    "batch_ddof0_inside": ("batch", 0, "inside", 1e-8, "sqrt(biased var + 1e-8)"),
}
_DOMAINS = {"": "no advantage normalization", "minibatch": "per-minibatch normalization",
            "batch": "whole-batch normalization"}


def _normalize(adv, how: str):
    """``adv`` normalized by the std convention of ``ADVANTAGE_NORMALIZATIONS[how]`` (the caller
    chooses the domain: a minibatch, or the whole batch before indexing)."""
    torch = _torch()
    _, ddof, form, eps, _ = ADVANTAGE_NORMALIZATIONS[how]
    if not form or adv.numel() < 2:
        return adv
    centred = adv - adv.mean()
    if form == "inside":
        return centred / torch.sqrt(adv.var(unbiased=bool(ddof)) + eps)
    std = adv.std(unbiased=bool(ddof))
    return centred / (torch.clamp(std, min=eps) if form == "max" else std + eps)


def _normalized_minibatches(adv_all, idx) -> list[tuple[list[str], Any]]:
    """The distinct minibatch advantages under every normalization: ``[(keys, tensor)]``."""
    torch = _torch()
    groups: list[tuple[list[str], Any]] = []
    for key, (domain, *_) in ADVANTAGE_NORMALIZATIONS.items():
        a = _normalize(adv_all, key)[idx] if domain == "batch" else _normalize(adv_all[idx], key)
        for keys, b in groups:
            if torch.allclose(a, b, rtol=1e-7, atol=0.0):
                keys.append(key)
                break
        else:
            groups.append(([key], a))
    return groups


def _describe_normalizations(keys) -> str:
    """``keys`` of :data:`ADVANTAGE_NORMALIZATIONS` grouped by domain, in words."""
    parts = []
    for domain, words in _DOMAINS.items():
        conv = [ADVANTAGE_NORMALIZATIONS[k][4] for k in ADVANTAGE_NORMALIZATIONS
                if k in keys and ADVANTAGE_NORMALIZATIONS[k][0] == domain]
        if conv:
            parts.append(words + (f" ({'; '.join(conv)})" if domain else ""))
    return " or ".join(parts)


def _as_grad_weights(g: np.ndarray, like):
    torch = _torch()
    return torch.as_tensor(g, dtype=like.dtype, device=like.device)


def _policy_loss(algorithm: str, logp, logp_old, adv, clip_range: float | None, *,
                 defect: str = ""):
    """A torch scalar whose gradient in ``logp`` (hence, by autograd, in the parameters) is
    the gradient of the reference policy loss (:func:`pgtheory.references.clipped_surrogate_loss`
    or :func:`pgtheory.references.policy_gradient_loss`), or of the registry defect
    ``defect`` of it: ``sum_i logp_i * dL/dlogp_i`` with the weights detached."""
    if algorithm in ("a2c", "reinforce") or clip_range is None:
        reference, kw = ref.policy_gradient_loss_gradient, {}
        family = "policy_gradient_loss"
    else:
        reference, family = ref.clipped_surrogate_loss_gradient, "clipped_surrogate_loss"
        kw = dict(old_log_probs=_np(logp_old), clip_range=float(clip_range))
    d = DEFECTS[defect] if defect else None
    if d is not None and family in d.references:
        reference = d.applied_to(reference)
    g = reference(log_probs=_np(logp), advantages=_np(adv), **kw)
    return (logp * _as_grad_weights(g, logp)).sum()


#: Registry defects :func:`canonical_actor_gradient` can replay (key -> diagnosis label): the
#: policy-loss defects of :mod:`pgtheory.oracles.defects` that this check exposes, and the two
#: entropy-bonus defects, replayed with the implementation's own entropy.
POLICY_DEFECTS: dict[str, str] = {
    d.name: d.label for d in DEFECTS.values()
    if LAYER + ".policy_gradient" in d.checks
    and (set(d.references) & {"clipped_surrogate_loss", "policy_gradient_loss"}
         or d.name in ("entropy_wrong_sign", "entropy_bonus_missing"))}


def _flat(named: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([_np(named[n]).ravel() if named.get(n) is not None
                           else np.zeros(0) for n in names])


def _scaled_match(got: np.ndarray, ref: np.ndarray, rtol: float) -> tuple[bool, float, float]:
    """Is ``got = c * ref`` with ``c > 0``? Returns (match, c, relative residual)."""
    gn, rn = float(np.linalg.norm(got)), float(np.linalg.norm(ref))
    if rn == 0.0 or gn == 0.0:
        return (gn <= 1e-7 and rn <= 1e-7), 0.0, 0.0 if gn == rn else 1.0
    c = float(got @ ref) / rn**2
    resid = float(np.linalg.norm(got - c * ref)) / gn
    return (c > 0 and resid <= rtol), c, resid


def canonical_actor_gradient(agent, names: list[str], obs, act, logp_old, adv, algorithm: str,
                             hp: dict, *, normalization: str = "none",
                             defect: str = "") -> np.ndarray:
    """Gradient of the canonical policy loss in the actor parameters ``names``, at the agent's
    current parameters.

    Parameters
    ----------
    agent
        A protocol agent.
    names : list of str
        Actor parameter names (order of the flat result).
    obs, act, logp_old, adv : torch.Tensor, leading shape (B,)
        Minibatch observations, actions, stored old log-probabilities, stored advantages.
    algorithm : str
        ``"ppo"`` (clipped surrogate with ``hp["clip_range"]``) or ``"a2c"``/``"reinforce"``
        (``-mean(A log pi)``); minus ``hp["ent_coef"]`` times the mean entropy.
    hp : dict
    normalization : str
        A key of :data:`ADVANTAGE_NORMALIZATIONS`: the std convention applied to ``adv`` as
        given (for a whole-batch normalization, normalize the batch and pass the minibatch's
        share with ``"none"``).
    defect : str
        A key of :data:`POLICY_DEFECTS` (a registry name) to compute a known defective loss
        instead.

    Returns
    -------
    ndarray, shape (sum of the parameters' sizes,)
        float64.

    Raises
    ------
    KeyError
        A name not among the agent's parameters, or an unknown normalization.

    References
    ----------
    Schulman et al. (2017), arXiv:1707.06347v2, Eqs. (7), (9); Mnih et al. (2016),
    arXiv:1602.01783v2.
    """
    torch = _torch()
    named = agent.named_parameters()
    dist = agent.distribution(obs)
    a = _normalize(adv, normalization)
    loss = _policy_loss(algorithm, dist.log_prob(act), logp_old, a, hp.get("clip_range"),
                        defect=defect)
    ent_coef = float(hp.get("ent_coef", 0.0) or 0.0)
    if defect == "entropy_wrong_sign":
        loss = loss + ent_coef * dist.entropy().mean()
    elif defect != "entropy_bonus_missing":
        loss = loss - ent_coef * dist.entropy().mean()
    grads = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
    return np.concatenate([_np(g).ravel() if g is not None else np.zeros(named[n].numel())
                           for n, g in zip(names, grads, strict=True)])


def _reproducing_defect(agent, names, args, advs, got, hp, rtol) -> str:
    """Which :data:`POLICY_DEFECTS` loss (under any normalization in ``advs``) reproduces
    ``got``; ``args`` = (obs, act, logp_old, algorithm), ``advs`` the normalized minibatch
    advantages. Names every defect that does (at ratio 1 some coincide)."""
    algorithm = args[-1]
    found = []  # every defect that reproduces it (at ratio 1 some coincide)
    for defect, label in POLICY_DEFECTS.items():
        if defect in ("entropy_wrong_sign", "entropy_bonus_missing") and not hp.get("ent_coef"):
            continue
        for a in advs:
            alt = canonical_actor_gradient(agent, names, *args[:3], a, algorithm, hp,
                                           defect=defect)
            if _scaled_match(got, alt, rtol)[0]:
                found.append(label)
                break
    return ("reproduced by: " + " or by: ".join(found) if found
            else "no known defect reproduces it")


def check_policy_gradients(agent, iterations: list[Iteration], *, algorithm: str, hp: dict,
                           rtol: float = 1e-3) -> CheckResult:
    """Every recorded actor gradient against the canonical loss's gradient on its minibatch.

    The canonical loss at the recorded ``parameters_before`` is PPO's clipped surrogate
    (``algorithm="ppo"``; Schulman et al. 2017, arXiv:1707.06347v2, Eq. (7)) or
    ``-mean(A log pi)`` (A2C, REINFORCE; Mnih et al. 2016, arXiv:1602.01783v2, Alg. S3),
    minus ``ent_coef`` times the mean entropy (Eq. (9) of the PPO paper), with the
    implementation's stored advantages. Accepted variants, the ones correct libraries use:

    * advantage normalization: none, or any entry of :data:`ADVANTAGE_NORMALIZATIONS`: per
      minibatch (Stable-Baselines3 ``ppo/ppo.py``, CleanRL ``ppo.py``, OpenAI baselines
      ``ppo2/model.py``) or over the whole batch before it is split (Spinning Up ``ppo.py``,
      rl_games, RLlib), std biased (numpy) or unbiased (torch), epsilon added to the std,
      under the square root or as a floor;
    * any positive scale of the whole gradient: a sum instead of a mean, a constant factor,
      and global gradient-norm clipping (``torch.nn.utils.clip_grad_norm_`` multiplies every
      gradient by the same ``min(1, max_norm / ||g||) > 0``; Andrychowicz et al. 2021,
      arXiv:2006.05990v1);
    * the clipped objective written as ``max(-r A, -clip(r) A)`` (CleanRL) or with the ratio
      as ``exp(-(neglogp - old_neglogp))`` (baselines) is the same function, hence the same
      gradient.

    Not accepted, because they are estimators of nothing: min and max swapped, the ratio
    inverted, the clip on the advantage, clipping that never acts, the loss or the entropy
    bonus with the wrong sign (:data:`POLICY_DEFECTS`, named in the failure). Parameters shared
    with the critic are excluded (the value loss also moves them).

    Parameters
    ----------
    agent, iterations
        See :mod:`pgtheory.oracles.protocol`.
    algorithm : str
    hp : dict
        The target's hyperparameters (``clip_range``, ``ent_coef``, ``normalize_advantage``,
        ``gamma_t_weighting``). ``normalize_advantage`` True admits the normalized variants
        only, False only "none", absent any.
    rtol : float
        Relative residual ``||g - c g_ref|| / ||g||`` allowed (float32 rounding).

    Returns
    -------
    CheckResult
        The pass explanation names the variants that matched every update ("matched: ...",
        several when they coincide on this data: without an entropy bonus every std convention
        gives the same direction) and the scale; a mismatch names the defect class whose loss
        reproduces the recorded gradient, or says none does. Declaring ``normalize_advantage``
        and doing the opposite fails.

    Raises
    ------
    Nothing for a faulty implementation.

    References
    ----------
    Schulman et al. (2017), arXiv:1707.06347v2, Eqs. (7), (9); Andrychowicz et al. (2021),
    arXiv:2006.05990v1 (advantage normalization, gradient clipping).
    """
    torch = _torch()
    name = "given_the_batch.policy_gradient"
    declared = hp.get("normalize_advantage")
    n_checked, matched, scales = 0, set(), []
    clip = hp.get("clip_range") if algorithm == "ppo" else None
    weighting = bool(hp.get("gamma_t_weighting", False))
    n_samples = n_clipped = 0  # samples whose ratio left [1 - eps, 1 + eps]
    for k, it in enumerate(iterations):
        r = it.rollout
        obs_all = torch.as_tensor(r.flat("observations"))
        try:
            roles = parameter_roles(agent, obs_all[:8])
        except Exception as exc:
            return CheckResult(name, LAYER, "fail", "a distribution", type(exc).__name__,
                               f"the agent's distribution() raised {exc!r}")
        names = [n for n, role in roles.items() if role == "actor"]
        act_all = torch.as_tensor(r.flat("actions"))
        lp_old_all = torch.as_tensor(r.flat("log_probs"))
        adv_all = torch.as_tensor(r.flat("advantages"))
        w_all = torch.as_tensor(float(hp["gamma"]) ** episode_steps(
            np.asarray(r.terminated, bool), np.asarray(r.truncated, bool)).ravel(),
            dtype=adv_all.dtype)
        if weighting:  # REINFORCE's exact discounted gradient: term t weighted by gamma^t
            adv_all, w_all = adv_all * w_all, 1.0 / w_all
        for j, up, got in _recorded(it, names):
            if not _finite(got):
                return CheckResult(name, LAYER, "fail", "finite gradient", "NaN/inf",
                                   f"iteration {k}, update {j}: the applied gradient contains "
                                   f"NaN or inf")
            idx = torch.as_tensor(up.indices)
            args = (obs_all[idx], act_all[idx], lp_old_all[idx], algorithm)
            groups = _normalized_minibatches(adv_all, idx)
            with parameters_set(agent, up.parameters_before):
                if clip is not None:
                    with torch.no_grad():
                        ratio = torch.exp(agent.distribution(obs_all[idx]).log_prob(act_all[idx])
                                          - lp_old_all[idx])
                    n_samples += int(ratio.numel())
                    n_clipped += int(((ratio - 1).abs() > clip).sum())
                hits = {}  # every variant that reproduces this gradient (they can coincide)
                resid_of = {}
                for keys, a in groups:
                    ref = canonical_actor_gradient(agent, names, *args[:3], a, algorithm, hp)
                    ok, c, resid = _scaled_match(got, ref, rtol)
                    for key in keys:
                        resid_of[key] = resid
                        if ok:
                            hits[key] = c
                if not hits:
                    how = "ddof1" if declared else "none"
                    why = _reproducing_defect(agent, names, args, [a for _, a in groups], got,
                                              hp, rtol)
                    alt = canonical_actor_gradient(agent, names, *args[:3],
                                                   adv_all[idx] * w_all[idx], algorithm, hp,
                                                   normalization=how)
                    if _scaled_match(got, alt, rtol)[0]:
                        why = ("reproduced by: the gamma^t weighting "
                               + ("declared but not applied" if weighting else
                                  "applied although not declared (gamma_t_weighting)")
                               + " [catalogue: gamma_t_weighting_mismatch]")
                    return CheckResult(
                        name, LAYER, "fail", "gradient of the canonical loss",
                        f"relative residual {resid_of[how]:.3g}",
                        f"iteration {k}, update {j} ({up.indices.size} samples): the applied "
                        f"actor gradient is not a positive multiple of the canonical "
                        f"{algorithm} loss gradient on the same minibatch under any accepted "
                        f"advantage normalization; {why}", tolerance=rtol)
            normalized = set(hits) - {"none"}
            allowed = (set(hits) if declared is None else normalized if declared
                       else {"none"} & set(hits))
            if not allowed:
                return CheckResult(name, LAYER, "fail", f"normalize_advantage={declared}",
                                   _describe_normalizations(hits),
                                   f"iteration {k}, update {j}: the gradient matches "
                                   f"{_describe_normalizations(hits)} although the target "
                                   f"declares normalize_advantage={declared}", tolerance=rtol)
            # report the variants consistent with every update (first update: all it allows)
            matched = set(allowed) if n_checked == 0 else (matched & allowed) or matched
            n_checked += 1
            scales.append(hits[sorted(allowed)[0]])
    if not n_checked:
        return CheckResult(name, LAYER, "skip", "recorded actor gradients", "none",
                           "no optimizer step with actor gradients was recorded (a TRPO actor "
                           "step is checked by given_the_batch.trpo_step)")
    sc = np.array(scales)
    clipping = ""
    if clip is not None:
        clipping = (f"; the ratio left [1 - {clip}, 1 + {clip}] for {n_clipped} of {n_samples} "
                    f"minibatch samples" + (", so defects that act only under clipping (min/max "
                    "swapped, clip bounds) cannot show here" if n_clipped == 0 else ""))
    return CheckResult(name, LAYER, "pass", "gradient of the canonical loss", "matched",
                       f"{n_checked} applied actor gradients match the canonical {algorithm} "
                       f"loss; matched: {_describe_normalizations(matched)} (scale "
                       f"{sc.min():.3g}..{sc.max():.3g}, 1 = mean reduction without clipping)"
                       f"{clipping}", tolerance=rtol)


#: The value losses correct libraries use, per sample (the reduction over the minibatch, a
#: 1/2 and ``vf_coef`` are positive scales the check absorbs); ``V_clip = V_old + clip(V -
#: V_old, -eps, eps)`` with ``V_old`` the values stored at collection and ``eps`` =
#: ``clip_range_vf``. Huber / smooth-L1 (Stable-Baselines3's DQN) is not among them: no
#: mainstream PPO or A2C uses it for the critic by default, and its threshold is not a declared
#: hyperparameter.
VALUE_LOSS_VARIANTS: dict[str, str] = {
    "squared": "unclipped squared error (V - R)^2 (Stable-Baselines3 a2c.py and ppo.py without "
               "clip_range_vf, CleanRL ppo.py without clip_vloss)",
    "clipped_prediction": "clipped prediction (V_clip - R)^2 (Stable-Baselines3 ppo/ppo.py)",
    "max": "max((V - R)^2, (V_clip - R)^2) (OpenAI baselines ppo2/model.py, CleanRL ppo.py "
           "with clip_vloss)",
}

def _value_loss(kind: str, v, target, v_old, clip, *, defect: str = "", advantages=None):
    """Per-sample torch terms whose mean has, in ``v``, the gradient of the reference value
    loss :func:`pgtheory.references.value_loss` of form ``kind`` (a key of
    :data:`VALUE_LOSS_VARIANTS`), or of its registry defect ``defect``:
    ``v_i * B dL/dv_i`` with the weights detached."""
    reference, extra = ref.value_loss_gradient, {}
    if defect:
        d = DEFECTS[defect]
        reference = d.applied_to(reference)
        if "advantages" in d.inputs:
            extra["advantages"] = _np(advantages).ravel()
    g = reference(values=_np(v).ravel(), values_old=None if v_old is None else
                  _np(v_old).ravel(), returns=_np(target).ravel(),
                  clip_range=None if clip is None else float(clip), form=kind, **extra)
    return v * _as_grad_weights(g.reshape(tuple(v.shape)) * g.size, v)


def check_value_gradients(agent, iterations: list[Iteration], *, hp: dict,
                          rtol: float = 1e-3) -> CheckResult:
    """Every recorded critic gradient against the value loss's gradient on its minibatch.

    Accepted, up to a positive scalar (``vf_coef``, a 1/2, a sum instead of a mean, global
    gradient-norm clipping), the value losses of :data:`VALUE_LOSS_VARIANTS`:

    * without ``clip_range_vf``: the squared error ``(V - R)^2`` (Mnih et al. 2016,
      arXiv:1602.01783v2, Alg. S3; Stable-Baselines3 ``a2c/a2c.py``, ``F.mse_loss``);
    * with ``clip_range_vf`` = eps and ``V_clip = V_old + clip(V - V_old, -eps, eps)``:
      Stable-Baselines3's clipped prediction ``(V_clip - R)^2`` (``ppo/ppo.py``: ``values_pred
      = old_values + clamp(values - old_values, -clip_range_vf, clip_range_vf)``,
      ``F.mse_loss(returns, values_pred)``), or the pessimistic ``max((V - R)^2, (V_clip -
      R)^2)`` of OpenAI baselines ``ppo2/model.py`` and CleanRL ``ppo.py`` (``clip_vloss``;
      Engstrom et al. 2020, arXiv:2005.12729v1, Sec. 3, "value function clipping";
      Andrychowicz et al. 2021, arXiv:2006.05990v1). Where no sample's clip acts the three
      coincide.

    Declaring ``clip_range_vf`` while the gradient matches only the unclipped loss fails (the
    declared clipping is not applied). Not accepted and named when they reproduce the gradient
    (the registry entries of :mod:`pgtheory.oracles.defects` whose ``checks`` name this check):
    advantages as targets, the sign flipped, min instead of max, the clipped branch without
    gradient.

    Returns
    -------
    CheckResult
        The pass explanation names the variant that matched every update ("matched: ...") and
        on how many samples the value clip acted. Inconclusive when ``clip_range_vf`` is
        declared but the rollout records no values at collection (the clipped references
        cannot be built).

    Raises
    ------
    Nothing for a faulty implementation.

    References
    ----------
    Mnih et al. (2016), arXiv:1602.01783v2, Alg. S3; Engstrom et al. (2020),
    arXiv:2005.12729v1, Sec. 3; Andrychowicz et al. (2021), arXiv:2006.05990v1 (value
    clipping).
    """
    torch = _torch()
    name = "given_the_batch.value_gradient"
    clip = hp.get("clip_range_vf")
    n_checked, matched = 0, set()
    n_samples = n_acted = 0  # samples whose |V - V_old| exceeded the value clip
    for k, it in enumerate(iterations):
        r = it.rollout
        if r.returns is None or not callable(getattr(agent, "value", None)):
            return CheckResult(name, LAYER, "skip", "a critic", "none",
                               "the agent has no critic or the rollout records no targets")
        obs_all = torch.as_tensor(r.flat("observations"))
        roles = parameter_roles(agent, obs_all[:8])
        names = [n for n, role in roles.items() if role == "critic"]
        ret_all = torch.as_tensor(r.flat("returns"))
        if clip is not None and r.values is None:
            return CheckResult(name, LAYER, "inconclusive", "old values", "not recorded",
                               f"the target declares clip_range_vf={clip} but the rollout "
                               f"records no values at collection, so the clipped value "
                               f"losses cannot be rebuilt")
        v_old_all = torch.as_tensor(r.flat("values")) if r.values is not None else None
        kinds = ["squared", "clipped_prediction", "max"] if clip is not None else ["squared"]
        for j, up, got in _recorded(it, names):
            if not _finite(got):
                return CheckResult(name, LAYER, "fail", "finite gradient", "NaN/inf",
                                   f"iteration {k}, update {j}: the critic gradient contains "
                                   f"NaN or inf")
            idx = torch.as_tensor(up.indices)
            v_old = v_old_all[idx] if v_old_all is not None else None

            def grad_of(target, kind, defect="", advantages=None, idx=idx, up=up, names=names,
                        obs_all=obs_all, v_old=v_old):
                with parameters_set(agent, up.parameters_before):
                    named = agent.named_parameters()
                    v = agent.value(obs_all[idx])
                    loss = _value_loss(kind, v, target, v_old, clip, defect=defect,
                                       advantages=advantages).mean()
                    g = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
                return np.concatenate([_np(x).ravel() if x is not None
                                       else np.zeros(named[n].numel())
                                       for n, x in zip(names, g, strict=True)])

            ret = ret_all[idx]
            hits, resid = set(), {}
            for kind in kinds:
                ok, _, resid[kind] = _scaled_match(got, grad_of(ret, kind), rtol)
                if ok:
                    hits.add(kind)
            allowed = hits & ({"clipped_prediction", "max"} if clip is not None
                              else {"squared"})
            if clip is not None:
                with parameters_set(agent, up.parameters_before), torch.no_grad():
                    moved = (agent.value(obs_all[idx]) - v_old).abs() > clip
                n_samples += int(moved.numel())
                n_acted += int(moved.sum())
            if hits and not allowed:
                return CheckResult(name, LAYER, "fail", f"clip_range_vf={clip}",
                                   VALUE_LOSS_VARIANTS["squared"],
                                   f"iteration {k}, update {j}: the critic gradient matches only "
                                   f"the unclipped squared error although the target declares "
                                   f"clip_range_vf={clip}: the declared value clipping is not "
                                   f"applied", tolerance=rtol)
            if not hits:
                why = "no known defect reproduces it"
                adv = torch.as_tensor(r.flat("advantages"))[idx]
                for d in tried_by(name, "value_loss"):
                    clipped_only = bool(d.switches) and set(d.switches) <= {
                        "combine", "clip_bounds", "clipped_branch_gradient"}
                    if clipped_only and len(kinds) == 1:
                        continue
                    if any(_scaled_match(got, grad_of(ret, kind, d.name, adv), rtol)[0]
                           for kind in (["max"] if clipped_only else kinds)):
                        why = f"reproduced by: {d.label}"
                        break
                best = min(resid, key=resid.get)
                return CheckResult(name, LAYER, "fail", "gradient of the value loss",
                                   f"relative residual {resid[best]:.3g}",
                                   f"iteration {k}, update {j}: the critic gradient is not a "
                                   f"positive multiple of the gradient of any accepted value "
                                   f"loss ({', '.join(kinds)}); {why}", tolerance=rtol)
            matched = set(allowed) if n_checked == 0 else (matched & allowed) or matched
            n_checked += 1
    if not n_checked:
        return CheckResult(name, LAYER, "skip", "recorded critic gradients", "none",
                           "no optimizer step with critic gradients was recorded")
    acted = ""
    if clip is not None and n_samples:
        acted = (f"; the value clip acted on {n_acted} of {n_samples} minibatch samples"
                 + (", so the clipped forms coincide with the unclipped one here"
                    if n_acted == 0 else ""))
    return CheckResult(name, LAYER, "pass", "gradient of the value loss", "matched",
                       f"{n_checked} applied critic gradients match the value loss on their "
                       f"minibatches; matched: "
                       f"{' or '.join(VALUE_LOSS_VARIANTS[m] for m in sorted(matched))}{acted}",
                       tolerance=rtol)


# ------------------------------------------------------------------------ TRPO
def _flat_params(values: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([_np(values[n]).ravel() for n in names])


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
        g = np.concatenate([_np(x).ravel() for x in torch.autograd.grad(surr, plist)])
        if explicit:
            kl = kl_of(agent.distribution(obs)).mean()
            gk = torch.cat([x.reshape(-1) for x in torch.autograd.grad(kl, plist,
                                                                       create_graph=True)])
            F = np.zeros((gk.numel(), gk.numel()))
            for i in range(gk.numel()):
                row = torch.autograd.grad(gk[i], plist, retain_graph=True, allow_unused=True)
                F[i] = np.concatenate([_np(x).ravel() if x is not None else np.zeros(p.numel())
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
        return np.concatenate([_np(x).ravel() if x is not None else np.zeros(p.numel())
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
        if sub is not None:  # the actor step used a subsample (sb3-contrib sub_sampling_factor)
            sel = torch.as_tensor(np.asarray(sub, dtype=np.int64))
            obs, act, logp_old, adv = obs[sel], act[sel], logp_old[sel], adv[sel]
        if hp.get("normalize_advantage"):
            adv = _normalize(adv, "ddof1")
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
        if not _finite(step):
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
