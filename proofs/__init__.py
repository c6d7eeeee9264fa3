"""Symbolic (sympy) derivations behind policy-gradient methods, and a checker for user formulas.

``prove()`` runs every theorem and returns its verdict: ``proved`` when sympy reduces
``lhs - rhs`` to zero (or proves the inequality), ``checked`` when it was only evaluated at
random points (the verdict says how), ``failed`` otherwise. Every theorem also carries known
wrong variants, run by the tests, which must fail. ``check_formula(quantity, text)`` compares
a user's expression with the reference (see :mod:`pgtheory.proofs.formulas`).

Theorems (name: statement):

1. ``pdl_telescoping``, ``performance_difference``; 2. ``visitation_identity``;
3. ``policy_gradient_theorem``, ``surrogate_first_order``; 4. ``softmax_score``,
``gaussian_scores``, ``baseline_invariance``; 5. ``fisher_identity``, ``kl_second_order``;
6. ``gaussian_kl``; 7. ``natural_gradient_step``; 8. ``gae``; 9. ``ppo_clip_gradient``;
10. ``kl_estimators``; 11. ``pinsker``, ``trpo_constant``.
"""

from __future__ import annotations

from pgtheory.proofs._core import Theorem, Verdict
from pgtheory.proofs.distribution_theorems import THEOREMS as _DIST
from pgtheory.proofs.estimator_theorems import THEOREMS as _EST
from pgtheory.proofs.formulas import (
    COMMON_WRONG_FORMS,
    FormulaCheck,
    FormulaError,
    FormulaLimitError,
    check_formula,
    list_quantities,
)
from pgtheory.proofs.mdp_theorems import THEOREMS as _MDP

THEOREMS: dict[str, Theorem] = {t.name: t for t in (*_MDP, *_DIST, *_EST)}


def prove(names=None, *, on_result=None) -> list[tuple[Theorem, Verdict]]:
    """Run the named theorems (all when ``names`` is None) and return their verdicts.

    Parameters
    ----------
    names : iterable of str, optional
    on_result : callable(index, total, theorem, verdict), optional
        Called after each theorem (progress display).

    Returns
    -------
    list of (Theorem, Verdict)

    Raises
    ------
    KeyError
        An unknown theorem name (the message lists the known ones).

    References
    ----------
    Each theorem's ``source`` field.
    """
    chosen = list(THEOREMS) if names is None else list(names)
    unknown = [n for n in chosen if n not in THEOREMS]
    if unknown:
        raise KeyError(f"unknown theorem(s) {unknown}; expected names from {sorted(THEOREMS)}")
    out = []
    for i, n in enumerate(chosen, 1):
        v = THEOREMS[n].run()
        out.append((THEOREMS[n], v))
        if on_result is not None:
            on_result(i, len(chosen), THEOREMS[n], v)
    return out


__all__ = ["COMMON_WRONG_FORMS", "THEOREMS", "FormulaCheck", "FormulaError", "FormulaLimitError",
           "Theorem", "Verdict", "check_formula", "list_quantities", "prove"]
