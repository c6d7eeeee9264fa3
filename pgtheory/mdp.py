"""Finite discounted MDPs: the :class:`TabularMDP` container and :func:`random_mdp`.

Conventions (used throughout pgtheory)
--------------------------------------
* ``P[s, a, s']``, shape ``(S, A, S)``: transition probabilities. A sparse model is given
  as a 2-D ``scipy.sparse`` matrix of shape ``(S * A, S)`` whose row ``s * A + a`` is
  ``P[s, a, :]``.
* ``R[s, a]``, shape ``(S, A)``: expected reward for taking ``a`` in ``s`` (reward timing:
  ``r_t`` is the reward for acting in ``s_t``). ``R[s, a, s']`` of shape ``(S, A, S)`` is
  accepted and reduced to ``R[s, a] = sum_s' P[s, a, s'] R[s, a, s']``.
* ``mu[s]``, shape ``(S,)``: initial-state distribution.
* ``gamma`` in ``[0, 1)``.
* ``terminal[s]``, shape ``(S,)``, bool: absorbing terminal states. An episode *terminates*
  (gymnasium's ``terminated``) when it enters one. Terminal states must be absorbing
  (``P[s, a, s] = 1``) with zero reward, so that the discounted values of the absorbing
  formulation equal those of the episodic one, and ``mu`` must put no mass on them.
* Policies are row-stochastic arrays ``pi[s, a]`` of shape ``(S, A)``. Rows of terminal
  states are ignored by every quantity (their value is 0 whatever the policy).
* All exact work is in float64.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp

from pgtheory._validation import (
    DEFAULT_ATOL,
    as_float_array,
    check_distribution_rows,
    check_finite,
    check_gamma,
    check_policy,
    check_positive_int,
)
from pgtheory.errors import InvalidArgumentError, InvalidMDPError

__all__ = ["TabularMDP", "as_generator", "random_mdp"]


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """Resolve ``rng`` (a Generator, a seed, or None) with :func:`numpy.random.default_rng`."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise InvalidArgumentError(
        f"rng: expected a numpy.random.Generator, an int seed or None, received {rng!r}")


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True) if a.dtype != bool else np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite discounted MDP ``(P, R, gamma, mu)``, validated on construction.

    Parameters
    ----------
    P : ndarray, shape (S, A, S), or scipy.sparse matrix, shape (S * A, S)
        Transition probabilities; every ``P[s, a, :]`` sums to 1 (within ``atol``).
    R : ndarray, shape (S, A) or (S, A, S)
        Expected reward ``R[s, a]`` (reward units per step), or ``R[s, a, s']``, which is
        reduced with ``P``.
    gamma : float
        Discount factor in ``[0, 1)``.
    mu : ndarray, shape (S,)
        Initial-state distribution.
    terminal : ndarray of bool, shape (S,), optional
        Absorbing terminal states (see the module docstring). Default: none.
    atol : float, keyword-only
        Tolerance for the row sums of ``P`` and ``mu``.

    Attributes
    ----------
    n_states, n_actions : int
    is_sparse : bool
        True when ``P`` is a scipy sparse ``(S * A, S)`` CSR array.

    Raises
    ------
    InvalidMDPError
        Wrong shapes or dimensions, NaN/inf, negative probabilities, rows not summing to 1,
        gamma outside ``[0, 1)``, terminal states that are not absorbing with zero reward,
        or ``mu`` with mass on a terminal state.

    Notes
    -----
    The object is immutable: its arrays are read-only copies.
    """

    P: Any
    R: np.ndarray
    gamma: float
    mu: np.ndarray
    terminal: np.ndarray | None = None
    atol: dataclasses.InitVar[float] = DEFAULT_ATOL

    def __post_init__(self, atol: float) -> None:
        err = InvalidMDPError
        gamma = check_gamma(self.gamma, error=err)
        P = self.P
        if sp.issparse(P):
            if P.ndim != 2:
                raise err(f"P: expected a 2-D sparse matrix of shape (S*A, S), received "
                          f"{P.ndim} dimensions")
            P = sp.csr_array(P, dtype=np.float64)
            SA, S = P.shape
            if S == 0 or SA % S != 0:
                raise err(f"P: expected a sparse shape (S*A, S) with S*A a multiple of S, "
                          f"received {P.shape}")
            A = SA // S
            check_finite(P.data, "P (sparse data)", error=err)
            if np.any(P.data < 0):
                raise err(f"P: expected non-negative probabilities, received minimum "
                          f"{P.data.min()}")
            sums = np.asarray(P.sum(axis=1)).ravel()
            dev = np.abs(sums - 1.0)
            if np.any(dev > atol):
                i = int(np.argmax(dev))
                raise err(f"P: expected rows summing to 1 (atol={atol:g}), received a row "
                          f"summing to {sums[i]!r} at (s, a) = {divmod(i, A)}")
            P.sort_indices()
        else:
            P = as_float_array(P, "P", ndim=3, error=err)
            S, A, S2 = P.shape
            if S != S2 or S == 0 or A == 0:
                raise err(f"P: expected shape (S, A, S) with S, A >= 1, received {P.shape}")
            check_distribution_rows(P, "P", atol=atol, error=err)
            P = _readonly(P)

        R = as_float_array(self.R, "R", ndim=(2, 3), error=err)
        if R.ndim == 3:
            if R.shape != (S, A, S):
                raise err(f"R: expected shape (S, A) = {(S, A)} or (S, A, S) = {(S, A, S)}, "
                          f"received {R.shape}")
            if sp.issparse(P):
                R = np.asarray(P.multiply(R.reshape(S * A, S)).sum(axis=1)).reshape(S, A)
            else:
                R = np.einsum("ijk,ijk->ij", P, R)
        elif R.shape != (S, A):
            raise err(f"R: expected shape (S, A) = {(S, A)} or (S, A, S), received {R.shape}")

        mu = as_float_array(self.mu, "mu", ndim=1, error=err)
        if mu.shape != (S,):
            raise err(f"mu: expected shape (S,) = {(S,)}, received {mu.shape}")
        check_distribution_rows(mu, "mu", atol=atol, error=err)

        if self.terminal is None:
            terminal = np.zeros(S, dtype=bool)
        else:
            terminal = np.asarray(self.terminal)
            if terminal.shape != (S,) or terminal.dtype != bool:
                raise err(f"terminal: expected a bool array of shape {(S,)}, received "
                          f"dtype {terminal.dtype} and shape {terminal.shape}")
        term_idx = np.flatnonzero(terminal)
        if term_idx.size:
            if sp.issparse(P):
                rows = (term_idx[:, None] * A + np.arange(A)[None, :]).ravel()
                self_prob = np.asarray(P[rows, np.repeat(term_idx, A)]).ravel()
            else:
                self_prob = P[term_idx, :, term_idx].ravel()
            if np.any(np.abs(self_prob - 1.0) > atol):
                raise err(f"terminal: expected terminal states to be absorbing "
                          f"(P[s, a, s] = 1), received P[s, a, s] = {self_prob.min()!r} for a "
                          f"terminal state")
            if np.any(R[term_idx] != 0.0):
                raise err("terminal: expected zero reward in terminal states, received "
                          f"max |R| = {np.abs(R[term_idx]).max()!r}")
            if np.any(mu[term_idx] > 0):
                raise err(f"mu: expected no initial mass on terminal states, received "
                          f"{mu[term_idx].sum()!r}")

        object.__setattr__(self, "P", P)
        object.__setattr__(self, "R", _readonly(R))
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(self, "mu", _readonly(mu))
        object.__setattr__(self, "terminal", _readonly(terminal))

    # ------------------------------------------------------------------ shapes
    @property
    def n_states(self) -> int:
        """Number of states S."""
        return int(self.R.shape[0])

    @property
    def n_actions(self) -> int:
        """Number of actions A."""
        return int(self.R.shape[1])

    @property
    def is_sparse(self) -> bool:
        """Whether ``P`` is stored as a sparse ``(S * A, S)`` matrix."""
        return sp.issparse(self.P)

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        return (f"TabularMDP(n_states={self.n_states}, n_actions={self.n_actions}, "
                f"gamma={self.gamma}, {kind}, n_terminal={int(self.terminal.sum())})")

    # ------------------------------------------------------------- operations
    def check_policy(self, pi, *, name: str = "pi", atol: float = DEFAULT_ATOL) -> np.ndarray:
        """Validate ``pi`` against this MDP: shape (S, A), row-stochastic within ``atol``.

        Raises
        ------
        InvalidPolicyError
        """
        return check_policy(pi, self.n_states, self.n_actions, name=name, atol=atol)

    def transition_matrix(self, pi: np.ndarray):
        """State-to-state matrix ``P_pi[s, s'] = sum_a pi[s, a] P[s, a, s']``.

        ``pi`` must already be validated. Returns an ndarray of shape (S, S), or a CSR array
        when the MDP is sparse.
        """
        if self.is_sparse:
            S, A = self.n_states, self.n_actions
            select = sp.csr_array((pi.ravel(), np.arange(S * A), np.arange(0, S * A + 1, A)),
                                  shape=(S, S * A))
            return (select @ self.P).tocsr()
        return np.einsum("sa,sat->st", pi, self.P)

    def policy_reward(self, pi: np.ndarray) -> np.ndarray:
        """Expected one-step reward under ``pi``: ``r_pi[s] = sum_a pi[s, a] R[s, a]``, (S,)."""
        return np.einsum("sa,sa->s", pi, self.R)

    def next_state_expectation(self, v: np.ndarray) -> np.ndarray:
        """``(P v)[s, a] = sum_s' P[s, a, s'] v[s']`` for ``v`` of shape (S,); returns (S, A)."""
        if self.is_sparse:
            return np.asarray(self.P @ v).reshape(self.n_states, self.n_actions)
        return self.P @ v

    def dense_P(self) -> np.ndarray:
        """``P`` as a dense (S, A, S) array (a copy for sparse models; mind the memory)."""
        if self.is_sparse:
            return self.P.toarray().reshape(self.n_states, self.n_actions, self.n_states)
        return self.P


def random_mdp(rng: np.random.Generator | int | None, n_states: int, n_actions: int, *,
               gamma: float = 0.9, n_successors: int | None = None, n_terminal: int = 0,
               reward_scale: float = 1.0, sparse: bool = False) -> TabularMDP:
    """Draw a random finite MDP.

    Transition rows are Dirichlet(1) over ``n_successors`` distinct successor states drawn
    uniformly (all states when ``n_successors`` is None), rewards are uniform on
    ``[-reward_scale, reward_scale]``, and ``mu`` is Dirichlet(1) over the non-terminal
    states. The last ``n_terminal`` states are absorbing terminal states with zero reward.

    Parameters
    ----------
    rng : numpy.random.Generator, int or None
        Source of randomness (resolved with :func:`numpy.random.default_rng`).
    n_states, n_actions : int
        S >= 1 and A >= 1; ``n_terminal`` must leave at least one non-terminal state.
    gamma : float
        Discount in ``[0, 1)``.
    n_successors : int, optional
        Number of states with non-zero probability in each ``P[s, a, :]`` (1 to S).
    n_terminal : int
        Number of absorbing terminal states.
    reward_scale : float
        Half-width of the reward range (reward units).
    sparse : bool
        Return ``P`` as a ``(S * A, S)`` CSR array (use with ``n_successors`` for large S).

    Returns
    -------
    TabularMDP

    Raises
    ------
    InvalidArgumentError
        Non-integer or out-of-range sizes, or an ``rng`` that is not a Generator/seed/None.

    References
    ----------
    Random "Garnet" MDPs with a fixed branching factor: Archibald, McKinnon & Thomas (1995),
    "On the generation of Markov decision processes", J. Oper. Res. Soc. 46(3).
    """
    gen = as_generator(rng)
    S = check_positive_int(n_states, "n_states")
    A = check_positive_int(n_actions, "n_actions")
    n_term = check_positive_int(n_terminal, "n_terminal", minimum=0)
    if n_term >= S:
        raise InvalidArgumentError(f"n_terminal: expected fewer than n_states = {S} terminal "
                                   f"states, received {n_term}")
    k = S if n_successors is None else check_positive_int(n_successors, "n_successors")
    if k > S:
        raise InvalidArgumentError(f"n_successors: expected at most n_states = {S}, "
                                   f"received {k}")
    n_live = S - n_term
    rows_live = n_live * A
    if k == S:
        cols = np.broadcast_to(np.arange(S), (rows_live, S))
    elif k * 4 <= S:
        # sample with replacement, then resample duplicates: exact "distinct" is cheap here
        cols = gen.integers(0, S, size=(rows_live, k))
        cols.sort(axis=1)
        dup = np.zeros_like(cols, dtype=bool)
        dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
        while dup.any():
            cols[dup] = gen.integers(0, S, size=int(dup.sum()))
            cols.sort(axis=1)
            dup[:] = False
            dup[:, 1:] = cols[:, 1:] == cols[:, :-1]
    else:
        cols = np.argsort(gen.random((rows_live, S)), axis=1)[:, :k]
    weights = gen.dirichlet(np.ones(k), size=rows_live)
    R = gen.uniform(-reward_scale, reward_scale, size=(S, A))
    R[n_live:] = 0.0
    mu = np.zeros(S)
    mu[:n_live] = gen.dirichlet(np.ones(n_live))
    terminal = np.zeros(S, dtype=bool)
    terminal[n_live:] = True
    row_idx = np.repeat(np.arange(rows_live), k)
    term_rows = np.arange(rows_live, S * A)
    term_cols = np.repeat(np.arange(n_live, S), A)
    data = np.concatenate([weights.ravel(), np.ones(term_rows.size)])
    r_all = np.concatenate([row_idx, term_rows])
    c_all = np.concatenate([np.asarray(cols).ravel(), term_cols])
    if sparse:
        P = sp.csr_array((data, (r_all, c_all)), shape=(S * A, S))
    else:
        P = np.zeros((S * A, S))
        P[r_all, c_all] = data
        P = P.reshape(S, A, S)
    return TabularMDP(P=P, R=R, gamma=gamma, mu=mu, terminal=terminal)
