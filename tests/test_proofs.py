"""proofs/: every theorem settles with its declared status, every wrong variant and every
catalogued wrong formula is rejected, and the CLI reports both."""

import json

import pytest

from pgtheory import proofs
from pgtheory.cli import main

# the status each theorem reaches today; "checked" is stated honestly in its verdict detail
EXPECTED_STATUS = {name: "proved" for name in proofs.THEOREMS}
EXPECTED_STATUS["pinsker"] = "checked"  # 3-outcome case at random points; binary case proved

WRONG = [(name, label) for name, t in proofs.THEOREMS.items() for label in t.wrong_variants]


@pytest.mark.parametrize("name", list(proofs.THEOREMS))
def test_theorem_settles(name):
    verdict = proofs.THEOREMS[name].run()
    assert verdict.status == EXPECTED_STATUS[name], verdict.detail


def test_every_theorem_has_a_wrong_variant():
    assert all(t.wrong_variants for t in proofs.THEOREMS.values())
    assert len(proofs.THEOREMS) >= 11


@pytest.mark.parametrize(("name", "label"), WRONG, ids=[f"{n}: {lab}" for n, lab in WRONG])
def test_wrong_variant_is_rejected(name, label):
    # the same verification run on a known slip must fail: the proof can fail
    verdict = proofs.THEOREMS[name].wrong_variants[label]()
    assert verdict.status == "failed", verdict.detail


@pytest.mark.parametrize("quantity", [q.name for q in proofs.list_quantities()])
def test_reference_formula_is_accepted(quantity):
    q = {q.name: q for q in proofs.list_quantities()}[quantity]
    res = proofs.check_formula(quantity, q.reference)
    assert res.correct and res.status == "proved"


CATALOGUE = proofs.COMMON_WRONG_FORMS


@pytest.mark.parametrize(("quantity", "expr", "what", "where"), CATALOGUE,
                         ids=[f"{q}: {w}" for q, _, w, _ in CATALOGUE])
def test_common_wrong_form_is_rejected_with_correction(quantity, expr, what, where):
    res = proofs.check_formula(quantity, expr)
    assert not res.correct and res.status == "wrong"
    assert res.counterexample is not None
    assert res.counterexample["yours"] != res.counterexample["reference"]
    assert res.reference in res.message


def test_equivalent_rewriting_is_accepted():
    res = proofs.check_formula(
        "gaussian_kl",
        "log(sigma2) - log(sigma1) + sigma1**2/(2*sigma2**2) + (mu2 - mu1)**2/(2*sigma2**2) - 1/2")
    assert res.correct and res.status == "proved"
    assert proofs.check_formula("ppo_clipped_term",
                                "min(A*r, A*clip(r, 1 - eps, 1 + eps))").correct


@pytest.mark.parametrize(("quantity", "expr", "fragment"), [
    ("no_such_quantity", "x", "expected one of"),
    ("gae_weight", "foo**l", "unknown symbols ['foo']"),
    ("gae_weight", "(gamma*lam**", "could not parse"),
    ("gae_weight", "", "non-empty"),
], ids=["unknown-quantity", "unknown-symbol", "unparsable", "empty"])
def test_bad_formula_input(quantity, expr, fragment):
    with pytest.raises(proofs.FormulaError, match=None) as info:
        proofs.check_formula(quantity, expr)
    assert isinstance(info.value, ValueError) and fragment in str(info.value)


def test_prove_unknown_name():
    with pytest.raises(KeyError, match="unknown theorem"):
        proofs.prove(["no_such_theorem"])


def test_cli_prove_table_and_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["prove", "gae", "pinsker", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gae" in out and "proved" in out and "checked" in out
    data = json.loads(path.read_text())
    assert [d["name"] for d in data] == ["gae", "pinsker"]
    assert main(["prove", "--list"]) == 0
    assert main(["prove", "nope"]) == 2


def test_cli_check_exit_codes(capsys):
    assert main(["check", "gae_weight", "(gamma*lam)**l"]) == 0
    assert main(["check", "gae_weight", "lam**l"]) == 1
    assert "correct: (gamma*lam)**l" in capsys.readouterr().out
    assert main(["check", "gae_weight", "x**l"]) == 2
    assert main(["check", "--list"]) == 0
