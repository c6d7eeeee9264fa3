"""Returns at scale: the (algorithm x environment x seed) grid of ``pgtheory train`` runs.

Usage::

    python tests/benchmarks/mujoco_returns.py --algos ppo,trpo --envs Hopper-v5 \\
        --seeds 0,1,2 --steps 1000000 --jobs 2 --out docs/benchmarks/mujoco

(``make bench-returns``). Every cell is one ``pgtheory train`` process writing its own run
directory under ``--out``, run by an executor of :mod:`pgtheory.lab.executors`: ``--jobs`` at
once on this machine (one torch thread each), or with ``--ray`` / ``--ray-address ADDRESS`` as
Ray tasks of one CPU (and ``--gpus-per-job`` GPUs, training on ``cuda``) each; with a cluster,
``--out`` must be a folder every node sees. A run whose worker is lost or that exceeds
``--job-timeout`` is started again (``--retries``; it continues from its checkpoint). The script is
resumable: a finished cell (``evaluation.json`` present) is skipped and a killed one is continued
with ``--resume``. At the end it writes ``RESULTS.md`` (per seed and mean +- std over seeds of the
mean return of the last 100 training episodes, the final deterministic evaluation, wall time,
and the published anchors) and ``returns.png`` (learning curves).

Settings per algorithm (``SETTINGS``): PPO with observation normalization and reward scaling
(as the single-file PPO of the anchor), 1 environment; TRPO with both and 2 environments (as
sb3-contrib's tuned Hopper settings in RL Baselines3 Zoo). Anchors at 1M steps, mean of the last
100 training episodes, 3 seeds: PPO (a popular single-file PPO, MuJoCo v4) HalfCheetah 1442,
Hopper 2383, Walker2d 2288; TRPO (sb3-contrib, v3, tuned) HalfCheetah 1803, Hopper 3372,
Walker2d 4502 (reported by RL Baselines3 Zoo for v3 environments, so indicative only). The
algorithm ``sb3-trpo`` runs that peer in the same grid (``sb3_trpo_run.py``: sb3-contrib TRPO with
the zoo's tuned settings on the same environment version), so the two TRPOs are compared in one
run rather than against a published figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pgtheory.lab.executors import make_executor

from pgtheory.extras import MissingExtraError

SETTINGS = {
    "ppo": {"num_envs": 1, "set": ["normalize_obs=true", "scale_rewards=true"]},
    "trpo": {"num_envs": 2, "set": ["normalize_obs=true", "scale_rewards=true"]},
    "a2c": {"num_envs": 8, "set": ["normalize_obs=true", "scale_rewards=true"]},
    "reinforce": {"num_envs": 4, "set": ["normalize_obs=true", "scale_rewards=true"]},
    # the peer, run in the same grid: sb3-contrib TRPO with the zoo's tuned settings
    "sb3-trpo": {"script": str(Path(__file__).with_name("sb3_trpo_run.py"))},
}
ANCHORS = {("ppo", "HalfCheetah"): 1442, ("ppo", "Hopper"): 2383, ("ppo", "Walker2d"): 2288,
           ("trpo", "HalfCheetah"): 1803, ("trpo", "Hopper"): 3372,
           ("trpo", "Walker2d"): 4502}
ANCHORS.update({("sb3-trpo", env): v for (a, env), v in list(ANCHORS.items()) if a == "trpo"})


def _cell(out: Path, algo: str, env: str, seed: int, steps: int, device: str = "cpu") -> dict:
    run = out / f"{algo}-{env}-s{seed}"
    if (run / "evaluation.json").exists():
        return _summary(run, algo, env, seed)
    s = SETTINGS[algo]
    if "script" in s:  # a peer library: its own resumable runner, same run-directory layout
        if (run / "checkpoint.json").exists():
            cmd = [sys.executable, s["script"], "--resume", str(run)]
        else:
            cmd = [sys.executable, s["script"], "--env", env, "--seed", str(seed),
                   "--total-steps", str(steps), "--out", str(run)]
        cmd += ["--device", device]
    elif (run / "checkpoint.pt").exists():
        cmd = [sys.executable, "-m", "pgtheory.cli", "train", "--resume", str(run)]
    else:
        cmd = [sys.executable, "-m", "pgtheory.cli", "train", algo, "--env", env,
               "--total-steps", str(steps), "--seed", str(seed), "--num-envs",
               str(s["num_envs"]), "--device", device, "--out", str(run)]
        for item in s["set"]:
            cmd += ["--set", item]
    if "script" not in s:
        cmd += ["--no-progress", "--threads", "1"]
    t0 = time.time()
    with (out / f"{run.name}.log").open("a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"{run.name}: exit {rc} after {time.time() - t0:.0f} s", flush=True)
    return _summary(run, algo, env, seed)


def _summary(run: Path, algo: str, env: str, seed: int) -> dict:
    rows = []
    if (run / "progress.csv").exists():
        with (run / "progress.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
    ev = json.loads((run / "evaluation.json").read_text()) if (
        run / "evaluation.json").exists() else None
    last = rows[-1] if rows else {}
    return {"algo": algo, "env": env, "seed": seed, "run": run,
            "steps": int(last.get("env_steps", 0) or 0),
            "train_return": float(last.get("return_mean", "nan") or "nan"),
            "eval": ev["mean"] if ev else float("nan"),
            "hours": float(last.get("time_s", 0) or 0) / 3600, "rows": rows}


def _write(out: Path, cells: list[dict], command: str) -> None:
    lines = ["# Returns of `pgtheory train` on MuJoCo", "", f"Command: `{command}`", "",
             "Return = mean of the last 100 training episodes at the end of the run; eval = "
             "final deterministic evaluation (10 episodes, policy mean, frozen observation "
             "statistics).", "",
             "| algorithm | env | seeds | env steps | return (mean +- std over seeds) | "
             "per seed | eval per seed | anchor | wall time per run (h) |",
             "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list] = {}
    for c in cells:
        groups.setdefault((c["algo"], c["env"]), []).append(c)
    for (algo, env), cs in groups.items():
        rets = [c["train_return"] for c in cs]
        evals = [c["eval"] for c in cs]
        mean = statistics.mean(rets)
        std = statistics.stdev(rets) if len(rets) > 1 else 0.0
        anchor = ANCHORS.get((algo, env.split("-")[0]), "-")
        lines.append(f"| {algo.upper()} | {env} | {len(cs)} | {min(c['steps'] for c in cs):,} | "
                     f"{mean:.0f} +- {std:.0f} | {', '.join(f'{r:.0f}' for r in rets)} | "
                     f"{', '.join(f'{e:.0f}' for e in evals)} | {anchor} | "
                     f"{statistics.mean(c['hours'] for c in cs):.2f} |")
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len({c["env"] for c in cells}), figsize=(6.5, 3.8), dpi=120,
                             squeeze=False)
    envs = sorted({c["env"] for c in cells})
    for c in cells:
        ax = axes[0][envs.index(c["env"])]
        pts = [(int(r["env_steps"]), float(r["return_mean"])) for r in c["rows"]
               if r["return_mean"] not in ("", "nan")]
        if pts:
            x, y = zip(*pts, strict=True)
            color = f"C{sorted(SETTINGS).index(c['algo'])}"
            ax.plot(x, y, color=color, lw=1, alpha=0.8,
                    label=c["algo"].upper() if c["seed"] == min(
                        d["seed"] for d in cells if d["algo"] == c["algo"]) else None)
        ax.set_title(c["env"])
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (last 100 training episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "returns.png")
    print((out / "RESULTS.md").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", default="ppo,trpo")
    ap.add_argument("--envs", default="Hopper-v5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=None,
                    help="runs at a time (default 2; with Ray: the cluster's CPUs)")
    ap.add_argument("--out", default="docs/benchmarks/mujoco")
    ap.add_argument("--ray", action="store_true", help="run the cells as Ray tasks")
    ap.add_argument("--ray-address", metavar="ADDRESS", help="an existing Ray cluster")
    ap.add_argument("--gpus-per-job", type=float, default=0,
                    help="with Ray: GPUs per run (the runs then train on cuda)")
    ap.add_argument("--job-timeout", type=float, default=0,
                    help="seconds before a run is killed and continued (default 0: no limit)")
    ap.add_argument("--retries", type=int, default=2)
    args = ap.parse_args()
    try:
        executor = make_executor(ray=args.ray, ray_address=args.ray_address, jobs=args.jobs,
                                 timeout_s=args.job_timeout, max_retries=args.retries,
                                 num_gpus_per_job=args.gpus_per_job)
    except (ValueError, MissingExtraError) as exc:
        print(f"mujoco_returns: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = [(a, e, int(s)) for a in args.algos.split(",") for e in args.envs.split(",")
            for s in args.seeds.split(",")]
    device = "cuda" if args.gpus_per_job else "cpu"
    cells = {}
    outcomes = executor.map_unordered(_cell, [(out, *g, args.steps, device) for g in grid])
    try:
        for o in outcomes:
            g = o.job[1:4]
            if not o.ok:
                print(f"{g}: {o.error} {o.detail or ''}", flush=True)
            cells[g] = o.value if o.ok else _summary(out / f"{g[0]}-{g[1]}-s{g[2]}", *g)
    finally:  # Ctrl-C: the runs are killed; their checkpoints stay for a rerun
        outcomes.close()
    cells = [cells[g] for g in grid]
    _write(out, cells, "python tests/benchmarks/mujoco_returns.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
