"""The implementations as oracle targets (:mod:`pgtheory.oracles.protocol`).

``pgtheory audit ppo`` and ``pytest --pg-target ppo`` resolve to :func:`target` of the algorithm
file. The component functions exposed are the :mod:`pgtheory.implementations.core` functions the
algorithm calls, adapted only in argument types (the checks pass numpy arrays to the
advantage estimators).
"""

from __future__ import annotations

import dataclasses

from pgtheory.implementations import core

__all__ = ["ImplementationTarget", "target"]

#: Hyperparameter names the oracles read, from the configuration fields of the same meaning.
_DECLARED = ("gamma", "gae_lambda", "normalize_advantage", "clip_range", "clip_range_vf",
             "ent_coef", "vf_coef", "max_kl", "cg_damping", "cg_iters",
             "line_search_shrinking_factor", "target_kl", "gamma_t_weighting")


def _late(name: str):
    """``core.NAME`` looked up at call time, so the check sees what the agent calls now."""
    def call(*args, **kwargs):
        return getattr(core, name)(*args, **kwargs)

    call.__name__ = name
    return call


_COMMON_COMPONENTS = {k: _late(k) for k in ("categorical_entropy", "categorical_kl",
                                            "gaussian_log_prob", "gaussian_entropy",
                                            "gaussian_kl")}

_COMPONENTS = {
    "reinforce": {"discounted_returns": core.discounted_returns},
    "a2c": {"gae": core.gae},
    "ppo": {"gae": core.gae, **{k: _late(k) for k in ("clipped_surrogate_loss",
                                                  "clipped_value_loss", "kl_k1", "kl_k2",
                                                  "kl_k3")}},
    "trpo": {"gae": core.gae, **{k: _late(k) for k in ("conjugate_gradient",
                                                   "backtracking_line_search")}},
}


#: Settings changed for the oracle environments, whose buffers are 4 envs x 16 steps (64 samples)
#: instead of thousands: PPO keeps minibatches of 16 samples rather than 2, TRPO's critic
#: likewise. Everything else is the algorithm's default configuration.
ORACLE_SETTINGS = {"reinforce": {}, "a2c": {}, "ppo": {"n_minibatches": 4},
                   "trpo": {"critic_minibatches": 4}}


class ImplementationTarget:
    """One algorithm file's agent with one configuration, as a protocol target.

    Parameters
    ----------
    agent_class : type
        A subclass of :class:`pgtheory.implementations.common.Agent`.
    config : CommonConfig subclass

    Notes
    -----
    The oracles size the rollouts (``num_envs``, ``num_steps``); every other setting is the
    configuration's. Actions may be discrete or continuous (``action_kinds``), so the suite also
    runs the given-the-batch layer on its LQR environment.
    """

    action_kinds = ("discrete", "continuous")

    def __init__(self, agent_class, config) -> None:
        if getattr(config, "kl_penalty", False):
            from pgtheory.implementations.common import ConfigError

            raise ConfigError("kl_penalty: the oracles check PPO's clipped objective; the "
                              "adaptive-KL-penalty variant is not an oracle target (its beta "
                              "changes between updates), expected kl_penalty=False")
        self.agent_class, self.config = agent_class, config
        self.algorithm = agent_class.algorithm
        self.name = self.algorithm
        fields = {f.name for f in dataclasses.fields(config)}
        self.hyperparameters = {k: getattr(config, k) for k in _DECLARED
                                if k in fields and getattr(config, k) is not None}
        if self.algorithm != "ppo":
            self.hyperparameters.pop("clip_range_vf", None)
        if self.algorithm == "trpo":
            self.hyperparameters["line_search"] = not getattr(config, "npg", False)
        # A2C and REINFORCE never normalize advantages: say so, so that doing it is a finding
        self.hyperparameters.setdefault("normalize_advantage", False)
        self.components = {**_COMMON_COMPONENTS, **_COMPONENTS[self.algorithm]}
        c = config
        self.model_description = (
            f"implementations/{self.algorithm}.py, "
            + (f"actor and critic MLPs {list(c.hidden_sizes)} {c.activation}" if c.hidden_sizes
               else "linear actor and critic (affine in the observation)")
            + (", no critic" if not getattr(c, "baseline", True) else "")
            + (", NPG (no line search)" if getattr(c, "npg", False) else ""))
        from pgtheory.oracles.protocol import untested_notes

        self.notes = untested_notes(self.hyperparameters, self.algorithm)
        if c.normalize_obs or c.scale_rewards:
            self.notes.append("normalize_obs / scale_rewards: the wrappers belong to "
                              "`pgtheory train` envs; the oracle envs are used as given")

    def make_agent(self, env_fn, *, seed: int, num_envs: int, num_steps: int):
        return self.agent_class(env_fn, self.config, seed=seed, num_envs=num_envs,
                                num_steps=num_steps, record=True)

    def __repr__(self) -> str:
        return f"ImplementationTarget({self.agent_class.__name__}, {self.config!r})"


def target(algorithm: str, **overrides) -> ImplementationTarget:
    """The target for ``algorithm`` in {"reinforce", "a2c", "trpo", "ppo"}: the default
    configuration with :data:`ORACLE_SETTINGS` and then ``overrides`` applied.

    Raises
    ------
    ConfigError
        Unknown algorithm or setting.
    """
    from pgtheory.implementations import ALGORITHMS
    from pgtheory.implementations.common import ConfigError

    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: expected one of {sorted(ALGORITHMS)}, received "
                          f"{algorithm!r}")
    agent_class, config_class = ALGORITHMS[algorithm]
    settings = {**ORACLE_SETTINGS[algorithm], **overrides}
    return ImplementationTarget(agent_class, config_class().replace(**settings))


def reinforce() -> ImplementationTarget:
    """``target("reinforce")``: the audit's built-in ``reinforce``."""
    return target("reinforce")


def a2c() -> ImplementationTarget:
    """``target("a2c")``: the audit's built-in ``a2c``."""
    return target("a2c")


def trpo() -> ImplementationTarget:
    """``target("trpo")``: the audit's built-in ``trpo``."""
    return target("trpo")


def npg() -> ImplementationTarget:
    """``target("trpo", npg=True)``: natural policy gradient, the full step without line search."""
    return target("trpo", npg=True)


def ppo() -> ImplementationTarget:
    """``target("ppo")``: the audit's built-in ``ppo``."""
    return target("ppo")
