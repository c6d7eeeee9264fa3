"""pgtheory.lqr against independent routes: finite differences, forward recursions,
quadrature, Monte Carlo rollouts of the gymnasium environment, and MuJoCo."""

import gymnasium as gym
import numpy as np
import pytest
import sympy as sp
from helpers import fd_gradient, fd_hessian, rel_err
from hypothesis import given
from hypothesis import strategies as st
from pgtheory.implementations import mujoco_lqr
from pgtheory.oracles.envs import LinearQuadraticEnv  # also registers pgtheory/LinearQuadratic-v0
from pgtheory.proofs.distribution_theorems import gaussian_kl_closed_form

import pgtheory.lqr as lqr
from pgtheory.errors import InvalidArgumentError


def random_problem(seed, n=None, m=None, gamma=None):
    """A random model with spectral radius(A) = 0.9 and a K with discounted closed-loop
    spectral radius < 0.95."""
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(1, 5))
    m = m or int(rng.integers(1, 4))
    gamma = gamma if gamma is not None else float(rng.choice([0.5, 0.9, 0.99]))
    A = rng.normal(size=(n, n))
    A *= 0.9 / max(np.abs(np.linalg.eigvals(A)).max(), 1e-9)
    B = rng.normal(size=(n, m))
    M, N, L, S0 = (rng.normal(size=(k, k)) for k in (n, m, n, n))
    model = lqr.LQRModel(A=A, B=B, Q=M.T @ M + 0.1 * np.eye(n), R=N.T @ N + np.eye(m),
                         W=0.1 * L.T @ L, Sigma0=S0.T @ S0 + 0.1 * np.eye(n), gamma=gamma)
    K = 0.05 * rng.normal(size=(m, n))
    # K -> 0 gives radius sqrt(gamma) 0.9 < 0.95, so halving terminates
    while np.abs(np.linalg.eigvals(np.sqrt(gamma) * (A - B @ K))).max() >= 0.95:
        K *= 0.5
    ls = rng.uniform(-1.0, 0.5, size=m)
    return model, K, ls


seeds = st.integers(0, 10_000)


def pack(K, ls):
    return np.concatenate([K.ravel(), ls])


def unpack(model, th):
    mn = model.n_action * model.n_state
    return th[:mn].reshape(model.n_action, model.n_state), th[mn:]


@given(seeds)
def test_return_by_three_routes(seed):
    # sources: J = -(tr(P Sigma0) + c); J = -tr((Q + K'RK) Sigma_gamma) - tr(RD)/(1-gamma)
    # (module docstring); and the forward second-moment recursion summed for 3000 steps
    # (truncation gamma^3000 * rho^... < 1e-12 at gamma <= 0.99 with a stable loop)
    model, K, ls = random_problem(seed)
    J = lqr.expected_return(model, K, ls)
    S = lqr.state_second_moment(model, K, ls, normalized=False)
    D = np.diag(np.exp(2 * ls))
    J2 = -np.trace((model.Q + K.T @ model.R @ K) @ S) - np.trace(model.R @ D) / (1 - model.gamma)
    assert J == pytest.approx(J2, rel=1e-9)
    assert J == pytest.approx(lqr.finite_horizon_return(model, K, ls, 3000), rel=1e-9)
    Sd = lqr.state_second_moment(model, K, ls)
    assert rel_err(Sd, (1 - model.gamma) * S) < 1e-12


@given(seeds)
def test_policy_gradient_matches_finite_differences(seed):
    # source: five-point finite differences of the exact J in (vec K, log sigma)
    model, K, ls = random_problem(seed)
    gK, gl = lqr.policy_gradient(model, K, ls)
    fd = fd_gradient(lambda th: lqr.expected_return(model, *unpack(model, th)), pack(K, ls),
                     h=1e-4)
    # relative to the larger of |J| and |grad J| (near-unstable loops have steep gradients)
    scale = max(1.0, abs(lqr.expected_return(model, K, ls)), np.abs(pack(gK, gl)).max())
    assert np.max(np.abs(pack(gK, gl) - fd)) < 1e-7 * scale


@given(seeds)
def test_advantage_has_zero_mean_under_the_policy(seed):
    # source: E_{u ~ pi}[A(x, u)] = 0, by Gauss-Hermite quadrature over u (exact for the
    # quadratic integrand with 3 nodes per dimension), at random states
    model, K, ls = random_problem(seed, m=1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    x = np.random.default_rng(seed).normal(size=(4, model.n_state))
    sigma = np.exp(ls[0])
    u = (-(x @ K.T))[:, None, :] + sigma * nodes[None, :, None]  # (4, 3, 1)
    A = lqr.advantages(model, K, ls, np.repeat(x[:, None, :], 3, axis=1), u)
    v = lqr.value_function(model, K, ls)(x)
    assert np.max(np.abs(A @ weights)) < 1e-9 * max(1.0, np.abs(v).max())


def test_second_moment_matches_forward_sum():
    # source: Sigma_gamma = sum_t gamma^t E[x_t x_t^T] with S_{t+1} = A_K S_t A_K^T + W_K
    model, K, ls = random_problem(3, n=3, m=2, gamma=0.9)
    AK = model.A - model.B @ K
    WK = model.W + model.B @ np.diag(np.exp(2 * ls)) @ model.B.T
    S, total = model.Sigma0.copy(), np.zeros((3, 3))
    for t in range(2000):
        total += 0.9**t * S
        S = AK @ S @ AK.T + WK
    assert rel_err(lqr.state_second_moment(model, K, ls, normalized=False), total) < 1e-11


@given(seeds)
def test_fisher_equals_hessian_of_mean_kl(seed):
    # source: F = Hessian of theta' -> E_x KL(pi_theta || pi_theta') at theta (Amari 1998),
    # by finite differences with the state second moment held fixed
    model, K, ls = random_problem(seed, n=2, m=2)
    S = lqr.state_second_moment(model, K, ls)
    F = lqr.fisher_matrix(model, K, ls)

    def kl(th):
        K2, l2 = unpack(model, th)
        return lqr.kl_divergence(model, K, ls, K2, l2, state_second_moment_=S)

    assert rel_err(fd_hessian(kl, pack(K, ls), h=1e-3), F) < 1e-6


@given(seeds)
def test_natural_gradient_removes_state_covariance(seed):
    # sources: F^{-1} g by a linear solve equals the closed form; the K-part does not depend
    # on Sigma0 or W (Fazel et al. 2018, Sec. 4) while the vanilla gradient does
    model, K, ls = random_problem(seed)
    gK, gl = lqr.policy_gradient(model, K, ls)
    nK, nl = lqr.natural_gradient(model, K, ls)
    x = np.linalg.solve(lqr.fisher_matrix(model, K, ls), pack(gK, gl))
    assert rel_err(pack(nK, nl), x) < 1e-8
    other = lqr.LQRModel(A=model.A, B=model.B, Q=model.Q, R=model.R, W=3 * model.W,
                         Sigma0=5 * model.Sigma0, gamma=model.gamma)
    assert rel_err(lqr.natural_gradient(other, K, ls)[0], nK) < 1e-10
    assert rel_err(lqr.policy_gradient(other, K, ls)[0], gK) > 1e-3


@given(seeds)
def test_surrogate_first_order_and_performance_difference(seed):
    # sources: L(pi) = J(pi) and grad L = grad J at pi (TRPO Sec. 2), finite differences; PDL:
    # J(new) - J(old) = E_{d_new, pi_new}[A_old] / (1 - gamma), the expectation in closed form
    model, K, ls = random_problem(seed)
    assert lqr.surrogate(model, K, ls, K, ls) == pytest.approx(
        lqr.expected_return(model, K, ls), rel=1e-10)
    fd = fd_gradient(lambda th: lqr.surrogate(model, K, ls, *unpack(model, th)), pack(K, ls),
                     h=1e-4)
    g = pack(*lqr.policy_gradient(model, K, ls))
    assert np.max(np.abs(fd - g)) < 1e-7 * max(1.0, np.abs(g).max())
    rng = np.random.default_rng(seed)
    dK, l2 = 0.02 * rng.normal(size=K.shape), ls + 0.1 * rng.normal(size=ls.shape)
    # the identity needs the new loop stable under the discount: shrink the perturbation
    while np.abs(np.linalg.eigvals(np.sqrt(model.gamma) * (model.A - model.B @ (K + dK)))).max() \
            >= 0.99:
        dK *= 0.5
    K2 = K + dK
    vf = lqr.value_function(model, K, ls)
    P, g_ = vf.P, model.gamma
    A2 = model.A - model.B @ K2
    S2 = lqr.state_second_moment(model, K2, l2, normalized=False)
    H = model.R + g_ * model.B.T @ P @ model.B
    pdl = (-np.trace((model.Q + K2.T @ model.R @ K2 + g_ * A2.T @ P @ A2 - P) @ S2)
           - np.trace(H @ (np.diag(np.exp(2 * l2)) - np.diag(np.exp(2 * ls)))) / (1 - g_))
    diff = lqr.expected_return(model, K2, l2) - lqr.expected_return(model, K, ls)
    assert pdl == pytest.approx(diff, rel=1e-7, abs=1e-9)


def test_kl_matches_symbolic_gaussian_kl():
    # source: proofs theorem gaussian_kl (closed form derived from the integral), lambdified;
    # with K1 = K2 the mean KL is the sum of the per-dimension Gaussian KLs
    model, K, ls = random_problem(5, n=2, m=2)
    l2 = ls + np.array([0.3, -0.2])
    s1, s2, m_ = sp.symbols("s1 s2 m", positive=True)
    f = sp.lambdify((s1, s2), gaussian_kl_closed_form(s1, s2, m_, m_))
    expect = sum(f(a, b) for a, b in zip(np.exp(ls), np.exp(l2), strict=True))
    assert lqr.kl_divergence(model, K, ls, K, l2) == pytest.approx(expect, rel=1e-12)


@pytest.mark.parametrize("delta", [1e-3, 1e-2], ids=["delta=1e-3", "delta=1e-2"])
def test_trpo_step(delta):
    # source: TRPO App. C: (1/2) s^T F s = delta for the full step; acceptance needs exact
    # KL <= delta and a surrogate improvement
    model, K, ls = random_problem(11, n=3, m=2, gamma=0.9)
    res = lqr.trpo_step(model, K, ls, max_kl=delta)
    assert res.accepted and res.mean_kl <= delta and res.surrogate_improvement > 0
    if res.step_fraction == 1.0:
        assert res.quadratic_kl == pytest.approx(delta, rel=1e-9)
    assert res.return_improvement > 0


@given(seeds)
def test_optimal_policy(seed):
    # sources: the Riccati gain is a stationary point of J (gradient 0) and beats random
    # stabilizing gains; the finite-horizon gains converge to it (Bertsekas 2017, Sec. 3.2)
    model, _, ls = random_problem(seed)
    opt = lqr.optimal_policy(model)
    gK, _ = lqr.policy_gradient(model, opt.K, ls)
    assert np.max(np.abs(gK)) < 1e-8 * max(1.0, abs(lqr.expected_return(model, opt.K, ls)))
    j_star = lqr.expected_return(model, opt.K, ls)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        K2 = opt.K + 0.1 * rng.normal(size=opt.K.shape)
        try:
            assert lqr.expected_return(model, K2, ls) <= j_star + 1e-12 * abs(j_star)
        except lqr.UnstableClosedLoopError:
            pass
    gains, _ = lqr.finite_horizon_riccati(model, 3000)
    assert rel_err(gains[0], opt.K) < 1e-8


def test_finite_horizon_gains_beat_the_stationary_gain():
    # source: the backward Riccati gains are optimal for the T-step episode, so their exact
    # finite-horizon cost (forward recursion with time-varying gains) is no worse than K*'s
    model, _, _ = random_problem(2, n=2, m=1, gamma=0.95)
    T = 5
    gains, P = lqr.finite_horizon_riccati(model, T)
    ls = np.full(1, -30.0)  # (numerically) deterministic policies
    S, total = model.Sigma0.copy(), 0.0
    for t in range(T):
        Kt = gains[t]
        total -= 0.95**t * np.trace((model.Q + Kt.T @ model.R @ Kt) @ S)
        S = (model.A - model.B @ Kt) @ S @ (model.A - model.B @ Kt).T + model.W
    # the optimal T-step cost is also tr(P_0 Sigma0) + sum of noise terms; compare returns
    stationary = lqr.finite_horizon_return(model, lqr.optimal_policy(model).K, ls, T)
    assert total >= stationary - 1e-12
    noise = sum(0.95**t * np.trace(P[t + 1] @ model.W) * 0.95 for t in range(T - 1))
    assert -total == pytest.approx(np.trace(P[0] @ model.Sigma0) + noise, rel=1e-10)


def rollout_returns(env, K, ls, n_episodes, seed, start=None):
    rng = np.random.default_rng(seed)
    gamma = env.unwrapped.model.gamma
    out = np.zeros(n_episodes)
    for i in range(n_episodes):
        x, _ = env.reset(seed=seed + i, options=None if start is None else {"state": start})
        total, disc, done = 0.0, 1.0, False
        while not done:
            u = -K @ x + np.exp(ls) * rng.normal(size=ls.shape)
            x, r, term, trunc, _ = env.step(u)
            total += disc * r
            disc *= gamma
            done = term or trunc
        out[i] = total
    return out


def test_env_monte_carlo_matches_finite_horizon_return():
    # source: the sample mean of N = 2000 discounted 20-step returns; |mean - J_T| < 4 standard
    # errors (two-sided normal tail 6e-5 per run; the seed is fixed, so the run is deterministic)
    model, K, ls = random_problem(7, n=2, m=1, gamma=0.9)
    env = gym.make("pgtheory/LinearQuadratic-v0", model=model, max_episode_steps=20)
    G = rollout_returns(env, K, ls, 2000, seed=0)
    se = G.std(ddof=1) / np.sqrt(G.size)
    assert abs(G.mean() - lqr.finite_horizon_return(model, K, ls, 20)) < 4 * se


def test_env_monte_carlo_matches_value_function():
    # source: V(x0) from 600 episodes started at x0, 150 steps each (gamma^150 = 1.4e-7: the
    # truncation bias is far below the 4-standard-error tolerance)
    model, K, ls = random_problem(8, n=2, m=1, gamma=0.9)
    x0 = np.array([0.5, -0.3])
    env = gym.make("pgtheory/LinearQuadratic-v0", model=model, max_episode_steps=150)
    G = rollout_returns(env, K, ls, 600, seed=100, start=x0)
    se = G.std(ddof=1) / np.sqrt(G.size)
    assert abs(G.mean() - lqr.value_function(model, K, ls)(x0)) < 4 * se


def test_env_is_deterministic_under_seed_and_truncates():
    env = gym.make("pgtheory/LinearQuadratic-v0", max_episode_steps=3)
    a, _ = env.reset(seed=4)
    b, _ = env.reset(seed=4)
    assert np.array_equal(a, b)
    flags = [env.step(np.zeros(1))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_inverted_pendulum_linearization_and_lqr():
    # sources: the Riccati gain stabilizes the linear model and beats random stabilizing
    # gains on exact J; on the real MuJoCo task (nonlinear, action clipped to [-3, 3]) it keeps
    # the pole up for the whole 1000-step episode
    ip = mujoco_lqr.inverted_pendulum_lqr()
    m = ip.model
    assert (m.A.shape, m.B.shape) == ((4, 4), (4, 1)) and ip.dt == pytest.approx(0.04)
    assert np.abs(np.linalg.eigvals(m.A)).max() > 1.0  # the upright pendulum is unstable
    K = ip.optimal.K
    assert np.abs(np.linalg.eigvals(m.A - m.B @ K)).max() < 1.0
    ls = np.full(1, -3.0)
    j_star = lqr.expected_return(m, K, ls)
    rng = np.random.default_rng(0)
    beaten = 0
    for _ in range(200):
        K2 = K * (1 + 0.5 * rng.normal(size=K.shape))
        try:
            assert lqr.expected_return(m, K2, ls) < j_star
            beaten += 1
        except lqr.UnstableClosedLoopError:
            pass
    assert beaten >= 20
    env = gym.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=0)
    steps = 0
    for steps in range(1, 1001):  # noqa: B007
        obs, _, term, trunc, _ = env.step(np.clip(-K @ obs, -3, 3).astype(np.float32))
        if term or trunc:
            break
    assert steps == 1000 and not term


def test_mujoco_linearization_routes_agree():
    # source: mjd_transitionFD (Euler copy of the model) vs the mj_step differences used for
    # RK4 models: same Jacobians
    import copy

    import mujoco

    base = gym.make("InvertedPendulum-v5").unwrapped.model
    euler = copy.deepcopy(base)
    euler.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
    A1, B1 = mujoco_lqr.linearize_mujoco(euler, frame_skip=2)
    d = mujoco.MjData(euler)
    mujoco.mj_forward(euler, d)
    A2, B2 = mujoco_lqr._step_fd(euler, d, 1e-6, 2)
    assert np.max(np.abs(A1 - A2)) < 1e-6 and np.max(np.abs(B1 - B2)) < 1e-6


MODEL, K0, LS0 = random_problem(1, n=2, m=1, gamma=0.9)
GOOD = dict(A=MODEL.A, B=MODEL.B, Q=MODEL.Q, R=MODEL.R, W=MODEL.W, Sigma0=MODEL.Sigma0,
            gamma=0.9)


def model_with(**kw):
    return lambda: lqr.LQRModel(**{**GOOD, **kw})


BAD = [
    ("A-not-square", model_with(A=np.ones((2, 3))), "square"),
    ("B-wrong-rows", model_with(B=np.ones((3, 1))), "B: expected shape"),
    ("Q-asymmetric", model_with(Q=np.array([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
    ("Q-indefinite", model_with(Q=np.array([[1.0, 0.0], [0.0, -1.0]])), "semi-definite"),
    ("R-singular", model_with(R=np.zeros((1, 1))), "positive definite"),
    ("W-nan", model_with(W=np.full((2, 2), np.nan)), "finite"),
    ("gamma-one", model_with(gamma=1.0), "[0, 1)"),
    ("K-wrong-shape", lambda: lqr.expected_return(MODEL, np.zeros((2, 2)), LS0), "K: expected"),
    ("log-sigma-wrong-shape", lambda: lqr.expected_return(MODEL, K0, np.zeros(2)),
     "log_sigma: expected"),
    ("horizon-zero", lambda: lqr.finite_horizon_return(MODEL, K0, LS0, 0), ">= 1"),
    ("trpo-backtrack", lambda: lqr.trpo_step(MODEL, K0, LS0, backtrack_coef=2.0), "(0, 1)"),
]


@pytest.mark.parametrize(("call", "fragment"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input(call, fragment):
    with pytest.raises(InvalidArgumentError) as info:
        call()
    assert fragment in str(info.value)


def test_unstable_closed_loop_names_the_spectral_radius():
    with pytest.raises(lqr.UnstableClosedLoopError, match=r"spectral radius \d"):
        lqr.expected_return(MODEL, np.array([[-50.0, -50.0]]), LS0)
    assert issubclass(lqr.UnstableClosedLoopError, ValueError)


def test_env_rejects_bad_action():
    env = LinearQuadraticEnv()
    env.reset(seed=0)
    with pytest.raises(InvalidArgumentError, match="action: expected shape"):
        env.step(np.zeros(3))
    with pytest.raises(TypeError, match="LQRModel"):
        LinearQuadraticEnv(model="double integrator")


def test_finite_horizon_return_when_stable_only_under_the_discount():
    # regression (found by the thorough profile): rho(A_K) > 1 > rho(sqrt(gamma) A_K); the
    # undiscounted second moments overflow, the discounted sum is finite and equals J as T grows
    model, K, ls = random_problem(5947)
    AK = model.A - model.B @ K
    assert np.abs(np.linalg.eigvals(AK)).max() > 1.0
    assert lqr.finite_horizon_return(model, K, ls, 3000) == pytest.approx(
        lqr.expected_return(model, K, ls), rel=1e-9)


def test_finite_horizon_overflow_is_reported_not_propagated():
    from pgtheory.errors import NonFiniteResultError

    with pytest.raises(NonFiniteResultError, match="grows faster than the discount"):
        lqr.finite_horizon_return(MODEL, np.array([[-80.0, -80.0]]), LS0, 5000)
