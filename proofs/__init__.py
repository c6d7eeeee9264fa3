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

Everything here needs sympy (the ``proofs`` extra). The names are re-exported lazily (PEP 562):
``import pgtheory.proofs`` imports nothing heavy, and the first use of a name raises
:class:`pgtheory.extras.MissingExtraError` (``pip install 'pgtheory[proofs]'``) without sympy.
"""

from __future__ import annotations

import importlib

from pgtheory.extras import lazy_exports

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (keeps the import cheap)
if TYPE_CHECKING:  # the names as static tools (type checkers, mkdocstrings) see them
    from pgtheory.proofs._core import Theorem, Verdict
    from pgtheory.proofs.formulas import (
        COMMON_WRONG_FORMS,
        FormulaCheck,
        FormulaError,
        FormulaLimitError,
        check_formula,
        list_quantities,
    )

    #: theorem name -> Theorem (the MDP, distribution and estimator theorems, in that order)
    THEOREMS: dict[str, Theorem]

_EXPORTS: dict[str, str] = {
    "Theorem": "_core", "Verdict": "_core", "COMMON_WRONG_FORMS": "formulas",
    "FormulaCheck": "formulas", "FormulaError": "formulas", "FormulaLimitError": "formulas",
    "check_formula": "formulas", "list_quantities": "formulas",
}
#: the submodules whose ``THEOREMS`` lists make up :data:`THEOREMS`, in order
_THEOREM_MODULES = ("mdp_theorems", "distribution_theorems", "estimator_theorems")


def _theorems() -> dict:
    """``THEOREMS``: theorem name -> Theorem (the MDP, distribution and estimator theorems)."""
    return {t.name: t for module in _THEOREM_MODULES
            for t in importlib.import_module(f"{__name__}.{module}").THEOREMS}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, computed={"THEOREMS": _theorems})


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
    pgtheory.extras.MissingExtraError
        sympy (the ``proofs`` extra) is not installed.

    References
    ----------
    Each theorem's ``source`` field.
    """
    theorems = globals()["THEOREMS"] if "THEOREMS" in globals() else __getattr__("THEOREMS")
    chosen = list(theorems) if names is None else list(names)
    unknown = [n for n in chosen if n not in theorems]
    if unknown:
        raise KeyError(f"unknown theorem(s) {unknown}; expected names from {sorted(theorems)}")
    out = []
    for i, n in enumerate(chosen, 1):
        v = theorems[n].run()
        out.append((theorems[n], v))
        if on_result is not None:
            on_result(i, len(chosen), theorems[n], v)
    return out


__all__ = ["COMMON_WRONG_FORMS", "THEOREMS", "FormulaCheck", "FormulaError", "FormulaLimitError",
           "Theorem", "Verdict", "check_formula", "list_quantities", "prove"]
