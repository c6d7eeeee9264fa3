"""Layer 4, update level: exact consequences of whole updates on a tabular oracle environment.

On a :class:`~pgtheory.oracles.envs.TabularEnv` with one-hot observations the agent's policy is a
table ``pi[s, a]`` (its network evaluated at every state), so exact quantities apply to it:

* :func:`check_update_kl` -- the exact mean ``KL(pi_k || pi_{k+1})`` under the on-policy state
  distribution of ``pi_k`` for every update, against TRPO's delta (PPO's is reported);
* :func:`check_improvement` -- the exact return ``J`` over a training run;
* :func:`check_convergence` -- ``J`` of the final policy against the optimal ``J*`` (policy
  iteration) within a relative tolerance;
* :func:`check_critic` -- the fitted critic after training against the exact ``V`` of the final
  policy (its regression target's expectation).

References: Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12) (the mean-KL constraint);
Kakade & Langford (2002) (improvement for small steps); :mod:`pgtheory.evaluation`.
"""

from __future__ import annotations

import itertools

import numpy as np
from pgtheory.oracles.results import CheckResult

import pgtheory as pg

__all__ = ["check_convergence", "check_critic", "check_improvement", "check_update_kl",
           "settledness", "tabular_policy", "tabular_values"]

LAYER = "update_level"


def _onehots(n_states: int):
    import torch

    return torch.eye(n_states, dtype=torch.float32)


def tabular_policy(agent, n_states: int, parameters: dict | None = None) -> np.ndarray:
    """The agent's action probabilities at every state of a one-hot tabular env.

    Parameters
    ----------
    agent
        A protocol agent with a categorical ``distribution``.
    n_states : int
    parameters : dict, optional
        Evaluate at these parameters (restored afterwards); default the current ones.

    Returns
    -------
    ndarray, shape (S, A)
        Rows sum to 1 (float64).

    Raises
    ------
    ValueError
        The distribution has no ``probs`` (not categorical) or they are not finite.
    """
    import torch
    from pgtheory.oracles.protocol import parameters_set

    def probs() -> np.ndarray:
        with torch.no_grad():
            d = agent.distribution(_onehots(n_states))
        if not hasattr(d, "probs"):
            raise ValueError(f"distribution: expected a categorical distribution with probs, "
                             f"received {type(d).__name__}")
        p = d.probs.detach().cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError("distribution: action probabilities contain NaN or inf")
        return p / p.sum(axis=1, keepdims=True)

    if parameters is None:
        return probs()
    with parameters_set(agent, parameters):
        return probs()


def tabular_values(agent, n_states: int, parameters: dict | None = None) -> np.ndarray:
    """The agent's critic at every state (zeros when it has none), shape (S,).

    Raises
    ------
    Nothing beyond the agent's own exceptions.
    """
    import torch
    from pgtheory.oracles.protocol import parameters_set

    if not callable(getattr(agent, "value", None)):
        return np.zeros(n_states)

    def values() -> np.ndarray:
        with torch.no_grad():
            return agent.value(_onehots(n_states)).detach().cpu().numpy().astype(np.float64)

    if parameters is None:
        return values()
    with parameters_set(agent, parameters):
        return values()


def check_update_kl(mdp: pg.TabularMDP, policies: list, *, max_kl: float | None = None,
                    time_limit: int | None = None, slack: float = 3.0) -> CheckResult:
    """Exact mean KL between consecutive policies, against a trust region when there is one.

    The mean is under the on-policy state distribution of the old policy (the distribution
    the implementation's batch was sampled from, with the env's time limit). TRPO enforces
    ``KL <= delta`` on its *batch*, a sample of that distribution; the exact mean may exceed
    delta through sampling error, so the check fails only above ``slack * delta`` (default 3).

    Parameters
    ----------
    mdp : TabularMDP
    policies : list of array_like, shape (S, A)
        ``pi_0, pi_1, ...`` before and after each update.
    max_kl : float, optional
        TRPO's delta; without it the KLs are reported and the verdict is ``skip``.
    time_limit : int, optional
    slack : float

    Returns
    -------
    CheckResult

    Raises
    ------
    ValueError
        Fewer than two policies.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12); :func:`pgtheory.policy_divergence`.
    """
    name = "update_level.kl"
    if len(policies) < 2:
        raise ValueError(f"policies: expected at least 2, received {len(policies)}")
    kls = []
    for old, new in itertools.pairwise(policies):
        d = pg.on_policy_distribution(mdp, old, time_limit=time_limit)
        kls.append(float(pg.policy_divergence(mdp, old, new, state_distribution=d).mean_kl))
    worst = int(np.argmax(kls))
    summary = f"max {kls[worst]:.3g} (update {worst}), median {np.median(kls):.3g}"
    if max_kl is None:
        return CheckResult(name, LAYER, "skip", "no KL bound declared", summary,
                           f"exact mean KL per update {summary}; the target declares no trust "
                           f"region, so nothing is asserted")
    if kls[worst] > slack * max_kl:
        return CheckResult(name, LAYER, "fail", f"<= {slack} x delta = {slack * max_kl:.3g}",
                           f"{kls[worst]:.3g}",
                           f"update {worst} moved the policy by exact mean KL {kls[worst]:.3g}, "
                           f"more than {slack} x delta ({max_kl}): the trust region is not "
                           f"enforced", tolerance=slack * max_kl)
    return CheckResult(name, LAYER, "pass", f"<= {slack} x delta", summary,
                       f"{len(kls)} updates within the trust region (exact mean KL {summary}, "
                       f"delta {max_kl})", tolerance=slack * max_kl)


def check_improvement(mdp: pg.TabularMDP, policies: list, *, margin: float = 0.0,
                      rtol: float = 0.05) -> CheckResult:
    """The exact return ``J`` over a training run: it must not fall.

    Rule (a fail is evidence of a defect, nothing less):

    * **pass**: ``J_end > J_start + margin``;
    * **fail**: ``J_end < J_start - rtol * max(|J*|, J* - J_start)`` (``J*`` by policy
      iteration): over the whole run the exact return fell by more than ``rtol`` (default 5%,
      the tolerance of :func:`check_convergence`) of its scale. Updates along the policy
      gradient with small steps do not lower ``J`` (Kakade & Langford 2002, Thm. 4.1), so a
      run that ends clearly worse than it started ascends in a wrong direction (a sign or
      weighting error);
    * **fail**: every recorded policy equals the first (action probabilities within
      ``1e-9``) while ``J_start < J* - rtol * |J*|``: the updates have no effect at all. At a
      policy with full support the exact gradient of ``J`` is non-zero whenever ``J < J*``
      (policy-gradient theorem: it is ``d_pi(s) pi(a|s) A_pi(s, a) / (1 - gamma)`` for
      softmax logits, and ``J < J*`` leaves a visited state with a non-zero advantage;
      performance-difference lemma), so a correct update with a positive step size moves the
      policy (seeded defects that do this: NaN gradients skipped, a line search that never
      accepts);
    * **inconclusive**: otherwise -- ``J`` did not move measurably (a step size too small for
      the budget, or a start already near ``J*``); that is not evidence of a defect by itself
      (other checks test the step).

    Parameters
    ----------
    mdp : TabularMDP
    policies : list of array_like, shape (S, A)
        The policies recorded over training, first to last.
    margin : float
        Improvement required for a pass.
    rtol : float
        The fall, relative to ``max(|J*|, J* - J_start)``, that fails.

    Returns
    -------
    CheckResult
        The explanation gives ``J`` at the start, the end and its largest drop.

    Raises
    ------
    ValueError
        Fewer than two policies.

    References
    ----------
    Kakade & Langford (2002), ICML, Thm. 4.1 (improvement for small steps along the gradient)
    and Lemma 6.1 (performance difference); Sutton et al. (2000), NeurIPS, Thm. 1 (policy
    gradient theorem); :func:`pgtheory.policy_iteration`.
    """
    name = "update_level.improvement"
    if len(policies) < 2:
        raise ValueError(f"policies: expected at least 2, received {len(policies)}")
    J = np.array([pg.expected_return(mdp, p) for p in policies])
    J_star = float(pg.expected_return(mdp, pg.policy_iteration(mdp).policy))
    drop_tol = rtol * max(abs(J_star), J_star - J[0], 1e-12)
    drops = np.diff(J)
    text = (f"J {J[0]:.4g} -> {J[-1]:.4g} over {len(J) - 1} recorded policies (largest drop "
            f"between consecutive ones {min(drops.min(), 0):.3g}; J* = {J_star:.4g})")
    if J[-1] > J[0] + margin:
        return CheckResult(name, LAYER, "pass", f"J_end > J_start + {margin}", f"{J[-1]:.4g}",
                           text, tolerance=margin)
    if J[-1] < J[0] - drop_tol:
        return CheckResult(name, LAYER, "fail", f"J_end >= J_start - {drop_tol:.3g}",
                           f"{J[-1]:.4g}",
                           f"the exact return did not improve over training, it fell by "
                           f"{J[0] - J[-1]:.3g} (more than {drop_tol:.3g}, {rtol:g} of its "
                           f"scale): {text}; a sign or weighting error in the update",
                           tolerance=drop_tol)
    frozen = all(np.allclose(np.asarray(p, dtype=float), np.asarray(policies[0], dtype=float),
                             rtol=0.0, atol=1e-9) for p in policies[1:])
    if frozen and J[0] < J_star - rtol * max(abs(J_star), 1e-12):
        return CheckResult(name, LAYER, "fail", "the policy moves (J < J*)", "unchanged",
                           f"the exact return did not improve over training: the policy did "
                           f"not change at all over {len(J) - 1} recorded policies although "
                           f"J = {J[0]:.4g} < J* = {J_star:.4g}; the updates have no effect "
                           f"(e.g. NaN gradients skipped, a line search that never accepts)",
                           tolerance=drop_tol)
    return CheckResult(name, LAYER, "inconclusive", f"J_end > J_start + {margin}",
                       f"{J[-1]:.4g}",
                       f"the exact return did not change measurably over training (within "
                       f"{drop_tol:.3g}): {text}; a step size too small for the budget is not "
                       f"a defect by itself", tolerance=drop_tol)


def check_convergence(mdp: pg.TabularMDP, pi, *, rtol: float = 0.05, budget: str = "",
                      required: bool = True) -> CheckResult:
    """``J(pi) >= J* - rtol * |J*|`` with ``J*`` from policy iteration.

    Rule: a gap larger than ``rtol * |J*|`` after the budget is a **fail** only when
    ``required`` -- the caller vouches that the budget suffices for these hyperparameters
    (the project's own implementations at their tuned settings, in the pytest suite).
    Otherwise (``required=False``, the audit of an arbitrary configuration) it is
    **inconclusive**: softmax policy gradient converges to ``J*`` but can stay on a
    sub-optimal plateau for a time that grows without bound as the step size shrinks (Mei et
    al. 2020; Li et al. 2021), so a gap after a fixed budget is not evidence of a defect
    (:func:`check_improvement` catches a return that falls).

    Parameters
    ----------
    rtol : float
        Relative gap allowed (default 5%).
    budget : str
        The training budget, for the explanation.
    required : bool
        Whether not converging within the budget fails (see the rule).

    Returns
    -------
    CheckResult

    Raises
    ------
    InvalidPolicyError
        ``pi`` is not a stochastic (S, A) matrix.

    References
    ----------
    :func:`pgtheory.policy_iteration`; Mei et al. (2020), ICML, "On the global convergence
    rates of softmax policy gradient methods"; Li et al. (2021), "Softmax policy gradient
    methods can take exponential time to converge", COLT.
    """
    name = "update_level.convergence"
    J = float(pg.expected_return(mdp, pi))
    J_star = float(pg.expected_return(mdp, pg.policy_iteration(mdp).policy))
    gap = J_star - J
    tol = rtol * max(abs(J_star), 1e-12)
    text = f"J = {J:.4g} vs J* = {J_star:.4g} (gap {gap:.3g}, allowed {tol:.3g}){budget}"
    if gap > tol and not required:
        return CheckResult(name, LAYER, "inconclusive", f">= {J_star - tol:.4g}", f"{J:.4g}",
                           f"not near-optimal after training: {text}; the budget may be too "
                           f"small for these hyperparameters (not a defect by itself)",
                           tolerance=rtol)
    if gap > tol:
        return CheckResult(name, LAYER, "fail", f">= {J_star - tol:.4g}", f"{J:.4g}",
                           f"not near-optimal after training: {text}", tolerance=rtol)
    return CheckResult(name, LAYER, "pass", f">= {J_star - tol:.4g}", f"{J:.4g}",
                       f"near-optimal: {text}", tolerance=rtol)


def settledness(gap_earlier: float, gap_final: float, delta: float, updates_between: int, *,
                settle_z: float = 1.0) -> tuple[str, float]:
    """The settledness rule of :func:`check_critic`: where a critic off its target is heading.

    The noise level is ``settle_z * delta * sqrt(updates_between)``: ``N`` undirected moves of
    size ``delta`` (a critic fluctuating where it has settled) carry it about ``delta sqrt(N)``,
    ``N`` directed ones ``delta N`` (Feller 1968, Vol. 1, Ch. III).

    Parameters
    ----------
    gap_earlier, gap_final : float
        The distance of the earlier and of the final window's averaged critic from the final
        averaged target (the caller's norm, value units).
    delta : float
        The critic's mean move per update within the windows (same norm).
    updates_between : int
        Updates from the last of the earlier window to the last of the final one.
    settle_z : float
        Multiple of the noise level (see :func:`check_critic` for why 1).

    Returns
    -------
    state : {"approaching", "moving away", "settled"}
        ``gap_earlier - gap_final`` above the noise level, ``gap_final - gap_earlier`` above
        it, or neither.
    noise : float
        The noise level.

    Raises
    ------
    Nothing: NaN gaps compare false, so they read as settled; callers rule them out first.
    """
    noise = settle_z * delta * float(np.sqrt(updates_between))
    if gap_earlier - gap_final > noise:
        return "approaching", noise
    if gap_final - gap_earlier > noise:
        return "moving away", noise
    return "settled", noise


def check_critic(mdp: pg.TabularMDP, pi, values, *, rtol: float = 0.1,
                 min_visit: float = 0.05, time_limit: int | None = None,
                 budget: str = "", earlier: tuple | None = None,
                 updates_between: int | None = None, since: str = "",
                 settle_z: float = 1.0, min_updates_between: int = 4) -> CheckResult:
    """A fitted critic against its exact target: ``V_phi(s)`` vs the exact ``V_pi(s)``.

    After training, the critic regresses on lambda-returns of (nearly) the final policy, whose
    expectation is ``V_pi`` at every state the policy visits (for any lambda: ``V_pi`` is the
    fixed point of every TD(lambda) target). A critic trained by stochastic gradient steps does
    not sit at that fixed point: its last iterate fluctuates around it with the step size's
    noise (one RMSprop step on 64 transitions per A2C update). The check therefore takes the
    critics and policies of the last ``K`` updates (a window) and compares the averaged critic
    ``mean_k V_phi_k`` with the averaged exact target ``mean_k V_{pi_k}`` (iterate averaging,
    Polyak & Juditsky 1992), at the non-terminal states whose on-policy visitation, averaged
    over the window, is at least ``min_visit``, within ``rtol * max_s |V(s)|``. Defects that
    change the target (regressing on the advantage, normalized targets, a wrong sign, a wrong
    discount) move it by a multiple of the values, and averaging keeps them.

    Measured in the audit's training run on probe 5 (40 seeds of our A2C): the last iterate's
    worst relative error reached 0.117 (seed 27: a false alarm at ``rtol = 0.1`` before the
    window), the 20-update average's at most 0.010; the critic-target mutants of
    :mod:`pgtheory.lab.mutants` sit at 0.47 or more.

    **Settledness: a fail needs a critic that has stopped approaching its target.** A critic
    off its target after the budget is evidence of a defect only if it has converged to the
    wrong thing; a correct critic with a small step size is still on its way (Adam moves a
    weight by at most about its step size per step, so 760 steps at 1e-3 move it at most
    0.76: Stable-Baselines3's linear TRPO critic, ``n_steps=256``, was measured at ``V_phi``
    0.68 against ``V_pi`` 1.00 after 9,728 steps, its gap shrinking from 0.94 to 0.27 over
    training). With ``earlier`` -- the window of an earlier part of training (the suite's:
    the last updates of the fifth of the budget before the final window's fifth), its last
    update ``updates_between`` updates before the final window's last -- the rule is:

    * both windows' averaged critics are measured against the *final* averaged target (a
      target that moved meanwhile is not mistaken for a critic that moved):
      ``gap_e = max_s |V_earlier(s) - V_pi(s)|``, ``gap_f = max_s |V_final(s) - V_pi(s)|``
      over the visited states;
    * the noise level is ``settle_z * delta * sqrt(N)``, ``delta`` the critic's mean
      per-update movement ``max_s |V_{k+1}(s) - V_k(s)|`` within the windows and ``N =
      updates_between``: ``N`` undirected steps of size ``delta`` (a critic fluctuating
      around where it has settled) move it by about ``delta sqrt(N)`` (a random walk;
      fluctuations around a fixed point grow even less), ``N`` directed steps by ``delta N``.
      ``settle_z = 1`` (not 2) because the errors are not symmetric: calling a moving critic
      settled is a false alarm, the reverse only loses power;
    * ``gap_e - gap_f`` above the noise level: the critic is **still moving toward V_pi**:
      **inconclusive**, with the measured gaps;
    * ``gap_f - gap_e`` above it: the critic moves *away* from its target: **fail**;
    * otherwise it has settled off its target: **fail** -- unless ``N <
      min_updates_between`` (default 4: a directed walk beats ``delta sqrt(N)`` by a factor
      ``sqrt(N)``, at least 2 from ``N = 4``) or no window holds two consecutive updates to
      measure ``delta``: then too few updates to tell, **inconclusive**.

    Measured on probe 5 (seed 0, audit budget 9,600 steps): the critic-target mutants of
    :mod:`pgtheory.lab.mutants` change their gap by at most 0.002 against noise levels of 0.16
    and 0.26 (advantage targets 0.501 -> 0.499, normalized targets 0.943 -> 0.945; a
    flipped value-loss sign moves away, 729 -> 899 against 31); the linear TRPO critic above
    approaches by 0.17 (0.489 -> 0.321) against 0.059. Without ``earlier`` the caller vouches
    that the critic has settled (a critic off its target fails).

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A) or (K, S, A)
        The final policy, or the policies after each of the last ``K`` updates.
    values : array_like, shape (S,) or (K, S)
        The agent's critic at every state, after the same updates as ``pi`` (consecutive).
    rtol, min_visit : float
    time_limit : int, optional
        For the on-policy visitation.
    budget : str
        For the explanation.
    earlier : tuple (policies, values), optional
        The critic after consecutive updates of an earlier part of training (shapes as
        ``pi`` and ``values``; its policies are not used: both windows are measured against
        the final target). Empty when no update fell there: too few updates to tell.
    updates_between : int, optional
        Updates from the last of ``earlier`` to the last of the final window (required with
        ``earlier``).
    since : str
        Extra text on how far back ``earlier`` lies (e.g. ``"(2048 env steps) "``).
    settle_z : float
    min_updates_between : int
        The settledness rule's constants (above).

    Returns
    -------
    CheckResult

    Raises
    ------
    InvalidPolicyError
        A policy is not a stochastic (S, A) matrix.
    ValueError
        ``values`` does not have the shape of ``pi`` without its action axis; ``earlier``
        without ``updates_between`` or with values of another width.

    References
    ----------
    Sutton & Barto (2018), Sec. 12.1 (the lambda-return's expectation is V_pi);
    Polyak & Juditsky (1992), SIAM J. Control Optim. 30(4) (averaged stochastic iterates);
    Kingma & Ba (2015), ICLR, Sec. 2.1 (Adam's step is bounded by about the step size);
    Feller (1968), *An Introduction to Probability Theory*, Vol. 1, Ch. III (a random walk's
    displacement grows as the square root of its steps);
    :func:`pgtheory.state_values`, :func:`pgtheory.on_policy_distribution`.
    """
    name = "update_level.critic"
    v = np.asarray(values, dtype=float)
    pis = np.asarray(pi, dtype=float)
    if pis.ndim == 2:
        pis, v = pis[None], v[None]
    if v.shape != pis.shape[:2]:
        raise ValueError(f"values: expected shape {pis.shape[:2]} (the policies' (K, S)), "
                         f"received {np.asarray(values).shape}")
    if not np.all(np.isfinite(v)):
        return CheckResult(name, LAYER, "fail", "finite values", "NaN/inf",
                           "the critic returns non-finite values")
    v_earlier = None
    if earlier is not None:
        v_earlier = np.asarray(earlier[1], dtype=float)
        if v_earlier.size == 0:  # no update in the earlier part: settledness unknown
            v_earlier = np.zeros((0, v.shape[1]))
        elif v_earlier.ndim == 1:
            v_earlier = v_earlier[None]
        if v_earlier.ndim != 2 or v_earlier.shape[1] != v.shape[1]:
            raise ValueError(f"earlier: expected values of shape (K', {v.shape[1]}), received "
                             f"{v_earlier.shape}")
        if updates_between is None:
            raise ValueError("updates_between: required with earlier")
    n = len(pis)
    exact = np.mean([pg.state_values(mdp, p) for p in pis], axis=0)
    visit = np.mean([pg.on_policy_distribution(mdp, p, time_limit=time_limit) for p in pis],
                    axis=0)
    v_final = v
    v = v.mean(axis=0)
    mask = (visit >= min_visit) & ~mdp.terminal.astype(bool)
    tol = rtol * max(float(np.abs(exact[mask]).max()) if mask.any() else 0.0, 1e-6)
    err = np.abs(v - exact)
    worst = int(np.flatnonzero(mask)[np.argmax(err[mask])])
    window = f" (both averaged over the last {n} updates)" if n > 1 else ""
    text = (f"max |V_phi - V_pi| = {err[worst]:.3g} at state {worst} (V_phi {v[worst]:.4g}, "
            f"V_pi {exact[worst]:.4g}){window} over {int(mask.sum())} visited states, allowed "
            f"{tol:.3g}{budget}")
    if err[worst] <= tol:
        return CheckResult(name, LAYER, "pass", f"{exact[worst]:.4g}", f"{v[worst]:.4g}",
                           f"the fitted critic matches V of the policy: {text}",
                           tolerance=rtol)

    def verdict(kind: str, why: str) -> CheckResult:
        return CheckResult(name, LAYER, kind, f"{exact[worst]:.4g}", f"{v[worst]:.4g}", why,
                           tolerance=rtol)

    settled = ""
    if v_earlier is not None:
        if not np.all(np.isfinite(v_earlier)):
            return verdict("fail", "the critic returned non-finite values earlier in training")
        moves = [np.abs(np.diff(w[:, mask], axis=0)).max(axis=1)
                 for w in (v_earlier, v_final) if len(w) > 1]
        gap_f = float(err[mask].max())
        gap_e = (float(np.abs(v_earlier.mean(axis=0) - exact)[mask].max()) if len(v_earlier)
                 else float("nan"))
        if not len(v_earlier) or not moves or updates_between < min_updates_between:
            return verdict("inconclusive",
                           f"too few updates to tell whether the critic has settled "
                           f"({updates_between} between the windows, at least "
                           f"{min_updates_between} needed, and two consecutive ones in a "
                           f"window): its gap to V_pi went from {gap_e:.3g} to {gap_f:.3g}; "
                           f"{text}")
        delta = float(np.concatenate(moves).mean())
        state, noise = settledness(gap_e, gap_f, delta, updates_between, settle_z=settle_z)
        moved = (f"its gap to the final V_pi went from {gap_e:.3g} to {gap_f:.3g} over the "
                 f"last {updates_between} updates {since}against a noise level of "
                 f"{noise:.3g} (mean move per update {delta:.3g} x sqrt({updates_between}))")
        if state == "approaching":
            return verdict("inconclusive",
                           f"critic still moving toward V_pi: {moved}; it has not settled, "
                           f"so its distance from the target is not evidence of a wrong "
                           f"target: {text}")
        state = "is moving away from it" if state == "moving away" else "has settled there"
        settled = f"; the critic {state} ({moved})"
    why = ""
    if abs(v[worst] - 0.5 * exact[worst]) < tol:
        why = "; V_phi is about V_pi / 2, as when the critic regresses on the advantage"
    return verdict("fail", f"the fitted critic is off its exact target: {text}{settled}{why}")
