"""given_the_batch.gaussian_density@lqr: the joint Gaussian log-density and entropy on two
action dimensions (pgtheory.oracles.policy_head.check_gaussian_density)."""

from __future__ import annotations

import math
import types
from typing import ClassVar

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pgtheory.oracles.policy_head import check_gaussian_density  # noqa: E402

M = 2
B = 256


class _Head:
    """A linear diagonal-Gaussian head whose log-density and entropy can be miscomputed."""

    def __init__(self, *, reduce="sum", constant=True, per_dim=False, entropy_reduce="sum",
                 law="gaussian"):
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, M, generator=g, dtype=torch.float32))
        self.log_std = torch.nn.Parameter(torch.tensor([-0.4, 0.3]))
        self.reduce, self.constant, self.per_dim = reduce, constant, per_dim
        self.entropy_reduce, self.law = entropy_reduce, law

    def named_parameters(self):
        return {"w": self.w, "log_std": self.log_std}

    def distribution(self, obs):
        mean = obs @ self.w
        if self.law == "beta":
            return torch.distributions.Beta(torch.sigmoid(mean) + 0.5,
                                            torch.ones_like(mean))
        head = self

        class _Gauss(torch.distributions.Distribution):
            arg_constraints: ClassVar[dict] = {}

            def __init__(self):
                super().__init__(mean.shape[:-1], mean.shape[-1:], validate_args=False)

            @property
            def mean(self):
                return mean

            @property
            def stddev(self):
                return head.log_std.exp().expand_as(mean)

            def log_prob(self, a):
                z = (a - mean) / self.stddev
                per = -0.5 * z * z - head.log_std
                if head.constant:
                    per = per - 0.5 * math.log(2 * math.pi)
                if head.per_dim:
                    return per
                return per.mean(-1) if head.reduce == "mean" else per.sum(-1)

            def entropy(self):
                per = (head.log_std + 0.5 * (1 + math.log(2 * math.pi))).expand_as(mean)
                return per.mean(-1) if head.entropy_reduce == "mean" else per.sum(-1)

        _Gauss.__name__ = "DiagGaussian"
        return _Gauss()


def _rollout(head):
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((B, 1, 3)).astype(np.float32)
    with torch.no_grad():
        d = head.distribution(torch.as_tensor(obs.reshape(B, 3)))
        act = (d.mean + d.stddev * torch.randn(B, M)).numpy() if head.law == "gaussian" \
            else d.sample().numpy()
    return types.SimpleNamespace(observations=obs, actions=act.reshape(B, 1, M))


def _check(**kw):
    head = _Head(**kw)
    return check_gaussian_density(head, [_rollout(head)], head.named_parameters())


def test_correct_heads_pass() -> None:
    r = _check()
    assert r.verdict == "pass", r
    assert "entropy gradient compared" in r.explanation
    # the normalizer omitted changes no ratio or gradient: reported, not failed
    r = _check(constant=False)
    assert r.verdict == "pass", r
    assert "normalizer omitted" in r.explanation


def test_per_dimension_means_fail() -> None:
    r = _check(reduce="mean")
    assert r.verdict == "fail", r
    assert "[catalogue: gaussian_log_prob_averaged]" in r.explanation
    r = _check(entropy_reduce="mean")
    assert r.verdict == "fail", r
    assert "[catalogue: gaussian_entropy_not_summed]" in r.explanation


def test_protocol_violation_and_other_laws_are_not_defect_verdicts() -> None:
    r = _check(per_dim=True)  # log_prob of shape (B, m): the protocol asks for (B,)
    assert r.verdict == "error", r
    assert "(256, 2)" in r.explanation
    r = _check(law="beta")
    assert r.verdict == "skip", r


@pytest.mark.parametrize("target", ["ppo", "trpo", "a2c", "reinforce", "sb3:PPO",
                                    "sb3-contrib:TRPO", "sb3:A2C"])
def test_shipped_and_peer_heads_pass(target) -> None:
    from pgtheory.lab.campaign import resolve_target
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import gaussian_density_checks

    if target.startswith("sb3"):
        pytest.importorskip("stable_baselines3")
    r = gaussian_density_checks(resolve_target(target), audit_config(2))[
        "given_the_batch.gaussian_density@lqr"]
    assert r.verdict == "pass", r


@pytest.mark.parametrize("name", ["gaussian_entropy_not_summed", "log_prob_averaged_over_dims"])
def test_seeded_defects_fail(name) -> None:
    from pgtheory.lab.mutants import MUTANTS, applied, make_target
    from pgtheory.oracles.audit import audit_config
    from pgtheory.oracles.suite import gaussian_density_checks

    m = MUTANTS[name]
    with applied(m):
        r = gaussian_density_checks(make_target(m), audit_config(0))[
            "given_the_batch.gaussian_density@lqr"]
    assert r.verdict == "fail", r


def _sampling(head, spread: float = 1.0):
    from pgtheory.oracles.policy_head import check_action_sampling

    roll = _rollout(head)
    if spread != 1.0:  # the stored actions drawn with `spread` times the head's stddev
        with torch.no_grad():
            d = head.distribution(torch.as_tensor(roll.observations.reshape(B, 3)))
            z = (torch.as_tensor(roll.actions.reshape(B, M)) - d.mean) / d.stddev
            roll.actions = (d.mean + spread * d.stddev * z).numpy().reshape(B, 1, M)
    return check_action_sampling(head, [roll], head.named_parameters(), alpha=0.01)


def test_action_sampling_skips_laws_known_not_to_be_gaussian(monkeypatch) -> None:
    """A Beta head exposes `mean` and `stddev`, but its standardized draws are not N(0, 1):
    correct Beta sampling must not fail the row (it did before the law was checked)."""
    from pgtheory.oracles import policy_head

    assert _sampling(_Head()).verdict == "pass"
    assert _sampling(_Head(), spread=2.0).verdict == "fail"  # seeded: the wrong spread
    r = _sampling(_Head(law="beta"))
    assert r.verdict == "skip" and "Beta" in r.explanation, r
    # without the gate, the same correct Beta head is flagged: the false alarm it prevents
    monkeypatch.setattr(policy_head, "_known_non_gaussian", lambda dist: "")
    assert _sampling(_Head(law="beta")).verdict == "fail"
