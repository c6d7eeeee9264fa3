"""The random-configuration campaign (lab/campaign.py) and its scorecard section.

Fast subset for CI: drawn configurations are valid, deterministic and buildable (one agent
iteration on the oracle env), two quick audits of drawn configurations find no defect, and the
scorecard's campaign and verdict bookkeeping is exercised with synthetic records. The campaign
itself (full audits of configurations 1..N per family) is ``pgtheory audit --power --campaign
N``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgtheory.lab import campaign, power
from pgtheory.oracles.protocol import TargetProtocolError

pytest.importorskip("stable_baselines3")
pytest.importorskip("sb3_contrib")

# The stated ranges, restated here (not imported) so that a drift of the generator is caught.
LR = (1e-4, 3e-3)
GAMMA = (0.8, 0.99)
LAMBDA = (0.8, 1.0)
WIDTHS = {8, 16, 32, 64}


def _within(x, lo, hi) -> bool:
    return isinstance(x, float) and lo <= x <= hi


def _check_network(hidden) -> None:
    assert isinstance(hidden, list) and len(hidden) <= 2 and set(hidden) <= WIDTHS, hidden


def _check_valid(family: str, c: dict) -> None:
    """Every setting of ``c`` within the ranges the campaign states (module docstring)."""
    assert _within(c["learning_rate"], *LR), c
    assert _within(c["gamma"], *GAMMA), c
    if family != "reinforce":
        assert _within(c["gae_lambda"], *LAMBDA), c
    else:
        assert "gae_lambda" not in c  # Monte Carlo returns: lambda stays 1
    if "ent_coef" in c:
        assert c["ent_coef"] == 0.0 or _within(c["ent_coef"], 1e-4, 0.05), c
    if "vf_coef" in c:
        assert _within(c["vf_coef"], 0.25, 1.0), c
    if family != "sb3-trpo":  # sb3-contrib's TRPO has no gradient clipping
        mgn = c["max_grad_norm"]
        assert (mgn is None and not family.startswith("sb3-")) or _within(mgn, 0.1, 10.0), c
    if family.startswith("sb3-"):
        pk = c["policy_kwargs"]
        arch = pk["net_arch"]
        for part in (arch.values() if isinstance(arch, dict) else [arch]):
            _check_network(part)
        assert pk["activation_fn"] in ("tanh", "relu") and isinstance(pk["ortho_init"], bool)
        assert _within(pk["log_std_init"], -1.0, 0.5)
    else:
        _check_network(c["hidden_sizes"])
        assert c["activation"] in ("tanh", "relu")
    if family in ("sb3-ppo", "ppo"):
        assert _within(c["clip_range"], 0.1, 0.3), c
        assert c["clip_range_vf"] is None or _within(c["clip_range_vf"], 0.1, 1.0), c
        assert c["target_kl"] is None or _within(c["target_kl"], 0.005, 0.05), c
        assert 1 <= c["n_epochs"] <= 10 and isinstance(c["normalize_advantage"], bool)
    if family == "sb3-ppo":
        assert c["n_steps"] in (32, 64, 128, 256) and c["batch_size"] <= c["n_steps"]
        assert c["n_steps"] % c["batch_size"] == 0 and c["batch_size"] >= 8
    if family == "ppo":
        assert c["n_minibatches"] in (1, 2, 4, 8)
    if family == "sb3-a2c":
        assert c["n_steps"] in (5, 8, 16, 32) and isinstance(c["use_rms_prop"], bool)
    if family == "a2c":
        assert c["optimizer"] in ("rmsprop", "adam")
        assert c["optimizer"] == "adam" or _within(c["rmsprop_alpha"], 0.9, 0.99)
    if family in ("sb3-trpo", "trpo"):
        kl = c["target_kl"] if family == "sb3-trpo" else c["max_kl"]
        cg = c["cg_max_steps"] if family == "sb3-trpo" else c["cg_iters"]
        assert _within(kl, 0.001, 0.05) and 5 <= cg <= 25, c
        assert _within(c["cg_damping"], 0.01, 0.2), c
        assert _within(c["line_search_shrinking_factor"], 0.5, 0.9), c
        assert 5 <= c["line_search_max_iter"] <= 15, c
    if family == "sb3-trpo":
        assert c["sub_sampling_factor"] in (1, 2) and 1 <= c["n_critic_updates"] <= 20
        assert c["batch_size"] <= c["n_steps"]
    if family == "trpo":
        assert 1 <= c["critic_epochs"] <= 20 and c["critic_minibatches"] in (1, 2, 4, 8)
    # the audit-time bound: optimizer steps over the training budget
    assert campaign.optimizer_steps(family, c) <= campaign.OPTIMIZER_STEP_BUDGET[family]


@settings(max_examples=60, deadline=None)
@given(family=st.sampled_from(campaign.FAMILIES), index=st.integers(0, 10**6))
def test_configurations_are_valid_deterministic_and_plain(family: str, index: int) -> None:
    c = campaign.draw_configuration(family, index)
    _check_valid(family, c)
    assert campaign.draw_configuration(family, index) == c
    assert json.loads(json.dumps(c)) == c  # a plain dict: what records and reports store


def test_configurations_vary_and_cover_the_switches() -> None:
    """Over 40 draws per family every switch the campaign claims to draw takes both values
    (linear network or not, each activation, each optional setting on and off)."""
    seen: dict[str, set] = {}

    def saw(key: str, value) -> None:
        seen.setdefault(key, set()).add(value)

    for f in campaign.FAMILIES:
        for i in range(1, 41):
            c = campaign.draw_configuration(f, i)
            net = c.get("policy_kwargs", c)
            saw(f"{f} linear", net.get("net_arch", net.get("hidden_sizes")) == [])
            saw(f"{f} activation", net.get("activation_fn", net.get("activation")))
            for key in ("normalize_advantage", "optimizer", "use_rms_prop", "npg",
                        "sub_sampling_factor", "gamma_t_weighting", "baseline"):
                if key in c:
                    saw(f"{f} {key}", c[key])
            optional = {"sb3-ppo": ("clip_range_vf", "target_kl"), "sb3-a2c": (),
                        "sb3-trpo": ()}.get(f, ("clip_range_vf", "max_grad_norm", "target_kl"))
            for key in optional:  # None means off; SB3 always clips the gradient norm
                if key in c:
                    saw(f"{f} {key} is None", c[key] is None)
            if "ent_coef" in c:
                saw(f"{f} ent_coef is 0", c["ent_coef"] == 0.0)
    narrow = sorted(k for k, v in seen.items() if len(v) < 2)
    assert not narrow, narrow
    assert len({json.dumps(campaign.draw_configuration("ppo", i)) for i in range(20)}) == 20


def test_configurations_are_the_same_in_another_process() -> None:
    """The generator uses a stable hash of the family (Python's ``hash`` of a str changes per
    process with PYTHONHASHSEED); a different process must draw the same configurations."""
    code = ("import json; from pgtheory.lab.campaign import draw_configuration as d; "
            "print(json.dumps([d(f, i) for f in ('sb3-ppo', 'trpo') for i in (1, 7)]))")
    root = pathlib.Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}, cwd=root)
    here = [campaign.draw_configuration(f, i) for f in ("sb3-ppo", "trpo") for i in (1, 7)]
    assert json.loads(out.stdout) == here


@pytest.mark.parametrize("spec, match", [
    ("campaign:nosuch:1", r"expected FAMILY among \[.*'sb3-ppo'.*\], received 'nosuch'"),
    ("campaign:ppo:x", r"expected INDEX a non-negative integer, received 'x'"),
    ("campaign:ppo:-1", r"expected INDEX a non-negative integer, received '-1'"),
    ("campaign:ppo", r"expected 'campaign:FAMILY:INDEX'.*received 'campaign:ppo'"),
    ("campaign:ppo:1:2", r"expected 'campaign:FAMILY:INDEX'.*received 'campaign:ppo:1:2'"),
])
def test_bad_specs_name_expected_and_received(spec: str, match: str) -> None:
    with pytest.raises(TargetProtocolError, match=match):
        campaign.campaign_target(spec)
    with pytest.raises(TargetProtocolError, match=match):
        campaign.resolve_target(spec)  # what the command line and the power run resolve with


def test_bad_arguments_to_draw_configuration() -> None:
    with pytest.raises(TargetProtocolError, match="received 'sb3-sac'"):
        campaign.draw_configuration("sb3-sac", 1)
    with pytest.raises(TargetProtocolError, match="received -3"):
        campaign.draw_configuration("ppo", -3)


@settings(max_examples=20, deadline=None)
@given(family=st.sampled_from(campaign.FAMILIES), index=st.integers(1, 10**6))
def test_drawn_target_builds_and_iterates(family: str, index: int) -> None:
    """The target of a drawn configuration builds, shows its configuration, and its agent runs
    one recorded iteration on the oracle env."""
    import torch
    from pgtheory.oracles.suite import _env_fn, oracle_mdp

    torch.set_num_threads(1)
    spec = f"campaign:{family}:{index}"
    target = campaign.campaign_target(spec)
    config = campaign.draw_configuration(family, index)
    assert target.name == spec and target.configuration == config
    assert campaign.describe(config) in target.model_description
    hp = target.hyperparameters
    assert hp["gamma"] == pytest.approx(config["gamma"])
    env_fn = _env_fn(oracle_mdp(hp["gamma"], seed=index % 7), 6)
    agent = target.make_agent(env_fn, seed=index % 7, num_envs=4, num_steps=16)
    it = agent.iterate()
    assert it.rollout.rewards.size > 0 and math.isfinite(float(it.rollout.advantages.sum()))
    if family not in ("sb3-trpo", "trpo"):  # TRPO's actor step is no optimizer step
        assert it.updates


# Two drawn configurations (tanh networks: the ReLU ones are where the log-prob-gradient
# check's finite differences can straddle a kink, which other work is addressing) audited in
# quick mode: a correct configuration must not fail.
QUICK = ["campaign:sb3-ppo:3", "campaign:ppo:7"]


@pytest.mark.parametrize("spec", QUICK)
def test_quick_audit_of_a_drawn_configuration_does_not_fail(spec: str) -> None:
    from pgtheory.oracles.audit import format_report, run_audit

    report = run_audit(spec, quick=True, target=campaign.campaign_target(spec))
    assert report.error is None, report.error
    assert not [r for r in report.results if r.verdict == "fail"], format_report(report)
    assert "campaign configuration {" in report.description


# ------------------------------------------------------------------ scorecard bookkeeping
def _report(target: str, seed: int, verdicts: dict[str, tuple[str, str]],
            exit_code: int = 0) -> dict:
    return {"target": target, "seed": seed, "exit_code": exit_code, "error": None,
            "seconds": 10.0, "results": [{"name": n, "verdict": v, "explanation": e}
                                         for n, (v, e) in verdicts.items()]}


def _campaign_rec(family: str, i: int, verdicts: dict, wall: float = 30.0) -> dict:
    rec = power.audit_record(_report(f"campaign:{family}:{i}", i, verdicts), scope="audit",
                             wall_s=wall, commit="abc1234")
    return power._campaign_record(rec)


PASSING = {"given_the_batch.advantages": ("pass", "equal"),
           "update_level.convergence": ("skip", "quick")}


def test_audit_record_keeps_inconclusive_and_error_verdicts() -> None:
    """Would catch a record that drops the new verdicts (they would vanish from the scorecard)
    or their explanations (the reasons table would be empty)."""
    rec = power.audit_record(_report("ppo", 3, {
        **PASSING, "update_level.critic": ("inconclusive", "the critic had not settled; x"),
        "given_the_batch.trpo_step": ("error", "the target raised KeyError"),
        "update_level.kl": ("fail", "KL 0.3 > 0.02")}), scope="audit", wall_s=5.0,
        commit="abc")
    assert rec["failed"] == ["update_level.kl"]
    assert rec["inconclusive"] == ["update_level.critic"]
    assert rec["errors"] == ["given_the_batch.trpo_step"]
    assert set(rec["explanations"]) == {"update_level.kl", "update_level.critic",
                                        "given_the_batch.trpo_step"}
    assert rec["explanations"]["update_level.critic"].startswith("the critic had not settled")
    assert "update_level.convergence" in rec["checks"]


def test_reason_is_the_first_clause_with_numbers_masked() -> None:
    assert power.reason("LQR (Gaussian policy): the critic had not settled: drift 0.31 > 0.1; "
                        "x") == "the critic had not settled"
    assert power.reason("inconclusive: J = 0.41 below 0.95 (budget 9600)") == "J = # below #"
    assert power.reason("max |V| error 0.13, allowed 0.1") == power.reason(
        "max |V| error 2e-3, allowed 0.1")
    # a "|" in a reason must not split the Markdown table's cell
    assert power._cell(power.reason("max |V - V_pi| 0.3 > 0.1")) == "max \\|V - V_pi\\| # > #"


def test_campaign_section_lists_fails_with_indices_and_tabulates_reasons(tmp_path) -> None:
    """Synthetic campaign records: two fails of one check, inconclusive verdicts whose
    explanations differ only in their numbers, an error, a slow audit.

    What it catches: a fail that does not reach the section (records not read from
    ``campaign.jsonl``, ``failed`` ignored, indices lost) breaks the ``configuration(s) 3, 5``
    line, the reproduce command and the goal row; reasons not grouped by (check, first
    clause) -- e.g. numbers not masked -- give two rows of count 1 instead of one of count 2;
    an ``error`` verdict not counted leaves the family's error column at 0; the time goal
    would read ``yes`` if the slow audit's wall time were dropped.
    """
    rec = power.Records(tmp_path)
    critic = "update_level.critic"
    step = "given_the_batch.trpo_step"
    rec.append("campaign", _campaign_rec("sb3-trpo", 3, {
        **PASSING, step: ("fail", "direction cos 0.91 < 0.999 (CG with 5 iterations)")}))
    rec.append("campaign", _campaign_rec("sb3-trpo", 5, {
        **PASSING, step: ("fail", "direction cos 0.95 < 0.999")}, wall=131.0))
    rec.append("campaign", _campaign_rec("sb3-trpo", 1, {
        **PASSING, critic: ("inconclusive", "the critic had not settled: drift 0.31 over the "
                                            "window; allowed 0.1")}))
    rec.append("campaign", _campaign_rec("sb3-trpo", 2, {
        **PASSING, critic: ("inconclusive", "the critic had not settled: drift 0.52 over the "
                                            "window; allowed 0.1")}))
    rec.append("campaign", _campaign_rec("ppo", 4, {
        **PASSING, critic: ("inconclusive", "the policy did not converge, so the critic's "
                                            "target was still moving"),
        "given_the_batch.value_gradient": ("error", "the target raised RuntimeError('x')")}))
    text = power.scorecard(rec, targets=[])
    (tmp_path / "card.md").write_text(text)
    assert "## Random-configuration campaign" in text
    assert "| `sb3-trpo` | 4 | 2 | 2 | 0 | 30.0 s | 131.0 s |" in text
    assert "| `ppo` | 1 | 0 | 1 | 1 | 30.0 s | 30.0 s |" in text
    assert ("* `sb3-trpo` `given_the_batch.trpo_step`: configuration(s) 3, 5. Configuration 3 "
            "(`pgtheory audit campaign:sb3-trpo:3 --seed 3`): direction cos 0.91") in text
    assert "| `sb3-trpo` | `update_level.critic` | the critic had not settled | 2 | 1, 2 |" \
        in text
    assert "| `ppo` | `update_level.critic` | the policy did not converge | 1 | 4 |" in text
    assert "* `campaign:ppo:4` (seed 4): `given_the_batch.value_gradient`: the target raised " \
           "RuntimeError" in text
    assert "| no fail over random correct configurations (campaign) | 2 of 5 audits with a " \
           "fail | no |" in text
    assert "| every campaign audit <= 120 s | max 131.0 s (`campaign:sb3-trpo:5`) | no |" in text
    assert "Audits over 120 s: `campaign:sb3-trpo:5` (131 s)." in text
    # the bookkeeping broken on purpose: without the masking, the two reasons split
    assert power.reason("drift 0.31") == power.reason("drift 0.52")


def test_campaign_without_fails_and_reruns_supersede(tmp_path) -> None:
    """A rerun of a configuration (new commit) replaces its old record: a fixed false alarm
    must leave the fails list. Would catch counting every record ever appended."""
    rec = power.Records(tmp_path)
    rec.append("campaign", _campaign_rec("a2c", 1, {
        **PASSING, "update_level.kl": ("fail", "KL too large")}))
    rec.append("campaign", _campaign_rec("a2c", 1, PASSING))
    text = power.scorecard(rec, targets=[])
    assert "| `a2c` | 1 | 0 | 0 | 0 |" in text
    assert "### Fails\n\nNone." in text
    assert "| no fail over random correct configurations (campaign) | 0 of 1 audits with a " \
           "fail | yes |" in text


def test_default_targets_count_inconclusive_and_error_verdicts(tmp_path) -> None:
    """The false-alarm section counts the new verdicts per target and groups their reasons;
    old records without the fields count as none. Would catch the verdicts being read from the
    wrong field (the counts would be 0) or grouped per explanation (two rows)."""
    rec = power.Records(tmp_path)
    old = power.audit_record(_report("a2c", 1, PASSING), scope="audit", wall_s=5.0,
                             commit="abc1234")
    for key in ("inconclusive", "errors", "explanations"):  # as recorded before these existed
        del old[key]
    rec.append("audits", old)
    for seed, drift in ((2, "0.3"), (3, "0.4")):
        r = power.audit_record(_report("a2c", seed, {
            **PASSING, "update_level.critic": ("inconclusive", f"the critic had not settled: "
                                                               f"drift {drift}")}),
            scope="audit", wall_s=5.0, commit="abc1234")
        rec.append("audits", r)
    r = power.audit_record(_report("a2c", 4, {
        **PASSING, "update_level.improvement": ("error", "the agent raised ValueError('nan')")},
        exit_code=2), scope="audit", wall_s=5.0, commit="abc1234")
    rec.append("audits", r)
    text = power.scorecard(rec, targets=["a2c"])
    assert "| `a2c` | 4 | 2 | 1 |" in text
    assert "| `a2c` | inconclusive | `update_level.critic` | the critic had not settled | 2 | " \
           "2, 3 |" in text
    assert "| `a2c` | error | `update_level.improvement` | the agent raised ValueError | 1 | 4 |" \
        in text
    assert "## Random-configuration campaign" not in text  # no campaign records


def test_run_jobs_runs_campaign_jobs_resumably(tmp_path, monkeypatch) -> None:
    """Campaign audits go to campaign.jsonl with family, index and configuration, once each."""
    from pgtheory.lab.executors import LocalExecutor

    log = tmp_path / "calls.txt"

    def fake_job(job, scope, commit):  # runs in a forked worker process: logs to a file
        with open(log, "a") as fh:
            fh.write(f"{job[1]} {job[2]}\n")
        return power.audit_record(_report(job[1], job[2], PASSING), scope="audit", wall_s=1.0,
                                  commit=commit)

    monkeypatch.setattr(power, "run_job", fake_job)
    rec = power.Records(tmp_path)
    jobs = power.campaign_jobs(2, ["ppo", "sb3-a2c"])
    assert jobs == [("campaign:ppo:1", 1), ("campaign:sb3-a2c:1", 1), ("campaign:ppo:2", 2),
                    ("campaign:sb3-a2c:2", 2)]
    for n in (4, 0):
        assert power.run_jobs(rec, mutants=[], targets=[], seeds=[], campaign=jobs,
                              progress=False, executor=LocalExecutor(2, start_method="fork")) == n
    back = rec.audits("campaign")
    calls = [(t, int(s)) for t, s in (x.split() for x in log.read_text().splitlines())]
    assert sorted(calls) == sorted(jobs) and len(back) == 4
    r = next(r for r in back if r["target"] == "campaign:ppo:2")
    assert r["family"] == "ppo" and r["index"] == 2
    assert r["configuration"] == campaign.draw_configuration("ppo", 2)
    assert not (tmp_path / "audits.jsonl").exists()
    with pytest.raises(power.PowerError, match="received 2 and \\['nosuch'\\]"):
        power.campaign_jobs(2, ["nosuch"])


def test_cli_power_campaign_options(tmp_path, capsys) -> None:
    from pgtheory.cli import main

    rec = power.Records(tmp_path / "rec")
    rec.append("campaign", _campaign_rec("reinforce", 1, PASSING))
    out = tmp_path / "card.md"
    main(["audit", "--power", "--no-run", "--records", str(tmp_path / "rec"), "--targets",
          "reinforce", "--out", str(out), "--campaign", "1", "--campaign-families",
          "reinforce"])
    assert "| `reinforce` | 1 | 0 | 0 | 0 | 30.0 s | 30.0 s |" in out.read_text()
    capsys.readouterr()
    assert main(["audit", "--power", "--no-run", "--records", str(tmp_path / "rec"),
                 "--campaign", "2", "--campaign-families", "sb3-sac"]) == 2
    assert "sb3-sac" in capsys.readouterr().err
