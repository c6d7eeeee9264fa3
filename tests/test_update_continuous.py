"""Update-level checks on the LQR environment (pgtheory.oracles.update_continuous) and their
suite rows: each check fails on a seeded defect and passes on correct implementations
(this project's PPO, TRPO and A2C with linear layers, Stable-Baselines3 PPO and sb3-contrib
TRPO with ``net_arch=[]``); policies outside the affine-Gaussian class are reported as not
applicable, never failed."""

import dataclasses

import numpy as np
import pytest
import torch
from pgtheory.implementations.targets import target
from pgtheory.oracles import suite
from pgtheory.oracles import update_continuous as uc
from pgtheory.oracles.envs import LQR_TIME_LIMIT, lqr_env_fn
from pgtheory.oracles.protocol import restore, snapshot

import pgtheory.lqr as lqr

torch.set_num_threads(1)


def lqr_model(gamma=0.99):
    return dataclasses.replace(lqr_env_fn()().unwrapped.model, gamma=gamma)


def sb3_target(algo="PPO"):
    from pgtheory.oracles.sb3 import SB3Target

    if algo == "PPO":
        from stable_baselines3 import PPO as cls
    else:
        from sb3_contrib import TRPO as cls
    return SB3Target(lambda env: cls("MlpPolicy", env, n_steps=128, batch_size=32,
                                     policy_kwargs=dict(net_arch=[]), verbose=0),
                     name=f"sb3-{algo}-linear")


# ------------------------------------------------------------------ reading the policy


def test_affine_policy_reads_the_linear_layer():
    # source: the actor of hidden_sizes=() is mean = W x + b with a free log_std, so
    # K = -W, bias = b, log_sigma = log_std (read directly from the parameters)
    agent = target("ppo", hidden_sizes=()).make_agent(lqr_env_fn(), seed=3, num_envs=2,
                                                      num_steps=8)
    p = agent.named_parameters()
    with torch.no_grad():
        p["actor.net.0.bias"].fill_(0.3)
        p["actor.log_std"].fill_(-0.4)
    pol = uc.affine_policy(agent, 2)
    W = p["actor.net.0.weight"].detach().double().numpy()
    assert np.allclose(pol.K, -W, atol=1e-6) and np.allclose(pol.bias, 0.3, atol=1e-6)
    assert np.allclose(pol.log_sigma, -0.4, atol=1e-6)
    # at other parameters, restored afterwards
    moved = {k: v + 1.0 for k, v in snapshot(p).items()}
    pol2 = uc.affine_policy(agent, 2, moved)
    assert np.allclose(pol2.K, -(W + 1.0), atol=1e-5)
    assert np.allclose(p["actor.net.0.bias"].detach().numpy(), 0.3)


def test_affine_policy_rejects_other_classes():
    mlp = target("ppo").make_agent(lqr_env_fn(), seed=0, num_envs=2, num_steps=8)
    with pytest.raises(uc.NotAffineError, match="not affine in the state"):
        uc.affine_policy(mlp, 2)

    class StateDependentStd:
        def distribution(self, obs):
            mean = obs[:, :1] * 0.5
            return torch.distributions.Independent(
                torch.distributions.Normal(mean, torch.exp(0.1 * obs[:, 1:2])), 1)

    with pytest.raises(uc.NotAffineError, match="std depends on the state"):
        uc.affine_policy(StateDependentStd(), 2)

    class Affine(StateDependentStd):
        def distribution(self, obs):
            mean = obs @ torch.tensor([[0.5], [-2.0]]) + 0.25
            return torch.distributions.Independent(
                torch.distributions.Normal(mean, torch.full_like(mean, 0.7)), 1)

    pol = uc.affine_policy(Affine(), 2)
    assert np.allclose(pol.K, [[-0.5, 2.0]], atol=1e-6)
    assert np.allclose(pol.bias, [0.25]) and np.allclose(pol.log_sigma, np.log(0.7))


# ------------------------------------------------------------------ buffer state law


def continuing_flags(phases, L, T, n_buffers):
    """Truncation flags of envs collected continuously (env j starts at phase phases[j])."""
    out = []
    for k in range(n_buffers):
        e = (np.asarray(phases)[None, :] + k * L + np.arange(L)[:, None]) % T
        out.append(e == T - 1)
    return out


@pytest.mark.parametrize("L", [5, 8, 13])
def test_steps_since_reset_continuing_and_resetting_buffers(L):
    T = 8
    flags = continuing_flags([0, 0, 0], L, T, 4)
    got = uc.steps_since_reset(flags, time_limit=T)
    for k, e in enumerate(got):
        assert np.array_equal(e, ((k * L + np.arange(L))[:, None] % T) * np.ones((1, 3), int))
    # an agent resetting its envs at every collection: each buffer starts at step 0
    fresh = [continuing_flags([0, 0, 0], L, T, 1)[0]] * 3
    if L >= T:  # the flags show the phase only when a truncation falls in the buffer
        for e in uc.steps_since_reset(fresh, time_limit=T):
            assert np.array_equal(e[:, 0], np.arange(L) % T)
    bad = [np.zeros((L, 2), bool)] * 2
    bad[0] = bad[0].copy()
    bad[0][min(2, L - 1), 0] = True  # a truncation after 3 steps: no time limit of 8 explains it
    with pytest.raises(ValueError, match="do not follow a time limit"):
        uc.steps_since_reset(bad, time_limit=T)


@pytest.mark.parametrize("L,phases", [(5, [0, 3, 7]), (13, [2, 2, 6])])
def test_buffer_law_of_one_policy_is_the_closed_form_mixture(L, phases):
    # source: pgtheory.lqr.buffer_state_moments (tested against Monte Carlo in
    # test_lqr_affine.py); with one policy throughout the prefix rule must not matter
    model = lqr_model()
    pol = uc.AffinePolicy(np.array([[0.3, 0.8]]), np.array([0.2]), np.array([-0.5]))
    T = LQR_TIME_LIMIT
    flags = continuing_flags(phases, L, T, 3)
    elapsed = uc.steps_since_reset(flags, time_limit=T)
    mu, S = uc.buffer_law(model, [pol] * 3, [e for e in elapsed], 2)
    start = (np.asarray(phases) + 2 * L) % T
    mu2, S2 = lqr.buffer_state_moments(model, pol.K, pol.log_sigma, time_limit=T,
                                       num_steps=L, phases=start, bias=pol.bias)
    # the first buffer's phases are read from its truncation flags (each column has one)
    assert np.array_equal(elapsed[0][0], np.asarray(phases))
    assert np.allclose(mu, mu2, rtol=1e-12, atol=1e-12) and np.allclose(S, S2, rtol=1e-12)


def test_buffer_law_uses_the_previous_policy_for_episode_prefixes():
    # source: lqr.state_moments with per-step policies: an episode begun in buffer 0 under
    # pi_0 and continued in buffer 1 under pi_1
    model = lqr_model()
    p0 = uc.AffinePolicy(np.array([[0.0, 0.0]]), np.array([1.0]), np.array([0.0]))
    p1 = uc.AffinePolicy(np.array([[0.5, 1.0]]), np.array([-1.0]), np.array([-1.0]))
    T, L = LQR_TIME_LIMIT, 4
    elapsed = uc.steps_since_reset(continuing_flags([0], L, T, 2), time_limit=T)
    mu, S = uc.buffer_law(model, [p0, p1], elapsed, 1)
    laws = [lqr.state_moments(model, np.stack([p0.K] * 4 + [p1.K] * s),
                              np.stack([p0.log_sigma] * 4 + [p1.log_sigma] * s), 4 + s,
                              bias=np.stack([p0.bias] * 4 + [p1.bias] * s)) for s in range(4)]
    assert np.allclose(mu, np.mean([w.mean[-1] for w in laws], axis=0), rtol=1e-12)
    assert np.allclose(S, np.mean([w.second_moment[-1] for w in laws], axis=0), rtol=1e-12)
    wrong, _ = uc.buffer_law(model, [p1, p1], elapsed, 1)
    assert not np.allclose(mu, wrong, rtol=1e-3)


def next_step_flags(phases, L, T, n_buffers):
    """Truncation flags and valid masks under next-step autoreset: each env cycles through
    ``T`` episode steps and one reset slot (env j starts at cycle position phases[j])."""
    out = []
    for k in range(n_buffers):
        c = (np.asarray(phases)[None, :] + k * L + np.arange(L)[:, None]) % (T + 1)
        out.append((c == T - 1, c != T))
    return out


def test_steps_since_reset_marks_next_step_reset_slots():
    T, L = 4, 7
    buffers = next_step_flags([0, T], L, T, 3)  # env 1 starts with a reset slot
    got = uc.steps_since_reset([f for f, _ in buffers], time_limit=T,
                               valid=[v for _, v in buffers])
    for k, e in enumerate(got):
        c = (np.asarray([0, T])[None, :] + k * L + np.arange(L)[:, None]) % (T + 1)
        assert np.array_equal(e, np.where(c == T, -1, c)), (k, e)
    # seeded defect: the same flags read as same-step autoreset do not follow the time limit
    with pytest.raises(ValueError, match="do not follow a time limit"):
        uc.steps_since_reset([f for f, _ in buffers], time_limit=T)


def test_buffer_law_with_reset_slots_matches_a_next_step_collection():
    # source: a Monte Carlo collection with gymnasium's SyncVectorEnv in NEXT_STEP mode (the
    # affine policy sampled here), its states at the real slots against the exact law
    import gymnasium as gym

    model = lqr_model()
    pol = uc.AffinePolicy(np.array([[0.3, 0.8]]), np.array([0.2]), np.array([-0.5]))
    T, L, N, runs = LQR_TIME_LIMIT, 20, 4, 1200
    rng = np.random.default_rng(0)
    xs, flags = [], None
    for r in range(runs):
        envs = gym.vector.SyncVectorEnv([lqr_env_fn()] * N,
                                        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
        o, _ = envs.reset(seed=r * N)  # env seeds r N .. r N + N - 1: no two runs share one
        rows, trunc, valid, resetting = [], [], [], np.zeros(N, bool)
        for _ in range(L):
            rows.append(o.copy())
            valid.append(~resetting)
            u = -o @ pol.K.T + pol.bias + np.exp(pol.log_sigma) * rng.normal(size=(N, 1))
            o, _r, term, tr, _ = envs.step(u)
            trunc.append(tr.copy())
            resetting = term | tr
        envs.close()
        valid, trunc = np.array(valid), np.array(trunc)
        flags = flags or (trunc, valid)
        assert np.array_equal(flags[0], trunc) and np.array_equal(flags[1], valid)
        xs.append(np.array(rows)[valid])
    elapsed = uc.steps_since_reset([flags[0]], time_limit=T, valid=[flags[1]])
    assert (elapsed[0] == -1).sum() == (~flags[1]).sum() > 0
    mu, S = uc.buffer_law(model, [pol], elapsed, 0)
    # runs are the independent units (positions within a run correlate): 5 standard errors
    # of the per-run averages, |z| > 5 has probability below 1e-5 per entry
    per_mu = np.array([x.mean(0) for x in xs])
    mc_mu, se = per_mu.mean(0), per_mu.std(0) / np.sqrt(runs)
    assert np.all(np.abs(mc_mu - mu) < 5 * se), (mc_mu, mu, se)
    per_run = np.array([np.einsum("bi,bj->ij", x, x) / len(x) for x in xs])
    mc_S, se_S = per_run.mean(0), per_run.std(0) / np.sqrt(runs)
    assert np.all(np.abs(mc_S - S) < 5 * se_S), (mc_S, S, se_S)
    # seeded defect: counting the reset slots as states at step 0 moves the second moment
    wrong = uc.buffer_law(model, [pol], [np.where(elapsed[0] < 0, 0, elapsed[0])], 0)[1]
    assert np.any(np.abs(mc_S - wrong) > 5 * se_S)


# ------------------------------------------------------------------ update_level.kl@lqr


def recorded(tg, seed, n=5):
    agent = tg.make_agent(lqr_env_fn(), seed=seed, num_envs=4, num_steps=16)
    return agent, [agent.iterate() for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kl_check_fails_when_the_trust_region_is_not_enforced(seed):
    # seeded defect: the implementation enforces delta = 0.1 while it declares 0.01 (a trust
    # region that ignores its configured bound); the correct declaration passes
    tg = target("trpo", hidden_sizes=(), max_kl=0.1)
    agent, its = recorded(tg, seed)
    ok = suite._continuous_kl(agent, its, tg.hyperparameters, "trpo")
    assert ok.verdict == "pass", ok
    bad = suite._continuous_kl(agent, its, {**tg.hyperparameters, "max_kl": 0.01}, "trpo")
    assert bad.verdict == "fail", bad
    assert "trust region is not enforced" in bad.explanation


def test_kl_rule_batch_against_law():
    # the rule on given policies: a step far beyond delta under the law but within delta on
    # a batch that does not see the direction it moves in is inconclusive; the same step on a
    # batch that sees it fails; without batches the law alone fails it (the tabular rule)
    model = lqr_model()
    old = uc.AffinePolicy(np.zeros((1, 2)), np.zeros(1), np.zeros(1))
    new = uc.AffinePolicy(np.array([[0.0, 0.5]]), np.zeros(1), np.zeros(1))  # moves along x2
    elapsed = uc.steps_since_reset(continuing_flags([0, 0], 16, LQR_TIME_LIMIT, 1),
                                   time_limit=LQR_TIME_LIMIT)
    blind = np.column_stack([np.linspace(-1, 1, 32), np.zeros(32)])  # x2 = 0 throughout
    seeing = np.column_stack([np.zeros(32), np.linspace(-1, 1, 32)])
    kw = dict(max_kl=0.01)
    r = uc.check_update_kl(model, [old], [new], elapsed, batches=[blind], **kw)
    assert r.verdict == "inconclusive", r
    r = uc.check_update_kl(model, [old], [new], elapsed, batches=[seeing], **kw)
    assert r.verdict == "fail", r
    assert uc.check_update_kl(model, [old], [new], elapsed, **kw).verdict == "fail"
    assert uc.check_update_kl(model, [old], [old], elapsed, batches=[seeing],
                              **kw).verdict == "pass"
    # a soft bound (PPO's target_kl) allows slack x delta on the batch
    small = uc.AffinePolicy(np.array([[0.0, 0.25]]), np.zeros(1), np.zeros(1))
    fwd, rev = uc.batch_kl(old, small, seeing)
    assert 0.01 < min(fwd, rev) < 0.03
    assert uc.check_update_kl(model, [old], [small], elapsed, batches=[seeing], hard=False,
                              **kw).verdict != "fail"
    assert uc.check_update_kl(model, [old], [small], elapsed, batches=[seeing],
                              **kw).verdict == "fail"


def test_batch_kl_is_the_gaussian_kl_in_both_directions():
    # source: torch.distributions.kl_divergence of Normal distributions, state by state
    rng = np.random.default_rng(0)
    a = uc.AffinePolicy(rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=2))
    b = uc.AffinePolicy(rng.normal(size=(2, 3)), rng.normal(size=2), rng.normal(size=2))
    x = rng.normal(size=(50, 3))

    def dist(p):
        mean = torch.as_tensor(-x @ p.K.T + p.bias)
        return torch.distributions.Independent(torch.distributions.Normal(
            mean, torch.as_tensor(np.exp(p.log_sigma)).expand_as(mean)), 1)

    fwd, rev = uc.batch_kl(a, b, x)
    kl = torch.distributions.kl_divergence
    assert fwd == pytest.approx(float(kl(dist(a), dist(b)).mean()), rel=1e-12)
    assert rev == pytest.approx(float(kl(dist(b), dist(a)).mean()), rel=1e-12)


@pytest.mark.parametrize("make", [lambda: target("trpo", hidden_sizes=()),
                                  lambda: sb3_target("TRPO")], ids=["trpo", "sb3-trpo"])
def test_kl_check_passes_correct_trpo(make):
    tg = make()
    agent, its = recorded(tg, 0)
    r = suite._continuous_kl(agent, its, tg.hyperparameters, "trpo")
    assert r.verdict == "pass", r


def test_kl_check_not_applicable_to_mlp_and_skip_without_bound():
    tg = target("trpo")
    agent, its = recorded(tg, 0, n=2)
    r = suite._continuous_kl(agent, its, tg.hyperparameters, "trpo")
    assert r.verdict == "skip" and r.explanation.startswith("not applicable")
    tg = target("ppo", hidden_sizes=())
    agent, its = recorded(tg, 0, n=2)
    r = suite._continuous_kl(agent, its, tg.hyperparameters, "ppo")
    assert r.verdict == "skip" and "no trust region" in r.explanation


# ------------------------------------------------------------------ update_level.improvement@lqr


class _Wrapped:
    """A target whose agents change what each update does (seeded defects)."""

    def __init__(self, inner, mode):
        self.inner, self.mode = inner, mode
        self.algorithm, self.hyperparameters = inner.algorithm, inner.hyperparameters
        self.name = f"{inner.name}-{mode}"

    def make_agent(self, env_fn, **kw):
        agent = self.inner.make_agent(env_fn, **kw)
        orig = agent.iterate
        mode = self.mode

        def iterate():
            it = orig()
            live = agent.named_parameters()
            a, b = it.parameters_at_collection, it.parameters_after
            if mode == "sign_flipped":  # the update applied in the opposite direction
                restore(live, {k: 2 * a[k] - b[k] for k in a})
            elif mode == "no_effect":  # the update computed but never applied
                restore(live, a)
            return it

        agent.iterate = iterate
        return agent


CFG = suite.SuiteConfig()


@pytest.mark.parametrize("algo", ["ppo", "trpo"])
def test_improvement_reports_sign_flipped_updates(algo):
    # reported, not failed: correct updates with an affine critic bootstrapped at truncations
    # can fall the same way (check_improvement)
    tg = _Wrapped(target(algo, hidden_sizes=()), "sign_flipped")
    r = suite.continuous_training_checks(tg, CFG, tg.hyperparameters)[
        "update_level.improvement@lqr"]
    assert r.verdict == "inconclusive" and "fell by" in r.explanation, r


def test_improvement_fails_when_updates_have_no_effect():
    tg = _Wrapped(target("ppo", hidden_sizes=()), "no_effect")
    r = suite.continuous_training_checks(tg, CFG, tg.hyperparameters)[
        "update_level.improvement@lqr"]
    assert r.verdict == "fail" and r.observed == "unchanged", r


@pytest.mark.parametrize("make", [lambda: target("ppo", hidden_sizes=()),
                                  lambda: target("trpo", hidden_sizes=()),
                                  lambda: target("a2c", hidden_sizes=()),
                                  lambda: sb3_target("PPO")],
                         ids=["ppo", "trpo", "a2c", "sb3-ppo"])
def test_improvement_passes_correct_implementations(make):
    tg = make()
    r = suite.continuous_training_checks(tg, CFG, tg.hyperparameters)[
        "update_level.improvement@lqr"]
    assert r.verdict == "pass", r


def test_improvement_rule_on_given_policies():
    # the rule itself, on exact policies (J_T: zero gain -17.8, b -13.4, worse -20.6; the
    # tolerance is 15% of |J*_T| = 11.3, i.e. 1.69)
    model = lqr_model()
    z = uc.AffinePolicy(np.zeros((1, 2)), np.zeros(1), np.zeros(1))
    b = uc.AffinePolicy(np.array([[0.3, 0.8]]), np.zeros(1), np.array([-1.0]))
    worse = uc.AffinePolicy(np.array([[0.3, 0.8]]), np.zeros(1), np.array([1.0]))
    T = LQR_TIME_LIMIT

    def verdict(*pols, **kw):
        return uc.check_improvement(model, list(pols), time_limit=T, **kw).verdict

    assert verdict(z, b) == "pass"
    # a fall is reported, not failed (check_improvement: correct code with a biased critic)
    assert verdict(b, worse) == "inconclusive"
    assert verdict(z, z, worse) == "inconclusive"
    # rose first, then fell: inconclusive (biased steps of a misspecified critic)
    assert verdict(z, b, worse) == "inconclusive"
    # frozen: fails without an entropy bonus, inconclusive with one
    assert verdict(b, b) == "fail"
    assert verdict(b, b, ent_coef=0.01) == "inconclusive"
    with pytest.raises(ValueError, match="at least 2"):
        uc.check_improvement(model, [z], time_limit=T)
    # J*_T bounds every stationary policy's J_T from above
    J_star = uc.optimal_finite_horizon_return(model, T)
    for pol in (z, b, worse):
        assert lqr.finite_horizon_return(model, pol.K, pol.log_sigma, T) < J_star


def test_improvement_not_applicable_to_mlp():
    tg = target("ppo")
    r = suite.continuous_training_checks(tg, CFG, tg.hyperparameters)[
        "update_level.improvement@lqr"]
    assert r.verdict == "skip" and "not affine" in r.explanation


# ------------------------------------------------------------------ plan


def test_plan_lists_the_rows_for_continuous_targets_only():
    names = dict(suite.plan(target("ppo", hidden_sizes=())))
    assert names["update_level.kl@lqr"] is None
    assert names["update_level.improvement@lqr"] is None
    assert names["update_level.convergence@lqr"] is None
    assert names["update_level.critic@lqr"] is None
    from pgtheory.oracles import example_target

    assert "update_level.kl@lqr" not in dict(suite.plan(example_target.ppo()))


@pytest.mark.parametrize("next_step", [False, True], ids=["same-step", "next-step"])
def test_a_termination_on_lqr_is_refused(next_step):
    # source: LinearQuadraticEnv never terminates; a terminated flag means the flags are wrong
    T, L = 4, 6
    trunc = [np.zeros((L, 2), bool)]
    term = [np.zeros((L, 2), bool)]
    term[0][1, 0] = True
    valid = [np.ones((L, 2), bool)] if next_step else None
    with pytest.raises(ValueError, match="expected no termination"):
        uc.steps_since_reset(trunc, term, time_limit=T, valid=valid)
