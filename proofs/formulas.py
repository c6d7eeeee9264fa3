"""Check a user's formula against the reference for a named quantity.

A user names a quantity (``list_quantities()``) and gives an expression as text using the
documented symbol names; :func:`check_formula` answers whether it equals the reference (proved
symbolically, or checked at random points), and if not, a point where it differs and the
correct expression. ``COMMON_WRONG_FORMS`` catalogues slips seen in lecture notes and code;
each is rejected (tests show it).

Expression syntax: sympy (``**`` for powers, ``log``, ``exp``, ``sqrt``, ``pi``), plus
``Min``/``Max`` (also ``min``/``max``) and ``clip(x, lo, hi) = Min(Max(x, lo), hi)``.
Parsing uses :func:`sympy.parsing.sympy_parser.parse_expr`, which evaluates Python: only pass
text you would run yourself.
"""

from __future__ import annotations

import dataclasses

import sympy as sp
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

from proofs._core import check_at_points, symbolic_zero

__all__ = ["COMMON_WRONG_FORMS", "FormulaCheck", "FormulaError", "Quantity", "check_formula",
           "list_quantities"]


class FormulaError(ValueError):
    """The quantity is unknown or the expression cannot be parsed with the allowed symbols."""


def clip(x, lo, hi):
    return sp.Min(sp.Max(x, lo), hi)


def _unit(rng):  # (0.05, 0.95)
    return sp.Rational(rng.randint(50, 950), 1000)


def _pos(rng):
    return sp.Rational(rng.randint(50, 3000), 1000)


def _real(rng):
    return sp.Rational(rng.randint(-3000, 3000), 1000) or sp.Rational(1, 7)


def _clip_eps(rng):
    return sp.Rational(rng.randint(50, 500), 1000)


def _nonneg_int(rng):
    return sp.Integer(rng.randint(0, 6))


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A named quantity: its symbols (name -> sampling domain), reference text, and source."""

    name: str
    description: str
    symbols: dict
    reference: str
    source: str


QUANTITIES = {q.name: q for q in [
    Quantity("gaussian_log_prob", "log N(a; mu, sigma^2)", dict(a=_real, mu=_real, sigma=_pos),
             "-(a - mu)**2/(2*sigma**2) - log(sigma) - log(2*pi)/2", "standard"),
    Quantity("gaussian_score_mu", "d log N(a; mu, sigma^2) / d mu",
             dict(a=_real, mu=_real, sigma=_pos), "(a - mu)/sigma**2", "Williams (1992), Sec. 6"),
    Quantity("gaussian_score_sigma", "d log N(a; mu, sigma^2) / d sigma",
             dict(a=_real, mu=_real, sigma=_pos), "((a - mu)**2 - sigma**2)/sigma**3",
             "Williams (1992), Sec. 6"),
    Quantity("gaussian_score_log_sigma", "d log N(a; mu, sigma^2) / d log sigma",
             dict(a=_real, mu=_real, sigma=_pos), "(a - mu)**2/sigma**2 - 1",
             "chain rule from the sigma score"),
    Quantity("gaussian_entropy", "entropy of N(mu, sigma^2) (nats)", dict(sigma=_pos),
             "log(sigma) + (1 + log(2*pi))/2", "standard"),
    Quantity("gaussian_kl", "KL(N(mu1, sigma1^2) || N(mu2, sigma2^2))",
             dict(mu1=_real, mu2=_real, sigma1=_pos, sigma2=_pos),
             "log(sigma2/sigma1) + (sigma1**2 + (mu1 - mu2)**2)/(2*sigma2**2) - 1/2",
             "theorem gaussian_kl (derived from the integral)"),
    Quantity("sigmoid_score", "d log sigmoid(theta) / d theta (two-action policy)",
             dict(theta=_real), "1 - 1/(1 + exp(-theta))", "theorem softmax_score"),
    Quantity("ppo_clipped_term", "PPO per-sample objective with ratio r, advantage A, clip eps",
             dict(r=_pos, A=_real, eps=_clip_eps), "Min(r*A, clip(r, 1 - eps, 1 + eps)*A)",
             "Schulman et al. (2017), arXiv:1707.06347v2, Eq. (7)"),
    Quantity("value_clip", "clipped value prediction around the old prediction v_old",
             dict(v=_real, v_old=_real, eps=_clip_eps), "v_old + clip(v - v_old, -eps, eps)",
             "OpenAI baselines ppo2 value clipping"),
    Quantity("gae_weight", "weight of delta_{t+l} in the GAE advantage",
             dict(gamma=_unit, lam=_unit, l=_nonneg_int), "(gamma*lam)**l",
             "theorem gae; Schulman et al. (2016), Eq. (16)"),
    Quantity("trpo_penalty_coefficient", "C in J(new) >= L - C KL_max, eps = max |A|",
             dict(eps=_pos, gamma=_unit), "4*eps*gamma/(1 - gamma)**2",
             "TRPO arXiv:1502.05477v5, Theorem 1 / Eq. (9)"),
    Quantity("natural_gradient_step_size", "beta in d = beta F^-1 g with (1/2) d^T F d = delta; "
             "gFg = g^T F^-1 g", dict(delta=_pos, gFg=_pos), "sqrt(2*delta/gFg)",
             "theorem natural_gradient_step; TRPO App. C"),
    Quantity("kl_k3", "k3 estimator of KL(q || p) from r = p(x)/q(x), x ~ q", dict(r=_pos),
             "(r - 1) - log(r)", "theorem kl_estimators"),
]}


@dataclasses.dataclass(frozen=True)
class FormulaCheck:
    """Result of :func:`check_formula`.

    Attributes
    ----------
    quantity : str
    correct : bool
    status : {"proved", "checked", "wrong"}
        ``proved``: sympy reduced the difference to 0; ``checked``: equal at every random
        point tried but not reduced; ``wrong``: a differing point was found.
    counterexample : dict or None
        A point (symbol -> value) where the two differ, with both values.
    reference : str
        The correct expression.
    message : str
    """

    quantity: str
    correct: bool
    status: str
    counterexample: dict | None
    reference: str
    message: str


def list_quantities() -> list[Quantity]:
    """The quantities :func:`check_formula` knows, with their symbols and references.

    Returns
    -------
    list of Quantity

    Raises
    ------
    Nothing.

    References
    ----------
    Each quantity's ``source`` field.
    """
    return list(QUANTITIES.values())


def _parse(text: str, q: Quantity):
    if not isinstance(text, str) or not text.strip():
        raise FormulaError(f"expression: expected non-empty text, received {text!r}")
    local = {name: sp.Symbol(name, positive=(dom in (_pos, _unit, _clip_eps)),
                             integer=(dom is _nonneg_int) or None)
             for name, dom in q.symbols.items()}
    fns = {"clip": clip, "Min": sp.Min, "Max": sp.Max, "min": sp.Min, "max": sp.Max,
           "log": sp.log, "exp": sp.exp, "sqrt": sp.sqrt, "pi": sp.pi, "Abs": sp.Abs,
           "abs": sp.Abs}
    try:
        expr = parse_expr(text, local_dict={**fns, **local},
                          transformations=standard_transformations)
    except Exception as exc:
        raise FormulaError(f"expression: could not parse {text!r} ({type(exc).__name__}: "
                           f"{exc}); expected sympy syntax in the symbols "
                           f"{sorted(q.symbols)}") from None
    expr = sp.sympify(expr)
    unknown = {str(s) for s in expr.free_symbols} - set(q.symbols)
    if unknown:
        raise FormulaError(f"expression: unknown symbols {sorted(unknown)} for quantity "
                           f"{q.name!r}; expected only {sorted(q.symbols)}")
    return expr, local


def check_formula(quantity: str, expression: str, *, n_points: int = 60,
                  seed: int = 0) -> FormulaCheck:
    """Compare ``expression`` with the reference for ``quantity``.

    Parameters
    ----------
    quantity : str
        A name from :func:`list_quantities`.
    expression : str
        The user's formula in the quantity's symbols.
    n_points : int
        Random points tried when sympy cannot reduce the difference symbolically.

    Returns
    -------
    FormulaCheck

    Raises
    ------
    FormulaError
        Unknown quantity, unparsable text, or symbols other than the documented ones.

    References
    ----------
    The quantity's ``source``; the theorems of :mod:`proofs`.
    """
    if quantity not in QUANTITIES:
        raise FormulaError(f"quantity: expected one of {sorted(QUANTITIES)}, received "
                           f"{quantity!r}")
    q = QUANTITIES[quantity]
    user, local = _parse(expression, q)
    ref, _ = _parse(q.reference, q)
    syms = [local[n] for n in q.symbols]
    domains = {local[n]: dom for n, dom in q.symbols.items()}
    diff = user - ref
    ok, cex = check_at_points(diff, syms, n=12, seed=seed, domains=domains)
    if ok and symbolic_zero(diff):
        return FormulaCheck(quantity, True, "proved", None, q.reference,
                            f"correct: {expression} equals the reference (proved symbolically)")
    if ok:
        ok, cex = check_at_points(diff, syms, n=n_points, seed=seed + 1, domains=domains)
    if ok:
        return FormulaCheck(quantity, True, "checked", None, q.reference,
                            f"agrees with the reference at {n_points + 12} random points "
                            f"(not reduced symbolically)")
    point = {local[k]: sp.Rational(v) for k, v in cex.items()}
    yours, want = user.subs(point), ref.subs(point)
    cex = {**cex, "yours": str(sp.N(yours, 12)), "reference": str(sp.N(want, 12))}
    where = ", ".join(f"{k} = {v}" for k, v in cex.items() if k not in ("yours", "reference"))
    return FormulaCheck(quantity, False, "wrong", cex, q.reference,
                        f"wrong: at {where} your expression gives {cex['yours']} but "
                        f"{q.name} is {cex['reference']}; correct: {q.reference} "
                        f"(source: {q.source})")


# (quantity, wrong expression, what is wrong, where such slips are reported)
COMMON_WRONG_FORMS = [
    ("gaussian_score_sigma", "((a - sigma)**2 - sigma**2)/sigma**3",
     "(a - sigma)^2 in place of (a - mu)^2", "lecture notes"),
    ("gaussian_score_log_sigma", "(a - mu)**2/sigma**2", "the -1 dropped", "lecture notes"),
    ("gaussian_kl", "log(sigma2/sigma1) + (sigma1/sigma2 + (mu1 - mu2)**2/sigma2**2)/2 - 1/2",
     "square missing on the std ratio", "pat-coady/trpo #25 (shared/BUGS.md)"),
    ("gaussian_entropy", "log(sigma) + 1/2", "log(2 pi)/2 dropped", "course code"),
    ("ppo_clipped_term", "Min(log(r)*A, clip(r, 1 - eps, 1 + eps)*A)",
     "log pi (log-ratio) in place of the ratio", "lecture notes"),
    ("ppo_clipped_term", "Max(r*A, clip(r, 1 - eps, 1 + eps)*A)", "max instead of min",
     "course code (shared/BUGS.md)"),
    ("ppo_clipped_term", "Min(r*A, r*clip(A, 1 - eps, 1 + eps))", "clip applied to the advantage",
     "course code (shared/BUGS.md)"),
    ("value_clip", "v_old + clip(v - v_old, eps, -eps)", "clip bounds reversed",
     "shared/BUGS.md (value loss)"),
    ("gae_weight", "lam**l", "lambda^l instead of (gamma lambda)^l",
     "course code (shared/BUGS.md)"),
    ("trpo_penalty_coefficient", "4*eps*gamma/(1 - gamma)", "(1 - gamma) not squared",
     "lecture notes"),
    ("trpo_penalty_coefficient", "2*eps*gamma/(1 - gamma)**2",
     "Kakade-Langford mixture constant used for the TRPO bound", "lecture notes"),
    ("natural_gradient_step_size", "sqrt(delta/gFg)", "factor 2 missing",
     "course code (shared/BUGS.md)"),
    ("natural_gradient_step_size", "2*delta/gFg", "square root missing",
     "course code (shared/BUGS.md)"),
    ("kl_k3", "(r - 1) + log(r)", "sign of the log flipped", "course code"),
    ("sigmoid_score", "1/(1 + exp(-theta))", "score of a = 1 written as pi instead of 1 - pi",
     "lecture notes"),
]

