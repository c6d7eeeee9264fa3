"""Seeded bugs (mutants) in the project's own REINFORCE, A2C, TRPO and PPO, and their kill matrix.

How mutants are applied: each is a set of **runtime patches** (``unittest.mock.patch``) of one
function of :mod:`pgtheory.implementations.core` or one method of an agent class, active only while
that mutant's audit runs; the source files are never edited, and nothing in the implementations
exists only for mutation (the patched pieces are the functions and methods the algorithms are
written with). A few mutants are *configuration* mutants: the agent runs with one setting while
its target declares another to the oracles (an entropy bonus with the wrong sign is ``ent_coef =
-0.01`` run behind a declared ``0.01``).

Each mutant names its entry in the defect registry (:mod:`pgtheory.oracles.defects`), which
gives its class, description and public reports. ``equivalent`` gives the argument when
no check can flag a mutant in principle.

Run ``python -m pgtheory.lab.mutants`` (``--quick``, ``--only NAME ...``, ``--markdown PATH``) to
audit every mutant (full audits by default) and print the kill matrix: which checks (layer,
name) flag each mutant. Exit status 1 when a non-equivalent mutant survives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from unittest import mock

import numpy as np
from pgtheory.oracles.defects import NamesADefect

_CORE = "pgtheory.implementations.core"  # the module whose functions the mutants patch

__all__ = ["MUTANTS", "KillResult", "Mutant", "applied", "continuous_header", "kill_matrix",
           "main", "only_by_continuous_layers", "run_mutant"]


@dataclasses.dataclass(frozen=True)
class Mutant(NamesADefect):
    """One seeded bug.

    Attributes
    ----------
    name, algorithm : str
        ``algorithm`` in {"reinforce", "a2c", "trpo", "ppo"}: the implementation mutated.
    defect : str
        Its key in the defect registry :data:`pgtheory.oracles.defects.DEFECTS`, which gives
        :attr:`bug_class`, :attr:`description` and :attr:`report`.
    patches : tuple of (str, callable)
        ``(dotted attribute, make)``: the attribute is replaced by ``make(original)``.
    overrides : dict
        Settings the mutated agent runs with.
    declared : dict
        Hyperparameters the target declares instead (configuration mutants).
    expected : tuple of str
        Checks that must flag it (asserted by the fast tests).
    equivalent : str
        Why no check can flag it in principle ("" for a mutant that must be killed).
    detail : str
        How this mutant realizes the defect, where the registry's line does not say it.
    """

    name: str
    algorithm: str
    defect: str
    patches: tuple = ()
    overrides: dict = dataclasses.field(default_factory=dict)
    declared: dict = dataclasses.field(default_factory=dict)
    expected: tuple = ()
    equivalent: str = ""
    detail: str = ""

    @property
    def report(self) -> str:
        """The registry's public reports ("" when none is known)."""
        return self.reports


@contextlib.contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """Apply the mutant's patches for the duration of the block; always undo them."""
    import importlib

    with contextlib.ExitStack() as stack:
        for path, make in mutant.patches:
            module_name, _, attr = path.rpartition(".")
            try:
                owner = importlib.import_module(module_name)
            except ImportError:  # a class attribute: module.Class.attr
                mod, _, cls = module_name.rpartition(".")
                owner = getattr(importlib.import_module(mod), cls)
            original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
            stack.enter_context(mock.patch.object(owner, attr, make(original)))
        yield


def make_target(mutant: Mutant, *, continuous: bool = False):
    """The mutated implementation's oracle target (declared hyperparameters applied).

    ``continuous=True``: the *continuous-only linear* variant (``hidden_sizes=()``, declaring
    only continuous actions, exposing no components), the class for which the LQR layers are
    exact; its audit has only the ``@lqr`` rows, as a single-file PPO for MuJoCo would.
    """
    from pgtheory.implementations.targets import target

    overrides = {"hidden_sizes": (), **mutant.overrides} if continuous else mutant.overrides
    t = target(mutant.algorithm, **overrides)
    t.hyperparameters.update(mutant.declared)
    t.name = f"{mutant.algorithm} mutant {mutant.name}"
    if continuous:
        t.action_kinds = ("continuous",)
        t.components = {}  # as a loop script: no exposed functions, the rows see the behaviour
        t.name += " (continuous, linear)"
    return t


# ----------------------------------------------------------------------- helpers
def _zero(x):
    return x & False


def _copy(x):
    return x.clone() if hasattr(x, "clone") else np.array(x, copy=True)


def _shift(x):
    """x[t - 1] at t, zero (False) at t = 0."""
    y = _copy(x)
    y[1:] = x[:-1]
    y[0] = 0
    return y


def _where(cond, a, b):
    import torch

    if torch.is_tensor(a):
        return torch.where(torch.as_tensor(cond, dtype=torch.bool), a, b)
    return np.where(np.asarray(cond, bool), a, b)


def _gae(fn: Callable) -> tuple:
    """Patch of core.gae (``gae(r, v, term, trunc, gamma, lam, *, next_values)``), written as
    ``fn(original, r, v, nv, term, trunc, gamma, lam)`` with ``original`` called the same way."""
    def make(orig):
        def positional(r, v, nv, te, tr, g, lam):
            return orig(r, v, te, tr, g, lam, next_values=nv)

        return lambda r, v, te, tr, g, lam, *, next_values: fn(positional, r, v, next_values, te,
                                                               tr, g, lam)
    return ((_CORE + ".gae", make),)


def _surrogate(fn: Callable) -> tuple:
    """Patch of core.clipped_surrogate_loss: ``fn(logp, logp_old, adv, eps)``."""
    return ((_CORE + ".clipped_surrogate_loss", lambda orig: fn),)


def _torch():
    import torch

    return torch


def _ratio(logp, logp_old):
    return _torch().exp(logp - logp_old)


def _no_bootstrap_at_end(orig, r, v, nv, te, tr, g, lam):
    nv = _copy(nv)
    nv[-1] = 0
    return orig(r, v, nv, te, tr, g, lam)


def _truncation_from_own_value(orig, r, v, nv, te, tr, g, lam):
    return orig(r, v, _where(tr, v, nv), te, tr, g, lam)


def _truncated_masked(orig, r, v, nv, te, tr, g, lam):
    adv = orig(r, v, nv, te, tr, g, lam)
    return _where(tr, adv * 0, adv)


def _inverted(logp, logp_old, adv, eps):
    torch = _torch()
    ratio = torch.exp(logp_old - logp)
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()


def _max_not_min(logp, logp_old, adv, eps):
    torch = _torch()
    ratio = _ratio(logp, logp_old)
    return -torch.max(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()


def _clip_on_advantage(logp, logp_old, adv, eps):
    torch = _torch()
    ratio = _ratio(logp, logp_old)
    return -torch.min(ratio * adv, ratio * torch.clamp(adv, 1 - eps, 1 + eps)).mean()


def _clip_bounds_reversed(logp, logp_old, adv, eps):
    torch = _torch()
    ratio = _ratio(logp, logp_old)
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 + eps, 1 - eps) * adv).mean()


def _never_clips(logp, logp_old, adv, eps):
    return -(_ratio(logp, logp_old) * adv).mean()


def _old_logp_recomputed(logp, logp_old, adv, eps):
    torch = _torch()
    ratio = _ratio(logp, logp.detach())  # "old" log-prob from the current parameters
    return -torch.min(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()


def _value_clip_vanishes(values, values_old, returns, eps):
    torch = _torch()
    clipped = values_old + torch.clamp(values.detach() - values_old, -eps, eps)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


def _normalize_no_guard(x, eps=1e-8):
    return (x - x.mean()) / (x.std() + eps)


def _pg_normalized(logp, advantages, weights=None):
    a = _normalize_no_guard(advantages.detach())
    return -(a * logp).mean()


def _entropy_mean_dims(log_std):
    return (log_std + 0.5 * (1.0 + np.log(2 * np.pi))).mean(-1)


def _log_prob_mean_dims(orig):
    return lambda a, m, s: orig(a, m, s) / a.shape[-1]


def _kl_no_square(m1, s1, m2, s2):
    torch = _torch()
    ratio = torch.exp(s1 - s2)  # sigma1 / sigma2 where sigma1^2 / sigma2^2 belongs
    return (s2 - s1 + 0.5 * (ratio + ((m1 - m2) * torch.exp(-s2)) ** 2) - 0.5).sum(-1)


def _detached_log_std(orig):
    from pgtheory.implementations import core

    def forward(self, obs):
        out = self.net(obs)
        if self.continuous:
            return core.DiagGaussian(out, self.log_std.detach())
        return core.CategoricalLogits(out)
    return forward


def _variance_as_std(orig):
    torch = _torch()

    def rsample(self, sample_shape=()):  # samples with exp(log_std / 2), density exp(log_std)
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.mean_.dtype, device=self.mean_.device)
        return self.mean_ + eps * torch.exp(self.log_std / 2)
    return rsample


def _clipped_action_stored(orig):
    import gymnasium as gym

    torch = _torch()

    def rollout(self, fresh=False):
        space = self.envs.single_action_space
        if not isinstance(space, gym.spaces.Box):
            return orig(self, fresh)
        real = self.distribution
        lo, hi = torch.as_tensor(space.low), torch.as_tensor(space.high)

        def distribution(obs):
            d = real(obs)
            raw = d.sample
            d.sample = lambda *a, **k: torch.maximum(torch.minimum(raw(*a, **k), hi), lo)
            return d

        self.distribution = distribution  # the update still uses the class's method
        try:
            return orig(self, fresh)
        finally:
            del self.distribution
    return rollout


def _line_search_never(objective, kl, x0, full_step, max_kl, c, n):
    return x0


def _line_search_no_kl(objective, kl, x0, full_step, max_kl, c, n):
    f0 = objective(x0)
    for k in range(n + 1):
        x = x0 + c**k * full_step
        if objective(x) > f0:
            return x
    return x0


def _reward_to_go_shifted(orig):
    return lambda r, te, tr, g, *, next_values: orig(_shift(r), te, tr, g,
                                                     next_values=next_values)


def _k1_instead_of_k3(orig):
    return lambda logp, logq: logq - logp


# ----------------------------------------------------------------------- catalogue
_GAE = "given_the_batch.advantages"
_PG = "given_the_batch.policy_gradient"
_STEP = "given_the_batch.trpo_step"

_LIST = [
    # --- truncation ---------------------------------------------------------------
    Mutant("truncation_as_termination", "ppo", "truncation_as_termination", _gae(
               lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, te | tr, _zero(tr), g, lam)),
           expected=(_GAE,)),
    Mutant("truncation_bootstrap_own_value", "a2c", "truncation_bootstrap_own_value",
           _gae(_truncation_from_own_value), expected=(_GAE,)),
    Mutant("truncation_bootstrap_reset_obs", "trpo", "bootstrap_from_reset_obs",
           (("pgtheory.implementations.common.Agent.true_next_observations",
                                  lambda orig: staticmethod(lambda next_obs, info:
                                                            np.array(next_obs, copy=True))),),
           expected=(_GAE,)),
    Mutant("truncated_steps_masked", "ppo", "truncated_steps_masked",
           _gae(_truncated_masked), expected=(_GAE,)),
    Mutant("termination_bootstraps", "a2c", "termination_bootstraps",
           _gae(lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, _zero(te), te | tr, g, lam)),
           expected=(_GAE,)),
    # --- done indexing ------------------------------------------------------------
    Mutant("done_flags_shifted", "ppo", "done_flags_shifted", _gae(
               lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, _shift(te), _shift(tr), g,
                                                     lam)), expected=(_GAE,)),
    Mutant("no_bootstrap_at_buffer_end", "a2c", "no_bootstrap_at_buffer_end",
           _gae(_no_bootstrap_at_end),
           expected=(_GAE,)),
    Mutant("rewards_shifted", "reinforce", "rewards_shifted",
           ((_CORE + ".discounted_returns", _reward_to_go_shifted),),
           expected=(_GAE,)),
    Mutant("next_step_autoreset", "ppo", "next_step_autoreset",
           (("pgtheory.implementations.common.Agent.autoreset_mode",
             lambda orig: __import__("gymnasium").vector.AutoresetMode.NEXT_STEP),)),
    # --- GAE algebra --------------------------------------------------------------
    Mutant("gae_lambda_power", "ppo", "gae_lambda_power",
           _gae(lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, te, tr, g, lam / g)),
           expected=(_GAE,)),
    Mutant("gae_no_gamma_in_td", "trpo", "gae_no_gamma_in_td",
           _gae(lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, te, tr, 1.0, g * lam)),
           expected=(_GAE,)),
    Mutant("gae_gamma_lambda_swapped", "ppo", "gae_gamma_lambda_swapped",
           _gae(lambda o, r, v, nv, te, tr, g, lam: o(r, v, nv, te, tr, lam, g)),
           expected=(_GAE,)),
    Mutant("returns_ignore_gamma", "reinforce", "returns_ignore_gamma",
           ((_CORE + ".discounted_returns",
             lambda orig: (lambda r, te, tr, g, *, next_values: orig(
                 r, te, tr, 1.0, next_values=next_values))),),
           expected=(_GAE,)),
    # --- advantage normalization ------------------------------------------------------
    Mutant("normalize_single_sample_nan", "ppo", "normalize_single_sample_nan",
           ((_CORE + ".normalize",
                                      lambda orig: _normalize_no_guard),),
           overrides={"n_minibatches": 64}),
    Mutant("undeclared_normalization", "a2c", "undeclared_advantage_normalization",
           ((_CORE + ".policy_gradient_loss", lambda orig: _pg_normalized),),
           expected=(_PG,)),
    # --- ratio / clipping -----------------------------------------------------------
    Mutant("ratio_inverted", "ppo", "ppo_ratio_inverted",
           _surrogate(_inverted), expected=(_PG,)),
    Mutant("min_max_swapped", "ppo", "ppo_min_max_swapped", _surrogate(_max_not_min)),
    Mutant("clip_on_advantage", "ppo", "ppo_clip_on_advantage",
           _surrogate(_clip_on_advantage), expected=(_PG,)),
    Mutant("clip_bounds_reversed", "ppo", "ppo_clip_bounds_reversed",
           _surrogate(_clip_bounds_reversed)),
    Mutant("clipping_never_acts", "ppo", "ppo_clipping_never_acts",
           _surrogate(_never_clips)),
    Mutant("old_logprob_recomputed", "ppo", "old_logprob_recomputed",
           _surrogate(_old_logp_recomputed)),
    # --- value loss ---------------------------------------------------------------
    Mutant("value_clip_gradient_vanishes", "ppo", "value_clip_gradient_vanishes",
           ((_CORE + ".clipped_value_loss", lambda orig: _value_clip_vanishes),),
           overrides={"clip_range_vf": 0.01}),
    Mutant("critic_regressed_to_advantage", "a2c", "critic_regressed_to_advantage",
           (("pgtheory.implementations.common.Agent.value_targets",
             lambda orig: staticmethod(lambda adv, values: adv)),),
           expected=("given_the_batch.returns",)),
    Mutant("value_targets_normalized", "ppo", "value_targets_normalized",
           (("pgtheory.implementations.common.Agent.value_targets",
             lambda orig: staticmethod(lambda adv, values: _normalize_no_guard(adv) + values)),),
           expected=("given_the_batch.returns",)),
    Mutant("value_loss_sign", "trpo", "value_loss_sign",
           ((_CORE + ".value_loss",
             lambda orig: (lambda v, r: -orig(v, r))),),
           expected=("given_the_batch.value_gradient",)),
    # --- entropy -------------------------------------------------------------------
    Mutant("entropy_sign", "a2c", "entropy_wrong_sign",
           overrides={"ent_coef": -0.01}, declared={"ent_coef": 0.01}, expected=(_PG,),
           detail="run with ent_coef = -0.01 behind a declared 0.01"),
    Mutant("gaussian_entropy_not_summed", "ppo", "gaussian_entropy_not_summed",
           ((_CORE + ".gaussian_entropy",
                             lambda orig: _entropy_mean_dims),),
           expected=("components.gaussian_entropy", "given_the_batch.gaussian_density@lqr")),
    # --- KL ------------------------------------------------------------------------
    Mutant("k1_for_early_stopping", "ppo", "kl_k1_for_k3", ((_CORE + ".kl_k3", _k1_instead_of_k3),),
           overrides={"target_kl": 0.01}, expected=("components.kl_k3",)),
    Mutant("gaussian_kl_no_square", "trpo", "gaussian_kl_no_square",
           ((_CORE + ".gaussian_kl", lambda orig: _kl_no_square),),
           expected=("components.gaussian_kl",)),
    # --- TRPO -----------------------------------------------------------------------
    Mutant("trpo_vanilla_direction", "trpo", "cg_skipped",
           ((_CORE + ".conjugate_gradient",
             lambda orig: (lambda mv, b, n, residual_tol=1e-10: b)),), expected=(_STEP,),
           detail="conjugate_gradient returns b"),
    Mutant("trpo_no_factor_two", "trpo", "trpo_no_factor_two",
           (("pgtheory.implementations.trpo.TRPOAgent.full_step_scale",
             lambda orig: (lambda self, xFx: _torch().sqrt(self.cfg.max_kl / xFx))),),
           expected=(_STEP,)),
    Mutant("trpo_no_sqrt", "trpo", "trpo_no_sqrt",
           (("pgtheory.implementations.trpo.TRPOAgent.full_step_scale",
             lambda orig: (lambda self, xFx: 2 * self.cfg.max_kl / xFx)),),
           expected=(_STEP,)),
    Mutant("trpo_line_search_never_accepts", "trpo", "line_search_never_accepts",
           ((_CORE + ".backtracking_line_search", lambda orig: _line_search_never),),
           expected=(_STEP,)),
    Mutant("trpo_line_search_ignores_kl", "trpo", "line_search_ignores_kl",
           ((_CORE + ".backtracking_line_search", lambda orig: _line_search_no_kl),),
           overrides={"max_kl": 0.05}),
    Mutant("trpo_damping_undeclared", "trpo", "trpo_damping_undeclared",
           overrides={"cg_damping": 0.0}, declared={"cg_damping": 0.1}, expected=(_STEP,),
           detail="CG solves F x = g (no damping) while the configuration says 0.1"),
    # --- REINFORCE --------------------------------------------------------------------
    Mutant("gamma_t_declared_not_applied", "reinforce", "gamma_t_weighting_mismatch",
           (("pgtheory.implementations.reinforce.REINFORCEAgent.sample_weights",
             lambda orig: (lambda self, te, tr: None)),),
           overrides={"gamma_t_weighting": True}, expected=(_PG,)),
    # --- continuous actions -------------------------------------------------------------
    Mutant("log_prob_averaged_over_dims", "ppo", "gaussian_log_prob_averaged",
           ((_CORE + ".gaussian_log_prob", _log_prob_mean_dims),),
           expected=("components.gaussian_log_prob", "given_the_batch.gaussian_density@lqr")),
    Mutant("log_std_detached", "ppo", "log_std_detached",
           (("pgtheory.implementations.common.Actor.forward", _detached_log_std),),
           expected=("given_the_batch.log_prob_gradient@lqr",)),
    Mutant("clipped_action_stored", "ppo", "clipped_action_stored",
           (("pgtheory.implementations.common.Agent.rollout", _clipped_action_stored),),
           expected=("given_the_batch.action_sampling@lqr",),
           detail="stored with its own log-density; in tianshou #312 the sampled action's "
                  "log-density was stored"),
    # --- equivalent --------------------------------------------------------------------
    Mutant("policy_loss_doubled", "ppo", "policy_loss_doubled",
           ((_CORE + ".clipped_surrogate_loss",
             lambda orig: (lambda logp, old, adv, eps: 2 * orig(logp, old, adv, eps))),),
           overrides={"max_grad_norm": None},
           equivalent="with gradient clipping off, the actor's gradient is scaled by a constant "
                      "2 and Adam's per-coordinate update m / sqrt(v) is invariant to a constant "
                      "positive scale (up to eps = 1e-5); the actor and critic share no "
                      "parameters, so the critic's update is unchanged. The given-the-batch "
                      "checks accept any positive scale for this reason (catalogue: negative "
                      "controls)."),
    Mutant("samples_with_log_variance", "a2c", "log_std_as_log_variance",
           ((_CORE + ".DiagGaussian.rsample", _variance_as_std),),
           expected=("given_the_batch.action_sampling@lqr",),
           detail="actions sampled with std exp(log_std / 2) while the density uses exp(log_std)"),
]

#: name -> Mutant
MUTANTS: dict[str, Mutant] = {m.name: m for m in _LIST}


@dataclasses.dataclass
class KillResult:
    """One mutant's audit: the failed checks (name, layer), the seconds, and any error."""

    mutant: Mutant
    flagged: list[tuple[str, str]]
    seconds: float
    error: str = ""

    @property
    def killed(self) -> bool:
        return bool(self.flagged)


def run_mutant(mutant: Mutant, *, quick: bool = False, seed: int = 0,
               continuous: bool = False) -> KillResult:
    """Audit one mutant (the audit's configuration, :func:`pgtheory.oracles.audit.audit_config`;
    ``continuous``: its continuous-only linear variant, see :func:`make_target`)."""
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import run_suite

    t0 = time.perf_counter()
    try:
        with applied(mutant):
            results = run_suite(make_target(mutant, continuous=continuous),
                                config=audit_config(seed, quick))
    except Exception as exc:  # a mutant that cannot even be audited is reported, not raised
        return KillResult(mutant, [], time.perf_counter() - t0, repr(exc))
    flagged = [(r.name, r.layer) for r in results if r.verdict == "fail"]
    return KillResult(mutant, flagged, time.perf_counter() - t0)


def kill_matrix(names: list[str] | None = None, *, quick: bool = False, seed: int = 0,
                progress: Callable[[str], None] | None = None,
                continuous: bool = False) -> list[KillResult]:
    """Run :func:`run_mutant` for ``names`` (default: all), in catalogue order."""
    out = []
    for name in names or list(MUTANTS):
        if progress:
            progress(name)
        out.append(run_mutant(MUTANTS[name], quick=quick, seed=seed, continuous=continuous))
    return out


#: Layers whose ``@lqr`` rows are the continuous in-expectation and update-level checks.
NEW_CONTINUOUS_LAYERS = ("in_expectation", "update_level")


def only_by_continuous_layers(result: KillResult) -> bool:
    """Whether every check that flagged ``result`` is an in-expectation or update-level
    ``@lqr`` row (the mutant would survive an audit with the batch-level rows alone)."""
    return bool(result.flagged) and all(
        layer in NEW_CONTINUOUS_LAYERS and name.endswith("@lqr")
        for name, layer in result.flagged)


def format_matrix(results: list[KillResult], *, continuous: bool = False) -> str:
    """Markdown: one row per mutant (class, algorithm, killed, the flagging checks); with
    ``continuous``, a column saying whether only the in-expectation / update-level ``@lqr``
    rows caught it."""
    lines = ["| mutant | algorithm | class | killed | flagged by (layer: checks) | report |",
             "|---|---|---|---|---|---|"]
    if continuous:
        lines = [lines[0] + " only by the new layers |", lines[1] + "---|"]
    for r in results:
        by: dict[str, list[str]] = {}
        for name, layer in r.flagged:
            by.setdefault(layer, []).append(name.split(".", 1)[1])
        flagged = "; ".join(f"{layer}: {', '.join(ns)}" for layer, ns in by.items())
        status = ("yes" if r.killed else "equivalent" if r.mutant.equivalent else
                  "error" if r.error else "**no**")
        row = (f"| `{r.mutant.name}` | {r.mutant.algorithm} | {r.mutant.bug_class} | "
               f"{status} | {flagged or r.error or '-'} | {r.mutant.report or '-'} |")
        if continuous:
            row += f" {'**yes**' if only_by_continuous_layers(r) else '-'} |"
        lines.append(row)
    killable = [r for r in results if not r.mutant.equivalent]
    killed = sum(r.killed for r in killable)
    lines += ["", f"Killed {killed} of {len(killable)} non-equivalent mutants "
                  f"({100 * killed / max(len(killable), 1):.0f}%)."]
    return "\n".join(lines)


def continuous_header(results: list[KillResult], *, quick: bool, seed: int) -> str:
    """The heading of the continuous kill matrix page (what the view is, how it was made)."""
    import datetime

    only = [r.mutant.name for r in results if only_by_continuous_layers(r)]
    cmd = (f"python -m pgtheory.lab.mutants --continuous{' --quick' if quick else ''}"
           f"{f' --seed {seed}' if seed else ''} --markdown docs/kill_matrix_continuous.md")
    return (
        "# Kill matrix, continuous-only view\n\n"
        f"Generated on {datetime.date.today().isoformat()} by `{cmd}` "
        f"({'quick' if quick else 'full'} audits, seed {seed}). Each mutant of "
        "`lab/mutants.py` is audited as a *continuous-only linear* target: the project's "
        "implementation with `hidden_sizes=()` (an affine-Gaussian policy and an affine "
        "critic), declaring only continuous actions and exposing no components, so its audit "
        "has only the `@lqr` rows, as a single-file PPO for MuJoCo would. The last column "
        "marks the mutants that only the in-expectation and update-level `@lqr` rows catch "
        f"({len(only)} here: {', '.join(f'`{n}`' for n in only) or 'none'}). Mutants of the "
        "tabular path (a categorical entropy) or that need clipping or training are expected "
        "to survive this view. The double integrator has one action dimension; a per-dimension "
        "mean of the Gaussian log-density or entropy shows only on more, so the policy-head "
        "row `gaussian_density@lqr` runs on a two-actuator variant. The full kill matrix is "
        "[kill_matrix.md](kill_matrix.md).\n\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m pgtheory.lab.mutants``: audit the mutants and print the kill matrix."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pgtheory.lab.mutants",
                                     description="kill matrix of the seeded bugs in "
                                                 "implementations/")
    parser.add_argument("--quick", action="store_true", help="quick audits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="mutant names")
    parser.add_argument("--markdown", metavar="PATH", help="also write the matrix there")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--continuous", action="store_true",
                        help="audit each mutant's continuous-only linear variant (the @lqr "
                             "rows alone)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(MUTANTS))
    if unknown:
        print(f"unknown mutant(s) {unknown}; expected among {sorted(MUTANTS)}")
        return 2
    results = kill_matrix(args.only, quick=args.quick, seed=args.seed,
                          progress=lambda n: print(f"auditing {n} ...", flush=True),
                          continuous=args.continuous)
    table = format_matrix(results, continuous=args.continuous)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            if args.continuous:
                f.write(continuous_header(results, quick=args.quick, seed=args.seed))
            f.write(table + "\n")
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump([{"mutant": r.mutant.name, "flagged": r.flagged,
                        "seconds": round(r.seconds, 2), "error": r.error} for r in results], f)
    survivors = [r for r in results if not r.killed and not r.mutant.equivalent]
    # the continuous view is a map of which rows see what; mutants of the tabular path (a
    # categorical entropy, say) are expected to survive it
    return 1 if survivors and not args.continuous else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
