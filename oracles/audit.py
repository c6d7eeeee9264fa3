"""``pgtheory audit``: every applicable oracle check against one implementation, as a report.

:func:`resolve_target` turns a TARGET string into a protocol target; :func:`run_audit` runs the
suite (:func:`pgtheory.oracles.suite.run_suite`) and returns an :class:`AuditReport` with the
results, a plain-words summary and the exit status (0 all passed, 1 a check failed, 2 the target
could not be loaded or run). :func:`format_report` renders the table the command prints.

TARGET forms
------------
* nothing: the built-in default, ``sb3:PPO``;
* ``sb3:PPO``, ``sb3:A2C``, ``sb3-contrib:TRPO``: the library classes with their default
  hyperparameters (rollout length sized for the audit, see
  :data:`pgtheory.oracles.sb3.BUILTIN_DEFAULTS`);
* ``sb3:MODULE:FACTORY``: ``FACTORY(env)`` returns a configured Stable-Baselines3 / sb3-contrib
  model on the oracle env it is given (:mod:`pgtheory.oracles.sb3`);
* ``ppo``, ``a2c``, ``trpo``, ``reinforce``: the project's own implementations
  (:mod:`implementations`) with their default configurations; ``npg``: TRPO's natural-gradient
  switch;
* ``example-ppo``, ``example-a2c``, ``example-trpo``: the compact example targets of
  :mod:`pgtheory.oracles.example_target`;
* ``campaign:FAMILY:INDEX``: the INDEX-th random correct configuration of FAMILY drawn by
  the configuration campaign (:mod:`pgtheory.lab.campaign`);
* ``MODULE:ATTR``: an object (or zero-argument factory) following :mod:`pgtheory.oracles.protocol`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pgtheory.oracles.protocol import TargetProtocolError, load_target
from pgtheory.oracles.results import VERDICTS, CheckResult
from pgtheory.oracles.suite import SuiteConfig, run_suite

from pgtheory.errors import InvalidArgumentError

__all__ = ["AUDIT_ALPHA", "DEFAULT_TARGET", "WHERE_TO_LOOK", "AuditReport", "audit_config",
           "check_writable", "format_report", "resolve_target", "run_audit", "validate_seed",
           "write_json"]

DEFAULT_TARGET = "sb3:PPO"

#: For each check: where in an implementation a failure points.
WHERE_TO_LOOK = {
    "given_the_batch.advantages": "the advantage computation (GAE recursion, done masks, the "
                                  "bootstrap at truncation and at the buffer end) and any env "
                                  "wrapper that changes terminated/truncated or the final "
                                  "observation",
    "given_the_batch.returns": "the value targets (they should be advantages + values)",
    "given_the_batch.policy_gradient": "the policy loss in the update: ratio, clipping, "
                                       "advantage normalization, entropy term, old log-probs",
    "given_the_batch.value_gradient": "the value loss (targets, clipping, sign)",
    "given_the_batch.trpo_step": "the TRPO step: Fisher-vector product, conjugate gradient, "
                                 "step length sqrt(2 delta / x^T F x), line search and KL test",
    "in_expectation.advantages": "how rollouts are collected and advantages estimated "
                                 "(bootstraps, masks, which observation is stored)",
    "in_expectation.returns": "the value targets' construction",
    "in_expectation.policy_gradient": "the sampling distribution and the advantage estimator "
                                      "entering the gradient",
    "given_the_batch.log_prob_gradient": "the policy head: every parameter the density "
                                         "depends on must reach autograd (no .detach(), "
                                         ".data or numpy round trip, e.g. of the log-std)",
    "given_the_batch.action_sampling": "how actions are sampled and stored: the stored action "
                                       "must be the sampled one (clip only what the env "
                                       "sees), drawn with the distribution's own std",
    "given_the_batch.gaussian_density": "the policy head's log_prob and entropy: both must "
                                        "sum over the action dimensions (a per-dimension "
                                        "mean rescales ratios, KL estimates and the entropy "
                                        "bonus)",
    "update_level.kl": "the trust-region or early-stopping logic",
    "update_level.improvement": "the sign and scale of the update",
    "update_level.convergence": "the learning loop as a whole (or a budget too small for "
                                "these hyperparameters)",
    "update_level.critic": "the critic's training: its value targets (bootstraps, discount, "
                           "normalization) and the sign and scale of its loss",
}


#: Names of the built-in targets and the ``MODULE:ATTR`` factories they stand for. The
#: project's algorithms are loaded by name like any user target, so the oracles do not import
#: the code they judge.
BUILTIN_TARGETS: dict[str, str] = {
    "ppo": "pgtheory.implementations.targets:ppo",
    "a2c": "pgtheory.implementations.targets:a2c",
    "trpo": "pgtheory.implementations.targets:trpo",
    "reinforce": "pgtheory.implementations.targets:reinforce",
    "npg": "pgtheory.implementations.targets:npg",
    "example-ppo": "pgtheory.oracles.example_target:ppo",
    "example-a2c": "pgtheory.oracles.example_target:a2c",
    "example-trpo": "pgtheory.oracles.example_target:trpo",
}


def resolve_target(spec: str | None) -> Any:
    """The protocol target for a TARGET string (see the module docstring).

    Raises
    ------
    TargetProtocolError
        Unknown form, unimportable module, missing factory, or a protocol violation.
    """
    spec = spec or DEFAULT_TARGET
    if spec.startswith(("sb3:", "sb3-contrib:")):
        from pgtheory.oracles.sb3 import load_sb3_target

        return load_sb3_target(spec)
    if spec.startswith("campaign:"):
        raise TargetProtocolError(f"target {spec!r}: campaign targets are the lab's; give the "
                                  f"target object (pgtheory.lab.campaign.campaign_target) or "
                                  f"use the command line, which resolves them")
    return load_target(BUILTIN_TARGETS.get(spec, spec))


#: Rejection rate budget of one audit's three tabular statistical checks together (each
#: rejects at a third; a continuous-action target's action-sampling test at another third).
#: An in-expectation rejection becomes a FAIL only when an independent confirmation run
#: rejects too, so the FAIL rate of those three is at most 3 (AUDIT_ALPHA / 3)^2; the
#: action-sampling test fails at AUDIT_ALPHA / 3.
AUDIT_ALPHA = 0.001


def audit_config(seed: int = 0, quick: bool = False) -> SuiteConfig:
    """The suite sizes the audit uses (``quick``: :meth:`SuiteConfig.quick`, the same quick budget
    as ``pytest --pg-quick``, without the training checks).

    The audit does not require convergence within its budget (an arbitrary configuration may
    learn slowly): see :class:`pgtheory.oracles.suite.SuiteConfig`.
    """
    if quick:  # the suite's one quick budget (as pytest --pg-quick), without training
        return dataclasses.replace(SuiteConfig.quick(seed), train_steps=0, alpha=AUDIT_ALPHA,
                                   require_convergence=False)
    return SuiteConfig(seed=seed, n_iterations=3, n_trials=60, trial_steps=6400,
                       alpha=AUDIT_ALPHA, require_convergence=False)


@dataclasses.dataclass
class AuditReport:
    """What one audit found.

    Attributes
    ----------
    target : str
        The TARGET as given (or the default, then ``default_used`` is True).
    description : str
        Algorithm, model class and sizes.
    results : list of CheckResult
    notes : list of str
        What the configuration leaves untested (e.g. ``ent_coef = 0``).
    seconds : float
    exit_code : int
        0 no check failed and none errored (inconclusive and skipped checks allowed), 1 a check
        failed (evidence of a defect), 2 the target could not be loaded or its code raised
        (``error`` rows) and no check failed.
    error : str or None
        Why the target could not be loaded (exit 2).
    """

    target: str
    description: str = ""
    results: list[CheckResult] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    exit_code: int = 0
    error: str | None = None
    default_used: bool = False
    seed: int = 0
    quick: bool = False

    def summary(self) -> list[str]:
        """The report's conclusion in plain words (one item per line)."""
        if self.error:
            return [f"The target could not be audited: {self.error}"]
        failed = [r for r in self.results if r.verdict == "fail"]
        errored = [r for r in self.results if r.verdict == "error"]
        unsure = [r for r in self.results if r.verdict == "inconclusive"]
        counts = {v: sum(r.verdict == v for r in self.results) for v in VERDICTS}
        head = (f"{counts['pass']} passed, {counts['fail']} failed, {counts['inconclusive']} "
                f"inconclusive, {counts['error']} error{'s' * (counts['error'] != 1)}, "
                f"{counts['skip']} skipped (not applicable or not run: the rows say why) "
                f"in {self.seconds:.1f} s.")
        lines = [head]
        if errored:
            lines.append(f"The target crashed: its own code raised during {len(errored)} "
                         f"check(s), which therefore say nothing about its correctness:")
            seen = set()
            for r in errored:
                if r.explanation not in seen:
                    seen.add(r.explanation)
                    lines.append(f"  - {r.name}: {r.explanation}")
        if unsure:
            lines.append("Inconclusive (the check's premise did not hold; not a defect):")
            lines += [f"  - {r.name}: {r.explanation}" for r in unsure]
        if not failed:
            if not errored and counts["pass"]:
                lines.append(f"No check found a defect: in the {counts['pass']} checks that "
                             f"passed the implementation computes what the theory says on the "
                             f"oracle environments, within the stated tolerances and "
                             f"false-positive rates"
                             + (f"; {len(unsure)} could not judge it (above)." if unsure
                                else "."))
            elif not errored:
                lines.append("No check passed: nothing was verified.")
            return lines
        lines.append("What is wrong:")
        for r in failed:
            lines.append(f"  - {r.name}: {r.explanation}")
            where = WHERE_TO_LOOK.get(r.name.split("@")[0], "see the check")
            if "[catalogue: next_step_autoreset]" in r.explanation:
                where = ("which samples each minibatch trains on: leave out the slot after "
                         "every episode end (next-step autoreset), as gymnasium documents")
            lines.append(f"    where to look: {where}")
        first = failed[0]
        if len(failed) > 1:
            lines.append(f"Start with {first.name}: later layers often fail as a consequence "
                         f"of an earlier one.")
        return lines

    def to_json(self) -> dict:
        """The report as JSON-serializable data (what ``--json`` writes)."""
        return {"target": self.target, "default_used": self.default_used,
                "description": self.description, "seed": self.seed, "quick": self.quick,
                "exit_code": self.exit_code, "error": self.error, "seconds": self.seconds,
                "notes": self.notes, "summary": self.summary(),
                "results": [{k: (v if isinstance(v, str | int | float | type(None)) else str(v))
                             for k, v in dataclasses.asdict(r).items()}
                            for r in self.results]}


def run_audit(spec: str | None = None, *, seed: int = 0, quick: bool = False,
              progress: Callable[[str], None] | None = None,
              target: Any = None) -> AuditReport:
    """Audit one target; never raises for a faulty or unloadable target (exit code 2).

    Parameters
    ----------
    spec : str or None
        TARGET (module docstring); None audits :data:`DEFAULT_TARGET`.
    seed : int
        Seeds the oracle MDP, the agents and the statistical checks.
    quick : bool
        Fewer in-expectation trials, no training checks (see :func:`audit_config`).
    progress : callable, optional
        Called with each stage's name.
    target : object, optional
        The target ``spec`` already resolved (:func:`resolve_target`), to avoid loading it
        twice.

    Returns
    -------
    AuditReport

    Raises
    ------
    InvalidArgumentError
        ``seed`` is not an integer in ``[0, 2**32 - 1]`` (checked before anything runs).
    """
    seed = validate_seed(seed)
    report = AuditReport(target=spec or DEFAULT_TARGET, default_used=spec is None, seed=seed,
                         quick=quick)
    t0 = time.perf_counter()
    try:
        target = resolve_target(spec) if target is None else load_target(target)
        report.description = (f"{target.algorithm.upper()} target {target.name!r}"
                              + (f" ({target.model_description})"
                                 if hasattr(target, "model_description") else ""))
        report.notes = list(getattr(target, "notes", []))
        report.results = run_suite(target, config=audit_config(seed, quick), progress=progress)
    except TargetProtocolError as exc:
        report.error, report.exit_code = str(exc), 2
    report.seconds = time.perf_counter() - t0
    if report.error is None:
        verdicts = {r.verdict for r in report.results}
        report.exit_code = 1 if "fail" in verdicts else 2 if "error" in verdicts else 0
    return report


def validate_seed(seed: object) -> int:
    """``seed`` as an int in ``[0, 2**32 - 1]`` (what numpy, torch and gymnasium accept).

    Raises
    ------
    InvalidArgumentError
        Not an integer, or out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise InvalidArgumentError(f"seed: expected an integer in [0, 2**32 - 1], received "
                                   f"{seed!r}")
    if not 0 <= int(seed) <= 2**32 - 1:
        raise InvalidArgumentError(f"seed: expected an integer in [0, 2**32 - 1], received "
                                   f"{seed}")
    return int(seed)


def _cell(x: Any, width: int) -> str:
    s = x if isinstance(x, str) else (f"{x:.3g}" if isinstance(x, float) else str(x))
    if len(s) <= width:
        return s
    # cut at the last word boundary that leaves room for "..." (mid-word only when the cell
    # has no space in its second half, e.g. one long name)
    head = s[:width - 3]
    space = head.rfind(" ")
    if s[width - 3] != " " and space >= (width - 3) // 2:  # the cut falls inside a word
        head = head[:space]
    return head.rstrip(" ,;:(") + "..."


def format_report(report: AuditReport, *, verbose: bool = False) -> str:
    """The table and summary ``pgtheory audit`` prints.

    ``verbose`` adds every check's one-line explanation (failures always get theirs).
    """
    out = [f"pgtheory audit: {report.target}"
           + (" (no TARGET given: auditing the built-in default)" if report.default_used else ""),
           f"seed {report.seed}{', quick mode' if report.quick else ''}"]
    if report.description:
        out.append(report.description)
    if report.error:
        return "\n".join([*out, "", *report.summary()])
    out.append("")
    head = f"{'check':<37} {'verdict':<12} {'expected':<26} {'observed':<26} {'tol / p':>9}"
    out += [head, "-" * len(head)]
    hidden = [r for r in report.results if r.layer == "components" and r.verdict == "skip"]
    if hidden:
        out.append(f"{'components.*':<37} {'SKIP':<12} {len(hidden)} component checks: the "
                   f"target exposes no pure functions for them")
    for r in report.results:
        if r in hidden:
            continue
        tol = (f"p={r.p_value:.2g}" if r.p_value is not None
               else f"{r.tolerance:.0e}" if r.tolerance is not None else "")
        verdict = r.verdict.upper()
        in_row = r.verdict == "skip" and {r.expected, r.observed} <= {"-", ""}
        if in_row:  # nothing was measured: the reason takes the two columns
            out.append(f"{r.name:<37} {verdict:<12} {_cell(r.explanation, 53):<53} "
                       f"{tol:>9}".rstrip())
        else:
            out.append(f"{r.name:<37} {verdict:<12} {_cell(r.expected, 26):<26} "
                       f"{_cell(r.observed, 26):<26} {tol:>9}")
        if verbose and r.verdict in ("pass", "skip") and not (in_row and len(r.explanation) <= 53):
            out.append(f"    {r.explanation}")
    if report.notes:
        out += ["", "Not exercised by this configuration:"] + [f"  - {n}" for n in report.notes]
    out += ["", *report.summary()]
    return "\n".join(out)


def check_writable(path: str) -> str:
    """``path`` if a file can be written there (checked before an audit runs, nothing written).

    Raises
    ------
    InvalidArgumentError
        The folder does not exist or is not writable, or ``path`` is a folder.
    """
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InvalidArgumentError(f"--json: expected a file path, received the folder {path!r}")
    if not os.path.isdir(folder):
        raise InvalidArgumentError(f"--json: expected a path in an existing folder, received "
                                   f"{path!r} (no folder {folder!r})")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InvalidArgumentError(f"--json: expected a writable path, received {path!r} "
                                   f"(permission denied)")
    return path


def write_json(report: AuditReport, path: str) -> None:
    """Write :meth:`AuditReport.to_json` to ``path`` (UTF-8, indented).

    Raises
    ------
    OSError
        The file cannot be written (:func:`check_writable` tells beforehand).
    """
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report.to_json(), fh, indent=2)
