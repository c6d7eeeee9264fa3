"""Advantage Actor-Critic (A2C): synchronous n-step actor-critic with GAE.

Read top to bottom: the configuration, the agent (its advantage estimate and its update), the
oracle target. Shared pieces (collection, networks, the protocol) are in
:mod:`pgtheory.implementations.common`; every loss and estimator is a function of
:mod:`pgtheory.implementations.core` with its own component check.

Implementation details and their sources
----------------------------------------
* Synchronous variant of A3C: ``N`` environments step together for ``num_steps`` (5) steps;
  one optimizer step per iteration on ``-mean(A log pi) - ent_coef H + vf_coef 0.5 (V - R)^2``
  over the whole batch, actor and critic together (shared optimizer step): Mnih et al. (2016),
  arXiv:1602.01783v2, Algorithm S3; Wu et al. (2017), "OpenAI Baselines: ACKTR & A2C".
* Advantages by GAE with ``lambda = 1`` by default, i.e. the n-step return bootstrapped from the
  critic at the buffer end and on truncation, never on termination: Schulman et al. (2016),
  arXiv:1506.02438v6, Eq. (16); Pardo et al. (2018), arXiv:1712.00378v4.
* RMSprop (``alpha = 0.99``, ``eps = 1e-5``) as in Mnih et al. (2016) and baselines; no advantage
  normalization; global gradient-norm clipping at ``max_grad_norm``.
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses

import numpy as np
import torch
from pgtheory.implementations import core
from pgtheory.implementations.common import Agent, Batch, CommonConfig, ConfigError

__all__ = ["A2CAgent", "A2CConfig"]


@dataclasses.dataclass(frozen=True)
class A2CConfig(CommonConfig):
    """A2C settings (defaults: Mnih et al. 2016 / OpenAI baselines a2c).

    Attributes (beyond :class:`~pgtheory.implementations.common.CommonConfig`)
    ---------------------------------------------------------------
    optimizer : {"rmsprop", "adam"}
    rmsprop_alpha : float
        RMSprop smoothing constant.
    """

    gae_lambda: float = 1.0
    num_steps: int = 5
    learning_rate: float = 7e-4
    ent_coef: float = 0.01
    optimizer: str = "rmsprop"
    rmsprop_alpha: float = 0.99

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer not in ("rmsprop", "adam"):
            raise ConfigError(f"optimizer: expected 'rmsprop' or 'adam', received "
                              f"{self.optimizer!r}")


class A2CAgent(Agent):
    """A2C on a vector of gymnasium environments (see the module docstring)."""

    algorithm = "a2c"
    cfg: A2CConfig

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        if self.cfg.optimizer == "rmsprop":
            self.optimizer = torch.optim.RMSprop(params, lr=self.cfg.learning_rate,
                                                 alpha=self.cfg.rmsprop_alpha, eps=1e-5)
        else:
            self.optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate, eps=1e-5)
        return [self.optimizer]

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> torch.Tensor:
        return core.gae(rewards, values, terminated, truncated, self.cfg.gamma,
                        self.cfg.gae_lambda, next_values=next_values)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        idx = np.arange(len(batch))
        dist = self.actor(batch.observations)
        logp = dist.log_prob(batch.actions)
        policy_loss = core.policy_gradient_loss(logp, batch.advantages)
        v_loss = core.value_loss(self.critic(batch.observations), batch.returns)
        entropy = dist.entropy().mean()
        loss = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        norm = self.optimizer_step(self.optimizer, loss, idx, params)
        return {"policy_loss": policy_loss.item(), "value_loss": v_loss.item(),
                "entropy": entropy.item(), "grad_norm": norm}
