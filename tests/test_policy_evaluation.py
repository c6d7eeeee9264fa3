"""PolicyEvaluation / pg.evaluate: one factorization per (MDP, policy), against independent routes.

The reference here solves the two linear systems with ``numpy.linalg.solve`` on the dense model
and forms the gradient, the Fisher matrix and the natural gradient from dense scores (Sutton et
al. 2000, Theorem 1; Kakade 2001, Sec. 3; Moore-Penrose pseudo-inverse of the whole Fisher), so
it shares no code with ``pgtheory.evaluation`` / ``pgtheory.gradients`` beyond the model.
"""

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse.linalg as spla

import pgtheory as pg
import pgtheory.evaluation as ev_mod
import pgtheory.gradients as gr_mod

# (seed, S, A, gamma, n_terminal, sparse, solver)
CASES = [
    (0, 6, 3, 0.9, 0, False, "auto"),
    (1, 7, 2, 0.99, 2, False, "auto"),
    (2, 9, 4, 0.95, 1, True, "iterative"),
    (3, 8, 3, 0.9, 0, True, "direct"),
    (4, 5, 5, 0.999, 0, False, "auto"),
    (5, 10, 3, 0.8, 3, True, "direct"),
]
IDS = [f"seed{c[0]}-S{c[1]}-A{c[2]}-g{c[3]}-term{c[4]}-{'sparse-' + c[6] if c[5] else 'dense'}"
       for c in CASES]


def make_mdp(case):
    seed, S, A, gamma, n_terminal, sparse, solver = case
    kw = dict(n_successors=3) if sparse else {}
    mdp = pg.random_mdp(seed, S, A, gamma=gamma, n_terminal=n_terminal, sparse=sparse, **kw)
    return mdp, solver


def make_param(mdp, kind, seed):
    rng = np.random.default_rng(seed)
    S, A = mdp.n_states, mdp.n_actions
    if kind == "tabular":
        param = pg.TabularSoftmax(S, A)
        return param, rng.normal(scale=1.5, size=param.n_params)
    if kind == "linear":
        param = pg.LinearSoftmax(rng.normal(size=(S, A, 3)))
        return param, rng.normal(size=3)
    param = pg.DirectParameterization(S, A)
    return param, rng.dirichlet(np.ones(A), size=S).ravel()


def reference(mdp, pi):
    """V, Q, A, J, d and the state weights w by dense numpy solves."""
    P = mdp.dense_P()
    S = mdp.n_states
    P_pi = np.einsum("sa,sat->st", pi, P)
    M = np.eye(S) - mdp.gamma * P_pi
    v = np.linalg.solve(M, (pi * mdp.R).sum(axis=1))
    rho = np.linalg.solve(M.T, mdp.mu)
    q = mdp.R + mdp.gamma * np.einsum("sat,t->sa", P, v)
    d = (1.0 - mdp.gamma) * rho
    return dict(V=v, Q=q, A=q - v[:, None], J=float(mdp.mu @ v), d=d, rho=rho,
                w=d * (~mdp.terminal))


def gradient_reference(mdp, param, theta):
    pi = param.probs(theta)
    ref = reference(mdp, pi)
    psi = param.score(theta)
    g = np.einsum("s,sa,sa,san->n", ref["d"], pi, ref["Q"], psi) / (1.0 - mdp.gamma)
    F = np.einsum("s,sa,san,sam->nm", ref["w"], pi, psi, psi)
    return g, F


def close(x, y, tol=1e-9):
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    return np.max(np.abs(x - y)) <= tol * max(1.0, np.max(np.abs(y)))


def check_values_match_reference(case):
    mdp, solver = make_mdp(case)
    pi = np.random.default_rng(case[0] + 100).dirichlet(np.ones(mdp.n_actions), mdp.n_states)
    ev = pg.PolicyEvaluation(mdp, pi, solver=solver)
    ref = reference(mdp, pi)
    assert close(ev.state_values(), ref["V"])
    assert close(ev.action_values(), ref["Q"])
    assert close(ev.advantages(), ref["A"])
    assert close(ev.expected_return(), ref["J"])
    assert close(ev.discounted_visitation(), ref["d"])
    assert close(ev.discounted_visitation(normalized=False), ref["rho"])
    assert close(ev.action_state_weights(), ref["w"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_and_visitation_match_dense_numpy_solves(case):
    check_values_match_reference(case)


@pytest.mark.parametrize("kind", ["tabular", "linear", "direct"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_fisher_natural_gradient_match_dense_scores(case, kind):
    mdp, solver = make_mdp(case)
    param, theta = make_param(mdp, kind, case[0])
    ev = pg.evaluate(mdp, param, theta, solver=solver)
    g, F = gradient_reference(mdp, param, theta)
    assert close(ev.policy_gradient(), g)
    assert close(ev.fisher_matrix(), F)
    assert close(ev.fisher_matrix(sparse=True), F)
    assert close(ev.kl_hessian(), F)
    if kind == "direct":
        return  # the direct Fisher is diagonal 1/pi-weighted; its pseudo-inverse is below
    # minimum-norm solution of F x = g through the whole matrix (not block by block)
    x = np.linalg.pinv(F, rtol=1e-10, hermitian=True) @ g
    assert close(ev.natural_gradient(), x, tol=1e-7)


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_object_equals_the_module_functions_bit_for_bit(case):
    # the functions are wrappers: same numbers, not merely close ones
    mdp, solver = make_mdp(case)
    param, theta = make_param(mdp, "tabular", case[0])
    pi = param.probs(theta)
    ev = pg.evaluate(mdp, param, theta, solver=solver)
    kw = dict(solver=solver)
    assert np.array_equal(ev.state_values(), pg.state_values(mdp, pi, **kw))
    assert np.array_equal(ev.action_values(), pg.action_values(mdp, pi, **kw))
    assert np.array_equal(ev.advantages(), pg.advantages(mdp, pi, **kw))
    assert ev.expected_return() == pg.expected_return(mdp, pi, **kw)
    assert np.array_equal(ev.discounted_visitation(False),
                          pg.discounted_visitation(mdp, pi, normalized=False, **kw))
    assert np.array_equal(ev.policy_gradient(), pg.policy_gradient(mdp, param, theta, **kw))
    if solver == "auto":  # fisher_matrix / natural_gradient take the default solver
        assert np.array_equal(ev.fisher_matrix(), pg.fisher_matrix(mdp, param, theta))
        assert np.array_equal(ev.natural_gradient(), pg.natural_gradient(mdp, param, theta))
        assert np.array_equal(ev.action_state_weights(), pg.action_state_weights(mdp, pi))


def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3], CASES[2]],
                         ids=[IDS[0], IDS[1], IDS[3], IDS[2]])
def test_one_factorization_and_two_solves_serve_every_quantity(case, monkeypatch):
    mdp, solver = make_mdp(case)
    param, theta = make_param(mdp, "tabular", case[0])
    factorizations = count_calls(monkeypatch, sla if not mdp.is_sparse else spla,
                                 "lu_factor" if not mdp.is_sparse else "splu")
    solves = count_calls(monkeypatch, ev_mod.BellmanSystem, "solve")
    ev = pg.evaluate(mdp, param, theta, solver=solver)
    assert (len(factorizations), len(solves)) == (0, 0)  # lazy: nothing solved yet
    for _ in range(2):  # asking twice costs nothing more
        ev.expected_return(), ev.state_values(), ev.action_values(), ev.advantages()
        ev.discounted_visitation(), ev.discounted_visitation(False), ev.action_state_weights()
        ev.policy_gradient(), ev.fisher_matrix(), ev.fisher_matrix(sparse=True)
        ev.natural_gradient(), ev.natural_gradient(1e-8), ev.kl_hessian()
    expected = 0 if mdp.is_sparse and solver == "iterative" else 1
    assert len(factorizations) == expected == ev.system.n_factorizations
    assert len(solves) == 2  # V (M x = r_pi) and rho (M^T x = mu)


def test_the_separate_functions_factorize_once_each(monkeypatch):
    # what the object saves: J, gradient, Fisher and natural gradient called one by one
    mdp, _ = make_mdp(CASES[0])
    param, theta = make_param(mdp, "tabular", 0)
    factorizations = count_calls(monkeypatch, sla, "lu_factor")
    pg.expected_return(mdp, param.probs(theta))
    pg.policy_gradient(mdp, param, theta)
    pg.fisher_matrix(mdp, param, theta)
    pg.natural_gradient(mdp, param, theta)
    assert len(factorizations) == 4


def test_cached_results_are_read_only_and_independent_of_call_order():
    mdp, _ = make_mdp(CASES[1])
    param, theta = make_param(mdp, "tabular", 1)
    a = pg.evaluate(mdp, param, theta)
    b = pg.evaluate(mdp, param, theta)
    # a: values first; b: natural gradient first (which pulls in everything it needs)
    first = [a.state_values(), a.advantages(), a.discounted_visitation(), a.policy_gradient(),
             a.natural_gradient()]
    b.natural_gradient()
    second = [b.state_values(), b.advantages(), b.discounted_visitation(), b.policy_gradient(),
              b.natural_gradient()]
    for x, y in zip(first, second, strict=True):
        assert np.array_equal(x, y)
        with pytest.raises(ValueError, match="read-only"):
            x[0] = 1.0
    for arr in (a.policy, a.theta, a.fisher_blocks(), a.action_values()):
        assert not arr.flags.writeable
    # matrices are handed out fresh: editing one leaves the next untouched
    F = a.fisher_matrix()
    F[:] = 0.0
    assert np.array_equal(a.fisher_matrix(), b.fisher_matrix())
    Fs = a.fisher_matrix(sparse=True)
    Fs.data[:] = 0.0
    assert np.array_equal(a.fisher_matrix(sparse=True).toarray(), b.fisher_matrix())
    # the policy is a private copy: changing the caller's array later changes nothing
    pi = param.probs(theta)
    c = pg.PolicyEvaluation(mdp, pi)
    v = c.state_values().copy()
    pi[:] = 1.0 / mdp.n_actions
    assert np.array_equal(c.state_values(), v)


def test_module_functions_still_return_writable_arrays():
    mdp, _ = make_mdp(CASES[0])
    param, theta = make_param(mdp, "tabular", 0)
    pi = param.probs(theta)
    outs = [pg.state_values(mdp, pi), pg.action_values(mdp, pi), pg.advantages(mdp, pi),
            pg.discounted_visitation(mdp, pi), pg.action_state_weights(mdp, pi),
            pg.policy_gradient(mdp, param, theta), pg.natural_gradient(mdp, param, theta),
            pg.fisher_matrix(mdp, param, theta)]
    for x in outs:
        assert x.flags.writeable


def pinv_blocks(blocks, g, rtol):
    return (np.linalg.pinv(blocks, rtol=rtol, hermitian=True) @ g[:, :, None])[:, :, 0]


@pytest.mark.parametrize("rtol", [1e-12, 1e-6, 1e-3, 1e-15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tabular_natural_gradient_equals_blockwise_pseudo_inverse(seed, rtol):
    # extreme logits (probabilities down to ~1e-26) and terminal states (w = 0) exercise both
    # the closed form and the eigendecomposition fallback, at several cutoffs
    mdp = pg.random_mdp(seed, 12, 4, gamma=0.95, n_terminal=2)
    param = pg.TabularSoftmax(12, 4)
    theta = np.random.default_rng(seed).normal(size=48)
    theta[: 4 * 4] *= 30.0
    ev = pg.evaluate(mdp, param, theta)
    x = ev.natural_gradient(rtol).reshape(12, 4)
    assert np.array_equal(x.ravel(), pg.natural_gradient(mdp, param, theta, rtol=rtol))
    pi = param.probs(theta)
    ref = reference(mdp, pi)
    w = ref["w"]
    pinv = pinv_blocks(ev.fisher_blocks(), ev.policy_gradient().reshape(12, 4), rtol)
    pmin, pmax = pi.min(axis=1), pi.max(axis=1)
    if rtol < gr_mod._CLOSED_FORM_MIN_RTOL:
        # below round-off the computed null eigenvalue may survive the cutoff: the documented
        # behaviour is then the eigendecomposition's, block by block, whatever it gives
        assert close(x, pinv, tol=1e-12)
        return
    n_checked = 0
    for s in range(12):
        if w[s] == 0:  # zero block: its pseudo-inverse is 0
            assert np.all(x[s] == 0.0)
        elif pmin[s] > 10 * rtol * pmax[s]:
            # every non-zero eigenvalue kept (interlacing: they lie in [pmin, pmax] * w):
            # Agarwal et al. (2021), Lemma 5.1: the centred advantage over (1 - gamma)
            a = ref["A"][s]
            assert close(x[s], (a - a.mean()) / (1.0 - mdp.gamma), tol=1e-8)
            if pmax[s] / pmin[s] < 1e6:  # and the eigendecomposition is accurate here
                assert close(x[s], pinv[s], tol=1e-7)
            n_checked += 1
        elif pmin[s] < 0.1 * rtol * pmax[s]:  # a direction cut: as the eigendecomposition
            assert close(x[s], pinv[s], tol=1e-8)
    assert n_checked >= 6


# ------------------------------------------------------------------- seeded defects
def solve_ignoring_transpose(self, b, *, transpose=False):
    # defect: the visitation solved with M instead of M^T (the same factors, wrong trans flag)
    return ORIG_SOLVE(self, b, transpose=False)


ORIG_SOLVE = ev_mod.BellmanSystem.solve


def natural_gradient_uncentred(pi, w, g, blocks, rtol):
    # defect: the closed form without projecting out the null direction (not minimum-norm)
    y = g / np.where(w[:, None] > 0, w[:, None] * pi, 1.0)
    return np.where(w[:, None] > 0, y, 0.0).ravel()


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]],
                         ids=[IDS[0], IDS[2], IDS[3]])
def test_seeded_defect_non_transposed_visitation_solve_is_caught(case, monkeypatch):
    monkeypatch.setattr(ev_mod.BellmanSystem, "solve", solve_ignoring_transpose)
    with pytest.raises(AssertionError):
        check_values_match_reference(case)


def test_seeded_defect_uncentred_natural_gradient_is_caught(monkeypatch):
    monkeypatch.setattr(gr_mod, "_tabular_natural_gradient", natural_gradient_uncentred)
    with pytest.raises(AssertionError):
        test_tabular_natural_gradient_equals_blockwise_pseudo_inverse(0, 1e-12)
    with pytest.raises(AssertionError):
        test_gradient_fisher_natural_gradient_match_dense_scores(CASES[0], "tabular")


# ---------------------------------------------------------------------------- errors
def test_bad_input_raises_value_errors_naming_the_argument():
    mdp, _ = make_mdp(CASES[0])
    param, theta = make_param(mdp, "tabular", 0)
    with pytest.raises(pg.InvalidPolicyError):
        pg.PolicyEvaluation(mdp, np.ones((mdp.n_states, mdp.n_actions)))
    with pytest.raises(pg.InvalidArgumentError, match="solver"):
        pg.PolicyEvaluation(mdp, param.probs(theta), solver="lu")
    with pytest.raises(pg.InvalidArgumentError, match="theta"):
        pg.evaluate(mdp, param, theta[:-1])
    with pytest.raises(pg.InvalidArgumentError, match="param"):
        pg.evaluate(mdp, pg.TabularSoftmax(mdp.n_states + 1, mdp.n_actions), theta)
    with pytest.raises(pg.InvalidArgumentError, match="rtol"):
        pg.evaluate(mdp, param, theta).natural_gradient(rtol=0.0)
    lin, th = make_param(mdp, "linear", 0)
    with pytest.raises(TypeError, match="TabularSoftmax"):
        pg.evaluate(mdp, lin, th).fisher_blocks()
    for err in (pg.InvalidPolicyError, pg.InvalidArgumentError):
        assert issubclass(err, ValueError)


@pytest.mark.parametrize("sparse,solver", [(False, "auto"), (True, "direct"),
                                           (True, "iterative")])
def test_singular_system_raises_solver_error(sparse, solver):
    import scipy.sparse as sp

    P = np.array([[1.0, 0.0], [0.0, 1.0]])  # I - 1.0 * P = 0
    P = sp.csr_array(P) if sparse else P
    with pytest.raises(pg.SolverError):
        ev_mod.BellmanSystem(P, 1.0, solver).solve(np.ones(2))
    # nearly singular: reciprocal condition number below machine epsilon (dense check)
    if not sparse:
        with pytest.raises(pg.SolverError, match="ill-conditioned"):
            ev_mod.BellmanSystem(np.array([[0.0, 0.0], [0.0, 1.0 - 2.0**-53]]), 1.0)


def test_an_mdp_that_is_not_a_tabular_mdp_is_a_type_error():
    # a string or dict where the MDP belongs used to surface as an AttributeError
    param = pg.TabularSoftmax(5, 3)
    for call in (lambda: pg.evaluate("mdp", param, np.zeros(15)),
                 lambda: pg.PolicyEvaluation({"P": 0}, np.full((5, 3), 1 / 3)),
                 lambda: pg.policy_gradient("mdp", param, np.zeros(15))):
        with pytest.raises(TypeError, match="mdp: expected a TabularMDP"):
            call()
