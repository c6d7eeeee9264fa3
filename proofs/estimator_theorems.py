"""Theorems 8-9: GAE as a sum of TD errors, and the PPO clipped objective's gradient table."""

from __future__ import annotations

from pgtheory.extras import require

require("proofs")  # before the optional imports: a missing extra is one line naming it

import sympy as sp
from pgtheory.proofs._core import Theorem, Verdict, equality, failed, proved

gamma, lam = sp.symbols("gamma lambda", positive=True)


def td_errors(T: int, gamma_in_delta: bool = True):
    r = sp.symbols(f"r0:{T}")
    V = sp.symbols(f"V0:{T + 1}")
    g = gamma if gamma_in_delta else 1
    return r, V, [r[t] + g * V[t + 1] - V[t] for t in range(T)]


def n_step_advantage(r, V, n: int):
    """A^(n)_0 = sum_{l<n} gamma^l r_l + gamma^n V_n - V_0."""
    return sum(gamma**l * r[l] for l in range(n)) + gamma**n * V[n] - V[0]


def gae_weighted(delta, weight=lambda l: (gamma * lam) ** l):
    return sum(weight(l) * delta[l] for l in range(len(delta)))


def gae_identities(weight=None, gamma_in_delta: bool = True, max_T: int = 6) -> Verdict:
    weight = weight or (lambda l: (gamma * lam) ** l)
    for T in range(1, max_T + 1):
        r, V, delta = td_errors(T, gamma_in_delta)
        syms = (gamma, lam, *r, *V)
        # the N-step advantage is a discounted sum of TD errors
        for n in range(1, T + 1):
            if sp.expand(n_step_advantage(r, V, n) - sum(gamma**l * delta[l]
                                                          for l in range(n))) != 0:
                return failed(f"A^({n}) != sum_l gamma^l delta_l at T = {T}")
        # truncated lambda-average: weights (1-lam) lam^(N-1) for N < T, lam^(T-1) on A^(T)
        avg = sum((1 - lam) * lam ** (n - 1) * n_step_advantage(r, V, n) for n in range(1, T))
        avg += lam ** (T - 1) * n_step_advantage(r, V, T)
        v = equality(avg, gae_weighted(delta, weight), syms,
                     what=f"lambda-average of n-step advantages at horizon T = {T}")
        if not v.ok:
            return v
        if sp.expand(gae_weighted(delta, weight).subs(lam, 0) - delta[0]) != 0:
            return failed("lambda = 0 is not the TD error")
        lam1 = sum(gamma**l * r[l] for l in range(T)) + gamma**T * V[T] - V[0]
        if sp.expand(gae_weighted(delta, weight).subs(lam, 1) - lam1) != 0:
            return failed("lambda = 1 is not the discounted return minus V")
    return proved(f"A^(N) = sum_l gamma^l delta_l; (1-lam) sum_N lam^(N-1) A^(N) (remaining "
                  f"weight on A^(T)) = sum_l (gamma lam)^l delta_l; lam = 0 gives delta_0 and "
                  f"lam = 1 the return minus V(s_0): polynomial identities for T = 1..{max_T}")


def gae_reference(T: int):
    """Symbolic GAE at t = 0 over a T-step trajectory with bootstrap V_T, and its symbols."""
    r, V, delta = td_errors(T)
    return (gamma, lam, r, V), gae_weighted(delta)


# ----------------------------------------------------------------------- theorem 9: PPO
eps = sp.Symbol("epsilon", positive=True)
r_sym = sp.Symbol("r", positive=True)


def clip(x, lo, hi):
    return sp.Min(sp.Max(x, lo), hi)


def ppo_term(r, A, *, combine=sp.Min, ratio=lambda r: r):
    return combine(ratio(r) * A, clip(r, 1 - eps, 1 + eps) * A)


def ppo_gradient_table(combine=sp.Min, ratio=lambda r: r) -> Verdict:
    """d/dr of min(r A, clip(r, 1-eps, 1+eps) A) in the six cells (sign of A x region of r).

    Expected: A > 0: below -> A, inside -> A, above -> 0; A < 0: below -> 0, inside -> A,
    above -> A. Each cell is settled symbolically: r is written as a point of the region with
    positive symbols (u, eps, |A|), where sympy resolves Min/Max from the assumptions.
    """
    u, w, Am = sp.symbols("u w A_abs", positive=True)
    # regions parameterized with positive symbols (eps < 1 via eps = 1/(1 + w))
    e = 1 / (1 + w)
    cells = {
        "below": (1 - e) / (1 + u),             # 0 < r < 1 - eps
        "inside": (1 - e) + 2 * e / (2 + u),    # 1 - eps < r < 1 + eps
        "above": 1 + e + u,                     # r > 1 + eps
    }
    expected = {(1, "below"): 1, (1, "inside"): 1, (1, "above"): 0,
                (-1, "below"): 0, (-1, "inside"): 1, (-1, "above"): 1}
    rows = []
    for sign in (1, -1):
        A = sign * Am
        for region, point in cells.items():
            f = ppo_term(r_sym, A, combine=combine, ratio=ratio).subs(eps, e)
            deriv = sp.diff(f, r_sym).subs(r_sym, point)
            deriv = sp.simplify(deriv)
            want = expected[(sign, region)] * A
            if deriv.has(sp.Min, sp.Max, sp.Heaviside, sp.Piecewise) or \
                    sp.simplify(deriv - want) != 0:
                return failed(f"A {'>' if sign > 0 else '<'} 0, r {region} the clip range: "
                              f"d/dr = {deriv}, expected {want}")
            rows.append(f"A{'>' if sign > 0 else '<'}0/{region}: {'0' if want == 0 else 'A'}")
    # at r = 1 (inside the range) the gradient wrt theta is A grad log pi (vanilla PG):
    theta, theta_old = sp.symbols("theta theta_old", real=True)
    pi = 1 / (1 + sp.exp(-theta))  # pi_theta(a) for a two-action sigmoid policy
    pi_old = pi.subs(theta, theta_old)
    A = sp.Symbol("A", real=True)
    inside = ratio(pi / pi_old) * A  # the active (unclipped) branch near r = 1
    g = sp.diff(inside, theta).subs(theta, theta_old)
    vanilla = A * sp.diff(sp.log(pi), theta).subs(theta, theta_old)
    v = equality(g, vanilla, (A, theta_old), what="gradient at r = 1")
    if not v.ok:
        return v
    return proved("d/dr table " + "; ".join(rows) + "; at r = 1 the gradient is A grad log pi")


THEOREMS = [
    Theorem("gae", "A^(N) = sum_l gamma^l delta_l and the lambda-average is sum_l (gamma "
            "lambda)^l delta_l (truncated horizon); lambda = 0 and 1 cases",
            "Schulman et al. (2016), GAE, arXiv:1506.02438v6, Eqs. (11)-(18)", gae_identities,
            {"weights lambda^l instead of (gamma lambda)^l": lambda: gae_identities(
                weight=lambda l: lam**l),
             "gamma missing from the TD error": lambda: gae_identities(gamma_in_delta=False)}),
    Theorem("ppo_clip_gradient", "derivative of the clipped PPO term per case; vanilla PG at "
            "r = 1", "Schulman et al. (2017), PPO, arXiv:1707.06347v2, Eq. (7) and Fig. 1",
            ppo_gradient_table,
            {"max instead of min": lambda: ppo_gradient_table(combine=sp.Max),
             "log pi (log r) in place of the ratio": lambda: ppo_gradient_table(
                 ratio=sp.log)}),
]

__all__ = ["THEOREMS", "clip", "gae_reference", "ppo_term"]
