"""Trust Region Policy Optimization, and the natural policy gradient as a switch (``npg``).

Read top to bottom: the configuration, the agent (its advantage estimate and its update), the
oracle target. Shared pieces (collection, networks, the protocol) are in
:mod:`pgtheory.implementations.common`; every loss and estimator is a function of
:mod:`pgtheory.implementations.core` with its own component check.

Implementation details and their sources
----------------------------------------
* Surrogate ``L(theta) = mean(pi_theta(a|s) / pi_old(a|s) A)`` and its gradient ``g`` at
  ``theta_old`` (advantages normalized over the batch when ``normalize_advantage``):
  Schulman et al. (2015), arXiv:1502.05477v5, Eq. (14).
* Search direction ``x ~ (F + lambda I)^{-1} g`` by ``cg_iters`` conjugate-gradient iterations on
  Fisher-vector products, ``F v`` being the Hessian-vector product of the exact mean
  ``KL(pi_old || pi_theta)`` at ``theta_old`` (App. C). The damping ``lambda = cg_damping``
  regularizes the solve where ``F`` is (near-)singular, e.g. along softmax logit shifts; it
  shortens the step in low-curvature directions.
* Full step ``sqrt(2 delta / x^T (F + lambda I) x) x`` (the step whose quadratic model of the KL
  equals ``delta = max_kl``); then a backtracking line search accepting the first
  ``c^k``-shrunk step with batch KL ``<= delta`` and an improved surrogate, else no step
  (App. C). ``npg=True`` takes the full step without the line search: the natural policy
  gradient of Kakade (2001), NeurIPS, with TRPO's step length.
* Critic regressed separately: ``critic_epochs`` passes of Adam on ``0.5 (V - R)^2`` with
  ``critic_minibatches`` minibatches, ``R`` the GAE(lambda) returns (Schulman et al. 2016,
  arXiv:1506.02438v6, Sec. 5).
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses

import numpy as np
import torch
from pgtheory.implementations import core
from pgtheory.implementations.common import Agent, Batch, CommonConfig, ConfigError
from torch import nn

__all__ = ["TRPOAgent", "TRPOConfig"]


@dataclasses.dataclass(frozen=True)
class TRPOConfig(CommonConfig):
    """TRPO settings (defaults: the tuned MuJoCo settings of sb3-contrib's TRPO in RL Baselines3
    Zoo: 1024 steps, delta 0.01, 25 CG iterations, damping 0.1, 20 critic epochs at 1e-3).

    Attributes (beyond :class:`~pgtheory.implementations.common.CommonConfig`)
    ---------------------------------------------------------------
    max_kl : float
        Trust-region radius delta (nats).
    cg_iters : int
    cg_damping : float
        lambda in ``(F + lambda I) x = g``.
    line_search_shrinking_factor : float
        c in (0, 1).
    line_search_max_iter : int
    npg : bool
        Natural policy gradient: the full step, no line search.
    normalize_advantage : bool
        Normalize advantages over the batch.
    critic_epochs, critic_minibatches : int
        Critic regression passes and minibatches per pass.
    """

    num_steps: int = 1024
    learning_rate: float = 1e-3
    max_kl: float = 0.01
    cg_iters: int = 25
    cg_damping: float = 0.1
    line_search_shrinking_factor: float = 0.8
    line_search_max_iter: int = 10
    npg: bool = False
    normalize_advantage: bool = True
    critic_epochs: int = 20
    critic_minibatches: int = 16
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.max_kl > 0:
            raise ConfigError(f"max_kl: expected > 0, received {self.max_kl!r}")
        if not 0 < self.line_search_shrinking_factor < 1:
            raise ConfigError(f"line_search_shrinking_factor: expected a value in (0, 1), "
                              f"received {self.line_search_shrinking_factor!r}")
        if not self.cg_damping >= 0:
            raise ConfigError(f"cg_damping: expected >= 0, received {self.cg_damping!r}")


class TRPOAgent(Agent):
    """TRPO (or NPG) on a vector of gymnasium environments (see the module docstring)."""

    algorithm = "trpo"
    cfg: TRPOConfig

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.learning_rate)
        return [self.optimizer]

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> torch.Tensor:
        return core.gae(rewards, values, terminated, truncated, self.cfg.gamma,
                        self.cfg.gae_lambda, next_values=next_values)

    def update(self, batch: Batch) -> dict[str, float]:
        stats = self.actor_step(batch)
        stats.update(self.critic_regression(batch))
        return stats

    # ------------------------------------------------------------------ actor
    def actor_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        obs, act, logp_old = batch.observations, batch.actions, batch.log_probs
        adv = core.normalize(batch.advantages) if cfg.normalize_advantage else batch.advantages
        params = list(self.actor.parameters())
        with torch.no_grad():
            old = self.actor(obs)

        def surrogate() -> torch.Tensor:
            return (torch.exp(self.actor(obs).log_prob(act) - logp_old) * adv).mean()

        def mean_kl() -> torch.Tensor:
            return torch.distributions.kl_divergence(old, self.actor(obs)).mean()

        g = nn.utils.parameters_to_vector(torch.autograd.grad(surrogate(), params))
        if not torch.isfinite(g).all() or float(g.norm()) < 1e-10:
            return {"accepted": 0.0, "kl": 0.0, "backtracks": float("nan")}
        grad_kl = nn.utils.parameters_to_vector(
            torch.autograd.grad(mean_kl(), params, create_graph=True))

        def fisher_vector_product(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(grad_kl @ v, params, retain_graph=True)
            return nn.utils.parameters_to_vector(hv).detach() + cfg.cg_damping * v

        x = core.conjugate_gradient(fisher_vector_product, g, cfg.cg_iters)
        xFx = x @ fisher_vector_product(x)
        if not torch.isfinite(xFx) or float(xFx) <= 0:
            return {"accepted": 0.0, "kl": 0.0, "backtracks": float("nan")}
        full_step = self.full_step_scale(xFx) * x
        theta0 = nn.utils.parameters_to_vector(params).detach().clone()

        def at(fn):
            def evaluate(theta: torch.Tensor) -> float:
                nn.utils.vector_to_parameters(theta, params)
                with torch.no_grad():
                    return float(fn())
            return evaluate

        if cfg.npg:
            theta = theta0 + full_step
        else:
            theta = core.backtracking_line_search(
                at(surrogate), at(mean_kl), theta0, full_step, cfg.max_kl,
                cfg.line_search_shrinking_factor, cfg.line_search_max_iter)
        nn.utils.vector_to_parameters(theta, params)
        with torch.no_grad():
            kl = float(mean_kl())
            gain = float(surrogate() - adv.mean())  # the surrogate at theta_old is mean(A)
        moved = float((theta - theta0).norm() / full_step.norm())
        backtracks = (np.log(moved) / np.log(cfg.line_search_shrinking_factor)
                      if moved > 0 else float("nan"))
        return {"accepted": float(moved > 0), "kl": kl,
                "backtracks": abs(float(np.round(backtracks))), "surrogate_gain": gain}

    def full_step_scale(self, xFx: torch.Tensor) -> torch.Tensor:
        """``beta = sqrt(2 delta / x^T (F + lambda I) x)``: the step ``beta x`` whose quadratic
        KL model ``1/2 beta^2 x^T F x`` equals delta (Schulman et al. 2015, App. C)."""
        return torch.sqrt(2 * self.cfg.max_kl / xFx)

    # ----------------------------------------------------------------- critic
    def critic_regression(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        params = list(self.critic.parameters())
        losses = []
        for _ in range(cfg.critic_epochs):
            for idx in np.array_split(self.rng.permutation(len(batch)), cfg.critic_minibatches):
                if idx.size == 0:
                    continue
                i = torch.as_tensor(idx, device=self.device)
                loss = core.value_loss(self.critic(batch.observations[i]), batch.returns[i])
                self.optimizer_step(self.optimizer, loss, idx, params)
                losses.append(loss.item())
        return {"value_loss": float(np.mean(losses)) if losses else float("nan")}
