"""REINFORCE: Monte Carlo policy gradient with reward-to-go and an optional learned baseline.

Read top to bottom: the configuration, the agent (its advantage estimate and its update), the
oracle target. Shared pieces (collection, networks, the protocol) are in
:mod:`pgtheory.implementations.common`; every loss and estimator is a function of
:mod:`pgtheory.implementations.core` with its own component check.

Implementation details and their sources
----------------------------------------
* Every iteration resets the ``N`` environments and collects ``num_steps`` steps in each, so
  every buffer holds episodes from their first step. The estimate for step ``t`` is the
  discounted reward-to-go ``G_t`` minus the baseline ``b(s_t)`` (Williams 1992, Sec. 4; Sutton
  & Barto 2018, Sec. 13.3-13.4). An episode cut by the buffer end is completed by the
  baseline's value of the last observation (0 without a baseline), and a time-limit truncation
  bootstraps from the final observation's value; a termination never does. Without a baseline
  the returns of cut episodes are therefore partial sums: keep ``num_steps`` above the episode
  length, or use the baseline (the default).
* ``gamma_t_weighting`` (default False) multiplies the t-th term by ``gamma^t`` (``t`` = steps
  since the episode began). With it, the expected update is the gradient of the discounted
  objective ``J(theta) = E[sum_t gamma^t r_t]`` (policy-gradient theorem, Sutton et al. 2000,
  Thm. 1: states weighted by the discounted visitation). Without it (what most code does), states
  are weighted by how often the policy visits them; the expectation is not the gradient of any
  objective in general (Nota & Thomas 2020, arXiv:1906.07073v2), although it often learns well.
  The oracles compute the exact expectation of either.
* One Adam step per iteration on ``-mean(w_t (G_t - b(s_t)) log pi(a_t | s_t)) + vf_coef
  0.5 (b(s_t) - G_t)^2``; the baseline is a separate network (it never changes the expected
  gradient, only its variance).
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses

import numpy as np
import torch
from pgtheory.implementations import core
from pgtheory.implementations.common import Agent, Batch, CommonConfig, ConfigError

__all__ = ["REINFORCEAgent", "REINFORCEConfig"]


@dataclasses.dataclass(frozen=True)
class REINFORCEConfig(CommonConfig):
    """REINFORCE settings.

    Attributes (beyond :class:`~pgtheory.implementations.common.CommonConfig`)
    ---------------------------------------------------------------
    baseline : bool
        Learn a state-value baseline ``b(s)`` (regressed on the returns).
    gamma_t_weighting : bool
        Multiply the t-th term by ``gamma^t`` (the exact discounted gradient).
    """

    gae_lambda: float = 1.0
    num_steps: int = 1000
    learning_rate: float = 1e-3
    baseline: bool = True
    gamma_t_weighting: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gae_lambda != 1.0:
            raise ConfigError(f"gae_lambda: REINFORCE uses Monte Carlo returns (lambda = 1), "
                              f"received {self.gae_lambda!r}")


class REINFORCEAgent(Agent):
    """REINFORCE on a vector of gymnasium environments (see the module docstring)."""

    algorithm = "reinforce"
    collection = "reset"
    cfg: REINFORCEConfig

    def __init__(self, env_fn, config: REINFORCEConfig, **kwargs) -> None:
        self.uses_critic = bool(config.baseline)
        super().__init__(env_fn, config, **kwargs)

    def build_optimizers(self) -> list[torch.optim.Optimizer]:
        params = list(self.actor.parameters())
        if self.critic is not None:
            params += list(self.critic.parameters())
        self.optimizer = torch.optim.Adam(params, lr=self.cfg.learning_rate)
        return [self.optimizer]

    def advantages(self, rewards, values, terminated, truncated, *, next_values) -> torch.Tensor:
        returns = core.discounted_returns(rewards, terminated, truncated, self.cfg.gamma,
                                          next_values=next_values)
        return returns - values

    def sample_weights(self, terminated: np.ndarray, truncated: np.ndarray) -> np.ndarray | None:
        if not self.cfg.gamma_t_weighting:
            return None
        T, N = terminated.shape
        elapsed = np.zeros((T, N), np.int64)  # buffers start at resets (collection = "reset")
        for t in range(1, T):
            elapsed[t] = np.where(terminated[t - 1] | truncated[t - 1], 0, elapsed[t - 1] + 1)
        return (self.cfg.gamma ** elapsed).astype(np.float32)

    def update(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        params = [p for net in (self.actor, self.critic) if net is not None
                  for p in net.parameters()]
        idx = np.arange(len(batch))
        dist = self.actor(batch.observations)
        logp = dist.log_prob(batch.actions)
        policy_loss = core.policy_gradient_loss(logp, batch.advantages, batch.weights)
        entropy = dist.entropy().mean()
        loss = policy_loss - cfg.ent_coef * entropy
        v_loss = torch.zeros(())
        if self.critic is not None:
            v_loss = core.value_loss(self.critic(batch.observations), batch.returns)
            loss = loss + cfg.vf_coef * v_loss
        norm = self.optimizer_step(self.optimizer, loss, idx, params)
        return {"policy_loss": policy_loss.item(), "value_loss": v_loss.item(),
                "entropy": entropy.item(), "grad_norm": norm}
