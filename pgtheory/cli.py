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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"pgtheory {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
