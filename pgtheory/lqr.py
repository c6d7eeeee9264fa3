"""Exact continuous-action oracle: discounted LQR with linear-Gaussian policies.

Model and policy
----------------
``x_{t+1} = A x_t + B u_t + w_t``, ``w_t ~ N(0, W)``, ``x_0 ~ N(0, Sigma0)``; reward
``r_t = -(x_t^T Q x_t + u_t^T R u_t)``; discount gamma in [0, 1). Policy
``u_t ~ N(-K x_t, D)``, ``D = diag(sigma^2)``, parameters ``K`` (m, n) and ``log_sigma`` (m,):
the state-independent log-std parameterization of PPO/TRPO on MuJoCo. Shapes: state dimension
n, action dimension m.

Closed forms (derived in this docstring; the symbols are used by every function)
-------------------------------------------------------------------------------
With ``A_K = A - B K`` and ``W_K = W + B D B^T`` (the closed-loop noise):

* value: ``V(x) = -(x^T P x + c)`` where ``P = Q + K^T R K + gamma A_K^T P A_K`` (discounted
  Lyapunov equation) and ``c = (tr(R D) + gamma tr(P W_K)) / (1 - gamma)``;
* ``J = E[V(x_0)] = -(tr(P Sigma0) + c)``;
* ``Q(x, u) = -(x^T Q x + u^T R u) - gamma [(A x + B u)^T P (A x + B u) + tr(P W) + c]``,
  ``A(x, u) = Q(x, u) - V(x)``;
* discounted second moment ``Sigma_gamma = sum_t gamma^t E[x_t x_t^T]`` solves
  ``Sigma_gamma = gamma A_K Sigma_gamma A_K^T + Sigma0 + gamma W_K / (1 - gamma)``; the normalized
  ``Sigma_d = (1 - gamma) Sigma_gamma`` is ``E_{x ~ d}[x x^T]`` (all means are zero). Then
  ``J = -tr((Q + K^T R K) Sigma_gamma) - tr(R D) / (1 - gamma)``;
* gradients (perturb the Lyapunov equations; ``P`` is the adjoint of ``Sigma_gamma``):
  ``grad_K J = -2 E_K Sigma_gamma`` with ``E_K = (R + gamma B^T P B) K - gamma B^T P A``, and
  ``grad_{log sigma} J = -2 sigma^2 * diag(R + gamma B^T P B) / (1 - gamma)``. With gamma -> 1
  scaling, no noise and ``Sigma_gamma -> Sigma_K`` this is Fazel et al. (2018), Lemma 1:
  ``grad C = 2[(R + B^T P B) K - B^T P A] Sigma_K``;
* Fisher under ``d`` with parameters ``(vec K row-major, log_sigma)``:
  ``F = blockdiag(D^{-1} ⊗ Sigma_d, 2 I)``, so the natural gradient is
  ``(-2 D E_K / (1 - gamma), grad_{log sigma} J / 2)``: the state covariance drops out
  (Fazel et al. 2018, Sec. 4, natural policy gradient ``grad C Sigma_K^{-1}``);
* mean KL under a state second moment ``S``: ``E_x KL(N(-K1 x, D1) || N(-K2 x, D2)) =
  sum_i [log(s2_i/s1_i) + s1_i^2/(2 s2_i^2) - 1/2] + (1/2) tr((K2 - K1)^T D2^{-1} (K2 - K1) S)``.

The closed loop must be stabilizing under the discount: spectral radius of
``sqrt(gamma) (A - B K)`` below 1, else :class:`UnstableClosedLoopError`.

This module needs numpy and scipy only. The gymnasium simulator of a model is
:class:`pgtheory.oracles.envs.LinearQuadraticEnv` (id ``pgtheory/LinearQuadratic-v0``, extra
``oracles``); the linearization of MuJoCo models (InvertedPendulum-v5) is
:mod:`pgtheory.implementations.mujoco_lqr` (extra ``mujoco``).

References
----------
Fazel, Ge, Kakade & Mesbahi (2018), "Global convergence of policy gradient methods for the
linear quadratic regulator", ICML, arXiv:1801.05039, Lemma 1 and Sec. 4; Bertsekas (2017),
Dynamic Programming and Optimal Control, Vol. 1, Sec. 3.2 (Riccati equations); Kakade (2001).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg as sla

from pgtheory._validation import (
    as_float_array,
    check_gamma,
    check_positive,
    check_positive_int,
    ensure_finite_result,
)
from pgtheory.errors import InvalidArgumentError

__all__ = [
    "LQRModel",
    "LQRTRPOStep",
    "QuadraticValue",
    "RiccatiSolution",
    "UnstableClosedLoopError",
    "action_values",
    "advantages",
    "double_integrator",
    "expected_return",
    "finite_horizon_return",
    "finite_horizon_riccati",
    "fisher_matrix",
    "kl_divergence",
    "natural_gradient",
    "optimal_policy",
    "policy_gradient",
    "state_second_moment",
    "surrogate",
    "trpo_step",
    "value_function",
]


class UnstableClosedLoopError(ValueError):
    """``sqrt(gamma) (A - B K)`` has spectral radius >= 1: discounted costs are infinite."""


def _symmetric(M: np.ndarray, name: str, *, definite: bool, tol: float = 1e-10) -> np.ndarray:
    if not np.allclose(M, M.T, rtol=0, atol=tol * max(1.0, np.abs(M).max())):
        raise InvalidArgumentError(f"{name}: expected a symmetric matrix, received max "
                                   f"asymmetry {np.abs(M - M.T).max():.3g}")
    M = 0.5 * (M + M.T)
    lo = float(np.linalg.eigvalsh(M).min()) if M.size else 0.0
    if definite and lo <= 0:
        raise InvalidArgumentError(f"{name}: expected a positive definite matrix, received "
                                   f"smallest eigenvalue {lo:.3g}")
    if not definite and lo < -tol * max(1.0, np.abs(M).max()):
        raise InvalidArgumentError(f"{name}: expected a positive semi-definite matrix, received "
                                   f"smallest eigenvalue {lo:.3g}")
    return M


@dataclasses.dataclass(frozen=True, eq=False)
class LQRModel:
    """Discounted linear-quadratic model, validated on construction.

    Parameters
    ----------
    A : ndarray, shape (n, n)
    B : ndarray, shape (n, m)
    Q : ndarray, shape (n, n)
        State cost, symmetric positive semi-definite.
    R : ndarray, shape (m, m)
        Action cost, symmetric positive definite.
    W : ndarray, shape (n, n)
        Process-noise covariance, symmetric PSD (zeros allowed).
    Sigma0 : ndarray, shape (n, n)
        Initial-state covariance, symmetric PSD.
    gamma : float
        In [0, 1).

    Raises
    ------
    InvalidArgumentError
        Wrong shapes, NaN/inf, asymmetric or indefinite cost/covariance matrices, gamma out of
        range.
    """

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    W: np.ndarray
    Sigma0: np.ndarray
    gamma: float

    def __post_init__(self) -> None:
        A = as_float_array(self.A, "A", ndim=2)
        B = as_float_array(self.B, "B", ndim=2)
        n = A.shape[0]
        if A.shape != (n, n) or n == 0:
            raise InvalidArgumentError(f"A: expected a square (n, n) matrix, received {A.shape}")
        if B.shape[0] != n or B.shape[1] == 0:
            raise InvalidArgumentError(f"B: expected shape (n, m) = ({n}, m >= 1), received "
                                       f"{B.shape}")
        m = B.shape[1]
        mats = {}
        for name, shape, definite in (("Q", (n, n), False), ("R", (m, m), True),
                                      ("W", (n, n), False), ("Sigma0", (n, n), False)):
            M = as_float_array(getattr(self, name), name, ndim=2)
            if M.shape != shape:
                raise InvalidArgumentError(f"{name}: expected shape {shape}, received {M.shape}")
            mats[name] = _symmetric(M, name, definite=definite)
        object.__setattr__(self, "gamma", check_gamma(self.gamma))
        for name, M in (("A", A), ("B", B), *mats.items()):
            M = np.array(M, dtype=np.float64)
            M.flags.writeable = False
            object.__setattr__(self, name, M)

    @property
    def n_state(self) -> int:
        """State dimension n."""
        return int(self.A.shape[0])

    @property
    def n_action(self) -> int:
        """Action dimension m."""
        return int(self.B.shape[1])

    def __repr__(self) -> str:
        return f"LQRModel(n_state={self.n_state}, n_action={self.n_action}, gamma={self.gamma})"


def _policy(model: LQRModel, K, log_sigma, *, suffix: str = ""):
    Kx = as_float_array(K, "K" + suffix, ndim=2)
    if Kx.shape != (model.n_action, model.n_state):
        raise InvalidArgumentError(f"K{suffix}: expected shape (m, n) = "
                                   f"{(model.n_action, model.n_state)}, received {Kx.shape}")
    ls = as_float_array(log_sigma, "log_sigma" + suffix, ndim=1)
    if ls.shape != (model.n_action,):
        raise InvalidArgumentError(f"log_sigma{suffix}: expected shape ({model.n_action},), "
                                   f"received {ls.shape}")
    return Kx, ls


def _closed_loop(model: LQRModel, K: np.ndarray) -> np.ndarray:
    AK = model.A - model.B @ K
    radius = float(np.max(np.abs(np.linalg.eigvals(np.sqrt(model.gamma) * AK))))
    if radius >= 1.0:
        raise UnstableClosedLoopError(
            f"K: expected a closed loop stabilizing under the discount (spectral radius of "
            f"sqrt(gamma)(A - B K) < 1), received spectral radius {radius:.6g}")
    return AK


def _lyapunov_P(model: LQRModel, K: np.ndarray, AK: np.ndarray) -> np.ndarray:
    # P = M + gamma AK^T P AK  <=>  solve_discrete_lyapunov(sqrt(gamma) AK^T, M)
    M = model.Q + K.T @ model.R @ K
    P = sla.solve_discrete_lyapunov(np.sqrt(model.gamma) * AK.T, M)
    return 0.5 * (P + P.T)


def _pieces(model: LQRModel, K, log_sigma):
    K, ls = _policy(model, K, log_sigma)
    AK = _closed_loop(model, K)
    D = np.diag(np.exp(2.0 * ls))
    P = _lyapunov_P(model, K, AK)
    g = model.gamma
    WK = model.W + model.B @ D @ model.B.T
    c = (np.trace(model.R @ D) + g * np.trace(P @ WK)) / (1.0 - g)
    return K, ls, AK, D, P, WK, float(c)


def _discounted_second_moment(model: LQRModel, AK: np.ndarray, WK: np.ndarray) -> np.ndarray:
    """Unnormalized ``Sigma_gamma = gamma A_K Sigma_gamma A_K^T + Sigma0 + gamma W_K/(1-gamma)``."""
    g = model.gamma
    S = sla.solve_discrete_lyapunov(np.sqrt(g) * AK, model.Sigma0 + g * WK / (1.0 - g))
    return 0.5 * (S + S.T)


def _gain_terms(model: LQRModel, K: np.ndarray, P: np.ndarray):
    """``H = R + gamma B^T P B`` and ``E_K = H K - gamma B^T P A``."""
    H = model.R + model.gamma * model.B.T @ P @ model.B
    return H, H @ K - model.gamma * model.B.T @ P @ model.A


@dataclasses.dataclass(frozen=True)
class QuadraticValue:
    """``V(x) = -(x^T P x + c)``.

    Attributes
    ----------
    P : ndarray, shape (n, n)
    c : float
    """

    P: np.ndarray
    c: float

    def __call__(self, x) -> np.ndarray:
        """V at states ``x`` of shape (..., n); returns shape (...)."""
        x = np.asarray(x, dtype=float)
        return -(np.einsum("...i,ij,...j->...", x, self.P, x) + self.c)


def value_function(model: LQRModel, K, log_sigma) -> QuadraticValue:
    """Exact value function ``V(x) = -(x^T P x + c)`` of the policy ``N(-K x, diag(sigma^2))``.

    Parameters
    ----------
    model : LQRModel
    K : array_like, shape (m, n)
    log_sigma : array_like, shape (m,)

    Returns
    -------
    QuadraticValue
        ``P`` (n, n) and ``c`` (reward units); callable on states.

    Raises
    ------
    InvalidArgumentError
        Shapes or non-finite values.
    UnstableClosedLoopError
        ``sqrt(gamma)(A - B K)`` has spectral radius >= 1 (the radius is in the message).

    References
    ----------
    Module docstring; Bertsekas (2017), Vol. 1, Sec. 3.2.
    """
    _, _, _, _, P, _, c = _pieces(model, K, log_sigma)
    return QuadraticValue(P, c)


def expected_return(model: LQRModel, K, log_sigma) -> float:
    """Exact ``J(K, log_sigma) = E_{x0 ~ N(0, Sigma0)}[V(x0)] = -(tr(P Sigma0) + c)``.

    Returns
    -------
    float
        Expected discounted return (reward units; <= 0).

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Fazel et al. (2018), arXiv:1801.05039, Sec. 2 (cost ``C(K)``, here discounted and noisy).
    """
    _, _, _, _, P, _, c = _pieces(model, K, log_sigma)
    return float(-(np.trace(P @ model.Sigma0) + c))


def action_values(model: LQRModel, K, log_sigma, x, u) -> np.ndarray:
    """Exact ``Q(x, u) = -(x^T Q x + u^T R u) - gamma [(Ax + Bu)^T P (Ax + Bu) + tr(P W) + c]``.

    Parameters
    ----------
    x : array_like, shape (..., n)
    u : array_like, shape (..., m)

    Returns
    -------
    ndarray, shape (...)

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Module docstring (one-step Bellman expansion of ``V``).
    """
    _, _, _, _, P, _, c = _pieces(model, K, log_sigma)
    x = as_float_array(x, "x")
    u = as_float_array(u, "u")
    if x.shape[-1:] != (model.n_state,) or u.shape[-1:] != (model.n_action,):
        raise InvalidArgumentError(f"x, u: expected trailing dimensions ({model.n_state},) and "
                                   f"({model.n_action},), received {x.shape} and {u.shape}")
    nxt = x @ model.A.T + u @ model.B.T
    cost = np.einsum("...i,ij,...j->...", x, model.Q, x) + np.einsum("...i,ij,...j->...", u,
                                                                     model.R, u)
    future = np.einsum("...i,ij,...j->...", nxt, P, nxt) + np.trace(P @ model.W) + c
    return -(cost + model.gamma * future)


def advantages(model: LQRModel, K, log_sigma, x, u) -> np.ndarray:
    """Exact ``A(x, u) = Q(x, u) - V(x)``.

    Returns
    -------
    ndarray, shape (...)
        Reward units; ``E_{u ~ pi(.|x)}[A(x, u)] = 0``.

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Module docstring.
    """
    return action_values(model, K, log_sigma, x, u) - value_function(model, K, log_sigma)(x)


def state_second_moment(model: LQRModel, K, log_sigma, *, normalized: bool = True) -> np.ndarray:
    """Discounted state second moment, the continuous analogue of the visitation measure.

    ``Sigma_gamma = sum_t gamma^t E[x_t x_t^T]`` (``normalized=False``) solves
    ``Sigma_gamma = gamma A_K Sigma_gamma A_K^T + Sigma0 + gamma W_K / (1 - gamma)``;
    ``normalized=True`` returns ``Sigma_d = (1 - gamma) Sigma_gamma = E_{x ~ d}[x x^T]``.

    Returns
    -------
    ndarray, shape (n, n)
        Symmetric PSD (state units squared).

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Fazel et al. (2018), arXiv:1801.05039, Sec. 2 (``Sigma_K``, here discounted and noisy).
    """
    _, _, AK, _, _, WK, _ = _pieces(model, K, log_sigma)
    S = _discounted_second_moment(model, AK, WK)
    return (1.0 - model.gamma) * S if normalized else S


def policy_gradient(model: LQRModel, K, log_sigma) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``(grad_K J, grad_{log sigma} J)``.

    ``grad_K J = -2 [(R + gamma B^T P B) K - gamma B^T P A] Sigma_gamma`` and
    ``grad_{log sigma} J = -2 sigma^2 diag(R + gamma B^T P B) / (1 - gamma)``.

    Returns
    -------
    grad_K : ndarray, shape (m, n)
    grad_log_sigma : ndarray, shape (m,)

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Fazel et al. (2018), arXiv:1801.05039, Lemma 1 (undiscounted, noise-free case); the
    discounted noisy version is derived in the module docstring.
    """
    K, ls, AK, _, P, WK, _ = _pieces(model, K, log_sigma)
    H, EK = _gain_terms(model, K, P)
    S = _discounted_second_moment(model, AK, WK)
    return -2.0 * EK @ S, -2.0 * np.exp(2.0 * ls) * np.diag(H) / (1.0 - model.gamma)


def fisher_matrix(model: LQRModel, K, log_sigma, *, state_second_moment_=None) -> np.ndarray:
    """Fisher information of the policy under the discounted state distribution.

    Parameters ordered ``(vec(K) row-major, log_sigma)``:
    ``F = blockdiag(D^{-1} ⊗ Sigma_d, 2 I_m)``, ``Sigma_d`` the normalized second moment.

    Parameters
    ----------
    state_second_moment_ : array_like, shape (n, n), optional
        Use this ``E[x x^T]`` instead of ``Sigma_d`` of the policy itself.

    Returns
    -------
    ndarray, shape (m n + m, m n + m)

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Kakade (2001), Sec. 3; Fazel et al. (2018), Sec. 4 (natural gradient for LQR).
    """
    K, ls = _policy(model, K, log_sigma)
    S = (state_second_moment(model, K, ls) if state_second_moment_ is None
         else as_float_array(state_second_moment_, "state_second_moment_", ndim=2))
    m, n = model.n_action, model.n_state
    F = np.zeros((m * n + m, m * n + m))
    F[: m * n, : m * n] = np.kron(np.diag(np.exp(-2.0 * ls)), S)
    F[m * n:, m * n:] = 2.0 * np.eye(m)
    return F


def natural_gradient(model: LQRModel, K, log_sigma) -> tuple[np.ndarray, np.ndarray]:
    """Exact natural gradient ``F^{-1} grad J``: ``(-2 D E_K / (1 - gamma), grad_ls J / 2)``.

    The state second moment cancels: the K-part depends on ``Sigma0`` and ``W`` only through
    ``P``.

    Returns
    -------
    nat_K : ndarray, shape (m, n)
    nat_log_sigma : ndarray, shape (m,)

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`.

    References
    ----------
    Fazel et al. (2018), arXiv:1801.05039, Sec. 4 (``grad C Sigma_K^{-1} = 2 E_K``); Kakade
    (2001).
    """
    K, ls, _, D, P, _, _ = _pieces(model, K, log_sigma)
    H, EK = _gain_terms(model, K, P)
    grad_ls = -2.0 * np.exp(2.0 * ls) * np.diag(H) / (1.0 - model.gamma)
    return -2.0 * D @ EK / (1.0 - model.gamma), grad_ls / 2.0


def kl_divergence(model: LQRModel, K, log_sigma, K_new, log_sigma_new, *,
                  state_second_moment_=None) -> float:
    """Exact mean ``E_x[KL(pi(.|x) || pi_new(.|x))]`` between linear-Gaussian policies.

    ``sum_i [log(s2_i / s1_i) + s1_i^2 / (2 s2_i^2) - 1/2]
    + (1/2) tr((K2 - K1)^T D2^{-1} (K2 - K1) S)`` with ``S = E[x x^T]``.

    Parameters
    ----------
    state_second_moment_ : array_like, shape (n, n), optional
        ``S``; default the normalized discounted second moment of ``(K, log_sigma)``.

    Returns
    -------
    float
        Nats.

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function` (the default ``S`` needs the first policy stabilizing).

    References
    ----------
    Closed-form Gaussian KL (proofs theorem ``gaussian_kl``), averaged over ``x``.
    """
    K1, l1 = _policy(model, K, log_sigma)
    K2, l2 = _policy(model, K_new, log_sigma_new, suffix="_new")
    S = (state_second_moment(model, K1, l1) if state_second_moment_ is None
         else as_float_array(state_second_moment_, "state_second_moment_", ndim=2))
    s1, s2 = np.exp(2.0 * l1), np.exp(2.0 * l2)
    per_dim = np.sum(l2 - l1 + s1 / (2.0 * s2) - 0.5)
    dK = K2 - K1
    return float(per_dim + 0.5 * np.trace(dK.T @ np.diag(1.0 / s2) @ dK @ S))


def surrogate(model: LQRModel, K, log_sigma, K_new, log_sigma_new) -> float:
    """Surrogate ``L(new) = J(old) + (1/(1-gamma)) E_{x ~ d_old, u ~ pi_new}[A_old(x, u)]``.

    In closed form ``L = J - tr((Q + K'^T R K' + gamma A_K'^T P A_K' - P) Sigma_gamma)
    - tr((R + gamma B^T P B)(D' - D)) / (1 - gamma)`` with ``P``, ``Sigma_gamma`` of the old
    policy (no stability requirement on the new one).

    Returns
    -------
    float
        Reward units.

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function` (old policy).

    References
    ----------
    TRPO arXiv:1502.05477v5, Eq. (3), evaluated for linear-Gaussian policies.
    """
    K, _, AK, D, P, WK, c = _pieces(model, K, log_sigma)
    K2, l2 = _policy(model, K_new, log_sigma_new, suffix="_new")
    g = model.gamma
    S = _discounted_second_moment(model, AK, WK)
    A2 = model.A - model.B @ K2
    M = model.Q + K2.T @ model.R @ K2 + g * A2.T @ P @ A2 - P
    D2 = np.diag(np.exp(2.0 * l2))
    J = -(np.trace(P @ model.Sigma0) + c)
    H, _ = _gain_terms(model, K, P)
    return float(J - np.trace(M @ S) - np.trace(H @ (D2 - D)) / (1.0 - g))


@dataclasses.dataclass(frozen=True)
class LQRTRPOStep:
    """Result of :func:`trpo_step` (fields as :class:`pgtheory.TRPOStep`, split into K and
    log_sigma)."""

    K: np.ndarray
    log_sigma: np.ndarray
    accepted: bool
    step_fraction: float
    n_backtracks: int
    mean_kl: float
    quadratic_kl: float
    surrogate_improvement: float
    return_improvement: float
    message: str


def trpo_step(model: LQRModel, K, log_sigma, *, max_kl: float = 0.01,
              backtrack_coef: float = 0.5, max_backtracks: int = 10) -> LQRTRPOStep:
    """Exact TRPO step for a linear-Gaussian policy.

    Natural direction ``x = F^{-1} g``; full step ``sqrt(2 delta / g^T x) x``; backtracking
    accepts the first candidate whose exact mean KL (under the old ``d``) is ``<= delta``, whose
    exact surrogate improves, and whose closed loop stays stabilizing.

    Returns
    -------
    LQRTRPOStep

    Raises
    ------
    InvalidArgumentError, UnstableClosedLoopError
        As :func:`value_function`; hyper-parameters out of range.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Sec. 6 and Appendix C.
    """
    delta = check_positive(max_kl, "max_kl")
    c = check_positive(backtrack_coef, "backtrack_coef")
    if c >= 1.0:
        raise InvalidArgumentError(f"backtrack_coef: expected a value in (0, 1), received {c}")
    n_bt = check_positive_int(max_backtracks, "max_backtracks", minimum=0)
    K, ls = _policy(model, K, log_sigma)
    gK, gl = policy_gradient(model, K, ls)
    nK, nl = natural_gradient(model, K, ls)
    gx = float(np.sum(gK * nK) + gl @ nl)
    j_old = expected_return(model, K, ls)
    if not gx > 0:
        return LQRTRPOStep(K, ls, False, 0.0, 0, 0.0, 0.0, 0.0, 0.0, "zero gradient")
    beta = np.sqrt(2.0 * delta / gx)
    S = state_second_moment(model, K, ls)
    F = fisher_matrix(model, K, ls, state_second_moment_=S)
    for k in range(n_bt + 1):
        frac = c**k
        K2, l2 = K + frac * beta * nK, ls + frac * beta * nl
        kl = kl_divergence(model, K, ls, K2, l2, state_second_moment_=S)
        sur = surrogate(model, K, ls, K2, l2) - j_old
        stable = np.max(np.abs(np.linalg.eigvals(np.sqrt(model.gamma) * (model.A - model.B @ K2))))
        if kl <= delta and sur > 0 and stable < 1:
            step = frac * beta * np.concatenate([nK.ravel(), nl])
            return LQRTRPOStep(K2, l2, True, frac, k, kl, 0.5 * float(step @ F @ step), sur,
                               expected_return(model, K2, l2) - j_old,
                               f"accepted after {k} backtracks")
    return LQRTRPOStep(K, ls, False, 0.0, n_bt, 0.0, 0.0, 0.0, 0.0,
                       f"no step accepted after {n_bt} backtracks")


@dataclasses.dataclass(frozen=True)
class RiccatiSolution:
    """Optimal linear policy ``u = -K x`` and its cost matrix ``P`` (``V*(x) = -(x^T P x + c)``).

    Attributes
    ----------
    K : ndarray, shape (m, n)
    P : ndarray, shape (n, n)
    """

    K: np.ndarray
    P: np.ndarray


def optimal_policy(model: LQRModel) -> RiccatiSolution:
    """Optimal gain by the discounted algebraic Riccati equation.

    ``P = Q + gamma A^T P A - gamma^2 A^T P B (R + gamma B^T P B)^{-1} B^T P A``,
    ``K* = gamma (R + gamma B^T P B)^{-1} B^T P A`` (solved as the undiscounted DARE of
    ``(sqrt(gamma) A, sqrt(gamma) B)``). The optimal noise is ``sigma -> 0``: ``J`` decreases in
    every ``sigma_i`` (see :func:`policy_gradient`).

    Returns
    -------
    RiccatiSolution

    Raises
    ------
    InvalidArgumentError
        No stabilizing solution (e.g. ``(sqrt(gamma) A, B)`` not stabilizable).

    References
    ----------
    Bertsekas (2017), Vol. 1, Sec. 3.2; scipy.linalg.solve_discrete_are.
    """
    g = model.gamma
    try:
        P = sla.solve_discrete_are(np.sqrt(g) * model.A, np.sqrt(g) * model.B, model.Q, model.R)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise InvalidArgumentError(f"model: expected a stabilizable (sqrt(gamma) A, B) with a "
                                   f"Riccati solution, received a failure: {exc}") from None
    P = 0.5 * (P + P.T)
    K = g * np.linalg.solve(model.R + g * model.B.T @ P @ model.B, model.B.T @ P @ model.A)
    return RiccatiSolution(K=K, P=P)


def finite_horizon_riccati(model: LQRModel, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Optimal time-varying gains for episodes of ``horizon`` steps (backward Riccati).

    ``P_T = 0``; for ``t = T-1 .. 0``: ``K_t = gamma (R + gamma B^T P_{t+1} B)^{-1} B^T P_{t+1}
    A``, ``P_t = Q + K_t^T R K_t + gamma (A - B K_t)^T P_{t+1} (A - B K_t)``.

    Returns
    -------
    gains : ndarray, shape (T, m, n)
        ``K_t`` for ``t = 0 .. T-1`` (t counts steps since the episode start).
    P : ndarray, shape (T + 1, n, n)

    Raises
    ------
    InvalidArgumentError
        ``horizon`` not a positive integer.

    References
    ----------
    Bertsekas (2017), Vol. 1, Sec. 3.2 (finite-horizon LQR), with discount.
    """
    T = check_positive_int(horizon, "horizon")
    g, n, m = model.gamma, model.n_state, model.n_action
    P = np.zeros((T + 1, n, n))
    gains = np.zeros((T, m, n))
    for t in range(T - 1, -1, -1):
        Pn = P[t + 1]
        Kt = g * np.linalg.solve(model.R + g * model.B.T @ Pn @ model.B, model.B.T @ Pn @ model.A)
        AK = model.A - model.B @ Kt
        P[t] = model.Q + Kt.T @ model.R @ Kt + g * AK.T @ Pn @ AK
        gains[t] = Kt
    return gains, P


def finite_horizon_return(model: LQRModel, K, log_sigma, horizon: int) -> float:
    """Exact ``E[sum_{t<T} gamma^t r_t]`` for episodes cut after ``T`` steps (any ``K``).

    ``-sum_t gamma^t [tr((Q + K^T R K) S_t) + tr(R D)]`` with ``S_0 = Sigma0``,
    ``S_{t+1} = A_K S_t A_K^T + W_K`` (no stability requirement), propagated as the discounted
    moments ``gamma^t S_t`` so that loops stable only under the discount do not overflow.

    Returns
    -------
    float
        Reward units.

    Raises
    ------
    InvalidArgumentError
        Shapes, non-finite values, ``horizon`` not a positive integer.
    NonFiniteResultError
        The cost overflows float64 (a loop unstable even under the discount, long horizon).

    References
    ----------
    Module docstring (second-moment recursion).
    """
    K, ls = _policy(model, K, log_sigma)
    T = check_positive_int(horizon, "horizon")
    D = np.diag(np.exp(2.0 * ls))
    AK = model.A - model.B @ K
    WK = model.W + model.B @ D @ model.B.T
    M = model.Q + K.T @ model.R @ K
    g = model.gamma
    # discounted moments S~_t = gamma^t E[x_t x_t^T] stay bounded whenever the loop is stable
    # under the discount, even if E[x_t x_t^T] itself grows
    S, coef, total = model.Sigma0.copy(), 1.0, 0.0
    cost_u = float(np.trace(model.R @ D))
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(T):
            total += float(np.trace(M @ S)) + coef * cost_u
            S = g * (AK @ S @ AK.T) + (g * coef) * WK
            coef *= g
    ensure_finite_result(np.array(total), "finite_horizon_return (the closed loop grows faster "
                                          "than the discount shrinks over this horizon)")
    return float(-total)


# ------------------------------------------------------------------- gymnasium env


def double_integrator(*, gamma: float = 0.95, dt: float = 0.1) -> LQRModel:
    """Default model of :class:`pgtheory.oracles.envs.LinearQuadraticEnv`: a 1-D double integrator.

    State (position, velocity), action force; ``Q = I``, ``R = 0.1``, ``W = 1e-4 I``,
    ``Sigma0 = I``.

    Returns
    -------
    LQRModel

    Raises
    ------
    InvalidArgumentError
        ``gamma`` outside [0, 1).

    References
    ----------
    Standard textbook example (e.g. Bertsekas 2017, Vol. 1, Ch. 3 exercises).
    """
    A = np.array([[1.0, dt], [0.0, 1.0]])
    B = np.array([[0.5 * dt * dt], [dt]])
    return LQRModel(A=A, B=B, Q=np.eye(2), R=0.1 * np.eye(1), W=1e-4 * np.eye(2),
                    Sigma0=np.eye(2), gamma=gamma)
