"""One resumable sb3-contrib TRPO run on a MuJoCo task, written as a ``pgtheory train`` run is.

Usage::

    python tests/benchmarks/sb3_trpo_run.py --env Hopper-v5 --seed 0 --total-steps 1000000 \\
        --out RUN_DIR            # a new run
    python tests/benchmarks/sb3_trpo_run.py --resume RUN_DIR

Called by ``mujoco_returns.py`` for the algorithm ``sb3-trpo``: the peer of our TRPO in the
same script. Settings: RL Baselines3 Zoo's tuned MuJoCo TRPO (``hyperparams/trpo.yml``,
``Hopper-v4`` and the other ``mujoco-defaults``): ``VecNormalize`` (observations and rewards,
SB3's default clipping at 10), 2 environments, ``n_steps=1024``, ``batch_size=128``,
``gamma=0.99``, ``gae_lambda=0.95``, ``cg_max_steps=25``, ``cg_damping=0.1``,
``n_critic_updates=20``, ``learning_rate=1e-3``, ``MlpPolicy`` (64x64 tanh, separate actor and
critic); ``target_kl=0.04`` for HalfCheetah as the zoo has it.

The run directory gets what ``pgtheory train`` writes and ``mujoco_returns.py`` reads:
``progress.csv`` (one row per iteration: ``env_steps``, ``time_s``, ``return_mean`` over the
last 100 training episodes of raw reward, ``log_std_sum``: the policy's log standard
deviations summed over the action dimensions, before the update), ``evaluation.json`` (10
deterministic episodes, observation statistics frozen, raw rewards; seeds
``seed + 100000 + i``), ``run.json``. Every ``--checkpoint-every`` iterations it saves, after
the update, the model, the ``VecNormalize`` statistics (or, with ``--normalize gymnasium``,
each environment's wrapper statistics) and the episode window; ``--resume`` continues from
there, dropping rows logged after the checkpoint (the random streams restart from new seeds,
so a resumed run is not bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import sys
import time
from pathlib import Path

ZOO = {"n_steps": 1024, "batch_size": 128, "gamma": 0.99, "gae_lambda": 0.95,
       "sub_sampling_factor": 1, "cg_max_steps": 25, "cg_damping": 0.1,
       "n_critic_updates": 20, "learning_rate": 1e-3}
N_ENVS = 2
FIELDS = ["iteration", "env_steps", "time_s", "sps", "episodes", "return_mean", "length_mean",
          "log_std_sum"]
NORM_STATS = "checkpoint_gymnasium_normalizers.pkl"


def _gymnasium_stats(venv, path: Path, restore: bool = False) -> None:
    """Save (or restore) each environment's NormalizeObservation and NormalizeReward state."""
    import pickle

    import gymnasium as gym
    from pgtheory.implementations.common import find_wrapper

    pairs = [(find_wrapper(e, gym.wrappers.NormalizeObservation),
              find_wrapper(e, gym.wrappers.NormalizeReward)) for e in venv.envs]
    if not restore:
        path.write_bytes(pickle.dumps([(o.obs_rms, r.return_rms, r.discounted_reward)
                                       for o, r in pairs]))
        return
    for (o, r), (obs_rms, ret_rms, disc) in zip(pairs, pickle.loads(path.read_bytes()),
                                                strict=True):
        o.obs_rms, r.return_rms, r.discounted_reward = obs_rms, ret_rms, disc


def _gymnasium_normalizers(env):
    import gymnasium as gym

    return gym.wrappers.NormalizeReward(gym.wrappers.NormalizeObservation(env),
                                        gamma=ZOO["gamma"])


def _make(env_id: str, seed: int, stats: Path | None, normalize: str):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    if normalize == "gymnasium":  # ablation: per-environment wrappers, as pgtheory train has
        return make_vec_env(env_id, n_envs=N_ENVS, seed=seed,
                            wrapper_class=_gymnasium_normalizers)
    venv = make_vec_env(env_id, n_envs=N_ENVS, seed=seed)
    if stats is not None:
        return VecNormalize.load(str(stats), venv)
    if normalize == "vecnormalize-noclip":  # ablation: no clipping at 10
        return VecNormalize(venv, gamma=ZOO["gamma"], clip_obs=float("inf"),
                            clip_reward=float("inf"))
    return VecNormalize(venv, gamma=ZOO["gamma"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--total-steps", type=int, default=1_000_000)
    ap.add_argument("--out")
    ap.add_argument("--resume", metavar="RUN_DIR")
    ap.add_argument("--checkpoint-every", type=int, default=20, help="iterations")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--normalize", default="vecnormalize",
                    choices=["vecnormalize", "vecnormalize-noclip", "gymnasium"],
                    help="ablations: the zoo's VecNormalize (default), the same without its "
                         "clipping at 10, or gymnasium's per-environment wrappers")
    ap.add_argument("--adam-eps", type=float, default=None,
                    help="ablation: Adam's eps for the critic (SB3's default 1e-5)")
    args = ap.parse_args()
    if bool(args.out) == bool(args.resume):
        print("sb3_trpo_run: error: expected exactly one of --out and --resume", file=sys.stderr)
        return 2
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback

    torch.set_num_threads(1)
    run = Path(args.resume or args.out)
    state_path = run / "checkpoint.json"
    if args.resume:
        if not state_path.exists():
            print(f"sb3_trpo_run: error: expected a checkpoint in {run}, found none",
                  file=sys.stderr)
            return 2
        meta = json.loads((run / "run.json").read_text())
        state = json.loads(state_path.read_text())
        env = _make(meta["env"], meta["seed"] + 7919 * state["iteration"],
                    run / "checkpoint_vecnormalize.pkl", meta["normalize"])
        if meta["normalize"] == "gymnasium":
            _gymnasium_stats(env, run / NORM_STATS, restore=True)
        model = TRPO.load(str(run / "checkpoint_model.zip"), env=env, device=args.device)
        model.set_random_seed(meta["seed"] + 7919 * state["iteration"])
        # rows logged after the checkpoint are logged again by the resumed run
        with (run / "progress.csv").open(newline="") as f:
            rows = list(csv.reader(f))
        with (run / "progress.csv").open("w", newline="") as f:
            csv.writer(f).writerows([rows[0]] + [r for r in rows[1:]
                                                 if int(r[0]) <= state["iteration"]])
    else:
        run.mkdir(parents=True, exist_ok=True)
        hp = dict(ZOO, target_kl=0.04 if args.env.startswith("HalfCheetah") else 0.01)
        meta = {"algorithm": "sb3-trpo", "env": args.env, "seed": args.seed,
                "total_steps": args.total_steps, "n_envs": N_ENVS, "hyperparameters": hp,
                "normalize": args.normalize, "policy": "MlpPolicy"}
        if args.adam_eps is not None:
            hp["policy_kwargs"] = {"optimizer_kwargs": {"eps": args.adam_eps}}
            meta["adam_eps"] = args.adam_eps
        (run / "run.json").write_text(json.dumps(meta, indent=1))
        state = {"iteration": 0, "time_s": 0.0, "episodes": 0, "returns": [], "lengths": []}
        env = _make(args.env, args.seed, None, args.normalize)
        model = TRPO("MlpPolicy", env, seed=args.seed, device=args.device, verbose=0, **hp)
        with (run / "progress.csv").open("w", newline="") as f:
            csv.writer(f).writerow(FIELDS)
    total = meta["total_steps"]
    returns = collections.deque(state["returns"], maxlen=100)
    lengths = collections.deque(state["lengths"], maxlen=100)
    start = time.time() - state["time_s"]

    def save() -> None:
        model.save(str(run / "checkpoint_model.zip"))
        if meta["normalize"] != "gymnasium":
            model.get_env().save(str(run / "checkpoint_vecnormalize.pkl"))
        else:
            _gymnasium_stats(model.get_env(), run / NORM_STATS)
        state.update(time_s=time.time() - start, returns=list(returns), lengths=list(lengths))
        state_path.write_text(json.dumps(state))

    class Log(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    returns.append(float(info["episode"]["r"]))
                    lengths.append(float(info["episode"]["l"]))
                    state["episodes"] += 1
            return True

        def _on_rollout_end(self) -> None:
            # logged before the update on this rollout, as pgtheory train logs after it;
            # the episodes are the same ones
            state["iteration"] += 1
            t = time.time() - start
            row = [state["iteration"], self.num_timesteps, round(t, 3),
                   round(self.num_timesteps / max(t, 1e-9), 1), state["episodes"],
                   sum(returns) / len(returns) if returns else float("nan"),
                   sum(lengths) / len(lengths) if lengths else float("nan"),
                   round(float(self.model.policy.log_std.detach().sum()), 4)]
            with (run / "progress.csv").open("a", newline="") as f:
                csv.writer(f).writerow(row)

        def _on_rollout_start(self) -> None:
            # after the previous rollout's update (saving at the rollout's end would checkpoint
            # the model before its update, and a resumed run would skip that update)
            if state["iteration"] and state["iteration"] % args.checkpoint_every == 0:
                save()

    remaining = total - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=Log(), reset_num_timesteps=False)
    save()
    import gymnasium as gym
    import numpy as np

    venv = model.get_env()
    if meta["normalize"] == "gymnasium":
        from pgtheory.implementations.common import find_wrapper

        rms = find_wrapper(venv.envs[0], gym.wrappers.NormalizeObservation).obs_rms

        def normalize_obs(o):
            return (o - rms.mean) / np.sqrt(rms.var + 1e-8)
    else:
        venv.training = False
        normalize_obs = venv.normalize_obs

    ev_env = gym.make(meta["env"])
    rets = []
    for i in range(10):
        obs, _ = ev_env.reset(seed=meta["seed"] + 100_000 + i)
        total_r, done = 0.0, False
        while not done:
            action, _ = model.predict(normalize_obs(obs[None]), deterministic=True)
            obs, r, term, trunc, _ = ev_env.step(np.clip(action[0], ev_env.action_space.low,
                                                         ev_env.action_space.high))
            total_r += float(r)
            done = term or trunc
        rets.append(total_r)
    (run / "evaluation.json").write_text(json.dumps(
        {"mean": float(np.mean(rets)), "std": float(np.std(rets)), "episodes": 10,
         "returns": rets}))
    print(f"{run}: {model.num_timesteps} steps, return {np.mean(returns):.0f}, "
          f"eval {np.mean(rets):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
