"""Proximal Policy Optimization (clipped surrogate; adaptive-KL-penalty variant as a switch).

Read top to bottom: the configuration, the agent (its advantage estimate and its update), the
oracle target. Shared pieces (collection, networks, the protocol) are in
:mod:`pgtheory.implementations.common`; every loss and estimator is a function of
:mod:`pgtheory.implementations.core` with its own component check.

Implementation details and their sources
----------------------------------------
* Clipped surrogate ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``: Schulman et al. (2017),
  arXiv:1707.06347v2, Eq. (7). Adaptive KL penalty (``kl_penalty=True``): Eq. (8), ``beta``
  doubled when the batch KL exceeds ``1.5 kl_target`` and halved below ``kl_target / 1.5``
  (Sec. 4); the KL is exact (from the two distributions), not sampled.
* GAE(gamma, lambda) with a bootstrap from the final observation's value on truncation and none
  on termination: Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16); Pardo et al. (2018),
  arXiv:1712.00378v4 (time limits).
* ``n_epochs`` passes of ``n_minibatches`` shuffled minibatches; advantages normalized per
  minibatch (unbiased std); global gradient-norm clipping at ``max_grad_norm``; optional linear
  learning-rate annealing: Andrychowicz et al. (2021), arXiv:2006.05990v1; Huang et al. (2022),
  "The 37 Implementation Details of PPO".
* Optional value clipping ``clip_range_vf`` (OpenAI baselines ppo2), entropy bonus ``ent_coef``.
* Optional early stopping: the epoch loop stops before a minibatch step once that minibatch's
  mean k3 estimate of ``KL(pi_old || pi)`` exceeds ``target_kl`` (J. Schulman, "Approximating
  KL Divergence", 2020).
* Orthogonal initialization, state-independent log-std, opt-in observation normalization and
  reward scaling wrappers: see :mod:`pgtheory.implementations.common`.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses

import numpy as np
import torch
from pgtheory.implementations import core
from pgtheory.implementations.common import Agent, Batch, CommonConfig, ConfigError

__all__ = ["PPOAgent", "PPOConfig"]


@dataclasses.dataclass(frozen=True)
class PPOConfig(CommonConfig):
    """PPO settings (defaults: the MuJoCo settings of Schulman et al. 2017, Table 3).

    Attributes (beyond :class:`~pgtheory.implementations.common.CommonConfig`)
    ---------------------------------------------------------------
    n_epochs, n_minibatches : int
        Passes over the batch and minibatches per pass.
    clip_range : float
        eps of the clipped surrogate.
    clip_range_vf : float or None
        Value clipping range (reward units); None: unclipped squared error.
    normalize_advantage : bool
        Per-minibatch normalization.
    target_kl : float or None
        Early-stopping threshold on the k3 KL estimate; None: off.
    kl_penalty : bool
        Use the adaptive-KL-penalty objective instead of clipping.
    kl_target, kl_beta_init : float
        Target KL and initial beta of the penalty variant.
    """

    num_steps: int = 2048
    learning_rate: float = 3e-4
    anneal_lr: bool = True
    n_epochs: int = 10
    n_minibatches: int = 32
    clip_range: float = 0.2
    clip_range_vf: float | None = None
    normalize_advantage: bool = True
    target_kl: float | None = None
    kl_penalty: bool = False
    kl_target: float = 0.01
    kl_beta_init: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.clip_range > 0:
            raise ConfigError(f"clip_range: expected > 0, received {self.clip_range!r}")
        if int(self.n_epochs) < 1 or int(self.n_minibatches) < 1:
            raise ConfigError(f"n_epochs, n_minibatches: expected positive integers, received "
                              f"{self.n_epochs!r}, {self.n_minibatches!r}")


class PPOAgent(Agent):
    """PPO on a vector of gymnasium environments (see the module docstring)."""

    algorithm = "ppo"
    cfg: PPOConfig

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        # The fused kernel computes the same Adam update in one call for all parameters (on
        # CPU about 4x faster than the per-parameter loop for these small networks).
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate, eps=1e-5,
                                          fused=True)
        self.beta = self.cfg.kl_beta_init
        return [self.optimizer]

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> torch.Tensor:
        return core.gae(rewards, values, terminated, truncated, self.cfg.gamma,
                        self.cfg.gae_lambda, next_values=next_values)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        stats: dict[str, list] = {"policy_loss": [], "value_loss": [], "entropy": [],
                                  "approx_kl": [], "clip_fraction": [], "grad_norm": []}
        old_params = {k: v.detach().clone() for k, v in self.actor.named_parameters()}
        stopped = False
        for _epoch in range(cfg.n_epochs):
            for idx in np.array_split(self.rng.permutation(len(batch)), cfg.n_minibatches):
                if idx.size == 0:
                    continue
                i = torch.as_tensor(idx, device=self.device)
                obs = batch.observations[i]
                dist = self.actor(obs)
                logp = dist.log_prob(batch.actions[i])
                logp_old = batch.log_probs[i]
                with torch.no_grad():
                    kl = core.kl_k3(logp, logp_old).mean()  # KL(pi_old || pi), x ~ pi_old
                if cfg.target_kl is not None and float(kl) > cfg.target_kl:
                    stopped = True
                    break
                adv = batch.advantages[i]
                if cfg.normalize_advantage:
                    adv = core.normalize(adv)
                if cfg.kl_penalty:
                    with torch.no_grad():
                        old = torch.func.functional_call(self.actor, old_params, (obs,))
                    exact_kl = torch.distributions.kl_divergence(old, dist)
                    policy_loss = core.kl_penalty_loss(logp, logp_old, adv, exact_kl, self.beta)
                else:
                    policy_loss = core.clipped_surrogate_loss(logp, logp_old, adv, cfg.clip_range)
                v = self.critic(obs)
                if cfg.clip_range_vf is None:
                    v_loss = core.value_loss(v, batch.returns[i])
                else:
                    v_loss = core.clipped_value_loss(v, batch.values[i], batch.returns[i],
                                                     cfg.clip_range_vf)
                if cfg.ent_coef:
                    entropy = dist.entropy().mean()
                    loss = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                else:  # the same loss and gradient; the entropy is only logged
                    with torch.no_grad():
                        entropy = dist.entropy().mean()
                    loss = policy_loss + cfg.vf_coef * v_loss
                norm = self.optimizer_step(self.optimizer, loss, idx, params)
                with torch.no_grad():
                    clipped = (torch.exp(logp - logp_old) - 1.0).abs() > cfg.clip_range
                for k, x in zip(stats, (policy_loss, v_loss, entropy, kl,
                                        clipped.float().mean(), norm), strict=True):
                    stats[k].append(x.item() if torch.is_tensor(x) else x)
            if stopped:
                break
        out = {k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()}
        out["early_stopped"] = float(stopped)
        if cfg.kl_penalty:
            out["kl"] = self._adapt_beta(batch, old_params)
            out["beta"] = self.beta
        return out

    def _adapt_beta(self, batch: Batch, old_params: dict) -> float:
        """Exact mean KL(pi_old || pi_new) over the batch; beta doubled / halved (Eq. 8)."""
        with torch.no_grad():
            old = torch.func.functional_call(self.actor, old_params, (batch.observations,))
            kl = float(torch.distributions.kl_divergence(old, self.actor(batch.observations))
                       .mean())
        if kl > 1.5 * self.cfg.kl_target:
            self.beta *= 2.0
        elif kl < self.cfg.kl_target / 1.5:
            self.beta /= 2.0
        return kl

    def extra_state(self) -> dict:
        return {"beta": self.beta}

    def load_extra_state(self, state: dict) -> None:
        self.beta = state.get("beta", self.cfg.kl_beta_init)
