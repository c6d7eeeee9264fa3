"""A fail must mean a defect: checks whose premise does not hold are inconclusive.

Regression tests for two false alarms on correct code (both failed before the fix):

* Stable-Baselines3 PPO with ReLU networks failed ``given_the_batch.log_prob_gradient@lqr``:
  central finite differences across ReLU kinks disagree with autograd
  (:func:`pgtheory.oracles.policy_head.check_log_prob_gradient` now detects kinks where it probes);
* sb3-contrib TRPO with a linear policy and critic failed ``update_level.critic`` with a
  critic still learning (:func:`pgtheory.oracles.update.check_critic` now fails only a critic that
  has settled off its target).

Plus synthetic cases of each rule, and the seeded defects that must still fail.
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from pgtheory.oracles.envs import probe_mdp
from pgtheory.oracles.policy_head import check_log_prob_gradient
from pgtheory.oracles.update import check_convergence, check_critic, check_improvement

import pgtheory as pg

NAN_WARNING = "ignore:std\\(\\):UserWarning"


# --------------------------------------------------------------- SB3 factories (sb3:MODULE:F)
def relu_ppo(env):
    """Correct Stable-Baselines3 PPO with ReLU networks (the first false alarm)."""
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", env, n_steps=128, policy_kwargs=dict(activation_fn=torch.nn.ReLU))


def tanh_ppo(env):
    """The same with the library's default tanh networks."""
    from stable_baselines3 import PPO

    return PPO("MlpPolicy", env, n_steps=128)


def linear_trpo(env):
    """Correct sb3-contrib TRPO, linear policy and critic (the second false alarm)."""
    from sb3_contrib import TRPO

    return TRPO("MlpPolicy", env, n_steps=256, gamma=0.9, gae_lambda=0.8, target_kl=0.01,
                policy_kwargs=dict(net_arch=[]))


def _sb3(factory: str):
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("sb3_contrib")
    from pgtheory.oracles.sb3 import load_sb3_target

    return load_sb3_target(f"sb3:test_inconclusive:{factory}")


# ------------------------------------------------------------------ false alarm 1: ReLU kinks
@pytest.mark.filterwarnings(NAN_WARNING)
def test_sb3_relu_ppo_log_prob_gradient_is_not_a_fail() -> None:
    """Seed 5 failed before: autograd 0.823 vs central difference 1.93 on the first ReLU
    layer's weight; now that probe is seen to cross kinks and is repeated at a smaller step."""
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import policy_head_checks

    res = policy_head_checks(_sb3("relu_ppo"), audit_config(5))
    r = res["given_the_batch.log_prob_gradient@lqr"]
    assert r.verdict == "pass", str(r)
    assert "at a smaller step" in r.explanation, str(r)  # a kink was seen and stepped around


@pytest.mark.filterwarnings(NAN_WARNING)
def test_sb3_tanh_ppo_log_prob_gradient_still_passes() -> None:
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import policy_head_checks

    r = policy_head_checks(_sb3("tanh_ppo"), audit_config(5))[
        "given_the_batch.log_prob_gradient@lqr"]
    assert r.verdict == "pass", str(r)
    assert "7 of the 7" in r.explanation and "smaller step" not in r.explanation, str(r)


def test_detached_log_std_still_fails() -> None:
    """The seeded defect log_std_detached: autograd 0, finite differences clearly non-zero."""
    from pgtheory.lab.mutants import MUTANTS, applied, make_target
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import policy_head_checks

    m = MUTANTS["log_std_detached"]
    with applied(m):
        r = policy_head_checks(make_target(m), audit_config(0))[
            "given_the_batch.log_prob_gradient@lqr"]
    assert r.verdict == "fail", str(r)
    assert "log_std" in r.explanation and "detached" in r.explanation


class _Head:
    """A minimal Gaussian policy head: mean ``act(w x + b)``, log-std ``log_std``."""

    def __init__(self, act, *, detach_log_std: bool = False, b: float = 0.0) -> None:
        self.act, self.detach = act, detach_log_std
        self.params = {"w": torch.nn.Parameter(torch.tensor([1.0])),
                       "b": torch.nn.Parameter(torch.tensor([b])),
                       "log_std": torch.nn.Parameter(torch.tensor([0.3]))}

    def named_parameters(self) -> dict:
        return self.params

    def distribution(self, obs):
        p = self.params
        mean = self.act(p["w"] * obs + p["b"])
        log_std = p["log_std"].detach() if self.detach else p["log_std"]
        return torch.distributions.Independent(torch.distributions.Normal(
            mean, log_std.exp().expand_as(mean)), 1)


def _kinked_samples(n: int = 512):
    """Observations half exactly 0 (pre-activation ``w x + b`` = 0 at b = 0: the kink), half
    in [1, 2] (far from it); actions from N(1, 1)."""
    rng = np.random.default_rng(0)
    x = np.where(np.arange(n) % 2 == 0, 0.0, rng.uniform(1.0, 2.0, n)).astype(np.float32)
    a = rng.normal(1.0, 1.0, n).astype(np.float32)
    return [types.SimpleNamespace(observations=x.reshape(n, 1, 1),
                                  actions=a.reshape(n, 1, 1))]


def _check(head, **kw):
    return check_log_prob_gradient(head, _kinked_samples(), snapshot_of(head), seed=0, **kw)


def snapshot_of(head) -> dict:
    return {k: v.detach().clone() for k, v in head.named_parameters().items()}


def test_finite_differences_at_a_relu_kink_are_not_a_fail() -> None:
    """The bias b sits exactly on the kink of half the samples at every step size: it is
    excluded, not failed, and since an excluded tensor is not verified either the check is
    inconclusive (by default every tensor the density depends on must be verified to pass)."""
    r = _check(_Head(torch.relu))
    assert r.verdict == "inconclusive", str(r)
    assert "only 2 of the 3" in r.explanation and "not differentiable" in r.explanation
    assert "b (" in r.explanation


def test_a_partial_verification_passes_only_when_asked_for() -> None:
    r = _check(_Head(torch.relu), min_verified=0.5)
    assert r.verdict == "pass", str(r)
    assert "2 of the 3" in r.explanation and "excluded" in r.explanation


def test_old_rule_failed_at_the_kink() -> None:
    """Without refinement and with the kink tolerance at zero the old single comparison is
    recovered, and it fails: the synthetic case does reproduce the false alarm."""
    r = _check(_Head(torch.relu), refinements=0, kink_factor=0.0)
    assert r.verdict == "fail" and "parameter b:" in r.explanation, str(r)


def test_smooth_head_passes_and_detached_parameter_fails() -> None:
    assert _check(_Head(torch.tanh)).verdict == "pass"
    detached = _check(_Head(torch.tanh, detach_log_std=True))
    assert detached.verdict == "fail", str(detached)
    assert "log_std" in detached.explanation and "detached" in detached.explanation
    # also next to a kink: the detached log-std is smooth where probed
    assert _check(_Head(torch.relu, detach_log_std=True)).verdict == "fail"


# -------------------------------------------------------- false alarm 2: a critic still moving
@pytest.mark.filterwarnings(NAN_WARNING)
def test_sb3_linear_trpo_critic_still_learning_is_inconclusive() -> None:
    """Failed before: V_phi 0.68 against V_pi 1.00 after 9,728 steps; the gap shrinks."""
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import _training_checks

    t = _sb3("linear_trpo")
    res = _training_checks(t, audit_config(0), t.hyperparameters)
    r = res["update_level.critic"]
    assert res["update_level.convergence"].verdict == "pass"
    assert r.verdict == "inconclusive", str(r)
    assert "still moving toward V_pi" in r.explanation


MDP = pg.random_mdp(np.random.default_rng(3), 6, 2, gamma=0.9, n_terminal=1)
PI = np.full((6, 2), 0.5)
V = pg.state_values(MDP, PI)


def _windows(start, end, *, k: int = 20, noise: float = 0.01, seed: int = 0):
    """A critic's iterates over 2k consecutive updates moving linearly from start to end,
    plus zero-mean noise; returned as (earlier window, final window)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, 2 * k)[:, None]
    it = start + t * (end - start) + rng.normal(0.0, noise, (2 * k, len(V)))
    return it[:k], it[k:]


def _critic(earlier, final, between: int = 20):
    pis = np.repeat(PI[None], len(final), axis=0)
    return check_critic(MDP, pis, final, earlier=(pis[:len(earlier)], earlier),
                        updates_between=between)


def test_settled_wrong_critic_fails() -> None:
    earlier, final = _windows(V / 2, V / 2)
    r = _critic(earlier, final)
    assert r.verdict == "fail" and "has settled there" in r.explanation, str(r)
    assert "advantage" in r.explanation


def test_critic_moving_away_fails() -> None:
    earlier, final = _windows(V / 2, -V)
    r = _critic(earlier, final)
    assert r.verdict == "fail" and "moving away" in r.explanation, str(r)


def test_moving_critic_is_inconclusive() -> None:
    """Directed steps toward V_pi, still 30% off at the end (the old rule failed it)."""
    earlier, final = _windows(np.zeros_like(V), 0.7 * V, noise=0.002)
    r = _critic(earlier, final)
    assert r.verdict == "inconclusive", str(r)
    assert "still moving toward V_pi" in r.explanation
    pis = np.repeat(PI[None], len(final), axis=0)
    assert check_critic(MDP, pis, final).verdict == "fail"  # no history: as before


def test_settled_right_critic_passes() -> None:
    earlier, final = _windows(V, V)
    assert _critic(earlier, final).verdict == "pass"


def test_too_few_updates_to_judge_is_inconclusive() -> None:
    earlier, final = _windows(V / 2, V / 2, k=3)
    r = _critic(earlier, final, between=3)
    assert r.verdict == "inconclusive" and "too few updates" in r.explanation, str(r)
    pis = np.repeat(PI[None], 3, axis=0)
    empty = check_critic(MDP, pis, final, earlier=([], []), updates_between=0)
    assert empty.verdict == "inconclusive", str(empty)


@pytest.mark.parametrize("name", ["critic_regressed_to_advantage", "value_targets_normalized",
                                  "value_loss_sign"])
def test_seeded_critic_defects_still_fail(name: str) -> None:
    """The critic-target mutants settle (or diverge) off V_pi within the audit's budget."""
    from pgtheory.lab.mutants import MUTANTS, applied, make_target
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import _training_checks

    m = MUTANTS[name]
    with applied(m):
        t = make_target(m)
        r = _training_checks(t, audit_config(0), t.hyperparameters)["update_level.critic"]
    assert r.verdict == "fail", str(r)


# ------------------------------------------------------------ improvement and convergence
MDP5 = probe_mdp(5, gamma=0.99)
J_STAR_PI = pg.policy_iteration(MDP5).policy


def test_improvement_flat_is_inconclusive_fall_and_frozen_fail() -> None:
    u = np.full((3, 2), 0.5)
    tiny = u + np.array([[1e-4, -1e-4]] * 3)  # the policy moved, J did not measurably
    flat = check_improvement(MDP5, [u, tiny, u])
    assert flat.verdict == "inconclusive", str(flat)
    frozen = check_improvement(MDP5, [u] * 5)
    assert frozen.verdict == "fail" and "did not change at all" in frozen.explanation
    worst = 1.0 - J_STAR_PI  # the other action everywhere
    fell = check_improvement(MDP5, [u, 0.5 * (u + worst), worst])
    assert fell.verdict == "fail" and "did not improve" in fell.explanation, str(fell)
    assert check_improvement(MDP5, [u, J_STAR_PI]).verdict == "pass"
    assert check_improvement(MDP5, [J_STAR_PI] * 3).verdict == "inconclusive"  # optimal already


def test_convergence_gap_fails_only_where_required() -> None:
    u = np.full((3, 2), 0.5)
    assert check_convergence(MDP5, u).verdict == "fail"
    r = check_convergence(MDP5, u, required=False)
    assert r.verdict == "inconclusive" and "not a defect by itself" in r.explanation


def test_training_checks_without_convergence_are_inconclusive() -> None:
    """A budget too small to converge: convergence and critic are inconclusive (they were
    skips, one of them labelled 'inconclusive' in its text)."""
    from pgtheory.implementations.targets import target
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import _training_checks

    t = target("a2c")
    cfg = dataclasses.replace(audit_config(0), train_steps=256)
    res = _training_checks(t, cfg, t.hyperparameters)
    assert res["update_level.convergence"].verdict == "inconclusive", str(
        res["update_level.convergence"])
    critic = res["update_level.critic"]
    assert critic.verdict == "inconclusive" and "did not converge" in critic.explanation
    assert res["update_level.improvement"].verdict != "fail"
