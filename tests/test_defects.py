"""The defect registry: the shipped catalogue is generated from it, every diagnosis the component
and given-the-batch checks can emit names one of its entries, and every seeded mutant and
Stable-Baselines3 seeded bug names one."""

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from pgtheory.oracles import (
    batch,
    batch_advantages,
    batch_losses,
    batch_trpo,
    components,
    defects,
)
from pgtheory.oracles.defects import CLASSES, DEFECTS, Defect, UnknownDefectError

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = re.compile(r"\[catalogue: ([a-z0-9_]+)\]")


def test_docs_bugs_md_is_the_generated_catalogue():
    # regenerate with: python -m pgtheory.oracles.defects --markdown docs/bugs.md
    assert (ROOT / "docs" / "bugs.md").read_text(encoding="utf-8") == \
        defects.catalogue_markdown()


def test_every_entry_is_well_formed():
    for name, d in DEFECTS.items():
        assert name == d.name and re.fullmatch(r"[a-z0-9_]+", name), name
        assert d.defect_class in CLASSES, (name, d.defect_class)
        assert d.description and "BUGS.md" not in d.description + d.reports, name
        assert bool(d.references) == bool(d.switches or d.transform), name
        assert d.label.endswith(f"[catalogue: {name}]")


def _source(module) -> str:
    return Path(module.__file__).read_text(encoding="utf-8")


@pytest.mark.parametrize("module", [components, batch, batch_advantages, batch_losses,
                                    batch_trpo],
                         ids=["components", "batch", "advantages", "losses", "trpo"])
def test_the_checks_name_registry_entries_only(module):
    src = _source(module)
    assert "BUGS.md" not in src
    tree = ast.parse(src)
    # every registry key written in the check code, DEFECTS["x"] or DEFECTS['x'], exists
    keys = [n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
            and getattr(n.value, "id", None) == "DEFECTS" and isinstance(n.slice, ast.Constant)]
    assert set(keys) <= set(DEFECTS), set(keys) - set(DEFECTS)
    # every check that replays registry defects (tried_by("name", ...)) is listed by some entry
    checks = [n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "tried_by" and n.args
              and isinstance(n.args[0], ast.Constant)]
    if module is not batch:  # batch.py only re-exports the check families
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert used & {"DEFECTS", "tried_by"}, "the checks take their diagnoses from the registry"
    for check in checks:
        assert defects.tried_by(check), check
    # every written catalogue name exists
    assert set(CATALOGUE.findall(src)) <= set(DEFECTS)


def test_every_check_that_replays_defects_has_some():
    names = {c for d in DEFECTS.values() for c in d.checks if d.references}
    for check in names:
        assert defects.tried_by(check), check
    assert {"components.gae", "components.clipped_surrogate_loss",
            "given_the_batch.advantages", "given_the_batch.policy_gradient",
            "given_the_batch.value_gradient"} <= names
    # the batch policy check's replayable defects are registry entries
    assert set(batch.POLICY_DEFECTS) <= set(DEFECTS)
    assert {"ppo_min_max_swapped", "entropy_wrong_sign"} <= set(batch.POLICY_DEFECTS)


def _seeded_component_diagnoses():
    """Diagnoses the component checks emit on seeded defects (every replayed defect, applied to
    the reference itself, must be named by the check as that entry)."""
    from test_oracles_components import DEFECTS as SEEDED

    for _, check, fn, _ in SEEDED:
        yield check(fn).explanation


def test_seeded_component_defects_are_diagnosed_with_registry_names():
    found = set()
    for text in _seeded_component_diagnoses():
        if "known defect" in text:
            names = CATALOGUE.findall(text)
            assert names and set(names) <= set(DEFECTS), text
            found |= set(names)
    assert {"truncation_as_termination", "gae_lambda_power", "ppo_min_max_swapped",
            "kl_k1_for_k3", "cg_skipped", "line_search_ignores_kl"} <= found, found


def test_each_replayed_gae_defect_is_named_by_the_gae_check():
    # the defect applied to the reference is an implementation the check must name as itself
    from pgtheory import references as ref

    for d in defects.tried_by("components.gae", "gae"):
        f = d.applied_to(ref.gae)

        def impl(r, v, te, tr, g, lam, next_values, f=f):
            return f(rewards=r, values=v, next_values=next_values, terminated=te, truncated=tr,
                     gamma=g, lam=lam)

        res = components.check_gae(impl)
        assert res.verdict == "fail" and CATALOGUE.findall(res.explanation) == [d.name], \
            (d.name, res.explanation)


def test_every_mutant_and_seeded_sb3_bug_names_a_registry_entry():
    from pgtheory.lab.mutants import MUTANTS
    from pgtheory.lab.sb3_bugs import BUGS

    for m in MUTANTS.values():
        assert m.defect in DEFECTS, m.name
        assert m.bug_class == DEFECTS[m.defect].defect_class
        assert m.description.startswith(DEFECTS[m.defect].description)
    for b in BUGS.values():
        assert b.defect in DEFECTS, b.name
        assert b.reported == DEFECTS[b.defect].reports


def test_describe_and_unknown_names():
    assert "pat-coady/trpo #25" in defects.describe("gaussian_kl_no_square")
    with pytest.raises(UnknownDefectError, match="ppo_min_max_swapped") as info:
        defects.describe("ppo_min_max_swaped")
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_adding_a_defect_is_one_entry(monkeypatch):
    """One new Defect in the registry reaches the checks' replays and the catalogue."""
    new = Defect("gae_double_reward", "GAE algebra", "every reward counted twice", "made up",
                 ("components.gae",), ("gae",),
                 transform=lambda f: lambda **k: f(**{**k, "rewards": 2 * k["rewards"]}))
    monkeypatch.setitem(DEFECTS, new.name, new)
    assert f"`{new.name}`" in defects.catalogue_markdown()

    def doubled(r, v, te, tr, g, lam, next_values):
        from pgtheory import references as ref
        return ref.gae(2 * r, v, te, tr, g, lam, next_values=next_values)

    res = components.check_gae(doubled)
    assert res.verdict == "fail" and "[catalogue: gae_double_reward]" in res.explanation


def test_the_main_writes_the_catalogue(tmp_path):
    out = tmp_path / "bugs.md"
    assert defects.main(["--markdown", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == defects.catalogue_markdown()
    assert defects.main(["--describe", "nope_nope"]) == 2


def test_switch_defects_override_the_callers_arguments():
    d = DEFECTS["cg_one_iteration"]
    seen = {}

    def reference(**k):
        seen.update(k)
        return np.zeros(1)

    d.applied_to(reference)(n_iters=7, b=np.ones(1))
    assert seen["n_iters"] == 1
    assert dataclasses.is_dataclass(d)


def _np(x):
    return x.detach().numpy() if hasattr(x, "detach") else np.asarray(x)


def _families():
    """(check, family, reference, implementation built from a defective reference)."""
    from pgtheory import references as ref

    def dist(f):  # the check's keyword arguments, as numpy arrays
        return lambda **k: f(**{n: _np(v) for n, v in k.items()})

    return [
        (components.check_categorical_entropy, "components.categorical_entropy",
         "categorical_entropy", ref.categorical_entropy,
         lambda f: lambda logits: f(logits=_np(logits))),
        (components.check_categorical_kl, "components.categorical_kl", "categorical_kl",
         ref.categorical_kl, dist),
        (components.check_gaussian_log_prob, "components.gaussian_log_prob",
         "gaussian_log_prob", ref.gaussian_log_prob, dist),
        (components.check_gaussian_entropy, "components.gaussian_entropy", "gaussian_entropy",
         ref.gaussian_entropy, dist),
        (components.check_gaussian_kl, "components.gaussian_kl", "gaussian_kl",
         ref.gaussian_kl, lambda f: lambda m1, s1, m2, s2: f(
             mean1=_np(m1), log_std1=_np(s1), mean2=_np(m2), log_std2=_np(s2))),
        (lambda fn: components.check_kl_estimator(fn, "k3"), "components.kl_estimator_k3",
         "kl_estimator", ref.kl_estimator,
         lambda f: lambda logp, logq: f(log_p=_np(logp), log_q=_np(logq), kind="k3")),
        (components.check_conjugate_gradient, "components.conjugate_gradient",
         "conjugate_gradient", lambda **k: ref.conjugate_gradient(
             k["matvec"], k["b"], k["n_iters"], relative_tol=1e-24).x,
         lambda f: lambda mv, b, n: f(matvec=mv, b=b, n_iters=n)),
        (components.check_backtracking_line_search, "components.backtracking_line_search",
         "backtracking_line_search", ref.backtracking_line_search,
         lambda f: lambda obj, kl, x0, step, mk, c, n: f(
             objective=obj, kl=kl, x0=x0, full_step=step, max_kl=mk, backtrack_coef=c,
             max_backtracks=n).x),
    ]


@pytest.mark.parametrize("case", range(8))
def test_each_replayed_defect_is_named_as_itself(case):
    """Every registry defect a component check replays, applied to the reference, is an
    implementation that the check fails and names by that entry, and no other."""
    check, name, family, reference, build = _families()[case]
    tried = defects.tried_by(name, family)
    assert tried, name
    assert check(build(reference)).verdict == "pass", name
    for d in tried:
        res = check(build(d.applied_to(reference)))
        assert res.verdict == "fail" and CATALOGUE.findall(res.explanation) == [d.name], \
            (d.name, res.explanation)
