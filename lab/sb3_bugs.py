"""A catalogue of seeded bugs in Stable-Baselines3 / sb3-contrib models, and clean controls.

Each entry is a ``FACTORY(env)`` (the form ``pgtheory audit sb3:pgtheory.lab.sb3_bugs:NAME`` takes)
that builds a library model with one defect injected from outside the library: a rollout-buffer
subclass, an env or VecEnv wrapper, a policy subclass, a ``train()`` written here in a model
subclass, or an overridden TRPO method. No library code is copied or edited. Every entry names
its defect in the registry :mod:`pgtheory.oracles.defects` (class, description and public
reports come from there).

Run ``python -m pgtheory.lab.sb3_bugs`` (``--quick``, ``--only NAME``) to audit every entry and
print whether each bug was flagged, by which check, and that the controls pass; exit status 1 when a
bug is missed or a control fails. ``tests/test_sb3_audit.py`` runs the same (the full run is
marked ``catalogue``; CI runs a fast subset).

Controls (must pass): ``ppo_default``, ``ppo_linear`` (``net_arch=[]``: exactly tabular softmax
on the one-hot observations), ``a2c_default``, ``a2c_linear``, ``trpo_default``,
``trpo_linear``, ``ppo_own_train`` (the hand-written ``train()`` below without a defect, so
that the PPO loss defects are known to come from the defect alone), ``ppo_four_envs`` (PPO as
a ``FACTORY(venv)`` on the audit's 4 envs), ``ppo_vecnormalize`` (PPO
on ``VecNormalize(norm_obs=True, norm_reward=True)`` of the audit's 4 envs, a ``FACTORY(venv)``;
the control of the two normalization-path defects).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from pgtheory.oracles.defects import NamesADefect

__all__ = ["BUGS", "CONTROLS", "SeededBug", "main"]


def _sb3():
    import stable_baselines3

    return stable_baselines3


# ----------------------------------------------------------------------------- buffers
def _buffer_class(defect: str):
    """A RolloutBuffer whose GAE (written here, Schulman et al. 2016 Eq. 16) carries a defect."""
    from stable_baselines3.common.buffers import RolloutBuffer

    class DefectiveBuffer(RolloutBuffer):
        def add(self, obs, action, reward, episode_start, value, log_prob) -> None:
            if defect == "rewards_shifted":  # store the previous step's reward
                previous = getattr(self, "_previous_reward", np.zeros_like(reward))
                self._previous_reward = np.array(reward, copy=True)
                reward = previous
            super().add(obs, action, reward, episode_start, value, log_prob)

        def compute_returns_and_advantage(self, last_values, dones) -> None:
            last = last_values.clone().cpu().numpy().flatten()
            if defect == "last_value_zero":
                last = np.zeros_like(last)
            gamma, lam = self.gamma, self.gae_lambda
            if defect == "gamma_lambda_swapped":
                gamma, lam = lam, gamma
            acc = np.zeros(self.n_envs, dtype=np.float32)
            for t in reversed(range(self.buffer_size)):
                if t == self.buffer_size - 1:
                    live, v_next = 1.0 - dones.astype(np.float32), last
                else:
                    # the episode_start of step t + 1 says whether s_{t+1} continues s_t
                    starts = self.episode_starts[t if defect == "mask_current_done" else t + 1]
                    live, v_next = 1.0 - starts, self.values[t + 1]
                td_gamma = 1.0 if defect == "no_gamma_in_td" else gamma
                trace = lam if defect == "lambda_power" else gamma * lam
                delta = self.rewards[t] + td_gamma * live * v_next - self.values[t]
                acc = delta + trace * live * acc
                self.advantages[t] = acc
            self.returns = (self.advantages.copy() if defect == "value_target_advantage"
                            else self.advantages + self.values)

    return DefectiveBuffer


def _with_buffer(algorithm: str, defect: str) -> Callable:
    def factory(env):
        from pgtheory.oracles.sb3 import builtin_factory

        return builtin_factory(algorithm, rollout_buffer_class=_buffer_class(defect))(env)
    return factory


def _sizes(algorithm: str) -> dict:
    from pgtheory.oracles.sb3 import BUILTIN_DEFAULTS

    return dict(BUILTIN_DEFAULTS[algorithm])


# ---------------------------------------------------------------------------- wrappers
def _truncation_as_termination(env):
    import gymnasium as gym

    class TruncationAsTermination(gym.Wrapper):
        """Reports a time-limit truncation as termination (no bootstrap follows)."""

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward, terminated or truncated, False, info

    return TruncationAsTermination(env)


def _bootstrap_from_reset_obs(venv):
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class ResetObservationAsFinal(VecEnvWrapper):
        """Hands the next episode's first observation over as the final observation."""

        def reset(self):
            return self.venv.reset()

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            for i, done in enumerate(dones):
                if done and "terminal_observation" in infos[i]:
                    infos[i]["terminal_observation"] = np.array(obs[i], copy=True)
            return obs, rewards, dones, infos

    return ResetObservationAsFinal(venv)


def _vec(env):
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: env])


# ----------------------------------------------------------------- VecNormalize, 4+ envs
#: Sizing of the VecNormalize entries: n_steps x num_envs (4 in the audit) = 128 samples, two
#: minibatches of 64 (the tuned MuJoCo configurations run 4-8 envs with VecNormalize).
VECNORM_SIZES = {"n_steps": 32, "batch_size": 64}


def _vec_normalize_class(defect: str | None):
    """``VecNormalize``, or a subclass whose ``step_wait`` carries one defect."""
    from stable_baselines3.common.vec_env import VecNormalize

    if defect is None:
        return VecNormalize

    class DefectiveVecNormalize(VecNormalize):
        def step_wait(self):
            accumulated = np.array(self.returns, copy=True)
            obs, rewards, dones, infos = super().step_wait()
            if defect == "final_obs_raw":  # hand the bootstrap the raw final observation
                for i, done in enumerate(dones):
                    if done and "terminal_observation" in infos[i]:
                        infos[i]["terminal_observation"] = self.unnormalize_obs(
                            infos[i]["terminal_observation"])
            elif defect == "return_not_reset":  # R = gamma R + r without the reset at dones
                self.returns = accumulated * self.gamma + self.old_reward
            return obs, rewards, dones, infos

    return DefectiveVecNormalize


def _four_envs(venv):
    """``FACTORY(venv)``: PPO on the audit's envs as given (no VecNormalize)."""
    return _sb3().PPO("MlpPolicy", venv, **VECNORM_SIZES)


def _vec_normalized(defect: str | None) -> Callable:
    """``FACTORY(venv)``: PPO on ``VecNormalize(venv)`` (observations and rewards)."""
    def factory(venv):
        wrapper = _vec_normalize_class(defect)
        return _sb3().PPO("MlpPolicy", wrapper(venv, norm_obs=True, norm_reward=True),
                          **VECNORM_SIZES)
    return factory


# ---------------------------------------------------------------------------- policies
def _negated_entropy_policy():
    from stable_baselines3.common.policies import ActorCriticPolicy

    class NegatedEntropyPolicy(ActorCriticPolicy):
        """Returns -H from evaluate_actions, so the bonus pushes entropy down."""

        def evaluate_actions(self, obs, actions):
            values, log_prob, entropy = super().evaluate_actions(obs, actions)
            return values, log_prob, -entropy

    return NegatedEntropyPolicy


# ------------------------------------------------------------------- a hand-written train
def _own_train_ppo(defect: str | None):
    """A PPO subclass with ``train()`` written here (PPO paper Eq. 7 and 9) and one defect."""
    import torch
    from torch.nn import functional as F

    class OwnTrainPPO(_sb3().PPO):
        def train(self) -> None:
            self.policy.set_training_mode(True)
            self._update_learning_rate(self.policy.optimizer)
            eps = self.clip_range(self._current_progress_remaining)
            discrete = self.action_space.__class__.__name__ == "Discrete"
            for _ in range(self.n_epochs):
                for data in self.rollout_buffer.get(self.batch_size):
                    actions = data.actions.long().flatten() if discrete else data.actions
                    values, logp, entropy = self.policy.evaluate_actions(data.observations,
                                                                         actions)
                    adv = data.advantages
                    if self.normalize_advantage and (len(adv) > 1 or defect == "nan_norm"):
                        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                    old = logp.detach() if defect == "old_logprob_recomputed" \
                        else data.old_log_prob
                    log_ratio = old - logp if defect == "ratio_inverted" else logp - old
                    ratio = torch.exp(log_ratio)
                    if defect == "clip_on_advantage":
                        other = ratio * torch.clamp(adv, 1 - eps, 1 + eps)
                    else:
                        other = torch.clamp(ratio, 1 - eps, 1 + eps) * adv
                    pick = torch.max if defect == "min_max_swapped" else torch.min
                    policy_loss = -pick(ratio * adv, other).mean()
                    value_loss = F.mse_loss(data.returns, values.flatten())
                    loss = (policy_loss - self.ent_coef * entropy.mean()
                            + self.vf_coef * value_loss)
                    self.policy.optimizer.zero_grad()
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                    self.policy.optimizer.step()
            self._n_updates += self.n_epochs

    return OwnTrainPPO


def _own_train(defect: str | None, **kwargs) -> Callable:
    def factory(env):
        import warnings

        with warnings.catch_warnings():  # SB3 warns about the truncated last minibatch
            warnings.simplefilter("ignore", UserWarning)
            return _own_train_ppo(defect)("MlpPolicy", env, **{**_sizes("PPO"), **kwargs})
    return factory


# --------------------------------------------------------------------------------- TRPO
def _trpo_hvp(defect: str) -> Callable:
    def factory(env):
        from sb3_contrib import TRPO

        class DefectiveTRPO(TRPO):
            def hessian_vector_product(self, params, grad_kl, vector, retain_graph=True):
                hv = super().hessian_vector_product(params, grad_kl, vector, retain_graph)
                if defect == "identity":  # the Fisher never enters: CG returns g
                    return vector + 0.0 * hv
                return 2.0 * hv  # "fisher_doubled": full step shrinks by sqrt(2)

        return DefectiveTRPO("MlpPolicy", env, policy_kwargs={"net_arch": []},
                             **_sizes("TRPO"))
    return factory


# ------------------------------------------------------------------------------ catalogue
@dataclasses.dataclass(frozen=True)
class SeededBug(NamesADefect):
    """One seeded defect: its factory, registry key, expected checks.

    ``defect`` is its key in :data:`pgtheory.oracles.defects.DEFECTS`, which gives
    :attr:`bug_class`, :attr:`description` and :attr:`reported`; ``detail`` says how this entry
    realizes it where the registry's line does not.
    """

    name: str
    defect: str
    factory: Callable
    caught_by: tuple[str, ...]
    detail: str = ""

    @property
    def reported(self) -> str:
        """The registry's public reports ("" when none is known)."""
        return self.reports

    @property
    def injection(self) -> str:
        """How the defect enters the model (rollout buffer, wrapper, policy, train, TRPO)."""
        return _INJECTION.get(self.name, "rollout-buffer subclass")


def _bug(name, defect, factory, *caught_by, detail: str = "") -> SeededBug:
    return SeededBug(name, defect, factory, tuple(caught_by), detail)


_INJECTION = {
    "truncation_as_termination": "gymnasium env wrapper",
    "bootstrap_from_reset_obs": "VecEnv wrapper",
    "entropy_sign": "policy subclass (evaluate_actions)",
    **{n: "PPO subclass, train() written here" for n in (
        "ppo_min_max_swapped", "ppo_ratio_inverted", "ppo_clip_on_advantage",
        "ppo_old_logprob_recomputed", "ppo_normalize_minibatch_of_one")},
    "trpo_direction_gradient": "TRPO subclass (hessian_vector_product)",
    "trpo_fisher_doubled": "TRPO subclass (hessian_vector_product)",
    "vecnormalize_final_obs_raw": "VecNormalize subclass (step_wait), 4 envs",
    "vecnormalize_return_not_reset": "VecNormalize subclass (step_wait), 4 envs",
}


LINEAR = {"policy_kwargs": {"net_arch": []}}

BUGS: dict[str, SeededBug] = {b.name: b for b in [
    _bug("gae_mask_current_done", "done_flags_shifted", _with_buffer("PPO", "mask_current_done"),
         "given_the_batch.advantages"),
    _bug("gae_last_value_zero", "no_bootstrap_at_buffer_end",
         _with_buffer("PPO", "last_value_zero"), "given_the_batch.advantages"),
    _bug("rewards_shifted", "rewards_shifted", _with_buffer("PPO", "rewards_shifted"),
         "given_the_batch.advantages", detail="the buffer stores the previous step's reward"),
    _bug("gae_gamma_lambda_swapped", "gae_gamma_lambda_swapped",
         _with_buffer("PPO", "gamma_lambda_swapped"), "given_the_batch.advantages"),
    _bug("gae_no_gamma_in_td", "gae_no_gamma_in_td", _with_buffer("PPO", "no_gamma_in_td"),
         "given_the_batch.advantages"),
    _bug("gae_lambda_power", "gae_lambda_power", _with_buffer("PPO", "lambda_power"),
         "given_the_batch.advantages"),
    _bug("value_target_advantage", "critic_regressed_to_advantage",
         _with_buffer("PPO", "value_target_advantage"), "given_the_batch.returns"),
    _bug("a2c_gae_mask_current_done", "done_flags_shifted",
         _with_buffer("A2C", "mask_current_done"), "given_the_batch.advantages",
         detail="A2C, lambda = 1: n-step returns"),
    _bug("truncation_as_termination", "truncation_as_termination",
         lambda env: _sb3().PPO("MlpPolicy", _truncation_as_termination(env), **_sizes("PPO")),
         "given_the_batch.advantages",
         detail="an env wrapper reports time-limit truncation as termination"),
    _bug("bootstrap_from_reset_obs", "bootstrap_from_reset_obs",
         lambda env: _sb3().PPO("MlpPolicy", _bootstrap_from_reset_obs(_vec(env)),
                                **_sizes("PPO")),
         "given_the_batch.advantages",
         detail="a VecEnv wrapper passes the next episode's first observation as the final one"),
    _bug("entropy_sign", "entropy_wrong_sign",
         lambda env: _sb3().PPO(_negated_entropy_policy(), env, ent_coef=0.01,
                                **_sizes("PPO")),
         "given_the_batch.policy_gradient", detail="the policy reports -H; ent_coef = 0.01"),
    _bug("ppo_min_max_swapped", "ppo_min_max_swapped",
         _own_train("min_max_swapped", learning_rate=3e-3), "given_the_batch.policy_gradient",
         detail="learning rate 3e-3, so that the ratio leaves the clip range: with the default "
                "3e-4 it stays inside and the defect is equivalent"),
    _bug("ppo_ratio_inverted", "ppo_ratio_inverted", _own_train("ratio_inverted"),
         "given_the_batch.policy_gradient"),
    _bug("ppo_clip_on_advantage", "ppo_clip_on_advantage", _own_train("clip_on_advantage"),
         "given_the_batch.policy_gradient"),
    _bug("ppo_old_logprob_recomputed", "old_logprob_recomputed",
         _own_train("old_logprob_recomputed"), "given_the_batch.policy_gradient"),
    _bug("ppo_normalize_minibatch_of_one", "normalize_single_sample_nan",
         _own_train("nan_norm", n_steps=129), "given_the_batch.policy_gradient",
         detail="129 = 2 x 64 + 1 steps"),
    _bug("trpo_direction_gradient", "cg_skipped", _trpo_hvp("identity"),
         "given_the_batch.trpo_step", detail="the Fisher-vector product returns v"),
    _bug("trpo_fisher_doubled", "trpo_no_factor_two", _trpo_hvp("fisher_doubled"),
         "given_the_batch.trpo_step",
         detail="the Fisher-vector product is doubled, so the full step shrinks by sqrt(2)"),
    _bug("vecnormalize_final_obs_raw", "final_obs_not_normalized",
         _vec_normalized("final_obs_raw"), "given_the_batch.advantages",
         "given_the_batch.advantages@lqr",
         detail="PPO on VecNormalize(norm_obs, norm_reward), 4 envs: the wrapper un-normalizes "
                "the final observation it hands over"),
    _bug("vecnormalize_return_not_reset", "return_normalizer_not_reset",
         _vec_normalized("return_not_reset"), "given_the_batch.advantages",
         "given_the_batch.advantages@lqr",
         detail="PPO on VecNormalize(norm_obs, norm_reward), 4 envs"),
]}


def _builtin(name: str, **kwargs) -> Callable:
    def factory(env):
        from pgtheory.oracles.sb3 import builtin_factory

        return builtin_factory(name, **kwargs)(env)
    return factory


CONTROLS: dict[str, Callable] = {
    "ppo_default": _builtin("PPO"),
    "ppo_linear": _builtin("PPO", **LINEAR),
    "a2c_default": _builtin("A2C"),
    "a2c_linear": _builtin("A2C", **LINEAR),
    "trpo_default": _builtin("TRPO"),
    "trpo_linear": _builtin("TRPO", **LINEAR),
    "ppo_own_train": _own_train(None, ent_coef=0.01, learning_rate=3e-3),
    "ppo_four_envs": _four_envs,
    "ppo_vecnormalize": _vec_normalized(None),
}

# module attributes, so that ``sb3:pgtheory.lab.sb3_bugs:NAME`` resolves every entry
globals().update({k: v.factory for k, v in BUGS.items()})
globals().update(CONTROLS)


def main(argv: list[str] | None = None) -> int:
    """Audit every seeded bug and control; print a table; exit 1 on a miss or false alarm."""
    import argparse
    import time

    from pgtheory.oracles.audit import run_audit

    parser = argparse.ArgumentParser(prog="python -m pgtheory.lab.sb3_bugs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick audits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="names of bugs or controls to run")
    args = parser.parse_args(argv)
    names = args.only or [*BUGS, *CONTROLS]
    unknown = sorted(set(names) - set(BUGS) - set(CONTROLS))
    if unknown:
        parser.error(f"unknown names {unknown}; expected among {[*BUGS, *CONTROLS]}")
    bad = 0
    print(f"{'entry':<32} {'expected':<8} {'verdict':<8} {'time':>6}  failed checks")
    for name in names:
        t0 = time.perf_counter()
        report = run_audit(f"sb3:pgtheory.lab.sb3_bugs:{name}", seed=args.seed, quick=args.quick)
        failed = [r.name for r in report.results if r.verdict == "fail"]
        want = "flagged" if name in BUGS else "pass"
        if name in BUGS:
            ok = report.exit_code == 1 and any(c in failed for c in BUGS[name].caught_by)
        else:
            ok = report.exit_code == 0
        bad += not ok
        got = {0: "pass", 1: "flagged", 2: "error"}[report.exit_code]
        print(f"{name:<32} {want:<8} {got:<8} {time.perf_counter() - t0:5.1f}s  "
              f"{', '.join(failed) or '-'}{'' if ok else '   <-- unexpected'}", flush=True)
    print(f"\n{len(names) - bad}/{len(names)} as expected")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
