"""Benchmarks: pgtheory against the per-state loop reference, in the same run.

Run with ``make bench``; the ratio table is printed by tests/benchmarks/ratios.py.
Groups: ``denseF-S{S}-A{A}`` / ``blockF-S{S}-A{A}`` (J + policy gradient + Fisher + natural
gradient for tabular softmax, the Fisher returned dense / block-sparse) and
``sparse-S100000-A4`` (values and visitation of a sparse model); ``lqr-n11-m3`` (LQR J + gradient +
Fisher at Hopper sizes, against a finite-difference gradient).
"""

import numpy as np
import pytest
from loop_reference import j_pg_fisher_ng, sparse_state_values

import pgtheory as pg

pytestmark = pytest.mark.bench


def ours(mdp, param, theta, sparse_fisher=False):
    pi = param.probs(theta)
    return (pg.expected_return(mdp, pi), pg.policy_gradient(mdp, param, theta),
            pg.fisher_matrix(mdp, param, theta, sparse=sparse_fisher),
            pg.natural_gradient(mdp, param, theta))


@pytest.fixture(scope="module", params=[(100, 10), (1000, 10)], ids=lambda p: f"S{p[0]}-A{p[1]}")
def dense_problem(request):
    S, A = request.param
    mdp = pg.random_mdp(0, S, A, gamma=0.99)
    param = pg.TabularSoftmax(S, A)
    theta = np.random.default_rng(0).normal(size=S * A)
    # the two implementations compute the same numbers (checked once, outside the timing)
    for sparse_fisher in (False, True):
        a = ours(mdp, param, theta, sparse_fisher)
        b = j_pg_fisher_ng(mdp.P, mdp.R, mdp.mu, mdp.gamma, theta, sparse_fisher)
        for x, y in zip(a, b, strict=True):
            x = x.toarray() if hasattr(x, "toarray") else x
            y = y.toarray() if hasattr(y, "toarray") else y
            assert np.allclose(x, y, rtol=1e-8, atol=1e-10)
    return S, A, mdp, param, theta


FISHER = pytest.mark.parametrize("sparse_fisher", [False, True], ids=["denseF", "blockF"])


@FISHER
def test_tabular_pgtheory(benchmark, dense_problem, sparse_fisher):
    S, A, mdp, param, theta = dense_problem
    benchmark.group = f"{'blockF' if sparse_fisher else 'denseF'}-S{S}-A{A}"
    benchmark.pedantic(ours, args=(mdp, param, theta, sparse_fisher), rounds=5, iterations=1,
                       warmup_rounds=1)


@FISHER
def test_tabular_loop_reference(benchmark, dense_problem, sparse_fisher):
    S, A, mdp, _, theta = dense_problem
    benchmark.group = f"{'blockF' if sparse_fisher else 'denseF'}-S{S}-A{A}"
    benchmark.pedantic(j_pg_fisher_ng, args=(mdp.P, mdp.R, mdp.mu, mdp.gamma, theta,
                                             sparse_fisher),
                       rounds=5, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def sparse_problem():
    S, A = 100_000, 4
    mdp = pg.random_mdp(0, S, A, gamma=0.99, n_successors=3, sparse=True)
    pi = np.random.default_rng(0).dirichlet(np.ones(A), size=S)
    assert np.allclose(pg.state_values(mdp, pi), sparse_state_values(mdp.P, mdp.R, 0.99, pi),
                       rtol=1e-8, atol=1e-8)
    return mdp, pi


def test_sparse_pgtheory(benchmark, sparse_problem):
    mdp, pi = sparse_problem
    benchmark.group = "sparse-S100000-A4"
    benchmark.pedantic(lambda: (pg.state_values(mdp, pi), pg.discounted_visitation(mdp, pi)),
                       rounds=5, iterations=1, warmup_rounds=1)


def test_sparse_loop_reference(benchmark, sparse_problem):
    mdp, pi = sparse_problem
    benchmark.group = "sparse-S100000-A4"

    def loop():
        v = sparse_state_values(mdp.P, mdp.R, 0.99, pi)
        # the visitation solve costs the same as the value solve in the loop version too
        sparse_state_values(mdp.P, mdp.R, 0.99, pi)
        return v

    benchmark.pedantic(loop, rounds=3, iterations=1, warmup_rounds=0)


@pytest.fixture(scope="module")
def lqr_problem():
    import pgtheory.lqr as lqr

    rng = np.random.default_rng(0)
    n, m = 11, 3  # Hopper-v5: 11-dimensional observation, 3 actuators
    A = rng.normal(size=(n, n))
    A *= 0.9 / np.abs(np.linalg.eigvals(A)).max()
    B = rng.normal(size=(n, m))
    model = lqr.LQRModel(A=A, B=B, Q=np.eye(n), R=np.eye(m), W=0.01 * np.eye(n),
                         Sigma0=np.eye(n), gamma=0.99)
    K = np.zeros((m, n))
    return lqr, model, K, np.full(m, -0.5)


def test_lqr_pgtheory(benchmark, lqr_problem):
    lqr, model, K, ls = lqr_problem
    benchmark.group = "lqr-n11-m3"

    def ours():
        return (lqr.expected_return(model, K, ls), lqr.policy_gradient(model, K, ls),
                lqr.fisher_matrix(model, K, ls))

    benchmark.pedantic(ours, rounds=20, iterations=1, warmup_rounds=2)


def test_lqr_loop_reference_finite_differences(benchmark, lqr_problem):
    # the peer: J plus a central finite-difference gradient (72 evaluations of J), the route
    # one takes without the closed-form gradient; the Fisher as in pgtheory
    lqr, model, K, ls = lqr_problem
    benchmark.group = "lqr-n11-m3"

    def fd():
        th = np.concatenate([K.ravel(), ls])
        g = np.zeros_like(th)
        for i in range(th.size):
            e = np.zeros_like(th)
            e[i] = 1e-5
            hi, lo = th + e, th - e
            g[i] = (lqr.expected_return(model, hi[:33].reshape(3, 11), hi[33:])
                    - lqr.expected_return(model, lo[:33].reshape(3, 11), lo[33:])) / 2e-5
        return lqr.expected_return(model, K, ls), g, lqr.fisher_matrix(model, K, ls)

    benchmark.pedantic(fd, rounds=5, iterations=1, warmup_rounds=1)
