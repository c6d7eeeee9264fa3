"""Recording API: make an unmodified single-loop training script (CleanRL style) auditable.

A loop-style script builds a gymnasium vector env, then per iteration collects ``num_steps``
steps of ``num_envs`` envs into storage tensors, computes GAE, and runs epochs of minibatch
optimizer steps. Six one-line calls, each a cheap no-op when no audit is running, make it a
protocol target (:mod:`pgtheory.oracles.protocol`)::

    args = recording.configure(args)                     # after parsing, before derived sizes
    envs = recording.record_env(envs)                    # innermost: right around the vector env
    recording.register(agent.distribution, value=agent.value, module=agent,
                       optimizers=optimizer)             # before the first env step
    recording.record_batch(observations=obs, actions=actions, log_probs=logprobs,
                           values=values, advantages=advantages, returns=returns)
    recording.record_minibatch(mb_inds)                  # before each optimizer.step()
    recording.end_iteration()                            # last line of the iteration loop

and ``target = recording.loop_target(main, algorithm="ppo", hyperparameters={...})`` exposes
it to ``pgtheory audit MODULE:target`` and ``pytest --pg-target MODULE:target``.

How the oracles drive the loop: :meth:`LoopTarget.make_agent` registers the oracle env factory
as a gymnasium id and runs ``main()`` in a worker thread whose recording calls are live (a
thread-local session; in every other thread they do nothing). :func:`configure` overrides the
script's env id, seed, ``num_envs``, ``num_steps`` and its budget (so the loop never ends on its
own); the worker pauses in :func:`register` and again in every :func:`end_iteration`, handing an
:class:`~pgtheory.oracles.protocol.Iteration` to the agent's ``iterate()``. Every handshake has a
timeout; the script's own exceptions are re-raised by ``make_agent``/``iterate`` (the suite
reports them as ERROR rows), and misuse raises :class:`RecordingError` naming the missing call.
A dropped agent stops its worker (``weakref.finalize``); workers are daemon threads.

Ground truth: :class:`RecordingVectorEnv` logs, per step, the observation the step started from,
the rewards, the true ``terminated`` and ``truncated`` flags and the true next observation: in
``AutoresetMode.SAME_STEP`` the final observation from ``info["final_obs"]`` where an episode
ended (the returned observation is already the reset one); in ``NEXT_STEP`` (gymnasium 1.x's
default) the returned observation itself, the step after an episode end being the env's reset
step. :func:`record_batch` copies everything it is given (storage tensors are reused in place by
the next iteration).

Both autoreset modes are audited. Under ``NEXT_STEP`` the reset slots (the step after an
episode end, whose action the env ignores) are marked in the rollout's ``valid`` mask and left
out of every reference: stored advantages and targets are compared on real transitions only,
:func:`record_minibatch` drops reset slots from the minibatch the gradient checks rebuild (kept
in ``Update.excluded_indices``), and the in-expectation gradient propagates the slot each reset
costs. A loop that trains on reset slots (a loop written for same-step autoreset, run under
gymnasium 1.x's default) therefore fails the gradient checks, with the catalogue entry
``next_step_autoreset`` named when including the excluded slots reproduces the gradient.

Limitations (checked, with the error naming them): the recording calls must run in the
thread that runs ``main()``; the loop cannot skip its update, so the in-expectation trials run a
fresh script per trial (no ``collect()``).
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import atexit
import dataclasses
import itertools
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pgtheory.oracles.protocol import (
    ACTION_KINDS,
    Iteration,
    Rollout,
    StepRecorder,
    TargetProtocolError,
    snapshot,
    untested_notes,
    validate_target,
)

__all__ = ["AUDIT_ITERATIONS", "LoopAgent", "LoopTarget", "RecordingError",
           "RecordingVectorEnv", "active", "configure", "end_iteration", "loop_target",
           "record_batch", "record_env", "record_minibatch", "register"]

#: The iteration budget :func:`configure` gives the script under an audit: the oracles stop
#: the loop, not the script's own ``total_timesteps``.
AUDIT_ITERATIONS = 10**9

_local = threading.local()
_ids = itertools.count()

#: Live worker threads and their sessions; stopped and joined at interpreter exit, because a
#: daemon thread still inside torch when the interpreter finalizes aborts the process.
_WORKERS: list[tuple[threading.Thread, _Session]] = []


def _stop_workers(timeout: float = 10.0) -> None:
    """Tell every live loop script to stop and wait (``timeout`` s each) until it has."""
    for worker, session in list(_WORKERS):
        if worker.is_alive():
            session.to_worker.put("stop")
            worker.join(timeout)
    _WORKERS.clear()


atexit.register(_stop_workers)


class RecordingError(TargetProtocolError):
    """The recording calls of a loop script are missing, misplaced or given wrong shapes."""


class _Stopped(BaseException):
    """Raised inside a paused worker when its agent is dropped (not an ``Exception``, so the
    script's own ``except Exception`` does not swallow it)."""


def _session() -> _Session | None:
    return getattr(_local, "session", None)


def active() -> bool:
    """True in the thread of a script an audit is driving (the recording calls are live)."""
    return _session() is not None


# ---------------------------------------------------------------------------- the calls
def configure(args: Any, *, env_id: str | None = "env_id", seed: str | None = "seed",
              num_envs: str | None = "num_envs", num_steps: str | None = "num_steps",
              total_timesteps: str | None = "total_timesteps",
              num_iterations: str | None = None) -> Any:
    """The script's settings with the audit's env, seed and sizes (unchanged without an audit).

    Call it right after the settings are parsed, before derived sizes (batch size, number of
    iterations) are computed from them. The keyword arguments name the attributes (or dict
    keys) to override; ``None`` leaves one alone. ``total_timesteps`` (or ``num_iterations``)
    is set so that the loop runs :data:`AUDIT_ITERATIONS` iterations: the audit stops it.

    Parameters
    ----------
    args : dataclass instance (frozen or not), dict, or object with attributes

    Returns
    -------
    A copy of ``args`` with ``env_id`` a registered gymnasium id of the oracle env, ``seed``,
    ``num_envs`` (envs), ``num_steps`` (per-env steps per iteration) and the budget replaced;
    ``args`` itself when no audit is running.

    Raises
    ------
    RecordingError
        A named attribute does not exist on ``args``, or ``configure`` was called twice.
    """
    s = _session()
    if s is None:
        return args
    return s.configure(args, env_id=env_id, seed=seed, num_envs=num_envs, num_steps=num_steps,
                       total_timesteps=total_timesteps, num_iterations=num_iterations)


def record_env(envs: gym.vector.VectorEnv) -> gym.vector.VectorEnv:
    """``envs`` wrapped in :class:`RecordingVectorEnv` (``envs`` itself without an audit).

    Wrap the vector env the loop builds *directly*, before any vector-level wrapper
    (normalization, episode statistics): wrappers inside the recorder cannot hide truncation
    or rewrite final observations from it. Per-env wrappers (inside ``make_env``) are part of
    the env as the loop sees it.

    Raises
    ------
    RecordingError
        Not a gymnasium vector env, :func:`configure` not called, or ``num_envs`` is not the
        audit's.
    """
    s = _session()
    if s is None:
        return envs
    return s.record_env(envs)


def register(distribution: Callable, *, optimizers, value: Callable | None = None,
             module: torch.nn.Module | None = None, parameters: dict | None = None) -> None:
    """Name the policy, the critic, the trained parameters and the optimizers (no-op without
    an audit). Call it once, after the optimizers exist and before the first env step.

    Parameters
    ----------
    distribution : callable
        ``distribution(obs: Tensor[B, *obs_shape]) -> torch.distributions.Distribution`` under
        the current parameters; a ``Normal`` of batch shape (B, A) is read as independent over
        the action dimensions (log-probabilities summed).
    optimizers : torch.optim.Optimizer or iterable of them
        Every optimizer whose steps train the parameters (recorded by their step hooks).
    value : callable, optional
        ``value(obs) -> Tensor[B]`` or ``Tensor[B, 1]``; without it the critic checks skip.
    module, parameters : torch.nn.Module or dict[str, Parameter]
        Exactly one: the trained parameters (``module.named_parameters()``).

    Raises
    ------
    RecordingError
        Neither or both of ``module``/``parameters``, no optimizer, :func:`configure` or
        :func:`record_env` not called before it, or the env stepped before it.
    """
    s = _session()
    if s is None:
        return
    s.register(distribution, optimizers=optimizers, value=value, module=module,
               parameters=parameters)


def record_batch(*, observations, actions, log_probs, advantages, values=None, returns=None,
                 rewards=None) -> None:
    """Copy the iteration's batch as the loop stored it (no-op without an audit).

    Call it once per iteration after the advantages and returns are computed, before the
    update. Arrays are torch tensors or numpy arrays, time-major ``(T, N, ...)`` with
    ``T = num_steps`` and ``N = num_envs``; they are copied, so the loop may overwrite its
    storage afterwards. ``rewards`` is optional: pass the rewards the loop used when it
    rescales them (otherwise those the env returned are used).

    Raises
    ------
    RecordingError
        :func:`record_env` or :func:`register` missing, a second batch in one iteration
        (:func:`end_iteration` missing), the env not stepped ``num_steps`` times, or an array
        of the wrong shape. Under ``NEXT_STEP`` autoreset the reset slots are recorded as
        such (``Rollout.valid``), whatever the loop stored there.
    """
    s = _session()
    if s is None:
        return
    s.record_batch(observations=observations, actions=actions, log_probs=log_probs,
                   advantages=advantages, values=values, returns=returns, rewards=rewards)


def record_minibatch(indices) -> None:
    """Name the flat sample indices (``t * N + n``) of the next optimizer step's minibatch
    (no-op without an audit). Call it before each ``optimizer.step()``. Name every sample
    the step may train on, reset slots included (under ``NEXT_STEP`` autoreset the checks
    rebuild the loss without them, whatever the loop does with them).

    Raises
    ------
    RecordingError
        No batch recorded in this iteration, or an index outside ``[0, T * N)``.
    """
    s = _session()
    if s is None:
        return
    s.record_minibatch(indices)


def end_iteration() -> None:
    """Hand the recorded iteration to the oracles and wait (no-op without an audit).

    Call it as the last statement of the loop's iteration body.

    Raises
    ------
    RecordingError
        No batch recorded in this iteration, or an optimizer step without
        :func:`record_minibatch` before it.
    """
    s = _session()
    if s is None:
        return
    s.end_iteration()


# ------------------------------------------------------------------------ ground truth
@dataclasses.dataclass
class _Step:
    obs: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    next_obs: np.ndarray
    reset_step: np.ndarray


def _autoreset_mode(envs) -> gym.vector.AutoresetMode:
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    return gym.vector.AutoresetMode(mode)


class RecordingVectorEnv(gym.vector.VectorWrapper):
    """Log what the wrapped vector env really did, step by step (the audit's ground truth).

    ``log`` holds one record per ``step``: the observation the step started from, rewards,
    ``terminated``, ``truncated``, the true next observation (the final observation where an
    episode ended: ``info["final_obs"]`` under ``SAME_STEP``, the returned observation under
    ``NEXT_STEP``) and ``reset_step`` (``NEXT_STEP``: the env was only reset by this step, its
    action ignored). Arrays are copies. ``autoreset_mode`` is read from
    ``envs.metadata["autoreset_mode"]`` (gymnasium's default ``NEXT_STEP`` when absent).
    """

    def __init__(self, env: gym.vector.VectorEnv, on_step: Callable[[], None] | None = None):
        super().__init__(env)
        self.autoreset_mode = _autoreset_mode(env)
        self.log: list[_Step] = []
        self._on_step = on_step
        self._obs: np.ndarray | None = None
        self._ended = np.zeros(self.num_envs, bool)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = np.array(obs, copy=True)
        self._ended = np.zeros(self.num_envs, bool)
        return obs, info

    def step(self, actions):
        if self._on_step is not None:
            self._on_step()
        if self._obs is None:
            raise RecordingError("the loop stepped the recorded env before resetting it")
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        true_next = np.array(obs, copy=True)
        reset_step = np.zeros(self.num_envs, bool)
        if self.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP:
            if "_final_obs" in info:
                for n in np.flatnonzero(info["_final_obs"]):
                    true_next[n] = info["final_obs"][n]
        elif self.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP:
            reset_step = self._ended.copy()
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        self.log.append(_Step(self._obs, np.array(rewards, dtype=np.float64, copy=True),
                              terminated.copy(), truncated.copy(), true_next, reset_step))
        self._ended = terminated | truncated
        self._obs = np.array(obs, copy=True)
        return obs, rewards, terminated, truncated, info


# ---------------------------------------------------------------------------- session
def _numpy(name: str, x) -> np.ndarray:
    """A numpy copy of a tensor or array (never a view of the loop's storage)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy().copy()
    try:
        return np.array(x, copy=True)
    except Exception as exc:
        raise RecordingError(f"record_batch({name}=...): expected a torch tensor or numpy "
                             f"array, received {type(x).__name__}") from exc


class _Session:
    """One run of a loop script under an audit: the worker's state and the handshake."""

    def __init__(self, *, env_id: str, seed: int, num_envs: int, num_steps: int,
                 timeout: float) -> None:
        self.env_id, self.seed, self.num_envs, self.num_steps = env_id, seed, num_envs, num_steps
        self.timeout = timeout
        self.configured = False
        self.env: RecordingVectorEnv | None = None
        self.distribution_fn: Callable | None = None
        self.value_fn: Callable | None = None
        self.named: dict | None = None
        self.steps: StepRecorder | None = None
        self.rollout: Rollout | None = None
        self.at_collection: dict | None = None
        self.to_worker: queue.Queue = queue.Queue()
        self.to_controller: queue.Queue = queue.Queue()
        self.finished: str | None = None  # why the worker ended, once it has
        self._named = False  # record_minibatch() since the last optimizer step
        self._excluded: np.ndarray | None = None
        self._step_notes: list[tuple[bool, np.ndarray | None]] = []

    # --------------------------------------------------------------- worker side
    def configure(self, args, **names):
        if self.configured:
            raise RecordingError("configure(args) was called twice in one run")
        T, N = self.num_steps, self.num_envs
        values = {"env_id": self.env_id, "seed": self.seed, "num_envs": N, "num_steps": T,
                  "total_timesteps": T * N * AUDIT_ITERATIONS,
                  "num_iterations": AUDIT_ITERATIONS}
        changes = {names[k]: v for k, v in values.items() if names[k] is not None}
        for attr in changes:
            has = attr in args if isinstance(args, dict) else hasattr(args, attr)
            if not has:
                raise RecordingError(
                    f"configure(args): args has no {attr!r}; name the script's setting, e.g. "
                    f"configure(args, {next(k for k in names if names[k] == attr)}="
                    f"'its_name'), or pass None to leave it alone")
        self.configured = True
        if isinstance(args, dict):
            return {**args, **changes}
        if dataclasses.is_dataclass(args) and not isinstance(args, type):
            return dataclasses.replace(args, **changes)
        import copy

        out = copy.copy(args)
        for attr, v in changes.items():
            setattr(out, attr, v)
        return out

    def record_env(self, envs):
        if not self.configured:
            raise RecordingError("record_env() before configure(args): the loop would run on "
                                 "its own env and sizes; call args = configure(args) first")
        if self.env is not None:
            raise RecordingError("record_env() was called twice in one run")
        if not isinstance(envs, gym.vector.VectorEnv):
            raise RecordingError(f"record_env(envs): expected a gymnasium vector env, "
                                 f"received {type(envs).__name__}")
        if envs.num_envs != self.num_envs:
            raise RecordingError(f"record_env(envs): expected num_envs = {self.num_envs} (set "
                                 f"by configure), received {envs.num_envs}: does the loop "
                                 f"read args.num_envs after configure(args)?")
        self.env = RecordingVectorEnv(envs, on_step=self._before_step)
        return self.env

    def _before_step(self) -> None:
        if self.distribution_fn is None:
            raise RecordingError("the loop stepped the env before register(...): register "
                                 "the policy and optimizers before collecting")
        if len(self.env.log) >= self.num_steps:
            raise RecordingError(
                f"the loop took more than num_steps = {self.num_steps} env steps in one "
                f"iteration: end_iteration() missing at the end of the loop body, or the "
                f"loop does not read args.num_steps after configure(args)")

    def register(self, distribution, *, optimizers, value, module, parameters) -> None:
        if not self.configured:
            raise RecordingError("register() before configure(args): call args = "
                                 "configure(args) right after parsing the settings")
        if self.env is None:
            raise RecordingError("register() before record_env(envs): wrap the vector env "
                                 "the loop builds with envs = record_env(envs) first")
        if self.distribution_fn is not None:
            raise RecordingError("register() was called twice in one run")
        if not callable(distribution):
            raise RecordingError(f"register(distribution): expected a callable obs -> "
                                 f"torch.distributions.Distribution, received "
                                 f"{type(distribution).__name__}")
        if value is not None and not callable(value):
            raise RecordingError(f"register(value=...): expected a callable obs -> values, "
                                 f"received {type(value).__name__}")
        if (module is None) == (parameters is None):
            raise RecordingError("register(): pass exactly one of module= (a torch.nn.Module) "
                                 "and parameters= (a dict of named parameters)")
        named = dict(module.named_parameters()) if module is not None else dict(parameters)
        if not named:
            raise RecordingError("register(): the module has no parameters")
        opts = [optimizers] if hasattr(optimizers, "step") else list(optimizers or [])
        if self.env.log:
            raise RecordingError("register() after the env was stepped: register before "
                                 "the first collection")
        self.steps = StepRecorder(named, opts)  # raises TargetProtocolError without optimizers
        for opt in opts:  # after StepRecorder's hooks: a step without indices is detectable
            opt.register_step_post_hook(self._after_step)
        self.distribution_fn, self.value_fn, self.named = distribution, value, named
        self._pause(("ready", None))

    def _after_step(self, optimizer, args, kwargs) -> None:
        self._step_notes.append((self._named, self._excluded))
        self.steps.current_indices, self._excluded, self._named = None, None, False

    def record_batch(self, **arrays) -> None:
        if self.env is None:
            raise RecordingError("record_batch() before record_env(envs): the env's true "
                                 "flags and final observations were not recorded")
        if self.distribution_fn is None:
            raise RecordingError("record_batch() before register(...)")
        if self.rollout is not None:
            raise RecordingError("record_batch() was called twice in one iteration: "
                                 "end_iteration() missing at the end of the loop body")
        T, N = self.num_steps, self.num_envs
        log = self.env.log
        if len(log) != T:
            raise RecordingError(f"record_batch(): the env was stepped {len(log)} times in "
                                 f"this iteration, expected num_steps = {T}")
        got = {k: None if v is None else _numpy(k, v) for k, v in arrays.items()}
        for k in ("observations", "actions", "log_probs", "advantages"):
            if got[k] is None:
                raise RecordingError(f"record_batch(): {k}= is required")
        obs_shape = np.shape(log[0].obs)[1:]
        want = {"observations": (T, N, *obs_shape)}
        for k in ("log_probs", "advantages", "values", "returns", "rewards"):
            want[k] = (T, N)
        for k in ("values", "returns", "log_probs", "advantages"):
            if got[k] is not None and got[k].shape == (T, N, 1):
                got[k] = got[k][..., 0]
        space = self.env.single_action_space
        if isinstance(space, gym.spaces.Discrete):
            if got["actions"].shape == (T, N, 1):
                got["actions"] = got["actions"][..., 0]
            want["actions"] = (T, N)
            got["actions"] = got["actions"].astype(np.int64)
        else:
            want["actions"] = (T, N, *space.shape)
        for k, shape in want.items():
            if got[k] is not None and got[k].shape != shape:
                raise RecordingError(f"record_batch({k}=...): expected shape {shape} (T = "
                                     f"num_steps, N = num_envs), received {got[k].shape}")
        valid = None
        if self.env.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP:
            valid = ~np.stack([s.reset_step for s in log])
        rewards = got["rewards"] if got["rewards"] is not None else np.stack(
            [s.rewards for s in log])
        next_obs = np.stack([s.next_obs for s in log]).astype(got["observations"].dtype)
        self.rollout = Rollout(
            observations=got["observations"], actions=got["actions"], rewards=rewards,
            terminated=np.stack([s.terminated for s in log]),
            truncated=np.stack([s.truncated for s in log]), next_observations=next_obs,
            log_probs=got["log_probs"], advantages=got["advantages"], values=got["values"],
            returns=got["returns"], valid=valid)

    def record_minibatch(self, indices) -> None:
        if self.rollout is None:
            raise RecordingError("record_minibatch() before record_batch(...) in this "
                                 "iteration")
        idx = _numpy("indices", indices).astype(np.int64).ravel()
        B = self.num_steps * self.num_envs
        if idx.size == 0:
            raise RecordingError(
                "record_minibatch(indices): received an empty minibatch; a loop that drops "
                "samples from its minibatches (next-step autoreset slots, for one) must skip "
                "the optimizer step when none is left (the audit's batches are small: "
                f"num_envs x num_steps = {B} samples split into the script's minibatches)")
        if idx.size == 0 or idx.min() < 0 or idx.max() >= B:
            raise RecordingError(f"record_minibatch(indices): expected flat indices t * N + n "
                                 f"in [0, {B}), received {idx.size} indices in "
                                 f"[{idx.min() if idx.size else '-'}, "
                                 f"{idx.max() if idx.size else '-'}]")
        valid = self.rollout.valid
        if valid is None:
            self.steps.current_indices, self._excluded = idx, None
        else:  # next-step autoreset slots are left out of every reference (Rollout.valid)
            keep = np.asarray(valid, bool).ravel()[idx]
            self.steps.current_indices, self._excluded = idx[keep], idx[~keep]
        self._named = True

    def end_iteration(self) -> None:
        if self.rollout is None:
            raise RecordingError("end_iteration() without record_batch(...) in this "
                                 "iteration")
        updates = self.steps.take()
        notes, self._step_notes = self._step_notes, []
        blind = [j for j, (named, _) in enumerate(notes) if not named]
        for u, (_, excluded) in zip(updates, notes, strict=True):
            u.excluded_indices = excluded
        if blind:
            raise RecordingError(f"end_iteration(): optimizer step(s) {blind[:5]} of this "
                                 f"iteration had no record_minibatch(indices) before them")
        it = Iteration(self.rollout, self.at_collection, updates, snapshot(self.named))
        self.rollout = None
        self._pause(("iteration", it))

    def _pause(self, message) -> None:
        """Hand ``message`` to the controller and wait for the next ``go`` (or ``stop``)."""
        self.to_controller.put(message)
        command = self.to_worker.get()
        if command == "stop":
            raise _Stopped
        self.env.log.clear()
        self.steps.take()
        self._step_notes.clear()
        self.at_collection = snapshot(self.named)

    # ----------------------------------------------------------- controller side
    def wait(self, what: str):
        """The worker's next message; raise what the worker raised, or on a timeout."""
        if self.finished is not None:
            raise RecordingError(f"the loop script has ended ({self.finished}); it cannot "
                                 f"run {what}")
        try:
            kind, payload = self.to_controller.get(timeout=self.timeout)
        except queue.Empty:
            self.finished = f"no answer within {self.timeout:g} s"
            self.to_worker.put("stop")
            raise RecordingError(
                f"the loop script did not reach {what} within {self.timeout:g} s (is a "
                f"recording call missing: register(...) before the loop, end_iteration() at "
                f"the end of its body?)") from None
        if kind == "raised":
            self.finished = f"it raised {payload!r}"
            if not isinstance(payload, Exception):  # SystemExit (argparse) must not end the run
                raise RecordingError(f"the loop script raised {payload!r} before {what} (a "
                                     f"sys.exit, or argparse refusing the arguments main() "
                                     f"parsed?)") from payload
            raise payload
        if kind == "returned":
            self.finished = "main() returned"
            raise RecordingError(f"the loop script's main() returned before {what} (missing "
                                 f"register(...) or end_iteration(), or the loop does not "
                                 f"run long enough: does it read the budget configure(args) "
                                 f"sets?)")
        return payload


def _run(session: _Session, main: Callable) -> None:
    _local.session = session
    try:
        main()
    except _Stopped:
        return
    except BaseException as exc:  # the script's own exception, re-raised by the controller
        session.to_controller.put(("raised", exc))
        return
    finally:
        _local.session = None
        gym.registry.pop(session.env_id, None)
    session.to_controller.put(("returned", None))


# ----------------------------------------------------------------------------- target
class LoopAgent:
    """Protocol agent around one run of a loop script (see the module docstring)."""

    def __init__(self, session: _Session) -> None:
        self._session = session
        if session.value_fn is None:
            self.value = None  # the suite treats a non-callable value as no critic

    def named_parameters(self) -> dict:
        return dict(self._session.named)

    def distribution(self, obs) -> torch.distributions.Distribution:
        """The registered policy at ``obs`` (B, *obs_shape); a per-dimension Normal is made
        independent over its last axis (log-probabilities summed)."""
        d = self._session.distribution_fn(torch.as_tensor(obs, dtype=torch.float32))
        extra = len(d.batch_shape) - 1
        if extra > 0:
            d = torch.distributions.Independent(d, extra)
        return d

    def value(self, obs) -> torch.Tensor:
        """The registered critic at ``obs``: shape (B,)."""
        v = self._session.value_fn(torch.as_tensor(obs, dtype=torch.float32))
        return v.reshape(v.shape[0]) if v.dim() == 2 and v.shape[1] == 1 else v

    def iterate(self) -> Iteration:
        """Resume the script for one iteration; its recorded :class:`Iteration`.

        Raises
        ------
        RecordingError
            Misuse of the recording calls, or no answer within the timeout.
        Exception
            Whatever the script raised.
        """
        s = self._session
        if s.finished is None:
            s.to_worker.put("go")
        return s.wait("end_iteration()")


class LoopTarget:
    """A protocol target that runs a loop script's ``main()`` under the recording calls.

    Parameters
    ----------
    main : callable
        ``main()`` runs the script (settings parsed inside, passed through :func:`configure`).
    algorithm : str
        One of ``pgtheory.oracles.protocol.ALGORITHMS``.
    hyperparameters : dict
        Keys of ``pgtheory.oracles.protocol.HYPERPARAMETERS`` (``gamma`` required), the values
        the script uses.
    action_kinds : tuple of str
        Among ``("discrete", "continuous")``: the action spaces the script supports.
    name, components, model_description, notes
        As in the protocol (``notes`` defaults to what the hyperparameters leave untested).
    timeout : float
        Seconds to wait for the script to reach :func:`register` or :func:`end_iteration`.

    Raises
    ------
    TargetProtocolError
        ``main`` not callable, or the description violates the protocol.
    """

    def __init__(self, main: Callable, *, algorithm: str, hyperparameters: dict,
                 action_kinds: tuple[str, ...] = ("discrete",), name: str | None = None,
                 components: dict | None = None, model_description: str | None = None,
                 notes: list[str] | None = None, timeout: float = 300.0) -> None:
        if not callable(main):
            raise TargetProtocolError(f"loop_target(main): expected a callable main(), "
                                      f"received {type(main).__name__}")
        if not timeout > 0:
            raise TargetProtocolError(f"loop_target(timeout=...): expected seconds > 0, "
                                      f"received {timeout!r}")
        self.main, self.timeout = main, float(timeout)
        self.algorithm = algorithm
        self.hyperparameters = dict(hyperparameters)
        self.action_kinds = tuple(action_kinds)
        self.name = name or getattr(main, "__qualname__", None) or repr(main)
        self.components = dict(components or {})
        self.model_description = model_description or (
            f"loop script {self.name} driven by pgtheory.oracles.recording")
        if not set(self.action_kinds) <= set(ACTION_KINDS):
            raise TargetProtocolError(f"loop_target(action_kinds=...): expected kinds among "
                                      f"{ACTION_KINDS}, received {self.action_kinds!r}")
        validate_target(self)
        self.notes = (list(notes) if notes is not None
                      else untested_notes(self.hyperparameters, algorithm))

    def make_agent(self, env_fn, *, seed: int, num_envs: int, num_steps: int) -> LoopAgent:
        """Start ``main()`` in a worker thread on ``env_fn``; return once it has registered.

        Raises
        ------
        RecordingError
            Misuse of the recording calls, or ``register`` not reached within the timeout.
        Exception
            Whatever the script raised before registering.
        """
        env_id = f"pgtheory-recording/Oracle{next(_ids)}-v0"
        gym.register(id=env_id, entry_point=env_fn, disable_env_checker=True)
        s = _Session(env_id=env_id, seed=int(seed), num_envs=int(num_envs),
                     num_steps=int(num_steps), timeout=self.timeout)
        worker = threading.Thread(target=_run, args=(s, self.main), daemon=True,
                                  name=f"pgtheory-loop-{env_id}")
        worker.start()
        _WORKERS[:] = [(w, x) for w, x in _WORKERS if w.is_alive()]
        _WORKERS.append((worker, s))
        s.wait("register(...)")
        agent = LoopAgent(s)
        weakref.finalize(agent, s.to_worker.put, "stop")
        return agent


def loop_target(main: Callable, *, algorithm: str, hyperparameters: dict,
                action_kinds: tuple[str, ...] = ("discrete",), **kwargs) -> LoopTarget:
    """A :class:`LoopTarget` (the same arguments); see the module docstring for the calls
    the script must make."""
    return LoopTarget(main, algorithm=algorithm, hyperparameters=hyperparameters,
                      action_kinds=action_kinds, **kwargs)
