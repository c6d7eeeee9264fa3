"""A straightforward per-state loop implementation: the peer in the benchmarks.

It computes the same quantities as pgtheory (J, policy gradient, Fisher, natural gradient for
tabular softmax; sparse policy evaluation) the way a first implementation usually does:
Python loops over states and actions around small numpy operations. It is checked against
pgtheory in tests/benchmarks/test_bench_core.py so that the benchmark compares equal work.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def softmax_rows(theta: np.ndarray, S: int, A: int) -> np.ndarray:
    pi = np.zeros((S, A))
    for s in range(S):
        z = theta[s * A:(s + 1) * A]
        e = np.exp(z - z.max())
        pi[s] = e / e.sum()
    return pi


def evaluate(P: np.ndarray, R: np.ndarray, mu: np.ndarray, gamma: float, pi: np.ndarray):
    S, A = R.shape
    P_pi = np.zeros((S, S))
    r_pi = np.zeros(S)
    for s in range(S):
        for a in range(A):
            P_pi[s] += pi[s, a] * P[s, a]
            r_pi[s] += pi[s, a] * R[s, a]
    M = np.eye(S) - gamma * P_pi
    v = np.linalg.solve(M, r_pi)
    d = (1 - gamma) * np.linalg.solve(M.T, mu)
    q = np.zeros((S, A))
    for s in range(S):
        for a in range(A):
            q[s, a] = R[s, a] + gamma * P[s, a] @ v
    return v, q, d


def j_pg_fisher_ng(P, R, mu, gamma, theta, sparse_fisher=False):
    """J, policy gradient, Fisher (dense, or block-sparse) and natural gradient, loop style."""
    S, A = R.shape
    pi = softmax_rows(theta, S, A)
    v, q, d = evaluate(P, R, mu, gamma, pi)
    J = float(mu @ v)
    g = np.zeros(S * A)
    F = None if sparse_fisher else np.zeros((S * A, S * A))
    blocks = []
    ng = np.zeros(S * A)
    for s in range(S):
        blk = slice(s * A, (s + 1) * A)
        Fs = np.zeros((A, A))
        for a in range(A):
            psi = -pi[s].copy()
            psi[a] += 1.0
            g[blk] += d[s] * pi[s, a] * (q[s, a] - v[s]) * psi / (1 - gamma)
            Fs += d[s] * pi[s, a] * np.outer(psi, psi)
        if sparse_fisher:
            blocks.append(Fs)
        else:
            F[blk, blk] = Fs
        ng[blk] = np.linalg.pinv(Fs, rtol=1e-12, hermitian=True) @ g[blk]
    if sparse_fisher:
        F = sp.csr_array(sp.block_diag(blocks, format="csr"))
    return J, g, F, ng


def sparse_state_values(P: sp.csr_array, R: np.ndarray, gamma: float, pi: np.ndarray):
    """Sparse evaluation with P_pi assembled state by state, then the same Krylov solve."""
    S, A = R.shape
    rows, cols, vals = [], [], []
    r_pi = np.zeros(S)
    indptr, indices, data = P.indptr, P.indices, P.data
    for s in range(S):
        acc: dict[int, float] = {}
        for a in range(A):
            i = s * A + a
            for k in range(indptr[i], indptr[i + 1]):
                acc[indices[k]] = acc.get(indices[k], 0.0) + pi[s, a] * data[k]
            r_pi[s] += pi[s, a] * R[s, a]
        rows.extend([s] * len(acc))
        cols.extend(acc.keys())
        vals.extend(acc.values())
    P_pi = sp.csr_array((vals, (rows, cols)), shape=(S, S))
    M = (sp.eye_array(S, format="csr") - gamma * P_pi).tocsr()
    v, info = spla.bicgstab(M, r_pi, rtol=1e-12, atol=0.0)
    if info != 0:
        raise RuntimeError(f"bicgstab did not converge (info={info})")
    return v
