"""Exact policy evaluation and state-visitation measures by linear solves.

Equations (Puterman 1994, Sec. 6.1; Sutton & Barto 2018, Eqs. 3.14 and 9.2-9.3):

* ``V_pi = (I - gamma P_pi)^{-1} r_pi``                  (Bellman expectation equation)
* ``Q_pi[s, a] = R[s, a] + gamma sum_s' P[s, a, s'] V_pi[s']``
* ``A_pi = Q_pi - V_pi[:, None]``,  ``J(pi) = mu . V_pi``
* ``rho_pi = (I - gamma P_pi^T)^{-1} mu``, i.e. ``rho_pi(s) = sum_t gamma^t P(s_t = s)``
  (unnormalized; sums to ``1 / (1 - gamma)``; the ``rho_pi`` of Schulman et al. 2015, TRPO,
  arXiv:1502.05477, Sec. 2), and ``d_pi = (1 - gamma) rho_pi`` (normalized; sums to 1;
  Agarwal et al. 2021, arXiv:1908.00261, Sec. 2).

Nothing here iterates a Bellman operator to convergence: dense models use an LU solve,
sparse models a Krylov solve whose residual is checked (``solver="iterative"``, default)
or SuperLU (``solver="direct"``; fast for local transition graphs, but random graphs fill in).

:class:`PolicyEvaluation` holds one policy's factorized ``I - gamma P_pi``
(:class:`BellmanSystem`) and serves ``V``, ``Q``, ``A``, ``J``, ``rho`` and ``d`` from it, the
visitation by the transposed solve with the same factors; the functions here build one per
call. :func:`pgtheory.evaluate` extends it with the gradient quantities.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla

from pgtheory._validation import (
    DEFAULT_ATOL,
    as_float_array,
    check_positive_int,
    ensure_finite_result,
)
from pgtheory.errors import InvalidArgumentError, SolverError
from pgtheory.mdp import TabularMDP

__all__ = [
    "BellmanSystem",
    "PolicyEvaluation",
    "PolicyIterationResult",
    "action_state_weights",
    "action_values",
    "advantages",
    "discounted_visitation",
    "expected_return",
    "on_policy_distribution",
    "policy_iteration",
    "state_values",
]

_SOLVERS = ("auto", "direct", "iterative")
SPARSE_RTOL = 1e-12


def _check_solver(solver: str) -> str:
    if solver not in _SOLVERS:
        raise InvalidArgumentError(f"solver: expected one of {_SOLVERS}, received {solver!r}")
    return solver


class BellmanSystem:
    """The matrix ``M = I - discount * P_pi``, factorized once, for repeated exact solves.

    Dense ``P_pi``: one LAPACK LU factorization (``scipy.linalg.lu_factor``, i.e. ``getrf``)
    with a reciprocal-condition check (``gecon``); both ``M x = b`` and ``M^T x = b`` then cost
    two triangular solves each (``lu_solve`` with ``trans=0`` / ``trans=1``). Sparse ``P_pi``
    with ``solver="direct"``: one SuperLU factorization (``scipy.sparse.linalg.splu``), reused
    for both systems. Sparse with ``solver="auto"``/``"iterative"``: no factorization; each
    solve runs BiCGSTAB (GMRES as fallback). Every sparse solution has its relative residual
    checked against ``SPARSE_RTOL``.

    Normally reached through :class:`PolicyEvaluation` or :func:`solve_bellman`, which accepts
    a ``BellmanSystem`` in place of ``P_pi``.

    Parameters
    ----------
    P_pi : ndarray, shape (S, S), or scipy sparse matrix, shape (S, S)
    discount : float
    solver : {"auto", "direct", "iterative"}

    Raises
    ------
    InvalidArgumentError
        Unknown ``solver``.
    SolverError
        Dense ``M`` singular, or with reciprocal condition number below machine epsilon (the
        test ``scipy.linalg.solve`` applies); sparse ``M`` singular for SuperLU.
    """

    def __init__(self, P_pi, discount: float, solver: str = "auto") -> None:
        self.solver = _check_solver(solver)
        self.discount = float(discount)
        self.n = P_pi.shape[0]
        self.is_sparse = sp.issparse(P_pi)
        self.n_factorizations = 0
        self._lu = None
        if self.is_sparse:
            self._M = (sp.eye_array(self.n, format="csr") - self.discount * P_pi).tocsr()
            self._MT = None
            if solver == "direct":
                try:
                    self._lu = spla.splu(self._M.tocsc())
                except RuntimeError as exc:  # "Factor is exactly singular"
                    raise SolverError(f"(I - {self.discount:g} P_pi) is singular to working "
                                      f"precision: {exc}") from None
                self.n_factorizations = 1
            return
        M = P_pi * (-self.discount)  # M = I - discount P_pi, built in place
        M.flat[::self.n + 1] += 1.0
        anorm = np.abs(M).sum(axis=0).max()  # 1-norm, for the condition estimate
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", sla.LinAlgWarning)
                self._lu = sla.lu_factor(M, overwrite_a=True, check_finite=False)
        except (sla.LinAlgError, sla.LinAlgWarning, ValueError) as exc:
            raise SolverError(f"(I - {self.discount:g} P_pi) is singular or ill-conditioned to "
                              f"working precision: {exc}") from None
        self.n_factorizations = 1
        # the same conditioning test as scipy.linalg.solve: 1-norm rcond from the LU factors
        gecon, = sla.get_lapack_funcs(("gecon",), (self._lu[0],))
        rcond, info = gecon(self._lu[0], anorm, norm="1")
        if info != 0 or not rcond >= np.finfo(np.float64).eps:
            raise SolverError(f"(I - {self.discount:g} P_pi) is singular or ill-conditioned to "
                              f"working precision: reciprocal condition number {rcond:.3g}")

    def solve(self, b: np.ndarray, *, transpose: bool = False) -> np.ndarray:
        """``x`` with ``M x = b`` (``M^T x = b`` when ``transpose``), shape (S,), float64.

        Raises
        ------
        SolverError
            Non-finite solution (dense) or sparse relative residual above
            ``1e3 * SPARSE_RTOL``.
        """
        if not self.is_sparse:
            x = sla.lu_solve(self._lu, b, trans=1 if transpose else 0, check_finite=False)
            return ensure_finite_result(x, "linear solve")
        if transpose and self._MT is None:
            self._MT = self._M.T.tocsr()
        M = self._MT if transpose else self._M
        if self._lu is not None:
            x = self._lu.solve(np.asarray(b, dtype=np.float64), trans="T" if transpose else "N")
        else:
            x, info = spla.bicgstab(M, b, rtol=SPARSE_RTOL, atol=0.0, maxiter=10 * self.n)
            if info != 0:
                x, info = spla.gmres(M, b, rtol=SPARSE_RTOL, atol=0.0, restart=100,
                                     maxiter=10 * self.n)
        bnorm = max(np.linalg.norm(b), np.finfo(float).tiny)
        res = np.linalg.norm(M @ x - b) / bnorm
        if not np.isfinite(res) or res > 1e3 * SPARSE_RTOL:
            raise SolverError(f"sparse linear solve of (I - {self.discount:g} P_pi) x = b: "
                              f"expected a relative residual <= {1e3 * SPARSE_RTOL:g}, received "
                              f"{res:g}")
        return np.asarray(x, dtype=np.float64)


def solve_bellman(mdp: TabularMDP, P_pi, b: np.ndarray, *, discount: float,
                  transpose: bool = False, solver: str = "auto") -> np.ndarray:
    """Solve ``(I - discount * P_pi) x = b`` (or its transpose) exactly.

    ``P_pi`` may be a :class:`BellmanSystem` (an already factorized ``I - discount P_pi``),
    which is then reused; its own discount and solver apply. Every exact solve of the core
    goes through this function.

    Raises
    ------
    InvalidArgumentError
        Unknown ``solver``.
    SolverError
        The system is singular or a Krylov solve does not reach a relative residual of
        ``SPARSE_RTOL``.
    """
    if isinstance(P_pi, BellmanSystem):
        return P_pi.solve(b, transpose=transpose)
    _check_solver(solver)
    return BellmanSystem(P_pi, discount, solver).solve(b, transpose=transpose)


def _readonly(x):
    if isinstance(x, np.ndarray):
        x.flags.writeable = False
    return x


class PolicyEvaluation:
    """Exact evaluation of one tabular policy: every quantity from one factorization.

    ``M = I - gamma P_pi`` is factorized once (dense: LAPACK LU; sparse: SuperLU with
    ``solver="direct"``, else a checked Krylov solve per system) on first need, and reused for

    * ``V_pi = M^{-1} r_pi`` (:meth:`state_values`), ``Q_pi``, ``A_pi``, ``J = mu . V_pi``;
    * ``rho_pi = M^{-T} mu`` (:meth:`discounted_visitation`, the transposed solve with the
      same factors) and the state weights ``w`` of the Fisher matrix and KL means.

    Each quantity is computed on first request and cached; the returned arrays are the cached
    ones, marked read-only (``ValueError`` on assignment); copy them to modify. The module
    functions (:func:`state_values`, :func:`expected_return`, ...) are thin wrappers that build
    one ``PolicyEvaluation`` per call; build it yourself to pay for the solves once.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
        Row-stochastic policy.
    solver : {"auto", "direct", "iterative"}
        As :func:`state_values` (sparse models only).
    atol : float
        Tolerance for the row sums of ``pi``.

    Raises
    ------
    TypeError
        ``mdp`` is not a :class:`~pgtheory.mdp.TabularMDP`.
    InvalidPolicyError
        ``pi`` of the wrong shape, non-finite, negative, or not row-stochastic.
    InvalidArgumentError
        Unknown ``solver``.
    SolverError
        (from the first solve) As :func:`state_values`.

    References
    ----------
    Puterman (1994), Markov Decision Processes, Sec. 6.1 (policy evaluation as a linear
    system); Schulman et al. (2015), arXiv:1502.05477v5, Sec. 2 (``rho_pi``); Agarwal et al.
    (2021), arXiv:1908.00261, Sec. 2 (``d_pi``).

    Examples
    --------
    >>> import numpy as np, pgtheory as pg
    >>> mdp = pg.random_mdp(0, 5, 2, gamma=0.9)
    >>> ev = pg.PolicyEvaluation(mdp, np.full((5, 2), 0.5))
    >>> bool(np.isclose(ev.expected_return(), mdp.mu @ ev.state_values()))
    True
    """

    def __init__(self, mdp: TabularMDP, pi, *, solver: str = "auto",
                 atol: float = DEFAULT_ATOL) -> None:
        if not isinstance(mdp, TabularMDP):
            raise TypeError(f"mdp: expected a TabularMDP (e.g. pgtheory.random_mdp(...)), "
                            f"received {type(mdp).__name__}")
        p = mdp.check_policy(pi, atol=atol)
        self._setup(mdp, p, solver)

    def _setup(self, mdp: TabularMDP, p: np.ndarray, solver: str) -> None:
        """Initialise from an already validated policy ``p``."""
        self.mdp = mdp
        self.solver = _check_solver(solver)
        self.policy = _readonly(np.array(p, dtype=np.float64))
        self._system: BellmanSystem | None = None
        self._cache: dict = {}

    # ------------------------------------------------------------------ internals
    def _cached(self, key, compute):
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = _readonly(compute())
            return value

    @property
    def system(self) -> BellmanSystem:
        """The factorized ``I - gamma P_pi`` (:class:`BellmanSystem`), built on first access."""
        if self._system is None:
            mdp = self.mdp
            self._system = BellmanSystem(mdp.transition_matrix(self.policy), mdp.gamma,
                                         self.solver)
        return self._system

    def _solve(self, b: np.ndarray, transpose: bool = False) -> np.ndarray:
        return solve_bellman(self.mdp, self.system, b, discount=self.mdp.gamma,
                             transpose=transpose, solver=self.solver)

    # ------------------------------------------------------------------ quantities
    def state_values(self) -> np.ndarray:
        """``V_pi``, shape (S,), reward units (read-only; see :func:`state_values`)."""
        return self._cached("V", lambda: self._solve(self.mdp.policy_reward(self.policy)))

    def action_values(self) -> np.ndarray:
        """``Q_pi``, shape (S, A), reward units (read-only; see :func:`action_values`)."""
        mdp = self.mdp
        return self._cached("Q", lambda: mdp.R + mdp.gamma * mdp.next_state_expectation(
            self.state_values()))

    def advantages(self) -> np.ndarray:
        """``A_pi = Q_pi - V_pi``, shape (S, A), reward units (read-only; see
        :func:`advantages`)."""
        return self._cached("A", lambda: self.action_values() - self.state_values()[:, None])

    def expected_return(self) -> float:
        """``J(pi) = mu . V_pi`` (reward units; see :func:`expected_return`)."""
        return self._cached("J", lambda: float(self.mdp.mu @ self.state_values()))

    def _rho_solve(self) -> np.ndarray:
        """``(I - gamma P_pi)^{-T} mu`` as solved (round-off negatives kept)."""
        return self._cached("rho_solve", lambda: self._solve(self.mdp.mu, transpose=True))

    def _rho(self) -> np.ndarray:
        """``rho_pi`` with round-off negatives removed (``rho >= 0`` exactly)."""
        return self._cached("rho", lambda: np.maximum(self._rho_solve(), 0.0))

    def discounted_visitation(self, normalized: bool = True) -> np.ndarray:
        """``d_pi`` (sums to 1) or, with ``normalized=False``, ``rho_pi`` (sums to
        ``1 / (1 - gamma)``), shape (S,) (read-only; see :func:`discounted_visitation`)."""
        if not normalized:
            return self._rho()
        return self._cached("d", lambda: (1.0 - self.mdp.gamma) * self._rho())

    def action_state_weights(self) -> np.ndarray:
        """``w(s) = d_pi(s) [s not terminal]``, shape (S,) (read-only; see
        :func:`pgtheory.action_state_weights`)."""
        return self._cached("w", lambda: self.discounted_visitation() * (~self.mdp.terminal))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_states={self.mdp.n_states}, "
                f"n_actions={self.mdp.n_actions}, solver={self.solver!r}, "
                f"cached={sorted(map(str, self._cache))})")


def values_and_visitation(mdp: TabularMDP, pi: np.ndarray, *, solver: str = "auto"):
    """``(V_pi, rho_pi)`` for a validated policy, from one factorization (private helper).

    Writable copies; prefer :class:`PolicyEvaluation` in new code.
    """
    ev = PolicyEvaluation.__new__(PolicyEvaluation)
    ev._setup(mdp, pi, solver)
    return ev.state_values().copy(), ev._rho_solve().copy()


def state_values(mdp: TabularMDP, pi, *, solver: str = "auto",
                 atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Exact state values ``V_pi = (I - gamma P_pi)^{-1} r_pi``.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A)
        Row-stochastic policy.
    solver : {"auto", "direct", "iterative"}
        Sparse models only: "auto"/"iterative" use BiCGSTAB (GMRES as fallback) with a checked
        relative residual of 1e-12; "direct" uses SuperLU. Dense models always use LU.
    atol : float
        Tolerance for the row sums of ``pi``.

    Returns
    -------
    ndarray, shape (S,)
        ``V_pi[s]``, expected discounted return from ``s`` (reward units). Zero at terminal
        states.

    Raises
    ------
    InvalidPolicyError
        ``pi`` of the wrong shape, non-finite, negative, or not row-stochastic.
    SolverError
        The linear system could not be solved to the stated accuracy.

    References
    ----------
    Sutton & Barto (2018), Reinforcement Learning: An Introduction, 2nd ed., Sec. 4.1;
    Puterman (1994), Markov Decision Processes, Theorem 6.1.1.

    Notes
    -----
    A wrapper around :class:`PolicyEvaluation`; build that object to reuse one factorization
    for several quantities.
    """
    return PolicyEvaluation(mdp, pi, solver=solver, atol=atol).state_values().copy()


def action_values(mdp: TabularMDP, pi, *, solver: str = "auto",
                  atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Exact action values ``Q_pi[s, a] = R[s, a] + gamma sum_s' P[s, a, s'] V_pi[s']``.

    Returns
    -------
    ndarray, shape (S, A)
        Reward units.

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`state_values`.

    References
    ----------
    Sutton & Barto (2018), Sec. 3.5 (q_pi in terms of v_pi).
    """
    return PolicyEvaluation(mdp, pi, solver=solver, atol=atol).action_values().copy()


def advantages(mdp: TabularMDP, pi, *, solver: str = "auto",
               atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Exact advantages ``A_pi[s, a] = Q_pi[s, a] - V_pi[s]``.

    Satisfies ``sum_a pi[s, a] A_pi[s, a] = 0`` for every state.

    Returns
    -------
    ndarray, shape (S, A)
        Reward units.

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`state_values`.

    References
    ----------
    Kakade & Langford (2002), "Approximately optimal approximate reinforcement learning",
    ICML, Sec. 2; Schulman et al. (2015), arXiv:1502.05477v5, Sec. 2.
    """
    return PolicyEvaluation(mdp, pi, solver=solver, atol=atol).advantages().copy()


def expected_return(mdp: TabularMDP, pi, *, solver: str = "auto",
                    atol: float = DEFAULT_ATOL) -> float:
    """Exact objective ``J(pi) = E_{s0 ~ mu}[V_pi(s0)] = mu . V_pi``.

    Returns
    -------
    float
        Expected discounted return (reward units).

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`state_values`.

    References
    ----------
    Sutton et al. (2000), "Policy gradient methods for RL with function approximation",
    NeurIPS, start-state formulation.
    """
    return PolicyEvaluation(mdp, pi, solver=solver, atol=atol).expected_return()


def discounted_visitation(mdp: TabularMDP, pi, *, normalized: bool = True,
                          solver: str = "auto", atol: float = DEFAULT_ATOL) -> np.ndarray:
    """Discounted state visitation of ``pi`` from ``mu``.

    ``rho_pi(s) = sum_t gamma^t P(s_t = s | s_0 ~ mu, pi)``, computed as
    ``rho_pi = (I - gamma P_pi^T)^{-1} mu``; ``d_pi = (1 - gamma) rho_pi``.

    Parameters
    ----------
    normalized : bool
        True (default): return ``d_pi``, which sums to 1 (Agarwal et al. 2021).
        False: return ``rho_pi``, which sums to ``1 / (1 - gamma)`` (TRPO's ``rho``).

    Returns
    -------
    ndarray, shape (S,)
        Dimensionless (normalized) or expected discounted visit counts (unnormalized).
        Terminal states carry the discounted time spent absorbed in them.

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`state_values`.

    References
    ----------
    Schulman et al. (2015), TRPO, arXiv:1502.05477v5, Sec. 2 (``rho_pi``, unnormalized);
    Agarwal et al. (2021), JMLR 22(98), arXiv:1908.00261v5, Sec. 2 (``d_pi``, normalized).

    Notes
    -----
    Practical PPO/A2C minibatches sample states from :func:`on_policy_distribution`, not from
    ``d_pi`` (Nota & Thomas 2020, arXiv:1906.07073).
    """
    ev = PolicyEvaluation(mdp, pi, solver=solver, atol=atol)
    return ev.discounted_visitation(normalized=normalized).copy()


def _continuation_matrix(mdp: TabularMDP, p: np.ndarray):
    """``P_pi`` with transitions into (and out of) terminal states removed."""
    P_pi = mdp.transition_matrix(p)
    live = (~mdp.terminal).astype(np.float64)
    if sp.issparse(P_pi):
        D = sp.diags_array(live)
        return (D @ P_pi @ D).tocsr()
    return P_pi * live[:, None] * live[None, :]


def on_policy_distribution(mdp: TabularMDP, pi, *, time_limit: int | None = None,
                           solver: str = "auto", atol: float = DEFAULT_ATOL) -> np.ndarray:
    """State distribution seen by on-policy rollouts: undiscounted, with episodic resets.

    Episodes start from ``mu``, follow ``pi``, end when entering a terminal state
    (*terminated*) or after ``time_limit`` steps (*truncated*), and restart from ``mu``.
    By the renewal-reward theorem the long-run fraction of environment steps spent in ``s``
    is ``eta(s) / sum(eta)`` where ``eta(s)`` is the expected number of visits to ``s`` per
    episode (Sutton & Barto 2018, Eqs. 9.2-9.3):

    * no time limit: ``eta = (I - Phat_pi^T)^{-1} mu`` on the states reachable from ``mu``;
    * time limit T: ``eta = sum_{t=0}^{T-1} (Phat_pi^T)^t mu`` (a finite sum),

    where ``Phat_pi`` is ``P_pi`` with transitions into terminal states removed. Terminal
    states get probability 0 (no action is taken there).

    Parameters
    ----------
    time_limit : int, optional
        Maximum episode length in environment steps (gymnasium's ``TimeLimit``).

    Returns
    -------
    ndarray, shape (S,)
        Sums to 1.

    Raises
    ------
    InvalidPolicyError
        As :func:`state_values`.
    SolverError
        ``time_limit`` is None and, from some state reachable from ``mu``, episodes do not
        terminate with probability 1 (then the distribution depends on where infinitely long
        episodes drift, and sampled rollouts need a time limit anyway).
    InvalidArgumentError
        ``time_limit`` not a positive integer.

    References
    ----------
    Sutton & Barto (2018), Sec. 9.2, Eqs. (9.2)-(9.3); Nota & Thomas (2020), "Is the policy
    gradient a gradient?", AAMAS, arXiv:1906.07073.
    """
    p = mdp.check_policy(pi, atol=atol)
    Phat = _continuation_matrix(mdp, p)
    if time_limit is not None:
        T = check_positive_int(time_limit, "time_limit")
        PT = Phat.T
        x = mdp.mu.copy()
        eta = np.zeros_like(x)
        for _ in range(T):
            eta += x
            x = PT @ x
        return eta / eta.sum()
    # reachability: states reachable from mu in the continuation graph
    graph = sp.csr_array(Phat) if not sp.issparse(Phat) else Phat
    graph = (graph > 0).astype(np.int8)
    starts = np.flatnonzero(mdp.mu > 0)
    dist = csgraph.shortest_path(graph, directed=True, unweighted=True, indices=starts)
    reachable = np.isfinite(np.atleast_2d(dist)).any(axis=0)
    # states from which a terminal state can be reached (reverse graph of P_pi)
    P_pi = mdp.transition_matrix(p)
    full = sp.csr_array(P_pi) if not sp.issparse(P_pi) else P_pi
    rev = ((full > 0).astype(np.int8)).T.tocsr()
    term = np.flatnonzero(mdp.terminal)
    if term.size:
        d2 = csgraph.shortest_path(rev, directed=True, unweighted=True, indices=term)
        can_end = np.isfinite(np.atleast_2d(d2)).any(axis=0)
    else:
        can_end = np.zeros(mdp.n_states, dtype=bool)
    stuck = reachable & ~can_end
    if np.any(stuck):
        s = int(np.flatnonzero(stuck)[0])
        raise SolverError(
            f"on_policy_distribution: expected episodes that terminate with probability 1, "
            f"but state {s} is reachable from mu and cannot reach a terminal state under pi; "
            f"pass time_limit=T to model time-limit truncation")
    idx = np.flatnonzero(reachable)
    sub = Phat[idx][:, idx] if sp.issparse(Phat) else Phat[np.ix_(idx, idx)]
    eta_sub = solve_bellman(mdp, sub, mdp.mu[idx], discount=1.0, transpose=True, solver=solver)
    eta = np.zeros(mdp.n_states)
    eta[idx] = np.maximum(eta_sub, 0.0)
    return eta / eta.sum()


@dataclasses.dataclass(frozen=True)
class PolicyIterationResult:
    """Result of :func:`policy_iteration`.

    Attributes
    ----------
    policy : ndarray, shape (S, A)
        Deterministic optimal policy (one-hot rows).
    state_values : ndarray, shape (S,)
        ``V*``.
    action_values : ndarray, shape (S, A)
        ``Q*``.
    converged : bool
        True when the greedy policy was stable (no strict improvement above ``tol``).
    n_iter : int
        Number of evaluation/improvement rounds (policy updates).
    message : str
    """

    policy: np.ndarray
    state_values: np.ndarray
    action_values: np.ndarray
    converged: bool
    n_iter: int
    message: str


def policy_iteration(mdp: TabularMDP, *, max_iter: int = 1000, tol: float = 1e-10,
                     solver: str = "auto") -> PolicyIterationResult:
    """Optimal policy and values by Howard's policy iteration with exact evaluation.

    Each round evaluates the current deterministic policy by a linear solve and switches a
    state's action only when another action improves ``Q`` by more than
    ``tol * (1 + max |Q|)`` (so ties cannot make it cycle). Terminates in finitely many rounds
    (Puterman 1994, Theorem 6.4.2).

    Parameters
    ----------
    max_iter : int
        Maximum number of rounds.
    tol : float
        Relative improvement threshold.

    Returns
    -------
    PolicyIterationResult

    Raises
    ------
    SolverError
        As :func:`state_values`.

    References
    ----------
    Howard (1960); Puterman (1994), Sec. 6.4; Sutton & Barto (2018), Sec. 4.3.
    """
    n_iter_max = check_positive_int(max_iter, "max_iter")
    S, A = mdp.n_states, mdp.n_actions
    actions = np.zeros(S, dtype=np.int64)
    rows = np.arange(S)
    converged = False
    n_iter = 0
    for n_iter in range(1, n_iter_max + 1):  # noqa: B007 (reported after the loop)
        pi = np.zeros((S, A))
        pi[rows, actions] = 1.0
        v = solve_bellman(mdp, mdp.transition_matrix(pi), mdp.policy_reward(pi),
                          discount=mdp.gamma, solver=solver)
        q = mdp.R + mdp.gamma * mdp.next_state_expectation(v)
        best = np.argmax(q, axis=1)
        gain = q[rows, best] - q[rows, actions]
        switch = gain > tol * (1.0 + np.abs(q).max())
        if not switch.any():
            converged = True
            break
        actions = np.where(switch, best, actions)
    msg = ("policy stable" if converged
           else f"no stable policy after max_iter={n_iter_max} rounds")
    return PolicyIterationResult(policy=pi, state_values=v, action_values=q,
                                 converged=converged, n_iter=n_iter, message=msg)


def check_state_distribution(mdp: TabularMDP, w) -> np.ndarray:
    """``w`` as a float64 array of non-negative state weights, shape (S,).

    Raises
    ------
    InvalidArgumentError
        Wrong shape or a negative weight.
    """
    arr = as_float_array(w, "state_distribution", ndim=1)
    if arr.shape != (mdp.n_states,) or np.any(arr < 0):
        raise InvalidArgumentError(f"state_distribution: expected non-negative weights of "
                                   f"shape {(mdp.n_states,)}, received shape {arr.shape} with "
                                   f"minimum {arr.min() if arr.size else None}")
    return arr


def action_state_weights(mdp: TabularMDP, pi) -> np.ndarray:
    """State weighting ``w(s) = d_pi(s) * [s is not terminal]`` of the Fisher matrix, KL means
    and the PPO objective (see the module docstring).

    Returns
    -------
    ndarray, shape (S,)
        Sums to 1 minus the discounted mass absorbed in terminal states.

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Agarwal et al. (2021), arXiv:1908.00261, Sec. 2 (``d_pi``); Kakade (2001), Sec. 3.
    """
    return PolicyEvaluation(mdp, pi).action_state_weights().copy()
