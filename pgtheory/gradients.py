"""Exact policy gradients, Fisher information, natural gradients, NPG/TRPO steps, PPO objective.

State weighting
---------------
Expectations "over states" here use ``w(s) = d_pi(s)`` restricted to non-terminal states
(where actions are taken), ``d_pi`` being the normalized discounted visitation
(:func:`pgtheory.discounted_visitation`). Without terminal states, ``w = d_pi`` exactly. For
terminal states the advantage is 0, so gradients do not depend on this choice; the Fisher
matrix and KL means do for parameterizations that share parameters across states.

Scale conventions
-----------------
* ``policy_gradient`` is ``grad_theta J(theta)`` with ``J = mu . V_pi`` (Sutton et al. 2000,
  Theorem 1): ``(1 / (1 - gamma)) E_{s ~ d_pi, a ~ pi}[Q_pi(s, a) grad log pi(a|s)]``.
* ``fisher_matrix`` is ``E_{s ~ w, a ~ pi}[score score^T]`` (Kakade 2001, Sec. 3; Agarwal et
  al. 2021, Sec. 5). With this normalization the NPG update for tabular softmax is
  ``theta += eta A_pi / (1 - gamma)`` (Agarwal et al. 2021, Lemma 5.1).
* ``ppo_objective`` is an expectation under ``w x pi_old`` with no ``1 / (1 - gamma)``, so its
  gradient at ``theta_old`` is ``(1 - gamma) * policy_gradient`` (without terminal states).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from scipy.special import rel_entr

from pgtheory._validation import check_positive, check_positive_int
from pgtheory.divergences import weighted_mean
from pgtheory.errors import InvalidArgumentError
from pgtheory.evaluation import (
    PolicyEvaluation,
    action_state_weights,
    check_state_distribution,
    expected_return,
)
from pgtheory.mdp import TabularMDP
from pgtheory.parameterizations import TabularSoftmax

__all__ = [
    "PPOObjective",
    "ParameterizedEvaluation",
    "TRPOStep",
    "action_state_weights",
    "evaluate",
    "fisher_matrix",
    "kl_hessian",
    "natural_gradient",
    "npg_step",
    "policy_gradient",
    "ppo_objective",
    "trpo_step",
]


# --------------------------------------------------------------------------- helpers
def _check_param(mdp: TabularMDP, param) -> None:
    if not isinstance(mdp, TabularMDP):
        raise TypeError(f"mdp: expected a TabularMDP (e.g. pgtheory.random_mdp(...)), "
                        f"received {type(mdp).__name__}")
    for attr in ("n_states", "n_actions", "n_params", "probs", "score"):
        if not hasattr(param, attr):
            raise TypeError(f"param: expected a parameterization with attribute {attr!r} "
                            f"(e.g. TabularSoftmax), received {type(param).__name__}")
    if (param.n_states, param.n_actions) != (mdp.n_states, mdp.n_actions):
        raise InvalidArgumentError(
            f"param: expected (n_states, n_actions) = {(mdp.n_states, mdp.n_actions)} to match "
            f"the MDP, received {(param.n_states, param.n_actions)}")


def _evaluate(mdp: TabularMDP, pi: np.ndarray, solver: str = "auto"):
    """V, Q and normalized d for a validated policy (one factorization when dense)."""
    ev = PolicyEvaluation.__new__(PolicyEvaluation)
    ev._setup(mdp, pi, solver)
    return ev.state_values(), ev.action_values(), ev.discounted_visitation()


def _contract_score(param, theta, coeff: np.ndarray) -> np.ndarray:
    """``sum_{s,a} coeff[s, a] score(theta)[s, a, :]`` without forming dense tabular scores."""
    if isinstance(param, TabularSoftmax):
        pi = param.probs(theta)
        return (coeff - pi * coeff.sum(axis=1, keepdims=True)).ravel()
    return np.einsum("sa,san->n", coeff, param.score(theta))


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """Dense (S*A, S*A) matrix with the (S, A, A) blocks on its diagonal (flat scatter)."""
    S, A, _ = blocks.shape
    n = S * A
    out = np.zeros((n, n))
    base = np.arange(S)[:, None, None] * A
    rows = base + np.arange(A)[None, :, None]
    cols = base + np.arange(A)[None, None, :]
    out.ravel()[(rows * n + cols).ravel()] = blocks.ravel()
    return out


def _block_diagonal_csr(blocks: np.ndarray) -> sp.csr_array:
    """CSR (S*A, S*A) matrix with the (S, A, A) blocks on its diagonal, exact zeros dropped.

    Built from index arithmetic (row ``s*A + a`` holds columns ``s*A .. s*A + A - 1``), the same
    matrix as ``scipy.sparse.block_diag`` without its per-block Python loop.
    """
    S, A, _ = blocks.shape
    n = S * A
    cols = (np.arange(S)[:, None, None] * A + np.arange(A)[None, None, :])
    indices = np.broadcast_to(cols, (S, A, A)).reshape(-1).astype(np.int32 if n < 2**31
                                                                   else np.int64)
    indptr = np.arange(0, n * A + 1, A, dtype=indices.dtype)
    F = sp.csr_array((blocks.reshape(-1).copy(), indices, indptr), shape=(n, n))
    F.eliminate_zeros()
    return F


#: smallest ``rtol`` for which the closed form below reproduces the eigenvalue cutoff: the
#: computed null eigenvalue of ``diag(p) - p p^T`` is O(A * eps) relative to the largest
_CLOSED_FORM_MIN_RTOL = 1e-13


def _tabular_natural_gradient(pi: np.ndarray, w: np.ndarray, g: np.ndarray, blocks,
                              rtol: float) -> np.ndarray:
    """``F^+ g`` for tabular softmax, block by block, shape (S*A,).

    ``F_s = w(s) (diag p - p p^T)`` with ``p = pi[s]``. By eigenvalue interlacing for a rank-one
    downdate (Golub & Van Loan 2013, Theorem 8.1.8), its eigenvalues satisfy
    ``0 = l_1 <= p_min <= l_2 <= ... <= l_A <= p_max`` (times ``w(s)``). When
    ``p_min > 10 rtol p_max`` the pseudo-inverse with relative cutoff ``rtol`` therefore keeps
    every non-zero eigenvalue and drops only the null direction ``1``, and ``F_s^+ g_s`` is the
    minimum-norm solution ``y - mean(y)``, ``y = g_s / (w(s) p)`` (``g_s`` sums to 0, so it
    lies in the range of ``F_s``). Blocks that fail the test, or have ``w(s) = 0``, and every
    block when ``rtol`` is below ``_CLOSED_FORM_MIN_RTOL``, go through an eigendecomposition
    (``numpy.linalg.pinv(..., hermitian=True)``), as :func:`natural_gradient` documents.
    """
    S, A = pi.shape
    x = np.zeros((S, A))
    pmin, pmax = pi.min(axis=1), pi.max(axis=1)
    easy = (w > 0) & (pmin > 10.0 * rtol * pmax) if rtol >= _CLOSED_FORM_MIN_RTOL else \
        np.zeros(S, dtype=bool)
    y = np.divide(g[easy], w[easy, None] * pi[easy])
    x[easy] = y - y.mean(axis=1, keepdims=True)
    hard = np.flatnonzero(~easy & (w > 0))
    if hard.size:
        b = blocks()[hard]
        x[hard] = (np.linalg.pinv(b, rtol=rtol, hermitian=True) @ g[hard, :, None])[:, :, 0]
    return x.ravel()


class ParameterizedEvaluation(PolicyEvaluation):
    """Exact evaluation of ``pi_theta``: the :class:`pgtheory.PolicyEvaluation` quantities plus
    the policy gradient, Fisher matrix and natural gradient, all from one factorization.

    Build it with :func:`evaluate`. ``V``, ``Q``, ``A``, ``J`` and ``d`` come from one
    factorization of ``I - gamma P_pi`` (see :class:`pgtheory.PolicyEvaluation`); the
    gradient, the Fisher blocks and the natural gradient are computed from them on first
    request and cached. Arrays returned are the cached ones, read-only; :meth:`fisher_matrix`
    and :meth:`kl_hessian` return a fresh matrix on each call (the dense tabular Fisher is
    ``8 (S A)^2`` bytes and is not kept).

    Attributes
    ----------
    param : parameterization
    theta : ndarray, shape (n_params,)
        Validated copy, read-only.
    policy : ndarray, shape (S, A)
        ``pi_theta``, read-only.

    References
    ----------
    As :func:`policy_gradient`, :func:`fisher_matrix` and :func:`natural_gradient`.
    """

    def __init__(self, mdp: TabularMDP, param, theta, *, solver: str = "auto") -> None:
        _check_param(mdp, param)
        t = param.check_theta(theta)
        self._setup(mdp, param.probs(t), solver)
        self.param = param
        self.theta = t.copy()
        self.theta.flags.writeable = False

    def policy_gradient(self) -> np.ndarray:
        """``grad_theta J``, shape (n_params,) (read-only; see :func:`policy_gradient`)."""
        def compute():
            pi, gamma = self.policy, self.mdp.gamma
            values = (self.advantages() if getattr(self.param, "baseline_invariant", False)
                      else self.action_values())
            coeff = self.discounted_visitation()[:, None] * pi * values / (1.0 - gamma)
            return _contract_score(self.param, self.theta, coeff)

        return self._cached("policy_gradient", compute)

    def fisher_blocks(self) -> np.ndarray:
        """Tabular softmax only: the diagonal blocks ``w(s) (diag pi_s - pi_s pi_s^T)`` of the
        Fisher matrix, shape (S, A, A) (read-only).

        Raises
        ------
        TypeError
            ``param`` is not :class:`pgtheory.TabularSoftmax`.
        """
        if not isinstance(self.param, TabularSoftmax):
            raise TypeError(f"fisher_blocks: expected a TabularSoftmax parameterization, "
                            f"received {type(self.param).__name__}")
        return self._cached("fisher_blocks", lambda: self.param.fisher_blocks(
            self.theta, self.action_state_weights()))

    def _dense_fisher(self) -> np.ndarray:
        """Non-tabular Fisher ``Psi^T diag(w pi) Psi``, shape (n_params, n_params), cached."""
        def compute():
            mdp, pi = self.mdp, self.policy
            psi = self.param.score(self.theta).reshape(mdp.n_states * mdp.n_actions, -1)
            x = psi * np.sqrt((self.action_state_weights()[:, None] * pi).ravel())[:, None]
            return x.T @ x

        return self._cached("fisher", compute)

    def fisher_matrix(self, sparse: bool = False):
        """``F = E_{s ~ w, a ~ pi}[score score^T]``, shape (n_params, n_params), a new array on
        each call (ndarray, or ``scipy.sparse.csr_array`` with ``sparse=True``; see
        :func:`fisher_matrix`)."""
        if isinstance(self.param, TabularSoftmax):
            blocks = self.fisher_blocks()
            return _block_diagonal_csr(blocks) if sparse else _block_diagonal(blocks)
        F = self._dense_fisher()
        return sp.csr_array(F) if sparse else F.copy()

    def kl_hessian(self) -> np.ndarray:
        """Hessian of the mean KL from second derivatives of ``log pi``, shape
        (n_params, n_params), a new array on each call (see :func:`kl_hessian`)."""
        return self.param.expected_neg_log_prob_hessian(self.theta, self.action_state_weights())

    def natural_gradient(self, rtol: float = 1e-12) -> np.ndarray:
        """``F^+ grad J``, shape (n_params,) (read-only; see :func:`natural_gradient`).

        Raises
        ------
        InvalidArgumentError
            ``rtol`` not positive.
        """
        rtol = check_positive(rtol, "rtol")

        def compute():
            g = self.policy_gradient()
            if isinstance(self.param, TabularSoftmax):
                return _tabular_natural_gradient(self.policy, self.action_state_weights(),
                                                 g.reshape(self.policy.shape),
                                                 self.fisher_blocks, rtol)
            return sla.pinvh(self._dense_fisher(), rtol=rtol) @ g

        return self._cached(("natural_gradient", rtol), compute)


def evaluate(mdp: TabularMDP, param, theta, *, solver: str = "auto") -> ParameterizedEvaluation:
    """One exact evaluation of ``pi_theta`` serving ``J``, ``V``, ``Q``, ``A``, ``d``, the
    policy gradient, the Fisher matrix and the natural gradient from one factorization of
    ``I - gamma P_pi``.

    Parameters
    ----------
    mdp : TabularMDP
    param : TabularSoftmax, LinearSoftmax or DirectParameterization
    theta : array_like, shape (n_params,)
    solver : {"auto", "direct", "iterative"}
        As :func:`pgtheory.state_values` (sparse models only).

    Returns
    -------
    ParameterizedEvaluation
        Lazy and cached: nothing is solved until a quantity is requested.

    Raises
    ------
    InvalidArgumentError
        ``theta`` of the wrong shape or non-finite; parameterization sized for another MDP;
        unknown ``solver``.
    TypeError
        ``mdp`` is not a TabularMDP, or ``param`` is not a parameterization.
    SolverError
        (on first request) As :func:`pgtheory.state_values`.

    References
    ----------
    Sutton et al. (2000), Theorem 1; Kakade (2001), Sec. 3; Agarwal et al. (2021),
    arXiv:1908.00261, Sec. 2 and 5.

    Examples
    --------
    >>> import numpy as np, pgtheory as pg
    >>> mdp = pg.random_mdp(0, 4, 3, gamma=0.9)
    >>> param = pg.TabularSoftmax(4, 3)
    >>> ev = pg.evaluate(mdp, param, np.zeros(12))
    >>> ev.policy_gradient().shape, ev.system.n_factorizations
    ((12,), 1)
    """
    return ParameterizedEvaluation(mdp, param, theta, solver=solver)


# ------------------------------------------------------------------------- gradients
def policy_gradient(mdp: TabularMDP, param, theta, *, solver: str = "auto") -> np.ndarray:
    """Exact policy gradient ``grad_theta J(pi_theta)`` (policy gradient theorem).

    ``grad J = (1 / (1 - gamma)) sum_s d_pi(s) sum_a pi(a|s) Q_pi(s, a) grad log pi(a|s)``;
    for baseline-invariant (softmax) parameterizations ``Q`` is replaced by ``A_pi`` (same
    value, better conditioned). For tabular softmax this is
    ``dJ / dtheta[s, a] = d_pi(s) pi(a|s) A_pi(s, a) / (1 - gamma)``.

    Parameters
    ----------
    mdp : TabularMDP
    param : TabularSoftmax, LinearSoftmax or DirectParameterization
    theta : array_like, shape (n_params,)

    Returns
    -------
    ndarray, shape (n_params,)
        Reward units per unit of theta.

    Raises
    ------
    InvalidArgumentError
        ``theta`` of the wrong shape or non-finite; parameterization sized for another MDP.
    TypeError
        ``mdp`` is not a TabularMDP, or ``param`` is not a parameterization.
    SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Sutton, McAllester, Singh & Mansour (2000), NeurIPS, Theorem 1; Agarwal et al. (2021),
    JMLR 22(98), arXiv:1908.00261, Sec. 2 (policy gradient with the 1/(1-gamma) factor and
    normalized d) and Sec. 4 (tabular softmax expression).
    """
    return ParameterizedEvaluation(mdp, param, theta, solver=solver).policy_gradient().copy()


def fisher_matrix(mdp: TabularMDP, param, theta, *, sparse: bool = False):
    """Exact Fisher information ``F = E_{s ~ w, a ~ pi}[score score^T]``.

    ``w = d_pi`` on non-terminal states (module docstring). For tabular softmax ``F`` is
    block-diagonal with blocks ``d(s) (diag pi_s - pi_s pi_s^T)``, each singular (constant
    logit shifts do not change the policy).

    Parameters
    ----------
    sparse : bool
        Return a ``scipy.sparse.csr_array`` (block-diagonal storage for tabular softmax:
        ``8 S A^2`` bytes instead of ``8 S^2 A^2``). Default: dense ndarray.

    Returns
    -------
    ndarray or scipy.sparse.csr_array, shape (n_params, n_params)
        Symmetric positive semi-definite. Dense memory ``8 n_params^2`` bytes.

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`.

    References
    ----------
    Kakade (2001), "A natural policy gradient", NeurIPS, Sec. 3; Agarwal et al. (2021),
    arXiv:1908.00261, Sec. 5 (Fisher under d_pi).
    """
    return ParameterizedEvaluation(mdp, param, theta).fisher_matrix(sparse=sparse)


def kl_hessian(mdp: TabularMDP, param, theta) -> np.ndarray:
    """Hessian of the mean KL ``theta' -> E_{s ~ w}[KL(pi_theta(.|s) || pi_theta'(.|s))]`` at
    ``theta' = theta``, with ``w`` held at ``theta``.

    Computed from second derivatives of ``log pi`` (``E[-grad^2 log pi]``), not from scores,
    so it is an independent route to :func:`fisher_matrix`, which it must equal.

    Returns
    -------
    ndarray, shape (n_params, n_params)

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Appendix C (the Fisher as the KL Hessian);
    Amari (1998), "Natural gradient works efficiently in learning", Sec. 3.
    """
    return ParameterizedEvaluation(mdp, param, theta).kl_hessian()


def natural_gradient(mdp: TabularMDP, param, theta, *, rtol: float = 1e-12) -> np.ndarray:
    """Exact natural gradient ``F^+ grad J`` (Moore-Penrose pseudo-inverse of the Fisher).

    The pseudo-inverse gives the minimum-norm solution of ``F x = grad J``; for tabular softmax
    it is ``(A_pi(s, .) - mean_a A_pi(s, a)) / (1 - gamma)`` on states with ``d_pi(s) > 0``
    and 0 on the others, computed block by block without forming ``F``: in closed form where
    every non-zero eigenvalue of the block clears the cutoff (``min_a pi(a|s) > 10 rtol
    max_a pi(a|s)``, by eigenvalue interlacing), by an eigendecomposition of the block
    elsewhere. The closed form is also the accurate one when a block is ill-conditioned (an
    eigendecomposition loses about ``log10(max pi / min pi)`` digits there).

    Parameters
    ----------
    rtol : float
        Eigenvalues below ``rtol * max eigenvalue`` (per block for tabular softmax) are
        treated as zero.

    Notes
    -----
    A wrapper around :func:`evaluate`; use that object to get ``J``, the gradient, the Fisher
    matrix and the natural gradient from one factorization.

    Returns
    -------
    ndarray, shape (n_params,)

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`.

    References
    ----------
    Kakade (2001), NeurIPS, Theorem 1; Agarwal et al. (2021), arXiv:1908.00261, Lemma 5.1.
    """
    _check_param(mdp, param)
    rtol = check_positive(rtol, "rtol")
    return ParameterizedEvaluation(mdp, param, theta).natural_gradient(rtol).copy()


def npg_step(mdp: TabularMDP, param, theta, step_size: float, *,
             rtol: float = 1e-12) -> np.ndarray:
    """One exact natural policy gradient step ``theta + eta F^+ grad J``.

    For tabular softmax the new policy is ``pi_new(a|s) ∝ pi(a|s) exp(eta A_pi(s, a) / (1 -
    gamma))`` on states with ``d_pi(s) > 0``.

    Parameters
    ----------
    step_size : float
        ``eta > 0``.

    Returns
    -------
    ndarray, shape (n_params,)
        The new parameters.

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`; ``step_size`` not positive.

    References
    ----------
    Kakade (2001); Agarwal et al. (2021), arXiv:1908.00261, Lemma 5.1 (softmax NPG update).
    """
    eta = check_positive(step_size, "step_size")
    t = param.check_theta(theta)
    return t + eta * natural_gradient(mdp, param, t, rtol=rtol)


# ------------------------------------------------------------------------------ TRPO
@dataclasses.dataclass(frozen=True)
class TRPOStep:
    """Result of :func:`trpo_step`.

    Attributes
    ----------
    theta : ndarray, shape (n_params,)
        Accepted parameters (the input ``theta`` when no step was accepted).
    accepted : bool
    step_fraction : float
        Fraction of the full step taken (``backtrack_coef ** n_backtracks``; 0 if rejected).
    n_backtracks : int
        Number of shrinkages before acceptance (all tried if rejected).
    full_step : ndarray, shape (n_params,)
        ``sqrt(2 delta / g^T F^+ g) F^+ g``.
    natural_gradient : ndarray, shape (n_params,)
    mean_kl : float
        Exact ``E_{s ~ w}[KL(pi_old || pi_new)]`` of the accepted step (nats; 0 if rejected).
    quadratic_kl : float
        ``(1/2) s^T F s`` of the accepted step ``s`` (the quadratic model of ``mean_kl``).
    surrogate_improvement : float
        Exact ``L_pi_old(pi_new) - J(pi_old)`` of the accepted step (reward units).
    expected_improvement : float
        First-order prediction ``g . s`` of the accepted step.
    return_improvement : float
        Exact ``J(pi_new) - J(pi_old)``.
    message : str
    """

    theta: np.ndarray
    accepted: bool
    step_fraction: float
    n_backtracks: int
    full_step: np.ndarray
    natural_gradient: np.ndarray
    mean_kl: float
    quadratic_kl: float
    surrogate_improvement: float
    expected_improvement: float
    return_improvement: float
    message: str


def trpo_step(mdp: TabularMDP, param, theta, *, max_kl: float = 0.01,
              backtrack_coef: float = 0.5, max_backtracks: int = 10,
              rtol: float = 1e-12) -> TRPOStep:
    """One exact TRPO step: natural direction, KL-scaled full step, backtracking line search.

    ``x = F^+ g``; full step ``s = sqrt(2 delta / (g^T x)) x`` so that ``(1/2) s^T F s =
    delta``; then try ``theta + c^k s`` for ``k = 0 .. max_backtracks`` and accept the first
    with exact mean ``KL(pi_old || pi_new) <= delta`` and exact surrogate improvement
    ``L_pi_old(pi_new) - J(pi_old) > 0``. Here ``g``, ``F`` and the KL are exact, so this is
    the reference that sampled TRPO implementations estimate.

    Parameters
    ----------
    max_kl : float
        Trust-region radius ``delta`` (nats).
    backtrack_coef : float
        Shrink factor ``c`` in (0, 1).
    max_backtracks : int
    rtol : float
        Pseudo-inverse cutoff, as in :func:`natural_gradient`.

    Returns
    -------
    TRPOStep

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`; hyper-parameters out of range.

    References
    ----------
    Schulman et al. (2015), TRPO, arXiv:1502.05477v5, Sec. 4 (mean-KL trust region), Sec. 6
    and Appendix C (natural direction, step length, line search); the surrogate ``L`` is TRPO
    Eq. (3).
    """
    from pgtheory.bounds import surrogate

    delta = check_positive(max_kl, "max_kl")
    c = check_positive(backtrack_coef, "backtrack_coef")
    if c >= 1.0:
        raise InvalidArgumentError(f"backtrack_coef: expected a value in (0, 1), received {c}")
    n_bt = check_positive_int(max_backtracks, "max_backtracks", minimum=0)
    ev = ParameterizedEvaluation(mdp, param, theta)
    t, pi_old = ev.theta.copy(), ev.policy
    j_old = float(mdp.mu @ ev.state_values())
    w = ev.action_state_weights()
    g = ev.policy_gradient()
    x = ev.natural_gradient(rtol).copy()
    gx = float(g @ x)
    zeros = np.zeros_like(t)
    if not gx > 0.0:
        return TRPOStep(t, False, 0.0, 0, zeros, x, 0.0, 0.0, 0.0, 0.0, 0.0,
                        "zero natural gradient: already stationary")
    full = np.sqrt(2.0 * delta / gx) * x
    F = None if isinstance(param, TabularSoftmax) else ev.fisher_matrix()
    for k in range(n_bt + 1):
        frac = c ** k
        step = frac * full
        cand = t + step
        pi_new = param.probs(cand)
        kl = weighted_mean(w, rel_entr(pi_old, pi_new).sum(axis=1))
        sur = surrogate(mdp, pi_old, pi_new) - j_old
        if kl <= delta and sur > 0.0:
            if F is None:
                blocks = ev.fisher_blocks()
                sb = step.reshape(mdp.n_states, -1)
                quad = 0.5 * float(np.einsum("sa,sab,sb->", sb, blocks, sb))
            else:
                quad = 0.5 * float(step @ F @ step)
            return TRPOStep(cand, True, frac, k, full, x, kl, quad, float(sur),
                            float(g @ step), expected_return(mdp, pi_new) - j_old,
                            f"accepted after {k} backtracks")
    return TRPOStep(t, False, 0.0, n_bt, full, x, 0.0, 0.0, 0.0, 0.0, 0.0,
                    f"no step accepted after {n_bt} backtracks")


# ------------------------------------------------------------------------------- PPO
@dataclasses.dataclass(frozen=True)
class PPOObjective:
    """Exact PPO clipped objective and its gradient (see :func:`ppo_objective`).

    Attributes
    ----------
    value : float
        ``L^CLIP(theta)`` (reward units; 0 at ``theta = theta_old``).
    gradient : ndarray, shape (n_params,)
    clip_fraction : float
        Probability under ``w x pi_old`` that ``|r - 1| > clip_range``.
    """

    value: float
    gradient: np.ndarray
    clip_fraction: float


def ppo_objective(mdp: TabularMDP, param, theta, theta_old, *, clip_range: float = 0.2,
                  state_distribution=None) -> PPOObjective:
    """Exact PPO clipped surrogate as an expectation, and its gradient in ``theta``.

    ``L^CLIP(theta) = E_{s ~ w, a ~ pi_old}[min(r A, clip(r, 1 - eps, 1 + eps) A)]`` with
    ``r = pi_theta(a|s) / pi_old(a|s)`` and ``A = A_{pi_old}``. Its gradient is
    ``E[A r grad log pi_theta(a|s)]`` over the pairs where the unclipped term is active, i.e.
    everywhere except ``A > 0, r > 1 + eps`` and ``A < 0, r < 1 - eps`` (at the boundary the
    unclipped branch is taken). Actions with ``pi_old(a|s) = 0`` are never sampled and
    contribute 0.

    Parameters
    ----------
    theta, theta_old : array_like, shape (n_params,)
    clip_range : float
        ``eps > 0``.
    state_distribution : array_like, shape (S,), optional
        State weights ``w``. Default: ``d_{pi_old}`` on non-terminal states (the objective of
        the paper). Pass :func:`pgtheory.on_policy_distribution` for what sampled
        minibatches actually weight.

    Returns
    -------
    PPOObjective

    Raises
    ------
    InvalidArgumentError, TypeError, SolverError
        As :func:`policy_gradient`; ``clip_range`` not positive.

    References
    ----------
    Schulman et al. (2017), "Proximal policy optimization algorithms", arXiv:1707.06347v2,
    Eq. (7).
    """
    eps = check_positive(clip_range, "clip_range")
    _check_param(mdp, param)
    pi = param.probs(theta)
    pi_old = param.probs(theta_old)
    v, q, d = _evaluate(mdp, pi_old)
    adv = q - v[:, None]
    w = (d * (~mdp.terminal) if state_distribution is None
         else check_state_distribution(mdp, state_distribution))
    support = pi_old > 0
    r = np.divide(pi, pi_old, out=np.ones_like(pi), where=support)
    clipped = np.clip(r, 1.0 - eps, 1.0 + eps)
    weight = w[:, None] * pi_old * support
    value = float(np.sum(weight * np.minimum(r * adv, clipped * adv)))
    inactive = ((adv > 0) & (r > 1.0 + eps)) | ((adv < 0) & (r < 1.0 - eps))
    coeff = np.where(inactive, 0.0, w[:, None] * pi * adv * support)
    grad = _contract_score(param, theta, coeff)
    clip_frac = float(np.sum(weight * (np.abs(r - 1.0) > eps)) / max(weight.sum(), 1e-300))
    return PPOObjective(value=value, gradient=grad, clip_fraction=clip_frac)
