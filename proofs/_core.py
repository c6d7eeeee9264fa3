"""Theorem records, verdicts, and the two ways a statement is settled (private module).

* ``proved``: sympy reduces ``lhs - rhs`` to zero (or proves the inequality) symbolically.
* ``checked``: evaluated at many random points (exact rationals where the expression is
  rational, 50-digit arithmetic otherwise) and found equal everywhere; the verdict says which.
* ``failed``: a point where the two sides differ was found, or the symbolic reduction was not
  zero and no random point agreed.
"""

from __future__ import annotations

from pgtheory.extras import require

require("proofs")  # before the optional imports: a missing extra is one line naming it

import dataclasses
import random
import time
from collections.abc import Callable

import sympy as sp

__all__ = [
    "Theorem",
    "Verdict",
    "check_at_points",
    "equality",
    "failed",
    "proved",
    "symbolic_zero",
]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Outcome of verifying one statement.

    Attributes
    ----------
    status : {"proved", "checked", "failed"}
    detail : str
        How it was settled, or the counterexample.
    seconds : float
        Wall time of the verification.
    """

    status: str
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in ("proved", "checked")


def proved(detail: str) -> Verdict:
    return Verdict("proved", detail)


def failed(detail: str) -> Verdict:
    return Verdict("failed", detail)


@dataclasses.dataclass(frozen=True)
class Theorem:
    """A statement with its source, a verification, and known wrong variants.

    ``verify()`` settles the statement as written; each entry of ``wrong_variants`` maps a
    short description of a common slip to a callable that runs the *same* verification on the
    slipped formula and must not succeed (tests assert that it fails).
    """

    name: str
    statement: str
    source: str
    verify: Callable[[], Verdict]
    wrong_variants: dict[str, Callable[[], Verdict]] = dataclasses.field(default_factory=dict)

    def run(self) -> Verdict:
        t0 = time.perf_counter()
        try:
            v = self.verify()
        except Exception as exc:  # a crash is reported as a failure, never as success
            v = failed(f"verification raised {type(exc).__name__}: {exc}")
        return dataclasses.replace(v, seconds=time.perf_counter() - t0)


def symbolic_zero(expr) -> bool:
    """True when sympy reduces ``expr`` to 0 (cancel first, then simplify)."""
    e = sp.sympify(expr)
    if e == 0:
        return True
    c = sp.cancel(sp.together(e))
    if c == 0:
        return True
    return sp.simplify(c) == 0


def _random_value(sym: sp.Symbol, rng: random.Random) -> sp.Rational:
    lo, hi = (0.05, 3.0) if sym.is_positive else (-3.0, 3.0)
    v = sp.Rational(rng.randint(int(lo * 1000), int(hi * 1000)), 1000)
    return v if v != 0 else sp.Rational(1, 7)


def check_at_points(diff, symbols, *, n: int = 40, seed: int = 0, domains=None,
                    tol: float = 1e-30):
    """Evaluate ``diff`` at ``n`` random points; return ``(all_zero, counterexample)``.

    ``domains`` maps a symbol to a callable ``rng -> value``; otherwise positive symbols get
    rationals in [0.05, 3] and the rest rationals in [-3, 3]. Rational results are compared
    exactly; others at 50 significant digits against ``tol``.
    """
    rng = random.Random(seed)
    domains = domains or {}
    for _ in range(n):
        point = {s: (domains[s](rng) if s in domains else _random_value(s, rng)) for s in symbols}
        val = sp.sympify(diff).subs(point)
        if val.is_Rational:
            bad = val != 0
        else:
            num = sp.N(val, 50)
            bad = not num.is_number or abs(complex(num)) > tol
        if bad:
            return False, {str(k): str(v) for k, v in point.items()}
    return True, None


def equality(lhs, rhs, symbols, *, what: str, n: int = 40, domains=None) -> Verdict:
    """Settle ``lhs == rhs``: proved symbolically, else checked at points, else failed."""
    diff = sp.sympify(lhs) - sp.sympify(rhs)
    ok, cex = check_at_points(diff, symbols, n=min(n, 8), domains=domains)
    if not ok:
        return failed(f"{what}: sides differ at {cex}")
    if symbolic_zero(diff):
        return proved(f"{what}: lhs - rhs simplifies to 0")
    ok, cex = check_at_points(diff, symbols, n=n, seed=1, domains=domains)
    if ok:
        return Verdict("checked", f"{what}: equal at {n} random points (not reduced to 0 "
                                  f"symbolically)")
    return failed(f"{what}: sides differ at {cex}")
