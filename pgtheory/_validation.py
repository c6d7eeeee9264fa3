"""Boundary validation shared by the public functions (private module)."""

from __future__ import annotations

import numbers

import numpy as np

from pgtheory.errors import (
    InvalidArgumentError,
    InvalidPolicyError,
    NonFiniteResultError,
)

DEFAULT_ATOL = 1e-8


def as_float_array(x, name: str, *, ndim: int | tuple[int, ...] | None = None,
                   error=InvalidArgumentError) -> np.ndarray:
    """Convert ``x`` to a float64 array, checking dimension and finiteness."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise error(f"{name}: expected an array of real numbers, received {type(x).__name__} "
                    f"that cannot be converted ({exc})") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise error(f"{name}: expected {want} dimensions, received shape {arr.shape}")
    check_finite(arr, name, error=error)
    return arr


def check_finite(arr: np.ndarray, name: str, *, error=InvalidArgumentError) -> None:
    """Raise ``error`` naming the first NaN/inf entry of ``arr``."""
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        idx = tuple(int(i) for i in bad)
        raise error(f"{name}: expected finite values, received {arr[idx]} at index {idx}")


def check_shape(arr: np.ndarray, shape: tuple[int, ...], name: str, *,
                error=InvalidArgumentError) -> None:
    if arr.shape != tuple(shape):
        raise error(f"{name}: expected shape {tuple(shape)}, received {arr.shape}")


def check_gamma(gamma, *, error=InvalidArgumentError) -> float:
    """Validate a discount factor in [0, 1)."""
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise error(f"gamma: expected a real number in [0, 1), received {gamma!r}")
    g = float(gamma)
    if not (0.0 <= g < 1.0):
        raise error(f"gamma: expected a value in [0, 1) (gamma = 1 makes I - gamma P_pi "
                    f"singular for every continuing chain), received {g}")
    return g


def check_unit_interval(x, name: str) -> float:
    """Validate a real number in [0, 1] (lambda, mixture weights)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise InvalidArgumentError(f"{name}: expected a real number in [0, 1], received {x!r}")
    v = float(x)
    if not (0.0 <= v <= 1.0):
        raise InvalidArgumentError(f"{name}: expected a value in [0, 1], received {v}")
    return v


def check_positive(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x) or x <= 0:
        raise InvalidArgumentError(f"{name}: expected a finite positive number, received {x!r}")
    return float(x)


def check_positive_int(x, name: str, *, minimum: int = 1) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or int(x) < minimum:
        raise InvalidArgumentError(f"{name}: expected an integer >= {minimum}, received {x!r}")
    return int(x)


def check_distribution_rows(arr: np.ndarray, name: str, *, atol: float,
                            error=InvalidArgumentError) -> None:
    """Check that the last axis of ``arr`` holds probability vectors."""
    if np.any(arr < 0):
        idx = tuple(int(i) for i in np.argwhere(arr < 0)[0])
        raise error(f"{name}: expected non-negative probabilities, received {arr[idx]} at "
                    f"index {idx}")
    sums = arr.sum(axis=-1)
    dev = np.abs(sums - 1.0)
    if np.any(dev > atol):
        idx = tuple(int(i) for i in np.argwhere(dev > atol)[0])
        raise error(f"{name}: expected rows summing to 1 (atol={atol:g}), received a row "
                    f"summing to {sums[idx]!r} at index {idx}")


def check_policy(pi, n_states: int, n_actions: int, *, name: str = "pi",
                 atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Validate a row-stochastic policy ``pi[s, a]`` of shape (S, A)."""
    arr = as_float_array(pi, name, ndim=2, error=InvalidPolicyError)
    check_shape(arr, (n_states, n_actions), name, error=InvalidPolicyError)
    check_distribution_rows(arr, name, atol=atol, error=InvalidPolicyError)
    return arr


def ensure_finite_result(arr, what: str):
    """Report (raise) a NaN/inf produced by a computation from finite inputs."""
    a = np.asarray(arr)
    if not np.all(np.isfinite(a)):
        raise NonFiniteResultError(
            f"{what}: the computation produced non-finite values from finite inputs "
            f"(first at index {tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])}); "
            f"this usually means an ill-conditioned system, e.g. gamma extremely close to 1")
    return arr
