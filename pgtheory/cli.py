"""The ``pgtheory`` command line (one entry point; later issues add subcommands).

Every bad argument exits with status 2 and one line on stderr naming the argument, what was
expected and what was received, before any heavy import (torch, gymnasium, Stable-Baselines3,
sympy): the parser's types check what can be checked alone, and each command checks the rest
before it imports what it runs. A missing optional dependency
(:class:`pgtheory.extras.MissingExtraError`) is the same kind of line.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np

from pgtheory.extras import MissingExtraError


class UsageError(ValueError):
    """A bad command-line argument found after parsing (exit status 2, one line)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: error: MESSAGE`` on stderr, exit status 2
    (argparse's default prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} "
                     f"--help)\n")


# ------------------------------------------------------------------ argument types
def _integer(raw: str, expected: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, received {raw!r}") from None


def _int_at_least(low: int):
    """An argparse type: an integer >= ``low`` (message: expected ..., received ...)."""
    expected = "a positive integer" if low == 1 else f"an integer >= {low}"

    def parse(raw: str) -> int:
        value = _integer(raw, expected)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, received {value}")
        return value

    parse.__name__ = expected  # argparse names the type in some messages
    return parse


def _seed(raw: str) -> int:
    """An integer in [0, 2**32 - 1] (what numpy, torch and gymnasium accept)."""
    expected = "an integer in [0, 2**32 - 1]"
    value = _integer(raw, expected)
    if not 0 <= value <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"expected {expected}, received {value}")
    return value


def _seconds(raw: str) -> float:
    """Seconds >= 0 (0: no limit)."""
    expected = "seconds >= 0 (0: no limit)"
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, received {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected {expected}, received {raw}")
    return value


def _device(raw: str) -> str:
    if raw in ("auto", "cpu", "cuda") or (raw.startswith("cuda:") and raw[5:].isdigit()):
        return raw
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, received {raw!r}")


def _names(choices: tuple[str, ...] | None = None):
    """An argparse type: a comma-separated, non-empty list (of ``choices``)."""
    expected = ("a non-empty comma-separated list" if choices is None else
                f"a non-empty subset of {','.join(choices)} (comma-separated)")

    def parse(raw: str) -> list[str]:
        names = [n.strip() for n in raw.split(",") if n.strip()]
        bad = [n for n in names if choices is not None and n not in choices]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"expected {expected}, received {raw!r}"
                                             + (f" ({', '.join(bad)} unknown)" if bad else ""))
        return names

    return parse


def _file_path(raw: str) -> str:
    """A path where a file can be written: an existing, writable folder; not a folder."""
    folder = os.path.dirname(os.path.abspath(raw))
    if os.path.isdir(raw):
        raise argparse.ArgumentTypeError(f"expected a file path, received the folder {raw!r}")
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"expected a path in an existing folder, received "
                                         f"{raw!r} (no folder {folder!r})")
    if not os.access(folder, os.W_OK) or (os.path.exists(raw) and not os.access(raw, os.W_OK)):
        raise argparse.ArgumentTypeError(f"expected a writable path, received {raw!r} "
                                         f"(permission denied)")
    return raw


def _dir_path(raw: str) -> str:
    """A folder that exists and is writable, or can be created (its nearest existing
    ancestor is a writable folder)."""
    path = Path(raw).absolute()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, received {raw!r} (a file)")
    ancestor = next(p for p in (path, *path.parents) if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK):
        raise argparse.ArgumentTypeError(f"expected a folder that can be written, received "
                                         f"{raw!r} ({ancestor} is not writable)")
    return raw


def _bugs(args: argparse.Namespace) -> int:
    from pgtheory.oracles import defects

    if args.name is None:  # the whole catalogue, as docs/bugs.md
        print(defects.catalogue_markdown())
        return 0
    try:
        print(defects.describe(args.name))
    except defects.UnknownDefectError as exc:
        raise UsageError(f"NAME: {exc}") from exc
    return 0


def _demo(args: argparse.Namespace) -> int:
    import pgtheory as pg

    mdp = pg.gridworld(3, 3, gamma=args.gamma, slip=0.1)
    param = pg.TabularSoftmax(mdp.n_states, mdp.n_actions)
    rng = np.random.default_rng(args.seed)
    theta = rng.normal(scale=0.5, size=param.n_params)
    pi = param.probs(theta)
    np.set_printoptions(precision=4, suppress=True, linewidth=100)
    print("pgtheory exact-theory demo")
    print(f"MDP: 3x3 gridworld, slip 0.1, goal (terminal) bottom-right, gamma = {mdp.gamma}")
    print(f"policy: tabular softmax, theta ~ N(0, 0.5^2), seed {args.seed}\n")
    print(f"J(pi) = mu . V_pi = {pg.expected_return(mdp, pi):.6f}")
    print("V_pi (row-major over the grid):")
    print(pg.state_values(mdp, pi).reshape(3, 3))
    g = pg.policy_gradient(mdp, param, theta)
    ng = pg.natural_gradient(mdp, param, theta)
    print("\npolicy gradient dJ/dtheta[s, a] (rows: states; cols: up, right, down, left):")
    print(g.reshape(mdp.n_states, mdp.n_actions))
    print("\nnatural gradient F^+ dJ/dtheta:")
    print(ng.reshape(mdp.n_states, mdp.n_actions))
    step = pg.trpo_step(mdp, param, theta, max_kl=0.01)
    print(f"\nexact TRPO step (delta = 0.01): {step.message}; mean KL = {step.mean_kl:.5f}, "
          f"J improvement = {step.return_improvement:.6f}")
    opt = pg.policy_iteration(mdp)
    print(f"optimal J* = {float(mdp.mu @ opt.state_values):.6f} "
          f"(policy iteration, {opt.n_iter} rounds)")
    return 0


def _prove(args: argparse.Namespace) -> int:
    import json

    from pgtheory import proofs

    if args.list:
        for t in proofs.THEOREMS.values():
            print(f"{t.name:<26} {t.statement}\n{'':<26} source: {t.source}")
        return 0
    try:
        names = args.names or None

        def progress(i, n, theorem, verdict):
            print(f"[{i:>2}/{n}] {theorem.name:<26} {verdict.status:<8} {verdict.seconds:6.2f} s",
                  file=sys.stderr, flush=True)

        results = proofs.prove(names, on_result=progress)
    except KeyError as exc:
        print(f"pgtheory prove: error: {exc.args[0]}", file=sys.stderr)
        return 2
    width = max(len(t.name) for t, _ in results)
    print(f"{'theorem':<{width}}  {'status':<8} {'time':>7}  source")
    for t, v in results:
        print(f"{t.name:<{width}}  {v.status:<8} {v.seconds:6.2f}s  {t.source}")
    n_failed = sum(not v.ok for _, v in results)
    total = sum(v.seconds for _, v in results)
    counts = {s: sum(v.status == s for _, v in results) for s in ("proved", "checked", "failed")}
    print(f"\n{counts['proved']} proved, {counts['checked']} checked, {counts['failed']} failed "
          f"in {total:.1f} s")
    for t, v in results:
        if v.status != "proved":
            print(f"  {t.name} ({v.status}): {v.detail}")
    if args.json:
        payload = [dict(name=t.name, statement=t.statement, source=t.source, status=v.status,
                        detail=v.detail, seconds=v.seconds) for t, v in results]
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=2)
    return 1 if n_failed else 0


def _check(args: argparse.Namespace) -> int:
    if not args.list and args.quantity is None:
        raise UsageError("QUANTITY EXPRESSION: expected a quantity name and your formula "
                         "(pgtheory check --list names the quantities), received neither")
    if not args.list and args.expression is None:
        raise UsageError(f"EXPRESSION: expected your formula for {args.quantity} (sympy "
                         f"syntax), received none")
    from pgtheory import proofs

    if args.list:
        for q in proofs.list_quantities():
            print(f"{q.name:<28} {q.description}\n{'':<28} symbols: "
                  f"{', '.join(q.symbols)}; reference: {q.reference}")
        return 0
    limit = {} if args.timeout is None else {"timeout": args.timeout or None}
    try:
        res = proofs.check_formula(args.quantity, args.expression, **limit)
    except proofs.FormulaError as exc:  # bad input, or a size or time limit exceeded
        raise UsageError(str(exc)) from exc
    print(res.message)
    return 0 if res.correct else 1


#: ``pgtheory audit --power`` options: dest -> (flag, argparse keywords). Their defaults live
#: in :func:`pgtheory.lab.power.run` (None here means "not given"); the parser is built without
#: importing the power module.
_POWER_OPTIONS: dict[str, tuple[str, dict]] = {
    "seeds": ("--seeds", dict(type=_int_at_least(0), metavar="N",
                              help="false-alarm seeds per target: 1..N (default 100)")),
    "targets": ("--targets", dict(type=_names(), metavar="LIST",
                                  help="comma-separated targets for the false-alarm runs "
                                       "(default: ppo, trpo, a2c, reinforce and the "
                                       "Stable-Baselines3 / sb3-contrib controls)")),
    "jobs": ("--jobs", dict(type=_int_at_least(1), help="jobs at a time (default 2; with "
                                                        "--ray: the cluster's CPUs)")),
    "records": ("--records", dict(type=_dir_path, help="records directory (default "
                                                       "docs/power)")),
    "power_out": ("--out", dict(type=_file_path, metavar="PATH",
                                help="the Markdown scorecard (default docs/scorecard.md)")),
    "no_run": ("--no-run", dict(action="store_true", default=None,
                                help="only regenerate the scorecard from the records")),
    "skip_mutants": ("--skip-mutants", dict(action="store_true", default=None,
                                            help="no kill-matrix audits")),
    "scope": ("--scope", dict(choices=("audit", "policy_head", "lqr_update", "lqr_expectation",
                                       "gaussian_density"),
                              help=argparse.SUPPRESS)),
    "timing": ("--timing", dict(type=_int_at_least(0), metavar="N",
                                help="audits per target timed one at a time, last "
                                     "(default 3)")),
    "fresh": ("--fresh", dict(action="store_true", default=None,
                              help="discard the records first")),
    "campaign": ("--campaign", dict(type=_int_at_least(0), metavar="N",
                                    help="also audit random correct configurations 1..N of "
                                         "each family (lab/campaign.py), configuration i at "
                                         "seed i; records in RECORDS/campaign.jsonl (default "
                                         "0: none). With --skip-mutants --seeds 0 --timing 0 "
                                         "only the campaign runs")),
    "ray": ("--ray", dict(action="store_true", default=None,
                          help="run the jobs as Ray tasks of one CPU each, on a local Ray "
                               "started for the run (or the cluster RAY_ADDRESS names); pip "
                               "install 'pgtheory[ray]'")),
    "ray_address": ("--ray-address", dict(metavar="ADDRESS",
                                          help="run the jobs on this existing Ray cluster "
                                               "(implies --ray), e.g. auto or HOST:6379")),
    "job_timeout": ("--job-timeout", dict(type=_seconds, metavar="S",
                                          help="seconds before a job is killed and run again "
                                               "(default 3600; 0: no limit)")),
    "retries": ("--retries", dict(type=_int_at_least(0), metavar="N",
                                  help="further attempts of a job whose worker was lost or "
                                       "timed out, before it is recorded as an error "
                                       "(default 2)")),
    "campaign_families": ("--campaign-families", dict(
        type=_names(), metavar="LIST", help="comma-separated campaign families (default: "
                                            "all of sb3-ppo, sb3-a2c, sb3-trpo, ppo, a2c, "
                                            "trpo, reinforce)")),
}


def _power(args: argparse.Namespace) -> int:
    if args.target or args.quick or args.json:
        raise UsageError("--power: expected no TARGET, --quick or --json (the power run "
                         "audits --targets over --seeds and writes --out), received "
                         + ", ".join(x for x, given in (("TARGET", args.target),
                                                         ("--quick", args.quick),
                                                         ("--json", args.json)) if given))
    given = {dest: getattr(args, dest) for dest in _POWER_OPTIONS
             if getattr(args, dest) is not None}
    if given.get("campaign_families"):
        from pgtheory.lab.campaign import FAMILIES  # numpy only

        bad = [f for f in given["campaign_families"] if f not in FAMILIES]
        if bad:
            raise UsageError(f"--campaign-families: expected a subset of {','.join(FAMILIES)}, "
                             f"received {','.join(given['campaign_families'])} "
                             f"({', '.join(bad)} unknown)")
    kwargs = {dict(power_out="out", no_run="run_missing",
                   skip_mutants="mutants").get(dest, dest): value
              for dest, value in given.items()}
    for flag in ("run_missing", "mutants"):  # the options say "not"
        if flag in kwargs:
            kwargs[flag] = not kwargs[flag]
    from pgtheory.lab import power

    try:
        return power.run(**kwargs, progress=not args.no_progress)
    except KeyboardInterrupt:  # the running jobs were stopped; the records are whole
        print("pgtheory audit: interrupted; the records written so far are kept, and the same "
              "command resumes", file=sys.stderr)
        return 130


def _audit(args: argparse.Namespace) -> int:
    if args.power:
        return _power(args)
    given = [_POWER_OPTIONS[d][0] for d in _POWER_OPTIONS if getattr(args, d) is not None]
    if given:
        raise UsageError(f"{given[0]}: expected only with --power (an option of the power "
                         f"run), received it without --power")
    # the arguments were checked by the parser's types; now the heavy imports
    from pgtheory.extras import require

    require("oracles", "pgtheory audit")  # a missing sb3 extra is named by the SB3 adapter
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    from pgtheory.lab.campaign import resolve_target  # every TARGET form, campaign:... too
    from pgtheory.oracles.audit import (
        AuditReport,
        audit_config,
        format_report,
        run_audit,
        write_json,
    )
    from pgtheory.oracles.protocol import TargetProtocolError
    from pgtheory.oracles.suite import stages

    try:
        target = resolve_target(args.target)
        names = stages(target, audit_config(args.seed, args.quick))
    except TargetProtocolError as exc:
        print(f"pgtheory audit: error: {' '.join(str(exc).split())}", file=sys.stderr)
        if args.json:  # the record says why, for scripts that read it
            write_json(AuditReport(target=args.target or "sb3:PPO", error=str(exc), exit_code=2,
                                   default_used=args.target is None, seed=args.seed,
                                   quick=args.quick), args.json)
        return 2
    bar = tqdm(total=len(names), desc="starting", unit="stage", file=sys.stderr,
               disable=args.no_progress, leave=False,
               bar_format="{desc:<28} {n_fmt}/{total_fmt} stages [{elapsed}]")
    started: list[str] = []

    def progress(stage: str) -> None:
        # A stage is done when the next one starts; the count never passes the total, which
        # would make tqdm show "N/?" (a stage the suite announces but stages() did not list
        # raises the total instead).
        started.append(stage)
        bar.total = max(bar.total, len(started))
        bar.n = len(started) - 1
        bar.set_description_str(stage)  # refreshes

    report = run_audit(args.target, seed=args.seed, quick=args.quick, progress=progress,
                       target=target)
    bar.n = bar.total
    bar.set_description_str("done")
    bar.close()
    print(format_report(report, verbose=args.verbose))
    if args.json:
        try:
            write_json(report, args.json)
        except OSError as exc:
            print(f"pgtheory audit: error: could not write --json {args.json}: {exc}",
                  file=sys.stderr)
            return 2
    return report.exit_code


def _train_arguments(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`pgtheory.implementations.train.train`, every argument
    checked without importing torch or gymnasium (UsageError: one line naming it)."""
    from pgtheory.implementations import train as tr  # torch-free until train() runs

    if args.resume is None:
        if args.algorithm is None:
            raise UsageError("ALGO: expected reinforce, a2c, trpo or ppo (or --resume DIR), "
                             "received none")
        if args.env is None:
            raise UsageError("--env: expected a gymnasium id (e.g. Hopper-v5, CartPole-v1, "
                             "pgtheory/Probe5-v0), received none")
        seed = 0 if args.seed is None else args.seed
        out = Path(args.out) if args.out else tr.default_out(args.algorithm, args.env, seed)
        if tr.holds_run(out) and not args.overwrite:
            raise UsageError(f"--out: expected a folder without a trained run, received "
                             f"{str(out)!r}, which holds one; continue it with --resume "
                             f"{out}, or replace it with --overwrite")
        return dict(algorithm=args.algorithm, env_id=args.env, seed=seed,
                    num_envs=args.num_envs or 1, out=out, overwrite=args.overwrite,
                    overrides=tr.parse_settings(args.algorithm, args.set) or None,
                    total_steps=args.total_steps)
    run = tr.read_run(args.resume, argument="--resume")
    where = f"the run in {args.resume!r}"
    if not tr.holds_run(args.resume):
        raise UsageError(f"--resume: expected a run folder with a checkpoint, received "
                         f"{args.resume!r} (no checkpoint: it stopped before its first "
                         f"iteration; start it anew with --out {args.resume})")
    saved = {"ALGO": (args.algorithm, run["algorithm"]), "--env": (args.env, run["env_id"]),
             "--seed": (args.seed, run["seed"]), "--num-envs": (args.num_envs, run["num_envs"])}
    for flag, (value, kept) in saved.items():
        if value is not None and value != kept:
            raise UsageError(f"{flag}: {where} was saved with {kept}, and a resumed run keeps "
                             f"it; received {value}")
    if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
        raise UsageError(f"--out: a resumed run stays in its folder {args.resume!r}; received "
                         f"{args.out!r}")
    if args.overwrite:
        raise UsageError("--overwrite: expected only for a new run (it replaces the run in "
                         "--out), received it with --resume")
    config = run["config"]
    for key, value in tr.parse_settings(run["algorithm"], args.set).items():
        value = list(value) if isinstance(value, tuple) else value
        if key in config and value != config[key]:
            raise UsageError(f"--set {key}: {where} was saved with {key}={config[key]}, and a "
                             f"resumed run keeps its settings; received {value}")
    if args.total_steps is not None:
        done = tr.steps_done(args.resume)
        if args.total_steps <= done:
            raise UsageError(f"--total-steps: expected more than the {done} env steps "
                             f"{where} has done (to extend it), received {args.total_steps}")
    return dict(algorithm=None, env_id=None, resume=args.resume, total_steps=args.total_steps)


def _train(args: argparse.Namespace) -> int:
    kwargs = _train_arguments(args)
    from pgtheory.implementations.train import train

    res = train(**kwargs, device=args.device, eval_episodes=args.eval_episodes,
                progress=not args.no_progress, tensorboard=not args.no_tensorboard,
                threads=args.threads)
    print(f"{res.iterations} iterations, {res.env_steps} env steps in {res.seconds:.1f} s; "
          f"training return (last 100 episodes) {res.train_return:.2f}; deterministic "
          f"evaluation {res.eval_return:.2f} +- {res.eval_std:.2f} over {res.eval_episodes} "
          f"episodes")
    print(f"logs, checkpoint and learning curve in {res.out}/")
    return 0


def _scale(args: argparse.Namespace) -> int:
    try:  # before the heavy imports: a folder that cannot be made is the user's to fix
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: expected a folder that can be created, received "
                         f"{args.out!r} ({exc.strerror or exc})") from None
    from pgtheory.lab.scale import run_scale

    path = run_scale(args.env, algos=tuple(args.algos), budget=args.budget,
                     device=args.device, out=args.out, seed=args.seed,
                     progress=not args.no_progress, report_dir=args.report_dir)
    print(f"report: {path}")
    return 0


COMMANDS = ("demo", "prove", "check", "audit", "train", "scale", "bugs")


def build_parser() -> argparse.ArgumentParser:
    """The ``pgtheory`` parser (imports nothing beyond the standard library)."""
    parser = _Parser(
        prog="pgtheory",
        description="Exact policy-gradient theory and oracles for policy-gradient code.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                help=f"one of {', '.join(COMMANDS)}")
    demo = sub.add_parser("demo", help="print J, V, the policy gradient and the natural "
                                       "gradient on a bundled gridworld")
    demo.add_argument("--seed", type=_seed, default=0, help="seed for the random policy")
    demo.add_argument("--gamma", type=float, default=0.9, help="discount in [0, 1)")
    demo.set_defaults(func=_demo)
    bugs = sub.add_parser("bugs", help="the bug catalogue: every known defect class with its "
                                       "public reports, or one entry (the NAME an audit's "
                                       "diagnosis gives as [catalogue: NAME])")
    bugs.add_argument("name", nargs="?", metavar="NAME", help="one catalogue entry")
    bugs.set_defaults(func=_bugs)
    prove = sub.add_parser("prove", help="verify the symbolic derivations (proofs/) and print "
                                         "a table; exit 1 if any fails")
    prove.add_argument("names", nargs="*", help="theorem names (default: all; see --list)")
    prove.add_argument("--list", action="store_true", help="list the theorems and exit")
    prove.add_argument("--json", metavar="PATH", type=_file_path,
                       help="also write the results as JSON")
    prove.set_defaults(func=_prove)
    check = sub.add_parser("check", help="check your own formula for a named quantity "
                                         "against the reference; exit 1 if it is wrong")
    check.add_argument("quantity", nargs="?", help="quantity name (see --list)")
    check.add_argument("expression", nargs="?", help="your formula, sympy syntax")
    check.add_argument("--list", action="store_true", help="list the quantities and exit")
    check.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                       help="time limit on parsing, simplifying and evaluating (default 20; "
                            "0: no limit); exceeding it, or a size limit, exits 2")
    check.set_defaults(func=_check)
    audit = sub.add_parser(
        "audit", help="run every applicable oracle check against an implementation (e.g. "
                      "sb3:PPO) and print a report; exit 0 no defect found, 1 a check failed "
                      "(a defect), 2 bad arguments, or the target could not be loaded or "
                      "crashed",
        description="TARGET: sb3:PPO | sb3:A2C | sb3-contrib:TRPO | sb3:MODULE:FACTORY "
                    "(FACTORY(env) returns a configured SB3 model) | example-ppo | example-a2c "
                    "| example-trpo | MODULE:ATTR (a protocol target). Without TARGET "
                    "the built-in default sb3:PPO is audited.")
    audit.add_argument("target", nargs="?", help="what to audit (default: sb3:PPO)")
    audit.add_argument("--json", metavar="PATH", type=_file_path,
                       help="also write the report as JSON")
    audit.add_argument("--seed", type=_seed, default=0, help="seed of the oracle MDP, agents "
                                                             "and statistical checks")
    audit.add_argument("--quick", action="store_true", help="fewer trials and no training "
                                                            "checks (about 4x faster)")
    audit.add_argument("--verbose", action="store_true", help="explain every check")
    audit.add_argument("--threads", type=_int_at_least(1), default=1,
                       help="torch CPU threads (default 1: fastest for the audit's small "
                            "networks)")
    audit.add_argument("--no-progress", action="store_true", help="no progress display")
    audit.add_argument("--power", action="store_true",
                       help="measure the oracles' power instead: audit every mutant of "
                            "lab/mutants.py and the unmodified targets over many seeds "
                            "(resumable), then write the Markdown scorecard")
    power = audit.add_argument_group("with --power")
    for dest, (flag, kw) in _POWER_OPTIONS.items():
        power.add_argument(flag, dest=dest, **kw)
    audit.set_defaults(func=_audit)

    tr = sub.add_parser("train", help="train the project's REINFORCE, A2C, TRPO or PPO on a "
                                      "gymnasium environment (CSV/TensorBoard logs, "
                                      "checkpoints, resume, evaluation, learning curve)")
    tr.add_argument("algorithm", nargs="?", metavar="ALGO",
                    choices=["reinforce", "a2c", "trpo", "ppo"],
                    help="reinforce, a2c, trpo or ppo (omit with --resume)")
    tr.add_argument("--env", help="gymnasium id: Hopper-v5, CartPole-v1, pgtheory/Probe5-v0, ...")
    tr.add_argument("--total-steps", type=_int_at_least(1),
                    help="env steps summed over the environments (default 1M); with --resume, "
                         "more than the run has done extends it to that many")
    tr.add_argument("--seed", type=_seed, help="seed (default 0)")
    tr.add_argument("--num-envs", type=_int_at_least(1),
                    help="parallel environments (default 1)")
    tr.add_argument("--device", type=_device, default="auto",
                    help="auto | cpu | cuda (networks and updates; envs step on the CPU)")
    tr.add_argument("--out", type=_dir_path,
                    help="output directory (default runs/ALGO-ENV-sSEED); one that holds a "
                         "trained run is refused unless --overwrite")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace the run in --out (its logs, checkpoint and evaluation)")
    tr.add_argument("--resume", metavar="DIR",
                    help="continue a run from its folder (a killed run, or one to extend with "
                         "--total-steps); its saved settings are kept")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="configuration setting, e.g. --set learning_rate=1e-3 --set "
                         "normalize_obs=true (repeatable)")
    tr.add_argument("--eval-episodes", type=_int_at_least(0), default=10,
                    help="episodes of the final deterministic evaluation (0: none)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--no-tensorboard", action="store_true", help="CSV log only")
    tr.add_argument("--threads", type=_int_at_least(1), default=1,
                    help="torch CPU threads (default 1)")
    tr.set_defaults(func=_train)

    sc = sub.add_parser("scale", help="train PPO, TRPO and A2C on a MuJoCo task with live oracle "
                                      "monitors and exact measurements (trust region, natural "
                                      "gradient, surrogate vs reality, gradient estimators, "
                                      "LQR anchor); writes REPORT.md and figures; resumable")
    sc.add_argument("--env", default="Hopper-v5", help="MuJoCo task (default Hopper-v5)")
    sc.add_argument("--algos", default="ppo,trpo,a2c", type=_names(("ppo", "trpo", "a2c")),
                    help="subset of ppo,trpo,a2c")
    sc.add_argument("--budget", default="small", choices=["small", "full"],
                    help="small: about 30 min on 2 CPU cores; full: 1M steps per algorithm")
    sc.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda")
    sc.add_argument("--out", type=_dir_path, default="runs/scale",
                    help="run directory (rerun to resume)")
    sc.add_argument("--report-dir", type=_dir_path,
                    help="where REPORT.md and the figures go (default --out)")
    sc.add_argument("--seed", type=_seed, default=0)
    sc.add_argument("--no-progress", action="store_true", help="no progress bars")
    sc.set_defaults(func=_scale)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1, or 2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, its line already printed)
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        print(f"pgtheory: error: COMMAND: expected one of {', '.join(COMMANDS)}, received none "
              f"(see pgtheory --help)", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (ValueError, MissingExtraError) as exc:  # bad input, or an extra to install
        _error(args.command, exc)
        return 2
    except (RuntimeError, OSError) as exc:  # e.g. a diverged training run (checkpoint kept)
        _error(args.command, exc)
        return 1


def _error(command: str, exc: BaseException) -> None:
    print(f"pgtheory {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
