"""What the four algorithms share: configuration, environments, networks, collection, protocol.

The algorithm files (:mod:`~pgtheory.implementations.reinforce`,
:mod:`~pgtheory.implementations.a2c`,
:mod:`~pgtheory.implementations.trpo`, :mod:`~pgtheory.implementations.ppo`) subclass :class:`Agent`
and write only what differs: their configuration defaults, their advantage estimate and their
update.

Environments
------------
``gymnasium.vector.SyncVectorEnv`` in ``AutoresetMode.SAME_STEP``: the step that ends an episode
returns the *reset* observation and puts the episode's final observation in
``info["final_obs"]``. Every returned transition is therefore real (no dummy step to mask, as in
the ``NEXT_STEP`` mode) and the true ``s_{t+1}`` of a truncated step, whose value the
truncation bootstraps from, is at hand. Per sub-environment wrappers, innermost first:
``RecordEpisodeStatistics`` (raw episode returns for logging), ``ClipAction`` for box actions (the
*sampled* action is stored and trained on; only the env sees the clipped one), and the opt-in
``NormalizeObservation`` and ``NormalizeReward`` (gymnasium's running-statistics wrappers;
per sub-environment, so the final observation is normalized with the same statistics).

Networks
--------
Separate actor and critic MLPs (``hidden_sizes=()`` gives linear layers: exactly a tabular
softmax on one-hot observations). Continuous actions: a diagonal Gaussian with a
state-independent log-std parameter; discrete: categorical logits. Orthogonal initialization
(gain sqrt 2 on hidden layers, 0.01 on the policy output, 1 on the value output) as in
Andrychowicz et al. (2021), arXiv:2006.05990v1, and Huang et al. (2022), "The 37 Implementation
Details of Proximal Policy Optimization" (ICLR blog track).

Protocol
--------
:class:`Agent` follows :mod:`pgtheory.oracles.protocol` (``distribution``, ``value``,
``named_parameters``, ``iterate``, ``collect``), so every algorithm is an oracle target.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from pgtheory.implementations import core
from pgtheory.oracles.protocol import Iteration, Rollout, StepRecorder, snapshot
from torch import nn

from pgtheory.errors import InvalidArgumentError

__all__ = ["Agent", "Batch", "CommonConfig", "ConfigError", "TrainingDivergedError", "find_wrapper",
           "make_env_fn", "resolve_device"]


class ConfigError(InvalidArgumentError):
    """A configuration value or override is invalid; the message names expected vs received."""


class TrainingDivergedError(RuntimeError):
    """Training produced NaN or inf losses; the message names the iteration and statistics."""


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """Settings every algorithm has (each algorithm file subclasses this with its own defaults).

    Attributes
    ----------
    gamma : float
        Discount in [0, 1).
    gae_lambda : float
        GAE lambda in [0, 1] (REINFORCE: 1, Monte Carlo).
    num_steps : int
        Steps per environment per iteration (buffer length T).
    hidden_sizes : tuple of int
        MLP hidden layers of actor and critic; ``()`` for linear.
    activation : {"tanh", "relu"}
    learning_rate : float
        Adam (or RMSprop for A2C) step size.
    anneal_lr : bool
        Linear decay of the learning rate to 0 over the run (``pgtheory train`` only).
    ortho_init : bool
    log_std_init : float
        Initial log standard deviation of Gaussian policies.
    ent_coef, vf_coef : float
        Entropy bonus and value-loss coefficients.
    max_grad_norm : float or None
        Global gradient-norm clipping (None: off).
    normalize_obs, scale_rewards : bool
        Opt-in gymnasium ``NormalizeObservation`` / ``NormalizeReward`` wrappers
        (``pgtheory train`` envs only; the oracle envs are used as given).
    """

    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_steps: int = 2048
    hidden_sizes: tuple = (64, 64)
    activation: str = "tanh"
    learning_rate: float = 3e-4
    anneal_lr: bool = False
    ortho_init: bool = True
    log_std_init: float = 0.0
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float | None = 0.5
    normalize_obs: bool = False
    scale_rewards: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"gamma: expected a value in [0, 1), received {self.gamma!r}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ConfigError(f"gae_lambda: expected a value in [0, 1], received "
                              f"{self.gae_lambda!r}")
        if int(self.num_steps) < 1:
            raise ConfigError(f"num_steps: expected a positive integer, received "
                              f"{self.num_steps!r}")
        if self.activation not in ("tanh", "relu"):
            raise ConfigError(f"activation: expected 'tanh' or 'relu', received "
                              f"{self.activation!r}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: expected > 0, received {self.learning_rate!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm: expected > 0 or None, received "
                              f"{self.max_grad_norm!r}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated). Raises ConfigError on unknown keys."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown setting(s) {unknown} for {type(self).__name__}; "
                              f"expected among {sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``; ``"cuda"`` (raises ConfigError
    when CUDA is absent)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device: expected 'auto', 'cpu' or 'cuda', received {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device!r} requested but torch sees no CUDA device")
    return torch.device(device)


def make_env_fn(env_id: str, config: CommonConfig | None = None, *,
                render_mode: str | None = None) -> Callable[[], gym.Env]:
    """A zero-argument constructor of ``gym.make(env_id)`` with the wrappers listed in the
    module docstring.

    Raises
    ------
    ConfigError
        ``env_id`` is not a registered gymnasium id (checked now, not at the first call).
    """
    import pgtheory.oracles.envs  # noqa: F401  (registers the pgtheory/ tabular environments)

    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ConfigError(f"env: expected a registered gymnasium id (e.g. Hopper-v5, "
                          f"CartPole-v1, pgtheory/Probe5-v0), received {env_id!r} ({exc})") from exc
    cfg = config or CommonConfig()

    def make() -> gym.Env:
        env = gym.make(env_id, **({"render_mode": render_mode} if render_mode else {}))
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if isinstance(env.action_space, gym.spaces.Box):
            env = gym.wrappers.ClipAction(env)
        if cfg.normalize_obs:
            env = gym.wrappers.NormalizeObservation(env)
        if cfg.scale_rewards:
            env = gym.wrappers.NormalizeReward(env, gamma=cfg.gamma)
        return env

    return make


# --------------------------------------------------------------------------- networks
class _MLP(nn.Sequential):
    """``nn.Sequential`` whose forward calls each layer's ``forward`` directly.

    Same layers, parameters, state-dict keys and result as ``nn.Sequential``; it skips the
    per-layer module-call dispatch (hooks), which is most of the cost of a one-row forward in
    the collection loop. Parameters are read at call time, so ``torch.func.functional_call``
    still works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._modules.values():
            x = layer.forward(x)
        return x


def _mlp(n_in: int, n_out: int, hidden: tuple, activation: str, out_gain: float,
         ortho: bool) -> nn.Sequential:
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    sizes = (n_in, *hidden)
    for a, b in itertools.pairwise(sizes):
        layers += [_init(nn.Linear(a, b), np.sqrt(2), ortho), act()]
    layers.append(_init(nn.Linear(sizes[-1], n_out), out_gain, ortho))
    return _MLP(*layers)


def _init(layer: nn.Linear, gain: float, ortho: bool) -> nn.Linear:
    if ortho:
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return layer


class Actor(nn.Module):
    """Policy network: observation (B, obs_dim) -> :class:`core.DiagGaussian` or
    :class:`core.CategoricalLogits`."""

    def __init__(self, obs_dim: int, action_space: gym.Space, cfg: CommonConfig) -> None:
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        n_out = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        self.net = _mlp(obs_dim, n_out, cfg.hidden_sizes, cfg.activation, 0.01, cfg.ortho_init)
        if self.continuous:
            self.log_std = nn.Parameter(torch.full((n_out,), float(cfg.log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Distribution:
        out = self.net(obs)
        if self.continuous:
            return core.DiagGaussian(out, self.log_std)
        return core.CategoricalLogits(out)


class Critic(nn.Module):
    """Value network: observation (B, obs_dim) -> V (B,) in reward units."""

    def __init__(self, obs_dim: int, cfg: CommonConfig) -> None:
        super().__init__()
        self.net = _mlp(obs_dim, 1, cfg.hidden_sizes, cfg.activation, 1.0, cfg.ortho_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


# ------------------------------------------------------------------------- the agent
@dataclasses.dataclass
class Batch:
    """One collection as flat torch tensors on the agent's device (index ``t * N + n``).

    ``observations`` (B, *obs_shape), ``actions`` (B,) or (B, m), ``log_probs``,
    ``advantages``, ``values``, ``returns``, ``weights`` (B,); ``rollout`` is the protocol's
    numpy record.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    values: torch.Tensor
    returns: torch.Tensor
    weights: torch.Tensor | None
    rollout: Rollout

    def __len__(self) -> int:
        return self.observations.shape[0]


class Agent:
    """Collection, networks and the oracle protocol; subclasses write ``advantages`` and
    ``update``.

    Parameters
    ----------
    env_fn : callable
        Returns a fresh gymnasium env (one per vector sub-environment).
    config : CommonConfig subclass
    seed : int
        Seeds torch, the agent's numpy generator and the environments' first reset.
    num_envs : int
        Parallel sub-environments N.
    num_steps : int, optional
        Buffer length T (default ``config.num_steps``).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``; networks and updates run there, envs on the CPU.
    record : bool
        Record every optimizer step for the oracles
        (:class:`pgtheory.oracles.protocol.StepRecorder`); off in long training runs unless
        monitored.

    Raises
    ------
    ConfigError
        Unsupported observation or action space, bad sizes or device.
    """

    algorithm = ""
    uses_critic = True
    #: See the module docstring for why SAME_STEP.
    autoreset_mode = gym.vector.AutoresetMode.SAME_STEP
    #: "continue": buffers follow each other; "reset": every collection starts from resets.
    collection = "continue"

    def __init__(self, env_fn: Callable, config: CommonConfig, *, seed: int = 0,
                 num_envs: int = 1, num_steps: int | None = None, device: str = "cpu",
                 record: bool = True) -> None:
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs: expected a positive integer, received {num_envs!r}")
        self.cfg = config
        self.T, self.N = int(num_steps or config.num_steps), int(num_envs)
        self.device = resolve_device(device)
        self.seed = int(seed)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.envs = gym.vector.SyncVectorEnv([env_fn] * self.N,
                                             autoreset_mode=self.autoreset_mode)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ConfigError(f"observation space: expected a flat Box, received {obs_space}")
        if not isinstance(act_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"action space: expected Box or Discrete, received {act_space}")
        obs_dim = int(obs_space.shape[0])
        self.actor = Actor(obs_dim, act_space, config).to(self.device)
        self.critic = Critic(obs_dim, config).to(self.device) if self.uses_critic else None
        if self.critic is None:
            self.value = None  # the protocol's "no critic" (baseline 0)
        self.optimizers = self.build_optimizers()
        self.recorder = (StepRecorder(self.named_parameters(), self.optimizers)
                         if record and self.optimizers else None)
        self.obs, _ = self.envs.reset(seed=self.seed)
        self.iterations = 0
        self.env_steps = 0
        self.progress_remaining = 1.0
        self.stats: dict[str, float] = {}
        self.episode_returns: deque = deque(maxlen=100)
        self.episode_lengths: deque = deque(maxlen=100)
        self.episodes = 0
        self.nonfinite_steps = 0  # optimizer steps skipped for NaN/inf gradients

    # -------------------------------------------------------------- to be written
    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimizers whose steps train the agent (recorded for the oracles)."""
        raise NotImplementedError

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> torch.Tensor:
        """The advantage estimate on the (T, N) buffer (the argument order of
        :func:`pgtheory.gae`; ``next_values`` are the values of the true next observations)."""
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, float]:
        """Train on one batch; return statistics for the logs."""
        raise NotImplementedError

    # ------------------------------------------------------------------- protocol
    def named_parameters(self) -> dict[str, nn.Parameter]:
        out = {f"actor.{k}": v for k, v in self.actor.named_parameters()}
        if self.critic is not None:
            out.update({f"critic.{k}": v for k, v in self.critic.named_parameters()})
        return out

    def _obs(self, obs) -> torch.Tensor:
        if torch.is_tensor(obs):
            return obs.to(self.device, torch.float32)
        return torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)).to(self.device)

    def distribution(self, obs) -> torch.distributions.Distribution:
        """The current policy at ``obs`` (B, obs_dim); ``log_prob`` sums action dimensions."""
        return self.actor(self._obs(obs))

    def value(self, obs) -> torch.Tensor:
        """The critic's V (B,) in reward units (an agent without a critic has ``value = None``,
        which tells the oracles the baseline is 0)."""
        return self.critic(self._obs(obs))

    def _baseline(self, obs) -> torch.Tensor:
        if self.critic is None:
            return torch.zeros(len(obs), device=self.device)
        return self.critic(self._obs(obs))

    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations (the mode when ``deterministic``)."""
        with torch.no_grad():
            dist = self.distribution(obs)
            a = dist.mode if deterministic else dist.sample()
        return a.cpu().numpy()

    def iterate(self) -> Iteration:
        """One collection and one update, recorded as an ``Iteration`` for the oracles."""
        before = snapshot(self.named_parameters()) if self.recorder else {}
        batch = self.rollout(fresh=self.collection == "reset")
        self.stats = self.update(batch)
        self.iterations += 1
        updates = self.recorder.take() if self.recorder else []
        after = snapshot(self.named_parameters()) if self.recorder else {}
        return Iteration(batch.rollout, before, updates, after)

    def collect(self) -> Rollout:
        """One collection from fresh resets, without an update (the oracles' trials)."""
        return self.rollout(fresh=True).rollout

    # ----------------------------------------------------------------- collection
    def rollout(self, fresh: bool = False) -> Batch:
        """Collect ``T`` steps in each of the ``N`` environments and estimate advantages.

        ``fresh``: reset every environment first (REINFORCE does so every iteration, so that
        each buffer holds episodes from their first step and ``gamma^t`` is known).
        """
        if fresh:
            self.obs, _ = self.envs.reset()
        T, N = self.T, self.N
        obs_buf = np.zeros((T, N, *self.obs.shape[1:]), np.float32)
        next_buf = np.zeros_like(obs_buf)
        act_space = self.envs.single_action_space
        act_buf = (np.zeros((T, N, *act_space.shape), np.float32)
                   if isinstance(act_space, gym.spaces.Box) else np.zeros((T, N), np.int64))
        logp_buf = np.zeros((T, N), np.float32)
        rew_buf = np.zeros((T, N), np.float32)
        term_buf = np.zeros((T, N), bool)
        trunc_buf = np.zeros((T, N), bool)
        for t in range(T):
            with torch.inference_mode():  # the sampled action leaves torch as numpy
                a = self.distribution(self.obs).sample().cpu().numpy()
            next_obs, reward, term, trunc, info = self.envs.step(a)
            obs_buf[t], act_buf[t] = self.obs, a
            rew_buf[t], term_buf[t], trunc_buf[t] = reward, term, trunc
            next_buf[t] = self.true_next_observations(next_obs, info)
            if "final_info" in info:
                self._log_episodes(info)
            self.obs = next_obs
        self.env_steps += T * N
        with torch.no_grad():
            # log pi_old(a_t | s_t) of every stored action in one batched pass: the policy is
            # fixed during collection, so this is the per-step value up to float32 rounding
            # (about 5e-7); computing it inside the loop cost about a third of its torch time.
            logp_buf[:] = self.distribution(obs_buf.reshape(T * N, -1)).log_prob(
                torch.as_tensor(act_buf.reshape(T * N, *act_buf.shape[2:]), device=self.device)
            ).reshape(T, N).cpu().numpy()
            values = self._baseline(obs_buf.reshape(T * N, -1)).reshape(T, N)
            next_values = self._baseline(next_buf.reshape(T * N, -1)).reshape(T, N)
            dev = self.device
            rewards = torch.as_tensor(rew_buf, device=dev)
            adv = self.advantages(rewards, values, torch.as_tensor(term_buf, device=dev),
                                  torch.as_tensor(trunc_buf, device=dev),
                                  next_values=next_values).float()
        returns = self.value_targets(adv, values)
        weights = self.sample_weights(term_buf, trunc_buf)
        rollout = Rollout(obs_buf, act_buf, rew_buf, term_buf, trunc_buf, next_buf, logp_buf,
                          adv.cpu().numpy(), values.cpu().numpy(), returns.cpu().numpy())
        def flat(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x, device=self.device).reshape(T * N, *x.shape[2:])

        return Batch(flat(obs_buf), flat(act_buf), flat(logp_buf), adv.reshape(-1),
                     values.reshape(-1), returns.reshape(-1),
                     None if weights is None else flat(weights), rollout)

    @staticmethod
    def true_next_observations(next_obs: np.ndarray, info: dict) -> np.ndarray:
        """``s_{t+1}`` of each environment: the final observation where an episode ended
        (``SAME_STEP`` puts it in ``info["final_obs"]``; ``next_obs`` is already the reset one).
        """
        out = np.array(next_obs, copy=True)
        if "final_obs" in info:
            for n in np.flatnonzero(info["_final_obs"]):
                out[n] = info["final_obs"][n]
        return out

    @staticmethod
    def value_targets(advantages: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The critic's regression targets ``R_t = A_t + V(s_t)`` (lambda-returns for GAE)."""
        return advantages + values

    def sample_weights(self, terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray | None:
        """Per-sample policy-loss weights (T, N), or None for all ones (REINFORCE overrides)."""
        return None

    def _log_episodes(self, info: dict) -> None:
        fin = info.get("final_info", {})
        ep = fin.get("episode")
        if ep is None:
            return
        for n in np.flatnonzero(fin.get("_episode", [])):
            self.episode_returns.append(float(ep["r"][n]))
            self.episode_lengths.append(int(ep["l"][n]))
            self.episodes += 1

    # -------------------------------------------------------------------- helpers
    def optimizer_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                       indices, parameters) -> float:
        """Backward, clip the global gradient norm (``max_grad_norm``), record, step.

        Returns the gradient norm before clipping (inf/NaN are reported, and the step is
        skipped: a non-finite loss would otherwise destroy the parameters).
        """
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in parameters if p.grad is not None]
        norm = float(nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm
                                              if self.cfg.max_grad_norm else float("inf")))
        if not np.isfinite(norm):
            self.nonfinite_steps += 1
            optimizer.zero_grad(set_to_none=True)
            return norm
        if self.recorder is not None:
            self.recorder.current_indices = np.asarray(indices)
        optimizer.step()
        return norm

    def set_progress(self, remaining: float) -> None:
        """Fraction of the run left (1 -> 0); anneals the learning rate when configured."""
        self.progress_remaining = float(remaining)
        if self.cfg.anneal_lr:
            for opt in self.optimizers:
                for group in opt.param_groups:
                    initial = group.setdefault("initial_lr", group["lr"])
                    group["lr"] = initial * self.progress_remaining

    # ---------------------------------------------------------------- checkpoints
    def extra_state(self) -> dict:
        """Algorithm state beyond networks and optimizers (e.g. PPO's KL-penalty beta)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Everything a resumed run needs: networks, optimizers, counters, RNG states and the
        observation/reward normalization statistics."""
        wrappers = [_normalizers(e) for e in self.envs.envs]
        return {"actor": self.actor.state_dict(),
                "critic": None if self.critic is None else self.critic.state_dict(),
                "optimizers": [o.state_dict() for o in self.optimizers],
                "iterations": self.iterations, "env_steps": self.env_steps,
                "episodes": self.episodes, "episode_returns": list(self.episode_returns),
                "episode_lengths": list(self.episode_lengths),
                "torch_rng": torch.get_rng_state(), "numpy_rng": self.rng.bit_generator.state,
                "normalizers": wrappers, "extra": self.extra_state()}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)
        self.iterations, self.env_steps = state["iterations"], state["env_steps"]
        self.episodes = state["episodes"]
        self.episode_returns.extend(state["episode_returns"])
        self.episode_lengths.extend(state["episode_lengths"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        for env, saved in zip(self.envs.envs, state["normalizers"], strict=True):
            _set_normalizers(env, saved)
        self.load_extra_state(state["extra"])

    def observation_statistics(self):
        """The first sub-environment's observation normalizer (for evaluation), or None."""
        return find_wrapper(self.envs.envs[0], gym.wrappers.NormalizeObservation)


def find_wrapper(env, kind):
    """The first wrapper of class ``kind`` around ``env`` (outermost first), or None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, kind):
            return env
        env = env.env
    return None


def _normalizers(env) -> dict:
    out = {}
    obs = find_wrapper(env, gym.wrappers.NormalizeObservation)
    if obs is not None:
        out["obs"] = dataclasses.asdict(_rms(obs.obs_rms))
    rew = find_wrapper(env, gym.wrappers.NormalizeReward)
    if rew is not None:
        out["reward"] = dataclasses.asdict(_rms(rew.return_rms))
        out["discounted_reward"] = np.asarray(rew.discounted_reward).tolist()
    return out


@dataclasses.dataclass
class _RMS:
    mean: list
    var: list
    count: float


def _rms(r) -> _RMS:
    return _RMS(np.asarray(r.mean).tolist(), np.asarray(r.var).tolist(), float(r.count))


def _set_normalizers(env, saved: dict) -> None:
    for key, kind, attr in (("obs", gym.wrappers.NormalizeObservation, "obs_rms"),
                            ("reward", gym.wrappers.NormalizeReward, "return_rms")):
        w = find_wrapper(env, kind)
        if w is not None and key in saved:
            r = getattr(w, attr)
            r.mean = np.asarray(saved[key]["mean"], dtype=np.float64)
            r.var = np.asarray(saved[key]["var"], dtype=np.float64)
            r.count = saved[key]["count"]
            if key == "reward":
                w.discounted_reward = np.asarray(saved["discounted_reward"], dtype=np.float64)
