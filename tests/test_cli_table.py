"""The command line never tracebacks on user input (issue 20 item 6, issue 21).

Contract, for every row of :data:`ROWS`: ``python -m pgtheory.cli ARGV`` exits 2, prints nothing
on stdout and exactly one line on stderr, which contains the row's text (the argument, what was
expected, what was received), and no traceback. Rows not marked ``heavy`` also fail before
torch, gymnasium, Stable-Baselines3 or sympy is imported: a ``sitecustomize`` put on the
subprocess's path records the modules loaded at exit.

Before this table (measured on the command line of commit 4c4e7f1): argparse errors printed
the usage and the error (2-8 lines); ``--set normalize_obs=yes`` was refused; ``train`` without
ALGO or ``--env`` wrote to stdout; ``train --threads 0`` exited 1 with torch's message and
``--eval-episodes -1`` trained a million steps; ``audit --power --timing -1`` started the power
run; ``audit --power --campaign -1`` took 12 s of imports; ``check nosuch x`` was an
AttributeError traceback; ``check`` printed the quantity list on stdout; ``prove --json
/missing/dir/x.json`` ran every proof before failing to write; ``--resume`` ignored a
conflicting ``--env``/``--seed``/``--set`` and ``--total-steps``; ``--out`` silently trained
over an existing run; every ``train`` and ``audit`` error came after importing torch or
gymnasium.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest

from pgtheory.cli import main

HEAVY = ("torch", "gymnasium", "stable_baselines3", "sb3_contrib", "sympy")
#: what building the parser must not import either (``--help`` and ``demo`` load none of them)
PARSER_FREE = ("pgtheory.lab.power", "pgtheory.oracles")

SITECUSTOMIZE = textwrap.dedent("""
    import atexit, json, os, sys

    for name in filter(None, os.environ.get("PGTHEORY_TEST_HIDE", "").split(",")):
        sys.modules[name] = None  # as if not installed: find_spec returns None, import fails

    @atexit.register
    def _record():
        with open(os.environ["PGTHEORY_TEST_MODULES"], "w") as fh:
            json.dump(sorted(m for m in sys.modules if sys.modules[m] is not None and (
                m.split(".")[0] in %r or m in %r)), fh)
""") % (HEAVY, PARSER_FREE)

#: a wrong acceptance must stay cheap: 64 steps, and the power run regenerates the scorecard only
TRAIN = ["train", "ppo", "--env", "CartPole-v1", "--total-steps", "64", "--no-tensorboard"]
AUDIT = ["audit", "example-ppo", "--quick", "--no-progress"]
POWER = ["audit", "--power", "--no-run", "--records", "{tmp}/records", "--out", "{tmp}/card.md"]
#: (id, argv, text of the one stderr line, heavy imports allowed). ``{run}``: a run folder
#: (run.json of a 128-step PPO run on CartPole-v1, seed 0, learning_rate 0.0003, and a file
#: that is not a checkpoint); ``{norun}``: run.json without a checkpoint; ``{badjson}``: an
#: unreadable run.json; ``{tmp}``: an empty folder; ``{file}``: a plain file.
ROWS = [
    # train --set: typed by the configuration field
    ("set-lr-abc", [*TRAIN, "--set", "learning_rate=abc"],
     "--set learning_rate: expected a number, received 'abc'", False),
    ("set-clip-abc", [*TRAIN, "--set", "clip_range=abc"],
     "--set clip_range: expected a number, received 'abc'", False),
    ("set-target-kl-abc", [*TRAIN, "--set", "target_kl=abc"],
     "--set target_kl: expected a number or none, received 'abc'", False),
    ("set-epochs-float", [*TRAIN, "--set", "n_epochs=2.5"],
     "--set n_epochs: expected an integer, received '2.5'", False),
    ("set-epochs-abc", [*TRAIN, "--set", "n_epochs=abc"],
     "--set n_epochs: expected an integer, received 'abc'", False),
    ("set-bool-maybe", [*TRAIN, "--set", "normalize_obs=maybe"],
     "--set normalize_obs: expected true or false (also 1/0, yes/no), received 'maybe'", False),
    ("set-unknown", [*TRAIN, "--set", "learning_rat=1e-3"],
     "received unknown setting 'learning_rat'", False),
    ("set-no-equals", [*TRAIN, "--set", "learning_rate"],
     "--set: expected KEY=VALUE, received 'learning_rate'", False),
    # train: sizes, seeds, devices
    ("total-steps-zero", [*TRAIN, "--total-steps", "0"],
     "--total-steps: expected a positive integer, received 0", False),
    ("total-steps-negative", [*TRAIN, "--total-steps", "-5"],
     "--total-steps: expected a positive integer, received -5", False),
    ("total-steps-abc", [*TRAIN, "--total-steps", "abc"],
     "--total-steps: expected a positive integer, received 'abc'", False),
    ("num-envs-zero", [*TRAIN, "--num-envs", "0"],
     "--num-envs: expected a positive integer, received 0", False),
    ("train-threads-zero", [*TRAIN, "--threads", "0"],
     "--threads: expected a positive integer, received 0", False),
    ("eval-episodes-negative", [*TRAIN, "--eval-episodes", "-1"],
     "--eval-episodes: expected an integer >= 0, received -1", False),
    ("device-tpu", [*TRAIN, "--device", "tpu"],
     "--device: expected auto, cpu, cuda or cuda:N, received 'tpu'", False),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"],
     "--seed: expected an integer in [0, 2**32 - 1], received -1", False),
    ("no-env", ["train", "ppo"], "--env: expected a gymnasium id", False),
    ("no-algo", ["train"], "ALGO: expected reinforce, a2c, trpo or ppo", False),
    ("bad-algo", ["train", "xx", "--env", "CartPole-v1"],
     "argument ALGO: invalid choice: 'xx'", False),
    # train --out
    ("out-holds-run", [*TRAIN, "--out", "{run}"],
     "--out: expected a folder without a trained run", False),
    ("out-is-file", [*TRAIN, "--out", "{file}"], "--out: expected a folder", False),
    # train --resume
    ("resume-missing", ["train", "--resume", "{tmp}/nope"],
     "--resume: expected a run directory with run.json", False),
    ("resume-corrupt-json", ["train", "--resume", "{badjson}"],
     "--resume: expected a readable", False),
    ("resume-no-checkpoint", ["train", "--resume", "{norun}"],
     "--resume: expected a run folder with a checkpoint", False),
    ("resume-corrupt-checkpoint", ["train", "--resume", "{run}", "--total-steps", "256",
                                   "--no-progress", "--no-tensorboard"],
     "resume: expected a checkpoint of this run", True),
    ("resume-steps-equal", ["train", "--resume", "{run}", "--total-steps", "128"],
     "--total-steps: expected more than the 128 env steps", False),
    ("resume-steps-fewer", ["train", "--resume", "{run}", "--total-steps", "64"],
     "(to extend it), received 64", False),
    ("resume-env", ["train", "--resume", "{run}", "--env", "Pendulum-v1"],
     "--env: the run in", False),
    ("resume-seed", ["train", "--resume", "{run}", "--seed", "3"],
     "was saved with 0, and a resumed run keeps it; received 3", False),
    ("resume-algo", ["train", "a2c", "--resume", "{run}"],
     "ALGO: the run in", False),
    ("resume-set", ["train", "--resume", "{run}", "--set", "learning_rate=0.01"],
     "--set learning_rate: the run in", False),
    ("resume-num-envs", ["train", "--resume", "{run}", "--num-envs", "4"],
     "--num-envs: the run in", False),
    ("resume-out", ["train", "--resume", "{run}", "--out", "{tmp}"],
     "--out: a resumed run stays in its folder", False),
    ("resume-overwrite", ["train", "--resume", "{run}", "--overwrite"],
     "--overwrite: expected only for a new run", False),
    # audit
    ("audit-json-missing-folder", [*AUDIT, "--json", "/missing/dir/r.json"],
     "--json: expected a path in an existing folder", False),
    ("audit-threads-zero", [*AUDIT, "--threads", "0"],
     "--threads: expected a positive integer, received 0", False),
    ("audit-seed-negative", [*AUDIT, "--seed", "-1"],
     "seed: expected an integer in [0, 2**32 - 1], received -1", False),
    ("audit-seed-abc", [*AUDIT, "--seed", "abc"],
     "seed: expected an integer in [0, 2**32 - 1], received 'abc'", False),
    ("power-campaign-negative", [*POWER, "--campaign", "-1"],
     "--campaign: expected an integer >= 0, received -1", False),
    ("power-jobs-zero", [*POWER, "--jobs", "0"],
     "--jobs: expected a positive integer, received 0", False),
    ("power-seeds-negative", [*POWER, "--seeds", "-1"],
     "--seeds: expected an integer >= 0, received -1", False),
    ("power-timing-negative", [*POWER, "--timing", "-1"],
     "--timing: expected an integer >= 0, received -1", False),
    ("power-targets-empty", [*POWER, "--targets", ","],
     "--targets: expected a non-empty comma-separated list", False),
    ("power-families-unknown", [*POWER, "--campaign-families", "sb3-sac"],
     "--campaign-families: expected a subset of", False),
    ("power-with-target", [*POWER, "ppo"],
     "--power: expected no TARGET, --quick or --json", False),
    ("power-option-alone", [*AUDIT, "--seeds", "3"],
     "--seeds: expected only with --power", False),
    # check, prove
    ("bugs-unknown", ["bugs", "ppo_min_max_swaped"],
     "NAME: unknown defect 'ppo_min_max_swaped'; close names: ppo_min_max_swapped", False),
    ("check-nothing", ["check"], "QUANTITY EXPRESSION: expected a quantity name", False),
    ("check-no-expression", ["check", "gae_weight"],
     "EXPRESSION: expected your formula for gae_weight", False),
    ("check-timeout-negative", ["check", "--timeout", "-1", "gae_weight", "lam"],
     "--timeout: expected seconds >= 0 (0: no limit), received -1", False),
    ("check-unknown-quantity", ["check", "nosuch", "x"], "quantity: expected one of", True),
    ("prove-json-missing-folder", ["prove", "--json", "/missing/dir/x.json"],
     "--json: expected a path in an existing folder", False),
    ("prove-unknown", ["prove", "nosuch"], "unknown theorem(s) ['nosuch']", True),
    # scale
    ("scale-algos", ["scale", "--algos", "ppo,foo"],
     "--algos: expected a non-empty subset of ppo,trpo,a2c", False),
    ("scale-budget", ["scale", "--budget", "huge"],
     "--budget: invalid choice: 'huge'", False),
    ("scale-seed", ["scale", "--seed", "-1"],
     "--seed: expected an integer in [0, 2**32 - 1], received -1", False),
    ("scale-out-file", ["scale", "--out", "{file}"], "--out: expected a folder", False),
    # /proc passes os.access as root, but no folder can be made there
    ("scale-out-uncreatable", ["scale", "--out", "/proc/pgtheory-test/run"],
     "--out: expected a folder", False),
    # the command itself
    ("unknown-command", ["nosuch"], "argument COMMAND: invalid choice: 'nosuch'", False),
    ("no-command", [], "COMMAND: expected one of demo, prove, check, audit, train, scale",
     False),
    ("unknown-option", ["demo", "--nope"], "unrecognized arguments: --nope", False),
    ("demo-gamma-abc", ["demo", "--gamma", "abc"], "--gamma: invalid float value: 'abc'",
     False),
    ("demo-gamma-one", ["demo", "--gamma", "1"], "gamma: expected a value in [0, 1)", False),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict:
    """The folders and files the rows name, and the subprocess's sitecustomize."""
    root = tmp_path_factory.mktemp("cli_table")
    run = root / "run"
    run.mkdir()
    record = {"algorithm": "ppo", "env_id": "CartPole-v1", "seed": 0, "num_envs": 1,
              "total_steps": 128, "overrides": {}, "config": {"learning_rate": 0.0003},
              "env_steps": 128}
    (run / "run.json").write_text(json.dumps(record))
    (run / "checkpoint.pt").write_bytes(b"not a torch checkpoint")
    norun = root / "norun"
    norun.mkdir()
    (norun / "run.json").write_text(json.dumps(record))
    badjson = root / "badjson"
    badjson.mkdir()
    (badjson / "run.json").write_text("{bad")
    (badjson / "checkpoint.pt").write_bytes(b"")
    (root / "empty").mkdir()
    (root / "file").write_text("")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"run": str(run), "norun": str(norun), "badjson": str(badjson),
            "tmp": str(root / "empty"), "file": str(root / "file"), "root": root}


def _run(argv: list[str], places: dict, hide: str = "") -> tuple[subprocess.CompletedProcess,
                                                                  list[str]]:
    root = places["root"]
    env = dict(os.environ, PGTHEORY_TEST_MODULES=str(root / "modules.json"),
               PGTHEORY_TEST_HIDE=hide,
               PYTHONPATH=os.pathsep.join(filter(None, [str(root / "site"),
                                                        os.environ.get("PYTHONPATH")])))
    res = subprocess.run([sys.executable, "-m", "pgtheory.cli", *argv], capture_output=True,
                         text=True, check=False, cwd=places["tmp"], env=env, timeout=120)
    return res, json.loads((root / "modules.json").read_text())


def _assert_one_line(res: subprocess.CompletedProcess, expected: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert res.stdout == "", res.stdout
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), res.stderr
    assert lines[0].startswith("pgtheory"), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("argv, expected, heavy", [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_bad_argument_exits_2_with_one_line(argv, expected, heavy, places):
    res, modules = _run([a.format(**places) for a in argv], places)
    _assert_one_line(res, expected)
    if not heavy:
        loaded = [m for m in modules if m.split(".")[0] in HEAVY]
        assert loaded == [], f"imported before refusing: {loaded}"


@pytest.mark.parametrize("argv, extra", [
    (["check", "gae_weight", "lam**l"], "proofs"),
    (TRAIN, "oracles"),
], ids=["check-without-sympy", "train-without-torch"])
def test_a_missing_extra_is_one_line_naming_the_install(argv, extra, places):
    # source: pgtheory.extras.require's message names ``pip install 'pgtheory[EXTRA]'``
    res, _ = _run(argv, places, hide="sympy,torch")
    _assert_one_line(res, f"pip install 'pgtheory[{extra}]'")


@pytest.mark.parametrize("argv", [["--help"], ["demo"], ["train", "--help"],
                                  ["audit", "--help"]], ids=["help", "demo", "train-help",
                                                             "audit-help"])
def test_help_and_demo_load_no_heavy_module(argv, places):
    res, modules = _run(argv, places)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert modules == []


# ---------------------------------------------------------------- real (tiny) runs
TINY = ["--set", "num_steps=64", "--set", "n_minibatches=2", "--set", "n_epochs=1",
        "--eval-episodes", "0", "--no-progress", "--no-tensorboard", "--device", "cpu"]


def _steps(out) -> list[int]:
    with open(out / "progress.csv", newline="") as fh:
        return [int(r["env_steps"]) for r in csv.DictReader(fh)]


def test_resume_with_total_steps_extends_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--total-steps", "64", "--out", str(out), *TINY]) == 0
    before = _steps(out)
    assert before == [64]  # one iteration of 64 steps (num_steps 64, one env)
    assert main(["train", "--resume", str(out), "--total-steps", "192", "--no-progress",
                 "--eval-episodes", "0", "--no-tensorboard"]) == 0
    after = _steps(out)
    assert after == [64, 128, 192] and after[-1] > before[-1]
    assert json.loads((out / "run.json").read_text())["total_steps"] == 192
    capsys.readouterr()
    # the same total again is nothing to extend: refused, naming both numbers
    assert main(["train", "--resume", str(out), "--total-steps", "192"]) == 2
    err = capsys.readouterr().err
    assert "more than the 192 env steps" in err and "received 192" in err


def test_out_refuses_an_existing_run_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*TRAIN, "--total-steps", "64", "--out", str(out), *TINY]
    assert main(argv) == 0
    (out / "progress.csv").write_text("iteration,env_steps\n1,64\n2,128\n")  # marks the old run
    capsys.readouterr()
    assert main(argv) == 2
    out_text, err = capsys.readouterr()
    assert out_text == "" and len(err.splitlines()) == 1 and "--overwrite" in err
    assert _steps(out) == [64, 128]  # untouched
    assert main([*argv, "--overwrite"]) == 0
    assert _steps(out) == [64]  # the new run's log only


def test_bugs_prints_a_catalogue_entry_and_the_catalogue(capsys):
    """The NAME of an audit's ``[catalogue: NAME]`` opens with ``pgtheory bugs NAME``."""
    from pgtheory.oracles.defects import catalogue_markdown

    assert main(["bugs", "truncation_as_termination"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("truncation_as_termination (truncation):") and "CleanRL #198" in out
    assert main(["bugs"]) == 0
    assert capsys.readouterr().out == catalogue_markdown() + "\n"
