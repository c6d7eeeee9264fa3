"""Does the theory scale? Oracle monitors and exact measurements during MuJoCo training.

``pgtheory scale`` (:func:`run_scale`) trains the project's PPO, TRPO and A2C on a MuJoCo task
(Hopper-v5 by default) and measures, on the real task, what the theory says about each update.
Exact ``J`` is not available there, but these need no exact model:

1. **Live oracle monitors** (:class:`LiveMonitor`): after every update, the given-the-batch
   checks of :mod:`pgtheory.oracles.batch` on that update's batch: stored advantages against GAE
   recomputed with the critic at collection, value targets, every applied actor and critic
   gradient against the canonical loss gradient on its minibatch, TRPO's step against
   ``beta (F + lambda I)^-1 g`` replayed with exact Fisher-vector products.
2. **Trust region**: per TRPO update the exact batch KL of the accepted step (closed-form
   Gaussian KL averaged over the batch's states) against delta, and the quadratic model
   ``1/2 s^2 d^T F d`` against the exact ``KL(theta + s d)`` as the step ``s d`` shrinks;
   line-search statistics; per PPO update the exact batch KL and the clip fraction.
3. **Natural-gradient accuracy** (:func:`natural_gradient_accuracy`): the explicit Fisher of the
   actor (autograd, all parameters) and ``(F + lambda I)^-1 g`` by eigendecomposition, against
   conjugate gradient by iteration count and damping.
4. **Surrogate vs reality**: each update's surrogate gain ``mean((ratio - 1) A)`` on its batch
   against the change in return measured by fresh evaluation episodes (common random numbers),
   and the penalty term of the TRPO lower bound at the observed maximum KL.
5. **Gradient estimators** (:func:`gradient_estimators`): REINFORCE, REINFORCE with a baseline
   and GAE(lambda) at several points of PPO's training: cosine to a held-out high-sample
   reference and relative variance (cf. Ilyas et al. 2020, arXiv:1811.02553v4).
6. **Continuous exact anchor** (:func:`pendulum_anchor`): PPO on InvertedPendulum-v5 against
   the exact LQR solution of the MuJoCo model's linearization (:mod:`pgtheory.lqr`).

Each stage writes its data to ``OUT/data/STAGE.json`` and is skipped when that file exists;
training runs checkpoint every iteration and monitors append one JSON line per update, so a
killed run resumes (rerun the same command). :func:`write_report` turns the data into
``OUT/REPORT.md`` and PNG figures.

Budgets: ``small`` finishes within about 30 minutes on 2 CPU cores (the README's report);
``full`` is sized for a GPU machine with many cores (1M steps per algorithm).
"""

from __future__ import annotations

from pgtheory.extras import require

require("oracles")  # before the optional imports: a missing extra is one line naming it

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pgtheory.implementations.common import ConfigError
from pgtheory.lab.scale_report import read_jsonl, write_report

__all__ = ["BUDGETS", "Budget", "LiveMonitor", "gradient_estimators", "natural_gradient_accuracy",
           "pendulum_anchor", "run_scale", "write_report"]

SCALE_ALGOS = ("ppo", "trpo", "a2c")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of each measurement a run does.

    Attributes
    ----------
    name : str
    train_steps : dict
        Env steps per algorithm (whole iterations).
    num_envs : dict
        Parallel environments per algorithm (A2C collects 5 steps in each).
    eval_episodes : int
        Evaluation episodes after every PPO/TRPO update (surrogate vs reality).
    estimator_batches : int
        Batches per checkpoint for the gradient-estimator statistics.
    estimator_points : tuple of float
        Fractions of PPO's training at which estimators are compared.
    cg_iters : tuple of int
        Conjugate-gradient iteration counts compared with the exact solve.
    dampings : tuple of float
        Damping values ``lambda`` for ``(F + lambda I) x = g``.
    fisher_points : tuple of float
        Fractions of TRPO's training (0: the initial policy) where the Fisher is built.
    pendulum_steps : int
        PPO env steps on InvertedPendulum-v5.
    overrides : dict
        Configuration overrides for every algorithm (tests use small networks).
    """

    name: str
    train_steps: dict
    num_envs: dict
    eval_episodes: int
    estimator_batches: int
    estimator_points: tuple
    cg_iters: tuple
    dampings: tuple
    fisher_points: tuple
    pendulum_steps: int
    overrides: dict = dataclasses.field(default_factory=dict)


BUDGETS = {
    "small": Budget("small", train_steps={"ppo": 102_400, "trpo": 102_400, "a2c": 51_200},
                    num_envs={"ppo": 1, "trpo": 1, "a2c": 8}, eval_episodes=4,
                    estimator_batches=8, estimator_points=(0.0, 0.5, 1.0),
                    cg_iters=(1, 2, 3, 5, 7, 10, 15, 20, 25, 35, 50),
                    dampings=(0.0, 1e-3, 1e-2, 1e-1), fisher_points=(1.0,),
                    pendulum_steps=102_400),
    "full": Budget("full", train_steps={"ppo": 1_000_000, "trpo": 1_000_000, "a2c": 1_000_000},
                   num_envs={"ppo": 1, "trpo": 1, "a2c": 8}, eval_episodes=10,
                   estimator_batches=30, estimator_points=(0.0, 0.5, 1.0),
                   cg_iters=(1, 2, 3, 5, 7, 10, 15, 20, 25, 35, 50, 75, 100),
                   dampings=(0.0, 1e-4, 1e-3, 1e-2, 1e-1), fisher_points=(0.0, 1.0),
                   pendulum_steps=300_000),
}


class ScaleError(ConfigError):
    """Bad arguments to ``pgtheory scale`` (unknown algorithm, budget or environment)."""


# ------------------------------------------------------------------------ exact pieces
def gaussian_params(agent, params: dict, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (B, m), float64, action units, of the agent's Gaussian policy at ``params``
    for observations (B, obs_dim); the agent's parameters are restored afterwards.

    Raises
    ------
    AttributeError
        The distribution exposes no ``mean``/``stddev`` (not a Gaussian head).
    """
    from pgtheory.oracles.protocol import parameters_set

    with parameters_set(agent, params), torch.no_grad():
        d = agent.distribution(torch.as_tensor(obs, dtype=torch.float32))
        return (d.mean.double().cpu().numpy().reshape(len(obs), -1),
                d.stddev.double().cpu().numpy().reshape(len(obs), -1))


def gaussian_kl(m1, s1, m2, s2) -> np.ndarray:
    """Closed-form ``KL(N(m1, s1^2) || N(m2, s2^2))`` of diagonal Gaussians, summed over the last
    axis (nats); arrays broadcast, shape (..., m) -> (...).

    References
    ----------
    Kullback & Leibler (1951); e.g. Schulman et al. (2015), arXiv:1502.05477v5, App. C.
    Computed by :func:`pgtheory.references.gaussian_kl` (the one implementation).
    """
    from pgtheory.references import gaussian_kl as reference_gaussian_kl

    return reference_gaussian_kl(m1, np.log(s1), m2, np.log(s2))


def batch_kl(agent, before: dict, after: dict, obs: np.ndarray) -> tuple[float, float]:
    """Exact ``KL(pi_before || pi_after)`` at each batch state: (mean, max) in nats."""
    kl = gaussian_kl(*gaussian_params(agent, before, obs), *gaussian_params(agent, after, obs))
    return float(kl.mean()), float(kl.max())


def _flat(values: dict, names: list[str]) -> np.ndarray:
    return np.concatenate([values[n].detach().double().cpu().numpy().ravel() for n in names])


def _actor_names(agent) -> list[str]:
    return [n for n in agent.named_parameters() if n.startswith("actor.")]


def _flat_rollout(rollout, name: str) -> np.ndarray:
    x = getattr(rollout, name)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def surrogate_gain(agent, iteration) -> float:
    """``mean((pi_new / pi_old - 1) A)`` over the iteration's batch (raw advantages, reward
    units): the first-order predicted change of ``(1 - gamma) J``.

    References
    ----------
    Kakade & Langford (2002), ICML, Sec. 4; Schulman et al. (2015), arXiv:1502.05477v5, Eq. 3.
    """
    from pgtheory.oracles.protocol import parameters_set

    r = iteration.rollout
    obs = torch.as_tensor(_flat_rollout(r, "observations"), dtype=torch.float32)
    act = torch.as_tensor(_flat_rollout(r, "actions"))
    with parameters_set(agent, iteration.parameters_after), torch.no_grad():
        logp = agent.distribution(obs).log_prob(act).double().cpu().numpy()
    ratio = np.exp(logp - _flat_rollout(r, "log_probs").astype(np.float64))
    return float(np.mean((ratio - 1.0) * _flat_rollout(r, "advantages").astype(np.float64)))


def evaluate_policy(agent, params: dict, env_fn: Callable, episodes: int, seed: int,
                    max_steps: int = 1000) -> np.ndarray:
    """Undiscounted returns of the *stochastic* policy at ``params`` over ``episodes`` episodes
    with common random numbers: episode ``e`` resets with seed ``seed + e`` and draws its action
    noise from a generator seeded the same way, so two parameter values are compared on the
    same randomness."""
    from pgtheory.oracles.protocol import parameters_set

    out = np.zeros(episodes)
    env = env_fn()
    try:
        with parameters_set(agent, params), torch.no_grad():
            for e in range(episodes):
                gen = torch.Generator().manual_seed(seed + e)
                obs, _ = env.reset(seed=seed + e)
                total = 0.0
                for _ in range(max_steps):
                    d = agent.distribution(torch.as_tensor(obs[None], dtype=torch.float32))
                    noise = torch.randn(d.mean.shape, generator=gen, dtype=d.mean.dtype)
                    a = (d.mean + d.stddev * noise)[0].cpu().numpy()
                    obs, rew, term, trunc, _ = env.step(a)
                    total += float(rew)
                    if term or trunc:
                        break
                out[e] = total
    finally:
        env.close()
    return out


# ---------------------------------------------------------------------- live monitors
class LiveMonitor:
    """``monitor(agent, iteration)`` for :func:`pgtheory.implementations.train.train`: the oracle
    checks and exact measurements of one update, appended as one JSON line to ``path``.

    Parameters
    ----------
    algorithm : {"ppo", "trpo", "a2c"}
    hp : dict
        The declared hyperparameters
        (:class:`pgtheory.implementations.targets.ImplementationTarget`).
    path : Path
        JSONL output; lines already there (a resumed run) are kept, by iteration.
    eval_env_fn : callable or None
        Environment for the evaluation episodes (None: no surrogate-vs-reality data).
    eval_episodes : int
    seed : int
    kl_scales : tuple of float
        Step fractions ``s`` at which TRPO's quadratic KL model is compared with the exact KL.
    """

    def __init__(self, algorithm: str, hp: dict, path: Path, *, eval_env_fn=None,
                 eval_episodes: int = 0, seed: int = 0,
                 kl_scales: tuple = (4.0, 2.0, 1.0, 0.5, 0.25, 0.125)) -> None:
        self.algorithm, self.hp, self.path = algorithm, dict(hp), Path(path)
        self.eval_env_fn, self.eval_episodes, self.seed = eval_env_fn, eval_episodes, seed
        self.kl_scales = kl_scales
        self.rows = read_jsonl(self.path)
        self.seconds = 0.0

    def checks(self, agent, it) -> dict:
        """The given-the-batch checks of :mod:`pgtheory.oracles.batch` on one iteration."""
        from pgtheory.oracles import batch

        hp = self.hp
        out = {"advantages": batch.check_batch_advantages(
                   agent, [it], gamma=float(hp["gamma"]),
                   gae_lambda=float(hp.get("gae_lambda", 1.0))),
               "returns": batch.check_batch_returns([it]),
               "value_gradient": batch.check_value_gradients(agent, [it], hp=hp)}
        if self.algorithm == "trpo":
            out["trpo_step"] = batch.check_trpo_steps(agent, [it], hp=hp)
        else:
            out["policy_gradient"] = batch.check_policy_gradients(
                agent, [it], algorithm=self.algorithm, hp=hp)
        return out

    def __call__(self, agent, it) -> None:
        t0 = time.perf_counter()
        res = self.checks(agent, it)
        r = it.rollout
        obs = _flat_rollout(r, "observations")
        gamma = float(self.hp["gamma"])
        mean_kl, max_kl = batch_kl(agent, it.parameters_at_collection, it.parameters_after, obs)
        adv = _flat_rollout(r, "advantages").astype(np.float64)
        row = {"iteration": agent.iterations, "env_steps": agent.env_steps,
               "updates": len(it.updates), "samples": int(obs.shape[0]),
               "verdicts": {k: v.verdict for k, v in res.items()},
               "failures": {k: v.explanation for k, v in res.items() if v.verdict == "fail"},
               "kl_mean": mean_kl, "kl_max": max_kl,
               "train_return": (float(np.mean(agent.episode_returns))
                                if len(agent.episode_returns) else None)}
        stats = dict(getattr(agent, "stats", {}) or {})
        if self.algorithm == "ppo":
            row["clip_fraction"] = stats.get("clip_fraction")
        if self.algorithm == "trpo":
            row.update({k: stats.get(k) for k in ("accepted", "backtracks")})
            row["quadratic_model"] = self._quadratic_model(agent, it)
        if self.algorithm in ("ppo", "trpo"):
            gain = surrogate_gain(agent, it)
            eps = float(np.max(np.abs(adv)))
            row.update({"surrogate_gain": gain, "predicted_improvement": gain / (1 - gamma),
                        "bound_penalty": 4 * eps * gamma / (1 - gamma) ** 2 * max_kl,
                        "max_abs_advantage": eps})
            if self.eval_env_fn is not None and self.eval_episodes > 0:
                seed = self.seed + 10_007 * agent.iterations
                before = evaluate_policy(agent, it.parameters_at_collection, self.eval_env_fn,
                                         self.eval_episodes, seed)
                after = evaluate_policy(agent, it.parameters_after, self.eval_env_fn,
                                        self.eval_episodes, seed)
                diff = after - before
                row.update({"eval_episodes": int(diff.size), "eval_before": float(before.mean()),
                            "eval_after": float(after.mean()),
                            "return_change": float(diff.mean()),
                            "return_change_se": float(diff.std(ddof=1) / math.sqrt(diff.size))
                            if diff.size > 1 else None})
        row["monitor_seconds"] = round(time.perf_counter() - t0, 3)
        self.rows = [x for x in self.rows if x["iteration"] != row["iteration"]] + [row]
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def _quadratic_model(self, agent, it) -> list | None:
        """``(s, exact KL(theta + s d), 1/2 s^2 d^T F d)`` along the accepted step ``d``."""
        from pgtheory.oracles.batch import batch_fisher

        names = _actor_names(agent)
        d = _flat(it.parameters_after, names) - _flat(it.parameters_at_collection, names)
        if not np.any(d):
            return None
        r = it.rollout
        obs = torch.as_tensor(_flat_rollout(r, "observations"), dtype=torch.float32)
        act = torch.as_tensor(_flat_rollout(r, "actions"))
        logp = torch.as_tensor(_flat_rollout(r, "log_probs"))
        adv = torch.as_tensor(_flat_rollout(r, "advantages"))
        fvp, _, kl_at, _ = batch_fisher(agent, it.parameters_at_collection, names, obs, act,
                                        logp, adv, explicit=False)
        theta0 = _flat(it.parameters_at_collection, names)
        dFd = float(d @ fvp(d))
        return [(s, kl_at(theta0 + s * d), 0.5 * s * s * dFd) for s in self.kl_scales]


# --------------------------------------------------------------- natural gradient (3)
#: Relative eigenvalue cutoff of the pseudo-inverse ``F^+``: ``F`` is built from float32
#: autograd, so eigenvalues below about 1e-6 of the largest are rounding noise, not curvature.
RANK_CUTOFF = 1e-6


def natural_gradient_accuracy(agent, *, cg_iters: tuple, dampings: tuple) -> dict:
    """Conjugate gradient against the exact ``(F + lambda I)^-1 g`` on one fresh batch.

    ``F`` is the Hessian of the batch mean KL at the current actor parameters, built row by row
    with double backward (:func:`pgtheory.oracles.batch.batch_fisher`), ``g`` the gradient of TRPO's
    surrogate (its advantages, normalized as its configuration says). The exact solutions come
    from the eigendecomposition ``F = V diag(w) V^T`` (``lambda = 0``: the pseudo-inverse,
    eigenvalues below ``RANK_CUTOFF w_max`` dropped). CG runs
    :func:`pgtheory.implementations.core.conjugate_gradient` (the function TRPO calls) in float64 on
    the explicit matrix; ``as_run`` repeats TRPO's own float32 Fisher-vector products at its
    configured iterations and damping.

    Returns
    -------
    dict
        ``n_params``, ``eigenvalues`` (summary), ``curves[damping] = [(k, cosine, relative
        residual, relative A-norm error, CG bound)]`` (the bound
        ``2 ((sqrt(kappa) - 1) / (sqrt(kappa) + 1))^k`` on the A-norm error, None for
        ``lambda = 0``), ``damping_bias[damping]`` (cosine of the damped solution with ``F^+ g``),
        ``vanilla_cosine`` (``g`` against ``F^+ g``), ``as_run``.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, App. C; Nocedal & Wright (2006), Sec. 5.1
    (CG's error bound in terms of the condition number).
    """
    import scipy.linalg
    from pgtheory.implementations import core
    from pgtheory.oracles.batch import batch_fisher
    from pgtheory.oracles.protocol import snapshot

    rollout = agent.collect()
    names = _actor_names(agent)
    obs = torch.as_tensor(_flat_rollout(rollout, "observations"), dtype=torch.float32)
    act = torch.as_tensor(_flat_rollout(rollout, "actions"))
    logp = torch.as_tensor(_flat_rollout(rollout, "log_probs"))
    adv = torch.as_tensor(_flat_rollout(rollout, "advantages"))
    if agent.cfg.normalize_advantage:
        adv = core.normalize(adv)
    params = snapshot(agent.named_parameters())
    t0 = time.perf_counter()
    F, g, _, _ = batch_fisher(agent, params, names, obs, act, logp, adv, explicit=True)
    t_build = time.perf_counter() - t0
    w, V = scipy.linalg.eigh(F)
    w = np.clip(w, 0.0, None)
    Vg = V.T @ g

    def exact(lam: float) -> np.ndarray:
        if lam > 0:
            return V @ (Vg / (w + lam))
        keep = w > RANK_CUTOFF * w.max()
        return V[:, keep] @ (Vg[keep] / w[keep])

    def cos(a, b) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))

    nat = exact(0.0)
    Ft = torch.as_tensor(F)
    gt = torch.as_tensor(g)
    curves, bias = {}, {}
    for lam in dampings:
        ref = exact(lam)
        ref_norm = math.sqrt(float(ref @ (F @ ref) + lam * ref @ ref))
        kappa = (w.max() + lam) / (w.min() + lam) if lam > 0 else math.inf
        rate = (math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1) if lam > 0 else 1.0
        rows = []
        for k in cg_iters:
            x = core.conjugate_gradient(lambda v, lam=lam: Ft @ v + lam * v, gt, k,
                                        residual_tol=1e-30).numpy()
            resid = np.linalg.norm(F @ x + lam * x - g) / np.linalg.norm(g)
            e = x - ref
            a_err = math.sqrt(max(float(e @ (F @ e) + lam * e @ e), 0.0)) / ref_norm
            bound = 2 * rate**k if lam > 0 else None
            rows.append((int(k), cos(x, ref), float(resid), a_err, bound))
        curves[str(lam)] = rows
        bias[str(lam)] = cos(ref, nat)
    fvp, _, _, _ = batch_fisher(agent, params, names, obs, act, logp, adv, explicit=False)
    lam_run = float(agent.cfg.cg_damping)
    x_run = core.conjugate_gradient(
        lambda v: torch.as_tensor(fvp(v.numpy())) + lam_run * v, gt, agent.cfg.cg_iters).numpy()
    positive = w[w > RANK_CUTOFF * w.max()]
    return {"n_params": int(g.size), "samples": int(obs.shape[0]),
            "fisher_seconds": round(t_build, 1),
            "eigenvalues": {"max": float(w.max()), "min_positive": float(positive.min()),
                            "rank": int(positive.size),
                            "condition_damped": {str(lam): float((w.max() + lam) /
                                                                 (w.min() + lam))
                                                 for lam in dampings if lam > 0}},
            "spectrum": np.quantile(w, np.linspace(0, 1, 101)).tolist(),
            "curves": curves, "damping_bias": bias, "vanilla_cosine": cos(g, nat),
            "as_run": {"cg_iters": int(agent.cfg.cg_iters), "damping": lam_run,
                       "cosine": cos(x_run, exact(lam_run)),
                       "relative_residual": float(np.linalg.norm(F @ x_run + lam_run * x_run - g)
                                                  / np.linalg.norm(g))}}


# ------------------------------------------------------------- gradient estimators (5)
ESTIMATORS = {"REINFORCE": ("returns", 1.0), "REINFORCE + baseline": ("gae", 1.0),
              "GAE 0.99": ("gae", 0.99), "GAE 0.95": ("gae", 0.95), "GAE 0.9": ("gae", 0.9),
              "GAE 0.5": ("gae", 0.5), "GAE 0": ("gae", 0.0)}


def estimator_gradients(agent, rollout, gamma: float) -> dict[str, np.ndarray]:
    """Each estimator's ``grad mean(log pi(a|s) A_hat)`` (actor parameters, flat) on one batch.

    ``REINFORCE``: ``A_hat`` is the discounted return to the episode end (bootstrapped with
    the critic only where the buffer or a time limit cuts the episode: GAE with lambda 1 plus
    ``V(s_t)``); ``REINFORCE + baseline`` subtracts ``V(s_t)`` (GAE, lambda 1); ``GAE l``:
    Schulman et al. (2016), arXiv:1506.02438v6, Eq. 16.
    """
    from pgtheory.implementations import core

    T, N = rollout.rewards.shape
    with torch.no_grad():
        nxt = torch.as_tensor(rollout.next_observations.reshape(T * N, -1), dtype=torch.float32)
        next_values = agent.value(nxt).reshape(T, N).double()
    values = torch.as_tensor(rollout.values).double()
    args = (torch.as_tensor(rollout.rewards).double(), values, next_values,
            torch.as_tensor(rollout.terminated), torch.as_tensor(rollout.truncated))
    obs = torch.as_tensor(_flat_rollout(rollout, "observations"), dtype=torch.float32)
    act = torch.as_tensor(_flat_rollout(rollout, "actions"))
    named = agent.named_parameters()
    names = _actor_names(agent)
    params = [named[n] for n in names]
    logp = agent.distribution(obs).log_prob(act)
    out = {}
    for name, (kind, lam) in ESTIMATORS.items():
        adv = core.gae(args[0], args[1], args[3], args[4], gamma, lam, next_values=args[2])
        if kind == "returns":
            adv = adv + values
        w = adv.reshape(-1).float()
        grads = torch.autograd.grad((logp * w).mean(), params, retain_graph=True)
        out[name] = torch.cat([x.reshape(-1) for x in grads]).double().numpy()
    return out


def estimator_statistics(grads: dict[str, list[np.ndarray]],
                         reference: str = "REINFORCE + baseline") -> dict:
    """Per estimator: mean cosine to the leave-one-out reference mean, mean pairwise cosine,
    relative variance ``tr Cov / ||mean||^2`` and the cosine of its mean with the reference.

    Raises
    ------
    ScaleError
        Fewer than 2 batches, or a missing reference.
    """
    if reference not in grads or len(grads[reference]) < 2:
        raise ScaleError(f"estimator statistics: expected >= 2 batches of {reference!r}, "
                         f"received {len(grads.get(reference, []))}")

    def cos(a, b) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-300))

    R = np.stack(grads[reference])
    K = R.shape[0]
    out = {}
    for name, gs in grads.items():
        G = np.stack(gs)
        loo = [(R.sum(0) - R[k]) / (K - 1) for k in range(K)]
        mean = G.mean(0)
        pair = [cos(G[i], G[j]) for i in range(K) for j in range(i + 1, K)]
        out[name] = {"cosine_to_reference": float(np.mean([cos(G[k], loo[k]) for k in range(K)])),
                     "pairwise_cosine": float(np.mean(pair)),
                     "relative_variance": float(((G - mean) ** 2).sum(1).mean() * K / (K - 1)
                                                / (mean @ mean)),
                     "mean_cosine_to_reference": cos(mean, R.mean(0)),
                     "norm_of_mean": float(np.linalg.norm(mean))}
    return out


def gradient_estimators(agent, *, batches: int, gamma: float, progress: bool = False,
                        desc: str = "estimators") -> dict:
    """:func:`estimator_statistics` over ``batches`` fresh batches of the agent's policy."""
    from tqdm import tqdm

    grads: dict[str, list] = {k: [] for k in ESTIMATORS}
    for _ in tqdm(range(batches), desc=desc, unit="batch", disable=not progress, leave=False):
        for k, v in estimator_gradients(agent, agent.collect(), gamma).items():
            grads[k].append(v)
    return estimator_statistics(grads)


# --------------------------------------------------------------- pendulum anchor (6)
def local_gain(agent) -> tuple[np.ndarray, np.ndarray]:
    """``K = -d mu / d x`` at ``x = 0`` (the policy mean's linearization) and ``mu(0)``."""
    x0 = torch.zeros(agent.envs.single_observation_space.shape, dtype=torch.float32)
    with torch.no_grad():
        mu0 = agent.distribution(x0[None]).mean[0].double().numpy()
    J = torch.autograd.functional.jacobian(lambda x: agent.distribution(x[None]).mean[0], x0)
    return -J.double().numpy(), mu0


def controller_returns(controller: Callable, episodes: int, seed: int,
                       trace_steps: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """InvertedPendulum-v5 returns of ``u = controller(obs)`` (clipped to the action bounds)
    over ``episodes`` episodes (reset seeds ``seed + e``), and the first episode's hinge angle
    for ``trace_steps`` steps."""
    import gymnasium as gym

    env = gym.make("InvertedPendulum-v5")
    out, trace = np.zeros(episodes), []
    try:
        lo, hi = env.action_space.low, env.action_space.high
        for e in range(episodes):
            obs, _ = env.reset(seed=seed + e)
            total, t = 0.0, 0
            while True:
                if e == 0 and t < trace_steps:
                    trace.append(float(obs[1]))
                obs, r, term, trunc, _ = env.step(np.clip(controller(obs), lo, hi))
                total += float(r)
                t += 1
                if term or trunc:
                    break
            out[e] = total
    finally:
        env.close()
    return out, np.asarray(trace)


def pendulum_anchor(agent, *, episodes: int = 10, seed: int = 0) -> dict:
    """PPO's policy on InvertedPendulum-v5 against the LQR optimum of the linearization.

    Returns
    -------
    dict
        Gains (``K_ppo`` from the policy mean's Jacobian at the upright state, ``K_lqr``), their
        cosine, closed-loop spectral radii of the linearization, the discounted LQR cost of
        both gains (``Q = I``, ``R = 0.1``; the LQR gain is optimal for it), and the returns of
        both controllers (PPO's mean action, ``u = -K_lqr x``) in the MuJoCo environment.

    References
    ----------
    :func:`pgtheory.implementations.mujoco_lqr.inverted_pendulum_lqr`; Lyapunov's indirect method
    (a controller that holds the pendulum up must stabilize the linearization, up to marginal
    cases).
    """
    from pgtheory.implementations.mujoco_lqr import inverted_pendulum_lqr

    from pgtheory import lqr

    anchor = inverted_pendulum_lqr()
    model, K_star = anchor.model, anchor.optimal.K
    K_ppo, mu0 = local_gain(agent)

    def radius(K) -> float:
        return float(np.max(np.abs(np.linalg.eigvals(model.A - model.B @ K))))

    def cost(K) -> float | None:
        try:
            return -lqr.expected_return(model, K, np.full(K.shape[0], -20.0))
        except (lqr.UnstableClosedLoopError, ValueError):
            return None

    def ppo_controller(obs):
        with torch.no_grad():
            return agent.distribution(torch.as_tensor(obs[None], dtype=torch.float32)
                                      ).mean[0].numpy()

    ret_ppo, trace_ppo = controller_returns(ppo_controller, episodes, seed, trace_steps=200)
    ret_lqr, trace_lqr = controller_returns(lambda x: -K_star @ x, episodes, seed,
                                            trace_steps=200)
    c_star, c_ppo = cost(K_star), cost(K_ppo)
    k1, k2 = K_ppo.ravel(), K_star.ravel()
    return {"K_ppo": K_ppo.tolist(), "mu0": mu0.tolist(), "K_lqr": K_star.tolist(),
            "gain_cosine": float(k1 @ k2 / (np.linalg.norm(k1) * np.linalg.norm(k2))),
            "radius_ppo": radius(K_ppo), "radius_lqr": radius(K_star),
            "cost_ppo": c_ppo, "cost_lqr": c_star,
            "cost_ratio": None if c_ppo is None else c_ppo / c_star,
            "returns_ppo": ret_ppo.tolist(), "returns_lqr": ret_lqr.tolist(),
            "trace_ppo": trace_ppo.tolist(), "trace_lqr": trace_lqr.tolist(), "dt": anchor.dt}


# ------------------------------------------------------------------------ the run
def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _load_agent(algorithm: str, env_id: str, overrides: dict, seed: int, num_envs: int,
                state: Path | None):
    from pgtheory.implementations import ALGORITHMS
    from pgtheory.implementations.common import make_env_fn

    agent_class, config_class = ALGORITHMS[algorithm]
    cfg = config_class().replace(**overrides)
    agent = agent_class(make_env_fn(env_id, cfg), cfg, seed=seed, num_envs=num_envs)
    if state is not None:
        agent.load_state_dict(torch.load(state, map_location="cpu", weights_only=False))
    return agent


def run_scale(env_id: str = "Hopper-v5", *, algos: tuple = SCALE_ALGOS, budget: str | Budget =
              "small", device: str = "auto", out: str | os.PathLike = "runs/scale",
              seed: int = 0, progress: bool = True, say: Callable[[str], None] = print,
              report_dir: str | os.PathLike | None = None) -> Path:
    """Run every stage that has no data yet, then write ``OUT/REPORT.md`` (module docstring).

    Parameters
    ----------
    env_id : str
        A MuJoCo task with a continuous action space (Hopper-v5 by default).
    algos : tuple of str
        Subset of ("ppo", "trpo", "a2c"); the natural-gradient stage needs "trpo", the
        estimator stage "ppo".
    budget : "small", "full" or Budget
    device : str
        Where the networks train (:func:`pgtheory.implementations.train.train`).
    out : path
    seed : int
    progress : bool
        Progress bars of the training runs.
    say : callable
        Receives one line per stage.
    report_dir : path, optional
        Where ``REPORT.md`` and the figures go (default ``out``).

    Returns
    -------
    Path
        The report.

    Raises
    ------
    ScaleError
        Unknown algorithm or budget, or a discrete-action environment.
    """
    import gymnasium as gym
    from pgtheory.implementations.common import make_env_fn
    from pgtheory.implementations.targets import ImplementationTarget
    from pgtheory.implementations.train import train

    b = BUDGETS.get(budget) if isinstance(budget, str) else budget
    if b is None:
        raise ScaleError(f"budget: expected one of {sorted(BUDGETS)}, received {budget!r}")
    bad = [a for a in algos if a not in SCALE_ALGOS]
    if bad or not algos:
        raise ScaleError(f"algos: expected a non-empty subset of {SCALE_ALGOS}, received "
                         f"{tuple(algos)}")
    try:
        probe = gym.make(env_id)
    except gym.error.Error as exc:
        raise ScaleError(f"env: expected a registered gymnasium id, received {env_id!r} "
                         f"({exc})") from exc
    space = probe.action_space
    probe.close()
    if not isinstance(space, gym.spaces.Box):
        raise ScaleError(f"env: expected a continuous (Box) action space, received {space}")
    out = Path(out)
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    _write(out / "scale.json", {"env_id": env_id, "algos": list(algos), "budget": b.name,
                                "seed": seed, "overrides": {k: list(v) if isinstance(v, tuple)
                                                            else v for k, v in
                                                            b.overrides.items()}})
    from pgtheory.implementations import ALGORITHMS

    for algo in algos:  # 1, 2, 4: training with the live monitors
        done = data / f"train_{algo}.json"
        if done.exists():
            continue
        say(f"[scale] training {algo} on {env_id} for {b.train_steps[algo]:,} steps with live "
            f"oracle monitors")
        agent_class, config_class = ALGORITHMS[algo]
        cfg = config_class().replace(**b.overrides)
        hp = ImplementationTarget(agent_class, cfg).hyperparameters
        run_dir = out / "runs" / algo
        monitor = LiveMonitor(algo, hp, run_dir / "monitor.jsonl",
                              eval_env_fn=(make_env_fn(env_id, cfg) if algo != "a2c" else None),
                              eval_episodes=b.eval_episodes, seed=seed + 1)
        run_dir.mkdir(parents=True, exist_ok=True)
        points = sorted({max(1, round(f * _iterations(b, algo, cfg))) for f in
                         (b.estimator_points if algo == "ppo" else b.fisher_points if
                          algo == "trpo" else ()) if f > 0})

        def monitor_and_keep(agent, it, monitor=monitor, points=points, run_dir=run_dir):
            monitor(agent, it)
            if agent.iterations in points:
                torch.save(agent.state_dict(), run_dir / f"state_{agent.iterations}.pt")

        resume = run_dir if (run_dir / "checkpoint.pt").exists() else None
        res = train(algo, env_id, total_steps=b.train_steps[algo], seed=seed,
                    num_envs=b.num_envs[algo], device=device, out=run_dir,
                    overrides=b.overrides or None, resume=resume, eval_episodes=5,
                    progress=progress, tensorboard=False, monitor=monitor_and_keep)
        _write(done, {"algorithm": algo, "env_steps": res.env_steps,
                      "iterations": res.iterations, "seconds": res.seconds,
                      "eval_return": res.eval_return, "eval_std": res.eval_std,
                      "train_return": res.train_return, "points": points})
    if "trpo" in algos and not (data / "natural_gradient.json").exists():
        say("[scale] natural-gradient accuracy: explicit Fisher of the TRPO actor")
        results = {}
        for frac in b.fisher_points:
            agent = _load_agent("trpo", env_id, b.overrides, seed + 2, 1,
                                _state_at(out, "trpo", frac))
            results[str(frac)] = natural_gradient_accuracy(agent, cg_iters=b.cg_iters,
                                                           dampings=b.dampings)
        _write(data / "natural_gradient.json", results)
    if "ppo" in algos and not (data / "estimators.json").exists():
        say("[scale] gradient estimators at points of PPO's training")
        results = {}
        for frac in b.estimator_points:
            agent = _load_agent("ppo", env_id, b.overrides, seed + 3, 1,
                                _state_at(out, "ppo", frac))
            results[str(frac)] = gradient_estimators(
                agent, batches=b.estimator_batches, gamma=agent.cfg.gamma, progress=progress,
                desc=f"estimators at {frac:.0%}")
        _write(data / "estimators.json", results)
    if not (data / "pendulum.json").exists():
        say(f"[scale] InvertedPendulum-v5: PPO for {b.pendulum_steps:,} steps, then the LQR "
            f"anchor")
        run_dir = out / "runs" / "ppo_pendulum"
        resume = run_dir if (run_dir / "checkpoint.pt").exists() else None
        train("ppo", "InvertedPendulum-v5", total_steps=b.pendulum_steps, seed=seed,
              device=device, out=run_dir, overrides=b.overrides or None, resume=resume,
              eval_episodes=0, progress=progress, tensorboard=False)
        agent = _load_agent("ppo", "InvertedPendulum-v5", b.overrides, seed, 1,
                            run_dir / "checkpoint.pt")
        _write(data / "pendulum.json", pendulum_anchor(agent, seed=seed + 4))
    return write_report(out, report_dir)


def _state_at(out: Path, algo: str, frac: float) -> Path | None:
    """The saved agent state at fraction ``frac`` of ``algo``'s training (None: a fresh agent
    for ``frac = 0``; the final checkpoint when that iteration's state was not kept)."""
    if frac <= 0:
        return None
    meta = json.loads((out / "data" / f"train_{algo}.json").read_text())
    state = out / "runs" / algo / f"state_{max(1, round(frac * meta['iterations']))}.pt"
    return state if state.exists() else out / "runs" / algo / "checkpoint.pt"


def _iterations(b: Budget, algo: str, cfg) -> int:
    per = cfg.num_steps * b.num_envs[algo]
    return -(-b.train_steps[algo] // per)
