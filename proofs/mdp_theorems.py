"""Theorems 1-3: performance difference, visitation identity, policy gradient theorem.

All on a fully symbolic 2-state, 2-action MDP: ``P(s'=0 | s, a) = p_sa``, rewards ``r_sa``,
``mu = (m, 1 - m)``, discount ``gamma``, policies ``pi(a=0 | s) = x_s`` and
``pi'(a=0 | s) = y_s``. Arithmetic is exact in the rational function field
``QQ(gamma, m, p_sa, r_sa, x_s, y_s)`` (sympy.polys.fields), so an identity holds exactly when
the difference of its sides is the zero element of the field: that is the proof.
"""

from __future__ import annotations

from pgtheory.extras import require

require("proofs")  # before the optional imports: a missing extra is one line naming it

import functools

import sympy as sp
from pgtheory.proofs._core import Theorem, Verdict, failed, proved
from sympy import QQ
from sympy.polys.fields import field

NAMES = "gamma m p00 p01 p10 p11 r00 r01 r10 r11 x0 x1 y0 y1 f00 f01 f10 f11"


@functools.lru_cache(maxsize=1)
def symbolic_mdp():
    """The field and its generators, as a dict ``name -> element`` plus ``"K"``."""
    K, *gens = field(NAMES, QQ)
    out = dict(zip(NAMES.split(), gens, strict=True))
    out["K"] = K
    return out


def _policy(z0, z1):
    return [[z0, 1 - z0], [z1, 1 - z1]]


def evaluate(g: dict, pi):
    """V, Q, A, rho (unnormalized) and J for policy ``pi`` on the symbolic MDP (Cramer)."""
    gamma, m = g["gamma"], g["m"]
    p = [[g["p00"], g["p01"]], [g["p10"], g["p11"]]]
    r = [[g["r00"], g["r01"]], [g["r10"], g["r11"]]]

    def P(s, a, t):
        return p[s][a] if t == 0 else 1 - p[s][a]

    Ppi = [[sum(pi[s][a] * P(s, a, t) for a in range(2)) for t in range(2)] for s in range(2)]
    M = [[(1 if s == t else 0) - gamma * Ppi[s][t] for t in range(2)] for s in range(2)]
    det = M[0][0] * M[1][1] - M[0][1] * M[1][0]

    def solve(Mx, b):
        return [(b[0] * Mx[1][1] - Mx[0][1] * b[1]) / det,
                (Mx[0][0] * b[1] - b[0] * Mx[1][0]) / det]

    rpi = [sum(pi[s][a] * r[s][a] for a in range(2)) for s in range(2)]
    V = solve(M, rpi)
    MT = [[M[0][0], M[1][0]], [M[0][1], M[1][1]]]
    mu = [m, 1 - m]
    rho = solve(MT, mu)
    Q = [[r[s][a] + gamma * (P(s, a, 0) * V[0] + P(s, a, 1) * V[1]) for a in range(2)]
         for s in range(2)]
    A = [[Q[s][a] - V[s] for a in range(2)] for s in range(2)]
    J = mu[0] * V[0] + mu[1] * V[1]
    return dict(V=V, Q=Q, A=A, rho=rho, J=J, M=M, solve=solve, mu=mu)


def field_identity(diff, what: str) -> Verdict:
    if diff == 0:
        return proved(f"{what}: the difference is the zero rational function")
    return failed(f"{what}: the difference is the non-zero rational function "
                  f"{str(diff.as_expr())[:200]}")


# ---------------------------------------------------------------- theorem 1: PDL
def telescoping(with_gamma_inside: bool = True, max_horizon: int = 8) -> Verdict:
    """sum_{t<T} gamma^t (r_t + gamma V_{t+1} - V_t) = sum_{t<T} gamma^t r_t + gamma^T V_T - V_0."""
    gamma = sp.Symbol("gamma")
    for T in range(1, max_horizon + 1):
        r = sp.symbols(f"r0:{T}")
        V = sp.symbols(f"V0:{T + 1}")
        inner = gamma if with_gamma_inside else 1
        lhs = sum(gamma**t * (r[t] + inner * V[t + 1] - V[t]) for t in range(T))
        rhs = sum(gamma**t * r[t] for t in range(T)) + gamma**T * V[T] - V[0]
        if sp.expand(lhs - rhs) != 0:
            return failed(f"telescoping fails at horizon T = {T}: "
                          f"{sp.factor(sp.expand(lhs - rhs))}")
    return proved(f"telescoping: polynomial identity for every horizon T = 1..{max_horizon}; "
                  f"the expectation of the T -> infinity limit is the PDL (next theorem)")


def pdl(visitation: str = "new") -> Verdict:
    g = symbolic_mdp()
    old, new = _policy(g["x0"], g["x1"]), _policy(g["y0"], g["y1"])
    eo, en = evaluate(g, old), evaluate(g, new)
    rho = (en if visitation == "new" else eo)["rho"]
    rhs = sum(rho[s] * sum(new[s][a] * eo["A"][s][a] for a in range(2)) for s in range(2))
    return field_identity(en["J"] - eo["J"] - rhs,
                          "J(pi') - J(pi) = sum_s rho_pi'(s) sum_a pi'(a|s) A_pi(s, a)")


# ------------------------------------------------------ theorem 2: visitation identity
def visitation_identity(scale: str = "1/(1-gamma)") -> Verdict:
    g = symbolic_mdp()
    pi = _policy(g["x0"], g["x1"])
    e = evaluate(g, pi)
    f = [[g["f00"], g["f01"]], [g["f10"], g["f11"]]]
    fpi = [sum(pi[s][a] * f[s][a] for a in range(2)) for s in range(2)]
    lhs_vec = e["solve"](e["M"], fpi)  # value of the "reward" f: E[sum_t gamma^t f(s_t, a_t)]
    lhs = e["mu"][0] * lhs_vec[0] + e["mu"][1] * lhs_vec[1]
    d = [(1 - g["gamma"]) * e["rho"][s] for s in range(2)]
    factor = 1 / (1 - g["gamma"]) if scale == "1/(1-gamma)" else 1
    rhs = factor * sum(d[s] * fpi[s] for s in range(2))
    return field_identity(lhs - rhs, "E[sum_t gamma^t f] = 1/(1-gamma) E_{d, pi}[f]")


# ------------------------------------------------- theorem 3: policy gradient theorem
def policy_gradient_theorem(factor: str = "1/(1-gamma)") -> Verdict:
    """Tabular softmax with logits (theta_s0, theta_s1): x_s = sigmoid(theta_s0 - theta_s1),
    so dJ/dtheta_{s,0} = x_s (1 - x_s) dJ/dx_s and dJ/dtheta_{s,1} = -x_s (1 - x_s) dJ/dx_s."""
    g = symbolic_mdp()
    x = [g["x0"], g["x1"]]
    pi = _policy(*x)
    e = evaluate(g, pi)
    d = [(1 - g["gamma"]) * e["rho"][s] for s in range(2)]
    scale = 1 / (1 - g["gamma"]) if factor == "1/(1-gamma)" else 1
    for s in range(2):
        dJ = e["J"].diff(x[s]) * x[s] * (1 - x[s])
        for a, sign in ((0, 1), (1, -1)):
            rhs = scale * d[s] * pi[s][a] * e["A"][s][a]
            v = field_identity(sign * dJ - rhs, f"dJ/dtheta[{s},{a}] = d(s) pi A / (1-gamma)")
            if not v.ok:
                return v
    return proved("dJ/dtheta[s, a] = (1/(1-gamma)) d(s) pi(a|s) A(s, a): all four components "
                  "equal as rational functions")


def surrogate_first_order(visitation: str = "rho") -> Verdict:
    """L_pi(pi_y) = J(pi) + sum_s w(s) sum_a pi_y(a|s) A_pi(s, a) with w = rho_pi: L(x) = J(x)
    and dL/dy_s at y = x equals dJ/dx_s."""
    g = symbolic_mdp()
    x = [g["x0"], g["x1"]]
    y = [g["y0"], g["y1"]]
    e = evaluate(g, _policy(*x))
    w = e["rho"] if visitation == "rho" else [(1 - g["gamma"]) * e["rho"][s] for s in range(2)]
    newp, oldp = _policy(*y), _policy(*x)
    gain = sum(w[s] * sum(newp[s][a] * e["A"][s][a] for a in range(2)) for s in range(2))
    L = e["J"] + gain
    # L(x) - J(x) = sum_s w(s) sum_a pi(a|s) A_pi(s, a), which must be the zero function
    at_x = sum(w[s] * sum(oldp[s][a] * e["A"][s][a] for a in range(2)) for s in range(2))
    if at_x != 0:
        return failed("L_pi(pi) != J(pi)")
    # L is affine in y, so dL/dy_s does not depend on y and its value at y = x is itself
    for s in range(2):
        v = field_identity(L.diff(y[s]) - e["J"].diff(x[s]), f"dL/dy_{s} = dJ/dx_{s} at y = x")
        if not v.ok:
            return v
    return proved("L_pi(pi) = J(pi) and grad L = grad J at pi (exact rational functions)")


THEOREMS = [
    Theorem("pdl_telescoping",
            "sum_t gamma^t A_pi(s_t, a_t) telescopes to sum_t gamma^t r_t - V_pi(s_0)",
            "Kakade & Langford (2002), Lemma 6.1 (proof); TRPO arXiv:1502.05477v5 App. A",
            telescoping,
            {"gamma missing in front of V(s_{t+1})": lambda: telescoping(False)}),
    Theorem("performance_difference",
            "J(pi') - J(pi) = sum_s rho_pi'(s) sum_a pi'(a|s) A_pi(s, a) (symbolic 2x2 MDP)",
            "Kakade & Langford (2002), Lemma 6.1; TRPO Eq. (2)",
            pdl, {"old policy's visitation rho_pi (the surrogate)": lambda: pdl("old")}),
    Theorem("visitation_identity",
            "E[sum_t gamma^t f(s_t, a_t)] = 1/(1-gamma) E_{s~d_pi, a~pi}[f(s, a)]",
            "Agarwal et al. (2021), arXiv:1908.00261, Sec. 2",
            visitation_identity, {"1/(1-gamma) dropped": lambda: visitation_identity("none")}),
    Theorem("policy_gradient_theorem",
            "tabular softmax: dJ/dtheta[s, a] = 1/(1-gamma) d(s) pi(a|s) A(s, a)",
            "Sutton et al. (2000), Theorem 1; Agarwal et al. (2021), Sec. 4",
            policy_gradient_theorem,
            {"1/(1-gamma) dropped": lambda: policy_gradient_theorem("none")}),
    Theorem("surrogate_first_order",
            "L_pi(pi) = J(pi) and grad L_pi = grad J at pi (rho_pi unnormalized)",
            "Kakade & Langford (2002); TRPO arXiv:1502.05477v5, Eq. (3) and Sec. 2",
            surrogate_first_order,
            {"normalized d in place of rho": lambda: surrogate_first_order("d")}),
]


def symbolic_quantities():
    """Sympy expressions of V, Q, A, rho, J for the symbolic MDP under pi = (x0, x1), and of
    the PDL right-hand side for pi' = (y0, y1); used to give pgtheory tests reference values.

    Returns
    -------
    dict
        ``"symbols"``: the sympy symbols in field order; ``"V"``, ``"rho"`` (lists),
        ``"Q"``, ``"A"`` (2x2 lists), ``"J"``, ``"J_new"``, ``"grad"`` (dJ/dtheta, 2x2).
    """
    g = symbolic_mdp()
    x = [g["x0"], g["x1"]]
    pi = _policy(*x)
    e = evaluate(g, pi)
    en = evaluate(g, _policy(g["y0"], g["y1"]))
    grad = [[(1 if a == 0 else -1) * e["J"].diff(x[s]) * x[s] * (1 - x[s]) for a in range(2)]
            for s in range(2)]

    def ex(z):
        return z.as_expr()

    return dict(symbols=sp.symbols(NAMES), V=[ex(v) for v in e["V"]],
                rho=[ex(v) for v in e["rho"]], Q=[[ex(q) for q in row] for row in e["Q"]],
                A=[[ex(q) for q in row] for row in e["A"]], J=ex(e["J"]), J_new=ex(en["J"]),
                grad=[[ex(q) for q in row] for row in grad])


__all__ = ["THEOREMS", "evaluate", "symbolic_mdp", "symbolic_quantities"]
