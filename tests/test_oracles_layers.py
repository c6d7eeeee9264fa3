"""Layers 2-4, the protocol, the suite and the pytest plugin, on the example target.

The example PPO/A2C/TRPO (oracles/example_target.py) pass every planned check; each seeded
defect (a subclass overriding one method, reproducing a catalogued defect) makes the named checks
fail with the defect class in the message. The in-expectation gradient check's power against
biased estimators is shown with reference estimators in test_oracles_gradient_expectation.py
(at this suite's 40-100 trials an off-policy sampling defect of the example agent was not
detected: that check needs a larger bias or more trials)."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from pgtheory.oracles import batch
from pgtheory.oracles.envs import TabularEnv, probe_mdp
from pgtheory.oracles.example_target import ExampleAgent, ExampleTarget, a2c, ppo, trpo
from pgtheory.oracles.protocol import Rollout, TargetProtocolError, load_target, validate_target
from pgtheory.oracles.suite import SuiteConfig, plan, run_suite

QUICK = SuiteConfig.quick(0)


def results(target, cfg=QUICK):
    return {r.name: r for r in run_suite(target, config=cfg)}


@pytest.mark.parametrize("make", [ppo, a2c, trpo], ids=["ppo", "a2c", "trpo"])
def test_example_targets_pass_every_planned_check(make):
    target = make()
    res = results(target)
    assert [n for n, _ in plan(target)] == list(res)
    failed = [str(r) for r in res.values() if r.verdict == "fail"]
    assert not failed, failed
    ran = {n for n, r in res.items() if r.verdict == "pass"}
    assert {"given_the_batch.advantages", "in_expectation.advantages",
            "in_expectation.policy_gradient", "update_level.convergence"} <= ran
    if target.algorithm == "trpo":
        assert {"given_the_batch.trpo_step", "update_level.kl"} <= ran


# ----------------------------------------------------------------- seeded defects
class TruncationAsTermination(ExampleAgent):
    def advantages(self, rewards, values, terminated, truncated, *, next_values):
        return super().advantages(rewards, values, terminated | truncated,
                                  np.zeros_like(truncated), next_values=next_values)


class ResetObservationBootstrap(ExampleAgent):
    """Bootstraps from the observation step() returned (the reset one after an episode end);
    the recorded transitions stay the environment's true ones."""

    def _collect(self):
        r = super()._collect()
        reset_obs = np.concatenate([r.observations[1:], r.next_observations[-1:]], axis=0)
        ended = (r.terminated | r.truncated)[..., None]
        with torch.no_grad():
            nv = self.value(torch.as_tensor(np.where(ended, reset_obs,
                                                     r.next_observations))).numpy()
        adv = self.advantages(r.rewards, r.values, r.terminated, r.truncated, next_values=nv)
        r.advantages, r.returns = adv, adv + r.values
        return r


class NormalizedTargets(ExampleAgent):
    def _collect(self):
        r = super()._collect()
        a = r.advantages
        r.returns = (a - a.mean()) / (a.std() + 1e-8) + r.values
        return r


class MaxInsteadOfMin(ExampleAgent):
    def policy_loss(self, logp, logp_old, adv):
        ratio = torch.exp(logp - logp_old)
        eps = self.cfg.clip_range
        return -torch.max(ratio * adv, torch.clamp(ratio, 1 - eps, 1 + eps) * adv).mean()


class EntropyPenalized(ExampleAgent):
    def entropy_loss(self, dist):
        return self.cfg.ent_coef * dist.entropy().mean()


class NoNormalization(ExampleAgent):
    def normalize(self, adv):
        return adv


class ValueLossSign(ExampleAgent):
    def value_loss(self, values, returns):
        return -((returns - values) ** 2).mean()


class VanillaGradientStep(ExampleAgent):
    def solve(self, fvp, g):
        return g


class StepWithoutFactorTwo(ExampleAgent):
    def step_size(self, xHx):
        return torch.sqrt(self.cfg.max_kl / xHx)


class NeverAccepts(ExampleAgent):
    def line_search(self, full_step, surrogate, mean_kl):
        return None


class NoTrustRegion(ExampleAgent):
    """Full step sized for 30 x delta, taken without a line search."""

    def step_size(self, xHx):
        return torch.sqrt(2 * 30 * self.cfg.max_kl / xHx)

    def line_search(self, full_step, surrogate, mean_kl):
        self._set_actor(self._flat_actor().detach() + full_step)


class SignFlipped(ExampleAgent):
    def policy_loss(self, logp, logp_old, adv):
        return (adv * logp).mean()


class DelayedReward(ExampleAgent):
    """Stores the previous step's reward with each transition (reward timing off by one)."""

    def _collect(self):
        r = super()._collect()
        r.rewards = np.concatenate([np.zeros_like(r.rewards[:1]), r.rewards[:-1]])
        with torch.no_grad():
            nv = self.value(torch.as_tensor(r.next_observations)).numpy()
        adv = self.advantages(r.rewards, r.values, r.terminated, r.truncated, next_values=nv)
        r.advantages, r.returns = adv, adv + r.values
        return r


DEFECTS = [
    ("truncation", "ppo", TruncationAsTermination,
     {"given_the_batch.advantages": "truncation treated as termination",
      "in_expectation.advantages": "advantage estimate"}),
    ("reset-obs-bootstrap", "ppo", ResetObservationBootstrap,
     {"given_the_batch.advantages": "reset observation"}),
    ("normalized-targets", "ppo", NormalizedTargets,
     {"given_the_batch.returns": "normalized advantages"}),
    ("min-max", "ppo-fast", MaxInsteadOfMin,
     {"given_the_batch.policy_gradient": "min and max swapped"}),
    ("entropy-sign", "ppo", EntropyPenalized,
     {"given_the_batch.policy_gradient": "entropy bonus sign flipped"}),
    ("declared-normalization", "ppo", NoNormalization,
     {"given_the_batch.policy_gradient": "declares normalize_advantage=True"}),
    ("value-sign", "a2c", ValueLossSign,
     {"given_the_batch.value_gradient": "value loss sign flipped"}),
    ("trpo-vanilla-direction", "trpo", VanillaGradientStep,
     {"given_the_batch.trpo_step": "vanilla gradient"}),
    ("trpo-step-factor", "trpo", StepWithoutFactorTwo,
     {"given_the_batch.trpo_step": "without the factor 2"}),
    ("trpo-never-accepts", "trpo", NeverAccepts,
     {"given_the_batch.trpo_step": "never accepts"}),
    ("trpo-no-trust-region", "trpo", NoTrustRegion,
     {"update_level.kl": "trust region is not enforced"}),
    ("policy-sign", "a2c", SignFlipped,
     {"given_the_batch.policy_gradient": "sign flipped",
      "update_level.improvement": "did not improve",
      "update_level.convergence": "not near-optimal"}),
    ("reward-timing", "a2c", DelayedReward,
     {"in_expectation.advantages": "advantage estimate",
      "in_expectation.returns": "value target"}),
]
# "ppo-fast": a learning rate large enough that ratios leave the clip range within the run
MAKERS = {"ppo": ppo, "ppo-fast": lambda: ExampleTarget(algorithm="ppo", learning_rate=0.05),
          "a2c": a2c, "trpo": trpo}


@pytest.mark.parametrize(("algo", "agent_class", "expected"), [d[1:] for d in DEFECTS],
                         ids=[d[0] for d in DEFECTS])
def test_seeded_defects_fail_the_named_checks(algo, agent_class, expected):
    base = MAKERS[algo]()
    target = ExampleTarget(base.config, agent_class=agent_class)
    res = results(target)
    for name, words in expected.items():
        assert res[name].verdict == "fail", f"{name} did not fail: {res[name]}"
        assert words in res[name].explanation, str(res[name])


# -------------------------------------------------------------- protocol, bad input
def test_protocol_errors_name_the_missing_piece():
    class NoAgent:
        name, algorithm, hyperparameters = "x", "ppo", {"gamma": 0.9, "clip_range": 0.2}

    with pytest.raises(TargetProtocolError, match="make_agent"):
        validate_target(NoAgent())
    t = ppo()
    t.hyperparameters = {"clip_range": 0.2}
    with pytest.raises(TargetProtocolError, match="'gamma'"):
        validate_target(t)
    t = ppo()
    t.hyperparameters = {**t.hyperparameters, "gama": 0.9}
    with pytest.raises(TargetProtocolError, match="unknown keys"):
        validate_target(t)
    t = trpo()
    del t.hyperparameters["max_kl"]
    with pytest.raises(TargetProtocolError, match="max_kl"):
        validate_target(t)
    for spec, words in (("no_colon", "MODULE:ATTR"), ("no_such_module_xyz:t", "cannot import"),
                        ("pgtheory.oracles.example_target:missing", "no attribute")):
        with pytest.raises(TargetProtocolError, match=words):
            load_target(spec)
    assert load_target("pgtheory.oracles.example_target:ppo").algorithm == "ppo"

    class Incomplete:
        def named_parameters(self):
            return {}

    bad = ppo()
    bad.make_agent = lambda env_fn, **kw: Incomplete()
    with pytest.raises(TargetProtocolError, match="distribution, iterate"):
        run_suite(bad, config=QUICK)


def test_rollout_shapes_are_validated():
    z = np.zeros((4, 2))
    with pytest.raises(TargetProtocolError, match=r"Rollout.advantages: expected shape \(4, 2\)"):
        Rollout(z[..., None], z, z, z.astype(bool), z.astype(bool), z[..., None], z,
                np.zeros((4, 3)))


def _probe_env():
    return gym.wrappers.TimeLimit(TabularEnv(probe_mdp(5)), 6)


def test_nan_fails_and_exceptions_are_error_rows_not_crashes():
    class NaNAdvantages(ExampleAgent):
        def advantages(self, *args, **kwargs):
            out = super().advantages(*args, **kwargs)
            out[0, 0] = np.nan
            return out

    # the NaN advantage poisons the parameters inside the first update, and the agent then
    # raises on its own NaN parameters: the parameters are checked, so every check fails
    # naming them (a crash on NaN parameters the target computed itself is a defect)
    res = results(ExampleTarget(ppo().config, agent_class=NaNAdvantages))
    bad = [str(r) for n, r in res.items() if r.verdict != "skip"
           and not n.startswith("components.")
           and not (r.verdict == "fail" and "parameters became NaN/inf" in r.explanation)]
    assert not bad, bad

    class SaysNaN(ExampleAgent):  # a crash whose message mentions NaN, parameters finite
        def iterate(self):
            raise ValueError("found invalid values: nan in the user's own preprocessing")

    res = results(ExampleTarget(ppo().config, agent_class=SaysNaN))
    rows = [r for n, r in res.items() if not n.startswith("components.") and r.verdict != "skip"]
    assert rows and all(r.verdict == "error" for r in rows), [str(r) for r in rows]
    # a recorded rollout with NaN advantages is reported by the given-the-batch check
    target = ppo()
    agent = target.make_agent(_probe_env, seed=0, num_envs=2, num_steps=4)
    it = agent.iterate()
    it.rollout.advantages[1, 1] = np.nan
    r = batch.check_batch_advantages(agent, [it], gamma=0.9, gae_lambda=0.95)
    assert r.verdict == "fail" and "NaN" in r.explanation

    class Crashes(ExampleAgent):
        def iterate(self):
            raise RuntimeError("boom")

    res = results(ExampleTarget(ppo().config, agent_class=Crashes))
    rows = [r for n, r in res.items() if not n.startswith("components.") and r.verdict != "skip"]
    assert rows and all(r.verdict == "error" and "boom" in r.explanation
                        and "raised at test_oracles_layers.py" in r.explanation for r in rows)


def test_parameter_roles_and_restore():
    agent = ppo().make_agent(_probe_env, seed=0, num_envs=2, num_steps=4)
    roles = batch.parameter_roles(agent, torch.eye(3))
    assert {r for r in roles.values()} == {"actor", "critic"}
    before = {k: v.detach().clone() for k, v in agent.named_parameters().items()}
    with batch.parameters_set(agent, {k: v + 1 for k, v in before.items()}):
        pass
    assert all(torch.equal(before[k], v) for k, v in agent.named_parameters().items())


# ------------------------------------------------------------------------ plugin
DEFECTIVE_MODULE = '''
from pgtheory.oracles.envs import TabularEnv, probe_mdp
from pgtheory.oracles.example_target import ExampleTarget, a2c
from tests_defect_agent import SignFlipped
target = ExampleTarget(a2c().config, agent_class=SignFlipped)
'''


def _pytest(args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_plugin_runs_the_suite_and_reports_failures(tmp_path: Path):
    ok = _pytest(["--pg-target", "pgtheory.oracles.example_target:a2c", "--pg-quick", "-rs"],
                 tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:]
    assert "passed" in ok.stdout and "does not expose this component" in ok.stdout
    (tmp_path / "tests_defect_agent.py").write_text(
        "import torch\nfrom pgtheory.oracles.example_target import ExampleAgent\n"
        "class SignFlipped(ExampleAgent):\n"
        "    def policy_loss(self, logp, logp_old, adv):\n"
        "        return (adv * logp).mean()\n")
    (tmp_path / "defective.py").write_text(DEFECTIVE_MODULE)
    bad = _pytest(["--pg-target", "defective:target", "--pg-quick"], tmp_path)
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert "policy loss sign flipped" in bad.stdout


def test_plugin_fixtures(tabular_mdp, tabular_env, lqr_model, exact):
    obs, info = tabular_env.reset(seed=0)
    assert obs.shape == (tabular_mdp.n_states,) and info["state"] == int(obs.argmax())
    pi = np.full((tabular_mdp.n_states, tabular_mdp.n_actions), 0.5)
    assert exact.expected_return(pi) <= exact.optimal_return() + 1e-12
    assert exact.state_values(pi).shape == (tabular_mdp.n_states,)
    assert lqr_model.n_state == 2


def test_plugin_refuses_a_thread_count_below_one(tmp_path: Path):
    bad = _pytest(["--pg-target", "pgtheory.oracles.example_target:a2c", "--pg-threads", "0"],
                  tmp_path)
    assert bad.returncode == 4, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert "--pg-threads: expected a positive integer, received 0" in bad.stderr
