"""Layer 3, in expectation: stochastic estimators against exact conditional expectations.

:func:`check_advantage_expectation` tests advantage estimates an implementation produced on
its own rollouts in a tabular oracle environment. Each sample ``i`` carries its state, action,
its true next state ``s'`` (the final state where the episode ended), the steps left to the end
of its rollout buffer (k) and to the time limit (m), and the estimate ``A_hat_i``. With the
implementation's critic ``values`` and ``h = min(k, m)``, the exact conditional expectation of
the GAE estimator given the next state is

* ``R(s, a) - V(s)`` if ``s'`` is terminal (no bootstrap);
* ``R(s, a) + gamma V(s') - V(s)`` if ``h = 1`` (bootstrap at the buffer end or time limit);
* ``R(s, a) + gamma V(s') - V(s) + gamma lam sum_a' pi(a'|s') X(s', a')`` otherwise, with
  ``X`` = :func:`pgtheory.expected_gae` at ``(k - 1, m - 1)``,

so the residual ``A_hat_i - E[A_hat | s_i, a_i, s'_i, k_i, m_i]`` has mean zero when the
estimator is right. Conditioning on ``s'`` makes bootstrap defects (whose bias is
``-gamma V(s')``) visible even when they average out over next states.

Statistics
----------
Samples whose next state is terminal or whose trace ends after their own step carry no
randomness beyond ``(s, a, s')``: a correct estimator's residual is exactly 0 there, so they
are checked exactly (tolerance ``atol``), with no false positives beyond rounding.
For the others: residuals inside one episode are correlated (overlapping traces), so the unit
of replication is an *episode*: every episode starts from a fresh draw from ``mu`` and a correct
estimator cuts its trace at every episode end, so given what happened before an episode, each of
its residuals still has conditional mean zero and the per-episode sums below are uncorrelated
martingale differences (``units="buffers"`` falls back to whole buffers, for rollouts that do
not start at a reset). For each group
``(s, a, s', h, what ends the trace)`` (``h`` capped at ``h_cap``; the trace ends at the time
limit or at the buffer end), the per-unit sums of residuals are
independent with mean zero; a one-sample t-test per group gives a p-value, and Holm's
step-down procedure over the groups controls the family-wise false-positive rate at ``alpha``
(under any dependence between groups). The stated false-positive rate is ``alpha``
(approximately: the t-test is asymptotic in the number of units); the measured rate over 200
seeds is reported by ``tests/test_oracles_expectation.py`` (slow). Groups whose mean residual is
below ``atol`` are treated as unbiased (float32 implementations round at about 1e-7).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pgtheory.oracles.results import CheckResult
from pgtheory.oracles.rollouts import RolloutBatch
from scipy import stats

import pgtheory as pg

__all__ = ["AdvantageSamples", "check_advantage_expectation", "check_gradient_expectation",
           "check_return_expectation", "expected_loss_gradient", "holm", "samples_from_rollouts"]


@dataclasses.dataclass(frozen=True)
class AdvantageSamples:
    """Flat advantage samples with the positions that determine their expectation.

    Attributes
    ----------
    states, actions, next_states : ndarray of int, shape (n,)
        ``next_states`` is the true ``s_{t+1}`` (the final state at an episode end).
    steps_to_buffer_end : ndarray of int, shape (n,)
        ``k >= 1``, counting the sample's own step.
    steps_to_time_limit : ndarray of int, shape (n,)
        ``m >= 1``, or 0 for no time limit.
    advantages : ndarray, shape (n,)
    units : ndarray of int, shape (n,)
        Identifier of the independent unit (episode, or buffer column) the sample came from.
    """

    states: np.ndarray
    actions: np.ndarray
    next_states: np.ndarray
    steps_to_buffer_end: np.ndarray
    steps_to_time_limit: np.ndarray
    advantages: np.ndarray
    units: np.ndarray


def samples_from_rollouts(batches: list[RolloutBatch], advantages: list, *,
                          units: str = "episodes") -> AdvantageSamples:
    """Flatten independent rollout buffers and the implementation's advantages on them.

    ``advantages[j]`` has the batch's shape (T, N). Every batch must start at fresh resets.
    With ``units="episodes"`` each episode (the steps of one env column up to and including a
    ``terminated`` or ``truncated`` step) is a unit of replication; with ``"buffers"`` each env
    column of each batch is one (see the module docstring). Slots a batch marks invalid
    (``RolloutBatch.valid``: next-step autoreset slots) are left out; a kept sample's ``k``
    still counts slots to the buffer end (a trace never crosses an episode end, so it never
    reaches a reset slot).

    Returns
    -------
    AdvantageSamples

    Raises
    ------
    ValueError
        Mismatched lengths or shapes.

    References
    ----------
    Module docstring (independent rollout buffers as units of replication).
    """
    if units not in ("episodes", "buffers"):
        raise ValueError(f"units: expected 'episodes' or 'buffers', received {units!r}")
    if len(batches) != len(advantages):
        raise ValueError(f"advantages: expected one array per batch ({len(batches)}), received "
                         f"{len(advantages)}")
    cols = {k: [] for k in ("s", "a", "s2", "k", "m", "adv", "u", "keep")}
    unit = 0
    for b, adv in zip(batches, advantages, strict=True):
        adv = np.asarray(adv, dtype=float)
        T, N = b.states.shape
        if adv.shape != (T, N):
            raise ValueError(f"advantages: expected shape {(T, N)}, received {adv.shape}")
        k = (T - np.arange(T))[:, None].repeat(N, axis=1)
        cols["s"].append(b.states.ravel())
        cols["a"].append(b.actions.ravel())
        cols["s2"].append(b.next_states.ravel())
        cols["k"].append(k.ravel())
        cols["m"].append(b.steps_to_time_limit.ravel())
        cols["adv"].append(adv.ravel())
        if units == "episodes":  # a new unit starts after every episode end, per env column
            ended = np.asarray(b.terminated, bool) | np.asarray(b.truncated, bool)
            starts = np.vstack([np.ones((1, N), bool), ended[:-1]])
            u = unit + np.cumsum(starts.T.ravel()).reshape(N, T).T - 1
            cols["u"].append(u.ravel())
            unit = int(u.max()) + 1
        else:
            cols["u"].append((unit + np.arange(N))[None, :].repeat(T, axis=0).ravel())
            unit += N
        cols["keep"].append(np.ones(T * N, bool) if b.valid is None
                            else np.asarray(b.valid, bool).ravel())
    c = {k: np.concatenate(v) for k, v in cols.items()}
    keep = c.pop("keep")
    c = {k: v[keep] for k, v in c.items()}
    return AdvantageSamples(c["s"], c["a"], c["s2"], c["k"], c["m"], c["adv"], c["u"])


def holm(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values (family-wise error control under dependence).

    Returns
    -------
    ndarray
        Adjusted p-values in the input order.

    Raises
    ------
    Nothing; NaN p-values propagate to their adjusted values.

    References
    ----------
    Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Stat.
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adj = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (p.size - rank) * p[i]))
        adj[i] = running
    return adj


def check_advantage_expectation(mdp: pg.TabularMDP, pi, values, lam: float,
                                samples: AdvantageSamples, *, alpha: float = 0.01,
                                h_cap: int = 4, min_units: int = 100,
                                atol: float = 1e-5) -> CheckResult:
    """Test that advantage estimates have the exact GAE conditional expectation.

    Parameters
    ----------
    mdp : TabularMDP
        The model of the oracle environment the rollouts came from (its gamma is used).
    pi : array_like, shape (S, A)
        The policy that collected the rollouts.
    values : array_like, shape (S,)
        The critic the implementation used (any critic: the expectation is exact for it).
    lam : float
        The implementation's GAE lambda.
    samples : AdvantageSamples
    alpha : float
        Family-wise false-positive rate (Holm over the groups).
    h_cap : int
        Horizons ``h >= h_cap`` share one group (the residuals stay exact).
    min_units : int
        Statistical groups seen in fewer independent units are not tested. The t-test's tail
        at Holm-corrected levels needs many units when residual sums are skewed: with 20 units
        the measured family-wise rate was 3.5% for a stated 1%, with 80 it was 0.5%.
    atol : float
        Mean residuals below this are treated as zero (reward units).

    Returns
    -------
    CheckResult
        ``p_value`` is the smallest Holm-adjusted p-value; on failure the explanation names
        the most biased group and its mean residual.

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    :func:`pgtheory.expected_gae`; Holm (1979).
    """
    name, layer = "in_expectation.advantages", "in_expectation"
    adv = np.asarray(samples.advantages, dtype=float)
    if not np.all(np.isfinite(adv)):
        return CheckResult(name, layer, "fail", "finite estimates", "NaN/inf",
                           "the implementation produced non-finite advantage estimates")
    p = np.asarray(pi, dtype=float)
    v = np.asarray(values, dtype=float)
    g = mdp.gamma
    cache: dict[tuple[int, int], np.ndarray] = {}

    def tail(k: int, m: int) -> np.ndarray:  # sum_a' pi(a'|s') E[A_hat_{t+1} | s', a', k, m]
        key = (k, m)
        if key not in cache:
            x = pg.expected_gae(mdp, p, v, lam=lam, steps_to_buffer_end=k,
                                steps_to_time_limit=m or None)
            cache[key] = np.einsum("sa,sa->s", p, x)
        return cache[key]

    expected = np.empty_like(adv)
    for i, (s, a, s2, k, m) in enumerate(zip(samples.states, samples.actions,
                                             samples.next_states, samples.steps_to_buffer_end,
                                             samples.steps_to_time_limit, strict=True)):
        h = min(int(k), int(m)) if m > 0 else int(k)
        e = mdp.R[s, a] - v[s]
        if not mdp.terminal[s2]:
            e += g * v[s2]
            if h > 1:
                e += g * lam * tail(int(k) - 1, int(m) - 1 if m > 0 else 0)[s2]
        expected[i] = e
    resid = adv - expected
    k_arr, m_arr = samples.steps_to_buffer_end, samples.steps_to_time_limit
    by_limit = (m_arr > 0) & (m_arr <= k_arr)  # the trace ends at the time limit (truncation)
    h_raw = np.where(by_limit, m_arr, k_arr)
    # no randomness is left when s' is terminal or the trace ends after this step: a correct
    # estimator's residual is exactly 0 there, so these samples are checked exactly
    exact = mdp.terminal[samples.next_states] | (h_raw == 1)
    bad = exact & (np.abs(resid) > atol + 1e-6 * np.abs(expected))
    if bad.any():
        i = int(np.flatnonzero(bad)[np.argmax(np.abs(resid[bad]))])
        why = ("the next state is terminal" if mdp.terminal[samples.next_states[i]] else
               "the trace ends at the " + ("time limit" if by_limit[i] else "buffer end"))
        return CheckResult(name, layer, "fail", f"{expected[i]:.6g}", f"{adv[i]:.6g}",
                           f"advantage estimate wrong where no randomness is left ({why}): state "
                           f"{samples.states[i]}, action {samples.actions[i]}, next state "
                           f"{samples.next_states[i]}: residual {resid[i]:+.4g} in "
                           f"{int(bad.sum())} of {int(exact.sum())} such samples", p_value=0.0)
    h = np.minimum(h_raw, h_cap)
    groups, p_values, means = [], [], []
    units = np.unique(samples.units)
    unit_index = {u: j for j, u in enumerate(units)}
    stochastic = ~exact
    keys = {(int(s), int(a), int(s2), int(hh), bool(bl)) for s, a, s2, hh, bl in
            zip(samples.states[stochastic], samples.actions[stochastic],
                samples.next_states[stochastic], h[stochastic], by_limit[stochastic],
                strict=True)}
    for key in sorted(keys):
        mask = (stochastic & (samples.states == key[0]) & (samples.actions == key[1])
                & (samples.next_states == key[2]) & (h == key[3]) & (by_limit == key[4]))
        sums = np.zeros(units.size)
        seen = np.zeros(units.size, bool)
        for u, r in zip(samples.units[mask], resid[mask], strict=True):
            sums[unit_index[u]] += r
            seen[unit_index[u]] = True
        if seen.sum() < min_units:
            continue
        x = sums[seen]
        if abs(float(resid[mask].mean())) <= atol:
            pv = 1.0
        elif np.allclose(x, x[0], rtol=0, atol=atol):  # constant non-zero sums: a sure bias
            pv = 0.0
        else:
            pv = float(stats.ttest_1samp(x, 0.0).pvalue)
        groups.append(key)
        p_values.append(pv)
        means.append(float(resid[mask].mean()))
    n_exact = int(exact.sum())
    if not groups:
        if n_exact:
            return CheckResult(name, layer, "pass", "residual 0", "residual 0",
                               f"{n_exact} samples without remaining randomness are exact; "
                               f"too few independent units ({units.size}) for the statistical "
                               f"groups", p_value=1.0)
        return CheckResult(name, layer, "skip", f">= {min_units} units per group",
                           f"{units.size} units", "too few independent rollout units to test")
    adj = holm(p_values)
    worst = int(np.argmin(adj))
    s, a, s2, hh, bl = groups[worst]
    where = (f"state {s}, action {a}, next state {s2}, {'>= ' if hh == h_cap else ''}{hh} "
             f"step(s) to the {'time limit' if bl else 'end of the buffer'}")
    if adj[worst] < alpha:
        return CheckResult(name, layer, "fail", "mean residual 0",
                           f"{means[worst]:+.4g} at ({where})",
                           f"advantage estimates are biased at {where}: mean residual "
                           f"{means[worst]:+.4g} against the exact GAE expectation (Holm-adjusted "
                           f"p = {adj[worst]:.2g} over {len(groups)} groups)",
                           p_value=float(adj[worst]))
    return CheckResult(name, layer, "pass", "mean residual 0", "consistent",
                       f"no bias detected in {len(groups)} (state, action, next state, horizon) "
                       f"groups "
                       f"over {units.size} independent units and {n_exact} exact samples "
                       f"(Holm-adjusted min p = "
                       f"{adj[worst]:.2g}, family-wise false-positive rate {alpha:.2g})",
                       p_value=float(adj[worst]))


# --------------------------------------------------------------------- returns
def check_return_expectation(mdp: pg.TabularMDP, pi, values, lam: float,
                             samples: AdvantageSamples, returns, **kwargs) -> CheckResult:
    """Test critic targets (lambda-returns) against their exact conditional expectation.

    ``R_hat = A_hat + V(s)`` for GAE-based targets, so ``E[R_hat | s, a, s', k, m] =
    E[A_hat | ...] + V(s)``: the residuals ``R_hat - V(s)`` are tested exactly as advantages
    by :func:`check_advantage_expectation` (same statistics, same false-positive rate).

    Parameters
    ----------
    returns : array_like, shape (n,)
        The implementation's value targets, aligned with ``samples``.
    **kwargs
        Passed to :func:`check_advantage_expectation`.

    Returns
    -------
    CheckResult
        Named ``in_expectation.returns``.

    Raises
    ------
    ValueError
        ``returns`` does not have one entry per sample.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Sec. 5; :func:`pgtheory.expected_gae`.
    """
    ret = np.asarray(returns, dtype=float)
    if ret.shape != samples.advantages.shape:
        raise ValueError(f"returns: expected shape {samples.advantages.shape}, received "
                         f"{ret.shape}")
    v = np.asarray(values, dtype=float)
    shifted = dataclasses.replace(samples, advantages=ret - v[samples.states])
    res = check_advantage_expectation(mdp, pi, values, lam, shifted, **kwargs)
    text = res.explanation.replace("advantage estimates", "value targets").replace(
        "advantage estimate", "value target")
    return dataclasses.replace(res, name="in_expectation.returns", explanation=text)


# ------------------------------------------------------------------- gradients
def expected_loss_gradient(mdp: pg.TabularMDP, pi, values, grad_log_pi, *, lam: float,
                           num_steps: int, time_limit: int | None, ent_coef: float = 0.0,
                           grad_entropy=None, gamma_t_weighting: bool = False,
                           reset_slots: bool = False) -> np.ndarray:
    """Exact expectation of the batch policy-loss gradient of one fresh rollout buffer.

    The estimator is ``-(1/T) sum_t w_t A_hat_t grad log pi(a_t | s_t) - ent_coef (1/T)
    sum_t grad H(pi(.|s_t))`` (averaged over the N environments, which share the law), where
    ``A_hat`` is GAE(lambda) with the critic ``values``, the buffer has ``num_steps`` steps and
    starts from fresh resets, episodes end at terminal states or the time limit and restart
    from ``mu``, and ``w_t = gamma^e`` (``e`` = steps since the episode began) when
    ``gamma_t_weighting`` else 1. The law of ``(s_t, e_t)`` is propagated exactly and
    ``E[A_hat_t | s_t, a_t] = expected_gae(k = T - t, m = L - e_t)``, so the result is exact
    for any network: ``grad_log_pi`` holds autograd gradients of ``log pi`` at every state.
    With ``reset_slots`` (gymnasium's next-step autoreset) every episode end is followed by
    one slot that only resets the env and contributes no term (the loss leaves it out), so an
    episode restarts from ``mu`` two slots after its last step; the sum is still divided by
    ``T``.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
    values : array_like, shape (S,)
        The implementation's critic (zeros without one).
    grad_log_pi : array_like, shape (S, A, d)
    lam : float
    num_steps : int
        ``T``, steps per environment in the buffer.
    time_limit : int or None
    ent_coef : float
    grad_entropy : array_like, shape (S, d), optional
        Required when ``ent_coef != 0``.
    gamma_t_weighting : bool
    reset_slots : bool
        Next-step autoreset: a reset slot after each episode end (see above).

    Returns
    -------
    ndarray, shape (d,)
        The expected gradient of the loss that is minimized.

    Raises
    ------
    ValueError
        Shapes inconsistent with the MDP, or ``grad_entropy`` missing with ``ent_coef != 0``.

    References
    ----------
    Sutton et al. (2000), NeurIPS, Thm. 1 (likelihood-ratio gradient); Nota & Thomas (2020),
    arXiv:1906.07073v2 (the on-policy state weighting of practical estimators vs gamma^t);
    :func:`pgtheory.expected_gae`.
    """
    p = np.asarray(pi, dtype=float)
    v = np.asarray(values, dtype=float)
    G = np.asarray(grad_log_pi, dtype=float)
    S, A = mdp.n_states, mdp.n_actions
    if p.shape != (S, A) or v.shape != (S,) or G.ndim != 3 or G.shape[:2] != (S, A):
        raise ValueError(f"expected pi (S, A) = {(S, A)}, values ({S},), grad_log_pi "
                         f"({S}, {A}, d); received {p.shape}, {v.shape}, {G.shape}")
    if ent_coef and (grad_entropy is None or np.shape(grad_entropy) != (S, G.shape[2])):
        raise ValueError(f"grad_entropy: expected shape {(S, G.shape[2])} when ent_coef != 0, "
                         f"received {None if grad_entropy is None else np.shape(grad_entropy)}")
    L = int(time_limit) if time_limit else 0
    E = max(L, 1) if L else num_steps + 1  # elapsed-step counter range
    P = mdp.dense_P()
    P_pi = np.einsum("sa,sat->st", p, P)
    q = np.zeros((S, E))
    q[:, 0] = mdp.mu
    g = mdp.gamma
    total = np.zeros(G.shape[2])
    cache: dict[tuple[int, int], np.ndarray] = {}
    resetting = 0.0  # mass in a next-step autoreset slot at step t (reset_slots only)
    for t in range(num_steps):
        k = num_steps - t
        for e in range(E):
            w_s = q[:, e]
            if not w_s.any():
                continue
            m = L - e if L else 0
            key = (k, m)
            if key not in cache:
                cache[key] = pg.expected_gae(mdp, p, v, lam=lam, steps_to_buffer_end=k,
                                             steps_to_time_limit=m or None)
            X = cache[key]
            weight = g**e if gamma_t_weighting else 1.0
            total -= weight * np.einsum("s,sa,sa,sad->d", w_s, p, X, G)
            if ent_coef:
                total -= ent_coef * (w_s @ np.asarray(grad_entropy, dtype=float))
        # propagate (s, e): continue, or reset on termination / time limit
        nq = np.zeros_like(q)
        flow = q.T @ P_pi  # (E, S') mass arriving in s' from elapsed e
        ends = mdp.terminal.astype(bool)
        ended = 0.0  # mass whose episode ended at step t
        for e in range(E):
            arrive = flow[e]
            ended += arrive[ends].sum()
            cont = np.where(ends, 0.0, arrive)
            if L and e + 1 >= L:
                ended += cont.sum()
            elif e + 1 < E:
                nq[:, e + 1] += cont
            else:
                nq[:, e] += cont  # no time limit: the counter saturates (unused without L)
        if reset_slots:  # one slot spent resetting, then a fresh start from mu
            nq[:, 0] += resetting * mdp.mu
            resetting = ended
        else:
            nq[:, 0] += ended * mdp.mu
        q = nq
    return total / num_steps


def check_gradient_expectation(samples, expected, *, alternative=None, alpha: float = 0.01,
                               n_directions: int = 4, seed: int = 0,
                               atol: float = 1e-6) -> CheckResult:
    """Test that gradient estimates average to the exact expected gradient.

    Each row of ``samples`` is one estimate from an independent rollout buffer at the same
    parameters. The estimates are projected on ``n_directions + 1`` fixed unit directions
    (the expected gradient's and seeded random ones; plus the direction separating
    ``alternative`` from ``expected`` when given); a one-sample t-test per direction tests the
    projected mean against the projected expectation, and Holm's procedure over the directions
    keeps the family-wise false-positive rate at ``alpha`` (asymptotic in the number of
    samples; the measured rate over 200 seeds is in ``tests/test_oracles_expectation.py``).

    Parameters
    ----------
    samples : array_like, shape (n, d)
    expected : array_like, shape (d,)
        From :func:`expected_loss_gradient`.
    alternative : array_like, shape (d,), optional
        The expectation under the other state weighting (``gamma^t`` vs on-policy); the
        explanation reports whether the samples are consistent with it too.
    alpha : float
    n_directions : int
    seed : int
        Seeds the random directions (fixed by default for reproducible verdicts).
    atol : float
        Projected discrepancies below this are treated as zero.

    Returns
    -------
    CheckResult
        ``in_expectation.policy_gradient``; ``p_value`` is the smallest Holm-adjusted value.

    Raises
    ------
    ValueError
        Shapes inconsistent, or fewer than 10 samples.

    References
    ----------
    Holm (1979); Nota & Thomas (2020), arXiv:1906.07073v2.
    """
    name, layer = "in_expectation.policy_gradient", "in_expectation"
    X = np.asarray(samples, dtype=float)
    mu = np.asarray(expected, dtype=float)
    if X.ndim != 2 or mu.shape != (X.shape[1],):
        raise ValueError(f"samples (n, d) and expected (d,): received {X.shape} and {mu.shape}")
    if X.shape[0] < 10:
        raise ValueError(f"samples: expected at least 10 independent estimates, received "
                         f"{X.shape[0]}")
    if not np.all(np.isfinite(X)):
        return CheckResult(name, layer, "fail", "finite gradients", "NaN/inf",
                           "the implementation produced non-finite gradient estimates")
    rng = np.random.default_rng(seed)
    dirs = [mu / np.linalg.norm(mu)] if np.linalg.norm(mu) > 0 else []
    alt = None if alternative is None else np.asarray(alternative, dtype=float)
    if alt is not None and np.linalg.norm(alt - mu) > 0:
        dirs.append((alt - mu) / np.linalg.norm(alt - mu))
    for _ in range(n_directions):
        u = rng.normal(size=mu.size)
        dirs.append(u / np.linalg.norm(u))
    U = np.stack(dirs)

    def pvals(target: np.ndarray) -> np.ndarray:
        proj = X @ U.T - U @ target  # (n, directions): mean zero under H0
        out = []
        for j in range(U.shape[0]):
            col = proj[:, j]
            if abs(col.mean()) <= atol:
                out.append(1.0)
            elif np.ptp(col) == 0:
                out.append(0.0)
            else:
                out.append(float(stats.ttest_1samp(col, 0.0).pvalue))
        return holm(out)

    adj = pvals(mu)
    p_min = float(adj.min())
    rel = float(np.linalg.norm(X.mean(0) - mu) / max(np.linalg.norm(mu), 1e-12))
    alt_note = ""
    if alt is not None:
        p_alt = float(pvals(alt).min())
        verdict = "also consistent" if p_alt >= alpha else "rejected"
        alt_note = f"; the other state weighting is {verdict} (p = {p_alt:.2g})"
    if p_min < alpha:
        return CheckResult(name, layer, "fail", "mean = exact expected gradient",
                           f"relative error {rel:.3g}",
                           f"the gradient estimates are biased: their mean differs from the "
                           f"exact expected gradient (relative error {rel:.3g} over "
                           f"{X.shape[0]} buffers, Holm-adjusted p = {p_min:.2g}){alt_note}",
                           p_value=p_min)
    return CheckResult(name, layer, "pass", "mean = exact expected gradient",
                       f"relative error {rel:.3g}",
                       f"the mean of {X.shape[0]} gradient estimates is consistent with the "
                       f"exact expected gradient (Holm-adjusted p = {p_min:.2g}, false-positive "
                       f"rate {alpha:.2g}){alt_note}", p_value=p_min)
