"""The power run and scorecard (lab/power.py): records, resumption, coverage, statistics.

The audits themselves are replaced by stubs here (a real power run takes hours); what is tested
is the bookkeeping that turns records into the published figures.
"""

from __future__ import annotations

import json

import pytest
from pgtheory.lab import power
from pgtheory.lab.executors import LocalExecutor
from pgtheory.lab.mutants import MUTANTS
from pgtheory.oracles.suite import plan


def test_clopper_pearson_matches_closed_forms() -> None:
    # k = 0: the upper bound solves (1 - p)^n = 0.025, i.e. 1 - 0.025^(1/n)
    lo, hi = power.clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-9)
    # k = n: the lower bound solves p^n = 0.025
    lo, hi = power.clopper_pearson(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 50), rel=1e-9)
    with pytest.raises(power.PowerError, match="received k=3, n=2"):
        power.clopper_pearson(3, 2)


def _record(target: str, seed: int, *, scope: str = "audit", failed=(), checks=None) -> dict:
    names = checks if checks is not None else [n for n, why in plan(_target(target)) if not why]
    return {"target": target, "seed": seed, "scope": scope, "exit_code": int(bool(failed)),
            "error": None, "seconds": 1.0, "wall_s": 2.0 + seed, "checks": sorted(names),
            "failed": sorted(failed), "commit": "abc1234", "date": "2026-11-22"}


def _target(spec: str):
    from pgtheory.oracles.audit import resolve_target

    return resolve_target(spec)


def test_records_round_trip_and_store_each_plan_once(tmp_path) -> None:
    rec = power.Records(tmp_path)
    rec.append("audits", _record("a2c", 1))
    rec.append("audits", _record("a2c", 2))
    assert len(rec.plans()) == 1
    back = rec.audits()
    assert [r["seed"] for r in back] == [1, 2]
    assert back[0]["checks"] == _record("a2c", 1)["checks"]
    (tmp_path / "audits.jsonl").write_text("not json\n")
    with pytest.raises(power.PowerError, match=r"audits\.jsonl:1: expected a JSON record"):
        rec.load("audits")


def test_false_alarms_count_complete_seeds_only(tmp_path) -> None:
    rec = power.Records(tmp_path)
    head = {n for n, why in plan(_target("a2c")) if not why and "sampling" not in n
            and "log_prob_gradient" not in n}
    for seed in range(1, 6):  # audits from before the policy-head checks ...
        rec.append("audits", _record("a2c", seed, checks=sorted(head),
                                     failed=["in_expectation.advantages"] if seed == 2 else ()))
    for seed in (1, 2, 3):  # ... completed for three seeds; seed 3's policy head fails
        rec.append("audits", _record(
            "a2c", seed, scope="policy_head",
            checks=["given_the_batch.action_sampling@lqr",
                    "given_the_batch.log_prob_gradient@lqr"],
            failed=["given_the_batch.action_sampling@lqr"] if seed == 3 else ()))
    text = power.scorecard(rec, targets=["a2c"])
    row = next(line for line in text.splitlines() if line.startswith("| `a2c` |"))
    assert row.startswith("| `a2c` | 3 | 2 | 0.667 |"), row
    assert "`a2c` `in_expectation.advantages`: seeds 2" in text
    assert "`a2c` `given_the_batch.action_sampling@lqr`: seeds 3" in text
    assert "| zero false alarms" in text and "| no |" in text


def test_scorecard_kill_rates_per_layer_and_class(tmp_path) -> None:
    rec = power.Records(tmp_path)
    for m in MUTANTS.values():
        flagged = [] if m.equivalent or m.name == "gae_lambda_power" else \
            [["components.gae", "components"], ["given_the_batch.advantages", "given_the_batch"]]
        rec.append("mutants", {"mutant": m.name, "flagged": flagged, "seconds": 1.0,
                               "error": "", "commit": "abc1234", "date": "2026-11-22"})
    text = power.scorecard(rec, targets=["a2c"])
    n = sum(not m.equivalent for m in MUTANTS.values())
    assert f"| kill rate >= 95% of non-equivalent mutants | {n - 1}/{n} " in text
    assert "Survivors: `gae_lambda_power`." in text
    assert f"| components | {n - 1} | 0 |" in text
    assert "| GAE algebra | 3 | 2/3 | 0 |" in text
    matrix = power.kill_matrix_markdown(rec)
    # the report column comes from the defect registry (catalogue: gae_lambda_power)
    assert "| `gae_lambda_power` | ppo | GAE algebra | **no** | - | course code |" in matrix
    assert "| `truncation_as_termination` | ppo | truncation | yes | components: gae; " \
           "given_the_batch: advantages |" in matrix
    assert "* `policy_loss_doubled`: with gradient clipping off" in matrix
    # the generated pages date their records; commit hashes stay in the records
    assert "obtained on 2026-11-22" in matrix and "abc1234" not in matrix
    assert "Records obtained on 2026-11-22" in text and "abc1234" not in text


def test_date_span_of_records() -> None:
    assert power._date_span([{"date": "2026-11-30"}, {"date": "2026-11-22"}, {}]) == \
        "from 2026-11-22 to 2026-11-30"
    assert power._date_span([{"date": "2026-11-22"}]) == "on 2026-11-22"
    assert power._date_span([{"commit": "x"}]) == "at unrecorded dates"


def test_kill_matrix_rows_in_catalogue_order(tmp_path) -> None:
    """Jobs end in any order; the matrix lists mutants as the catalogue does (stable diffs)."""
    rec = power.Records(tmp_path)
    for name in reversed(list(MUTANTS)[:3]):
        rec.append("mutants", {"mutant": name, "flagged": [], "seconds": 1.0, "error": "",
                               "commit": "abc1234", "date": "2026-11-22"})
    matrix = power.kill_matrix_markdown(rec)
    where = [matrix.index(f"| `{name}` |") for name in list(MUTANTS)[:3]]
    assert where == sorted(where)


def test_run_jobs_resumes_and_skips_recorded_jobs(tmp_path, monkeypatch) -> None:
    log = tmp_path / "calls.txt"
    ready = {(t, s): _record(t, s) for t in ("a2c", "reinforce") for s in (1, 2)}

    def fake_job(job, scope, commit):  # runs in a forked worker: it logs to a file
        with open(log, "a") as fh:
            fh.write(f"{job[1]} {job[2]}\n")
        return {**ready[job[1:]], "scope": scope}

    def calls():
        return [tuple(x.split()) for x in log.read_text().splitlines()] if log.exists() else []

    monkeypatch.setattr(power, "run_job", fake_job)

    def forked(jobs):  # the test's job function is a closure: fork instead of spawn
        return LocalExecutor(jobs, start_method="fork")

    rec = power.Records(tmp_path / "rec")
    rec.append("audits", _record("a2c", 1))
    n = power.run_jobs(rec, mutants=[], targets=["a2c", "reinforce"], seeds=[1, 2],
                       executor=forked(2), progress=False)
    assert n == 3 and sorted(calls()) == [("a2c", "2"), ("reinforce", "1"), ("reinforce", "2")]
    assert power.run_jobs(rec, mutants=[], targets=["a2c", "reinforce"], seeds=[1, 2],
                          executor=forked(2), progress=False) == 0
    lines = (tmp_path / "rec" / "audits.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all("checks_id" in json.loads(x) for x in lines)
    # timing runs come last, one at a time, into their own records
    log.unlink()
    assert power.run_jobs(rec, mutants=[], targets=["a2c"], seeds=[1, 2], executor=forked(2),
                          progress=False, timing=2) == 2
    assert calls() == [("a2c", "1"), ("a2c", "2")]
    assert [r["seed"] for r in rec.load("timings")] == [1, 2]
    text = power.scorecard(rec, targets=["a2c"])
    assert "| `a2c` | 2 | 3.5 s | 4.0 s |" in text and "timing runs, one audit" in text


def test_cli_power_rejects_bad_arguments(capsys) -> None:
    from pgtheory.cli import main

    assert main(["audit", "ppo", "--power"]) == 2
    assert "expected no TARGET" in capsys.readouterr().err
    assert main(["audit", "--power", "--no-run", "--targets", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["audit", "--power", "--no-run", "--jobs", "0"]) == 2
    assert "--jobs: expected a positive integer, received 0" in capsys.readouterr().err
    # the library function takes typed arguments (was an argparse Namespace)
    with pytest.raises(power.PowerError, match="--jobs >= 1"):
        power.run(targets=["reinforce"], jobs=0, run_missing=False)


def test_cli_power_no_run_writes_the_scorecard(tmp_path) -> None:
    from pgtheory.cli import main

    rec = power.Records(tmp_path / "rec")
    rec.append("audits", _record("reinforce", 1))
    out = tmp_path / "card.md"
    code = main(["audit", "--power", "--no-run", "--records", str(tmp_path / "rec"),
                 "--targets", "reinforce", "--out", str(out)])
    assert code == 1  # goals not met: no mutants audited, 1 seed
    text = out.read_text()
    assert "| `reinforce` | 1 | 0 | 0.000 | [0.000, 0.975] |" in text
    assert "| `reinforce` | 1 | 3.0 s | 3.0 s | 3.0 s | - |" in text


def test_cli_power_executor_options(tmp_path, monkeypatch, capsys) -> None:
    import importlib.util

    from pgtheory.cli import main

    base = ["audit", "--power", "--no-run", "--records", str(tmp_path / "rec"), "--targets",
            "reinforce", "--out", str(tmp_path / "card.md")]
    assert main([*base, "--job-timeout", "-1"]) == 2
    assert "--job-timeout: expected seconds >= 0 (0: no limit), received -1" in \
        capsys.readouterr().err
    assert main([*base, "--retries", "-1"]) == 2
    assert "--retries: expected an integer >= 0, received -1" in capsys.readouterr().err
    assert main(["audit", "--ray-address", "auto"]) == 2
    assert "--ray-address: expected only with --power" in capsys.readouterr().err
    with pytest.raises(power.PowerError, match="expected --job-timeout >= 0 and --retries >= 0"):
        power.run(targets=["reinforce"], retries=-1, run_missing=False)
    # without Ray installed, --ray / --ray-address is one line naming the extra (exit 2)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else find_spec(name, *a))
    for flags in (["--ray"], ["--ray-address", "auto"]):
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err
        assert err == ("pgtheory audit: error: ray is not installed (needed for --ray): "
                       "pip install 'pgtheory[ray]'\n"), err


def test_the_lqr_update_scope_records_the_four_continuous_update_rows():
    # source: the suite's plan for a continuous-action target lists the four rows; the default
    # TRPO's MLP policy and critic make them not applicable (suite.continuous_update_checks)
    from pgtheory.lab import power as pw

    report = pw._lqr_update_report("trpo", 1)
    rec = pw.audit_record(report, scope="lqr_update", wall_s=None, commit="test")
    assert rec["exit_code"] == 0 and rec["checks"] == ["update_level.convergence@lqr",
                                                       "update_level.critic@lqr",
                                                       "update_level.improvement@lqr",
                                                       "update_level.kl@lqr"], rec
    assert {r["verdict"] for r in report["results"]} == {"skip"}
    assert all("not affine" in r["explanation"] for r in report["results"])


def test_the_lqr_expectation_scope_records_the_three_continuous_in_expectation_rows():
    # source: the suite's plan for a continuous-action target lists the three rows; the default
    # PPO's MLP policy leaves the exact samples to the advantage and value-target rows and makes
    # the gradient row not applicable (suite.continuous_expectation_checks)
    from pgtheory.lab import power as pw

    report = pw._lqr_expectation_report("ppo", 1)
    rec = pw.audit_record(report, scope="lqr_expectation", wall_s=None, commit="test")
    assert rec["exit_code"] == 0 and rec["checks"] == [
        "in_expectation.advantages@lqr", "in_expectation.policy_gradient@lqr",
        "in_expectation.returns@lqr"], rec
    verdicts = {r["name"]: r["verdict"] for r in report["results"]}
    assert verdicts == {"in_expectation.advantages@lqr": "pass",
                        "in_expectation.returns@lqr": "pass",
                        "in_expectation.policy_gradient@lqr": "skip"}


def test_scorecard_counts_the_exact_lqr_runs_per_target(tmp_path) -> None:
    """The affine-Gaussian @lqr records (docs/benchmarks/) get their own goal row and table;
    a seed with any failed row is a false alarm; the random configurations are left out."""
    root = tmp_path / "power"
    root.mkdir()
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    rows = ("advantages", "returns", "policy_gradient")
    with open(bench / "lqr_expectation_false_alarms.jsonl", "w") as fh:
        for seed in range(100):
            verdict = "fail" if seed == 7 else "pass"
            fh.write(json.dumps({"target": "linear:ppo", "seed": seed, "results": {
                f"in_expectation.{r}@lqr": {"verdict": verdict if r == "returns" else "pass"}
                for r in rows}}) + "\n")
        fh.write(json.dumps({"target": "campaign:ppo:1", "seed": 1, "results": {
            "in_expectation.advantages@lqr": {"verdict": "fail"}}}) + "\n")
    with open(bench / "lqr_update_false_alarms.jsonl", "w") as fh:
        for seed in range(40):
            fh.write(json.dumps({"target": "trpo", "seed": seed, "kl": "pass",
                                 "improvement": "pass", "convergence": "inconclusive",
                                 "critic": "inconclusive"}) + "\n")
    text = power.scorecard(power.Records(root), targets=[])
    assert ("| in-expectation | `ppo` | 100 | 1 | [0.000, 0.054] | advantages: pass 100; "
            "returns: fail 1, pass 99; policy_gradient: pass 100 |") in text
    assert ("| update level | `trpo` | 40 | 0 | [0.000, 0.088] | kl: pass 40; improvement: "
            "pass 40; convergence: inconclusive 40; critic: inconclusive 40 |") in text
    assert "`campaign:" not in text.split("## Continuous oracles where they are exact")[1]
    assert ("| zero false alarms over >= 100 seeds per affine-Gaussian target (exact `@lqr` "
            "rows) | 1 seed(s) with a fail; fewest seeds 40 | no |") in text
    assert "| kill rate >= 95% of non-equivalent mutants | no mutant runs recorded" in text


def test_scorecard_without_lqr_records_has_no_lqr_section(tmp_path) -> None:
    text = power.scorecard(power.Records(tmp_path), targets=[])
    assert "affine-Gaussian" not in text
