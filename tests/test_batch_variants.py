"""Given-the-batch checks: every variant a correct library uses passes, defects still fail.

* The Stable-Baselines3 value-clipping false alarm (``clip_range_vf``: SB3 regresses the
  clipped prediction, ``mse(returns, V_old + clamp(V - V_old, -eps, eps))``, without the
  PPO2/CleanRL max) as a regression test, shown to fail under the max-form-only reference.
* Synthetic agents (a small torch actor-critic and a recorded Adam loop on a random batch,
  large enough steps that the ratio and the value clip act) for each accepted value-loss and
  advantage-normalization variant, gradient-norm clipping and sum reductions, and for each
  seeded defect that is an estimator of nothing.
* Independence of the TRPO reference: the batch Fisher and KL come from the oracle's closed
  forms, so a wrong KL registered by the implementation does not cancel out
  (``gaussian_kl_no_square`` is flagged by ``given_the_batch.trpo_step``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from pgtheory.oracles import batch
from pgtheory.oracles.protocol import Iteration, Rollout, Update, snapshot
from torch import nn

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

CLIP_VF = 0.2


# ------------------------------------------------------------------ synthetic agents
class TinyAgent:
    """Categorical actor (one hidden layer) and linear critic on 4-dimensional observations."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.actor = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        self.critic = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))

    def named_parameters(self) -> dict:
        return {**{f"actor.{k}": v for k, v in self.actor.named_parameters()},
                **{f"critic.{k}": v for k, v in self.critic.named_parameters()}}

    def distribution(self, obs):
        return torch.distributions.Categorical(logits=self.actor(torch.as_tensor(obs)))

    def value(self, obs):
        return self.critic(torch.as_tensor(obs)).squeeze(-1)


def _rollout(agent: TinyAgent, seed: int, T: int = 32, N: int = 2) -> Rollout:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(T, N, 4)).astype(np.float32)
    with torch.no_grad():
        dist = agent.distribution(torch.as_tensor(obs.reshape(-1, 4)))
        act = dist.sample()
        logp = dist.log_prob(act).numpy().reshape(T, N)
        values = agent.value(torch.as_tensor(obs.reshape(-1, 4))).numpy().reshape(T, N)
    adv = (0.7 + 2.0 * rng.normal(size=(T, N))).astype(np.float32)  # non-zero mean
    z = np.zeros((T, N), bool)
    return Rollout(obs, act.numpy().reshape(T, N), np.zeros((T, N), np.float32), z, z,
                   obs, logp, adv, values, (values + adv).astype(np.float32))


def _norm(a, how: str):
    """The normalizations as the libraries write them (not the oracle's code)."""
    if how == "none":
        return a
    c = a - a.mean()
    if how == "torch":  # SB3 ppo.py, CleanRL: torch's unbiased std + 1e-8
        return c / (a.std() + 1e-8)
    if how == "numpy":  # baselines ppo2: numpy's biased std + 1e-8
        return c / (a.std(unbiased=False) + 1e-8)
    if how == "inside":
        return c / torch.sqrt(a.var() + 1e-8)
    if how == "rllib":  # max(std, 1e-4), numpy std
        return c / torch.clamp(a.std(unbiased=False), min=1e-4)
    raise ValueError(how)


def ppo_surrogate(logp, old, adv, eps, defect=""):
    ratio = torch.exp(old - logp) if defect == "inverted" else torch.exp(logp - old)
    if defect == "clip_adv":
        return -torch.min(ratio * adv, ratio * torch.clamp(adv, 1 - eps, 1 + eps)).mean()
    pick = torch.max if defect == "max" else torch.min
    loss = -pick(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()
    return -loss if defect == "sign" else loss


def value_loss(v, v_old, ret, kind: str):
    if kind == "mse":
        return ((v - ret) ** 2).mean()
    v_clip = v_old + torch.clamp(v - v_old, -CLIP_VF, CLIP_VF)
    if kind == "sb3":
        return nn.functional.mse_loss(ret, v_clip)
    if kind == "max":  # CleanRL ppo.py with clip_vloss
        return 0.5 * torch.max((v - ret) ** 2, (v_clip - ret) ** 2).mean()
    if kind == "min":
        return 0.5 * torch.min((v - ret) ** 2, (v_clip - ret) ** 2).mean()
    if kind == "detached":  # RLlib #19291: no gradient through the clipped branch
        v_det = v_old + torch.clamp(v - v_old, -CLIP_VF, CLIP_VF).detach()
        return 0.5 * torch.max((v - ret) ** 2, (v_det - ret) ** 2).mean()
    if kind == "sign":
        return -nn.functional.mse_loss(ret, v_clip)
    raise ValueError(kind)


def run_updates(*, policy_defect: str = "", normalization: str = "torch",
                whole_batch: bool = False, value_kind: str = "mse", targets: str = "returns",
                ent_coef: float = 0.01, ent_sign: float = 1.0, reduction: str = "mean",
                max_grad_norm: float | None = None, epochs: int = 4, minibatches: int = 4,
                lr: float = 0.05, seed: int = 0) -> tuple[TinyAgent, list[Iteration]]:
    """One recorded PPO iteration of ``TinyAgent`` on a random batch with the given loss."""
    agent = TinyAgent(seed)
    r = _rollout(agent, seed)
    at_collection = snapshot(agent.named_parameters())
    obs = torch.as_tensor(r.flat("observations"))
    act = torch.as_tensor(r.flat("actions"))
    lp_old = torch.as_tensor(r.flat("log_probs"))
    adv_all = torch.as_tensor(r.flat("advantages"))
    v_old_all = torch.as_tensor(r.flat("values"))
    tgt_all = torch.as_tensor(r.flat(targets))
    if whole_batch:
        adv_all = _norm(adv_all, normalization)
    params = list(agent.named_parameters().values())
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)
    updates = []
    for _ in range(epochs):
        for idx in np.array_split(rng.permutation(obs.shape[0]), minibatches):
            before = snapshot(agent.named_parameters())
            dist = agent.distribution(obs[idx])
            a = adv_all[idx] if whole_batch else _norm(adv_all[idx], normalization)
            pl = ppo_surrogate(dist.log_prob(act[idx]), lp_old[idx], a, 0.2, policy_defect)
            loss = (pl - ent_sign * ent_coef * dist.entropy().mean()
                    + 0.5 * value_loss(agent.value(obs[idx]), v_old_all[idx], tgt_all[idx],
                                       value_kind))
            if reduction == "sum":  # every term summed over the minibatch, not averaged
                loss = loss * len(idx)
            opt.zero_grad()
            loss.backward()
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(params, max_grad_norm)
            grads = {k: p.grad.detach().clone() for k, p in agent.named_parameters().items()}
            opt.step()
            updates.append(Update(np.asarray(idx), before, grads,
                                  snapshot(agent.named_parameters())))
    it = Iteration(r, at_collection, updates, snapshot(agent.named_parameters()))
    return agent, [it]


HP = {"gamma": 0.9, "clip_range": 0.2, "ent_coef": 0.01}


def _value(agent, its, clip=CLIP_VF):
    hp = dict(HP, clip_range_vf=clip) if clip is not None else dict(HP)
    return batch.check_value_gradients(agent, its, hp=hp)


def _policy(agent, its, **hp):
    return batch.check_policy_gradients(agent, its, algorithm="ppo", hp={**HP, **hp})


# ------------------------------------------------------ (a) the SB3 value-clipping regression
def _sb3_ppo_clip_vf_iterations():
    pytest.importorskip("stable_baselines3")
    from pgtheory.oracles.sb3 import SB3Target, builtin_factory
    from pgtheory.oracles.suite import _env_fn, oracle_mdp

    target = SB3Target(builtin_factory("PPO", clip_range_vf=0.2), name="sb3:PPO clip_range_vf")
    assert target.hyperparameters["clip_range_vf"] == 0.2
    agent = target.make_agent(_env_fn(oracle_mdp(0.99, 0), 6), seed=0)  # default 64x64 MLP
    return target, agent, [agent.iterate() for _ in range(2)]


def test_sb3_ppo_value_clipping_passes_and_failed_under_the_max_form_only(monkeypatch):
    target, agent, its = _sb3_ppo_clip_vf_iterations()
    hp = target.hyperparameters
    res = batch.check_value_gradients(agent, its, hp=hp)
    assert res.verdict == "pass", res
    assert "matched: clipped prediction" in res.explanation
    assert "Stable-Baselines3" in res.explanation and "acted on 0 " not in res.explanation
    assert batch.check_policy_gradients(agent, its, algorithm="ppo", hp=hp).verdict == "pass"
    # the reference before this fix: the PPO2/CleanRL max form only -> the false alarm
    from pgtheory.oracles import batch_losses

    orig = batch_losses._value_loss
    monkeypatch.setattr(batch_losses, "_value_loss", lambda kind, *a, **kw: orig(
        "squared" if kind == "squared" else "max", *a, **kw))
    old = batch.check_value_gradients(agent, its, hp=hp)
    assert old.verdict == "fail", old


# ---------------------------------------------------------------- (b) value-loss variants
@pytest.mark.parametrize(("kind", "clip", "words"), [
    ("mse", None, "matched: unclipped squared error"),
    ("sb3", CLIP_VF, "matched: clipped prediction (V_clip - R)^2 (Stable-Baselines3"),
    ("max", CLIP_VF, "matched: max((V - R)^2, (V_clip - R)^2) (OpenAI baselines ppo2"),
])
def test_value_loss_variants_pass_and_name_the_match(kind, clip, words):
    agent, its = run_updates(value_kind=kind)
    res = _value(agent, its, clip)
    assert res.verdict == "pass", res
    assert words in res.explanation, res
    if clip is not None:  # the clip acted, so the forms were told apart
        assert "acted on 0 " not in res.explanation, res
        assert " or " not in res.explanation.split("matched: ")[1].split("; the value")[0]


@pytest.mark.parametrize(("kind", "targets", "words"), [
    ("sign", "returns", "value loss sign flipped"),
    ("sb3", "advantages", "the advantages used as value targets"),
    ("min", "returns", "min instead of max"),
    ("detached", "returns", "RLlib #19291"),
    ("mse", "returns", "the declared value clipping is not applied"),
])
def test_value_loss_defects_fail(kind, targets, words):
    agent, its = run_updates(value_kind=kind, targets=targets)
    res = _value(agent, its)
    assert res.verdict == "fail", res
    assert words in res.explanation, res


def test_value_clip_declared_without_old_values_is_inconclusive():
    agent, its = run_updates(value_kind="sb3")
    its[0].rollout.values = None
    res = _value(agent, its)
    assert res.verdict == "inconclusive" and "no values" in res.explanation, res


# ------------------------------------------------------- (b) policy-loss variants
@pytest.mark.parametrize(("normalization", "whole", "words"), [
    ("none", False, "no advantage normalization"),
    ("torch", False, "per-minibatch normalization (unbiased std + 1e-8: Stable-Baselines3"),
    ("numpy", False, "biased std + 1e-8: OpenAI baselines ppo2"),
    ("inside", False, "sqrt(unbiased var + 1e-8)"),
    ("torch", True, "whole-batch normalization (unbiased std + 1e-8: rl_games"),
    ("numpy", True, "whole-batch normalization"),
    ("rllib", True, "max(biased std, 1e-4): RLlib"),
])
def test_advantage_normalization_variants_pass(normalization, whole, words):
    agent, its = run_updates(normalization=normalization, whole_batch=whole)
    res = _policy(agent, its)
    assert res.verdict == "pass", res
    assert words in res.explanation, res
    n_clipped = int(res.explanation.split("the ratio left")[1].split(" for ")[1].split()[0])
    assert n_clipped > 0, res  # the clipped objective was exercised


def test_entropy_bonus_tells_the_std_conventions_apart():
    """With an entropy bonus the unbiased and biased std give different directions, so the
    report names the one that matched, not both."""
    agent, its = run_updates(normalization="numpy", ent_coef=0.5)
    res = _policy(agent, its, ent_coef=0.5)
    assert res.verdict == "pass", res
    assert "biased std + 1e-8: OpenAI baselines" in res.explanation
    assert "unbiased std + 1e-8" not in res.explanation, res


@pytest.mark.parametrize(("kw", "name"), [
    (dict(reduction="sum"), "sum reduction"),
    (dict(max_grad_norm=0.05), "global gradient-norm clipping"),
    (dict(reduction="sum", max_grad_norm=0.05, normalization="numpy", whole_batch=True),
     "all together"),
])
def test_positive_rescalings_pass(kw, name):
    agent, its = run_updates(**kw)
    assert _policy(agent, its).verdict == "pass", name
    assert _value(agent, its, None).verdict == "pass", name


def test_declared_normalization_must_hold():
    agent, its = run_updates(normalization="none")
    res = _policy(agent, its, normalize_advantage=True)
    assert res.verdict == "fail" and "declares normalize_advantage=True" in res.explanation
    agent, its = run_updates(normalization="torch", whole_batch=True)
    res = _policy(agent, its, normalize_advantage=False)
    assert res.verdict == "fail" and "whole-batch normalization" in res.explanation, res


@pytest.mark.parametrize(("kw", "words"), [
    (dict(policy_defect="max"), "min and max swapped"),
    (dict(policy_defect="inverted"), "ratio inverted"),
    (dict(policy_defect="clip_adv"), "clip applied to the advantage"),
    # at the first minibatch (ratio 1) the inverted ratio's gradient is the sign flip's:
    # both are named
    (dict(policy_defect="sign"), "policy loss sign flipped"),
    (dict(ent_sign=-1.0), "[catalogue: entropy_wrong_sign]"),
    (dict(policy_defect="max", whole_batch=True, normalization="numpy"), "min and max swapped"),
])
def test_policy_defects_still_fail(kw, words):
    agent, its = run_updates(**kw)
    res = _policy(agent, its)
    assert res.verdict == "fail", res
    assert words in res.explanation, res


# ------------------------------------------------------ (c) independence of the TRPO KL
def test_closed_form_kl_matches_torch_for_torch_distributions():
    g = torch.Generator().manual_seed(0)
    lp, lq = (torch.log_softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), -1)
              for _ in range(2))
    want = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=lp),
                                             torch.distributions.Categorical(logits=lq))
    assert torch.allclose(batch.closed_form_kl("categorical", (lp,), (lq,)), want)
    m1, m2 = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(2, 5, 3, generator=g, dtype=torch.float64) + 0.3
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1),
                                             torch.distributions.Normal(m2, s2)).sum(-1)
    assert torch.allclose(batch.closed_form_kl("gaussian", (m1, s1), (m2, s2)), want)


class _WrongKLNormal(torch.distributions.Normal):
    """A Normal whose registered KL lacks the square on the std ratio (pat-coady/trpo #25)."""


@torch.distributions.register_kl(_WrongKLNormal, _WrongKLNormal)
def _wrong_kl(p, q):
    return (torch.log(q.scale / p.scale) + 0.5 * (p.scale / q.scale
                                                  + ((p.loc - q.loc) / q.scale) ** 2) - 0.5)


class GaussianAgent:
    def __init__(self, cls) -> None:
        torch.manual_seed(0)
        self.cls = cls
        self.mean = nn.Linear(3, 2)
        self.log_std = nn.Parameter(torch.tensor([0.1, -0.2]))

    def named_parameters(self) -> dict:
        return {**dict(self.mean.named_parameters()), "log_std": self.log_std}

    def distribution(self, obs):
        return torch.distributions.Independent(
            self.cls(self.mean(torch.as_tensor(obs)), self.log_std.exp()), 1)


def test_batch_fisher_ignores_a_kl_registered_by_the_target():
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    fishers = []
    for cls in (torch.distributions.Normal, _WrongKLNormal):
        agent = GaussianAgent(cls)
        with torch.no_grad():
            d = agent.distribution(obs)
            act = d.sample()
            logp = d.log_prob(act)
        names = list(agent.named_parameters())
        params = snapshot(agent.named_parameters())
        F, _, kl_at, _ = batch.batch_fisher(agent, params, names, obs, act, logp,
                                            torch.ones(16))
        assert "closed-form gaussian" in kl_at.source
        fishers.append(F)
    # the registered KL differs (its log-std curvature is 1/4 of the true one) ...
    p = GaussianAgent(_WrongKLNormal).distribution(obs)
    q = torch.distributions.Independent(_WrongKLNormal(p.mean + 0.1, p.stddev * 1.2), 1)
    assert not torch.allclose(torch.distributions.kl_divergence(p, q),
                              batch.closed_form_kl("gaussian", (p.mean, p.stddev),
                                                   (q.mean, q.stddev)))
    # ... but the oracle's Fisher is the same for both classes
    np.testing.assert_allclose(fishers[1], fishers[0], rtol=1e-6, atol=1e-9)


def test_gaussian_kl_no_square_mutant_fails_the_trpo_step_check():
    from pgtheory.implementations.targets import target
    from pgtheory.lab.mutants import MUTANTS, applied, make_target
    from pgtheory.oracles.suite import lqr_env_fn

    correct = target("trpo")
    agent = correct.make_agent(lqr_env_fn(), seed=0, num_envs=4, num_steps=16)
    ok = batch.check_trpo_steps(agent, [agent.iterate() for _ in range(2)],
                                hp=correct.hyperparameters)
    assert ok.verdict == "pass" and "closed-form gaussian KL" in ok.explanation, ok
    mutant = MUTANTS["gaussian_kl_no_square"]
    with applied(mutant):
        t = make_target(mutant)
        magent = t.make_agent(lqr_env_fn(), seed=0, num_envs=4, num_steps=16)
        its = [magent.iterate() for _ in range(2)]
    res = batch.check_trpo_steps(magent, its, hp=t.hyperparameters)
    assert res.verdict == "fail", res
    assert "pat-coady/trpo #25" in res.explanation, res


# ------------------------------------------------------ the clipped-value-loss component
def test_component_check_accepts_both_value_clipping_forms_and_keeps_the_defects():
    from pgtheory.oracles.components import check_clipped_value_loss

    def sb3(values, values_old, returns, clip_range):
        pred = values_old + torch.clamp(values - values_old, -clip_range, clip_range)
        return nn.functional.mse_loss(returns, pred)

    def ppo2(values, values_old, returns, clip_range):
        v_clip = values_old + torch.clamp(values - values_old, -clip_range, clip_range)
        return 0.5 * torch.max((values - returns) ** 2, (v_clip - returns) ** 2).mean()

    def minimum(values, values_old, returns, clip_range):
        v_clip = values_old + torch.clamp(values - values_old, -clip_range, clip_range)
        return 0.5 * torch.min((values - returns) ** 2, (v_clip - returns) ** 2).mean()

    res = check_clipped_value_loss(sb3)
    assert res.verdict == "pass" and "Stable-Baselines3" in res.explanation, res
    res = check_clipped_value_loss(ppo2)
    assert res.verdict == "pass" and "baselines ppo2" in res.explanation, res
    res = check_clipped_value_loss(minimum)
    assert res.verdict == "fail" and "min instead of max" in res.explanation, res
