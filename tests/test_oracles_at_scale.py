"""Tolerances of the given-the-batch checks at MuJoCo scale (found by ``pgtheory scale``).

On Hopper-v5 the critic's values reach several hundred and TRPO's Fisher becomes
ill-conditioned; a correct float32 implementation then differs from the float64 reference by
more than the fixed tolerances that suit the oracle environments. Each relaxation is tested
both ways: the correct implementation passes, and a defect just above the allowance fails.
"""

from __future__ import annotations

import numpy as np
import torch
from pgtheory.lab.mutants import MUTANTS, applied
from pgtheory.oracles import batch


def _ppo_with_large_values(scale: float):
    from pgtheory.implementations.common import make_env_fn
    from pgtheory.implementations.ppo import PPOAgent, PPOConfig

    cfg = PPOConfig().replace(hidden_sizes=(16,), num_steps=512)
    agent = PPOAgent(make_env_fn("Hopper-v5", cfg), cfg, seed=0, record=True)
    with torch.no_grad():  # values of several hundred, as late in a MuJoCo run
        agent.critic.net[-1].weight.mul_(scale)
        agent.critic.net[-1].bias.fill_(scale)
    return agent


def test_float32_gae_with_large_values_passes_and_a_small_defect_fails(monkeypatch) -> None:
    agent = _ppo_with_large_values(3000.0)
    it = agent.iterate()
    assert np.abs(it.rollout.values).max() > 1000
    res = batch.check_batch_advantages(agent, [it], gamma=0.99, gae_lambda=0.95)
    assert res.verdict == "pass", res
    agent2 = _ppo_with_large_values(3000.0)
    from pgtheory.implementations import core

    real = core.gae

    def off_by_a_bit(*args, **kwargs):  # one advantage off by 1 reward unit (values ~3,000)
        out = real(*args, **kwargs).clone()
        out[7, 0] += 1.0
        return out

    monkeypatch.setattr(core, "gae", off_by_a_bit)
    it2 = agent2.iterate()
    bad = batch.check_batch_advantages(agent2, [it2], gamma=0.99, gae_lambda=0.95)
    assert bad.verdict == "fail" and "step 7, env 0" in bad.explanation


def test_trpo_length_accepted_from_its_own_quadratic_form_but_defects_still_fail(
        monkeypatch) -> None:
    """A float64 CG replay whose iterate differs from the implementation's within the direction
    tolerance but along a stiff direction (as float32 CG does on an ill-conditioned Fisher),
    which moves ``beta``, must not fail a correct step; the step without the factor 2 must
    still fail."""
    from pgtheory.implementations.targets import target
    from pgtheory.oracles import batch_trpo
    from pgtheory.oracles.suite import SuiteConfig, _env_fn, oracle_mdp

    real = batch_trpo._reference_cg

    def replay_off_in_a_stiff_direction(mv, b, n):
        # the float32 iterate differs from the float64 one mostly along high-curvature
        # directions: add 3% of |x| along (F + lambda I) x, orthogonalized against x
        x = real(mv, b, n)
        u = mv(x)
        u = u - (u @ x) / (x @ x) * x
        return x + 0.03 * np.linalg.norm(x) * u / np.linalg.norm(u)

    monkeypatch.setattr(batch_trpo, "_reference_cg", replay_off_in_a_stiff_direction)
    t = target("trpo")
    cfg = SuiteConfig()
    env_fn = _env_fn(oracle_mdp(t.hyperparameters["gamma"], 0), cfg.time_limit)
    agent = t.make_agent(env_fn, seed=0, num_envs=4, num_steps=16)
    its = [agent.iterate() for _ in range(3)]
    assert batch.check_trpo_steps(agent, its, hp=t.hyperparameters).verdict == "pass"
    m = MUTANTS["trpo_no_factor_two"]
    with applied(m):
        from pgtheory.lab.mutants import make_target

        mt = make_target(m)
        magent = mt.make_agent(env_fn, seed=0, num_envs=4, num_steps=16)
        mits = [magent.iterate() for _ in range(3)]
    res = batch.check_trpo_steps(magent, mits, hp=mt.hyperparameters)
    assert res.verdict == "fail" and "factor 2" in res.explanation, res
