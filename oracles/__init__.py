"""Oracles that validate policy-gradient implementations against exact theory.

* :mod:`pgtheory.oracles.strategies` -- exported Hypothesis strategies (MDPs, policies, rollouts,
LQR);
* :mod:`pgtheory.oracles.envs` -- gymnasium oracle environments (``TabularEnv``, five probe envs);
* four layers of checks, each returning a :class:`~pgtheory.oracles.results.CheckResult`:
  :mod:`pgtheory.oracles.components`, :mod:`pgtheory.oracles.batch` (given the batch),
  :mod:`pgtheory.oracles.expectation` (in expectation), :mod:`pgtheory.oracles.update` (update
  level);
* :mod:`pgtheory.oracles.protocol` -- the implementation-under-test protocol and ``StepRecorder``;
* :mod:`pgtheory.oracles.suite` -- ``plan`` and ``run_suite`` over a target;
* :mod:`pgtheory.oracles.pytest_plugin` -- ``pytest --pg-target MODULE:ATTR`` and fixtures;
* :mod:`pgtheory.oracles.example_target` -- a compact PPO / A2C / TRPO written against the protocol.
"""

from pgtheory.oracles.envs import (
           PROBE_DESCRIPTIONS,
           ProbeSolution,
           TabularEnv,
           probe_mdp,
           probe_solution,
)
from pgtheory.oracles.results import CheckFailed, CheckResult

__all__ = ["PROBE_DESCRIPTIONS", "CheckFailed", "CheckResult", "ProbeSolution", "TabularEnv",
           "probe_mdp", "probe_solution"]
