"""The console entry point."""

import subprocess
import sys

import pytest

import pgtheory as pg
from pgtheory.cli import main


def test_demo_prints_the_exact_quantities(capsys):
    assert main(["demo", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for needle in ("J(pi) = mu . V_pi", "V_pi", "policy gradient", "natural gradient",
                   "exact TRPO step", "optimal J*"):
        assert needle in out
    # source: the printed J is the library's value for the same seeded policy
    mdp = pg.gridworld(3, 3, gamma=0.9, slip=0.1)
    import numpy as np
    theta = np.random.default_rng(3).normal(scale=0.5, size=36)
    j = pg.expected_return(mdp, pg.TabularSoftmax(9, 4).probs(theta))
    assert f"{j:.6f}" in out


def test_demo_bad_gamma_exits_2_with_message(capsys):
    assert main(["demo", "--gamma", "1.0"]) == 2
    assert "gamma" in capsys.readouterr().err


def test_console_script_module_runs():
    res = subprocess.run([sys.executable, "-m", "pgtheory.cli", "demo"], capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "natural gradient" in res.stdout


def test_power_options_match_the_power_parser_and_run_defaults():
    """``pgtheory audit --power`` builds its options without importing the power module; they
    must stay those of ``python -m pgtheory.lab.power``, whose defaults must be ``run``'s (the
    command line passes only the options given)."""
    import inspect

    from pgtheory.lab import power

    from pgtheory.cli import _POWER_OPTIONS

    parser = power.build_parser()
    flags = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    flags.pop("-h")
    flags.pop("--no-progress")
    assert {flag for flag, _ in _POWER_OPTIONS.values()} == set(flags)
    params = inspect.signature(power.run).parameters
    args = parser.parse_args([])
    for key, value in power.options(args).items():
        if key not in ("targets", "campaign_families", "progress"):
            assert params[key].default == value, key
    assert list(params["targets"].default) == args.targets.split(",")


def _fake_audit(monkeypatch, extra_stages=()):
    """Replace the audit by a stub that announces the planned stages (and ``extra_stages``)
    and records torch's thread count; returns the record."""
    import torch
    from pgtheory.oracles import audit
    from pgtheory.oracles.suite import stages

    seen = {}

    def run_audit(spec, *, seed, quick, progress, target):
        seen["threads"] = torch.get_num_threads()
        for name in [*stages(target, audit.audit_config(seed, quick)), *extra_stages]:
            progress(name)
        return audit.AuditReport(target=spec, seed=seed, quick=quick)

    monkeypatch.setattr(audit, "run_audit", run_audit)
    return seen


def test_audit_runs_torch_with_one_thread_by_default(monkeypatch, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        seen = _fake_audit(monkeypatch)
        assert main(["audit", "example-ppo", "--quick", "--no-progress"]) == 0
        assert seen["threads"] == 1
        assert main(["audit", "example-ppo", "--quick", "--no-progress", "--threads", "2"]) == 0
        assert seen["threads"] == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("extra", [(), ("a stage stages() did not list",)],
                         ids=["as-planned", "one-more"])
def test_audit_progress_ends_at_n_of_n_never_n_of_unknown(extra, monkeypatch, capsys):
    # Before: the display stopped at (N-1)/N; had the suite announced one stage more than
    # stages() lists, tqdm would have shown N/N then (N+1)/? (it drops a total it passed).
    import torch
    from pgtheory.oracles.suite import stages

    before = torch.get_num_threads()
    try:
        _fake_audit(monkeypatch, extra)
        assert main(["audit", "example-ppo", "--quick"]) == 0
    finally:
        torch.set_num_threads(before)
    from pgtheory.oracles.audit import audit_config, resolve_target

    n = len(stages(resolve_target("example-ppo"), audit_config(0, True))) + len(extra)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert "/?" not in err
    assert f"{n}/{n} stages" in err and f"{n + 1}/" not in err
