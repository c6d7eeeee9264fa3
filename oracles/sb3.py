"""Stable-Baselines3 / sb3-contrib models as protocol targets (what ``pgtheory audit`` runs).

:class:`SB3Target` wraps a *factory* that builds a configured ``stable_baselines3.PPO``,
``stable_baselines3.A2C`` or ``sb3_contrib.TRPO`` (or a subclass, with any ``net_arch``, custom
rollout buffer or env wrappers) on the oracle env it is given, in one of two forms:

* ``FACTORY(env) -> model`` -- one gymnasium env (the model has ``n_envs == 1``);
* ``FACTORY(venv) -> model`` (the first parameter is named ``venv``) -- a ``DummyVecEnv`` of
  ``num_envs`` copies of the oracle env (the audit's 4; 16 for the policy-head checks), which
  the factory may wrap, e.g. in ``VecNormalize``; the model must use all of them.

Nothing in the model's code is changed; the adapter observes it from outside:

* **Ground truth** -- every env handed to the factory is wrapped in :class:`GroundTruth`, which
  logs every transition exactly as the oracle env produced it (observation, action, reward,
  ``terminated``, ``truncated``, the true next observation). Wrappers the user adds
  (``VecNormalize`` included) sit outside it, so a wrapper that hides truncation or rewrites
  the final observation is seen as a disagreement between what the model stored and what
  happened.
* **What the model stored** -- a callback copies the rollout buffer at the end of collection
  (observations, actions as sampled, log-probabilities, values, advantages, returns) before
  ``train()`` flattens it; the buffer is time-major ``(T, N)`` until then, as the protocol.
* **Updates** -- :class:`pgtheory.oracles.protocol.StepRecorder` hooks ``policy.optimizer``; the
  buffer instance's ``_get_samples`` is wrapped so each optimizer step knows its minibatch
  indices (Stable-Baselines3 flattens ``(T, N)`` env-major, ``n * T + t``; the protocol's order
  is ``t * N + n``). TRPO's actor step (written into ``param.data``, not through an optimizer)
  is the difference of the parameters before and after the iteration.
* **VecNormalize** -- the checks compare what the model computed with what it should have
  computed *on the inputs it saw*: the rollout's observations are the normalized ones the
  buffer stored (``distribution`` and ``value`` take the network's input); its rewards are
  the true rewards normalized by :func:`normalized_transitions`, an independent replay of
  ``VecNormalize`` from the ground truth and the running statistics at the start of the
  collection (return accumulator ``R <- gamma_norm R + r``, reset at every episode end,
  running variance of ``R``, ``r / sqrt(var + eps)`` clipped); its next observations are the
  true ``s_{t+1}`` (the final observation at an episode end) normalized with the observation
  statistics of that step, as the model's bootstrap must use them. A defect in the
  normalization path (an unnormalized final observation, an accumulator never reset) is
  then a disagreement in ``given_the_batch.advantages``.

One iteration is one ``model.learn(n_steps * n_envs, reset_num_timesteps=False)`` call, so
subclasses that override ``learn``, ``collect_rollouts`` or ``train`` are honoured.

Limitations (stated, checked): ``FACTORY(env)`` must give a model on the single env it is
given (``n_envs == 1``) and ``FACTORY(venv)`` one on all ``num_envs`` envs
(``TargetProtocolError`` otherwise); Stable-Baselines3 envs are always ``DummyVecEnv`` copies
of the oracle env (``SubprocVecEnv`` is not needed to audit the algorithm). Under
``VecNormalize`` (observations and/or rewards) the given-the-batch checks are exact, but the
tabular layers are not: they evaluate the policy and critic at the raw one-hot states and
compare with exact values of the oracle MDP in its own reward units, while the model's policy
is a function of observations normalized by statistics that move at every step, and its
advantages are in normalized reward units. A ``VecNormalize`` target therefore declares the
in-expectation and update-level layers not applicable (``not_applicable``; the rows say why)
and is audited on the given-the-batch checks (oracle MDP and LQR) and the policy-head checks;
a model whose ``VecNormalize`` is not in training mode at build time,
or normalizes dict observations, is not supported; dict observations are not supported.

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
           "load_sb3_target", "normalized_transitions", "running_moments"]

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


def running_moments(mean: np.ndarray, var: np.ndarray, count: float,
                    batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Running mean and (population) variance updated with a batch (parallel algorithm).

    ``delta = mean_b - mean``, ``n = count + n_b``, ``mean' = mean + delta n_b / n``,
    ``var' = (var count + var_b n_b + delta^2 count n_b / n) / n``, with ``mean_b``, ``var_b``
    the batch's moments over its first axis.

    Parameters
    ----------
    mean, var : ndarray, shape (*shape)
    count : float
        Samples summarized so far (> 0).
    batch : ndarray, shape (B, *shape)

    Returns
    -------
    (mean, var, count)
        float64.

    References
    ----------
    Chan, Golub and LeVeque (1979), "Updating formulae and a pairwise algorithm for computing
    sample variances"; ``stable_baselines3.common.running_mean_std.RunningMeanStd`` uses it.
    """
    batch = np.asarray(batch, np.float64)
    nb = batch.shape[0]
    mb, vb = batch.mean(axis=0), batch.var(axis=0)
    delta, n = mb - mean, count + nb
    new_mean = mean + delta * nb / n
    m2 = var * count + vb * nb + np.square(delta) * count * nb / n
    return new_mean, m2 / n, n


def normalized_transitions(rewards: np.ndarray, dones: np.ndarray, seen_obs: np.ndarray,
                           next_obs: np.ndarray, state: dict) -> tuple[np.ndarray, np.ndarray]:
    """Rewards and next observations of a collection as ``VecNormalize`` should give them.

    Replays ``VecNormalize.step_wait`` (training mode) from the ground truth: at step ``t``
    the observation statistics are updated with ``o_t`` (the observations the vectorized env
    returned, a reset observation where an episode ended), the return accumulator is
    ``R_t = gamma_n R_{t-1} + r_t`` (reset to 0 after an episode end), the return statistics
    are updated with ``R_t``, and

    ``r'_t = clip(r_t / sqrt(var_R + eps), -c_r, c_r)``,
    ``s'_{t+1} = clip((s_{t+1} - mean_o) / sqrt(var_o + eps), -c_o, c_o)``

    with the statistics after the step's update (``s_{t+1}`` the true next observation, the
    final one at an episode end: the bootstrap must see it normalized like every other
    observation).

    Parameters
    ----------
    rewards, dones : ndarray, shape (T, N)
        True rewards and ``terminated or truncated``.
    seen_obs, next_obs : ndarray, shape (T, N, *obs_shape)
    state : dict
        At the start of the collection: ``obs_mean``, ``obs_var``, ``obs_count``,
        ``ret_mean``, ``ret_var``, ``ret_count``, ``returns`` (N,), and the wrapper's
        ``norm_obs``, ``norm_reward``, ``gamma``, ``epsilon``, ``clip_obs``, ``clip_reward``.

    Returns
    -------
    (rewards, next_observations)
        float64, shapes (T, N) and (T, N, *obs_shape); unchanged where the wrapper does not
        normalize them.

    References
    ----------
    ``stable_baselines3.common.vec_env.VecNormalize`` (SB3 2.x: ``step_wait``,
    ``_update_reward``, ``normalize_obs``, ``normalize_reward``).
    """
    T = rewards.shape[0]
    om, ov, oc = state["obs_mean"], state["obs_var"], state["obs_count"]
    rm, rv, rc = state["ret_mean"], state["ret_var"], state["ret_count"]
    acc = np.array(state["returns"], np.float64, copy=True)
    eps = state["epsilon"]
    out_r = np.array(rewards, np.float64, copy=True)
    out_o = np.array(next_obs, np.float64, copy=True)
    for t in range(T):
        if state["norm_obs"]:
            om, ov, oc = running_moments(om, ov, oc, seen_obs[t])
            out_o[t] = np.clip((next_obs[t] - om) / np.sqrt(ov + eps), -state["clip_obs"],
                               state["clip_obs"])
        acc = acc * state["gamma"] + rewards[t]
        rm, rv, rc = running_moments(rm, rv, rc, acc)
        if state["norm_reward"]:
            out_r[t] = np.clip(rewards[t] / np.sqrt(rv + eps), -state["clip_reward"],
                               state["clip_reward"])
        acc[np.asarray(dones[t], bool)] = 0.0
    return out_r, out_o


def _normalization_state(vn) -> dict:
    """What :func:`normalized_transitions` needs from a ``VecNormalize``, copied."""
    obs_rms = vn.obs_rms if vn.norm_obs else None  # SB3 creates it only with norm_obs
    return {"obs_mean": np.array(obs_rms.mean if obs_rms else 0.0, np.float64),
            "obs_var": np.array(obs_rms.var if obs_rms else 1.0, np.float64),
            "obs_count": float(obs_rms.count if obs_rms else 1.0),
            "ret_mean": np.array(vn.ret_rms.mean, np.float64),
            "ret_var": np.array(vn.ret_rms.var, np.float64), "ret_count": float(vn.ret_rms.count),
            "returns": np.array(vn.returns, np.float64), "norm_obs": bool(vn.norm_obs),
            "norm_reward": bool(vn.norm_reward), "gamma": float(vn.gamma),
            "epsilon": float(vn.epsilon), "clip_obs": float(vn.clip_obs),
            "clip_reward": float(vn.clip_reward)}


def _vec_normalize(model):
    """The model's ``VecNormalize`` (None without one); unsupported settings raise.

    Raises
    ------
    TargetProtocolError
        The wrapper is not in training mode, or normalizes dict observations.
    """
    vn = model.get_vec_normalize_env()
    if vn is None:
        return None
    if not vn.training:
        raise TargetProtocolError("VecNormalize: expected training=True (the audit follows "
                                  "the running statistics as they are updated), received "
                                  "training=False")
    if vn.norm_obs and isinstance(vn.obs_rms, dict):
        raise TargetProtocolError("VecNormalize: dict observations are not supported")
    return vn


def _wants_venv(factory: Callable) -> bool:
    """Whether ``factory``'s first parameter is named ``venv`` (``FACTORY(venv)``)."""
    import inspect

    try:
        params = list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0] == "venv"


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


#: Envs a ``FACTORY(venv)`` gets when the target is built (the suite's ``num_envs``).
PROBE_ENVS = 4


class SB3Target:
    """A protocol target built from ``FACTORY(env)`` or ``FACTORY(venv)`` (module docstring).

    Parameters
    ----------
    factory : callable
        ``factory(env)`` returns a PPO, A2C or TRPO model (or subclass) using ``env``;
        ``factory(venv)`` (first parameter named ``venv``) one using all envs of the
        ``DummyVecEnv`` ``venv``, which it may wrap (``VecNormalize``).
    name : str
        Shown in reports.

    Raises
    ------
    TargetProtocolError
        The factory raises, returns something that is not a supported model, or the model
        does not use the env(s) it was given.
    """

    def __init__(self, factory: Callable, *, name: str) -> None:
        if not callable(factory):
            raise TargetProtocolError(f"factory: expected a callable FACTORY(env), received "
                                      f"{type(factory).__name__}")
        self.factory, self.name = factory, name
        self.vectorized = _wants_venv(factory)
        from pgtheory.oracles.envs import lqr_env_fn

        try:
            model = self._build(_probe_env, seed=0, num_envs=PROBE_ENVS)[0]
            discrete_error = None
        except TargetProtocolError as exc:
            # a continuous-only configuration (gSDE, a Box-only policy): audit the LQR rows
            try:
                model = self._build(lqr_env_fn(), seed=0, num_envs=PROBE_ENVS)[0]
            except TargetProtocolError:
                raise exc from None
            discrete_error = exc
        self.algorithm = _algorithm_of(model)
        self.hyperparameters = _hyperparameters(model, self.algorithm)
        self.notes = untested_notes(self.hyperparameters, self.algorithm)
        vn = _vec_normalize(model)
        self.action_kinds: tuple[str, ...] = ("discrete",)
        if discrete_error is not None:
            self.action_kinds = ("continuous",)
            self.notes.append(f"discrete actions not audited (only the @lqr rows run): the "
                              f"factory did not build a model on the tabular probe "
                              f"environment ({discrete_error})")
        else:
            try:  # the same factory on the LQR env exercises the diagonal-Gaussian path
                self._build(lqr_env_fn(), seed=0, num_envs=PROBE_ENVS)
                self.action_kinds = ("discrete", "continuous")
            except TargetProtocolError as exc:
                if vn is not None:
                    raise
                self.notes.append(f"continuous actions not audited: the factory did not build "
                                  f"a model on the LQR environment ({exc})")
        self.not_applicable: dict[str, str] = {}
        if vn is not None:
            why = (f"under VecNormalize (norm_obs={vn.norm_obs}, norm_reward={vn.norm_reward}) "
                   f"the model sees observations and rewards rescaled by running statistics "
                   f"that change at every step, while this check compares the policy and critic "
                   f"at raw states with the MDP's exact values in raw reward units")
            self.not_applicable = {"in_expectation.": why, "update_level.": why}
            self.notes.append(
                "VecNormalize: the given-the-batch and policy-head checks compare what the model "
                "computed on the normalized quantities it used (rewards and final observations "
                "normalized by an independent replay of VecNormalize from the ground truth); "
                "the in-expectation and update-level checks are not applicable (the rows say "
                "why)")
        if getattr(model, "use_sde", False):
            why = ("gSDE (use_sde=True): the exploration noise is a state-dependent linear map "
                   "drawn once every sde_sample_freq steps, so the stored actions are not "
                   "independent draws of distribution(obs), which this check assumes")
            for key in ("given_the_batch.action_sampling@lqr", "in_expectation.",
                        "update_level."):
                self.not_applicable.setdefault(key, why)
            if not getattr(model.policy.action_dist, "learn_features", False):
                self.not_applicable["given_the_batch.log_prob_gradient@lqr"] = (
                    "gSDE with learn_features=False: Stable-Baselines3 detaches, by design, "
                    "the features that scale the exploration noise, so autograd does not see "
                    "every parameter the density depends on")
        self.model_description = (f"{type(model).__module__}.{type(model).__name__}, "
                                  f"n_steps={model.n_steps}, n_envs={model.n_envs}"
                                  f"{' (one per audit env)' if self.vectorized else ''}, "
                                  f"policy {type(model.policy).__name__}"
                                  f"{', VecNormalize' if vn is not None else ''}")

    def _build(self, env_fn: Callable, seed: int, num_envs: int):
        from stable_baselines3.common.utils import set_random_seed

        n = num_envs if self.vectorized else 1
        truths = [GroundTruth(env_fn()) for _ in range(n)]
        if self.vectorized:
            from stable_baselines3.common.vec_env import DummyVecEnv

            given = DummyVecEnv([(lambda e=e: e) for e in truths])
        else:
            given = truths[0]
        set_random_seed(seed)  # network initialization happens inside the factory
        try:
            model = self.factory(given)
        except Exception as exc:
            raise TargetProtocolError(f"factory {self.name!r} raised {exc!r}") from exc
        _algorithm_of(model)
        if model.n_envs != n:
            form = "FACTORY(venv)" if self.vectorized else "FACTORY(env)"
            raise TargetProtocolError(f"factory {self.name!r}: expected a model on the "
                                      f"{'single env' if n == 1 else f'{n} envs'} it is given "
                                      f"by {form} (n_envs={n}), received n_envs="
                                      f"{model.n_envs}")
        _vec_normalize(model)
        model.set_random_seed(seed)
        return model, truths

    def make_agent(self, env_fn, *, seed: int, num_envs: int = 1,
                   num_steps: int | None = None) -> SB3Agent:
        """An agent on ``env_fn()`` copies: ``num_envs`` of them for ``FACTORY(venv)``, one for
        ``FACTORY(env)``; the rollout length is the model's own ``n_steps``."""
        model, truths = self._build(env_fn, seed, num_envs)
        return SB3Agent(model, truths)


class SB3Agent:
    """Protocol agent around one Stable-Baselines3 model (see the module docstring).

    ``truths`` holds one :class:`GroundTruth` per env of the model, in the model's env order
    (a single ``GroundTruth`` is accepted for one env).
    """

    def __init__(self, model, truths: list[GroundTruth] | GroundTruth) -> None:
        from stable_baselines3.common.callbacks import BaseCallback

        self.model = model
        self.truths = [truths] if isinstance(truths, GroundTruth) else list(truths)
        self.recorder = StepRecorder(self.named_parameters(), [model.policy.optimizer])
        self._pending: dict = {}
        self._actor_indices: np.ndarray | None = None  # TRPO's subsampled actor batch
        agent = self

        class _Recording(BaseCallback):
            def _on_rollout_start(self) -> None:
                agent._pending = {"at_collection": snapshot(agent.named_parameters())}
                vn = _vec_normalize(agent.model)
                if vn is not None:  # the running statistics the collection starts from
                    agent._pending["normalization"] = _normalization_state(vn)
                agent._actor_indices = None
                for truth in agent.truths:
                    truth.clear()

            def _on_step(self) -> bool:
                return True

            def _on_rollout_end(self) -> None:
                agent._pending["rollout"] = agent._read_buffer()
                agent._watch_minibatches()

        self._callback = _Recording()

    @property
    def truth(self) -> GroundTruth:
        """The first env's ground truth (the only one of a single-env model)."""
        return self.truths[0]

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
        buf, T, N = self.model.rollout_buffer, self.model.n_steps, self.model.n_envs
        if len(self.truths) != N:
            raise TargetProtocolError(f"ground truth: expected {N} recorded envs, received "
                                      f"{len(self.truths)}")
        columns = []
        for n, truth in enumerate(self.truths):
            log = truth.log
            if len(log) != T:
                raise TargetProtocolError(f"ground truth: expected {T} steps of env {n} in "
                                          f"one collection, the env saw {len(log)} (does the "
                                          f"model use the envs it was given?)")
            _obs, _act, rew, term, trunc, nxt = (np.array(x) for x in zip(*log, strict=True))
            # what the vectorized env returned at step t: s_{t+1}, or the reset observation
            # after an episode end (the start of the next logged step)
            seen = np.stack([*(step[0] for step in log[1:]), truth._obs])
            columns.append((rew, term, trunc, nxt, seen))
        rew, term, trunc, nxt, seen = (np.stack(c, axis=1) for c in zip(*columns, strict=True))
        rew = rew.astype(np.float64)
        if "normalization" in self._pending:
            rew, nxt = normalized_transitions(rew, term | trunc, seen, nxt,
                                              self._pending["normalization"])
        actions = np.array(buf.actions, copy=True)
        if isinstance(self.model.action_space, gym.spaces.Discrete):
            actions = actions.reshape(T, N).astype(np.int64)
        return Rollout(observations=np.array(buf.observations, copy=True),
                       actions=actions, rewards=rew, terminated=term, truncated=trunc,
                       next_observations=nxt.astype(np.float32),
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
