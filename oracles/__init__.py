"""Oracles that validate policy-gradient implementations against exact theory.

* :mod:`oracles.strategies` -- exported Hypothesis strategies (MDPs, policies, rollouts, LQR);
* :mod:`oracles.envs` -- gymnasium oracle environments (``TabularEnv``, five probe envs);
* four layers of checks, each returning a :class:`~oracles.results.CheckResult`:
  :mod:`oracles.components`, :mod:`oracles.batch` (given the batch),
  :mod:`oracles.expectation` (in expectation), :mod:`oracles.update` (update level);
* :mod:`oracles.protocol` -- the implementation-under-test protocol and ``StepRecorder``;
* :mod:`oracles.suite` -- ``plan`` and ``run_suite`` over a target;
* :mod:`oracles.pytest_plugin` -- ``pytest --pg-target MODULE:ATTR`` and fixtures;
* :mod:`oracles.example_target` -- a compact PPO / A2C / TRPO written against the protocol.
"""

from oracles.envs import PROBE_DESCRIPTIONS, ProbeSolution, TabularEnv, probe_mdp, probe_solution
from oracles.results import CheckFailed, CheckResult

__all__ = ["PROBE_DESCRIPTIONS", "CheckFailed", "CheckResult", "ProbeSolution", "TabularEnv",
           "probe_mdp", "probe_solution"]
