"""PPO as one training loop (CleanRL style), made auditable by six recorded lines.

Discrete actions (categorical head) or continuous actions (diagonal-Gaussian head, state-
independent log-std), chosen from the env's action space. The lines ending in ``# pgtheory``
are the only additions for the audit; without an audit each is a no-op.

``--truncation-bug`` reproduces CleanRL #198: time-limit truncation treated as termination
(``done = terminated or truncated`` cuts the bootstrap, so no ``gamma * V(final_obs)``).

``--autoreset next-step`` collects under gymnasium 1.x's default autoreset mode: the step after
an episode end only resets its env (action ignored, reward 0), so the loop marks that slot and
leaves it out of every minibatch; ``--train-on-reset-slots`` keeps it in (a loop written for
same-step autoreset run under next-step autoreset; CleanRL #499, Gymnasium PR #1227).

Run it::

    python examples/ppo_loop.py --env-id CartPole-v1
    python examples/ppo_loop.py --env-id Pendulum-v1 --total-timesteps 100000

Audit it (from this folder, or with it on ``PYTHONPATH``)::

    pgtheory audit ppo_loop:target --quick          # correct
    pgtheory audit ppo_loop:buggy_target --quick    # CleanRL #198
    pgtheory audit ppo_loop:next_step_target --quick             # correct, next-step autoreset
    pgtheory audit ppo_loop:reset_slot_buggy_target --quick      # trains on the reset slots

References: Schulman et al. (2017), arXiv:1707.06347v2, Eqs. (7), (9); GAE: Schulman et al.
(2016), arXiv:1506.02438v6, Eq. (16); CleanRL ``ppo.py`` / ``ppo_continuous_action.py``
(Huang et al. 2022, JMLR 23(274)).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import random

import gymnasium as gym
import numpy as np
import torch
from pgtheory.oracles import recording  # pgtheory
from torch import nn


@dataclasses.dataclass
class Args:
    env_id: str = "CartPole-v1"
    seed: int = 1
    total_timesteps: int = 50_000
    learning_rate: float = 2.5e-4
    num_envs: int = 4
    num_steps: int = 128  # per-env steps per iteration
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4
    update_epochs: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    truncation_bug: bool = False  # CleanRL #198: bootstrap cut at truncation too
    autoreset: str = "same-step"  # or "next-step", gymnasium 1.x's default
    train_on_reset_slots: bool = False  # next-step: the reset slots left in the minibatches


def parse_args(argv=None) -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in dataclasses.fields(Args):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            parser.add_argument(flag, action="store_true", default=f.default)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)
    args = Args(**vars(parser.parse_args(argv)))
    if args.autoreset not in ("same-step", "next-step"):
        parser.error(f"--autoreset: expected same-step or next-step, received {args.autoreset}")
    return args


def layer(n_in: int, n_out: int, std: float = np.sqrt(2)) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(lin.weight, std)
    nn.init.zeros_(lin.bias)
    return lin


class Agent(nn.Module):
    def __init__(self, envs, hidden: int) -> None:
        super().__init__()
        n_obs = int(np.prod(envs.single_observation_space.shape))
        space = envs.single_action_space
        self.continuous = isinstance(space, gym.spaces.Box)
        n_out = int(np.prod(space.shape)) if self.continuous else int(space.n)
        self.critic = nn.Sequential(layer(n_obs, hidden), nn.Tanh(), layer(hidden, hidden),
                                    nn.Tanh(), layer(hidden, 1, 1.0))
        self.actor = nn.Sequential(layer(n_obs, hidden), nn.Tanh(), layer(hidden, hidden),
                                   nn.Tanh(), layer(hidden, n_out, 0.01))
        if self.continuous:
            self.log_std = nn.Parameter(torch.zeros(n_out))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def distribution(self, x: torch.Tensor) -> torch.distributions.Distribution:
        out = self.actor(x)
        if self.continuous:  # log-prob summed over action dimensions
            return torch.distributions.Independent(
                torch.distributions.Normal(out, self.log_std.exp().expand_as(out)), 1)
        return torch.distributions.Categorical(logits=out)


def make_env(env_id: str):
    return lambda: gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))


def main(argv=None) -> dict:
    """Train; return the episode returns and the final parameters (for comparisons)."""
    args = parse_args(argv)
    args = recording.configure(args)  # pgtheory
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    random.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)

    next_step = args.autoreset == "next-step"
    mode = gym.vector.AutoresetMode.NEXT_STEP if next_step else gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id) for _ in range(args.num_envs)],
                                    autoreset_mode=mode)
    envs = recording.record_env(envs)  # pgtheory
    agent = Agent(envs, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    recording.register(agent.distribution, value=agent.value, module=agent,  # pgtheory
                       optimizers=optimizer)  # pgtheory

    T, N = args.num_steps, args.num_envs
    obs = torch.zeros((T, N, *envs.single_observation_space.shape))
    actions = torch.zeros((T, N, *envs.single_action_space.shape))
    logprobs, rewards, values, next_values = (torch.zeros((T, N)) for _ in range(4))
    terminated, truncated = torch.zeros((T, N)), torch.zeros((T, N))
    advantages = torch.zeros((T, N))
    valid = torch.ones((T, N), dtype=torch.bool)  # next-step: False where the env only resets
    resetting = np.zeros(N, bool)
    episode_returns = []

    next_obs = torch.as_tensor(envs.reset(seed=args.seed)[0], dtype=torch.float32)
    for _iteration in range(num_iterations):
        for step in range(T):
            obs[step] = next_obs
            valid[step] = torch.as_tensor(~resetting)
            with torch.no_grad():
                dist = agent.distribution(next_obs)
                action = dist.sample()
                logprobs[step] = dist.log_prob(action)
                values[step] = agent.value(next_obs)
            actions[step] = action
            o, r, term, trunc, info = envs.step(action.numpy())
            final_obs = o.copy()  # the true s_{t+1} (SAME_STEP puts it in info["final_obs"])
            for n in np.flatnonzero(info.get("_final_obs", np.zeros(N, bool))):
                final_obs[n] = info["final_obs"][n]
            with torch.no_grad():
                next_values[step] = agent.value(torch.as_tensor(final_obs, dtype=torch.float32))
            rewards[step] = torch.as_tensor(r, dtype=torch.float32)
            terminated[step] = torch.as_tensor(term, dtype=torch.float32)
            truncated[step] = torch.as_tensor(trunc, dtype=torch.float32)
            next_obs = torch.as_tensor(o, dtype=torch.float32)
            resetting = (term | trunc) if next_step else resetting  # next step only resets
            ended_info = info.get("final_info", info)  # SAME_STEP: the ended episodes' infos
            for n in np.flatnonzero(ended_info.get("_episode", np.zeros(N, bool))):
                episode_returns.append(float(ended_info["episode"]["r"][n]))

        with torch.no_grad():  # GAE (Schulman et al. 2016, Eq. 16)
            ended = torch.maximum(terminated, truncated)
            no_bootstrap = ended if args.truncation_bug else terminated  # the #198 defect
            last = torch.zeros(N)
            for t in reversed(range(T)):
                delta = rewards[t] + args.gamma * (1 - no_bootstrap[t]) * next_values[t] - values[t]
                last = delta + args.gamma * args.gae_lambda * (1 - ended[t]) * last
                advantages[t] = last
            returns = advantages + values
        recording.record_batch(observations=obs, actions=actions, log_probs=logprobs,  # pgtheory
                               values=values, advantages=advantages, returns=returns)  # pgtheory

        b_obs = obs.reshape((-1, *envs.single_observation_space.shape))
        b_actions = actions.reshape((-1, *envs.single_action_space.shape))
        b_logprobs, b_advantages = logprobs.reshape(-1), advantages.reshape(-1)
        b_returns, b_valid = returns.reshape(-1), valid.reshape(-1).numpy()
        b_inds = np.arange(batch_size)
        for _epoch in range(args.update_epochs):
            rng.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start:start + minibatch_size]
                if not args.train_on_reset_slots:  # next-step autoreset: no transition there
                    mb_inds = mb_inds[b_valid[mb_inds]]
                dist = agent.distribution(b_obs[mb_inds])
                ratio = (dist.log_prob(b_actions[mb_inds]) - b_logprobs[mb_inds]).exp()
                mb_adv = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(
                    1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_loss = 0.5 * ((agent.value(b_obs[mb_inds]) - b_returns[mb_inds]) ** 2).mean()
                loss = pg_loss - args.ent_coef * dist.entropy().mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                recording.record_minibatch(mb_inds)  # pgtheory
                optimizer.step()
        recording.end_iteration()  # pgtheory

    envs.close()
    return {"episode_returns": episode_returns,
            "parameters": {k: v.detach().clone() for k, v in agent.state_dict().items()}}


def target(argv=()) -> recording.LoopTarget:  # pgtheory: `pgtheory audit ppo_loop:target`
    a = parse_args(list(argv))
    hp = {"gamma": a.gamma, "gae_lambda": a.gae_lambda, "clip_range": a.clip_coef,
          "ent_coef": a.ent_coef, "vf_coef": a.vf_coef, "normalize_advantage": a.norm_adv}
    return recording.loop_target(functools.partial(main, list(argv)), algorithm="ppo",
                                 hyperparameters=hp, action_kinds=("discrete", "continuous"),
                                 name=" ".join(["ppo_loop", *argv]))


def buggy_target() -> recording.LoopTarget:
    """The loop with CleanRL #198 (``pgtheory audit ppo_loop:buggy_target``)."""
    return target(["--truncation-bug"])


def next_step_target() -> recording.LoopTarget:
    """The loop under next-step autoreset, reset slots left out (correct)."""
    return target(["--autoreset", "next-step"])


def reset_slot_buggy_target() -> recording.LoopTarget:
    """Next-step autoreset with the reset slots trained on (CleanRL #499)."""
    return target(["--autoreset", "next-step", "--train-on-reset-slots"])


if __name__ == "__main__":
    out = main()
    r = out["episode_returns"]
    print(f"{len(r)} episodes; mean return of the last 10: {np.mean(r[-10:]):.1f}")
