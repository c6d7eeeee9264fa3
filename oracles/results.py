"""The result object every oracle check returns."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["LAYERS", "CheckFailed", "CheckResult"]

LAYERS = ("components", "given_the_batch", "in_expectation", "update_level")


class CheckFailed(AssertionError):
    """Raised by :meth:`CheckResult.assert_ok` when a check failed (pytest shows the message)."""


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Outcome of one oracle check.

    Attributes
    ----------
    name : str
        ``layer.check`` (e.g. ``"components.gae"``).
    layer : str
        One of :data:`LAYERS`.
    verdict : {"pass", "fail", "skip"}
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
        if self.verdict not in ("pass", "fail", "skip"):
            raise ValueError(f"verdict: expected 'pass', 'fail' or 'skip', received "
                             f"{self.verdict!r}")

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def assert_ok(self) -> CheckResult:
        """Raise :class:`CheckFailed` with the explanation if the check failed; return self."""
        if self.verdict == "fail":
            raise CheckFailed(f"{self.name}: {self.explanation} (expected {self.expected}, "
                              f"observed {self.observed})")
        return self

    def __str__(self) -> str:
        return f"[{self.verdict.upper()}] {self.name}: {self.explanation}"
