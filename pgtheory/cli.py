"""The ``pgtheory`` command line (one entry point; later issues add subcommands)."""

from __future__ import annotations

import argparse
import sys

import numpy as np


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
    from pgtheory import proofs

    if args.list or args.quantity is None:
        for q in proofs.list_quantities():
            print(f"{q.name:<28} {q.description}\n{'':<28} symbols: "
                  f"{', '.join(q.symbols)}; reference: {q.reference}")
        if not args.list:
            print("pgtheory check: error: expected QUANTITY EXPRESSION, received no QUANTITY",
                  file=sys.stderr)
        return 0 if args.list else 2
    if args.expression is None:
        print("pgtheory check: error: expected QUANTITY EXPRESSION, received no EXPRESSION",
              file=sys.stderr)
        return 2
    timeout = proofs.formulas.DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    if not np.isfinite(timeout) or timeout < 0:
        print(f"pgtheory check: error: --timeout: expected seconds >= 0 (0: no limit), "
              f"received {args.timeout}", file=sys.stderr)
        return 2
    try:
        res = proofs.check_formula(args.quantity, args.expression, timeout=timeout or None)
    except proofs.FormulaError as exc:  # bad input, or a size or time limit exceeded
        print(f"pgtheory check: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(res.message)
    return 0 if res.correct else 1


def _audit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.power:
        from pgtheory.lab import power

        if args.target or args.quick or args.json:
            print("pgtheory audit --power: expected no TARGET, --quick or --json (the power "
                  "run audits --targets over --seeds and writes --out)", file=sys.stderr)
            return 2
        return power.run(args)

    # user input first, before anything heavy runs (exit 2 with one line each)
    from pgtheory.oracles.audit import check_writable, validate_seed

    validate_seed(args.seed)
    if args.json:
        check_writable(args.json)
    if args.threads < 1:
        raise ValueError(f"--threads: expected a positive integer, received {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    from pgtheory.oracles.audit import (
        audit_config,
        format_report,
        resolve_target,
        run_audit,
        write_json,
    )
    from pgtheory.oracles.protocol import TargetProtocolError
    from pgtheory.oracles.suite import stages

    try:
        target = resolve_target(args.target)
        names = stages(target, audit_config(args.seed, args.quick))
    except TargetProtocolError as exc:
        print(f"pgtheory audit: error: {exc}", file=sys.stderr)
        if args.json:  # the record says why, for scripts that read it
            from pgtheory.oracles.audit import AuditReport

            write_json(AuditReport(target=args.target or "sb3:PPO", error=str(exc), exit_code=2,
                                   default_used=args.target is None, seed=args.seed,
                                   quick=args.quick), args.json)
        return 2
    bar = tqdm(total=len(names), desc="starting", unit="stage", file=sys.stderr,
               disable=args.no_progress, leave=False,
               bar_format="{desc:<28} {n_fmt}/{total_fmt} stages [{elapsed}]")

    started: list[str] = []

    def progress(stage: str) -> None:
        if started:  # a stage is counted when the next one starts
            bar.update(1)
        started.append(stage)
        bar.set_description_str(stage)

    report = run_audit(args.target, seed=args.seed, quick=args.quick, progress=progress,
                       target=target)
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


def _train(args: argparse.Namespace) -> int:
    from pgtheory.implementations import ALGORITHMS
    from pgtheory.implementations.train import parse_overrides, train

    if args.resume is None and args.algorithm is None:
        print("pgtheory train: expected ALGO (reinforce, a2c, trpo, ppo) or --resume DIR")
        return 2
    if args.resume is None and args.env is None:
        print("pgtheory train: expected --env ENV_ID (e.g. Hopper-v5, CartPole-v1, "
              "pgtheory/Probe5-v0)")
        return 2
    config_class = ALGORITHMS[args.algorithm][1] if args.algorithm in ALGORITHMS else None
    overrides = parse_overrides(args.set, config_class) if config_class else None
    res = train(args.algorithm, args.env, total_steps=args.total_steps, seed=args.seed,
                num_envs=args.num_envs, device=args.device, out=args.out, overrides=overrides,
                resume=args.resume, eval_episodes=args.eval_episodes,
                progress=not args.no_progress, tensorboard=not args.no_tensorboard,
                threads=args.threads)
    print(f"{res.iterations} iterations, {res.env_steps} env steps in {res.seconds:.1f} s; "
          f"training return (last 100 episodes) {res.train_return:.2f}; deterministic "
          f"evaluation {res.eval_return:.2f} +- {res.eval_std:.2f} over {res.eval_episodes} "
          f"episodes")
    print(f"logs, checkpoint and learning curve in {res.out}/")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from pgtheory.lab.scale import run_scale

    algos = tuple(a.strip() for a in args.algos.split(",") if a.strip())
    path = run_scale(args.env, algos=algos, budget=args.budget, device=args.device,
                     out=args.out, seed=args.seed, progress=not args.no_progress,
                     report_dir=args.report_dir)
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pgtheory",
        description="Exact policy-gradient theory and oracles for policy-gradient code.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print J, V, the policy gradient and the natural "
                                       "gradient on a bundled gridworld")
    demo.add_argument("--seed", type=int, default=0, help="seed for the random policy")
    demo.add_argument("--gamma", type=float, default=0.9, help="discount in [0, 1)")
    demo.set_defaults(func=_demo)
    prove = sub.add_parser("prove", help="verify the symbolic derivations (proofs/) and print "
                                         "a table; exit 1 if any fails")
    prove.add_argument("names", nargs="*", help="theorem names (default: all; see --list)")
    prove.add_argument("--list", action="store_true", help="list the theorems and exit")
    prove.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    prove.set_defaults(func=_prove)
    check = sub.add_parser("check", help="check your own formula for a named quantity "
                                         "against the reference; exit 1 if it is wrong")
    check.add_argument("quantity", nargs="?", help="quantity name (see --list)")
    check.add_argument("expression", nargs="?", help="your formula, sympy syntax")
    check.add_argument("--list", action="store_true", help="list the quantities and exit")
    check.add_argument("--timeout", type=float, metavar="SECONDS",
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
    audit.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    audit.add_argument("--seed", type=int, default=0, help="seed of the oracle MDP, agents "
                                                           "and statistical checks")
    audit.add_argument("--quick", action="store_true", help="fewer trials and no training "
                                                            "checks (about 4x faster)")
    audit.add_argument("--verbose", action="store_true", help="explain every check")
    audit.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (default 1: fastest for the audit's small "
                            "networks)")
    audit.add_argument("--no-progress", action="store_true", help="no progress display")
    audit.add_argument("--power", action="store_true",
                       help="measure the oracles' power instead: audit every mutant of "
                            "lab/mutants.py and the unmodified targets over many seeds "
                            "(resumable), then write the Markdown scorecard")
    from pgtheory.lab.power import build_parser

    build_parser(audit.add_argument_group("with --power"))
    audit.set_defaults(func=_audit)

    tr = sub.add_parser("train", help="train the project's REINFORCE, A2C, TRPO or PPO on a "
                                      "gymnasium environment (CSV/TensorBoard logs, "
                                      "checkpoints, resume, evaluation, learning curve)")
    tr.add_argument("algorithm", nargs="?", choices=["reinforce", "a2c", "trpo", "ppo"],
                    help="the algorithm (omit with --resume)")
    tr.add_argument("--env", help="gymnasium id: Hopper-v5, CartPole-v1, pgtheory/Probe5-v0, ...")
    tr.add_argument("--total-steps", type=int, default=1_000_000, help="env steps (default 1M)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--num-envs", type=int, default=1, help="parallel environments")
    tr.add_argument("--device", default="auto", help="auto | cpu | cuda (networks and updates; "
                                                     "envs step on the CPU)")
    tr.add_argument("--out", help="output directory (default runs/ALGO-ENV-sSEED)")
    tr.add_argument("--resume", metavar="DIR", help="continue a killed run from its directory")
    tr.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="configuration setting, e.g. --set learning_rate=1e-3 --set "
                         "normalize_obs=true (repeatable)")
    tr.add_argument("--eval-episodes", type=int, default=10,
                    help="episodes of the final deterministic evaluation")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--no-tensorboard", action="store_true", help="CSV log only")
    tr.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    tr.set_defaults(func=_train)

    sc = sub.add_parser("scale", help="train PPO, TRPO and A2C on a MuJoCo task with live oracle "
                                      "monitors and exact measurements (trust region, natural "
                                      "gradient, surrogate vs reality, gradient estimators, "
                                      "LQR anchor); writes REPORT.md and figures; resumable")
    sc.add_argument("--env", default="Hopper-v5", help="MuJoCo task (default Hopper-v5)")
    sc.add_argument("--algos", default="ppo,trpo,a2c", help="subset of ppo,trpo,a2c")
    sc.add_argument("--budget", default="small", choices=["small", "full"],
                    help="small: about 30 min on 2 CPU cores; full: 1M steps per algorithm")
    sc.add_argument("--device", default="auto", help="auto | cpu | cuda")
    sc.add_argument("--out", default="runs/scale", help="run directory (rerun to resume)")
    sc.add_argument("--report-dir", help="where REPORT.md and the figures go (default --out)")
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--no-progress", action="store_true", help="no progress bars")
    sc.set_defaults(func=_scale)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"pgtheory {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # e.g. a diverged training run (its checkpoint is kept)
        print(f"pgtheory {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
