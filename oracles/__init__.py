"""Oracles that validate policy-gradient implementations against exact theory.

Built so far (issue 5, in progress): :mod:`oracles.strategies` (exported Hypothesis
strategies) and :mod:`oracles.envs` (gymnasium oracle environments: ``TabularEnv`` and the five
probe environments). The check layers, the implementation-under-test protocol and the pytest
plugin are not built yet; nothing here claims to check an implementation.
"""

from oracles.envs import PROBE_DESCRIPTIONS, ProbeSolution, TabularEnv, probe_mdp, probe_solution

__all__ = ["PROBE_DESCRIPTIONS", "ProbeSolution", "TabularEnv", "probe_mdp", "probe_solution"]
