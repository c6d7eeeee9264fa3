"""TRPO's trust region on more than one action dimension: the mean KL must be *summed* over
the dimensions of a diagonal Gaussian, not averaged.

The suite's ``given_the_batch.trpo_step@lqr`` runs on the one-action double integrator, where
the two reductions agree. On :func:`pgtheory.oracles.envs.lqr_two_action_env_fn` they do not:
a KL averaged over ``m`` dimensions lets the accepted step reach ``m`` times the bound: its
quadratic model uses ``F / m``, so the step is ``(F + m lambda I)^-1 g`` (the damping
multiplied by ``m``) scaled to a KL of ``m delta``, and ``batch.check_trpo_steps`` reports a
step off the damped natural gradient or longer than the trust region's full step.
sb3-contrib's TRPO computes ``kl_divergence(distribution, old_distribution).mean()`` over the
(batch, action) elements of Stable-Baselines3's per-dimension ``Normal``, so its ``target_kl``
bounds the per-dimension KL (checked below against the installed version).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from pgtheory.oracles import batch
from pgtheory.oracles.envs import lqr_env_fn, lqr_two_action_env_fn

SIZES = dict(num_envs=4, num_steps=16)


def _steps(target, env_fn, *, patch=contextlib.nullcontext):
    torch.set_num_threads(1)
    agent = target.make_agent(env_fn(), seed=0, **SIZES)
    with patch():
        its = [agent.iterate() for _ in range(3)]
    return batch.check_trpo_steps(agent, its, hp=target.hyperparameters)


@contextlib.contextmanager
def _kl_averaged_over_action_dimensions():
    """Seeded defect: the TRPO agent's KL divided by the number of action dimensions."""
    import pgtheory.implementations.trpo as trpo_module

    real = torch.distributions.kl_divergence

    def averaged(p, q):
        return real(p, q) / p.mean.shape[-1]

    saved = trpo_module.torch.distributions.kl_divergence
    trpo_module.torch.distributions.kl_divergence = averaged
    try:
        yield
    finally:
        trpo_module.torch.distributions.kl_divergence = saved


def test_our_trpo_passes_on_one_and_two_action_dimensions():
    from pgtheory.implementations.targets import target

    for env_fn in (lqr_env_fn, lqr_two_action_env_fn):
        res = _steps(target("trpo", hidden_sizes=()), env_fn)
        assert res.verdict == "pass", (env_fn.__name__, res)
    res = _steps(target("trpo"), lqr_two_action_env_fn)  # the default 64x64 tanh MLP
    assert res.verdict == "pass", res


def test_a_kl_averaged_over_action_dimensions_fails_on_two_and_hides_on_one():
    from pgtheory.implementations.targets import target

    tg = target("trpo", hidden_sizes=())
    one = _steps(tg, lqr_env_fn, patch=_kl_averaged_over_action_dimensions)
    assert one.verdict == "pass", one  # m = 1: the two reductions agree
    two = _steps(tg, lqr_two_action_env_fn, patch=_kl_averaged_over_action_dimensions)
    assert two.verdict == "fail", two
    # (F / 2 + lambda I)^-1 g is the direction of a doubled damping: this one is read off the
    # direction, sb3-contrib's (below, other sizes) off the length
    assert "not along the batch's damped natural gradient" in two.explanation or \
        "longer than the trust-region full step" in two.explanation, two


def test_sb3_contrib_trpo_bounds_the_per_dimension_kl():
    pytest.importorskip("sb3_contrib")
    from pgtheory.oracles.sb3 import SB3Target
    from sb3_contrib import TRPO

    def factory(env):
        return TRPO("MlpPolicy", env, n_steps=128, batch_size=32, verbose=0,
                    policy_kwargs=dict(net_arch=[]))

    tg = SB3Target(factory, name="sb3-contrib TRPO net_arch=[]")
    assert _steps(tg, lqr_env_fn).verdict == "pass"
    res = _steps(tg, lqr_two_action_env_fn)
    assert res.verdict == "fail", res
    assert "longer than the trust-region full step" in res.explanation, res
