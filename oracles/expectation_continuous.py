"""Layer 3, in expectation, continuous actions: stored advantages and value targets on LQR.

On the suite's LQR environment (the double integrator of :func:`pgtheory.lqr.double_integrator`,
never terminated; the suite's trials truncate episodes after 6 steps,
``pgtheory.oracles.suite.EXPECTATION_TIME_LIMIT``, so that 16-step buffers also cut episodes)
each stored advantage ``A_hat_i`` is tested against its exact conditional expectation given
what the environment really did at that step: the state ``x``, the action ``u``, the true next
state ``x'`` (the final observation where the episode was truncated), the steps ``k`` to the
end of the rollout buffer and ``m`` to the time limit (both counting the sample's own step).
With the implementation's own critic ``V_hat`` (read off the agent at collection, not the
values it stored) and ``h = min(k, m)``, GAE's trace runs ``h`` steps and bootstraps
``V_hat`` after the last one (a truncated episode bootstraps from its final state, the buffer
end from the next state), so

``E[A_hat | x, u, x', k, m] = r(x, u) - V_hat(x) + gamma V_hat(x') + gamma lam f_{h-1}(x')``,

where ``r(x, u) = -(x^T Q x + u^T R u)`` is the model's reward (computed here, not read from
the rollout) and ``f_j(y) = E[sum_{l<j} (gamma lam)^l delta_l | x_0 = y]`` is the expected
GAE of a ``j``-step trace started in ``y``. For an affine-Gaussian policy
``u ~ N(-K x + k, D)`` (:func:`pgtheory.oracles.update_continuous.affine_policy`) and a critic
that is a quadratic polynomial of the state (affine critics included: Stable-Baselines3 with
``net_arch=[]``, this project's algorithms with ``hidden_sizes=()``; :func:`quadratic_critic`)
every ``f_j`` is a quadratic polynomial, computed exactly by :func:`expected_gae_lqr`:
``f_0 = 0`` and, with ``x' = A_K y + b + w'``, ``A_K = A - B K``, ``b = B k``,
``w' ~ N(0, W_K)``, ``W_K = W + B D B^T``,

``f_j(y) = E[r(y, u)] - V_hat(y) + gamma E[V_hat(x')] + gamma lam E[f_{j-1}(x')]``,

``E[r(y, u)] = -(y^T (Q + K^T R K) y - 2 k^T R K y + k^T R k + tr(R D))`` and, for a
quadratic ``q(y) = y^T H y + h^T y + h_0``, ``E[q(x')] = (A_K y + b)^T H (A_K y + b) +
tr(H W_K) + h^T (A_K y + b) + h_0``. No quadrature, no truncation: exact up to float64
rounding.

Value targets (``returns``) are tested the same way: a critic regressing on ``A_hat + V_hat(x)``
has the expectation above plus ``V_hat(x)``.

What holds for every policy and critic class
--------------------------------------------
A sample whose trace ends after its own step (``h = 1``: the last step before the time limit
or the last row of the buffer) carries no randomness beyond ``(x, u, x')``:
``A_hat = r(x, u) + gamma V_hat(x') - V_hat(x)`` exactly, whatever the policy and the critic
(a tanh MLP included). These samples are checked exactly (relative tolerance
:data:`EXACT_RTOL`, for float32 implementations), so bootstrap errors at the time limit and at
the buffer end (no bootstrap, bootstrap from the reset observation, from the wrong critic) are
found for every Gaussian-policy target, with no false positives beyond rounding. A rollout that
records the reset observation *as* the final one (and bootstraps from it) is consistent at that
step; the suite finds it through :func:`environment_mismatch`, which sees transitions at episode
ends that the dynamics cannot produce while those inside episodes follow them. The other
samples need the closed forms; for a policy that is not affine-Gaussian, or a critic that is not
quadratic, they are reported as not tested (the verdict rests on the exact samples, and the
explanation says so).

Statistics
----------
As the tabular layer (:mod:`pgtheory.oracles.expectation`): residuals inside one episode are
correlated, every episode starts from a fresh draw of ``x_0 ~ N(0, Sigma0)`` and a correct
estimator cuts its trace at every episode end, so per-episode sums of residuals are
uncorrelated martingale differences with mean zero. Samples are grouped by
``(min(h, h_cap), what ends the trace)`` (time limit or buffer end). Since the residual has
conditional mean zero given ``x'``, so has its product with any function of ``x'``: per unit the
sums of ``resid * (1, x'/s)`` (``s`` the root-mean-square of ``x'``) form a vector with mean
zero, tested by Hotelling's one-sample ``T^2`` (a bias whose sign depends on the state, such as
bootstrapping from the reset observation, averages out of the plain mean but not out of these
products). Holm's step-down procedure over the groups controls the family-wise false-positive
rate at ``alpha``. The measured rate is reported by ``tools/lqr_expectation_false_alarms.py``.

References
----------
Schulman et al. (2016), "High-dimensional continuous control using generalized advantage
estimation", arXiv:1506.02438v6, Eq. (16) (GAE); Pardo et al. (2018), "Time limits in
reinforcement learning", arXiv:1712.00378v4, Sec. 3 (bootstrapping at truncations); Holm
(1979); Anderson & Moore (1979), *Optimal Filtering*, Ch. 4 (linear Gaussian moments).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pgtheory.oracles.expectation import holm
from pgtheory.oracles.results import CheckResult
from pgtheory.oracles.update_continuous import AffinePolicy
from scipy import stats

import pgtheory.lqr as lqr

__all__ = ["ContinuousSamples", "NotQuadraticError", "QuadraticCritic",
           "check_continuous_advantages", "check_continuous_returns", "environment_mismatch",
           "expected_gae_lqr", "expected_policy_gradient_lqr", "hotelling_p_value",
           "quadratic_critic", "td_fixed_point_lqr", "trace_horizons"]

#: Relative tolerance of the exact samples (float32 implementations round each term at about
#: 1.2e-7 relative; a handful of terms and the float32 observations leave a margin of ~10).
EXACT_RTOL = 1e-5
#: Relative residual of a quadratic fit of the critic above which it is not quadratic.
QUADRATIC_RTOL = 1e-4
#: Number of random verification states of :func:`quadratic_critic` (``N(0, PROBE_SCALE^2 I)``).
N_VERIFY = 24
PROBE_SCALE = 2.0


class NotQuadraticError(ValueError):
    """The agent's critic is not a quadratic polynomial of the state (the message gives the
    measured residual): the exact expectation of a multi-step trace does not apply."""


@dataclasses.dataclass(frozen=True)
class QuadraticCritic:
    """``V_hat(x) = x^T H x + h^T x + h0`` (reward units; ``H`` symmetric).

    Attributes
    ----------
    H : ndarray, shape (n, n)
    h : ndarray, shape (n,)
    h0 : float
    """

    H: np.ndarray
    h: np.ndarray
    h0: float

    def __call__(self, x) -> np.ndarray:
        """``V_hat`` at states of shape (..., n); returns shape (...)."""
        x = np.asarray(x, dtype=float)
        return np.einsum("...i,ij,...j->...", x, self.H, x) + x @ self.h + self.h0


def _features(x: np.ndarray) -> np.ndarray:
    """Monomials of degree <= 2 of the rows of ``x`` (B, n): (B, n(n+1)/2 + n + 1)."""
    n = x.shape[1]
    quad = [x[:, i] * x[:, j] for i in range(n) for j in range(i, n)]
    return np.column_stack([*quad, x, np.ones(len(x))])


def quadratic_critic(values_at, n_state: int, *, seed: int = 0) -> QuadraticCritic:
    """The critic as an exact quadratic polynomial of the state, or :class:`NotQuadraticError`.

    The critic is read at ``x = 0``, at the ``n (n + 3) / 2`` points ``PROBE_SCALE e_i`` and
    ``PROBE_SCALE (e_i + e_j)`` (``i <= j``) and at :data:`N_VERIFY` random states
    ``N(0, PROBE_SCALE^2 I)`` (seeded); a least-squares quadratic fit is accepted when it
    reproduces every value within ``QUADRATIC_RTOL * max |V_hat|`` (plus 1e-7 absolute).

    Parameters
    ----------
    values_at : callable
        ``values_at(states (B, n) float64) -> (B,)``: the critic at the collection parameters.
    n_state : int
    seed : int
        Seeds the verification states.

    Returns
    -------
    QuadraticCritic

    Raises
    ------
    NotQuadraticError
        Non-finite values or a residual above the tolerance (the message gives both).
    """
    rng = np.random.default_rng([30_029, seed])
    eye = np.eye(n_state)
    pts = [np.zeros(n_state)] + [PROBE_SCALE * (eye[i] + eye[j]) for i in range(n_state)
                                 for j in range(i, n_state)]
    pts += [PROBE_SCALE * eye[i] for i in range(n_state)]
    probes = np.vstack([np.array(pts), rng.normal(scale=PROBE_SCALE, size=(N_VERIFY, n_state))])
    v = np.asarray(values_at(probes), dtype=float).reshape(-1)
    if v.shape != (len(probes),) or not np.all(np.isfinite(v)):
        raise NotQuadraticError("not applicable: the critic's values at the probe states are "
                                "not finite")
    X = _features(probes)
    coef, *_ = np.linalg.lstsq(X, v, rcond=None)
    resid = float(np.abs(X @ coef - v).max())
    tol = QUADRATIC_RTOL * float(np.abs(v).max()) + 1e-7
    if resid > tol:
        raise NotQuadraticError(f"not applicable: the critic is not a quadratic polynomial of "
                                f"the state (max residual {resid:.3g} of a quadratic fit at "
                                f"{len(probes)} probe states, allowed {tol:.3g})")
    H = np.zeros((n_state, n_state))
    c = 0
    for i in range(n_state):
        for j in range(i, n_state):
            if i == j:
                H[i, i] = coef[c]
            else:
                H[i, j] = H[j, i] = coef[c] / 2.0
            c += 1
    return QuadraticCritic(H, coef[c:c + n_state].copy(), float(coef[-1]))


def _expect_next(q: QuadraticCritic, AK: np.ndarray, b: np.ndarray,
                 WK: np.ndarray) -> QuadraticCritic:
    """``y -> E[q(A_K y + b + w')]``, ``w' ~ N(0, W_K)``, as a quadratic."""
    H = AK.T @ q.H @ AK
    h = AK.T @ (2.0 * q.H @ b + q.h)
    h0 = float(b @ q.H @ b + np.trace(q.H @ WK) + q.h @ b + q.h0)
    return QuadraticCritic(0.5 * (H + H.T), h, h0)


def _combine(*terms: tuple[float, QuadraticCritic]) -> QuadraticCritic:
    return QuadraticCritic(sum(c * q.H for c, q in terms), sum(c * q.h for c, q in terms),
                           float(sum(c * q.h0 for c, q in terms)))


def expected_gae_lqr(model: lqr.LQRModel, policy: AffinePolicy, critic: QuadraticCritic,
                     lam: float, steps: int) -> list[QuadraticCritic]:
    """Exact expected GAE ``f_j(y) = E[sum_{l<j} (gamma lam)^l delta_l | x_0 = y]``, j = 0..steps.

    ``delta_l = r_l + gamma V_hat(x_{l+1}) - V_hat(x_l)`` with no episode end inside the trace
    (the trace bootstraps ``V_hat`` after its last step); the recursion is in the module
    docstring.

    Parameters
    ----------
    model : LQRModel
        Dynamics, costs and gamma.
    policy : AffinePolicy
        ``u ~ N(-K x + bias, diag(exp(2 log_sigma)))``.
    critic : QuadraticCritic
    lam : float
        GAE lambda in [0, 1].
    steps : int
        Largest ``j``.

    Returns
    -------
    list of QuadraticCritic
        ``steps + 1`` quadratics (reward units), ``f_0 = 0``.

    References
    ----------
    Module docstring; Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16).
    """
    n = model.n_state
    K, k = np.asarray(policy.K, float), np.asarray(policy.bias, float)
    D = np.diag(np.exp(2.0 * np.asarray(policy.log_sigma, float)))
    AK = model.A - model.B @ K
    b = model.B @ k
    WK = model.W + model.B @ D @ model.B.T
    R = model.R
    reward = QuadraticCritic(-(model.Q + K.T @ R @ K), 2.0 * K.T @ R @ k,
                             -float(k @ R @ k + np.trace(R @ D)))
    g = model.gamma
    one_step = _combine((1.0, reward), (-1.0, critic), (g, _expect_next(critic, AK, b, WK)))
    out = [QuadraticCritic(np.zeros((n, n)), np.zeros(n), 0.0)]
    for _ in range(int(steps)):
        out.append(_combine((1.0, one_step), (g * lam, _expect_next(out[-1], AK, b, WK))))
    return out


@dataclasses.dataclass(frozen=True)
class ContinuousSamples:
    """Flat LQR samples with what determines their expectation.

    Attributes
    ----------
    states, next_states : ndarray, shape (n_samples, n)
        ``x`` and the true ``x'`` (the final observation where an episode was truncated).
    actions : ndarray, shape (n_samples, m)
    steps_to_buffer_end, steps_to_time_limit : ndarray of int, shape (n_samples,)
        ``k >= 1`` and ``m >= 1``, counting the sample's own step (``m > k`` when no
        truncation lies ahead in the buffer).
    estimates : ndarray, shape (n_samples,)
        Stored advantages (or value targets).
    units : ndarray of int, shape (n_samples,)
        The episode each sample belongs to (the unit of replication).
    """

    states: np.ndarray
    next_states: np.ndarray
    actions: np.ndarray
    steps_to_buffer_end: np.ndarray
    steps_to_time_limit: np.ndarray
    estimates: np.ndarray
    units: np.ndarray

    @classmethod
    def from_buffers(cls, buffers: list[dict]) -> ContinuousSamples:
        """Samples of independent buffers, each collected from fresh resets.

        Each buffer is a dict with ``observations`` (T, N, n), ``next_observations`` (T, N, n),
        ``actions`` (T, N, m), ``estimates`` (T, N), ``truncated`` (T, N) bool and ``valid``
        ((T, N) bool, or None: every slot holds a transition; False marks a next-step autoreset
        slot, which is left out). The steps to the time limit are read off the truncation
        flags alone (the steps to the next flag in the column, counting the sample's own; none
        ahead: the trace ends at the buffer end), so a collection whose episodes are not the
        time limit long is still tested as what it recorded.

        Raises
        ------
        ValueError
            Shapes that disagree.
        """
        cols = {k: [] for k in ("x", "x2", "u", "k", "m", "est", "unit")}
        unit = 0
        for j, buf in enumerate(buffers):
            trunc = np.asarray(buf["truncated"], bool)
            T, N = trunc.shape
            ok = (np.ones((T, N), bool) if buf.get("valid") is None
                  else np.asarray(buf["valid"], bool))
            est = np.asarray(buf["estimates"], float)
            if est.shape != (T, N) or ok.shape != (T, N):
                raise ValueError(f"buffer {j}: expected estimates and valid of shape {(T, N)}, "
                                 f"received {est.shape} and {ok.shape}")
            obs = np.asarray(buf["observations"], float)
            nxt = np.asarray(buf["next_observations"], float)
            act = np.asarray(buf["actions"], float).reshape(T, N, -1)
            ends = trunc & ok
            for col in range(N):
                ep = unit
                to_end = T + 1  # steps to the next truncation, counting this one (none: > T)
                left = np.empty(T, int)
                for t in range(T - 1, -1, -1):
                    to_end = 1 if ends[t, col] else to_end + 1
                    left[t] = to_end
                for t in range(T):
                    if ok[t, col]:
                        cols["x"].append(obs[t, col])
                        cols["x2"].append(nxt[t, col])
                        cols["u"].append(act[t, col])
                        cols["k"].append(T - t)
                        cols["m"].append(left[t])
                        cols["est"].append(est[t, col])
                        cols["unit"].append(ep)
                    if ends[t, col]:
                        ep += 1
                unit = ep + 1
        return cls(np.array(cols["x"]), np.array(cols["x2"]), np.array(cols["u"]),
                   np.array(cols["k"], int), np.array(cols["m"], int), np.array(cols["est"]),
                   np.array(cols["unit"], int))


def hotelling_p_value(Z: np.ndarray) -> float:
    """p-value of Hotelling's one-sample T^2 test of ``E[Z_i] = 0`` for independent rows.

    ``T^2 = N zbar^T S^{-1} zbar`` (``S`` the sample covariance); ``(N - d) / (d (N - 1)) T^2``
    is F(d, N - d) for Gaussian rows and asymptotically for any rows with finite variance.
    Directions without variance are dropped (a rank-deficient ``S``); a constant non-zero
    direction gives p = 0.

    Parameters
    ----------
    Z : ndarray, shape (N, d)

    Returns
    -------
    float

    References
    ----------
    Hotelling (1931), "The generalization of Student's ratio", Ann. Math. Statist. 2(3).
    """
    N = Z.shape[0]
    zbar = Z.mean(axis=0)
    S = np.atleast_2d(np.cov(Z, rowvar=False))
    w, V = np.linalg.eigh(S)
    keep = w > 1e-12 * max(float(w.max()), 1e-300)
    proj = V[:, ~keep].T @ zbar
    if np.any(np.abs(proj) > 1e-9 * (np.abs(zbar).max() + 1e-300)):
        return 0.0
    d = int(keep.sum())
    if d == 0 or N <= d:
        return 1.0
    y = V[:, keep].T @ zbar
    t2 = N * float(np.sum(y * y / w[keep]))
    f = (N - d) / (d * (N - 1)) * t2
    return float(stats.f.sf(f, d, N - d))


#: Largest standardized transition innovation a rollout of the LQR environment may show (with
#: 10^5 samples a N(0, 1) component exceeds 7 with probability about 3e-7).
INNOVATION_LIMIT = 7.0


def environment_mismatch(model: lqr.LQRModel, buffers: list[dict]) -> tuple[str, str]:
    """Whether the buffers' stored transitions are the LQR environment's.

    The closed forms compare stored estimates with the model's rewards and dynamics at the
    *stored* observations and actions; they apply only when those are the environment's own:
    every real transition's innovation ``W^{-1/2} (x' - A x - B u)`` is a standard normal
    draw (components beyond :data:`INNOVATION_LIMIT` are refused; directions where ``W`` is
    zero must match to 1e-6), and every stored reward equals ``-(x^T Q x + u^T R u)`` within
    float32 rounding (1e-5 relative). An observation-normalizing or reward-scaling wrapper
    between the environment and the stored data (or actions clipped by the environment but
    stored unclipped) breaks them everywhere: the rows are then inconclusive, not failed.

    Transitions at an episode's end (a truncated step, and the slot after it) are judged
    apart: a collection that stores the reset observation as the final one, or records a
    next-step autoreset slot as a transition, breaks them *only* there. That is a defect the
    checks are built to see, so it does not block them; it is returned as a note.

    Parameters
    ----------
    model : LQRModel
    buffers : list of dict
        With ``observations``, ``next_observations``, ``actions``, ``rewards``, ``truncated``
        and ``valid`` (as :meth:`ContinuousSamples.from_buffers`).

    Returns
    -------
    reason : str
        Why the interior transitions are not the environment's ("" when they are).
    note : str
        What is wrong at episode ends only ("" when nothing is).
    """
    w, V = np.linalg.eigh(model.W)
    pos = w > 1e-12 * max(float(w.max()), 1e-300)
    worst_z = worst_r = 0.0
    edge_bad = edge_total = 0
    for b in buffers:
        shape = np.shape(b["rewards"])
        ok = np.ones(shape, bool) if b.get("valid") is None else np.asarray(b["valid"], bool)
        trunc = np.asarray(b["truncated"], bool) & ok
        edge = trunc.copy()
        edge[1:] |= trunc[:-1]
        x = np.asarray(b["observations"], float)[ok]
        x2 = np.asarray(b["next_observations"], float)[ok]
        u = np.asarray(b["actions"], float)[ok].reshape(len(x), -1)
        rew = np.asarray(b["rewards"], float)[ok]
        at_edge = edge[ok]
        innov = (x2 - x @ model.A.T - u @ model.B.T) @ V
        scale = 1.0 + np.abs(x2).max(axis=1)
        off = (np.abs(innov[:, ~pos]) > 1e-6 * scale[:, None]).any(axis=1)
        z = (np.abs(innov[:, pos] / np.sqrt(w[pos])).max(axis=1) if pos.any()
             else np.zeros(len(x)))
        r = _reward(model, x, u)
        rel = np.abs(rew - r) / (1.0 + np.abs(r))
        bad = off | ~(z <= INNOVATION_LIMIT) | ~(rel <= EXACT_RTOL)
        inner = ~at_edge
        if np.any(off & inner):
            return ("the stored next observations do not follow the LQR dynamics (a noise-free "
                    "direction moved)"), ""
        if inner.any():
            worst_z = max(worst_z, float(np.nan_to_num(z[inner], nan=np.inf).max()))
            worst_r = max(worst_r, float(np.nan_to_num(rel[inner], nan=np.inf).max()))
        edge_bad += int((bad & at_edge).sum())
        edge_total += int(at_edge.sum())
    if worst_z > INNOVATION_LIMIT:
        return (f"the stored observations and actions do not follow the LQR dynamics (largest "
                f"standardized innovation {worst_z:.3g} inside episodes, allowed "
                f"{INNOVATION_LIMIT:g}): an observation-normalizing wrapper, or actions clipped "
                f"by the environment but stored unclipped, would do this; audit without "
                f"observation normalization"), ""
    if worst_r > EXACT_RTOL:
        return (f"the stored rewards are not the LQR environment's -(x'Qx + u'Ru) at the stored "
                f"observations and actions (largest relative difference {worst_r:.3g}): a "
                f"reward-scaling or -normalizing wrapper would do this; audit without it"), ""
    note = ""
    if edge_bad:
        note = (f"; {edge_bad} of the {edge_total} stored transitions at episode ends (a "
                f"truncated step or the slot after it) do not follow the LQR dynamics and "
                f"rewards while every transition inside episodes does: the stored next "
                f"observation at a truncation is not the final state, or a reset slot is "
                f"recorded as a transition")
    return "", note


def _reward(model: lqr.LQRModel, x: np.ndarray, u: np.ndarray) -> np.ndarray:
    return -(np.einsum("bi,ij,bj->b", x, model.Q, x) + np.einsum("bi,ij,bj->b", u, model.R, u))


def check_continuous_advantages(model: lqr.LQRModel, lam: float, samples: ContinuousSamples,
                                values_at, *, policy: AffinePolicy | None = None,
                                critic: QuadraticCritic | None = None,
                                not_exact: str = "", alpha: float = 0.01, h_cap: int = 4,
                                min_units: int = 100,
                                name: str = "in_expectation.advantages@lqr",
                                offset=None, quantity: str = "advantage") -> CheckResult:
    """Test stored advantages against their exact conditional expectation on LQR.

    Parameters
    ----------
    model : LQRModel
        The oracle environment's model (its gamma is the target's).
    lam : float
        The target's GAE lambda.
    samples : ContinuousSamples
    values_at : callable
        The implementation's critic at the collection parameters, ``(B, n) -> (B,)``.
    policy, critic : AffinePolicy and QuadraticCritic, optional
        Both given: the multi-step samples are tested too. Otherwise only the exact samples.
    not_exact : str
        Why ``policy`` or ``critic`` is missing (printed in the explanation).
    alpha : float
        Family-wise false-positive rate of the statistical groups.
    h_cap, min_units : int
        As :func:`pgtheory.oracles.expectation.check_advantage_expectation`.
    offset : ndarray, shape (n_samples,), optional
        Added to the expectation (value targets: ``V_hat(x)``).

    Returns
    -------
    CheckResult
        ``fail`` for a wrong exact sample or a biased group; ``skip`` when no sample can be
        tested.

    Raises
    ------
    Nothing for a faulty implementation: non-finite estimates are a failed result.

    References
    ----------
    Module docstring.
    """
    layer = "in_expectation"
    est = np.asarray(samples.estimates, float)
    if est.size == 0:
        return CheckResult(name, layer, "skip", "samples", "none", "no samples were collected")
    if not np.all(np.isfinite(est)):
        return CheckResult(name, layer, "fail", "finite estimates", "NaN/inf",
                           f"the implementation produced non-finite {quantity} estimates")
    g = model.gamma
    x, x2 = samples.states, samples.next_states
    v_x = np.asarray(values_at(x), float).reshape(-1)
    v_x2 = np.asarray(values_at(x2), float).reshape(-1)
    r = _reward(model, x, samples.actions)
    base = r - v_x + g * v_x2
    if offset is not None:
        base = base + offset
    k_arr, m_arr = samples.steps_to_buffer_end, samples.steps_to_time_limit
    by_limit = m_arr <= k_arr
    h_raw = np.minimum(k_arr, m_arr)
    exact = h_raw == 1
    scale = np.abs(r) + np.abs(v_x) + g * np.abs(v_x2) + (0 if offset is None
                                                          else np.abs(offset))
    resid = est - base
    bad = exact & (np.abs(resid) > EXACT_RTOL * scale + 1e-6)
    if bad.any():
        i = int(np.flatnonzero(bad)[np.argmax(np.abs(resid[bad]))])
        why = "the time limit" if by_limit[i] else "the buffer end"
        return CheckResult(name, layer, "fail", f"{base[i]:.6g}", f"{est[i]:.6g}",
                           f"{quantity} estimate wrong where no randomness is left (the trace "
                           f"ends at {why}, so it is r(x, u) + gamma V(x') - V(x) with the "
                           f"true next state x'): state {np.round(x[i], 4).tolist()}, residual "
                           f"{resid[i]:+.4g} in {int(bad.sum())} of {int(exact.sum())} such "
                           f"samples", p_value=0.0)
    n_exact = int(exact.sum())
    stochastic = ~exact
    if policy is None or critic is None:
        if not n_exact:
            return CheckResult(name, layer, "skip", "exact samples", "none",
                               f"no sample ends its trace after its own step, and the others "
                               f"are {not_exact or 'not applicable'}")
        return CheckResult(name, layer, "pass", "residual 0",
                           f"exact part only: {n_exact} of {len(est)}",
                           f"{n_exact} samples whose trace ends at the time limit or the buffer "
                           f"end are exact; the {int(stochastic.sum())} others were not tested "
                           f"({not_exact or 'no closed form for this policy or critic'})",
                           p_value=1.0)
    steps = int(h_raw.max()) - 1
    f = expected_gae_lqr(model, policy, critic, lam, max(steps, 0))
    expected = base.copy()
    for j in np.unique(h_raw[stochastic]):
        sel = stochastic & (h_raw == j)
        expected[sel] += g * lam * f[int(j) - 1](x2[sel])
    resid = est - expected
    h = np.minimum(h_raw, h_cap)
    units = np.unique(samples.units)
    index = np.searchsorted(units, samples.units)
    # residual x (1, x' / s): the conditional mean is zero given x', so is its correlation with
    # any function of x' (a bias whose sign depends on x' averages out in the plain mean)
    s_scale = float(np.sqrt(np.mean(x2 ** 2))) or 1.0
    phi = np.column_stack([np.ones(len(x2)), x2 / s_scale])
    groups, p_values, means = [], [], []
    for key in sorted({(int(a), bool(b)) for a, b in zip(h[stochastic], by_limit[stochastic],
                                                          strict=True)}):
        mask = stochastic & (h == key[0]) & (by_limit == key[1])
        seen = np.bincount(index[mask], minlength=units.size) > 0
        if seen.sum() < min_units:
            continue
        Z = np.column_stack([np.bincount(index[mask], weights=resid[mask] * phi[mask, j],
                                         minlength=units.size)[seen]
                             for j in range(phi.shape[1])])
        mean = float(resid[mask].mean())
        atol = EXACT_RTOL * float(np.mean(np.abs(expected[mask])) + 1.0)
        if float(np.abs(Z).mean(axis=0).max()) <= atol * 1e-3:
            pv = 1.0  # residuals at rounding level
        else:
            # a statistical rejection is always confirmed on new trials (p = 0 is kept for
            # deterministic evidence: an exact sample, or a constant non-zero direction)
            pv = hotelling_p_value(Z)
            if pv == 0.0 and np.linalg.matrix_rank(np.cov(Z, rowvar=False)) == Z.shape[1]:
                pv = 1e-300
        groups.append(key)
        p_values.append(pv)
        means.append(mean)
    if not groups:
        return CheckResult(name, layer, "pass", "residual 0", "residual 0",
                           f"{n_exact} samples whose trace ends at the time limit or the buffer "
                           f"end are exact; too few episodes ({units.size}) for the statistical "
                           f"groups", p_value=1.0)
    adj = holm(p_values)
    worst = int(np.argmin(adj))
    hh, bl = groups[worst]
    where = (f"{'>= ' if hh == h_cap else ''}{hh} step(s) to the "
             f"{'time limit' if bl else 'end of the buffer'}")
    if adj[worst] < alpha:
        return CheckResult(name, layer, "fail", "mean residual 0",
                           f"{means[worst]:+.4g} at ({where})",
                           f"{quantity} estimates are biased at {where}: the residuals against "
                           f"the exact expectation for the affine-Gaussian policy and quadratic "
                           f"critic have mean {means[worst]:+.4g} or are correlated with the "
                           f"next state (Hotelling, Holm-adjusted p = {adj[worst]:.2g} over "
                           f"{len(groups)} groups)",
                           p_value=float(adj[worst]))
    return CheckResult(name, layer, "pass", "mean residual 0", "consistent",
                       f"{n_exact} exact samples; no bias in {len(groups)} (horizon, trace end) "
                       f"groups over {units.size} episodes (Holm-adjusted min p = "
                       f"{adj[worst]:.2g}, family-wise false-positive rate {alpha:.2g})",
                       p_value=float(adj[worst]))


def check_continuous_returns(model: lqr.LQRModel, lam: float, samples: ContinuousSamples,
                             values_at, **kwargs) -> CheckResult:
    """Test stored value targets (``samples.estimates``) against ``V_hat(x) +`` the exact
    expected advantage: the same test as :func:`check_continuous_advantages` (its parameters,
    returns and references), reported as ``in_expectation.returns@lqr``.
    """
    offset = np.asarray(values_at(samples.states), float).reshape(-1)
    kwargs.setdefault("name", "in_expectation.returns@lqr")
    return check_continuous_advantages(model, lam, samples, values_at, offset=offset,
                                       quantity="value-target", **kwargs)


# ------------------------------------------------------------------ critic fixed point
def _basis(n: int, quadratic: bool) -> list[QuadraticCritic]:
    """The critic class's basis: ``1``, ``x_i`` and, when ``quadratic``, ``x_i x_j`` (i <= j)."""
    zero_H, zero_h = np.zeros((n, n)), np.zeros(n)
    out = [QuadraticCritic(zero_H, zero_h, 1.0)]
    out += [QuadraticCritic(zero_H, np.eye(n)[i], 0.0) for i in range(n)]
    if quadratic:
        for i in range(n):
            for j in range(i, n):
                H = np.zeros((n, n))
                H[i, j] = H[j, i] = 1.0 if i == j else 0.5
                out.append(QuadraticCritic(H, zero_h, 0.0))
    return out


def td_fixed_point_lqr(model: lqr.LQRModel, policy: AffinePolicy, lam: float, states,
                       horizons, *, quadratic: bool = False) -> QuadraticCritic:
    """The critic of a class at which regression on the buffer's lambda-returns is stationary.

    A critic ``V_theta = theta^T phi`` (``phi(x) = (1, x)``, with ``x_i x_j`` added when
    ``quadratic``) fitted by least squares to the value targets ``y_t = A_hat_t +
    V_theta(x_t)`` of one buffer, its GAE computed with that same critic, is at a fixed point
    when the expected update vanishes: ``sum_t phi(x_t) E[y_t - V_theta(x_t) | x_t, h_t] =
    sum_t phi(x_t) f_{h_t}(x_t; theta) = 0``, ``f_h`` the expected GAE of an ``h``-step trace
    (:func:`expected_gae_lqr`, which bootstraps the critic where the trace ends: a correct
    estimator's buffer end and time limit alike). ``f_h`` is affine in ``theta`` (each TD error
    is), ``f_h(x; theta) = g_h(x) + sum_k theta_k m_{h,k}(x)`` with ``g_h`` the expected GAE of
    the zero critic and ``m_{h,k}`` that of the ``k``-th basis function minus ``g_h``, so the
    fixed point solves the linear system ``M theta = -g``, ``M_{ik} = sum_t phi_i(x_t)
    m_{h_t,k}(x_t)``, ``g_i = sum_t phi_i(x_t) g_{h_t}(x_t)``: the TD(lambda) fixed point of
    linear function approximation (Tsitsiklis & Van Roy 1997) on the buffer's own states and
    trace lengths, with the expectation over actions and next states exact. For ``lam = 1``
    and no bootstrap inside the buffer it is the least-squares fit of ``V_pi``; a quadratic
    class holds the exact value ``V_pi`` of the discounted problem itself.

    Parameters
    ----------
    model : LQRModel
        The target's gamma.
    policy : AffinePolicy
        The policy that collected the buffer.
    lam : float
        GAE lambda in [0, 1].
    states : array_like, shape (B, n)
        The buffer's states (valid slots only).
    horizons : array_like of int, shape (B,)
        Steps each state's trace runs (``>= 1``; :func:`trace_horizons`).
    quadratic : bool
        The class: affine (False) or quadratic.

    Returns
    -------
    QuadraticCritic
        The fixed point (``H = 0`` for the affine class), reward units.

    Raises
    ------
    ValueError
        Shapes that disagree, a horizon below 1, or a singular system (too few distinct
        states for the class).

    References
    ----------
    Tsitsiklis & Van Roy (1997), "An analysis of temporal-difference learning with function
    approximation", IEEE TAC 42(5), Thm. 1 (lambda-return fixed point); Schulman et al. (2016),
    arXiv:1506.02438v6, Eq. (16) and Sec. 5 (the value regression on lambda-returns).
    """
    x = np.asarray(states, float)
    h = np.asarray(horizons, int).reshape(-1)
    n = model.n_state
    if x.ndim != 2 or x.shape[1] != n or len(h) != len(x):
        raise ValueError(f"states, horizons: expected shapes (B, {n}) and (B,), received "
                         f"{x.shape} and {h.shape}")
    if len(h) and h.min() < 1:
        raise ValueError(f"horizons: expected >= 1, received {int(h.min())}")
    basis = _basis(n, quadratic)
    phi = np.column_stack([b(x) for b in basis])
    steps = int(h.max()) if len(h) else 0
    zero = QuadraticCritic(np.zeros((n, n)), np.zeros(n), 0.0)
    g_fs = expected_gae_lqr(model, policy, zero, lam, steps)
    g_val = np.zeros(len(x))
    m_val = np.zeros((len(x), len(basis)))
    for j in np.unique(h):
        sel = h == j
        g_val[sel] = g_fs[int(j)](x[sel])
    for k, b in enumerate(basis):
        fs = expected_gae_lqr(model, policy, b, lam, steps)
        for j in np.unique(h):
            sel = h == j
            m_val[sel, k] = fs[int(j)](x[sel]) - g_val[sel]
    M = phi.T @ m_val
    rhs = -phi.T @ g_val
    if len(x) < len(basis) or np.linalg.cond(M) > 1e12:
        raise ValueError(f"states: too few distinct states ({len(x)}) for the "
                         f"{'quadratic' if quadratic else 'affine'} critic class: the fixed "
                         f"point is not unique")
    theta = np.linalg.solve(M, rhs)
    return _combine(*((float(t), b) for t, b in zip(theta, basis, strict=True)))


# ------------------------------------------------------------------ policy gradient
def trace_horizons(truncated, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Steps each sample's GAE trace runs, ``h = min(k, m)``, and whether a truncation ends it.

    Parameters
    ----------
    truncated : array_like of bool, shape (T, N)
    valid : array_like of bool, shape (T, N), optional
        False at next-step autoreset slots (their entries are meaningless).

    Returns
    -------
    h : ndarray of int, shape (T, N)
        ``>= 1``, counting the sample's own step.
    by_limit : ndarray of bool, shape (T, N)
        True when the trace ends at a truncation (else at the buffer end).
    """
    trunc = np.asarray(truncated, bool)
    T, N = trunc.shape
    ok = np.ones((T, N), bool) if valid is None else np.asarray(valid, bool)
    ends = trunc & ok
    h = np.zeros((T, N), int)
    by_limit = np.zeros((T, N), bool)
    run = np.zeros(N, int)
    limited = np.zeros(N, bool)
    for t in range(T - 1, -1, -1):
        last = t == T - 1
        run = np.where(ends[t], 1, 1 if last else run + 1)
        limited = np.where(ends[t], True, False if last else limited)
        h[t], by_limit[t] = run, limited
    return h, by_limit


def _trace_value(model: lqr.LQRModel, critic: QuadraticCritic, f_prev: QuadraticCritic | None,
                 lam: float) -> QuadraticCritic:
    """``q(x') = gamma V_hat(x') + gamma lam f_{h-1}(x')``: what a trace adds after its step."""
    g = model.gamma
    if f_prev is None:
        return _combine((g, critic))
    return _combine((g, critic), (g * lam, f_prev))


def expected_policy_gradient_lqr(model: lqr.LQRModel, policy: AffinePolicy,
                                 critic: QuadraticCritic, lam: float, elapsed, horizons, *,
                                 ent_coef: float = 0.0, weights=None) -> np.ndarray:
    """Exact expectation of the canonical loss gradient of one fresh buffer, in ``(M, k,
    log_sigma)`` coordinates.

    The loss is ``-(1 / (T N)) sum_slots [A_hat_t log pi(u_t | x_t) w_t + c H(pi(. | x_t))]``
    over the buffer's real transitions (``c = ent_coef``, ``w_t`` the declared weights, default
    1), for the policy ``u ~ N(M x + k, diag(sigma^2))`` (``M = -K``). With ``u = mu(x) + sigma
    eps`` and Stein's lemma (``E[eps_i F] = E[dF / d eps_i]``,
    ``E[(eps_i^2 - 1) F] = E[d^2 F / d eps_i^2]``), for the conditional expectation
    ``g(x, u) = E[A_hat | x, u]`` -- a quadratic in ``(x, u)``: ``r(x, u) - V_hat(x) +
    E[q(A x + B u + w)]`` with ``q = gamma V_hat + gamma lam f_{h-1}`` --

    * ``E[grad_M log pi g] = E[(dg/du) x^T] = P S + c0 mu^T``, ``E[grad_k log pi g] = P mu + c0``,
      where ``E_eps[dg/du] = P x + c0``, ``P = 2 G_uu M + 2 G_ux``, ``c0 = 2 G_uu k + B^T h_q``,
      ``G_uu = B^T H_q B - R``, ``G_ux = B^T H_q A``;
    * ``E[grad_{log sigma_i} log pi g] = E[d^2 g / d eps_i^2] = 2 sigma_i^2 (G_uu)_ii``;
    * the Gaussian entropy's gradient is 1 in each ``log sigma_i`` and 0 in ``M``, ``k``;

    with ``mu``, ``S`` the mean and second moment of the state at the slot, from
    :func:`pgtheory.lqr.state_moments` at the slot's steps since reset (the buffer starts at
    fresh resets and one policy collects it).

    Parameters
    ----------
    model : LQRModel
    policy : AffinePolicy
    critic : QuadraticCritic
    lam : float
    elapsed : array_like of int, shape (T, N)
        Steps since the reset at each slot; -1 marks a next-step autoreset slot (left out).
    horizons : array_like of int, shape (T, N)
        :func:`trace_horizons`.
    ent_coef : float
    weights : array_like, shape (T, N), optional

    Returns
    -------
    ndarray, shape (m n + 2 m,)
        ``[vec(M) row-major, k, log_sigma]`` (per unit loss).

    References
    ----------
    Stein (1981), "Estimation of the mean of a multivariate normal distribution", Ann. Statist.
    9(6), Lemma 1; Williams (1992) (the score-function estimator); Schulman et al. (2016),
    arXiv:1506.02438v6, Eq. (16).
    """
    e = np.asarray(elapsed, int)
    hz = np.asarray(horizons, int)
    T, N = e.shape
    w = np.ones((T, N)) if weights is None else np.asarray(weights, float)
    m, n = model.n_action, model.n_state
    M = -np.asarray(policy.K, float)
    k = np.asarray(policy.bias, float)
    sig2 = np.exp(2.0 * np.asarray(policy.log_sigma, float))
    law = lqr.state_moments(model, policy.K, policy.log_sigma, max(int(e.max()), 0),
                            bias=policy.bias)
    S_all = law.second_moment
    f = expected_gae_lqr(model, policy, critic, lam, max(int(hz.max()) - 1, 0))
    gM, gk, gs = np.zeros((m, n)), np.zeros(m), np.zeros(m)
    cache: dict[int, tuple] = {}
    for t in range(T):
        for j in range(N):
            if e[t, j] < 0:
                continue
            h = int(hz[t, j])
            if h not in cache:
                q = _trace_value(model, critic, f[h - 1] if h > 1 else None, lam)
                Guu = model.B.T @ q.H @ model.B - model.R
                Gux = model.B.T @ q.H @ model.A
                P = 2.0 * Guu @ M + 2.0 * Gux
                c0 = 2.0 * Guu @ k + model.B.T @ q.h
                cache[h] = (P, c0, 2.0 * sig2 * np.diag(Guu))
            P, c0, ds = cache[h]
            mu, S = law.mean[e[t, j]], S_all[e[t, j]]
            gM += w[t, j] * (P @ S + np.outer(c0, mu))
            gk += w[t, j] * (P @ mu + c0)
            gs += w[t, j] * ds + ent_coef
    return -np.concatenate([gM.ravel(), gk, gs]) / (T * N)


def affine_jacobian(agent, names: list[str], n_state: int, parameters: dict) -> np.ndarray:
    """``d (vec(M), k, log_sigma) / d theta`` of the agent's affine-Gaussian policy, shape
    (m n + 2 m, d), ``theta`` the flat parameters ``names`` (in order), by autograd at
    ``x = 0`` and ``x = e_j``: ``k = mu(0)``, ``M e_j = mu(e_j) - mu(0)``, ``log_sigma`` from
    the std at ``x = 0`` (exact for an affine mean; a row no parameter moves is zero).

    Parameters
    ----------
    agent
        A protocol agent whose ``distribution(obs)`` has ``mean`` and ``stddev`` (B, m).
    names : list of str
        Actor parameter names.
    n_state : int
    parameters : dict
        Evaluated at these parameters (restored afterwards).

    Returns
    -------
    ndarray, shape (m n + 2 m, d)
        float64.

    Raises
    ------
    Nothing beyond the agent's own exceptions (the suite turns those into an error row).

    References
    ----------
    The chain rule; :func:`expected_policy_gradient_lqr` for the coordinates.
    """
    import torch
    from pgtheory.oracles.protocol import parameters_set

    probes = torch.as_tensor(np.vstack([np.zeros(n_state), np.eye(n_state)]),
                             dtype=torch.float32)
    with parameters_set(agent, parameters):
        named = agent.named_parameters()
        d = agent.distribution(probes)
        mean = d.mean
        std = torch.broadcast_to(d.stddev, mean.shape)
        k = mean[0]
        M = (mean[1:] - mean[0]).T  # (m, n)
        outs = [*M.reshape(-1), *k, *torch.log(std[0])]
        rows = []
        for o in outs:
            if not o.requires_grad:  # e.g. a detached log-std: no parameter moves it
                rows.append(np.zeros(sum(named[nm].numel() for nm in names)))
                continue
            gs = torch.autograd.grad(o, [named[nm] for nm in names], retain_graph=True,
                                     allow_unused=True)
            rows.append(np.concatenate([
                np.zeros(named[nm].numel()) if g is None
                else g.detach().cpu().numpy().astype(np.float64).ravel()
                for nm, g in zip(names, gs, strict=True)]))
    return np.array(rows)
