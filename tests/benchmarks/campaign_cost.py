"""What a small power run costs on each executor: wall time and CPU time, local vs Ray.

Usage::

    python tests/benchmarks/campaign_cost.py [--repeats 3] [--seeds 2] [--targets reinforce,a2c]

Runs ``pgtheory audit --power --seeds N --targets T --skip-mutants --timing 0`` into a fresh
records folder, alternately with the local executor (``--jobs 2``) and with ``--ray`` (a local
Ray started for the run, all cores), ``--repeats`` times each, and prints one Markdown row per
run and the medians. Wall time is the command's, Ray's start and stop included. CPU time is the
user + system time of the command's whole process tree (the CLI, the worker processes, the
audits, and with Ray its GCS, raylet and workers), read from ``/proc`` every 0.2 s: a
process's last reading counts, so each process may miss up to 0.2 s. (``/usr/bin/time`` is no
measure here: it counts only children that their parents waited for, and Ray's shutdown kills
its workers without that.) Linux only. Other load on the machine shows in the wall times; run
on an otherwise idle machine for clean figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HZ = os.sysconf("SC_CLK_TCK")


def _snapshot() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, user + system clock ticks, start time) of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                text = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
            out[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), fields[19])
    return out


def measure(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the process tree, exit code) of ``cmd``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ticks: dict[tuple[int, str], int] = {}
    while proc.poll() is None:
        procs = _snapshot()
        tree, grew = {proc.pid}, True
        while grew:
            new = {pid for pid, (ppid, _, _) in procs.items() if ppid in tree} - tree
            tree |= new
            grew = bool(new)
        for pid in tree & procs.keys():
            key = (pid, procs[pid][2])
            ticks[key] = max(ticks.get(key, 0), procs[pid][1])
        time.sleep(0.2)
    return time.monotonic() - t0, sum(ticks.values()) / HZ, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--targets", default="reinforce,a2c")
    args = ap.parse_args()
    pgtheory = str(Path(sys.executable).with_name("pgtheory"))
    rows: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
    print("| executor | run | wall (s) | CPU (s) | exit code |\n|---|---|---|---|---|")
    for i in range(args.repeats):
        for kind, flags in (("local", ["--jobs", "2"]), ("ray", ["--ray"])):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [pgtheory, "audit", "--power", "--seeds", str(args.seeds), "--targets",
                       args.targets, "--skip-mutants", "--timing", "0", "--records", tmp,
                       "--out", os.path.join(tmp, "card.md"), "--no-progress", *flags]
                wall, cpu, code = measure(cmd)
            rows[kind].append((wall, cpu))
            print(f"| {kind} | {i + 1} | {wall:.1f} | {cpu:.1f} | {code} |", flush=True)
    print("\n| executor | median wall (s) | median CPU (s) |\n|---|---|---|")
    for kind, runs in rows.items():
        print(f"| {kind} | {statistics.median(w for w, _ in runs):.1f} | "
              f"{statistics.median(c for _, c in runs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
