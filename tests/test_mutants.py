"""The mutation harness for the project's implementations (lab/mutants.py), fast subset.

The full kill matrix (every mutant, full audits) is ``python -m pgtheory.lab.mutants``; CI runs a
few mutants in quick mode and checks that each is flagged by the check the catalogue names,
that patches are undone, and that the catalogue is well-formed.
"""

from __future__ import annotations

import pytest
from pgtheory.implementations import core
from pgtheory.lab.mutants import MUTANTS, applied, run_mutant
from pgtheory.oracles.suite import plan

FAST = ["truncation_as_termination", "ratio_inverted", "trpo_no_factor_two",
        "gamma_t_declared_not_applied", "critic_regressed_to_advantage",
        "log_prob_averaged_over_dims", "log_std_detached", "clipped_action_stored",
        "samples_with_log_variance"]


@pytest.mark.parametrize("name", FAST)
def test_mutant_is_flagged_by_the_named_check(name: str) -> None:
    m = MUTANTS[name]
    res = run_mutant(m, quick=True)
    assert not res.error, res.error
    assert set(m.expected) <= {n for n, _ in res.flagged}, (m.expected, res.flagged)


def test_patches_are_undone() -> None:
    original = core.gae
    with applied(MUTANTS["truncation_as_termination"]):
        assert core.gae is not original
    assert core.gae is original


def test_catalogue_is_well_formed() -> None:
    from pgtheory.implementations import ALGORITHMS
    from pgtheory.implementations.targets import target

    assert len(MUTANTS) >= 30
    for m in MUTANTS.values():
        assert m.algorithm in ALGORITHMS and m.description and m.bug_class
        assert m.patches or m.declared or m.overrides, m.name
        names = {n for n, _ in plan(target(m.algorithm, **m.overrides))}
        assert set(m.expected) <= names, (m.name, m.expected)
