"""Each reference of pgtheory.references against a computation written independently of it:
a brute-force loop over the defining sum, a closed form from scipy, a Monte Carlo average with
a tolerance from its standard error, or finite differences. Every test names its source."""

import numpy as np
import pytest
import scipy.special
import scipy.stats

from pgtheory import references as ref
from pgtheory.errors import InvalidArgumentError, InvalidRolloutError

RNG_SEED = 20261130


def _rollout(seed, T=12, N=3):
    rng = np.random.default_rng(seed)
    term = rng.random((T, N)) < 0.15
    trunc = (rng.random((T, N)) < 0.15) & ~term
    return dict(rewards=rng.normal(size=(T, N)), values=rng.normal(size=(T, N)),
                next_values=rng.normal(size=(T, N)), terminated=term, truncated=trunc)


def brute_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """A_t = sum_l (gamma lam)^l delta_{t+l}, summed until the episode or the buffer ends
    (Schulman et al. 2016, arXiv:1506.02438v6, Eq. (16)), one (t, env) at a time."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for u in range(t, T):
                boot = 0.0 if terminated[u, n] else next_values[u, n]
                total += weight * (rewards[u, n] + gamma * boot - values[u, n])
                if terminated[u, n] or truncated[u, n]:
                    break
                weight *= gamma * lam
            out[t, n] = total
    return out


def brute_returns(rewards, next_values, terminated, truncated, gamma):
    """G_t = sum_l gamma^l r_{t+l} up to the episode end, plus gamma^(l+1) V(final obs) when
    the episode was truncated or the buffer ends (Sutton & Barto 2018, Eq. (3.8), Sec. 7.1)."""
    T, N = rewards.shape
    out = np.zeros((T, N))
    for n in range(N):
        for t in range(T):
            total = 0.0
            for u in range(t, T):
                total += gamma ** (u - t) * rewards[u, n]
                if terminated[u, n]:
                    break
                if truncated[u, n] or u == T - 1:
                    total += gamma ** (u - t + 1) * next_values[u, n]
                    break
            out[t, n] = total
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_gae_equals_the_defining_sum(seed, lam):
    k = _rollout(seed)
    got = ref.gae(k["rewards"], k["values"], k["terminated"], k["truncated"], 0.9, lam,
                  next_values=k["next_values"])
    np.testing.assert_allclose(got, brute_gae(**k, gamma=0.9, lam=lam), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_discounted_returns_equal_the_defining_sum(seed):
    k = _rollout(seed)
    got = ref.discounted_returns(k["rewards"], k["terminated"], k["truncated"], 0.9,
                                 next_values=k["next_values"])
    want = brute_returns(k["rewards"], k["next_values"], k["terminated"], k["truncated"], 0.9)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _collected(seed, T=12, N=3):
    """A rollout as collected: next_values[t] = values[t + 1] inside an episode."""
    k = _rollout(seed, T, N)
    ended = k["terminated"] | k["truncated"]
    k["next_values"][:-1] = np.where(ended[:-1], k["next_values"][:-1], k["values"][1:])
    return k


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.0, 0.5, 0.95, 1.0])
def test_lambda_returns_are_gae_plus_values_on_collected_rollouts(seed, lam):
    # Schulman et al. (2016), Sec. 3: the lambda-return is A^GAE + V when V(s_{t+1}) is the
    # next entry of the same episode
    k = _collected(seed)
    got = ref.lambda_returns(k["rewards"], k["terminated"], k["truncated"], 0.9, lam,
                             next_values=k["next_values"])
    np.testing.assert_allclose(got, brute_gae(**k, gamma=0.9, lam=lam) + k["values"],
                               rtol=1e-12, atol=1e-12)


def test_gae_special_cases():
    k = _rollout(3)
    # lambda = 0: the TD error (Schulman et al. 2016, Eq. (17))
    td = k["rewards"] + 0.9 * np.where(k["terminated"], 0.0, k["next_values"]) - k["values"]
    np.testing.assert_allclose(ref.gae(k["rewards"], k["values"], k["terminated"],
                                       k["truncated"], 0.9, 0.0, next_values=k["next_values"]),
                               td, rtol=1e-12)
    # the defect switches: trace_decay = gamma lam and td_discount = gamma are the defaults
    base = ref.gae(k["rewards"], k["values"], k["terminated"], k["truncated"], 0.9, 0.8,
                   next_values=k["next_values"])
    same = ref.gae(k["rewards"], k["values"], k["terminated"], k["truncated"], 0.9, 0.8,
                   next_values=k["next_values"], trace_decay=0.72, td_discount=0.9)
    np.testing.assert_allclose(same, base, rtol=1e-12)


@pytest.mark.parametrize(("call", "error"), [
    (lambda: ref.gae(np.zeros(3), np.zeros(3), [0, 2, 0], np.zeros(3), 0.9, 0.9,
                     next_values=np.zeros(3)), InvalidRolloutError),
    (lambda: ref.gae(np.zeros(3), np.zeros(4), np.zeros(3), np.zeros(3), 0.9, 0.9,
                     next_values=np.zeros(3)), InvalidRolloutError),
    (lambda: ref.gae(np.zeros(3), np.zeros(3), np.zeros(3), np.zeros(3), 1.0, 0.9,
                     next_values=np.zeros(3)), InvalidArgumentError),
    (lambda: ref.clipped_surrogate_loss([0.0], [0.0], [1.0], 0.0), InvalidArgumentError),
    (lambda: ref.value_loss([0.0], None, [1.0], form="max"), InvalidArgumentError),
    (lambda: ref.kl_estimator([0.0], [0.0], "k4"), InvalidArgumentError),
    (lambda: ref.conjugate_gradient(lambda v: v, np.ones(2), -1), InvalidArgumentError),
    (lambda: ref.categorical_log_prob(np.zeros((2, 3)), np.array([0, 3])),
     InvalidArgumentError),
], ids=["flags-not-boolean", "values-shape", "gamma-one", "clip-range-zero",
        "clipped-form-needs-old-values", "unknown-kl-kind", "negative-iterations",
        "action-out-of-range"])
def test_bad_input_raises_a_value_error_subclass(call, error):
    with pytest.raises(error):
        call()


# ------------------------------------------------------------------------- losses
def _loss_batch(seed, B=64, eps=0.2):
    rng = np.random.default_rng(seed)
    old = np.log(rng.uniform(0.05, 0.95, size=B))
    return dict(log_probs=old + rng.normal(scale=2.5 * eps, size=B), old_log_probs=old,
                advantages=rng.normal(size=B), clip_range=eps)


def _finite_difference(loss, x_name, kw, h=1e-6):
    """Central differences of a mean-over-samples loss: sample i's term depends on x_i only,
    so one perturbation of the whole vector gives every coordinate."""
    x = kw[x_name]
    B = x.size
    plus = np.array([loss(**{**kw, x_name: np.where(np.arange(B) == i, x + h, x)})
                     for i in range(B)])
    minus = np.array([loss(**{**kw, x_name: np.where(np.arange(B) == i, x - h, x)})
                      for i in range(B)])
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("seed", range(3))
def test_clipped_surrogate_is_the_cleanrl_max_form(seed):
    # CleanRL ppo.py: pg_loss = max(-A r, -A clip(r, 1 - eps, 1 + eps)).mean(), the same
    # function as -min(r A, clip(r) A) (Schulman et al. 2017, arXiv:1707.06347v2, Eq. (7))
    k = _loss_batch(seed)
    r = np.exp(k["log_probs"] - k["old_log_probs"])
    a, eps = k["advantages"], k["clip_range"]
    want = np.maximum(-a * r, -a * np.clip(r, 1 - eps, 1 + eps)).mean()
    assert ref.clipped_surrogate_loss(**k) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("switches", [{}, {"combine": "max"}, {"ratio_form": "inverted"},
                                      {"ratio_form": "log"}, {"clip_target": "advantage"},
                                      {"clip_target": "none"}],
                         ids=["correct", "max", "inverted", "log", "clip-advantage", "no-clip"])
def test_clipped_surrogate_gradient_is_the_derivative_of_the_loss(switches):
    k = _loss_batch(1)
    got = ref.clipped_surrogate_loss_gradient(**k, **switches)
    fd = _finite_difference(lambda **kw: ref.clipped_surrogate_loss(**kw, **switches),
                            "log_probs", k)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-9)


def test_clipped_surrogate_gradient_vanishes_exactly_where_the_clip_binds():
    # proofs theorem ppo_clip_gradient: zero where r A > clip(r) A with r outside the range
    k = _loss_batch(2)
    r = np.exp(k["log_probs"] - k["old_log_probs"])
    a, eps = k["advantages"], k["clip_range"]
    binds = ((r > 1 + eps) & (a > 0)) | ((r < 1 - eps) & (a < 0))
    g = ref.clipped_surrogate_loss_gradient(**k)
    assert binds.any() and np.all(g[binds] == 0.0)
    np.testing.assert_allclose(g[~binds], -(r * a)[~binds] / r.size, rtol=1e-12)


def test_policy_gradient_loss_and_gradient():
    k = _loss_batch(3)
    a, lp = k["advantages"], k["log_probs"]
    assert ref.policy_gradient_loss(lp, a) == pytest.approx(-(a * lp).sum() / a.size)
    np.testing.assert_allclose(ref.policy_gradient_loss_gradient(lp, a),
                               _finite_difference(lambda **kw: ref.policy_gradient_loss(
                                   kw["log_probs"], kw["advantages"]), "log_probs",
                                   dict(log_probs=lp, advantages=a)), rtol=1e-6)


def _value_batch(seed, B=48, eps=0.2):
    rng = np.random.default_rng(seed)
    old = rng.normal(size=B)
    return dict(values=old + rng.normal(scale=2.5 * eps, size=B), values_old=old,
                returns=old + rng.normal(size=B), clip_range=eps)


def test_value_loss_forms_match_the_library_expressions():
    k = _value_batch(0)
    v, vo, R, eps = k["values"], k["values_old"], k["returns"], k["clip_range"]
    v_clip = vo + np.clip(v - vo, -eps, eps)
    # Stable-Baselines3 a2c.py: F.mse_loss(returns, values); ppo.py: mse on values_pred
    assert ref.value_loss(**k, form="squared") == pytest.approx(0.5 * np.mean((v - R) ** 2))
    assert ref.value_loss(**k, form="clipped_prediction") == pytest.approx(
        0.5 * np.mean((v_clip - R) ** 2))
    # OpenAI baselines ppo2/model.py: 0.5 * mean(max(vf_losses1, vf_losses2))
    assert ref.value_loss(**k, form="max") == pytest.approx(
        0.5 * np.mean(np.maximum((v - R) ** 2, (v_clip - R) ** 2)))


@pytest.mark.parametrize("switches", [{"form": "squared"}, {"form": "clipped_prediction"},
                                      {"form": "max"}, {"combine": "min"},
                                      {"clip_bounds": "reversed"}],
                         ids=["squared", "clipped-prediction", "max", "min", "reversed"])
def test_value_loss_gradient_is_the_derivative_of_the_loss(switches):
    k = _value_batch(1)
    got = ref.value_loss_gradient(**k, **switches)
    fd = _finite_difference(lambda **kw: ref.value_loss(**kw, **switches), "values", k)
    np.testing.assert_allclose(got, fd, rtol=1e-5, atol=1e-9)


# -------------------------------------------------------------------- distributions
def test_categorical_quantities_against_scipy():
    rng = np.random.default_rng(RNG_SEED)
    lp_, lq_ = rng.normal(scale=2.0, size=(2, 7, 5))
    p = np.exp(lp_) / np.exp(lp_).sum(-1, keepdims=True)
    q = np.exp(lq_) / np.exp(lq_).sum(-1, keepdims=True)
    # scipy.stats.entropy(p) = -sum p log p and entropy(p, q) = KL(p || q) (nats)
    np.testing.assert_allclose(ref.categorical_entropy(lp_), scipy.stats.entropy(p, axis=-1),
                               rtol=1e-12)
    np.testing.assert_allclose(ref.categorical_kl(lp_, lq_), scipy.stats.entropy(p, q, axis=-1),
                               rtol=1e-10)
    a = rng.integers(0, 5, size=7)
    np.testing.assert_allclose(ref.categorical_log_prob(lp_, a),
                               scipy.special.log_softmax(lp_, -1)[np.arange(7), a], rtol=1e-12)


def test_gaussian_quantities_against_scipy():
    rng = np.random.default_rng(RNG_SEED)
    x, m = rng.normal(size=(2, 6, 3))
    ls = rng.uniform(-1.5, 0.5, size=(6, 3))
    np.testing.assert_allclose(ref.gaussian_log_prob(x, m, ls),
                               scipy.stats.norm.logpdf(x, m, np.exp(ls)).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(ref.gaussian_entropy(ls),
                               scipy.stats.norm.entropy(0.0, np.exp(ls)).sum(-1), rtol=1e-12)


def test_gaussian_kl_against_monte_carlo():
    # KL(p || q) = E_p[log p(x) - log q(x)]; 4e5 samples per distribution, 5 standard errors
    rng = np.random.default_rng(RNG_SEED)
    m1, m2 = rng.normal(size=(2, 4, 2))
    l1, l2 = rng.uniform(-1.0, 0.5, size=(2, 4, 2))
    x = m1 + np.exp(l1) * rng.standard_normal((400_000, 4, 2))
    diff = (scipy.stats.norm.logpdf(x, m1, np.exp(l1))
            - scipy.stats.norm.logpdf(x, m2, np.exp(l2))).sum(-1)
    se = diff.std(0) / np.sqrt(diff.shape[0])
    got = ref.gaussian_kl(m1, l1, m2, l2)
    assert np.all(np.abs(got - diff.mean(0)) <= 5 * se), (got, diff.mean(0), se)


def test_kl_estimators_are_unbiased_for_kl_q_p_and_k3_is_nonnegative():
    # Schulman (2020), "Approximating KL divergence": E_q[k1] = E_q[k3] = KL(q || p);
    # categorical q, p on 6 outcomes, 4e5 samples, 5 standard errors
    rng = np.random.default_rng(RNG_SEED)
    lq, lp = scipy.special.log_softmax(rng.normal(size=(2, 6)), -1)
    x = rng.choice(6, size=400_000, p=np.exp(lq))
    exact = float(np.sum(np.exp(lq) * (lq - lp)))
    for kind in ("k1", "k3"):
        est = ref.kl_estimator(lp[x], lq[x], kind)
        assert abs(est.mean() - exact) <= 5 * est.std() / np.sqrt(est.size), kind
    assert np.all(ref.kl_estimator(lp[x], lq[x], "k3") >= 0)
    np.testing.assert_allclose(ref.kl_estimator(lp, lq, "k2"), 0.5 * (lp - lq) ** 2)


def test_closed_form_kl_of_the_batch_check_is_the_reference():
    """The batch check's torch KL (autograd builds the Fisher from it) mirrors the reference."""
    torch = pytest.importorskip("torch")
    from pgtheory.oracles.batch import closed_form_kl

    rng = np.random.default_rng(RNG_SEED)
    lp_, lq_ = rng.normal(size=(2, 5, 4))
    t = torch.log_softmax(torch.tensor(lp_), -1), torch.log_softmax(torch.tensor(lq_), -1)
    np.testing.assert_allclose(closed_form_kl("categorical", (t[0],), (t[1],)).numpy(),
                               ref.categorical_kl(lp_, lq_), rtol=1e-12)
    m1, m2 = rng.normal(size=(2, 5, 3))
    l1, l2 = rng.uniform(-1, 0.5, size=(2, 5, 3))
    for defect, square in (("", True), ("gaussian_kl_no_square", False)):
        got = closed_form_kl("gaussian", (torch.tensor(m1), torch.tensor(np.exp(l1))),
                             (torch.tensor(m2), torch.tensor(np.exp(l2))), defect=defect)
        np.testing.assert_allclose(got.numpy(), ref.gaussian_kl(m1, l1, m2, l2,
                                                                square_std_ratio=square),
                                   rtol=1e-12)


# ---------------------------------------------------------------- TRPO machinery
def _spd(n, seed):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    return M @ M.T + 0.5 * np.eye(n), rng.normal(size=n)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_cg_iterate_minimizes_the_error_over_the_krylov_space(k):
    # Nocedal & Wright (2006), Theorem 5.2: x_k = argmin over K_k(A, b) of ||x - x*||_A,
    # computed here by a Galerkin solve on the Krylov basis
    A, b = _spd(8, k)
    V = np.linalg.qr(np.stack([np.linalg.matrix_power(A, j) @ b for j in range(k)], 1))[0]
    want = V @ np.linalg.solve(V.T @ A @ V, V.T @ b)
    res = ref.conjugate_gradient(A.__matmul__, b, k)
    np.testing.assert_allclose(res.x, want, rtol=1e-8, atol=1e-10)
    assert res.n_iter == k and not res.converged


def test_cg_solves_in_n_iterations_and_stopping_rules():
    A, b = _spd(6, 0)
    res = ref.conjugate_gradient(A.__matmul__, b, 50, relative_tol=1e-24)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), rtol=1e-8)
    assert res.converged and res.n_iter <= 8
    early = ref.conjugate_gradient(A.__matmul__, b, 10, residual_tol=1e12)
    assert early.n_iter == 0 and np.all(early.x == 0)
    x32 = ref.conjugate_gradient(A.__matmul__, b, 3, dtype=np.float32).x
    np.testing.assert_allclose(x32, ref.conjugate_gradient(A.__matmul__, b, 3).x, rtol=1e-3)


def test_cg_stops_on_a_breakdown_instead_of_dividing_by_zero():
    # A p = 0 (a direction in the null space), and a float32 residual so small that p^T A p
    # underflows: both would divide by zero; the solver stops, unconverged, with the iterate
    A = np.diag([1.0, 0.0])
    res = ref.conjugate_gradient(A.__matmul__, np.array([0.0, 1.0]), 5)
    assert not res.converged and res.n_iter == 0 and "breakdown" in res.message
    assert np.all(res.x == 0)
    tiny = np.full(4, 1e-19)  # r^T r = 4e-38 is a float32 number, A p = 1e-49 is not
    res = ref.conjugate_gradient(lambda v: 1e-30 * v, tiny, 5, dtype=np.float32)
    assert "breakdown" in res.message and np.all(np.isfinite(res.x))


def test_line_search_accepts_the_first_feasible_improving_backtrack():
    # Schulman et al. (2015), App. C: the first c^k full_step with KL <= delta and improvement
    step = np.array([1.0, 0.0])

    def kl(x):
        return 0.5 * float(x @ x)

    res = ref.backtracking_line_search(lambda x: float(x[0]), kl, np.zeros(2), step, 0.02,
                                       0.5, 10)
    # 0.5 (0.5^k)^2 <= 0.02 first at k = 3
    assert res.accepted and res.n_backtracks == 3
    np.testing.assert_allclose(res.x, 0.125 * step)
    none = ref.backtracking_line_search(lambda x: -float(x[0]), kl, np.zeros(2), step, 1.0,
                                        0.5, 4)
    assert not none.accepted and np.all(none.x == 0)
