"""Oracles that validate policy-gradient implementations against exact theory.

Built so far (issue 5, in progress): :mod:`oracles.strategies` (exported Hypothesis
strategies), :mod:`oracles.envs` (gymnasium oracle environments: ``TabularEnv`` and the five
probe environments), :mod:`oracles.results` (``CheckResult``) and :mod:`oracles.components`
(layer 1: GAE, returns, lambda-returns, PPO clipped surrogate and value losses with gradients,
categorical entropy and KL, k1/k2/k3 KL estimators, Gaussian log-prob/entropy/KL, conjugate
gradient, backtracking line search), and the first in-expectation check
(:mod:`oracles.expectation`: advantage estimates against the exact GAE expectation, Holm-
corrected, false-positive rate measured). Not built yet: the given-the-batch and update-level
layers, the other in-expectation checks (returns, gradient estimators, critics), the
implementation-under-test protocol and the pytest plugin.
"""

from oracles.envs import PROBE_DESCRIPTIONS, ProbeSolution, TabularEnv, probe_mdp, probe_solution
from oracles.results import CheckFailed, CheckResult

__all__ = ["PROBE_DESCRIPTIONS", "CheckFailed", "CheckResult", "ProbeSolution", "TabularEnv",
           "probe_mdp", "probe_solution"]
