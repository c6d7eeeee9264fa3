"""The random-configuration campaign: seeded *correct* configurations that users could set.

The false-alarm records of the power run (:mod:`pgtheory.lab.power`) measure the unmodified
targets in their default configurations only. Users run other configurations; a check that
fails on a correct configuration is a false alarm all the same. This module draws such
configurations, reproducibly, over what users set, for seven families:

``sb3-ppo``, ``sb3-a2c``
    Stable-Baselines3 ``PPO`` / ``A2C``, built by a factory on the oracle env as the
    ``sb3:MODULE:FACTORY`` targets are (:class:`pgtheory.oracles.sb3.SB3Target`);
``sb3-trpo``
    sb3-contrib ``TRPO``, likewise;
``ppo``, ``a2c``, ``trpo``, ``reinforce``
    this project's implementations (:func:`pgtheory.implementations.targets.target` with the drawn
    settings as overrides).

A configuration is a plain JSON-serializable dict, a pure function of ``(family, index)``
through ``numpy.random.default_rng([family_hash, index])`` where ``family_hash`` is the first 8
bytes of the SHA-256 of the family name (stable across processes and machines, unlike
Python's ``hash``). For the Stable-Baselines3 families it holds the keyword arguments of the
model class (``policy_kwargs["activation_fn"]`` as the name ``"tanh"`` or ``"relu"``); for the
project's families, the configuration fields (:mod:`implementations`).

What is drawn (:data:`RANGES` states the numeric ranges)
---------------------------------------------------------
* networks: 0, 1 or 2 hidden layers of 8 to 64 units (0: linear, ``net_arch=[]`` for
  Stable-Baselines3, which also gets separate ``pi``/``vf`` sizes), tanh or ReLU, orthogonal
  initialization on or off, the initial log-std of Gaussian policies;
* learning rate log-uniform in [1e-4, 3e-3]; gamma uniform in [0.8, 0.99]; GAE lambda
  uniform in [0.8, 1] (exactly 1 a fifth of the time; REINFORCE is Monte Carlo, lambda 1);
* advantage normalization on and off; entropy coefficient (0 in 40% of draws, else
  log-uniform in [1e-4, 0.05]); value coefficient uniform in [0.25, 1];
* gradient-norm clipping log-uniform in [0.1, 10] (off in 25% of draws where the
  implementation allows it);
* PPO: clip range in [0.1, 0.3], value clipping ``clip_range_vf`` (in 35% of draws, in
  [0.1, 1] reward units), ``target_kl`` early stopping (35%, log-uniform in [0.005, 0.05]),
  epochs and minibatch sizes;
* A2C: RMSprop (its smoothing constant or epsilon) or Adam;
* TRPO: the KL radius (log-uniform in [0.001, 0.05]), conjugate-gradient iterations (5 to 25)
  and damping (log-uniform in [0.01, 0.2]), line-search factor and length, critic epochs and
  minibatches, sb3-contrib's ``sub_sampling_factor`` (2 in 20% of draws), the project's NPG
  switch (15%);
* rollout lengths: ``n_steps`` of the Stable-Baselines3 models. The project's implementations
  are asked for 4 envs x 16 steps by the oracles whatever their ``num_steps`` (it only sizes
  ``pgtheory train`` runs), so it is not drawn.

Audit time
----------
The training checks run a fixed budget of env steps (:class:`pgtheory.oracles.suite.SuiteConfig`,
9600), so the audit's time grows with the optimizer steps per env step. Epochs are drawn
after the rollout and minibatch sizes, bounded so that :func:`optimizer_steps` (the
optimizer steps over the training budget) stays within :data:`OPTIMIZER_STEP_BUDGET` of the
family: about 1.25 times the default configuration's, whose full audit takes 35 to 40 s on
one core. The goal is every full audit under 120 s.

Reproducing a record: ``pgtheory audit campaign:FAMILY:INDEX --seed SEED`` (the power run
audits configuration ``i`` at seed ``i``, see :mod:`pgtheory.lab.power`).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
from pgtheory.oracles.protocol import TargetProtocolError

__all__ = ["FAMILIES", "OPTIMIZER_STEP_BUDGET", "RANGES", "TRAIN_STEPS", "campaign_target",
           "describe", "draw_configuration", "optimizer_steps", "parse_spec"]

#: The configuration families, in the order the scorecard lists them.
FAMILIES = ("sb3-ppo", "sb3-a2c", "sb3-trpo", "ppo", "a2c", "trpo", "reinforce")

#: Numeric ranges of the drawn settings (inclusive; values are rounded to 4 significant
#: digits, which stays inside them).
RANGES: dict[str, tuple[float, float]] = {
    "learning_rate": (1e-4, 3e-3),
    "gamma": (0.8, 0.99),
    "gae_lambda": (0.8, 1.0),
    "ent_coef": (1e-4, 0.05),        # or exactly 0
    "vf_coef": (0.25, 1.0),
    "max_grad_norm": (0.1, 10.0),    # or None (the project's implementations)
    "clip_range": (0.1, 0.3),
    "clip_range_vf": (0.1, 1.0),     # or None
    "target_kl": (0.005, 0.05),      # PPO early stopping, or None
    "max_kl": (0.001, 0.05),         # TRPO radius (sb3-contrib: target_kl)
    "cg_damping": (0.01, 0.2),
    "cg_iters": (5, 25),             # sb3-contrib: cg_max_steps
    "line_search_shrinking_factor": (0.5, 0.9),
    "line_search_max_iter": (5, 15),
    "rmsprop_alpha": (0.9, 0.99),
    "rms_prop_eps": (1e-5, 1e-3),
    "log_std_init": (-1.0, 0.5),
    "hidden_width": (8, 64),
    "hidden_depth": (0, 2),
    "n_epochs": (1, 10),
}

#: Env steps of the audit's training checks (:class:`pgtheory.oracles.suite.SuiteConfig`).
TRAIN_STEPS = 9600

#: Most optimizer steps over :data:`TRAIN_STEPS` per family (the defaults': sb3-ppo 1500,
#: sb3-a2c 1920, sb3-trpo 750 critic steps, ppo 6000, a2c and reinforce 150, trpo 12000
#: critic steps; the project's implementations collect 64 samples per iteration).
OPTIMIZER_STEP_BUDGET: dict[str, int] = {
    "sb3-ppo": 1920, "sb3-a2c": 1920, "sb3-trpo": 1500, "ppo": 7200, "a2c": 150,
    "trpo": 12000, "reinforce": 150,
}

#: Samples per iteration the oracles ask of the project's implementations (4 envs x 16 steps).
_OURS_BATCH = 64


def _family_hash(family: str) -> int:
    return int.from_bytes(hashlib.sha256(family.encode()).digest()[:8], "little")


def _r(x: float) -> float:
    """Round to 4 significant digits (readable configurations, still inside the ranges)."""
    return float(f"{float(x):.4g}")


class _Draw:
    """Thin helpers over one generator, so every draw reads as a line of the configuration."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def uniform(self, key: str) -> float:
        lo, hi = RANGES[key]
        return _r(min(max(self.rng.uniform(lo, hi), lo), hi))

    def loguniform(self, key: str) -> float:
        lo, hi = RANGES[key]
        return _r(min(max(math.exp(self.rng.uniform(math.log(lo), math.log(hi))), lo), hi))

    def integer(self, key: str) -> int:
        lo, hi = RANGES[key]
        return int(self.rng.integers(int(lo), int(hi) + 1))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    def hidden(self) -> list[int]:
        depth = self.choice([0, 1, 1, 2, 2])
        return [self.choice([8, 16, 32, 64]) for _ in range(depth)]

    def lam(self) -> float:
        return 1.0 if self.chance(0.2) else self.uniform("gae_lambda")

    def ent_coef(self) -> float:
        return 0.0 if self.chance(0.4) else self.loguniform("ent_coef")


def _sb3_policy_kwargs(d: _Draw) -> dict:
    pi = d.hidden()
    net_arch: Any = pi
    if d.chance(0.3):  # separate actor and critic sizes
        net_arch = {"pi": pi, "vf": d.hidden()}
    return {"net_arch": net_arch, "activation_fn": d.choice(["tanh", "relu"]),
            "ortho_init": d.chance(0.8), "log_std_init": d.uniform("log_std_init")}


def _most(family: str, partial: dict, key: str, cap: int) -> int:
    """Largest ``partial[key]`` in ``[1, cap]`` keeping :func:`optimizer_steps` in budget."""
    per_unit = optimizer_steps(family, {**partial, key: 1})
    return max(1, min(cap, OPTIMIZER_STEP_BUDGET[family] // per_unit))


def _sb3_ppo(d: _Draw) -> dict:
    n_steps = d.choice([32, 64, 128, 256])
    batch_size = d.choice([b for b in (8, 16, 32, 64, 128) if b <= n_steps])
    most = _most("sb3-ppo", {"n_steps": n_steps, "batch_size": batch_size}, "n_epochs", 10)
    return {"learning_rate": d.loguniform("learning_rate"), "n_steps": n_steps,
            "batch_size": batch_size, "n_epochs": int(d.rng.integers(1, most + 1)),
            "gamma": d.uniform("gamma"), "gae_lambda": d.lam(),
            "clip_range": d.uniform("clip_range"),
            "clip_range_vf": d.uniform("clip_range_vf") if d.chance(0.35) else None,
            "normalize_advantage": d.chance(0.5), "ent_coef": d.ent_coef(),
            "vf_coef": d.uniform("vf_coef"), "max_grad_norm": d.loguniform("max_grad_norm"),
            "target_kl": d.loguniform("target_kl") if d.chance(0.35) else None,
            "policy_kwargs": _sb3_policy_kwargs(d)}


def _sb3_a2c(d: _Draw) -> dict:
    rms = d.chance(0.6)
    return {"learning_rate": d.loguniform("learning_rate"), "n_steps": d.choice([5, 8, 16, 32]),
            "gamma": d.uniform("gamma"), "gae_lambda": d.lam(), "ent_coef": d.ent_coef(),
            "vf_coef": d.uniform("vf_coef"), "max_grad_norm": d.loguniform("max_grad_norm"),
            "use_rms_prop": rms,
            "rms_prop_eps": d.loguniform("rms_prop_eps") if rms else 1e-5,
            "normalize_advantage": d.chance(0.3), "policy_kwargs": _sb3_policy_kwargs(d)}


def _sb3_trpo(d: _Draw) -> dict:
    n_steps = d.choice([64, 128, 256])
    batch_size = d.choice([b for b in (32, 64, 128, 256) if b <= n_steps])
    most = _most("sb3-trpo", {"n_steps": n_steps, "batch_size": batch_size},
                 "n_critic_updates", 20)
    return {"learning_rate": d.loguniform("learning_rate"), "n_steps": n_steps,
            "batch_size": batch_size, "gamma": d.uniform("gamma"),
            "cg_max_steps": d.integer("cg_iters"), "cg_damping": d.loguniform("cg_damping"),
            "line_search_shrinking_factor": d.uniform("line_search_shrinking_factor"),
            "line_search_max_iter": d.integer("line_search_max_iter"),
            "n_critic_updates": int(d.rng.integers(1, most + 1)), "gae_lambda": d.lam(),
            "normalize_advantage": d.chance(0.5), "target_kl": d.loguniform("max_kl"),
            "sub_sampling_factor": 2 if d.chance(0.2) else 1,
            "policy_kwargs": _sb3_policy_kwargs(d)}


def _ours_common(d: _Draw, *, lam: bool = True) -> dict:
    out = {"hidden_sizes": d.hidden(), "activation": d.choice(["tanh", "relu"]),
           "ortho_init": d.chance(0.8), "log_std_init": d.uniform("log_std_init"),
           "learning_rate": d.loguniform("learning_rate"), "gamma": d.uniform("gamma")}
    if lam:
        out["gae_lambda"] = d.lam()
    out["max_grad_norm"] = None if d.chance(0.25) else d.loguniform("max_grad_norm")
    return out


def _ours_ppo(d: _Draw) -> dict:
    out = _ours_common(d)
    n_minibatches = d.choice([1, 2, 4, 8])  # minibatches of 64, 32, 16, 8 samples
    most = _most("ppo", {"n_minibatches": n_minibatches}, "n_epochs", 10)
    out.update(n_minibatches=n_minibatches, n_epochs=int(d.rng.integers(1, most + 1)),
               clip_range=d.uniform("clip_range"),
               clip_range_vf=d.uniform("clip_range_vf") if d.chance(0.35) else None,
               normalize_advantage=d.chance(0.5), ent_coef=d.ent_coef(),
               vf_coef=d.uniform("vf_coef"),
               target_kl=d.loguniform("target_kl") if d.chance(0.35) else None,
               anneal_lr=d.chance(0.5))
    return out


def _ours_a2c(d: _Draw) -> dict:
    out = _ours_common(d)
    opt = d.choice(["rmsprop", "adam"])
    out.update(optimizer=opt, ent_coef=d.ent_coef(), vf_coef=d.uniform("vf_coef"))
    if opt == "rmsprop":
        out["rmsprop_alpha"] = d.uniform("rmsprop_alpha")
    return out


def _ours_trpo(d: _Draw) -> dict:
    out = _ours_common(d)
    critic_minibatches = d.choice([1, 2, 4, 8])
    most = _most("trpo", {"critic_minibatches": critic_minibatches}, "critic_epochs", 20)
    out.update(max_kl=d.loguniform("max_kl"), cg_iters=d.integer("cg_iters"),
               cg_damping=d.loguniform("cg_damping"),
               line_search_shrinking_factor=d.uniform("line_search_shrinking_factor"),
               line_search_max_iter=d.integer("line_search_max_iter"),
               npg=d.chance(0.15), normalize_advantage=d.chance(0.5),
               critic_epochs=int(d.rng.integers(1, most + 1)),
               critic_minibatches=critic_minibatches)
    return out


def _ours_reinforce(d: _Draw) -> dict:
    out = _ours_common(d, lam=False)
    out.update(baseline=d.chance(0.7), gamma_t_weighting=d.chance(0.3), ent_coef=d.ent_coef(),
               vf_coef=d.uniform("vf_coef"))
    return out


_DRAWERS = {"sb3-ppo": _sb3_ppo, "sb3-a2c": _sb3_a2c, "sb3-trpo": _sb3_trpo, "ppo": _ours_ppo,
            "a2c": _ours_a2c, "trpo": _ours_trpo, "reinforce": _ours_reinforce}


def draw_configuration(family: str, index: int) -> dict:
    """The ``index``-th random correct configuration of ``family``.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`.
    index : int
        Non-negative; the power run uses ``1..N``.

    Returns
    -------
    dict
        JSON-serializable settings (see the module docstring), the same for the same arguments
        in every process.

    Raises
    ------
    TargetProtocolError
        Unknown family or a negative / non-integer index.
    """
    if family not in FAMILIES:
        raise TargetProtocolError(f"campaign family: expected one of {list(FAMILIES)}, "
                                  f"received {family!r}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
        raise TargetProtocolError(f"campaign index: expected a non-negative integer, received "
                                  f"{index!r}")
    rng = np.random.default_rng([_family_hash(family), int(index)])
    return _DRAWERS[family](_Draw(rng))


def optimizer_steps(family: str, config: dict) -> int:
    """Optimizer steps of ``config`` over the audit's training budget (:data:`TRAIN_STEPS`).

    For the TRPO families the critic's steps (the actor's one step per iteration is not an
    optimizer step). Used to bound audit time (:data:`OPTIMIZER_STEP_BUDGET`).

    Raises
    ------
    TargetProtocolError
        Unknown family.
    """
    c = config
    if family == "sb3-ppo":
        iters = math.ceil(TRAIN_STEPS / c["n_steps"])
        return iters * c["n_epochs"] * math.ceil(c["n_steps"] / c["batch_size"])
    if family == "sb3-a2c":
        return math.ceil(TRAIN_STEPS / c["n_steps"])
    if family == "sb3-trpo":
        iters = math.ceil(TRAIN_STEPS / c["n_steps"])
        return iters * c["n_critic_updates"] * math.ceil(c["n_steps"] / c["batch_size"])
    iters = math.ceil(TRAIN_STEPS / _OURS_BATCH)
    if family == "ppo":
        return iters * c["n_epochs"] * c["n_minibatches"]
    if family == "trpo":
        return iters * c["critic_epochs"] * c["critic_minibatches"]
    if family in ("a2c", "reinforce"):
        return iters
    raise TargetProtocolError(f"campaign family: expected one of {list(FAMILIES)}, received "
                              f"{family!r}")


def describe(config: dict) -> str:
    """The configuration as one line of sorted JSON (how reports and records show it)."""
    return json.dumps(config, sort_keys=True, separators=(", ", ": "))


def parse_spec(spec: str) -> tuple[str, int]:
    """``"campaign:FAMILY:INDEX"`` -> ``(FAMILY, INDEX)``.

    Raises
    ------
    TargetProtocolError
        Not of that form, unknown family, or INDEX not a non-negative integer.
    """
    parts = spec.split(":") if isinstance(spec, str) else []
    if len(parts) != 3 or parts[0] != "campaign":
        raise TargetProtocolError(f"target spec: expected 'campaign:FAMILY:INDEX' with FAMILY "
                                  f"among {list(FAMILIES)}, received {spec!r}")
    family, index = parts[1], parts[2]
    if family not in FAMILIES:
        raise TargetProtocolError(f"target spec {spec!r}: expected FAMILY among "
                                  f"{list(FAMILIES)}, received {family!r}")
    if not index.isdigit():
        raise TargetProtocolError(f"target spec {spec!r}: expected INDEX a non-negative "
                                  f"integer, received {index!r}")
    return family, int(index)


def _sb3_factory(family: str, config: dict):
    import torch
    from pgtheory.oracles.sb3 import import_library

    cls = (import_library("sb3_contrib").TRPO if family == "sb3-trpo"
           else getattr(import_library("stable_baselines3"), family.split("-")[1].upper()))
    kwargs = json.loads(json.dumps(config))  # a private copy: the factory is called repeatedly
    pk = kwargs.pop("policy_kwargs")
    pk["activation_fn"] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}[pk["activation_fn"]]

    def factory(env):
        return cls("MlpPolicy", env, policy_kwargs=dict(pk), device="cpu", **kwargs)

    factory.__name__ = f"campaign_{family.replace('-', '_')}"
    return factory


def campaign_target(spec: str):
    """The protocol target of ``"campaign:FAMILY:INDEX"``: the drawn configuration, built.

    Its ``model_description`` ends with the configuration (``describe``), so a report or a
    record of it shows what was audited; ``configuration`` holds the dict.

    Parameters
    ----------
    spec : str
        ``campaign:FAMILY:INDEX`` with FAMILY in :data:`FAMILIES`.

    Returns
    -------
    SB3Target or ImplementationTarget

    Raises
    ------
    TargetProtocolError
        Malformed spec (the message names the form expected and what was received), the
        library is missing, or the configuration is rejected by the implementation.
    """
    family, index = parse_spec(spec)
    config = draw_configuration(family, index)
    if family.startswith("sb3-"):
        from pgtheory.oracles.sb3 import SB3Target

        target = SB3Target(_sb3_factory(family, config), name=spec)
    else:
        from pgtheory.implementations.common import ConfigError
        from pgtheory.implementations.targets import target as implementation_target

        try:
            target = implementation_target(family, **config)
        except ConfigError as exc:
            raise TargetProtocolError(f"target spec {spec!r}: the implementation rejected the "
                                      f"drawn configuration ({exc})") from exc
        target.name = spec
    target.configuration = config
    target.model_description = (f"{target.model_description}; campaign configuration "
                                f"{describe(config)}")
    return target


def resolve_target(spec: str | None):
    """Any TARGET string the command line accepts: ``campaign:FAMILY:INDEX`` here, every other
    form through :func:`pgtheory.oracles.audit.resolve_target`.

    Raises
    ------
    TargetProtocolError
        As :func:`campaign_target` or :func:`pgtheory.oracles.audit.resolve_target`.
    """
    if isinstance(spec, str) and spec.startswith("campaign:"):
        return campaign_target(spec)
    from pgtheory.oracles.audit import resolve_target as resolve_library_target

    return resolve_library_target(spec)
