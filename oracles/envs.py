"""Oracle environments: gymnasium views of exact models.

* :class:`TabularEnv` simulates any :class:`pgtheory.TabularMDP`. Observations are one-hot
  ``Box`` vectors by default (so MLP policies apply; a linear layer on them is exactly tabular)
  or ``Discrete`` states. Entering a terminal state sets ``terminated``; a time limit comes
  from gymnasium's ``TimeLimit`` (``max_episode_steps``) and sets ``truncated``; the two are never
  merged. ``reset(seed=...)`` makes episodes deterministic. ``info["state"]`` is the state index.
* The five probe environments for actor-critic debugging (A. Jones, "Debugging reinforcement
  learning systems", 2021): each is a small ``TabularMDP`` with known exact ``V``, ``Q`` and
  optimal policy (:func:`probe_mdp`, :func:`probe_solution`), registered as
  ``pgtheory/Probe1-v0`` ... ``pgtheory/Probe5-v0``.

* :class:`LinearQuadraticEnv` simulates a :class:`pgtheory.lqr.LQRModel` (continuous actions;
  the exact values are the closed forms of :mod:`pgtheory.lqr`).

Registered ids: ``pgtheory/Tabular-v0`` (pass ``mdp=``), the probes, ``pgtheory/Chain-v0``,
``pgtheory/GridWorld-v0`` and ``pgtheory/LinearQuadratic-v0`` (pass ``model=``); they are
registered when :mod:`pgtheory.oracles.envs` is imported.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

import pgtheory as pg
from pgtheory._validation import as_float_array
from pgtheory.errors import InvalidArgumentError
from pgtheory.extras import require
from pgtheory.lqr import LQRModel, double_integrator, two_actuator_double_integrator

require("oracles")  # before the optional imports: a missing extra is one line naming it

import gymnasium as gym
from gymnasium import spaces

__all__ = ["PROBE_DESCRIPTIONS", "LinearQuadraticEnv", "ProbeSolution", "TabularEnv", "probe_mdp",
           "probe_solution"]


class TabularEnv(gym.Env):
    """Gymnasium environment for a :class:`pgtheory.TabularMDP`.

    Parameters
    ----------
    mdp : TabularMDP
    observation : {"onehot", "discrete"}
        ``Box(0, 1, (S,), float32)`` one-hot vectors, or ``Discrete(S)``.
    reward_noise : float
        Standard deviation of zero-mean Gaussian noise added to ``R[s, a]`` (default 0: the
        reward is exactly the expected reward, which keeps exact expectations exact).

    Raises
    ------
    TypeError
        ``mdp`` is not a TabularMDP.
    InvalidArgumentError
        Unknown ``observation`` kind or negative ``reward_noise``; an action outside
        ``Discrete(A)``.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, mdp: pg.TabularMDP, observation: str = "onehot",
                 reward_noise: float = 0.0) -> None:
        if not isinstance(mdp, pg.TabularMDP):
            raise TypeError(f"mdp: expected a pgtheory.TabularMDP, received {type(mdp).__name__}")
        if observation not in ("onehot", "discrete"):
            raise InvalidArgumentError(f"observation: expected 'onehot' or 'discrete', received "
                                       f"{observation!r}")
        if not reward_noise >= 0:
            raise InvalidArgumentError(f"reward_noise: expected >= 0, received {reward_noise!r}")
        self.mdp, self.observation_kind, self.reward_noise = mdp, observation, float(reward_noise)
        S, A = mdp.n_states, mdp.n_actions
        self.observation_space = (spaces.Box(0.0, 1.0, (S,), np.float32) if observation == "onehot"
                                  else spaces.Discrete(S))
        self.action_space = spaces.Discrete(A)
        self._P = mdp.dense_P() if not mdp.is_sparse else None
        self._state = 0

    def _obs(self, s: int):
        if self.observation_kind == "discrete":
            return int(s)
        o = np.zeros(self.mdp.n_states, dtype=np.float32)
        o[s] = 1.0
        return o

    def _next_distribution(self, s: int, a: int) -> np.ndarray:
        if self._P is not None:
            return self._P[s, a]
        return self.mdp.P[[s * self.mdp.n_actions + a]].toarray().ravel()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "state" in options:
            s = int(options["state"])
            if not 0 <= s < self.mdp.n_states or self.mdp.terminal[s]:
                raise InvalidArgumentError(f"options['state']: expected a non-terminal state in "
                                           f"[0, {self.mdp.n_states}), received {s}")
            self._state = s
        else:
            self._state = int(self.np_random.choice(self.mdp.n_states, p=self.mdp.mu))
        return self._obs(self._state), {"state": self._state}

    def step(self, action):
        a = int(np.asarray(action).item()) if np.ndim(action) <= 1 else -1
        if not (0 <= a < self.mdp.n_actions) or np.size(action) != 1:
            raise InvalidArgumentError(f"action: expected an integer in [0, {self.mdp.n_actions}),"
                                       f" received {action!r}")
        s = self._state
        reward = float(self.mdp.R[s, a])
        if self.reward_noise:
            reward += float(self.np_random.normal(0.0, self.reward_noise))
        s2 = int(self.np_random.choice(self.mdp.n_states, p=self._next_distribution(s, a)))
        self._state = s2
        terminated = bool(self.mdp.terminal[s2])
        return self._obs(s2), reward, terminated, False, {"state": s2}


PROBE_DESCRIPTIONS = {
    1: "one action, one observation, one step, reward +1: tests the value loss (V = 1)",
    2: "one action, observation +-1 at random, one step, reward = observation: tests that the "
       "critic uses the observation",
    3: "one action, two steps (observation 0 then 1), reward +1 at the end: tests discounting "
       "(V(0) = gamma, V(1) = 1)",
    4: "two actions, one observation, one step, reward +1 for action 1 and -1 for action 0: "
       "tests the policy update",
    5: "two actions, observation +-1 at random, one step, reward +1 when the action matches the "
       "observation: tests observation-dependent policies",
}


def probe_mdp(k: int, *, gamma: float = 0.9) -> pg.TabularMDP:
    """The k-th probe environment (k = 1..5) as a TabularMDP; the last state is terminal.

    Returns
    -------
    TabularMDP

    Raises
    ------
    InvalidArgumentError
        ``k`` not in 1..5.

    References
    ----------
    A. Jones (2021), "Debugging reinforcement learning systems" (probe environments 1-5).
    """
    if k not in PROBE_DESCRIPTIONS:
        raise InvalidArgumentError(f"k: expected a probe number in 1..5, received {k!r}")
    if k in (1, 4):  # states: 0 play, 1 terminal
        A = 1 if k == 1 else 2
        P = np.zeros((2, A, 2))
        P[:, :, 1] = 1.0
        R = np.zeros((2, A))
        R[0] = [1.0] if k == 1 else [-1.0, 1.0]
        return pg.TabularMDP(P=P, R=R, gamma=gamma, mu=np.array([1.0, 0.0]),
                             terminal=np.array([False, True]))
    if k in (2, 5):  # states: 0 (obs -1), 1 (obs +1), 2 terminal
        A = 1 if k == 2 else 2
        P = np.zeros((3, A, 3))
        P[:, :, 2] = 1.0
        R = np.zeros((3, A))
        if k == 2:
            R[0, 0], R[1, 0] = -1.0, 1.0
        else:
            R[0] = [1.0, -1.0]  # observation -1: action 0 matches
            R[1] = [-1.0, 1.0]  # observation +1: action 1 matches
        return pg.TabularMDP(P=P, R=R, gamma=gamma, mu=np.array([0.5, 0.5, 0.0]),
                             terminal=np.array([False, False, True]))
    # k == 3: states 0 -> 1 -> terminal 2, reward +1 on the second step
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 2] = P[2, 0, 2] = 1.0
    R = np.zeros((3, 1))
    R[1, 0] = 1.0
    return pg.TabularMDP(P=P, R=R, gamma=gamma, mu=np.array([1.0, 0.0, 0.0]),
                         terminal=np.array([False, False, True]))


@dataclasses.dataclass(frozen=True)
class ProbeSolution:
    """Exact optimal quantities of a probe MDP.

    Attributes
    ----------
    state_values : ndarray, shape (S,)
        ``V*`` (0 at the terminal state).
    action_values : ndarray, shape (S, A)
        ``Q*``.
    policy : ndarray, shape (S, A)
        An optimal deterministic policy.
    """

    state_values: np.ndarray
    action_values: np.ndarray
    policy: np.ndarray


def probe_solution(k: int, *, gamma: float = 0.9) -> ProbeSolution:
    """Exact ``V*``, ``Q*`` and an optimal policy of probe ``k`` (policy iteration).

    Returns
    -------
    ProbeSolution

    Raises
    ------
    InvalidArgumentError
        ``k`` not in 1..5.

    References
    ----------
    :func:`pgtheory.policy_iteration`; closed forms in :data:`PROBE_DESCRIPTIONS`.
    """
    res = pg.policy_iteration(probe_mdp(k, gamma=gamma))
    return ProbeSolution(res.state_values, res.action_values, res.policy)


def _make_probe(k: int, gamma: float = 0.9, observation: str = "onehot") -> TabularEnv:
    return TabularEnv(probe_mdp(k, gamma=gamma), observation=observation)


def _make_example(name: str, gamma: float = 0.9, observation: str = "onehot",
                  **kwargs) -> TabularEnv:
    mdp = {"chain": pg.chain, "gridworld": pg.gridworld}[name](gamma=gamma, **kwargs)
    return TabularEnv(mdp, observation=observation)


class LinearQuadraticEnv(gym.Env):
    """Gymnasium environment simulating an :class:`LQRModel`.

    Observation: the state ``x`` (float64, shape (n,)); action: ``u`` (float64, shape (m,),
    unbounded, applied as given); reward ``-(x^T Q x + u^T R u)`` for acting in ``x``; next state
    ``A x + B u + w``. Never terminates; a time limit comes from gymnasium's ``TimeLimit``
    (``gymnasium.make("pgtheory/LinearQuadratic-v0", model=..., max_episode_steps=T)``), which
    sets ``truncated``. ``reset(seed=s)`` makes the episode deterministic;
    ``reset(options={"state": x0})`` starts from ``x0`` instead of ``N(0, Sigma0)``.

    Parameters
    ----------
    model : LQRModel, optional
        Default :func:`pgtheory.lqr.double_integrator`.

    Raises
    ------
    TypeError
        ``model`` is not an LQRModel.
    InvalidArgumentError
        An action or start state of the wrong shape or non-finite.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, model: LQRModel | None = None) -> None:
        self.model = double_integrator() if model is None else model
        if not isinstance(self.model, LQRModel):
            raise TypeError(f"model: expected an LQRModel, received {type(model).__name__}")
        n, m = self.model.n_state, self.model.n_action
        self.observation_space = spaces.Box(-np.inf, np.inf, (n,), np.float64)
        self.action_space = spaces.Box(-np.inf, np.inf, (m,), np.float64)
        self._x = np.zeros(n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "state" in options:
            x0 = as_float_array(options["state"], "options['state']", ndim=1)
            if x0.shape != (self.model.n_state,):
                raise InvalidArgumentError(f"options['state']: expected shape "
                                           f"({self.model.n_state},), received {x0.shape}")
            self._x = x0.copy()
        else:
            self._x = self.np_random.multivariate_normal(np.zeros(self.model.n_state),
                                                         self.model.Sigma0)
        return self._x.copy(), {}

    def step(self, action):
        u = as_float_array(action, "action").reshape(-1)
        if u.shape != (self.model.n_action,):
            raise InvalidArgumentError(f"action: expected shape ({self.model.n_action},), "
                                       f"received {np.shape(action)}")
        mdl, x = self.model, self._x
        reward = -float(x @ mdl.Q @ x + u @ mdl.R @ u)
        noise = self.np_random.multivariate_normal(np.zeros(mdl.n_state), mdl.W)
        self._x = mdl.A @ x + mdl.B @ u + noise
        return self._x.copy(), reward, False, False, {}


gym.register(id="pgtheory/Tabular-v0", entry_point="pgtheory.oracles.envs:TabularEnv")
#: Two small MDPs with known optimal J for learning tests (time limits truncate, never terminate).
gym.register(id="pgtheory/Chain-v0", entry_point="pgtheory.oracles.envs:_make_example",
             kwargs={"name": "chain", "n_states": 5}, max_episode_steps=50)
gym.register(id="pgtheory/GridWorld-v0", entry_point="pgtheory.oracles.envs:_make_example",
             kwargs={"name": "gridworld", "width": 4, "height": 4, "slip": 0.1},
             max_episode_steps=50)
for _k in PROBE_DESCRIPTIONS:
    gym.register(id=f"pgtheory/Probe{_k}-v0", entry_point="pgtheory.oracles.envs:_make_probe",
                 kwargs={"k": _k})
gym.register(id="pgtheory/LinearQuadratic-v0",
             entry_point="pgtheory.oracles.envs:LinearQuadraticEnv")


#: Time limit of the LQR environment the suite's continuous-action checks run on.
LQR_TIME_LIMIT = 8

#: Action bound the LQR environment declares (far outside what the suite's short runs sample).
LQR_ACTION_BOUND = 10.0


class _BoundedActions(gym.ActionWrapper):
    """Declares actions in [-bound, bound] (float32) and passes them on unchanged, as float64."""

    def __init__(self, env, bound: float):
        super().__init__(env)
        m = env.unwrapped.model.n_action
        self.action_space = spaces.Box(-bound, bound, (m,), np.float32)

    def action(self, action):
        return np.asarray(action, dtype=np.float64)


def lqr_env_fn(bound: float = LQR_ACTION_BOUND, time_limit: int = LQR_TIME_LIMIT):
    """A factory of the double integrator with a time limit, actions declared in [-bound, bound].

    Libraries such as Stable-Baselines3 require finite action bounds; the default bound is far
    outside what the suite's short runs sample, and actions are passed to the model unchanged.
    The action-sampling check declares +-1 so that sampled actions fall outside the bounds.

    ``time_limit`` (default :data:`LQR_TIME_LIMIT`) sets the truncation.

    Returns:
        A zero-argument callable returning a new ``gymnasium.Env`` (a ``TimeLimit`` of
        ``time_limit`` steps around :class:`LinearQuadraticEnv` of
        :func:`pgtheory.lqr.double_integrator`).
    """
    return lambda: gym.wrappers.TimeLimit(
        _BoundedActions(LinearQuadraticEnv(double_integrator()), bound), time_limit)


def lqr_two_action_env_fn(bound: float = LQR_ACTION_BOUND, time_limit: int = LQR_TIME_LIMIT):
    """As :func:`lqr_env_fn`, on :func:`pgtheory.lqr.two_actuator_double_integrator` (two action
    dimensions), for the checks that need more than one (the joint Gaussian density).

    Returns:
        A zero-argument callable returning a new ``gymnasium.Env``.
    """
    return lambda: gym.wrappers.TimeLimit(
        _BoundedActions(LinearQuadraticEnv(two_actuator_double_integrator()), bound), time_limit)
