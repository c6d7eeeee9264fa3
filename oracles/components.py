"""Layer 1, components: pure functions an implementation exposes, against reference formulas.

Every check takes the implementation's function (adapted to the signature documented on the
check) and returns a :class:`~pgtheory.oracles.results.CheckResult`. Inputs are generated from a
fixed seed (``seed=`` varies them). Every expected value comes from :mod:`pgtheory.references`.
On a mismatch the check replays the known defects of the registry
(:func:`pgtheory.oracles.defects.tried_by`) on the same inputs; when one reproduces the
implementation's output, the explanation names it (``[catalogue: NAME]``). Exceptions and NaN
from the implementation are reported as failures, never raised.

Array conventions: rollouts are time-major ``(T, N)`` numpy arrays with gymnasium flags and
``next_values[t] = V(s_{t+1})`` of the true next state (see :mod:`pgtheory.advantage_estimation`).
Loss functions take and return ``torch`` tensors (float64) so their gradients can be checked.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
from pgtheory.oracles.defects import tried_by
from pgtheory.oracles.results import CheckResult
from pgtheory.oracles.rollouts import simulate_rollout

import pgtheory as pg
from pgtheory import references as ref

__all__ = [
    "check_backtracking_line_search",
    "check_categorical_entropy",
    "check_categorical_kl",
    "check_clipped_surrogate_loss",
    "check_clipped_value_loss",
    "check_conjugate_gradient",
    "check_discounted_returns",
    "check_gae",
    "check_gaussian_entropy",
    "check_gaussian_kl",
    "check_gaussian_log_prob",
    "check_kl_estimator",
    "check_lambda_returns",
]

Variant = tuple[str, Callable]


# ------------------------------------------------------------------------------ engine
def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _compare(name: str, observed_fn: Callable, reference_fn: Callable,
             variants: Sequence[Variant], inputs: Sequence[dict], *, rtol: float, atol: float,
             allow_positive_scale: bool = False, what: str = "output") -> CheckResult:
    note = ""
    for i, kw in enumerate(inputs):
        want = _as_array(reference_fn(**kw))
        try:
            got = _as_array(observed_fn(**kw))
        except Exception as exc:  # the implementation's failure is a finding, not a crash
            return CheckResult(name, "components", "fail", "a result", f"{type(exc).__name__}",
                               f"the implementation raised {type(exc).__name__}: {exc}",
                               tolerance=rtol)
        if got.shape != want.shape:
            if got.size == want.size:
                got = got.reshape(want.shape)
            else:
                return CheckResult(name, "components", "fail", f"shape {want.shape}",
                                   f"shape {got.shape}", f"returned {what} of shape {got.shape}, "
                                   f"expected {want.shape}", tolerance=rtol)
        if not np.all(np.isfinite(got)):
            return CheckResult(name, "components", "fail", "finite values", "NaN/inf",
                               f"returned non-finite {what} on input {i}", tolerance=rtol)
        if np.allclose(got, want, rtol=rtol, atol=atol):
            continue
        if allow_positive_scale:
            denom = float(want.ravel() @ want.ravel())
            scale = float(got.ravel() @ want.ravel()) / denom if denom > 0 else 0.0
            if scale > 0 and np.allclose(got, scale * want, rtol=rtol, atol=atol):
                note = (f" (equal up to the positive factor {scale:.6g}, e.g. a sum instead of a "
                        f"mean or a 1/2: a convention, harmless under step-size-normalizing "
                        f"optimizers)")
                continue
        for label, fn in variants:
            try:
                alt = _as_array(fn(**kw))
            except Exception:  # a variant that cannot run on this input cannot explain it
                continue
            if alt.shape == got.shape and np.allclose(got, alt, rtol=rtol, atol=atol):
                return CheckResult(name, "components", "fail", _summary(want), _summary(got),
                                   f"{what} differs from the reference; it matches the known "
                                   f"defect: {label}", tolerance=rtol)
        err = float(np.max(np.abs(got - want)))
        return CheckResult(name, "components", "fail", _summary(want), _summary(got),
                           f"{what} differs from the reference by up to {err:.3g} on input {i}; "
                           f"no catalogued defect reproduces it", tolerance=rtol)
    return CheckResult(name, "components", "pass", "reference", "matches",
                       f"matches the reference on {len(inputs)} generated inputs{note}",
                       tolerance=rtol)


def _summary(a: np.ndarray) -> str:
    flat = a.ravel()
    head = ", ".join(f"{v:.4g}" for v in flat[:4])
    return f"[{head}{', ...' if flat.size > 4 else ''}] shape {a.shape}"


# ----------------------------------------------------------------------- rollouts
def _rollout_inputs(n_batches: int, seed: int, gamma: float, lam: float | None) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        mdp = pg.random_mdp(rng, int(rng.integers(3, 7)), 2, gamma=gamma,
                            n_terminal=int(rng.integers(1, 3)))
        pi = rng.dirichlet(np.ones(2), size=mdp.n_states)
        b = simulate_rollout(mdp, pi, num_steps=int(rng.integers(5, 16)),
                             num_envs=int(rng.integers(1, 4)), time_limit=int(rng.integers(2, 6)),
                             rng=rng)
        V = rng.normal(size=mdp.n_states)
        kw = dict(rewards=b.rewards + rng.normal(scale=0.1, size=b.rewards.shape),
                  values=V[b.states], next_values=V[b.next_states], terminated=b.terminated,
                  truncated=b.truncated, gamma=gamma)
        if lam is not None:
            kw["lam"] = lam
        out.append(kw)
    return out


def _variants(check: str, reference: Callable, family: str,
              adapt: Callable = lambda f: f) -> list[Variant]:
    """The registry's defects that ``check`` replays, as (label, function of the inputs)."""
    return [(d.label, adapt(d.applied_to(reference))) for d in tried_by(check, family)]


def _gae_ref(**k):
    """:func:`pgtheory.references.gae` on the check's inputs (keyword arguments)."""
    return ref.gae(**{n: k[n] for n in ("rewards", "values", "terminated", "truncated", "gamma",
                                        "lam", "next_values")},
                   **{n: v for n, v in k.items() if n in ("td_discount", "trace_decay",
                                                          "cut_trace_at_truncation")})


def check_gae(gae_fn: Callable, *, gamma: float = 0.99, lam: float = 0.95, n_batches: int = 20,
              seed: int = 0, rtol: float = 1e-6, atol: float = 1e-6) -> CheckResult:
    """GAE on rollouts with terminations, time-limit truncations and buffer ends.

    ``gae_fn(rewards, values, terminated, truncated, gamma, lam, next_values=...) ->
    advantages``, arrays of shape (T, N) (numpy or torch): the argument order of
    :func:`pgtheory.gae`, ``next_values`` passed by keyword. Reference: :func:`pgtheory.gae`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16); the defect registry
    :mod:`pgtheory.oracles.defects`.
    """
    return _compare("components.gae", lambda **k: gae_fn(
        k["rewards"], k["values"], k["terminated"], k["truncated"], k["gamma"], k["lam"],
        next_values=k["next_values"]), _gae_ref, _variants("components.gae", _gae_ref, "gae"),
        _rollout_inputs(n_batches, seed, gamma, lam), rtol=rtol, atol=atol, what="advantages")


def _returns_ref(**k):
    """:func:`pgtheory.references.discounted_returns` on the check's inputs."""
    return ref.discounted_returns(k["rewards"], k["terminated"], k["truncated"], k["gamma"],
                                  next_values=k["next_values"])


def check_discounted_returns(returns_fn: Callable, *, gamma: float = 0.99, n_batches: int = 20,
                             seed: int = 0, rtol: float = 1e-6,
                             atol: float = 1e-6) -> CheckResult:
    """Bootstrapped discounted returns (reward-to-go) on rollouts.

    ``returns_fn(rewards, terminated, truncated, gamma, next_values=...) -> returns`` (T, N), the
    argument order of :func:`pgtheory.discounted_returns` (the reference).

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Sutton & Barto (2018), Eq. (3.9); catalogue entries ``truncation_as_termination``,
    ``no_bootstrap_at_buffer_end``, ``rewards_shifted``.
    """
    return _compare("components.discounted_returns", lambda **k: returns_fn(
        k["rewards"], k["terminated"], k["truncated"], k["gamma"], next_values=k["next_values"]),
        _returns_ref, _variants("components.discounted_returns", _returns_ref,
                                "discounted_returns"),
        _rollout_inputs(n_batches, seed, gamma, None), rtol=rtol, atol=atol, what="returns")


def check_lambda_returns(lambda_returns_fn: Callable, *, gamma: float = 0.99, lam: float = 0.95,
                         n_batches: int = 20, seed: int = 0, rtol: float = 1e-6,
                         atol: float = 1e-6) -> CheckResult:
    """TD(lambda) returns on rollouts.

    ``lambda_returns_fn(rewards, terminated, truncated, gamma, lam, next_values=...)`` (T, N), the
    argument order of :func:`pgtheory.lambda_returns` (the reference; equal to GAE + V on
    collected rollouts).

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Sutton & Barto (2018), Eq. (12.3); Schulman et al. (2016), Sec. 3.
    """
    def lambda_ref(**k):
        return ref.lambda_returns(k["rewards"], k["terminated"], k["truncated"], k["gamma"],
                                  k["lam"], next_values=k["next_values"])

    # a defect of GAE is the same defect of the lambda-return GAE + V
    variants = _variants("components.lambda_returns", _gae_ref, "gae",
                         lambda f: lambda **k: f(**k) + k["values"])
    return _compare("components.lambda_returns", lambda **k: lambda_returns_fn(
        k["rewards"], k["terminated"], k["truncated"], k["gamma"], k["lam"],
        next_values=k["next_values"]),
        lambda_ref, variants, _rollout_inputs(n_batches, seed, gamma, lam), rtol=rtol, atol=atol,
        what="lambda-returns")


# ------------------------------------------------------------------- torch losses
def _torch():
    import torch

    return torch


def _loss_inputs(n: int, seed: int, clip_range: float) -> list[dict]:
    torch = _torch()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        B = int(rng.integers(8, 64))
        logp_old = np.log(rng.uniform(0.05, 0.95, size=B))
        # ratios spread over both sides of the clip range (about a third outside)
        log_ratio = rng.normal(scale=2.5 * clip_range, size=B)
        out.append(dict(logp_new=torch.tensor(logp_old + log_ratio, dtype=torch.float64),
                        logp_old=torch.tensor(logp_old, dtype=torch.float64),
                        advantages=torch.tensor(rng.normal(size=B), dtype=torch.float64),
                        clip_range=clip_range))
    return out


PPO_ARGS = ("logp_new", "logp_old", "advantages", "clip_range")
VALUE_ARGS = ("values", "values_old", "returns", "clip_range")


def _value_and_grad(fn: Callable, wrt: str, order: tuple[str, ...]) -> Callable:
    """Wrap a torch loss called positionally in ``order``: returns [loss, d loss / d wrt]."""
    torch = _torch()

    def run(**k):
        x = k[wrt].detach().clone().requires_grad_(True)
        args = {**k, wrt: x}
        loss = fn(*(args[name] for name in order))
        if not torch.is_tensor(loss) or loss.numel() != 1:
            raise TypeError(f"expected a scalar torch loss, received {type(loss).__name__}")
        (g,) = torch.autograd.grad(loss, x, allow_unused=True)
        g = torch.zeros_like(x) if g is None else g
        return np.concatenate([[float(loss.detach())], g.detach().cpu().numpy().ravel()])

    return run


def _numpy_loss(loss: Callable, gradient: Callable, names: dict[str, str]) -> Callable:
    """A reference loss on the check's torch inputs: returns [loss, d loss / d input]
    (``names`` maps the check's argument names to the reference's)."""
    def run(**k):
        kw = {names.get(n, n): (_as_array(v) if hasattr(v, "detach") else v)
              for n, v in k.items()}
        return np.concatenate([[loss(**kw)], np.ravel(gradient(**kw))])
    return run


_PPO_NAMES = {"logp_new": "log_probs", "logp_old": "old_log_probs"}


def _ppo_variants() -> list[Variant]:
    return [(d.label, _numpy_loss(d.applied_to(ref.clipped_surrogate_loss),
                                  d.applied_to(ref.clipped_surrogate_loss_gradient), _PPO_NAMES))
            for d in tried_by("components.clipped_surrogate_loss", "clipped_surrogate_loss")]


def check_clipped_surrogate_loss(loss_fn: Callable, *, clip_range: float = 0.2,
                                 n_batches: int = 20, seed: int = 0, rtol: float = 1e-6,
                                 atol: float = 1e-8) -> CheckResult:
    """PPO clipped surrogate loss (to minimize) and its gradient in ``logp_new``.

    ``loss_fn(logp_new, logp_old, advantages, clip_range) -> scalar torch loss`` with
    1-D float64 tensors. Reference ``-mean(min(r A, clip(r, 1 - eps, 1 + eps) A))``; a positive
    rescaling (sum instead of mean) passes with a note.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Schulman et al. (2017), arXiv:1707.06347v2, Eq. (7); proofs theorem ppo_clip_gradient.
    """
    return _compare("components.clipped_surrogate_loss",
                    _value_and_grad(loss_fn, "logp_new", PPO_ARGS),
                    _numpy_loss(ref.clipped_surrogate_loss, ref.clipped_surrogate_loss_gradient,
                                _PPO_NAMES), _ppo_variants(),
                    _loss_inputs(n_batches, seed, clip_range), rtol=rtol, atol=atol,
                    allow_positive_scale=True, what="[loss, gradient]")


def _value_reference(**switches) -> Callable:
    """:func:`pgtheory.references.value_loss` and its gradient on the check's inputs."""
    return _numpy_loss(functools.partial(ref.value_loss, **switches),
                       functools.partial(ref.value_loss_gradient, **switches), {})


def check_clipped_value_loss(loss_fn: Callable, *, clip_range: float = 0.2, n_batches: int = 20,
                             seed: int = 0, rtol: float = 1e-6,
                             atol: float = 1e-8) -> CheckResult:
    """PPO clipped value loss and its gradient in ``values``.

    ``loss_fn(values, values_old, returns, clip_range) -> scalar torch loss``. Two references,
    each a form a mainstream library uses, with ``v_clip = v_old + clip(v - v_old, -eps,
    eps)``: ``0.5 mean(max((v - R)^2, (v_clip - R)^2))`` (OpenAI baselines ``ppo2/model.py``;
    CleanRL ``ppo.py`` with ``clip_vloss``; Engstrom et al. 2020, arXiv:2005.12729v1, Sec. 3)
    and the clipped prediction alone, ``mean((v_clip - R)^2)`` (Stable-Baselines3
    ``ppo/ppo.py``: ``F.mse_loss(returns, values_pred)``); the pass explanation says which
    matched. Positive rescalings (no 0.5, sum) pass with a note.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    OpenAI baselines ppo2 value clipping; catalogue entry ``value_clip_gradient_vanishes``
    (RLlib #19291).
    """
    torch = _torch()
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(n_batches):
        B = int(rng.integers(8, 64))
        old = rng.normal(size=B)
        inputs.append(dict(values=torch.tensor(old + rng.normal(scale=2.5 * clip_range, size=B)),
                           values_old=torch.tensor(old),
                           returns=torch.tensor(old + rng.normal(size=B)),
                           clip_range=clip_range))

    variants = [(d.label, _numpy_loss(d.applied_to(ref.value_loss),
                                       d.applied_to(ref.value_loss_gradient), {}))
                for d in tried_by("components.clipped_value_loss", "value_loss")]
    observed = _value_and_grad(loss_fn, "values", VALUE_ARGS)
    res = _compare("components.clipped_value_loss", observed,
                   _value_reference(form="max"), variants, inputs, rtol=rtol,
                   atol=atol, allow_positive_scale=True, what="[loss, gradient]")
    if res.verdict == "pass":
        return dataclasses.replace(res, explanation=f"matched: max((V - R)^2, (V_clip - R)^2) "
                                                    f"(OpenAI baselines ppo2, CleanRL); "
                                                    f"{res.explanation}")
    sb3 = _compare("components.clipped_value_loss", observed,
                   _value_reference(form="clipped_prediction"), [],
                   inputs, rtol=rtol, atol=atol, allow_positive_scale=True,
                   what="[loss, gradient]")
    if sb3.verdict == "pass":
        return dataclasses.replace(sb3, explanation=f"matched: clipped prediction (V_clip - "
                                                    f"R)^2 (Stable-Baselines3 ppo/ppo.py); "
                                                    f"{sb3.explanation}")
    return res


# ------------------------------------------------------------- distributions
def _numpy_ref(reference: Callable) -> Callable:
    """``reference`` called with the check's inputs converted to float64 numpy arrays."""
    return lambda **k: reference(**{n: _as_array(v) if hasattr(v, "detach") else v
                                    for n, v in k.items()})


def _distribution_variants(check: str, family: str, reference: Callable) -> list[Variant]:
    return [(d.label, _numpy_ref(d.applied_to(reference))) for d in tried_by(check, family)]


def _logits_inputs(n: int, seed: int) -> list[dict]:
    torch = _torch()
    rng = np.random.default_rng(seed)
    return [dict(logits=torch.tensor(rng.normal(scale=2.0, size=(int(rng.integers(2, 20)),
                                                                  int(rng.integers(2, 6))))))
            for _ in range(n)]


def check_categorical_entropy(entropy_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                              rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Entropy of categorical policies from logits: ``entropy_fn(logits (B, A)) -> (B,)``.

    Reference :func:`pgtheory.references.categorical_entropy`, ``-sum_a p log p`` with ``p =
    softmax(logits)`` (nats).

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Cover & Thomas (2006), Sec. 2.1; catalogue entries ``entropy_wrong_sign``,
    ``entropy_in_bits``.
    """
    name = "components.categorical_entropy"
    return _compare(name, lambda **k: entropy_fn(k["logits"]),
                    _numpy_ref(ref.categorical_entropy),
                    _distribution_variants(name, "categorical_entropy", ref.categorical_entropy),
                    _logits_inputs(n_batches, seed), rtol=rtol, atol=atol, what="entropy")


def check_categorical_kl(kl_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                         rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Exact ``KL(p || q)`` between categorical distributions given by logits.

    ``kl_fn(logits_p (B, A), logits_q (B, A)) -> (B,)``; reference
    :func:`pgtheory.references.categorical_kl`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Cover & Thomas (2006), Eq. (2.26); catalogue entry ``kl_direction_reversed``.
    """
    torch = _torch()
    inputs = [dict(logits_p=k["logits"], logits_q=k["logits"] + torch.randn(
        k["logits"].shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64))
        for i, k in enumerate(_logits_inputs(n_batches, seed))]
    name = "components.categorical_kl"
    return _compare(name, lambda **k: kl_fn(**k), _numpy_ref(ref.categorical_kl),
                    _distribution_variants(name, "categorical_kl", ref.categorical_kl), inputs,
                    rtol=rtol, atol=atol, what="KL")


def check_kl_estimator(estimator_fn: Callable, kind: str, *, n_batches: int = 10, seed: int = 0,
                       rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Per-sample KL estimators of ``KL(q || p)`` from samples ``x ~ q``.

    ``estimator_fn(logp, logq) -> (B,)`` where ``logp = log p(x)``, ``logq = log q(x)``;
    ``kind`` is ``"k1"`` (``-log r``), ``"k2"`` (``(log r)^2 / 2``) or ``"k3"``
    (``(r - 1) - log r``), ``r = p(x) / q(x)``; reference
    :func:`pgtheory.references.kl_estimator`.

    Returns
    -------
    CheckResult

    Raises
    ------
    ValueError
        Unknown ``kind``.

    References
    ----------
    Schulman (2020), "Approximating KL divergence"; proofs theorem kl_estimators.
    """
    torch = _torch()
    if kind not in ("k1", "k2", "k3"):
        raise ValueError(f"kind: expected 'k1', 'k2' or 'k3', received {kind!r}")
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(n_batches):
        B = int(rng.integers(8, 64))
        logq = torch.tensor(np.log(rng.uniform(0.05, 1.0, size=B)))
        inputs.append(dict(logp=logq + torch.tensor(rng.normal(scale=0.5, size=B)), logq=logq))

    def adapt(reference: Callable) -> Callable:
        return lambda logp, logq: reference(log_p=_as_array(logp), log_q=_as_array(logq),
                                            kind=kind)

    name = f"components.kl_estimator_{kind}"
    return _compare(name, lambda **k: estimator_fn(**k), adapt(ref.kl_estimator),
                    [(d.label, adapt(d.applied_to(ref.kl_estimator)))
                     for d in tried_by(name, "kl_estimator")], inputs, rtol=rtol, atol=atol,
                    what=f"{kind} estimates")


def _gaussian_inputs(n: int, seed: int) -> list[dict]:
    torch = _torch()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        B, m = int(rng.integers(4, 32)), int(rng.integers(1, 5))
        out.append(dict(actions=torch.tensor(rng.normal(size=(B, m))),
                        mean=torch.tensor(rng.normal(size=(B, m))),
                        log_std=torch.tensor(rng.uniform(-1.5, 0.5, size=(B, m)))))
    return out


def check_gaussian_log_prob(log_prob_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                            rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Diagonal-Gaussian log-density summed over action dimensions.

    ``log_prob_fn(actions (B, m), mean (B, m), log_std (B, m)) -> (B,)``; reference
    :func:`pgtheory.references.gaussian_log_prob`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs quantity gaussian_log_prob; catalogue entries ``log_std_as_log_variance``
    (stable-baselines PR #1060), ``gaussian_log_prob_averaged``.
    """
    name = "components.gaussian_log_prob"
    return _compare(name, lambda **k: log_prob_fn(**k), _numpy_ref(ref.gaussian_log_prob),
                    _distribution_variants(name, "gaussian_log_prob", ref.gaussian_log_prob),
                    _gaussian_inputs(n_batches, seed), rtol=rtol, atol=atol,
                    what="log-probabilities")


def check_gaussian_entropy(entropy_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                           rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Entropy of a diagonal Gaussian, summed over action dimensions.

    ``entropy_fn(log_std (B, m)) -> (B,)``; reference
    :func:`pgtheory.references.gaussian_entropy`, ``sum_i (log sigma_i + (1 + log 2 pi)/2)``.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs quantity gaussian_entropy; catalogue entry ``gaussian_entropy_not_summed``
    (SB3 changelog 0.3.0).
    """
    inputs = [dict(log_std=k["log_std"]) for k in _gaussian_inputs(n_batches, seed)]
    name = "components.gaussian_entropy"
    return _compare(name, lambda **k: entropy_fn(**k), _numpy_ref(ref.gaussian_entropy),
                    _distribution_variants(name, "gaussian_entropy", ref.gaussian_entropy),
                    inputs, rtol=rtol, atol=atol, what="entropy")


def check_gaussian_kl(kl_fn: Callable, *, n_batches: int = 10, seed: int = 0, rtol: float = 1e-6,
                      atol: float = 1e-8) -> CheckResult:
    """``KL(N(mean1, std1^2) || N(mean2, std2^2))`` for diagonal Gaussians, summed over dims.

    ``kl_fn(mean1, log_std1, mean2, log_std2) -> (B,)`` with (B, m) inputs; reference
    :func:`pgtheory.references.gaussian_kl`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs theorem gaussian_kl; catalogue entry ``gaussian_kl_no_square`` (pat-coady/trpo #25).
    """
    torch = _torch()
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(n_batches):
        B, m = int(rng.integers(4, 32)), int(rng.integers(1, 5))
        t = [torch.tensor(rng.normal(size=(B, m))) for _ in range(2)] + [
            torch.tensor(rng.uniform(-1.5, 0.5, size=(B, m))) for _ in range(2)]
        inputs.append(dict(mean1=t[0], mean2=t[1], log_std1=t[2], log_std2=t[3]))
    name = "components.gaussian_kl"
    return _compare(name, lambda **k: kl_fn(k["mean1"], k["log_std1"], k["mean2"],
                                            k["log_std2"]),
                    _numpy_ref(ref.gaussian_kl),
                    _distribution_variants(name, "gaussian_kl", ref.gaussian_kl), inputs,
                    rtol=rtol, atol=atol, what="KL")


# ---------------------------------------------------------------- TRPO machinery
def _cg_iterate(matvec: Callable, b, n_iters: int) -> np.ndarray:
    """The reference CG iterate of :func:`check_conjugate_gradient`:
    :func:`pgtheory.references.conjugate_gradient` from 0, stopping once the squared residual
    is below 1e-24 of the initial one (further iterations would divide by ~0)."""
    return ref.conjugate_gradient(matvec, b, n_iters, relative_tol=1e-24).x


def check_conjugate_gradient(cg_fn: Callable, *, n_problems: int = 10, seed: int = 0,
                             rtol: float = 1e-5, atol: float = 1e-8) -> CheckResult:
    """Conjugate gradient from ``x0 = 0``: the k-th iterate is unique, so it is compared exactly.

    ``cg_fn(matvec, b, n_iters) -> x`` (numpy vectors); problems are SPD systems of size 4-12
    with ``n_iters`` in {2, 3, size}; reference :func:`pgtheory.references.conjugate_gradient`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Hestenes & Stiefel (1952); Nocedal & Wright (2006), Algorithm 5.2; TRPO App. C.
    """
    rng = np.random.default_rng(seed)
    inputs = []
    for i in range(n_problems):
        n = int(rng.integers(4, 13))
        M = rng.normal(size=(n, n))
        A = M @ M.T + 0.5 * np.eye(n)
        inputs.append(dict(matvec=A.__matmul__, b=rng.normal(size=n), n_iters=[2, 3, n][i % 3]))
    name = "components.conjugate_gradient"
    return _compare(name, lambda **k: cg_fn(k["matvec"], k["b"].copy(), k["n_iters"]),
                    _cg_iterate, _variants(name, _cg_iterate, "conjugate_gradient"), inputs,
                    rtol=rtol, atol=atol, what="CG iterate")


def check_backtracking_line_search(line_search_fn: Callable) -> CheckResult:
    """TRPO's backtracking line search on cases with known answers.

    ``line_search_fn(objective, kl, x0, full_step, max_kl, backtrack_coef, max_backtracks)
    -> x_new`` must return the first ``x0 + c^k full_step`` (k = 0..max_backtracks) with
    ``objective`` improved over ``x0`` and ``kl <= max_kl``, else ``x0``
    (:func:`pgtheory.references.backtracking_line_search`). Cases: full step accepted; one
    backtrack needed for the KL; one for the objective; nothing acceptable.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, App. C; catalogue entries
    ``line_search_never_accepts``, ``line_search_ignores_kl``.
    """
    name = "components.backtracking_line_search"
    x0, step = np.zeros(2), np.array([1.0, 0.0])

    def obj_linear(x):
        return float(x[0])

    def obj_peak(x):  # improves only for small steps: 0.75 x - x^2 > 0 iff x < 0.75
        return float(0.75 * x[0] - x[0] ** 2)

    def kl_quad(x):
        return float(0.5 * x @ x)

    def search(fn, f, kl, max_kl):
        return fn(objective=f, kl=kl, x0=x0.copy(), full_step=step.copy(), max_kl=max_kl,
                  backtrack_coef=0.5, max_backtracks=10).x

    cases = [("full step feasible", obj_linear, kl_quad, 1.0),
             ("one backtrack for the KL", obj_linear, kl_quad, 0.2),
             ("one backtrack for the objective", obj_peak, kl_quad, 10.0),
             ("nothing acceptable", lambda x: -float(x[0]), kl_quad, 10.0)]
    for label, f, kl, max_kl in cases:
        want = search(ref.backtracking_line_search, f, kl, max_kl)
        try:
            got = np.asarray(line_search_fn(f, kl, x0.copy(), step.copy(), max_kl, 0.5, 10),
                             dtype=float)
        except Exception as exc:
            return CheckResult(name, "components", "fail", want.tolist(), type(exc).__name__,
                               f"case '{label}': the implementation raised {exc!r}")
        if not np.allclose(got, want, atol=1e-12):
            why = "returned the wrong point; no catalogued defect reproduces it"
            for d in tried_by(name, "backtracking_line_search"):
                if np.allclose(got, search(d.applied_to(ref.backtracking_line_search), f, kl,
                                           max_kl), atol=1e-12):
                    why = f"it matches the known defect: {d.label}"
                    break
            return CheckResult(name, "components", "fail", want.tolist(), got.tolist(),
                               f"case '{label}': {why}")
    return CheckResult(name, "components", "pass", "all cases", "all cases",
                       "returns the first acceptable backtracked point in 4 cases")
