"""Linear models of MuJoCo tasks: finite-difference linearization and InvertedPendulum-v5's LQR.

:func:`linearize_mujoco` gives the discrete-time ``(A, B)`` of a MuJoCo model about an
equilibrium; :func:`inverted_pendulum_lqr` linearizes gymnasium's InvertedPendulum-v5 about
upright and solves its discounted Riccati equation with :func:`pgtheory.lqr.optimal_policy`.
Needs the ``mujoco`` extra (``pip install 'pgtheory[mujoco]'``); the closed forms themselves are
in :mod:`pgtheory.lqr` (numpy and scipy only).

References
----------
MuJoCo documentation, ``mjd_transitionFD``; Todorov, Erez & Tassa (2012), MuJoCo, IROS;
Bertsekas (2017), Dynamic Programming and Optimal Control, Vol. 1, Sec. 3.2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pgtheory._validation import as_float_array, check_positive, check_positive_int
from pgtheory.errors import InvalidArgumentError
from pgtheory.extras import require
from pgtheory.lqr import LQRModel, RiccatiSolution, optimal_policy

require("mujoco")  # before the optional imports: a missing extra is one line naming it

import gymnasium as gym

__all__ = ["InvertedPendulumLQR", "inverted_pendulum_lqr", "linearize_mujoco"]


def linearize_mujoco(mj_model, *, qpos=None, qvel=None, ctrl=None, frame_skip: int = 1,
                     eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Discrete-time linearization ``(A, B)`` of a MuJoCo model about an equilibrium.

    Uses MuJoCo's centred finite differences (``mujoco.mjd_transitionFD``) for one physics
    step, then composes ``frame_skip`` steps with the control held:
    ``A = A_1^k``, ``B = sum_{j<k} A_1^j B_1`` (exact for the linearization at an equilibrium,
    where the state does not move). ``mjd_transitionFD`` does not support the RK4 integrator
    (InvertedPendulum-v5 uses it); for RK4 models the same centred differences are taken of
    ``frame_skip`` calls of ``mj_step`` directly (tangent-space perturbations through
    ``mj_integratePos`` / ``mj_differentiatePos``); the tests check that both routes agree on a
    model where both apply. The state is ``(dq, qvel, act)`` of size ``2 nv + na``
    (``dq`` in the tangent space; equal to ``qpos`` differences for hinge and slide joints).

    Parameters
    ----------
    mj_model : mujoco.MjModel
    qpos, qvel, ctrl : array_like, optional
        The equilibrium (default ``qpos0``, zero velocity, zero control).
    frame_skip : int
        Physics steps per environment step (gymnasium's ``frame_skip``).
    eps : float
        Finite-difference step.

    Returns
    -------
    A : ndarray, shape (2 nv + na, 2 nv + na)
    B : ndarray, shape (2 nv + na, nu)

    Raises
    ------
    InvalidArgumentError
        ``frame_skip`` or ``eps`` out of range, or state arrays of the wrong size.

    References
    ----------
    MuJoCo documentation, ``mjd_transitionFD``; Todorov, Erez & Tassa (2012), MuJoCo, IROS.
    """
    import mujoco

    k = check_positive_int(frame_skip, "frame_skip")
    e = check_positive(eps, "eps")
    d = mujoco.MjData(mj_model)
    for name, val, size in (("qpos", qpos, mj_model.nq), ("qvel", qvel, mj_model.nv),
                            ("ctrl", ctrl, mj_model.nu)):
        if val is not None:
            arr = as_float_array(val, name, ndim=1)
            if arr.shape != (size,):
                raise InvalidArgumentError(f"{name}: expected shape ({size},), received "
                                           f"{arr.shape}")
            getattr(d, name)[:] = arr
    if qpos is None:
        d.qpos[:] = mj_model.qpos0
    mujoco.mj_forward(mj_model, d)
    if mj_model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
        return _step_fd(mj_model, d, e, k)
    nx = 2 * mj_model.nv + mj_model.na
    A1, B1 = np.zeros((nx, nx)), np.zeros((nx, mj_model.nu))
    mujoco.mjd_transitionFD(mj_model, d, e, True, A1, B1, None, None)
    A, B = np.eye(nx), np.zeros_like(B1)
    for _ in range(k):
        B = A1 @ B + B1
        A = A1 @ A
    return A, B


def _step_fd(mj_model, d0, eps: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred differences of ``k`` calls of ``mj_step`` in the tangent space (used where
    ``mjd_transitionFD`` does not support the integrator, e.g. RK4)."""
    import mujoco

    nv, na, nu = mj_model.nv, mj_model.na, mj_model.nu
    nx = 2 * nv + na

    def run(dx: np.ndarray, du: np.ndarray) -> np.ndarray:
        d = mujoco.MjData(mj_model)
        qpos = d0.qpos.copy()
        mujoco.mj_integratePos(mj_model, qpos, dx[:nv].copy(), 1.0)
        d.qpos[:], d.qvel[:] = qpos, d0.qvel + dx[nv:2 * nv]
        if na:
            d.act[:] = d0.act + dx[2 * nv:]
        d.ctrl[:] = d0.ctrl + du
        for _ in range(k):
            mujoco.mj_step(mj_model, d)
        out = np.zeros(nx)
        mujoco.mj_differentiatePos(mj_model, out[:nv], 1.0, d0.qpos, d.qpos)
        out[nv:2 * nv] = d.qvel
        if na:
            out[2 * nv:] = d.act
        return out

    A, B = np.zeros((nx, nx)), np.zeros((nx, nu))
    for i in range(nx):
        e = np.zeros(nx)
        e[i] = eps
        A[:, i] = (run(e, np.zeros(nu)) - run(-e, np.zeros(nu))) / (2 * eps)
    for j in range(nu):
        e = np.zeros(nu)
        e[j] = eps
        B[:, j] = (run(np.zeros(nx), e) - run(np.zeros(nx), -e)) / (2 * eps)
    return A, B


@dataclasses.dataclass(frozen=True)
class InvertedPendulumLQR:
    """InvertedPendulum-v5 linearized about the upright equilibrium, with its LQR solution.

    Attributes
    ----------
    model : LQRModel
        State ``(slider position, hinge angle, slider velocity, angular velocity)`` (the
        environment's observation), action the motor control, one environment step
        (``frame_skip = 2`` physics steps of 0.02 s).
    optimal : RiccatiSolution
        ``u = -K x`` optimal for the linear model and the chosen Q, R.
    dt : float
        Seconds per environment step.
    """

    model: LQRModel
    optimal: RiccatiSolution
    dt: float


def inverted_pendulum_lqr(*, gamma: float = 0.99, Q=None, R=None) -> InvertedPendulumLQR:
    """Linearize gymnasium's InvertedPendulum-v5 and solve its discounted LQR.

    ``Q = I_4`` and ``R = 0.1`` by default (the task's own reward is +1 per upright step, not a
    quadratic cost, so these are a choice, stated here). ``Sigma0 = (0.01^2 / 3) I`` matches the
    environment's uniform reset noise of +-0.01 on qpos and qvel; ``W = 0``.

    Returns
    -------
    InvertedPendulumLQR

    Raises
    ------
    InvalidArgumentError
        Invalid ``gamma``, ``Q`` or ``R``.

    References
    ----------
    Gymnasium InvertedPendulum-v5 (MuJoCo); :func:`linearize_mujoco`;
    :func:`pgtheory.lqr.optimal_policy`.
    """
    env = gym.make("InvertedPendulum-v5")
    try:
        base = env.unwrapped
        A, B = linearize_mujoco(base.model, qpos=np.zeros(base.model.nq),
                                qvel=np.zeros(base.model.nv), ctrl=np.zeros(base.model.nu),
                                frame_skip=base.frame_skip)
        dt = float(base.model.opt.timestep * base.frame_skip)
    finally:
        env.close()
    n, m = A.shape[0], B.shape[1]
    model = LQRModel(A=A, B=B, Q=np.eye(n) if Q is None else Q,
                     R=0.1 * np.eye(m) if R is None else R, W=np.zeros((n, n)),
                     Sigma0=(0.01**2 / 3.0) * np.eye(n), gamma=gamma)
    return InvertedPendulumLQR(model=model, optimal=optimal_policy(model), dt=dt)
