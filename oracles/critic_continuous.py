"""Layer 4, update level, continuous actions: the fitted critic on LQR against the exact fixed
point of its own regression (``update_level.critic@lqr``).

The reference is :func:`pgtheory.oracles.expectation_continuous.td_fixed_point_lqr`; the rule
(:func:`check_critic`) is the tabular :func:`pgtheory.oracles.update.check_critic`'s, measured
in the root-mean-square over the buffers' states. The suite runs it on a critic-evaluation run
whose policy is held at the Riccati gain (:func:`pgtheory.oracles.suite.run_suite`).

References: Tsitsiklis & Van Roy (1997), "An analysis of temporal-difference learning with
function approximation", IEEE TAC 42(5); Polyak & Juditsky (1992), SIAM J. Control Optim.
30(4).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from pgtheory.oracles import expectation_continuous as ec
from pgtheory.oracles.results import CheckResult
from pgtheory.oracles.update import settledness
from pgtheory.oracles.update_continuous import LAYER, AffinePolicy

import pgtheory.lqr as lqr

__all__ = ["CRITIC_RTOL", "CriticRecord", "check_critic"]

#: Root-mean-square gap of the fitted critic to its exact fixed point, relative to the fixed
#: point's root-mean-square, that passes :func:`check_critic` (the tabular check's 10%).
CRITIC_RTOL = 0.1


def _is_quadratic(q) -> bool:
    """Whether the probed critic has a quadratic part beyond float32 rounding: its curvature
    over the probe scale exceeds ``QUADRATIC_RTOL`` of its values there (an affine float32
    critic read by a least-squares quadratic fit shows ``|H|`` near 1e-8 of its values)."""
    s = ec.PROBE_SCALE
    size = abs(q.h0) + s * float(np.abs(q.h).max()) + s * s * float(np.abs(q.H).max())
    return s * s * float(np.abs(q.H).max()) > ec.QUADRATIC_RTOL * max(size, 1e-12)


@dataclasses.dataclass(frozen=True)
class CriticRecord:
    """One update of the critic-evaluation run of :func:`check_critic`.

    Attributes
    ----------
    critic : QuadraticCritic
        The critic after the update (:func:`pgtheory.oracles.expectation_continuous.
        quadratic_critic`).
    policy : AffinePolicy
        The policy that collected the update's buffer.
    states : ndarray, shape (B, n)
        The buffer's states (valid slots).
    horizons : ndarray of int, shape (B,)
        Steps each state's GAE trace runs
        (:func:`pgtheory.oracles.expectation_continuous.trace_horizons`).
    """

    critic: object
    policy: AffinePolicy
    states: np.ndarray
    horizons: np.ndarray


def check_critic(model: lqr.LQRModel, lam: float, window: list[CriticRecord],
                 earlier: list[CriticRecord], *, updates_between: int,
                 rtol: float = CRITIC_RTOL, settle_z: float = 1.0,
                 min_updates_between: int = 4, budget: str = "") -> CheckResult:
    """A fitted critic on LQR against the exact fixed point of its own regression.

    A critic of the affine class (``V(x) = theta^T (1, x)``; quadratic critics get the
    quadratic class, whose fixed point is ``V_pi`` itself) cannot represent the quadratic
    ``V_pi``; what a correct critic regressing on lambda-returns converges to is the TD(lambda)
    fixed point of its class on the states it is trained on
    (:func:`pgtheory.oracles.expectation_continuous.td_fixed_point_lqr`, exact in the actions
    and next states). The reference of each update is the fixed point on that update's buffer
    (its policy, states and trace lengths); as the tabular
    :func:`pgtheory.oracles.update.check_critic`, the fitted critics and the references of the
    last updates (``window``) are averaged (Polyak & Juditsky 1992) and compared in the
    root-mean-square over the window's states, ``gap = rms(V_fit - V_ref)``, within ``rtol *
    rms(V_ref)``: **pass**. The root-mean-square under the state law, not the maximum, because
    expected TD(lambda) with linear features is a contraction in that norm (Tsitsiklis & Van
    Roy 1997, Lemma 4), so a correct critic's gap shrinks in it (for the on-policy stationary
    law; the suite's buffers bootstrap at truncations, where that guarantee does not hold).

    Otherwise the verdict is **inconclusive**, with the tabular settledness rule's reading in
    the explanation (both windows measured against the final averaged reference: ``gap_e -
    gap_f`` above the noise ``settle_z * delta * sqrt(updates_between)``, ``delta`` the mean
    root-mean-square move per update: still approaching; ``gap_f - gap_e`` above it: moving
    away; otherwise settled off its target). The reading is not a failure, because it raised
    false alarms on random correct configurations: measured 2026-12-01 (``python
    tools/lqr_update_false_alarms.py --campaign sb3-a2c --seeds 20 --first-seed 1``), two of
    the five linear Stable-Baselines3 A2C draws read "moving away" (configuration 3: gap
    0.750 -> 0.768 against a noise level of 0.002) and "settled" (configuration 19: a critic
    moving 0.0007 per update under heavy gradient noise, its drift hidden in the noise), so a
    slow, noisy critic cannot be told from a wrong target by this rule. The only **fail** is a
    critic returning non-finite values. The suite runs this check on a critic-evaluation run whose
    policy is held at the Riccati gain (see :func:`pgtheory.oracles.suite.run_suite`), so that
    the reference does not move with the policy.

    Parameters
    ----------
    model : LQRModel
        The target's gamma.
    lam : float
        The target's GAE lambda.
    window, earlier : list of CriticRecord
        Consecutive updates at the end of the run, and of an earlier part of it.
    updates_between : int
        Updates from the last of ``earlier`` to the last of ``window``.
    rtol, settle_z, min_updates_between : float, float, int
        The rule's constants (above).
    budget : str
        For the explanation.

    Returns
    -------
    CheckResult
        Named ``update_level.critic@lqr``.

    Raises
    ------
    ValueError
        An empty ``window``.

    References
    ----------
    Tsitsiklis & Van Roy (1997), IEEE TAC 42(5), Lemma 4 and Thm. 1; Polyak & Juditsky (1992),
    SIAM J. Control Optim. 30(4); :func:`pgtheory.oracles.update.check_critic` (the rule).
    """
    name = "update_level.critic@lqr"
    if not window:
        raise ValueError("window: expected at least one update, received none")
    records = [*earlier, *window]
    if not all(np.all(np.isfinite(r.critic(r.states))) for r in records):
        return CheckResult(name, LAYER, "fail", "finite values", "NaN/inf",
                           "the critic returns non-finite values")
    quadratic = any(_is_quadratic(r.critic) for r in records)
    refs = [ec.td_fixed_point_lqr(model, r.policy, lam, r.states, r.horizons,
                                  quadratic=quadratic) for r in window]

    def average(qs):
        return ec.QuadraticCritic(np.mean([q.H for q in qs], axis=0),
                                  np.mean([q.h for q in qs], axis=0),
                                  float(np.mean([q.h0 for q in qs])))

    def rms(v) -> float:
        return float(np.sqrt(np.mean(np.square(v))))

    X = np.vstack([r.states for r in window])
    ref = average(refs)
    fit = average([r.critic for r in window])
    scale = max(rms(ref(X)), 1e-9)
    gap_f = rms(fit(X) - ref(X))
    tol = rtol * scale
    cls = "quadratic" if quadratic else "affine"
    n_w = len(window)
    text = (f"rms |V_phi - V_ref| = {gap_f:.3g} against rms |V_ref| = {scale:.3g} (allowed "
            f"{tol:.3g}) over the {len(X)} states of the last {n_w} updates, V_ref the exact "
            f"TD(lambda = {lam:g}) fixed point of the {cls} critic class, both averaged over "
            f"those updates{budget}")

    def verdict(kind: str, why: str) -> CheckResult:
        return CheckResult(name, LAYER, kind, f"gap <= {tol:.3g}", f"{gap_f:.3g}", why,
                           tolerance=rtol)

    if gap_f <= tol:
        return verdict("pass", f"the fitted critic matches its exact fixed point: {text}")
    moves = [rms(b.critic(X) - a.critic(X)) for w in (earlier, window)
             for a, b in itertools.pairwise(w)]
    gap_e = rms(average([r.critic for r in earlier])(X) - ref(X)) if earlier else float("nan")
    if not earlier or not moves or updates_between < min_updates_between:
        return verdict("inconclusive",
                       f"too few updates to tell whether the critic has settled "
                       f"({updates_between} between the windows, at least "
                       f"{min_updates_between} needed, and two consecutive ones in a window): "
                       f"its gap went from {gap_e:.3g} to {gap_f:.3g}; {text}")
    delta = float(np.mean(moves))
    state, noise = settledness(gap_e, gap_f, delta, updates_between, settle_z=settle_z)
    moved = (f"its gap went from {gap_e:.3g} to {gap_f:.3g} over the last {updates_between} "
             f"updates against a noise level of {noise:.3g} (mean move per update {delta:.3g} "
             f"x sqrt({updates_between}))")
    if state == "approaching":
        return verdict("inconclusive",
                       f"critic still moving toward its fixed point: {moved}; it has not "
                       f"settled, so its distance from the target is not evidence of a wrong "
                       f"target: {text}")
    state = "is moving away from it" if state == "moving away" else "has settled there"
    why = ""
    if rms(fit(X)) < 0.2 * scale:
        why = ("; V_phi is near zero where V_ref is not, as when the critic regresses on the "
               "advantage or on normalized targets")
    return verdict("inconclusive",
                   f"the fitted critic is off its exact target: {text}; the critic {state} "
                   f"({moved}){why}; not judged a defect: a slow critic under heavy gradient "
                   f"noise reads the same on correct code (check_critic)")
