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

Affine policies and time limits
-------------------------------
An affine policy ``u_t ~ N(-K x_t + k, D)`` (bias ``k`` (m,): a linear layer with bias, e.g.
Stable-Baselines3 with ``net_arch=[]``) makes the state mean non-zero and the value quadratic
with a linear term. Every function taking ``bias=`` reduces to the forms above at ``k = 0``.
With ``b = B k``:

* state law from a reset (:func:`state_moments`): ``x_t ~ N(mu_t, C_t)`` exactly (a linear
  Gaussian recursion), ``mu_0 = 0``, ``C_0 = Sigma0``, ``mu_{t+1} = A_K mu_t + b``,
  ``C_{t+1} = A_K C_t A_K^T + W_K``; the second moment is ``S_t = C_t + mu_t mu_t^T``;
* one-step expected cost: ``E[x^T Q x + u^T R u | x] = x^T (Q + K^T R K) x - 2 k^T R K x
  + k^T R k + tr(R D)``;
* value ``V(x) = -(x^T P x + p^T x + c)`` (:func:`value_function`): matching the quadratic,
  linear and constant terms of ``V(x) = E[r + gamma V(x')]`` with ``E[x' | x] = A_K x + b``,
  ``Cov[x' | x] = W_K`` gives ``P`` as above,
  ``p = (I - gamma A_K^T)^{-1} (2 gamma A_K^T P b - 2 K^T R k)`` and
  ``c = (k^T R k + tr(R D) + gamma (b^T P b + p^T b + tr(P W_K))) / (1 - gamma)``;
* episodes truncated after ``T`` steps (:func:`finite_horizon_values`): the same matching,
  backward from ``V_T = 0``: ``P_t = Q + K^T R K + gamma A_K^T P_{t+1} A_K``,
  ``p_t = -2 K^T R k + gamma A_K^T (2 P_{t+1} b + p_{t+1})``,
  ``c_t = k^T R k + tr(R D) + gamma (b^T P_{t+1} b + p_{t+1}^T b + tr(P_{t+1} W_K) + c_{t+1})``,
  ``t`` counting steps since the reset; ``J_T = E[V_0(x_0)] = -(tr(P_0 Sigma0) + c_0)``;
* mean KL under a state law with mean ``mu`` and second moment ``S``: the mean difference
  ``(K2 - K1) x + (k1 - k2)`` enters through ``E[(G x + h)^T D2^{-1} (G x + h)] =
  tr(G^T D2^{-1} G S) + 2 h^T D2^{-1} G mu + h^T D2^{-1} h``.

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
    "StateMoments",
    "UnstableClosedLoopError",
    "action_values",
    "advantages",
    "buffer_state_moments",
    "double_integrator",
    "expected_return",
    "finite_horizon_return",
    "finite_horizon_riccati",
    "finite_horizon_values",
    "fisher_matrix",
    "kl_divergence",
    "natural_gradient",
    "optimal_policy",
    "policy_gradient",
    "state_moments",
    "state_second_moment",
    "surrogate",
    "trpo_step",
    "two_actuator_double_integrator",
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


def _bias(model: LQRModel, bias, *, suffix: str = "") -> np.ndarray:
    """The policy's bias ``k`` (m,), zeros when ``bias`` is None."""
    if bias is None:
        return np.zeros(model.n_action)
    k = as_float_array(bias, "bias" + suffix, ndim=1)
    if k.shape != (model.n_action,):
        raise InvalidArgumentError(f"bias{suffix}: expected shape ({model.n_action},), "
                                   f"received {k.shape}")
    return k


def _affine_terms(model: LQRModel, K: np.ndarray, k: np.ndarray, P: np.ndarray, c: float,
                  AK: np.ndarray, D: np.ndarray, WK: np.ndarray) -> tuple[np.ndarray, float]:
    """Linear term ``p`` and constant ``c`` of the discounted value of ``N(-K x + k, D)``
    (module docstring); ``(zeros, c)`` when ``k = 0``."""
    if not np.any(k):
        return np.zeros(model.n_state), c
    g = model.gamma
    b = model.B @ k
    rhs = 2.0 * g * AK.T @ P @ b - 2.0 * K.T @ model.R @ k
    p = np.linalg.solve(np.eye(model.n_state) - g * AK.T, rhs)
    c_aff = (k @ model.R @ k + np.trace(model.R @ D)
             + g * (b @ P @ b + p @ b + np.trace(P @ WK))) / (1.0 - g)
    return p, float(c_aff)


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
    """``V(x) = -(x^T P x + p^T x + c)``.

    Attributes
    ----------
    P : ndarray, shape (n, n)
    c : float
    p : ndarray, shape (n,), or None
        Linear term (non-zero for policies with a bias); None means zero.
    """

    P: np.ndarray
    c: float
    p: np.ndarray | None = None

    def __call__(self, x) -> np.ndarray:
        """V at states ``x`` of shape (..., n); returns shape (...)."""
        x = np.asarray(x, dtype=float)
        lin = 0.0 if self.p is None else x @ self.p
        return -(np.einsum("...i,ij,...j->...", x, self.P, x) + lin + self.c)


def value_function(model: LQRModel, K, log_sigma, *, bias=None) -> QuadraticValue:
    """Exact value function ``V(x) = -(x^T P x + p^T x + c)`` of ``N(-K x + k, diag(sigma^2))``.

    ``p = 0`` without a bias; with one, ``p`` and ``c`` as derived in the module docstring
    (matching the linear and constant terms of the Bellman equation).

    Parameters
    ----------
    model : LQRModel
    K : array_like, shape (m, n)
    log_sigma : array_like, shape (m,)
    bias : array_like, shape (m,), optional
        The policy mean's bias ``k`` (default zero).

    Returns
    -------
    QuadraticValue
        ``P`` (n, n), ``c`` (reward units) and ``p`` (n,) (None without a bias); callable on
        states.

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
    K, _, AK, D, P, WK, c = _pieces(model, K, log_sigma)
    if bias is None:
        return QuadraticValue(P, c)
    p, c = _affine_terms(model, K, _bias(model, bias), P, c, AK, D, WK)
    return QuadraticValue(P, c, p)


def expected_return(model: LQRModel, K, log_sigma, *, bias=None) -> float:
    """Exact ``J(K, log_sigma) = E_{x0 ~ N(0, Sigma0)}[V(x0)] = -(tr(P Sigma0) + c)``.

    With ``bias`` (m,) the policy is ``N(-K x + k, D)`` and ``c`` is the affine constant
    (module docstring); ``p^T x0`` has mean zero.

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
    V = value_function(model, K, log_sigma, bias=bias)
    return float(-(np.trace(V.P @ model.Sigma0) + V.c))


def action_values(model: LQRModel, K, log_sigma, x, u, *, bias=None) -> np.ndarray:
    """Exact ``Q(x, u) = -(x^T Q x + u^T R u) - gamma [(Ax + Bu)^T P (Ax + Bu) + tr(P W) + c]``.

    With ``bias`` the policy is ``N(-K x + k, D)`` and ``E[V(x')]`` gains the linear term:
    ``future = (Ax + Bu)^T P (Ax + Bu) + p^T (Ax + Bu) + tr(P W) + c`` (:func:`value_function`).

    Parameters
    ----------
    x : array_like, shape (..., n)
    u : array_like, shape (..., m)
    bias : array_like, shape (m,), optional

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
    V = value_function(model, K, log_sigma, bias=bias)
    P, c = V.P, V.c
    x = as_float_array(x, "x")
    u = as_float_array(u, "u")
    if x.shape[-1:] != (model.n_state,) or u.shape[-1:] != (model.n_action,):
        raise InvalidArgumentError(f"x, u: expected trailing dimensions ({model.n_state},) and "
                                   f"({model.n_action},), received {x.shape} and {u.shape}")
    nxt = x @ model.A.T + u @ model.B.T
    cost = np.einsum("...i,ij,...j->...", x, model.Q, x) + np.einsum("...i,ij,...j->...", u,
                                                                     model.R, u)
    future = np.einsum("...i,ij,...j->...", nxt, P, nxt) + np.trace(P @ model.W) + c
    if V.p is not None:
        future = future + nxt @ V.p
    return -(cost + model.gamma * future)


def advantages(model: LQRModel, K, log_sigma, x, u, *, bias=None) -> np.ndarray:
    """Exact ``A(x, u) = Q(x, u) - V(x)`` (of ``N(-K x + k, D)`` with ``bias=k``).

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
    return (action_values(model, K, log_sigma, x, u, bias=bias)
            - value_function(model, K, log_sigma, bias=bias)(x))


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
                  state_second_moment_=None, bias=None, bias_new=None,
                  state_mean=None) -> float:
    """Exact mean ``E_x[KL(pi(.|x) || pi_new(.|x))]`` between (affine) Gaussian policies.

    ``sum_i [log(s2_i / s1_i) + s1_i^2 / (2 s2_i^2) - 1/2]
    + (1/2) [tr(G^T D2^{-1} G S) + 2 h^T D2^{-1} G mu + h^T D2^{-1} h]`` with
    ``G = K2 - K1``, ``h = k1 - k2`` (the biases), ``S = E[x x^T]`` and ``mu = E[x]``: the
    per-state Gaussian KL (mean difference ``G x + h``) averaged over ``x``, which needs only
    the first two moments of the state law.

    Parameters
    ----------
    state_second_moment_ : array_like, shape (n, n), optional
        ``S``; default the normalized discounted second moment of ``(K, log_sigma)`` (zero
        bias).
    bias, bias_new : array_like, shape (m,), optional
        The two policies' biases ``k1``, ``k2`` (default zero).
    state_mean : array_like, shape (n,), optional
        ``mu``; default zero (needed only when the biases differ).

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
    k1, k2 = _bias(model, bias), _bias(model, bias_new, suffix="_new")
    S = (state_second_moment(model, K1, l1) if state_second_moment_ is None
         else as_float_array(state_second_moment_, "state_second_moment_", ndim=2))
    if S.shape != (model.n_state, model.n_state):
        raise InvalidArgumentError(f"state_second_moment_: expected shape "
                                   f"{(model.n_state, model.n_state)}, received {S.shape}")
    mu = np.zeros(model.n_state) if state_mean is None else as_float_array(
        state_mean, "state_mean", ndim=1)
    if mu.shape != (model.n_state,):
        raise InvalidArgumentError(f"state_mean: expected shape ({model.n_state},), received "
                                   f"{mu.shape}")
    s1, s2 = np.exp(2.0 * l1), np.exp(2.0 * l2)
    per_dim = np.sum(l2 - l1 + s1 / (2.0 * s2) - 0.5)
    G, h = K2 - K1, k1 - k2
    Dinv = np.diag(1.0 / s2)
    mean_term = np.trace(G.T @ Dinv @ G @ S) + 2.0 * h @ Dinv @ G @ mu + h @ Dinv @ h
    return float(per_dim + 0.5 * mean_term)


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


@dataclasses.dataclass(frozen=True)
class StateMoments:
    """Exact Gaussian law of the states ``x_0 .. x_L`` after a reset.

    Attributes
    ----------
    mean : ndarray, shape (L + 1, n)
        ``mu_t = E[x_t]``.
    covariance : ndarray, shape (L + 1, n, n)
        ``C_t = Cov[x_t]``.
    """

    mean: np.ndarray
    covariance: np.ndarray

    @property
    def second_moment(self) -> np.ndarray:
        """``S_t = E[x_t x_t^T] = C_t + mu_t mu_t^T``, shape (L + 1, n, n)."""
        return self.covariance + np.einsum("ti,tj->tij", self.mean, self.mean)


def _per_step(model: LQRModel, K, log_sigma, bias, steps: int):
    """Per-step policy arrays ``(K_t, log_sigma_t, k_t)`` of shapes (L, m, n), (L, m), (L, m)
    from stationary or per-step inputs."""
    m, n = model.n_action, model.n_state
    out = []
    for name, x, shape in (("K", K, (m, n)), ("log_sigma", log_sigma, (m,)),
                           ("bias", np.zeros(m) if bias is None else bias, (m,))):
        a = as_float_array(x, name)
        if a.shape == shape:
            a = np.broadcast_to(a, (steps, *shape))
        elif a.shape != (steps, *shape):
            raise InvalidArgumentError(f"{name}: expected shape {shape} (stationary) or "
                                       f"{(steps, *shape)} (one per step), received {a.shape}")
        out.append(a)
    return out


def state_moments(model: LQRModel, K, log_sigma, steps: int, *, bias=None) -> StateMoments:
    """Exact law ``x_t ~ N(mu_t, C_t)``, ``t = 0 .. steps``, of the states after a reset.

    ``mu_0 = 0``, ``C_0 = Sigma0``; ``mu_{t+1} = A_{K_t} mu_t + B k_t`` and
    ``C_{t+1} = A_{K_t} C_t A_{K_t}^T + W + B D_t B^T`` (``x_{t+1} = A_{K_t} x_t + B k_t +
    B D_t^{1/2} z_t + w_t`` with independent Gaussian ``z_t``, ``w_t``: a linear Gaussian
    recursion, so the law stays Gaussian). The policy may change with ``t`` (the first steps of
    an episode collected before an update). No stability requirement.

    Parameters
    ----------
    model : LQRModel
    K : array_like, shape (m, n) or (steps, m, n)
    log_sigma : array_like, shape (m,) or (steps, m)
    steps : int
        ``L >= 0``.
    bias : array_like, shape (m,) or (steps, m), optional
        ``k_t`` (default zero).

    Returns
    -------
    StateMoments
        ``mean`` (L + 1, n), ``covariance`` (L + 1, n, n), state units.

    Raises
    ------
    InvalidArgumentError
        Shapes, non-finite values, ``steps`` negative.
    NonFiniteResultError
        The moments overflow float64.

    References
    ----------
    Module docstring (affine policies); Anderson & Moore (1979), *Optimal Filtering*, Ch. 4
    (moments of linear Gaussian systems).
    """
    L = check_positive_int(steps, "steps", minimum=0)
    Ks, ls, ks = _per_step(model, K, log_sigma, bias, L)
    n = model.n_state
    mean = np.zeros((L + 1, n))
    cov = np.zeros((L + 1, n, n))
    cov[0] = model.Sigma0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(L):
            AK = model.A - model.B @ Ks[t]
            D = np.diag(np.exp(2.0 * ls[t]))
            mean[t + 1] = AK @ mean[t] + model.B @ ks[t]
            C = AK @ cov[t] @ AK.T + model.W + model.B @ D @ model.B.T
            cov[t + 1] = 0.5 * (C + C.T)
    ensure_finite_result(cov, "state_moments (the closed loop grows too fast)")
    return StateMoments(mean, cov)


def buffer_state_moments(model: LQRModel, K, log_sigma, *, time_limit: int, num_steps: int,
                         phases, bias=None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of the state at a uniformly drawn position of a rollout buffer.

    The buffer holds ``num_steps`` consecutive steps of each of ``N`` envs that never
    terminate and are truncated every ``time_limit`` steps, collected continuously across
    episodes (a buffer end cuts an episode, the next buffer continues it). Env ``j`` has made
    ``phases[j]`` steps of its current episode when the buffer starts, so buffer row ``t``
    holds a state ``(phases[j] + t) mod time_limit`` steps after a reset; with one stationary
    policy the state there has the law of :func:`state_moments` at that count. The buffer's
    law is the equal-weight mixture over its ``num_steps * N`` positions:
    ``mu = mean_pos mu_e``, ``S = mean_pos (C_e + mu_e mu_e^T)``.

    Parameters
    ----------
    model : LQRModel
    K : array_like, shape (m, n)
    log_sigma : array_like, shape (m,)
    time_limit, num_steps : int
    phases : array_like of int, shape (N,)
        Each in ``[0, time_limit)``.
    bias : array_like, shape (m,), optional

    Returns
    -------
    mean : ndarray, shape (n,)
    second_moment : ndarray, shape (n, n)

    Raises
    ------
    InvalidArgumentError
        Shapes, non-positive sizes, a phase outside ``[0, time_limit)``.

    References
    ----------
    Module docstring; :func:`state_moments`.
    """
    T = check_positive_int(time_limit, "time_limit")
    L = check_positive_int(num_steps, "num_steps")
    ph = np.asarray(phases)
    if ph.ndim != 1 or ph.size == 0 or not np.issubdtype(ph.dtype, np.integer) or \
            ph.min() < 0 or ph.max() >= T:
        raise InvalidArgumentError(f"phases: expected a non-empty 1-D array of integers in "
                                   f"[0, {T}), received {np.asarray(phases)!r}")
    law = state_moments(model, K, log_sigma, T - 1, bias=bias)
    elapsed = (ph[None, :] + np.arange(L)[:, None]) % T
    counts = np.bincount(elapsed.ravel(), minlength=T) / elapsed.size
    return (np.einsum("e,ei->i", counts, law.mean),
            np.einsum("e,eij->ij", counts, law.second_moment))


def finite_horizon_return(model: LQRModel, K, log_sigma, horizon: int, *, bias=None) -> float:
    """Exact ``E[sum_{t<T} gamma^t r_t]`` for episodes cut after ``T`` steps (any ``K``).

    ``-sum_t gamma^t [tr((Q + K^T R K) S_t) - 2 k^T R K mu_t + k^T R k + tr(R D)]`` with the
    state moments of :func:`state_moments` (``mu_t = 0``, ``S_t`` the second moment, without
    a bias). No stability requirement: the moments are propagated discounted,
    ``m_t = gamma^{t/2} mu_t`` and ``S~_t = gamma^t S_t``
    (``m_{t+1} = sqrt(gamma) (A_K m_t + gamma^{t/2} b)``,
    ``S~_{t+1} = gamma (A_K S~_t A_K^T + gamma^{t/2} (A_K m_t b^T + b m_t^T A_K^T)
    + gamma^t (b b^T + W_K))``, ``b = B k``), so that loops stable only under the discount do
    not overflow.

    Parameters
    ----------
    bias : array_like, shape (m,), optional
        The policy ``N(-K x + k, D)``'s bias (default zero).

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
    Module docstring (second-moment recursion, affine policies).
    """
    K, ls = _policy(model, K, log_sigma)
    k = _bias(model, bias)
    T = check_positive_int(horizon, "horizon")
    D = np.diag(np.exp(2.0 * ls))
    AK = model.A - model.B @ K
    WK = model.W + model.B @ D @ model.B.T
    M = model.Q + K.T @ model.R @ K
    g = model.gamma
    b = model.B @ k
    bb = np.outer(b, b)
    RKk = K.T @ model.R @ k  # the cross term -2 k^T R K mu = -2 (K^T R k)^T mu
    # discounted moments stay bounded whenever the loop is stable under the discount, even if
    # E[x_t x_t^T] itself grows
    S, mt, coef, total = model.Sigma0.copy(), np.zeros(model.n_state), 1.0, 0.0
    cost_u = float(np.trace(model.R @ D) + k @ model.R @ k)
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(T):
            s = np.sqrt(coef)
            total += float(np.trace(M @ S)) - 2.0 * s * float(RKk @ mt) + coef * cost_u
            cross = np.outer(AK @ mt, b)
            S = g * (AK @ S @ AK.T + s * (cross + cross.T)) + (g * coef) * (WK + bb)
            mt = np.sqrt(g) * (AK @ mt + s * b)
            coef *= g
    ensure_finite_result(np.array(total), "finite_horizon_return (the closed loop grows faster "
                                          "than the discount shrinks over this horizon)")
    return float(-total)


def finite_horizon_values(model: LQRModel, K, log_sigma, horizon: int, *,
                          bias=None) -> list[QuadraticValue]:
    """Exact values ``V_t(x) = -(x^T P_t x + p_t^T x + c_t)`` of episodes cut after ``T`` steps.

    ``V_t`` is the expected discounted return of the remaining ``T - t`` steps from state ``x``
    reached ``t`` steps after the reset (``t = 0 .. T``, ``V_T = 0``): backward from
    ``P_T = 0``, ``p_T = 0``, ``c_T = 0`` with the recursions of the module docstring
    (``P_t = Q + K^T R K + gamma A_K^T P_{t+1} A_K``, ``p_t = -2 K^T R k + gamma A_K^T
    (2 P_{t+1} b + p_{t+1})``, ``c_t = k^T R k + tr(R D) + gamma (b^T P_{t+1} b + p_{t+1}^T b +
    tr(P_{t+1} W_K) + c_{t+1})``, ``b = B k``). ``E[V_0(x_0)] = -(tr(P_0 Sigma0) + c_0)`` is
    :func:`finite_horizon_return`. No stability requirement.

    Parameters
    ----------
    model : LQRModel
    K : array_like, shape (m, n)
    log_sigma : array_like, shape (m,)
    horizon : int
        ``T >= 1``.
    bias : array_like, shape (m,), optional

    Returns
    -------
    list of QuadraticValue
        ``T + 1`` values, indexed by steps since the reset (``p`` always set).

    Raises
    ------
    InvalidArgumentError
        Shapes, non-finite values, ``horizon`` not a positive integer.

    References
    ----------
    Module docstring; Bertsekas (2017), Vol. 1, Sec. 3.2 (finite-horizon recursion for a fixed
    policy).
    """
    K, ls = _policy(model, K, log_sigma)
    k = _bias(model, bias)
    T = check_positive_int(horizon, "horizon")
    g, n = model.gamma, model.n_state
    D = np.diag(np.exp(2.0 * ls))
    AK = model.A - model.B @ K
    WK = model.W + model.B @ D @ model.B.T
    M = model.Q + K.T @ model.R @ K
    b = model.B @ k
    P, p, c = np.zeros((n, n)), np.zeros(n), 0.0
    out = [QuadraticValue(P, c, p)]
    const_u = float(k @ model.R @ k + np.trace(model.R @ D))
    for _ in range(T):
        c = const_u + g * (float(b @ P @ b + p @ b + np.trace(P @ WK)) + c)
        p = -2.0 * K.T @ model.R @ k + g * AK.T @ (2.0 * P @ b + p)
        P = M + g * AK.T @ P @ AK
        P = 0.5 * (P + P.T)
        out.append(QuadraticValue(P, c, p))
    return out[::-1]


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


def two_actuator_double_integrator(*, gamma: float = 0.95, dt: float = 0.1) -> LQRModel:
    """The double integrator of :func:`double_integrator` with a second action: a velocity
    impulse next to the force (``B = [[dt^2/2, 0], [dt, dt]]``, ``R = 0.1 I_2``).

    Two action dimensions are what separate a joint Gaussian log-density or entropy (a sum over
    dimensions) from a per-dimension mean of it; with one dimension the two coincide. Used by
    the ``given_the_batch.gaussian_density@lqr`` check; controllable (``B`` has full rank).

    Returns
    -------
    LQRModel
        ``n_state = 2``, ``n_action = 2``.

    Raises
    ------
    InvalidArgumentError
        ``gamma`` outside [0, 1).
    """
    base = double_integrator(gamma=gamma, dt=dt)
    B = np.array([[0.5 * dt * dt, 0.0], [dt, dt]])
    return LQRModel(A=base.A, B=B, Q=base.Q, R=0.1 * np.eye(2), W=base.W, Sigma0=base.Sigma0,
                    gamma=gamma)
