"""Layer 2, given the batch: what an implementation applied on its own batch, recomputed exactly.

Every check takes the agent and the :class:`~pgtheory.oracles.protocol.Iteration` records it
produced and recomputes, with autograd on the agent's *own* network at the *recorded* parameters and
on the *same* samples, what the update should have been. No MDP model is needed, so these checks
run on any environment (MuJoCo included). Deterministic: tolerances absorb float32 rounding.

* :func:`check_batch_advantages` -- stored advantages against GAE recomputed from the stored
  rewards and flags and the critic at collection time (bootstrapping from the final
  observation on truncation, never on termination).
* :func:`check_batch_returns` -- stored critic targets against advantages + values.
* :func:`check_policy_gradients` -- every recorded optimizer step's actor gradient against the
  gradient of the canonical policy loss (PPO clipped surrogate or ``-mean(A log pi)``, plus
  the entropy bonus) on that minibatch, equal up to a positive scalar (gradient-norm clipping,
  sum vs mean), under every advantage normalization correct libraries use
  (:data:`ADVANTAGE_NORMALIZATIONS`); reports which variant matched.
* :func:`check_value_gradients` -- the critic's gradient against the value losses correct
  libraries use (:data:`VALUE_LOSS_VARIANTS`: squared error; with value clipping,
  Stable-Baselines3's clipped prediction or the PPO2/CleanRL max form); reports which matched.
* :func:`check_trpo_steps` -- the actor step against ``(F + lambda I)^{-1} g`` with ``F`` the
  batch Fisher (Hessian of the mean KL, built by autograd from the oracle's own closed-form
  KL, :func:`closed_form_kl`, not from a KL the implementation registered), its length against
  ``beta c^j`` with ``beta = sqrt(2 delta / x^T (F + lambda I) x)``, the batch KL of the
  accepted step against delta, and the surrogate improvement.

The checks live in one module per family and are re-exported here:
:mod:`pgtheory.oracles.batch_advantages` (advantages, returns),
:mod:`pgtheory.oracles.batch_losses` (actor and critic gradients),
:mod:`pgtheory.oracles.batch_trpo` (TRPO steps, batch Fisher, CG replay), on the shared pieces of
:mod:`pgtheory.oracles.batch_common`.

Every expected value is computed by :mod:`pgtheory.references` (losses through their exact
derivative in the log-probabilities or values, chained through the agent's network by autograd);
failure messages name the registry entry of :mod:`pgtheory.oracles.defects` that reproduces
the recorded quantity (``[catalogue: NAME]``).

References: Schulman et al. (2015), arXiv:1502.05477v5, Sec. 6 and App. C; Schulman et al.
(2016), arXiv:1506.02438v6, Eq. (16); Schulman et al. (2017), arXiv:1707.06347v2, Eqs. (7), (9).
"""

from __future__ import annotations

from pgtheory.oracles.batch_advantages import (
    FLOAT32_GAE_ROUNDING,
    check_batch_advantages,
    check_batch_returns,
)
from pgtheory.oracles.batch_common import (
    ADVANTAGE_NORMALIZATIONS,
    LAYER,
    parameter_roles,
)
from pgtheory.oracles.batch_losses import (
    POLICY_DEFECTS,
    VALUE_LOSS_VARIANTS,
    canonical_actor_gradient,
    check_policy_gradients,
    check_value_gradients,
    episode_steps,
)
from pgtheory.oracles.batch_trpo import (
    CG_START_DRAWS,
    CG_START_MARGIN,
    batch_fisher,
    cg_replay,
    cg_start_tolerance,
    check_trpo_steps,
    closed_form_kl,
)
from pgtheory.oracles.protocol import parameters_set

__all__ = ["ADVANTAGE_NORMALIZATIONS", "CG_START_DRAWS", "CG_START_MARGIN",
           "FLOAT32_GAE_ROUNDING", "LAYER", "POLICY_DEFECTS", "VALUE_LOSS_VARIANTS",
           "batch_fisher", "canonical_actor_gradient", "cg_replay", "cg_start_tolerance",
           "check_batch_advantages", "check_batch_returns", "check_policy_gradients",
           "check_trpo_steps", "check_value_gradients", "closed_form_kl", "episode_steps",
           "parameter_roles", "parameters_set"]
