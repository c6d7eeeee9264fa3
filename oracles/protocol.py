"""The implementation-under-test protocol: what a target exposes so the oracles can check it.

A *target* describes one implementation (ours, Stable-Baselines3, a user's) and builds *agents*.
An adapter is a few dozen lines (see :mod:`pgtheory.oracles.example_target`, which is one).
Everything except :meth:`Target.make_agent` and the agent's ``distribution``/``named_parameters``/
``iterate`` is optional; checks that need a missing piece are reported as skipped with the reason.

Target
    ``name: str``; ``algorithm: str`` in :data:`ALGORITHMS`; ``hyperparameters: dict`` (keys in
    :data:`HYPERPARAMETERS`; ``gamma`` is required); ``make_agent(env_fn, *, seed, num_envs,
    num_steps) -> Agent`` where ``env_fn()`` returns a fresh gymnasium env (the oracle env, with
    its time limit); optionally ``components: dict[str, callable]`` with keys of
    :data:`COMPONENT_KEYS` (signatures documented on the ``pgtheory.oracles.components.check_*``
    functions); optionally ``action_kinds: tuple[str, ...]`` among :data:`ACTION_KINDS`
    (default ``("discrete",)``: the tabular layers; ``"continuous"`` adds the Gaussian-policy
    checks on the LQR environment; a target declaring only ``("continuous",)`` gets only
    those, and the report marks the tabular checks not applicable); optionally
    ``model_description: str`` (printed under the report's title) and ``notes: list[str]``
    (what the configuration leaves untested, printed with the report); optionally
    ``not_applicable: dict[str, str]``, check names or layer prefixes ending in ``"."`` (e.g.
    ``"in_expectation."``) mapped to why they cannot be exact for this target (the rows are
    skipped with that reason, and their stages do not run).

Agent
    ``distribution(obs: Tensor[B, *obs_shape]) -> torch.distributions.Distribution`` whose
    ``log_prob(actions)`` has shape (B,) (sum over action dimensions) under the *current*
    parameters; ``named_parameters() -> dict[str, torch.nn.Parameter]`` (every trained
    parameter; the oracles read and temporarily overwrite them and always restore them);
    ``iterate() -> Iteration`` (one collection and one update, recorded); optionally
    ``value(obs) -> Tensor[B]`` and ``collect() -> Rollout`` (one collection that starts
    from fresh env resets, without the update; when present the in-expectation trials reuse
    one agent, restoring its parameters before each call, instead of building one per trial).

Recording
    :class:`Iteration` holds the :class:`Rollout` exactly as the implementation stored it, the
    parameters at collection time, and one :class:`Update` per optimizer step (minibatch indices,
    parameters before, the gradients the optimizer applied, parameters after).
    :class:`StepRecorder` fills the updates from torch optimizer step hooks, without changing the
    implementation's code beyond telling it which minibatch is current.

Conventions: time-major ``(T, N)`` arrays; flat sample index ``t * N + n``; ``next_observations``
are the true ``s_{t+1}`` (the final observation where an episode ended, gymnasium 1.x
``info["final_obs"]``); ``log_probs`` under the collecting policy; ``returns`` are the critic's
regression targets.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from pgtheory.errors import InvalidArgumentError

__all__ = [
    "ACTION_KINDS",
    "ALGORITHMS",
    "COMPONENT_KEYS",
    "HYPERPARAMETERS",
    "Iteration",
    "Rollout",
    "StepRecorder",
    "TargetProtocolError",
    "Update",
    "action_kinds",
    "import_user_module",
    "load_target",
    "parameters_set",
    "restore",
    "snapshot",
    "untested_notes",
    "validate_agent",
    "validate_target",
]

ALGORITHMS = ("reinforce", "a2c", "ppo", "trpo")

#: Hyperparameter keys the checks read (all optional except ``gamma``).
HYPERPARAMETERS = {
    "gamma": "discount factor",
    "gae_lambda": "GAE lambda (default 1.0)",
    "normalize_advantage": "per-minibatch advantage normalization (default False)",
    "clip_range": "PPO ratio clip epsilon",
    "clip_range_vf": "PPO value clip (None: unclipped value loss)",
    "ent_coef": "entropy bonus coefficient (default 0)",
    "vf_coef": "value loss coefficient (matters only for shared parameters)",
    "max_kl": "TRPO trust-region delta",
    "cg_damping": "TRPO damping lambda in (F + lambda I) x = g (default 0)",
    "cg_iters": "TRPO conjugate-gradient iterations (None: the step is checked against the "
                "exact solve)",
    "line_search_shrinking_factor": "TRPO backtracking factor (default 0.5)",
    "line_search": "TRPO backtracks on the exact KL and surrogate (default True); False: the "
                   "natural policy gradient's full step beta x (Kakade 2001), whose KL is delta "
                   "only to second order, so no KL bound is asserted",
    "cg_x0_scale": "TRPO starts CG from x0 ~ scale N(0, I) (sb3-contrib: 1e-4; default 0)",
    "cg_residual_tol": "TRPO's CG stops once |r|^2 < this absolute tolerance (sb3-contrib: "
                       "1e-10; default 0: only relative round-off)",
    "sub_sampling_factor": "TRPO computes its actor step (surrogate gradient, Fisher, line "
                           "search) on every k-th sample of the batch (sb3-contrib; default 1)",
    "target_kl": "PPO target KL for early stopping (None: no bound)",
    "gamma_t_weighting": "REINFORCE multiplies the t-th term by gamma^t (default False); a "
                         "target declaring it starts every collection from fresh resets",
}

COMPONENT_KEYS = ("gae", "discounted_returns", "lambda_returns", "clipped_surrogate_loss",
                  "clipped_value_loss", "categorical_entropy", "categorical_kl", "kl_k1",
                  "kl_k2", "kl_k3", "gaussian_log_prob", "gaussian_entropy", "gaussian_kl",
                  "conjugate_gradient", "backtracking_line_search")


#: Action-space kinds a target may declare in ``action_kinds`` (default ``("discrete",)``).
ACTION_KINDS = ("discrete", "continuous")


def action_kinds(target: Any) -> tuple[str, ...]:
    """The action kinds ``target`` declares (``("discrete",)`` when it declares none)."""
    return tuple(getattr(target, "action_kinds", ("discrete",)))


class TargetProtocolError(InvalidArgumentError):
    """A target or agent does not satisfy the protocol; the message names the missing piece."""


@dataclasses.dataclass
class Rollout:
    """One collection, as the implementation stored it (numpy, time-major).

    Attributes
    ----------
    observations, next_observations : ndarray, shape (T, N, *obs_shape)
    actions : ndarray, shape (T, N) (discrete) or (T, N, action_dim)
    rewards : ndarray, shape (T, N)
    terminated, truncated : ndarray of bool, shape (T, N)
    log_probs : ndarray, shape (T, N)
        ``log pi_old(a_t | s_t)`` as stored.
    advantages : ndarray, shape (T, N)
        Before any minibatch normalization.
    values : ndarray, shape (T, N), or None
        Critic outputs at collection (None without a critic).
    returns : ndarray, shape (T, N), or None
        The critic's regression targets.
    valid : ndarray of bool, shape (T, N), or None
        Which slots hold a real transition. None (the default) for collections that have no
        other kind: same-step autoreset, where the step that ends an episode already returns
        the reset observation. Under gymnasium's next-step autoreset
        (``gymnasium.vector.AutoresetMode.NEXT_STEP``) the step after an episode end only
        resets its env (the action is ignored, the reward is 0): such a slot is False here,
        and every check leaves it out of its reference (a correct loss excludes it;
        Gymnasium 1.x documentation, "Autoreset modes" of ``VectorEnv``). The transition
        that ended the episode keeps its true flags and next observation.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_observations: np.ndarray
    log_probs: np.ndarray
    advantages: np.ndarray
    values: np.ndarray | None = None
    returns: np.ndarray | None = None
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        T_N = np.shape(self.rewards)
        if len(T_N) != 2:
            raise TargetProtocolError(f"Rollout.rewards: expected shape (T, N), received {T_N}")
        if self.valid is not None and np.asarray(self.valid).dtype != bool:
            raise TargetProtocolError(f"Rollout.valid: expected a bool array, received dtype "
                                      f"{np.asarray(self.valid).dtype}")
        for name in ("terminated", "truncated", "log_probs", "advantages", "values", "returns",
                     "valid"):
            x = getattr(self, name)
            if x is not None and np.shape(x) != T_N:
                raise TargetProtocolError(f"Rollout.{name}: expected shape {T_N}, received "
                                          f"{np.shape(x)}")
        for name in ("observations", "next_observations", "actions"):
            if np.shape(getattr(self, name))[:2] != T_N:
                raise TargetProtocolError(f"Rollout.{name}: expected leading shape {T_N}, "
                                          f"received {np.shape(getattr(self, name))}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.rewards))

    def valid_mask(self) -> np.ndarray:
        """:attr:`valid` as a (T, N) bool array (all True when it is None)."""
        if self.valid is None:
            return np.ones(self.shape, bool)
        return np.asarray(self.valid, bool)

    def flat(self, name: str) -> np.ndarray:
        """The field reshaped to (T * N, ...) in the index order ``t * N + n``."""
        x = np.asarray(getattr(self, name))
        return x.reshape((-1, *x.shape[2:]))


@dataclasses.dataclass
class Update:
    """One optimizer step: which samples, parameters before, the applied gradient, after.

    ``gradients`` maps parameter names to the ``.grad`` the optimizer saw (after any gradient
    clipping); parameters without a gradient are absent. ``excluded_indices``: flat indices
    the implementation named for this step that the checks leave out (next-step autoreset
    slots, :attr:`Rollout.valid`); ``indices`` holds the rest.
    """

    indices: np.ndarray
    parameters_before: dict
    gradients: dict
    parameters_after: dict
    tag: str = ""
    excluded_indices: np.ndarray | None = None
    #: Position in its iteration's ``updates`` as recorded (set by the suite when it checks a
    #: sample of the steps; None: the position in the list).
    index: int | None = None


@dataclasses.dataclass
class Iteration:
    """One collection and update: the rollout, parameters at collection, updates, after."""

    rollout: Rollout
    parameters_at_collection: dict
    updates: list[Update]
    parameters_after: dict
    #: TRPO: the flat sample indices its actor step (surrogate gradient, Fisher, line search)
    #: used, when not the whole batch (sb3-contrib's ``sub_sampling_factor``); None: all.
    actor_indices: np.ndarray | None = None


def snapshot(named: dict) -> dict:
    """Detached CPU copies of a ``name -> tensor`` mapping (same shapes and dtypes).

    Raises
    ------
    AttributeError
        A value is not a torch tensor.
    """
    return {k: v.detach().to("cpu", copy=True) for k, v in named.items()}


def restore(named: dict, values: dict) -> None:
    """Copy ``values`` into the live parameters ``named`` in place (no autograd).

    Names absent from ``values`` are left unchanged; values are cast to each parameter's
    device and dtype.

    Raises
    ------
    RuntimeError
        A value's shape does not match its parameter.
    """
    import torch

    with torch.no_grad():
        for k, p in named.items():
            if k in values:
                p.copy_(values[k].to(p.device, p.dtype))


@contextlib.contextmanager
def parameters_set(agent, values: dict) -> Iterator[dict]:
    """Temporarily load ``values`` into the agent's parameters; always restore them.

    Yields the agent's live ``named_parameters()``.

    Raises
    ------
    RuntimeError
        As :func:`restore`.
    """
    live = agent.named_parameters()
    saved = snapshot(live)
    restore(live, values)
    try:
        yield live
    finally:
        restore(live, saved)


class StepRecorder:
    """Record every ``optimizer.step()`` as an :class:`Update` using torch's step hooks.

    Parameters
    ----------
    named_parameters : dict[str, torch.nn.Parameter]
        The parameters to record (names as in the agent's ``named_parameters()``).
    optimizers : iterable of torch.optim.Optimizer
    tag : str
        Label of the updates (e.g. ``"actor"``).

    Raises
    ------
    TargetProtocolError
        ``optimizers`` is empty or holds something that is not a torch optimizer.

    Notes
    -----
    Before each step the implementation (or its adapter) sets :attr:`current_indices` to the
    flat indices of the minibatch; :meth:`take` returns the updates recorded since the last
    call.
    """

    def __init__(self, named_parameters: dict, optimizers: Iterable, tag: str = "") -> None:
        self.named = dict(named_parameters)
        self.current_indices: np.ndarray | None = None
        self.tag = tag
        self._updates: list[Update] = []
        self._pending: tuple | None = None
        opts = list(optimizers)
        if not opts:
            raise TargetProtocolError("StepRecorder: expected at least one torch optimizer")
        for opt in opts:
            if not hasattr(opt, "register_step_pre_hook"):
                raise TargetProtocolError(f"StepRecorder: expected torch.optim.Optimizer, "
                                          f"received {type(opt).__name__}")
            opt.register_step_pre_hook(self._before)
            opt.register_step_post_hook(self._after)

    def _before(self, optimizer, args, kwargs) -> None:
        grads = {k: p.grad.detach().to("cpu", copy=True) for k, p in self.named.items()
                 if p.grad is not None}
        idx = (np.array([], int) if self.current_indices is None
               else np.asarray(self.current_indices).copy())
        self._pending = (idx, snapshot(self.named), grads)

    def _after(self, optimizer, args, kwargs) -> None:
        idx, before, grads = self._pending
        self._updates.append(Update(idx, before, grads, snapshot(self.named), self.tag))
        self._pending = None

    def take(self) -> list[Update]:
        out, self._updates = self._updates, []
        return out


def _missing(obj: Any, names: Iterable[str]) -> list[str]:
    return [n for n in names if not callable(getattr(obj, n, None))]


def validate_target(target: Any) -> Any:
    """Check that ``target`` satisfies the protocol; return it.

    Raises
    ------
    TargetProtocolError
        Naming the first missing or malformed piece (attribute, method or hyperparameter).

    References
    ----------
    Module docstring (the protocol).
    """
    if _missing(target, ["make_agent"]):
        raise TargetProtocolError(f"target {target!r}: expected a make_agent(env_fn, *, seed, "
                                  f"num_envs, num_steps) method")
    for attr, kind in (("name", str), ("algorithm", str), ("hyperparameters", dict)):
        if not isinstance(getattr(target, attr, None), kind):
            raise TargetProtocolError(f"target {target!r}: expected attribute {attr!r} of type "
                                      f"{kind.__name__}, received "
                                      f"{type(getattr(target, attr, None)).__name__}")
    if target.algorithm not in ALGORITHMS:
        raise TargetProtocolError(f"target.algorithm: expected one of {ALGORITHMS}, received "
                                  f"{target.algorithm!r}")
    hp = target.hyperparameters
    if "gamma" not in hp:
        raise TargetProtocolError("target.hyperparameters: expected a 'gamma' entry")
    unknown = sorted(set(hp) - set(HYPERPARAMETERS))
    if unknown:
        raise TargetProtocolError(f"target.hyperparameters: unknown keys {unknown}; expected "
                                  f"keys among {sorted(HYPERPARAMETERS)}")
    if target.algorithm == "ppo" and "clip_range" not in hp:
        raise TargetProtocolError("target.hyperparameters: a PPO target must give 'clip_range'")
    if target.algorithm == "trpo" and "max_kl" not in hp:
        raise TargetProtocolError("target.hyperparameters: a TRPO target must give 'max_kl'")
    kinds = getattr(target, "action_kinds", ("discrete",))
    if (not isinstance(kinds, tuple | list | set | frozenset) or not kinds
            or not set(kinds) <= set(ACTION_KINDS)):
        raise TargetProtocolError(f"target.action_kinds: expected a non-empty tuple of "
                                  f"{ACTION_KINDS}, received {kinds!r}")
    comps = getattr(target, "components", {}) or {}
    bad = sorted(set(comps) - set(COMPONENT_KEYS))
    if bad:
        raise TargetProtocolError(f"target.components: unknown keys {bad}; expected keys among "
                                  f"{list(COMPONENT_KEYS)}")
    return target


def validate_agent(agent: Any) -> Any:
    """Check that an agent built by a target has the required methods; return it.

    Raises
    ------
    TargetProtocolError
        Naming the missing method.
    """
    missing = _missing(agent, ["distribution", "named_parameters", "iterate"])
    if missing:
        raise TargetProtocolError(f"agent {type(agent).__name__}: missing method(s) "
                                  f"{', '.join(missing)} (see pgtheory.oracles.protocol)")
    return agent


def import_user_module(spec: str, module_name: str):
    """Import the user's ``module_name`` for target ``spec``; the current directory is searched
    too (a console script's ``sys.path`` does not contain it).

    Raises
    ------
    TargetProtocolError
        The module cannot be imported, or raised while being imported (the message says which).
    """
    import importlib
    import os
    import sys

    try:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            top = module_name.split(".")[0]
            if exc.name != top or os.getcwd() in sys.path or "" in sys.path:
                raise
            sys.path.insert(0, os.getcwd())
            return importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetProtocolError(f"target spec {spec!r}: cannot import {module_name!r} "
                                  f"({exc}; searched the current directory and sys.path)"
                                  ) from exc
    except Exception as exc:
        raise TargetProtocolError(f"target spec {spec!r}: importing {module_name!r} raised "
                                  f"{exc!r}") from exc


def load_target(spec: str | Any) -> Any:
    """Resolve ``"MODULE:ATTR"`` (an object, or a zero-argument factory) to a validated target.

    Raises
    ------
    TargetProtocolError
        Malformed spec, unimportable module, missing attribute, or a protocol violation.
    """
    if not isinstance(spec, str):
        return validate_target(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetProtocolError(f"target spec: expected 'MODULE:ATTR', received {spec!r}")
    module = import_user_module(spec, module_name)
    if not hasattr(module, attr):
        raise TargetProtocolError(f"target spec {spec!r}: module {module_name!r} has no "
                                  f"attribute {attr!r}")
    obj = getattr(module, attr)
    if isinstance(obj, Callable) and not hasattr(obj, "make_agent"):
        try:
            obj = obj()
        except Exception as exc:
            raise TargetProtocolError(f"target spec {spec!r}: the factory {attr}() raised "
                                      f"{exc!r}") from exc
    return validate_target(obj)


def untested_notes(hp: dict, algorithm: str) -> list[str]:
    """What a target's declared hyperparameters leave unexercised by the suite (for reports).

    ``hp``: the target's hyperparameters; ``algorithm``: one of :data:`ALGORITHMS`. Returns
    short sentences (empty when nothing is left out). Raises nothing.
    """
    notes = []
    if algorithm in ("ppo", "a2c") and hp.get("ent_coef", 0.0) == 0.0:
        notes.append("ent_coef = 0: the entropy term of the loss is not exercised")
    if algorithm == "ppo" and "clip_range_vf" not in hp:
        notes.append("clip_range_vf = None: value clipping is not exercised")
    if algorithm == "ppo" and hp.get("target_kl") is None:
        notes.append("target_kl = None: KL early stopping is not exercised and the PPO KL "
                     "check has no bound to test")
    return notes
