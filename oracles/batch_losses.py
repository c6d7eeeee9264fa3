"""Given-the-batch checks of the actor and critic gradients an implementation applied: each
recorded gradient against the gradient of the reference loss (:mod:`pgtheory.references`)
on the same minibatch, under the advantage normalizations and value-loss forms correct
libraries use (re-exported by :mod:`pgtheory.oracles.batch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pgtheory.oracles.batch_common import (
    ADVANTAGE_NORMALIZATIONS,
    LAYER,
    is_finite,
    normalize_advantages,
    parameter_roles,
    recorded_gradients,
    scaled_match,
    to_numpy,
)
from pgtheory.oracles.defects import DEFECTS, tried_by
from pgtheory.oracles.protocol import Iteration, parameters_set
from pgtheory.oracles.results import CheckResult

from pgtheory import references as ref

__all__ = ["POLICY_DEFECTS", "VALUE_LOSS_VARIANTS", "canonical_actor_gradient",
           "check_policy_gradients", "check_value_gradients", "episode_steps"]


def _torch():
    import torch

    return torch


def episode_steps(terminated: np.ndarray, truncated: np.ndarray,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """Steps since the episode began (T, N), for a buffer whose first row follows resets.

    Targets declaring ``gamma_t_weighting`` collect every buffer from fresh resets (see
    :data:`pgtheory.oracles.protocol.HYPERPARAMETERS`), so the count is known from the flags alone.
    ``valid`` (T, N), optional: next-step autoreset slots (False) are not episode steps; the
    slot after one starts its episode at 0 (its own count, meaningless, is 0 too).
    """
    T, N = terminated.shape
    ended = np.asarray(terminated, bool) | np.asarray(truncated, bool)
    if valid is not None:
        ended = ended | ~np.asarray(valid, bool)
    e = np.zeros((T, N), int)
    for t in range(1, T):
        e[t] = np.where(ended[t - 1], 0, e[t - 1] + 1)
    if valid is not None:
        e = np.where(valid, e, 0)
    return e


_DOMAINS = {"": "no advantage normalization", "minibatch": "per-minibatch normalization",
            "batch": "whole-batch normalization"}


def _normalized_minibatches(adv_all, idx, valid=None) -> list[tuple[list[str], Any]]:
    """The distinct minibatch advantages under every normalization: ``[(keys, tensor)]``.
    ``valid`` (flat bool tensor, optional): the samples a whole-batch normalization uses
    (next-step autoreset slots excluded, :attr:`~pgtheory.oracles.protocol.Rollout.valid`)."""
    torch = _torch()
    groups: list[tuple[list[str], Any]] = []
    for key, (domain, *_) in ADVANTAGE_NORMALIZATIONS.items():
        if domain == "batch" and valid is not None:
            full = adv_all.clone()
            full[valid] = normalize_advantages(adv_all[valid], key)
            a = full[idx]
        else:
            a = (normalize_advantages(adv_all, key)[idx] if domain == "batch"
                 else normalize_advantages(adv_all[idx], key))
        for keys, b in groups:
            if torch.allclose(a, b, rtol=1e-7, atol=0.0):
                keys.append(key)
                break
        else:
            groups.append(([key], a))
    return groups


def _trains_on_reset_slots(agent, names, up, obs_all, act_all, lp_old_all, adv_all,
                           algorithm, hp, got, rtol) -> bool:
    """Whether the canonical loss on the minibatch *with* the next-step autoreset slots the
    checks left out (``up.excluded_indices``) reproduces ``got`` (normalized over all of it)."""
    torch = _torch()
    if up.excluded_indices is None or not len(up.excluded_indices):
        return False
    idx = torch.as_tensor(np.concatenate([up.indices, up.excluded_indices]))
    with parameters_set(agent, up.parameters_before):
        return any(scaled_match(got, canonical_actor_gradient(
            agent, names, obs_all[idx], act_all[idx], lp_old_all[idx], a, algorithm, hp),
            rtol)[0] for _, a in _normalized_minibatches(adv_all, idx))


def _reset_slot_diagnosis(up) -> str:
    n = len(up.excluded_indices)
    return (f"reproduced by: the loss trains on the {n} next-step autoreset slot(s) of this "
            f"minibatch (the step after an episode end, whose action the env ignored): "
            f"{DEFECTS['next_step_autoreset'].label}")


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
        kw = dict(old_log_probs=to_numpy(logp_old), clip_range=float(clip_range))
    d = DEFECTS[defect] if defect else None
    if d is not None and family in d.references:
        reference = d.applied_to(reference)
    g = reference(log_probs=to_numpy(logp), advantages=to_numpy(adv), **kw)
    return (logp * _as_grad_weights(g, logp)).sum()


#: Registry defects :func:`canonical_actor_gradient` can replay (key -> diagnosis label): the
#: policy-loss defects of :mod:`pgtheory.oracles.defects` that this check exposes, and the two
#: entropy-bonus defects, replayed with the implementation's own entropy.
POLICY_DEFECTS: dict[str, str] = {
    d.name: d.label for d in DEFECTS.values()
    if LAYER + ".policy_gradient" in d.checks
    and (set(d.references) & {"clipped_surrogate_loss", "policy_gradient_loss"}
         or d.name in ("entropy_wrong_sign", "entropy_bonus_missing"))}


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
    a = normalize_advantages(adv, normalization)
    loss = _policy_loss(algorithm, dist.log_prob(act), logp_old, a, hp.get("clip_range"),
                        defect=defect)
    ent_coef = float(hp.get("ent_coef", 0.0) or 0.0)
    if defect == "entropy_wrong_sign":
        loss = loss + ent_coef * dist.entropy().mean()
    elif defect != "entropy_bonus_missing":
        loss = loss - ent_coef * dist.entropy().mean()
    grads = torch.autograd.grad(loss, [named[n] for n in names], allow_unused=True)
    return np.concatenate([to_numpy(g).ravel() if g is not None else np.zeros(named[n].numel())
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
            if scaled_match(got, alt, rtol)[0]:
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
        valid = None if r.valid is None else torch.as_tensor(r.valid_mask().ravel())
        w_all = torch.as_tensor(float(hp["gamma"]) ** episode_steps(
            np.asarray(r.terminated, bool), np.asarray(r.truncated, bool),
            r.valid).ravel(), dtype=adv_all.dtype)
        if weighting:  # REINFORCE's exact discounted gradient: term t weighted by gamma^t
            adv_all, w_all = adv_all * w_all, 1.0 / w_all
        for j, up, got in recorded_gradients(it, names):
            if not is_finite(got):
                return CheckResult(name, LAYER, "fail", "finite gradient", "NaN/inf",
                                   f"iteration {k}, update {j}: the applied gradient contains "
                                   f"NaN or inf")
            idx = torch.as_tensor(up.indices)
            args = (obs_all[idx], act_all[idx], lp_old_all[idx], algorithm)
            groups = _normalized_minibatches(adv_all, idx, valid)
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
                    ok, c, resid = scaled_match(got, ref, rtol)
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
                    if scaled_match(got, alt, rtol)[0]:
                        why = ("reproduced by: the gamma^t weighting "
                               + ("declared but not applied" if weighting else
                                  "applied although not declared (gamma_t_weighting)")
                               + " [catalogue: gamma_t_weighting_mismatch]")
                    elif _trains_on_reset_slots(agent, names, up, obs_all, act_all,
                                                lp_old_all, adv_all, algorithm, hp, got, rtol):
                        why = _reset_slot_diagnosis(up)
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
            extra["advantages"] = to_numpy(advantages).ravel()
    g = reference(values=to_numpy(v).ravel(), values_old=None if v_old is None else
                  to_numpy(v_old).ravel(), returns=to_numpy(target).ravel(),
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
        for j, up, got in recorded_gradients(it, names):
            if not is_finite(got):
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
                return np.concatenate([to_numpy(x).ravel() if x is not None
                                       else np.zeros(named[n].numel())
                                       for n, x in zip(names, g, strict=True)])

            ret = ret_all[idx]
            hits, resid = set(), {}
            for kind in kinds:
                ok, _, resid[kind] = scaled_match(got, grad_of(ret, kind), rtol)
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
                    if any(scaled_match(got, grad_of(ret, kind, d.name, adv), rtol)[0]
                           for kind in (["max"] if clipped_only else kinds)):
                        why = f"reproduced by: {d.label}"
                        break
                else:
                    if up.excluded_indices is not None and len(up.excluded_indices):
                        both = torch.as_tensor(np.concatenate([up.indices,
                                                               up.excluded_indices]))
                        v_both = v_old_all[both] if v_old_all is not None else None
                        if any(scaled_match(got, grad_of(ret_all[both], kind, idx=both,
                                                         v_old=v_both), rtol)[0]
                               for kind in kinds):
                            why = _reset_slot_diagnosis(up)
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
