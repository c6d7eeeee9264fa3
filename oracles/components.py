"""Layer 1, components: pure functions an implementation exposes, against reference formulas.

Every check takes the implementation's function (adapted to the signature documented on the
check) and returns a :class:`~pgtheory.oracles.results.CheckResult`. Inputs are generated from a
fixed seed (``seed=`` varies them). On a mismatch the check replays known defects (from
shared/BUGS.md and common derivation slips) on the same inputs; when one reproduces the
implementation's output, the explanation names that defect class. Exceptions and NaN from the
implementation are reported as failures, never raised.

Array conventions: rollouts are time-major ``(T, N)`` numpy arrays with gymnasium flags and
``next_values[t] = V(s_{t+1})`` of the true next state (see :mod:`pgtheory.advantage_estimation`).
Loss functions take and return ``torch`` tensors (float64) so their gradients can be checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
from pgtheory.oracles.results import CheckResult
from pgtheory.oracles.strategies import simulate_rollout

import pgtheory as pg

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


def _gae_core(rewards, values, next_values, terminated, truncated, gamma, lam, *,
              trace=lambda g, l_: g * l_, delta_gamma=True, cut_on_trunc=True,
              bootstrap_trunc=True, bootstrap_end=True, shift=False):
    r, v, nv = (np.asarray(x, float) for x in (rewards, values, next_values))
    term, trunc = np.asarray(terminated, bool), np.asarray(truncated, bool)
    if shift:
        term = np.concatenate([np.zeros_like(term[:1]), term[:-1]])
        trunc = np.concatenate([np.zeros_like(trunc[:1]), trunc[:-1]])
    if not bootstrap_trunc:
        term = term | trunc
    if not bootstrap_end:
        term = term.copy()
        term[-1] = True
    live = 1.0 - term
    cont = live * (1.0 - trunc) if cut_on_trunc else live
    delta = r + (gamma if delta_gamma else 1.0) * live * nv - v
    adv, acc = np.empty_like(r), np.zeros_like(r[0])
    for t in range(r.shape[0] - 1, -1, -1):
        acc = delta[t] + trace(gamma, lam) * cont[t] * acc
        adv[t] = acc
    return adv


GAE_VARIANTS: list[Variant] = [
    ("truncation treated as termination: no gamma * V(final observation) bootstrap at time "
     "limits (BUGS.md: truncation; SB3 #633, CleanRL #198)",
     lambda **k: _gae_core(**k, bootstrap_trunc=False)),
    ("trace not cut at truncation: the advantage leaks into the next episode (BUGS.md: "
     "truncation)", lambda **k: _gae_core(**k, cut_on_trunc=False)),
    ("done flag of the wrong step: the mask uses the previous step's flag (BUGS.md: done "
     "indexing; SB3 #105)", lambda **k: _gae_core(**k, shift=True)),
    ("no bootstrap at the end of the buffer (BUGS.md: done indexing; SB3 #183)",
     lambda **k: _gae_core(**k, bootstrap_end=False)),
    ("lambda^l instead of (gamma lambda)^l (BUGS.md: GAE algebra)",
     lambda **k: _gae_core(**k, trace=lambda g, l_: l_)),
    ("gamma missing from the TD error (BUGS.md: GAE algebra)",
     lambda **k: _gae_core(**k, delta_gamma=False)),
    ("gamma and lambda swapped (BUGS.md: GAE algebra)",
     lambda **k: _gae_core(**{**k, "gamma": k["lam"], "lam": k["gamma"]})),
    ("bootstrap at truncation from V(s_t) instead of the final observation (BUGS.md: "
     "truncation; rsl_rl #20)",
     lambda **k: _gae_core(**{**k, "next_values": np.where(k["truncated"], k["values"],
                                                            k["next_values"])})),
]


def check_gae(gae_fn: Callable, *, gamma: float = 0.99, lam: float = 0.95, n_batches: int = 20,
              seed: int = 0, rtol: float = 1e-6, atol: float = 1e-6) -> CheckResult:
    """GAE on rollouts with terminations, time-limit truncations and buffer ends.

    ``gae_fn(rewards, values, next_values, terminated, truncated, gamma, lam) -> advantages``,
    arrays of shape (T, N) (numpy or torch). Reference: :func:`pgtheory.gae`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Schulman et al. (2016), arXiv:1506.02438v6, Eq. (16); shared/BUGS.md.
    """
    return _compare("components.gae", lambda **k: gae_fn(
        k["rewards"], k["values"], k["next_values"], k["terminated"], k["truncated"], k["gamma"],
        k["lam"]), lambda **k: pg.gae(k["rewards"], k["values"], k["terminated"], k["truncated"],
                                       k["gamma"], k["lam"], next_values=k["next_values"]),
        GAE_VARIANTS, _rollout_inputs(n_batches, seed, gamma, lam), rtol=rtol, atol=atol,
        what="advantages")


def _returns_core(rewards, next_values, terminated, truncated, gamma, *, bootstrap_trunc=True,
                  bootstrap_end=True, shift_rewards=False):
    r = np.asarray(rewards, float)
    if shift_rewards:
        r = np.concatenate([r[1:], np.zeros_like(r[:1])])
    term = np.asarray(terminated, bool) | (~bootstrap_trunc & np.asarray(truncated, bool))
    if not bootstrap_end:
        term = term.copy()
        term[-1] = True
    return pg.discounted_returns(r, term, np.asarray(truncated, bool) & ~term, gamma,
                                 next_values=next_values)


def check_discounted_returns(returns_fn: Callable, *, gamma: float = 0.99, n_batches: int = 20,
                             seed: int = 0, rtol: float = 1e-6,
                             atol: float = 1e-6) -> CheckResult:
    """Bootstrapped discounted returns (reward-to-go) on rollouts.

    ``returns_fn(rewards, next_values, terminated, truncated, gamma) -> returns`` (T, N).
    Reference: :func:`pgtheory.discounted_returns`.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Sutton & Barto (2018), Eq. (3.9); shared/BUGS.md (truncation, done indexing).
    """
    variants = [
        ("truncation treated as termination (BUGS.md: truncation)",
         lambda **k: _returns_core(**_drop(k, "values"), bootstrap_trunc=False)),
        ("no bootstrap at the end of the buffer (BUGS.md: done indexing)",
         lambda **k: _returns_core(**_drop(k, "values"), bootstrap_end=False)),
        ("rewards shifted by one step (BUGS.md: done indexing; Spinning Up #50)",
         lambda **k: _returns_core(**_drop(k, "values"), shift_rewards=True)),
    ]
    return _compare("components.discounted_returns", lambda **k: returns_fn(
        k["rewards"], k["next_values"], k["terminated"], k["truncated"], k["gamma"]),
        lambda **k: pg.discounted_returns(k["rewards"], k["terminated"], k["truncated"],
                                          k["gamma"], next_values=k["next_values"]),
        variants, _rollout_inputs(n_batches, seed, gamma, None), rtol=rtol, atol=atol,
        what="returns")


def _drop(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def check_lambda_returns(lambda_returns_fn: Callable, *, gamma: float = 0.99, lam: float = 0.95,
                         n_batches: int = 20, seed: int = 0, rtol: float = 1e-6,
                         atol: float = 1e-6) -> CheckResult:
    """TD(lambda) returns on rollouts.

    ``lambda_returns_fn(rewards, next_values, terminated, truncated, gamma, lam)`` (T, N).
    Reference: :func:`pgtheory.lambda_returns` (equal to GAE + V on collected rollouts).

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
    def ref(**k):
        return pg.lambda_returns(k["rewards"], k["terminated"], k["truncated"], k["gamma"],
                                 k["lam"], next_values=k["next_values"])

    variants = [
        (label, (lambda f: lambda **k: f(**k) + k["values"])(fn)) for label, fn in GAE_VARIANTS]
    return _compare("components.lambda_returns", lambda **k: lambda_returns_fn(
        k["rewards"], k["next_values"], k["terminated"], k["truncated"], k["gamma"], k["lam"]),
        ref, variants, _rollout_inputs(n_batches, seed, gamma, lam), rtol=rtol, atol=atol,
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


def _ppo_ref(logp_new, logp_old, advantages, clip_range, *, combine="min", ratio="ratio",
             clip_adv=False, no_clip=False):
    torch = _torch()
    r = (torch.exp(logp_old - logp_new) if ratio == "inverted"
         else torch.exp(logp_new - logp_old))
    # the "log" slip puts log r in the unclipped term only: min(log(r) A, clip(r) A)
    r_unclipped = logp_new - logp_old if ratio == "log" else r
    a = advantages
    if clip_adv:
        clipped = r * torch.clamp(a, 1 - clip_range, 1 + clip_range)
    else:
        clipped = torch.clamp(r, 1 - clip_range, 1 + clip_range) * a
    if no_clip:
        clipped = r * a
    pick = torch.minimum if combine == "min" else torch.maximum
    return -pick(r_unclipped * a, clipped).mean()


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
    def var(**opts):
        return _value_and_grad(lambda *a: _ppo_ref(*a, **opts), "logp_new", PPO_ARGS)

    variants = [
        ("min and max swapped (BUGS.md: ratio / clipping)", var(combine="max")),
        ("ratio inverted, old/new (BUGS.md: ratio / clipping)", var(ratio="inverted")),
        ("clip applied to the advantage (BUGS.md: ratio / clipping)", var(clip_adv=True)),
        ("log-ratio in place of the ratio in the unclipped term (proofs catalogue)",
         var(ratio="log")),
        ("clipping never acts: unclipped surrogate (BUGS.md: ratio / clipping)",
         var(no_clip=True)),
        ("sign flipped: the loss is maximized", _value_and_grad(
            lambda *a: -_ppo_ref(*a), "logp_new", PPO_ARGS)),
    ]
    return _compare("components.clipped_surrogate_loss",
                    _value_and_grad(loss_fn, "logp_new", PPO_ARGS),
                    _value_and_grad(_ppo_ref, "logp_new", PPO_ARGS), variants,
                    _loss_inputs(n_batches, seed, clip_range), rtol=rtol, atol=atol,
                    allow_positive_scale=True, what="[loss, gradient]")


def _value_ref(values, values_old, returns, clip_range, *, combine="max", reversed_=False,
               detach_clipped=False):
    torch = _torch()
    lo, hi = (clip_range, -clip_range) if reversed_ else (-clip_range, clip_range)
    delta = values - values_old
    clipped_delta = torch.minimum(torch.maximum(delta, torch.tensor(lo)), torch.tensor(hi))
    v_clip = values_old + (clipped_delta.detach() if detach_clipped else clipped_delta)
    if combine == "clipped":  # Stable-Baselines3: the clipped prediction alone
        return 0.5 * ((v_clip - returns) ** 2).mean()
    pick = torch.maximum if combine == "max" else torch.minimum
    return 0.5 * pick((values - returns) ** 2, (v_clip - returns) ** 2).mean()


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
    OpenAI baselines ppo2 value clipping; shared/BUGS.md (value loss: RLlib #19291).
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

    def var(**opts):
        return _value_and_grad(lambda *a: _value_ref(*a, **opts), "values", VALUE_ARGS)

    variants = [
        ("min instead of max: the pessimistic bound is lost", var(combine="min")),
        ("clip bounds reversed (proofs catalogue: value_clip)", var(reversed_=True)),
        ("clipped branch built so that its gradient vanishes (BUGS.md: value loss; RLlib "
         "#19291)", var(detach_clipped=True)),
    ]
    observed = _value_and_grad(loss_fn, "values", VALUE_ARGS)
    res = _compare("components.clipped_value_loss", observed,
                   _value_and_grad(_value_ref, "values", VALUE_ARGS), variants, inputs, rtol=rtol,
                   atol=atol, allow_positive_scale=True, what="[loss, gradient]")
    if res.verdict == "pass":
        return dataclasses.replace(res, explanation=f"matched: max((V - R)^2, (V_clip - R)^2) "
                                                    f"(OpenAI baselines ppo2, CleanRL); "
                                                    f"{res.explanation}")
    sb3 = _compare("components.clipped_value_loss", observed, var(combine="clipped"), [],
                   inputs, rtol=rtol, atol=atol, allow_positive_scale=True,
                   what="[loss, gradient]")
    if sb3.verdict == "pass":
        return dataclasses.replace(sb3, explanation=f"matched: clipped prediction (V_clip - "
                                                    f"R)^2 (Stable-Baselines3 ppo/ppo.py); "
                                                    f"{sb3.explanation}")
    return res


# ------------------------------------------------------------- distributions
def _logits_inputs(n: int, seed: int) -> list[dict]:
    torch = _torch()
    rng = np.random.default_rng(seed)
    return [dict(logits=torch.tensor(rng.normal(scale=2.0, size=(int(rng.integers(2, 20)),
                                                                  int(rng.integers(2, 6))))))
            for _ in range(n)]


def check_categorical_entropy(entropy_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                              rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Entropy of categorical policies from logits: ``entropy_fn(logits (B, A)) -> (B,)``.

    Reference ``-sum_a p log p`` with ``p = softmax(logits)`` (nats).

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Cover & Thomas (2006), Sec. 2.1; shared/BUGS.md (entropy).
    """
    torch = _torch()

    def ref(logits):
        logp = torch.log_softmax(logits, -1)
        return -(logp.exp() * logp).sum(-1)

    variants = [("sign flipped: negative entropy (BUGS.md: entropy, wrong sign)",
                 lambda logits: -ref(logits)),
                ("logits used as log-probabilities without normalization",
                 lambda logits: -(logits.exp() * logits).sum(-1)),
                ("bits instead of nats", lambda logits: ref(logits) / np.log(2.0))]
    return _compare("components.categorical_entropy", lambda **k: entropy_fn(k["logits"]),
                    ref, variants, _logits_inputs(n_batches, seed), rtol=rtol, atol=atol,
                    what="entropy")


def check_categorical_kl(kl_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                         rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Exact ``KL(p || q)`` between categorical distributions given by logits.

    ``kl_fn(logits_p (B, A), logits_q (B, A)) -> (B,)``.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    :func:`pgtheory.kl_divergence`; shared/BUGS.md (KL direction).
    """
    torch = _torch()
    inputs = [dict(logits_p=k["logits"], logits_q=k["logits"] + torch.randn(
        k["logits"].shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64))
        for i, k in enumerate(_logits_inputs(n_batches, seed))]

    def ref(logits_p, logits_q):
        p = torch.softmax(logits_p, -1).numpy()
        q = torch.softmax(logits_q, -1).numpy()
        return pg.kl_divergence(p, q)

    variants = [("KL direction reversed (BUGS.md: KL)", lambda logits_p, logits_q: ref(
        logits_q, logits_p))]
    return _compare("components.categorical_kl", lambda **k: kl_fn(**k), ref, variants, inputs,
                    rtol=rtol, atol=atol, what="KL")


def check_kl_estimator(estimator_fn: Callable, kind: str, *, n_batches: int = 10, seed: int = 0,
                       rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Per-sample KL estimators of ``KL(q || p)`` from samples ``x ~ q``.

    ``estimator_fn(logp, logq) -> (B,)`` where ``logp = log p(x)``, ``logq = log q(x)``;
    ``kind`` is ``"k1"`` (``-log r``), ``"k2"`` (``(log r)^2 / 2``) or ``"k3"``
    (``(r - 1) - log r``), ``r = p(x) / q(x)``.

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
    refs = {"k1": lambda lr: -lr, "k2": lambda lr: 0.5 * lr**2,
            "k3": lambda lr: torch.exp(lr) - 1 - lr}
    if kind not in refs:
        raise ValueError(f"kind: expected 'k1', 'k2' or 'k3', received {kind!r}")
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(n_batches):
        B = int(rng.integers(8, 64))
        logq = torch.tensor(np.log(rng.uniform(0.05, 1.0, size=B)))
        inputs.append(dict(logp=logq + torch.tensor(rng.normal(scale=0.5, size=B)), logq=logq))

    def ref(logp, logq):
        return refs[kind](logp - logq)

    variants = [("log-ratio sign flipped: estimates KL(p || q) terms with r = q/p",
                 lambda logp, logq: refs[kind](logq - logp)),
                ("k1 used where k3 was meant (can be negative; BUGS.md: KL, SB3 #417)",
                 lambda logp, logq: refs["k1"](logp - logq)),
                ("k3 with +log r", lambda logp, logq: torch.exp(logp - logq) - 1 + (logp - logq))]
    return _compare(f"components.kl_estimator_{kind}", lambda **k: estimator_fn(**k), ref,
                    variants, inputs, rtol=rtol, atol=atol, what=f"{kind} estimates")


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


def _gauss_logp(actions, mean, log_std, *, reduce="sum", log_var=False, constant=True):
    z = (actions - mean) / ((0.5 * log_std).exp() if log_var else log_std.exp())
    per = -0.5 * z**2 - (0.5 * log_std if log_var else log_std)
    if constant:
        per = per - 0.5 * np.log(2 * np.pi)
    return per.sum(-1) if reduce == "sum" else per.mean(-1)


def check_gaussian_log_prob(log_prob_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                            rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Diagonal-Gaussian log-density summed over action dimensions.

    ``log_prob_fn(actions (B, m), mean (B, m), log_std (B, m)) -> (B,)``.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs quantity gaussian_log_prob; shared/BUGS.md (log-prob: log-std treated as
    log-variance, stable-baselines PR #1060; summed vs averaged over dimensions).
    """
    variants = [("averaged instead of summed over action dimensions",
                 lambda **k: _gauss_logp(**k, reduce="mean")),
                ("log-std treated as log-variance (BUGS.md: log-prob)",
                 lambda **k: _gauss_logp(**k, log_var=True)),
                ("normalization constant -log(2 pi)/2 missing",
                 lambda **k: _gauss_logp(**k, constant=False))]
    return _compare("components.gaussian_log_prob", lambda **k: log_prob_fn(**k), _gauss_logp,
                    variants, _gaussian_inputs(n_batches, seed), rtol=rtol, atol=atol,
                    what="log-probabilities")


def check_gaussian_entropy(entropy_fn: Callable, *, n_batches: int = 10, seed: int = 0,
                           rtol: float = 1e-6, atol: float = 1e-8) -> CheckResult:
    """Entropy of a diagonal Gaussian, summed over action dimensions.

    ``entropy_fn(log_std (B, m)) -> (B,)``; reference ``sum_i (log sigma_i + (1 + log 2 pi)/2)``.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs quantity gaussian_entropy; shared/BUGS.md (entropy not summed over dimensions,
    SB3 changelog 0.3.0).
    """
    c = 0.5 * (1.0 + np.log(2 * np.pi))

    def ref(log_std):
        return (log_std + c).sum(-1)

    variants = [("not summed over action dimensions (mean) (BUGS.md: entropy)",
                 lambda log_std: (log_std + c).mean(-1)),
                ("constant (1 + log 2 pi)/2 missing", lambda log_std: log_std.sum(-1))]
    inputs = [dict(log_std=k["log_std"]) for k in _gaussian_inputs(n_batches, seed)]
    return _compare("components.gaussian_entropy", lambda **k: entropy_fn(**k), ref, variants,
                    inputs, rtol=rtol, atol=atol, what="entropy")


def check_gaussian_kl(kl_fn: Callable, *, n_batches: int = 10, seed: int = 0, rtol: float = 1e-6,
                      atol: float = 1e-8) -> CheckResult:
    """``KL(N(mean1, std1^2) || N(mean2, std2^2))`` for diagonal Gaussians, summed over dims.

    ``kl_fn(mean1, log_std1, mean2, log_std2) -> (B,)`` with (B, m) inputs.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    proofs theorem gaussian_kl; shared/BUGS.md (pat-coady/trpo #25: square missing).
    """
    torch = _torch()
    rng = np.random.default_rng(seed)
    inputs = []
    for _ in range(n_batches):
        B, m = int(rng.integers(4, 32)), int(rng.integers(1, 5))
        t = [torch.tensor(rng.normal(size=(B, m))) for _ in range(2)] + [
            torch.tensor(rng.uniform(-1.5, 0.5, size=(B, m))) for _ in range(2)]
        inputs.append(dict(mean1=t[0], mean2=t[1], log_std1=t[2], log_std2=t[3]))

    def ref(mean1, log_std1, mean2, log_std2, *, square=True):
        ratio = (log_std1 - log_std2).exp()
        term = ratio**2 if square else ratio
        return (log_std2 - log_std1 + 0.5 * (term + ((mean1 - mean2) / log_std2.exp()) ** 2)
                - 0.5).sum(-1)

    variants = [("square missing on the std ratio (BUGS.md: KL; pat-coady/trpo #25)",
                 lambda **k: ref(**k, square=False)),
                ("KL direction reversed (BUGS.md: KL)",
                 lambda mean1, log_std1, mean2, log_std2: ref(mean2, log_std2, mean1, log_std1))]
    return _compare("components.gaussian_kl", lambda **k: kl_fn(k["mean1"], k["log_std1"],
                                                                 k["mean2"], k["log_std2"]),
                    ref, variants, inputs, rtol=rtol, atol=atol, what="KL")


# ---------------------------------------------------------------- TRPO machinery
def _cg_reference(matvec: Callable, b: np.ndarray, n_iters: int) -> np.ndarray:
    """``n_iters`` CG iterations from 0 (Nocedal & Wright 2006, Alg. 5.2), float64; stops once
    the residual is negligible relative to ``b`` (further iterations would divide by ~0).
    The reference of :func:`check_conjugate_gradient` and of ``pgtheory.oracles.batch``'s TRPO
    steps."""
    x = np.zeros_like(b)
    r, p = b.copy(), b.copy()
    rr = r0 = float(r @ r)
    for _ in range(n_iters):
        if rr <= 1e-24 * r0 or rr == 0.0:
            break
        Ap = matvec(p)
        alpha = rr / float(p @ Ap)
        x, r = x + alpha * p, r - alpha * Ap
        rr_new = float(r @ r)
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def check_conjugate_gradient(cg_fn: Callable, *, n_problems: int = 10, seed: int = 0,
                             rtol: float = 1e-5, atol: float = 1e-8) -> CheckResult:
    """Conjugate gradient from ``x0 = 0``: the k-th iterate is unique, so it is compared exactly.

    ``cg_fn(matvec, b, n_iters) -> x`` (numpy vectors); problems are SPD systems of size 4-12
    with ``n_iters`` in {2, 3, size}.

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
        inputs.append(dict(A=A, b=rng.normal(size=n), n_iters=[2, 3, n][i % 3]))

    def ref(A, b, n_iters):
        return _cg_reference(lambda v: A @ v, b, n_iters)

    variants = [("returns b: no solve (step direction is the vanilla gradient; BUGS.md: TRPO)",
                 lambda A, b, n_iters: b),
                ("one iteration only: a scaled gradient step", lambda A, b, n_iters: ref(A, b, 1)),
                ("exact solve A^{-1} b regardless of n_iters",
                 lambda A, b, n_iters: np.linalg.solve(A, b))]
    return _compare("components.conjugate_gradient", lambda **k: cg_fn(
        lambda v: k["A"] @ v, k["b"].copy(), k["n_iters"]), ref, variants, inputs, rtol=rtol,
        atol=atol, what="CG iterate")


def check_backtracking_line_search(line_search_fn: Callable) -> CheckResult:
    """TRPO's backtracking line search on cases with known answers.

    ``line_search_fn(objective, kl, x0, full_step, max_kl, backtrack_coef, max_backtracks)
    -> x_new`` must return the first ``x0 + c^k full_step`` (k = 0..max_backtracks) with
    ``objective`` improved over ``x0`` and ``kl <= max_kl``, else ``x0``. Cases: full step
    accepted; one backtrack needed for the KL; one for the objective; nothing acceptable.

    Returns
    -------
    CheckResult

    Raises
    ------
    Nothing for a faulty implementation: its exceptions, wrong shapes and NaN are reported as a
    failed :class:`~pgtheory.oracles.results.CheckResult`.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, App. C; shared/BUGS.md (TRPO: line search that
    never accepts, or accepts without checking the KL).
    """
    x0, step = np.zeros(2), np.array([1.0, 0.0])

    def obj_linear(x):
        return float(x[0])

    def obj_peak(x):  # improves only for small steps: 0.75 x - x^2 > 0 iff x < 0.75
        return float(0.75 * x[0] - x[0] ** 2)

    def kl_quad(x):
        return float(0.5 * x @ x)

    cases = [("full step feasible", obj_linear, kl_quad, 1.0, step),
             ("one backtrack for the KL", obj_linear, kl_quad, 0.2, 0.5 * step),
             ("one backtrack for the objective", obj_peak, kl_quad, 10.0, 0.5 * step),
             ("nothing acceptable", lambda x: -float(x[0]), kl_quad, 10.0, x0)]
    for label, f, kl, max_kl, want in cases:
        try:
            got = np.asarray(line_search_fn(f, kl, x0.copy(), step.copy(), max_kl, 0.5, 10),
                             dtype=float)
        except Exception as exc:
            return CheckResult("components.backtracking_line_search", "components", "fail",
                               want.tolist(), type(exc).__name__,
                               f"case '{label}': the implementation raised {exc!r}")
        if not np.allclose(got, want, atol=1e-12):
            if label == "one backtrack for the KL" and np.allclose(got, step):
                why = "accepts without checking the KL (BUGS.md: TRPO line search)"
            elif label == "full step feasible" and np.allclose(got, x0):
                why = "never accepts a step (BUGS.md: TRPO line search)"
            elif label == "nothing acceptable" and not np.allclose(got, x0):
                why = "accepts a step that does not improve the objective"
            else:
                why = "returned the wrong point"
            return CheckResult("components.backtracking_line_search", "components", "fail",
                               want.tolist(), got.tolist(), f"case '{label}': {why}")
    return CheckResult("components.backtracking_line_search", "components", "pass", "all cases",
                       "all cases", "returns the first acceptable backtracked point in 4 cases")
