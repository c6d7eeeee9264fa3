"""Stable-Baselines3 / sb3-contrib models as protocol targets (what ``pgtheory audit`` runs).

:class:`SB3Target` wraps a *factory* ``FACTORY(env) -> model`` that builds a configured
``stable_baselines3.PPO``, ``stable_baselines3.A2C`` or ``sb3_contrib.TRPO`` (or a subclass, with
any ``net_arch``, custom rollout buffer or env wrappers) on the oracle env it is given. Nothing
in the model's code is changed; the adapter observes it from outside:

* **Ground truth** -- the env handed to the factory is wrapped in :class:`GroundTruth`, which
  logs every transition exactly as the oracle env produced it (observation, action, reward,
  ``terminated``, ``truncated``, the true next observation). Wrappers the user adds sit outside
  it, so a wrapper that hides truncation or rewrites the final observation is seen as a
  disagreement between what the model stored and what happened.
* **What the model stored** -- a callback copies the rollout buffer at the end of collection
  (observations, actions as sampled, log-probabilities, values, advantages, returns) before
  ``train()`` flattens it.
* **Updates** -- :class:`pgtheory.oracles.protocol.StepRecorder` hooks ``policy.optimizer``; the
buffer
  instance's ``_get_samples`` is wrapped so each optimizer step knows its minibatch indices
  (Stable-Baselines3 flattens ``(T, N)`` env-major, ``n * T + t``; the protocol's order is
  ``t * N + n``). TRPO's actor step (written into ``param.data``, not through an optimizer) is
  the difference of the parameters before and after the iteration.

One iteration is one ``model.learn(n_steps * n_envs, reset_num_timesteps=False)`` call, so
subclasses that override ``learn``, ``collect_rollouts`` or ``train`` are honoured.

Limitations (stated, checked): the model must use the single env it is given (``n_envs == 1``;
``TargetProtocolError`` otherwise); observation wrappers that change observations (e.g.
``VecNormalize``) are not supported; dict observations are not supported.

References: Raffin et al. (2021), "Stable-Baselines3: Reliable Reinforcement Learning
Implementations", JMLR 22(268); the rollout-buffer layout and callbacks as of SB3 2.x.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from pgtheory.oracles.protocol import (
    Iteration,
    Rollout,
    StepRecorder,
    TargetProtocolError,
    import_user_module,
    snapshot,
    untested_notes,
)

__all__ = ["BUILTIN_DEFAULTS", "GroundTruth", "SB3Agent", "SB3Target", "builtin_factory",
           "load_sb3_target"]

#: The audit's sizing of the library defaults: only the rollout length changes (the defaults'
#: 2048-step buffers would make the repeated trials of the in-expectation checks slow); every
#: algorithmic hyperparameter stays at the library default.
BUILTIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "PPO": {"n_steps": 128},   # batch_size 64 (default): 2 minibatches x 10 epochs
    "A2C": {},                  # n_steps 5 (default)
    "TRPO": {"n_steps": 128},  # batch_size 128 (default): one critic minibatch
}


def import_library(module: str):
    """``importlib.import_module(module)``, a missing library raised as TargetProtocolError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TargetProtocolError(f"auditing a Stable-Baselines3 target needs {module!r} "
                                  f"(pip install 'pgtheory[sb3]'): {exc}") from exc


class GroundTruth(gym.Wrapper):
    """Log every transition of the wrapped env as it happened (the audit's ground truth).

    ``log`` holds tuples ``(obs, action, reward, terminated, truncated, next_obs)``;
    ``next_obs`` is the episode's final observation when it ended. :meth:`clear` empties it.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.log: list[tuple] = []
        self._obs = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._obs = np.array(obs, copy=True)
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.log.append((self._obs, np.array(action, copy=True), float(reward), bool(terminated),
                         bool(truncated), np.array(obs, copy=True)))
        self._obs = np.array(obs, copy=True)
        return obs, reward, terminated, truncated, info

    def clear(self) -> None:
        self.log = []


def _algorithm_of(model) -> str:
    sb3 = import_library("stable_baselines3")
    if isinstance(model, sb3.PPO):
        return "ppo"
    if isinstance(model, sb3.A2C):
        return "a2c"
    contrib = importlib.util.find_spec("sb3_contrib")
    if contrib is not None and isinstance(model, importlib.import_module("sb3_contrib").TRPO):
        return "trpo"
    raise TargetProtocolError(f"factory: expected a stable_baselines3 PPO or A2C or an "
                              f"sb3_contrib TRPO model (or a subclass), received "
                              f"{type(model).__name__}")


def _hyperparameters(model, algorithm: str) -> dict:
    hp: dict[str, Any] = {"gamma": float(model.gamma), "gae_lambda": float(model.gae_lambda),
                          "normalize_advantage": bool(getattr(model, "normalize_advantage",
                                                              False))}
    if algorithm in ("ppo", "a2c"):
        hp["ent_coef"] = float(model.ent_coef)
        hp["vf_coef"] = float(model.vf_coef)
    if algorithm == "ppo":
        hp["clip_range"] = float(model.clip_range(1.0))
        if model.clip_range_vf is not None:
            hp["clip_range_vf"] = float(model.clip_range_vf(1.0))
        hp["target_kl"] = model.target_kl
    if algorithm == "trpo":
        # sb3-contrib runs cg_max_steps CG iterations (the check replays them) from
        # x0 = 1e-4 N(0, I), stopping when |r|^2 < 1e-10 (sb3_contrib/common/utils.py,
        # conjugate_gradient_solver), on every sub_sampling_factor-th sample of the batch
        # (sb3_contrib/trpo/trpo.py, train())
        hp.update(max_kl=float(model.target_kl), cg_damping=float(model.cg_damping),
                  line_search_shrinking_factor=float(model.line_search_shrinking_factor),
                  ent_coef=0.0, cg_iters=int(model.cg_max_steps), cg_x0_scale=1e-4,
                  cg_residual_tol=1e-10,
                  sub_sampling_factor=int(getattr(model, "sub_sampling_factor", 1)))
    return hp


def _probe_env() -> gym.Env:
    from pgtheory.oracles.envs import TabularEnv, probe_mdp

    return gym.wrappers.TimeLimit(TabularEnv(probe_mdp(5)), 6)


class SB3Target:
    """A protocol target built from ``FACTORY(env) -> Stable-Baselines3 model``.

    Parameters
    ----------
    factory : callable
        ``factory(env)`` returns a PPO, A2C or TRPO model (or subclass) using ``env``.
    name : str
        Shown in reports.

    Raises
    ------
    TargetProtocolError
        The factory raises, returns something that is not a supported model, or the model
        does not use the single env it was given.
    """

    def __init__(self, factory: Callable, *, name: str) -> None:
        if not callable(factory):
            raise TargetProtocolError(f"factory: expected a callable FACTORY(env), received "
                                      f"{type(factory).__name__}")
        self.factory, self.name = factory, name
        model = self._build(_probe_env(), seed=0)[0]
        self.algorithm = _algorithm_of(model)
        self.hyperparameters = _hyperparameters(model, self.algorithm)
        self.notes = untested_notes(self.hyperparameters, self.algorithm)
        self.action_kinds: tuple[str, ...] = ("discrete",)
        try:  # the same factory on the LQR env exercises the diagonal-Gaussian path
            from pgtheory.oracles.envs import lqr_env_fn

            self._build(lqr_env_fn()(), seed=0)
            self.action_kinds = ("discrete", "continuous")
        except TargetProtocolError as exc:
            self.notes.append(f"continuous actions not audited: the factory did not build a "
                              f"model on the LQR environment ({exc})")
        self.model_description = (f"{type(model).__module__}.{type(model).__name__}, "
                                  f"n_steps={model.n_steps}, n_envs={model.n_envs}, "
                                  f"policy {type(model.policy).__name__}")

    def _build(self, env: gym.Env, seed: int):
        from stable_baselines3.common.utils import set_random_seed

        truth = GroundTruth(env)
        set_random_seed(seed)  # network initialization happens inside the factory
        try:
            model = self.factory(truth)
        except Exception as exc:
            raise TargetProtocolError(f"factory {self.name!r} raised {exc!r}") from exc
        _algorithm_of(model)
        if model.n_envs != 1:
            raise TargetProtocolError(f"factory {self.name!r}: expected a model on the single "
                                      f"env it is given (n_envs=1), received n_envs="
                                      f"{model.n_envs}")
        model.set_random_seed(seed)
        return model, truth

    def make_agent(self, env_fn, *, seed: int, num_envs: int = 1,
                   num_steps: int | None = None) -> SB3Agent:
        """An agent on ``env_fn()``; ``num_envs`` and ``num_steps`` are the model's own."""
        model, truth = self._build(env_fn(), seed)
        return SB3Agent(model, truth)


class SB3Agent:
    """Protocol agent around one Stable-Baselines3 model (see the module docstring)."""

    def __init__(self, model, truth: GroundTruth) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        self.model, self.truth = model, truth
        self.recorder = StepRecorder(self.named_parameters(), [model.policy.optimizer])
        self._pending: dict = {}
        self._actor_indices: np.ndarray | None = None  # TRPO's subsampled actor batch
        agent = self

        class _Recording(BaseCallback):
            def _on_rollout_start(self) -> None:
                agent._pending = {"at_collection": snapshot(agent.named_parameters())}
                agent._actor_indices = None
                agent.truth.clear()

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                agent._pending["rollout"] = agent._read_buffer()
                agent._watch_minibatches()

        self._callback = _Recording()

    # ------------------------------------------------------------------ protocol
    def named_parameters(self) -> dict:
        return dict(self.model.policy.named_parameters())

    def _obs(self, obs):
        import torch

        return torch.as_tensor(obs, dtype=torch.float32, device=self.model.policy.device)

    def distribution(self, obs):
        """The policy at ``obs`` (B, *obs_shape): Categorical, or Independent Normal (log-prob
        summed over action dimensions)."""
        import torch

        d = self.model.policy.get_distribution(self._obs(obs)).distribution
        if isinstance(d, torch.distributions.Normal):
            d = torch.distributions.Independent(d, 1)
        return d

    def value(self, obs):
        """The critic at ``obs`` (B, *obs_shape): tensor (B,), reward units."""
        return self.model.policy.predict_values(self._obs(obs)).squeeze(-1)

    def iterate(self) -> Iteration:
        """One collection and update through ``model.learn``, recorded (see the protocol).

        Raises
        ------
        TargetProtocolError
            The model's ``learn()`` collected no rollout.
        """
        m = self.model
        m.learn(total_timesteps=m.n_steps * m.n_envs, reset_num_timesteps=False,
                callback=self._callback)
        if "rollout" not in self._pending:
            raise TargetProtocolError("the model's learn() did not collect a rollout (no "
                                      "on_rollout_end callback)")
        actor_indices, self._actor_indices = self._actor_indices, None
        return Iteration(self._pending["rollout"], self._pending["at_collection"],
                         self.recorder.take(), snapshot(self.named_parameters()),
                         actor_indices=actor_indices)

    def collect(self) -> Rollout:
        """One collection from fresh env resets, without the update (see the protocol)."""
        m = self.model
        m.train = lambda: None  # instance attribute shadows the class's train for this call
        try:  # reset_num_timesteps=True makes learn() reset the env: a fresh buffer
            m.learn(total_timesteps=m.n_steps * m.n_envs, reset_num_timesteps=True,
                    callback=self._callback)
        finally:
            del m.train
        self.recorder.take()
        return self._pending["rollout"]

    # ------------------------------------------------------------------ recording
    def _read_buffer(self) -> Rollout:
        buf, T = self.model.rollout_buffer, self.model.n_steps
        log = self.truth.log
        if len(log) != T:
            raise TargetProtocolError(f"ground truth: expected {T} env steps in one "
                                      f"collection, the env saw {len(log)} (does the model use "
                                      f"the env it was given?)")
        _obs, _act, rew, term, trunc, nxt = (np.array(x) for x in zip(*log, strict=True))
        actions = np.array(buf.actions, copy=True)
        if isinstance(self.model.action_space, gym.spaces.Discrete):
            actions = actions.reshape(T, 1).astype(np.int64)
        return Rollout(observations=np.array(buf.observations, copy=True),
                       actions=actions, rewards=rew.reshape(T, 1),
                       terminated=term.reshape(T, 1), truncated=trunc.reshape(T, 1),
                       next_observations=nxt.reshape(T, 1, *nxt.shape[1:]).astype(np.float32),
                       log_probs=np.array(buf.log_probs, copy=True),
                       advantages=np.array(buf.advantages, copy=True),
                       values=np.array(buf.values, copy=True),
                       returns=np.array(buf.returns, copy=True))

    def _watch_minibatches(self) -> None:
        buf = self.model.rollout_buffer
        if getattr(buf, "_pgtheory_watched", False):
            return
        original = buf._get_samples  # bound method (the buffer class's own, or a subclass's)
        T, N, recorder = self.model.n_steps, self.model.n_envs, self.recorder
        k = int(getattr(self.model, "sub_sampling_factor", 1) or 1)

        def _get_samples(batch_inds, *args, **kwargs):
            i = np.asarray(batch_inds)
            recorder.current_indices = (i % T) * N + i // T  # env-major -> time-major
            if k > 1 and self._actor_indices is None and len(i) == T * N:
                # sb3-contrib TRPO: the first whole-batch draw of train() is the actor's,
                # which then keeps every k-th sample of it
                self._actor_indices = recorder.current_indices[::k].copy()
            return original(batch_inds, *args, **kwargs)

        buf._get_samples = _get_samples
        buf._pgtheory_watched = True


def builtin_factory(class_name: str, **overrides) -> Callable:
    """``FACTORY(env)`` for a library class with its default hyperparameters.

    ``class_name`` is ``"PPO"``, ``"A2C"`` or ``"TRPO"``; only the sizing in
    :data:`BUILTIN_DEFAULTS` and the keyword ``overrides`` (passed to the class, e.g.
    ``policy_kwargs`` or ``rollout_buffer_class``) depart from the defaults.

    Raises
    ------
    TargetProtocolError
        Unknown class name, or the library is not installed.
    """
    if class_name not in BUILTIN_DEFAULTS:
        raise TargetProtocolError(f"expected one of {sorted(BUILTIN_DEFAULTS)}, received "
                                  f"{class_name!r}")
    module = "sb3_contrib" if class_name == "TRPO" else "stable_baselines3"
    cls = getattr(import_library(module), class_name)
    kwargs = {**BUILTIN_DEFAULTS[class_name], **overrides}

    def factory(env):
        return cls("MlpPolicy", env, **kwargs)

    return factory


def load_sb3_target(spec: str) -> SB3Target:
    """Resolve ``sb3:PPO``, ``sb3:A2C``, ``sb3-contrib:TRPO`` or ``sb3:MODULE:FACTORY``.

    Raises
    ------
    TargetProtocolError
        Malformed spec, unknown class, unimportable module or missing factory.
    """
    prefix, _, rest = spec.partition(":")
    if prefix not in ("sb3", "sb3-contrib") or not rest:
        raise TargetProtocolError(f"target spec: expected 'sb3:PPO', 'sb3:A2C', "
                                  f"'sb3-contrib:TRPO' or 'sb3:MODULE:FACTORY', received "
                                  f"{spec!r}")
    if ":" not in rest:
        name = rest.upper()
        if name not in BUILTIN_DEFAULTS:
            raise TargetProtocolError(f"target spec {spec!r}: expected a library class among "
                                      f"{sorted(BUILTIN_DEFAULTS)}")
        return SB3Target(builtin_factory(name), name=spec)
    module_name, _, attr = rest.partition(":")
    module = import_user_module(spec, module_name)
    if not callable(getattr(module, attr, None)):
        raise TargetProtocolError(f"target spec {spec!r}: module {module_name!r} has no "
                                  f"callable {attr!r}")
    return SB3Target(getattr(module, attr), name=spec)
