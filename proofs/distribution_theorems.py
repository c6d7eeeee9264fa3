"""Theorems 4-7, 10, 11: scores, Fisher information, Gaussian KL, the natural-gradient step,
KL estimators, Pinsker's inequality and the TRPO constant."""

from __future__ import annotations

from pgtheory.extras import require

require("proofs")  # before the optional imports: a missing extra is one line naming it

import random

import sympy as sp
from pgtheory.proofs._core import Theorem, Verdict, check_at_points, equality, failed, proved

a = sp.Symbol("a", real=True)
z = sp.Symbol("z", real=True)
mu, mu1, mu2 = sp.symbols("mu mu1 mu2", real=True)
sigma, sigma1, sigma2 = sp.symbols("sigma sigma1 sigma2", positive=True)
ell = sp.Symbol("ell", real=True)  # log sigma


def gaussian_pdf(x, m, s):
    return sp.exp(-(x - m) ** 2 / (2 * s**2)) / (sp.sqrt(2 * sp.pi) * s)


def gaussian_log_prob(x, m, s):
    return -(x - m) ** 2 / (2 * s**2) - sp.log(s) - sp.log(2 * sp.pi) / 2


def standard_normal_expectation(expr):
    """E[expr] for z ~ N(0, 1), expr polynomial in z (fast exact integral)."""
    return sp.simplify(sp.integrate(sp.expand(expr) * sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi),
                                    (z, -sp.oo, sp.oo)))


def _all(verdicts, summary: str) -> Verdict:
    for v in verdicts:
        if not v.ok:
            return v
    kinds = {v.status for v in verdicts}
    return Verdict("proved" if kinds == {"proved"} else "checked", summary)


# ------------------------------------------------------------ theorem 4: score functions
SOFTMAX_Z = sp.symbols("z0:3", real=True)


def softmax_probs():
    e = [sp.exp(v) for v in SOFTMAX_Z]
    return [v / sum(e) for v in e]


def softmax_score(form: str = "e_a - pi"):
    pi = softmax_probs()
    checks = []
    for i in range(3):
        for b in range(3):
            lhs = sp.diff(sp.log(pi[i]), SOFTMAX_Z[b])
            rhs = (1 if i == b else 0) - (pi[b] if form == "e_a - pi" else 0)
            checks.append(equality(lhs, rhs, SOFTMAX_Z, what=f"d log pi_{i} / d z_{b}"))
    return _all(checks, "softmax score d log pi_a / d z = e_a - pi (3 actions, symbolic logits)")


GAUSSIAN_SCORES = {
    "mu": (a - mu) / sigma**2,
    "sigma": ((a - mu) ** 2 - sigma**2) / sigma**3,
    "log_sigma": (a - mu) ** 2 / sigma**2 - 1,
}


def gaussian_scores(scores=None):
    scores = scores or GAUSSIAN_SCORES
    lp = gaussian_log_prob(a, mu, sigma)
    lp_ell = gaussian_log_prob(a, mu, sp.exp(ell))
    derived = {"mu": sp.diff(lp, mu), "sigma": sp.diff(lp, sigma),
               "log_sigma": sp.diff(lp_ell, ell).subs(sp.exp(ell), sigma).subs(ell, sp.log(sigma))}
    return _all([equality(derived[k], scores[k], (a, mu, sigma), what=f"score wrt {k}")
                 for k in ("mu", "sigma", "log_sigma")],
                "Gaussian scores wrt mu, sigma and log sigma")


def baseline_invariance(weights: str = "pi"):
    pi = softmax_probs()
    b = sp.Symbol("b", real=True)
    checks = []
    for j in range(3):
        w = pi if weights == "pi" else [1, 1, 1]
        total = sum(w[i] * sp.diff(sp.log(pi[i]), SOFTMAX_Z[j]) * b for i in range(3))
        checks.append(equality(total, 0, (*SOFTMAX_Z, b), what=f"sum_a pi grad_{j} log pi b"))
    # Gaussian: E_a[score] = 0 for mu and log sigma (a = mu + sigma z)
    for k in ("mu", "log_sigma"):
        sc = GAUSSIAN_SCORES[k].subs(a, mu + sigma * z)
        e = standard_normal_expectation(sc) if weights == "pi" else sp.integrate(
            sp.expand(sc), (z, -1, 1))
        checks.append(equality(e, 0, (mu, sigma), what=f"E[Gaussian score wrt {k}]"))
    return _all(checks, "sum_a pi(a) grad log pi(a) b = 0 (softmax) and E[score] = 0 (Gaussian)")


# ----------------------------------------------------------- theorem 5: Fisher information
def fisher_identity(form: str = "diag(pi) - pi pi^T"):
    pi = softmax_probs()
    checks = []
    for i in range(3):
        for j in range(3):
            outer = sum(pi[c] * sp.diff(sp.log(pi[c]), SOFTMAX_Z[i])
                        * sp.diff(sp.log(pi[c]), SOFTMAX_Z[j]) for c in range(3))
            neg_hess = -sum(pi[c] * sp.diff(sp.log(pi[c]), SOFTMAX_Z[i], SOFTMAX_Z[j])
                            for c in range(3))
            closed = (pi[i] if i == j else 0) - (pi[i] * pi[j] if form != "diag(pi)" else 0)
            checks.append(equality(outer, neg_hess, SOFTMAX_Z, what=f"softmax F[{i},{j}]"))
            checks.append(equality(outer, closed, SOFTMAX_Z, what=f"softmax F[{i},{j}] closed"))
    # Gaussian in (mu, log sigma): F = diag(1 / sigma^2, 2)
    scores = [GAUSSIAN_SCORES["mu"], GAUSSIAN_SCORES["log_sigma"]]
    lp_ell = gaussian_log_prob(a, mu, sp.exp(ell))
    params = [mu, ell]
    closed_g = [[1 / sigma**2, 0], [0, 2 if form != "diag(pi)" else 1]]
    for i in range(2):
        for j in range(2):
            outer = standard_normal_expectation((scores[i] * scores[j]).subs(a, mu + sigma * z))
            hess = sp.diff(lp_ell, params[i], params[j]).subs(ell, sp.log(sigma))
            neg_hess = -standard_normal_expectation(hess.subs(a, mu + sigma * z))
            checks.append(equality(outer, neg_hess, (mu, sigma), what=f"Gaussian F[{i},{j}]"))
            checks.append(equality(outer, closed_g[i][j], (mu, sigma),
                                   what=f"Gaussian F[{i},{j}] closed"))
    return _all(checks, "E[score score^T] = -E[Hess log pi]: softmax diag(pi) - pi pi^T; "
                        "Gaussian (mu, log sigma): diag(1/sigma^2, 2)")


def kl_second_order(half: bool = True):
    eps = sp.Symbol("epsilon", real=True)
    d = sp.symbols("d0:3", real=True)
    pi = softmax_probs()
    shifted = [p.subs({SOFTMAX_Z[i]: SOFTMAX_Z[i] + eps * d[i] for i in range(3)},
                      simultaneous=True) for p in pi]
    kl = sum(pi[c] * (sp.log(pi[c]) - sp.log(shifted[c])) for c in range(3))
    F = [[(pi[i] if i == j else 0) - pi[i] * pi[j] for j in range(3)] for i in range(3)]
    quad = sum(d[i] * F[i][j] * d[j] for i in range(3) for j in range(3))
    coeff = sp.Rational(1, 2) if half else 1
    syms = (*SOFTMAX_Z, *d)
    checks = [equality(kl.subs(eps, 0), 0, syms, what="KL at epsilon = 0"),
              equality(sp.diff(kl, eps).subs(eps, 0), 0, syms, what="first-order term"),
              equality(sp.diff(kl, eps, 2).subs(eps, 0) / 2, coeff * quad, syms,
                       what="second-order term (1/2) d^T F d")]
    # Gaussian: KL(N(mu, s) || N(mu + eps dm, s exp(eps dl)))
    dm, dl = sp.symbols("dm dl", real=True)
    klg = (sp.log(sp.exp(eps * dl)) + (sigma**2 + (eps * dm) ** 2)
           / (2 * sigma**2 * sp.exp(2 * eps * dl)) - sp.Rational(1, 2))
    quad_g = dm**2 / sigma**2 + 2 * dl**2
    checks += [equality(sp.diff(klg, eps).subs(eps, 0), 0, (sigma, dm, dl), what="Gaussian 1st"),
               equality(sp.diff(klg, eps, 2).subs(eps, 0) / 2, coeff * quad_g, (sigma, dm, dl),
                        what="Gaussian second-order term")]
    return _all(checks, "KL(p_theta || p_theta+eps d) = (eps^2/2) d^T F d + O(eps^3), zero "
                        "first-order term (softmax, 3 actions; Gaussian in (mu, log sigma))")


# ----------------------------------------------------------- theorem 6: Gaussian KL
def gaussian_kl_closed_form(sigma1, sigma2, mu1, mu2):
    return sp.log(sigma2 / sigma1) + (sigma1**2 + (mu1 - mu2) ** 2) / (2 * sigma2**2) - \
        sp.Rational(1, 2)


def gaussian_kl(closed=gaussian_kl_closed_form):
    p1 = gaussian_pdf(a, mu1, sigma1)
    logratio = sp.expand(sp.expand_log(gaussian_log_prob(a, mu1, sigma1)
                                       - gaussian_log_prob(a, mu2, sigma2), force=True))
    kl = sp.integrate(p1 * logratio, (a, -sp.oo, sp.oo))
    uni = equality(kl, closed(sigma1, sigma2, mu1, mu2), (mu1, mu2, sigma1, sigma2),
                   what="1-D KL integral")
    # diagonal 2-D: log density is a sum over dimensions; integrate it against the product
    b = sp.Symbol("b", real=True)
    m3, m4 = sp.symbols("mu3 mu4", real=True)
    s3, s4 = sp.symbols("sigma3 sigma4", positive=True)
    lr2 = logratio + sp.expand(sp.expand_log(gaussian_log_prob(b, m3, s3)
                                             - gaussian_log_prob(b, m4, s4), force=True))
    inner = sp.integrate(gaussian_pdf(b, m3, s3) * lr2, (b, -sp.oo, sp.oo))
    kl2 = sp.integrate(p1 * inner, (a, -sp.oo, sp.oo))
    diag = equality(kl2, closed(sigma1, sigma2, mu1, mu2) + closed(s3, s4, m3, m4),
                    (mu1, mu2, m3, m4, sigma1, sigma2, s3, s4), what="diagonal 2-D KL integral")
    return _all([uni, diag], "KL(N1 || N2) = log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2, "
                             "summed over dimensions for diagonal Gaussians")


# ------------------------------------------------------- theorem 7: natural-gradient step
def npg_step_kkt(step_scale=None):
    """KKT conditions of max g^T d s.t. (1/2) d^T F d <= delta for a symbolic 2x2 SPD F.

    Step 1 (rational identity): x = F^-1 g satisfies F x = g and x^T F x = g^T x =: kappa.
    Step 2 (kappa, delta > 0 symbols): with lambda = sqrt(kappa / (2 delta)) and
    d = s x, s = sqrt(2 delta / kappa), stationarity g - lambda F d = (1 - lambda s) g = 0 and
    the constraint (1/2) d^T F d = (1/2) s^2 kappa = delta is active.
    """
    g0, g1 = sp.symbols("g0 g1", real=True)
    f11, f22 = sp.symbols("f11 f22", positive=True)
    f12 = sp.Symbol("f12", real=True)
    F = sp.Matrix([[f11, f12], [f12, f22]])
    g = sp.Matrix([g0, g1])
    x = F.LUsolve(g)
    dom = {f12: lambda rng: sp.Rational(rng.randint(-500, 500), 1000),
           f11: lambda rng: sp.Rational(rng.randint(1000, 3000), 1000),
           f22: lambda rng: sp.Rational(rng.randint(1000, 3000), 1000)}
    syms = (g0, g1, f11, f22, f12)
    step1 = [equality((F * x - g)[i], 0, syms, what=f"F x = g [{i}]", domains=dom)
             for i in range(2)]
    step1.append(equality((x.T * F * x)[0], (g.T * x)[0], syms, what="x^T F x = g^T x",
                          domains=dom))
    kappa, delta = sp.symbols("kappa delta", positive=True)
    scale = sp.sqrt(2 * delta / kappa) if step_scale is None else step_scale(delta, kappa)
    lam_ = sp.sqrt(kappa / (2 * delta))
    step2 = [equality(1 - lam_ * scale, 0, (kappa, delta),
                      what="stationarity: g - lambda F d = (1 - lambda s) g"),
             equality(scale**2 * kappa / 2, delta, (kappa, delta),
                      what="active constraint (1/2) d^T F d = delta")]
    return _all([*step1, *step2],
                "d = sqrt(2 delta / g^T F^-1 g) F^-1 g satisfies the KKT conditions of "
                "max g^T d s.t. (1/2) d^T F d <= delta with multiplier sqrt(g^T F^-1 g / (2 "
                "delta)) > 0; the problem is convex, so this KKT point is the maximizer")


# ---------------------------------------------------------- theorem 10: KL estimators
Q = sp.symbols("q0 q1", positive=True)
Pp = sp.symbols("p0 p1", positive=True)
PROB_DOM = {s: (lambda rng: sp.Rational(rng.randint(50, 450), 1000)) for s in (*Q, *Pp)}


def _discrete(v):
    return [v[0], v[1], 1 - v[0] - v[1]]


KL_ESTIMATORS = {
    "k1": lambda r: -sp.log(r),
    "k2": lambda r: sp.log(r) ** 2 / 2,
    "k3": lambda r: (r - 1) - sp.log(r),
}


def kl_estimators(estimators=None):
    est = estimators or KL_ESTIMATORS
    q, p = _discrete(Q), _discrete(Pp)
    kl_qp = sum(q[i] * sp.log(q[i] / p[i]) for i in range(3))
    syms = (*Q, *Pp)
    checks = []
    for name in ("k1", "k3"):
        e = sum(q[i] * est[name](p[i] / q[i]) for i in range(3))
        checks.append(equality(sp.expand_log(e, force=True), sp.expand_log(kl_qp, force=True),
                               syms, what=f"E_q[{name}] = KL(q || p)", domains=PROB_DOM))
    # k2 is biased: exhibit a point where E_q[k2] != KL
    e2 = sum(q[i] * est["k2"](p[i] / q[i]) for i in range(3))
    ok, _ = check_at_points(e2 - kl_qp, syms, n=5, domains=PROB_DOM)
    checks.append(failed("E_q[k2] equals KL at every sampled point (expected bias)") if ok
                  else proved("E_q[k2] != KL(q || p) at a sampled point: biased"))
    # k3 >= 0: f(r) = r - 1 - log r has f(1) = 0, f'(r) = 0 only at r = 1, f'' = 1/r^2 > 0
    r = sp.Symbol("r", positive=True)
    f = est["k3"](r)
    crit = sp.solve(sp.diff(f, r), r)
    convex = sp.simplify(sp.diff(f, r, 2)).is_positive
    if f.subs(r, 1) != 0 or crit != [1] or not convex:
        checks.append(failed(f"k3 >= 0 argument fails: f(1) = {f.subs(r, 1)}, critical points "
                             f"{crit}, f'' > 0: {convex}"))
    else:
        checks.append(proved("k3 >= 0"))
    return _all(checks, "k1 and k3 are unbiased for KL(q || p) under q, k2 is not, k3 >= 0 "
                        "(3-outcome symbolic distributions)")


# ------------------------------------------------- theorem 11: Pinsker and the TRPO constant
HALF = sp.Rational(1, 2)


def pinsker(tv_scale=HALF):
    p, q = sp.symbols("p q", positive=True)
    g = p * sp.log(p / q) + (1 - p) * sp.log((1 - p) / (1 - q)) - 2 * (tv_scale * 2 * (p - q)) ** 2
    # three outcomes: TV^2 <= KL / 2, with TV = (1/2) sum |p - q|, checked at random points
    rng = random.Random(0)
    for _ in range(200):
        w1 = [rng.random() + 1e-3 for _ in range(3)]
        w2 = [rng.random() + 1e-3 for _ in range(3)]
        pv = [sp.Rational(round(x / sum(w1) * 10**6), 10**6) for x in w1]
        qv = [sp.Rational(round(x / sum(w2) * 10**6), 10**6) for x in w2]
        pv[2], qv[2] = 1 - pv[0] - pv[1], 1 - qv[0] - qv[1]
        kl = sum(x * sp.log(x / y) for x, y in zip(pv, qv, strict=True))
        tv = tv_scale * sum(abs(x - y) for x, y in zip(pv, qv, strict=True))
        if sp.N(kl / 2 - tv**2, 50) < 0:
            return failed(f"TV^2 <= KL/2 fails at p = {pv}, q = {qv}")
    # binary case: g(p) = 0, g'(q) = (q - p) (1/(q(1-q)) - 4) and 1/(q(1-q)) - 4 =
    # (1 - 2q)^2 / (q(1-q)) >= 0, so g decreases then increases: minimum 0 at q = p
    steps = [equality(g.subs(q, p), 0, (p,), what="g(p) = 0",
                      domains={p: lambda rng: sp.Rational(rng.randint(50, 950), 1000)}),
             equality(sp.diff(g, q), (q - p) * (1 / (q * (1 - q)) - 4), (p, q),
                      what="g'(q) factorization", domains={
                          p: lambda rng: sp.Rational(rng.randint(50, 950), 1000),
                          q: lambda rng: sp.Rational(rng.randint(50, 950), 1000)}),
             equality(1 / (q * (1 - q)) - 4, (1 - 2 * q) ** 2 / (q * (1 - q)), (q,),
                      what="second factor is a square over a positive number")]
    binary = _all(steps, "binary Pinsker")
    if not binary.ok:
        return binary
    # TRPO constant: sum_t gamma^t (1 - (1 - alpha)^t) = gamma alpha / ((1-gamma)(1-gamma(1-alpha)))
    gamma, alpha = sp.symbols("gamma alpha", positive=True)
    t = sp.Symbol("t", integer=True, nonnegative=True)
    series = sp.summation(gamma**t - (gamma * (1 - alpha)) ** t, (t, 0, sp.oo))
    series = sp.piecewise_fold(series)
    if isinstance(series, sp.Piecewise):
        series = series.args[0][0]  # the convergent branch (|gamma| < 1, |gamma(1-alpha)| < 1)
    geo = equality(series, gamma * alpha / ((1 - gamma) * (1 - gamma * (1 - alpha))),
                   (gamma, alpha), what="geometric series of TRPO's proof",
                   domains={gamma: lambda rng: sp.Rational(rng.randint(1, 99), 100),
                            alpha: lambda rng: sp.Rational(rng.randint(1, 99), 100)})
    if not geo.ok:
        return geo
    return Verdict("checked", "binary Pinsker TV^2 <= KL/2 proved symbolically (g(p) = 0 and "
                              "the factorization of g'); the 3-outcome case checked at 200 "
                              "random points (50 digits), not proved; TRPO's KL form follows from "
                              "alpha^2 <= KL_max/2 <= KL_max, and the geometric series of its "
                              "proof was summed symbolically (constant: theorem trpo_constant)")


def trpo_constant(power: int = 2):
    """The penalty 4 eps alpha^2 gamma / ((1-gamma)(1-gamma(1-alpha))) is at most
    C alpha^2 with C = 4 eps gamma / (1-gamma)^power; true for power 2, false for power 1."""
    gamma, alpha, eps = sp.symbols("gamma alpha epsilon", positive=True)
    exact = 4 * eps * alpha**2 * gamma / ((1 - gamma) * (1 - gamma * (1 - alpha)))
    C = 4 * eps * gamma / (1 - gamma) ** power
    dom = {gamma: lambda rng: sp.Rational(rng.randint(1, 99), 100),
           alpha: lambda rng: sp.Rational(rng.randint(1, 100), 100)}
    # C alpha^2 - exact = 4 eps alpha^2 gamma [1/(1-gamma)^power - 1/((1-gamma)(1-gamma(1-alpha)))]
    gap = sp.factor(sp.together(C * alpha**2 - exact))
    ok, cex = check_at_points(sp.Min(gap, 0), (gamma, alpha, eps), n=60, domains=dom)
    if not ok:
        return failed(f"C alpha^2 < exact penalty at {cex}")
    if power == 2:
        # gap = 4 eps alpha^3 gamma^2 / ((1-gamma)^2 (1 - gamma + alpha gamma)): every factor > 0
        target = 4 * eps * alpha**3 * gamma**2 / ((1 - gamma) ** 2 * (1 - gamma + alpha * gamma))
        return equality(gap, target, (gamma, alpha, eps), what="C alpha^2 - penalty", domains=dom)
    return Verdict("checked", "no counterexample found")


THEOREMS = [
    Theorem("softmax_score", "d log softmax(z)_a / dz = e_a - pi", "Agarwal et al. (2021), Sec. 4",
            softmax_score, {"score e_a (normalizer forgotten)": lambda: softmax_score("e_a")}),
    Theorem("gaussian_scores", "scores of N(mu, sigma^2) wrt mu, sigma, log sigma",
            "Williams (1992), REINFORCE, Sec. 6 (Gaussian units)", gaussian_scores,
            {"(a - sigma)^2 in place of (a - mu)^2": lambda: gaussian_scores(
                {**GAUSSIAN_SCORES, "sigma": ((a - sigma) ** 2 - sigma**2) / sigma**3}),
             "log-sigma score without the -1": lambda: gaussian_scores(
                {**GAUSSIAN_SCORES, "log_sigma": (a - mu) ** 2 / sigma**2})}),
    Theorem("baseline_invariance", "sum_a pi(a|s) grad log pi(a|s) b(s) = 0",
            "Williams (1992); Sutton & Barto (2018), Sec. 13.4", baseline_invariance,
            {"uniform instead of pi weights": lambda: baseline_invariance("uniform")}),
    Theorem("fisher_identity", "E[score score^T] = -E[Hess log pi] (softmax, Gaussian)",
            "Amari (1998), Sec. 3; Kakade (2001), Sec. 3", fisher_identity,
            {"softmax Fisher diag(pi) (outer term dropped); Gaussian log-sigma entry 1":
             lambda: fisher_identity("diag(pi)")}),
    Theorem("kl_second_order", "KL(p_theta || p_theta+d) = (1/2) d^T F d + O(|d|^3)",
            "Kakade (2001); TRPO arXiv:1502.05477v5, App. C", kl_second_order,
            {"without the 1/2": lambda: kl_second_order(half=False)}),
    Theorem("gaussian_kl", "KL between univariate / diagonal Gaussians from the integral",
            "Kullback (1959), Information Theory and Statistics (Gaussian case)", gaussian_kl,
            {"square missing on the std ratio": lambda: gaussian_kl(
                lambda s1, s2, m1, m2: sp.log(s2 / s1) + (s1 / s2 + (m1 - m2) ** 2 / s2**2) / 2
                - sp.Rational(1, 2))}),
    Theorem("natural_gradient_step", "argmax g^T d s.t. (1/2) d^T F d <= delta is "
            "sqrt(2 delta / g^T F^-1 g) F^-1 g", "TRPO arXiv:1502.05477v5, App. C",
            npg_step_kkt, {"factor 2 missing": lambda: npg_step_kkt(
                lambda delta, kappa: sp.sqrt(delta / kappa))}),
    Theorem("kl_estimators", "k1, k3 unbiased for KL(q || p) under q; k2 biased; k3 >= 0",
            "Schulman (2020), 'Approximating KL divergence' (blog note)", kl_estimators,
            {"k3 with +log r": lambda: kl_estimators(
                {**KL_ESTIMATORS, "k3": lambda r: (r - 1) + sp.log(r)})}),
    Theorem("pinsker", "TV^2 <= KL/2 with TV = (1/2)||p - q||_1, and TRPO's KL-form constant",
            "Pinsker (1964); Tsybakov (2009), Lemma 2.5; TRPO Theorem 1 and Eq. (9)", pinsker,
            {"TV without the 1/2 (L1 distance)": lambda: pinsker(tv_scale=1)}),
    Theorem("trpo_constant", "4 eps alpha^2 gamma/((1-gamma)(1-gamma(1-alpha))) <= "
            "4 eps gamma alpha^2/(1-gamma)^2", "TRPO arXiv:1502.05477v5, App. A (proof of Thm 1)",
            trpo_constant, {"(1 - gamma) instead of (1 - gamma)^2": lambda: trpo_constant(1)}),
]

__all__ = ["GAUSSIAN_SCORES", "KL_ESTIMATORS", "THEOREMS", "gaussian_kl_closed_form"]
