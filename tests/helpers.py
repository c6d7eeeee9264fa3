"""Shared test helpers: Hypothesis strategies over MDPs and policies, finite differences.

These strategies are test-local; the exported, documented strategies belong to
``pgtheory.oracles.strategies`` (oracles issue).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import pgtheory as pg


@st.composite
def mdps(draw, *, max_states: int = 6, max_actions: int = 4, gamma_max: float = 0.99,
         allow_terminal: bool = True, sparse_successors: bool = True):
    """Random dense MDPs; shrinks towards S = 1..2, A = 1..2, seed 0, gamma 0."""
    S = draw(st.integers(1, max_states))
    A = draw(st.integers(1, max_actions))
    n_term = draw(st.integers(0, S - 1)) if (allow_terminal and S > 1) else 0
    k = draw(st.one_of(st.none(), st.integers(1, S))) if sparse_successors else None
    gamma = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, gamma_max]).filter(lambda g: g <= gamma_max))
    seed = draw(st.integers(0, 2**32 - 1))
    return pg.random_mdp(seed, S, A, gamma=gamma, n_successors=k, n_terminal=n_term)


@st.composite
def thetas(draw, n: int, scale: float = 2.0):
    """Flat parameter vectors of length n, N(0, scale^2) from a drawn seed."""
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).normal(scale=scale, size=n)


def policy_from(mdp: pg.TabularMDP, theta: np.ndarray) -> np.ndarray:
    return pg.TabularSoftmax(mdp.n_states, mdp.n_actions).probs(theta)


@st.composite
def mdp_and_policies(draw, n_policies: int = 1, **kwargs):
    mdp = draw(mdps(**kwargs))
    n = mdp.n_states * mdp.n_actions
    pis = [policy_from(mdp, draw(thetas(n))) for _ in range(n_policies)]
    return (mdp, *pis)


def fd_gradient(f, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Five-point central difference, error O(h^4) (Abramowitz & Stegun 25.3.6)."""
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return g


def fd_hessian(f, x: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Hessian by five-point differences of ``fd_gradient`` (error O(h^4))."""
    n = x.size
    H = np.zeros((n, n))
    for i in range(n):
        e = np.zeros_like(x)
        e[i] = h
        H[:, i] = (-fd_gradient(f, x + 2 * e, h) + 8 * fd_gradient(f, x + e, h)
                   - 8 * fd_gradient(f, x - e, h) + fd_gradient(f, x - 2 * e, h)) / (12 * h)
    return 0.5 * (H + H.T)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / max(1.0, np.max(np.abs(b))))
