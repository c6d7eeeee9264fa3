"""Exceptions raised by pgtheory.

Every exception is a :class:`ValueError` subclass, so ``except ValueError`` catches
all of them, and every message names what was expected and what was received.
"""

from __future__ import annotations

__all__ = [
    "InvalidArgumentError",
    "InvalidMDPError",
    "InvalidPolicyError",
    "InvalidRolloutError",
    "NonFiniteResultError",
    "SolverError",
]


class InvalidArgumentError(ValueError):
    """A scalar or array argument has the wrong shape, type of value or range."""


class InvalidMDPError(InvalidArgumentError):
    """The arrays given for a :class:`~pgtheory.TabularMDP` do not define a valid MDP."""


class InvalidPolicyError(InvalidArgumentError):
    """A policy array ``pi[s, a]`` is not row-stochastic or has the wrong shape."""


class InvalidRolloutError(InvalidArgumentError):
    """Rollout arrays (rewards, values, flags) are inconsistent or non-finite."""


class SolverError(ValueError):
    """A linear solve failed: singular system, or no convergence to the requested residual."""


class NonFiniteResultError(ValueError):
    """A computation produced NaN or infinity from finite inputs (reported, never propagated)."""
