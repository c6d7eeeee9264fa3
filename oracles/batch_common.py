"""Shared pieces of the given-the-batch checks (:mod:`pgtheory.oracles.batch`): parameter
roles, the recorded gradients of an iteration, flat numpy views of torch tensors, the positive-
scale match every gradient check uses, and the advantage normalizations of correct libraries.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pgtheory.oracles.protocol import Iteration, Update

__all__ = ["ADVANTAGE_NORMALIZATIONS", "LAYER", "flat_named", "is_finite", "normalize_advantages",
           "parameter_roles", "recorded_gradients", "scaled_match", "to_numpy"]

#: The layer name of every given-the-batch check result.
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


def recorded_gradients(it: Iteration, names: list[str]) -> Iterator[tuple[int, Update, np.ndarray]]:
    """``(j, update, flat applied gradient over names)`` for updates that moved ``names``."""
    for j, up in enumerate(it.updates):
        if any(n in up.gradients for n in names) and len(up.indices):
            yield (j if up.index is None else up.index), up, flat_named(up.gradients, names)


def is_finite(x) -> bool:
    return bool(np.all(np.isfinite(np.asarray(x, dtype=float))))


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def flat_named(named: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([to_numpy(named[n]).ravel() if named.get(n) is not None
                           else np.zeros(0) for n in names])


def scaled_match(got: np.ndarray, ref: np.ndarray, rtol: float) -> tuple[bool, float, float]:
    """Is ``got = c * ref`` with ``c > 0``? Returns (match, c, relative residual)."""
    gn, rn = float(np.linalg.norm(got)), float(np.linalg.norm(ref))
    if rn == 0.0 or gn == 0.0:
        return (gn <= 1e-7 and rn <= 1e-7), 0.0, 0.0 if gn == rn else 1.0
    c = float(got @ ref) / rn**2
    resid = float(np.linalg.norm(got - c * ref)) / gn
    return (c > 0 and resid <= rtol), c, resid


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


def normalize_advantages(adv, how: str):
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
