"""Compact REINFORCE, A2C, TRPO (with NPG) and PPO in torch, each an oracle target.

One file per algorithm (:mod:`~pgtheory.implementations.reinforce`,
:mod:`~pgtheory.implementations.a2c`,
:mod:`~pgtheory.implementations.trpo`, :mod:`~pgtheory.implementations.ppo`), on a shared core of
pure functions (:mod:`~pgtheory.implementations.core`, each validated by a component check) and
shared collection and networks (:mod:`~pgtheory.implementations.common`).
:mod:`~pgtheory.implementations.train` runs them on any gymnasium environment (``pgtheory train``).
:mod:`~pgtheory.implementations.mujoco_lqr` linearizes MuJoCo models (InvertedPendulum-v5's LQR).

The names below are re-exported lazily (PEP 562): the first use of one imports torch, and raises
:class:`pgtheory.extras.MissingExtraError` (``pip install 'pgtheory[oracles]'``) without it.
"""

from __future__ import annotations

from pgtheory.extras import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)
if TYPE_CHECKING:  # the names as static tools (type checkers, mkdocstrings) see them
    from pgtheory.implementations.a2c import A2CAgent, A2CConfig
    from pgtheory.implementations.ppo import PPOAgent, PPOConfig
    from pgtheory.implementations.reinforce import REINFORCEAgent, REINFORCEConfig
    from pgtheory.implementations.trpo import TRPOAgent, TRPOConfig

#: algorithm name -> submodule defining its (agent class, configuration class)
_ALGORITHM_CLASSES: dict[str, tuple[str, str, str]] = {
    "reinforce": ("reinforce", "REINFORCEAgent", "REINFORCEConfig"),
    "a2c": ("a2c", "A2CAgent", "A2CConfig"),
    "trpo": ("trpo", "TRPOAgent", "TRPOConfig"),
    "ppo": ("ppo", "PPOAgent", "PPOConfig"),
}
_EXPORTS: dict[str, str] = {cls: module for module, *classes in _ALGORITHM_CLASSES.values()
                            for cls in classes}

__all__ = ["ALGORITHMS", "A2CAgent", "A2CConfig", "PPOAgent", "PPOConfig", "REINFORCEAgent",
           "REINFORCEConfig", "TRPOAgent", "TRPOConfig"]


def _algorithms() -> dict:
    """``ALGORITHMS``: algorithm name -> (agent class, configuration class); imports torch."""
    return {algo: (__getattr__(agent), __getattr__(config))
            for algo, (_, agent, config) in _ALGORITHM_CLASSES.items()}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, computed={"ALGORITHMS": _algorithms})
