"""Compact REINFORCE, A2C, TRPO (with NPG) and PPO in torch, each an oracle target.

One file per algorithm (:mod:`~implementations.reinforce`, :mod:`~implementations.a2c`,
:mod:`~implementations.trpo`, :mod:`~implementations.ppo`), on a shared core of pure functions
(:mod:`~implementations.core`, each validated by a component check) and shared collection and
networks (:mod:`~implementations.common`). :mod:`~implementations.train` runs them on any
gymnasium environment (``pgtheory train``).
"""

from implementations.a2c import A2CAgent, A2CConfig
from implementations.ppo import PPOAgent, PPOConfig
from implementations.reinforce import REINFORCEAgent, REINFORCEConfig
from implementations.trpo import TRPOAgent, TRPOConfig

#: algorithm name -> (agent class, configuration class)
ALGORITHMS = {"reinforce": (REINFORCEAgent, REINFORCEConfig), "a2c": (A2CAgent, A2CConfig),
              "trpo": (TRPOAgent, TRPOConfig), "ppo": (PPOAgent, PPOConfig)}

__all__ = ["ALGORITHMS", "A2CAgent", "A2CConfig", "PPOAgent", "PPOConfig", "REINFORCEAgent",
           "REINFORCEConfig", "TRPOAgent", "TRPOConfig"]
