"""pgtheory: exact policy-gradient theory on finite MDPs, in float64.

Conventions (shared by every module; details in :mod:`pgtheory.mdp`):

* ``P[s, a, s']`` shape (S, A, S) (sparse: a ``(S * A, S)`` scipy matrix), ``R[s, a]`` shape
  (S, A) (``R[s, a, s']`` accepted and reduced with P), ``mu`` shape (S,), gamma in [0, 1),
  policies ``pi[s, a]`` shape (S, A), row-stochastic. Reward ``r_t`` is for acting in ``s_t``.
* Two visitation measures, under distinct names: ``rho_pi(s) = sum_t gamma^t P(s_t = s)``
  (unnormalized, sums to 1/(1-gamma); TRPO) via ``discounted_visitation(..., normalized=False)``
  and ``d_pi = (1 - gamma) rho_pi`` (sums to 1; Agarwal et al. 2021) via the default
  ``normalized=True``. What sampled rollouts see is :func:`on_policy_distribution`.
* KL direction: ``kl_divergence(p, q) = KL(p || q)``; TRPO constrains ``KL(pi_old || pi_new)``.
* Terminal states are absorbing with zero reward; ``terminated`` and ``truncated`` are kept
  apart everywhere (a truncation bootstraps from the final observation's value).

Every error is a ``ValueError`` subclass from :mod:`pgtheory.errors`.

The re-exports below are lazy (PEP 562): ``import pgtheory`` loads no submodule, and the first
use of a name imports the submodule that defines it. The exact-theory core needs numpy and scipy
only; the optional parts (:mod:`pgtheory.oracles`, :mod:`pgtheory.implementations`,
:mod:`pgtheory.proofs`, :mod:`pgtheory.lab`) name the extra they need when it is missing
(:mod:`pgtheory.extras`).
"""

from __future__ import annotations

from pgtheory.extras import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)
if TYPE_CHECKING:  # the names as static tools (type checkers, mkdocstrings) see them
    from pgtheory.advantage_estimation import discounted_returns, expected_gae, gae, lambda_returns
    from pgtheory.bounds import (
        CPIBound,
        CPOBound,
        PerformanceDifference,
        TRPOBound,
        cpi_lower_bound,
        cpo_lower_bound,
        performance_difference,
        surrogate,
        trpo_lower_bound,
    )
    from pgtheory.divergences import (
        PolicyDivergence,
        kl_divergence,
        policy_divergence,
        total_variation,
    )
    from pgtheory.errors import (
        InvalidArgumentError,
        InvalidMDPError,
        InvalidPolicyError,
        InvalidRolloutError,
        NonFiniteResultError,
        SolverError,
    )
    from pgtheory.evaluation import (
        PolicyEvaluation,
        PolicyIterationResult,
        action_values,
        advantages,
        discounted_visitation,
        expected_return,
        on_policy_distribution,
        policy_iteration,
        state_values,
    )
    from pgtheory.examples import chain, gridworld, short_corridor, sigmoid_policy, two_armed_bandit
    from pgtheory.gradients import (
        ParameterizedEvaluation,
        PPOObjective,
        TRPOStep,
        action_state_weights,
        evaluate,
        fisher_matrix,
        kl_hessian,
        natural_gradient,
        npg_step,
        policy_gradient,
        ppo_objective,
        trpo_step,
    )
    from pgtheory.mdp import TabularMDP, random_mdp
    from pgtheory.parameterizations import DirectParameterization, LinearSoftmax, TabularSoftmax

__version__ = "0.1.0"

#: submodule of pgtheory -> the public names it defines (re-exported lazily)
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "advantage_estimation": ("discounted_returns", "expected_gae", "gae", "lambda_returns"),
    "bounds": (
        "CPIBound", "CPOBound", "PerformanceDifference", "TRPOBound", "cpi_lower_bound",
        "cpo_lower_bound", "performance_difference", "surrogate", "trpo_lower_bound",
    ),
    "divergences": ("PolicyDivergence", "kl_divergence", "policy_divergence", "total_variation"),
    "errors": (
        "InvalidArgumentError", "InvalidMDPError", "InvalidPolicyError", "InvalidRolloutError",
        "NonFiniteResultError", "SolverError",
    ),
    "evaluation": (
        "PolicyEvaluation", "PolicyIterationResult", "action_values", "advantages",
        "discounted_visitation", "expected_return", "on_policy_distribution", "policy_iteration",
        "state_values",
    ),
    "examples": ("chain", "gridworld", "short_corridor", "sigmoid_policy", "two_armed_bandit"),
    "gradients": (
        "PPOObjective", "ParameterizedEvaluation", "TRPOStep", "action_state_weights",
        "evaluate", "fisher_matrix", "kl_hessian",
        "natural_gradient", "npg_step", "policy_gradient", "ppo_objective", "trpo_step",
    ),
    "mdp": ("TabularMDP", "random_mdp"),
    "parameterizations": ("DirectParameterization", "LinearSoftmax", "TabularSoftmax"),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _EXPORTS_BY_MODULE.items()
                            for name in names}
#: numpy/scipy-only submodules, importable as attributes (``pgtheory.lqr``) without an import
_SUBMODULES = frozenset({*_EXPORTS_BY_MODULE, "extras", "lqr"})

__all__ = [
    "CPIBound",
    "CPOBound",
    "DirectParameterization",
    "InvalidArgumentError",
    "InvalidMDPError",
    "InvalidPolicyError",
    "InvalidRolloutError",
    "LinearSoftmax",
    "NonFiniteResultError",
    "PPOObjective",
    "ParameterizedEvaluation",
    "PerformanceDifference",
    "PolicyDivergence",
    "PolicyEvaluation",
    "PolicyIterationResult",
    "SolverError",
    "TRPOBound",
    "TRPOStep",
    "TabularMDP",
    "TabularSoftmax",
    "action_state_weights",
    "action_values",
    "advantages",
    "chain",
    "cpi_lower_bound",
    "cpo_lower_bound",
    "discounted_returns",
    "discounted_visitation",
    "evaluate",
    "expected_gae",
    "expected_return",
    "fisher_matrix",
    "gae",
    "gridworld",
    "kl_divergence",
    "kl_hessian",
    "lambda_returns",
    "natural_gradient",
    "npg_step",
    "on_policy_distribution",
    "performance_difference",
    "policy_divergence",
    "policy_gradient",
    "policy_iteration",
    "ppo_objective",
    "random_mdp",
    "short_corridor",
    "sigmoid_policy",
    "state_values",
    "surrogate",
    "total_variation",
    "trpo_lower_bound",
    "trpo_step",
    "two_armed_bandit",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, submodules=_SUBMODULES)
