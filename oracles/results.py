"""The result object every oracle check returns, and what its verdicts mean.

Verdicts
--------
``pass``
    The check ran and the implementation agrees with the theory within the stated tolerance
    or false-positive rate.
``fail``
    Evidence of a defect: the implementation disagrees with every reference variant the check
    knows (see each check's docstring for the variants accepted).
``inconclusive``
    The check ran but its premise did not hold (the critic had not settled within the
    budget, the probed function is not differentiable where it was probed, ...). The
    explanation gives the measured reason. Never evidence of a defect.
``error``
    The target's own code raised while the check needed it (the explanation says where), or
    the harness could not run it. Not evidence of a defect in the algorithm, but the audit did
    not finish: the summary says the target crashed.
``skip``
    Not applicable to this target (the explanation says why): a component it does not expose,
    a check for another action kind or algorithm.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["LAYERS", "VERDICTS", "CheckFailed", "CheckResult", "TargetCrashed"]

LAYERS = ("components", "given_the_batch", "in_expectation", "update_level")

#: Every verdict a check can return (module docstring).
VERDICTS = ("pass", "fail", "inconclusive", "error", "skip")


class CheckFailed(AssertionError):
    """Raised by :meth:`CheckResult.assert_ok` when a check failed (pytest shows the message)."""


class TargetCrashed(RuntimeError):
    """Raised by :meth:`CheckResult.assert_ok` for an ``error`` verdict: the target's own code
    raised while the check ran, so the check says nothing about its correctness."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of one oracle check.

    Attributes
    ----------
    name : str
        ``layer.check`` (e.g. ``"components.gae"``).
    layer : str
        One of :data:`LAYERS`.
    verdict : {"pass", "fail", "inconclusive", "error", "skip"}
        See the module docstring: only ``fail`` is evidence of a defect.
    expected, observed : object
        What the theory says and what the implementation gave (a summary when large).
    tolerance : float or None
        The numerical tolerance used (deterministic checks).
    p_value : float or None
        For statistical checks.
    explanation : str
        One line in plain words; on failure it names the likely defect class when a known
        defect reproduces the observed output.
    """

    name: str
    layer: str
    verdict: str
    expected: Any
    observed: Any
    explanation: str
    tolerance: float | None = None
    p_value: float | None = None

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise ValueError(f"layer: expected one of {LAYERS}, received {self.layer!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: expected one of {VERDICTS}, received {self.verdict!r}")

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def assert_ok(self) -> CheckResult:
        """Return self; raise on ``fail`` and ``error`` verdicts.

        Raises
        ------
        CheckFailed
            Verdict ``fail`` (evidence of a defect), with the explanation.
        TargetCrashed
            Verdict ``error`` (the target raised), with where.
        """
        if self.verdict == "fail":
            raise CheckFailed(f"{self.name}: {self.explanation} (expected {self.expected}, "
                              f"observed {self.observed})")
        if self.verdict == "error":
            raise TargetCrashed(f"{self.name}: {self.explanation}")
        return self

    def __str__(self) -> str:
        return f"[{self.verdict.upper()}] {self.name}: {self.explanation}"
