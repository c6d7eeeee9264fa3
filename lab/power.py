"""The oracles' power, measured: kill matrix, false-alarm rate and audit time, as a scorecard.

``pgtheory audit --power`` (this module's :func:`main`) does three things, resumably (four
with ``--campaign N``):

1. audits every mutant of :mod:`pgtheory.lab.mutants` (full audits, seed 0) and appends one record
   per mutant to ``RECORDS/mutants.jsonl``;
2. audits the unmodified targets (the project's four implementations and the
   Stable-Baselines3 / sb3-contrib controls) over seeds ``1..N`` (seed 0 is what CI and the
   README use) and appends one record per (target, seed) to ``RECORDS/audits.jsonl``;
3. with ``--campaign N``, audits random correct configurations ``1..N`` of each family of
   :mod:`pgtheory.lab.campaign` (configuration ``i`` at seed ``i``, so the oracle MDP and the
   agents' seeds vary too; reproduce one with ``pgtheory audit campaign:FAMILY:i --seed i``)
   and appends one record per configuration to ``RECORDS/campaign.jsonl``, with its family,
   index and configuration;
4. writes the Markdown scorecard from all records: kill rate per layer and per bug class,
   false alarms per target with a Clopper-Pearson 95% interval against the stated rates,
   inconclusive and error verdicts with their reasons, audit times, and the campaign's
   section (per family: configurations audited, fails with check names and configuration
   indices, inconclusive verdicts tabulated by check and reason, errors, median and maximum
   audit time against the 120 s goal), and the continuous rows where they are exact: the
   per-run verdicts of the in-expectation and update-level ``@lqr`` rows on the targets with a
   linear policy and critic (:data:`LQR_RECORDS`, written by the two ``tools/lqr_*`` scripts),
   per target with a Clopper-Pearson 95% interval.

Every audit is a fresh ``python`` process (the audit time a user sees, imports included) with
one torch thread. The jobs run on an executor of :mod:`pgtheory.lab.executors`: worker
processes on this machine, ``--jobs`` at a time (the default), or Ray tasks of one CPU each
with ``--ray`` (a local Ray started for the run) or ``--ray-address ADDRESS`` (an existing
cluster). A job whose worker is lost or that runs past ``--job-timeout`` is run again, at most
``--retries`` more times, then recorded as an error. A record is written as soon as its job
ends, so an interrupted run (Ctrl-C included) resumes where it stopped; records already present
are not recomputed (``--fresh`` starts over). The records are the same whichever executor ran
the jobs, apart from :data:`VOLATILE_FIELDS` (:func:`comparable`). Records carry the commit
they were obtained at; the scorecard gives the span of their dates.

Audit records keep the names of the failed, inconclusive and error checks and those checks'
explanations (:func:`audit_record`); only a fail counts as a false alarm (the verdicts are
defined in :mod:`pgtheory.oracles.results`). A rerun of a campaign configuration supersedes its
earlier record in the scorecard.

A record's ``scope`` says which checks ran: ``"audit"`` (the full audit),
``"policy_head"`` (only :data:`pgtheory.oracles.suite.POLICY_HEAD_CHECKS`, for audits recorded
before those checks existed; the other checks' results do not depend on them, see
:func:`pgtheory.oracles.suite.run_suite`), ``"lqr_update"`` (only the four continuous update-level
rows ``update_level.{kl,improvement,convergence,critic}@lqr``, likewise: each runs on its
own agents seeded by the audit's seed, as in the full audit), ``"lqr_expectation"`` (only
the three ``in_expectation.*@lqr`` rows, likewise) or ``"gaussian_density"`` (only
``given_the_batch.gaussian_density@lqr``, on its own two-action agent, likewise). A seed
counts towards the false-alarm rate when its records together cover every check the current
audit plans; the seed fails when any of them failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgtheory.lab.executors import Executor, Outcome

__all__ = ["CAMPAIGN_MAX_SECONDS", "CONTROLS", "OURS", "VOLATILE_FIELDS", "audit_record",
           "campaign_jobs", "clopper_pearson", "comparable", "main", "reason", "run_job",
           "run_jobs", "scorecard"]

#: The project's implementations and the third-party controls audited for false alarms.
OURS = ("ppo", "trpo", "a2c", "reinforce")
CONTROLS = ("sb3:PPO", "sb3-contrib:TRPO", "sb3:A2C")
DEFAULT_RECORDS = "docs/power"
DEFAULT_OUT = "docs/scorecard.md"
#: Seconds a power-run job may run before it is killed and run again (an audit takes 1-2 min).
DEFAULT_JOB_TIMEOUT = 3600.0


class PowerError(ValueError):
    """Bad arguments to the power run (unknown target, no seeds, unreadable records)."""


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for ``k`` events in ``n`` trials.

    Raises
    ------
    PowerError
        ``n < 1`` or ``k`` outside ``[0, n]``.

    References
    ----------
    Clopper & Pearson (1934), Biometrika 26(4):404-413.
    """
    from scipy.stats import beta

    if n < 1 or not 0 <= k <= n:
        raise PowerError(f"expected 0 <= k <= n and n >= 1, received k={k}, n={n}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=pathlib.Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True,
                               cwd=pathlib.Path(__file__).parent).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------------------------ records
@dataclasses.dataclass
class Records:
    """The JSONL records under one directory (``mutants.jsonl``, ``audits.jsonl``)."""

    root: pathlib.Path
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def load(self, kind: str) -> list[dict]:
        path = self.root / f"{kind}.jsonl"
        if not path.exists():
            return []
        out = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise PowerError(f"{path}:{i}: expected a JSON record, received "
                                     f"{line[:60]!r} ({exc})") from exc
        return out

    def append(self, kind: str, record: dict) -> None:
        """Append one record; an audit's list of checks is stored once in ``plans.json``
        (the record keeps its id, ``checks_id``)."""
        import hashlib

        self.root.mkdir(parents=True, exist_ok=True)
        with self.lock:
            if "checks" in record:
                record = dict(record)
                checks = record.pop("checks")
                cid = hashlib.sha1("\n".join(checks).encode()).hexdigest()[:10]
                plans = self.plans()
                if cid not in plans:
                    plans[cid] = checks
                    tmp = self.root / "plans.json.tmp"
                    tmp.write_text(json.dumps(plans, indent=1, sort_keys=True) + "\n")
                    tmp.replace(self.root / "plans.json")
                record["checks_id"] = cid
            line = (json.dumps(record, sort_keys=True) + "\n").encode()
            fd = os.open(self.root / f"{kind}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                         0o644)
            try:  # one write: an interrupted run leaves whole lines only
                os.write(fd, line)
            finally:
                os.close(fd)

    def plans(self) -> dict[str, list[str]]:
        path = self.root / "plans.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def audits(self, kind: str = "audits") -> list[dict]:
        """Audit records of ``kind`` (``"audits"`` or ``"campaign"``) with ``checks`` (the
        names that ran, whatever their verdict) restored."""
        plans = self.plans()
        out = []
        for r in self.load(kind):
            if "checks_id" in r:
                if r["checks_id"] not in plans:
                    raise PowerError(f"{self.root}/{kind}.jsonl: expected checks_id in "
                                     f"plans.json, received {r['checks_id']!r}")
                r = {**r, "checks": plans[r["checks_id"]]}
            out.append(r)
        return out


#: Longest explanation kept in a record (characters).
EXPLANATION_CHARS = 300


def audit_record(report: dict, *, scope: str, wall_s: float | None, commit: str) -> dict:
    """A compact record of one audit's JSON report (``pgtheory audit --json``).

    Keeps every check's name (``checks``, skipped ones too: what was planned), the names of
    the ``failed``, ``inconclusive`` and ``errors`` (verdict ``error``) checks, and for each of
    those its explanation (``explanations``, at most :data:`EXPLANATION_CHARS` characters).
    """
    res = report.get("results", [])

    def names(verdict: str) -> list[str]:
        return sorted(r["name"] for r in res if r["verdict"] == verdict)

    return {"target": report["target"], "seed": report["seed"], "scope": scope,
            "exit_code": report["exit_code"], "error": report.get("error"),
            "seconds": round(float(report.get("seconds", 0.0)), 2),
            "wall_s": None if wall_s is None else round(wall_s, 2),
            "checks": sorted(r["name"] for r in res),
            "failed": names("fail"), "inconclusive": names("inconclusive"),
            "errors": names("error"),
            "explanations": {r["name"]: str(r.get("explanation", ""))[:EXPLANATION_CHARS]
                             for r in res if r["verdict"] in ("fail", "inconclusive", "error")},
            "commit": commit, "date": datetime.date.today().isoformat()}


# --------------------------------------------------------------------------------- jobs
def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _today() -> str:
    return datetime.date.today().isoformat()


def _lost(proc: subprocess.CompletedProcess, what: str) -> None:
    """Raise :class:`~pgtheory.lab.executors.JobLost` when ``proc`` was killed by a signal
    (out of memory, a node going away): the executor runs the job again."""
    from pgtheory.lab.executors import JobLost

    if proc.returncode < 0:
        raise JobLost(f"{what} was killed by signal {-proc.returncode}")


def _failed_audit(target: str, seed: int, scope: str, commit: str, *, exit_code, error: str,
                  wall_s: float | None) -> dict:
    """The record of an audit that gave no report (crashed, or lost after the retries)."""
    return {"target": target, "seed": seed, "scope": scope, "exit_code": exit_code,
            "error": error, "seconds": None,
            "wall_s": None if wall_s is None else round(wall_s, 2), "checks": [], "failed": [],
            "inconclusive": [], "errors": [], "explanations": {}, "commit": commit,
            "date": _today()}


def _run_audit(target: str, seed: int, scope: str, commit: str) -> dict:
    if scope in SCOPED_REPORTS:  # in the worker process: imports dominate
        import torch

        torch.set_num_threads(1)
        report = SCOPED_REPORTS[scope]
        return audit_record(report(target, seed), scope=scope, wall_s=None, commit=commit)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "pgtheory.cli", "audit", target, "--seed", str(seed),
               "--no-progress", "--json", path]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        wall = time.perf_counter() - t0
        if not os.path.exists(path):
            _lost(proc, f"the audit of {target} (seed {seed})")
            return _failed_audit(target, seed, scope, commit, exit_code=proc.returncode,
                                 error=(proc.stderr or proc.stdout)[-500:], wall_s=wall)
        with open(path) as fh:
            report = json.load(fh)
    return audit_record(report, scope=scope, wall_s=wall, commit=commit)


def _run_mutant(name: str, commit: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kill.json")
        cmd = [sys.executable, "-m", "pgtheory.lab.mutants", "--only", name, "--json", path]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_env())
        if not os.path.exists(path):
            _lost(proc, f"the audit of mutant {name}")
            return {"mutant": name, "flagged": [], "seconds": None, "commit": commit,
                    "error": (proc.stderr or proc.stdout)[-500:], "date": _today()}
        with open(path) as fh:
            (rec,) = json.load(fh)
    return {**rec, "commit": commit, "date": _today()}


def run_job(job: tuple, scope: str, commit: str) -> dict:
    """Run one job of the power run and return its record (what an executor runs).

    ``job`` is ``("mutant", NAME)``, or ``(KIND, TARGET, SEED)`` with KIND ``audit`` (at
    ``scope``), ``campaign`` or ``timing`` (full audits). A top-level function of plain
    arguments, so that :mod:`pgtheory.lab.executors` can run it in a worker process or a Ray
    task.

    Raises
    ------
    pgtheory.lab.executors.JobLost
        The audit's process was killed by a signal (the executor runs the job again).
    """
    if job[0] == "mutant":
        return _run_mutant(job[1], commit)
    return _run_audit(job[1], job[2], scope if job[0] == "audit" else "audit", commit)


def _error_record(job: tuple, scope: str, commit: str, out: Outcome) -> dict:
    """The record of a job the executor gave up on (see :func:`run_jobs`)."""
    if job[0] == "mutant":
        rec = {"mutant": job[1], "flagged": [], "seconds": None, "commit": commit,
               "error": out.error, "date": _today()}
    else:
        rec = _failed_audit(job[1], job[2], scope if job[0] == "audit" else "audit", commit,
                            exit_code=None, error=out.error, wall_s=None)
    return {**rec, "error_detail": out.detail} if out.detail else rec


#: Record fields that depend on when, how fast or where a job ran, not on what it found:
#: wall-clock and audit seconds, the date, and what the executor saw of a lost worker (an exit
#: code, Ray's exception). Everything else is the same whichever executor ran the job.
VOLATILE_FIELDS = ("wall_s", "seconds", "date", "error_detail")


def comparable(record: dict) -> dict:
    """``record`` without :data:`VOLATILE_FIELDS`: what two runs of the same job (on either
    executor) must agree on."""
    return {k: v for k, v in record.items() if k not in VOLATILE_FIELDS}


def _scoped_report(target: str, seed: int, checks) -> dict:
    """An audit report of only the checks ``checks(target, config)`` runs (a ``--scope``)."""
    from pgtheory.lab.campaign import resolve_target
    from pgtheory.oracles.audit import audit_config

    t0 = time.perf_counter()
    out = checks(resolve_target(target), audit_config(seed))
    failed = any(r.verdict == "fail" for r in out.values())
    return {"target": target, "seed": seed, "exit_code": int(failed), "error": None,
            "seconds": time.perf_counter() - t0,
            "results": [{"name": r.name, "verdict": r.verdict, "explanation": r.explanation}
                        for r in out.values()]}


def _lqr_update_report(target: str, seed: int) -> dict:
    """Only the continuous update-level rows of the full audit (``--scope lqr_update``)."""
    from pgtheory.oracles.suite import continuous_update_checks

    return _scoped_report(target, seed, continuous_update_checks)


def _policy_head_report(target: str, seed: int) -> dict:
    """Only the policy-head checks of the audit (``--scope policy_head``; see the module doc)."""
    from pgtheory.oracles.suite import policy_head_checks

    return _scoped_report(target, seed, policy_head_checks)


def _lqr_expectation_report(target: str, seed: int) -> dict:
    """Only the continuous in-expectation rows of the full audit (``--scope lqr_expectation``)."""
    from pgtheory.oracles.suite import continuous_expectation_checks

    return _scoped_report(target, seed, continuous_expectation_checks)


def _gaussian_density_report(target: str, seed: int) -> dict:
    """Only ``given_the_batch.gaussian_density@lqr`` (``--scope gaussian_density``)."""
    from pgtheory.oracles.suite import gaussian_density_checks

    return _scoped_report(target, seed, gaussian_density_checks)


#: The scopes that run part of an audit in the worker process (see the module docstring).
SCOPED_REPORTS = {"policy_head": _policy_head_report, "lqr_update": _lqr_update_report,
                  "lqr_expectation": _lqr_expectation_report,
                  "gaussian_density": _gaussian_density_report}


def campaign_jobs(n: int, families: list[str] | None = None) -> list[tuple[str, int]]:
    """The campaign's audits: ``(campaign:FAMILY:i, seed i)`` for ``i = 1..n`` per family.

    Configuration ``i`` is audited at seed ``i`` (not 0), so the campaign also varies the
    oracle MDP and the agents' seeds; a record is reproduced by
    ``pgtheory audit campaign:FAMILY:i --seed i``.

    Raises
    ------
    PowerError
        ``n < 0`` or an unknown family.
    """
    from pgtheory.lab.campaign import FAMILIES

    families = list(FAMILIES if families is None else families)
    bad = [f for f in families if f not in FAMILIES]
    if n < 0 or bad:
        raise PowerError(f"expected --campaign >= 0 and families among {list(FAMILIES)}, "
                         f"received {n} and {bad or families}")
    return [(f"campaign:{f}:{i}", i) for i in range(1, n + 1) for f in families]


def _campaign_record(rec: dict) -> dict:
    """An audit record of a campaign target, with its family, index and configuration."""
    from pgtheory.lab.campaign import draw_configuration, parse_spec

    family, index = parse_spec(rec["target"])
    return {**rec, "family": family, "index": index,
            "configuration": draw_configuration(family, index)}


def run_jobs(records: Records, *, mutants: list[str], targets: list[str], seeds: list[int],
             scope: str = "audit", jobs: int = 2, progress: bool = True,
             timing: int = 0, campaign: list[tuple[str, int]] = (),
             executor: Executor | None = None) -> int:
    """Run every job without a record yet; returns the number run.

    Each job is :func:`run_job` on ``executor`` (default: a
    :class:`~pgtheory.lab.executors.LocalExecutor` with ``jobs`` workers); its record is
    appended as soon as it ends, so an interrupted run keeps what it has and resumes from there.
    A job the executor gave up on (worker lost or timed out on every attempt) gets an error
    record (``exit_code`` None, ``error`` saying what happened), like an audit that crashed; it
    is not rerun by a resumed run. ``timing`` audits per target are run last, one at a time on
    this machine whatever the executor, for the audit-time figures. ``campaign``: ``(spec,
    seed)`` audits (:func:`campaign_jobs`) recorded in ``campaign.jsonl``, each as it ends.
    """
    from pgtheory.lab.executors import LocalExecutor
    from tqdm import tqdm

    commit = _commit()
    have_m = {r["mutant"] for r in records.load("mutants")}
    have_a = {(r["target"], r["seed"], r["scope"]) for r in records.load("audits")}
    have_c = {(r["target"], r["seed"]) for r in records.load("campaign")}
    todo: list[tuple] = [("mutant", m) for m in mutants if m not in have_m]
    todo += [("audit", t, s) for s in seeds for t in targets if (t, s, scope) not in have_a]
    todo += [("campaign", t, s) for t, s in campaign if (t, s) not in have_c]
    if timing:  # one audit at a time, after everything else: the machine otherwise idle
        have_t = {(r["target"], r["seed"]) for r in records.load("timings")}
        todo += [("timing", t, s) for s in range(1, timing + 1) for t in targets
                 if (t, s) not in have_t]
    if not todo:
        return 0
    executor = executor or LocalExecutor(jobs)
    bar = tqdm(total=len(todo), desc="power", unit="job", disable=not progress,
               dynamic_ncols=True)
    timed = [j for j in todo if j[0] == "timing"]
    todo = [j for j in todo if j[0] != "timing"]
    one_at_a_time = LocalExecutor(1, timeout_s=executor.timeout_s,
                                  max_retries=executor.max_retries,
                                  start_method=getattr(executor, "start_method", "spawn"))
    for ex, batch in ((executor, todo), (one_at_a_time, timed)):
        outcomes = ex.map_unordered(run_job, [(job, scope, commit) for job in batch])
        try:
            for out in outcomes:
                job = out.job[0]
                rec = out.value if out.ok else _error_record(job, scope, commit, out)
                if job[0] == "campaign":
                    rec = _campaign_record(rec)
                if job[0] == "timing":
                    rec = {k: rec[k] for k in ("target", "seed", "exit_code", "wall_s",
                                               "seconds", "commit", "date")}
                records.append({"mutant": "mutants", "audit": "audits",
                                "timing": "timings"}.get(job[0], job[0]),
                               rec)
                bad = "FAILED" if job[0] != "mutant" and rec.get("failed") else \
                    "ERROR" if not out.ok else ""
                wall = f": {rec['wall_s']:.0f} s" if job[0] == "timing" and rec["wall_s"] \
                    else ""
                bar.set_postfix_str(" ".join(str(x) for x in (
                    "timing" if job[0] == "timing" else "", job[1],
                    f"seed {job[2]}" if len(job) > 2 else "", bad) if x) + wall)
                bar.update()
        finally:  # done, or Ctrl-C: running workers are killed, the records stay
            outcomes.close()
    bar.close()
    return len(todo) + len(timed)


# ---------------------------------------------------------------------------- scorecard
def _stated_rate(target: str) -> tuple[float, str]:
    """Family-wise false-positive rate the audit states for ``target``'s statistical checks."""
    from pgtheory.lab.campaign import resolve_target
    from pgtheory.oracles.audit import AUDIT_ALPHA

    continuous = "continuous" in getattr(resolve_target(target), "action_kinds", ("discrete",))
    a = AUDIT_ALPHA / 3
    # the three in-expectation checks fail only when an independent confirmation rejects too
    # (pgtheory.oracles.suite._expectation_checks): a^2 each; the action-sampling test a
    rate = 3 * a * a + (a if continuous else 0.0)
    what = f"3 in-expectation checks at {a:.2g}, each confirmed on independent trials"
    return rate, what + (f", and the action-sampling test at {a:.2g}" if continuous else "")


def _planned(target: str) -> set[str]:
    from pgtheory.lab.campaign import resolve_target
    from pgtheory.oracles.suite import plan

    return {n for n, why in plan(resolve_target(target)) if why is None}


def _fmt_ci(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"[{lo:.3f}, {hi:.3f}]"


#: Per-run verdict files of the exact ``@lqr`` rows on affine-Gaussian targets (written by
#: ``tools/lqr_expectation_false_alarms.py`` and ``tools/lqr_update_false_alarms.py``),
#: relative to the parent of the records directory.
LQR_RECORDS = {"in-expectation": "benchmarks/lqr_expectation_false_alarms.jsonl",
               "update level": "benchmarks/lqr_update_false_alarms.jsonl"}


def _lqr_linear_runs(root: pathlib.Path) -> dict[str, dict[str, dict[int, dict[str, str]]]]:
    """{layer: {target: {seed: {row: verdict}}}} from the :data:`LQR_RECORDS` files under
    ``root`` (missing files: no entry); the random-configuration lines (``campaign:``) are left
    out, and a later line for the same (target, seed) supersedes an earlier one."""
    out: dict[str, dict[str, dict[int, dict[str, str]]]] = {}
    for layer, rel in LQR_RECORDS.items():
        path = root / rel
        if not path.exists():
            continue
        runs: dict[str, dict[int, dict[str, str]]] = {}
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            target = str(r["target"]).removeprefix("linear:")
            if target.startswith("campaign:"):
                continue
            if "results" in r:
                verdicts = {k: v["verdict"] for k, v in r["results"].items()}
            else:
                verdicts = {f"update_level.{k}@lqr": r[k]
                            for k in ("kl", "improvement", "convergence", "critic") if k in r}
            runs.setdefault(target, {})[int(r["seed"])] = verdicts
        out[layer] = runs
    return out


def _lqr_linear_section(runs: dict) -> tuple[list[str], list[str]]:
    """The goal row and the section for the affine-Gaussian ``@lqr`` records."""
    if not runs:
        return [], []
    lines = ["", "## Continuous oracles where they are exact (affine-Gaussian targets)", "",
             "The full audits above use each target's default network, on which the "
             "in-expectation `@lqr` rows check only the samples whose GAE trace ends at their "
             "own step and the update-level `@lqr` rows skip. These runs use the targets with "
             "a linear policy and critic (`hidden_sizes=()`, `net_arch=[]`), on which every row "
             "applies (`kl@lqr` skips the targets that declare no KL bound): `python "
             "tools/lqr_expectation_false_alarms.py --set linear --seeds 100` and `python "
             "tools/lqr_update_false_alarms.py --seeds 100 --jsonl "
             f"docs/{LQR_RECORDS['update level']}` (both resume). A seed is a false alarm "
             "when any row failed.", "",
             "| layer | target | seeds | seeds with a fail | 95% CI | verdicts per row |",
             "|---|---|---|---|---|---|"]
    fewest, fails = 10**9, 0
    for layer, by_target in runs.items():
        for t, seeds in sorted(by_target.items()):
            n = len(seeds)
            k = sum(any(v == "fail" for v in row.values()) for row in seeds.values())
            counts: dict[str, dict[str, int]] = {}
            for row in seeds.values():
                for check, v in row.items():
                    short = check.split(".", 1)[-1].removesuffix("@lqr")
                    counts.setdefault(short, {})
                    counts[short][v] = counts[short].get(v, 0) + 1
            fewest, fails = min(fewest, n), fails + k
            lines.append(f"| {layer} | `{t}` | {n} | {k} | {_fmt_ci(k, n)} | " + "; ".join(
                f"{check}: " + ", ".join(f"{v} {c}" for v, c in sorted(vs.items()))
                for check, vs in counts.items()) + " |")
    goal = [f"| zero false alarms over >= 100 seeds per affine-Gaussian target (exact `@lqr` "
            f"rows) | {fails} seed(s) with a fail; fewest seeds {fewest} | "
            f"{'yes' if fails == 0 and fewest >= 100 else 'no'} |"]
    return goal, lines


def scorecard(records: Records, *, targets: list[str]) -> str:
    """The Markdown scorecard from the records (see the module docstring)."""
    from pgtheory.lab.mutants import MUTANTS

    lines = ["# Oracle power scorecard", "",
             "Generated by `pgtheory audit --power` (module `lab/power.py`) from the "
             f"records in `{records.root.as_posix()}/`; rerunning the command resumes or "
             "regenerates it. Machine: the project's 2-core CPU machine, one torch thread per "
             "audit (`--jobs` audits at a time, 2 by default; the audit times below come from "
             "the runs named in their row).", ""]
    mrecs = {r["mutant"]: r for r in records.load("mutants") if r["mutant"] in MUTANTS}
    arecs = records.audits()

    # ---- kill rate
    killable = [m for m in MUTANTS.values() if not m.equivalent]
    done = [m for m in killable if m.name in mrecs]
    killed = [m for m in done if mrecs[m.name]["flagged"]]
    rate = len(killed) / max(len(done), 1)
    times = {}
    trecs = records.load("timings")
    for t in targets:
        secs = [r["wall_s"] for r in arecs if r["target"] == t and r["scope"] == "audit"
                and r.get("wall_s") is not None]
        if secs:
            times[t] = secs
    idle = {t: [r["wall_s"] for r in trecs if r["target"] == t] for t in targets}
    idle = {t: v for t, v in idle.items() if v}
    fpr_rows, any_alarm, min_n = _fpr_rows(arecs, targets)
    med = {t: statistics.median(v) for t, v in idle.items()}  # timing runs: current code
    for t, v in ({} if idle else times).items():  # else: plus the policy-head checks' median
        covered = any("action_sampling" in " ".join(r["checks"]) for r in arecs
                      if r["target"] == t and r["scope"] == "audit")
        head = [r["seconds"] for r in arecs if r["target"] == t
                and r["scope"] == "policy_head" and r.get("seconds") is not None]
        med[t] = statistics.median(v) + (statistics.median(head) if head and not covered
                                         else 0.0)
    lines += ["## Goals", "",
              "| goal | measured | met |", "|---|---|---|",
              f"| kill rate >= 95% of non-equivalent mutants | {len(killed)}/{len(done)} "
              f"({100 * rate:.1f}%) | {'yes' if rate >= 0.95 and done else 'no'} |"
              if done else "| kill rate >= 95% of non-equivalent mutants | no mutant runs "
              "recorded (`--skip-mutants`) | no |",
              f"| zero false alarms over >= 100 seeds per target | "
              f"{any_alarm} seed(s) with a failure; fewest complete seeds {min_n} | "
              f"{'yes' if any_alarm == 0 and min_n >= 100 else 'no'} |",
              f"| median audit time <= 60 s (2 cores) | slowest median "
              f"{max(med.values()):.1f} s (`{max(med, key=med.get)}`; "
              f"{'timing runs, one audit at a time' if idle else 'false-alarm runs'}) |"
              if med else "| median audit time | no runs | no |",
              ""]
    if med:
        lines[-2] += " yes |" if max(med.values()) <= 60 else " no |"
    crecs = _latest(records.audits("campaign"))
    if crecs:
        lines[-1:-1] = _campaign_goals(crecs)
    lqr_goal, lqr_lines = _lqr_linear_section(_lqr_linear_runs(records.root.parent))
    lines[-1:-1] = lqr_goal
    lines += _kill_sections(MUTANTS, mrecs, killable, done, killed)
    lines += ["## False alarms (unmodified implementations and controls)", "",
              "Full audits (`pgtheory audit TARGET --seed S`, seeds 1..N; seed 0 is CI's). A "
              "seed is *complete* when its records cover every check the current audit plans "
              "for the target; it is a false alarm when any check failed. Deterministic checks "
              "(exact recomputation within float tolerances) should never fail; the statistical "
              "checks' stated family-wise rate is in the last column. The training-outcome "
              "checks (`update_level.improvement`, `convergence`, `critic`) assert tolerances on "
              "one random training run and state no rate: their false alarms are only known "
              "from these runs.", "",
              "| target | complete seeds | seeds with any failure | rate | 95% CI | stated rate "
              "(statistical checks) |", "|---|---|---|---|---|---|"]
    lines += [row for row, _ in fpr_rows]
    per_check = {}
    for r in arecs:
        for n in r["failed"]:
            per_check.setdefault((r["target"], n), []).append(r["seed"])
    lines += ["", "Failures by check: " + ("none." if not per_check else "")]
    for (t, n), seeds in sorted(per_check.items()):
        lines.append(f"* `{t}` `{n}`: seeds {', '.join(map(str, sorted(seeds)))}")
    lines += _verdict_section(arecs, targets)
    lines += lqr_lines
    dated = [*arecs, *mrecs.values()]
    if idle:
        lines += ["", "## Audit time", "",
                  "Timing runs (`--timing N`): one `pgtheory audit TARGET --seed S` process at a "
                  "time, seeds 1..N, after the other runs, with no other work on the machine; "
                  "wall-clock seconds, imports included.", "",
                  "| target | audits | median | max |", "|---|---|---|---|"]
        for t, v in idle.items():
            lines.append(f"| `{t}` | {len(v)} | {statistics.median(v):.1f} s | {max(v):.1f} s |")
    lines += ["", "## Audit time in the false-alarm runs" if idle else "## Audit time", "",
              "Wall-clock seconds of the `pgtheory audit TARGET` process (imports included), "
              "one torch thread, two audits sharing the 2 cores (and whatever else the machine "
              "ran meanwhile: upper bounds). Where audits were recorded "
              "before the policy-head checks existed, the last column gives those checks' own "
              "median time (measured in-process in the completing records); add it to the "
              "audit's.", "",
              "| target | audits | median | 90th percentile | max | policy-head checks, median "
              "|", "|---|---|---|---|---|---|"]
    for t, v in times.items():
        q = sorted(v)
        head = [r["seconds"] for r in arecs if r["target"] == t and r["scope"] == "policy_head"
                and r.get("seconds") is not None]
        extra = f"{statistics.median(head):.1f} s" if head else "-"
        lines.append(f"| `{t}` | {len(v)} | {statistics.median(q):.1f} s | "
                     f"{q[min(len(q) - 1, int(0.9 * len(q)))]:.1f} s | {q[-1]:.1f} s | "
                     f"{extra} |")
    if crecs:
        lines += _campaign_section(crecs)
        dated += crecs
    lines += ["", f"Records obtained {_date_span(dated)} (each record names the commit it ran "
              "at).", ""]
    return "\n".join(lines)


def _date_span(recs) -> str:
    """``on DAY`` or ``from DAY to DAY`` over the records' dates (``at unrecorded dates``)."""
    days = sorted({r["date"] for r in recs if r.get("date")})
    if not days:
        return "at unrecorded dates"
    return f"on {days[0]}" if len(days) == 1 else f"from {days[0]} to {days[-1]}"


# ------------------------------------------------- inconclusive / error verdicts, campaign
#: The campaign's audit-time goal (wall seconds of one full audit, imports included).
CAMPAIGN_MAX_SECONDS = 120.0


def reason(explanation: str) -> str:
    """The first clause of a check's explanation with numbers masked as ``#``: how the
    scorecard groups inconclusive and error verdicts.

    The ``LQR (...):`` prefix of the continuous-action checks and a leading
    ``inconclusive:`` are dropped; the clause ends at the first ``;``, ``:``, ``, ``, ``. ``
    or ``(`` (so ``raised ValueError('x')`` reads ``raised ValueError``); at most 90
    characters.
    """
    import re

    s = re.sub(r"^LQR \([^)]*\):\s*", "", str(explanation).strip())
    s = re.sub(r"^(inconclusive|error)\s*:\s*", "", s, flags=re.IGNORECASE)
    s = re.split(r";|:\s|,\s|\.\s|\s?\(", s, maxsplit=1)[0].strip().rstrip(".")
    s = re.sub(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", "#", s)
    return (s[:87] + "...") if len(s) > 90 else (s or "(no explanation)")


def _crashed(r: dict) -> bool:
    """The audit did not finish: no report, the target could not be loaded, or a check
    reported the target's own code raising (verdict ``error``)."""
    return bool(r.get("error")) or bool(r.get("errors")) or r["exit_code"] not in (0, 1)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (``|`` escaped, e.g. in ``|V - V_pi|``)."""
    return text.replace("|", "\\|")


def _seeds_text(xs) -> str:
    xs = sorted(set(xs))
    return ", ".join(map(str, xs[:12])) + (f" and {len(xs) - 12} more" if len(xs) > 12 else "")


def _verdict_section(arecs: list[dict], targets: list[str]) -> list[str]:
    """Inconclusive and error verdicts of the default targets' audits, counted and grouped."""
    lines = ["", "Inconclusive and error verdicts (neither is evidence of a defect, see "
             "`oracles/results.py`; records from before these verdicts existed have none):", "",
             "| target | seeds | with an inconclusive check | with an error or crash |",
             "|---|---|---|---|"]
    groups: dict[tuple, list[int]] = {}
    for t in targets:
        recs = [r for r in arecs if r["target"] == t]
        inc = {r["seed"] for r in recs if r.get("inconclusive")}
        err = {r["seed"] for r in recs if _crashed(r)}
        lines.append(f"| `{t}` | {len({r['seed'] for r in recs})} | {len(inc)} | {len(err)} |")
        for r in recs:
            for kind in ("inconclusive", "errors"):
                for n in r.get(kind, []):
                    why = reason(r.get("explanations", {}).get(n, ""))
                    groups.setdefault((t, kind, n, why), []).append(r["seed"])
            if r.get("error"):
                groups.setdefault((t, "errors", "(audit)", reason(r["error"])), []).append(
                    r["seed"])
    if groups:
        lines += ["", "| target | verdict | check | reason (first clause) | audits | seeds |",
                  "|---|---|---|---|---|---|"]
        for (t, kind, n, why), seeds in sorted(groups.items()):
            verdict = "inconclusive" if kind == "inconclusive" else "error"
            lines.append(f"| `{t}` | {verdict} | `{n}` | {_cell(why)} | {len(seeds)} | "
                         f"{_seeds_text(seeds)} |")
    return lines


def _latest(recs: list[dict]) -> list[dict]:
    """One record per (target, seed): the last appended (a rerun supersedes)."""
    out: dict[tuple, dict] = {}
    for r in recs:
        out[(r["target"], r["seed"])] = r
    return list(out.values())


def _family_index(r: dict) -> tuple[str, int]:
    if "family" in r and "index" in r:
        return r["family"], int(r["index"])
    _, family, index = r["target"].split(":")
    return family, int(index)


def _campaign_goals(crecs: list[dict]) -> list[str]:
    failing = [r for r in crecs if r["failed"]]
    walls = [(r["wall_s"], r["target"]) for r in crecs if r.get("wall_s") is not None]
    rows = [f"| no fail over random correct configurations (campaign) | {len(failing)} of "
            f"{len(crecs)} audits with a fail | {'yes' if not failing else 'no'} |"]
    if walls:
        slowest = max(walls)
        rows.append(f"| every campaign audit <= {CAMPAIGN_MAX_SECONDS:.0f} s | max "
                    f"{slowest[0]:.1f} s (`{slowest[1]}`) | "
                    f"{'yes' if slowest[0] <= CAMPAIGN_MAX_SECONDS else 'no'} |")
    return rows


def _campaign_section(crecs: list[dict]) -> list[str]:
    """The campaign's scorecard section (see :mod:`pgtheory.lab.campaign`)."""
    from pgtheory.lab.campaign import FAMILIES

    by_family: dict[str, list[dict]] = {}
    for r in crecs:
        by_family.setdefault(_family_index(r)[0], []).append(r)
    order = [f for f in FAMILIES if f in by_family] + sorted(set(by_family) - set(FAMILIES))
    lines = ["", "## Random-configuration campaign", "",
             "Full audits of random *correct* configurations (`lab/campaign.py`: network "
             "sizes and activations, learning rates, rollout and minibatch sizes, epochs, "
             "gamma, lambda, advantage normalization, entropy and value coefficients, clip "
             "ranges, value clipping, target KL, gradient clipping, TRPO's KL / CG / critic "
             "settings, A2C's optimizer). Configuration `i` of a family is audited at seed `i`; "
             "reproduce a row with `pgtheory audit campaign:FAMILY:i --seed i`. Only a fail is "
             "evidence of a defect; on a correct configuration it is a false alarm. Wall-clock "
             "seconds per audit process, imports included, two audits sharing the 2 cores.", "",
             "| family | configurations audited | with a fail | with an inconclusive check | "
             "with an error or crash | median wall | max wall |", "|---|---|---|---|---|---|---|"]
    fails: dict[tuple, list[tuple[int, dict]]] = {}
    incs: dict[tuple, list[int]] = {}
    errs: list[str] = []
    for f in order:
        recs = sorted(by_family[f], key=lambda r: _family_index(r)[1])
        walls = [r["wall_s"] for r in recs if r.get("wall_s") is not None]
        med = f"{statistics.median(walls):.1f} s" if walls else "-"
        top = f"{max(walls):.1f} s" if walls else "-"
        lines.append(f"| `{f}` | {len(recs)} | {sum(bool(r['failed']) for r in recs)} | "
                     f"{sum(bool(r.get('inconclusive')) for r in recs)} | "
                     f"{sum(_crashed(r) for r in recs)} | {med} | {top} |")
        for r in recs:
            i = _family_index(r)[1]
            for n in r["failed"]:
                fails.setdefault((f, n), []).append((i, r))
            for n in r.get("inconclusive", []):
                why = reason(r.get("explanations", {}).get(n, ""))
                incs.setdefault((f, n, why), []).append(i)
            if _crashed(r):
                what = (f"the audit did not finish ({reason(r['error'])})" if r.get("error")
                        else ", ".join(f"`{n}`: {reason(r.get('explanations', {}).get(n, ''))}"
                                       for n in r.get("errors", []))
                        or f"exit code {r['exit_code']}")
                errs.append(f"* `{r['target']}` (seed {r['seed']}): {what}")
    lines += ["", "### Fails", ""]
    if not fails:
        lines.append("None.")
    for (f, n), hits in sorted(fails.items()):
        i, r = hits[0]
        why = r.get("explanations", {}).get(n, "")
        lines.append(f"* `{f}` `{n}`: configuration(s) {_seeds_text(i for i, _ in hits)}. "
                     f"Configuration {i} (`pgtheory audit {r['target']} --seed {r['seed']}`): "
                     f"{why or 'no explanation recorded'}")
    lines += ["", "### Inconclusive verdicts by reason", ""]
    if not incs:
        lines.append("None.")
    else:
        lines += ["| family | check | reason (first clause) | count | configurations |",
                  "|---|---|---|---|---|"]
        for (f, n, why), idx in sorted(incs.items(), key=lambda kv: (kv[0][0], -len(kv[1]),
                                                                     kv[0][1], kv[0][2])):
            lines.append(f"| `{f}` | `{n}` | {_cell(why)} | {len(idx)} | {_seeds_text(idx)} |")
    lines += ["", "### Errors", ""] + (errs or ["None."])
    slow = sorted((r for r in crecs if (r.get("wall_s") or 0) > CAMPAIGN_MAX_SECONDS),
                  key=lambda r: -r["wall_s"])
    lines += ["", f"Audits over {CAMPAIGN_MAX_SECONDS:.0f} s: "
              + (", ".join(f"`{r['target']}` ({r['wall_s']:.0f} s)" for r in slow) or "none")
              + "."]
    return lines


def _kill_sections(mutants, mrecs, killable, done, killed) -> list[str]:
    from pgtheory.oracles.results import LAYERS

    lines = ["## Kill rate per layer", "",
             f"A mutant counts for every layer with a failing check. {len(killed)} of "
             f"{len(done)} audited non-equivalent mutants killed; the full matrix (which checks "
             f"flag each mutant) is [kill_matrix.md](kill_matrix.md).", "",
             "| layer | mutants flagged | only this layer flags them |", "|---|---|---|"]
    layers_of = {m.name: {layer for _, layer in mrecs[m.name]["flagged"]} for m in killed}
    for layer in LAYERS:
        flagged = [n for n, ls in layers_of.items() if layer in ls]
        only = [n for n, ls in layers_of.items() if ls == {layer}]
        lines.append(f"| {layer} | {len(flagged)} | {len(only)}"
                     + (f" ({', '.join(f'`{n}`' for n in only)})" if only else "") + " |")
    training = {"update_level.improvement", "update_level.convergence", "update_level.critic"}
    on_training = [m.name for m in killed
                   if {n for n, _ in mrecs[m.name]["flagged"]} <= training]
    names = ", ".join(sorted(training))
    lines += ["", f"Kills resting only on the training-outcome checks ({names}, which state "
              f"no false-positive rate): {len(on_training)}"
              + (f" ({', '.join(f'`{n}`' for n in on_training)})" if on_training else "") + "."]
    lines += ["", "## Kill rate per bug class", "",
              "| class ([bug catalogue](bugs.md)) | mutants | killed | equivalent (argued) |",
              "|---|---|---|---|"]
    classes: dict[str, list] = {}
    for m in mutants.values():
        classes.setdefault(m.bug_class, []).append(m)
    for c, ms in classes.items():
        k = [m for m in ms if not m.equivalent and m.name in mrecs and mrecs[m.name]["flagged"]]
        nk = [m for m in ms if not m.equivalent]
        eq = [m for m in ms if m.equivalent]
        lines.append(f"| {c} | {len(ms)} | {len(k)}/{len(nk)} | {len(eq)} |")
    survivors = [m.name for m in done if m not in killed]
    missing = [m.name for m in killable if m.name not in mrecs]
    lines += ["", "Survivors: " + (", ".join(f"`{s}`" for s in survivors) or "none") + "."]
    if missing:
        lines.append("Not audited yet: " + ", ".join(f"`{s}`" for s in missing) + ".")
    return [*lines, ""]


def _fpr_rows(arecs: list[dict], targets: list[str]) -> tuple[list, int, int]:
    rows, total_alarms, min_n = [], 0, 10**9
    for t in targets:
        planned = _planned(t)
        by_seed: dict[int, list[dict]] = {}
        for r in arecs:
            if r["target"] == t:
                by_seed.setdefault(r["seed"], []).append(r)
        complete, alarms = 0, 0
        for recs in by_seed.values():
            covered = set().union(*(set(r["checks"]) for r in recs))
            crashed = any(r["exit_code"] not in (0, 1) for r in recs)
            if not crashed and not planned <= covered:
                continue
            complete += 1
            alarms += any(r["failed"] or r["exit_code"] != 0 for r in recs)
        stated, how = _stated_rate(t)
        rate = f"{alarms / complete:.3f}" if complete else "-"
        ci = _fmt_ci(alarms, complete) if complete else "-"
        rows.append((f"| `{t}` | {complete} | {alarms} | {rate} | {ci} | {stated:.2g} ({how}) |",
                     complete))
        total_alarms += alarms
        min_n = min(min_n, complete)
    return rows, total_alarms, (0 if min_n == 10**9 else min_n)


def kill_matrix_markdown(records: Records) -> str:
    """``kill_matrix.md``: every mutant's row (:func:`pgtheory.lab.mutants.format_matrix`) from the
    records, with the equivalent mutants' arguments from the catalogue."""
    from pgtheory.lab.mutants import MUTANTS, KillResult, format_matrix

    recs = {r["mutant"]: r for r in records.load("mutants") if r["mutant"] in MUTANTS}
    results = [KillResult(MUTANTS[n], [tuple(f) for f in recs[n]["flagged"]],
                          recs[n].get("seconds") or 0.0, recs[n].get("error") or "")
               for n in MUTANTS if n in recs]  # catalogue order, whatever order jobs ended in
    secs = [r.get("seconds") or 0.0 for r in recs.values()]
    lines = ["# Kill matrix: seeded bugs in the project's implementations", "",
             "Generated by `pgtheory audit --power` from the mutant records in "
             f"`{records.root.as_posix()}/mutants.jsonl` (full audits, seed 0, obtained "
             f"{_date_span(recs.values())}; median {statistics.median(secs) if secs else 0:.0f} "
             "s per mutant on the 2-core machine, other runs sharing it). The catalogue with "
             "each mutant's patch is `lab/mutants.py`; the summary per layer and class is "
             "[scorecard.md](scorecard.md).", "",
             "A mutant is killed when any check of its audit fails; \"flagged by\" lists every "
             "failing check by layer. Mutants are runtime patches of one "
             "`implementations/core.py` function or one agent method (or a configuration run "
             "behind a different declaration), active only during their audit.", "",
             format_matrix(results), ""]
    eq = [m for m in MUTANTS.values() if m.equivalent]
    if eq:
        lines += ["Equivalent mutants (no check can flag them in principle):", ""]
        lines += [f"* `{m.name}`: {m.equivalent}" for m in eq]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- CLI
def build_parser(group=None) -> argparse.ArgumentParser:
    """The power options, on their own parser or added to ``group`` (``pgtheory audit``'s)."""
    p = group or argparse.ArgumentParser(prog="pgtheory audit --power")
    p.add_argument("--seeds", type=int, default=100,
                   help="false-alarm seeds per target: 1..N (default 100)")
    p.add_argument("--targets", default=",".join(OURS + CONTROLS),
                   help="comma-separated targets for the false-alarm runs")
    p.add_argument("--jobs", type=int, default=None,
                   help="jobs at a time (default 2; with Ray: the cluster's CPUs)")
    p.add_argument("--records", default=DEFAULT_RECORDS, help="records directory")
    p.add_argument("--out", default=DEFAULT_OUT, help="the Markdown scorecard")
    p.add_argument("--no-run", action="store_true",
                   help="only regenerate the scorecard from the records")
    p.add_argument("--skip-mutants", action="store_true", help="no kill-matrix audits")
    p.add_argument("--scope", choices=("audit", *SCOPED_REPORTS), default="audit",
                   help=argparse.SUPPRESS)
    p.add_argument("--timing", type=int, default=3,
                   help="audits per target timed one at a time, last (default 3)")
    p.add_argument("--fresh", action="store_true", help="discard the records first")
    p.add_argument("--campaign", type=int, default=0, metavar="N",
                   help="also audit random correct configurations 1..N of each family "
                        "(lab/campaign.py), configuration i at seed i; records in "
                        "RECORDS/campaign.jsonl (default 0: none). With --skip-mutants "
                        "--seeds 0 --timing 0 only the campaign runs")
    p.add_argument("--campaign-families", default="", metavar="LIST",
                   help="comma-separated campaign families (default: all of sb3-ppo, "
                        "sb3-a2c, sb3-trpo, ppo, a2c, trpo, reinforce)")
    p.add_argument("--ray", action="store_true",
                   help="run the jobs as Ray tasks of one CPU each, on a local Ray started for "
                        "the run (or the cluster RAY_ADDRESS names); pip install "
                        "'pgtheory[ray]'")
    p.add_argument("--ray-address", metavar="ADDRESS", default=None,
                   help="run the jobs on this existing Ray cluster (implies --ray)")
    p.add_argument("--job-timeout", type=float, default=DEFAULT_JOB_TIMEOUT, metavar="S",
                   help="seconds before a job is killed and run again (default 3600; 0: none)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="further attempts of a job whose worker was lost or timed out, before "
                        "it is recorded as an error (default 2)")
    if group is None:
        p.add_argument("--no-progress", action="store_true")
    return p


def run(*, targets: Sequence[str] = OURS + CONTROLS, seeds: int = 100, jobs: int | None = None,
        records: str | os.PathLike = DEFAULT_RECORDS, out: str | os.PathLike = DEFAULT_OUT,
        run_missing: bool = True, mutants: bool = True, scope: str = "audit",
        timing: int = 3, fresh: bool = False, campaign: int = 0,
        campaign_families: Sequence[str] = (), progress: bool = True, ray: bool = False,
        ray_address: str | None = None, job_timeout: float = DEFAULT_JOB_TIMEOUT,
        retries: int = 2) -> int:
    """Run what is missing, write the scorecard; exit 0 when every goal is met, else 1.

    Parameters
    ----------
    targets : sequence of str
        Targets of the false-alarm runs (``--targets``).
    seeds : int
        False-alarm seeds per target: ``1..seeds`` (>= 0).
    jobs : int or None
        Jobs at a time (>= 1; default 2 on this machine, with Ray as many as the cluster's
        CPUs hold).
    records, out : path
        The records directory and the Markdown scorecard (its folder also gets
        ``kill_matrix.md``).
    run_missing : bool
        False: only regenerate the scorecard from the records (``--no-run``).
    mutants : bool
        False: no kill-matrix audits (``--skip-mutants``).
    scope : {"audit", "policy_head", "lqr_update", "lqr_expectation", "gaussian_density"}
        Which checks the false-alarm audits run.
    timing : int
        Audits per target timed one at a time, last (full scope only).
    fresh : bool
        Discard the records first.
    campaign : int
        Random correct configurations ``1..campaign`` of each family (>= 0).
    campaign_families : sequence of str
        Campaign families (empty: all).
    progress : bool
        A progress bar on stderr.
    ray : bool
        Run the jobs as Ray tasks (:class:`~pgtheory.lab.executors.RayExecutor`, one CPU
        each) on a local Ray started for the run, or on the cluster ``RAY_ADDRESS`` names.
    ray_address : str or None
        An existing Ray cluster (implies ``ray``).
    job_timeout : float
        Seconds a job may run before its worker is killed and the job run again (0: no limit).
    retries : int
        Further attempts of a job whose worker was lost or timed out (>= 0); after them the
        job is recorded as an error.

    Returns
    -------
    int
        0 when every goal is met, else 1.

    Raises
    ------
    PowerError
        No targets, ``seeds < 0``, ``jobs < 1``, ``campaign < 0``, an unknown family, a
        negative ``job_timeout`` or ``retries``.
    pgtheory.oracles.protocol.TargetProtocolError
        A target that cannot be loaded.
    pgtheory.extras.MissingExtraError
        ``ray`` or ``ray_address`` and Ray is not installed.
    """
    from pgtheory.lab.executors import make_executor
    from pgtheory.lab.mutants import MUTANTS
    from pgtheory.oracles.audit import resolve_target

    targets = [t.strip() for t in targets if t.strip()]
    if not targets or seeds < 0 or (jobs is not None and jobs < 1):
        raise PowerError(f"expected targets, --seeds >= 0 and --jobs >= 1, received "
                         f"targets={targets}, seeds={seeds}, jobs={jobs}")
    if not job_timeout >= 0 or retries < 0:
        raise PowerError(f"expected --job-timeout >= 0 and --retries >= 0, received "
                         f"{job_timeout} and {retries}")
    executor = make_executor(ray=ray, ray_address=ray_address, jobs=jobs,
                             timeout_s=job_timeout, max_retries=retries)
    for t in targets:
        resolve_target(t)  # fails now, with the protocol error, not in a worker
    families = [f.strip() for f in campaign_families if f.strip()] or None
    campaign_list = campaign_jobs(campaign, families)
    recs = Records(pathlib.Path(records))
    if fresh:
        for kind in ("mutants", "audits", "timings", "campaign"):
            (recs.root / f"{kind}.jsonl").unlink(missing_ok=True)
    if run_missing:
        run_jobs(recs, mutants=list(MUTANTS) if mutants else [], targets=targets,
                 seeds=list(range(1, seeds + 1)), scope=scope, progress=progress,
                 timing=timing if scope == "audit" else 0, campaign=campaign_list,
                 executor=executor)
    text = scorecard(recs, targets=targets)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if recs.load("mutants"):
        (out.parent / "kill_matrix.md").write_text(kill_matrix_markdown(recs))
    print(text)
    return 0 if "| no |" not in text.split("## Kill rate per layer")[0] else 1


def options(args: argparse.Namespace) -> dict:
    """:func:`run`'s keyword arguments from options parsed by :func:`build_parser`."""
    return dict(targets=args.targets.split(","), seeds=args.seeds, jobs=args.jobs,
                records=args.records, out=args.out, run_missing=not args.no_run,
                mutants=not args.skip_mutants, scope=args.scope, timing=args.timing,
                fresh=args.fresh, campaign=args.campaign,
                campaign_families=args.campaign_families.split(","),
                progress=not args.no_progress, ray=args.ray, ray_address=args.ray_address,
                job_timeout=args.job_timeout, retries=args.retries)


def main(argv: list[str] | None = None) -> int:
    """``python -m pgtheory.lab.power`` (same options as ``pgtheory audit --power``)."""
    return run(**options(build_parser().parse_args(argv)))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
