"""Our TRPO against sb3-contrib's on Hopper-v5 with the trust region matched: table and curves.

Usage::

    python tests/benchmarks/trpo_kl_ablation.py --out docs/benchmarks/mujoco/trpo-kl \\
        "sb3-contrib TRPO, gymnasium wrappers=RUN_DIR,RUN_DIR" "ours, max_kl 0.01=RUN_DIR,..."

Each argument is ``LABEL=DIR[,DIR...]``: run directories written by ``pgtheory train`` or by
``sb3_trpo_run.py`` (``progress.csv`` with ``log_std_sum``, ``evaluation.json``). Writes
``RESULTS.md`` (per run: training return, the mean of the last 100 episodes at the end; the
deterministic evaluation; the final ``log_std_sum``, the policy's log standard deviations summed
over Hopper's 3 action dimensions) and ``curves.png`` (training return and ``log_std_sum``
against env steps; ``pgtheory train`` logs the spread after each update, ``sb3_trpo_run.py``
before it, one iteration of 2,048 steps apart).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def _run(path: Path) -> dict:
    with (path / "progress.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    ev = json.loads((path / "evaluation.json").read_text())
    return {"name": path.name, "steps": [int(r["env_steps"]) for r in rows],
            "returns": [float(r["return_mean"]) for r in rows],
            "log_std": [float(r["log_std_sum"]) for r in rows], "eval": float(ev["mean"])}


def _mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):,.0f} +- {sd:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("groups", nargs="+", metavar="LABEL=DIR[,DIR...]")
    a = ap.parse_args(argv)
    groups = {}
    for g in a.groups:
        label, sep, dirs = g.partition("=")
        if not sep or not dirs:
            print(f"trpo_kl_ablation: expected LABEL=DIR[,DIR...], received {g!r}",
                  file=sys.stderr)
            return 2
        paths = [Path(d) for d in dirs.split(",")]
        missing = [str(p) for p in paths if not (p / "evaluation.json").exists()]
        if missing:
            print(f"trpo_kl_ablation: expected finished runs (evaluation.json), received "
                  f"{', '.join(missing)}", file=sys.stderr)
            return 2
        groups[label] = [_run(p) for p in paths]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| runs | training return, mean +- std | per run | evaluation, mean +- std | "
             "per run | final log_std_sum per run |", "|---|---|---|---|---|---|"]
    for label, runs in groups.items():
        lines.append(
            f"| {label} ({len(runs)}) | {_mean_std([r['returns'][-1] for r in runs])} | "
            + ", ".join(f"{r['returns'][-1]:,.0f}" for r in runs)
            + f" | {_mean_std([r['eval'] for r in runs])} | "
            + ", ".join(f"{r['eval']:,.0f}" for r in runs) + " | "
            + ", ".join(f"{r['log_std'][-1]:.2f}" for r in runs) + " |")
    (out / "RESULTS.md").write_text(
        "# TRPO on Hopper-v5: the trust region matched\n\nCommand: `python "
        "tests/benchmarks/trpo_kl_ablation.py " + " ".join(
            f'"{g}"' if " " in g else g for g in sys.argv[1:]) + "`\n\n"
        + "\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, runs) in enumerate(groups.items()):
        color = f"C{i}"
        for j, r in enumerate(runs):
            ax1.plot(r["steps"], r["returns"], color=color, lw=1, label=label if j == 0 else None)
            ax2.plot(r["steps"], r["log_std"], color=color, lw=1, label=label if j == 0 else None)
    ax1.set(xlabel="env steps", ylabel="training return (last 100 episodes)")
    ax2.set(xlabel="env steps", ylabel="log_std_sum (3 action dimensions)")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
