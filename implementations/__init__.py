"""Compact REINFORCE, A2C, TRPO (with NPG) and PPO in torch, each an oracle target.

One file per algorithm (:mod:`~pgtheory.implementations.reinforce`,
:mod:`~pgtheory.implementations.a2c`,
:mod:`~pgtheory.implementations.trpo`, :mod:`~pgtheory.implementations.ppo`), on a shared core of
pure functions (:mod:`~pgtheory.implementations.core`, each validated by a component check) and
shared collection and networks (:mod:`~pgtheory.implementations.common`).
:mod:`~pgtheory.implementations.train` runs them on any gymnasium environment (``pgtheory train``).
"""

from pgtheory.implementations.a2c import A2CAgent, A2CConfig
from pgtheory.implementations.ppo import PPOAgent, PPOConfig
from pgtheory.implementations.reinforce import REINFORCEAgent, REINFORCEConfig
from pgtheory.implementations.trpo import TRPOAgent, TRPOConfig

#: algorithm name -> (agent class, configuration class)
ALGORITHMS = {"reinforce": (REINFORCEAgent, REINFORCEConfig), "a2c": (A2CAgent, A2CConfig),
              "trpo": (TRPOAgent, TRPOConfig), "ppo": (PPOAgent, PPOConfig)}

__all__ = ["ALGORITHMS", "A2CAgent", "A2CConfig", "PPOAgent", "PPOConfig", "REINFORCEAgent",
           "REINFORCEConfig", "TRPOAgent", "TRPOConfig"]
