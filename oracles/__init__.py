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

The names below are re-exported lazily (PEP 562): ``import pgtheory.oracles`` imports neither
torch nor gymnasium (the pytest plugin lives in this package and is loaded by every pytest
session), and the first use of a name imports its submodule, which raises
:class:`pgtheory.extras.MissingExtraError` (``pip install 'pgtheory[oracles]'``) when the extra
is missing.
"""

from __future__ import annotations

from pgtheory.extras import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)
if TYPE_CHECKING:  # the names as static tools (type checkers, mkdocstrings) see them
    from pgtheory.oracles import strategies
    from pgtheory.oracles.audit import run_audit
    from pgtheory.oracles.envs import (
        PROBE_DESCRIPTIONS,
        LinearQuadraticEnv,
        ProbeSolution,
        TabularEnv,
        probe_mdp,
        probe_solution,
    )
    from pgtheory.oracles.protocol import Iteration, Rollout, StepRecorder, Update, load_target
    from pgtheory.oracles.results import CheckFailed, CheckResult
    from pgtheory.oracles.suite import plan, run_suite

#: submodule of pgtheory.oracles -> the public names it defines (re-exported lazily)
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "audit": ("run_audit",),
    "envs": ("PROBE_DESCRIPTIONS", "LinearQuadraticEnv", "ProbeSolution", "TabularEnv",
             "probe_mdp", "probe_solution"),
    "protocol": ("Iteration", "Rollout", "StepRecorder", "Update", "load_target"),
    "results": ("CheckFailed", "CheckResult"),
    "suite": ("plan", "run_suite"),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _EXPORTS_BY_MODULE.items()
                            for name in names}
#: submodules exported as attributes
_SUBMODULES = frozenset({"strategies"})

__all__ = ["PROBE_DESCRIPTIONS", "CheckFailed", "CheckResult", "Iteration", "LinearQuadraticEnv",
           "ProbeSolution", "Rollout", "StepRecorder", "TabularEnv", "Update", "load_target",
           "plan", "probe_mdp", "probe_solution", "run_audit", "run_suite", "strategies"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=_SUBMODULES)
