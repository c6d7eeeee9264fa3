"""The recording API (pgtheory.oracles.recording) and its worked example, examples/ppo_loop.py.

* The example's correct loop passes the quick audit and its ``--truncation-bug`` loop (CleanRL
  #198) fails ``given_the_batch.advantages`` with the registry's diagnosis
  ``truncation_as_termination``, with discrete actions (the tabular oracle MDP) and continuous
  ones (the LQR environment, the ``@lqr`` rows). Under next-step autoreset the loop that leaves
  the reset slots out passes, and the one that trains on them fails both gradient checks
  with the diagnosis ``next_step_autoreset``. Source of the expectation: the defect
  registry (pgtheory.oracles.defects) and the reference GAE of the given-the-batch check.
* The recording itself: copies (not references) of the loop's storage, both autoreset modes,
  and misuse reported as a RecordingError naming the missing call, within a timeout.
* Without an audit the recording lines change nothing: the example with its ``# pgtheory``
  lines removed returns the same episode returns and parameters for the same seed.

Seeded defects that make these tests fail (each tried by editing recording.py, not committed):
``_numpy`` returning a view (``x.numpy()``) fails test_record_batch_copies_the_storage; the
SAME_STEP branch of ``RecordingVectorEnv.step`` ignoring ``info["final_obs"]`` fails
test_same_step_next_observation_is_the_final_one; treating NEXT_STEP like SAME_STEP (no
``valid`` mask) fails test_next_step_reset_slots_are_masked and both next-step example tests
(the reference then includes the reset slots); removing the step-count, batch-length and
second-batch guards fail test_missing_end_iteration_is_named (the error is then the Rollout's
shape check, which does not name end_iteration); an unbounded handshake wait fails
test_a_loop_that_never_pauses_times_out (no timeout error; a script blocked for good would
trip the test's own join timeout instead of hanging).
"""

from __future__ import annotations

import re
import sys
import threading
import time
import types
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("gymnasium")

import gymnasium as gym
import numpy as np
import torch
from pgtheory.oracles import recording
from pgtheory.oracles.audit import format_report, run_audit
from pgtheory.oracles.envs import TabularEnv, probe_mdp
from pgtheory.oracles.recording import RecordingError, loop_target

torch.set_num_threads(1)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ppo_loop.py"


def _load(source: str, name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = str(EXAMPLE)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    exec(compile(source, str(EXAMPLE), "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def ppo_loop() -> types.ModuleType:
    return _load(EXAMPLE.read_text(), "ppo_loop")


@pytest.fixture(scope="module")
def audits(ppo_loop) -> dict:
    return {which: run_audit(f"ppo_loop:{which}", target=getattr(ppo_loop, which)(), quick=True)
            for which in ("target", "buggy_target", "next_step_target",
                          "reset_slot_buggy_target")}


def _rows(report) -> dict:
    return {r.name: r for r in report.results}


# ------------------------------------------------------------------- the worked example
@pytest.mark.parametrize("which", ["target", "next_step_target"])
@pytest.mark.parametrize("suffix", ["", "@lqr"], ids=["discrete", "continuous"])
def test_fixed_loop_passes(audits, suffix, which):
    report = audits[which]
    rows = _rows(report)
    assert report.exit_code == 0, format_report(report)
    assert not [r.name for r in report.results if r.verdict in ("fail", "error")]
    for check in ("advantages", "returns", "policy_gradient", "value_gradient"):
        assert rows[f"given_the_batch.{check}{suffix}"].verdict == "pass", format_report(report)


@pytest.mark.parametrize("suffix", ["", "@lqr"], ids=["discrete", "continuous"])
def test_truncation_bug_is_flagged(audits, suffix):
    report = audits["buggy_target"]
    row = _rows(report)[f"given_the_batch.advantages{suffix}"]
    assert report.exit_code == 1, format_report(report)
    assert row.verdict == "fail", format_report(report)
    assert "[catalogue: truncation_as_termination]" in row.explanation, row.explanation
    assert "time-limit truncation treated as termination" in row.explanation
    # the update itself is correct: only the advantages are wrong
    assert _rows(report)[f"given_the_batch.policy_gradient{suffix}"].verdict == "pass"


@pytest.mark.parametrize("suffix", ["", "@lqr"], ids=["discrete", "continuous"])
def test_training_on_next_step_reset_slots_is_flagged(audits, suffix):
    report = audits["reset_slot_buggy_target"]
    rows = _rows(report)
    assert report.exit_code == 1, format_report(report)
    for check in ("policy_gradient", "value_gradient"):
        row = rows[f"given_the_batch.{check}{suffix}"]
        assert row.verdict == "fail", format_report(report)
        assert "[catalogue: next_step_autoreset]" in row.explanation, row.explanation
    # the stored advantages on the real transitions are right: only the loss is wrong
    assert rows[f"given_the_batch.advantages{suffix}"].verdict == "pass"
    assert "where to look: which samples each minibatch trains on" in format_report(report)


def test_skipped_rows_show_their_reason(audits):
    # a SKIP row that measured nothing prints its reason in the table, not "-" twice
    table = format_report(audits["target"]).splitlines()
    (row,) = [ln for ln in table if ln.startswith("given_the_batch.trpo_step ")]
    assert row.split()[1:] == ["SKIP", "not", "a", "TRPO", "target"], row


def _strip_recording(source: str) -> str:
    kept = [line for line in source.splitlines() if not line.rstrip().endswith("# pgtheory")]
    return "\n".join(kept) + "\n"


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"], ids=["discrete", "continuous"])
def test_without_an_audit_the_recording_lines_change_nothing(ppo_loop, env_id):
    plain = _load(_strip_recording(EXAMPLE.read_text()), "ppo_loop_plain")
    assert "recording." not in plain.main.__code__.co_names
    assert not recording.active()
    argv = ["--env-id", env_id, "--total-timesteps", "1024", "--num-steps", "128"]
    a, b = ppo_loop.main(argv), plain.main(argv)
    assert a["episode_returns"] and a["episode_returns"] == b["episode_returns"]
    assert a["parameters"].keys() == b["parameters"].keys()
    for k in a["parameters"]:
        assert torch.equal(a["parameters"][k], b["parameters"][k]), k


def test_the_example_marks_few_lines():
    text = EXAMPLE.read_text()
    marked = [ln for ln in text.splitlines() if ln.rstrip().endswith("# pgtheory")]
    assert len(marked) == 9, marked  # import, configure, record_env, register (2 lines),
    # record_batch (2 lines), record_minibatch, end_iteration; the target factory follows


# --------------------------------------------------------------------- a tiny loop
def tiny_loop(variant: str = "", *, mode=gym.vector.AutoresetMode.SAME_STEP, out=None) -> None:
    """A minimal loop script (random-init linear actor and critic, one SGD step per
    iteration, advantages = rewards) with a seeded misuse selected by ``variant``."""
    args = {"env_id": "CartPole-v1", "seed": 0, "num_envs": 2, "num_steps": 8,
            "total_timesteps": 64}
    if variant != "no_configure":
        args = recording.configure(args)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(args["env_id"])] * args["num_envs"],
                                    autoreset_mode=mode)
    if variant != "no_record_env":
        envs = recording.record_env(envs)
    n_obs = envs.single_observation_space.shape[0]
    actor, critic = torch.nn.Linear(n_obs, 2), torch.nn.Linear(n_obs, 1)
    params = {**{f"actor.{k}": v for k, v in actor.named_parameters()},
              **{f"critic.{k}": v for k, v in critic.named_parameters()}}
    opt = torch.optim.SGD(list(params.values()), lr=0.1)

    def dist(x):
        return torch.distributions.Categorical(logits=actor(x))

    recording.register(dist, value=lambda x: critic(x), parameters=params, optimizers=[opt])
    T, N = args["num_steps"], args["num_envs"]
    obs, rew = torch.zeros((T, N, n_obs)), torch.zeros((T, N))
    act, logp, val = torch.zeros((T, N)), torch.zeros((T, N)), torch.zeros((T, N))
    o, _ = envs.reset(seed=args["seed"])
    for _ in range(args["total_timesteps"] // (T * N)):
        for t in range(T):
            obs[t] = torch.as_tensor(o)
            with torch.no_grad():
                d = dist(obs[t])
                a = d.sample()
                act[t], logp[t], val[t] = a, d.log_prob(a), critic(obs[t]).squeeze(-1)
            o, r, *_ = envs.step(a.numpy())
            rew[t] = torch.as_tensor(r)
        adv = rew.clone()
        recording.record_batch(observations=obs, actions=act, log_probs=logp, values=val,
                               advantages=adv.T if variant == "bad_shape" else adv,
                               returns=adv + val)
        if variant == "raises":
            raise ZeroDivisionError("the script's own bug")
        if out is not None:
            out.append(adv.clone())
        if variant == "mutate":  # the loop reuses its storage in place
            adv.zero_()
            obs.zero_()
        loss = -(dist(obs.reshape(-1, n_obs)).log_prob(act.reshape(-1)) * adv.reshape(-1)).mean()
        opt.zero_grad()
        loss.backward()
        if variant == "empty_minibatch":
            recording.record_minibatch(np.arange(0))
        elif variant != "no_minibatch":
            recording.record_minibatch(np.arange(T * N))
        opt.step()
        if variant != "no_end_iteration":
            recording.end_iteration()


def oracle_env_fn():
    return gym.wrappers.TimeLimit(TabularEnv(probe_mdp(5)), 6)


def _target(variant: str = "", timeout: float = 20.0, **kw):
    return loop_target(lambda: tiny_loop(variant, **kw), algorithm="a2c",
                       hyperparameters={"gamma": 0.9}, name=f"tiny {variant}", timeout=timeout)


def _agent(variant: str = "", num_steps: int = 8, num_envs: int = 2, **kw):
    return _target(variant, **kw).make_agent(oracle_env_fn, seed=3, num_envs=num_envs,
                                             num_steps=num_steps)


def test_loop_target_drives_the_loop_on_the_oracle_env():
    agent = _agent(num_steps=5, num_envs=3)
    it = agent.iterate()
    r = it.rollout
    assert r.shape == (5, 3)  # the oracle's sizes, not the script's (8, 2)
    n_states = probe_mdp(5).n_states
    assert r.observations.shape == (5, 3, n_states)  # probe 5's one-hot observations
    np.testing.assert_allclose(r.observations.sum(-1), 1.0)
    assert len(it.updates) == 1 and len(it.updates[0].indices) == 15
    assert not torch.equal(it.parameters_at_collection["actor.weight"],
                           it.parameters_after["actor.weight"])
    assert agent.distribution(r.flat("observations")).log_prob(
        torch.as_tensor(r.flat("actions"))).shape == (15,)
    assert agent.value(r.flat("observations")).shape == (15,)
    assert agent.iterate().rollout.shape == (5, 3)


def test_record_batch_copies_the_storage():
    # source: record_batch's contract (copies); a recorder that kept references would show
    # the zeroed storage (CleanRL reuses its storage; aliasing produced false FAILs before)
    out: list = []
    agent = _agent("mutate", out=out)
    first = agent.iterate().rollout
    second = agent.iterate().rollout
    np.testing.assert_array_equal(first.advantages, out[0].numpy())
    np.testing.assert_array_equal(second.advantages, out[1].numpy())
    assert np.abs(first.advantages).sum() > 0 and first.observations.sum() > 0


def _step_until_an_episode_ends(envs: recording.RecordingVectorEnv):
    envs.reset(seed=0)
    for _ in range(20):
        o, _r, term, trunc, info = envs.step(np.zeros(envs.num_envs, int))
        if (term | trunc).any():
            return o, term | trunc, info
    raise AssertionError("no episode ended in 20 steps (time limit 6)")


def test_same_step_next_observation_is_the_final_one():
    envs = recording.RecordingVectorEnv(gym.vector.SyncVectorEnv(
        [oracle_env_fn] * 3, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP))
    assert envs.autoreset_mode == gym.vector.AutoresetMode.SAME_STEP
    o, ended, info = _step_until_an_episode_ends(envs)
    last = envs.log[-1]
    for n in range(3):  # gymnasium's SAME_STEP contract: info["final_obs"] holds s_{t+1}
        want = info["final_obs"][n] if ended[n] else o[n]
        np.testing.assert_array_equal(last.next_obs[n], want)
    np.testing.assert_array_equal(envs.log[-1].terminated | envs.log[-1].truncated, ended)
    assert not any(s.reset_step.any() for s in envs.log)


def test_next_step_reset_slots_are_masked():
    # source: gymnasium 1.x's NEXT_STEP contract (the step after an episode end only resets)
    envs = recording.RecordingVectorEnv(gym.vector.SyncVectorEnv([oracle_env_fn] * 3))
    assert envs.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP  # gymnasium's default
    o, ended, _ = _step_until_an_episode_ends(envs)
    np.testing.assert_array_equal(envs.log[-1].next_obs, o)  # NEXT_STEP returns s_{t+1} itself
    envs.step(np.zeros(3, int))
    np.testing.assert_array_equal(envs.log[-1].reset_step, ended)  # then spends a step resetting
    agent = _agent(mode=gym.vector.AutoresetMode.NEXT_STEP, num_steps=16)
    it = agent.iterate()
    r = it.rollout
    ended = r.terminated | r.truncated
    assert ended[:-1].any()
    # a slot is a reset slot exactly when the env's episode ended at the slot before
    np.testing.assert_array_equal(~r.valid[1:], ended[:-1])
    (up,) = it.updates  # the tiny loop names all T * N samples; reset slots are set aside
    invalid = np.flatnonzero(~r.valid.ravel())
    np.testing.assert_array_equal(np.sort(up.excluded_indices), invalid)
    assert len(up.indices) + len(invalid) == r.valid.size
    same = _agent(num_steps=16).iterate()  # SAME_STEP: no mask, nothing excluded
    assert same.rollout.valid is None and same.updates[0].excluded_indices is None


def _iterate_within(agent, seconds: float):
    """``agent.iterate()`` in a helper thread: (result or exception, elapsed); fails the test
    instead of hanging when it does not return within ``seconds``."""
    box: list = []

    def run():
        try:
            box.append(agent.iterate())
        except BaseException as exc:
            box.append(exc)

    t0 = time.perf_counter()
    helper = threading.Thread(target=run, daemon=True)
    helper.start()
    helper.join(seconds)
    assert not helper.is_alive(), f"iterate() did not return within {seconds} s (a hang)"
    return box[0], time.perf_counter() - t0


def test_missing_end_iteration_is_named():
    agent = _agent("no_end_iteration", timeout=5.0)
    result, elapsed = _iterate_within(agent, 15.0)
    assert isinstance(result, RecordingError), result
    assert "end_iteration()" in str(result)
    assert elapsed < 2.0, elapsed  # detected at the first step past num_steps, no timeout


def test_a_loop_that_never_pauses_times_out():
    def spins():
        args = recording.configure({"env_id": "", "seed": 0, "num_envs": 1, "num_steps": 1,
                                    "total_timesteps": 1})
        envs = recording.record_env(gym.vector.SyncVectorEnv([lambda: gym.make(args["env_id"])]))
        lin = torch.nn.Linear(5, 2)
        recording.register(lambda x: torch.distributions.Categorical(logits=lin(x)),
                           module=lin, optimizers=torch.optim.SGD(lin.parameters(), lr=0.1))
        threading.Event().wait(5.0)  # never steps, never ends the iteration
        del envs

    target = loop_target(spins, algorithm="a2c", hyperparameters={"gamma": 0.9}, timeout=1.0)
    agent = target.make_agent(oracle_env_fn, seed=0, num_envs=1, num_steps=1)
    result, _ = _iterate_within(agent, 10.0)
    assert isinstance(result, RecordingError) and "within 1 s" in str(result), result
    assert "end_iteration()" in str(result)


@pytest.mark.parametrize("variant, named", [
    ("no_configure", r"before configure\(args\)"),
    ("no_record_env", r"register\(\) before record_env\(envs\)"),
    ("bad_shape", r"record_batch\(advantages=...\): expected shape \(8, 2\)"),
    ("no_minibatch", r"no record_minibatch\(indices\)"),
    ("empty_minibatch", r"received an empty minibatch"),
], ids=["configure", "record_env", "shape", "record_minibatch", "empty_minibatch"])
def test_misuse_names_the_missing_piece(variant, named):
    with pytest.raises(RecordingError, match=named):
        agent = _agent(variant)
        agent.iterate()


def test_recording_error_is_a_protocol_and_value_error():
    from pgtheory.oracles.protocol import TargetProtocolError

    assert issubclass(RecordingError, TargetProtocolError)
    assert issubclass(RecordingError, ValueError)


def test_the_scripts_own_exception_is_raised_by_the_target():
    def boom():
        args = recording.configure({"env_id": "", "seed": 0, "num_envs": 1, "num_steps": 1,
                                    "total_timesteps": 1})
        return 1 / len(args) * 0 / 0

    target = loop_target(boom, algorithm="a2c", hyperparameters={"gamma": 0.9}, timeout=5.0)
    with pytest.raises(ZeroDivisionError):
        target.make_agent(oracle_env_fn, seed=0, num_envs=1, num_steps=1)


def test_the_audit_reports_a_crashing_script_as_errors():
    report = run_audit("tiny:raises", target=_target("raises"), quick=True)
    rows = [r for r in report.results if r.verdict not in ("skip",)]
    assert report.exit_code == 2, format_report(report)
    assert rows and all(r.verdict == "error" for r in rows), format_report(report)
    assert any(re.search("main\\(\\) returned|ZeroDivisionError", r.explanation) for r in rows)


def test_calls_are_no_ops_outside_an_audit():
    args = {"seed": 1}
    assert recording.configure(args) is args
    envs = gym.vector.SyncVectorEnv([oracle_env_fn])
    assert recording.record_env(envs) is envs
    recording.register(None, optimizers=None)  # not even validated: nothing runs
    recording.record_batch(observations=None, actions=None, log_probs=None, advantages=None)
    recording.record_minibatch(None)
    recording.end_iteration()
    assert not recording.active()


def test_the_docs_show_the_examples_recording_lines():
    # docs/recording.md highlights the added lines; they must still be the example's
    page = (EXAMPLE.parents[1] / "docs" / "recording.md").read_text()
    shown = {ln.strip() for ln in page.splitlines() if ln.rstrip().endswith("# pgtheory")}
    marked = {ln.strip() for ln in EXAMPLE.read_text().splitlines()
              if ln.rstrip().endswith("# pgtheory")}
    assert shown == marked


def _loop_raising_in(body) -> RecordingError | BaseException:
    target = loop_target(body, algorithm="a2c", hyperparameters={"gamma": 0.9}, timeout=5.0)
    try:
        target.make_agent(oracle_env_fn, seed=0, num_envs=1, num_steps=1)
    except BaseException as exc:
        return exc
    raise AssertionError("make_agent did not raise")


def test_configure_copies_dataclasses_and_names_a_missing_setting():
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Settings:
        env: str = "CartPole-v1"
        seed: int = 1
        num_envs: int = 8
        num_steps: int = 128
        total_timesteps: int = 1000

    seen = []

    def renamed():
        before = Settings()
        seen.append((before, recording.configure(before, env_id="env")))
        raise KeyError("stop here")

    assert isinstance(_loop_raising_in(renamed), KeyError)
    before, after = seen[0]
    assert before == Settings()  # the script's own settings are not modified
    assert (after.seed, after.num_envs, after.num_steps) == (0, 1, 1)
    assert after.env.startswith("pgtheory-recording/") and after.total_timesteps >= 10**9

    exc = _loop_raising_in(lambda: recording.configure(Settings()))  # no env_id attribute
    assert isinstance(exc, RecordingError) and "args has no 'env_id'" in str(exc), exc


def test_a_script_calling_sys_exit_does_not_end_the_audit():
    exc = _loop_raising_in(lambda: sys.exit(3))
    assert isinstance(exc, RecordingError) and "SystemExit(3)" in str(exc), exc
