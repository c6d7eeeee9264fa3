"""The formula checker (``proofs.check_formula``, ``pgtheory check``): decimal literals are
exact, a counterexample always shows two different numbers, size and time limits refuse with
one line (exit 2), and ``^`` gets a hint to write ``**``."""

import re

import pytest
from pgtheory.proofs.formulas import RELATIVE_TOLERANCE, FormulaLimitError

from pgtheory import proofs
from pgtheory.cli import main

# (id, quantity, a correct formula written with decimal literals)
CORRECT_WITH_FLOATS = [
    ("step-size-power-0.5", "natural_gradient_step_size", "(2*delta/gFg)**0.5"),
    ("step-size-2.0-times", "natural_gradient_step_size", "(2.0*delta/gFg)**(1/2)"),
    ("score-mu-sigma**2.0", "gaussian_score_mu", "(a-mu)/sigma**2.0"),
    ("score-log-sigma-1.0", "gaussian_score_log_sigma", "(a - mu)**2/sigma**2.0 - 1.0"),
    ("kl-2.0-and-0.5", "gaussian_kl",
     "log(sigma2/sigma1) + (sigma1**2 + (mu1 - mu2)**2)/(2.0*sigma2**2) - 0.5"),
    ("entropy-0.5-log", "gaussian_entropy", "log(sigma) + 0.5 + 0.5*log(2*pi)"),
    ("trpo-4.0-exponent-2.0", "trpo_penalty_coefficient", "4.0*eps*gamma/(1 - gamma)**2.0"),
    ("gae-times-1e0", "gae_weight", "1e0*(gamma*lam)**l"),
    ("ppo-clip-1.0", "ppo_clipped_term", "Min(r*A, clip(r, 1.0 - eps, 1.0 + eps)*A)"),
]

# (id, quantity, a wrong formula, written with decimal literals or off by a tiny amount)
WRONG = [
    ("step-size-power-0.4", "natural_gradient_step_size", "(2*delta/gFg)**0.4"),
    ("step-size-1.0-not-2", "natural_gradient_step_size", "(1.0*delta/gFg)**0.5"),
    ("score-mu-sigma**2.01", "gaussian_score_mu", "(a-mu)/sigma**2.01"),
    ("entropy-pi-as-3.14159", "gaussian_entropy", "log(sigma) + 0.5 + 0.5*log(2*3.14159)"),
    ("kl-k3-half-log", "kl_k3", "(r - 1.0) - 0.5*log(r)"),
    ("score-mu-off-by-1e-25", "gaussian_score_mu", "(a-mu)/sigma**2 + 1e-25"),
    ("score-mu-off-by-1e-400", "gaussian_score_mu", "(a-mu)/sigma**2 + 1e-400"),
    ("step-size-off-by-1e-15", "natural_gradient_step_size", "sqrt(2*delta/gFg) + 1e-15"),
    ("entropy-undefined", "gaussian_entropy", "1/(sigma - sigma)"),
]

# (id, quantity, expression, error class, fragment of the one-line message)
REFUSED = [
    ("huge-integer-power", "gae_weight", "lam**(10**10)", FormulaLimitError, "size limit"),
    ("power-tower", "gae_weight", "lam**(10**10**10)", FormulaLimitError, "size limit"),
    ("huge-float-power", "gae_weight", "lam**1e20", FormulaLimitError, "size limit"),
    ("huge-negative-power", "gae_weight", "lam**(-20000)", FormulaLimitError, "size limit"),
    ("huge-literal", "gae_weight", "lam*" + "9" * 200, FormulaLimitError, "size limit"),
    ("long-text", "gae_weight", "+".join(["lam"] * 1000), FormulaLimitError, "size limit"),
    ("xor-power", "gae_weight", "(gamma*lam)^l", proofs.FormulaError, "expected ** for powers"),
    ("xor-sqrt", "natural_gradient_step_size", "(2*delta/gFg)^0.5", proofs.FormulaError,
     "write '(2*delta/gFg)**0.5'"),
    ("comparison", "gae_weight", "lam < gamma", proofs.FormulaError,
     "expected a numeric expression"),
    ("lambda", "gae_weight", "lambda: lam", proofs.FormulaError, "expected a numeric expression"),
]


@pytest.mark.parametrize(("quantity", "expr"), [c[1:] for c in CORRECT_WITH_FLOATS],
                         ids=[c[0] for c in CORRECT_WITH_FLOATS])
def test_correct_formula_with_floats_is_accepted(quantity, expr):
    res = proofs.check_formula(quantity, expr)
    assert res.correct and res.status == "proved", res.message
    assert res.counterexample is None


def _shown_values(message: str) -> tuple[str, str]:
    m = re.search(r"your expression gives (.+?) but \w+ is (.+?) \(difference", message)
    assert m, message
    return m.group(1), m.group(2)


@pytest.mark.parametrize(("quantity", "expr"), [c[1:] for c in WRONG], ids=[c[0] for c in WRONG])
def test_wrong_formula_is_rejected_with_two_different_values(quantity, expr):
    res = proofs.check_formula(quantity, expr)
    assert not res.correct and res.status == "wrong", res.message
    cex = res.counterexample
    assert cex["yours"] != cex["reference"]  # never two equal numbers
    assert _shown_values(res.message) == (cex["yours"], cex["reference"])
    assert f"{RELATIVE_TOLERANCE:g}" in res.message and res.reference in res.message


def test_tiny_difference_is_printed_with_enough_digits():
    cex = proofs.check_formula("gaussian_score_mu", "(a-mu)/sigma**2 + 1e-25").counterexample
    yours, ref = cex["yours"], cex["reference"]
    assert yours != ref and len(yours.lstrip("-").replace(".", "")) >= 26
    assert float(cex["difference"]) == pytest.approx(1e-25, rel=1e-2)


def test_difference_within_the_stated_tolerance_is_only_checked():
    # irrational values are compared at 50 digits: a 1e-30 offset is inside the tolerance,
    # so the verdict is "checked" (stated), never "proved" and never a counterexample
    res = proofs.check_formula("natural_gradient_step_size", "sqrt(2*delta/gFg) + 1e-30")
    assert res.correct and res.status == "checked" and res.counterexample is None
    assert f"{RELATIVE_TOLERANCE:g}" in res.message


@pytest.mark.parametrize(("quantity", "expr", "error", "fragment"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_refused_expression(quantity, expr, error, fragment):
    with pytest.raises(error) as info:
        proofs.check_formula(quantity, expr)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and fragment in message
    assert "expected" in message and "received" in message and "\n" not in message


def test_time_limit_stops_a_slow_check_and_the_next_check_works():
    with pytest.raises(FormulaLimitError, match="time limit: expected the check to finish "
                                                "within 1 s"):
        proofs.check_formula("gae_weight", "factorial(10**8)*0 + (gamma*lam)**l", timeout=1)
    assert proofs.check_formula("gae_weight", "(gamma*lam)**l*1.0").correct


@pytest.mark.parametrize(("kwargs", "fragment"), [
    (dict(timeout=0), "timeout: expected"),
    (dict(timeout=float("nan")), "timeout: expected"),
    (dict(n_points=0), "n_points: expected"),
    (dict(seed=1.5), "seed: expected"),
], ids=["timeout-zero", "timeout-nan", "n-points-zero", "seed-float"])
def test_bad_arguments_are_value_errors(kwargs, fragment):
    with pytest.raises(proofs.FormulaError, match=fragment) as info:
        proofs.check_formula("gae_weight", "(gamma*lam)**l", **kwargs)
    assert isinstance(info.value, ValueError)


def test_in_process_check_without_time_limit():
    assert proofs.check_formula("gaussian_score_mu", "(a-mu)/sigma**2.0", timeout=None).correct
    with pytest.raises(FormulaLimitError, match="size limit"):
        proofs.check_formula("gae_weight", "lam**(10**10)", timeout=None)


def _cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return exc.code


# (id, argv after "check", exit code, fragment of stdout (0/1) or of the stderr line (2))
CLI = [
    ("float-sqrt-correct", ["natural_gradient_step_size", "(2*delta/gFg)**0.5"], 0, "correct"),
    ("float-square-correct", ["gaussian_score_mu", "(a-mu)/sigma**2.0"], 0, "correct"),
    ("float-power-wrong", ["natural_gradient_step_size", "(2*delta/gFg)**0.4"], 1, "wrong"),
    ("huge-power", ["gae_weight", "lam**(10**10)"], 2, "size limit"),
    ("xor", ["gae_weight", "(gamma*lam)^l"], 2, "expected ** for powers"),
    ("time-limit", ["--timeout", "1", "gae_weight", "factorial(10**8)*0 + (gamma*lam)**l"], 2,
     "time limit"),
    ("bad-timeout", ["--timeout", "-1", "gae_weight", "(gamma*lam)**l"], 2, "--timeout"),
    ("no-expression", ["gae_weight"], 2, "EXPRESSION: expected your formula for gae_weight"),
    ("unknown-symbol", ["gae_weight", "x**l"], 2, "unknown symbols"),
    ("unparsable", ["gae_weight", "(gamma*lam**"], 2, "could not parse"),
    ("unknown-quantity", ["no_such_quantity", "x"], 2, "expected one of"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), [c[1:] for c in CLI],
                         ids=[c[0] for c in CLI])
def test_cli_check(argv, code, fragment, capsys):
    assert _cli(["check", *argv]) == code
    out, err = capsys.readouterr()
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("pgtheory check: error: "), err
        assert fragment in lines[0] and "expected" in lines[0] and "received" in lines[0]
        assert "Traceback" not in err and out == ""
    else:
        assert out.startswith(fragment) and err == ""
        if code == 1:
            yours, ref = _shown_values(out)
            assert yours != ref
