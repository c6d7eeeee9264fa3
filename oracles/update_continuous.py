"""Layer 4, update level, continuous actions: exact consequences of updates on the LQR oracle.

On the suite's LQR environment (:func:`pgtheory.oracles.envs.lqr_env_fn`: the double integrator,
episodes truncated after :data:`~pgtheory.oracles.envs.LQR_TIME_LIMIT` steps, never terminated)
an agent whose policy is **affine-Gaussian** -- ``u ~ N(-K x + k, diag(sigma^2))`` with a
state-independent ``sigma``: a linear policy layer with bias and a free log-std
(Stable-Baselines3 with ``net_arch=[]``, this project's algorithms with ``hidden_sizes=()``)
-- has exact closed forms (:mod:`pgtheory.lqr`):

* :func:`affine_policy` -- reads ``(K, k, log_sigma)`` off the agent by probing its
  distribution's mean and standard deviation at ``n + 1`` states and verifies the fit at
  random further states; any other policy class gets :class:`NotAffineError` and the checks
  report *not applicable* (verdict ``skip``) with the measured residual;
* :func:`check_update_kl` -- the exact mean ``KL(pi_k || pi_{k+1})`` of every recorded update
  under the exact law of the states in the update's buffer (steps since each env's reset read
  off the truncation flags; the start of an episode begun in an earlier buffer was collected by
  that buffer's policy), and on the batch the step was computed from, against TRPO's delta;
* :func:`check_improvement` -- the exact finite-horizon return ``J_T`` (the discounted return
  of an episode of the time limit, what the environment delivers) over a training run, with the
  tabular check's rule widened for biased steps (see the function).

* :func:`check_convergence` -- the exact discounted return of the trained policy's mean
  against the Riccati optimum's; in the suite a gap is inconclusive, never a failure (the
  audit's budget does not reach the optimum on correct code: measured 2026-11-30, seed 0,
  9,600 env steps, ``J_T`` from -17.9 to -15.9 (our PPO), -12.4 (TRPO), -17.4 (A2C) against
  ``J*_T = -11.3``).

The fitted critic (``update_level.critic@lqr``) is judged in
:mod:`pgtheory.oracles.critic_continuous`, against the exact TD(lambda) fixed point of its own
class (an affine critic cannot represent the quadratic value).

References: Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12) (the mean-KL constraint);
Kakade & Langford (2002) (improvement for small steps); Fazel et al. (2018), arXiv:1801.05039
(policy gradient on LQR).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from pgtheory.oracles.results import CheckResult

import pgtheory.lqr as lqr

__all__ = [
    "AffinePolicy",
    "NotAffineError",
    "affine_policy",
    "batch_kl",
    "buffer_law",
    "check_convergence",
    "check_improvement",
    "check_update_kl",
    "steps_since_reset",
]

LAYER = "update_level"

#: Relative residual (of the largest |mean| over the probe states) above which the policy mean
#: is not affine. float32 networks compute an affine map with a relative rounding error of a
#: few float32 epsilons (1.2e-7) per term; 1e-4 leaves a margin of 100 for n <= 10 inputs,
#: while a tanh MLP's curvature at states of norm ~2 is a percent-level effect.
AFFINE_RTOL = 1e-4
#: Relative spread of the standard deviation across probe states above which it is state
#: dependent.
STD_RTOL = 1e-4
#: Fall of J_T, relative to its scale, that update_level.improvement@lqr names in its
#: explanation (an INCONCLUSIVE reading, never a failure: see check_improvement for the
#: measurement behind it).
IMPROVEMENT_RTOL = 0.15
#: Gap of the trained mean's exact return to the Riccati optimum's, relative to ``|J*|``, that
#: counts as converged (check_convergence).
CONVERGENCE_RTOL = 0.05
#: Number of random verification states (N(0, PROBE_SCALE^2 I)).
N_VERIFY = 16
PROBE_SCALE = 2.0


class NotAffineError(ValueError):
    """The agent's policy is not affine-Gaussian with a state-independent std (the message says
    what was measured): the exact LQR closed forms do not apply to it."""


@dataclasses.dataclass(frozen=True)
class AffinePolicy:
    """``u ~ N(-K x + bias, diag(exp(2 log_sigma)))``.

    Attributes
    ----------
    K : ndarray, shape (m, n)
    bias : ndarray, shape (m,)
    log_sigma : ndarray, shape (m,)
    """

    K: np.ndarray
    bias: np.ndarray
    log_sigma: np.ndarray

    def same_as(self, other: AffinePolicy, atol: float = 1e-9) -> bool:
        return all(np.allclose(a, b, rtol=0.0, atol=atol) for a, b in
                   ((self.K, other.K), (self.bias, other.bias),
                    (self.log_sigma, other.log_sigma)))


def affine_policy(agent, n_state: int, parameters: dict | None = None, *,
                  seed: int = 0) -> AffinePolicy:
    """The agent's policy as an exact affine-Gaussian ``(K, bias, log_sigma)``.

    The mean ``mu(x)`` and standard deviation ``s(x)`` of ``agent.distribution`` are read at
    ``x = 0``, ``x = PROBE_SCALE e_i`` (``n + 1`` states: an affine map is determined by them,
    ``-K e_i = (mu(PROBE_SCALE e_i) - mu(0)) / PROBE_SCALE``, ``bias = mu(0)``) and at
    :data:`N_VERIFY` random states ``N(0, PROBE_SCALE^2 I)`` (seeded). The policy is accepted
    when the affine prediction matches every probed mean within ``AFFINE_RTOL * max |mu|``
    (plus 1e-7 absolute, for a mean that is zero everywhere) and ``s`` is the same at every state
    within ``STD_RTOL`` relative.

    Parameters
    ----------
    agent
        A protocol agent whose ``distribution(obs)`` has ``mean`` and ``stddev`` of shape
        (B, m) (a diagonal Gaussian; ``torch.distributions.Independent(Normal)`` qualifies).
    n_state : int
        Observation dimension (the LQR state).
    parameters : dict, optional
        Evaluate at these parameters (restored afterwards); default the current ones.
    seed : int
        Seeds the verification states.

    Returns
    -------
    AffinePolicy
        float64 arrays.

    Raises
    ------
    NotAffineError
        No ``mean``/``stddev``, non-finite values, a mean that is not affine in the state or a
        state-dependent std (the message gives the measured residual and the tolerance).
    """
    import torch
    from pgtheory.oracles.protocol import parameters_set

    rng = np.random.default_rng([30_011, seed])
    probes = np.vstack([np.zeros(n_state), PROBE_SCALE * np.eye(n_state),
                        rng.normal(scale=PROBE_SCALE, size=(N_VERIFY, n_state))])

    def read():
        with torch.no_grad():
            d = agent.distribution(torch.as_tensor(probes, dtype=torch.float32))
            if not (hasattr(d, "mean") and hasattr(d, "stddev")):
                raise NotAffineError(f"not applicable: the policy distribution "
                                     f"{type(d).__name__} has no mean and stddev (expected a "
                                     f"diagonal Gaussian)")
            try:
                mu, sd = d.mean, d.stddev
            except NotImplementedError:
                raise NotAffineError(f"not applicable: the policy distribution "
                                     f"{type(d).__name__} has no closed-form mean and "
                                     f"stddev (e.g. a squashed Gaussian)") from None
            return (mu.detach().cpu().numpy().astype(np.float64),
                    torch.broadcast_to(sd, mu.shape).detach().cpu().numpy().astype(np.float64))

    if parameters is None:
        mu, sd = read()
    else:
        with parameters_set(agent, parameters):
            mu, sd = read()
    if mu.ndim != 2 or mu.shape[0] != len(probes):
        raise NotAffineError(f"not applicable: expected a policy mean of shape "
                             f"({len(probes)}, m), received {mu.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
        raise NotAffineError("not applicable: the policy mean or std is not finite and "
                             "positive at the probe states")
    bias = mu[0]
    K = -((mu[1:n_state + 1] - bias) / PROBE_SCALE).T
    pred = bias + probes @ (-K.T)
    resid = float(np.abs(pred - mu).max())
    tol = AFFINE_RTOL * float(np.abs(mu).max()) + 1e-7
    if resid > tol:
        raise NotAffineError(f"not applicable: the policy mean is not affine in the state (max "
                             f"residual {resid:.3g} of an affine fit at {len(probes)} probe "
                             f"states, allowed {tol:.3g}); the LQR closed forms hold for "
                             f"affine-Gaussian policies only")
    spread = float((sd.max(axis=0) / sd.min(axis=0) - 1.0).max())
    if spread > STD_RTOL:
        raise NotAffineError(f"not applicable: the policy std depends on the state (relative "
                             f"spread {spread:.3g} over {len(probes)} probe states, allowed "
                             f"{STD_RTOL:g}); the LQR closed forms need a state-independent "
                             f"log-std")
    return AffinePolicy(K=K, bias=bias, log_sigma=np.log(sd[0]))


def steps_since_reset(truncated_flags: list, terminated_flags: list | None = None, *,
                      time_limit: int, valid: list | None = None) -> list[np.ndarray]:
    """Steps since each env's reset at every position of consecutive buffers.

    The buffers are collected continuously (the first starts at fresh resets; each later one
    continues the episodes the previous one cut). A column whose count contradicts its
    truncation flags (an agent that resets its envs at every collection) is re-read from its
    first truncation, which marks step ``time_limit - 1``. Under next-step autoreset
    (``valid``: False at the slot after each episode end, which only resets the env) a reset
    slot holds -1 and the slot after it starts its episode at 0.

    Parameters
    ----------
    truncated_flags : list of ndarray of bool, shape (T_k, N)
    terminated_flags : list of ndarray of bool, shape (T_k, N), optional
    time_limit : int
    valid : list of (ndarray of bool, shape (T_k, N), or None), optional
        :attr:`pgtheory.oracles.protocol.Rollout.valid` of each buffer.

    Returns
    -------
    list of ndarray of int, shape (T_k, N)
        -1 at next-step autoreset slots.

    Raises
    ------
    ValueError
        A termination on the never-terminating LQR env, or flags that no time limit of
        ``time_limit`` explains.
    """
    if valid is not None and any(v is not None for v in valid):
        return _steps_with_reset_slots(truncated_flags, terminated_flags, valid, time_limit)
    out, carry = [], None
    for k, trunc in enumerate(truncated_flags):
        trunc = _truncations(truncated_flags, terminated_flags, k)
        L, N = trunc.shape
        e = np.zeros((L, N), int)
        e[0] = 0 if carry is None else carry
        for t in range(1, L):
            e[t] = np.where(trunc[t - 1], 0, e[t - 1] + 1)
        for j in range(N):
            if np.array_equal(trunc[:, j], e[:, j] == time_limit - 1):
                continue
            hits = np.flatnonzero(trunc[:, j])
            start = time_limit - 1 - int(hits[0]) if len(hits) else -1
            col = np.zeros(L, int)
            if start >= 0:
                col[0] = start
                for t in range(1, L):
                    col[t] = 0 if trunc[t - 1, j] else col[t - 1] + 1
            if start < 0 or not np.array_equal(trunc[:, j], col == time_limit - 1):
                raise ValueError(f"buffer {k}, env {j}: the truncation flags do not follow a "
                                 f"time limit of {time_limit} steps")
            e[:, j] = col
        out.append(e)
        carry = np.where(trunc[-1], 0, e[-1] + 1)
    return out


def _truncations(truncated_flags, terminated_flags, k: int) -> np.ndarray:
    """Buffer ``k``'s truncation flags as bool; a termination is refused (LQR never ends)."""
    if terminated_flags is not None and np.any(terminated_flags[k]):
        raise ValueError(f"buffer {k}: expected no termination on the LQR environment "
                         f"(it never terminates), received terminated flags")
    return np.asarray(truncated_flags[k], dtype=bool)


def _steps_with_reset_slots(truncated_flags, terminated_flags, valid, time_limit):
    """:func:`steps_since_reset` for buffers with next-step autoreset slots (-1 there)."""
    out, carry = [], None
    for k, trunc in enumerate(truncated_flags):
        trunc = _truncations(truncated_flags, terminated_flags, k)
        ok = np.ones(trunc.shape, bool) if valid[k] is None else np.asarray(valid[k], bool)
        L, N = trunc.shape
        e = np.zeros((L, N), int)
        prev = np.zeros(N, int) - 1 if carry is None else carry  # -1: a fresh start follows
        for t in range(L):
            e[t] = np.where(~ok[t], -1, np.where(prev < 0, 0, prev + 1))
            prev = np.where(trunc[t] & ok[t], -1, e[t])
        if not np.array_equal(trunc & ok, ok & (e == time_limit - 1)):
            raise ValueError(f"buffer {k}: the truncation flags and reset slots do not follow a "
                             f"time limit of {time_limit} steps")
        out.append(e)
        carry = prev
    return out


def buffer_law(model: lqr.LQRModel, policies: list[AffinePolicy], elapsed: list[np.ndarray],
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean (n,) and second moment (n, n) of the state at a uniform position of buffer
    ``k``.

    Position ``(t, j)`` holds the state ``e = elapsed[k][t, j]`` steps after a reset; step
    ``s < e`` of that episode was taken at row ``t - e + s`` of buffer ``k``, or of an earlier
    buffer when negative, by that buffer's collecting policy ``policies[k']``
    (:func:`pgtheory.lqr.state_moments` with per-step policies). Rows before the first buffer
    (an agent whose first buffer starts mid-episode) are taken as collected by ``policies[0]``.
    Positions with ``e < 0`` (next-step autoreset slots) hold no state of an episode and are
    left out of the uniform draw; an episode's rows never include one.

    Raises
    ------
    InvalidArgumentError
        As :func:`pgtheory.lqr.state_moments`.
    """
    lengths = [len(e) for e in elapsed]
    E = elapsed[k]
    mean = np.zeros(model.n_state)
    second = np.zeros((model.n_state, model.n_state))
    cache: dict = {}
    for t, j in itertools.product(range(E.shape[0]), range(E.shape[1])):
        e = int(E[t, j])
        if e < 0:
            continue
        owners = []
        for s in range(e):
            row, kk = t - e + s, k
            while row < 0 and kk > 0:
                kk -= 1
                row += lengths[kk]
            owners.append(kk)
        key = tuple(owners)
        if key not in cache:
            pols = [policies[o] for o in owners] or [policies[k]]
            stack = (lambda xs: np.stack(xs)) if owners else (lambda xs: xs[0])
            law = lqr.state_moments(model, stack([p.K for p in pols]),
                                    stack([p.log_sigma for p in pols]), len(owners),
                                    bias=stack([p.bias for p in pols]))
            cache[key] = (law.mean[-1], law.second_moment[-1])
        mean += cache[key][0]
        second += cache[key][1]
    count = max(int((E >= 0).sum()), 1)
    return mean / count, second / count


def batch_kl(old: AffinePolicy, new: AffinePolicy, states) -> tuple[float, float]:
    """``(mean KL(old || new), mean KL(new || old))`` over the given states, in closed form.

    Per state ``x`` the diagonal-Gaussian KL ``sum_i [log(s2_i / s1_i) + (s1_i^2 + d_i(x)^2) /
    (2 s2_i^2) - 1/2]`` with ``d(x) = (K_new - K_old) x + (k_old - k_new)`` (proofs theorem
    ``gaussian_kl``).

    Parameters
    ----------
    states : array_like, shape (B, n)

    Returns
    -------
    (float, float)
        Nats.
    """
    x = np.asarray(states, dtype=np.float64)
    d = x @ (new.K - old.K).T + (old.bias - new.bias)

    def kl(l1, l2):
        s1, s2 = np.exp(2 * l1), np.exp(2 * l2)
        return float(np.mean(np.sum(l2 - l1 + (s1 + d * d) / (2 * s2) - 0.5, axis=1)))

    return kl(old.log_sigma, new.log_sigma), kl(new.log_sigma, old.log_sigma)


#: Relative excess of the batch KL over delta that fails a hard trust region (TRPO): the
#: implementation evaluates the same closed form in float32, a relative difference of about
#: 1e-6; 1% leaves room for implementations whose KL is a sample estimate of it.
BATCH_KL_RTOL = 0.01


def check_update_kl(model: lqr.LQRModel, collected: list[AffinePolicy],
                    updated: list[AffinePolicy], elapsed: list[np.ndarray], *,
                    batches: list | None = None, max_kl: float | None = None,
                    hard: bool = True, slack: float = 3.0) -> CheckResult:
    """Exact mean KL of every update, under its buffer's exact state law and on its batch.

    For update ``k`` (collecting policy ``collected[k]``, policy after the update
    ``updated[k]``) two exact quantities (affine-Gaussian policies, closed forms):

    * the mean ``E_x KL(pi_k(.|x) || pi_{k+1}(.|x))`` under the exact law of a uniformly drawn
      position of the update's buffer (:func:`buffer_law`, :func:`pgtheory.lqr.kl_divergence`),
      reported;
    * the mean KL over the states of the batch the step was computed from (``batches[k]``),
      in both directions (:func:`batch_kl`): TRPO bounds ``KL(old || new)`` (Schulman et al.
      2015; this project's TRPO) or ``KL(new || old)`` (sb3-contrib) by delta on its batch.

    Rule: with ``hard`` (TRPO with a line search) a batch KL above ``delta (1 +
    BATCH_KL_RTOL)`` in both directions **fails**: the trust region is not enforced on the
    very states it was computed from. Without ``hard`` (PPO's ``target_kl``, an early stop
    checked after the fact) the batch KL fails above ``slack * delta``. Otherwise, an exact
    law KL above ``slack * delta`` is **inconclusive**: the step respects delta on its batch,
    and a batch of a few episodes under-represents the state law in some directions (measured
    2026-11-30, ``python tools/lqr_update_false_alarms.py --seeds 20 --first-seed 10``: our
    TRPO at seed 29 took a step of exact KL 0.032 = 3.2 delta from a 64-state batch), so the
    excess is sampling, not a defect by itself. Without ``batches`` the exact law KL alone is
    judged, as the tabular check: fail above ``slack * delta``.

    Parameters
    ----------
    model : LQRModel
        The environment's model (gamma is not used).
    collected, updated : list of AffinePolicy
        One per recorded update, in order.
    elapsed : list of ndarray of int, shape (T_k, N)
        :func:`steps_since_reset` of the buffers.
    batches : list of array_like, shape (B_k, n), optional
        The states each actor step used.
    max_kl : float, optional
        The declared bound; without it the KLs are reported and the verdict is ``skip``.
    hard : bool
        Whether the bound is a hard constraint on the batch (TRPO's line search).
    slack : float

    Returns
    -------
    CheckResult
        Named ``update_level.kl@lqr``.

    Raises
    ------
    ValueError
        No update, or lists of different lengths.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12) and Sec. 6;
    :func:`pgtheory.lqr.kl_divergence`.
    """
    name = "update_level.kl@lqr"
    if not collected or len(collected) != len(updated) or len(collected) != len(elapsed) or (
            batches is not None and len(batches) != len(collected)):
        raise ValueError(f"collected, updated, elapsed, batches: expected equal non-zero "
                         f"lengths, received {len(collected)}, {len(updated)}, "
                         f"{len(elapsed)}, {None if batches is None else len(batches)}")
    kls = []
    for k, (old, new) in enumerate(zip(collected, updated, strict=True)):
        mu, S = buffer_law(model, collected, elapsed, k)
        kls.append(lqr.kl_divergence(model, old.K, old.log_sigma, new.K, new.log_sigma,
                                     state_second_moment_=S, bias=old.bias, bias_new=new.bias,
                                     state_mean=mu))
    on_batch = ([min(batch_kl(o, n, b)) for o, n, b in zip(collected, updated, batches,
                                                             strict=True)]
                if batches is not None else None)
    worst = int(np.argmax(kls))
    summary = f"max {kls[worst]:.3g} (update {worst}), median {np.median(kls):.3g}"
    where = "under the exact state law of its buffer (affine-Gaussian policy on LQR)"
    if on_batch is not None:
        wb = int(np.argmax(on_batch))
        summary += f"; on the batches max {on_batch[wb]:.3g} (update {wb})"
    if max_kl is None:
        return CheckResult(name, LAYER, "skip", "no KL bound declared", summary,
                           f"exact mean KL per update {where}: {summary}; the target declares "
                           f"no trust region, so nothing is asserted")
    limit = max_kl * (1 + BATCH_KL_RTOL) if hard else slack * max_kl
    if on_batch is not None and on_batch[wb] > limit:
        return CheckResult(name, LAYER, "fail", f"batch KL <= {limit:.3g}", f"{on_batch[wb]:.3g}",
                           f"update {wb} moved the policy by mean KL {on_batch[wb]:.3g} on the "
                           f"very batch it was computed from (both KL directions above "
                           f"{limit:.3g}; delta {max_kl}): the trust region is not enforced; "
                           f"exact mean KL {where}: {summary}", tolerance=limit)
    if kls[worst] > slack * max_kl and on_batch is None:
        return CheckResult(name, LAYER, "fail", f"<= {slack} x delta = {slack * max_kl:.3g}",
                           f"{kls[worst]:.3g}",
                           f"update {worst} moved the policy by exact mean KL {kls[worst]:.3g} "
                           f"{where}, more than {slack} x delta ({max_kl}): the trust region "
                           f"is not enforced", tolerance=slack * max_kl)
    if kls[worst] > slack * max_kl:
        return CheckResult(name, LAYER, "inconclusive", f"<= {slack} x delta",
                           f"{kls[worst]:.3g}",
                           f"update {worst} moved the policy by exact mean KL {kls[worst]:.3g} "
                           f"{where}, more than {slack} x delta ({max_kl}), but every step "
                           f"respects the bound on its own batch ({summary}): the batch "
                           f"under-represents the state law, not a defect by itself",
                           tolerance=slack * max_kl)
    if on_batch is not None:
        return CheckResult(name, LAYER, "pass", f"batch KL <= {limit:.3g}",
                           summary,
                           f"{len(kls)} updates: each moved the policy by at most "
                           f"{limit:.3g} (mean KL on the batch it was computed from; delta "
                           f"{max_kl}{', +1% float32 allowance' if hard else f', x {slack}'}),"
                           f" and by at most {slack} x delta in exact mean KL {where} "
                           f"({summary})", tolerance=limit)
    return CheckResult(name, LAYER, "pass", f"<= {slack} x delta", summary,
                       f"{len(kls)} updates within {slack} x delta in exact mean KL {where} "
                       f"({summary}, delta {max_kl})", tolerance=slack * max_kl)


def optimal_finite_horizon_return(model: lqr.LQRModel, horizon: int) -> float:
    """``J*_T``: the best return of an episode of ``horizon`` steps over *all* policies (the
    time-varying Riccati gains, no noise): ``-(tr(P_0 Sigma0) + sum_{t<T} gamma^{t+1}
    tr(P_{t+1} W))``. An upper bound for every stationary affine policy.

    References
    ----------
    :func:`pgtheory.lqr.finite_horizon_riccati`; Bertsekas (2017), Vol. 1, Sec. 3.2.
    """
    _, P = lqr.finite_horizon_riccati(model, horizon)
    g = model.gamma
    noise = sum(g ** (t + 1) * np.trace(P[t + 1] @ model.W) for t in range(horizon))
    return float(-(np.trace(P[0] @ model.Sigma0) + noise))


def check_improvement(model: lqr.LQRModel, policies: list[AffinePolicy], *, time_limit: int,
                      ent_coef: float = 0.0, margin: float = 0.0,
                      rtol: float = IMPROVEMENT_RTOL, budget: str = "") -> CheckResult:
    """The exact return ``J_T`` of an episode of the time limit over a training run.

    ``J_T(K, k, sigma)`` is :func:`pgtheory.lqr.finite_horizon_return` with the target's
    gamma. Rule (as the tabular :func:`pgtheory.oracles.update.check_improvement`):

    * **pass**: ``J_end > J_start + margin``;
    * **inconclusive**, not fail: ``J_end < J_start - tol`` with ``tol = rtol * max(|J*|,
      J* - J_start)``, ``J*`` the optimal finite-horizon return
      (:func:`optimal_finite_horizon_return`), whether or not the return rose on the way. A
      sign error does this, but so does correct code: measured 2026-12-01 on a random correct
      configuration (``python tools/lqr_update_false_alarms.py --campaign trpo --seeds 1
      --first-seed 16``: our TRPO, linear, gamma 0.83, lambda 1, delta 0.0099), ``J_T`` fell
      from -10.4 to -16.7 from the first records on, the infinite-horizon return with it, and
      the log-std rose from 0.18 to 0.46: the critic is bootstrapped at every truncation, and
      an affine critic overrates states far out in one direction (the exact value is
      quadratic), which biases every step towards them. Until a rule separates the two, a
      fall is reported, not failed. The same bias makes a run
      that rose fall again (measured 2026-11-30, ``python tools/lqr_update_false_alarms.py
      --seeds 10`` and ``--seeds 20 --first-seed 10``: our TRPO at seed 13 rose from -17.9 to
      -14.7 and ended at -19.98); the seeded sign-flipped updates of
      ``tests/test_update_continuous.py`` fall from the first record on, by 25% (PPO) and
      150% (TRPO), and are reported the same way. ``rtol`` is 15% (the tabular check's 5%);
    * **fail**: every recorded policy equals the first while ``ent_coef == 0``: with
      ``sigma > 0`` the exact return strictly increases as ``sigma`` shrinks (the noise costs
      ``tr(R D)`` per step plus its propagated state cost, :func:`pgtheory.lqr.policy_gradient`:
      ``d J / d log sigma_i = -2 sigma_i^2 (R + gamma B^T P B)_ii / (1 - gamma) < 0`` for the
      discounted objective that bootstrapped advantages estimate), so a correct update with a
      positive step size moves the policy;
    * **inconclusive**: otherwise.

    Parameters
    ----------
    model : LQRModel
        With the target's gamma.
    policies : list of AffinePolicy
        Recorded over training, first to last.
    time_limit : int
    ent_coef : float
        The target's entropy coefficient (an entropy bonus can make a fixed sigma optimal).
    margin, rtol : float
    budget : str
        For the explanation.

    Returns
    -------
    CheckResult
        Named ``update_level.improvement@lqr``.

    Raises
    ------
    ValueError
        Fewer than two policies.

    References
    ----------
    Kakade & Langford (2002), ICML, Thm. 4.1; Fazel et al. (2018), arXiv:1801.05039, Lemma 1.
    """
    name = "update_level.improvement@lqr"
    if len(policies) < 2:
        raise ValueError(f"policies: expected at least 2, received {len(policies)}")
    J = np.array([lqr.finite_horizon_return(model, p.K, p.log_sigma, time_limit, bias=p.bias)
                  for p in policies])
    J_star = optimal_finite_horizon_return(model, time_limit)
    drop_tol = rtol * max(abs(J_star), J_star - J[0], 1e-12)
    text = (f"exact J_T (episodes of {time_limit} steps, gamma {model.gamma:g}) {J[0]:.4g} -> "
            f"{J[-1]:.4g} over {len(J) - 1} recorded policies (largest drop between consecutive "
            f"ones {min(np.diff(J).min(), 0):.3g}; optimum J*_T = {J_star:.4g}){budget}")
    if J[-1] > J[0] + margin:
        return CheckResult(name, LAYER, "pass", f"J_end > J_start + {margin}", f"{J[-1]:.4g}",
                           text, tolerance=margin)
    if J[-1] < J[0] - drop_tol and J.max() > J[0] + drop_tol:
        return CheckResult(name, LAYER, "inconclusive", f"J_end >= J_start - {drop_tol:.3g}",
                           f"{J[-1]:.4g}",
                           f"the exact return rose to {J.max():.4g} and then fell below its "
                           f"start: {text}; with a critic that cannot represent the quadratic "
                           f"value the later steps are biased, so this is not evidence of a "
                           f"defect by itself", tolerance=drop_tol)
    if J[-1] < J[0] - drop_tol:
        return CheckResult(name, LAYER, "inconclusive", f"J_end >= J_start - {drop_tol:.3g}",
                           f"{J[-1]:.4g}",
                           f"the exact return did not improve over training, it fell by "
                           f"{J[0] - J[-1]:.3g} (more than {drop_tol:.3g}, {rtol:g} of its "
                           f"scale): {text}; a sign or weighting error in the update does "
                           f"this, but so can correct updates whose advantages bootstrap an "
                           f"affine critic at every truncation (check_improvement), so it is "
                           f"not judged a defect", tolerance=drop_tol)
    frozen = all(p.same_as(policies[0]) for p in policies[1:])
    if frozen and not ent_coef:
        return CheckResult(name, LAYER, "fail", "the policy moves (sigma > 0 can shrink)",
                           "unchanged",
                           f"the policy did not change at all over {len(J) - 1} recorded "
                           f"policies: {text}; without an entropy bonus the exact return rises "
                           f"as sigma shrinks, so the updates have no effect", tolerance=drop_tol)
    return CheckResult(name, LAYER, "inconclusive", f"J_end > J_start + {margin}", f"{J[-1]:.4g}",
                       f"the exact return did not change measurably over training (within "
                       f"{drop_tol:.3g}): {text}; a step size too small for the budget is not a "
                       f"defect by itself", tolerance=drop_tol)


def check_convergence(model: lqr.LQRModel, policy: AffinePolicy, *,
                      rtol: float = CONVERGENCE_RTOL, required: bool = False,
                      budget: str = "") -> CheckResult:
    """The trained policy's mean against the Riccati optimum: ``J(K, k) >= J* - rtol |J*|``.

    ``J(K, k)`` is the exact discounted return (:func:`pgtheory.lqr.expected_return`, infinite
    horizon, ``x_0 ~ N(0, Sigma0)``) of the policy's *mean* ``u = -K x + k`` (``sigma -> 0``),
    ``J*`` that of the Riccati gain ``K*`` (:func:`pgtheory.lqr.optimal_policy`, ``k = 0``).
    The infinite-horizon problem is the one a bootstrapped estimator optimizes: a correct
    estimator bootstraps the critic at every truncation, so its advantages estimate those of
    the discounted problem without a time limit, whose only stationary point among
    stabilizing gains is ``K*`` (Fazel et al. 2018, Lemma 3, with a full-rank state law). The
    noise is left out of both sides: its cost ``tr(R D)`` per step vanishes only as
    ``sigma -> 0``, which a policy gradient reaches only asymptotically (the log-std gradient
    is proportional to ``sigma^2``), so the gain is what a budget can bring near the optimum.

    Rule (as the tabular :func:`pgtheory.oracles.update.check_convergence`): a gap above
    ``rtol |J*|`` **fails** only when ``required`` (the caller vouches that the budget suffices
    for these hyperparameters); otherwise it is **inconclusive**: how fast the gain approaches
    ``K*`` depends on the step size, and a gain that destabilizes the discounted loop
    (``J = -inf``) is reported the same way (the improvement check judges the direction of
    the updates). Measured 2026-12-01 on the audit's 9,600-step run (``python
    tools/lqr_update_false_alarms.py --seeds 20``, and ``--first-seed 20``): none of 240 runs
    of six correct linear targets came within 5% of ``J*``, so in the audit this row is a
    measurement, not a test.

    Parameters
    ----------
    model : LQRModel
        The target's gamma.
    policy : AffinePolicy
        The policy after training.
    rtol : float
        Allowed gap relative to ``|J*|`` (default :data:`CONVERGENCE_RTOL`).
    required : bool
        Whether a gap fails (see the rule).
    budget : str
        For the explanation.

    Returns
    -------
    CheckResult
        Named ``update_level.convergence@lqr``.

    Raises
    ------
    Nothing for a faulty policy: a destabilizing gain is a result.

    References
    ----------
    Fazel et al. (2018), arXiv:1801.05039v4, Lemma 3 and Thm. 7 (gradient domination and
    global convergence of policy gradient on LQR); Bertsekas (2017), Vol. 1, Sec. 3.2 (the
    Riccati optimum).
    """
    name = "update_level.convergence@lqr"
    opt = lqr.optimal_policy(model)
    m = model.B.shape[1]
    tiny = np.full(m, -30.0)  # sigma = 1e-13: the noise's cost is below float64 rounding
    J_star = lqr.expected_return(model, opt.K, tiny)
    try:
        J = lqr.expected_return(model, policy.K, tiny, bias=policy.bias)
    except lqr.UnstableClosedLoopError:
        J = -np.inf
    tol = rtol * abs(J_star)
    gap = J_star - J
    text = (f"J(K, k) = {J:.4g} for the policy's mean vs J* = {J_star:.4g} for the Riccati gain "
            f"(gap {gap:.3g}, allowed {tol:.3g}; K = {np.round(policy.K, 3).tolist()}, k = "
            f"{np.round(policy.bias, 3).tolist()} vs K* = {np.round(opt.K, 3).tolist()}){budget}")
    if gap <= tol:
        return CheckResult(name, LAYER, "pass", f">= {J_star - tol:.4g}", f"{J:.4g}",
                           f"near the Riccati optimum: {text}", tolerance=rtol)
    if required:
        return CheckResult(name, LAYER, "fail", f">= {J_star - tol:.4g}", f"{J:.4g}",
                           f"not near the Riccati optimum after training: {text}",
                           tolerance=rtol)
    return CheckResult(name, LAYER, "inconclusive", f">= {J_star - tol:.4g}", f"{J:.4g}",
                       f"not near the Riccati optimum after training: {text}; the budget may "
                       f"be too small for these hyperparameters (not a defect by itself)",
                       tolerance=rtol)
