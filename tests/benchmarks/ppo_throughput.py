"""Throughput: our PPO against Stable-Baselines3 PPO and a CleanRL-style single-file PPO,
matched, on a MuJoCo task, in the same run.

Usage: ``python tests/benchmarks/ppo_throughput.py [--env Hopper-v5] [--steps 20480]
[--repeats 3] [--impls ours,sb3,cleanrl] [--out FILE.json] [--table FILE.md]``
(``make bench-throughput``); ``--split 5`` instead times our collection and update apart.

Matched settings: 2048 steps x 1 environment per iteration, 10 epochs, 32 minibatches (64
samples each), 64x64 tanh MLPs for actor and critic, Adam 3e-4 (eps 1e-5), GAE (0.99, 0.95),
clip 0.2, no value clipping, gradient clipping 0.5, advantage normalization, no entropy bonus,
no observation or reward normalization, CPU, one torch thread for all three (torch's default
thread count is slower for all of them on small networks; all get the same).

The three learners:

* ``ours``: :class:`pgtheory.implementations.ppo.PPOAgent` with ``record=False`` (the oracles'
  step recorder off, as in ``pgtheory train``).
* ``sb3``: ``stable_baselines3.PPO("MlpPolicy", ...)`` with the settings above.
* ``cleanrl``: the single-file loop of :data:`CLEANRL` below, written for this benchmark in the
  style of CleanRL's ``ppo_continuous_action.py`` (Huang et al. 2022, JMLR 23(274)): one
  ``nn.Module`` with the actor and critic, a per-step ``torch.no_grad`` forward of both, torch
  buffers, a Python GAE loop, ``torch.distributions.Normal``; gymnasium ``SyncVectorEnv`` with
  ``RecordEpisodeStatistics`` and ``ClipAction`` (CleanRL's normalization wrappers left out,
  as for the other two). It is a speed reference only (its GAE does not bootstrap truncations).

Each measurement is a fresh process that builds the learner and trains ``--steps`` env steps;
the time covers collection and updates (not imports or construction). Each repeat runs the
learners one after the other, in an order that rotates between repeats, so drift in machine load
affects all of them. Reported: the median env steps per second of each learner, and the ratio
ours / peer as the median over repeats of the per-repeat ratio (> 1: ours is faster). Goal in
the issue: ours / SB3 >= 1.5 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

OURS = """
import time, torch, json
torch.set_num_threads(1)
from pgtheory.implementations.ppo import PPOAgent, PPOConfig
from pgtheory.implementations.common import make_env_fn
cfg = PPOConfig(num_steps=2048, n_epochs=10, n_minibatches=32, anneal_lr=False)
agent = PPOAgent(make_env_fn({env!r}, cfg), cfg, seed=0, num_envs=1, record=False)
t0 = time.perf_counter()
while agent.env_steps < {steps}:
    agent.iterate()
print(json.dumps({{"seconds": time.perf_counter() - t0, "steps": agent.env_steps}}))
"""

SB3 = """
import time, torch, json
torch.set_num_threads(1)
import gymnasium as gym
from stable_baselines3 import PPO
env = gym.make({env!r})
model = PPO("MlpPolicy", env, n_steps=2048, batch_size=64, n_epochs=10, learning_rate=3e-4,
            gamma=0.99, gae_lambda=0.95, clip_range=0.2, max_grad_norm=0.5, ent_coef=0.0,
            vf_coef=0.5, policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64]),
            activation_fn=torch.nn.Tanh), device="cpu", seed=0, verbose=0)
t0 = time.perf_counter()
model.learn({steps})
print(json.dumps({{"seconds": time.perf_counter() - t0, "steps": model.num_timesteps}}))
"""

# A compact single-file PPO in the CleanRL style (see the module docstring).
CLEANRL = """
import json, time
import gymnasium as gym
import numpy as np
import torch
from torch import nn
torch.set_num_threads(1)
T, EPOCHS, MINIBATCHES, GAMMA, LAM, CLIP, VF, MAX_NORM = 2048, 10, 32, 0.99, 0.95, 0.2, 0.5, 0.5
torch.manual_seed(0)
rng = np.random.default_rng(0)

def thunk():
    return gym.wrappers.ClipAction(gym.wrappers.RecordEpisodeStatistics(gym.make({env!r})))

envs = gym.vector.SyncVectorEnv([thunk])
n_obs = envs.single_observation_space.shape[0]
n_act = envs.single_action_space.shape[0]

def dense(i, o, gain):
    layer = nn.Linear(i, o)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer

def mlp(o, gain):
    return nn.Sequential(dense(n_obs, 64, 2 ** 0.5), nn.Tanh(), dense(64, 64, 2 ** 0.5),
                         nn.Tanh(), dense(64, o, gain))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.v, self.mu = mlp(1, 1.0), mlp(n_act, 0.01)
        self.log_std = nn.Parameter(torch.zeros(1, n_act))

    def value(self, x):
        return self.v(x).squeeze(-1)

    def forward(self, x, a=None):
        mu = self.mu(x)
        d = torch.distributions.Normal(mu, self.log_std.expand_as(mu).exp())
        if a is None:
            a = d.sample()
        return a, d.log_prob(a).sum(-1), d.entropy().sum(-1), self.value(x)

net = Net()
opt = torch.optim.Adam(net.parameters(), lr=3e-4, eps=1e-5)
obs_b = torch.zeros(T, n_obs)
act_b = torch.zeros(T, n_act)
logp_b, rew_b, done_b, val_b = (torch.zeros(T) for _ in range(4))
obs = torch.tensor(envs.reset(seed=0)[0], dtype=torch.float32)
done = torch.zeros(1)
steps = 0
t0 = time.perf_counter()
while steps < {steps}:
    for t in range(T):
        obs_b[t], done_b[t] = obs[0], done[0]
        with torch.no_grad():
            a, logp, _, v = net(obs)
        act_b[t], logp_b[t], val_b[t] = a[0], logp[0], v[0]
        o, r, term, trunc, info = envs.step(a.numpy())
        rew_b[t] = float(r[0])
        obs = torch.tensor(o, dtype=torch.float32)
        done = torch.tensor(np.logical_or(term, trunc), dtype=torch.float32)
    steps += T
    with torch.no_grad():
        nxt = net.value(obs)[0]
        adv = torch.zeros(T)
        last = 0.0
        for t in reversed(range(T)):
            nonterminal = 1.0 - (done[0] if t == T - 1 else done_b[t + 1])
            v_next = nxt if t == T - 1 else val_b[t + 1]
            delta = rew_b[t] + GAMMA * v_next * nonterminal - val_b[t]
            adv[t] = last = delta + GAMMA * LAM * nonterminal * last
        ret = adv + val_b
    idx = np.arange(T)
    size = T // MINIBATCHES
    for _ in range(EPOCHS):
        rng.shuffle(idx)
        for s in range(0, T, size):
            mb = idx[s:s + size]
            _, logp, ent, v = net(obs_b[mb], act_b[mb])
            log_ratio = logp - logp_b[mb]
            ratio = log_ratio.exp()
            with torch.no_grad():
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clip_frac = ((ratio - 1).abs() > CLIP).float().mean().item()
            a_mb = adv[mb]
            a_mb = (a_mb - a_mb.mean()) / (a_mb.std() + 1e-8)
            pg = torch.max(-a_mb * ratio, -a_mb * ratio.clamp(1 - CLIP, 1 + CLIP)).mean()
            v_loss = 0.5 * ((v - ret[mb]) ** 2).mean()
            loss = pg - 0.0 * ent.mean() + VF * v_loss
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), MAX_NORM)
            opt.step()
print(json.dumps({{"seconds": time.perf_counter() - t0, "steps": steps}}))
"""

# Ours only: seconds per iteration spent collecting (``rollout``) and updating (``update``).
SPLIT = """
import time, torch, json
torch.set_num_threads(1)
from pgtheory.implementations.ppo import PPOAgent, PPOConfig
from pgtheory.implementations.common import make_env_fn
cfg = PPOConfig(num_steps=2048, n_epochs=10, n_minibatches=32, anneal_lr=False)
agent = PPOAgent(make_env_fn({env!r}, cfg), cfg, seed=0, num_envs=1, record=False)
agent.iterate()  # warm-up
collect, update = [], []
for _ in range({iterations}):
    t0 = time.perf_counter()
    batch = agent.rollout()
    t1 = time.perf_counter()
    agent.update(batch)
    collect.append(t1 - t0)
    update.append(time.perf_counter() - t1)
print(json.dumps({{"collect_seconds": collect, "update_seconds": update}}))
"""

CODE = {"ours": OURS, "sb3": SB3, "cleanrl": CLEANRL}
LABEL = {"ours": "ours PPO", "sb3": "Stable-Baselines3 PPO", "cleanrl": "CleanRL-style PPO"}


def _run(code: str) -> dict:
    load = os.getloadavg()[0]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["steps_per_second"] = res["steps"] / res["seconds"]
    res["loadavg_1min_before"] = load
    return res


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "gymnasium", "mujoco", "stable_baselines3", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "versions": versions, "commit": commit}


def table(result: dict) -> str:
    """A Markdown table of one result (medians and the ratios ours / peer)."""
    med = result["median_steps_per_second"]
    lines = [f"{result['env']}, {result['steps']} env steps per run, {result['repeats']} "
             f"repeats, {result['date']}:", "",
             "| learner | env steps/s (median) | per repeat | ours / learner (median of "
             "per-repeat ratios) |", "|---|---|---|---|"]
    for name in result["impls"]:
        per = ", ".join(f"{r['steps_per_second']:,.0f}" for r in result["runs"][name])
        r = result["ratio_ours_over"].get(name, float("nan"))
        ratio = "1" if name == "ours" else f"{r:.2f}"
        lines.append(f"| {LABEL[name]} | {med[name]:,.0f} | {per} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--steps", type=int, default=20480)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--impls", default="ours,sb3,cleanrl",
                    help="comma-separated among ours, sb3, cleanrl")
    ap.add_argument("--out", help="write the raw per-run results and the summary as JSON here")
    ap.add_argument("--table", help="write the Markdown table here")
    ap.add_argument("--split", type=int, metavar="ITERATIONS",
                    help="instead: time ITERATIONS iterations of ours (after one warm-up) and "
                         "print the seconds spent collecting and updating (min, median)")
    args = ap.parse_args(argv)
    if args.split is not None:
        if args.split < 1:
            ap.error(f"--split: expected a positive integer, received {args.split}")
        out = subprocess.run([sys.executable, "-c", SPLIT.format(env=args.env,
                                                                iterations=args.split)],
                             capture_output=True, text=True, check=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        for key in ("collect_seconds", "update_seconds"):
            print(f"{key.split('_')[0]:8s} min {min(res[key]):.3f} s, median "
                  f"{statistics.median(res[key]):.3f} s per iteration of 2048 env steps")
        return 0
    impls = [s.strip() for s in args.impls.split(",") if s.strip()]
    bad = [s for s in impls if s not in CODE]
    if bad or not impls:
        ap.error(f"--impls: expected names among {sorted(CODE)}, received {args.impls!r}")
    if args.steps < 1 or args.repeats < 1:
        ap.error(f"--steps, --repeats: expected positive integers, received {args.steps}, "
                 f"{args.repeats}")
    runs: dict[str, list[dict]] = {name: [] for name in impls}
    for i in range(args.repeats):
        order = impls[i % len(impls):] + impls[:i % len(impls)]
        for name in order:
            runs[name].append(_run(CODE[name].format(env=args.env, steps=args.steps)))
        print(f"repeat {i + 1}: " + ", ".join(
            f"{name} {runs[name][-1]['steps_per_second']:.0f}" for name in impls) + " steps/s",
            flush=True)
    median = {n: statistics.median(r["steps_per_second"] for r in runs[n]) for n in impls}
    ratios = {}
    if "ours" in impls:
        for n in impls:
            if n != "ours":
                ratios[n] = statistics.median(
                    a["steps_per_second"] / b["steps_per_second"]
                    for a, b in zip(runs["ours"], runs[n], strict=True))
    result = {"env": args.env, "steps": args.steps, "repeats": args.repeats, "impls": impls,
              "date": datetime.date.today().isoformat(),
              "command": "python tests/benchmarks/ppo_throughput.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "machine": _machine(), "runs": runs, "median_steps_per_second": median,
              "ratio_ours_over": ratios}
    text = table(result)
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.table:
        with open(args.table, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
