"""An example implementation under test: a compact discrete-action PPO / A2C / TRPO in torch.

It shows what the protocol (:mod:`pgtheory.oracles.protocol`) asks of an adapter and is the target
the README's ``pytest --pg-target pgtheory.oracles.example_target:ppo`` runs. Written for
readability; the project's full implementations live in ``implementations/``.

Design: separate actor and critic MLPs (``hidden=0``: linear layers, exactly tabular softmax on
one-hot observations); gymnasium ``SyncVectorEnv`` in ``SAME_STEP`` autoreset mode, so the step
that ends an episode reports the final observation in ``info["final_obs"]`` and the next
observation is already the reset one; GAE with bootstrap from the final observation on
truncation and none on termination; float32 networks.

* ``ppo``: clipped surrogate, value loss, entropy bonus, Adam over epochs of minibatches,
  global gradient-norm clipping (Schulman et al. 2017, arXiv:1707.06347v2).
* ``a2c``: one full-batch Adam step on ``-mean(A log pi) + vf_coef * MSE - ent_coef * H``
  (Mnih et al. 2016, arXiv:1602.01783v2).
* ``trpo``: conjugate gradient on Fisher-vector products with damping, full step
  ``sqrt(2 delta / x^T (F + lambda I) x) x``, backtracking line search accepting the first step
  with batch KL <= delta and surrogate improvement; critic by Adam (Schulman et al. 2015,
  arXiv:1502.05477v5, App. C).

Every algorithmic step is a method, so tests can seed a defect by overriding one.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses

import gymnasium as gym
import numpy as np
import torch
from pgtheory.oracles.protocol import Iteration, Rollout, StepRecorder, snapshot
from torch import nn

__all__ = ["ExampleAgent", "ExampleConfig", "ExampleTarget", "a2c", "backtracking_line_search",
           "clipped_surrogate_loss", "conjugate_gradient", "gae", "ppo", "trpo"]


@dataclasses.dataclass(frozen=True)
class ExampleConfig:
    """Hyperparameters (names as in ``pgtheory.oracles.protocol.HYPERPARAMETERS`` if shared)."""

    algorithm: str = "ppo"
    gamma: float = 0.9
    gae_lambda: float = 0.95
    hidden: int = 16
    learning_rate: float = 3e-3
    n_epochs: int = 4
    n_minibatches: int = 2
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    normalize_advantage: bool = True
    max_grad_norm: float | None = 0.5
    max_kl: float = 0.01
    cg_iters: int = 20
    cg_damping: float = 0.1
    line_search_shrinking_factor: float = 0.5
    line_search_max_iter: int = 10
    critic_steps: int = 5


def gae(rewards, values, terminated, truncated, gamma, lam, next_values) -> np.ndarray:
    """GAE on time-major arrays: the example agent's own implementation (code under test,
    written independently of :mod:`pgtheory.references`, which the oracles check it against).

    Parameters (the argument order of :func:`pgtheory.gae`): ``rewards, values`` of shape
    (T, N) (reward units), boolean ``terminated`` and ``truncated`` (T, N), ``gamma`` in [0, 1),
    ``lam`` in [0, 1], ``next_values`` (T, N), the values of the true next observations (the
    final one at episode ends). Returns advantages (T, N).
    Raises nothing itself (numpy broadcasting errors on mismatched shapes).
    Source: Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16).
    """
    live = 1.0 - np.asarray(terminated, dtype=float)
    delta = rewards + gamma * live * next_values - values
    cont = live * (1.0 - np.asarray(truncated, dtype=float))
    adv = np.zeros_like(delta)
    acc = np.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        acc = delta[t] + gamma * lam * cont[t] * acc
        adv[t] = acc
    return adv


def clipped_surrogate_loss(logp, logp_old, adv, clip_range) -> torch.Tensor:
    """PPO's clipped surrogate, negated to be minimized.

    ``logp, logp_old, adv``: tensors of shape (B,); ``clip_range``: epsilon > 0. Returns a
    scalar tensor. Source: Schulman et al. (2017), arXiv:1707.06347v2, Eq. (7).
    """
    ratio = torch.exp(logp - logp_old)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return -torch.min(ratio * adv, clipped * adv).mean()


def conjugate_gradient(matvec, b, n_iters: int):
    """``n_iters`` conjugate-gradient iterations from 0 for ``A x = b`` (numpy or torch).

    ``matvec(v) = A v`` for symmetric positive-definite ``A``; ``b`` of shape (d,); returns
    ``x`` of shape (d,). Stops early once the squared residual is below 1e-10; a singular
    ``A`` gives inf/NaN (division by ``p^T A p = 0``), which the caller must check.
    Source: Nocedal & Wright (2006), Algorithm 5.2.
    """
    x = b * 0
    r, p = b * 1, b * 1
    rr = r @ r
    for _ in range(n_iters):
        Ap = matvec(p)
        alpha = rr / (p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = r @ r
        if rr_new < 1e-10:
            break
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def backtracking_line_search(objective, kl, x0, full_step, max_kl, backtrack_coef,
                             max_backtracks: int):
    """The first ``x0 + c^k full_step`` (k = 0..max_backtracks) with ``kl <= max_kl`` and an
    improved ``objective``, else ``x0``.

    ``objective`` and ``kl`` map a parameter vector (shape (d,), like ``x0`` and
    ``full_step``) to floats (``kl`` in nats). Raises nothing itself.
    Source: Schulman et al. (2015), arXiv:1502.05477v5, App. C.
    """
    f0 = objective(x0)
    for k in range(max_backtracks + 1):
        x = x0 + backtrack_coef**k * full_step
        if kl(x) <= max_kl and objective(x) > f0:
            return x
    return x0


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Module:
    if hidden == 0:
        return nn.Linear(n_in, n_out)
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out))


class ExampleAgent:
    """A discrete-action actor-critic agent that follows the oracle protocol."""

    def __init__(self, env_fn, config: ExampleConfig, *, seed: int, num_envs: int,
                 num_steps: int) -> None:
        self.cfg, self.T, self.N = config, num_steps, num_envs
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.envs = gym.vector.SyncVectorEnv([env_fn] * num_envs,
                                             autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        n_actions = int(self.envs.single_action_space.n)
        self.actor = _mlp(obs_dim, n_actions, config.hidden)
        self.critic = _mlp(obs_dim, 1, config.hidden)
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        self.optimizer = torch.optim.Adam(
            params if config.algorithm != "trpo" else self.critic.parameters(),
            lr=config.learning_rate)
        self.recorder = StepRecorder(self.named_parameters(), [self.optimizer])
        self.obs, _ = self.envs.reset(seed=seed)

    # ------------------------------------------------------------------ protocol
    def named_parameters(self) -> dict:
        return {**{f"actor.{k}": v for k, v in self.actor.named_parameters()},
                **{f"critic.{k}": v for k, v in self.critic.named_parameters()}}

    def distribution(self, obs) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.actor(torch.as_tensor(obs)))

    def value(self, obs) -> torch.Tensor:
        return self.critic(torch.as_tensor(obs)).squeeze(-1)

    def iterate(self) -> Iteration:
        at_collection = snapshot(self.named_parameters())
        rollout = self._collect()
        self.update(rollout)
        return Iteration(rollout, at_collection, self.recorder.take(),
                         snapshot(self.named_parameters()))

    # ----------------------------------------------------------------- collection
    def collect(self) -> Rollout:
        """One collection from fresh env resets, without an update (the protocol's trials)."""
        self.obs, _ = self.envs.reset()
        return self._collect()

    def _collect(self) -> Rollout:
        T = self.T
        buf = {k: [] for k in ("obs", "act", "rew", "term", "trunc", "next", "logp")}
        for _ in range(T):
            with torch.no_grad():
                dist = self.distribution(self.obs)
                action = dist.sample()
            next_obs, reward, term, trunc, info = self.envs.step(action.numpy())
            true_next = next_obs.copy()
            if "final_obs" in info:  # SAME_STEP autoreset: the episode's last observation
                for n in np.flatnonzero(info["_final_obs"]):
                    true_next[n] = info["final_obs"][n]
            for k, v in zip(buf, (self.obs, action.numpy(), reward, term, trunc, true_next,
                                  dist.log_prob(action).numpy()), strict=True):
                buf[k].append(np.asarray(v))
            self.obs = next_obs
        b = {k: np.stack(v) for k, v in buf.items()}
        with torch.no_grad():
            values = self.value(b["obs"]).numpy()
            next_values = self.value(b["next"]).numpy()
        adv = self.advantages(b["rew"], values, b["term"], b["trunc"], next_values=next_values)
        return Rollout(b["obs"], b["act"], b["rew"], b["term"], b["trunc"], b["next"],
                       b["logp"], adv, values, adv + values)

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> np.ndarray:
        return gae(rewards, values, terminated, truncated, self.cfg.gamma, self.cfg.gae_lambda,
                   next_values).astype(np.float32)

    # -------------------------------------------------------------------- losses
    def policy_loss(self, logp, logp_old, adv) -> torch.Tensor:
        if self.cfg.algorithm == "a2c":
            return -(adv * logp).mean()
        return clipped_surrogate_loss(logp, logp_old, adv, self.cfg.clip_range)

    def value_loss(self, values, returns) -> torch.Tensor:
        return ((returns - values) ** 2).mean()

    def entropy_loss(self, dist) -> torch.Tensor:
        return -self.cfg.ent_coef * dist.entropy().mean()

    def normalize(self, adv) -> torch.Tensor:
        if not self.cfg.normalize_advantage or adv.numel() < 2:
            return adv
        return (adv - adv.mean()) / (adv.std() + 1e-8)

    # -------------------------------------------------------------------- update
    def _tensors(self, r: Rollout):
        return (torch.as_tensor(r.flat("observations")), torch.as_tensor(r.flat("actions")),
                torch.as_tensor(r.flat("log_probs")), torch.as_tensor(r.flat("advantages")),
                torch.as_tensor(r.flat("returns")))

    def update(self, r: Rollout) -> None:
        if self.cfg.algorithm == "trpo":
            self.trpo_update(r)
            self.critic_update(r)
            return
        obs, act, logp_old, adv, ret = self._tensors(r)
        B = obs.shape[0]
        epochs, mbs = ((1, 1) if self.cfg.algorithm == "a2c"
                       else (self.cfg.n_epochs, self.cfg.n_minibatches))
        for _ in range(epochs):
            for idx in np.array_split(self.rng.permutation(B), mbs):
                dist = self.distribution(obs[idx])
                loss = (self.policy_loss(dist.log_prob(act[idx]), logp_old[idx],
                                         self.normalize(adv[idx]))
                        + self.entropy_loss(dist)
                        + self.cfg.vf_coef * self.value_loss(self.value(obs[idx]), ret[idx]))
                self.optimizer.zero_grad()
                loss.backward()
                if self.cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"],
                                             self.cfg.max_grad_norm)
                self.recorder.current_indices = idx
                self.optimizer.step()

    def critic_update(self, r: Rollout) -> None:
        obs, _, _, _, ret = self._tensors(r)
        idx = np.arange(obs.shape[0])
        for _ in range(self.cfg.critic_steps):
            loss = self.value_loss(self.value(obs), ret)
            self.optimizer.zero_grad()
            loss.backward()
            self.recorder.current_indices = idx
            self.optimizer.step()

    # ---------------------------------------------------------------------- TRPO
    def _flat_actor(self) -> torch.Tensor:
        return nn.utils.parameters_to_vector(self.actor.parameters())

    def _set_actor(self, flat: torch.Tensor) -> None:
        nn.utils.vector_to_parameters(flat, self.actor.parameters())

    def trpo_update(self, r: Rollout) -> None:
        obs, act, logp_old, adv, _ = self._tensors(r)
        adv = self.normalize(adv)
        with torch.no_grad():
            old = self.distribution(obs)
        params = list(self.actor.parameters())

        def surrogate() -> torch.Tensor:
            return (torch.exp(self.distribution(obs).log_prob(act) - logp_old) * adv).mean()

        def mean_kl() -> torch.Tensor:
            return torch.distributions.kl_divergence(old, self.distribution(obs)).mean()

        g = nn.utils.parameters_to_vector(torch.autograd.grad(surrogate(), params))
        grad_kl = nn.utils.parameters_to_vector(
            torch.autograd.grad(mean_kl(), params, create_graph=True))

        def fvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(grad_kl @ v, params, retain_graph=True)
            return nn.utils.parameters_to_vector(hv).detach() + self.cfg.cg_damping * v

        if not torch.isfinite(g).all() or g.norm() < 1e-8:
            return  # no signal: all advantages (nearly) equal
        x = self.solve(fvp, g)
        step = self.step_size(x @ fvp(x)) * x
        self.line_search(step, surrogate, mean_kl)

    def solve(self, fvp, g) -> torch.Tensor:
        return conjugate_gradient(fvp, g, self.cfg.cg_iters)

    def step_size(self, xHx) -> torch.Tensor:
        return torch.sqrt(2 * self.cfg.max_kl / xHx)

    def line_search(self, full_step, surrogate, mean_kl) -> None:
        theta0 = self._flat_actor().detach().clone()

        def at(fn):
            def evaluate(theta):
                self._set_actor(theta)
                with torch.no_grad():
                    return float(fn())
            return evaluate

        theta = backtracking_line_search(at(surrogate), at(mean_kl), theta0, full_step,
                                         self.cfg.max_kl, self.cfg.line_search_shrinking_factor,
                                         self.cfg.line_search_max_iter)
        self._set_actor(theta)


class ExampleTarget:
    """A protocol target wrapping :class:`ExampleAgent` with one configuration."""

    def __init__(self, config: ExampleConfig | None = None, *, agent_class=None,
                 **changes) -> None:
        self.config = dataclasses.replace(config or ExampleConfig(), **changes)
        self.algorithm = self.config.algorithm
        self.name = f"example-{self.algorithm}"
        c = self.config
        hp = {"gamma": c.gamma, "gae_lambda": c.gae_lambda, "ent_coef": c.ent_coef,
              "vf_coef": c.vf_coef, "normalize_advantage": c.normalize_advantage}
        if c.algorithm == "ppo":
            hp["clip_range"] = c.clip_range
        if c.algorithm == "trpo":
            hp.update(max_kl=c.max_kl, cg_damping=c.cg_damping,
                      line_search_shrinking_factor=c.line_search_shrinking_factor, ent_coef=0.0)
        self.hyperparameters = hp
        self.agent_class = agent_class or ExampleAgent
        self.components = {"gae": gae}
        if c.algorithm == "ppo":
            self.components["clipped_surrogate_loss"] = clipped_surrogate_loss
        if c.algorithm == "trpo":
            self.components.update(conjugate_gradient=conjugate_gradient,
                                   backtracking_line_search=backtracking_line_search)

    def with_hyperparameters(self, **changes) -> ExampleTarget:
        """The same target with some hyperparameters changed (used by the oracles)."""
        return ExampleTarget(self.config, agent_class=self.agent_class, **changes)

    def make_agent(self, env_fn, *, seed: int, num_envs: int, num_steps: int):
        return self.agent_class(env_fn, self.config, seed=seed, num_envs=num_envs,
                                num_steps=num_steps)


def ppo() -> ExampleTarget:
    """The example PPO target (defaults of :class:`ExampleConfig`)."""
    return ExampleTarget(algorithm="ppo")


def a2c() -> ExampleTarget:
    """The example A2C target (lambda = 1, no advantage normalization)."""
    return ExampleTarget(algorithm="a2c", gae_lambda=1.0, normalize_advantage=False)


def trpo() -> ExampleTarget:
    """The example TRPO target (delta = 0.01, damping 0.1)."""
    return ExampleTarget(algorithm="trpo")
